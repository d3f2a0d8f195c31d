"""Causal convolutions over time with an explicit left-context state.

A causal convolution with kernel K and stride S lets output t see inputs up to the
last frame of its stride block, `S*t + S - 1`; the full forward left-pads K - S
frames. The streaming state is the last K - S input frames, so stepping over chunks
whose length is a multiple of S reproduces the full forward exactly.
"""

from __future__ import annotations

import flax.linen as nn
import jax
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


def image_patches(x: Array, kernel: int, stride: int) -> Array:
  """[B, H, W, C] -> [B, H', W', kernel * kernel * C]: each VALID window of a strided
  2-D convolution, taps in (row, column, channel) order, H' = (H - kernel) // stride + 1."""
  rows = (x.shape[1] - kernel) // stride + 1
  cols = (x.shape[2] - kernel) // stride + 1
  taps = [x[:, i:i + stride * (rows - 1) + 1:stride, j:j + stride * (cols - 1) + 1:stride]
          for i in range(kernel) for j in range(kernel)]
  return jnp.concatenate(taps, axis=-1)


class PatchConv2D(nn.Module):
  """A VALID strided 2-D convolution computed as one matmul over image patches.

  Same parameters and outputs as `nn.Conv` (kernel [K, K, in, out], bias [out]), but
  XLA:CPU runs the patch matmul and its gradients faster than its convolution kernels:
  their kernel gradient alone was 158 ms of the ~1 s tiny train step, and the tiny
  stem's forward + backward went from 442 to 253 ms.
  """

  features: int
  kernel: int
  stride: int
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """x: [B, H, W, in] -> [B, (H - K) // S + 1, (W - K) // S + 1, features]."""
    kernel = self.param("kernel", dense_init((None, None, "conv_in", "conv_out")),
                        (self.kernel, self.kernel, x.shape[-1], self.features),
                        self.param_dtype)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype)
    patches = image_patches(x.astype(self.dtype), self.kernel, self.stride)
    y = jnp.einsum("bhwp,pf->bhwf", patches,
                   kernel.reshape(-1, self.features).astype(self.dtype))
    return y + bias.astype(self.dtype)


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
    left, stride = self.context_frames(), 2
    if chunk_starts is not None and left > stride:
      raise ValueError(f"packed rows need conv kernel <= {2 * stride} (a segment's first "
                       f"output alone may see the frames before it), got {self.kernel}")
    new_state = []
    for layer in range(self.num_layers):
      x, context = _with_context(x, None if state is None else state[layer], left)
      new_state.append(context)
      conv = PatchConv2D(self.channels, self.kernel, stride, dtype=self.dtype,
                         param_dtype=self.param_dtype, name=f"conv{layer}")
      y = conv(x)
      if chunk_starts is not None and left:
        y = y - self._taps_before_segments(x, y, conv.variables["params"]["kernel"],
                                           chunk_starts, left, stride)
      x = nn.gelu(y)
    batch, length = x.shape[:2]
    x = x.reshape(batch, length, -1)
    x = nn.DenseGeneral(self.d_model, dtype=self.dtype, param_dtype=self.param_dtype,
                        kernel_init=dense_init(("mlp", "embed")), name="project")(x)
    return x, (None if state is None else tuple(new_state))

  def _taps_before_segments(self, x: Array, y: Array, kernel: Array, chunk_starts: Array,
                            left: int, stride: int) -> Array:
    """What the first `left` time taps add to each segment's first output (0 elsewhere).

    Those taps read the frames before the segment, which a row of its own has as zeros;
    subtracting their terms from the whole-row convolution (XLA's fast one, over the
    row; a convolution per chunk ran ~10x slower on CPU) leaves each segment its own.

    Args:
      x: [B, left + T, F, in] the layer's input with its zero left context.
      y: [B, T/stride, F', out] the convolution of `x`.
      kernel: [kt, kf, in, out] the layer's kernel.
      chunk_starts: [B, C] bool, True where a segment starts.
    """
    rows_out = y.shape[1]
    terms = 0
    for i in range(left):
      rows = x[:, i:i + stride * (rows_out - 1) + 1:stride]  # tap i of every output
      terms = terms + jax.lax.conv_general_dilated(
          rows, kernel[i:i + 1].astype(rows.dtype), window_strides=(1, stride),
          padding="VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    per_chunk = rows_out // chunk_starts.shape[1]
    first = (jnp.arange(rows_out) % per_chunk == 0)[None]
    starts = jnp.repeat(chunk_starts, per_chunk, axis=1) & first  # [B, T/stride]
    return jnp.where(starts[:, :, None, None], terms, 0).astype(y.dtype)


class CausalConv1dStem(nn.Module):
  """Whisper's stem made causal: Conv1D(k, stride 1) + GELU, Conv1D(k, stride 2) + GELU.

  Input [B, F, n_mels] frames become [B, F / 2, d_model] (F even). Whisper pads each
  convolution by one frame on both sides, so its stem looks one frame (10 ms) ahead;
  this one pads K - S frames on the left instead, which makes it Whisper's stem
  applied to the input delayed by one frame: on frames x whose last frame is zero,
  output t equals Whisper's output t on [0, x[:-1]] (checked against `transformers`).
  Same parameters as Whisper's `conv1` / `conv2`, so its weights import unchanged.
  """

  channels: int
  kernel: int = 3
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  STRIDES = (1, 2)

  def init_state(self, batch: int, n_mels: int, dtype: DType) -> tuple[Array, ...]:
    """Zero left context per conv: ([B, K - 1, n_mels], [B, K - 2, channels])."""
    widths = (n_mels, self.channels)
    return tuple(jnp.zeros((batch, self.kernel - stride, width), dtype)
                 for stride, width in zip(self.STRIDES, widths))

  @nn.compact
  def __call__(self, frames: Array, state: tuple[Array, ...] | None = None
               ) -> tuple[Array, tuple[Array, ...] | None]:
    """frames: [B, F, n_mels] (F even) -> ([B, F/2, channels], state)."""
    x, new_state = frames, []
    for i, stride in enumerate(self.STRIDES):
      x, context = _with_context(x, None if state is None else state[i], self.kernel - stride)
      new_state.append(context)
      x = nn.Conv(self.channels, (self.kernel,), strides=(stride,), padding="VALID",
                  dtype=self.dtype, param_dtype=self.param_dtype,
                  kernel_init=dense_init((None, "conv_in", "conv_out"), in_axes=2),
                  bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("conv_out",)),
                  name=f"conv{i + 1}")(x)
      x = nn.gelu(x, approximate=False)
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

