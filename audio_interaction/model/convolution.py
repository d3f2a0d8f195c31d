"""Causal convolutions over time with an explicit left-context state.

A causal convolution with kernel K and stride S lets output t see inputs up to the
last frame of its stride block, `S*t + S - 1`; the full forward left-pads K - S
frames. The streaming state is the last K - S input frames, so stepping over chunks
whose length is a multiple of S reproduces the full forward exactly.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from audio_interaction.model.layers import Array, DType, dense_init


def _with_context(x: Array, context: Array | None, left: int) -> tuple[Array, Array | None]:
  """Prepends the left context (zeros in full mode) and returns the next step's context."""
  if left == 0:
    return x, context
  if context is None:
    pad = [(0, 0)] * x.ndim
    pad[1] = (left, 0)
    return jnp.pad(x, pad), None
  joined = jnp.concatenate([context.astype(x.dtype), x], axis=1)
  return joined, joined[:, -left:]


def _chunks_with_context(x: Array, chunk_starts: Array, left: int) -> Array:
  """Full mode of a packed row: each chunk with the `left` frames before it, zeros where a
  segment starts (so no output sees the segment before its own).

  Args:
    x: [B, C * t, ...] frames of C chunks.
    chunk_starts: [B, C] bool, True where a segment starts (`features.segment_starts`).
    left: context frames, at most t.
  Returns:
    [B * C, left + t, ...]: the chunks as rows of their own, context prepended.
  """
  batch, chunks = chunk_starts.shape
  per_chunk = x.reshape(batch, chunks, x.shape[1] // chunks, *x.shape[2:])
  if left > per_chunk.shape[2]:
    raise ValueError(f"a causal conv needs {left} frames of context, more than the "
                     f"{per_chunk.shape[2]} frames of a chunk: packed rows are not supported")
  pad = [(0, 0)] * per_chunk.ndim
  pad[1] = (1, 0)
  context = jnp.pad(per_chunk[:, :-1, per_chunk.shape[2] - left:], pad)
  starts = chunk_starts.reshape(batch, chunks, *([1] * (per_chunk.ndim - 2)))
  joined = jnp.concatenate([jnp.where(starts, 0, context).astype(x.dtype), per_chunk], axis=2)
  return joined.reshape(batch * chunks, *joined.shape[2:])


class CausalConvSubsampling(nn.Module):
  """log2(factor) causal Conv2D layers of stride 2 over (time, mel), then a projection.

  Input [B, F, n_mels] frames become [B, F / factor, d_model].
  """

  factor: int
  channels: int
  d_model: int
  kernel: int = 3
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  @property
  def num_layers(self) -> int:
    return self.factor.bit_length() - 1

  def context_frames(self) -> int:
    """Left context each conv layer keeps between steps (K - S frames)."""
    return self.kernel - 2

  def init_state(self, batch: int, n_mels: int, dtype: DType) -> tuple[Array, ...]:
    """Zero left context per conv layer: tuple of [B, K - S, freq, channels_in]."""
    states, freq, channels = [], n_mels, 1
    for _ in range(self.num_layers):
      states.append(jnp.zeros((batch, self.context_frames(), freq, channels), dtype))
      freq, channels = (freq - self.kernel) // 2 + 1, self.channels
    return tuple(states)

  @nn.compact
  def __call__(self, frames: Array, state: tuple[Array, ...] | None = None,
               chunk_starts: Array | None = None
               ) -> tuple[Array, tuple[Array, ...] | None]:
    """frames: [B, F, n_mels] (F a multiple of `factor`) -> ([B, F/factor, d_model], state).

    `chunk_starts` ([B, C] bool, full mode only): the frames are C chunks of packed
    segments, True where one starts; no output then sees frames of another segment.
    """
    if chunk_starts is not None and state is not None:
      raise ValueError("chunk_starts (packed rows) are only supported in full-sequence mode")
    x = frames[..., None]  # [B, F, n_mels, 1]
    new_state = []
    for layer in range(self.num_layers):
      if chunk_starts is None:
        x, context = _with_context(x, None if state is None else state[layer],
                                   self.context_frames())
      else:
        x, context = _chunks_with_context(x, chunk_starts, self.context_frames()), None
      new_state.append(context)
      x = nn.Conv(self.channels, (self.kernel, self.kernel), strides=(2, 2),
                  padding="VALID", dtype=self.dtype, param_dtype=self.param_dtype,
                  kernel_init=dense_init((None, None, "conv_in", "conv_out")),
                  name=f"conv{layer}")(x)
      x = nn.gelu(x)
      if chunk_starts is not None:  # the chunks, rows of their own in the conv, rejoin
        x = x.reshape(chunk_starts.shape[0], -1, *x.shape[2:])
    batch, length = x.shape[:2]
    x = x.reshape(batch, length, -1)
    x = nn.DenseGeneral(self.d_model, dtype=self.dtype, param_dtype=self.param_dtype,
                        kernel_init=dense_init(("mlp", "embed")), name="project")(x)
    return x, (None if state is None else tuple(new_state))


class CausalDepthwiseConv(nn.Module):
  """Depthwise causal Conv1D (stride 1), the conformer's local mixing; state = last K-1 frames."""

  kernel: int
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  def init_state(self, batch: int, channels: int, dtype: DType) -> Array:
    """Zero left context: [B, K - 1, channels]."""
    return jnp.zeros((batch, self.kernel - 1, channels), dtype)

  @nn.compact
  def __call__(self, x: Array, state: Array | None = None, segment_ids: Array | None = None
               ) -> tuple[Array, Array | None]:
    """x: [B, T, C] -> ([B, T, C], new state [B, K-1, C] or None).

    `segment_ids` ([B, T] int, full mode only): packed segments; an output sums only
    the taps of its own segment, as if the segment started the sequence (zeros before).
    """
    if segment_ids is not None and state is not None:
      raise ValueError("segment_ids (packed rows) are only supported in full-sequence mode")
    channels = x.shape[-1]
    joined, new_state = _with_context(x, state, self.kernel - 1)
    kernel = self.param("kernel", dense_init(("conv_kernel", "embed")),
                        (self.kernel, channels), self.param_dtype).astype(self.dtype)
    length = x.shape[1]
    tap = lambda i: joined[:, i:i + length]
    if segment_ids is not None:
      # A tap of another segment reads 0, what the zero left padding gives a sequence alone.
      tap_segment = jnp.pad(segment_ids, ((0, 0), (self.kernel - 1, 0)), constant_values=-1)
      tap = lambda i: jnp.where((tap_segment[:, i:i + length] == segment_ids)[..., None],
                                joined[:, i:i + length], 0)
    # A sum of K shifted products: explicit, exact, and cheap for small kernels.
    out = sum(tap(i) * kernel[i] for i in range(self.kernel))
    return out.astype(self.dtype), new_state

