"""Audio files in, validated float32 mono samples out; and checks on samples in flight.

`load_audio` decodes with soundfile (wav, flac, ogg, and mp3 with libsndfile >=
1.1), falls back to librosa/audioread for anything else, mixes to mono and
resamples with librosa (soxr). `validate_samples` is the one place that decides
whether an array is acceptable audio; the model step and the live loop call it so
that a bad chunk fails loudly with a message naming the problem and the value,
rather than turning into NaN features several layers later.

Every failure is an `AudioError` (a `ValueError`) whose message names the file or
the caller and the problem.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import jax
import librosa
import numpy as np
import soundfile as sf

_MAX_LISTED = 5  # offending indices shown in a message


class AudioError(ValueError):
  """Audio that cannot be used: missing, undecodable, empty, non-finite, wrong shape/rate."""


def _decode(path: str) -> tuple[np.ndarray, int]:
  """Decodes ``path`` to ``([frames, channels] float32, sample_rate)``."""
  try:
    data, rate = sf.read(path, dtype="float32", always_2d=True)
    return data, int(rate)
  except (sf.SoundFileError, RuntimeError) as soundfile_error:
    first_error = soundfile_error
  # Formats libsndfile cannot read (e.g. m4a, or mp3 on an old libsndfile) go through
  # librosa, which tries audioread backends (ffmpeg, gstreamer) if installed.
  try:
    with warnings.catch_warnings():
      # librosa warns before falling back to audioread; we report failures ourselves.
      warnings.simplefilter("ignore")
      data, rate = librosa.load(path, sr=None, mono=False, dtype=np.float32)
  except Exception as fallback_error:  # audioread raises many unrelated types
    # audioread's NoBackendError has an empty message.
    detail = str(fallback_error) or "no decoder backend installed"
    raise AudioError(
        f"{path}: could not decode audio (corrupt or unsupported format). "
        f"soundfile: {first_error}; librosa/audioread: "
        f"{type(fallback_error).__name__}: {detail}"
    ) from fallback_error
  data = np.asarray(data, np.float32)
  data = data[:, None] if data.ndim == 1 else data.T  # librosa gives [channels, frames]
  return data, int(rate)


def load_audio(path: str | os.PathLike[str], sample_rate: int = 16000,
               resample: bool = True) -> np.ndarray:
  """Loads an audio file as float32 mono samples at ``sample_rate``.

  Args:
    path: a wav/flac/ogg/mp3 file (others if an audioread backend is installed).
    sample_rate: the rate wanted, Hz.
    resample: if False, a file at another rate is an error instead of being
      resampled (soxr "high quality" via librosa).

  Returns:
    ``[N]`` float32 samples, channels averaged; ``N > 0``.

  Raises:
    AudioError: file missing, not a file, empty, undecodable, zero-length audio,
      NaN/Inf samples, or at the wrong rate with ``resample=False``.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise AudioError(f"{path}: audio file not found")
  if not os.path.isfile(path):
    raise AudioError(f"{path}: not a regular file")
  if os.path.getsize(path) == 0:
    raise AudioError(f"{path}: file is empty (0 bytes)")
  data, rate = _decode(path)
  if data.shape[0] == 0:
    raise AudioError(f"{path}: file decodes to zero-length audio (0 samples at {rate} Hz)")
  samples = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
  # Checked before resampling, whose filter would smear one NaN over the whole clip.
  validate_samples(samples, where=path)
  if rate != sample_rate:
    if not resample:
      raise AudioError(
          f"{path}: sample rate is {rate} Hz, expected {sample_rate} Hz "
          "(pass resample=True to convert)"
      )
    samples = librosa.resample(samples, orig_sr=rate, target_sr=sample_rate, res_type="soxr_hq")
  return np.ascontiguousarray(samples, dtype=np.float32)


def to_pcm16(samples: np.ndarray) -> bytes:
  """float[n] samples in [-1, 1] -> int16 PCM bytes (clipped), what C audio libraries take."""
  scaled = np.round(np.asarray(samples, np.float64) * 32767.0)
  return np.clip(scaled, -32768, 32767).astype(np.int16).tobytes()


def _format_indices(mask: np.ndarray) -> str:
  where = np.argwhere(mask)
  shown = [int(i[0]) if len(i) == 1 else tuple(int(j) for j in i) for i in where[:_MAX_LISTED]]
  more = ", ..." if len(where) > _MAX_LISTED else ""
  return f"[{', '.join(map(str, shown))}{more}]"


def validate_samples(samples: Any, *, sample_rate: int | None = None,
                     expected_rate: int = 16000, expected_length: int | None = None,
                     expected_ndim: int | tuple[int, ...] = (1, 2), where: str = "") -> Any:
  """Checks that ``samples`` are usable audio and returns them unchanged.

  Args:
    samples: ``[N]`` (mono) or ``[B, N]`` (a batch of chunks) array, numpy or JAX.
      Inside ``jax.jit`` only the static checks (rank, dtype, length) run.
    sample_rate: the rate the samples claim to be at, if known.
    expected_rate: the rate required, Hz.
    expected_length: the number of samples required on the last axis (a chunk).
    expected_ndim: the allowed rank(s).
    where: prefix naming the caller (e.g. ``"live loop"``, a file name).

  Returns:
    ``samples``, unchanged.

  Raises:
    AudioError: with a message naming the problem and the offending value.
  """
  prefix = f"{where}: " if where else ""
  allowed = (expected_ndim,) if isinstance(expected_ndim, int) else tuple(expected_ndim)
  if not hasattr(samples, "dtype") or not hasattr(samples, "shape"):
    raise AudioError(f"{prefix}samples must be an array, got {type(samples).__name__}")
  shape = tuple(samples.shape)
  if len(shape) not in allowed:
    raise AudioError(
        f"{prefix}samples have rank {len(shape)} (shape {shape}), expected rank "
        f"{' or '.join(map(str, allowed))}"
    )
  dtype = np.dtype(samples.dtype)
  if not np.issubdtype(dtype, np.floating):
    hint = f" (convert integer PCM with x / {2 ** (8 * dtype.itemsize - 1)})" if (
        np.issubdtype(dtype, np.integer)) else ""
    raise AudioError(
        f"{prefix}samples have dtype {dtype}, expected floating point in [-1, 1]{hint}"
    )
  if sample_rate is not None and sample_rate != expected_rate:
    raise AudioError(f"{prefix}sample rate is {sample_rate} Hz, expected {expected_rate} Hz")
  if expected_length is not None and shape[-1] != expected_length:
    raise AudioError(
        f"{prefix}chunk has {shape[-1]} samples, expected {expected_length} "
        f"({1000 * expected_length / expected_rate:g} ms at {expected_rate} Hz)"
    )
  if shape[-1] == 0:
    raise AudioError(f"{prefix}samples are empty (shape {shape})")
  if isinstance(samples, jax.core.Tracer):  # values unknown while tracing
    return samples
  values = np.asarray(samples)
  finite = np.isfinite(values)
  if not finite.all():
    problems = []
    for name, mask in (("NaN", np.isnan(values)), ("Inf", np.isinf(values))):
      count = int(mask.sum())
      if count:
        noun = "value at index" if count == 1 else "values at indices"
        problems.append(f"{count} {name} {noun} {_format_indices(mask)}")
    raise AudioError(f"{prefix}samples contain {' and '.join(problems)}")
  return samples
