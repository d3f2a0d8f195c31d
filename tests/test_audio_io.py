"""Audio loading (formats, mono mix, resampling) and every error it must report clearly."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf

from audio_interaction.audio import io as audio_io
from audio_interaction.audio.io import AudioError

RATE = 16000

FORMATS = {
    "wav": dict(format="WAV", subtype="PCM_16"),
    "flac": dict(format="FLAC", subtype="PCM_16"),
    "ogg": dict(format="OGG", subtype="VORBIS"),
    "mp3": dict(format="MP3", subtype="MPEG_LAYER_III"),
}


def _sine(rate: int, seconds: float = 1.0, freq: float = 440.0) -> np.ndarray:
  t = np.arange(int(rate * seconds)) / rate
  return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(x: np.ndarray, rate: int) -> float:
  spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
  return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)])


@pytest.mark.parametrize("ext", sorted(FORMATS))
def test_load_formats(tmp_path, ext):
  if FORMATS[ext]["format"] not in sf.available_formats():
    pytest.skip(f"this libsndfile cannot write {ext}")
  x = _sine(RATE)
  path = tmp_path / f"tone.{ext}"
  sf.write(path, x, RATE, **FORMATS[ext])
  y = audio_io.load_audio(path)  # a pathlib.Path is fine
  assert y.dtype == np.float32 and y.ndim == 1
  # Lossy codecs may add a few ms of encoder delay/padding; lossless ones may not.
  if ext in ("wav", "flac"):
    assert y.shape == x.shape
    np.testing.assert_allclose(y, x, atol=1.0 / 32768)
  else:
    assert abs(len(y) - len(x)) <= 0.05 * RATE
  assert abs(_peak_hz(y, RATE) - 440.0) <= 2.0


def test_resample_44k_stereo_to_16k_mono(tmp_path):
  rate = 44100
  left = _sine(rate, seconds=1.0, freq=440.0)
  path = tmp_path / "stereo_44k.wav"
  sf.write(path, np.stack([left, left], axis=1), rate, subtype="FLOAT")
  y = audio_io.load_audio(path, sample_rate=RATE)
  assert y.dtype == np.float32 and y.shape == (RATE,)  # 1 s stays 1 s
  assert abs(_peak_hz(y, RATE) - 440.0) <= 1.0
  # Amplitude preserved away from the edges (soxr's filter is flat at 440 Hz).
  assert abs(np.abs(y[2000:-2000]).max() - 0.5) < 0.01


def test_resample_false_accepts_right_rate_rejects_wrong(tmp_path):
  good, bad = tmp_path / "16k.wav", tmp_path / "44k.wav"
  sf.write(good, _sine(RATE), RATE)
  sf.write(bad, _sine(44100), 44100)
  assert audio_io.load_audio(good, resample=False).shape == (RATE,)
  with pytest.raises(AudioError, match=r"44k\.wav: sample rate is 44100 Hz, expected 16000 Hz"):
    audio_io.load_audio(bad, resample=False)


def test_missing_file(tmp_path):
  with pytest.raises(AudioError, match=r"nope\.wav: audio file not found"):
    audio_io.load_audio(tmp_path / "nope.wav")


def test_directory(tmp_path):
  with pytest.raises(AudioError, match="not a regular file"):
    audio_io.load_audio(tmp_path)


def test_empty_file(tmp_path):
  path = tmp_path / "empty.wav"
  path.write_bytes(b"")
  with pytest.raises(AudioError, match=r"empty\.wav: file is empty \(0 bytes\)"):
    audio_io.load_audio(path)


@pytest.mark.parametrize("content", [
    b"this is not audio at all" * 50,
    np.random.default_rng(0).bytes(4096),
], ids=["text", "random_bytes"])
def test_corrupt_file(tmp_path, content):
  path = tmp_path / "corrupt.flac"
  path.write_bytes(content)
  with pytest.raises(AudioError, match=r"corrupt\.flac: could not decode audio"):
    audio_io.load_audio(path)


def test_truncated_file(tmp_path):
  path = tmp_path / "cut.flac"
  sf.write(path, _sine(RATE), RATE)
  path.write_bytes(path.read_bytes()[:30])  # header only, cut mid-metadata
  with pytest.raises(AudioError, match=r"cut\.flac"):
    audio_io.load_audio(path)


def test_zero_length_audio(tmp_path):
  path = tmp_path / "zero.wav"
  sf.write(path, np.zeros(0, np.float32), RATE)
  assert path.stat().st_size > 0  # a valid header, no samples
  with pytest.raises(AudioError, match="zero-length audio"):
    audio_io.load_audio(path)


def test_nan_and_inf_samples(tmp_path):
  x = _sine(RATE, seconds=0.1)
  x[[5, 17, 99]] = np.nan
  x[40] = np.inf
  path = tmp_path / "nan.wav"
  sf.write(path, x, RATE, subtype="FLOAT")
  with pytest.raises(AudioError) as info:
    audio_io.load_audio(path)
  message = str(info.value)
  assert "nan.wav" in message
  assert "3 NaN values at indices [5, 17, 99]" in message
  assert "1 Inf value at index [40]" in message
  assert isinstance(info.value, ValueError)


# validate_samples ---------------------------------------------------------------------


def test_validate_accepts_good_samples():
  chunk = np.zeros((2, 2560), np.float32)
  assert audio_io.validate_samples(chunk, sample_rate=RATE, expected_length=2560) is chunk
  assert audio_io.validate_samples(jnp.zeros(10)) is not None


def test_validate_wrong_chunk_length():
  with pytest.raises(AudioError) as info:
    audio_io.validate_samples(np.zeros((1, 2000), np.float32), expected_length=2560,
                              where="model.step")
  assert str(info.value) == (
      "model.step: chunk has 2000 samples, expected 2560 (160 ms at 16000 Hz)")


def test_validate_non_finite_lists_indices():
  x = np.zeros((2, 100), np.float32)
  x[1, 3] = np.nan
  x[0, 7] = -np.inf
  with pytest.raises(AudioError, match=r"1 NaN value at index \[\(1, 3\)\] and "
                     r"1 Inf value at index \[\(0, 7\)\]"):
    audio_io.validate_samples(x)
  many = np.full(50, np.nan, np.float32)
  with pytest.raises(AudioError, match=r"50 NaN values at indices \[0, 1, 2, 3, 4, \.\.\.\]"):
    audio_io.validate_samples(many)


@pytest.mark.parametrize("samples, kwargs, message", [
    (np.zeros(10, np.int16), {}, r"dtype int16, expected floating point .* x / 32768"),
    (np.zeros((1, 2, 3), np.float32), {}, r"rank 3 \(shape \(1, 2, 3\)\), expected rank 1 or 2"),
    (np.zeros((2, 5), np.float32), {"expected_ndim": 1}, r"rank 2 .* expected rank 1"),
    (np.float32(0.0), {}, "rank 0"),
    (np.zeros(10, np.float32), {"sample_rate": 44100},
     "sample rate is 44100 Hz, expected 16000 Hz"),
    (np.zeros(0, np.float32), {}, r"samples are empty"),
    ([0.0, 0.1], {}, "must be an array, got list"),
])
def test_validate_rejects(samples, kwargs, message):
  with pytest.raises(AudioError, match=message):
    audio_io.validate_samples(samples, **kwargs)


def test_validate_inside_jit_checks_shapes_only():
  def step(chunk):
    audio_io.validate_samples(chunk, expected_length=2560, where="step")
    return chunk * 2

  jitted = jax.jit(step)
  assert jitted(jnp.zeros((1, 2560))).shape == (1, 2560)
  with pytest.raises(AudioError, match="chunk has 2000 samples"):
    jitted(jnp.zeros((1, 2000)))
