"""Exact positions for any stream length: a context deep into a stream gives the logits it
gives at the stream's start (rotary phases are reduced modulo a turn in integers)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audio_interaction.model import layers
from audio_interaction.model.model import AudioInteractionModel
import model_testing

POSITIONS_PER_HOUR = 50 * 3600  # ~50 decoder positions per second of stream


@pytest.fixture(scope="module")
def forward_at():
  config = model_testing.small_config(**{"model.decoder.window": 64})
  model = AudioInteractionModel(config)
  params = model.init(jax.random.key(0))
  tokens = jnp.asarray(np.random.default_rng(0).integers(12, 64, (1, 48)), jnp.int32)
  audio = jnp.zeros((1, model.config.chunk_samples), jnp.float32)
  slots = jnp.full((1, 48), -1, jnp.int32)
  forward = jax.jit(lambda positions: model.forward(params, tokens, audio, slots,
                                                    positions=positions).lm_logits)
  return lambda offset: np.asarray(forward(jnp.arange(48, dtype=jnp.int32)[None] + offset))


@pytest.mark.parametrize("hours", [1 / 60, 1, 10, 100])
def test_logits_deep_into_a_stream_equal_those_at_its_start(forward_at, hours):
  offset = int(hours * POSITIONS_PER_HOUR)
  start = forward_at(0)
  # float32 rounding of a different (exact) rotation: a few ulp of logits of size ~4,
  # the same at every depth. A float32 `position * frequency` angle is off by 3e-5
  # after one minute and by 0.6 after 100 hours.
  np.testing.assert_allclose(forward_at(offset), start, atol=4e-6, rtol=0)


def test_phases_are_exact_integers_modulo_a_turn():
  steps = layers.rope_phase_steps(32, 10000.0)
  assert steps.dtype == np.uint32 and steps[0] == round(2 ** 32 / (2 * np.pi))
  positions = jnp.asarray([[0, 1, 12_345_678, 2 ** 31 - 1]], jnp.int32)
  cos, sin = layers.rope_cos_sin(positions, 32, 10000.0)
  # The angle of a position from float64 arithmetic on the same fixed-point frequency.
  exact = (np.asarray(positions[0], np.float64)[:, None] * steps.astype(np.float64)
           % 2 ** 32) * 2 * np.pi / 2 ** 32
  np.testing.assert_allclose(np.asarray(cos[0]), np.cos(exact), atol=5e-7)
  np.testing.assert_allclose(np.asarray(sin[0]), np.sin(exact), atol=5e-7)


@pytest.mark.parametrize("hours", [1, 100])
def test_a_pinned_instruction_reads_the_same_hours_into_a_stream(hours):
  """With a pinned prefix, the same recent tokens after the same instruction give the
  same logits just past the window and `hours` into the stream: the pinned keys are
  scored at the window end's distances, whatever the query's position."""
  config = model_testing.small_config(**{"model.decoder.window": 64,
                                         "model.decoder.pinned_prefix": 8})
  model = AudioInteractionModel(config)
  params = model.init(jax.random.key(1))
  rng = np.random.default_rng(1)
  tokens = jnp.asarray(rng.integers(12, 64, (1, 8 + 40)), jnp.int32)
  audio = jnp.zeros((1, model.config.chunk_samples), jnp.float32)
  slots = jnp.full((1, 48), -1, jnp.int32)

  def logits_at(offset):  # the prompt at 0..7, the recent tokens from `offset` on
    positions = jnp.concatenate([jnp.arange(8), offset + jnp.arange(40)]).astype(jnp.int32)
    return np.asarray(model.forward(params, tokens, audio, slots,
                                    positions=positions[None]).lm_logits)[0, 8:]

  np.testing.assert_allclose(logits_at(int(hours * POSITIONS_PER_HOUR)), logits_at(64),
                             atol=4e-6, rtol=0)
  # Within the window the prompt sits at its true distance: other logits.
  assert np.abs(logits_at(20) - logits_at(64)).max() > 1e-3
