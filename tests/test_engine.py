"""Engine: what the jitted perceive/speak loop did equals the full forward of the same model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audio_interaction import stream_format as sf
from audio_interaction.infer.engine import Engine, SamplingConfig, sample_tokens
from audio_interaction.infer.policies import ThresholdPolicy
from audio_interaction.infer.run_stream import StreamStepper, run_stream
from audio_interaction.model.model import AudioInteractionModel
import model_testing


@pytest.mark.parametrize("pinned", [0, 6])
def test_greedy_loop_equals_full_forward_on_its_own_sequence(pinned):
  """10 chunks and their replies outlive the window of 24 positions (pinned: the first 6
  stay in view)."""
  model = AudioInteractionModel(model_testing.small_config(
      **{"model.decoder.pinned_prefix": pinned}))
  params = model.init(jax.random.key(4))
  engine = Engine(model)
  rng = np.random.default_rng(0)
  cfg = model.config
  audio = (0.1 * rng.normal(size=10 * cfg.chunk_samples)).astype(np.float32)
  instruction = [20, 21, 22]
  probe = run_stream(engine, params, audio, instruction, ThresholdPolicy(2.0))  # never speaks
  # A threshold inside the observed range makes the model speak on some chunks only.
  threshold = float(np.median([c.speak_probability for c in probe.chunks]))
  trace = run_stream(engine, params, audio, instruction, ThresholdPolicy(threshold))
  spoke = [c.spoke for c in trace.chunks]
  assert any(spoke) and not all(spoke)

  # Lay out what happened in the stream format and run the full forward over it.
  tokens = [sf.BOS_ID, sf.ONLINE_ID, sf.SYS_ID, *instruction, sf.END_SYS_ID]
  slots = [sf.NO_INDEX] * len(tokens)
  decide_at, reply_at = [], []
  for chunk in trace.chunks:
    k = cfg.slots_per_chunk
    tokens += [sf.AUDIO_ID] + [sf.AUDIO_SLOT_ID] * k + [sf.DECIDE_ID]
    slots += [sf.NO_INDEX] + [chunk.index * k + j for j in range(k)] + [sf.NO_INDEX]
    decide_at.append(len(tokens) - 1)
    for token in chunk.reply_tokens:
      reply_at.append((len(tokens) - 1, token))  # predicted at the previous position
      tokens.append(token)
      slots.append(sf.NO_INDEX)
  full = model.forward(params, jnp.asarray([tokens]), jnp.asarray(audio[None]),
                       jnp.asarray([slots]))
  probs = jax.nn.softmax(full.decision_logits[0], -1)[:, sf.Decision.SPEAK]
  np.testing.assert_allclose([c.speak_probability for c in trace.chunks],
                             np.asarray(probs)[decide_at], atol=2e-5)
  greedy = np.asarray(jnp.argmax(full.lm_logits[0], -1))
  assert reply_at and all(greedy[position] == token for position, token in reply_at)
  # Replies stop at <eor> or at the per-chunk budget.
  for chunk in trace.chunks:
    assert len(chunk.reply_tokens) <= cfg.tokens_per_chunk
    assert sf.EOR_ID not in chunk.reply_tokens[:-1]


def test_a_prompt_longer_than_the_pinned_prefix_is_named(caplog):
  model = AudioInteractionModel(model_testing.small_config(
      **{"model.decoder.pinned_prefix": 8}))
  params = model.init(jax.random.key(0))
  engine = Engine(model)
  engine.init_state(params, [[20, 21, 22]])  # 7 positions with <bos> <online> <sys> </sys>
  assert not caplog.records
  state = engine.init_state(params, [[20, 21, 22], [20] * 9])
  assert "prompt of 13 positions is longer than model.decoder.pinned_prefix=8" in caplog.text
  caplog.clear()
  engine.reset_rows(params, state, {0: [20] * 10})
  assert "prompt of 14 positions" in caplog.text


def test_nucleus_sampling_keeps_only_the_nucleus():
  logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]]))
  keys = jax.random.split(jax.random.key(0), 400)
  draws = np.array([int(sample_tokens(logits, key, SamplingConfig(1.0, 0.7))[0]) for key in keys])
  # The smallest set with mass >= 0.7 is {0, 1}; tokens 2 and 3 are never drawn.
  assert set(draws) == {0, 1}
  assert 0.55 < np.mean(draws == 0) < 0.70  # 0.5 / 0.8 renormalised
  greedy = sample_tokens(logits, keys[0], SamplingConfig())
  assert int(greedy[0]) == 0


def test_bad_frames_are_refused_with_a_clear_error():
  model = AudioInteractionModel(model_testing.small_config())
  params = model.init(jax.random.key(4))
  audio = np.zeros(3 * model.config.chunk_samples, np.float32)
  audio[100] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    run_stream(Engine(model), params, audio, [20], ThresholdPolicy(0.5))


def test_chunk_records_carry_the_sound_event_heads_answer():
  from audio_interaction.corpus import worlds
  model = AudioInteractionModel(model_testing.small_config(
      **{"model.sound_event_classes": len(worlds.SOUND_EVENT_LABELS)}))
  params = model.init(jax.random.key(5))
  cfg = model.config
  rng = np.random.default_rng(2)
  audio = (0.1 * rng.normal(size=6 * cfg.chunk_samples)).astype(np.float32)
  audio[2 * cfg.chunk_samples:4 * cfg.chunk_samples] = 0.0  # quiet chunks answer otherwise
  engine = Engine(model)
  trace = run_stream(engine, params, audio, [20], ThresholdPolicy(2.0))
  # The full forward's per-chunk logits, read the same way.
  tokens, slots = [sf.BOS_ID, sf.ONLINE_ID, sf.SYS_ID, 20, sf.END_SYS_ID], [sf.NO_INDEX] * 5
  for chunk in range(6):
    tokens += [sf.AUDIO_ID] + [sf.AUDIO_SLOT_ID] * cfg.slots_per_chunk + [sf.DECIDE_ID]
    slots += [sf.NO_INDEX] + [chunk * cfg.slots_per_chunk + j
                              for j in range(cfg.slots_per_chunk)] + [sf.NO_INDEX]
  full = model.forward(params, jnp.asarray([tokens]), jnp.asarray(audio[None]), jnp.asarray([slots]))
  probs = np.asarray(jax.nn.softmax(full.sound_event_logits[0], -1))
  labels = worlds.SOUND_EVENT_LABELS
  want = [labels[int(np.argmax(p))] for p in probs]
  assert [c.sound_event for c in trace.chunks] == want
  assert any(want) and len(set(want)) > 1  # classes heard, not one answer throughout
  for c, p in zip(trace.chunks, probs):
    expected = 0.0 if c.sound_event is None else float(p.max())
    np.testing.assert_allclose(c.sound_probability, expected, atol=1e-5)
  # Rows held back keep their last answer; advanced rows get the same as alone.
  state = engine.init_state(params, [[20], [20]])
  chunk = jnp.asarray(np.stack([audio[:cfg.chunk_samples]] * 2))
  state, _ = engine.perceive_rows(params, state, chunk, jnp.asarray([True, False]))
  np.testing.assert_allclose(state.sound_events[0], probs[0], atol=1e-5)
  assert not np.asarray(state.sound_events[1]).any()
  # A model without the head reports no sound events.
  plain = AudioInteractionModel(model_testing.small_config())
  plain_trace = run_stream(Engine(plain), plain.init(jax.random.key(5)), audio, [20],
                           ThresholdPolicy(2.0))
  assert all(c.sound_event is None and c.sound_probability == 0 for c in plain_trace.chunks)


def test_a_changed_instruction_is_pinned_and_the_first_one_forgotten():
  """Pinned prefix: after a change to B (fed, then re-pinned), once the change has left
  every layer's reach, a stream that started with A is the stream that started with B
  and got the same change; fed only, it still reads A in its pinned prefix."""
  model = AudioInteractionModel(model_testing.small_config(
      **{"model.decoder.pinned_prefix": 8}))
  params = model.init(jax.random.key(6))
  engine = Engine(model)
  cfg = model.config
  rng = np.random.default_rng(2)
  chunks = (0.1 * rng.normal(size=(40, cfg.chunk_samples))).astype(np.float32)
  first, second = [20, 21, 22], [30, 31, 32]
  # Never speaking: 4 positions a chunk, so every layer's reach (2 x 24 positions) is
  # passed 12 chunks after the change.
  change_at, settled = 5, 5 + 13

  def run(start, repin=True):
    stepper = StreamStepper(engine, params, [start], [ThresholdPolicy(2.0)])
    probabilities = []
    for index, chunk in enumerate(chunks):
      if index == change_at:
        if repin:
          stepper.change_instruction(second)
        else:
          stepper.feed_text(sf.instruction_tokens(second))
      probabilities.append(stepper.step(chunk).speak_probability)
    return np.asarray(probabilities)

  changed, started = run(first), run(second)
  assert np.abs(changed[:change_at] - started[:change_at]).max() > 1e-4
  np.testing.assert_allclose(changed[settled:], started[settled:], atol=1e-5)
  fed_only = run(first, repin=False)
  assert np.abs(fed_only[settled:] - started[settled:]).max() > 1e-4


# Five sound classes' names in the small config's 64 ids ("no sound" has none).
SOUND_NAMES = ((), (30, 31), (32,), (33, 34, 35), (36,))


@pytest.fixture(scope="module")
def sound_model():
  model = AudioInteractionModel(model_testing.small_config(**{"model.sound_event_classes": 5}))
  params = model_testing.perturbed(model.init(jax.random.key(2)), 5, scale=0.3)
  return model, params


def test_heard_sounds_keep_each_class_decayed_max_in_every_path(sound_model):
  model, params = sound_model
  decay = 0.8
  engine = Engine(model, SamplingConfig(name_bias=1.0, name_decay=decay), SOUND_NAMES)
  rng = np.random.default_rng(3)
  chunks = (0.3 * rng.normal(size=(4, 3, model.config.chunk_samples))).astype(np.float32)
  state = engine.init_state(params, [[20, 21], [22], [23]])
  expected = np.zeros((3, 5))
  for chunk in chunks:
    state, _ = engine.perceive(params, state, chunk)
    heard_now = np.array(state.sound_events)
    heard_now[:, 0] = 0.0  # "no sound" is never a name to say
    expected = np.maximum(decay * expected, heard_now)
    np.testing.assert_allclose(state.heard_sounds, expected, rtol=1e-6, atol=1e-7)
  assert expected[:, 1:].min() > 0
  # Served rows: a row held back keeps what it heard, whether the step runs the whole
  # batch (2 of 3 rows advance) or gathers the rows that advance (1 of 3); a reset row
  # forgets it.
  for advance in ([True, True, False], [False, True, False]):
    held = np.array(state.heard_sounds)
    state, _ = engine.perceive_rows(params, state, 3 * chunks[0], np.array(advance))
    for row, moved in enumerate(advance):
      assert np.array_equal(state.heard_sounds[row], held[row]) != moved, (advance, row)
  state = engine.reset_rows(params, state, {0: [20]})
  assert not np.any(state.heard_sounds[0]) and np.array_equal(state.heard_sounds[2], held[2])


def test_the_name_bias_makes_a_reply_naming_a_sound_say_the_heard_one(sound_model):
  model, params = sound_model
  vocab = model.config.decoder.vocab_size
  heard = np.zeros((1, 5), np.float32)
  heard[0, 3], heard[0, 2], heard[0, 1] = 0.9, 0.2, 0.1
  plain = Engine(model)

  def first_token(engine, name_mass):
    """The first reply token when the decoder's own next-token distribution puts
    `name_mass` on token 30 (class 1's name) and the rest on token 50 (no name's)."""
    logits = np.full((1, vocab), -30.0, np.float32)
    logits[0, 30], logits[0, 50] = np.log(name_mass), np.log(1 - name_mass)
    state = plain.init_state(params, [[20, 21]]).replace(
        next_logits=jnp.asarray(logits), heard_sounds=jnp.asarray(heard))
    return int(engine.speak(params, state, np.ones(1, bool), n=1)[1][0, 0])

  biased = Engine(model, SamplingConfig(name_bias=100.0, name_gate=0.2), SOUND_NAMES)
  # The decoder is naming a sound (class 1's, 30 % likely): the head heard class 3 most.
  assert first_token(biased, 0.3) in SOUND_NAMES[3]
  assert first_token(plain, 0.3) == 50  # without the bias the heard sounds change nothing
  # Where the decoder is not naming a sound (10 % < the gate), its words stand, however
  # strong the bias.
  assert first_token(biased, 0.1) == 50
  with pytest.raises(ValueError, match="the name tokens of each of its classes"):
    Engine(model, SamplingConfig(name_bias=1.0))
  with pytest.raises(ValueError, match="the model has 0 classes"):
    Engine(AudioInteractionModel(model_testing.small_config()), SamplingConfig(name_bias=1.0),
           SOUND_NAMES)


def test_with_name_once_a_reply_says_each_name_token_biased_once(sound_model):
  model, params = sound_model
  vocab = model.config.decoder.vocab_size
  heard = np.zeros((1, 5), np.float32)
  heard[0, 3] = 0.9
  plain = Engine(model)

  def speak_one(engine, said=(), top=50):
    """The first reply token and the state after it, when the decoder names a sound
    (30 % on class 1's token 30) and the reply has said `said` already."""
    logits = np.full((1, vocab), -30.0, np.float32)
    logits[0, 30], logits[0, top] = np.log(0.3), np.log(0.7)
    reply_said = np.zeros((1, vocab), bool)
    reply_said[0, list(said)] = True
    state = plain.init_state(params, [[20, 21]]).replace(
        next_logits=jnp.asarray(logits), heard_sounds=jnp.asarray(heard),
        reply_said=jnp.asarray(reply_said))
    state, tokens, _ = engine.speak(params, state, np.ones(1, bool), n=1)
    return int(tokens[0, 0]), np.asarray(state.reply_said[0])

  once = Engine(model, SamplingConfig(name_bias=100.0, name_once=True), SOUND_NAMES)
  held = Engine(model, SamplingConfig(name_bias=100.0), SOUND_NAMES)
  # Class 3's name is 33 34 35: said 33 and 34, only 35 is still biased.
  assert speak_one(once, said=(33, 34))[0] == 35
  assert speak_one(held, said=(33, 34))[0] == 33  # held on, the first of them again
  assert speak_one(once, said=(33, 34, 35))[0] == 50  # the whole name said: the decoder's word
  token, said = speak_one(once)
  assert said[token] and said.sum() == 1  # what the reply says is remembered ...
  # (the whole name said, nothing biased: the decoder ends the reply)
  token, said = speak_one(once, said=(33, 34, 35), top=sf.EOR_ID)
  assert token == sf.EOR_ID and not said.any()  # ... until it ends


def test_a_whole_name_bias_says_the_heard_name_to_its_end(sound_model):
  model, params = sound_model
  vocab = model.config.decoder.vocab_size
  heard = np.zeros((1, 5), np.float32)
  heard[0, 3] = 0.9
  logits = np.full((1, vocab), -30.0, np.float32)
  logits[0, 30], logits[0, 50] = np.log(0.3), np.log(0.7)  # naming (class 1's first token)
  plain = Engine(model)

  def naming_state():  # (speak donates the state it is given)
    return plain.init_state(params, [[20, 21]]).replace(
        next_logits=jnp.asarray(logits), heard_sounds=jnp.asarray(heard))

  whole = Engine(model, SamplingConfig(name_bias=100.0, name_whole=True), SOUND_NAMES)
  after, tokens, _ = whole.speak(params, naming_state(), np.ones(1, bool), n=3)
  # Class 3's name (33 34 35) from its first token to its end, whatever the decoder's
  # own next tokens were, and forgotten once said.
  assert tokens[0].tolist() == [33, 34, 35]
  assert not np.asarray(after.name_progress).any()
  midway, tokens, _ = whole.speak(params, naming_state(), np.ones(1, bool), n=2)
  assert tokens[0].tolist() == [33, 34] and np.asarray(midway.name_progress)[0, 3] == 2
  assert int(whole.speak(params, midway, np.ones(1, bool), n=1)[1][0, 0]) == 35
  midway, _, _ = whole.speak(params, naming_state(), np.ones(1, bool), n=2)
  assert not np.asarray(whole.reset_rows(params, midway, {0: [20]}).name_progress).any()
  # A reply that ends midway through a name (an unheard one: a nudge, which <eor> beats)
  # leaves no name under way for the next reply.
  ending = np.full((1, vocab), -30.0, np.float32)
  ending[0, sf.EOR_ID] = 0.0
  progress = np.zeros((1, 5), np.int32)
  progress[0, 3] = 1
  state = plain.init_state(params, [[20, 21]]).replace(next_logits=jnp.asarray(ending),
                                                       name_progress=jnp.asarray(progress))
  after, tokens, _ = whole.speak(params, state, np.ones(1, bool), n=1)
  assert int(tokens[0, 0]) == sf.EOR_ID and not np.asarray(after.name_progress).any()


def test_an_offline_answer_hears_its_clip(sound_model):
  model, params = sound_model
  engine = Engine(model, SamplingConfig(name_bias=1.0), SOUND_NAMES)
  chunk = (0.3 * np.random.default_rng(4).normal(size=(1, model.config.chunk_samples))
           ).astype(np.float32)
  state = engine._feed_audio(params, engine.empty_state(1), jnp.asarray(chunk))  # pylint: disable=protected-access
  _, logits = model.feed_audio(params, model.init_state(1), jnp.asarray(chunk))
  expected = np.array(jax.nn.softmax(logits, axis=-1))
  expected[:, 0] = 0.0
  np.testing.assert_allclose(state.heard_sounds, expected, rtol=1e-5, atol=1e-6)


def test_an_infer_block_with_a_name_bias_builds_an_engine_with_the_tokenizers_names(sound_model):
  from audio_interaction import config_lib
  from audio_interaction.corpus import worlds
  from audio_interaction.data.tokenizer import ByteTokenizer
  config = model_testing.small_config(**{"model.sound_event_classes": 27,
                                         "model.decoder.vocab_size": 272,
                                         "infer.sound_name_bias": 4.0})
  model = AudioInteractionModel(config)
  engine = Engine.from_infer(model, config.infer, ByteTokenizer())
  assert engine.sampling.name_bias == 4.0
  bias = engine._name_bias  # pylint: disable=protected-access
  tokens = worlds.sound_name_tokens(ByteTokenizer())
  assert {int(t) for t in np.flatnonzero(bias.matrix[1])} == set(tokens[1])
  assert not np.asarray(bias.matrix[0]).any() and not bias.whole
  assert Engine.from_infer(model, model_testing.small_config().infer, ByteTokenizer())._name_bias is None  # pylint: disable=protected-access
  # Whole names are the phrase a reply says, articles inside it kept.
  config.infer.sound_name_whole = True
  whole = Engine.from_infer(model, config.infer, ByteTokenizer())._name_bias  # pylint: disable=protected-access
  keyboard = worlds.SOUND_EVENT_LABELS.index("keyboard")
  assert whole.whole and ByteTokenizer().decode(
      [int(t) for t in whole.sequences[keyboard] if t >= 0]) == "typing on a keyboard"
  with pytest.raises(config_lib.ConfigError, match="sound_name_bias=4.0 biases replies"):
    model_testing.small_config(**{"infer.sound_name_bias": 4.0})
