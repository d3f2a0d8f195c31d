"""Prints the README's alert table over lead-ins from `eval --suites B6` runs.

Each run scored the same DEV event recordings, played later in the stream by
`audio-interaction lead-in`. The table divides every run's false alarms by the benign
time of the run without a lead-in (the first one), so the rates compare the same
sounds whether or not a run counted its lead-in's quiet as benign time (manifests
written before `lead_in` was a manifest field did)::

  python docs/lead_in_table.py --run "from the start=runs/rap_events_lead0" \\
      --run "15 s in=runs/rap_events_lead15"
"""

import argparse
import json
import pathlib


def _row(label: str, run: pathlib.Path, hours: float) -> str:
  b6 = json.loads((run / "results.json").read_text())["suites"]["B6"]
  model, intervals = b6["model"], b6["intervals"]
  recall = intervals["model:recall"]
  # The run's own count: its rate times its benign hours (lead-in included).
  false_alarms = round(model["false_alarms_per_hour"] * model["hours"])
  named = model["naming"]["rate"]
  return (f"| {label} | {model['recall']:.0%} [{recall['low']:.0%}, {recall['high']:.0%}] | "
          f"{false_alarms} ({false_alarms / hours:.0f} / h) | "
          f"{'—' if named is None else f'{named:.0%}'} |")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--run", action="append", required=True,
                      help="LABEL=DIR of an eval run; the first is the run without a lead-in")
  args = parser.parse_args()
  runs = [(label, pathlib.Path(path)) for label, path in
          (item.rsplit("=", 1) for item in args.run)]
  reference = json.loads((runs[0][1] / "results.json").read_text())["suites"]["B6"]["model"]
  print("| lead-in | alert recall [95 % CI] | false alarms (per hour of the recordings' "
        "benign time) | alerts named |")
  print("|---|---|---|---|")
  for label, run in runs:
    print(_row(label, run, reference["hours"]))


if __name__ == "__main__":
  main()
