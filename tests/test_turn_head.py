"""The turn-end head: its examples laid out by hand, a fit that folds back into the
model's own head, a bundle in and a bundle out, and the hybrid policy reading the head
in the stepper (and the eval's operating point) instead of P(SPEAK)."""

import dataclasses
import json

import jax
import ml_collections
import numpy as np
import pytest

from audio_interaction import config_lib
from audio_interaction.apps import cli
from audio_interaction.data.tokenizer import ByteTokenizer
from audio_interaction.export import portable
from audio_interaction.infer.endpointing import SilenceTimer
from audio_interaction.infer.engine import Engine
from audio_interaction.infer.policies import HybridPolicy, policy_from_config, reads_turn_end
from audio_interaction.infer.run_stream import StreamStepper, run_policies
from audio_interaction.model.model import TURN_ENDED, AudioInteractionModel
from audio_interaction.corpus import worlds
from audio_interaction.corpus.sounds import SoundBank
from audio_interaction.train import sound_head, turn_head
from audio_interaction.model.clip_encoder import ChunkEncoder
import model_testing

RATE = 16000


@dataclasses.dataclass(frozen=True)
class _Line:
  """What `line_examples` reads of a `real_speech.RecordedLine`."""

  voice: str
  pause_cut: int | None
  samples: np.ndarray = dataclasses.field(repr=False, compare=False)

  def audio(self) -> np.ndarray:
    return self.samples


def _tone(seconds: float, hz: float, amplitude: float = 0.3) -> np.ndarray:
  t = np.arange(int(seconds * RATE)) / RATE
  return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def _lines(count: int, voices: int) -> list[_Line]:
  """A 'sentence' whose first part is a high tone and whose end is a low one: what
  comes just before the silence tells a cut line (high) from a whole one (low)."""
  return [_Line(f"v{i % voices}", int(0.6 * RATE),
                np.concatenate([_tone(0.6, 1500 + 40 * (i % 5)), _tone(0.6, 200 + 10 * (i % 7))]))
          for i in range(count)]


def _bundle(tmp_path, **overrides):
  tokenizer = ByteTokenizer()
  config = model_testing.small_config(**{"model.decoder.vocab_size": tokenizer.vocab_size,
                                         **overrides})
  directory = tmp_path / "bundle"
  portable.save_bundle(directory, AudioInteractionModel(config).init(jax.random.key(0)),
                       tokenizer, config, metadata={"trained": "for a test"})
  return directory


def test_examples_are_the_chunks_right_after_the_speech_cut_and_whole():
  model = AudioInteractionModel(model_testing.small_config())
  encode = ChunkEncoder(model, model.init(jax.random.key(1)))
  lines = _lines(3, voices=3)
  examples = turn_head.line_examples(encode, lines, chunks=2, seed=5, effects_share=0.0,
                                     progress=False)
  assert examples.targets.tolist() == [turn_head.TURN_GOES_ON] * 2 + [TURN_ENDED] * 2 + (
      [turn_head.TURN_GOES_ON] * 2 + [TURN_ENDED] * 2) * 2
  # By hand, for the first line: the same lead-in draw, the stream encoded, the first
  # two chunks wholly after the speech.
  rng = np.random.default_rng(5)
  size = encode.chunk_samples
  for k, speech in enumerate((lines[0].samples[:lines[0].pause_cut], lines[0].samples)):
    lead = int(rng.uniform(0.2, 1.0) * RATE)
    rng.uniform()  # the effects draw (never taken at share 0)
    stream = np.concatenate([np.zeros(lead, np.float32), speech,
                             np.zeros(int(turn_head.SILENCE_AFTER_SECONDS * RATE), np.float32)])
    first = -(-(lead + len(speech)) // size)
    np.testing.assert_allclose(examples.features[2 * k:2 * k + 2],
                               encode(stream)[first:first + 2], atol=1e-5)
  # With speech chunks: after each whole line's ended chunks, one chunk from inside its
  # words as a turn that goes on; the other examples are drawn exactly as before.
  more = turn_head.line_examples(encode, lines, chunks=2, speech_chunks=1, seed=5,
                                 effects_share=0.0, progress=False)
  per_line = [turn_head.TURN_GOES_ON] * 2 + [TURN_ENDED] * 2 + [turn_head.TURN_GOES_ON]
  assert more.targets.tolist() == per_line * 3
  keep = np.ones(len(more.targets), bool)
  keep[4::5] = False
  np.testing.assert_array_equal(more.features[keep], examples.features)
  rng = np.random.default_rng(5)
  for line, inside_feature in zip(lines, more.features[4::5]):
    for speech in (line.samples[:line.pause_cut], line.samples):
      lead = int(rng.uniform(0.2, 1.0) * RATE)
      rng.uniform()
    stream = np.concatenate([np.zeros(lead, np.float32), speech,
                             np.zeros(int(turn_head.SILENCE_AFTER_SECONDS * RATE), np.float32)])
    encoded = encode(stream)
    inside = range(-(-lead // size), (lead + len(speech)) // size)
    assert min(np.abs(encoded[k] - inside_feature).max() for k in inside) < 1e-5
  with pytest.raises(ValueError, match="no pause to cut at"):
    turn_head.line_examples(encode, [_Line("v", None, lines[0].samples)], progress=False)


def test_second_parts_are_short_turns_that_ended():
  model = AudioInteractionModel(model_testing.small_config())
  encode = ChunkEncoder(model, model.init(jax.random.key(1)))
  lines = _lines(2, voices=2)
  examples = turn_head.line_examples(encode, lines, chunks=2, second_parts=True, seed=5,
                                     effects_share=0.0, progress=False)
  per_line = [turn_head.TURN_GOES_ON] * 2 + [TURN_ENDED] * 4
  assert examples.targets.tolist() == per_line * 2
  # The third turn of each line is its part after the pause, alone, then silence.
  rng = np.random.default_rng(5)
  size = encode.chunk_samples
  for index, line in enumerate(lines):
    parts = (line.samples[:line.pause_cut], line.samples, line.samples[line.pause_cut:])
    for k, speech in enumerate(parts):
      lead = int(rng.uniform(0.2, 1.0) * RATE)
      rng.uniform()
      if k < 2:
        continue
      stream = np.concatenate([np.zeros(lead, np.float32), speech,
                               np.zeros(int(turn_head.SILENCE_AFTER_SECONDS * RATE), np.float32)])
      first = -(-(lead + len(speech)) // size)
      row = 6 * index + 4
      np.testing.assert_allclose(examples.features[row:row + 2],
                                 encode(stream)[first:first + 2], atol=1e-5)


def test_sounds_then_silence_are_no_turn_that_ended():
  model = AudioInteractionModel(model_testing.small_config())
  encode = ChunkEncoder(model, model.init(jax.random.key(1)))
  bank = SoundBank(use_recordings=False)
  labels = [l for l in bank.labels() if l in worlds.SOUND_EVENT_LABELS]
  examples = turn_head.sound_examples(encode, bank, 1, chunks=2, seed=3, effects_share=0.0,
                                      progress=False)
  assert examples.targets.tolist() == [turn_head.TURN_GOES_ON] * (2 * len(labels))
  # By hand, the first class's clip: the same draws, the two chunks after the sound.
  rng = np.random.default_rng(3)
  clip = bank.sample(labels[0], rng).audio[:int(sound_head.MAX_CLIP_SECONDS * RATE)]
  lead = int(rng.uniform(0.2, 1.0) * RATE)
  stream = np.concatenate([np.zeros(lead, np.float32), np.asarray(clip, np.float32),
                           np.zeros(int(turn_head.SILENCE_AFTER_SECONDS * RATE), np.float32)])
  first = -(-(lead + len(clip)) // encode.chunk_samples)
  np.testing.assert_allclose(examples.features[:2], encode(stream)[first:first + 2], atol=1e-5)
  assert len(turn_head.sound_examples(encode, bank, 0, progress=False).targets) == 0


def test_roc_auc_by_hand():
  targets = np.array([0, 0, 1, 1])
  assert turn_head.roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), targets) == pytest.approx(0.75)
  assert turn_head.roc_auc(np.array([0.1, 0.2, 0.3, 0.4]), targets) == 1.0
  assert np.isnan(turn_head.roc_auc(np.array([0.1, 0.2]), np.array([1, 1])))


def test_fit_bundle_adds_the_head_and_switches_the_hybrid_to_it(tmp_path):
  source = _bundle(tmp_path)
  out = tmp_path / "fitted"
  summary = turn_head.fit_bundle_turn_head(source, out, train_audio_root="unused",
                                           lines=_lines(40, voices=10), max_lines=None,
                                           steps=100, seed=0, progress=False)
  assert summary["head_added"] and summary["lines"] == 32 and summary["held_out_lines"] == 8
  assert summary["first_positions"] == "random"  # the default: a head for anywhere in a stream
  # The low tone before the silence is easy to tell from the high one, on voices the
  # fit never heard too.
  assert summary["train_auc"] > 0.95 and summary["held_out_auc"] > 0.9
  config, after, _ = portable.load_bundle(out)
  assert config.model.turn_end_head and config.infer.hybrid_signal == "turn_end"
  _, before, _ = portable.load_bundle(source)
  assert model_testing.added_parameters(before, after) == [
      "['params']['turn_end_head']['bias']", "['params']['turn_end_head']['kernel']"]
  metadata = json.loads((out / "metadata.json").read_text())
  assert metadata["trained"] == "for a test"
  assert metadata["turn_end_head_fit"]["held_out_auc"] == summary["held_out_auc"]
  # The model's own head, streamed, says what the fit says: a whole line ended, a cut
  # one goes on (the chunk after each line's speech).
  model = AudioInteractionModel(config)
  engine = Engine(model)
  size = model.config.chunk_samples
  for target, speech in ((turn_head.TURN_GOES_ON, _lines(1, 1)[0].samples[:int(0.6 * RATE)]),
                         (TURN_ENDED, _lines(1, 1)[0].samples)):
    audio = np.concatenate([np.zeros(size * 3, np.float32), speech,
                            np.zeros(size * 4, np.float32)])
    (trace,) = run_policies(engine, after, audio, [], [HybridPolicy(SilenceTimer(
        0.7, vad="energy", chunk_seconds=model.config.chunk_seconds), signal="turn_end")])
    after_speech = -(-(3 * size + len(speech)) // size)
    p_ended = trace.chunks[after_speech].turn_end_probability
    assert (p_ended > 0.5) == (target == TURN_ENDED), (target, p_ended)


def test_the_fit_hears_the_share_of_lines_through_the_effects_it_is_told(tmp_path):
  source = _bundle(tmp_path)
  options = dict(train_audio_root="unused", lines=_lines(20, voices=5), max_lines=None,
                 steps=50, seed=0, progress=False)
  plain = turn_head.fit_bundle_turn_head(source, tmp_path / "plain", effects_share=0.0, **options)
  heard = turn_head.fit_bundle_turn_head(source, tmp_path / "heard", effects_share=1.0, **options)
  assert plain["effects_share"] == 0.0 and heard["effects_share"] == 1.0
  assert plain["examples"] == heard["examples"] and plain["loss"] != heard["loss"]
  metadata = json.loads((tmp_path / "heard" / "metadata.json").read_text())
  assert metadata["turn_end_head_fit"]["effects_share"] == 1.0
  with pytest.raises(ValueError, match="effects_share must be in"):
    turn_head.fit_bundle_turn_head(source, tmp_path / "bad", effects_share=1.5, **options)


def _turn_end_model(logit: float):
  """A small model whose turn-end head says P(ended) = sigmoid(logit) at every chunk."""
  model = AudioInteractionModel(model_testing.small_config(**{"model.turn_end_head": True}))
  params = model.init(jax.random.key(2))
  head = params["params"]["turn_end_head"]
  bias = np.zeros(2, np.float32)
  bias[TURN_ENDED] = logit
  new = {"kernel": np.zeros(np.shape(head["kernel"]), np.float32), "bias": bias}
  return model, {"params": dict(params["params"], turn_end_head=new)}


@pytest.mark.parametrize("logit,signal,fires_at", [
    (20.0, "turn_end", 0.2),    # the head says ended: speak after the short silence
    (-20.0, "turn_end", 1.0),   # the head says it goes on: the timer's backstop
    (20.0, "decision", 1.0)])   # P(SPEAK) of a random decoder is below 0.99
def test_the_hybrid_reads_the_turn_end_head_when_told(logit, signal, fires_at):
  model, params = _turn_end_model(logit)
  chunk_s = model.config.chunk_seconds
  size = model.config.chunk_samples
  voice_end = 5 * size
  audio = np.concatenate([np.zeros(size, np.float32), _tone(4 * chunk_s, 300),
                          np.zeros(12 * size, np.float32)])
  policy = HybridPolicy(SilenceTimer(1.0, vad="energy", chunk_seconds=chunk_s),
                        threshold=0.99, min_silence_seconds=0.2, signal=signal)
  assert reads_turn_end(policy) == (signal == "turn_end")
  (trace,) = run_policies(Engine(model), params, audio, [], [policy], max_reply_tokens=2)
  first = next(c for c in trace.chunks if c.spoke)
  silence = first.end - voice_end / RATE
  assert fires_at <= silence + 1e-6 < fires_at + chunk_s, (signal, logit, silence)
  expected = 1 / (1 + np.exp(-logit))
  assert all(c.turn_end_probability == pytest.approx(expected, abs=1e-6)
             for c in trace.chunks)


def _decisions(policy: HybridPolicy, chunks: list[np.ndarray], probability: float,
               reply_chunks: int) -> list[bool]:
  """Drives `policy` as the stepper does: a reply, once started, lasts `reply_chunks`."""
  spoke, left = [], 0
  for index, chunk in enumerate(chunks):
    replying = left > 0
    speaks = policy.decide(index, chunk, probability, replying)
    left = (left - 1 if replying else reply_chunks) if speaks else 0
    spoke.append(speaks and not replying)  # a reply started at this chunk
  return spoke


@pytest.mark.parametrize("signal,starts", [
    # One reply per turn: the head still says "ended" after the reply, the timer is armed.
    ("turn_end", [5, 25]),
    # P(SPEAK): the model's call, again each time a reply ends in the silence.
    ("decision", [5, 8, 11, 14, 17, 25, 28, 31, 34, 37])])
def test_the_turn_end_hybrid_answers_a_turn_once(signal, starts):
  chunk_s = 0.16
  size = int(chunk_s * RATE)
  voice = lambda n: list(_tone(n * chunk_s, 300).reshape(n, size))
  quiet = lambda n: [np.zeros(size, np.float32)] * n
  policy = HybridPolicy(SilenceTimer(1.0, vad="energy", chunk_seconds=chunk_s),
                        threshold=0.9, min_silence_seconds=0.1, signal=signal)
  # A turn, 3 s of silence (well past the 1 s backstop), a second turn, silence.
  chunks = voice(5) + quiet(15) + voice(5) + quiet(15)
  spoke = _decisions(policy, chunks, probability=1.0, reply_chunks=2)
  assert [i for i, s in enumerate(spoke) if s] == starts


def test_a_served_row_reads_its_own_turn_end_and_held_rows_keep_theirs():
  # Continuous batching (`step_rows`): an advanced row's P(turn ended) is what the same
  # stream gives alone; a row held back keeps its last one.
  model = AudioInteractionModel(model_testing.small_config(**{"model.turn_end_head": True}))
  params = model_testing.perturbed(model.init(jax.random.key(4)), seed=4, scale=0.5)
  size = model.config.chunk_samples
  rng = np.random.default_rng(0)
  audio = (0.2 * rng.normal(size=(2, 3 * size))).astype(np.float32)
  timer = lambda: SilenceTimer(0.7, vad="energy", chunk_seconds=model.config.chunk_seconds)
  engine = Engine(model)
  alone = [run_policies(engine, params, audio[r], [], [HybridPolicy(timer(), signal="turn_end")])[0]
           for r in range(2)]
  stepper = StreamStepper(engine, params, [[], []],
                          [HybridPolicy(timer(), signal="turn_end") for _ in range(2)])
  first = stepper.step_rows(audio[:, :size], [True, True], [0, 0])
  held = stepper.step_rows(audio[:, size:2 * size], [True, False], [1, 1])
  assert held[1] is None
  np.testing.assert_allclose(held[0].turn_end_probability,
                             alone[0].chunks[1].turn_end_probability, atol=1e-5)
  np.testing.assert_allclose(np.asarray(stepper.state.turn_end)[1, TURN_ENDED],
                             first[1].turn_end_probability, atol=1e-6)
  later = stepper.step_rows(audio[:, size:2 * size], [False, True], [2, 1])
  np.testing.assert_allclose(later[1].turn_end_probability,
                             alone[1].chunks[1].turn_end_probability, atol=1e-5)
  assert len({round(c.turn_end_probability, 4) for c in alone[0].chunks}) > 1  # it moves


def test_a_turn_end_policy_needs_the_head():
  model = AudioInteractionModel(model_testing.small_config())
  params = model.init(jax.random.key(0))
  policy = HybridPolicy(SilenceTimer(0.7, vad="energy", chunk_seconds=model.config.chunk_seconds),
                        signal="turn_end")
  with pytest.raises(ValueError, match="fit-turn-head"):
    run_policies(Engine(model), params, np.zeros(model.config.chunk_samples, np.float32), [],
                 [policy])
  (trace,) = run_policies(Engine(model), params, np.zeros(model.config.chunk_samples,
                                                          np.float32), [],
                          [HybridPolicy(policy.timer)])
  assert trace.chunks[0].turn_end_probability is None
  with pytest.raises(ValueError, match="signal must be one of"):
    HybridPolicy(policy.timer, signal="pitch")


def test_the_infer_block_names_the_signal_and_needs_the_head():
  infer = ml_collections.ConfigDict({"policy": "hybrid", "threshold": 0.9, "vad": "energy",
                                     "silence_seconds": 1.5, "min_silence_seconds": 0.2,
                                     "hybrid_signal": "turn_end"})
  policy = policy_from_config(infer, chunk_seconds=0.32)
  assert isinstance(policy, HybridPolicy) and reads_turn_end(policy)
  config = config_lib.base_config()
  config.infer.policy, config.infer.hybrid_signal = "hybrid", "turn_end"
  with pytest.raises(config_lib.ConfigError, match="turn-end head the model does not have"):
    config_lib.validate(config)
  config.model.turn_end_head = True
  config_lib.validate(config)
  config.infer.hybrid_signal = "pitch"
  with pytest.raises(config_lib.ConfigError, match="hybrid_signal"):
    config_lib.validate(config)


def test_fit_turn_head_cli_names_what_is_wrong(tmp_path, capsys):
  source = _bundle(tmp_path)
  argv = ["fit-turn-head", "--bundle", str(source), "--out", str(tmp_path / "x")]
  assert cli.main(argv + ["--train-audio", str(tmp_path / "nowhere")]) != 0
  assert "fetch-train-audio" in capsys.readouterr().err
  (tmp_path / "audio").mkdir()
  assert cli.main(argv + ["--train-audio", str(tmp_path / "audio"), "--sources", "klingon"]) != 0
  assert "--sources klingon" in capsys.readouterr().err
  assert cli.main(argv + ["--train-audio", str(tmp_path / "audio"), "--chunks", "0"]) != 0
  assert "--chunks 0" in capsys.readouterr().err
  assert cli.main(argv + ["--train-audio", str(tmp_path / "audio"), "--effects-share", "2"]) != 0
  assert "--effects-share 2" in capsys.readouterr().err
  assert not (tmp_path / "x").exists()  # nothing written
