"""Median reply latency by turn length, from an eval run's per-case outputs.

The prosody turn-end model reads how much has been said; this shows what that costs a
short turn::

  python -m audio_interaction eval --checkpoint real-audio --manifest data/real_dev/streams_single.jsonl \\
      --suites B5 --sweep "" --out runs/single
  python docs/latency_by_turn_length.py runs/single

A turn's latency is its first model reply at or after the turn's end, minus the end (a
turn with none is left out and counted).
"""

import argparse
import json
import pathlib

import numpy as np

BUCKETS = ((0.0, 1.5), (1.5, 2.5), (2.5, float("inf")))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("run", help="an eval --out folder (its cases.jsonl)")
  parser.add_argument("--system", default="model", help="model or silence_timer")
  args = parser.parse_args()
  turns = []  # (length s, latency s or None)
  for line in (pathlib.Path(args.run) / "cases.jsonl").read_text("utf-8").splitlines():
    case = json.loads(line)
    starts = sorted(r["start_s"] for r in case["systems"][args.system]["replies"])
    for start, end in case["annotations"]["turns"]:
      after = [s for s in starts if s >= end]
      turns.append((end - start, after[0] - end if after else None))
  for low, high in BUCKETS:
    inside = [latency for length, latency in turns if low <= length < high]
    answered = [x for x in inside if x is not None]
    median = f"{np.median(answered):.2f} s" if answered else "-"
    quick = f"{np.mean(np.asarray(answered) < 0.5):.0%}" if answered else "-"
    print(f"turns of {low:g}-{high:g} s: {len(inside)} ({len(inside) - len(answered)} "
          f"unanswered); median latency {median}; answered within 0.5 s: {quick}")


if __name__ == "__main__":
  main()
