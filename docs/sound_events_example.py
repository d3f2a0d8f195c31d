"""Writes sound_events.wav: real DEV sound events one after another, for `listen`.

A smartphone ringtone, someone typing, footsteps, a notification and a glass break
from the real-audio DEV set (`build-real-dev`), 1.5 s of room-level noise between
them, so a model with a sound-event head shows on its timeline what it heard where::

  python -m audio_interaction build-real-dev --out data/real_dev
  python docs/sound_events_example.py --dev data/real_dev/events.jsonl
  python -m audio_interaction listen sound_events.wav --speed inf --checkpoint BUNDLE --out runs/sounds

`--pick CLASS[:PACKAGE],...` chooses other events (the first of each class, from that
DEV package when one is named).
"""

import argparse
import json
import pathlib

import numpy as np
import soundfile

from audio_interaction.audio import io as audio_io
from audio_interaction.corpus import effects

# One event of each of these classes, the first of its class in the manifest.
CLASSES = ("phone_ring", "keyboard", "footsteps", "notification", "glass_break")
MAX_SECONDS = 6.0


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--dev", type=pathlib.Path, default=pathlib.Path("data/real_dev/events.jsonl"))
  parser.add_argument("--out", default="sound_events.wav")
  parser.add_argument("--pick", default=",".join(CLASSES),
                      help="comma list of CLASS or CLASS:PACKAGE, in stream order")
  args = parser.parse_args()
  rows = [json.loads(line) for line in args.dev.read_text().splitlines() if line.strip()]
  rng = np.random.default_rng(0)
  gap = lambda: 0.003 * effects.colored_noise(rng, int(1.5 * 16000), 1.0)
  pieces, placed = [gap()], []
  for pick in args.pick.split(","):
    label, _, package = pick.strip().partition(":")
    row = next((r for r in rows if r["events"][0]["class"] == label
                and (not package or r.get("source_package") == package)), None)
    if row is None:
      raise SystemExit(f"--pick {pick}: no such event in {args.dev}")
    event = row["events"][0]
    audio = audio_io.load_audio(args.dev.parent / row["audio"])
    audio = audio[int(16000 * event["onset"]):int(16000 * event["offset"])][:int(16000 * MAX_SECONDS)]
    placed.append(f"{label} at {sum(len(p) for p in pieces) / 16000:.1f} s ({row['id']})")
    pieces += [effects.set_level(audio.astype(np.float32), -20.0), gap()]
  soundfile.write(args.out, np.concatenate(pieces).astype(np.float32), 16000)
  print("\n".join(placed))


if __name__ == "__main__":
  main()
