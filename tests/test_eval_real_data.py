"""Evaluation on real-data layouts: annotated long recordings (B3-B8 from events and
turns), the Proactive-Sound-Bench layout, TFDS sets through mock data."""

import json
import inspect

import jax
import numpy as np
import pytest
import soundfile

from audio_interaction import stream_format as sf
from audio_interaction.apps import cli
from audio_interaction.corpus import manifest, tasks
from audio_interaction.corpus.sounds import SoundBank
from audio_interaction.data.tokenizer import ByteTokenizer
from audio_interaction.eval import proactive_bench, suites
from audio_interaction.export import portable
from audio_interaction.model.model import AudioInteractionModel
from audio_interaction.stream_format import SAMPLE_RATE as SR
import model_testing

FAST = ["--vad", "energy", "--sweep", "0.5", "--resamples", "20"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
  config = model_testing.small_config(**{"model.decoder.vocab_size": 288})
  model = AudioInteractionModel(config)
  return portable.save_bundle(tmp_path_factory.mktemp("real_data") / "bundle",
                              model.init(jax.random.key(0)), ByteTokenizer(), config)


ROW = {"audio": "long.wav", "id": "kitchen", "instruction": "Tell me about alarms.",
       "events": [{"onset": 0.5, "offset": 1.0, "class": "dog", "role": "benign"},
                  {"onset": 2.0, "offset": 3.0, "class": "smoke_alarm"},
                  {"onset": 4.0, "offset": 4.3, "class": "speech", "role": "barge_in"},
                  {"onset": 1.2, "offset": 1.4, "class": "toaster"}],
       "turns": [{"start": 0.1, "end": 0.9, "reply_expected": True},
                 {"start": 4.5, "end": 5.0, "reply_expected": False}]}


def _long(tmp_path):
  noise = (0.05 * np.random.default_rng(0).normal(size=6 * SR)).astype(np.float32)
  soundfile.write(tmp_path / "long.wav", noise, SR)
  path = tmp_path / "m.jsonl"
  path.write_text(json.dumps(ROW) + "\n")
  return path


def test_annotated_rows_map_into_the_suites(tmp_path):
  report = manifest.read_manifest(_long(tmp_path))
  cases = suites.cases_from_manifest(report, list(suites.SUITE_NAMES))
  by_suite = {}
  for case in cases:
    by_suite.setdefault(min(case.suites), []).append(case)
  # B3: one offline clip per sound event with a role (the unknown "toaster" is not one).
  assert {k: len(v) for k, v in by_suite.items()} == {"B3": 2, "B5": 1, "B6": 1, "B7": 1,
                                                      "B8": 1}
  assert [len(c.audio) for c in by_suite["B3"]] == [SR // 2, SR]
  (b6,) = by_suite["B6"]
  # The alert: from its annotated onset, recognisable after the class's delay.
  assert b6.annotations.alerts == ((2.0, 2.0 + manifest.RECOGNISABLE_AFTER_S["smoke_alarm"]),)
  # Benign time: the 6 s recording less the alert's [onset, recognisable + 2 s window).
  assert b6.annotations.benign_seconds == pytest.approx(6.0 - 3.0)
  assert b6.timeline.instruction == "Tell me about alarms."
  assert suites.case_turns(by_suite["B5"][0]) == [(0.1, 0.9)]
  assert by_suite["B8"][0].annotations.barge_ins == (4.0,)
  assert by_suite["B8"][0].annotations.unaddressed == ((4.5, 5.0),)
  assert by_suite["B7"][0].timeline.replies[0].kind == "alert"
  # B6 and B7 both know the alert sound's span (what tells a late alert from a false one).
  assert b6.annotations.alert_sounds == by_suite["B7"][0].annotations.alert_sounds == (
      (2.0, 3.0),)


def test_a_labelled_alert_clip_knows_its_sounds_span(tmp_path):
  """A whole-clip alert row: the alert sound runs from the clip's loud onset to its end."""
  clip = np.zeros(2 * SR, np.float32)
  clip[SR // 2:] = 0.1 * np.random.default_rng(3).normal(size=SR + SR // 2)
  soundfile.write(tmp_path / "alarm.wav", clip, SR)
  (tmp_path / "m.jsonl").write_text(json.dumps({"audio": "alarm.wav", "label": "smoke_alarm"})
                                    + "\n")
  (b6,) = suites.cases_from_manifest(str(tmp_path / "m.jsonl"), ["B6"])
  (span,) = b6.annotations.alert_sounds
  assert span == pytest.approx((0.5, 2.0), abs=0.01)
  assert b6.annotations.alerts[0][0] == span[0]


def test_alert_latency_from_the_annotated_onset_and_false_alarms_over_benign_time(tmp_path):
  report = manifest.read_manifest(_long(tmp_path))
  (b6,) = suites.cases_from_manifest(report, ["B6"])
  run = suites.CaseRun(b6, 0.5)
  result = suites.alerts([run], lambda r: [0.3, 2.5], suites.EvalConfig())
  assert result["onset_latency_s"]["median"] == pytest.approx(0.5)  # 2.5 - 2.0
  assert result["false_alarms_per_hour"] == pytest.approx(1 / (3.0 / 3600))  # 0.3: false
  assert result["late_alerts"] == 0
  # A second alert at 4.6 s, within 2 s of the smoke alarm's annotated end (3.0), the
  # alarm already detected: a false alarm, and a late one, not one in benign audio; one
  # at 5.5 s is in benign audio again.
  assert b6.annotations.alert_sounds == ((2.0, 3.0),)
  later = suites.alerts([run], lambda r: [0.3, 2.5, 4.6], suites.EvalConfig())
  assert later["false_alarms_per_hour"] == pytest.approx(2 / (3.0 / 3600))
  assert later["late_alerts"] == 1
  assert later["benign_false_alarms_per_hour"] == pytest.approx(1 / (3.0 / 3600))
  after = suites.alerts([run], lambda r: [0.3, 2.5, 5.5], suites.EvalConfig())
  assert after["late_alerts"] == 0
  assert after["benign_false_alarms_per_hour"] == after["false_alarms_per_hour"]


def test_detected_alerts_name_their_class_from_the_onset_on(tmp_path):
  from audio_interaction.infer.run_stream import ChunkRecord, StreamTrace
  report = manifest.read_manifest(_long(tmp_path))
  (b6,) = suites.cases_from_manifest(report, ["B6"])
  tokenizer = ByteTokenizer()
  want = suites.alert_text("smoke_alarm")

  def trace(reply_at: float | None, text: str) -> StreamTrace:
    chunks = []
    for index in range(30):  # 0.2 s chunks
      start = round(0.2 * index, 6)
      speaks = reply_at is not None and abs(start + 0.2 - reply_at) < 1e-6
      tokens = tokenizer.encode(text) + [sf.EOR_ID] if speaks else []
      chunks.append(ChunkRecord(index, start, start + 0.2, 0.0, speaks, tokens, 0.0))
    return StreamTrace(chunks, 0.2)

  def naming(reply_at, text):
    run = suites.CaseRun(b6, 0.5, sweep={0.5: trace(reply_at, text)})
    return suites.alert_naming([run], tokenizer, suites.EvalConfig())
  # At 2.2 s: after the onset (2.0), before the class's nominal recognisable time.
  assert 2.2 < b6.annotations.alerts[0][1]
  assert naming(2.2, want) == {"named": 1, "detected": 1, "rate": 1.0}
  assert naming(2.2, "your phone is ringing") == {"named": 0, "detected": 1, "rate": 0.0}
  assert naming(0.4, want)["detected"] == 0  # before the onset: a false alarm, not named


def test_a_clip_label_alert_counts_from_its_first_sound(tmp_path):
  audio = np.zeros(2 * SR, np.float32)
  audio[SR:] = 0.3 * np.sin(2 * np.pi * 3000 * np.arange(SR) / SR)
  soundfile.write(tmp_path / "alarm.wav", audio, SR)
  path = tmp_path / "m.jsonl"
  path.write_text(json.dumps({"audio": "alarm.wav", "label": "Kettle"}) + "\n")
  report = manifest.read_manifest(path, alert_classes=["Kettle"])
  (b6,) = suites.cases_from_manifest(report, ["B6"])
  (onset, _), = b6.annotations.alerts
  assert onset == pytest.approx(1.0, abs=0.05)  # not 0: the leading second is silent
  assert b6.timeline.replies[0].kind == "alert"  # a declared class is an alert, not benign


def test_cli_eval_on_an_annotated_manifest_reports_every_suite(bundle, tmp_path, capsys):
  path = _long(tmp_path)
  out = tmp_path / "report"
  code = cli.main(["eval", "--checkpoint", str(bundle), "--manifest", str(path), "--out",
                   str(out), *FAST])
  printed = capsys.readouterr().out
  assert code == 0
  results = json.loads((out / "results.json").read_text())
  assert results["case_counts"] == {"B1": 0, "B2": 0, "B3": 2, "B4": 0, "B5": 1, "B6": 1,
                                    "B7": 1, "B8": 1}
  assert results["suites_without_cases"] == ["B1", "B2", "B4"]
  assert results["manifest"]["unknown_classes"] == {"toaster": 1}
  text = (out / "report.md").read_text()
  assert "No cases for B1, B2, B4" in text and "No cases for B1, B2, B4" in printed
  assert "B5 rests on 1 turns, fewer than the 100 asked" in text
  assert "--streams" not in printed.split("Reproduce:")[1]
  assert f"--manifest {path}" in printed.split("Reproduce:")[1]
  intervals = results["suites"]["B6"]["intervals"]
  assert {"model:precision", "model:recall", "model:false_alarms_per_hour"} <= set(intervals)
  assert all(v["cases"] == 1 for v in intervals.values())
  assert len((out / "cases.jsonl").read_text().splitlines()) == 6


def test_generated_cases_reach_the_minimum_turns(monkeypatch):
  built = []

  def fake_build(name, seed, speech, sounds, config):
    built.append((name, seed))
    return f"{name}/{seed}"

  monkeypatch.setattr(suites.tasks, "build", fake_build)
  monkeypatch.setattr(suites, "render", lambda timeline, chunk_ms: np.zeros(1, np.float32))
  monkeypatch.setattr(suites, "case_units", lambda case, suite: 3)  # 3 turns per stream
  cases = suites.generated_cases(["B5"], None, None, streams_per_subtask=1, seed=0,
                                 minimum={"B5": 20}, max_streams_per_subtask=50)
  # 4 sub-tasks x 1 stream = 12 turns; then one more stream per sub-task in turn to 21.
  assert len(cases) == 7
  assert [seed for name, seed in built if name == "chat_single"] == [0, 1]
  capped = suites.generated_cases(["B5"], None, None, streams_per_subtask=1, seed=0,
                                  minimum={"B5": 10_000}, max_streams_per_subtask=2)
  assert len(capped) == 8


# ------------------------------------------------------------------ Proactive-Sound-Bench

def _bench(tmp_path):
  """The layout from our own procedural sounds: two domains, one missing file."""
  bank = SoundBank(use_recordings=False)
  rng = np.random.default_rng(0)
  rows = []
  for domain, label, decision in (("home", "smoke_alarm", "RESPOND"), ("home", "rain", "IGNORE"),
                                  ("street", "siren", "RESPOND"), ("street", "bird", "IGNORE")):
    (tmp_path / "root" / domain).mkdir(parents=True, exist_ok=True)
    soundfile.write(tmp_path / "root" / domain / f"{label}.wav", bank.sample(label, rng).audio, SR)
    rows.append({"id": f"{domain}-{label}", "path": f"{domain}/{label}.wav",
                 "description": label.replace("_", " "), "decision": decision})
  rows.append({"id": "gone", "path": "home/gone.wav", "description": "x", "decision": "IGNORE"})
  manifest_path = tmp_path / "bench.jsonl"
  manifest_path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
  answers = tmp_path / "answers.jsonl"
  answers.write_text(json.dumps({"id": "home-smoke_alarm", "standard_answers": ["Alarm!"]}) + "\n")
  return manifest_path, answers, rows


def test_bench_scoring_per_domain_with_a_fixed_replier(tmp_path):
  manifest_path, answers, _ = _bench(tmp_path)
  rows, problems = proactive_bench.read_bench_manifest(manifest_path)
  assert len(rows) == 5 and problems == {"bad_row": ["line 6: Expecting value: line 1 column 1 "
                                                      "(char 0)"]}
  # Respond to everything: right on RESPOND rows only.
  predictions, stats = proactive_bench.run_bench(
      rows, tmp_path / "root", lambda audio: ["hello"], problems=problems,
      answers=proactive_bench.read_answers(answers))
  assert [p["id"] for p in predictions] == ["home-smoke_alarm", "home-rain", "street-siren",
                                            "street-bird"]
  assert predictions[0]["_raw_reply"] == "<Decision>RESPOND</Decision><Reply>hello</Reply>"
  assert predictions[0]["standard_answers"] == ["Alarm!"]
  assert stats["accuracy"] == 0.5 and stats["scored"] == 4 and stats["rows"] == 5
  assert stats["per_domain"]["home"]["accuracy"] == 0.5
  assert stats["per_domain"]["street"]["confusion"] == {"IGNORE->RESPOND": 1,
                                                        "RESPOND->RESPOND": 1}
  assert stats["not_scored"] == {"bad_row": 1, "missing_file": 1}
  assert stats["not_scored_ids"]["missing_file"] == ["gone"]
  _, quiet = proactive_bench.run_bench(rows, tmp_path / "root", lambda audio: [])
  assert quiet["accuracy"] == 0.5 and quiet["per_domain"]["home"]["confusion"] == {
      "IGNORE->IGNORE": 1, "RESPOND->IGNORE": 1}
  assert proactive_bench.parse_decision(" <Decision> ignore </Decision><Reply></Reply>") == "IGNORE"


def test_proactive_instruction_is_the_corpus_one():
  assert proactive_bench.PROACTIVE_INSTRUCTION in tasks.MONITOR_INSTRUCTIONS
  assert "MONITOR_INSTRUCTIONS" in inspect.getsource(tasks.proactive)


def test_cli_proactive_bench(bundle, tmp_path, capsys):
  manifest_path, answers, rows = _bench(tmp_path)
  out = tmp_path / "out"
  code = cli.main(["proactive-bench", "--manifest", str(manifest_path), "--root",
                   str(tmp_path / "root"), "--out", str(out), "--checkpoint", str(bundle),
                   "--answers", str(answers)])
  printed = capsys.readouterr()
  assert code == 0, printed.err
  predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
  assert [p["id"] for p in predictions] == [r["id"] for r in rows[:4]]
  said = {p["id"]: proactive_bench.parse_decision(p["_raw_reply"]) for p in predictions}
  assert set(said.values()) <= {"RESPOND", "IGNORE"}
  stats = json.loads((out / "stats.json").read_text())
  truth = {r["id"]: r["decision"] for r in rows}
  assert stats["correct"] == sum(said[i] == truth[i] for i in said)
  assert set(stats["per_domain"]) == {"home", "street"}
  assert stats["not_scored"] == {"bad_row": 1, "missing_file": 1}
  assert "not scored: 1 bad_row, 1 missing_file" in printed.out
  # A second run into the same --out is refused unless --overwrite.
  assert cli.main(["proactive-bench", "--manifest", str(manifest_path), "--root",
                   str(tmp_path / "root"), "--out", str(out), "--checkpoint", str(bundle)]) == 2


# ------------------------------------------------------------------------------- TFDS

def test_tfds_sets_through_mock_data(bundle, tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from audio_interaction.eval import tfds_sources
  with tfds.testing.mock_data(num_examples=4):
    words = tfds_sources.load_tfds("speech_commands:test")
    speech = tfds_sources.load_tfds("librispeech:test_clean")
  assert words.keywords and not speech.keywords
  assert words.report.rows and speech.report.rows  # mock data is seeded: 3 and 4 rows
  assert len(words.report.rows) + words.report.num_skipped == 4
  assert all(r.transcript and not r.transcript.startswith("_") for r in words.report.rows)
  keyword_cases = tfds_sources.cases_from_tfds(words, ["B3"])
  assert len(keyword_cases) == len(words.report.rows)
  assert all(c.timeline.instruction == suites.KEYWORD_INSTRUCTION for c in keyword_cases)
  assert len(speech.report.rows) + speech.report.num_skipped == 4
  speech_cases = tfds_sources.cases_from_tfds(speech, ["B1", "B2"])
  assert len(speech_cases) == 2 * len(speech.report.rows)
  with pytest.raises(ValueError, match="NAME:SPLIT"):
    tfds_sources.parse_spec("librispeech")


def test_a_turn_annotated_twice_is_one_turn_and_extra_event_keys_are_ignored(tmp_path, caplog):
  """The real-audio dev set's streams mark the same utterance as a turn and as addressed
  speech, and flag events with keys of their own (e.g. `class_unmapped`)."""
  row = {"audio": "long.wav", "id": "stream",
         "events": [{"onset": 0.2, "offset": 1.0, "class": "heartbeat", "role": "benign",
                     "class_unmapped": True},
                    {"onset": 1.5, "offset": 3.5, "class": "speech",
                     "role": "addressed_speech"},
                    {"onset": 4.0, "offset": 5.0, "class": "speech",
                     "role": "addressed_speech"}],
         "turns": [{"start": 1.5, "end": 3.5, "reply_expected": True}]}
  noise = (0.05 * np.random.default_rng(0).normal(size=6 * SR)).astype(np.float32)
  soundfile.write(tmp_path / "long.wav", noise, SR)
  path = tmp_path / "m.jsonl"
  path.write_text(json.dumps(row) + "\n")
  report = manifest.read_manifest(path)
  assert len(report.rows) == 1 and report.num_skipped == 0
  assert report.ignored_keys == {"events.class_unmapped": 1}
  (b5,) = [c for c in suites.cases_from_manifest(report, ["B5"]) if "B5" in c.suites]
  # The declared turn and the addressed speech it covers are one turn; the other
  # addressed speech is a second.
  assert suites.case_turns(b5) == [(1.5, 3.5), (4.0, 5.0)]


def test_times_given_to_the_millisecond_at_the_clip_end_are_inside(tmp_path):
  # 7.355625 s of audio; an event annotated to its end, rounded up to the millisecond.
  soundfile.write(tmp_path / "clip.wav", np.zeros(117690, np.float32), SR)
  path = tmp_path / "m.jsonl"
  path.write_text(json.dumps({"audio": "clip.wav", "events": [
      {"onset": 0.0, "offset": 7.356, "class": "music", "role": "benign"}]}) + "\n")
  report = manifest.read_manifest(path)
  assert len(report.rows) == 1 and report.num_skipped == 0

