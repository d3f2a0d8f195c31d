"""How far each DEV turn's end moves when it ends at the last word, not at the recording.

Compares two builds of the DEV set's turn-taking streams, the same audio annotated both
ways (`build-real-dev --turn-end`)::

  python -m audio_interaction build-real-dev --out data/real_dev
  python -m audio_interaction build-real-dev --turn-end recording --out data/real_dev_recording_end
  python docs/turn_end_shift.py data/real_dev data/real_dev_recording_end

and prints, per manifest, how many turns end earlier by how much, with the packages of
the ones that move more than 0.1 s (the README's "A turn ends at its last word").
"""

import argparse
import collections
import json
import pathlib

import numpy as np


def _rows(path: pathlib.Path) -> list[dict]:
  return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("last_word", help="a DEV set built with --turn-end speech")
  parser.add_argument("recording", help="the same built with --turn-end recording")
  args = parser.parse_args()
  for name in ("streams.jsonl", "streams_split.jsonl"):
    speech = _rows(pathlib.Path(args.last_word) / name)
    recording = _rows(pathlib.Path(args.recording) / name)
    if [r["id"] for r in speech] != [r["id"] for r in recording]:
      raise SystemExit(f"{name}: the two builds hold different streams (another seed?)")
    shift = np.array([r["turns"][0]["end"] - s["turns"][0]["end"]
                      for s, r in zip(speech, recording)])
    moved = [s["source_package"] for s, d in zip(speech, shift) if d > 0.1]
    print(f"{name}: {len(shift)} turns; the end moves earlier by "
          f"p50 {np.percentile(shift, 50):.2f} s, p75 {np.percentile(shift, 75):.2f} s, "
          f"p90 {np.percentile(shift, 90):.2f} s, max {shift.max():.2f} s "
          f"(min {shift.min():.2f} s); "
          f"within 0.05 s: {int((shift <= 0.05).sum())}; more than 0.1 s: {len(moved)} "
          f"({', '.join(f'{k} {v}' for k, v in sorted(collections.Counter(moved).items()))})")


if __name__ == "__main__":
  main()
