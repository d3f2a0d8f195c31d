"""The serve page in a real browser: Debian's chromium + chromium-driver (never a
downloaded driver), a fake microphone playing a WAV of two spoken questions; the page
shows exactly the replies (and decisions) the server logged for that connection."""

import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)
         and shutil.which("espeak-ng")),
    reason="needs Debian's chromium and chromium-driver (install.sh) and espeak-ng")


def start_server(tmp_path, *args, timeout=240.0):
  """`audio-interaction serve --port 0` in a subprocess; returns (process, port)."""
  process = subprocess.Popen(
      [sys.executable, "-m", "audio_interaction", "serve", "--port", "0",
       "--log-dir", str(tmp_path / "logs"), *args],
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  deadline = time.monotonic() + timeout
  lines = []
  while time.monotonic() < deadline:
    line = process.stdout.readline()
    if not line:
      break
    lines.append(line)
    found = re.search(r"serving on http://[^:]+:(\d+)/", line)
    if found:
      return process, int(found.group(1))
  process.kill()
  raise AssertionError("server did not start:\n" + "".join(lines))


def stop_server(process):
  process.terminate()
  try:
    process.wait(timeout=10)
  except subprocess.TimeoutExpired:
    process.kill()
    process.wait(timeout=10)


def spoken_questions(path):
  """Two questions (espeak-ng) with silences around them, 16 kHz mono s16le."""
  pieces = [np.zeros(16000, np.float32)]
  for i, text in enumerate(("How many legs does a dog have?", "What is the capital of France?")):
    wav = path.parent / f"q{i}.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(wav), text], check=True)
    audio, rate = soundfile.read(wav, dtype="float32")
    from audio_interaction.audio.io import resample
    pieces += [0.8 * resample(audio, rate, 16000), np.zeros(int(2.5 * 16000), np.float32)]
  soundfile.write(path, np.concatenate(pieces), 16000, subtype="PCM_16")
  return path


@pytest.fixture(scope="module")
def server(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("serve_page")
  process, port = start_server(tmp, "--slots", "2")
  yield port, tmp
  stop_server(process)


def test_page_shows_the_replies_the_server_gives_for_a_fake_microphone(server, tmp_path):
  from selenium import webdriver
  from selenium.webdriver.chrome.service import Service
  from selenium.webdriver.common.by import By

  port, tmp = server
  wav = spoken_questions(tmp_path / "questions.wav")
  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1100,800",
               "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
               f"--use-file-for-fake-audio-capture={wav}%noloop",
               "--autoplay-policy=no-user-gesture-required"):
    options.add_argument(flag)
  driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
  try:
    driver.set_page_load_timeout(30)
    driver.get(f"http://127.0.0.1:{port}/")
    driver.find_element(By.ID, "start").click()
    seconds = soundfile.info(wav).duration
    deadline = time.monotonic() + seconds + 40
    while time.monotonic() < deadline:  # the whole file plays at real time
      chunks = driver.execute_script(
          "return window.serveEvents.filter(e => e.event === 'chunk').length")
      if chunks * 0.16 >= seconds + 1.0:
        break
      time.sleep(0.5)
    driver.find_element(By.ID, "stop").click()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not driver.execute_script(
        "return window.serveEvents.some(e => e.event === 'end')"):
      time.sleep(0.2)
    events = driver.execute_script("return window.serveEvents")
    shown = [(li.find_element(By.CLASS_NAME, "text").text, float(li.get_attribute("data-start")))
             for li in driver.find_elements(By.CSS_SELECTOR, "#replies li")]
    if os.environ.get("SERVE_PAGE_SCREENSHOT"):
      driver.save_screenshot(os.environ["SERVE_PAGE_SCREENSHOT"])
  finally:
    driver.quit()

  assert events[0]["event"] == "ready" and events[-1]["event"] == "end"
  (log,) = [p for p in (tmp / "logs").glob("connection-*.jsonl")
            if json.loads(p.read_text().splitlines()[0])["event"] == "ready"][-1:]
  logged = [json.loads(line) for line in log.read_text().splitlines()]
  assert events == logged  # the page received every event the server logged, in order
  replies = [(e["text"], e["reply_start"]) for e in logged if e["event"] in ("reply_end", "yield")]
  assert replies, "the model gave no reply to two spoken questions"
  assert [(text.strip(), start) for text, start in replies] == [
      (text.strip(), start) for text, start in shown]
  chunks = [e for e in logged if e["event"] == "chunk"]
  assert len(chunks) * 0.16 >= seconds  # the whole file was heard
  assert any(c["decision"] == "SPEAK" for c in chunks) and any(
      c["decision"] == "SILENT" for c in chunks)
  assert any(e["event"] == "heard" for e in logged)  # the streaming transcript reached it
