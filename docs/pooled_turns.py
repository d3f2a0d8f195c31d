"""Prints B5 turn-taking pooled over several `eval --suites B5` runs, one row per system.

Each run scored one manifest of turn-taking streams (`eval` takes one manifest); a
row pools the turns of its runs: false cut-ins and misses counted over all of them,
and the median of all their response latencies. The silence timer's row comes from
the same runs (each eval scores "silence timer + same model" beside the model)::

  python docs/pooled_turns.py --run "shipped=runs/a,runs/b" --run "pinned=runs/c,runs/d"
"""

import argparse
import json
import pathlib

import numpy as np


def pooled(runs: list[pathlib.Path], system: str) -> tuple[int, int, int, float]:
  """(turns, false cut-ins, misses, median latency in s) of `system` over `runs`."""
  turns = cut_ins = misses = 0
  latencies: list[float] = []
  for run in runs:
    b5 = json.loads((run / "results.json").read_text())["suites"]["B5"][system]
    turns += b5["turns"]
    cut_ins += round(b5["false_cut_in_rate"] * b5["turns"])
    misses += round(b5["miss_rate"] * b5["turns"])
    latencies += b5["latencies"]
  return turns, cut_ins, misses, float(np.median(latencies)) if latencies else float("nan")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--run", action="append", required=True,
                      help="LABEL=DIR[,DIR...]: eval runs whose B5 turns are pooled")
  args = parser.parse_args()
  print("| system | turns | false cut-in | miss | median latency |")
  print("|---|---|---|---|---|")
  rows = [(label, [pathlib.Path(p) for p in dirs.split(",")])
          for label, dirs in (item.rsplit("=", 1) for item in args.run)]
  for label, runs in rows + [("0.7 s silence timer (" + rows[0][0] + "'s runs)", rows[0][1])]:
    system = "silence_timer" if label.startswith("0.7 s silence timer") else "model"
    turns, cut_ins, misses, latency = pooled(runs, system)
    print(f"| {label} | {turns} | {cut_ins} ({cut_ins / turns:.0%}) | "
          f"{misses} ({misses / turns:.0%}) | {latency:.2f} s |")


if __name__ == "__main__":
  main()
