"""Benchmark suites end to end on a tiny random model, manifests, the batched driver, the CLI."""

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile

from audio_interaction import config_lib
from audio_interaction.apps import cli
from audio_interaction.corpus import speech as speech_lib
from audio_interaction import stream_format as sf
from audio_interaction.corpus import tasks, worlds
from audio_interaction.data.tokenizer import ByteTokenizer
from audio_interaction.eval import report, suites
from audio_interaction.export import portable
from audio_interaction.infer import ctc_lm
from audio_interaction.infer.engine import Engine
from audio_interaction.infer.policies import ScheduledTimerPolicy, ThresholdPolicy
from audio_interaction.infer.run_stream import run_policies, run_stream
from audio_interaction.model.model import AudioInteractionModel
import model_testing

FAST = suites.EvalConfig(vad="energy", sweep_thresholds=(0.3, 0.7), sweep_silences=(0.5, 0.7),
                         bootstrap_resamples=50)


@pytest.fixture(scope="module")
def tiny():
  config = model_testing.small_config(**{"model.decoder.vocab_size": 288})
  model = AudioInteractionModel(config)
  return config, model, model.init(jax.random.key(0)), Engine(model)


def test_every_subtask_is_in_a_suite():
  covered = {name for names in suites.SUITE_SUBTASKS.values() for name in names}
  assert covered == set(tasks.SUBTASKS)
  assert suites.parse_suites("all") == list(suites.SUITE_NAMES)
  assert suites.parse_suites("b1, B5") == ["B1", "B5"]
  with pytest.raises(ValueError, match="unknown suites"):
    suites.parse_suites("B9")


def test_threshold_rows_equal_run_stream_and_timer_rows_follow_the_timer(tiny):
  _, model, params, engine = tiny
  rng = np.random.default_rng(0)
  audio = (0.1 * rng.normal(size=12 * model.config.chunk_samples)).astype(np.float32)
  instruction = [20, 21, 22]
  probe = run_stream(engine, params, audio, instruction, ThresholdPolicy(2.0))
  threshold = float(np.median([c.speak_probability for c in probe.chunks]))
  alone = run_stream(engine, params, audio, instruction, ThresholdPolicy(threshold))
  timer = ScheduledTimerPolicy(fire_chunks=frozenset({3}), voice_chunks=frozenset({5}))
  deaf = ScheduledTimerPolicy(fire_chunks=frozenset({3}), voice_chunks=frozenset())
  row, timed, deaf_row, never = run_policies(
      engine, params, audio, instruction,
      [ThresholdPolicy(threshold), timer, deaf, ThresholdPolicy(2.0)], max_reply_tokens=100)
  assert [c.spoke for c in row.chunks] == [c.spoke for c in alone.chunks]
  assert [c.reply_tokens for c in row.chunks] == [c.reply_tokens for c in alone.chunks]
  np.testing.assert_allclose([c.speak_probability for c in row.chunks],
                             [c.speak_probability for c in alone.chunks], atol=1e-5)
  assert not any(c.spoke for c in never.chunks)
  # Both timer rows start at the firing chunk; the deaf one runs to <eor> (or the cap), the
  # other stops at the voice of chunk 5 unless its reply ended first.
  deaf_spoke = [c.index for c in deaf_row.chunks if c.spoke]
  assert deaf_spoke[0] == 3 and deaf_spoke == list(range(3, 3 + len(deaf_spoke)))
  spoke = [c.index for c in timed.chunks if c.spoke]
  assert spoke == [i for i in deaf_spoke if i < 5]
  assert [timed.chunks[i].reply_tokens for i in spoke] == [
      deaf_row.chunks[i].reply_tokens for i in spoke]


def test_what_a_timeline_warrants(speech, sounds):
  heldout = tasks.TaskConfig(split="heldout")
  paused = tasks.build("chat_mid_pause", 1, speech, sounds, heldout)
  (start, end), = suites.turns(paused)
  hold = paused.utterances[0].holds[0]
  assert start < hold.start < hold.end < end == paused.replies[0].ready_time
  barge = tasks.build("control_barge_in", 1, speech, sounds, heldout)
  assert suites.barge_in_onsets(barge) == [barge.replies[0].interrupted_at]
  backchannel = tasks.build("control_backchannel", 2, speech, sounds, heldout)
  onsets = suites.backchannel_onsets(backchannel)
  assert onsets and onsets == [u.speech_start for u in backchannel.utterances[1:]]
  asr = tasks.build("asr_clean", 3, speech, sounds, heldout)
  words = suites.reference_words(asr)
  assert [w for w, _, _ in words] == " ".join(r.text for r in asr.replies).split()
  assert all(start < end for _, start, end in words)
  alert = next(t for seed in range(20)
               if (t := tasks.build("alert_alarm", seed, speech, sounds, heldout)).replies)
  (onset, deadline), = suites.alert_events(alert, window=2.0)
  assert onset < alert.replies[0].ready_time and deadline == alert.replies[0].ready_time + 2.0


def test_alert_sounds_of_generated_cases_come_from_their_timelines(speech, sounds):
  """Without annotations, a case's alert sounds are its timeline's alert-role sounds, and
  each alert event starts inside one (what `metrics.late_alerts` reads)."""
  cases = suites.generated_cases(["B6"], speech, sounds, streams_per_subtask=1, seed=9000)
  checked = 0
  for case in cases:
    spans = suites.alert_sounds(case)
    assert spans == [(e.start, e.end) for e in case.timeline.sounds if e.role == "alert"]
    assert all(start < end for start, end in spans)
    for onset, _ in suites.case_alert_events(case, window=2.0):
      assert any(start - 1e-6 <= onset < end for start, end in spans), (case.name, onset)
      checked += 1
  assert checked >= 2


def _in_unit(value):
  return value is None or 0.0 <= value <= 1.0


def test_all_suites_end_to_end_one_stream_each(tiny, speech, sounds, tmp_path):
  _, _, params, engine = tiny
  cases = suites.generated_cases(list(suites.SUITE_NAMES), speech, sounds,
                                 streams_per_subtask=1, seed=9000)
  assert len(cases) == 28
  results = suites.evaluate(engine, params, ByteTokenizer(), cases, list(suites.SUITE_NAMES),
                            FAST, progress=False)
  safe = suites.json_safe(results)
  json.dumps(safe, allow_nan=False)  # strict JSON
  got = safe["suites"]
  assert set(got) == set(suites.SUITE_NAMES)
  assert got["B1"]["model"]["reference_words"] > 0 and "pocketsphinx" in got["B1"]
  assert got["B2"]["pocketsphinx"]["reference_words"] == got["B2"]["model"]["reference_words"]
  for system in ("model", "model_ctc", "pocketsphinx"):  # CER beside every WER
    block = got["B2"][system]
    assert block["cer"] >= 0 and (block["cer"] == 0) == (block["wer"] == 0)
  for system in ("model", "silence_timer"):
    b5 = got["B5"][system]
    assert b5["turns"] >= 4
    assert _in_unit(b5["false_cut_in_rate"]) and _in_unit(b5["miss_rate"])
    assert all(0.0 <= v <= FAST.answer_window_s for v in b5["latencies"])
    assert _in_unit(got["B8"][system]["false_reply_rate"])
  # The timer answers every turn of tone speech (clear silences) within the window.
  assert got["B5"]["silence_timer"]["miss_rate"] == 0.0
  assert len(got["B5"]["silence_timer"]["latencies"]) == got["B5"]["silence_timer"]["turns"]
  assert set(got["B5"]["sweep_model"]) == {"0.3", "0.5", "0.7"}
  assert set(got["B5"]["sweep_silence_timer"]) == {"0.5", "0.7"}
  assert set(got["B6"]["sweep_model"]) == {"0.3", "0.5", "0.7"}
  assert _in_unit(got["B6"]["model"]["recall"]) and got["B6"]["model"]["hours"] > 0
  assert len(safe["per_subtask"]) == 28
  assert all(_in_unit(v["accuracy"]) for v in safe["per_subtask"].values())
  assert safe["timing"]["cases"] == 28 and safe["timing"]["wall_seconds"] > 0

  paths = report.write_report(results, tmp_path, note="random weights")
  markdown = paths["markdown"].read_text()
  assert "| B5 turn-taking" in markdown and "silence timer" in markdown
  assert "PocketSphinx" in markdown
  for name in ("cdfs", "sweeps", "per_subtask"):
    assert paths[name].stat().st_size > 1000


def _write_manifest(tmp_path):
  espeak = speech_lib.MultiVoiceSpeech(engines=("espeak",))
  clip = espeak.say("what is two plus two", np.random.default_rng(0))
  soundfile.write(tmp_path / "q.wav", clip.audio, 16000)
  t = np.arange(16000) / 16000
  soundfile.write(tmp_path / "alarm.wav", (0.3 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32),
                  16000)
  soundfile.write(tmp_path / "rain.wav", (0.05 * np.random.default_rng(1).normal(size=16000)
                                          ).astype(np.float32), 16000)
  words = [[w.text, w.start, w.end] for w in clip.words]
  rows = [{"audio": "q.wav", "words": words, "reply": "four"},
          {"audio": "q.wav", "transcript": "what is two plus two"},
          {"audio": "alarm.wav", "label": "smoke_alarm", "recognisable_after": 0.5},
          {"audio": "rain.wav", "label": "rain"}]
  path = tmp_path / "manifest.jsonl"
  path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
  return path, clip


def test_manifest_cases(tmp_path):
  path, clip = _write_manifest(tmp_path)
  cases = suites.cases_from_manifest(str(path), list(suites.SUITE_NAMES))
  by_suite = {}
  for case in cases:
    (suite,) = case.suites
    by_suite.setdefault(suite, []).append(case)
  assert {k: len(v) for k, v in by_suite.items()} == {
      "B1": 2, "B2": 2, "B3": 2, "B4": 1, "B5": 1, "B6": 2}
  b5 = by_suite["B5"][0]
  assert suites.turns(b5.timeline) == [(clip.words[0].start, clip.words[-1].end)]
  assert b5.timeline.replies[0].text == "four"
  assert len(b5.audio) % 2560 == 0 and b5.duration >= clip.duration + suites.MANIFEST_TAIL_S
  # Exact word times from the row with words; spread ones (flagged "~") for the other.
  assert [c.name.endswith("~") for c in by_suite["B2"]] == [False, True]
  assert [w for w, _, _ in suites.reference_words(by_suite["B2"][0].timeline)] == (
      "what is two plus two".split())
  alarm, rain = by_suite["B6"]
  assert alarm.timeline.replies[0].kind == "alert" and not rain.timeline.replies
  assert alarm.timeline.replies[0].ready_time == pytest.approx(0.5, abs=0.02)
  assert by_suite["B3"][0].timeline.replies[0].text == worlds.sound_name("smoke_alarm")
  assert suites.cases_from_manifest(str(path), ["B5"]) and all(
      c.suites == {"B5"} for c in suites.cases_from_manifest(str(path), ["B5"]))


def test_manifest_suites_run(tiny, tmp_path):
  _, _, params, engine = tiny
  path, _ = _write_manifest(tmp_path)
  names = ["B1", "B5", "B6"]
  cases = suites.cases_from_manifest(str(path), names)
  results = suites.json_safe(suites.evaluate(engine, params, ByteTokenizer(), cases, names,
                                             FAST, progress=False))
  assert results["suites"]["B1"]["model"]["reference_words"] == 10  # two rows
  assert results["suites"]["B5"]["silence_timer"]["turns"] == 1
  assert results["suites"]["B6"]["model"]["events"] == 1


def test_b2_adds_the_lm_beam_search_of_the_ctc_head_when_asked(tiny, tmp_path):
  _, model, params, engine = tiny
  path, _ = _write_manifest(tmp_path)
  cases = suites.cases_from_manifest(str(path), ["B2"])
  tokenizer = ByteTokenizer()
  plain = suites.evaluate(engine, params, tokenizer, cases, ["B2"], FAST, progress=False)
  assert "model_ctc_lm" not in plain["suites"]["B2"]
  assert "LM beam search" not in report.summary_table(suites.json_safe(plain))
  with_lm = dataclasses.replace(FAST, ctc_lm=True, ctc_lm_weight=0.3)
  runner = suites.Runner(engine, params, tokenizer, with_lm)
  runs = [runner.run(case) for case in cases]
  b2 = suites.suite_b2(runs, tokenizer, with_lm)
  assert b2["model_ctc_lm"]["reference_words"] == 10  # two rows of five words
  # What the runner decoded: the search over the chunk-by-chunk CTC logits of the
  # streaming model (its encoder state carried from chunk to chunk).
  decoder = ctc_lm.CtcLmDecoder(tokenizer, model.config.decoder.vocab_size,
                                ctc_lm.BeamSettings(lm_weight=0.3))
  state, logits = model.init_state(1), []
  for chunk in cases[0].audio.reshape(-1, model.config.chunk_samples):
    state, _, chunk_logits, _, _ = model.encode_chunk(params, state, jnp.asarray(chunk[None]))
    logits.append(np.asarray(chunk_logits[0]))
  logits = np.concatenate(logits)
  log_probs = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)
  expected = decoder.timed_words(log_probs, model.config.encoder_frames_per_chunk,
                                 model.config.chunk_seconds)
  assert [w for w, _ in runs[0].ctc_lm_words] == [w for w, _ in expected]
  assert [t for _, t in runs[0].ctc_lm_words] == pytest.approx([t for _, t in expected])
  record = suites.case_record(runs[0], tokenizer)
  assert record["systems"]["model_ctc_lm"]["words"] == [list(w) for w in runs[0].ctc_lm_words]


def test_cli_eval_ctc_lm_flag(tiny, tmp_path, capsys):
  config, _, params, _ = tiny
  bundle = portable.save_bundle(tmp_path / "bundle", params, ByteTokenizer(), config)
  path, _ = _write_manifest(tmp_path)
  out = tmp_path / "report"
  assert cli.main(["eval", "--checkpoint", str(bundle), "--suites", "B2", "--manifest",
                   str(path), "--out", str(out), "--resamples", "20", "--vad", "energy",
                   "--ctc-lm", "--ctc-lm-weight", "0.3"]) == 0
  printed = capsys.readouterr().out
  assert "--ctc-lm-weight 0.3 --ctc-lm" in printed and "LM beam search" in printed
  results = json.loads((out / "results.json").read_text())
  assert results["suites"]["B2"]["model_ctc_lm"]["reference_words"] == 10


def test_cli_eval_smoke(tiny, tmp_path, capsys):
  config, model, params, _ = tiny
  bundle = portable.save_bundle(tmp_path / "bundle", params, ByteTokenizer(), config)
  out = tmp_path / "report"
  argv = ["eval", "--checkpoint", str(bundle), "--suites", "B5", "--streams", "1",
          "--out", str(out), "--vad", "energy", "--sweep", "0.5", "--min-turns", "0",
          "--resamples", "50"]
  code = cli.main(argv)
  assert code == 0
  printed = capsys.readouterr().out
  assert "B5 turn-taking (4 cases" in printed
  # The real command: every flag given, in a form that runs again.
  assert (f"Reproduce: audio-interaction eval --suites B5 --checkpoint {bundle} --streams 1 "
          f"--out {out} --vad energy --sweep 0.5 --min-turns 0 --resamples 50") in printed
  results = json.loads((out / "results.json").read_text())
  assert results["suites"]["B5"]["cases"] == 4 and results["case_counts"] == {"B5": 4}
  lines = (out / "cases.jsonl").read_text().splitlines()
  assert len(lines) == 4 and "per_case" not in results
  record = json.loads(lines[0])
  assert set(record["systems"]) == {"model", "silence_timer"} and record["expected"]
  assert results["suites"]["B5"]["silence_timer"]["vad"] == "energy"
  assert (out / "report.md").exists() and (out / "sweeps.png").exists()
  assert cli.main(["eval", "--checkpoint", str(tmp_path), "--suites", "B5"]) == 2
  assert not math.isnan(results["timing"]["wall_seconds"])


def test_the_operating_policy_is_what_the_model_rows_measure(tiny, speech, sounds):
  # A bundle whose operating point is the hybrid policy is scored under that policy;
  # the sweep still runs the bare thresholds.
  import dataclasses
  import ml_collections
  from audio_interaction.infer.policies import HybridPolicy, policy_from_config
  _, model, params, engine = tiny
  case = next(c for c in suites.generated_cases(["B5"], speech, sounds, streams_per_subtask=1,
                                                seed=9000) if "B5" in c.suites)
  hybrid = dataclasses.replace(FAST, policy="hybrid", threshold=0.0, min_silence_seconds=0.2,
                               silence_seconds=0.7)
  run = suites.Runner(engine, params, ByteTokenizer(), hybrid).run(case)
  instruction = ByteTokenizer().encode(case.timeline.instruction)
  alone = policy_from_config(ml_collections.ConfigDict({
      "policy": "hybrid", "threshold": 0.0, "vad": "energy", "silence_seconds": 0.7,
      "min_silence_seconds": 0.2}), chunk_seconds=model.config.chunk_seconds)
  assert isinstance(alone, HybridPolicy)
  expected = run_stream(engine, params, case.audio, instruction, alone,
                        max_reply_tokens=FAST.max_reply_tokens)
  assert run.model is run.operating
  assert [c.spoke for c in run.model.chunks] == [c.spoke for c in expected.chunks]
  bare = run_stream(engine, params, case.audio, instruction, ThresholdPolicy(0.0),
                    max_reply_tokens=FAST.max_reply_tokens)
  assert [c.spoke for c in run.sweep[0.0].chunks] == [c.spoke for c in bare.chunks]
  # At θ = 0 the bare threshold speaks from the first chunk; the hybrid waits for silence,
  # so a row scored under the wrong policy cannot pass.
  assert [c.spoke for c in run.model.chunks] != [c.spoke for c in bare.chunks]
  plain = suites.Runner(engine, params, ByteTokenizer(), FAST).run(case)
  assert plain.operating is None and plain.model is plain.sweep[FAST.threshold]


def test_the_baseline_timer_is_the_reference_whatever_the_backstop(tiny, speech, sounds):
  # A hybrid with a 1.5 s backstop still stands beside the 0.7 s timer, unless told.
  import dataclasses
  _, _, params, engine = tiny
  backstop = dataclasses.replace(FAST, policy="hybrid", silence_seconds=1.5)
  runner = suites.Runner(engine, params, ByteTokenizer(), backstop)
  assert runner.timer.silence_seconds == suites.REFERENCE_SILENCE_SECONDS == 0.7
  case = next(c for c in suites.generated_cases(["B5"], speech, sounds, streams_per_subtask=1,
                                                seed=9000) if "B5" in c.suites)
  # The timer's replies do not move with the operating point's silence.
  timer = runner.run(case).timer
  short = suites.Runner(engine, params, ByteTokenizer(),
                        dataclasses.replace(backstop, silence_seconds=0.7)).run(case).timer
  assert any(c.spoke for c in timer.chunks)
  assert [c.spoke for c in timer.chunks] == [c.spoke for c in short.chunks]
  told = dataclasses.replace(backstop, baseline_silence_seconds=1.0)
  assert suites.Runner(engine, params, ByteTokenizer(), told).timer.silence_seconds == 1.0


def test_head_alerts_speak_in_the_model_rows_and_never_in_the_timers(speech, sounds):
  import dataclasses
  from audio_interaction.corpus import worlds
  tokenizer = ByteTokenizer()
  model, params = model_testing.sound_head_model(1, tokenizer.vocab_size)
  params = model_testing.hearing(params, worlds.SOUND_EVENT_LABELS.index("doorbell"))
  engine = Engine(model)
  case = next(c for c in suites.generated_cases(["B5"], speech, sounds, streams_per_subtask=1,
                                                seed=9000) if "B5" in c.suites)
  alerting = dataclasses.replace(FAST, sound_alert_threshold=0.5)
  run = suites.Runner(engine, params, tokenizer, alerting).run(case)
  said = tokenizer.encode(worlds.alert_message("doorbell")) + [sf.EOR_ID]
  for threshold, trace in run.sweep.items():  # every model row: one alert, from chunk 0
    assert [c.sound_alert for c in trace.chunks[:2]] == ["doorbell", None], threshold
    assert trace.chunks[0].reply_tokens == said[:model.config.tokens_per_chunk]
  assert run.timer is not None
  assert all(c.sound_alert is None for c in run.timer.chunks)
  off = suites.Runner(engine, params, tokenizer, FAST).run(case)
  assert all(c.sound_alert is None for t in off.sweep.values() for c in t.chunks)
  # A bundle's infer block carries its alert settings into the eval.
  infer = config_lib.base_config().infer
  infer.sound_alert_threshold, infer.sound_alert_chunks = 0.4, 3
  carried = suites.EvalConfig.from_infer(infer)
  assert (carried.sound_alert_threshold, carried.sound_alert_chunks) == (0.4, 3)


@pytest.mark.parametrize("flag", ["--silence", "--baseline-silence"])
def test_eval_refuses_a_silence_that_is_not_positive(flag, tmp_path, capsys):
  assert cli.main(["eval", "--suites", "B5", "--streams", "1", flag, "0",
                   "--out", str(tmp_path / "run")]) == 2
  assert f"{flag} 0.0: must be > 0" in capsys.readouterr().err
  assert not (tmp_path / "run").exists()


def test_the_operating_point_round_trips_through_the_eval_config():
  # A bundle's policy fields come back as the block the eval deploys, each by name.
  infer = config_lib.base_config().infer
  infer.policy, infer.threshold, infer.silence_seconds = "hybrid", 0.95, 1.5
  infer.min_silence_seconds, infer.hybrid_signal, infer.hybrid_gate = 0.1, "prosody", 0.05
  infer.prosody_turn_end = {"kernel": [[0.0, 1.0]] * 14, "bias": [0.0, -1.0]}
  cfg = suites.EvalConfig.from_infer(infer, threshold=0.9)
  block = cfg.policy_block()
  assert set(block) == set(suites.POLICY_KEYS)
  assert {k: block[k] for k in suites.POLICY_KEYS if k != "prosody_turn_end"} == {
      **{k: infer[k] for k in suites.POLICY_KEYS if k != "prosody_turn_end"}, "threshold": 0.9}
  assert block.prosody_turn_end.to_dict() == infer.prosody_turn_end.to_dict()
  # An infer block from before a field existed reads the default config's value.
  old = config_lib.base_config().infer
  old.threshold = 0.6
  del old["hybrid_signal"]
  cfg = suites.EvalConfig.from_infer(old)
  assert (cfg.hybrid_signal, cfg.threshold) == (config_lib.base_config().infer.hybrid_signal, 0.6)
