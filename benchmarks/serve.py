"""`audio-interaction serve` under load: how many real-time streams one process holds.

1. **Batched step per batch size** (the scaling curve): `SlotBatcher.tick` with every
   slot holding a stream, silent rows (perceive only) and speaking rows (perceive +
   `tokens_per_chunk` reply tokens), p50 per tick, per stream, and the streams one
   core-pair could hold at that batch if the step were all (160 ms / step x B).
2. **N localhost clients at real time**: a `serve` subprocess with N slots; N
   websocket clients in this process send generated audio (espeak-ng questions
   between silences, each client at its own phase) in 40 ms frames at real time.
   End-to-end latency per chunk = the chunk's event received minus its last frame
   sent. N is held at real time when p99 < one chunk (160 ms), nothing is dropped
   and every chunk is answered. The largest such N is the headline.

The clients share the machine with the server (2 cores here), so the figures are for
the whole loop on one box. The machine and its load are printed with the figures.

Usage: python benchmarks/serve.py [--quick] [--seconds S] [--streams 8,16,32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

CHUNK_SECONDS = 0.16
FRAME_SECONDS = 0.04


def machine() -> str:
  model = platform.processor() or "?"
  with open("/proc/cpuinfo") as info:
    for line in info:
      if line.startswith("model name"):
        model = line.split(":", 1)[1].strip()
        break
  return f"{model}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at start"


def generated_audio(seconds: float, seed: int) -> np.ndarray:
  """Spoken questions (espeak-ng, if present) between silences, else noise bursts."""
  rng = np.random.default_rng(seed)
  pieces, total = [], 0
  texts = ("How many legs does a dog have?", "What time is it?", "Turn on the light please.",
           "What is the capital of France?")
  tmp = pathlib.Path(tempfile.mkdtemp())
  while total < seconds * 16000:
    gap = np.zeros(int(rng.uniform(0.5, 2.0) * 16000), np.float32)
    if shutil.which("espeak-ng"):
      wav = tmp / "q.wav"
      subprocess.run(["espeak-ng", "-s", "160", "-w", str(wav), texts[rng.integers(len(texts))]],
                     check=True, capture_output=True)
      from audio_interaction.audio.io import load_audio
      speech = 0.8 * load_audio(str(wav), 16000)
    else:
      speech = (0.05 * rng.normal(size=16000)).astype(np.float32)
    pieces += [gap, speech.astype(np.float32)]
    total += len(gap) + len(speech)
  shutil.rmtree(tmp, ignore_errors=True)
  return np.concatenate(pieces)[:int(seconds * 16000)]


# ------------------------------------------------------------ 1. step scaling
def step_scaling(sizes: list[int], ticks: int) -> list[tuple[int, float, float]]:
  from audio_interaction.export.portable import load_model
  from audio_interaction.infer.engine import Engine
  from audio_interaction.infer.policies import ThresholdPolicy
  from audio_interaction.infer.slots import SlotBatcher
  model, params, tokenizer, _ = load_model(None)
  engine = Engine(model)
  size = model.config.chunk_samples
  ids = tokenizer.encode("You are a helpful voice assistant. Answer briefly.")
  rng = np.random.default_rng(0)
  rows = []
  for batch in sizes:
    timings = {}
    for name, threshold in (("silent", 2.0), ("speaking", 0.0)):
      batcher = SlotBatcher(engine, params, batch, max_prompt_tokens=64)
      batcher.warm_up()
      streams = [batcher.join(ids, ThresholdPolicy(threshold)) for _ in range(batch)]
      seconds = []
      for tick in range(ticks + 2):
        for row, sid in streams:
          batcher.push(row, sid, (0.05 * rng.normal(size=size)).astype(np.float32))
        began = time.perf_counter()
        batcher.tick()
        if tick >= 2:  # the first ticks prefill the joins
          seconds.append(time.perf_counter() - began)
      timings[name] = 1000 * float(np.median(seconds))
    rows.append((batch, timings["silent"], timings["speaking"]))
    print(f"  batch {batch:3d}: step p50 {timings['silent']:.1f} ms silent, "
          f"{timings['speaking']:.1f} ms speaking; per stream {timings['silent'] / batch:.2f} ms; "
          f"{1000 * CHUNK_SECONDS * batch / timings['silent']:.0f} streams' worth of real time "
          f"at this batch (silent)", flush=True)
  return rows


# ------------------------------------------------------------ 2. clients
def start_server(slots: int, log_dir: str) -> tuple[subprocess.Popen, int]:
  process = subprocess.Popen(
      [sys.executable, "-m", "audio_interaction", "serve", "--port", "0", "--slots", str(slots),
       "--max-connections", str(slots + 4), "--log-dir", log_dir],
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  deadline = time.monotonic() + 300
  while time.monotonic() < deadline:
    line = process.stdout.readline()
    if not line:
      break
    found = re.search(r"serving on http://[^:]+:(\d+)/", line)
    if found:
      return process, int(found.group(1))
  process.kill()
  raise RuntimeError("the server did not start")


async def client(port: int, audio: np.ndarray, phase: float, results: dict) -> None:
  from websockets.asyncio.client import connect
  pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
  frame_bytes = int(FRAME_SECONDS * 16000) * 2
  sent_at: dict[int, float] = {}
  lags, drops, chunks = [], 0, 0
  async with connect(f"ws://127.0.0.1:{port}/ws", max_size=2**22) as ws:
    await ws.send(json.dumps({"type": "start", "sample_rate": 16000, "format": "s16le"}))
    json.loads(await ws.recv())
    await asyncio.sleep(phase)

    async def send():
      loop = asyncio.get_running_loop()
      origin = loop.time()
      for k, start in enumerate(range(0, len(pcm), frame_bytes)):
        await asyncio.sleep(max(0.0, origin + k * FRAME_SECONDS - loop.time()))
        await ws.send(pcm[start:start + frame_bytes])
        end_sample = (start + frame_bytes) // 2
        if end_sample % 2560 == 0:
          sent_at[end_sample // 2560 - 1] = time.monotonic()
      await ws.send(json.dumps({"type": "stop"}))

    sender = asyncio.create_task(send())
    async for message in ws:
      event = json.loads(message)
      if event["event"] == "chunk":
        chunks += 1
        if event["chunk"] in sent_at:
          lags.append(time.monotonic() - sent_at[event["chunk"]])
      elif event["event"] == "drop":
        drops += 1
      elif event["event"] == "end":
        break
    await sender
  results["lags"] += lags
  results["drops"] += drops
  results["chunks"] += chunks
  results["expected"] += len(audio) // 2560


async def run_clients(port: int, streams: int, seconds: float) -> dict:
  results = {"lags": [], "drops": 0, "chunks": 0, "expected": 0}
  audios = [generated_audio(seconds, seed) for seed in range(min(streams, 4))]
  rng = np.random.default_rng(1)
  await asyncio.wait_for(asyncio.gather(*(
      client(port, audios[i % len(audios)], float(rng.uniform(0, CHUNK_SECONDS)), results)
      for i in range(streams))), timeout=seconds * 3 + 60)
  return results


def held_at_real_time(results: dict) -> bool:
  lags = results["lags"]
  return bool(lags) and float(np.percentile(lags, 99)) < CHUNK_SECONDS and (
      results["drops"] == 0 and results["chunks"] >= results["expected"])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
  parser.add_argument("--seconds", type=float, default=None, help="stream length per client")
  parser.add_argument("--streams", default=None, help="client counts to try, e.g. 8,16,32")
  parser.add_argument("--skip-scaling", action="store_true", help="only the client section")
  args = parser.parse_args()
  began = time.monotonic()
  sizes = [1, 4] if args.quick else [1, 2, 4, 8, 16, 32, 48, 64]
  counts = [int(n) for n in args.streams.split(",")] if args.streams else (
      [2, 4] if args.quick else [8, 16, 24, 32, 40, 48, 64])
  seconds = args.seconds or (3.0 if args.quick else 20.0)
  print(f"Machine: {machine()}; jax on CPU; tiny model (embedded bundle)", flush=True)

  if not args.skip_scaling:
    print("1. batched step per batch size (tiny model, every slot streaming):", flush=True)
    step_scaling(sizes, ticks=5 if args.quick else 40)

  print(f"2. N localhost clients at real time ({seconds:g} s each, {FRAME_SECONDS * 1000:.0f} ms "
        "frames, random phases; server and clients on this machine):", flush=True)
  best = 0
  summary = []
  log_dir = tempfile.mkdtemp()
  for streams in counts:
    process, port = start_server(streams, log_dir)
    try:
      load = os.getloadavg()[0]
      results = asyncio.run(run_clients(port, streams, seconds))
    finally:
      process.terminate()
      process.wait(timeout=20)
    lags = np.asarray(results["lags"]) * 1000
    ok = held_at_real_time(results)
    line = (f"  N={streams:3d}: latency chunk in -> decision out p50 {np.percentile(lags, 50):.1f} ms, "
            f"p99 {np.percentile(lags, 99):.1f} ms; chunks {results['chunks']}/{results['expected']}, "
            f"drops {results['drops']}; load {load:.1f}; "
            f"{'held at real time' if ok else 'NOT held at real time'}")
    print(line, flush=True)
    summary.append((streams, ok, np.percentile(lags, 50), np.percentile(lags, 99)))
    if ok:
      best = streams
    else:
      break
  shutil.rmtree(log_dir, ignore_errors=True)
  print(f"Largest N held at real time (p99 < {CHUNK_SECONDS * 1000:.0f} ms, no drops): {best} "
        f"streams (tried {', '.join(str(s[0]) for s in summary)}); "
        f"wall time {time.monotonic() - began:.0f} s", flush=True)


if __name__ == "__main__":
  main()
