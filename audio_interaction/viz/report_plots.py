"""The evaluation report's pictures (matplotlib, Agg): latency CDFs (B5 response latency,
model vs silence timer; B2 emission delay, model vs PocketSphinx; B6 alert onset
latency), the threshold / silence-length sweeps, and per-sub-task accuracy."""

from __future__ import annotations

import math
import operator
import pathlib
from collections.abc import Callable, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.patches  # pylint: disable=wrong-import-position
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from audio_interaction.corpus import tasks  # pylint: disable=wrong-import-position
from audio_interaction.viz.figures import save_figure  # pylint: disable=wrong-import-position

_COLORS = {"model": "tab:blue", "silence_timer": "tab:orange", "pocketsphinx": "tab:green",
           "model_ctc": "tab:purple"}
SYSTEM_LABELS = {"model": "our model", "silence_timer": "silence timer + same model",
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
          label=f"{SYSTEM_LABELS[system]} ({len(xs)} of {total})")


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
  return save_figure(fig, path)


def _curve(ax, points: dict, x_key, y_key, label_of, *, label: str, color=None) -> None:
  """One line through `points` ({name: point}, in order), each point annotated
  `label_of(name)`; points whose x or y is missing or not finite are left out."""
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
  ax.plot(xs, ys, "o-", color=color, label=label)
  for x, y, name in zip(xs, ys, names):
    ax.annotate(label_of(name), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")


def _system(system: str) -> dict[str, str]:
  return {"label": SYSTEM_LABELS[system], "color": _COLORS[system]}


def plot_sweeps(results: dict, path: pathlib.Path) -> pathlib.Path:
  """Left: median response latency vs false cut-in rate (B5), the model's decision
  threshold swept and the timer's silence length swept. Right: alert recall vs false
  alarms per hour (B6), threshold swept."""
  suites = results["suites"]
  fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
  b5 = suites.get("B5", {})
  _curve(left, b5.get("sweep_model", {}), lambda p: p["false_cut_in_rate"],
         lambda p: p["response_latency_s"]["median"], lambda n: f"θ={n}", **_system("model"))
  _curve(left, b5.get("sweep_silence_timer", {}), lambda p: p["false_cut_in_rate"],
         lambda p: p["response_latency_s"]["median"], lambda n: f"{n} s",
         **_system("silence_timer"))
  left.set_xlabel("false cut-in rate (replies started before the turn ended)")
  left.set_ylabel("median response latency (s)")
  left.set_title("B5 turn-taking: latency vs cutting in", fontsize=10)
  b6 = suites.get("B6", {})
  _curve(right, b6.get("sweep_model", {}), lambda p: p["false_alarms_per_hour"],
         lambda p: p["recall"], lambda n: f"θ={n}", **_system("model"))
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
  return save_figure(fig, path)


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
  return save_figure(fig, path)


# ---------------------------------------------------------------------------- markdown


_POLICY_MARKERS = {"model": "s", "hybrid": "o", "gated_timer": "D", "silence_timer": "^"}


def plot_tune(candidates: Sequence[dict], chosen: int, reference: int, path: pathlib.Path,
              *, half: str = "A", max_miss: float = 0.1) -> pathlib.Path:
  """The tuning grid on one half: false cut-in (x) vs miss rate (y) per candidate,
  coloured by median response latency, marker by policy; the constraint box (cut-in ≤
  the reference timer's, miss ≤ `max_miss`) shaded, the chosen point ringed.

  candidates: per candidate {"name", "policy", half: {"false_cut_in_rate", "miss_rate",
  "median_latency_s"}} (`eval.tune`); chosen, reference: indices into it.
  """
  fig, ax = plt.subplots(figsize=(8, 5.5))
  points = [(c[half]["false_cut_in_rate"], c[half]["miss_rate"], c[half]["median_latency_s"])
            for c in candidates]
  finite = [lat for _, _, lat in points if lat is not None and math.isfinite(lat)]
  norm = matplotlib.colors.Normalize(min(finite, default=0.0), max(finite, default=1.0))
  # Candidates often share a point: jitter them apart a little so each one shows.
  jitter = np.random.default_rng(0).uniform(-0.008, 0.008, (len(points), 2))
  cmap = matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey")
  for policy, marker in _POLICY_MARKERS.items():
    rows = [i for i, c in enumerate(candidates) if c["policy"] == policy
            and all(v is not None and math.isfinite(v) for v in points[i][:2])]
    if not rows:
      continue
    colors = [points[i][2] if points[i][2] is not None and math.isfinite(points[i][2])
              else math.nan for i in rows]
    scatter = ax.scatter([points[i][0] + jitter[i, 0] for i in rows],
                         [points[i][1] + jitter[i, 1] for i in rows], c=colors, cmap=cmap,
                         norm=norm, marker=marker, s=45, edgecolors="k", linewidths=0.4,
                         label=policy.replace("_", " "), plotnonfinite=True)
  if finite:
    fig.colorbar(scatter, ax=ax, label="median response latency (s); grey: no turn answered")
  ref_cut = points[reference][0]
  if ref_cut is not None and math.isfinite(ref_cut):
    ax.add_patch(matplotlib.patches.Rectangle((-0.03, -0.03), ref_cut + 0.03, max_miss + 0.03,
                                              color="tab:green", alpha=0.08, lw=0))
    ax.axvline(ref_cut, color="tab:green", lw=0.8, ls="--")
  ax.axhline(max_miss, color="tab:green", lw=0.8, ls="--")
  x, y, _ = points[chosen]
  if all(v is not None and math.isfinite(v) for v in (x, y)):
    ax.scatter([x + jitter[chosen, 0]], [y + jitter[chosen, 1]], s=260, facecolors="none",
               edgecolors="tab:red", linewidths=1.8, label=f"chosen: {candidates[chosen]['name']}")
  ax.annotate(candidates[reference]["name"], (points[reference][0] or 0, points[reference][1] or 0),
              fontsize=7, xytext=(4, 4), textcoords="offset points")
  ax.set_xlim(-0.03, 1.03)
  return _saved_operating_points(
      fig, ax, path, x_label="false cut-in rate", y_label="miss rate", legend="upper right",
      title=f"B5 operating points on tuning half {half} (dashed: the constraints)")


def _saved_operating_points(fig, ax, path: pathlib.Path, *, x_label: str, y_label: str,
                            title: str, legend: str) -> pathlib.Path:
  """Labels a tuning picture (rates on y from 0 to 1), saves it to `path`, closes it."""
  ax.set_ylim(-0.03, 1.03)
  ax.set_xlabel(x_label)
  ax.set_ylabel(y_label)
  ax.set_title(title, fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc=legend)
  fig.tight_layout()
  return save_figure(fig, path)


def plot_alert_tune(candidates: Sequence[dict], chosen: int, path: pathlib.Path, *,
                    half: str = "A", budget: float = 10.0,
                    alarms: Callable[[dict], float] = operator.itemgetter(
                        "false_alarms_per_hour"),
                    alarms_label: str = "false alarms per hour of benign audio"
                    ) -> pathlib.Path:
  """The sound-alert stage of `tune` on one half: false alarms per hour (x: `alarms` of a
  half's figures, the figure the budget reads: `eval.tune.Rule.false_alarm_rate`) vs alert
  recall (y), one line per rule (chunks running, hold, per sound or per class) through its
  thresholds (each point labelled θ), the false-alarm budget dashed, alerts off as a
  cross, the chosen point ringed.

  candidates: per candidate {"threshold" (0: alerts off), "chunks", "hold_seconds",
  "once_per_sound", half: {"recall", "false_alarms_per_hour"}} (`eval.tune`'s
  `chosen["sound_alerts"]["candidates"]`); chosen: index into it. A half without alert
  events has no recall: its points are left out.
  """
  def point(row):
    x, y = alarms(row[half]), row[half]["recall"]
    ok = all(v is not None and math.isfinite(v) for v in (x, y))
    return (x, y) if ok else None

  fig, ax = plt.subplots(figsize=(8, 5.5))
  rules: dict[tuple, dict[float, dict]] = {}
  for row in sorted(candidates, key=lambda row: row["threshold"]):
    if row["threshold"]:
      key = (row["chunks"], row["hold_seconds"], bool(row.get("once_per_sound", False)))
      rules.setdefault(key, {})[row["threshold"]] = row[half]
  for (chunks, hold, once), by_threshold in sorted(rules.items()):
    _curve(ax, by_threshold, alarms, lambda p: p["recall"],
           lambda threshold: f"{threshold:g}",
           label=f"{chunks} chunk{'s' if chunks > 1 else ''} running, hold {hold:g} s, "
                 f"{'once per sound' if once else 'per class'}")
  for row in candidates:
    if not row["threshold"] and point(row):
      ax.scatter(*point(row), marker="x", color="k", s=40, label="alerts off")
  ax.axvline(budget, color="tab:green", lw=0.8, ls="--", label=f"budget: {budget:g} per hour")
  if point(candidates[chosen]):
    ax.scatter(*point(candidates[chosen]), s=260, facecolors="none", edgecolors="tab:red",
               linewidths=1.8, label="chosen")
  ax.set_xlim(left=0)
  return _saved_operating_points(
      fig, ax, path, x_label=alarms_label, y_label="alert recall",
      legend="lower right",
      title=f"B6 sound-alert points on tuning half {half} (labels: threshold θ)")
