"""A checkpoint directory given as a relative path (as a CLI user types it) works."""

import jax.numpy as jnp
import numpy as np

from audio_interaction.train import checkpoint as checkpoint_lib


def test_relative_checkpoint_directory(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  state = {"w": jnp.arange(6.0).reshape(2, 3)}
  with checkpoint_lib.Checkpointer("runs/relative/checkpoints",
                                   checkpoint_lib.CheckpointOptions(save_interval_steps=1,
                                                                    keep_best=0)) as saver:
    assert saver.save(1, state, wait=True)
  with checkpoint_lib.Checkpointer("runs/relative/checkpoints") as reader:
    restored = reader.restore_latest(checkpoint_lib.abstract_like(state))
  assert restored.step == 1
  np.testing.assert_array_equal(restored.state["w"], state["w"])
  assert (tmp_path / "runs" / "relative" / "checkpoints" / "1" / "commit_success.txt").exists()
