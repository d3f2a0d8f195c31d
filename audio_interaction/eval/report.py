"""The benchmark report: `results.json`, `report.md` and its plots, from `suites.evaluate`.

`run_eval` is what `audio-interaction eval` calls: load a model (a bundle, a training
workdir, or the embedded one), build the cases (held-out streams or a manifest), run
the suites, write the report. Plots (matplotlib, Agg): latency CDFs (B5 response
latency, model vs silence timer; B2 emission delay, model vs PocketSphinx; B6 alert
onset latency), the threshold / silence-length sweeps, and per-sub-task accuracy.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from audio_interaction.data import tasks  # pylint: disable=wrong-import-position
from audio_interaction.eval import suites as suites_lib  # pylint: disable=wrong-import-position

_COLORS = {"model": "tab:blue", "silence_timer": "tab:orange", "pocketsphinx": "tab:green",
           "model_ctc": "tab:purple"}
_LABELS = {"model": "our model", "silence_timer": "silence timer + same model",
           "pocketsphinx": "PocketSphinx", "model_ctc": "our encoder's CTC transcript"}


# ------------------------------------------------------------------------------ plots

def _cdf(ax, values: Sequence[float], total: int, system: str) -> None:
  """Fraction of all `total` items (answered or not) with a value <= x: the curve tops
  out at the answered fraction, so a system that misses more sits lower."""
  if not len(values) or not total:
    return
  xs = np.sort(np.asarray(values, np.float64))
  ys = np.arange(1, len(xs) + 1) / total
  ax.step(xs, ys, where="post", color=_COLORS[system],
          label=f"{_LABELS[system]} ({len(xs)} of {total})")


def plot_latency_cdfs(results: dict, path: pathlib.Path) -> pathlib.Path:
  """CDFs of B5 response latency, B2 emission delay and B6 onset latency (s)."""
  suites = results["suites"]
  panels = [("B5", "response latency (s): end of speech → first reply token",
             ("model", "silence_timer"), "latencies", "turns"),
            ("B2", "emission delay (s): word emitted − word end",
             ("model", "model_ctc", "pocketsphinx"),
             "delays", "reference_words"),
            ("B6", "alert latency (s) from the event onset", ("model",), "latencies", "events")]
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  for ax, (suite, title, systems, key, total_key) in zip(axes, panels):
    ax.set_title(f"{suite}: {title}", fontsize=9)
    ax.set_ylabel("fraction of all turns / words / events")
    ax.set_ylim(0, 1.02)
    plotted = False
    for system in systems:
      block = suites.get(suite, {}).get(system, {})
      values = block.get(key, [])
      _cdf(ax, values, block.get(total_key) or 0, system)
      plotted |= bool(values)
    if plotted:
      ax.legend(fontsize=8, loc="lower right")
    else:
      ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def _curve(ax, points: dict, x_key, y_key, system: str, label_of) -> None:
  xs, ys, names = [], [], []
  for name, point in points.items():
    x, y = x_key(point), y_key(point)
    if x is None or y is None or not (math.isfinite(x) and math.isfinite(y)):
      continue
    xs.append(x)
    ys.append(y)
    names.append(name)
  if not xs:
    return
  ax.plot(xs, ys, "o-", color=_COLORS[system], label=_LABELS[system])
  for x, y, name in zip(xs, ys, names):
    ax.annotate(label_of(name), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")


def plot_sweeps(results: dict, path: pathlib.Path) -> pathlib.Path:
  """Left: median response latency vs false cut-in rate (B5), the model's decision
  threshold swept and the timer's silence length swept. Right: alert recall vs false
  alarms per hour (B6), threshold swept."""
  suites = results["suites"]
  fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
  b5 = suites.get("B5", {})
  _curve(left, b5.get("sweep_model", {}), lambda p: p["false_cut_in_rate"],
         lambda p: p["response_latency_s"]["median"], "model", lambda n: f"θ={n}")
  _curve(left, b5.get("sweep_silence_timer", {}), lambda p: p["false_cut_in_rate"],
         lambda p: p["response_latency_s"]["median"], "silence_timer", lambda n: f"{n} s")
  left.set_xlabel("false cut-in rate (replies started before the turn ended)")
  left.set_ylabel("median response latency (s)")
  left.set_title("B5 turn-taking: latency vs cutting in", fontsize=10)
  b6 = suites.get("B6", {})
  _curve(right, b6.get("sweep_model", {}), lambda p: p["false_alarms_per_hour"],
         lambda p: p["recall"], "model", lambda n: f"θ={n}")
  right.set_ylim(-0.02, 1.02)
  right.set_xlim(left=-0.5)
  right.set_xlabel("false alarms per hour")
  right.set_ylabel("alert recall")
  right.set_title("B6 proactive sound: recall vs false alarms", fontsize=10)
  for ax in (left, right):
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=8)
    else:
      ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def plot_per_subtask(results: dict, path: pathlib.Path) -> pathlib.Path:
  """Horizontal bars: exact-match accuracy per sub-task (the 28, in DESIGN.md's order)."""
  per = results["per_subtask"]
  names = [n for n in tasks.SUBTASKS if n in per] + sorted(n for n in per if n not in tasks.SUBTASKS)
  fig, ax = plt.subplots(figsize=(8, 0.28 * len(names) + 1.2))
  cmap = plt.get_cmap("tab10")
  for row, name in enumerate(names):
    value = per[name]["accuracy"]
    ability = tasks.SUBTASKS[name].ability if name in tasks.SUBTASKS else 0
    if value is None or not math.isfinite(value):
      ax.text(0.005, row, "n/a (nothing expected)", va="center", fontsize=7, color="gray")
      continue
    ax.barh(row, value, color=cmap(ability % 10))
    ax.text(value + 0.01, row, f"{value:.0%} ({per[name]['correct']}/{per[name]['expected']})",
            va="center", fontsize=7)
  ax.set_yticks(range(len(names)), names, fontsize=8)
  ax.invert_yaxis()
  ax.set_xlim(0, 1.15)
  ax.set_xlabel("exact-match accuracy (replies in time with the exact normalized text)")
  ax.set_title("accuracy per sub-task (colour: ability)", fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


# ---------------------------------------------------------------------------- markdown

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
    system = path[0] if path[0] in _LABELS else "model"
    path = path[1:] if system != "model" else path
    other_name = "silence_timer" if "silence_timer" in result else (
        "pocketsphinx" if "pocketsphinx" in result else None)
    other = "—"
    if other_name is not None:
      other = f"{_fmt(_get(result[other_name], path), kind)} ({_LABELS[other_name]})"
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


# ----------------------------------------------------------------------------- running

def load_checkpoint(checkpoint: str | None, config=None):
  """(model, params, tokenizer, note) from a bundle directory, a training workdir (its best
  checkpoint, exported to a temporary bundle; needs `config`), or the embedded model."""
  from audio_interaction.export import portable  # pylint: disable=import-outside-toplevel
  from audio_interaction.infer import demo  # pylint: disable=import-outside-toplevel
  if checkpoint is None:
    return demo.load_model(None)
  path = pathlib.Path(checkpoint)
  if (path / portable.PARAMS_FILE).exists():
    return demo.load_model(None, path)
  if (path / "checkpoints").is_dir():
    if config is None:
      raise ValueError(f"{path} is a training workdir: give its --config to read it")
    bundle = pathlib.Path(tempfile.mkdtemp(prefix="eval_bundle_"))
    portable.export_checkpoint(config, path, bundle)
    model, params, tokenizer, _ = demo.load_model(None, bundle)
    return model, params, tokenizer, f"best checkpoint of {path}"
  raise FileNotFoundError(f"{path} is neither a model bundle ({portable.PARAMS_FILE}) nor a "
                          "training workdir (checkpoints/)")


def run_eval(*, checkpoint: str | None, suites: str, manifest: str | None, streams: int,
             out_dir: str | pathlib.Path, config=None,
             eval_config: suites_lib.EvalConfig | None = None, progress: bool = True,
             command: str = "") -> dict[str, Any]:
  """Loads the model, builds the cases, runs the suites and writes the report.

  Returns {"paths": {...}, "results": the JSON-able results, "seconds": wall time}.
  """
  from audio_interaction.infer import demo  # pylint: disable=import-outside-toplevel
  from audio_interaction.infer.engine import Engine  # pylint: disable=import-outside-toplevel
  began = time.perf_counter()
  names = suites_lib.parse_suites(suites)
  eval_config = eval_config or suites_lib.EvalConfig()
  eval_config = dataclasses.replace(eval_config, streams_per_subtask=streams)
  model, params, tokenizer, note = load_checkpoint(checkpoint, config)
  chunk_ms = 1000 * model.config.chunk_samples // model.config.sample_rate
  if manifest:
    cases = suites_lib.cases_from_manifest(manifest, names, chunk_ms=chunk_ms)
    source = f"manifest {manifest}"
  else:
    speech, sounds = demo.default_sources()
    cases = suites_lib.generated_cases(names, speech, sounds, streams_per_subtask=streams,
                                       seed=eval_config.seed, chunk_ms=chunk_ms)
    source = f"{streams} held-out generated stream(s) per sub-task"
  if not cases:
    raise ValueError(f"no cases for suites {names} from {source}")
  results = suites_lib.evaluate(Engine(model), params, tokenizer, cases, names, eval_config,
                                progress=progress)
  results["source"] = source
  paths = write_report(results, out_dir, note=f"{note}; {source}", command=command)
  return {"paths": paths, "results": suites_lib.json_safe(results),
          "seconds": time.perf_counter() - began}
