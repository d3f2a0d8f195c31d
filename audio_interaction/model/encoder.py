"""Chunked causal audio encoder: log-mel frames -> k decoder "audio slots" per chunk.

Causal conv subsampling (2-D convolutions, or Whisper's two 1-D convolutions made
causal), then transformer or conformer blocks whose attention is chunk-causal (a
frame sees its own chunk and `left_chunks` chunks before it), then
an adapter that maps each chunk's encoder frames to `slots_per_chunk` decoder
positions. Streaming state: the conv left contexts and, per block, a ring KV cache
holding the last `left_chunks` chunks (plus the conformer conv context).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from audio_interaction.audio.features import segment_starts

from audio_interaction.model import layers
from audio_interaction.model.convolution import (CausalConv1dStem, CausalConvSubsampling,
                                                  CausalDepthwiseConv)
from audio_interaction.model.layers import Array, DType
from audio_interaction.model.model_config import ModelConfig

EncoderState = dict[str, Any]


class EncoderOutput(NamedTuple):
  """What `AudioEncoder` returns (a tuple: `slots, frames, state, taps = encoder(...)`).

  slots: [B, C*k, D_dec] audio-slot embeddings for the decoder.
  frames: [B, F', D_enc] the encoder's final (normed) frames: CTC, the heads.
  state: the new streaming state (None in the full forward).
  taps: per block of `ModelConfig.sound_event_blocks`, its output frames [B, F', D_enc]
    (what the sound-event head reads beside `frames`); () when there are none.
  """

  slots: Array
  frames: Array
  state: EncoderState | None
  taps: tuple[Array, ...]


class EncoderBlock(nn.Module):
  """Pre-norm transformer block, or a conformer block (macaron FFNs + causal conv module)."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x: Array, positions: Array, *, cache=None, conv_state=None,
               segment_ids: Array | None = None):
    """x: [B, T, D]; positions: [B, T] frame indices -> ([B, T, D], cache, conv_state).

    `segment_ids` ([B, T] int, full mode only): packed segments; attention and the
    conformer conv stay inside a frame's segment.
    """
    cfg, enc = self.config, self.config.encoder
    kw = dict(dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype)
    norm = lambda name: layers.make_norm(enc.norm, encoder_norm_eps(cfg), name, **kw)
    mlp = lambda name: layers.make_mlp(enc.mlp, enc.mlp_dim, name, **kw)
    conformer = enc.block == "conformer"
    ffn_scale = 0.5 if conformer else 1.0

    if conformer:
      x = x + ffn_scale * mlp("ffn_in")(norm("ffn_in_norm")(x))
    attention = layers.Attention(
        num_heads=enc.num_heads, num_kv_heads=enc.num_heads,
        head_dim=enc.d_model // enc.num_heads,
        mask_fn=layers.chunk_causal_mask(cfg.encoder_frames_per_chunk, enc.left_chunks),
        # Steps start at a chunk boundary: a query sees `left_chunks` whole chunks before.
        history=enc.left_chunks * cfg.encoder_frames_per_chunk, cache_write=cfg.cache_write,
        rope_theta=enc.rope_theta, use_rope=enc.positions == "rope",
        qkv_bias=enc.bias, out_bias=enc.bias, name="attention", **kw)
    h, cache = attention(norm("attention_norm")(x), positions, segment_ids=segment_ids,
                         cache=cache)
    x = x + h
    if conformer:
      h = norm("conv_norm")(x)
      h = nn.DenseGeneral(2 * enc.d_model, kernel_init=layers.dense_init(("embed", "mlp")),
                          name="conv_in", **kw)(h)
      h = nn.glu(h, axis=-1)
      h, conv_state = CausalDepthwiseConv(enc.conformer_kernel, name="depthwise", **kw)(
          h, conv_state, segment_ids=segment_ids)
      h = nn.silu(norm("depthwise_norm")(h))
      h = nn.DenseGeneral(enc.d_model, kernel_init=layers.dense_init(("mlp", "embed")),
                          name="conv_out", **kw)(h)
      x = x + h
    x = x + ffn_scale * mlp("ffn")(norm("ffn_norm")(x))
    if conformer:
      x = norm("out_norm")(x)
    x = layers.constrain(x, ("batch", "frames", "act_embed"))
    return x, cache, conv_state


class AudioEncoder(nn.Module):
  """Log-mel frames -> audio-slot embeddings for the decoder (and frame states for CTC)."""

  config: ModelConfig

  def _positions(self, x: Array, positions: Array) -> Array:
    """Adds absolute position embeddings ("learned" or "sinusoidal"); they restart every
    `position_period` frames (default `max_positions`: a Whisper table covers only its
    30 s window)."""
    cfg, enc = self.config, self.config.encoder
    table = layers.sinusoids(enc.max_positions, enc.d_model)
    if enc.positions == "learned":
      table = self.param("position_embedding", nn.with_logical_partitioning(
          lambda key, shape, dtype: jnp.asarray(table, dtype), (None, "embed")), table.shape, cfg.weight_dtype)
    index = jnp.mod(positions, enc.positions_restart_every)
    return x + jnp.take(jnp.asarray(table, cfg.compute_dtype), index, axis=0)

  @nn.compact
  def __call__(self, frames: Array, state: EncoderState | None = None,
               chunk_segment_ids: Array | None = None, first_position: Array | None = None
               ) -> EncoderOutput:
    """Encodes whole chunks of log-mel frames.

    Args:
      frames: [B, F, n_mels], F a multiple of `frames_per_chunk`. In step mode, the
        frames of the chunk(s) that follow the state.
      state: None for the full forward from the stream's start, or the state from
        `init_encoder_state` / a previous call.
      chunk_segment_ids: [B, C] int segment of each chunk of a packed row (full mode
        only): no chunk sees another segment's frames (conv stem, attention, conformer
        conv) and positions restart at each segment, so every segment is encoded as
        it would be alone.
      first_position: [B] int32, full mode only: the encoder frame (position) at which
        each row starts, as if the stream had run that long before it (what a stream's
        state holds in "next_frame"); None starts at 0. It moves absolute position
        embeddings only: the frames see no context before their first.
    Returns:
      `EncoderOutput`: slots [B, C*k, D_dec], encoder frames [B, F/subsampling, D_enc],
      the new state, the `sound_event_blocks` taps; C = number of chunks in `frames`,
      k = slots_per_chunk.
    """
    cfg, enc = self.config, self.config.encoder
    if frames.shape[1] % cfg.frames_per_chunk:
      raise ValueError(f"encoder input has {frames.shape[1]} frames, not a whole number of "
                       f"{cfg.frames_per_chunk}-frame chunks")
    if chunk_segment_ids is not None and state is not None:
      raise ValueError("chunk_segment_ids (packed rows) are only supported in the full forward")
    if first_position is not None and state is not None:
      raise ValueError("first_position is for the full forward; a stream's state holds its "
                       "own position (next_frame)")
    if chunk_segment_ids is not None and (
        chunk_segment_ids.shape[1] * cfg.frames_per_chunk != frames.shape[1]):
      raise ValueError(f"chunk_segment_ids has {chunk_segment_ids.shape[1]} chunks, the frames "
                       f"{frames.shape[1] // cfg.frames_per_chunk}")
    frames = layers.constrain(frames.astype(cfg.compute_dtype), ("batch", "frames", "mel"))
    starts = None if chunk_segment_ids is None else segment_starts(chunk_segment_ids)
    stem = subsampling_stem(cfg, name="subsampling")
    stem_state = None if state is None else state["conv"]
    if starts is None:
      x, conv_state = stem(frames, stem_state)
    elif isinstance(stem, CausalConvSubsampling):
      x, conv_state = stem(frames, stem_state, chunk_starts=starts)
    else:
      raise NotImplementedError(f"packed rows (data.packing) with encoder.stem={enc.stem!r}: "
                                "only the conv2d stem keeps segments apart")
    batch, length = x.shape[:2]
    if state is not None:
      start = state["next_frame"]
    elif first_position is not None:
      start = jnp.broadcast_to(jnp.asarray(first_position, jnp.int32), (batch,))
    else:
      start = jnp.zeros((batch,), jnp.int32)
    positions = start[:, None] + jnp.arange(length, dtype=jnp.int32)[None]
    frame_segments = None
    if starts is not None:
      per_chunk = cfg.encoder_frames_per_chunk
      frame_segments = jnp.repeat(chunk_segment_ids, per_chunk, axis=1)
      chunk = jnp.arange(starts.shape[1], dtype=jnp.int32)
      first_chunk = jax.lax.cummax(jnp.where(starts, chunk, 0), axis=1)
      positions = positions - jnp.repeat(first_chunk, per_chunk, axis=1) * per_chunk
    if enc.positions != "rope":
      x = self._positions(x, positions)

    new_blocks, taps = [], []
    for i in range(enc.num_layers):
      block_state = None if state is None else state["blocks"][i]
      x, cache, conv = EncoderBlock(cfg, name=f"block{i}")(
          x, positions,
          cache=None if block_state is None else block_state["attention"],
          conv_state=None if block_state is None else block_state.get("conv"),
          segment_ids=frame_segments)
      new_blocks.append({"attention": cache} if conv is None else
                        {"attention": cache, "conv": conv})
      if i in cfg.sound_event_blocks:
        taps.append(x)
    encoded = layers.make_norm(enc.norm, encoder_norm_eps(cfg), "final_norm",
                               dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype)(x)

    chunks = length // cfg.encoder_frames_per_chunk
    k = cfg.slots_per_chunk
    grouped = encoded.reshape(batch, chunks * k, -1)  # consecutive frames of one slot
    kw = dict(dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype)
    slots = nn.DenseGeneral(cfg.decoder.d_model, kernel_init=layers.dense_init(("mlp", "embed")),
                            name="adapter_in", **kw)(grouped)
    slots = nn.DenseGeneral(cfg.decoder.d_model, kernel_init=layers.dense_init(("mlp", "embed")),
                            name="adapter_out", **kw)(nn.gelu(slots))
    slots = layers.constrain(slots, ("batch", "length", "act_embed"))

    new_state = None
    if state is not None:
      new_state = {"conv": conv_state, "blocks": tuple(new_blocks),
                   "next_frame": start + length}
    return EncoderOutput(slots, encoded, new_state, tuple(taps))


def encoder_norm_eps(config: ModelConfig) -> float:
  """The encoder's norm epsilon: its own (`encoder.norm_eps`, Whisper's 1e-5) or the model's."""
  eps = config.encoder.norm_eps
  return config.norm_eps if eps is None else eps


def subsampling_stem(config: ModelConfig, name: str | None = None
                     ) -> CausalConvSubsampling | CausalConv1dStem:
  """The encoder's front convolutions (`encoder.stem`): "conv2d" or "whisper"."""
  enc = config.encoder
  kw = dict(dtype=config.compute_dtype, param_dtype=config.weight_dtype, name=name)
  if enc.stem == "whisper":
    return CausalConv1dStem(channels=enc.d_model, kernel=enc.conv_kernel, **kw)
  return CausalConvSubsampling(factor=enc.subsampling, channels=enc.conv_channels,
                               d_model=enc.d_model, kernel=enc.conv_kernel, **kw)


def encoder_cache_size(config: ModelConfig) -> int:
  """Ring slots per block: the `left_chunks` chunks a frame may see before its own,
  plus the step's own chunk when the step writes before it attends."""
  frames, left = config.encoder_frames_per_chunk, config.encoder.left_chunks
  if config.cache_write == "after":
    return max(1, left * frames)
  return layers.ring_size(left * frames, frames)


def init_encoder_state(config: ModelConfig, batch: int, dtype: DType = jnp.float32
                       ) -> EncoderState:
  """Streaming state at the start of a stream (all context empty).

  Returns:
    {"conv": the stem's left contexts (tuple of [B, K-2, freq, ch], or of [B, K-S, ch]
    for the Whisper stem), "blocks": per block {"attention": ring cache
    of left_chunks*frames_per_chunk slots [, "conv": [B, K-1, D]]},
    "next_frame": [B] int32}.
  """
  enc = config.encoder
  subsampling = subsampling_stem(config)
  cache_size = encoder_cache_size(config)
  head_dim = enc.d_model // enc.num_heads
  blocks = []
  for _ in range(enc.num_layers):
    block = {"attention": layers.init_kv_cache(batch, cache_size, enc.num_heads, head_dim, dtype)}
    if enc.block == "conformer":
      block["conv"] = CausalDepthwiseConv(enc.conformer_kernel).init_state(
          batch, enc.d_model, dtype)
    blocks.append(block)
  return {
      "conv": subsampling.init_state(batch, config.n_mels, dtype),
      "blocks": tuple(blocks),
      "next_frame": jnp.zeros((batch,), jnp.int32),
  }
