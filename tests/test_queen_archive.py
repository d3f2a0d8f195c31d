"""Flight of the Amazon Queen's spoken lines (corpus/queen_archive.py): the QTBL table,
speakers from names, decoding a line through `real_audio.AudioRef`, and the errors a
truncated or foreign file gets. The archives are written here, byte by byte, with MP3
lines made by soundfile; the real package is checked too when it is installed."""

import numpy as np
import pytest
from fake_recordings import mp3_bytes, queen_archive_file

from audio_interaction.corpus import queen_archive, real_audio

RATE = 11025


def _mp3(seconds: float, freq: float) -> bytes:
  t = np.arange(int(seconds * RATE)) / RATE
  return mp3_bytes(0.3 * np.sin(2 * np.pi * freq * t), RATE)


RESOURCES = (("020006J1.SB", 1.0, 300.0), ("020006P1.SB", 0.5, 600.0),
             ("C12A_003.SB", 0.8, 900.0))


@pytest.fixture()
def package(tmp_path):
  root = tmp_path / "extracted"
  resources = [(name, _mp3(seconds, freq)) for name, seconds, freq in RESOURCES]
  resources.insert(1, ("ROOM1.PCX", b"not audio at all"))
  queen_archive_file(root / queen_archive.PACKAGE / queen_archive.DATA_FILE, resources)
  return root


def test_the_table_lists_every_resource_and_the_lines_decode(package):
  path = package / queen_archive.PACKAGE / queen_archive.DATA_FILE
  table = queen_archive.read_table(path)
  assert [e.name for e in table] == ["020006J1.SB", "ROOM1.PCX", "020006P1.SB", "C12A_003.SB"]
  assert queen_archive.read_member(path, "ROOM1.PCX") == b"not audio at all"
  with pytest.raises(KeyError, match="NOPE.SB"):
    queen_archive.read_member(path, "NOPE.SB")
  voices = real_audio.amazon_queen_voices(package)
  assert [(ref.relpath.rsplit("/", 1)[1], speaker) for ref, speaker in voices] == [
      ("020006J1.SB", "amazon-queen:joe"), ("020006P1.SB", "amazon-queen:dialogue-02"),
      ("C12A_003.SB", "amazon-queen:cutscene-12")]
  for (ref, _), (_, seconds, freq) in zip(voices, sorted(RESOURCES)):
    audio = ref.load()  # MP3 at 11,025 Hz -> float32 at 16 kHz
    assert audio.dtype == np.float32
    assert len(audio) == pytest.approx(seconds * 16000, abs=0.08 * 16000)  # MP3 padding
    spectrum = np.abs(np.fft.rfft(audio))
    assert np.fft.rfftfreq(len(audio), 1 / 16000)[np.argmax(spectrum)] == pytest.approx(freq, rel=0.05)


@pytest.mark.parametrize("name, speaker", [
    ("JOE_0123.SB", "joe"), ("59001FP3.SB", "dialogue-59"), ("03XXXXJ1.SB", "joe"),
    ("C69B_012.SB", "cutscene-69"), ("COMIC_01.SB", "COMIC"), ("1000SSSS.SB", "numbered")])
def test_speakers_from_names(name, speaker):
  assert queen_archive.speaker_of(name) == speaker


def test_a_missing_package_has_no_lines(tmp_path):
  assert real_audio.amazon_queen_voices(tmp_path) == []


@pytest.mark.parametrize("damage, message", [
    (dict(magic=b"RIFF"), "not a ScummVM"),
    (dict(compression=2), "compression 2"),
    (dict(shift=5), "not after the table"),
])
def test_a_foreign_file_is_refused_by_name(tmp_path, damage, message):
  path = tmp_path / "queen.1c"
  queen_archive_file(path, [("020006J1.SB", _mp3(0.2, 300.0))], **damage)
  queen_archive.read_table.cache_clear()
  with pytest.raises(queen_archive.QueenArchiveError, match=message):
    queen_archive.read_table(path)


def test_a_truncated_download_is_named(tmp_path):
  path = tmp_path / "queen.1c"
  queen_archive_file(path, [("020006J1.SB", _mp3(0.5, 300.0)), ("020006P1.SB", _mp3(0.5, 300.0))])
  data = path.read_bytes()
  (tmp_path / "cut.1c").write_bytes(data[:-100])
  with pytest.raises(queen_archive.QueenArchiveError, match="020006P1.SB ends at byte"):
    queen_archive.read_table(tmp_path / "cut.1c")
  (tmp_path / "head.1c").write_bytes(data[:40])
  with pytest.raises(queen_archive.QueenArchiveError, match="table of 2 entries is cut short"):
    queen_archive.read_table(tmp_path / "head.1c")
  (tmp_path / "empty.1c").write_bytes(b"")
  with pytest.raises(queen_archive.QueenArchiveError, match="too short"):
    queen_archive.read_table(tmp_path / "empty.1c")


def test_the_installed_package_when_there():
  root = real_audio.default_cache() / "extracted"
  path = root / queen_archive.PACKAGE / queen_archive.DATA_FILE
  if not path.is_file():
    pytest.skip("flight-of-the-amazon-queen not fetched (audio-interaction fetch-train-audio)")
  lines = queen_archive.speech_entries(path)
  assert len(lines) == 6745
  ref, _ = real_audio.amazon_queen_voices(root)[0]
  assert ref.load().size > 16000 // 2
