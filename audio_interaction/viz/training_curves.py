"""Training curves from a workdir's `tensorboard/history.jsonl` (written by the loop), of
one run or of several side by side (`comparison_figure`, `audio-interaction compare-runs`)."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from audio_interaction.viz.figures import save_figure  # noqa: E402

PANELS = (
    ("loss", ("loss", "eval/loss")),
    ("reply", ("reply_loss", "eval/reply_loss", "token_accuracy", "eval/token_accuracy")),
    ("decision", ("decision_loss", "eval/decision_loss", "decision_f1", "eval/decision_f1")),
    ("encoder CTC (per transcript token)", ("ctc_loss", "eval/ctc_loss")),
)
# Panels of losses alone: their first steps are ~10x the rest, so a log scale.
LOG_SCALE_PANELS = ("loss", "encoder CTC (per transcript token)")


# Train series with this few logged points get a marker on every point: a line of one
# point draws nothing, and a run shorter than a few `train.log_every` has only that.
FEW_POINTS = 30


def _series(rows: list[dict], key: str) -> list[tuple[float, float]]:
  """(step, value) of `key`, sorted by step; a step logged twice (a resumed run
  appends to the same history) keeps its newest value."""
  values = {r["step"]: r[key] for r in rows if key in r}
  return sorted(values.items())


def training_curves_figure(rows: list[dict], title: str = ""):
  """The figure of `plot_training_curves` from history rows (dicts with a "step")."""
  figure, axes = plt.subplots(1, len(PANELS), figsize=(4.5 * len(PANELS), 3.6))
  for ax, (name, keys) in zip(axes, PANELS):
    drawn_train = False
    for key in keys:
      points = _series(rows, key)
      if not points:
        continue
      steps, values = zip(*points)
      if key.startswith("eval/"):
        style = dict(marker="o", linestyle="--")
      else:
        drawn_train = True
        style = dict(marker="o", markersize=3) if len(points) <= FEW_POINTS else {}
      ax.plot(steps, values, label=key, **style)
    if not drawn_train:
      ax.text(0.5, 0.5, "no train rows logged\n(a row every train.log_every steps)",
              transform=ax.transAxes, ha="center", va="center", fontsize=8, color="0.4")
    ax.set_title(name)
    ax.set_xlabel("step")
    if name in LOG_SCALE_PANELS and any(line.get_ydata().size for line in ax.get_lines()):
      ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if ax.get_lines():
      ax.legend(fontsize=7)
  if title:
    figure.suptitle(title)
  figure.tight_layout()
  return figure


def read_history(history_file: str | pathlib.Path) -> list[dict]:
  """The rows of a `history.jsonl` (dicts with a "step")."""
  return [json.loads(line) for line in pathlib.Path(history_file).read_text().splitlines()
          if line.strip()]


def plot_training_curves(history_file: str | pathlib.Path, out: str | pathlib.Path,
                         title: str = "") -> pathlib.Path:
  """Plots train (lines) and held-out eval (markers) curves into a PNG; returns its path.

  Train series of few points (short runs) are drawn with a marker on each point,
  so even a single logged step shows.
  """
  return save_figure(training_curves_figure(read_history(history_file), title), out)


# What `comparison_figure` draws per panel: the held-out series (every run evaluates
# on its own config's held-out split), and the train series of the same quantity, faint.
COMPARISON_PANELS = (
    ("held-out loss", "eval/loss", "loss"),
    ("held-out reply-token accuracy", "eval/token_accuracy", "token_accuracy"),
    ("held-out decision F1", "eval/decision_f1", "decision_f1"),
    ("held-out encoder CTC (per transcript token)", "eval/ctc_loss", "ctc_loss"),
)


def comparison_figure(runs: Mapping[str, Sequence[dict]], title: str = ""):
  """Several runs' curves on shared axes, a colour per run: each panel's held-out series
  (markers, solid) and the same quantity on training batches (thin, faint), so a gap
  between the two shows where a run fits its corpus and not the held-out split.

  Args:
    runs: {run name: its history rows} in legend order.
  """
  figure, axes = plt.subplots(1, len(COMPARISON_PANELS),
                              figsize=(4.5 * len(COMPARISON_PANELS), 3.8))
  colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  for ax, (name, held_out, train) in zip(axes, COMPARISON_PANELS):
    for index, (run, rows) in enumerate(runs.items()):
      colour = colours[index % len(colours)]
      points = _series(rows, train)
      if points:
        ax.plot(*zip(*points), color=colour, alpha=0.35, linewidth=0.8)
      points = _series(rows, held_out)
      if points:
        ax.plot(*zip(*points), color=colour, marker="o", markersize=3, label=run)
    ax.set_title(name, fontsize=9)
    ax.set_xlabel("step")
    if "loss" in held_out and any(line.get_ydata().size for line in ax.get_lines()):
      ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=7)
  figure.suptitle(title or "held-out (markers) and training batches (faint)", fontsize=10)
  figure.tight_layout()
  return figure


def held_out_table(runs: Mapping[str, Sequence[dict]], step: int | None = None) -> str:
  """A Markdown table of each run's held-out figures (`COMPARISON_PANELS`) at its last
  eval step, or at `step` (the last eval at or before it: runs of different lengths
  compared at equal steps); "—" where a run logged no such figure."""
  header = ["run", "step"] + [held_out for _, held_out, _ in COMPARISON_PANELS]
  lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
  for run, rows in runs.items():
    evals = [r for r in rows if any(k.startswith("eval/") for k in r)
             and (step is None or r["step"] <= step)]
    if not evals:
      lines.append(f"| {run} | — |" + " — |" * (len(header) - 2))
      continue
    last = max(r["step"] for r in evals)
    merged = {}
    for r in evals:  # a resumed run may log its last eval twice: the newest row wins
      if r["step"] == last:
        merged.update(r)
    cells = [f"{merged[k]:.4g}" if k in merged else "—" for _, k, _ in COMPARISON_PANELS]
    lines.append(f"| {run} | {last} | " + " | ".join(cells) + " |")
  return "\n".join(lines)
