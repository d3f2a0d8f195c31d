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

def _fmt(value: Any, kind: str = "f") -> str:
  if value is None or (isinstance(value, float) and not math.isfinite(value)):
    return "—"
  if kind == "k/n":
    return str(value)
  if kind == "%":
    return f"{value:.0%}"
  if kind == "s":
    return f"{value:.2f} s"
  return f"{value:.2f}"


# (suite, label, path into a system block, format) for the summary table.
_ROWS: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("B1", "WER", ("wer",), "%"),
    ("B2", "WER", ("wer",), "%"),
    ("B2", "emission delay, median", ("emission_delay_s", "median"), "s"),
    ("B2", "emission delay, p90", ("emission_delay_s", "p90"), "s"),
    ("B2", "WER of the encoder's CTC transcript", ("model_ctc", "wer"), "%"),
    ("B2", "CTC emission delay, median", ("model_ctc", "emission_delay_s", "median"), "s"),
    ("B3", "accuracy", ("accuracy",), "%"),
    ("B4", "exact-match accuracy", ("accuracy",), "%"),
    ("B5", "response latency, median", ("response_latency_s", "median"), "s"),
    ("B5", "response latency, p90", ("response_latency_s", "p90"), "s"),
    ("B5", "false cut-in rate", ("false_cut_in_rate",), "%"),
    ("B5", "miss rate", ("miss_rate",), "%"),
    ("B6", "alert precision", ("precision",), "%"),
    ("B6", "alert recall", ("recall",), "%"),
    ("B6", "alert F1", ("f1",), "f"),
    ("B6", "latency from onset, median", ("onset_latency_s", "median"), "s"),
    ("B6", "false alarms per hour", ("false_alarms_per_hour",), "f"),
    ("B7", "accuracy of triggered replies", ("accuracy",), "%"),
    ("B7", "triggered in time (recall)", ("recall",), "%"),
    ("B7", "latency from ready, median", ("latency_from_ready_s", "median"), "s"),
    ("B8", "barge-ins heard while speaking", ("barge_ins_while_speaking", "barge_ins"), "k/n"),
    ("B8", "barge-in yield rate", ("barge_in_yield_rate",), "%"),
    ("B8", "yield latency, median", ("yield_latency_s", "median"), "s"),
    ("B8", "backchannels heard while speaking", ("backchannels_while_speaking", "backchannels"),
     "k/n"),
    ("B8", "backchannel yield rate (lower is better)", ("backchannel_yield_rate",), "%"),
    ("B8", "false reply rate, speech not addressed", ("false_reply_rate",), "%"),
)


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


def summary_table(results: dict) -> str:
  """The Markdown table of every suite's headline metrics, model beside baseline/peer."""
  lines = ["| suite | metric | our model | beside it |", "|---|---|---|---|"]
  for suite, label, path, kind in _ROWS:
    result = results["suites"].get(suite)
    if not result or not result.get("cases"):
      continue
    # A row whose path starts with a system name reads that system of ours (e.g. the
    # CTC transcript) instead of the model's replies.
    system = path[0] if path[0] in SYSTEM_LABELS else "model"
    path = path[1:] if system != "model" else path
    other_name = "silence_timer" if "silence_timer" in result else (
        "pocketsphinx" if "pocketsphinx" in result else None)
    other = "—"
    if other_name is not None:
      other = f"{_fmt(_get(result[other_name], path), kind)} ({SYSTEM_LABELS[other_name]})"
    lines.append(f"| {suite} {result['name']} ({result['cases']}) | {label} | "
                 f"{_fmt(_get(result.get(system), path), kind)} | {other} |")
  return "\n".join(lines)


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
                     f"{_fmt(p['response_latency_s']['median'], 's')} | "
                     f"{_fmt(p['false_cut_in_rate'], '%')} | {_fmt(p['miss_rate'], '%')} |")
  b6 = results["suites"].get("B6", {})
  if b6.get("sweep_model"):
    lines += ["", "| B6 threshold | recall | precision | false alarms / h |", "|---|---|---|---|"]
    for name, p in b6["sweep_model"].items():
      lines.append(f"| θ = {name} | {_fmt(p['recall'], '%')} | {_fmt(p['precision'], '%')} | "
                   f"{_fmt(p['false_alarms_per_hour'])} |")
  return "\n".join(lines)


def write_report(results: dict, out_dir: str | pathlib.Path, *, note: str = "",
                 command: str = "") -> dict[str, pathlib.Path]:
  """Writes results.json, report.md and the three PNGs into `out_dir`; returns their paths."""
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  results = suites_lib.json_safe(results)
  paths = {"json": out / "results.json", "markdown": out / "report.md",
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
      f"{timing.get('cases', 0)} cases, {_fmt(timing.get('stream_seconds'))} s of audio; "
      f"decision threshold {config.get('threshold')}; baseline: {config.get('vad')} VAD + "
      f"{config.get('silence_seconds')} s of silence driving the same model; a reply answers "
      f"a turn or an alert an event when it starts within {config.get('answer_window_s')} s. "
      "Times are stream times. Definitions: `audio_interaction/eval/metrics.py`; data and "
      "mapping of the 28 sub-tasks: `audio_interaction/eval/suites.py`.",
      "", summary_table(results), "",
      "## Latency distributions", "", "![latency CDFs](latency_cdfs.png)", "",
      "## Sweeps", "",
      "Each threshold is a separate run of the model (its replies change its state); the "
      "timer's silence lengths re-time the same VAD output.", "",
      "![sweeps](sweeps.png)", "", sweep_table(results), "",
      "## Accuracy per sub-task", "", "![per sub-task accuracy](per_subtask.png)", "",
      "## Timing", "",
      f"Wall time {_fmt(timing.get('wall_seconds'))} s in all "
      f"({_fmt(_get(timing, ('wall_seconds_per_case', 'median')))} s median per case, every "
      "system and sweep row included); model step "
      f"{_fmt(timing.get('model_compute_ms_per_chunk_per_row'))} ms per chunk per batch row.",
  ]
  paths["markdown"].write_text("\n".join(line for line in text if line is not None) + "\n")
  return paths


