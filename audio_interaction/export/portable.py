"""Portable model bundles: params + tokenizer + config in a plain directory.

A bundle needs no Orbax, no mesh and no training state: `params.msgpack` (Flax
serialization of the parameter pytree), `tokenizer/` and `config.json`. It is what the
repository ships as its embedded default model and what `load_bundle` reads for the
demo and the live loop, on any device count.
"""

from __future__ import annotations

import json
import pathlib

import flax.serialization
import jax
import ml_collections
import numpy as np

from audio_interaction import config_lib
from audio_interaction.data.tokenizer import Tokenizer
from audio_interaction.model.model import AudioInteractionModel, Params

PARAMS_FILE = "params.msgpack"
CONFIG_FILE = "config.json"
TOKENIZER_DIR = "tokenizer"


def save_bundle(directory: str | pathlib.Path, params: Params, tokenizer: Tokenizer,
                config: ml_collections.ConfigDict, metadata: dict | None = None) -> pathlib.Path:
  """Writes the bundle (params as float32 numpy on the host)."""
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  host = jax.tree_util.tree_map(lambda x: np.asarray(jax.device_get(x)), params)
  (directory / PARAMS_FILE).write_bytes(flax.serialization.msgpack_serialize(host))
  (directory / CONFIG_FILE).write_text(config.to_json_best_effort(sort_keys=True, indent=1))
  tokenizer.save(directory / TOKENIZER_DIR)
  if metadata is not None:
    (directory / "metadata.json").write_text(json.dumps(metadata, indent=1, sort_keys=True))
  return directory


def load_bundle(directory: str | pathlib.Path
                ) -> tuple[ml_collections.ConfigDict, Params, Tokenizer]:
  """Reads a bundle; the params are checked against the shapes its config implies."""
  directory = pathlib.Path(directory)
  for name in (PARAMS_FILE, CONFIG_FILE, TOKENIZER_DIR):
    if not (directory / name).exists():
      raise FileNotFoundError(f"{directory} is not a model bundle: {name} is missing")
  config = config_lib.from_dict(json.loads((directory / CONFIG_FILE).read_text()))
  expected = jax.eval_shape(AudioInteractionModel(config).init, jax.random.key(0))
  params = flax.serialization.msgpack_restore((directory / PARAMS_FILE).read_bytes())
  want = {jax.tree_util.keystr(p): s.shape for p, s in
          jax.tree_util.tree_flatten_with_path(expected)[0]}
  got = {jax.tree_util.keystr(p): np.shape(v) for p, v in
         jax.tree_util.tree_flatten_with_path(params)[0]}
  problems = [f"{k}: bundle {got.get(k)}, config {v}" for k, v in want.items() if got.get(k) != v]
  problems += [f"{k}: in the bundle only" for k in got.keys() - want.keys()]
  if problems:
    raise ValueError(f"bundle {directory} does not match its config:\n  " + "\n  ".join(problems))
  return config, params, Tokenizer.load(directory / TOKENIZER_DIR)


def export_checkpoint(config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
                      out: str | pathlib.Path, *, use_best: bool = True,
                      metadata: dict | None = None) -> pathlib.Path:
  """Writes a bundle from a training workdir's best (or newest) checkpoint."""
  from audio_interaction.train import checkpoint as checkpoint_lib
  from audio_interaction.train.trainer import Trainer
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
  return save_bundle(out, restored.state.params, restored.tokenizer, config, info)
