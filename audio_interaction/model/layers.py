"""Building blocks shared by the encoder and the decoder.

Every streaming layer follows one contract: a full-sequence call, and a step call
that takes an explicit state (a pytree of arrays) and returns the new state. The
state is always an argument, never a Flax mutable collection, so that a step is a
pure function that `jax.jit` can donate and that nothing recompiles mid-stream.

Shapes use: B batch, T new positions, S keys, D model width, H query heads,
K key/value heads, Dh head width.
"""

from __future__ import annotations

import functools

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
DType = Any
# Visibility of key position k from query position q (both int32 arrays, broadcastable).
MaskFn = Callable[[Array, Array], Array]

# Stored position of a cache slot that holds nothing; far enough below any real
# position that every mask function treats it as invisible.
EMPTY_POSITION = -(2**30)
# Added to the score of a key a query may not see: far below any real score, yet finite,
# so a row with no visible key stays finite (no NaN in its gradient).
MASKED_SCORE = -1e9


def constrain(x: Array, names: tuple[str | None, ...]) -> Array:
  """Names the logical axes of an activation; a no-op outside a mesh + rules context."""
  return nn.with_logical_constraint(x, names)


def dense_init(names: tuple[str | None, ...], scale: float = 1.0, in_axes: int = 1
               ) -> Callable:
  """A fan-in scaled initializer whose parameter carries logical axis names.

  The first `in_axes` axes of the kernel are its inputs (fan-in), the rest outputs.
  """
  return nn.with_logical_partitioning(
      nn.initializers.variance_scaling(
          scale, "fan_in", "truncated_normal", in_axis=tuple(range(in_axes)),
          out_axis=tuple(range(in_axes, len(names)))), names)


class RMSNorm(nn.Module):
  """Root-mean-square norm over the last axis, computed in float32."""

  eps: float = 1e-6
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """x: [..., D] -> [..., D]."""
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
                       (x.shape[-1],), self.param_dtype)
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (normed * scale.astype(jnp.float32)).astype(self.dtype)


# Rotary phases are fixed-point: a full turn is 2**32 units, so a position's phase is
# `position * step mod 2**32`, exact in uint32 arithmetic (multiplication wraps).
_PHASE_BITS = 32


def rope_phase_steps(head_dim: int, theta: float) -> np.ndarray:
  """Per-position phase increment of each rotary frequency, in 1/2**32 turns: uint32[Dh/2].

  Computed in float64 once: 1/theta**(i/half) radians per position as a fraction of a
  turn. The rounding (at most 2**-33 of a turn, 7e-10 rad, per position) is finer
  than float32 frequencies (about 6e-8 rad per position at the highest one).
  """
  half = head_dim // 2
  inv_freq = 1.0 / (float(theta) ** (np.arange(half, dtype=np.float64) / half))
  steps = np.round(inv_freq / (2 * np.pi) * 2.0 ** _PHASE_BITS) % 2 ** _PHASE_BITS
  return steps.astype(np.uint32)


def rope_cos_sin(positions: Array, head_dim: int, theta: float) -> tuple[Array, Array]:
  """cos and sin of the rotary angles of `positions` [B, T] (int32 >= 0): float32 [B, T, Dh/2].

  Exact for any stream length: the phase is reduced modulo a full turn in integer
  arithmetic before it becomes a float angle in [-pi, pi), so position 10**8 carries
  the same ~2e-7 rad rounding as position 10, and attention at hour 100 of a stream
  equals attention over the same context at its start (to float32 rounding; a float32
  angle `position * frequency` drifts by position * 6e-8 rad instead).
  """
  steps = jnp.asarray(rope_phase_steps(head_dim, theta))
  phase = positions.astype(jnp.uint32)[..., None] * steps  # wraps: mod 2**32
  signed = jax.lax.bitcast_convert_type(phase, jnp.int32)  # a turn as [-2**31, 2**31)
  angles = signed.astype(jnp.float32) * jnp.float32(2 * np.pi / 2.0 ** _PHASE_BITS)
  return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: Array, positions: Array, theta: float) -> Array:
  """Rotary position embedding (rotate-half form).

  Args:
    x: [B, T, heads, Dh] with Dh even.
    positions: [B, T] int32 absolute positions.
    theta: base wavelength.
  Returns:
    [B, T, heads, Dh], same dtype as `x`.
  """
  cos, sin = rope_cos_sin(positions, x.shape[-1], theta)  # [B, T, half]
  cos, sin = cos[:, :, None, :], sin[:, :, None, :]
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  rotated = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return rotated.astype(x.dtype)


def _mlp_dense(features: int, names: tuple[str, str], name: str, *, bias: bool, dtype: DType,
               param_dtype: DType) -> nn.DenseGeneral:
  """One projection of a block MLP, its kernel (and bias) carrying logical axis names."""
  bias_init = nn.with_logical_partitioning(nn.initializers.zeros, names[1:])
  return nn.DenseGeneral(features, use_bias=bias, dtype=dtype, param_dtype=param_dtype,
                         kernel_init=dense_init(names), bias_init=bias_init, name=name)


class SwiGLU(nn.Module):
  """Gated MLP: down(silu(gate(x)) * up(x))."""

  mlp_dim: int
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """x: [B, T, D] -> [B, T, D]."""
    dense = functools.partial(_mlp_dense, bias=False, dtype=self.dtype,
                              param_dtype=self.param_dtype)
    gate = dense(self.mlp_dim, ("embed", "mlp"), "gate")(x)
    up = dense(self.mlp_dim, ("embed", "mlp"), "up")(x)
    hidden = constrain(nn.silu(gate) * up, ("batch", "length", "act_mlp"))
    return dense(x.shape[-1], ("mlp", "embed"), "down")(hidden)


class GeluMLP(nn.Module):
  """Whisper's MLP: fc2(gelu(fc1(x))) with biases and the exact (erf) GELU."""

  mlp_dim: int
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """x: [B, T, D] -> [B, T, D]."""
    dense = functools.partial(_mlp_dense, bias=True, dtype=self.dtype,
                              param_dtype=self.param_dtype)
    hidden = nn.gelu(dense(self.mlp_dim, ("embed", "mlp"), "fc1")(x), approximate=False)
    hidden = constrain(hidden, ("batch", "length", "act_mlp"))
    return dense(x.shape[-1], ("mlp", "embed"), "fc2")(hidden)


def make_mlp(kind: str, mlp_dim: int, name: str, **kw) -> nn.Module:
  """The block MLP: "swiglu" (`SwiGLU`, no biases) or "gelu" (`GeluMLP`, Whisper's)."""
  if kind == "swiglu":
    return SwiGLU(mlp_dim, name=name, **kw)
  if kind == "gelu":
    return GeluMLP(mlp_dim, name=name, **kw)
  raise ValueError(f"mlp={kind!r}: must be 'swiglu' or 'gelu'")


def make_norm(kind: str, eps: float, name: str, **kw) -> nn.Module:
  """A norm over the last axis: "rms" (`RMSNorm`, scale only) or "layer" (LayerNorm
  with scale and bias, Whisper's), both with statistics in float32."""
  if kind == "rms":
    return RMSNorm(eps, name=name, **kw)
  if kind == "layer":
    return nn.LayerNorm(
        epsilon=eps, name=name,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones, ("embed",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)), **kw)
  raise ValueError(f"norm={kind!r}: must be 'rms' or 'layer'")


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> np.ndarray:
  """Whisper's sinusoidal position table: float32 [length, channels] = [sin | cos]."""
  if channels % 2 or channels < 4:
    raise ValueError(f"sinusoidal positions need an even width >= 4, got {channels}")
  increment = np.log(max_timescale) / (channels // 2 - 1)
  inv_timescales = np.exp(-increment * np.arange(channels // 2, dtype=np.float64))
  scaled = np.arange(length, dtype=np.float64)[:, None] * inv_timescales[None]
  return np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1).astype(np.float32)


# The ring (slot) axis of each leaf of a cache from `init_kv_cache` (batch on axis 0).
RING_AXIS = {"k": 2, "v": 3, "pos": 1}


def init_kv_cache(batch: int, size: int, num_kv_heads: int, head_dim: int,
                  dtype: DType) -> dict[str, Array]:
  """An empty ring-buffer KV cache in the layouts XLA:CPU's attention dots read (the
  contracted axis last: keys head-major, values transposed), so that a step makes no
  transposed copy of the cache.

  Returns:
    {"k": [B, K, size, Dh], "v": [B, K, Dh, size],
     "pos": [B, size] int32 with EMPTY_POSITION}.
  """
  return {
      "k": jnp.zeros((batch, num_kv_heads, size, head_dim), dtype),
      "v": jnp.zeros((batch, num_kv_heads, head_dim, size), dtype),
      "pos": jnp.full((batch, size), EMPTY_POSITION, jnp.int32),
  }


def write_ring(cache: dict[str, Array], k: Array, v: Array, positions: Array,
               valid: Array, pinned: int = 0) -> dict[str, Array]:
  """Writes new keys/values into the ring; invalid entries leave slots untouched.

  Positions below `pinned` go to slots [0, pinned) and stay there for good (an
  attention sink: the instruction at a stream's start); every later position p goes
  to slot `pinned + (p - pinned) % (size - pinned)`, a ring over the other slots.

  Args:
    cache: ring cache from `init_kv_cache`: "k" [B, K, size, Dh], "v" [B, K, Dh, size],
      "pos" [B, size].
    k, v: [B, T, K, Dh] new entries.
    positions: [B, T] int32 absolute positions of the entries.
    valid: [B, T] bool; False entries (padding) are not written.
    pinned: leading positions kept in their own slots (0: a plain ring).
  Returns:
    The updated cache (same shapes).
  """
  size = cache["pos"].shape[1]
  ring = size - pinned
  if ring < 1:
    raise ValueError(f"a cache of {size} slots cannot pin {pinned} positions and keep a ring")
  # Entries older than the newest `ring` would collide with newer ones in the ring;
  # invalid entries are routed to slot `size`, out of bounds, and dropped.
  newest = jnp.max(jnp.where(valid, positions, EMPTY_POSITION), axis=1, keepdims=True)
  is_pinned = positions < pinned
  keep = valid & (is_pinned | (positions > newest - ring))
  ring_slots = pinned + jnp.mod(positions - pinned, ring)
  slots = jnp.where(keep, jnp.where(is_pinned, positions, ring_slots), size)

  def write_keys(o, s, n):  # one row: o [K, size, Dh], n [T, K, Dh]
    return o.at[:, s].set(jnp.swapaxes(n, 0, 1).astype(o.dtype), mode="drop")

  def write_values(o, s, n):  # one row: o [K, Dh, size], n [T, K, Dh]
    return o.at[:, :, s].set(jnp.transpose(n, (1, 2, 0)).astype(o.dtype), mode="drop")

  return {"k": jax.vmap(write_keys)(cache["k"], slots, k),
          "v": jax.vmap(write_values)(cache["v"], slots, v),
          "pos": jax.vmap(lambda o, s, n: o.at[s].set(n, mode="drop"))(
              cache["pos"], slots, positions)}


class Attention(nn.Module):
  """Grouped-query attention with RoPE, a position-based mask and an optional ring KV cache.

  The mask is a function of (query position, key position), so the same rule serves
  the full-sequence forward (keys = the sequence) and the cached step. That is what
  makes the streaming step equal the full forward.

  The cached step has two orders (`cache_write`):

  * "before" (default): the step's keys/values are written into the ring first (a
    scatter on the donated buffer, in place) and the queries attend over the ring.
    This is exact when no key a query may see is evicted by the step's own writes:
    with `history` = how many positions before the step's first query its queries
    may see, a ring of `size` slots needs `size >= history + T` (`ring_holds_step`).
    A longer step (a long prefill) takes the "after" order, so every step is exact.
  * "after": attend over the ring concatenated with the step's keys, then write. The
    concatenation and the write after the read make XLA copy cache-sized buffers
    every step; kept for comparison (`benchmarks/stream_step.py`).
  """

  num_heads: int
  num_kv_heads: int
  head_dim: int
  mask_fn: MaskFn
  rope_theta: float = 10000.0
  # False: no rotary embedding (positions only drive the mask; Whisper's encoder adds
  # absolute positions to its input instead).
  use_rope: bool = True
  # Biases of the query/key/value projections (Qwen2, Whisper) and of the output (Whisper).
  qkv_bias: bool = False
  out_bias: bool = False
  # Positions before a step's first query that its queries may see (None: unknown,
  # always the "after" order). Decoder: window - 1; encoder: left_chunks chunks.
  history: int | None = None
  cache_write: str = "before"
  # An attention sink (with `pinned_window_mask`): keys at positions below `pinned` keep
  # cache slots of their own, and a query later than `pinned_horizon` scores them as a
  # query at `pinned_horizon` would (the RoPE rotation of its distance), so it sees the
  # pinned prefix and its recent keys at the distances a query at `pinned_horizon` sees a
  # sequence starting at 0 with: no distance the model has not attended over before.
  pinned: int = 0
  pinned_horizon: int = 0
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  def _kernel(self, name: str, shape: tuple[int, ...], names: tuple[str, ...],
              in_axes: int = 1) -> Array:
    # An explicit multi-axis kernel: DenseGeneral initializes a flattened kernel,
    # whose rank would not match the logical names.
    return self.param(name, dense_init(names, in_axes=in_axes), shape,
                      self.param_dtype).astype(self.dtype)

  def _bias(self, name: str, shape: tuple[int, ...], names: tuple[str, ...]) -> Array:
    return self.param(name, nn.with_logical_partitioning(nn.initializers.zeros, names), shape,
                      self.param_dtype).astype(self.dtype)

  def _project(self, x: Array, heads: int, name: str, names: tuple[str, ...]) -> Array:
    kernel = self._kernel(name, (x.shape[-1], heads, self.head_dim), names)
    out = jnp.einsum("btd,dhk->bthk", x.astype(self.dtype), kernel)
    if self.qkv_bias:
      out = out + self._bias(f"{name}_bias", (heads, self.head_dim), names[1:])
    return out

  @nn.compact
  def __call__(self, x: Array, positions: Array, *, valid: Array | None = None,
               segment_ids: Array | None = None,
               cache: dict[str, Array] | None = None
               ) -> tuple[Array, dict[str, Array] | None]:
    """Attends from `x` to itself (and to the cache when given).

    Args:
      x: [B, T, D] inputs.
      positions: [B, T] int32 absolute positions.
      valid: [B, T] bool; invalid positions are neither attended to nor cached.
      segment_ids: [B, T] int32, full-sequence mode only: attention stays inside a
        segment (packed rows).
      cache: ring cache (see `init_kv_cache`) for the step mode, or None.
    Returns:
      ([B, T, D] outputs, updated cache or None).
    """
    if valid is None:
      valid = jnp.ones(positions.shape, bool)
    q = self._project(x, self.num_heads, "query", ("embed", "heads", "head_dim"))
    k = self._project(x, self.num_kv_heads, "key", ("embed", "kv_heads", "head_dim"))
    v = self._project(x, self.num_kv_heads, "value", ("embed", "kv_heads", "head_dim"))
    q_unrotated = q
    if self.use_rope:
      q = apply_rope(q, positions, self.rope_theta)
      k = apply_rope(k, positions, self.rope_theta)
    q = constrain(q, ("batch", "length", "act_heads", "head_dim"))

    key_pos = jnp.where(valid, positions, EMPTY_POSITION)
    # Keys/values are [B, S, K, Dh] in the full forward; in a cached step they are in
    # the ring's layouts, keys [B, K, S, Dh] and values [B, K, Dh, S].
    k_axes = v_axes = "bskd"
    if cache is None:
      keys, values, all_key_pos = k, v, key_pos
      if segment_ids is not None:
        same_segment = segment_ids[:, :, None] == segment_ids[:, None, :]
    else:
      if segment_ids is not None:
        raise ValueError("segment_ids are only supported in full-sequence mode")
      if self.cache_write not in ("before", "after"):
        raise ValueError(f"cache_write={self.cache_write!r}: must be 'before' or 'after'")
      write_first = self.cache_write == "before" and ring_holds_step(
          cache["pos"].shape[1] - self.pinned, self.history, length=positions.shape[1])
      k_axes, v_axes = "bksd", "bkds"
      if write_first:
        new_cache = write_ring(cache, k, v, positions, valid, self.pinned)
        keys, values = new_cache["k"].astype(k.dtype), new_cache["v"].astype(v.dtype)
        all_key_pos = new_cache["pos"]
      else:
        keys = jnp.concatenate([cache["k"].astype(k.dtype), jnp.swapaxes(k, 1, 2)], axis=2)
        values = jnp.concatenate([cache["v"].astype(v.dtype), jnp.transpose(v, (0, 2, 3, 1))],
                                 axis=3)
        all_key_pos = jnp.concatenate([cache["pos"], key_pos], axis=1)

    visible = self.mask_fn(positions[:, :, None], all_key_pos[:, None, :])
    visible &= all_key_pos[:, None, :] != EMPTY_POSITION
    if cache is None and segment_ids is not None:
      visible &= same_segment

    batch, length = positions.shape
    groups = self.num_heads // self.num_kv_heads
    q = q.reshape(batch, length, self.num_kv_heads, groups, self.head_dim)
    scores = jnp.einsum(f"btkgd,{k_axes}->bkgts", q, keys).astype(jnp.float32)
    if self.pinned and self.use_rope:
      q_horizon = apply_rope(q_unrotated, jnp.minimum(positions, self.pinned_horizon),
                             self.rope_theta)
      q_horizon = q_horizon.reshape(batch, length, self.num_kv_heads, groups, self.head_dim)
      pinned_scores = jnp.einsum(f"btkgd,{k_axes}->bkgts", q_horizon, keys)
      is_pinned_key = (all_key_pos >= 0) & (all_key_pos < self.pinned)
      scores = jnp.where(is_pinned_key[:, None, None, None, :],
                         pinned_scores.astype(jnp.float32), scores)
    # An additive mask, not a select: its gradient needs no second pass over the
    # scores, and a hidden key's weight is still exactly 0 (exp underflows).
    bias = jnp.where(visible, 0.0, MASKED_SCORE)[:, None, None]
    weights = jax.nn.softmax(scores * self.head_dim ** -0.5 + bias, axis=-1)
    out = jnp.einsum(f"bkgts,{v_axes}->btkgd", weights.astype(values.dtype), values)
    # A query with no visible key (a padded position) averaged every key: zero it here,
    # on the output, which is head_dim wide instead of a score row's length.
    out = jnp.where(visible.any(-1)[:, :, None, None, None], out, 0.0)
    out = out.reshape(batch, length, self.num_heads, self.head_dim)
    out = constrain(out, ("batch", "length", "act_heads", "head_dim"))
    out_kernel = self._kernel("out", (self.num_heads, self.head_dim, x.shape[-1]),
                              ("heads", "head_dim", "embed"), in_axes=2)
    out = jnp.einsum("bthk,hkd->btd", out, out_kernel)
    if self.out_bias:
      out = out + self._bias("out_bias", (x.shape[-1],), ("embed",))

    if cache is None:
      return out, None
    if not write_first:
      new_cache = write_ring(cache, k, v, positions, valid, self.pinned)
    return out, new_cache


def ring_holds_step(size: int, history: int | None, length: int) -> bool:
  """Whether a ring of `size` slots can take a step of `length` positions before its
  queries read it: the newest `size` positions after the write reach back `history`
  positions before the step's first one (what its first query may see)."""
  return history is not None and size >= history + length


def ring_size(history: int, step: int) -> int:
  """Ring slots for writing a step of `step` positions before attending (`history`
  positions before the step visible): `history + step`."""
  return history + step


def sliding_window_mask(window: int) -> MaskFn:
  """Causal mask over the last `window` positions (the query's own included)."""
  def mask(q_pos: Array, k_pos: Array) -> Array:
    distance = q_pos - k_pos
    return (distance >= 0) & (distance < window)
  return mask


def pinned_window_mask(window: int, pinned: int) -> MaskFn:
  """Causal mask with an attention sink: a query at q < `window` sees every position up
  to its own (as `sliding_window_mask(window)` does); a later one sees positions
  [0, `pinned`) and its last `window - pinned` positions, `window` keys in all, so the
  instruction at a stream's start never leaves its view. `pinned = 0` is
  `sliding_window_mask(window)`."""
  if not 0 <= pinned < window:
    raise ValueError(f"pinned={pinned}: must be in [0, window={window})")

  def mask(q_pos: Array, k_pos: Array) -> Array:
    distance = q_pos - k_pos
    is_pinned = (k_pos >= 0) & (k_pos < pinned)
    recent = (q_pos < window) | (distance < window - pinned)
    return (distance >= 0) & (is_pinned | recent)
  return mask


def chunk_causal_mask(frames_per_chunk: int, left_chunks: int) -> MaskFn:
  """A frame sees every frame of its own chunk and of the `left_chunks` chunks before."""
  def mask(q_pos: Array, k_pos: Array) -> Array:
    distance = q_pos // frames_per_chunk - k_pos // frames_per_chunk
    return (distance >= 0) & (distance <= left_chunks) & (k_pos >= 0)
  return mask
