"""Whisper tiny.en's transcripts of untranscribed speech (train/pseudo_label.py), for real:
the shipped weights, CTranslate2's decoder, flite speech of known text."""

import json
import subprocess

import numpy as np
import pytest
import soundfile as sf

from audio_interaction import config_lib
from audio_interaction.audio import io as audio_io
from audio_interaction.corpus import real_audio, real_speech
from audio_interaction.eval import metrics

pytest.importorskip("ctranslate2")
pseudo_label = pytest.importorskip("audio_interaction.train.pseudo_label")

SENTENCES = ("the kitchen light is on", "turn the radio off please")


def _flite(tmp_path, text, name):
  path = tmp_path / f"{name}.wav"
  subprocess.run(["flite", "-voice", "slt", "-t", text, "-o", str(path)], check=True)
  return path


@pytest.fixture(scope="module")
def transcriber():
  config = config_lib.load_config(str(config_lib.experiments_dir() / "whisper_tiny.py"))
  return pseudo_label.FullWindowTranscriber(config)


def test_whisper_writes_what_flite_said(transcriber, tmp_path):
  clips = [audio_io.load_audio(_flite(tmp_path, text, i)) for i, text in enumerate(SENTENCES)]
  got = transcriber.transcribe(clips, batch=2, progress=False)
  assert len(got) == 2
  assert metrics.word_error_rate(list(SENTENCES), [t.text for t in got]).wer <= 0.2
  assert all(-1.0 < t.score <= 0 for t in got)
  # Silence is not read as these words; what Whisper makes up there ("you"), it is too
  # unsure of for real_speech to keep.
  (quiet,) = transcriber.transcribe([np.zeros(16000, np.float32)], progress=False)
  assert metrics.word_error_rate([SENTENCES[0]], [quiet.text]).wer >= 0.8
  assert real_speech.usable_label(quiet.text, quiet.score) is None


def test_clips_whisper_cannot_take_are_named(transcriber):
  with pytest.raises(ValueError, match="clip 1: 0.00 s"):
    transcriber.transcribe([np.ones(100, np.float32), np.zeros(0, np.float32)], progress=False)
  with pytest.raises(ValueError, match="clip 0: 31.00 s"):
    transcriber.transcribe([np.zeros(31 * 16000, np.float32)], progress=False)
  with pytest.raises(audio_io.AudioError, match="clip 0: samples have rank 2"):
    transcriber.transcribe([np.zeros((16000, 2), np.float32)], progress=False)
  with pytest.raises(audio_io.AudioError, match="clip 1: samples contain 1 NaN"):
    transcriber.transcribe([np.ones(100, np.float32), np.array([0.0, np.nan], np.float32)],
                           progress=False)


def test_label_voices_writes_one_row_per_english_clip(tmp_path, caplog):
  voices = tmp_path / "hedgewars-data/usr/share/games/hedgewars/Data/Sounds/voices"
  for pack, text in (("Pirate", SENTENCES[0]), ("Default_es", SENTENCES[1])):
    (voices / pack).mkdir(parents=True)
    audio = audio_io.load_audio(_flite(tmp_path, text, pack))
    # A real pack's rate and channels: 44.1 kHz stereo.
    audio = audio_io.resample(audio, 16000, 44100)
    sf.write(str(voices / pack / "Hello.ogg"), np.stack([audio, 0.8 * audio], axis=1), 44100,
             format="OGG")
  # Neither a broken file nor one longer than Whisper's window gets a (wrong) row.
  (voices / "Pirate" / "Broken.ogg").write_bytes(b"not an ogg file")
  sf.write(str(voices / "Pirate" / "Long.ogg"), np.zeros(31 * 16000, np.float32), 16000,
           format="OGG")
  config = config_lib.load_config(str(config_lib.experiments_dir() / "whisper_tiny.py"))
  out = tmp_path / "labels.jsonl"
  voices = real_audio.hedgewars_english_voices(tmp_path)
  assert pseudo_label.label_voices(voices, out, config) == 1
  assert "2 clips get no transcript" in caplog.text
  assert "Pirate/Broken.ogg" in caplog.text and "Pirate/Long.ogg: 31.0 s" in caplog.text
  (row,) = [json.loads(line) for line in out.read_text().splitlines()]
  assert row["audio"] == "hedgewars-data/hedgewars/Data/Sounds/voices/Pirate/Hello.ogg"
  assert row["speaker"] == "hedgewars-data:Pirate" and row["language"] == "en"
  assert metrics.word_error_rate([SENTENCES[0]], [row["text"]]).wer <= 0.2
  with pytest.raises(FileNotFoundError, match="fetch-train-audio"):
    pseudo_label.label_voices(real_audio.hedgewars_english_voices(tmp_path / "nothing"), out,
                              config)
  assert real_audio.hedgewars_english_voices(tmp_path)[0][1] == "hedgewars-data:Pirate"


def test_the_command_labels_the_game_lines_inside_their_archive(tmp_path, capsys):
  # A line of Flight of the Amazon Queen as the package stores it (MP3 at 11,025 Hz in
  # queen.1c), through the command a user runs.
  from fake_recordings import mp3_bytes, queen_archive_file
  from audio_interaction.apps import cli
  from audio_interaction.corpus import queen_archive
  root = tmp_path / "extracted"
  audio = audio_io.resample(audio_io.load_audio(_flite(tmp_path, SENTENCES[1], "line")),
                            16000, 11025)
  queen_archive_file(root / queen_archive.PACKAGE / queen_archive.DATA_FILE,
                     [("020006J1.SB", mp3_bytes(audio, 11025))])
  out = tmp_path / "queen.jsonl"
  assert cli.main(["label-train-speech", "--source", "amazon-queen-en", "--root", str(root),
                   "--out", str(out)]) == 0
  assert f"1 clips transcribed -> {out}" in capsys.readouterr().out
  (row,) = [json.loads(line) for line in out.read_text().splitlines()]
  assert row["audio"].endswith("queen.1c/020006J1.SB")
  assert row["speaker"] == "amazon-queen:joe"
  assert metrics.word_error_rate([SENTENCES[1]], [row["text"]]).wer <= 0.2
  # A root without the game: a one-line error, not a traceback.
  assert cli.main(["label-train-speech", "--source", "amazon-queen-en", "--root",
                   str(tmp_path / "none"), "--out", str(out)]) == 1
  assert "fetch-train-audio" in capsys.readouterr().err
