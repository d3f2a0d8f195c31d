"""ClipEncoder's first position: a clip encoded from position p is what a stream whose
encoder has run p frames gives for it (absolute positions), nothing changes with
rotary positions, and "random" draws seeded chunk boundaries across the window."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audio_interaction.model import clip_encoder
from audio_interaction.model.clip_encoder import ClipEncoder
from audio_interaction.model.encoder import init_encoder_state
from audio_interaction.model.model import AudioInteractionModel
import model_testing


def _model(**overrides):
  model = AudioInteractionModel(model_testing.small_config(**overrides))
  return model, model_testing.perturbed(model.init(jax.random.key(0)), seed=3)


def _streamed_frames(model, params, audio, first_position):
  """The encoder frames of `audio` stepped chunk by chunk from a state at `first_position`."""
  cfg = model.config
  mel = model.features(jnp.asarray(audio[None]))
  state = dict(init_encoder_state(cfg, 1), next_frame=jnp.full((1,), first_position, jnp.int32))
  _, frames, _, _ = model.network.apply(params, mel, state, method=lambda net, m, s: net.encoder(m, s))
  return np.asarray(frames[0])


@pytest.mark.parametrize("long_clip", [False, True])
def test_a_clip_from_position_p_is_what_a_stream_at_p_gives(monkeypatch, long_clip):
  model, params = _model(**model_testing.WHISPER_ENCODER)
  cfg = model.config
  per_chunk = cfg.encoder_frames_per_chunk
  audio = (0.1 * np.random.default_rng(0).normal(size=4 * cfg.chunk_samples)).astype(np.float32)
  if long_clip:  # encoded by the streaming scan instead of one full pass
    monkeypatch.setattr(clip_encoder, "MAX_FULL_PASS_CHUNKS", 2)
    monkeypatch.setattr(clip_encoder, "STREAM_BUCKET_CHUNKS", 3)  # 4 chunks padded to 6
  encode = ClipEncoder(model, params, output="frames")
  at_zero = encode(audio, first_position=0)
  for first in (per_chunk, 2 * per_chunk, 3 * per_chunk):  # 3 * 8 > 20: wraps mid-clip
    got = encode(audio, first_position=first)
    np.testing.assert_allclose(got, _streamed_frames(model, params, audio, first), atol=2e-4)
    assert np.abs(got - at_zero).max() > 1e-2  # the position table moved the frames


def test_long_clips_of_one_bucket_share_one_compiled_scan(monkeypatch):
  model, params = _model()
  monkeypatch.setattr(clip_encoder, "MAX_FULL_PASS_CHUNKS", 2)
  monkeypatch.setattr(clip_encoder, "STREAM_BUCKET_CHUNKS", 4)
  chunk = model.config.chunk_samples
  audio = (0.1 * np.random.default_rng(2).normal(size=8 * chunk)).astype(np.float32)
  encode = ClipEncoder(model, params, output="chunk_means")
  whole = encode(audio, first_position=0)
  for chunks in (5, 6, 7):  # one bucket of 8 chunks with the whole clip
    np.testing.assert_allclose(encode(audio[:chunks * chunk], first_position=0),
                               whole[:chunks], atol=2e-4)
  assert encode._stream._cache_size() == 1


def test_rotary_positions_make_the_first_position_irrelevant():
  model, params = _model()
  assert model.config.encoder.positions == "rope"
  audio = (0.1 * np.random.default_rng(1).normal(size=3 * model.config.chunk_samples)
           ).astype(np.float32)
  encode = ClipEncoder(model, params, output="chunk_means", first_positions="random", seed=0)
  assert encode.next_first_position() == 0
  np.testing.assert_allclose(encode(audio, first_position=0),
                             encode(audio, first_position=40), atol=2e-4)


def test_random_first_positions_are_seeded_chunk_boundaries_over_the_window():
  model, params = _model(**model_testing.WHISPER_ENCODER)
  per_chunk, period = model.config.encoder_frames_per_chunk, model.config.encoder.max_positions
  draws = [ClipEncoder(model, params, output="chunk_means", first_positions="random",
                       seed=seed) for seed in (0, 0, 1)]
  sequences = [[d.next_first_position() for _ in range(60)] for d in draws]
  assert sequences[0] == sequences[1] and sequences[0] != sequences[2]
  assert all(p % per_chunk == 0 and 0 <= p < period for p in sequences[0])
  assert set(sequences[0]) == set(range(0, period, per_chunk))  # every boundary drawn
  assert ClipEncoder(model, params, output="frames").next_first_position() == 0
  with pytest.raises(ValueError, match="first_positions 'middle'"):
    ClipEncoder(model, params, output="frames", first_positions="middle")


def test_a_shorter_position_period_repeats_the_table_sooner():
  model, params = _model(**model_testing.WHISPER_ENCODER, **{"model.encoder.position_period": 16})
  per_chunk = model.config.encoder_frames_per_chunk
  assert model.config.encoder.positions_restart_every == 16 and 16 % per_chunk == 0
  audio = (0.1 * np.random.default_rng(2).normal(size=3 * model.config.chunk_samples)
           ).astype(np.float32)
  encode = ClipEncoder(model, params, output="frames", first_positions="random", seed=0)
  np.testing.assert_allclose(encode(audio, first_position=16), encode(audio, first_position=0),
                             atol=2e-4)
  assert np.abs(encode(audio, first_position=per_chunk) - encode(audio, first_position=0)
                ).max() > 1e-2
  assert {encode.next_first_position() for _ in range(40)} == set(range(0, 16, per_chunk))
