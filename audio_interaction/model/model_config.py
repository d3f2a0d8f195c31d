"""Typed, frozen views of `config.model` / `config.audio` that the modules take.

ConfigDicts are convenient to write and override; modules want hashable, typed
values with derived quantities computed once. This module is the only bridge.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import ml_collections

from audio_interaction import config_lib
from audio_interaction import stream_format as sf


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
  d_model: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  conv_channels: int
  conv_kernel: int
  subsampling: int
  left_chunks: int
  block: str
  conformer_kernel: int
  rope_theta: float = 10000.0
  # Options real checkpoints need (config_lib documents each); the defaults are the
  # original encoder.
  stem: str = "conv2d"
  norm: str = "rms"
  mlp: str = "swiglu"
  bias: bool = False
  positions: str = "rope"
  max_positions: int = 1500
  norm_eps: float | None = None
  position_period: int = 0

  @property
  def positions_restart_every(self) -> int:
    """Encoder frames after which absolute positions start again at 0."""
    return self.position_period or self.max_positions


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
  vocab_size: int
  d_model: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  mlp_dim: int
  window: int
  rope_theta: float
  qkv_bias: bool = False
  tie_embeddings: bool = False
  decision_bias: bool = False
  # Leading positions (the instruction) that never leave the attention window.
  pinned_prefix: int = 0
  # A copy head over the current instruction's tokens (`instruction_copy.py`), keeping
  # the first `copy_memory` of them.
  copy_instruction: bool = False
  copy_memory: int = 64


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Everything the model needs, with the chunk geometry derived from the audio settings."""

  encoder: EncoderConfig
  decoder: DecoderConfig
  sample_rate: int
  n_mels: int
  hop_length: int
  chunk_samples: int
  slots_per_chunk: int
  tokens_per_chunk: int
  dtype: str
  param_dtype: str
  norm_eps: float
  # Streaming step order of the ring KV caches: "before" (write, then attend; in place)
  # or "after" (attend over ring + new keys, then write; copies). See `layers.Attention`.
  cache_write: str = "before"
  # Outputs of the sound-event head on the encoder (0: no head).
  sound_event_classes: int = 0
  # Lower encoder blocks whose per-chunk means the sound-event head reads beside the final.
  sound_event_blocks: tuple[int, ...] = ()
  # The sound-event head's per-chunk class probabilities added to that chunk's audio slots.
  sound_event_feed: bool = False
  # Each class fed as the mean embedding of its name's tokens (`sound_event_name_tokens`).
  sound_event_feed_names: bool = False
  sound_event_name_tokens: tuple[tuple[int, ...], ...] = ()
  # A turn-end head on the encoder (per chunk: P(the user's turn has ended)).
  turn_end_head: bool = False

  @property
  def frames_per_chunk(self) -> int:
    """Log-mel frames per chunk."""
    return self.chunk_samples // self.hop_length

  @property
  def chunk_ms(self) -> int:
    return 1000 * self.chunk_samples // self.sample_rate

  @property
  def chunk_seconds(self) -> float:
    return self.chunk_samples / self.sample_rate

  @property
  def encoder_frames_per_chunk(self) -> int:
    """Encoder frames per chunk, after subsampling."""
    return self.frames_per_chunk // self.encoder.subsampling

  @property
  def compute_dtype(self):
    return jnp.dtype(self.dtype)

  @property
  def weight_dtype(self):
    return jnp.dtype(self.param_dtype)

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "ModelConfig":
    """Builds the typed view from a full experiment config (validated first)."""
    config_lib.validate(config)
    audio, model = config.audio, config.model
    return cls(
        encoder=EncoderConfig(**model.encoder.to_dict()),
        decoder=DecoderConfig(**model.decoder.to_dict()),
        sample_rate=audio.sample_rate,
        n_mels=audio.n_mels,
        hop_length=audio.hop_length,
        chunk_samples=sf.config_chunk_samples(config),
        slots_per_chunk=model.slots_per_chunk,
        tokens_per_chunk=model.tokens_per_chunk,
        dtype=model.dtype,
        param_dtype=model.param_dtype,
        norm_eps=model.norm_eps,
        cache_write=model.cache_write,
        sound_event_classes=model.sound_event_classes,
        sound_event_blocks=tuple(model.sound_event_blocks),
        sound_event_feed=model.sound_event_feed,
        sound_event_feed_names=model.sound_event_feed_names,
        sound_event_name_tokens=tuple(tuple(int(t) for t in name)
                                      for name in model.sound_event_name_tokens),
        turn_end_head=model.turn_end_head,
    )
