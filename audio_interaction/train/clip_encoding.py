"""The heads fitted on their own over a frozen encoder (`model/clip_encoder.py` encodes
their clips): a dense head's weights replaced or freshly added, and the bundle written
with a fitted head."""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import jax
import ml_collections
import numpy as np

from audio_interaction.data.tokenizer import Tokenizer
from audio_interaction.export import portable
from audio_interaction.model.model import AudioInteractionModel, Params


def with_dense_head(params: Params, head: str, kernel: np.ndarray, bias: np.ndarray) -> Params:
  """`params` with dense head `head`'s kernel and bias replaced (the same shapes, cast to
  the model's dtypes; ValueError naming the mismatch otherwise)."""
  old_head = params["params"][head]
  new_head = {}
  for name, value in (("kernel", kernel), ("bias", bias)):
    old = np.asarray(old_head[name])
    value = np.asarray(value)
    if old.shape != value.shape:
      raise ValueError(f"{head}/{name}: the fit gives {value.shape}, the model has "
                       f"{old.shape}")
    new_head[name] = value.astype(old.dtype)
  return dict(params, params=dict(params["params"], **{head: new_head}))


def added_dense_head(config: ml_collections.ConfigDict, params: Params, head: str, seed: int,
                     **model_options: Any) -> tuple[ml_collections.ConfigDict, Params]:
  """(a copy of `config` with `model_options` set under `model`, `params` with dense head
  `head` of that model freshly initialised) for a model that lacks the head; the rest is
  unchanged (such a head only reads the encoder)."""
  config = ml_collections.ConfigDict(config.to_dict())
  for name, value in model_options.items():
    config.model[name] = value
  fresh = AudioInteractionModel(config).init(jax.random.key(seed))
  inner = dict(params["params"], **{head: fresh["params"][head]})
  return config, dict(params, params=inner)


def save_fitted_bundle(source: str | os.PathLike, out: str | os.PathLike, params: Params,
                       tokenizer: Tokenizer, config: ml_collections.ConfigDict,
                       fit_name: str, summary: dict[str, Any]) -> None:
  """Writes the bundle `source` with `params` to `out`, its metadata kept and
  metadata[`fit_name`] = `summary` (what the fit did)."""
  metadata_file = pathlib.Path(source) / "metadata.json"
  metadata = json.loads(metadata_file.read_text()) if metadata_file.exists() else {}
  metadata[fit_name] = summary
  portable.save_bundle(out, params, tokenizer, config, metadata)
