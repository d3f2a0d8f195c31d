"""The whole model: the streaming steps reproduce the full-sequence forward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audio_interaction import config_lib
from audio_interaction import stream_format as sf
from audio_interaction.model.model import AudioInteractionModel
import model_testing

ATOL = 2e-5  # fp32 through the front end, encoder and decoder


@pytest.fixture(scope="module")
def setup():
  model = AudioInteractionModel(model_testing.small_config())
  params = model.init(jax.random.key(0))
  return model, params, jax.jit(model.prefill), jax.jit(model.perceive)


@pytest.fixture(scope="module")
def heard_sounds_setup():
  """A model whose decoder hears the sound-event head (`model.sound_event_feed`), its
  feed weights perturbed away from their zero start."""
  model = AudioInteractionModel(model_testing.small_config(**{
      "model.sound_event_classes": 5, "model.sound_event_feed": True}))
  params = model_testing.perturbed(model.init(jax.random.key(0)), 1)
  feed = params["params"]["sound_event_feed"]
  feed["kernel"] = 4 * feed["kernel"]  # heard sounds move the slots as much as the audio
  return model, params, jax.jit(model.prefill), jax.jit(model.perceive)


# Five classes' names in the small config's 64 ids: "no sound" has none, names of 1-3 tokens.
NAME_TOKENS = ((), (20, 21), (22,), (23, 24, 25), (21,))


@pytest.fixture(scope="module")
def heard_names_setup():
  """A model whose decoder hears each class as its name's words
  (`model.sound_event_feed_names`), gain and projection perturbed from their zero start."""
  model = AudioInteractionModel(model_testing.small_config(**{
      "model.sound_event_classes": 5, "model.sound_event_feed_names": True,
      "model.sound_event_name_tokens": NAME_TOKENS}))
  params = model_testing.perturbed(model.init(jax.random.key(0)), 1)
  params["params"]["sound_event_name_gain"] = jnp.asarray(2.0)
  projection = params["params"]["sound_event_name_projection"]
  projection["kernel"] = 4 * projection["kernel"]
  return model, params, jax.jit(model.prefill), jax.jit(model.perceive)


def _stream(model, params, prefill, perceive, tokens, audio, prompt_length, replies, batch=1):
  """Runs the streaming steps over a sequence in the online layout; returns the logits
  they produced, keyed by the sequence position whose next token they predict."""
  cfg = model.config
  state = model.init_state(batch)
  state, lm = prefill(params, state, jnp.asarray(tokens[None, :prompt_length]))
  lm_at, decision_at = {prompt_length - 1: lm[0, -1]}, {}
  ctc_chunks = []
  position = prompt_length
  for chunk, reply in enumerate(replies):
    samples = audio[None, chunk * cfg.chunk_samples:(chunk + 1) * cfg.chunk_samples]
    state, decision, lm, ctc = perceive(params, state, jnp.asarray(samples))
    ctc_chunks.append(ctc[0])
    position += sf.chunk_prefix_length(cfg.slots_per_chunk)
    lm_at[position - 1], decision_at[position - 1] = lm[0], decision[0]
    for token in reply:  # reply tokens are fed back one by one, as when speaking
      state, lm = prefill(params, state, jnp.full((1, 1), token, jnp.int32))
      lm_at[position] = lm[0, 0]
      position += 1
  return state, lm_at, decision_at, np.concatenate(ctc_chunks)


@pytest.mark.parametrize("seed,model_setup", [(0, "setup"), (1, "setup"),
                                               (0, "heard_sounds_setup"),
                                               (0, "heard_names_setup")])
def test_streaming_steps_equal_full_forward(request, seed, model_setup):
  model, params, prefill, perceive = request.getfixturevalue(model_setup)
  cfg = model.config
  rng = np.random.default_rng(seed)
  num_chunks = 12  # long enough that the decoder window (24) and encoder ring wrap
  tokens, slot_index, prompt_length, replies = model_testing.online_sequence(
      rng, num_chunks, cfg.slots_per_chunk, cfg.tokens_per_chunk, cfg.decoder.vocab_size)
  audio = (0.1 * rng.normal(size=num_chunks * cfg.chunk_samples)).astype(np.float32)
  full = model.forward(params, jnp.asarray(tokens[None]), jnp.asarray(audio[None]),
                       jnp.asarray(slot_index[None]))
  state, lm_at, decision_at, ctc = _stream(model, params, prefill, perceive, tokens, audio,
                                           prompt_length, replies)
  assert len(tokens) > 2 * cfg.decoder.window
  assert int(state.next_position[0]) == len(tokens)
  for position, logits in lm_at.items():
    np.testing.assert_allclose(logits, full.lm_logits[0, position], atol=ATOL, rtol=0,
                               err_msg=f"lm logits at position {position}")
  assert len(decision_at) == num_chunks
  decide_positions = np.flatnonzero(tokens == sf.DECIDE_ID)
  assert sorted(decision_at) == list(decide_positions)
  for position, logits in decision_at.items():
    np.testing.assert_allclose(logits, full.decision_logits[0, position], atol=ATOL, rtol=0)
  assert ctc.shape == (num_chunks * cfg.encoder_frames_per_chunk, cfg.decoder.vocab_size)
  np.testing.assert_allclose(ctc, full.ctc_logits[0], atol=ATOL, rtol=0)


def test_ragged_batch_of_streams_matches_each_stream_alone(setup):
  """Two streams with different instruction lengths served in one batch."""
  model, params, prefill, perceive = setup
  cfg = model.config
  rng = np.random.default_rng(7)
  prompts = [rng.integers(sf.NUM_SPECIAL_TOKENS, cfg.decoder.vocab_size, n).astype(np.int32)
             for n in (3, 7)]
  padded = np.zeros((2, 7), np.int32)
  valid = np.zeros((2, 7), bool)
  for row, prompt in enumerate(prompts):
    padded[row, :len(prompt)], valid[row, :len(prompt)] = prompt, True
  chunks = (0.1 * rng.normal(size=(3, 2, cfg.chunk_samples))).astype(np.float32)

  state = model.init_state(2)
  state, _ = prefill(params, state, jnp.asarray(padded), jnp.asarray(valid))
  batched = []
  for chunk in chunks:
    state, decision, _, _ = perceive(params, state, jnp.asarray(chunk))
    batched.append(decision)
  for row, prompt in enumerate(prompts):
    alone = model.init_state(1)
    alone, _ = prefill(params, alone, jnp.asarray(prompt[None]))
    for step, chunk in enumerate(chunks):
      alone, decision, _, _ = perceive(params, alone, jnp.asarray(chunk[row:row + 1]))
      np.testing.assert_allclose(decision[0], batched[step][row], atol=ATOL, rtol=0)


def test_perceive_compiles_once_over_100_chunks(setup):
  model, params, _, _ = setup
  traces = []

  def counted(p, state, chunk):
    traces.append(1)  # runs only while tracing
    return model.perceive(p, state, chunk)

  step = jax.jit(counted, donate_argnums=1)
  state = model.init_state(1)
  chunk = jnp.zeros((1, model.config.chunk_samples), jnp.float32)
  for _ in range(100):
    state, decision, _, _ = step(params, state, chunk)
  assert len(traces) == 1
  assert step._cache_size() == 1
  assert int(state.next_position[0]) == 100 * sf.chunk_prefix_length(model.config.slots_per_chunk)


def test_wrong_chunk_length_is_a_clear_error(setup):
  model, params, _, _ = setup
  with pytest.raises(ValueError, match=r"chunk has 2000 samples, expected 2560 \(160 ms"):
    model.perceive(params, model.init_state(1), jnp.zeros((1, 2000)))


@pytest.mark.parametrize("head,option,classes", [
    ("sound_event", {"model.sound_event_classes": 5}, 5),
    ("sound_event", {"model.sound_event_classes": 5, "model.sound_event_blocks": (0,)}, 5),
    ("turn_end", {"model.turn_end_head": True}, 2)])
def test_chunk_head_reads_each_chunk_and_its_past_only(head, option, classes):
  model = AudioInteractionModel(model_testing.small_config(**option))
  params = model.init(jax.random.key(3))
  cfg = model.config
  rng = np.random.default_rng(4)
  num_chunks = 6
  tokens, slot_index, _, _ = model_testing.online_sequence(
      rng, num_chunks, cfg.slots_per_chunk, cfg.tokens_per_chunk, cfg.decoder.vocab_size)
  audio = (0.1 * rng.normal(size=num_chunks * cfg.chunk_samples)).astype(np.float32)
  later = audio.copy()
  later[4 * cfg.chunk_samples:] = rng.normal(size=2 * cfg.chunk_samples)  # chunks 4-5 differ
  run = lambda samples: getattr(model.forward(
      params, jnp.asarray(tokens[None]), jnp.asarray(samples[None]),
      jnp.asarray(slot_index[None])), f"{head}_logits")
  first, second = run(audio), run(later)
  assert first.shape == (1, num_chunks, classes)
  np.testing.assert_allclose(first[0, :4], second[0, :4], atol=ATOL, rtol=0)
  assert np.abs(first[0, 4:] - second[0, 4:]).max() > 1e-3
  # Streaming, chunk by chunk, gives the full forward's logits.
  state = model.init_state(1)
  perceive_all = jax.jit(model.perceive_all)
  for chunk in range(num_chunks):
    state, outputs = perceive_all(
        params, state, jnp.asarray(audio[None, chunk * cfg.chunk_samples:(chunk + 1) * cfg.chunk_samples]))
    np.testing.assert_allclose(getattr(outputs, f"{head}_logits")[0], first[0, chunk],
                               atol=ATOL, rtol=0, err_msg=f"chunk {chunk}")
  # Without the option the model has no head and no such output.
  plain = AudioInteractionModel(model_testing.small_config())
  assert f"{head}_head" not in plain.init(jax.random.key(3))["params"]


def test_the_sound_event_feed_starts_at_zero_and_then_changes_what_the_decoder_hears():
  config = model_testing.small_config(**{"model.sound_event_classes": 5,
                                         "model.sound_event_feed": True})
  model = AudioInteractionModel(config)
  params = model.init(jax.random.key(0))
  assert params["params"]["sound_event_feed"]["kernel"].shape == (5, config.model.decoder.d_model)
  plain = AudioInteractionModel(model_testing.small_config(**{"model.sound_event_classes": 5}))
  without_feed = {"params": {k: v for k, v in params["params"].items() if k != "sound_event_feed"}}
  rng = np.random.default_rng(2)
  cfg = model.config
  tokens, slot_index, _, _ = model_testing.online_sequence(
      rng, 4, cfg.slots_per_chunk, cfg.tokens_per_chunk, cfg.decoder.vocab_size)
  audio = (0.1 * rng.normal(size=4 * cfg.chunk_samples)).astype(np.float32)
  run = lambda m, p: m.forward(p, jnp.asarray(tokens[None]), jnp.asarray(audio[None]),
                               jnp.asarray(slot_index[None])).lm_logits
  # Zero at the start: the model answers as the same weights without the feed do.
  np.testing.assert_allclose(run(model, params), run(plain, without_feed), atol=1e-6, rtol=0)
  fed = jax.tree_util.tree_map(lambda x: x, params)
  fed["params"]["sound_event_feed"]["kernel"] = jnp.ones_like(fed["params"]["sound_event_feed"]["kernel"])
  assert np.abs(run(model, fed) - run(plain, without_feed)).max() > 1e-3
  with pytest.raises(config_lib.ConfigError, match="sound_event_feed=True feeds the decoder"):
    model_testing.small_config(**{"model.sound_event_feed": True})


def test_the_name_feed_adds_each_heard_class_as_the_mean_embedding_of_its_name():
  names = {"model.sound_event_classes": 5, "model.sound_event_name_tokens": NAME_TOKENS}
  model = AudioInteractionModel(model_testing.small_config(
      **names, **{"model.sound_event_feed_names": True}))
  params = model_testing.perturbed(model.init(jax.random.key(0)), 4)
  assert params["params"]["sound_event_name_projection"]["kernel"].shape == (
      model.config.decoder.d_model, model.config.decoder.d_model)
  fresh = model.init(jax.random.key(0))["params"]
  assert float(fresh["sound_event_name_gain"]) == 0
  assert not np.any(fresh["sound_event_name_projection"]["kernel"])
  network = model.network
  rng = np.random.default_rng(5)
  slots = jnp.asarray(rng.normal(size=(2, 3 * model.config.slots_per_chunk,
                                      model.config.decoder.d_model)), jnp.float32)
  logits = jnp.asarray(4 * rng.normal(size=(2, 3, 5)), jnp.float32)
  heard = lambda p: network.apply(p, slots, logits, method=type(network).heard_slots)
  # At its zero start the feed adds nothing (the same weights without it answer alike).
  start = {"params": {**params["params"], "sound_event_name_gain": jnp.asarray(0.0),
                      "sound_event_name_projection": {"kernel": jnp.zeros_like(
                          params["params"]["sound_event_name_projection"]["kernel"])}}}
  np.testing.assert_allclose(heard(start), slots, atol=1e-6)
  # Gain 1, no projection: each slot gets sum_k p_k * mean(E[name_k]), by hand.
  gain = {"params": {**start["params"], "sound_event_name_gain": jnp.asarray(1.0)}}
  table = np.asarray(params["params"]["decoder"]["embed"]["embedding"])
  name_vectors = np.stack([table[list(t)].mean(0) if t else np.zeros(table.shape[1])
                           for t in NAME_TOKENS])
  expected = np.asarray(jax.nn.softmax(logits, -1)) @ name_vectors
  np.testing.assert_allclose(heard(gain) - slots,
                             np.repeat(expected, model.config.slots_per_chunk, axis=1),
                             atol=1e-5, rtol=1e-5)
  # The names are read from the decoder's table, which the feed does not train.
  moved = jax.tree_util.tree_map(lambda x: x, gain)
  moved["params"]["decoder"]["embed"]["embedding"] = (
      moved["params"]["decoder"]["embed"]["embedding"].at[22].add(1.0))
  changed = np.abs(np.asarray(heard(moved) - heard(gain))).max(-1)
  assert changed.min() > 0  # class 2 ("22") has some probability in every chunk
  grad = jax.grad(lambda p: heard(p).sum())(gain)
  assert not np.any(grad["params"]["decoder"]["embed"]["embedding"])
  assert np.abs(grad["params"]["sound_event_name_gain"]) > 0
  # Names missing from the config, or for another number of classes: a clear error.
  unnamed = AudioInteractionModel(model_testing.small_config(**{
      "model.sound_event_classes": 5, "model.sound_event_feed_names": True}))
  with pytest.raises(ValueError, match="needs the 5 classes' name tokens"):
    unnamed.network.apply(params, slots, logits, method=type(network).heard_slots)
  with pytest.raises(config_lib.ConfigError, match="sound_event_feed_names=True feeds"):
    model_testing.small_config(**{"model.sound_event_feed_names": True})
  with pytest.raises(config_lib.ConfigError, match="has 5 names for"):
    model_testing.small_config(**{**names, "model.sound_event_classes": 4})
  with pytest.raises(config_lib.ConfigError, match="ids >= model.decoder.vocab_size=64"):
    model_testing.small_config(**{**names, "model.sound_event_name_tokens": ((), (64,), (), (), ())})
