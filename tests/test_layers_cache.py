"""Ring KV cache written before attention: exact, and no cache-sized copy in the donated step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audio_interaction.model import inspect_model, layers
from audio_interaction.model.model import AudioInteractionModel
import model_testing


def _attention_run(size: int, history: int, window: int, steps: list[int], seed: int = 0):
  """Feeds a sequence through one Attention layer in steps of the given lengths.

  Returns (stepped outputs [1, L, D], full-sequence outputs [1, L, D]).
  """
  heads, kv_heads, head_dim, width = 4, 2, 8, 16
  attention = layers.Attention(num_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim,
                               mask_fn=layers.sliding_window_mask(window), history=history)
  length = sum(steps)
  x = jax.random.normal(jax.random.key(seed), (1, length, width))
  positions = jnp.arange(length, dtype=jnp.int32)[None]
  params = attention.init(jax.random.key(1), x, positions)
  full, _ = attention.apply(params, x, positions)
  cache = layers.init_kv_cache(1, size, kv_heads, head_dim, jnp.float32)
  outs, start = [], 0
  for step in steps:
    out, cache = attention.apply(params, x[:, start:start + step],
                                 positions[:, start:start + step], cache=cache)
    outs.append(out)
    start += step
  return jnp.concatenate(outs, axis=1), full


@pytest.mark.parametrize("step", [1, 3, 5])
def test_write_first_ring_of_history_plus_step_equals_full_forward(step):
  window = 6
  size = layers.ring_size(window - 1, step)
  assert layers.ring_holds_step(size, window - 1, step)
  stepped, full = _attention_run(size, window - 1, window, [step] * 8)
  np.testing.assert_allclose(stepped, full, atol=1e-5)


def test_write_first_ring_one_slot_short_evicts_keys_still_needed():
  """The arithmetic is tight: one slot fewer and a write evicts a key the step reads.

  `history` is understated on purpose, so the layer believes the short ring suffices.
  """
  window, step = 6, 3
  size = layers.ring_size(window - 1, step) - 1
  stepped, full = _attention_run(size, window - 2, window, [step] * 8)
  assert np.abs(np.asarray(stepped - full)).max() > 1e-3
  # The same short ring with the true history takes the read-then-write order: exact.
  assert not layers.ring_holds_step(size, window - 1, step)
  stepped, full = _attention_run(size, window - 1, window, [step] * 8)
  np.testing.assert_allclose(stepped, full, atol=1e-5)


def test_long_step_falls_back_and_stays_exact():
  """A step longer than the ring's slack (a long prefill) still equals the full forward."""
  window = 6
  size = layers.ring_size(window - 1, 2)
  stepped, full = _attention_run(size, window - 1, window, [9, 2, 1, 2, 7, 2])
  np.testing.assert_allclose(stepped, full, atol=1e-5)


def _stream(config, chunks: np.ndarray, prompt: np.ndarray):
  model = AudioInteractionModel(config)
  params = model.init(jax.random.key(4))
  perceive = jax.jit(model.perceive)
  state = model.init_state(1)
  state, _ = model.prefill(params, state, jnp.asarray(prompt))
  decisions = []
  for chunk in chunks:
    state, decision, lm, ctc = perceive(params, state, jnp.asarray(chunk)[None])
    decisions.append(np.concatenate([decision[0], lm[0], np.ravel(ctc)]))
  return np.stack(decisions)


def test_cache_write_orders_agree_past_both_windows():
  """'before' (the default) equals 'after' (the older order) chunk by chunk, past the
  encoder's left context and the decoder's window."""
  before = model_testing.small_config()
  after = model_testing.small_config(**{"model.cache_write": "after"})
  assert before.model.cache_write == "before"
  samples = AudioInteractionModel(before).config.chunk_samples
  rng = np.random.default_rng(0)
  chunks = rng.normal(0, 0.1, (12, samples)).astype(np.float32)  # 12 chunks * 4 > window 24
  prompt = rng.integers(8, 64, (1, 30)).astype(np.int32)  # longer than the ring: fallback
  np.testing.assert_allclose(_stream(before, chunks, prompt), _stream(after, chunks, prompt),
                             atol=2e-5)


# ------------------------------------------------------------ the compiled donated step
def cache_sized_copies(model: AudioInteractionModel) -> tuple[str, ...]:
  """`copy` instructions (anywhere in the optimized HLO, fusions included) of the
  donated, jitted `perceive` whose operand has a ring cache leaf's dimensions in any
  order (a copy or a transposed copy of a cache): `inspect_model.step_copies`."""
  return inspect_model.step_copies(model).cache_copy_lines


def test_donated_perceive_makes_no_cache_sized_copy():
  model = AudioInteractionModel(model_testing.small_config())
  assert cache_sized_copies(model) == ()


def test_cache_copy_detector_sees_the_older_order():
  """The detector is not blind: reading the ring before writing it copies every cache."""
  model = AudioInteractionModel(model_testing.small_config(**{"model.cache_write": "after"}))
  assert len(cache_sized_copies(model)) >= 2 * 3 * (2 + 2)  # k, v, pos of 2+2 layers, twice


def test_a_query_with_no_visible_key_gives_zeros_and_finite_gradients():
  attention = layers.Attention(num_heads=4, num_kv_heads=2, head_dim=8,
                               mask_fn=layers.sliding_window_mask(16))
  x = jax.random.normal(jax.random.key(0), (2, 5, 16))
  positions = jnp.broadcast_to(jnp.arange(5), (2, 5))
  valid = jnp.array([[True] * 5, [False] * 5])  # row 1: every key hidden
  params = attention.init(jax.random.key(1), x, positions, valid=valid)
  out, _ = attention.apply(params, x, positions, valid=valid)
  np.testing.assert_array_equal(out[1], 0.0)
  assert np.all(np.abs(out[0]) > 0)
  grads = jax.grad(lambda p: jnp.sum(attention.apply(p, x, positions, valid=valid)[0] ** 2))(
      params)
  assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))


def test_pinned_window_mask_by_hand():
  mask = layers.pinned_window_mask(8, 2)
  keys = jnp.arange(12)
  seen = lambda q: [int(k) for k in keys if mask(jnp.int32(q), k)]
  assert seen(5) == [0, 1, 2, 3, 4, 5]  # inside the window: everything before
  assert seen(8) == [0, 1, 3, 4, 5, 6, 7, 8]  # the prefix and the last 6: 8 keys
  assert seen(11) == [0, 1, 6, 7, 8, 9, 10, 11]
  plain, unpinned = layers.sliding_window_mask(8), layers.pinned_window_mask(8, 0)
  q, k = jnp.meshgrid(jnp.arange(30), jnp.arange(30), indexing="ij")
  np.testing.assert_array_equal(unpinned(q, k), plain(q, k))
  with pytest.raises(ValueError, match="pinned=8"):
    layers.pinned_window_mask(8, 8)


def test_write_ring_keeps_pinned_positions_in_their_slots():
  cache = layers.init_kv_cache(1, 7, 1, 2, jnp.float32)
  for start in range(0, 30, 4):  # 30 positions, four at a time, through 5 ring slots
    positions = jnp.arange(start, start + 4)[None]
    k = jnp.broadcast_to(positions[..., None, None], (1, 4, 1, 2)).astype(jnp.float32)
    cache = layers.write_ring(cache, k, k, positions, jnp.ones((1, 4), bool), pinned=2)
  pos = np.asarray(cache["pos"][0])
  assert list(pos[:2]) == [0, 1]
  assert sorted(pos[2:]) == [27, 28, 29, 30, 31]  # the newest five
  np.testing.assert_array_equal(np.asarray(cache["k"][0, 0, :, 0]), pos)
  with pytest.raises(ValueError, match="cannot pin 7"):
    layers.write_ring(cache, k, k, positions, jnp.ones((1, 4), bool), pinned=7)


@pytest.mark.parametrize("query", [9, 13, 40])
def test_past_the_window_a_pinned_query_sees_what_the_window_s_last_query_sees(query):
  """A query at q >= window attends to the prefix and its last window - P positions as
  the query at window - 1 does over [prefix, those positions] laid at 0..window - 1:
  the same keys at the same RoPE distances, so the same output."""
  window, pinned, heads, kv_heads, head_dim, width = 8, 3, 4, 2, 8, 16
  attention = layers.Attention(num_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim,
                               mask_fn=layers.pinned_window_mask(window, pinned),
                               pinned=pinned, pinned_horizon=window - 1)
  x = jax.random.normal(jax.random.key(3), (1, query + 1, width))
  positions = jnp.arange(query + 1, dtype=jnp.int32)[None]
  params = attention.init(jax.random.key(1), x, positions)
  long_run, _ = attention.apply(params, x, positions)
  compressed = jnp.concatenate([x[:, :pinned], x[:, query + 1 - (window - pinned):]], axis=1)
  short_run, _ = attention.apply(params, compressed, positions[:, :window])
  np.testing.assert_allclose(long_run[0, -1], short_run[0, -1], atol=1e-5)
  # Without the horizon the prefix sits at its true distance: a different output.
  far, _ = attention.clone(pinned_horizon=10 ** 6).apply(params, x, positions)
  assert np.abs(np.asarray(far[0, -1] - short_run[0, -1])).max() > 1e-3


@pytest.mark.parametrize("step", [1, 3, 11])
def test_pinned_ring_steps_equal_full_forward(step):
  window, pinned, heads, kv_heads, head_dim, width = 6, 2, 4, 2, 8, 16
  attention = layers.Attention(num_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim,
                               mask_fn=layers.pinned_window_mask(window, pinned),
                               pinned=pinned, pinned_horizon=window - 1, history=window - 1)
  length = 8 * step + 5
  x = jax.random.normal(jax.random.key(0), (1, length, width))
  positions = jnp.arange(length, dtype=jnp.int32)[None]
  params = attention.init(jax.random.key(1), x, positions)
  full, _ = attention.apply(params, x, positions)
  cache = layers.init_kv_cache(1, pinned + layers.ring_size(window - 1, 3), kv_heads,
                               head_dim, jnp.float32)
  outs = []
  for start in range(0, length, step):  # step 11 > the ring: the read-then-write order
    out, cache = attention.apply(params, x[:, start:start + step],
                                 positions[:, start:start + step], cache=cache)
    outs.append(out)
  np.testing.assert_allclose(jnp.concatenate(outs, axis=1), full, atol=1e-5)
