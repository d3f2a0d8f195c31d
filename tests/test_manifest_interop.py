"""Manifests in other formats' field names (NeMo, Common Voice), annotated long recordings
(events, turns, instruction, open alert classes) and the one reference normaliser."""

from __future__ import annotations

import json
import logging
import pathlib

import numpy as np
import pytest
import soundfile

from audio_interaction.corpus import manifest
from audio_interaction.data.tokenizer import normalize_text
from audio_interaction.stream_format import SAMPLE_RATE as SR


def _write(path: pathlib.Path, rows: list[dict]) -> pathlib.Path:
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return path


@pytest.fixture()
def folder(tmp_path) -> pathlib.Path:
  ramp = (np.arange(4 * SR) / (4 * SR) * 0.5).astype(np.float32)  # 4 s, value = time / 8
  soundfile.write(tmp_path / "long.wav", ramp, SR, subtype="FLOAT")
  return tmp_path


@pytest.mark.parametrize("text, expected", [
    ("<s> hello world </s>", "hello world"),  # not "s hello world s"
    ("<s>", ""),
    ("[noise] Two plus 2? <unk>", "two plus two"),
    ("OK [LAUGHTER] then <sil>", "ok then"),
    ("It's 3.5 metres, isn't it?", "it's three point five metres isn't it"),
    ("a < b > c", "a b c"),  # a lone angle bracket is not a tag
])
def test_normaliser_hand_cases(text, expected):
  assert normalize_text(text) == expected
  assert normalize_text(expected) == expected  # idempotent


def test_common_schemas_are_read_and_unknown_keys_ignored_with_one_warning(folder, caplog):
  path = _write(folder / "m.jsonl", [
      {"audio_filepath": "long.wav", "text": "<s> hello there </s>", "duration": 1.0,
       "offset": 2.0, "set": "dev"},  # NeMo, plus a key of the user's own
      {"path": "long.wav", "sentence": "second row", "id": "cv-2", "set": "dev", "lang": "en"},
      {"audio": "long.wav", "transcript": "third", "text": "third"},  # agreeing aliases
      {"audio": "long.wav", "transcript": "one", "text": "two"},  # disagreeing: bad
  ])
  with caplog.at_level(logging.WARNING, logger=manifest.__name__):
    report = manifest.read_manifest(path)
  assert len(report.rows) == 3 and report.skipped == {"bad_field": 1}
  assert report.ignored_keys == {"set": 2, "lang": 1}
  ignored = [r.getMessage() for r in caplog.records if "ignored unknown keys" in r.getMessage()]
  assert len(ignored) == 1 and "'set' (2 row(s))" in ignored[0] and "line 1" in ignored[0]
  nemo, cv, third = report.rows
  assert normalize_text(nemo.transcript) == "hello there"
  assert nemo.duration == pytest.approx(1.0) and nemo.offset == 2.0
  # The segment [2 s, 3 s) of the ramp: its first sample is 2 s in (value 0.25).
  segment = nemo.load()
  assert len(segment) == SR and segment[0] == pytest.approx(0.25, abs=1e-4)
  assert cv.id == "cv-2" and cv.name == "cv-2" and cv.duration == pytest.approx(4.0)
  assert third.transcript == "third"


def test_a_segment_beyond_the_file_is_a_bad_field(folder):
  path = _write(folder / "m.jsonl", [{"audio": "long.wav", "text": "x", "offset": 3.5,
                                      "duration": 1.0}])
  assert manifest.read_manifest(path).skipped == {"bad_field": 1}


def test_annotated_events_turns_and_open_alert_classes(folder, caplog):
  row = {"audio": "long.wav", "id": "kitchen", "instruction": "Tell me about the kettle.",
         "alert_classes": ["kettle_whistle"],
         "events": [
             {"onset": 2.0, "offset": 3.0, "class": "kettle_whistle"},  # declared in the row
             {"onset": 0.5, "offset": 1.0, "class": "dog", "role": "benign"},
             {"onset": 1.0, "offset": 1.5, "class": "Knock"},  # declared in the class file
             {"onset": 1.5, "offset": 1.8, "class": "toaster"},  # unknown, no role
             {"onset": 3.0, "offset": 3.5, "class": "smoke_alarm"},  # known: alert
             {"onset": 3.2, "offset": 3.4, "class": "speech", "role": "barge_in"}],
         "turns": [{"start": 0.1, "end": 0.9, "reply_expected": True},
                   {"start": 1.0, "end": 1.4, "reply_expected": False}]}
  path = _write(folder / "m.jsonl", [row])
  with caplog.at_level(logging.WARNING, logger=manifest.__name__):
    report = manifest.read_manifest(path, alert_classes=("Knock",))
  (parsed,) = report.rows
  roles = {e.label: e.role for e in parsed.events}
  assert roles == {"kettle_whistle": "alert", "dog": "benign", "Knock": "alert",
                   "toaster": manifest.UNKNOWN_ROLE, "smoke_alarm": "alert",
                   "speech": "barge_in"}
  assert [e.onset for e in parsed.events] == sorted(e.onset for e in parsed.events)
  assert report.unknown_classes == {"toaster": 1}
  assert any("toaster" in r.getMessage() and "not scored" in r.getMessage()
             for r in caplog.records)
  assert parsed.turns == (manifest.Turn(0.1, 0.9, True), manifest.Turn(1.0, 1.4, False))
  assert parsed.instruction == "Tell me about the kettle."
  # Without the class file, "Knock" has no role either: counted, never benign.
  assert manifest.read_manifest(path).unknown_classes == {"Knock": 1, "toaster": 1}


@pytest.mark.parametrize("bad", [
    {"events": [{"onset": 2.0, "offset": 1.0, "class": "dog", "role": "benign"}]},
    {"events": [{"onset": 1.0, "offset": 9.0, "class": "dog", "role": "benign"}]},  # past end
    {"events": [{"onset": 1.0, "offset": 2.0, "class": "dog", "role": "loud"}]},
    {"events": [{"onset": 1.0, "class": "dog"}]},
    {"turns": [{"start": 1.0, "end": 2.0, "reply_expected": "yes"}]},
    {"label": "dog", "alert_classes": "dog"},
])
def test_bad_annotations_are_bad_fields(folder, bad):
  path = _write(folder / "m.jsonl", [{"audio": "long.wav", **bad}])
  assert manifest.read_manifest(path).skipped == {"bad_field": 1}


def test_a_label_declared_as_an_alert_class_is_kept(folder):
  path = _write(folder / "m.jsonl", [{"audio": "long.wav", "label": "Knock"},
                                     {"audio": "long.wav", "label": "door",
                                      "alert_classes": ["door"]}])
  report = manifest.read_manifest(path)
  assert report.skipped == {"unknown_label": 1} and [r.label for r in report.rows] == ["door"]
  classes = folder / "classes.txt"
  classes.write_text("# my alerts\nKnock\n\n")
  assert manifest.read_classes(classes) == ("Knock",)
  assert len(manifest.read_manifest(path, alert_classes=manifest.read_classes(classes)).rows) == 2
  (folder / "classes.json").write_text('["a", "b"]')
  assert manifest.read_classes(folder / "classes.json") == ("a", "b")
  with pytest.raises(manifest.ManifestError, match="nope.txt"):
    manifest.read_classes(folder / "nope.txt")


def test_tfds_keyword_labels_become_transcripts():
  examples = [{"audio": np.full(1600, 1000, np.int16), "label": 1},
              {"audio": np.full(1600, 1000, np.int16), "label": 0}]
  report = manifest.from_tfds_examples(
      examples, sample_rate=SR, label_names=["_silence_", "yes"], label_map={"yes": "yes"},
      label_as_transcript=True)
  assert [r.transcript for r in report.rows] == ["yes"] and report.skipped == {"unmapped_label": 1}
  assert report.rows[0].label is None
