"""Decoder: token-by-token with the ring cache equals the full forward, past the window."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audio_interaction import stream_format as sf
from audio_interaction.model.decoder import decoder_cache_size, init_decoder_cache
from audio_interaction.model.model import AudioInteractionModel, AudioInteractionNetwork
import model_testing

ATOL = 1e-5


PINNED = {"model.decoder.pinned_prefix": 6}


@pytest.fixture(scope="module", params=["default", "qwen2", "pinned"])
def decoder_setup(request):
  qwen2 = request.param == "qwen2"  # QKV biases and tied embeddings
  overrides = {"default": {}, "qwen2": model_testing.QWEN2_DECODER, "pinned": PINNED}
  model = AudioInteractionModel(model_testing.small_config(**overrides[request.param]))
  params = model.init(jax.random.key(2))
  if qwen2:
    params = model_testing.perturbed(params, seed=2)
    # A tied head reads the token table, whose unit-variance init would give logits of
    # ~10 (float32 rounding above ATOL); pretrained tables are ~0.02 wide.
    embed = params["params"]["decoder"]["embed"]
    embed["embedding"] = embed["embedding"] * 0.05
  decode = jax.jit(lambda p, tokens, emb, positions, valid, cache: model.network.apply(
      p, tokens, emb, positions, valid, cache, False,
      method=AudioInteractionNetwork.decode_step))
  return model, params, decode


def _full(model, params, tokens, emb, positions):
  valid = jnp.ones(tokens.shape, bool)
  return model.network.apply(params, tokens, emb, positions, valid, None, False,
                             method=AudioInteractionNetwork.decode_step)


@pytest.mark.parametrize("seed,max_piece", [(0, 1), (1, 5), (2, 30)])
def test_cached_steps_equal_full_forward_beyond_window(decoder_setup, seed, max_piece):
  """max_piece=1 is token by token; 30 > window writes more than the ring holds at once."""
  model, params, decode = decoder_setup
  cfg = model.config
  window = cfg.decoder.window
  length = 3 * window + 7  # the stream outlives the cache three times over
  rng = np.random.default_rng(seed)
  tokens = jnp.asarray(rng.integers(0, cfg.decoder.vocab_size, (2, length)), jnp.int32)
  emb = jnp.asarray(rng.normal(size=(2, length, cfg.decoder.d_model)), jnp.float32)
  positions = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (2, length))
  want_lm, want_decision, *_ = _full(model, params, tokens, emb, positions)

  cache = init_decoder_cache(cfg, batch=2)
  got_lm, got_decision, start = [], [], 0
  for piece in model_testing.random_splits(rng, length, max_piece):
    stop = start + piece
    lm, decision, cache, _ = decode(params, tokens[:, start:stop], emb[:, start:stop],
                                 positions[:, start:stop], jnp.ones((2, piece), bool), cache)
    got_lm.append(lm)
    got_decision.append(decision)
    start = stop
  np.testing.assert_allclose(np.concatenate(got_lm, 1), want_lm, atol=ATOL, rtol=0)
  np.testing.assert_allclose(np.concatenate(got_decision, 1), want_decision, atol=ATOL, rtol=0)


# Not the pinned setup: its prefix reaches every later position (tested below).
@pytest.mark.parametrize("decoder_setup", ["default", "qwen2"], indirect=True)
def test_window_really_bounds_attention(decoder_setup):
  """A token influences exactly num_layers * (window - 1) positions ahead, no further:
  each layer looks back window - 1 positions and the layers chain."""
  model, params, _ = decoder_setup
  cfg = model.config
  reach = cfg.decoder.num_layers * (cfg.decoder.window - 1)
  length = reach + 20
  rng = np.random.default_rng(3)
  tokens = rng.integers(0, cfg.decoder.vocab_size, (1, length)).astype(np.int32)
  positions = jnp.arange(length, dtype=jnp.int32)[None]
  base, *_ = _full(model, params, jnp.asarray(tokens), None, positions)
  changed = tokens.copy()
  changed[0, 5] = (changed[0, 5] + 1) % cfg.decoder.vocab_size
  moved, *_ = _full(model, params, jnp.asarray(changed), None, positions)
  np.testing.assert_array_equal(base[0, 5 + reach + 1:], moved[0, 5 + reach + 1:])
  assert np.abs(np.asarray(base[0, 5 + reach] - moved[0, 5 + reach])).max() > 1e-6


def test_cache_memory_is_fixed(decoder_setup):
  model, _, _ = decoder_setup
  cfg = model.config
  cache = init_decoder_cache(cfg, batch=3)
  # The pinned prefix, the window, plus a chunk step's positions less one: the step
  # writes before it reads.
  size = (cfg.decoder.pinned_prefix + cfg.decoder.window
          + sf.chunk_prefix_length(cfg.slots_per_chunk) - 1)
  assert decoder_cache_size(cfg) == size
  assert all(layer["k"].shape == (3, cfg.decoder.num_kv_heads, size, cfg.decoder.head_dim)
             and layer["pos"].shape == (3, size) for layer in cache)
  older = dataclasses.replace(cfg, cache_write="after")
  assert all(layer["pos"].shape == (3, cfg.decoder.pinned_prefix + cfg.decoder.window)
             for layer in init_decoder_cache(older, batch=3))


@pytest.mark.parametrize("pinned", [0, 6])
def test_a_pinned_prefix_stays_in_view_and_nothing_between_it_and_the_window(pinned):
  """With `pinned_prefix` P, a token at position < P still moves the outputs 5 windows
  later; a token just after the prefix stops mattering as the window passes it, as
  every token does without pinning."""
  model = AudioInteractionModel(model_testing.small_config(
      **{"model.decoder.pinned_prefix": pinned}))
  params = model.init(jax.random.key(4))
  cfg = model.config
  length = 5 * cfg.decoder.window
  rng = np.random.default_rng(5)
  tokens = rng.integers(0, cfg.decoder.vocab_size, (1, length)).astype(np.int32)
  positions = jnp.arange(length, dtype=jnp.int32)[None]
  base, *_ = _full(model, params, jnp.asarray(tokens), None, positions)

  def moved_by(index):
    changed = tokens.copy()
    changed[0, index] = (changed[0, index] + 1) % cfg.decoder.vocab_size
    moved, *_ = _full(model, params, jnp.asarray(changed), None, positions)
    return np.abs(np.asarray(base[0, -1] - moved[0, -1])).max()

  assert (moved_by(2) > 1e-4) == bool(pinned)
  assert moved_by(6) == 0.0
