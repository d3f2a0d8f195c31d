"""`lead-in`: a manifest's recordings played later in the stream, quiet noise before
each and every annotation shifted by the same lead."""

import json

import numpy as np
import pytest
import soundfile

from audio_interaction.apps import cli
from audio_interaction.corpus import effects, lead_in
from audio_interaction.corpus.manifest import read_manifest
from audio_interaction.eval import suites

RATE = 16000


@pytest.fixture
def manifest(tmp_path):
  rng = np.random.default_rng(0)
  audio = (0.1 * rng.normal(size=3 * RATE)).astype(np.float32)
  soundfile.write(tmp_path / "a.wav", audio, RATE)
  rows = [
      {"audio_filepath": "a.wav", "id": "whole",
       "events": [{"onset": 0.5, "offset": 1.0, "class": "dog_bark", "role": "alert"}],
       "turns": [{"start": 1.2, "end": 2.0, "reply_expected": True}], "reply": "hello",
       "reply_time": 2.5},
      {"audio": "a.wav", "id": "segment", "offset": 1.0, "duration": 1.5,
       "words": [["go", 0.1, 0.4], ["on", 0.5, 0.9]], "recognisable_after": 0.9},
      {"audio": "a.wav", "id": "labelled", "duration": 1.0, "label": "smoke_alarm"},
  ]
  path = tmp_path / "m.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return path, audio


def test_leads_parse_and_bad_ones_are_named():
  assert lead_in.Lead.parse("5") == lead_in.Lead(seconds=5.0)
  assert lead_in.Lead.parse("random:30") == lead_in.Lead(up_to=30.0)
  assert str(lead_in.Lead.parse("random:30")) == "random:30"
  for text in ("soon", "random:0", "-3", "random:"):
    with pytest.raises(ValueError, match=f"lead {text!r}"):
      lead_in.Lead.parse(text)


def test_a_fixed_lead_plays_each_recording_later_with_its_annotations(manifest, tmp_path):
  path, audio = manifest
  summary = lead_in.write_lead_in_manifest(path, lead_in.Lead(seconds=2.0), tmp_path / "out",
                                           progress=False)
  assert summary["rows"] == 3 and summary["leads_s"] == [2.0, 2.0, 2.0]
  rows = read_manifest(summary["manifest"]).rows
  original = read_manifest(path).rows
  assert [r.name for r in rows] == ["whole", "segment", "labelled"]
  assert [r.lead_in for r in rows] == [2.0, 2.0, 2.0]
  for new, old in zip(rows, original):
    samples = new.load()
    np.testing.assert_allclose(samples[2 * RATE:], old.load(), atol=1e-4)  # the recording
    assert effects.rms_db(samples[:2 * RATE]) == pytest.approx(lead_in.LEAD_IN_LEVEL_DB, abs=0.5)
    assert new.duration == pytest.approx(old.duration + 2.0, abs=1e-3)
  whole, segment, labelled = rows
  assert [(e.onset, e.offset) for e in whole.events] == [(2.5, 3.0)]
  assert [(t.start, t.end) for t in whole.turns] == [(3.2, 4.0)]
  assert whole.reply_time == 4.5 and whole.reply == "hello"
  assert [(w.start, w.end) for w in segment.words] == [(2.1, 2.4), (2.5, 2.9)]
  assert segment.recognisable_after == pytest.approx(2.9) and segment.offset == 0.0
  # A whole-clip label is the sound after the lead-in, not the quiet before it.
  assert labelled.label is None and [(e.onset, e.offset, e.label, e.role)
                                     for e in labelled.events] == [(2.0, 3.0, "smoke_alarm", "alert")]
  assert json.loads((tmp_path / "out" / "lead_in.json").read_text())["leads_s"] == [2.0] * 3


def test_the_lead_in_is_heard_but_not_counted_as_benign_time(manifest, tmp_path):
  path, _ = manifest
  later = lead_in.write_lead_in_manifest(path, lead_in.Lead(seconds=4.0), tmp_path / "out",
                                         progress=False)["manifest"]
  benign = {}
  for name, manifest_path in (("before", path), ("later", later)):
    cases = suites.cases_from_manifest(str(manifest_path), ["B6"])
    benign[name] = {c.name.split(":", 1)[1].split("#")[0]: c.annotations.benign_seconds
                    for c in cases}
    lengths = {c.name.split(":", 1)[1].split("#")[0]: len(c.audio) for c in cases}
  assert benign["later"]["whole"] == pytest.approx(benign["before"]["whole"])
  assert benign["later"]["labelled"] == pytest.approx(benign["before"]["labelled"], abs=0.01)
  assert lengths["whole"] >= 7 * RATE  # the stream does play the lead-in

def test_approximate_word_times_and_sound_onsets_start_after_the_lead_in(tmp_path):
  """Rows without word times get them spread over the voiced region; a lead-in's quiet
  room is not voice: the words (and an unannotated sound's onset) move by the lead."""
  from audio_interaction.corpus.manifest import ManifestSounds, ManifestSpeech
  rng = np.random.default_rng(1)
  audio = np.zeros(3 * RATE, np.float32)
  audio[RATE // 2:2 * RATE] = 0.1 * rng.normal(size=3 * RATE // 2)  # "speech" at 0.5-2.0 s
  soundfile.write(tmp_path / "said.wav", audio, RATE)
  rows = [{"audio": "said.wav", "id": "said", "transcript": "hello there my friend"},
          {"audio": "said.wav", "id": "rang", "duration": 3.0, "label": "smoke_alarm",
           "lead_in": 0.0}]
  path = tmp_path / "m.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  later = lead_in.write_lead_in_manifest(path, lead_in.Lead(seconds=4.0), tmp_path / "out",
                                         progress=False)["manifest"]
  words = {}
  for name, manifest_path in (("before", path), ("later", later)):
    case, = suites.cases_from_manifest(str(manifest_path), ["B2"])
    words[name] = [(w.start, w.end) for w in case.timeline.utterances[0].words]
    said = read_manifest(manifest_path).rows[0]
    clip_words = ManifestSpeech([said]).clip(said).words
    assert [(w.start, w.end) for w in clip_words] == words[name]
  assert words["before"][0][0] == pytest.approx(0.5, abs=0.02)
  assert words["later"] == pytest.approx([(a + 4.0, b + 4.0) for a, b in words["before"]],
                                         abs=0.02)
  # A labelled row that keeps its label and declares its own lead-in: the sound's onset
  # (and so when it is recognisable) is found after the lead.
  room = effects.set_level(effects.colored_noise(np.random.default_rng(2), 4 * RATE, 1.0),
                          lead_in.LEAD_IN_LEVEL_DB, active_only=False)
  led = np.concatenate([room, audio]).astype(np.float32)
  soundfile.write(tmp_path / "led.wav", led, RATE)
  (tmp_path / "s.jsonl").write_text(json.dumps(
      {"audio": "led.wav", "label": "smoke_alarm", "lead_in": 4.0}) + "\n")
  row, = read_manifest(tmp_path / "s.jsonl").rows
  clip = ManifestSounds([row]).sample("smoke_alarm", np.random.default_rng(0))
  assert clip.recognisable_after == pytest.approx(
      4.5 + suites.RECOGNISABLE_AFTER_S["smoke_alarm"], abs=0.02)
  case, = suites.cases_from_manifest(str(tmp_path / "s.jsonl"), ["B6"])
  assert case.timeline.sounds[0].start == pytest.approx(4.5, abs=0.02)


def test_random_leads_are_seeded_draws_below_the_maximum(manifest, tmp_path):
  path, _ = manifest
  leads = [lead_in.write_lead_in_manifest(path, lead_in.Lead(up_to=10.0), tmp_path / name,
                                          seed=seed, progress=False)["leads_s"]
           for name, seed in (("a", 3), ("b", 3), ("c", 4))]
  assert leads[0] == leads[1] and leads[0] != leads[2]
  drawn = json.loads((tmp_path / "a" / "lead_in.json").read_text())["leads_s"]
  assert len(drawn) == 3 and all(0.0 <= s < 10.0 for s in drawn)
  rows = read_manifest(tmp_path / "a" / "m.jsonl").rows
  assert rows[0].events[0].onset == pytest.approx(0.5 + drawn[0])


def test_the_cli_refuses_a_bad_lead_and_overwriting_the_manifest(manifest, capsys):
  path, _ = manifest
  assert cli.main(["lead-in", "--manifest", str(path), "--lead", "later",
                   "--out", str(path.parent / "x")]) == 2
  assert "lead 'later'" in capsys.readouterr().err
  assert cli.main(["lead-in", "--manifest", str(path), "--lead", "1",
                   "--out", str(path.parent)]) == 2
  assert "would overwrite the manifest" in capsys.readouterr().err
  assert cli.main(["lead-in", "--manifest", str(path), "--lead", "1",
                   "--out", str(path.parent / "ok")]) == 0
  broken = path.parent / "broken.jsonl"
  broken.write_text(path.read_text() + "{not json\n")
  assert cli.main(["lead-in", "--manifest", str(broken), "--lead", "1",
                   "--out", str(path.parent / "b")]) == 2
  assert "broken.jsonl line 4: not JSON" in capsys.readouterr().err
  broken.write_text(path.read_text() + "5\n")  # JSON, but no row
  assert cli.main(["lead-in", "--manifest", str(broken), "--lead", "1",
                   "--out", str(path.parent / "b")]) == 2
  assert "broken.jsonl line 4: expected a JSON object" in capsys.readouterr().err


def test_a_lead_in_longer_than_the_recording_is_a_bad_row(manifest, tmp_path):
  path, _ = manifest
  bad = tmp_path / "bad.jsonl"
  bad.write_text(json.dumps({"audio": "a.wav", "label": "dog_bark", "lead_in": 9.0}) + "\n" +
                 json.dumps({"audio": "a.wav", "label": "dog_bark", "lead_in": -1}) + "\n" +
                 json.dumps({"audio": "a.wav", "label": "dog_bark", "lead_in": 1.5}) + "\n")
  report = read_manifest(bad)
  assert report.skipped == {"bad_field": 2} and [r.lead_in for r in report.rows] == [1.5]


def test_unaddressed_rows_are_b6_cases_of_benign_speech_after_their_lead(manifest, tmp_path):
  path, _ = manifest
  assert cli.main(["lead-in", "--manifest", str(path), "--lead", "3", "--unaddressed",
                   "--max-rows", "2", "--out", str(tmp_path / "out")]) == 0
  rows = read_manifest(tmp_path / "out" / "m.jsonl").rows
  assert [r.name for r in rows] == ["whole", "segment"]  # the first two only
  for row in rows:  # one benign speech event from the lead's end to the recording's end
    assert [(e.onset, e.offset, e.label, e.role) for e in row.events] == [
        (3.0, pytest.approx(row.duration), "speech", "benign")]
    assert row.turns == [] or all(t.start >= 3.0 for t in row.turns)
  cases = suites.cases_from_manifest(str(tmp_path / "out" / "m.jsonl"), ["B6"])
  benign = {c.name.split(":", 1)[1].split("#")[0]: c.annotations.benign_seconds for c in cases}
  # The speech is benign time, the lead is not: 3 s of "whole" and 1.5 s of "segment".
  assert benign == {"whole": pytest.approx(3.0, abs=0.01), "segment": pytest.approx(1.5, abs=0.01)}
  assert json.loads((tmp_path / "out" / "lead_in.json").read_text())["unaddressed"] is True
  with pytest.raises(ValueError, match="max_rows=0"):
    lead_in.write_lead_in_manifest(path, lead_in.Lead(seconds=1.0), tmp_path / "x", max_rows=0,
                                   progress=False)


def test_a_channel_plays_each_recording_through_it_with_its_annotations_unchanged(manifest,
                                                                                 tmp_path):
  path, _ = manifest
  plain = lead_in.write_lead_in_manifest(path, lead_in.Lead(seconds=0.5), tmp_path / "plain",
                                         progress=False, seed=3)
  phone = lead_in.write_lead_in_manifest(path, lead_in.Lead(seconds=0.5), tmp_path / "phone",
                                         progress=False, seed=3, channel="telephone")
  assert phone["channel"] == "telephone"
  assert json.loads((tmp_path / "phone" / "lead_in.json").read_text())["channel"] == "telephone"
  plain_rows, phone_rows = (read_manifest(s["manifest"]).rows for s in (plain, phone))
  # The same rows, the same times: only the sound changed.
  assert [json.loads(line) for line in (tmp_path / "phone" / "m.jsonl").read_text().splitlines()] \
      == [json.loads(line) for line in (tmp_path / "plain" / "m.jsonl").read_text().splitlines()]
  for index, (clean, heard) in enumerate(zip(plain_rows, phone_rows)):
    clean_samples, heard_samples = clean.load(), heard.load()
    assert heard_samples.size == clean_samples.size
    expected = effects.telephone(clean_samples, np.random.default_rng([3, index]))
    # Both copies were written as 16-bit audio, and mu-law rounds a level either way.
    error = np.sqrt(np.mean((heard_samples - expected) ** 2))
    assert error < 0.01 * np.sqrt(np.mean(expected ** 2))
    spectrum = np.abs(np.fft.rfft(heard_samples)) ** 2
    frequencies = np.fft.rfftfreq(heard_samples.size, 1 / RATE)
    clean_spectrum = np.abs(np.fft.rfft(clean_samples)) ** 2
    # White noise keeps half its energy above 4 kHz; a phone line keeps next to none.
    assert spectrum[frequencies > 4000].sum() < 1e-3 * spectrum.sum()
    assert clean_spectrum[frequencies > 4000].sum() > 0.3 * clean_spectrum.sum()
  # A row's channel is drawn from its own seed: the first row alone sounds the same.
  first = lead_in.write_lead_in_manifest(path, lead_in.Lead(seconds=0.5), tmp_path / "first",
                                         progress=False, seed=3, channel="telephone",
                                         max_rows=1)
  np.testing.assert_array_equal(read_manifest(first["manifest"]).rows[0].load(),
                                phone_rows[0].load())


def test_every_channel_keeps_length_and_an_unknown_one_is_named(manifest, tmp_path, capsys):
  path, _ = manifest
  for name in effects.CHANNELS:
    summary = lead_in.write_lead_in_manifest(path, lead_in.Lead(seconds=0.0), tmp_path / name,
                                             progress=False, channel=name, max_rows=1)
    row, = read_manifest(summary["manifest"]).rows
    assert row.load().size == 3 * RATE
  with pytest.raises(ValueError, match="channel 'radio': choose from"):
    lead_in.write_lead_in_manifest(path, lead_in.Lead(seconds=0.0), tmp_path / "radio",
                                   progress=False, channel="radio")
  # The CLI offers exactly these channels.
  lead_parser = next(action for action in cli.build_parser()._subparsers._group_actions
                     if action.choices and "lead-in" in action.choices).choices["lead-in"]
  offered = next(a.choices for a in lead_parser._actions if a.dest == "channel")
  assert sorted(offered) == sorted(effects.CHANNELS)
  for name in effects.CHANNELS:
    assert cli.main(["lead-in", "--manifest", str(path), "--lead", "0", "--channel", name,
                     "--max-rows", "1", "--out", str(tmp_path / f"cli_{name}")]) == 0
  assert cli.main(["lead-in", "--manifest", str(path), "--lead", "0", "--channel", "radio",
                   "--out", str(tmp_path / "cli_radio")]) == 2
  assert "invalid choice: 'radio'" in capsys.readouterr().err
