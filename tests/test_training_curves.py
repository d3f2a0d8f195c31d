"""Training curves show the train lines of short runs too."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import pytest

from audio_interaction.viz import training_curves


def _visible(line) -> bool:
  """A Line2D draws something: a segment between two points, or a marker."""
  has_marker = line.get_marker() not in (None, "None", "", " ")
  has_segment = len(line.get_xdata()) >= 2 and line.get_linestyle() not in ("None", "", " ")
  return has_marker or has_segment


def _train_row(step: int, loss: float) -> dict:
  return {"step": step, "loss": loss, "reply_loss": loss / 2, "token_accuracy": 0.1,
          "decision_loss": 0.3, "decision_f1": 0.5, "ctc_loss": 4.0}


def _eval_row(step: int) -> dict:
  return {"step": step, "eval/loss": 2.0, "eval/reply_loss": 1.0, "eval/decision_f1": 0.4,
          "eval/ctc_loss": 3.5}


@pytest.mark.parametrize("train_steps", [[19], [19, 39], list(range(19, 400, 20))])
def test_every_train_series_is_drawn_visibly(train_steps):
  """A 30-step run logs one train row (log_every=20): it must still show."""
  rows = [_train_row(s, 3.0 - s / 1000) for s in train_steps] + [_eval_row(train_steps[-1] + 1)]
  figure = training_curves.training_curves_figure(rows, "short run")
  try:
    train_lines = [line for ax in figure.axes for line in ax.get_lines()
                   if not line.get_label().startswith(("eval/", "_"))]
    assert {line.get_label() for line in train_lines} == {
        "loss", "reply_loss", "token_accuracy", "decision_loss", "decision_f1", "ctc_loss"}
    assert all(_visible(line) for line in train_lines)
  finally:
    plt.close(figure)


def test_a_resumed_history_is_drawn_in_step_order():
  rows = [_train_row(s, 3.0) for s in (19, 39, 59)] + [_train_row(s, 2.0) for s in (39, 59, 79)]
  figure = training_curves.training_curves_figure(rows)
  try:
    loss = next(line for line in figure.axes[0].get_lines() if line.get_label() == "loss")
    assert list(loss.get_xdata()) == [19, 39, 59, 79]
    assert list(loss.get_ydata()) == [3.0, 2.0, 2.0, 2.0]  # the resumed run's values win
  finally:
    plt.close(figure)


def test_no_train_rows_are_explained_and_the_png_is_written(tmp_path):
  history = tmp_path / "history.jsonl"
  history.write_text(json.dumps(_eval_row(5)) + "\n")
  figure = training_curves.training_curves_figure([_eval_row(5)])
  try:
    notes = [t.get_text() for t in figure.axes[0].texts]
    assert any("no train rows" in note for note in notes)
  finally:
    plt.close(figure)
  out = training_curves.plot_training_curves(history, tmp_path / "curves.png")
  assert out.stat().st_size > 0
