"""A B3 manifest of the TRAIN sound bank's own recordings: can a model name what it trained on?

Draws recorded (never procedural) clips of a few classes from the TRAIN split's sound
bank exactly as the corpus builder does (real TRAIN packages included, single impacts
laid as runs), writes them as 16 kHz wavs and a manifest that `eval --suites B3` reads.
A model that cannot name these cannot be expected to name the DEV set's::

  python docs/train_sounds_manifest.py --out data/train_sounds
  python -m audio_interaction eval --checkpoint BUNDLE --manifest data/train_sounds/manifest.jsonl \\
      --suites B3 --out runs/train_sounds_B3
"""

import argparse
import json
import pathlib

import numpy as np
import soundfile as sf

from audio_interaction import config_lib
from audio_interaction.corpus import build, worlds
from audio_interaction.stream_format import SAMPLE_RATE

CLASSES = ("keyboard", "dog_bark", "phone_ring", "siren", "notification", "footsteps")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--out", required=True, help="folder for the wavs and manifest.jsonl")
  parser.add_argument("--config", default="experiments/tiny.py:randomize",
                      help="a config whose data.randomize names the TRAIN audio")
  parser.add_argument("--per-class", type=int, default=6)
  args = parser.parse_args()
  config = config_lib.load_config(args.config)
  bank = build.sound_source(worlds.TRAIN, config.data.randomize.to_dict())
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  rows = []
  for label in CLASSES:
    made, seed = 0, 0
    while made < args.per_class and seed < 50 * args.per_class:
      clip = bank.sample(label, np.random.default_rng(seed))
      seed += 1
      if clip.source.startswith("procedural:"):
        continue
      name = f"{label}_{made}.wav"
      sf.write(str(out / name), clip.audio, SAMPLE_RATE)
      seconds = len(clip.audio) / SAMPLE_RATE
      rows.append({"id": f"{label}_{made}", "audio": name, "duration": seconds,
                   "source": clip.source, "turns": [],
                   "events": [{"onset": 0.0, "offset": seconds, "class": label,
                               "role": "alert" if label in worlds.ALERT_LABELS else "benign"}]})
      made += 1
  (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  print(f"{len(rows)} recorded TRAIN clips of {len(CLASSES)} classes -> {out / 'manifest.jsonl'}")


if __name__ == "__main__":
  main()
