"""Prosody as a turn-end signal: the features against tones whose pitch and level are
known, chunking that cannot change them, the 30-number model in a bundle's infer block,
and the hybrid policy it drives (prosody says when, the model's P(SPEAK) whether)."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from audio_interaction import config_lib
from audio_interaction.apps import cli
from audio_interaction.audio import prosody
from audio_interaction.corpus import effects
from audio_interaction.audio.prosody import FEATURE_NAMES, NUM_FEATURES, ProsodyTracker
from audio_interaction.data.tokenizer import ByteTokenizer
from audio_interaction.eval import suites
from audio_interaction.export import portable
from audio_interaction.infer.endpointing import SilenceTimer
from audio_interaction.infer.engine import Engine
from audio_interaction.infer.policies import HybridPolicy, ProsodyTurnEnd, policy_from_config
from audio_interaction.infer.run_stream import run_policies
from audio_interaction.model.model import TURN_ENDED, AudioInteractionModel
from audio_interaction.train import turn_head
import model_testing

RATE = 16000
CHUNK = 2560  # 160 ms


def _glide(seconds: float, start_hz: float, semitones: float, amplitude: float = 0.3,
           fade_db: float = 0.0) -> np.ndarray:
  """A tone gliding `semitones` from `start_hz`, its level falling `fade_db` over it."""
  n = int(seconds * RATE)
  hz = start_hz * 2 ** (np.linspace(0, semitones, n) / 12)
  gain = amplitude * 10 ** (-np.linspace(0, fade_db, n) / 20)
  return (gain * np.sin(2 * np.pi * np.cumsum(hz) / RATE)).astype(np.float32)


def _feature(features: np.ndarray, name: str) -> float:
  return float(features[FEATURE_NAMES.index(name)])


def test_pitch_and_level_are_read_relative_to_the_speaker_after_the_speech():
  # 1.5 s held at 200 Hz, then 0.6 s falling 6 semitones (10 st/s) and 12 dB: a
  # finished turn's fall. Then 0.48 s of silence.
  held = _glide(1.5, 200.0, 0.0)
  fall = _glide(0.6, 200.0, -6.0, fade_db=12.0)
  audio = np.concatenate([held, fall, np.zeros(3 * CHUNK, np.float32)])
  after = prosody.prosody_features(audio, CHUNK)[-1]
  assert _feature(after, "pitch slope, last 0.3 s") == pytest.approx(-10.0, abs=1.5)
  assert _feature(after, "pitch slope, last 0.6 s") == pytest.approx(-10.0, abs=1.5)
  # The last 0.1 s sits ~5.5 semitones under the held pitch (the voiced median).
  assert _feature(after, "pitch of the last 0.1 s") == pytest.approx(-5.5, abs=1.0)
  assert _feature(after, "level slope, last 0.3 s") == pytest.approx(-20.0, abs=6.0)
  assert _feature(after, "level of the last 0.1 s") < -8.0
  assert _feature(after, "silence since the last voiced frame") == pytest.approx(0.48, abs=0.05)
  assert _feature(after, "length of the last voiced run") == pytest.approx(2.1, abs=0.1)
  assert _feature(after, "no voiced frame yet") == 0.0
  # The same melody an octave higher ends the same way (relative to its own median).
  higher = prosody.prosody_features(
      np.concatenate([_glide(1.5, 400.0 * 0.9, 0.0), _glide(0.6, 400.0 * 0.9, -6.0, fade_db=12.0),
                      np.zeros(3 * CHUNK, np.float32)]), CHUNK)[-1]
  for name, within in (("pitch of the last 0.1 s", 1.0), ("pitch slope, last 0.3 s", 1.0),
                       ("level slope, last 0.3 s", 5.0)):  # the last frames straddle the end
    assert _feature(higher, name) == pytest.approx(_feature(after, name), abs=within), name
  # A rise instead of the fall: the slope's sign turns.
  rise = prosody.prosody_features(np.concatenate([held, _glide(0.6, 200.0, 4.0),
                                                  np.zeros(CHUNK, np.float32)]), CHUNK)[-1]
  assert _feature(rise, "pitch slope, last 0.3 s") > 4.0


def test_silence_and_noise_have_no_voiced_frame():
  features = prosody.prosody_features(np.zeros(5 * CHUNK, np.float32), CHUNK)
  assert features.shape == (5, NUM_FEATURES)
  assert (features[:, -1] == 1.0).all() and (features[:, :-1] == 0.0).all()
  # A quiet room (white to brown noise) is no voice however long it lasts: the frames
  # are not periodic, though the loudest of the history is the room itself.
  rng = np.random.default_rng(0)
  for exponent in (0.0, 1.0, 2.0):
    room = effects.set_level(effects.colored_noise(rng, 20 * CHUNK, exponent), -50.0,
                             active_only=False).astype(np.float32)
    assert (prosody.prosody_features(room, CHUNK)[:, -1] == 1.0).all(), exponent
  # The voice after it is heard, and its silence timed from its own end.
  voice = np.concatenate([room, room[:int(0.8 * RATE)] + _glide(0.8, 200.0, 0.0),
                          room[:2 * CHUNK]])
  after = prosody.prosody_features(voice, CHUNK)[-1]
  assert _feature(after, "no voiced frame yet") == 0.0
  assert _feature(after, "silence since the last voiced frame") == pytest.approx(0.32, abs=0.05)


def test_chunk_by_chunk_equals_any_other_chunking_and_never_reads_ahead():
  rng = np.random.default_rng(0)
  audio = np.concatenate([_glide(0.9, 180.0, 3.0), 0.001 * rng.normal(size=4000),
                          _glide(0.7, 220.0, -5.0, fade_db=6.0), np.zeros(6000)]).astype(np.float32)
  by_chunk = prosody.prosody_features(audio, CHUNK)
  # Pushed in pieces of uneven sizes (none a whole frame's hops), read at every chunk
  # boundary: the same features.
  tracker, read, start = ProsodyTracker(), [], 0
  sizes = iter(np.random.default_rng(1).integers(1, 900, size=10_000))
  for end in list(range(CHUNK, len(audio), CHUNK)) + [len(audio)]:
    while start < end:
      size = min(int(next(sizes)), end - start)
      features = tracker.push(audio[start:start + size])
      start += size
    read.append(features)
  np.testing.assert_allclose(np.stack(read), by_chunk, atol=1e-5)
  # What comes later changes nothing before it.
  head = prosody.prosody_features(audio[:7 * CHUNK], CHUNK)
  np.testing.assert_allclose(head, by_chunk[:7], atol=1e-6)


def test_the_history_is_bounded():
  tracker = ProsodyTracker(history_seconds=1.0)
  for _ in range(20):
    tracker.push(_glide(0.16, 200.0, 0.0))
  assert tracker.frames_held == 100


def test_a_faint_voice_under_a_loud_one_is_not_voiced_until_the_loud_one_is_history():
  # 0.48 s of a loud voice, then a periodic hum 40 dB under it (in the pitch range): within
  # `VOICED_BELOW_PEAK_DB` of nothing the history holds, it is no voice while the loud
  # one is in the history (1 s here), and a voice once it has left.
  tracker = ProsodyTracker(history_seconds=1.0)
  loud = _glide(3 * CHUNK / RATE, 200.0, 0.0, amplitude=0.3)
  hum = _glide(20 * CHUNK / RATE, 150.0, 0.0, amplitude=0.003)
  for c in range(3):
    tracker.push(loud[c * CHUNK:(c + 1) * CHUNK])
  silences = [_feature(tracker.push(hum[c * CHUNK:(c + 1) * CHUNK]),
                       "silence since the last voiced frame") for c in range(20)]
  assert silences[2] == pytest.approx(3 * CHUNK / RATE, abs=0.05)  # the hum: not a voice
  assert silences[-1] < 0.05  # the loud voice forgotten: the hum is one now


def _model_reading_silence(weight: float = 4.0, bias: float = -2.0) -> ProsodyTurnEnd:
  """P(ended) = sigmoid(weight * seconds of silence + bias) once there was voice."""
  kernel = np.zeros((NUM_FEATURES, 2))
  kernel[FEATURE_NAMES.index("silence since the last voiced frame"), TURN_ENDED] = weight
  biases = np.zeros(2)
  biases[TURN_ENDED] = bias
  return ProsodyTurnEnd(kernel, biases)


def test_the_prosody_model_is_a_logistic_read_of_the_features():
  model = _model_reading_silence()
  model.start()
  audio = np.concatenate([_glide(0.8, 200.0, 0.0), np.zeros(4 * CHUNK, np.float32)])
  audio = np.pad(audio, (0, -len(audio) % CHUNK))
  features = prosody.prosody_features(audio, CHUNK)
  for chunk, row in zip(audio.reshape(-1, CHUNK), features):
    silence = _feature(row, "silence since the last voiced frame")
    assert model.push(chunk) == pytest.approx(1 / (1 + np.exp(-(4.0 * silence - 2.0))))
  with pytest.raises(ValueError, match=r"kernel \[14, 2\]"):
    ProsodyTurnEnd(np.zeros((3, 2)), np.zeros(2))
  block = model.to_block()
  assert json.loads(json.dumps(block)) == block
  again = ProsodyTurnEnd.from_block(block)
  np.testing.assert_array_equal(again.kernel, model.kernel)
  with pytest.raises(ValueError, match="fit-turn-head --features prosody"):
    ProsodyTurnEnd.from_block({})


def _starts(policy: HybridPolicy, chunks, speak_probability) -> list[int]:
  """The chunks where `policy` starts a reply (a reply lasts 2 chunks)."""
  policy.start()
  starts, left = [], 0
  for index, chunk in enumerate(chunks):
    replying = left > 0
    speaks = policy.decide(index, chunk, speak_probability(index), replying)
    if speaks and not replying:
      starts.append(index)
      left = 2
    elif replying:
      left = left - 1 if speaks else 0
  return starts


@pytest.mark.parametrize("gate,speak,starts", [
    # No gate: prosody says ended 1.12 s into the silence (chunk 11: sigmoid(4 * 1.12 - 2)
    # = 0.92 >= 0.9; chunk 10, 0.96 s: 0.86), before the 1.5 s backstop (chunk 14).
    (0.0, lambda i: 0.0, [11]),
    # A gate the model keeps shut: not early, and the backstop's firing is turned down.
    (0.5, lambda i: 0.0, []),
    # The gate opens later in the silence (chunk 13): the reply waits for it.
    (0.5, lambda i: 1.0 if i >= 13 else 0.0, [13]),
    # It opens only after the backstop turned the turn down (chunk 17): left unanswered.
    (0.5, lambda i: 1.0 if i >= 17 else 0.0, []),
    # It opens for one chunk of the silence (chunk 8) and stays open for that silence:
    # the reply comes when prosody says ended (chunk 11).
    (0.5, lambda i: 1.0 if i == 8 else 0.0, [11]),
    # Open for one chunk while the voice still goes on (chunk 3): not for the silence.
    (0.5, lambda i: 1.0 if i == 3 else 0.0, []),
])
def test_the_prosody_hybrid_speaks_when_prosody_and_the_gate_agree(gate, speak, starts):
  chunk_s = CHUNK / RATE
  timer = SilenceTimer(1.5, vad="energy", chunk_seconds=chunk_s)
  policy = HybridPolicy(timer, threshold=0.9, min_silence_seconds=0.2, signal="prosody",
                        prosody=_model_reading_silence(), gate=gate)
  voice = list(np.pad(_glide(0.8, 200.0, 0.0), (0, 5 * CHUNK - int(0.8 * RATE))).reshape(-1, CHUNK))
  chunks = voice + [np.zeros(CHUNK, np.float32)] * 20
  assert _starts(policy, chunks, speak) == starts
  with pytest.raises(ValueError, match="signal='prosody'"):
    HybridPolicy(timer, signal="prosody")


def test_the_infer_block_carries_the_model_through_bundles_and_the_eval(tmp_path):
  config = config_lib.base_config()
  config.infer.policy = "hybrid"
  config.infer.hybrid_signal = "prosody"
  with pytest.raises(config_lib.ConfigError, match="fit-turn-head --features prosody"):
    config_lib.validate(config)
  config.infer.prosody_turn_end = _model_reading_silence().to_block()
  config.infer.hybrid_gate = 0.05
  config_lib.validate(config)
  values = json.loads(json.dumps(config.to_dict()))
  again = config_lib.from_dict(values)
  policy = policy_from_config(again.infer, chunk_seconds=0.16)
  assert policy.signal == "prosody" and policy.gate == 0.05
  np.testing.assert_array_equal(policy.prosody.kernel, _model_reading_silence().kernel)
  evaluated = suites.EvalConfig.from_infer(again.infer)
  assert evaluated.hybrid_gate == 0.05
  assert evaluated.prosody_turn_end == _model_reading_silence().to_block()
  assert config_lib.PROSODY_FEATURES == NUM_FEATURES
  values["infer"]["prosody_turn_end"] = {"kernel": [[1.0, 2.0]], "bias": [0.0, 0.0]}
  with pytest.raises(config_lib.ConfigError, match="14 rows of 2 numbers"):
    config_lib.from_dict(values)


@dataclasses.dataclass(frozen=True)
class _Line:
  """What the turn-end fit reads of a recorded line (`turn_head.PausedLine`)."""

  voice: str
  pause_cut: int
  samples: np.ndarray = dataclasses.field(repr=False, compare=False)

  def audio(self) -> np.ndarray:
    return self.samples


def _lines(count: int, voices: int) -> list[_Line]:
  """Sentences that rise before their inner pause and fall at their end."""
  rise = lambda i: _glide(0.7, 150.0 + 10 * (i % 5), 4.0)
  fall = lambda i: _glide(0.7, 160.0 + 10 * (i % 5), -6.0, fade_db=10.0)
  return [_Line(f"v{i % voices}", int(0.7 * RATE), np.concatenate([rise(i), fall(i)]))
          for i in range(count)]


def test_fit_turn_head_with_prosody_writes_the_model_into_the_infer_block(tmp_path):
  tokenizer = ByteTokenizer()
  config = model_testing.small_config(**{"model.decoder.vocab_size": tokenizer.vocab_size})
  source = tmp_path / "bundle"
  params = AudioInteractionModel(config).init(jax.random.key(0))
  portable.save_bundle(source, params, tokenizer, config, metadata={})
  out = tmp_path / "prosody"
  summary = turn_head.fit_bundle_turn_head(
      source, out, train_audio_root="unused", lines=_lines(30, voices=6), max_lines=None,
      steps=100, progress=False, features="prosody", hybrid_gate=0.05)
  # A rise before the pause, a fall at the end: held-out voices told apart.
  assert summary["held_out_auc"] > 0.9 and summary["features"] == "prosody"
  fitted, after, _ = portable.load_bundle(out)
  assert fitted.infer.hybrid_signal == "prosody" and fitted.infer.hybrid_gate == 0.05
  assert not fitted.model.turn_end_head  # the network is unchanged
  jax.tree_util.tree_map(np.testing.assert_array_equal, params, after)
  model = ProsodyTurnEnd.from_block(fitted.infer.prosody_turn_end)
  model.start()
  ended = np.concatenate([_lines(1, 1)[0].samples, np.zeros(2 * CHUNK, np.float32)])
  p = [model.push(c) for c in np.pad(ended, (0, -len(ended) % CHUNK)).reshape(-1, CHUNK)]
  assert p[-1] > 0.5
  metadata = json.loads((out / "metadata.json").read_text())
  assert metadata["prosody_turn_end_fit"]["held_out_auc"] == summary["held_out_auc"]


def test_fit_turn_head_cli_refuses_a_gate_out_of_range(tmp_path, capsys):
  (tmp_path / "audio").mkdir()
  argv = ["fit-turn-head", "--bundle", "real-audio", "--out", str(tmp_path / "x"),
          "--train-audio", str(tmp_path / "audio"), "--features", "prosody"]
  assert cli.main(argv + ["--hybrid-gate", "2"]) == 2
  assert "--hybrid-gate 2.0: must be in [0, 1]" in capsys.readouterr().err
  assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("gate,first_reply", [(0.0, 11), (1.0, None)])
def test_the_stepper_feeds_the_prosody_hybrid_its_chunks_and_p_speak(gate, first_reply):
  """Through `run_policies`: the policy hears the stream's own chunks (prosody says ended
  at chunk 11, as in the policy test above) and gates on the model's P(SPEAK), which a
  random decoder never raises to 1. The model has a turn-end head too: the records carry
  what the policy decides on, prosody's P(turn ended)."""
  model = AudioInteractionModel(model_testing.small_config(**{"model.turn_end_head": True}))
  params = model.init(jax.random.key(0))
  chunk_s = model.config.chunk_seconds
  size = model.config.chunk_samples
  assert size == CHUNK
  policy = HybridPolicy(SilenceTimer(1.5, vad="energy", chunk_seconds=chunk_s), threshold=0.9,
                        min_silence_seconds=0.2, signal="prosody",
                        prosody=_model_reading_silence(), gate=gate)
  audio = np.concatenate([np.pad(_glide(0.8, 200.0, 0.0), (0, 5 * size - int(0.8 * RATE))),
                          np.zeros(20 * size, np.float32)])
  (trace,) = run_policies(Engine(model), params, audio, [], [policy], max_reply_tokens=2)
  spoke = [c.index for c in trace.chunks if c.spoke]
  assert (spoke[0] if spoke else None) == first_reply
  assert max(c.speak_probability for c in trace.chunks) < 1.0
  # The chunk records carry the prosody model's P(turn ended), as they do a head's.
  alone = _model_reading_silence()
  alone.start()
  expected = [alone.push(c) for c in audio.reshape(-1, size)]
  np.testing.assert_allclose([c.turn_end_probability for c in trace.chunks], expected)
