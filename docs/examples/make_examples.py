"""Writes the README's evaluation examples from the project's own TTS and sounds:

  docs/examples/my_corpus/         a user's own manifest: NeMo/Common-Voice-style keys
                                   (text, audio_filepath, path, sentence, an unknown
                                   key), <s> tags, one annotated long recording
  docs/examples/proactive_bench/   the Proactive-Sound-Bench layout (two domains, one
                                   row whose file is missing)

Run: python docs/examples/make_examples.py   (deterministic; espeak-ng voices)
"""

import json
import pathlib

import numpy as np
import soundfile

from audio_interaction.corpus.sounds import SoundBank
from audio_interaction.corpus.speech import MultiVoiceSpeech
from audio_interaction.stream_format import SAMPLE_RATE as SR

HERE = pathlib.Path(__file__).parent


def _write(path: pathlib.Path, audio: np.ndarray) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  soundfile.write(path, np.asarray(audio, np.float32), SR, subtype="PCM_16")


def main() -> None:
  rng = np.random.default_rng(12)
  speech = MultiVoiceSpeech(engines=["espeak"])
  sounds = SoundBank(use_recordings=False)
  corpus = HERE / "my_corpus"
  rows = []
  for k, (key, text_key, text) in enumerate((
      ("audio_filepath", "text", "<s> what time is it </s>"),
      ("path", "sentence", "turn on the kitchen light"),
      ("audio", "transcript", "how far is the station"))):
    _write(corpus / f"clips/utt{k}.wav", speech.say(text.replace("<s>", "").replace("</s>", ""),
                                                    rng).audio)
    rows.append({key: f"clips/utt{k}.wav", text_key: text, "set": "dev"})
  # A 12 s recording: speech addressed to the assistant, a dog (benign), a kettle (an
  # alert class of the user's own), a smoke alarm (a known alert), unaddressed speech.
  long = np.zeros(12 * SR, np.float32)
  pieces = [(0.5, speech.say("what is the weather like today", rng).audio),
            (3.5, sounds.sample("dog_bark", rng).audio[:SR]),
            (5.5, 0.2 * np.sin(2 * np.pi * 2200 * np.arange(int(1.5 * SR)) / SR)),
            (8.0, sounds.sample("smoke_alarm", rng).audio[:int(1.5 * SR)]),
            (10.0, speech.say("no I was talking to him", rng).audio)]
  spans = []
  for start, audio in pieces:
    audio = audio[:len(long) - int(start * SR)]
    long[int(start * SR):int(start * SR) + len(audio)] += audio
    spans.append((start, round(start + len(audio) / SR, 2)))
  _write(corpus / "clips/kitchen.wav", long)
  rows.append({"audio": "clips/kitchen.wav", "id": "kitchen",
               "instruction": "Let me know if anything needs my attention.",
               "alert_classes": ["kettle_whistle"],
               "events": [{"onset": spans[1][0], "offset": spans[1][1], "class": "dog",
                           "role": "benign"},
                          {"onset": spans[2][0], "offset": spans[2][1],
                           "class": "kettle_whistle"},
                          {"onset": spans[3][0], "offset": spans[3][1], "class": "smoke_alarm"},
                          {"onset": spans[4][0], "offset": spans[4][1], "class": "speech",
                           "role": "unaddressed_speech"}],
               "turns": [{"start": spans[0][0], "end": spans[0][1], "reply_expected": True}]})
  (corpus / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  (corpus / "classes.txt").write_text("# alert classes of my own\nkettle_whistle\n")

  bench = HERE / "proactive_bench"
  items = []
  for domain, label, decision in (("home", "smoke_alarm", "RESPOND"), ("home", "rain", "IGNORE"),
                                  ("home", "doorbell", "RESPOND"), ("street", "siren", "RESPOND"),
                                  ("street", "bird", "IGNORE"), ("street", "footsteps", "IGNORE")):
    _write(bench / "audio" / domain / f"{label}.wav", sounds.sample(label, rng).audio)
    items.append({"id": f"{domain}_{label}", "path": f"{domain}/{label}.wav",
                  "description": label.replace("_", " "), "decision": decision})
  items.append({"id": "home_missing", "path": "home/missing.wav",
                "description": "a file that is not there", "decision": "IGNORE"})
  (bench / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in items))
  (bench / "standard_answers.jsonl").write_text("".join(
      json.dumps({"id": r["id"], "standard_answers": [f"I hear {r['description']}."]}) + "\n"
      for r in items if r["decision"] == "RESPOND"))


if __name__ == "__main__":
  main()
