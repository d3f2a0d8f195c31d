"""Files are decoded and resampled block by block: the result equals whole-file
resampling, block boundaries leave no click, and memory does not grow with the file."""

from __future__ import annotations

import asyncio
import tracemalloc

import numpy as np
import pytest
import soundfile
import soxr

from audio_interaction.audio import io as audio_io
from audio_interaction.corpus import effects
from audio_interaction.infer.sources import FileSource

RATE = 16000
# Streamed and whole-file resampling run the same soxr filter with the same state, so
# they agree to float32 rounding; 1e-6 of full scale is far below 16-bit PCM (3e-5).
TOLERANCE = 1e-6


def stereo(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
  """[frames, 2] float32: two tones and a little noise, an odd number of frames."""
  rng = np.random.default_rng(seed)
  n = int(seconds * rate) | 1
  t = np.arange(n) / rate
  left = 0.4 * np.sin(2 * np.pi * 330 * t) + 0.01 * rng.standard_normal(n)
  right = 0.3 * np.sin(2 * np.pi * 1250 * t + 0.3)
  return np.stack([left, right], 1).astype(np.float32)


async def collect(source) -> list[np.ndarray]:
  return [piece async for piece in source]


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
@pytest.mark.parametrize("block_seconds", [0.02, 0.0317, 1.0])
def test_streamed_resampling_equals_whole_file_resampling(tmp_path, rate, block_seconds):
  audio = stereo(3.3, rate)
  path = tmp_path / "x.flac"
  soundfile.write(path, audio, rate, subtype="PCM_24")
  decoded = soundfile.read(path, dtype="float32")[0].mean(axis=1, dtype=np.float32)
  whole = soxr.resample(decoded, rate, RATE, quality="HQ")
  blocks = list(audio_io.stream_audio(path, RATE, block_seconds=block_seconds))
  streamed = np.concatenate(blocks)
  assert len(blocks) > 1 and streamed.dtype == np.float32
  assert streamed.shape == whole.shape == (round(len(decoded) * RATE / rate),)
  np.testing.assert_allclose(streamed, whole, atol=TOLERANCE, rtol=0)
  # The library's other entry points are the same resampler.
  np.testing.assert_allclose(audio_io.load_audio(path), whole, atol=TOLERANCE, rtol=0)
  np.testing.assert_allclose(effects.resample(decoded, rate, RATE), whole, atol=TOLERANCE, rtol=0)


def test_block_boundaries_do_not_click():
  rate, n, block = 44100, 44100 * 2 + 1, 882  # 20 ms blocks at 44.1 kHz
  t = np.arange(n) / rate
  tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
  resampler = audio_io.Resampler(rate, RATE)
  streamed = np.concatenate([resampler(tone[i:i + block]) for i in range(0, n, block)]
                            + [resampler.flush()])
  ideal = 0.5 * np.sin(2 * np.pi * 440 * np.arange(len(streamed)) / RATE)
  inner = slice(RATE // 10, -RATE // 10)  # away from the stream's own start and end
  assert np.abs(streamed - ideal)[inner].max() < 1e-3
  # The step from sample to sample is as smooth across a block boundary as inside one.
  steps = np.abs(np.diff(streamed))[inner]
  assert steps.max() <= 2 * np.pi * 440 / RATE * 0.5 * 1.01
  # What the check guards against: resampling each block on its own clicks at every boundary.
  naive = np.concatenate([soxr.resample(tone[i:i + block], rate, RATE)
                          for i in range(0, n, block)])
  assert np.abs(naive - ideal[:len(naive)])[inner].max() > 0.05


def test_a_file_source_at_44k_stereo_streams_in_flat_memory(tmp_path):
  path = tmp_path / "long.flac"
  seconds = 120.0
  with soundfile.SoundFile(path, "w", 44100, 2, subtype="PCM_16") as file:
    for k in range(int(seconds)):
      file.write(stereo(1.0, 44100, seed=k)[:44100])
  tracemalloc.start()
  try:
    pieces = []

    async def run():
      async for piece in FileSource(path, speed=float("inf")):
        pieces.append(len(piece))  # lengths only: the test keeps no audio
    asyncio.run(run())
    _, peak = tracemalloc.get_traced_memory()
  finally:
    tracemalloc.stop()
  assert sum(pieces) == round(seconds * 44100 * RATE / 44100)
  # Decoding the file whole took 108 MB per minute of audio (float32 stereo, the mix-down
  # and the resampler's copies); streamed, a few blocks and the resampler's state.
  decoded_mb = seconds * 44100 * 2 * 4 / 2 ** 20
  assert peak / 2 ** 20 < 5.0 < decoded_mb / 8, peak


def test_a_file_source_equals_load_audio(tmp_path):
  path = tmp_path / "x.ogg"
  soundfile.write(path, stereo(2.7, 48000), 48000, format="OGG", subtype="VORBIS")
  streamed = np.concatenate(asyncio.run(collect(FileSource(path, speed=float("inf")))))
  np.testing.assert_allclose(streamed, audio_io.load_audio(path), atol=TOLERANCE, rtol=0)


def test_non_finite_samples_in_a_block_are_reported_with_their_index(tmp_path):
  audio = np.zeros((22050, 2), np.float32)
  audio[12345, 1] = np.nan
  path = tmp_path / "nan.wav"
  soundfile.write(path, audio, 22050, subtype="FLOAT")
  with pytest.raises(audio_io.AudioError, match=r"nan\.wav: .*NaN/Inf .*\[12345\]"):
    list(audio_io.stream_audio(path, RATE))


def test_resample_false_refuses_another_rate_before_decoding(tmp_path):
  path = tmp_path / "x.wav"
  soundfile.write(path, stereo(0.5, 44100), 44100)
  with pytest.raises(audio_io.AudioError, match=r"x\.wav: sample rate is 44100 Hz, expected 16000"):
    FileSource(path, speed=float("inf"), resample=False)  # at construction, not when iterated
  with pytest.raises(audio_io.AudioError, match="sample rate is 44100 Hz"):
    audio_io.stream_audio(path, RATE, resample=False).__next__()
  assert FileSource(path, speed=float("inf")).info.sample_rate == 44100  # resample=True: fine
