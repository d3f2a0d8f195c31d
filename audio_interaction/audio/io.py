"""Audio files in, validated float32 mono samples out; and checks on samples in flight.

`load_audio` decodes with soundfile (wav, flac, ogg, and mp3 with libsndfile >=
1.1), falls back to librosa/audioread for anything else, mixes to mono and
resamples. `stream_audio` does the same block by block -- decode a block, mix it
down, resample it with a streaming soxr resampler -- so a file of any length, rate
and channel count costs a few blocks of memory; `probe_audio` checks a file (exists,
not empty, decodable header) without decoding it. `Resampler` (streaming) and
`resample` (one array) are the library's one resampler: soxr "HQ", and a stream
resampled block by block equals the whole signal resampled at once.
`validate_samples` is the one place that decides
whether an array is acceptable audio; the model step and the live loop call it so
that a bad chunk fails loudly with a message naming the problem and the value,
rather than turning into NaN features several layers later.

Every failure is an `AudioError` (a `ValueError`) whose message names the file or
the caller and the problem.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Iterator
from typing import Any

import jax
import librosa
import numpy as np
import soundfile as sf
import soxr

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
      resampled (`resample`: soxr "HQ").

  Returns:
    ``[N]`` float32 samples, channels averaged; ``N > 0``.

  Raises:
    AudioError: file missing, not a file, empty, undecodable, zero-length audio,
      NaN/Inf samples, or at the wrong rate with ``resample=False``.
  """
  path = os.fspath(path)
  _check_file(path)
  data, rate = _decode(path)
  if data.shape[0] == 0:
    raise AudioError(f"{path}: file decodes to zero-length audio (0 samples at {rate} Hz)")
  samples = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
  # Checked before resampling, whose filter would smear one NaN over the whole clip.
  validate_samples(samples, where=path)
  if rate != sample_rate:
    if not resample:
      _wrong_rate(path, rate, sample_rate)
    samples = Resampler(rate, sample_rate)(samples, last=True)  # `resample` is the flag here
  return np.ascontiguousarray(samples, dtype=np.float32)


# ------------------------------------------------------------------ resampling
class Resampler:
  """Streaming resampler of mono float32 blocks (soxr "HQ"): the library's one resampler.

  Blocks of any length go in, in order; `__call__` returns the output that is ready
  (soxr holds back its filter delay), and `flush` the rest at the end of the stream.
  The concatenated outputs equal `resample` of the concatenated inputs (soxr keeps
  its filter state across blocks, so block boundaries leave no trace), and the
  resampler holds a fixed amount of state whatever the stream's length.
  """

  def __init__(self, rate_in: int, rate_out: int, quality: str = "HQ"):
    if not (rate_in > 0 and rate_out > 0):
      raise AudioError(f"resampling needs positive rates, got {rate_in} Hz -> {rate_out} Hz")
    self.rate_in, self.rate_out = rate_in, rate_out
    self._stream = (None if self.rate_in == self.rate_out else
                    soxr.ResampleStream(self.rate_in, self.rate_out, 1, dtype="float32",
                                        quality=quality))

  def __call__(self, block: np.ndarray, last: bool = False) -> np.ndarray:
    """[n] samples at `rate_in` -> the [m] samples at `rate_out` now ready (float32)."""
    block = np.ascontiguousarray(block, dtype=np.float32)
    if self._stream is None:
      return block
    return self._stream.resample_chunk(block, last=last)

  def flush(self) -> np.ndarray:
    """The samples still held back (the filter's delay); call once, at the end."""
    return self(np.zeros(0, np.float32), last=True)


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
  """float[n] from `rate_in` to `rate_out` Hz as float32 (soxr "HQ"); anti-aliased and
  deterministic, with ``round(n * rate_out / rate_in)`` samples."""
  return Resampler(rate_in, rate_out)(np.asarray(x, np.float32), last=True)


# --------------------------------------------------------------- streaming files
@dataclasses.dataclass(frozen=True)
class AudioInfo:
  """What `probe_audio` learnt from a file's header.

  Attributes:
    path: the file.
    sample_rate, channels: as stored.
    frames: samples per channel if the header says (None for audioread formats).
    backend: "soundfile" (libsndfile) or "audioread" (ffmpeg, gstreamer, ...).
  """

  path: str
  sample_rate: int
  channels: int
  frames: int | None
  backend: str


def _wrong_rate(path: str, rate: int, sample_rate: int) -> None:
  raise AudioError(f"{path}: sample rate is {rate} Hz, expected {sample_rate} Hz "
                   "(pass resample=True to convert)")


def _check_file(path: str) -> None:
  if not os.path.exists(path):
    raise AudioError(f"{path}: audio file not found")
  if not os.path.isfile(path):
    raise AudioError(f"{path}: not a regular file")
  if os.path.getsize(path) == 0:
    raise AudioError(f"{path}: file is empty (0 bytes)")


def probe_audio(path: str | os.PathLike[str], *, require_rate: int | None = None
                ) -> AudioInfo:
  """Checks that `path` is an audio file that can be decoded, without decoding it.

  Args:
    require_rate: if given, a file at another rate is an error.

  Raises:
    AudioError: missing, not a file, empty, undecodable header, zero-length audio, or
      not at `require_rate`.
  """
  info = _probe(os.fspath(path))
  if require_rate is not None and info.sample_rate != require_rate:
    _wrong_rate(info.path, info.sample_rate, require_rate)
  return info


def _probe(path: str) -> AudioInfo:
  _check_file(path)
  try:
    info = sf.info(path)
    if info.frames == 0:
      raise AudioError(f"{path}: file decodes to zero-length audio (0 samples at "
                       f"{info.samplerate} Hz)")
    return AudioInfo(path, int(info.samplerate), int(info.channels), int(info.frames),
                     "soundfile")
  except (sf.SoundFileError, RuntimeError) as soundfile_error:
    first_error = soundfile_error
  try:
    import audioread
    with audioread.audio_open(path) as file:
      return AudioInfo(path, int(file.samplerate), int(file.channels), None, "audioread")
  except Exception as fallback_error:  # audioread raises many unrelated types
    detail = str(fallback_error) or "no decoder backend installed"
    raise AudioError(
        f"{path}: could not decode audio (corrupt or unsupported format). "
        f"soundfile: {first_error}; audioread: {type(fallback_error).__name__}: {detail}"
    ) from fallback_error


def _blocks(info: AudioInfo, frames: int) -> Iterator[np.ndarray]:
  """[n, channels] float32 blocks of about `frames` frames, decoded one at a time."""
  if info.backend == "soundfile":
    with sf.SoundFile(info.path) as file:
      yield from file.blocks(frames, dtype="float32", always_2d=True)
    return
  import audioread
  width = 2 * info.channels  # audioread hands out interleaved s16le
  carry = b""
  with audioread.audio_open(info.path) as file:
    for buffer in file:
      data = carry + bytes(buffer)
      whole = len(data) - len(data) % width
      carry = data[whole:]
      if whole:
        yield (np.frombuffer(data[:whole], "<i2").reshape(-1, info.channels)
               .astype(np.float32) / np.float32(32768))


def stream_audio(path: str | os.PathLike[str], sample_rate: int = 16000, *,
                 block_seconds: float = 0.02, resample: bool = True,
                 info: AudioInfo | None = None) -> Iterator[np.ndarray]:
  """Yields a file as float32 mono blocks at `sample_rate`, decoded and resampled block by
  block, so memory stays flat whatever the file's length, rate and channels.

  Each block is mixed down to mono and checked for NaN/Inf (the message gives the
  sample index in the file) before it is resampled; the resampled blocks concatenate
  to `load_audio`'s result (the same soxr filter, see `Resampler`).

  Args:
    block_seconds: decoded per step (the blocks yielded are about this long).
    resample: if False, a file at another rate is an error (raised before decoding).
    info: `probe_audio(path)` if already done.

  Raises:
    AudioError: as `probe_audio`, and for non-finite samples or a wrong rate.
  """
  info = info or probe_audio(path)
  if info.sample_rate != sample_rate and not resample:
    _wrong_rate(info.path, info.sample_rate, sample_rate)
  resampler = Resampler(info.sample_rate, sample_rate)
  frames = max(1, round(block_seconds * info.sample_rate))
  done = 0
  for block in _blocks(info, frames):
    if block.shape[0] == 0:
      continue
    mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
    if not np.isfinite(mono).all():
      bad = np.flatnonzero(~np.isfinite(mono)) + done
      more = ", ..." if len(bad) > _MAX_LISTED else ""
      raise AudioError(f"{info.path}: samples contain {len(bad)} NaN/Inf value(s) at indices "
                       f"[{', '.join(map(str, bad[:_MAX_LISTED]))}{more}] (of the mono mix)")
    done += len(mono)
    out = resampler(mono)
    if out.size:
      yield out
  if done == 0:
    raise AudioError(f"{info.path}: file decodes to zero-length audio (0 samples at "
                     f"{info.sample_rate} Hz)")
  tail = resampler.flush()
  if tail.size:
    yield tail


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
