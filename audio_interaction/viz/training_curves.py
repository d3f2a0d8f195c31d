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


def plot_training_curves(history_file: str | pathlib.Path, out: str | pathlib.Path,
                         title: str = "") -> pathlib.Path:
  """Plots train (lines) and held-out eval (markers) curves into a PNG; returns its path."""
  rows = [json.loads(line) for line in pathlib.Path(history_file).read_text().splitlines()
          if line.strip()]
  figure, axes = plt.subplots(1, len(PANELS), figsize=(4.5 * len(PANELS), 3.6))
  for ax, (name, keys) in zip(axes, PANELS):
    for key in keys:
      points = [(r["step"], r[key]) for r in rows if key in r]
      if not points:
        continue
      steps, values = zip(*points)
      style = dict(marker="o", linestyle="--") if key.startswith("eval/") else {}
      ax.plot(steps, values, label=key, **style)
    ax.set_title(name)
    ax.set_xlabel("step")
    if name in LOG_SCALE_PANELS:
      ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  if title:
    figure.suptitle(title)
  figure.tight_layout()
  out = pathlib.Path(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  figure.savefig(out, dpi=110)
  plt.close(figure)
  return out
