"""A training run's checkpoint as a portable bundle (`export/portable.py`)."""

from __future__ import annotations

import pathlib

import ml_collections

from audio_interaction.export import portable
from audio_interaction.train import checkpoint as checkpoint_lib
from audio_interaction.train.trainer import Trainer


def export_checkpoint(config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
                      out: str | pathlib.Path, *, use_best: bool = True,
                      metadata: dict | None = None) -> pathlib.Path:
  """Writes a bundle from a training workdir's best (or newest) checkpoint."""
  checkpointer = checkpoint_lib.Checkpointer(pathlib.Path(workdir) / "checkpoints")
  step = checkpointer.best_step() if use_best else None
  abstract = Trainer(config).abstract_state()
  restored = (checkpointer.restore(step, abstract) if step is not None
              else checkpointer.restore_latest(abstract))
  checkpointer.close()
  if restored is None:
    raise FileNotFoundError(f"no checkpoint in {workdir}")
  if restored.tokenizer is None:
    raise ValueError(f"checkpoint step {restored.step} in {workdir} has no tokenizer")
  info = {"step": restored.step, "checkpoint_metrics": restored.metrics, **(metadata or {})}
  return portable.save_bundle(out, restored.state.params, restored.tokenizer, config, info)
