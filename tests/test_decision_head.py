"""The decision head refitted over the frozen decoder (`fit-decision-head`): its examples
laid out by hand, a fit over the LM logits that is exactly the model's own head once
folded back, a bundle in and a bundle out; and the gated timer that reads it (the VAD
says when, P(SPEAK) whether), in the stepper, the config and `tune`'s grid."""

import json

import jax
import numpy as np
import pytest

from audio_interaction import config_lib
from audio_interaction import stream_format as sf
from audio_interaction.apps import cli
from audio_interaction.corpus import tasks
from audio_interaction.data.tokenizer import ByteTokenizer
from audio_interaction.eval import tune
from audio_interaction.export import portable
from audio_interaction.infer.endpointing import SilenceTimer
from audio_interaction.infer.engine import Engine
from audio_interaction.infer.policies import GatedTimerPolicy, HybridPolicy, policy_from_config
from audio_interaction.model.model import AudioInteractionModel
from audio_interaction.train import decision_head
import model_testing
from test_turn_head import _bundle, _lines, _tone

RATE = 16000


def _small_engine(**overrides):
  tokenizer = ByteTokenizer()
  config = model_testing.small_config(**{"model.decoder.vocab_size": tokenizer.vocab_size,
                                         **overrides})
  model = AudioInteractionModel(config)
  return Engine(model), model.init(jax.random.key(3)), tokenizer


def test_examples_are_the_chunks_after_the_speech_under_both_instructions():
  engine, params, tokenizer = _small_engine()
  size = engine.model.config.chunk_samples
  lines = _lines(2, voices=2)
  examples, groups = decision_head.line_examples(
      engine, params, tokenizer, lines, after_seconds=3.5 * size / RATE, speech_chunks=1,
      max_lead_seconds=0.0, seed=0, effects_share=0.0, progress=False)
  # Per line: the 3 chunks wholly within 3.5 chunks after each of (cut, whole) x (chat,
  # monitor), and one chunk inside
  # the whole line's words under each instruction.
  assert len(groups) == 2 * (3 * 4 + 2)
  assert list(groups[:14]) == (["chat goes on"] * 3 + ["monitor"] * 3 + ["chat ended"] * 3
                               + ["inside"] + ["monitor"] * 3 + ["inside"])
  speak = examples.targets == int(sf.Decision.SPEAK)
  np.testing.assert_array_equal(speak, groups == "chat ended")
  # The first example after the whole line is the LM logits at the chunk holding no
  # more of its samples (no lead: the line starts the stream; the monitor run of the same
  # stream differs only by its instruction).
  whole = lines[0].samples
  streams = [np.concatenate([whole, np.zeros(2 * RATE, np.float32)])]
  chat = tokenizer.encode(tasks.CHAT_INSTRUCTIONS[int(np.random.default_rng(0).integers(3))])
  logits = decision_head.decide_logits(engine, params, streams, [chat])
  first_after = -(-len(whole) // size)
  np.testing.assert_allclose(examples.features[6], logits[0, first_after], rtol=1e-5,
                             atol=1e-5)


def test_group_aucs_by_hand():
  groups = np.array(["chat ended", "chat ended", "monitor", "monitor", "chat goes on"])
  speak = np.array([0.9, 0.4, 0.5, 0.1, 0.95])
  aucs = decision_head.group_aucs(speak, groups)
  # ended {0.9, 0.4} vs monitor {0.5, 0.1}: 3 of 4 pairs ranked right.
  assert aucs["ended_vs_monitor"] == pytest.approx(0.75)
  assert aucs["ended_vs_chat_goes_on"] == pytest.approx(0.0)
  assert np.isnan(aucs["ended_vs_inside"])


def test_the_fit_over_the_logits_is_the_models_own_head():
  engine, params, tokenizer = _small_engine()
  fit = decision_head.fit_decision_head(engine, params, tokenizer, _lines(12, voices=4),
                                        max_lines=None, steps=60, max_lead_seconds=1.0,
                                        progress=False)
  config = model_testing.small_config(**{"model.decoder.vocab_size": tokenizer.vocab_size,
                                         "model.decoder.decision_bias": True})
  refit = decision_head.with_decision_head(params, fit.kernel, fit.bias)
  new_engine = Engine(AudioInteractionModel(config))
  audio = np.concatenate([_lines(1, 1)[0].samples, np.zeros(RATE, np.float32)])
  instructions = [tokenizer.encode(tasks.CHAT_INSTRUCTIONS[0]),
                  tokenizer.encode(tasks.MONITOR_INSTRUCTIONS[1])]
  features = decision_head.decide_logits(engine, params, [audio, audio], instructions)
  expected = fit.over_logits.probabilities(features.reshape(-1, features.shape[-1]))
  size = engine.model.config.chunk_samples
  state = new_engine.init_state(refit, instructions)
  padded = np.pad(audio, (0, -len(audio) % size))
  got = []
  for k in range(len(padded) // size):
    state, probs = new_engine.perceive(refit, state, np.stack([padded[k * size:(k + 1) * size]] * 2))
    got.append(np.asarray(probs))
  got = np.stack(got, axis=1).reshape(-1, 2)
  np.testing.assert_allclose(got, expected, atol=2e-4)
  # Nothing else moved: the refit differs from the model only in the decision head.
  flat = lambda tree: {jax.tree_util.keystr(k): v
                       for k, v in jax.tree_util.tree_leaves_with_path(tree)}
  before, after = flat(params), flat(refit)
  head = "['params']['decoder']['heads']['decision']"
  assert set(after) - set(before) == {f"{head}['bias']"}
  assert [k for k in before if not np.array_equal(before[k], after[k])] == [f"{head}['kernel']"]


def test_fit_bundle_writes_the_head_with_its_bias(tmp_path):
  # A window that holds the instruction through each example's stream (the small
  # config's 24 positions forget it after a few chunks).
  source = _bundle(tmp_path, **{"model.decoder.window": 256})
  out = tmp_path / "fitted"
  summary = decision_head.fit_bundle_decision_head(
      source, out, train_audio_root="unused", lines=_lines(20, voices=5), max_lines=None,
      steps=60, max_lead_seconds=1.0, progress=False)
  assert summary["lines"] == 16 and summary["held_out_lines"] == 4
  # The instruction is in the decoder's state even of a random model: the monitoring
  # runs are told from the finished chat turns on voices the fit never heard.
  assert summary["held_out_auc"]["ended_vs_monitor"] > 0.9
  assert summary["lm_kernel_rank"] == 192  # the tiny decoder's d_model: W_lm has full row rank
  config, after, _ = portable.load_bundle(out)
  assert config.model.decoder.decision_bias
  assert config.infer.to_dict() == portable.load_bundle(source)[0].infer.to_dict()
  # The bundle holds the fit itself (the same lines, seed and options, fitted again).
  source_config, before, tokenizer = portable.load_bundle(source)
  fit = decision_head.fit_decision_head(
      Engine(AudioInteractionModel(source_config)), before, tokenizer, _lines(20, voices=5),
      max_lines=None, steps=60, max_lead_seconds=1.0, progress=False)
  head = after["params"]["decoder"]["heads"]["decision"]
  np.testing.assert_allclose(head["kernel"], fit.kernel, rtol=1e-6)
  np.testing.assert_allclose(head["bias"], fit.bias, rtol=1e-6)
  metadata = json.loads((out / "metadata.json").read_text())
  assert metadata["trained"] == "for a test"
  assert metadata["decision_head_fit"]["held_out_auc"] == summary["held_out_auc"]
  # A second fit of the fitted bundle replaces the head (its bias too).
  again = decision_head.fit_bundle_decision_head(
      out, tmp_path / "again", train_audio_root="unused", lines=_lines(8, voices=4),
      max_lines=None, steps=10, max_lead_seconds=0.0, progress=False)
  assert again["lines"] == 6


def test_with_decision_head_names_a_shape_mismatch():
  _, params, _ = _small_engine()
  with pytest.raises(ValueError, match="decision head"):
    decision_head.with_decision_head(params, np.zeros((7, 2)), np.zeros(2))


def test_a_decision_bias_moves_every_decision_by_the_same_logits():
  config = model_testing.small_config(**{"model.decoder.decision_bias": True})
  model = AudioInteractionModel(config)
  params = model.init(jax.random.key(0))
  assert np.shape(params["params"]["decoder"]["heads"]["decision"]["bias"]) == (2,)
  shifted = decision_head.with_decision_head(
      params, params["params"]["decoder"]["heads"]["decision"]["kernel"],
      np.array([0.0, 3.0], np.float32))
  state = model.init_state(1)
  chunk = np.asarray(_tone(model.config.chunk_seconds, 300)[None], np.float32)
  _, plain, _, _ = model.perceive(params, state, chunk)
  _, moved, _, _ = model.perceive(shifted, state, chunk)
  np.testing.assert_allclose(np.asarray(moved - plain), [[0.0, 3.0]], atol=1e-5)


# ----------------------------------------------------------------- the gated timer


def _chunks(chunk_s: float):
  size = int(chunk_s * RATE)
  voice = lambda n: list(_tone(n * chunk_s, 300).reshape(n, size))
  quiet = lambda n: [np.zeros(size, np.float32)] * n
  return voice(5) + quiet(15) + voice(5) + quiet(15)


def _gated_decisions(policy, chunks, probabilities, reply_chunks: int) -> list[int]:
  """The chunks where `policy` starts a reply, driven as the stepper does (a reply lasts
  `reply_chunks`), with P(SPEAK) = probabilities[i] at chunk i."""
  starts, left = [], 0
  for index, chunk in enumerate(chunks):
    replying = left > 0
    speaks = policy.decide(index, chunk, probabilities[index], replying)
    left = (left - 1 if replying else reply_chunks) if speaks else 0
    if speaks and not replying:
      starts.append(index)
  return starts


@pytest.mark.parametrize("probability,starts", [
    (0.0, []),          # the model says no at each firing: nothing is answered
    (1.0, [11, 31]),    # yes: the timer's own firings (1 s = 7 chunks into each silence)
    (0.5, [11, 31])])   # the threshold itself counts as yes
def test_the_gated_timer_speaks_at_the_timers_firings_when_the_model_agrees(probability,
                                                                            starts):
  chunk_s = 0.16
  chunks = _chunks(chunk_s)
  policy = GatedTimerPolicy(SilenceTimer(1.0, vad="energy", chunk_seconds=chunk_s),
                            threshold=0.5)
  assert _gated_decisions(policy, chunks, [probability] * len(chunks), 2) == starts
  # The ungated timer fires at the same chunks whatever the model says.
  timer = HybridPolicy(SilenceTimer(1.0, vad="energy", chunk_seconds=chunk_s), threshold=1.1,
                       min_silence_seconds=1.0)
  assert _gated_decisions(timer, chunks, [0.0] * len(chunks), 2) == [11, 31]


def test_a_firing_the_model_turned_down_is_not_answered_later_in_the_silence():
  chunk_s = 0.16
  chunks = _chunks(chunk_s)
  # P(SPEAK) low at the first firing (chunk 11), high everywhere after it.
  probabilities = [0.0] * 12 + [1.0] * (len(chunks) - 12)
  policy = GatedTimerPolicy(SilenceTimer(1.0, vad="energy", chunk_seconds=chunk_s),
                            threshold=0.5)
  assert _gated_decisions(policy, chunks, probabilities, 2) == [31]


def test_the_infer_block_builds_the_gated_timer():
  infer = config_lib.base_config().infer
  infer.policy, infer.threshold, infer.silence_seconds = "gated_timer", 0.6, 0.9
  policy = policy_from_config(infer, chunk_seconds=0.16)
  assert isinstance(policy, GatedTimerPolicy)
  assert policy.threshold == 0.6 and policy.timer.silence_seconds == 0.9
  config = config_lib.base_config()
  config.infer.policy = "gated_timr"
  with pytest.raises(config_lib.ConfigError, match="infer.policy"):
    config_lib.validate(config)


def test_tune_searches_the_gated_timer_when_given_thresholds():
  assert not any(c.policy == tune.GATED for c in tune.Grid().candidates())
  grid = tune.Grid(thresholds=(), hybrid_thresholds=(), gated_thresholds=(0.3, 0.6),
                   gated_silences=(0.7,), timer_silences=(0.7,))
  candidates = grid.candidates()
  assert [c.name for c in candidates] == ["gated timer θ=0.3 0.7s", "gated timer θ=0.6 0.7s",
                                          "timer 0.7s"]
  block = candidates[1].infer_block(config_lib.base_config().infer)
  assert (block.policy, block.threshold, block.silence_seconds) == ("gated_timer", 0.6, 0.7)
  assert tune.Candidate.from_infer(block) == candidates[1]


def test_fit_decision_head_and_tune_flags_name_what_is_wrong(tmp_path, capsys):
  source = _bundle(tmp_path)
  argv = ["fit-decision-head", "--bundle", str(source), "--out", str(tmp_path / "x")]
  assert cli.main(argv + ["--train-audio", str(tmp_path / "nowhere")]) != 0
  assert "fetch-train-audio" in capsys.readouterr().err
  (tmp_path / "audio").mkdir()
  root = ["--train-audio", str(tmp_path / "audio")]
  for flags, named in ((["--after-seconds", "0"], "--after-seconds 0"),
                       (["--speech-chunks", "-1"], "--speech-chunks -1"),
                       (["--max-lead-seconds", "-2"], "--max-lead-seconds -2"),
                       (["--sources", "klingon"], "--sources klingon")):
    assert cli.main(argv + root + flags) != 0
    assert named in capsys.readouterr().err
  assert not (tmp_path / "x").exists()
  tune_argv = ["tune", "--checkpoint", str(source), "--manifest", "m.jsonl",
               "--out", str(tmp_path / "t")]
  assert cli.main(tune_argv + ["--gated-thresholds", "1.5"]) != 0
  assert "--gated-thresholds" in capsys.readouterr().err
  assert cli.main(tune_argv + ["--gated-silences", "0"]) != 0
  assert "--gated-silences" in capsys.readouterr().err
