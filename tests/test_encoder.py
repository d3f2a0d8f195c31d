"""Encoder: stepping over random chunk splits reproduces the full forward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audio_interaction.model.encoder import init_encoder_state
from audio_interaction.model.model import AudioInteractionModel, AudioInteractionNetwork
import model_testing

ATOL = 1e-5  # fp32; the two paths sum the same terms in a different order


VARIANTS = {
    "transformer": {},
    "conformer": {"block": "conformer"},
    # Whisper's audio tower run chunk-causally; positions restart every 20 frames.
    "whisper": model_testing.WHISPER_ENCODER,
    # ... restarting sooner, every 12 frames (mid-chunk).
    "whisper_period": dict(model_testing.WHISPER_ENCODER, **{"model.encoder.position_period": 12}),
    "sinusoidal": dict(model_testing.WHISPER_ENCODER, **{
        "model.encoder.positions": "'sinusoidal'", "model.encoder.block": "conformer"}),
}


@pytest.fixture(scope="module", params=list(VARIANTS))
def encoder_setup(request):
  overrides = dict(VARIANTS[request.param])
  model = AudioInteractionModel(model_testing.small_config(overrides.pop("block", "transformer"),
                                                           **overrides))
  params = model.init(jax.random.key(1))
  if overrides:  # zero-initialised biases must take part too
    params = model_testing.perturbed(params, seed=1)
  def step(p, mel, state):  # (slots, CTC logits, state): this model has no chunk heads
    slots, ctc, sound_events, turn_end, state = model.network.apply(
        p, mel, state, method=AudioInteractionNetwork.encode_step)
    assert sound_events is None and turn_end is None
    return slots, ctc, state

  encode = jax.jit(step)
  full = jax.jit(lambda p, mel: step(p, mel, None))
  return model, params, encode, full


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stepped_over_random_chunk_splits_equals_full_forward(encoder_setup, seed):
  model, params, encode, full = encoder_setup
  cfg = model.config
  rng = np.random.default_rng(seed)
  # > left_chunks + 1: old chunks must fall out of the ring cache; and 9 chunks of
  # 8 Whisper-stem frames outlive its 20 absolute positions.
  num_chunks = 9
  mel = jnp.asarray(rng.normal(size=(2, num_chunks * cfg.frames_per_chunk, cfg.n_mels)),
                    jnp.float32)
  want_slots, want_frames, _ = full(params, mel)

  state = init_encoder_state(cfg, batch=2)
  got_slots, got_frames, start = [], [], 0
  for chunks in model_testing.random_splits(rng, num_chunks, max_piece=3):
    stop = start + chunks * cfg.frames_per_chunk
    slots, frames, state = encode(params, mel[:, start:stop], state)
    got_slots.append(slots)
    got_frames.append(frames)
    start = stop
  np.testing.assert_allclose(np.concatenate(got_slots, 1), want_slots, atol=ATOL, rtol=0)
  np.testing.assert_allclose(np.concatenate(got_frames, 1), want_frames, atol=ATOL, rtol=0)
  assert want_slots.shape == (2, num_chunks * cfg.slots_per_chunk, cfg.decoder.d_model)


def test_chunk_causality(encoder_setup):
  """Changing chunk c changes no output of chunks < c, and outputs of chunk c+left+1 onward
  only through deeper layers' receptive field — here: earlier chunks are untouched."""
  model, params, _, full = encoder_setup
  cfg = model.config
  rng = np.random.default_rng(5)
  mel = rng.normal(size=(1, 6 * cfg.frames_per_chunk, cfg.n_mels)).astype(np.float32)
  changed = mel.copy()
  changed[:, 3 * cfg.frames_per_chunk + 2] += 5.0  # a frame in the middle of chunk 3
  a, _, _ = full(params, jnp.asarray(mel))
  b, _, _ = full(params, jnp.asarray(changed))
  k = cfg.slots_per_chunk
  np.testing.assert_array_equal(a[:, :3 * k], b[:, :3 * k])
  # The whole of chunk 3 sees the change, including slots before the changed frame.
  assert np.all(np.abs(np.asarray(a[:, 3 * k:4 * k] - b[:, 3 * k:4 * k])).max(-1) > 1e-4)


def test_rejects_partial_chunks(encoder_setup):
  model, params, _, full = encoder_setup
  mel = jnp.zeros((1, model.config.frames_per_chunk + 3, model.config.n_mels))
  with pytest.raises(ValueError, match="not a whole number"):
    full(params, mel)
