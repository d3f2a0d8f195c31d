"""Log-mel front end: against librosa in float64, streaming == offline, chunk assembly.

Tolerances (absolute, on the normalised features):
  * float64 JAX vs librosa float64 reference: 1e-9 (observed ~1e-15).
  * float32 JAX vs the float64 reference: 1e-5 for "whisper" (values ~[-1, 1.5]),
    1e-4 for "natural" (values ~[-14, 6]); observed ~2e-6 and ~2e-5.
  * streaming vs offline: 1e-12 in float64, 1e-5 in float32 (same arithmetic, only
    the FFT batch shapes differ).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from audio_interaction import config_lib
from audio_interaction.audio import chunking
from audio_interaction.audio import features

F64_ATOL = 1e-9
F32_ATOL = {"whisper": 1e-5, "natural": 1e-4}
STREAM_ATOL = {jnp.float64: 1e-12, jnp.float32: 1e-5}

CONFIGS = {
    "default": features.LogMelConfig(),
    # n_fft a whole number of hops, other mel range, 128 mels (Whisper large-v3).
    "n512_h128": features.LogMelConfig(n_fft=512, hop_length=128, n_mels=128, fmin=20.0,
                                       fmax=7600.0),
    # no overlap: the streaming state is empty.
    "no_overlap": features.LogMelConfig(n_fft=160, hop_length=160, n_mels=40),
}


def _signal(rng: np.random.Generator, batch: int, n: int, rate: int = 16000) -> np.ndarray:
  """Noise + a sine, with a silent stretch, so the log floor is exercised too."""
  t = np.arange(n) / rate
  x = 0.05 * rng.standard_normal((batch, n)) + 0.3 * np.sin(2 * np.pi * 440.0 * t)
  x[:, n // 3:n // 3 + 1600] = 0.0
  return x


def _numpy_log(mel: np.ndarray, config: features.LogMelConfig) -> np.ndarray:
  if config.log_style == "whisper":
    return (np.maximum(np.log10(np.maximum(mel, 1e-10)), config.log_floor) + 4.0) / 4.0
  return np.log(mel + 1e-6)


def _librosa_reference(x: np.ndarray, config: features.LogMelConfig) -> np.ndarray:
  """float64 reference: librosa on the causally left-padded signal, [B, frames, mels]."""
  padded = np.pad(x, [(0, 0), (config.n_fft - config.hop_length, 0)])
  mel = librosa.feature.melspectrogram(
      y=padded, sr=config.sample_rate, n_fft=config.n_fft, hop_length=config.hop_length,
      window="hann", center=False, power=2.0, n_mels=config.n_mels, fmin=config.fmin,
      fmax=config.fmax, htk=False, norm="slaney", dtype=np.float64)
  return _numpy_log(np.swapaxes(mel, -1, -2), config)


@pytest.mark.parametrize("log_style", ["whisper", "natural"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_matches_librosa_float64(name, log_style):
  config = dataclasses.replace(CONFIGS[name], log_style=log_style)
  x = _signal(np.random.default_rng(0), batch=2, n=40 * config.hop_length)
  expected = _librosa_reference(x, config)
  with jax.enable_x64(True):
    got = features.log_mel(jnp.asarray(x, jnp.float64), config)
    assert got.dtype == jnp.float64
    got = np.asarray(got)
  assert got.shape == (2, 40, config.n_mels)
  np.testing.assert_allclose(got, expected, rtol=0, atol=F64_ATOL)


@pytest.mark.parametrize("log_style", ["whisper", "natural"])
def test_float32_close_to_float64_reference(log_style):
  config = features.LogMelConfig(log_style=log_style)
  x = _signal(np.random.default_rng(1), batch=2, n=16000)
  expected = _librosa_reference(x, config)
  got = features.log_mel(jnp.asarray(x, jnp.float32), config)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got), expected, rtol=0, atol=F32_ATOL[log_style])


def test_whisper_floor_and_scale():
  config = features.LogMelConfig(log_floor=-8.0)
  frames = features.log_mel(jnp.zeros((1, 1600)), config)
  # Silence sits at the floor: (-8 + 4) / 4.
  np.testing.assert_allclose(np.asarray(frames), -1.0)


def test_frame_alignment_is_causal():
  """Frame i depends on samples [i*hop - (n_fft - hop), i*hop + hop) only."""
  config = features.LogMelConfig()
  x = np.zeros((1, 3200), np.float32)
  x[0, 1100] = 1.0  # late in hop 6: frames 6, 7 and 8 (from 1040) all see it
  frames = np.asarray(features.log_mel(jnp.asarray(x), config))
  touched = np.nonzero((frames > -1.0).any(axis=-1)[0])[0]
  assert touched.tolist() == [6, 7, 8]


def test_160ms_chunk_gives_16_frames_and_from_config():
  audio = config_lib.base_config().audio
  config = features.LogMelConfig.from_config(audio)
  assert config == features.LogMelConfig(
      sample_rate=audio.sample_rate, n_mels=audio.n_mels, n_fft=audio.n_fft,
      hop_length=audio.hop_length, fmin=audio.fmin, fmax=audio.fmax,
      log_style=audio.log_style, log_floor=audio.log_floor)
  chunk = audio.sample_rate * audio.chunk_ms // 1000
  assert chunk == 2560
  assert features.log_mel(jnp.zeros((3, chunk)), config).shape == (3, 16, 80)
  front = features.StreamingLogMel(config)
  state, frames = front.step(front.init_state(3), jnp.zeros((3, chunk)))
  assert state.shape == (3, 240) and frames.shape == (3, 16, 80)


def _whisper_numpy(x: np.ndarray, config: features.LogMelConfig) -> np.ndarray:
  """Whisper's log_mel_spectrogram re-derived in numpy (torch.stft center=True, reflect)."""
  half, hop = config.n_fft // 2, config.hop_length
  padded = np.pad(x, [(0, 0), (half, half)], mode="reflect")
  num_frames = 1 + (padded.shape[-1] - config.n_fft) // hop
  index = np.arange(num_frames)[:, None] * hop + np.arange(config.n_fft)[None, :]
  window = np.hanning(config.n_fft + 1)[:-1]  # periodic Hann
  power = np.abs(np.fft.rfft(padded[:, index] * window, axis=-1)) ** 2
  power = power[:, :-1]  # Whisper drops the last frame
  filters = librosa.filters.mel(sr=config.sample_rate, n_fft=config.n_fft,
                                n_mels=config.n_mels, dtype=np.float64)
  logs = np.log10(np.maximum(power @ filters.T, 1e-10))
  logs = np.maximum(logs, logs.max(axis=(-2, -1), keepdims=True) - 8.0)
  return (logs + 4.0) / 4.0


@pytest.mark.parametrize("n", [16000, 16123])  # also a length that is not whole hops
def test_whisper_offline_recipe(n):
  config = features.LogMelConfig()
  x = _signal(np.random.default_rng(2), batch=2, n=n)
  x[1] *= 1e-3  # per-example max: a quiet clip gets its own clamp
  expected = _whisper_numpy(x, config)
  with jax.enable_x64(True):
    got = np.asarray(features.whisper_offline_log_mel(jnp.asarray(x, jnp.float64), config))
  assert got.shape == (2, n // 160, 80)
  np.testing.assert_allclose(got, expected, rtol=0, atol=F64_ATOL)
  got32 = features.whisper_offline_log_mel(jnp.asarray(x, jnp.float32), config)
  np.testing.assert_allclose(np.asarray(got32), expected, rtol=0, atol=F32_ATOL["whisper"])


# Chunk lengths (in hops) drawn from a few values, so the jitted step compiles a
# handful of shapes rather than one per chunk (the tests stay fast on 2 cores).
HOP_CHOICES = (1, 2, 3, 7, 16)


def _random_split(rng: np.random.Generator, total_hops: int, hop: int) -> list[int]:
  """Random chunk lengths, each a multiple of ``hop``, summing to ``total_hops * hop``."""
  sizes = []
  while total_hops:
    take = int(rng.choice([c for c in HOP_CHOICES if c <= total_hops]))
    sizes.append(take * hop)
    total_hops -= take
  return sizes


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streaming_equals_offline(seed, dtype):
  config = features.LogMelConfig(log_style="whisper" if seed % 2 else "natural")
  front = features.StreamingLogMel(config)
  rng = np.random.default_rng(seed)
  x = _signal(rng, batch=2, n=160 * 150)
  sizes = _random_split(rng, 150, config.hop_length)
  with jax.enable_x64(dtype == jnp.float64):
    signal = jnp.asarray(x, dtype)
    expected = np.asarray(features.log_mel(signal, config))
    step = jax.jit(front.step)
    state = front.init_state(2, dtype)
    outputs, start = [], 0
    for size in sizes:
      state, frames = step(state, signal[:, start:start + size])
      assert frames.shape == (2, size // 160, 80) and frames.dtype == dtype
      outputs.append(np.asarray(frames))
      start += size
    np.testing.assert_array_equal(np.asarray(state), np.asarray(signal[:, -front.context:]))
  np.testing.assert_allclose(np.concatenate(outputs, axis=1), expected, rtol=0,
                             atol=STREAM_ATOL[dtype])


@pytest.mark.parametrize("name", ["n512_h128", "no_overlap"])
def test_streaming_other_geometries(name):
  config = CONFIGS[name]
  front = features.StreamingLogMel(config)
  rng = np.random.default_rng(3)
  hop = config.hop_length
  x = jnp.asarray(_signal(rng, batch=1, n=hop * 60), jnp.float32)
  step = jax.jit(front.step)
  state, outputs, start = front.init_state(1), [], 0
  for size in _random_split(rng, 60, hop):
    state, frames = step(state, x[:, start:start + size])
    outputs.append(frames)
    start += size
  np.testing.assert_allclose(np.concatenate(outputs, axis=1),
                             np.asarray(features.log_mel(x, config)), rtol=0, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_chunk_assembler_then_stream_equals_offline(seed):
  """Pieces of arbitrary length -> fixed chunks -> jitted steps == offline features."""
  config = features.LogMelConfig()
  chunk_samples = 2560
  rng = np.random.default_rng(seed)
  total = 20000  # not a whole number of chunks: the last one is flushed with padding
  x = _signal(rng, batch=1, n=total)[0].astype(np.float32)
  cuts = np.sort(rng.integers(0, total, size=12))
  pieces = np.split(x, cuts)  # includes empty pieces and ones longer than a chunk
  pieces.insert(1, x[:0])
  assembler = chunking.ChunkAssembler(chunk_samples)
  front = features.StreamingLogMel(config)
  step = jax.jit(front.step)
  state, outputs, chunks = front.init_state(1), [], []
  for piece in pieces:
    for chunk in assembler.push(piece):
      assert chunk.shape == (chunk_samples,) and chunk.dtype == np.float32
      chunks.append(chunk)
      state, frames = step(state, chunk[None])
      outputs.append(np.asarray(frames))
  assert assembler.num_pending == total % chunk_samples
  assert assembler.samples_pushed == total
  (last,) = assembler.flush(pad=True)
  assert last.shape == (chunk_samples,) and assembler.num_pending == 0
  chunks.append(last)
  state, frames = step(state, last[None])
  outputs.append(np.asarray(frames))
  assert step._cache_size() == 1  # one chunk shape, one compilation

  padded = np.pad(x, (0, (-total) % chunk_samples))
  np.testing.assert_array_equal(np.concatenate(chunks), padded)
  expected = np.asarray(features.log_mel(jnp.asarray(padded)[None], config))
  np.testing.assert_allclose(np.concatenate(outputs, axis=1), expected, rtol=0,
                             atol=STREAM_ATOL[jnp.float32])


def test_chunk_assembler_flush_without_pad_and_empty():
  assembler = chunking.ChunkAssembler(100)
  assert assembler.flush() == []
  assert len(assembler.push(np.ones(250, np.float32))) == 2
  (tail,) = assembler.flush(pad=False)
  np.testing.assert_array_equal(tail, np.ones(50, np.float32))
  assert assembler.flush() == []


def test_jitted_step_does_not_recompile():
  front = features.StreamingLogMel(features.LogMelConfig())
  traces = []

  def counted(state, chunk):
    traces.append(1)  # runs only while tracing
    return front.step(state, chunk)

  step = jax.jit(counted, donate_argnums=0)
  state = front.init_state(2)
  rng = np.random.default_rng(0)
  for _ in range(5):
    state, _ = step(state, jnp.asarray(rng.standard_normal((2, 2560)), jnp.float32))
  assert len(traces) == 1 and step._cache_size() == 1


def test_log_mel_inside_user_jit():
  config = features.LogMelConfig()
  x = jnp.asarray(_signal(np.random.default_rng(4), batch=1, n=3200), jnp.float32)
  outer = jax.jit(lambda y: features.log_mel(2.0 * y, config))
  np.testing.assert_allclose(np.asarray(outer(x)),
                             np.asarray(features.log_mel(2.0 * x, config)), rtol=0, atol=1e-6)


def test_errors():
  config = features.LogMelConfig()
  front = features.StreamingLogMel(config)
  with pytest.raises(ValueError, match="2000 samples, not a multiple of hop_length=160"):
    features.log_mel(jnp.zeros((1, 2000)), config)
  with pytest.raises(TypeError, match="dtype int16"):
    features.log_mel(jnp.zeros((1, 1600), jnp.int16), config)
  with pytest.raises(ValueError, match="chunk has 2000 samples"):
    front.step(front.init_state(1), jnp.zeros((1, 2000)))
  with pytest.raises(ValueError, match="state has shape"):
    front.step(front.init_state(2), jnp.zeros((1, 1600)))
  with pytest.raises(ValueError, match="chunk"):
    front.step(front.init_state(1), jnp.zeros((1600,)))
  with jax.enable_x64(True):
    with pytest.raises(TypeError, match="differs from state dtype"):
      front.step(front.init_state(1, jnp.float32), jnp.zeros((1, 1600), jnp.float64))
  with pytest.raises(ValueError, match="need more than n_fft // 2"):
    features.whisper_offline_log_mel(jnp.zeros((1, 200)), config)
  with pytest.raises(ValueError, match="log_style"):
    features.LogMelConfig(log_style="db")
  with pytest.raises(ValueError, match="hop_length"):
    features.LogMelConfig(n_fft=100, hop_length=160)
  with pytest.raises(ValueError, match="fmax"):
    features.LogMelConfig(fmax=9000.0)
  with pytest.raises(ValueError, match="chunk_samples"):
    chunking.ChunkAssembler(0)
  assembler = chunking.ChunkAssembler(160)
  with pytest.raises(ValueError, match="mono 1-D"):
    assembler.push(np.zeros((2, 10), np.float32))
  with pytest.raises(TypeError, match="int16"):
    assembler.push(np.zeros(10, np.int16))
