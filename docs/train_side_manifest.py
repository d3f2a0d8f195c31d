"""Manifests of the TRAIN side's own recordings: can a model do what it trained on?

`--kind sounds` draws recorded (never procedural) clips of a few classes from the
TRAIN split's sound bank exactly as the corpus builder does (real TRAIN packages
included, single impacts laid as runs) for `eval --suites B3`; `--kind speech` takes
real English lines of a recorded-speech source with their (pseudo-)labels, trimmed as
the corpus places them, for `eval --suites B1,B2`; `--kind turns` builds split turns
from single sentences of those lines exactly as the DEV set's `streams_split.jsonl` is
built (its noise beds included), for `eval --suites B5`. A model that cannot do these
cannot be expected to do the DEV set's::

  python docs/train_side_manifest.py --kind sounds --out data/train_sounds
  python docs/train_side_manifest.py --kind speech --out data/train_speech
  python docs/train_side_manifest.py --kind turns --count 40 --out data/train_turns
  python -m audio_interaction eval --checkpoint BUNDLE --manifest data/train_sounds/manifest.jsonl \\
      --suites B3 --out runs/train_sounds_B3
"""

import argparse
import json
import os
import pathlib

import numpy as np
import soundfile as sf

from audio_interaction import config_lib
from audio_interaction.corpus import build, real_audio, real_speech, worlds
from audio_interaction.stream_format import SAMPLE_RATE

CLASSES = ("keyboard", "dog_bark", "phone_ring", "siren", "notification", "footsteps")


def _sound_rows(config, out: pathlib.Path, per_class: int) -> list[dict]:
  bank = build.sound_source(worlds.TRAIN, config.data.randomize.to_dict())
  rows = []
  for label in CLASSES:
    made, seed = 0, 0
    while made < per_class and seed < 50 * per_class:
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
  return rows


def _speech_rows(config, out: pathlib.Path, source: str, count: int, *,
                 pausable: bool = False, folder: str = "") -> list[dict]:
  root = os.path.expanduser(config.data.randomize.train_audio_root)
  lines = [line for line in real_speech.english_lines(root, source)
           if line.pause_cut is not None or not pausable]
  picks = np.random.default_rng(0).choice(len(lines), size=min(count, len(lines)), replace=False)
  rows = []
  if folder:
    (out / folder).mkdir(parents=True, exist_ok=True)
  for i in sorted(int(p) for p in picks):
    line = lines[i]
    audio = line.audio()
    name = f"{folder}/line_{i:05d}.wav" if folder else f"line_{i:05d}.wav"
    sf.write(str(out / name), audio, SAMPLE_RATE)
    rows.append({"id": f"{source}/{i}", "audio": name, "duration": len(audio) / SAMPLE_RATE,
                 "text": line.text, "speaker": line.voice, "source": line.ref.relpath,
                 "source_package": line.ref.package,
                 "events": [], "turns": []})
  return rows


def _turn_rows(config, out: pathlib.Path, source: str, count: int) -> list[dict]:
  """Split turns built as the DEV set's `streams_split.jsonl` (`real_audio.build_turn_streams`,
  its noise beds included), from single-sentence lines of `source` instead of DEV clips."""
  root = os.path.expanduser(config.data.randomize.train_audio_root)
  speech = [real_audio.SpeechRow(row, "en", True)
            for row in _speech_rows(config, out, source, 4 * count, pausable=True,
                                    folder="speech")]
  return real_audio.build_turn_streams(root, out, speech, [], count, seed=0, kind="split")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--kind", choices=("sounds", "speech", "turns"), required=True)
  parser.add_argument("--out", required=True, help="folder for the wavs and manifest.jsonl")
  parser.add_argument("--config", default="experiments/tiny.py:randomize",
                      help="a config whose data.randomize names the TRAIN audio")
  parser.add_argument("--per-class", type=int, default=6, help="sounds: clips per class")
  parser.add_argument("--source", default="amazon-queen-en",
                      choices=config_lib.ENGLISH_SPEECH_SOURCES, help="speech: which lines")
  parser.add_argument("--count", type=int, default=100,
                      help="speech: how many lines; turns: how many streams")
  args = parser.parse_args()
  config = config_lib.load_config(args.config)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  if args.kind == "turns":  # build_turn_streams writes its own streams_split.jsonl
    rows = _turn_rows(config, out, args.source, args.count)
    print(f"{len(rows)} TRAIN-side split turns -> {out / 'streams_split.jsonl'}")
    return
  rows = (_sound_rows(config, out, args.per_class) if args.kind == "sounds"
          else _speech_rows(config, out, args.source, args.count))
  (out / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  print(f"{len(rows)} TRAIN-side {args.kind} clips -> {out / 'manifest.jsonl'}")


if __name__ == "__main__":
  main()
