"""Real-corpus adapters: JSONL manifests and TFDS-style examples feed the 28 builders.

The manifests are written here into tmp_path: tones and noise as sound events,
espeak-ng speech (a required test dependency) as utterances, plus one broken row of
each kind.
"""

from __future__ import annotations

import json
import logging
import pathlib
import subprocess

import numpy as np
import pytest
import soundfile

from audio_interaction.corpus import effects, manifest, tasks
from audio_interaction.corpus import speech as tts_lib
from audio_interaction.stream_format import SAMPLE_RATE
from audio_interaction.corpus.clips import SpeechClip
from audio_interaction.corpus.timeline import render, snap
from audio_interaction.data.tokenizer import normalize_text

SR = SAMPLE_RATE


def _beeps(rate: int = SR, lead: float = 0.2) -> np.ndarray:
  """A smoke-alarm-like clip: `lead` s of silence, then three 0.5 s beeps 0.5 s apart."""
  t = np.arange(int(0.5 * rate)) / rate
  beep = 0.4 * np.sin(2 * np.pi * 3100 * t)
  gap = np.zeros(int(0.5 * rate))
  return np.concatenate([np.zeros(int(lead * rate)), beep, gap, beep, gap, beep]).astype(np.float32)


def _noise(rate: int, seconds: float, seed: int = 0) -> np.ndarray:
  return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * rate))).astype(np.float32)


def _write_manifest(path: pathlib.Path, rows: list) -> pathlib.Path:
  lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
  path.write_text("\n".join(lines) + "\n")
  return path


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> pathlib.Path:
  """Audio files: good ones at 16 kHz and 22.05 kHz, a corrupt one, one with NaNs."""
  root = tmp_path_factory.mktemp("manifest")
  (root / "clips").mkdir()
  soundfile.write(root / "clips" / "alarm.wav", _beeps(), SR, subtype="FLOAT")  # exact
  soundfile.write(root / "clips" / "rain.flac", _noise(22050, 1.5), 22050)  # resampled
  soundfile.write(root / "clips" / "hum.wav", _noise(SR, 1.0, seed=1), SR)
  nan = _noise(SR, 0.5)
  nan[100] = np.nan
  soundfile.write(root / "clips" / "nan.wav", nan, SR, subtype="FLOAT")
  (root / "clips" / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk")
  return root


def _good_rows(root: pathlib.Path) -> list[dict]:
  return [
      {"audio": "clips/alarm.wav", "label": "smoke_alarm"},
      {"audio": str(root / "clips" / "rain.flac"), "label": "rain"},  # absolute path
      {"audio": "clips/hum.wav", "label": "rain", "recognisable_after": 0.25},
      {"audio": "clips/hum.wav", "transcript": "Is it 2 o'clock?",
       "words": [["Is", 0.1, 0.3], ["it", 0.35, 0.5], ["2", 0.5, 0.7], ["o'clock?", 0.75, 0.95]],
       "speaker": "s1", "reply": "no", "reply_time": 0.95},
  ]


def test_good_rows_load_and_serve_sounds(corpus_dir):
  report = manifest.read_manifest(_write_manifest(corpus_dir / "good.jsonl", _good_rows(corpus_dir)))
  assert report.skipped == {} and len(report.rows) == 4
  assert report.resampled == 1  # rain.flac is at 22.05 kHz
  rain = report.rows[1]
  assert rain.duration == pytest.approx(1.5, abs=1e-3) and len(rain.load()) == round(1.5 * SR)
  question = report.rows[3]
  assert (question.transcript, question.voice, question.reply, question.reply_time) == (
      "Is it 2 o'clock?", "manifest:s1", "no", 0.95)

  sounds = manifest.ManifestSounds(report.rows)
  assert sounds.labels() == ("rain", "smoke_alarm")
  alarm = sounds.sample("smoke_alarm", np.random.default_rng(0))
  np.testing.assert_array_equal(alarm.audio, _beeps())
  # Default: first onset (0.2 s of lead silence) + the class's documented delay.
  assert alarm.recognisable_after == pytest.approx(0.2 + manifest.RECOGNISABLE_AFTER_S["smoke_alarm"],
                                                   abs=0.01)
  given = {sounds.sample("rain", np.random.default_rng(s)).recognisable_after for s in range(8)}
  assert 0.25 in given and len(given) == 2  # the row's own value, or the default
  with pytest.raises(KeyError, match="no manifest row has the label 'siren'"):
    sounds.sample("siren", np.random.default_rng(0))


BAD_ROWS = {
    # reason -> rows that must be skipped for it
    "missing_file": [{"audio": "clips/gone.wav", "label": "rain"},
                     {"audio": "/nonexistent/x.flac", "transcript": "hello"}],
    "corrupt_audio": [{"audio": "clips/corrupt.wav", "label": "rain"}],
    "nan_audio": [{"audio": "clips/nan.wav", "label": "rain"}],
    "empty_transcript": [{"audio": "clips/hum.wav", "transcript": " ?! "}],
    "malformed_json": ['{"audio": "clips/hum.wav", "label": ', "[1, 2]"],
    # An unknown key is ignored (one warning), so a typo'd key leaves no annotation.
    "no_annotation": [{"audio": "clips/hum.wav"},
                      {"audio": "clips/hum.wav", "transcipt": "typo in the key"}],
    "bad_field": [{"audio": "clips/hum.wav", "transcript": "one two",
                   "words": [["one", 0.1, 0.2], ["three", 0.3, 0.4]]},  # not the transcript
                  {"audio": "clips/hum.wav", "transcript": "late", "words": [["late", 0.5, 3.0]]},
                  {"audio": "clips/hum.wav", "label": "rain", "reply_time": "soon"}],
}


def test_bad_rows_are_skipped_and_counted(corpus_dir, caplog):
  rows = _good_rows(corpus_dir)
  for bad in BAD_ROWS.values():
    rows += bad
  path = _write_manifest(corpus_dir / "mixed.jsonl", rows[:2] + [""] + rows[2:])  # a blank line
  with caplog.at_level(logging.WARNING, logger=manifest.__name__):
    report = manifest.read_manifest(path)
  assert [r.source for r in report.rows] == [
      str(corpus_dir / r["audio"]) for r in _good_rows(corpus_dir)]
  assert report.skipped == {reason: len(bad) for reason, bad in BAD_ROWS.items()}
  # One warning per reason, with its count.
  skip_messages = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
  assert len(skip_messages) == len(BAD_ROWS)
  assert any("skipped 2 row(s): missing_file (first at line 6" in m for m in skip_messages)


@pytest.mark.parametrize("reason", ["missing_file", "corrupt_audio", "nan_audio",
                                    "empty_transcript", "malformed_json", "no_annotation"])
def test_strict_mode_names_the_line(corpus_dir, reason):
  path = _write_manifest(corpus_dir / f"strict_{reason}.jsonl",
                         _good_rows(corpus_dir)[:2] + BAD_ROWS[reason][:1])
  with pytest.raises(manifest.ManifestError, match=f"line 3: {reason}: "):
    manifest.read_manifest(path, strict=True)


def test_wrong_sample_rate_without_resampling(corpus_dir):
  path = _write_manifest(corpus_dir / "rates.jsonl", _good_rows(corpus_dir))
  report = manifest.read_manifest(path, resample=False)
  assert report.skipped == {"wrong_sample_rate": 1} and len(report.rows) == 3
  with pytest.raises(manifest.ManifestError, match="line 2: wrong_sample_rate: .*22050 Hz"):
    manifest.read_manifest(path, resample=False, strict=True)


def test_speech_exact_and_approximate_word_times(corpus_dir):
  rows = _good_rows(corpus_dir)[3:] + [{"audio": "clips/alarm.wav", "transcript": "beep beep beeeep"}]
  source = manifest.ManifestSpeech(manifest.read_manifest(
      _write_manifest(corpus_dir / "speech.jsonl", rows)).rows)
  assert source.voices() == ("manifest", "manifest:s1")
  assert [r.transcript for r in source.utterances()] == ["Is it 2 o'clock?", "beep beep beeeep"]

  exact = source.say("is it two o'clock", np.random.default_rng(0))  # normalized match
  assert not exact.approximate_timing and exact.voice == "manifest:s1"
  assert [(w.text, w.start, w.end) for w in exact.words][2] == ("2", 0.5, 0.7)

  approx = source.say("Beep, beep, beeeep!", np.random.default_rng(0))
  assert approx.approximate_timing
  # Spread over the voiced region (0.2 s to the end of the last beep), by letters.
  starts = [w.start for w in approx.words]
  ends = [w.end for w in approx.words]
  assert starts[0] == pytest.approx(0.2, abs=0.01) and ends[-1] == pytest.approx(2.7, abs=0.01)
  assert starts[1:] == ends[:-1]
  assert (ends[2] - starts[2]) / (ends[0] - starts[0]) == pytest.approx(6 / 4)

  with pytest.raises(KeyError, match="no manifest row has the transcript 'hello there'"):
    source.say("Hello there", np.random.default_rng(0))
  only_exact = manifest.ManifestSpeech(source.utterances(), exact_timing_only=True)
  with pytest.raises(KeyError):
    only_exact.say("beep beep beeeep", np.random.default_rng(0))


def test_tfds_style_examples():
  pcm = (_noise(SR, 0.5) * 32768).astype(np.int16)
  librispeech_like = [
      {"audio": pcm.astype(np.int64), "text": b"HELLO WORLD", "speaker_id": np.int64(19),
       "id": b"19-198-0001"},
      {"audio": pcm, "text": b""},
  ]
  report = manifest.from_tfds_examples(librispeech_like, sample_rate=SR, speaker_key="speaker_id")
  assert report.skipped == {"empty_transcript": 1}
  (row,) = report.rows
  assert (row.transcript, row.speaker, row.source, row.where) == (
      "HELLO WORLD", "19", "tfds:0", "example 0")
  np.testing.assert_allclose(row.load(), pcm / 32768.0, atol=1e-7)
  clip = manifest.ManifestSpeech(report.rows).say("hello world", np.random.default_rng(0))
  assert clip.approximate_timing and [w.text for w in clip.words] == ["HELLO", "WORLD"]

  names = ["dog", "sneezing", "clock_alarm"]  # an ESC-50-style ClassLabel
  nan = _noise(44100, 0.2)
  nan[3] = np.nan
  esc50_like = [
      {"audio": _noise(44100, 1.0), "label": np.int64(0)},
      {"audio": _noise(44100, 1.0), "label": np.int64(1)},  # no class of ours
      {"audio": np.stack([_noise(44100, 1.0)] * 2, axis=1), "label": np.int64(2)},  # stereo
      {"audio": nan, "label": np.int64(0)},
  ]
  report = manifest.from_tfds_examples(esc50_like, sample_rate=44100, label_names=names,
                                       label_map=manifest.ESC50_LABELS)
  assert report.skipped == {"unmapped_label": 1, "nan_audio": 1}
  assert [r.label for r in report.rows] == ["dog_bark", "alarm_clock"]
  assert report.resampled == 2 and all(len(r.load()) == SR for r in report.rows)
  assert manifest.ManifestSounds(report.rows).labels() == ("alarm_clock", "dog_bark")
  with pytest.raises(manifest.ManifestError, match="example 1: unmapped_label"):
    manifest.from_tfds_examples(esc50_like, sample_rate=44100, label_names=names,
                                label_map=manifest.ESC50_LABELS, strict=True)


# ------------------------------------------------------------ builders on manifest audio

class _Recorder:
  """Wraps a speech source and records the texts a builder asks for: the prompts a
  manifest must cover. Builders draw their choices from their own generator, so the
  texts do not depend on the source."""

  def __init__(self, inner):
    self.inner, self.texts = inner, []

  def say(self, text: str, rng: np.random.Generator, voice: str | None = None) -> SpeechClip:
    self.texts.append(text)
    return self.inner.say(text, rng, voice)

  def voices(self) -> tuple[str, ...]:
    return self.inner.voices()


def _prompts(name: str, seed: int, speech_source, sound_source) -> list[str]:
  recorder = _Recorder(speech_source)
  tasks.build(name, seed, recorder, sound_source)
  return recorder.texts


def _check_utterances_are_manifest_audio(timeline, report) -> int:
  """Returns how many utterances had exact word times (and so had them checked)."""
  by_text = {normalize_text(r.transcript): r for r in report.rows if r.transcript}
  timed = 0
  for utterance in timeline.utterances:
    row = by_text[utterance.text]
    np.testing.assert_array_equal(utterance.audio, row.load())
    if row.words is not None:  # exact times, shifted to the utterance's start
      assert [w.end for w in utterance.words] == [snap(utterance.start + w.end) for w in row.words]
      timed += 1
  return timed


def test_builders_compose_from_manifest_audio(corpus_dir, speech, sounds):
  """asr_clean / chat_single with ManifestSpeech, alert_alarm with ManifestSounds."""
  chat_texts = _prompts("chat_single", 5, speech, sounds)
  asr_texts = _prompts("asr_clean", 5, speech, sounds)
  rows = _good_rows(corpus_dir)[:3]
  # Chat questions with exact word times (the TTS's own), ASR sentences straight from
  # the espeak-ng command line at 22.05 kHz, without word times (approximate).
  tts = tts_lib.MultiVoiceSpeech(engines=("espeak",), config=tts_lib.RenderConfig(effects=False))
  for i, text in enumerate(chat_texts):
    clip = tts.say(text, np.random.default_rng(i))
    soundfile.write(corpus_dir / "clips" / f"chat{i}.wav", clip.audio, SR)
    rows.append({"audio": f"clips/chat{i}.wav", "transcript": text,
                 "words": [[w.text, w.start, w.end] for w in clip.words]})
  for i, text in enumerate(asr_texts):
    wav = corpus_dir / "clips" / f"asr{i}.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), text], check=True, capture_output=True)
    rows.append({"audio": f"clips/asr{i}.wav", "transcript": text})
  report = manifest.read_manifest(_write_manifest(corpus_dir / "builders.jsonl", rows))
  assert report.skipped == {} and report.resampled == 1 + len(asr_texts)
  man_speech, man_sounds = manifest.ManifestSpeech(report.rows), manifest.ManifestSounds(report.rows)

  chat = tasks.build("chat_single", 5, man_speech, man_sounds)
  assert [u.text for u in chat.utterances] == [normalize_text(t) for t in chat_texts]
  assert _check_utterances_are_manifest_audio(chat, report) == len(chat.utterances) > 0
  (reply,) = chat.replies
  assert reply.ready_time == chat.utterances[0].speech_end  # the question's last word ended

  asr = tasks.build("asr_clean", 5, man_speech, man_sounds)
  _check_utterances_are_manifest_audio(asr, report)
  words = [normalize_text(w.text) for u in asr.utterances for w in u.content_words]
  assert [r.text for r in asr.replies] == [w for w in words if w]
  assert len(render(asr)) >= asr.num_samples

  for seed in range(10):  # a stream with an alert (some are benign-only negatives)
    alert = tasks.build("alert_alarm", seed, man_speech, man_sounds)
    if alert.replies:
      break
  (event,) = [e for e in alert.sounds if e.role == "alert"]
  np.testing.assert_array_equal(event.audio, _beeps())
  # Recognisable at the first beep's onset (0.2 s) + the smoke alarm's default delay.
  assert alert.replies[0].ready_time == pytest.approx(event.start + 0.2 + 1.0, abs=0.01)
  assert {e.label for e in alert.sounds} <= {"smoke_alarm", "rain"}
  assert effects.rms_db(render(alert)) > -80


# ------------------------------------------------ hostile lines: skipped, never a traceback

def test_hostile_lines_are_counted_skips_with_file_and_line(corpus_dir, caplog):
  """A non-UTF-8 line, 100k nested brackets, a huge integer and a line that is not an
  object are skipped and counted; the rows around them are still read."""
  good = [json.dumps(r).encode() for r in _good_rows(corpus_dir)[:2]]
  lines = [good[0],
           b'{"audio": "clips/hum.wav", "label": "r\xe9\xff\xfein"}',  # latin-1, not UTF-8
           b"[" * 100_000 + b"]" * 100_000,
           b'{"audio": "clips/hum.wav", "label": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
           b'{"audio": "clips/hum.wav", "reply_time": ' + b"9" * 5000 + b"}",  # > int digits limit
           b'"just a string"', b"null",
           good[1]]
  path = corpus_dir / "hostile.jsonl"
  path.write_bytes(b"\n".join(lines) + b"\n")
  with caplog.at_level(logging.WARNING, logger=manifest.__name__):
    report = manifest.read_manifest(path)
  assert [r.label for r in report.rows] == ["smoke_alarm", "rain"]  # read to the end
  assert report.skipped == {"bad_encoding": 1, "malformed_json": 5}
  messages = [r.getMessage() for r in caplog.records]
  assert any(str(path) in m and "bad_encoding (first at line 2" in m for m in messages)
  assert any(str(path) in m and "skipped 5 row(s): malformed_json (first at line 3" in m
             for m in messages)
  with pytest.raises(manifest.ManifestError, match=r"hostile.jsonl, line 2: bad_encoding: "):
    manifest.read_manifest(path, strict=True)
  path.write_bytes(lines[0] + b"\n" + lines[2] + b"\n")
  with pytest.raises(manifest.ManifestError, match=r"line 2: malformed_json: .*nested"):
    manifest.read_manifest(path, strict=True)


def test_a_utf8_bom_is_not_a_bad_row(corpus_dir):
  path = corpus_dir / "bom.jsonl"
  path.write_bytes(b"\xef\xbb\xbf" + json.dumps(_good_rows(corpus_dir)[0]).encode() + b"\n")
  report = manifest.read_manifest(path)
  assert report.skipped == {} and len(report.rows) == 1


def test_a_directory_or_missing_manifest_is_a_clear_error(corpus_dir, tmp_path):
  with pytest.raises(manifest.ManifestError, match=f"{tmp_path}.*is a directory"):
    manifest.read_manifest(tmp_path)
  with pytest.raises(manifest.ManifestError, match="nope.jsonl.*not found"):
    manifest.read_manifest(tmp_path / "nope.jsonl")


def test_an_unknown_label_is_counted_not_kept(corpus_dir, caplog):
  rows = _good_rows(corpus_dir)[:1] + [{"audio": "clips/hum.wav", "label": "smoke alarm"},
                                       {"audio": "clips/hum.wav", "label": "toaster"}]
  path = _write_manifest(corpus_dir / "labels.jsonl", rows)
  with caplog.at_level(logging.WARNING, logger=manifest.__name__):
    report = manifest.read_manifest(path)
  assert [r.label for r in report.rows] == ["smoke_alarm"]
  assert report.skipped == {"unknown_label": 2}
  assert any("skipped 2 row(s): unknown_label (first at line 2: label 'smoke alarm'" in
             r.getMessage() for r in caplog.records)
  with pytest.raises(manifest.ManifestError, match="line 2: unknown_label: .*'smoke alarm'"):
    manifest.read_manifest(path, strict=True)
  # TFDS examples without a label map get the same check.
  report = manifest.from_tfds_examples([{"audio": _noise(SR, 0.5), "label": b"toaster"}],
                                       sample_rate=SR)
  assert report.skipped == {"unknown_label": 1}
