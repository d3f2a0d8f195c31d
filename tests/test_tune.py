"""`audio-interaction tune`: the batched candidate grid, the selection rule, the bundle's
`infer` block, bad input."""

import json
import math
import re

import jax
import ml_collections
import numpy as np
import pytest
import soundfile

from audio_interaction.apps import cli, tune_run
from audio_interaction.data.tokenizer import ByteTokenizer
from audio_interaction.eval import report, suites, tune
from audio_interaction.export import portable
from audio_interaction.infer import endpointing
from audio_interaction.infer.engine import Engine
from audio_interaction.infer.policies import policy_from_config
from audio_interaction.infer.run_stream import run_stream
from audio_interaction.model.model import AudioInteractionModel
from audio_interaction.stream_format import SAMPLE_RATE as SR
import model_testing

SMALL_GRID = ["--thresholds", "0.5", "--hybrid-thresholds", "0.5", "--min-silences", "0.2",
              "--hybrid-silences", "0.7", "--timer-silences", "0.5,0.7", "--resamples", "20"]


@pytest.fixture(scope="module")
def tiny():
  config = model_testing.small_config(**{"model.decoder.vocab_size": 288,
                                         "infer.vad": "energy"})
  model = AudioInteractionModel(config)
  return config, model, model.init(jax.random.key(0)), Engine(model)


def _burst(seconds: float, freq: float) -> np.ndarray:
  t = np.arange(int(seconds * SR)) / SR
  return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _quiet(seconds: float, rng) -> np.ndarray:
  return (0.001 * rng.normal(size=int(seconds * SR))).astype(np.float32)


def _turn_stream(rng, pause: float) -> tuple[np.ndarray, tuple[float, float]]:
  """Voice, a mid-turn pause, voice, then silence: (audio, (turn start, turn end))."""
  pieces = [_quiet(0.5, rng), _burst(0.8, 220), _quiet(pause, rng), _burst(0.6, 260),
            _quiet(1.5, rng)]
  return np.concatenate(pieces), (0.5, 0.5 + 0.8 + pause + 0.6)


def _manifests(tmp_path):
  """A turn-taking manifest (4 streams) and an events manifest (an alert, a benign sound)."""
  rng = np.random.default_rng(0)
  rows = []
  for k, pause in enumerate((0.3, 0.6, 0.9, 0.4)):
    audio, (start, end) = _turn_stream(rng, pause)
    soundfile.write(tmp_path / f"turn{k}.wav", audio, SR)
    rows.append({"id": f"turns_{k}", "audio": f"turn{k}.wav",
                 "turns": [{"start": start, "end": end, "reply_expected": True}]})
  streams = tmp_path / "streams.jsonl"
  streams.write_text("".join(json.dumps(r) + "\n" for r in rows))
  soundfile.write(tmp_path / "alarm.wav", np.concatenate([_quiet(0.3, rng), _burst(1.0, 3000)]),
                  SR)
  soundfile.write(tmp_path / "steps.wav", np.concatenate([_quiet(0.2, rng), _burst(0.5, 500)]),
                  SR)
  events = tmp_path / "events.jsonl"
  events.write_text(json.dumps({"audio": "alarm.wav", "events": [
      {"onset": 0.3, "offset": 1.3, "class": "smoke_alarm", "role": "alert"}]}) + "\n" +
      json.dumps({"audio": "steps.wav", "events": [
          {"onset": 0.2, "offset": 0.7, "class": "footsteps", "role": "benign"}]}) + "\n")
  return streams, events


def test_the_grid_runs_in_one_batched_pass_and_each_row_is_its_policy_alone(
    tiny, tmp_path, monkeypatch):
  config, model, params, engine = tiny
  streams, _ = _manifests(tmp_path)
  (case, *_) = suites.cases_from_manifest(str(streams), ["B5"])
  instruction = ByteTokenizer().encode(case.timeline.instruction)
  # Thresholds around the random model's own P(SPEAK), so that the rows differ.
  probe = run_stream(engine, params, case.audio, instruction,
                     policy_from_config(config.infer, chunk_seconds=model.config.chunk_seconds,
                                        threshold=2.0))
  speak = np.quantile([c.speak_probability for c in probe.chunks], [0.3, 0.6])
  grid = tune.Grid(thresholds=tuple(speak), hybrid_thresholds=(float(speak[0]),),
                   min_silences=(0.0, 0.3), hybrid_silences=(0.5, 1.0),
                   timer_silences=(0.3, 0.7))
  candidates = grid.candidates()
  assert [c.policy for c in candidates].count("hybrid") == 4
  blocks = [c.infer_block(config.infer) for c in candidates]

  calls = {"perceive_rows": [], "vad": 0}
  perceive = engine.perceive

  def counting_perceive(params_, state, chunks):
    calls["perceive_rows"].append(len(chunks))
    return perceive(params_, state, chunks)

  scores_of = endpointing.SilenceTimer.speech_probabilities

  def counting_scores(self, audio, *args, **kwargs):
    calls["vad"] += 1
    return scores_of(self, audio, *args, **kwargs)

  monkeypatch.setattr(engine, "perceive", counting_perceive)
  monkeypatch.setattr(endpointing.SilenceTimer, "speech_probabilities", counting_scores)
  traces = tune.run_candidates(engine, params, ByteTokenizer(), case, blocks,
                               max_reply_tokens=config.infer.max_reply_tokens)
  chunks = len(case.audio) // model.config.chunk_samples
  # One model pass: a perceive per chunk, every candidate a row of it; one VAD pass.
  assert calls["perceive_rows"] == [len(candidates)] * chunks
  assert calls["vad"] == 1
  monkeypatch.undo()

  spoke = set()
  for block, trace in zip(blocks, traces):
    # The deployed policy: a live VAD of its own, pushed chunk by chunk.
    alone = run_stream(engine, params, case.audio, instruction,
                       policy_from_config(block, chunk_seconds=model.config.chunk_seconds),
                       max_reply_tokens=config.infer.max_reply_tokens)
    assert [c.spoke for c in trace.chunks] == [c.spoke for c in alone.chunks], block.policy
    assert [c.reply_tokens for c in trace.chunks] == [c.reply_tokens for c in alone.chunks]
    spoke.add(tuple(c.spoke for c in trace.chunks))
  assert len(spoke) >= 3  # the candidates really decide differently


def _row(cut, miss, latency, recall=math.nan, fa=math.nan):
  return {"false_cut_in_rate": cut, "miss_rate": miss, "median_latency_s": latency,
          "recall": recall, "false_alarms_per_hour": fa}


def test_selection_rule_on_hand_made_tables():
  rule = tune.Rule()
  table = [_row(0.9, 0.0, 0.2),          # cuts in more than the reference
           _row(0.5, 0.2, 0.3),          # misses too many
           _row(0.5, 0.05, 0.66),        # eligible
           _row(0.7, 0.0, 0.7),          # the reference itself: eligible
           _row(0.3, 0.1, 0.5)]          # eligible, fastest
  picked = tune.select(table, reference_cut_in=0.7, rule=rule)
  assert (picked.index, picked.meets_constraints, picked.eligible) == (4, True, (2, 3, 4))

  # Where some eligible candidates reach the latency goal (0.35 s), the fewest cut-ins +
  # misses among them wins (a tie: the faster), not the fastest; the one with the
  # fewest cut-ins of all is too slow to count.
  fast = [_row(0.6, 0.0, 0.2), _row(0.3, 0.05, 0.33), _row(0.1, 0.0, 0.5),
          _row(0.3, 0.05, 0.3), _row(0.9, 0.0, 0.1)]
  assert tune.select(fast, 0.7).index == 3
  assert tune.select(fast, 0.7, tune.Rule(target_latency_s=0.25)).index == 0
  assert tune.select(fast, 0.7, tune.Rule(target_latency_s=0.6)).index == 2
  # A latency tie goes to FA/h <= 10 first, then to the higher recall.
  tie = [_row(0.2, 0.0, 0.5, recall=0.9, fa=40.0), _row(0.2, 0.0, 0.5, recall=0.6, fa=8.0),
         _row(0.2, 0.0, 0.5, recall=0.7, fa=9.0), _row(0.2, 0.0, 0.8, recall=1.0, fa=0.0)]
  assert tune.select(tie, 0.7).index == 2
  # Over the budget and without alerts to find (unaddressed speech only): the fewer
  # false alarms win the tie, whatever the grid order.
  speech = [_row(0.2, 0.0, 0.7, fa=2600.0), _row(0.2, 0.0, 0.7, fa=300.0),
            _row(0.2, 0.0, 0.7, fa=900.0)]
  assert tune.select(speech, 0.7).index == 1
  # The false-alarm budget joins the constraints when an eligible candidate meets it:
  # the timer (0.7 s, answering every utterance) loses to a slower gated one within
  # budget; among those, a latency tie goes to the fewer cut-ins + misses, not grid order.
  gated = [_row(0.7, 0.0, 0.70, fa=2600.0), _row(0.7, 0.0, 0.73, fa=14.0),
           _row(0.68, 0.0, 0.75, fa=0.0), _row(0.4, 0.02, 0.75, fa=0.0),
           _row(0.1, 0.05, 0.87, fa=0.0), _row(0.9, 0.0, 0.70, fa=0.0)]
  picked = tune.select(gated, 0.7)
  assert (picked.index, picked.eligible) == (3, (0, 1, 2, 3, 4))
  # Nobody within the budget: it only breaks ties, as before.
  assert tune.select(gated[:2], 0.7).index == 0
  # No B6 figures at all: grid order decides a tie; an undefined latency is the worst.
  assert tune.select([_row(0.1, 0.0, math.nan), _row(0.1, 0.0, 0.4), _row(0.1, 0.0, 0.4)],
                     0.7).index == 1

  # Nothing eligible: the lowest cut-in + miss (0.6 + 0.2 = 0.8 < 0.9 + 0.0), flagged.
  none = [_row(0.9, 0.0, 0.2), _row(0.6, 0.2, 1.0), _row(0.95, 0.0, 0.1)]
  fallback = tune.select(none, 0.5)
  assert (fallback.index, fallback.meets_constraints, fallback.eligible) == (1, False, ())
  with pytest.raises(ValueError, match="no turns"):
    tune.select(none, math.nan)


def test_split_halves_is_stratified_seeded_and_complete(tmp_path):
  streams, events = _manifests(tmp_path)
  cases = tune.tune_cases(suites.cases_from_manifest(str(streams), tune.TUNE_SUITES) +
                          suites.cases_from_manifest(str(events), tune.TUNE_SUITES))
  assert [min(c.suites) for c in cases] == ["B5"] * 4 + ["B6"] * 2
  a, b = tune.split_halves(cases, seed=3)
  assert sorted(a + b) == list(range(6)) and not set(a) & set(b)
  # Each stratum (B5 streams; B6 with an alert; B6 without) is dealt A, B, A, ...
  assert sum(i < 4 for i in a) == 2 and sum(i < 4 for i in b) == 2
  assert len([i for i in a if i >= 4]) == 2  # one case per B6 stratum: both go to A
  assert tune.split_halves(cases, seed=3) == (a, b)
  assert any(tune.split_halves(cases, seed=s) != (a, b) for s in range(4, 10))

  # --max-cases: a seeded subset of at most that many cases per suite, in manifest order.
  def names(seed):
    subset, _, _ = tune_run.load_cases([str(streams), str(events)], 160, 2.0, max_cases=3,
                                    seed=seed)
    return [c.name for c in subset]
  every = [c.name for c in cases]
  picked = names(0)
  assert sum(n.startswith("B5:") for n in picked) == 3
  assert sum(n.startswith("B6:") for n in picked) == 2
  assert picked == [n for n in every if n in picked] and picked == names(0)
  assert any(names(s) != picked for s in range(1, 8))


def test_tune_cli_writes_the_report_and_only_the_bundles_infer_block(tiny, tmp_path, capsys):
  config, model, params, _ = tiny
  bundle = portable.save_bundle(tmp_path / "bundle", params, ByteTokenizer(), config)
  before = {p.relative_to(bundle): p.read_bytes() for p in bundle.rglob("*") if p.is_file()}
  streams, events = _manifests(tmp_path)
  out = tmp_path / "tune"
  code = cli.main(["tune", "--checkpoint", str(bundle), "--manifest", str(streams),
                   "--manifest", str(events), "--out", str(out), "--write-bundle", *SMALL_GRID])
  printed = capsys.readouterr()
  assert code == 0, printed.err
  result = json.loads((out / "tune.json").read_text())
  names = [c["name"] for c in result["candidates"]]
  assert names == ["model θ=0.5", "hybrid θ=0.5 min=0.2s timer=0.7s", "timer 0.5s",
                   "timer 0.7s"]
  cases, _, _ = tune_run.load_cases([str(streams), str(events)], model.config.chunk_ms, 2.0)
  chunks = sum(len(c.audio) // model.config.chunk_samples for c in cases)
  assert {k: result["timing"][k] for k in ("recordings", "chunks", "rows", "model_passes")} == {
      "recordings": 6, "chunks": chunks, "rows": 4, "model_passes": 6}
  assert result["counts"]["all"] == {"cases": 6, "turns": 4, "alert_events": 1}
  assert result["rule_constants"]["false_alarm_figure"] == "benign_false_alarms_per_hour"
  # The pick is the rule applied to the half-A figures written out.
  table = [c["A"] for c in result["candidates"]]
  reference = result["candidates"][result["reference"]["index"]]["A"]["false_cut_in_rate"]
  nan = lambda r: {k: math.nan if v is None else v for k, v in r.items()}
  assert result["chosen"]["index"] == tune.select([nan(r) for r in table], reference).index
  # The suites' blocks on half B agree with the table (two paths to the same figures).
  chosen = result["candidates"][result["chosen"]["index"]]
  b5 = result["chosen"]["halves"]["B"]["B5"]
  assert b5["model"]["false_cut_in_rate"] == chosen["B"]["false_cut_in_rate"]
  assert b5["silence_timer"]["miss_rate"] == result["candidates"][3]["B"]["miss_rate"]
  assert "model:false_cut_in_rate" in b5["intervals"]
  # Per manifest: the turns are the streams', the alert event the events'; both add up
  # to all, and each row is the chosen candidate's and the timer's over its cases.
  by_source = result["chosen"]["by_source"]
  assert [r["source"] for r in by_source] == [str(streams), str(events)]
  assert [r["cases"] for r in by_source] == [4, 2]
  assert [r["chosen"]["turns"] for r in by_source] == [4, 0]
  assert [r["chosen"]["events"] for r in by_source] == [0, 1]
  timer = result["candidates"][3]["all"]
  for key in ("false_cut_in_rate", "miss_rate", "median_latency_s"):
    assert by_source[0]["chosen"][key] == chosen["all"][key], key
    assert by_source[0]["reference"][key] == timer[key], key
  assert chosen["all"]["median_latency_s"] != timer["median_latency_s"]  # rows tell apart
  assert "## The chosen point by manifest" in (out / "tune.md").read_text()
  assert (out / "tune.png").stat().st_size > 1000
  assert not (out / "tune_alerts.png").exists()  # no alert stage, no alert picture
  text = (out / "tune.md").read_text()
  assert f"Chosen: **{chosen['name']}**" in text and "held-out half B" in text
  assert f"chosen: {chosen['name']}" in printed.out and "Reproduce: audio-interaction tune" in (
      printed.out)

  # The bundle: only config.json's infer block changed, and it loads with it; its
  # metadata says where the operating point was chosen.
  after = {p.relative_to(bundle): p.read_bytes() for p in bundle.rglob("*") if p.is_file()}
  metadata = portable.pathlib.Path(portable.METADATA_FILE)
  assert after.keys() == before.keys() | {metadata}
  assert {k for k in before if after[k] != before[k]} == {portable.pathlib.Path("config.json")}
  recorded = json.loads(after[metadata])["operating_point"]
  assert recorded == {"chosen": chosen["name"], "manifests": result["manifests"],
                      "split_seed": 0, "command": recorded["command"]}
  assert [str(streams), str(events)] == [m.split(" ")[0] for m in recorded["manifests"]]
  assert recorded["command"].startswith("audio-interaction tune --checkpoint")
  block = re.compile(r'\n "infer": \{.*?\n \},', re.S)
  old, new = (before[portable.pathlib.Path("config.json")].decode(),
              after[portable.pathlib.Path("config.json")].decode())
  assert block.sub("", old) == block.sub("", new) and block.search(new)
  loaded, _, _ = portable.load_bundle(bundle)
  assert loaded.infer.to_dict() == result["chosen"]["infer"]
  assert {k: loaded.infer[k] for k in ("policy", "vad")} == {
      "policy": chosen["policy"], "vad": "energy"}


def test_write_bundle_infer_refuses_a_block_that_does_not_validate(tiny, tmp_path):
  config, _, params, _ = tiny
  bundle = portable.save_bundle(tmp_path / "bundle", params, ByteTokenizer(), config)
  text = (bundle / "config.json").read_bytes()
  bad = tune.Candidate("hybrid", threshold=0.5, min_silence_seconds=2.0,
                       silence_seconds=1.0).infer_block(config.infer)
  with pytest.raises(portable.BundleError, match="min_silence_seconds"):
    portable.write_bundle_infer(bundle, bad)
  assert (bundle / "config.json").read_bytes() == text
  assert [p.name for p in bundle.iterdir() if p.name.startswith(".")] == []


def test_bad_manifests_give_clear_errors(tiny, tmp_path, capsys):
  config, _, params, _ = tiny
  bundle = portable.save_bundle(tmp_path / "bundle", params, ByteTokenizer(), config)
  empty = tmp_path / "empty.jsonl"
  empty.write_text("\n")
  soundfile.write(tmp_path / "said.wav", _burst(1.0, 200), SR)
  speech = tmp_path / "speech.jsonl"  # transcripts only: no turns, no events
  speech.write_text(json.dumps({"audio": "said.wav", "transcript": "hello there"}) + "\n")
  for manifest, message in ((empty, f"manifest {empty} has no usable rows"),
                            (speech, "no turn-taking turns in")):
    code = cli.main(["tune", "--checkpoint", str(bundle), "--manifest", str(manifest),
                     "--out", str(tmp_path / "out"), *SMALL_GRID])
    assert code == 2
    assert message in capsys.readouterr().err
  for flags, message in ((["--sound-alert-chunks", "1.5"], "whole numbers >= 1"),
                         (["--sound-alert-once-per-sound", "2"], "takes 0 and/or 1"),
                         (["--sound-alert-chunks", "0"], "whole numbers >= 1"),
                         (["--sound-alert-holds", "0"], "--sound-alert-holds must be > 0")):
    code = cli.main(["tune", "--checkpoint", str(bundle), "--manifest", str(empty),
                     "--out", str(tmp_path / "out"), *SMALL_GRID, *flags])
    assert code == 2
    assert message in capsys.readouterr().err
  assert not (tmp_path / "out" / "tune.json").exists()


def test_tune_takes_either_weights_format_and_names_a_folder_without_weights(
    tiny, tmp_path, capsys):
  config, _, params, _ = tiny
  bundle = portable.save_bundle(tmp_path / "bundle", params, ByteTokenizer(), config,
                                weights_format="safetensors")
  assert not (bundle / portable.PARAMS_FILE).exists()
  streams, _ = _manifests(tmp_path)
  args = ["tune", "--manifest", str(streams), *SMALL_GRID]
  assert cli.main([*args, "--checkpoint", str(bundle), "--out", str(tmp_path / "a"),
                   "--write-bundle", "--budget-counts-late-alerts"]) == 0, capsys.readouterr().err
  written = json.loads((tmp_path / "a" / "tune.json").read_text())
  chosen = written["chosen"]["infer"]
  # The flag moves the alert budget onto the whole B6 figure, and the command says so.
  assert written["rule_constants"]["false_alarm_figure"] == "false_alarms_per_hour"
  assert written["command"].endswith("--budget-counts-late-alerts")
  assert portable.load_bundle(bundle)[0].infer.to_dict() == chosen
  (tmp_path / "empty").mkdir()
  capsys.readouterr()
  assert cli.main([*args, "--checkpoint", str(tmp_path / "empty"),
                   "--out", str(tmp_path / "b")]) == 2
  assert "is not a model bundle (neither params.msgpack nor model.safetensors)" in (
      capsys.readouterr().err)


def test_sound_alert_selection_on_hand_made_tables():
  row = lambda recall, fa, text=math.nan, f1=math.nan: {
      "recall": recall, "false_alarms_per_hour": fa, "alert_text_accuracy": text, "f1": f1}
  rule = tune.Rule(max_false_alarms_per_hour=10.0)
  # Within the budget: the highest recall (off, row 0, has the least).
  assert tune.select_sound_alert([row(0.1, 2.0), row(0.6, 9.0), row(0.8, 30.0)], rule) == (1, True)
  # A recall tie goes to the better alert text, then the earlier (lower) threshold.
  assert tune.select_sound_alert([row(0.5, 5.0, 0.2), row(0.5, 5.0, 0.9)], rule) == (1, True)
  assert tune.select_sound_alert([row(0.5, 5.0, 0.9), row(0.5, 1.0, 0.9)], rule) == (0, True)
  # None within it: the highest F1, flagged (not the fewest false alarms: "off", row 0,
  # would always win that); an F1 tie goes to the fewer false alarms, NaN F1 counts 0.
  assert tune.select_sound_alert([row(0.1, 12.0, f1=0.1), row(0.9, 40.0, f1=0.6),
                                  row(0.7, 20.0, f1=0.5)], rule) == (1, False)
  assert tune.select_sound_alert([row(0.1, math.nan), row(0.9, 40.0, f1=0.6),
                                  row(0.7, 20.0, f1=0.6)], rule) == (2, False)
  # "Off" alone within the budget does not end the search (the real DEV set: the decoder's
  # own alerts, 6 % recall at no false alarm, against the head's 50 % at 59 / h) ...
  assert tune.select_sound_alert([row(0.06, 0.0, f1=0.11), row(0.5, 59.0, f1=0.58),
                                  row(0.28, 44.0, f1=0.38)], rule) == (1, False)
  # ... it still wins on F1, or on recall beside a threshold within the budget.
  assert tune.select_sound_alert([row(0.3, 0.0, f1=0.4), row(0.5, 59.0, f1=0.3)], rule) == (
      0, True)
  assert tune.select_sound_alert([row(0.3, 0.0), row(0.2, 8.0), row(0.9, 50.0)], rule) == (
      0, True)
  # Without an "off" row every row is a threshold.
  assert tune.select_sound_alert([row(0.06, 0.0, f1=0.11), row(0.5, 59.0, f1=0.58)], rule,
                                 off_index=None) == (0, True)



def test_the_alert_budget_reads_false_alarms_in_benign_audio_by_default():
  def row(recall, whole, benign=None):
    figures = {"recall": recall, "false_alarms_per_hour": whole, "alert_text_accuracy": 0.5,
               "f1": recall}
    return figures if benign is None else {**figures, "benign_false_alarms_per_hour": benign}
  # Row 1's 30/h are 24/h of late alerts (still sounding real alarms) + 6/h in benign
  # audio: within the goal's budget; counting late alerts, row 2 is the only one within.
  table = [row(0.0, 0.0, 0.0), row(0.8, 30.0, 6.0), row(0.5, 9.0, 9.0)]
  assert tune.select_sound_alert(table, tune.Rule()) == (1, True)
  counting_late = tune.Rule(false_alarm_figure="false_alarms_per_hour")
  assert tune.select_sound_alert(table, counting_late) == (2, True)
  # Rows written before the benign figure existed are read by their whole figure.
  assert tune.select_sound_alert([row(0.0, 0.0), row(0.8, 30.0), row(0.5, 9.0)],
                                 tune.Rule()) == (2, True)
  assert tune.Rule().false_alarms({"false_alarms_per_hour": 3.0,
                                   "benign_false_alarms_per_hour": math.nan}) == math.inf
  checks = tune.goal_checks({"false_cut_in_rate": 0.1, "miss_rate": 0.0, "median_latency_s": 0.5,
                             "recall": 0.8, "false_alarms_per_hour": 30.0,
                             "benign_false_alarms_per_hour": 6.0, "alert_text_accuracy": 0.9},
                            0.2)
  assert checks["false_alarms_per_hour"]["value"] == 6.0
  assert checks["false_alarms_per_hour"]["met"] is True
  assert "late alerts of real alarms left out" in checks["false_alarms_per_hour"]["label"]
  with pytest.raises(ValueError, match="false_alarm_figure 'benign'"):
    tune.Rule(false_alarm_figure="benign")

def test_tune_chooses_a_sound_alert_threshold_for_a_model_with_a_head(tmp_path, capsys,
                                                                    monkeypatch):
  from audio_interaction.corpus import worlds
  from audio_interaction.infer import sound_alerts
  # The head hears a siren all the time, so no hold ever ends: what tells the holds
  # apart is the rule each run is given.
  rules_run = []
  post_init = sound_alerts.SoundAlertRule.__post_init__
  def recording_post_init(rule):
    rules_run.append((rule.threshold, rule.hold_chunks, rule.chunks, rule.once_per_sound))
    post_init(rule)
  monkeypatch.setattr(sound_alerts.SoundAlertRule, "__post_init__", recording_post_init)
  labels = worlds.SOUND_EVENT_LABELS
  config = model_testing.small_config(**{"model.decoder.vocab_size": 288,
                                         "infer.vad": "energy",
                                         "model.sound_event_classes": len(labels)})
  model = AudioInteractionModel(config)
  # A head that hears a siren with p ~ 0.85 in every chunk: alerts at 0.5, not at 0.9.
  params = model_testing.hearing(model.init(jax.random.key(0)), labels.index("siren"), 5.0)
  bundle = portable.save_bundle(tmp_path / "bundle", params, ByteTokenizer(), config)
  streams, events = _manifests(tmp_path)
  out = tmp_path / "tune"
  code = cli.main(["tune", "--checkpoint", str(bundle), "--manifest", str(streams),
                   "--manifest", str(events), "--out", str(out), "--write-bundle",
                   "--sound-alert-thresholds", "0.5,0.9", "--sound-alert-holds", "1,30",
                   "--sound-alert-chunks", "1,2", "--sound-alert-once-per-sound", "0,1",
                   *SMALL_GRID])
  printed = capsys.readouterr()
  assert code == 0, printed.err
  result = json.loads((out / "tune.json").read_text())
  stage = result["chosen"]["sound_alerts"]
  points = [(row["threshold"], row["hold_seconds"], row["chunks"], row["once_per_sound"])
            for row in stage["candidates"]]
  grid = [(t, h, c, o) for t in (0.5, 0.9) for h in (1.0, 30.0) for c in (1, 2)
          for o in (False, True)]
  assert points == [(0.0, 10.0, 1, False)] + grid
  chunk = model.config.chunk_seconds
  assert set(rules_run) >= {(t, round(h / chunk), c, o) for t, h, c, o in grid}
  nan = lambda r: {k: math.nan if v is None else v for k, v in r.items()}
  index, within = tune.select_sound_alert([nan(r["A"]) for r in stage["candidates"]],
                                          tune.Rule())
  assert (stage["index"], stage["within_budget"]) == (index, within)
  # At 0.5 every recording starts with an alert (the event's one is found); at 0.9 none.
  at_half = stage["candidates"][1]["all"]
  assert at_half["recall"] == 1.0 and at_half["false_alarms_per_hour"] > 0
  # None of its false alarms fall during the alarm (its one alert found it in time), so
  # leaving late alerts out changes nothing; the report gives both.
  assert at_half["late_alerts"] == 0
  assert at_half["benign_false_alarms_per_hour"] == at_half["false_alarms_per_hour"]
  fa = report.fmt(at_half["false_alarms_per_hour"])
  assert f"| {fa} ({fa}) |" in (out / "tune.md").read_text()
  assert stage["candidates"][9]["all"]["recall"] <= stage["candidates"][0]["all"]["recall"]
  # The report's B6 block is the chosen threshold's run; the bundle holds the choice.
  chosen_all = stage["candidates"][stage["index"]]["all"]
  assert result["chosen"]["halves"]["all"]["B6"]["model"]["recall"] == chosen_all["recall"]
  loaded, _, _ = portable.load_bundle(bundle)
  assert loaded.infer.sound_alert_threshold == stage["threshold"]
  assert loaded.infer.sound_alert_hold_seconds == stage["hold_seconds"]
  assert loaded.infer.sound_alert_chunks == stage["chunks"]
  assert loaded.infer.sound_alert_once_per_sound == stage["once_per_sound"]
  assert "## Sound alerts" in (out / "tune.md").read_text()
  assert "(tune_alerts.png)" in (out / "tune.md").read_text()
  assert (out / "tune_alerts.png").stat().st_size > 1000


def test_alert_plot_draws_one_line_per_rule_and_leaves_out_halves_without_events(tmp_path):
  from matplotlib import pyplot as plt
  from audio_interaction.viz import report_plots
  def row(threshold, chunks, recall, alarms):
    half = {"recall": recall, "false_alarms_per_hour": alarms}
    return {"threshold": threshold, "chunks": chunks, "hold_seconds": 30.0,
            "once_per_sound": True, "A": half}
  candidates = [row(0.0, 1, 0.0, 5.0), row(0.7, 1, 0.7, 40.0), row(0.5, 1, 0.9, 80.0),
                row(0.5, 3, 0.8, 20.0), row(0.7, 3, None, None)]
  drawn = []
  original = plt.Axes.plot
  def recording_plot(ax, xs, ys, *args, **kwargs):
    drawn.append((list(xs), list(ys), kwargs["label"]))
    return original(ax, xs, ys, *args, **kwargs)
  plt.Axes.plot = recording_plot
  try:
    path = report_plots.plot_alert_tune(candidates, 3, tmp_path / "alerts.png")
  finally:
    plt.Axes.plot = original
  assert path.stat().st_size > 1000
  # Each rule's line runs through its thresholds in order; the point without a recall
  # (no alert event on the half) is left out; "off" is no line.
  assert drawn == [([80.0, 40.0], [0.9, 0.7], "1 chunk running, hold 30 s, once per sound"),
                   ([20.0], [0.8], "3 chunks running, hold 30 s, once per sound")]
  # With the budget on benign audio, x is that figure where a row has it.
  candidates[2]["A"]["benign_false_alarms_per_hour"] = 35.0
  drawn.clear()
  plt.Axes.plot = recording_plot
  try:
    report_plots.plot_alert_tune(candidates, 3, tmp_path / "benign.png",
                                 alarms=tune.Rule().false_alarm_rate)
  finally:
    plt.Axes.plot = original
  assert drawn[0][:2] == ([35.0, 40.0], [0.9, 0.7])


def test_keep_policy_keeps_the_bundles_point_where_the_rule_would_not(tiny, tmp_path):
  config, _, params, _ = tiny
  config = ml_collections.ConfigDict(config.to_dict())
  config.infer.policy, config.infer.threshold = "model", 1.0  # never speaks: misses every turn
  bundle = portable.save_bundle(tmp_path / "bundle", params, ByteTokenizer(), config)
  streams, _ = _manifests(tmp_path)
  out = tmp_path / "tune"
  assert cli.main(["tune", "--checkpoint", str(bundle), "--manifest", str(streams),
                   "--out", str(out), "--keep-policy", "--write-bundle", *SMALL_GRID]) == 0
  result = json.loads((out / "tune.json").read_text())
  assert [c["name"] for c in result["candidates"]] == ["model θ=1", "timer 0.7s"]
  # The rule would take the timer (no misses); the bundle's point stays, flagged.
  assert tune.select([c["A"] for c in result["candidates"]],
                     result["candidates"][1]["A"]["false_cut_in_rate"]).index == 1
  assert result["chosen"]["name"] == "model θ=1"
  assert not result["chosen"]["meets_constraints"]
  loaded, _, _ = portable.load_bundle(bundle)
  assert (loaded.infer.policy, loaded.infer.threshold) == ("model", 1.0)
  assert "--keep-policy" in (out / "tune.md").read_text()
  # Its record keeps the earlier tune's that chose the policy (here: none before it; a
  # second keep-policy tune points back to the first, not to itself).
  metadata = lambda: json.loads((bundle / portable.METADATA_FILE).read_text())
  assert "policy_chosen_by" not in metadata()["operating_point"]
  first = metadata()["operating_point"]
  assert cli.main(["tune", "--checkpoint", str(bundle), "--manifest", str(streams),
                   "--out", str(tmp_path / "again"), "--keep-policy", "--write-bundle",
                   *SMALL_GRID]) == 0
  assert metadata()["operating_point"]["policy_chosen_by"] == first


def test_candidate_from_infer_is_the_inverse_of_infer_block(tiny):
  config, *_ = tiny
  for candidate in (tune.Candidate("model", threshold=0.6),
                    tune.Candidate("hybrid", threshold=0.7, min_silence_seconds=0.2,
                                   silence_seconds=1.0),
                    tune.Candidate(tune.TIMER, silence_seconds=0.5)):
    assert tune.Candidate.from_infer(candidate.infer_block(config.infer)) == candidate
  bad = ml_collections.ConfigDict(config.infer.to_dict())
  bad.policy = "coin"
  with pytest.raises(ValueError, match="coin"):
    tune.Candidate.from_infer(bad)
