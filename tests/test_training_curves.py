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


def _run(steps: list[int], scale: float) -> list[dict]:
  """A run's history: train rows, and eval rows whose figures depend on the step."""
  rows = [_train_row(s, 3.0 * scale) for s in steps]
  rows += [{"step": s, "eval/loss": scale * 10 / s, "eval/token_accuracy": s / 1000,
            "eval/decision_f1": 0.5, "eval/ctc_loss": scale} for s in steps if s % 100 == 0]
  return rows


def test_the_comparison_draws_each_runs_held_out_series_in_its_own_colour():
  runs = {"small corpus": _run(list(range(50, 401, 50)), 1.0),
          "large corpus": _run(list(range(50, 601, 50)), 0.5)}
  figure = training_curves.comparison_figure(runs)
  try:
    loss_panel = figure.axes[0]
    held_out = {line.get_label(): line for line in loss_panel.get_lines()
                if not line.get_label().startswith("_")}
    assert set(held_out) == {"small corpus", "large corpus"}
    assert list(held_out["large corpus"].get_xdata()) == [100, 200, 300, 400, 500, 600]
    assert held_out["small corpus"].get_ydata()[-1] == pytest.approx(10 / 400)
    assert held_out["small corpus"].get_color() != held_out["large corpus"].get_color()
    # each run's faint train line shares its colour
    faint = [line for line in loss_panel.get_lines() if line.get_label().startswith("_")]
    assert {line.get_color() for line in faint} == {
        line.get_color() for line in held_out.values()}
  finally:
    plt.close(figure)


def test_the_table_compares_runs_at_their_last_eval_or_at_an_equal_step():
  runs = {"a": _run(list(range(50, 401, 50)), 1.0), "b": _run(list(range(50, 601, 50)), 0.5),
          "no evals": [_train_row(10, 1.0)]}
  lines = training_curves.held_out_table(runs).splitlines()
  assert lines[0].startswith("| run | step | eval/loss | eval/token_accuracy")
  assert lines[2] == "| a | 400 | 0.025 | 0.4 | 0.5 | 1 |"
  assert lines[3] == "| b | 600 | 0.008333 | 0.6 | 0.5 | 0.5 |"
  assert lines[4].startswith("| no evals | — |")
  at_400 = training_curves.held_out_table(runs, step=450).splitlines()
  assert at_400[3] == "| b | 400 | 0.0125 | 0.4 | 0.5 | 0.5 |"


def test_the_table_reads_only_the_last_eval_step_and_its_newest_row():
  """A resumed run logs its last eval step again; a figure missing there is not taken
  from an earlier step."""
  rows = [{"step": 100, "eval/loss": 3.0, "eval/ctc_loss": 9.0},
          {"step": 200, "eval/loss": 2.5},
          {"step": 200, "eval/loss": 2.0, "eval/token_accuracy": 0.5}]
  line = training_curves.held_out_table({"resumed": rows}).splitlines()[2]
  assert line == "| resumed | 200 | 2 | 0.5 | — | — |"


def test_compare_runs_on_the_command_line(tmp_path, capsys):
  from audio_interaction.apps import cli
  workdirs = []
  for name, scale in (("ctl", 1.0), ("big", 0.5)):
    history = tmp_path / name / "tensorboard" / "history.jsonl"
    history.parent.mkdir(parents=True)
    history.write_text("".join(json.dumps(r) + "\n" for r in _run([100, 200], scale)))
    workdirs.append(str(tmp_path / name))
  out = tmp_path / "compare.png"
  assert cli.main(["compare-runs", *workdirs, "--out", str(out)]) == 0
  printed = capsys.readouterr().out
  assert "| ctl | 200 | 0.05 |" in printed and "| big | 200 | 0.025 |" in printed
  assert out.stat().st_size > 0
  assert cli.main(["compare-runs", *workdirs, "--name", "2,400 streams", "--name", "24,000",
                   "--out", str(out)]) == 0
  assert "| 2,400 streams | 200 |" in capsys.readouterr().out
  assert cli.main(["compare-runs", *workdirs, "--name", "one"]) == 2
  assert "1 times for 2 workdirs" in capsys.readouterr().err
  assert cli.main(["compare-runs", str(tmp_path)]) == 2
  assert "no tensorboard/history.jsonl" in capsys.readouterr().err
