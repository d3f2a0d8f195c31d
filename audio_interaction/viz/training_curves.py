"""Training curves from a workdir's `tensorboard/history.jsonl` (written by the loop)."""

from __future__ import annotations

import json
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

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


def plot_training_curves(history_file: str | pathlib.Path, out: str | pathlib.Path,
                         title: str = "") -> pathlib.Path:
  """Plots train (lines) and held-out eval (markers) curves into a PNG; returns its path.

  Train series of few points (short runs) are drawn with a marker on each point,
  so even a single logged step shows.
  """
  rows = [json.loads(line) for line in pathlib.Path(history_file).read_text().splitlines()
          if line.strip()]
  figure = training_curves_figure(rows, title)
  out = pathlib.Path(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  figure.savefig(out, dpi=110)
  plt.close(figure)
  return out
