"""Trainer hooks run on their schedule, and evaluators from the config run during training."""

import json

import pytest

from audio_interaction.data import storage
from audio_interaction.train import loop
from audio_interaction.train.hooks import Hooks, StepInfo
import train_testing


def test_hooks_run_in_order_on_their_schedule_and_at_the_end():
  calls = []
  hooks = Hooks()
  hooks.add("every step", lambda info: calls.append(("a", info.step)))
  hooks.add("every 3", lambda info: calls.append(("b", info.step)), every=3)
  hooks.add("every 4, not at the end", lambda info: calls.append(("c", info.step)), every=4,
            at_end=False)
  for step in range(1, 6):
    hooks.run(StepInfo(step, None, final=step == 5))
  assert calls == [("a", 1), ("a", 2), ("a", 3), ("b", 3), ("a", 4), ("c", 4), ("a", 5),
                   ("b", 5)]
  with pytest.raises(ValueError, match="every"):
    hooks.add("never", lambda info: None, every=0)


def test_a_configured_heldout_evaluator_runs_during_training(tmp_path):
  config = train_testing.train_config(**{
      "train.steps": 3, "train.log_every": 1, "train.eval_every": 100, "train.eval_batches": 1,
      "train.checkpoint_every": 100, "train.peak_flops_per_device": 1e11,
      "train.evals": {"free": {"type": "heldout", "every": 2, "streams": 1,
                               "subtasks": ("chat_single",)}}})
  make = train_testing.synthetic_examples(config)
  storage.build_split(tmp_path / "data", "train", 16, make, seed=0, shard_size=16, progress=False)
  storage.build_split(tmp_path / "data", "eval", 4, make, seed=1, shard_size=4, progress=False)
  config.unlock()
  config.data.dir = str(tmp_path / "data")
  result = loop.train(config, tmp_path / "work", progress=False)
  assert result["step"] == 3
  rows = [json.loads(line) for line in
          (tmp_path / "work" / "tensorboard" / "history.jsonl").read_text().splitlines()]
  free = [row for row in rows if "free/recall" in row]
  # Every 2 steps and at the end: steps 2 and 3, one chat stream each.
  assert [row["step"] for row in free] == [2, 3]
  assert all(row["free/streams"] == 1 and 0.0 <= row["free/recall"] <= 1.0 for row in free)
  # The teacher-forced eval runs at the end even though eval_every is past the run.
  assert [row["step"] for row in rows if "eval/loss" in row] == [3]


def test_each_logged_row_is_on_disk_before_the_run_ends(tmp_path):
  """A run killed midway keeps the curves it logged: rows reach history.jsonl as they
  are written, not at close."""
  writer = loop.MetricWriter(tmp_path)
  writer.write(10, {"loss": 2.5})
  writer.write(20, {"loss": 2.0, "eval/loss": 2.2})
  rows = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
  assert rows == [{"step": 10, "loss": 2.5}, {"step": 20, "loss": 2.0, "eval/loss": 2.2}]
  writer.close()
  # Closing adds nothing (each row once).
  assert len((tmp_path / "history.jsonl").read_text().splitlines()) == 2
