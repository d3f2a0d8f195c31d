"""A trained model's frozen encoder over whole clips, for the heads fitted on their own,
and the bundle written with a fitted head.

`sound_head` fits the sound-event head on each chunk's mean frame, `ctc_head` the CTC head
on every frame; both encode thousands of clips of every length through the same jitted
function. The encoder is chunk-causal, so the full-sequence pass gives, chunk by chunk,
what streaming would give (tested in tests/test_streaming.py).
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from audio_interaction.data.tokenizer import Tokenizer
from audio_interaction.export import portable
from audio_interaction.model.model import AudioInteractionModel, Params


class ClipEncoder:
  """audio float32 [n] (16 kHz) -> the encoder's frames [ceil(n / chunk) * F_c, D]
  (F_c encoder frames per chunk), or with `chunk_means` each chunk's mean frame
  [ceil(n / chunk), D] (what the sound-event head reads)."""

  def __init__(self, model: AudioInteractionModel, params: Params, *, chunk_means: bool):
    self.chunk_samples = model.config.chunk_samples
    self.frames_per_chunk = 1 if chunk_means else model.config.encoder_frames_per_chunk

    def encode(net, mel):
      encoded = net.encoder(mel, None)[1]
      return net.sound_event_features(encoded) if chunk_means else encoded

    self._encode = jax.jit(
        lambda p, audio: model.network.apply(p, model.features(audio), method=encode))
    self._params = params

  def __call__(self, audio: np.ndarray) -> np.ndarray:
    chunks = max(1, -(-audio.size // self.chunk_samples))
    # Padded to a power of two of chunks, so a few shapes compile; padding comes after
    # the clip, and the encoder is causal, so it changes none of the clip's chunks.
    padded = np.zeros((1, (1 << int(np.ceil(np.log2(chunks)))) * self.chunk_samples),
                      np.float32)
    padded[0, :audio.size] = audio
    out = np.asarray(self._encode(self._params, jnp.asarray(padded)))[0]
    return out[:chunks * self.frames_per_chunk]


class ChunkEncoder(ClipEncoder):
  """The sound-event head's inputs: audio [n] -> [chunks, D] mean frames."""

  def __init__(self, model: AudioInteractionModel, params: Params):
    super().__init__(model, params, chunk_means=True)


class FrameEncoder(ClipEncoder):
  """The CTC head's inputs: audio [n] -> [chunks * F_c, D] encoder frames."""

  def __init__(self, model: AudioInteractionModel, params: Params):
    super().__init__(model, params, chunk_means=False)


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
