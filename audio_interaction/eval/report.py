"""The benchmark report: `results.json`, `report.md` and its plots, from `suites.evaluate`.

The tables and the Markdown page; the pictures are drawn by `viz/report_plots.py` and
`apps/eval_run.py` runs the whole evaluation.
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any

from audio_interaction.eval import suites as suites_lib
from audio_interaction.viz.report_plots import (
    SYSTEM_LABELS, plot_latency_cdfs, plot_per_subtask, plot_sweeps)

CASES_FILE = "cases.jsonl"

def fmt(value: Any, kind: str = "f") -> str:
  """A figure for a table: "42%" (kind "%"), "0.31 s" ("s"), "2.50" ("f"), "—" when undefined."""
  if value is None or (isinstance(value, float) and not math.isfinite(value)):
    return "—"
  if kind == "k/n":
    return str(value)
  if kind == "%":
    return f"{value:.0%}"
  if kind == "s":
    return f"{value:.2f} s"
  return f"{value:.2f}"


_ROWS = suites_lib.HEADLINES  # (suite, label, path into a system block, format)


def _get(block: dict | None, path: tuple[str, ...]) -> Any:
  """block[path[0]][path[1]]...; a "k/n" row's path is (k key, n key): returns "k/n"."""
  if len(path) == 2 and isinstance(block, dict) and path[1] in block and not isinstance(
      block.get(path[0]), dict):
    return f"{block.get(path[0])}/{block[path[1]]}"
  for key in path:
    if not isinstance(block, dict):
      return None
    block = block.get(key)
  return block


def _with_interval(value: Any, interval: dict | None, kind: str) -> str:
  """"0.42 [0.30, 0.55]": the value and its 95 % bootstrap interval (when it has one)."""
  text = fmt(value, kind)
  if kind == "k/n" or not interval or text == "—":
    return text
  low, high = interval.get("low"), interval.get("high")
  if low is None or high is None or not all(math.isfinite(v) for v in (low, high)):
    return text
  return f"{text} [{fmt(low, kind)}, {fmt(high, kind)}]"


def summary_table(results: dict) -> str:
  """The Markdown table of every suite's headline metrics, model beside baseline/peer,
  each with its 95 % bootstrap interval over cases and the suite's case count."""
  lines = ["| suite (cases) | metric | our model [95 % CI] | beside it [95 % CI] |",
           "|---|---|---|---|"]
  for suite, label, path, kind in _ROWS:
    result = results["suites"].get(suite)
    if not result or not result.get("cases"):
      continue
    # A row whose path starts with a system name reads that system of ours (e.g. the
    # CTC transcript) instead of the model's replies.
    system = path[0] if path[0] in suites_lib.OUR_SYSTEMS else "model"
    path = path[1:] if system != "model" else path
    if system != "model" and system not in result:  # e.g. the LM search, when not run
      continue
    intervals = result.get("intervals", {})
    key = ".".join(path)
    other_name = next((b for b in suites_lib.BASELINES if b in result), None)
    other = "—"
    if other_name is not None and system == "model":
      other = (f"{_with_interval(_get(result[other_name], path), intervals.get(f'{other_name}:{key}'), kind)}"
               f" ({SYSTEM_LABELS[other_name]})")
    count = _units(result, suite)
    lines.append(f"| {suite} {result['name']} ({count}) | {label} | "
                 f"{_with_interval(_get(result.get(system), path), intervals.get(f'{system}:{key}'), kind)}"
                 f" | {other} |")
  return "\n".join(lines)


def _units(result: dict, suite: str) -> str:
  """"12 cases", with the items behind the figures where they are not cases."""
  text = f"{result['cases']} cases"
  model = result.get("model", {})
  if suite == "B5":
    text += f", {model.get('turns', 0)} turns"
  elif suite == "B6":
    text += f", {model.get('events', 0)} events"
  elif suite == "B2":
    text += f", {model.get('reference_words', 0)} words"
  return text


def case_count_lines(results: dict) -> list[str]:
  """Each suite's case count, which suites had none, and figures resting on fewer items
  than asked (B5 turns, B6 events) or on approximate word times (B2)."""
  counts = results.get("case_counts", {})
  lines = ["Cases per suite: " + ", ".join(f"{s} {n}" for s, n in counts.items()) + "."]
  empty = results.get("suites_without_cases", [])
  if empty:
    lines.append(f"No cases for {', '.join(empty)}: the source has nothing those suites can "
                 "score (see docs/manifests.md for the annotations each suite needs); they are "
                 "left out of the table.")
  b5, b6, b2 = (results["suites"].get(s, {}) for s in ("B5", "B6", "B2"))
  turns, target = b5.get("model", {}).get("turns"), b5.get("target_turns")
  if b5.get("cases") and target and turns is not None and turns < target:
    lines.append(f"B5 rests on {turns} turns, fewer than the {target} asked.")
  events, target = b6.get("model", {}).get("events"), b6.get("target_alert_events")
  if b6.get("cases") and target and events is not None and events < target:
    lines.append(f"B6 rests on {events} alert events, fewer than the {target} asked.")
  if b2.get("cases"):
    lines.append(f"B2 word times (emission delays): {b2.get('word_times', 'synthesis timeline')}.")
  return lines


def sweep_table(results: dict) -> str:
  """Markdown tables of the B5 and B6 sweeps."""
  lines = []
  b5 = results["suites"].get("B5", {})
  if b5.get("sweep_model"):
    lines += ["| B5 system | setting | median latency | false cut-in | miss |", "|---|---|---|---|---|"]
    for system, key, unit in (("our model", "sweep_model", "θ = "),
                              ("silence timer", "sweep_silence_timer", "silence ")):
      for name, p in b5.get(key, {}).items():
        lines.append(f"| {system} | {unit}{name}{' s' if key != 'sweep_model' else ''} | "
                     f"{fmt(p['response_latency_s']['median'], 's')} | "
                     f"{fmt(p['false_cut_in_rate'], '%')} | {fmt(p['miss_rate'], '%')} |")
  b6 = results["suites"].get("B6", {})
  if b6.get("sweep_model"):
    lines += ["", "| B6 threshold | recall | precision | false alarms / h |", "|---|---|---|---|"]
    for name, p in b6["sweep_model"].items():
      lines.append(f"| θ = {name} | {fmt(p['recall'], '%')} | {fmt(p['precision'], '%')} | "
                   f"{fmt(p['false_alarms_per_hour'])} |")
  return "\n".join(lines)


def write_report(results: dict, out_dir: str | pathlib.Path, *, note: str = "",
                 command: str = "") -> dict[str, pathlib.Path]:
  """Writes results.json, cases.jsonl (one line per case: what each system said and
  when), report.md and the three PNGs into `out_dir`; returns their paths."""
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  results = suites_lib.json_safe(results)
  per_case = results.pop("per_case", [])
  (out / CASES_FILE).write_text("".join(json.dumps(c) + "\n" for c in per_case))
  paths = {"json": out / "results.json", "markdown": out / "report.md",
           "cases": out / CASES_FILE,
           "cdfs": plot_latency_cdfs(results, out / "latency_cdfs.png"),
           "sweeps": plot_sweeps(results, out / "sweeps.png"),
           "per_subtask": plot_per_subtask(results, out / "per_subtask.png")}
  paths["json"].write_text(json.dumps(results, indent=1))
  timing = results.get("timing", {})
  config = results.get("config", {})
  text = [
      "# Benchmark report (B1-B8)", "",
      f"Model: {note}." if note else "",
      f"Reproduce: `{command}`" if command else "",
      "",
      f"{timing.get('cases', 0)} cases, {fmt(timing.get('stream_seconds'))} s of audio; "
      f"decision threshold {config.get('threshold')}; baseline: {config.get('vad')} VAD + "
      f"{config.get('silence_seconds')} s of silence driving the same model; a reply answers "
      f"a turn or an alert an event when it starts within {config.get('answer_window_s')} s. "
      "Times are stream times. Definitions: `audio_interaction/eval/metrics.py`; data and "
      "mapping of the 28 sub-tasks: `audio_interaction/eval/suites.py`. Brackets: 95 % "
      f"percentile-bootstrap intervals over cases ({config.get('bootstrap_resamples')} "
      f"resamples, seed {config.get('bootstrap_seed')}); per-case outputs: `{CASES_FILE}`.",
      "", *case_count_lines(results), "", summary_table(results), "",
      "## Latency distributions", "", "![latency CDFs](latency_cdfs.png)", "",
      "## Sweeps", "",
      "Each threshold is a separate run of the model (its replies change its state); the "
      "timer's silence lengths re-time the same VAD output.", "",
      "![sweeps](sweeps.png)", "", sweep_table(results), "",
      "## Accuracy per sub-task", "", "![per sub-task accuracy](per_subtask.png)", "",
      "## Timing", "",
      f"Wall time {fmt(timing.get('wall_seconds'))} s in all "
      f"({fmt(_get(timing, ('wall_seconds_per_case', 'median')))} s median per case, every "
      "system and sweep row included); model step "
      f"{fmt(timing.get('model_compute_ms_per_chunk_per_row'))} ms per chunk per batch row.",
  ]
  paths["markdown"].write_text("\n".join(line for line in text if line is not None) + "\n")
  return paths


