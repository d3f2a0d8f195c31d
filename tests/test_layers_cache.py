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
