"""A training run's checkpoint (or a bundle) exported in one of `FORMATS`.

* "bundle": the portable bundle with `params.msgpack` (`export/portable.py`);
* "safetensors": the same bundle with `model.safetensors` (dotted tensor names);
* "stablehlo": the engine's streaming steps serialized with `jax.export` for a fixed
  batch and a list of platforms, plus the weights and a manifest
  (`export/stablehlo.py`; run by `export/stablehlo_runner.py` without the model code).
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import ml_collections

from audio_interaction.data.tokenizer import Tokenizer
from audio_interaction.export import portable, stablehlo
from audio_interaction.model.model import AudioInteractionModel, Params
from audio_interaction.train import checkpoint as checkpoint_lib
from audio_interaction.train import sound_names
from audio_interaction.train.trainer import Trainer

FORMATS = ("bundle", "safetensors", "stablehlo")


def export_model(out: str | pathlib.Path, config: ml_collections.ConfigDict, params: Params,
                 tokenizer: Tokenizer, *, export_format: str = "bundle",
                 metadata: dict | None = None, batch: int = 1,
                 platforms: Sequence[str] = ("cpu",)) -> pathlib.Path:
  """Writes `params` in `export_format` to `out` (`batch` and `platforms`: stablehlo only)."""
  if export_format not in FORMATS:
    raise ValueError(f"format {export_format!r}: must be one of {', '.join(FORMATS)}")
  if export_format == "stablehlo":
    return stablehlo.export_stablehlo(out, AudioInteractionModel(config), params, tokenizer,
                                      config, batch=batch, platforms=platforms,
                                      metadata=metadata)
  return portable.save_bundle(out, params, tokenizer, config, metadata,
                              weights_format="msgpack" if export_format == "bundle"
                              else "safetensors")


def export_checkpoint(config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
                      out: str | pathlib.Path, *, use_best: bool = True,
                      metadata: dict | None = None, export_format: str = "bundle",
                      batch: int = 1, platforms: Sequence[str] = ("cpu",)) -> pathlib.Path:
  """Exports a training workdir's best (or newest) checkpoint (see `export_model`)."""
  if export_format not in FORMATS:  # before the restore, which takes a while
    raise ValueError(f"format {export_format!r}: must be one of {', '.join(FORMATS)}")
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
  config = sound_names.with_sound_name_tokens(config, restored.tokenizer)
  return export_model(out, config, restored.state.params, restored.tokenizer,
                      export_format=export_format, metadata=info, batch=batch,
                      platforms=platforms)


def export_bundle(bundle: str | pathlib.Path, out: str | pathlib.Path, *,
                  export_format: str = "bundle", batch: int = 1,
                  platforms: Sequence[str] = ("cpu",)) -> pathlib.Path:
  """Exports a bundle (either params format; e.g. the embedded one) in another format."""
  config, params, tokenizer = portable.load_bundle(bundle)
  return export_model(out, config, params, tokenizer, export_format=export_format,
                      metadata={"source_bundle": pathlib.Path(bundle).resolve().name},
                      batch=batch, platforms=platforms)
