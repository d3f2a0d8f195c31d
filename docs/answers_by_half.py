"""Prints answer accuracy of `eval` runs on a manifest's tuning half A and held-out half B.

`tune` splits a dev manifest's cases in two (`eval.tune.split_halves`, seed 0): it
chooses on half A and reports half B. `tune` chooses decision policies and alerts; a
setting of the answers (e.g. `--sound-name-bias`) is chosen the same way by running
`eval` once per value on the whole manifest and reading each run on the two halves::

  python docs/answers_by_half.py --manifest data/real_dev/events.jsonl --suite B3 \\
      --run "beta 4=runs/b4" --run "beta 8=runs/b8"

An offline case is right when some expected answer equals the model's
(`metrics.exact_match`); an online one (B7 on a manifest of requests,
docs/watch_requests.py) when every reply it warrants was answered in time with the
exact words (cases.jsonl's `in_time_exact`, as B7's accuracy counts). Each half's
accuracy has its 95 % bootstrap interval over cases.
"""

import argparse
import json
import pathlib
from collections.abc import Sequence

from audio_interaction.eval import bootstrap, suites, tune
from audio_interaction.eval.metrics import exact_match


def right_by_case(run: pathlib.Path) -> dict[str, bool]:
  """{case name: whether the model's answer equals an expected one} of an eval run."""
  right = {}
  for line in (run / "cases.jsonl").read_text().splitlines():
    case = json.loads(line)
    model = case["systems"]["model"]
    if "replies" in model and "in_time_exact" not in model:
      raise ValueError(f"{run}: online case {case['case']} has no in_time_exact (an eval "
                       f"run older than that field): run eval again")
    if "in_time_exact" in model:
      right[case["case"]] = model["in_time_exact"] == len(case["expected"])
      continue
    said = model.get("answer") or ""
    right[case["case"]] = any(exact_match(e["text"], said) for e in case["expected"])
  return right


def halves(manifest: str, suite: str, seed: int = 0) -> dict[str, list[str]]:
  """{"A": case names, "B": case names} of `suite`'s cases of `manifest`, as `tune` splits."""
  cases = suites.cases_from_manifest(manifest, [suite])
  half_a, half_b = tune.split_halves(cases, seed)
  return {"A": [cases[i].name for i in half_a], "B": [cases[i].name for i in half_b]}


def rows(runs: Sequence[tuple[str, pathlib.Path]], split: dict[str, list[str]]) -> list[str]:
  """One Markdown row per run: accuracy [95 % interval] on half A, then half B."""
  out = []
  for label, run in runs:
    right = right_by_case(run)
    cells = []
    for half in ("A", "B"):
      scores = [float(right[name]) for name in split[half]]
      low, high = bootstrap.interval(scores)
      cells.append(f"{sum(scores):.0f} of {len(scores)}, {sum(scores) / len(scores):.0%} "
                   f"[{low:.0%}, {high:.0%}]")
    out.append(f"| {label} | {cells[0]} | {cells[1]} |")
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--manifest", required=True)
  parser.add_argument("--suite", default="B3")
  parser.add_argument("--run", action="append", required=True,
                      help="LABEL=DIR: an eval run of --suite on --manifest")
  args = parser.parse_args()
  runs = [(label, pathlib.Path(path)) for label, path in
          (item.rsplit("=", 1) for item in args.run)]
  print("| run | half A (tuning) | half B (held out) |")
  print("|---|---|---|")
  print("\n".join(rows(runs, halves(args.manifest, args.suite))))


if __name__ == "__main__":
  main()
