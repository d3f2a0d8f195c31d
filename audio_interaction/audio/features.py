"""Log-mel features in JAX, with a causal frame alignment that streams exactly.

Frame alignment. Frame ``i`` covers samples ``[i*hop - (n_fft - hop), i*hop + hop)``
of the signal, i.e. it *ends* at the end of hop ``i``; samples before 0 are zeros.
So ``N`` samples (a multiple of ``hop``) give exactly ``N // hop`` frames, and the
features of a chunk depend only on that chunk and the ``n_fft - hop`` samples before
it. That is what lets `StreamingLogMel` produce, chunk by chunk, the same frames as
`log_mel` over the whole signal (a centred STFT would need samples from the future).

Per frame: periodic Hann window, power spectrum ``|rfft|^2``, librosa's mel
filterbank (Slaney mel scale and Slaney area normalisation, i.e. librosa's defaults
``htk=False, norm="slaney"``, which is also what Whisper ships), then a log:

* ``"whisper"``: ``log10(max(mel, 1e-10))`` clamped below at a *fixed* floor
  (``log_floor``), then ``(x + 4) / 4``. Whisper clamps at ``max(x) - 8`` with the
  max over the whole clip, which a stream cannot know before the clip ends; for the
  exact Whisper recipe (e.g. to feed imported Whisper weights offline) use
  `whisper_offline_log_mel`.
* ``"natural"``: ``log(mel + 1e-6)``.

librosa is used only to build the filterbank constant; the runtime is pure
``jax.numpy`` and runs in float32 or float64 (under ``jax.enable_x64``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Literal

import jax
import jax.numpy as jnp
import librosa
import numpy as np

LogStyle = Literal["whisper", "natural"]

# Whisper's constants: log10 floor before the clamp, and its offset/scale.
_WHISPER_LOG10_EPS = 1e-10
_WHISPER_DYNAMIC_RANGE = 8.0
_NATURAL_LOG_EPS = 1e-6


@dataclasses.dataclass(frozen=True)
class LogMelConfig:
  """Static parameters of the log-mel front end (hashable: usable as a jit static arg).

  Attributes:
    sample_rate: samples per second of the input.
    n_mels: number of mel bins.
    n_fft: FFT size, equal to the window length.
    hop_length: samples between frame ends.
    fmin: lowest filterbank frequency, Hz.
    fmax: highest filterbank frequency, Hz; None means ``sample_rate / 2``.
    log_style: ``"whisper"`` or ``"natural"`` (see the module docstring).
    log_floor: floor of the ``"whisper"`` style, in log10 units, before ``(x+4)/4``.
  """

  sample_rate: int = 16000
  n_mels: int = 80
  n_fft: int = 400
  hop_length: int = 160
  fmin: float = 0.0
  fmax: float | None = 8000.0
  log_style: LogStyle = "whisper"
  log_floor: float = -8.0

  def __post_init__(self):
    if self.hop_length <= 0 or self.n_fft < self.hop_length:
      raise ValueError(
          f"need 0 < hop_length <= n_fft, got hop_length={self.hop_length}, n_fft={self.n_fft}"
      )
    if self.log_style not in ("whisper", "natural"):
      raise ValueError(f"log_style must be 'whisper' or 'natural', got {self.log_style!r}")
    nyquist = self.sample_rate / 2
    if self.fmax is not None and not 0 <= self.fmin < self.fmax <= nyquist:
      raise ValueError(
          f"need 0 <= fmin < fmax <= sample_rate/2 = {nyquist}, got fmin={self.fmin}, "
          f"fmax={self.fmax}"
      )
    if self.n_mels <= 0:
      raise ValueError(f"n_mels must be positive, got {self.n_mels}")

  @classmethod
  def from_config(cls, audio: Any) -> "LogMelConfig":
    """Builds it from ``config.audio`` (an ml_collections ConfigDict, see config_lib)."""
    return cls(
        sample_rate=int(audio.sample_rate),
        n_mels=int(audio.n_mels),
        n_fft=int(audio.n_fft),
        hop_length=int(audio.hop_length),
        fmin=float(audio.fmin),
        fmax=None if audio.fmax is None else float(audio.fmax),
        log_style=audio.log_style,
        log_floor=float(audio.log_floor),
    )

  @property
  def context(self) -> int:
    """Samples of left context a frame needs beyond its own hop: ``n_fft - hop_length``."""
    return self.n_fft - self.hop_length

  @property
  def n_freqs(self) -> int:
    """Number of rfft bins, ``n_fft // 2 + 1``."""
    return self.n_fft // 2 + 1


@functools.lru_cache(maxsize=None)
def mel_filterbank(config: LogMelConfig) -> np.ndarray:
  """librosa's mel filterbank as a float64 numpy constant, shape ``[n_freqs, n_mels]``.

  Built in float64 (librosa's default is float32) so the float64 path is exact; it
  is cast to the signal's dtype at use. Read-only because it is cached and shared.
  """
  bank = librosa.filters.mel(
      sr=config.sample_rate, n_fft=config.n_fft, n_mels=config.n_mels, fmin=config.fmin,
      fmax=config.fmax, htk=False, norm="slaney", dtype=np.float64,
  ).T
  bank = np.ascontiguousarray(bank)
  bank.flags.writeable = False
  return bank


@functools.lru_cache(maxsize=None)
def hann_window(n_fft: int) -> np.ndarray:
  """Periodic Hann window (the DFT-even one librosa/torch use), float64 ``[n_fft]``."""
  window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)
  window.flags.writeable = False
  return window


def _check_floating(samples: jax.Array, where: str) -> None:
  if not jnp.issubdtype(samples.dtype, jnp.floating):
    raise TypeError(
        f"{where}: samples have dtype {samples.dtype}; expected a floating dtype "
        "(float32, or float64 under jax.enable_x64) with values in [-1, 1]"
    )


def _frames_from_padded(padded: jax.Array, config: LogMelConfig) -> jax.Array:
  """Cuts causal frames out of a signal that already carries its left context.

  Args:
    padded: ``[..., context + n]``, ``n`` a multiple of ``hop_length``; frame ``i``
      is ``padded[..., i*hop : i*hop + n_fft]``.
    config: the front-end parameters.

  Returns:
    ``[..., n // hop, n_fft]`` frames.
  """
  hop, n_fft = config.hop_length, config.n_fft
  num_frames = (padded.shape[-1] - config.context) // hop
  # Avoid a gather: pad the context up to a whole number of hops, view the signal as
  # [blocks, hop], and lay `k` consecutive blocks side by side; the last n_fft
  # samples of those k*hop are exactly the frame.
  k = math.ceil(n_fft / hop)
  extra = (k - 1) * hop - config.context
  padded = jnp.pad(padded, [(0, 0)] * (padded.ndim - 1) + [(extra, 0)])
  blocks = padded.reshape(*padded.shape[:-1], num_frames + k - 1, hop)
  frames = jnp.concatenate([blocks[..., j:j + num_frames, :] for j in range(k)], axis=-1)
  return frames[..., k * hop - n_fft:]


def _mel_power(padded: jax.Array, config: LogMelConfig) -> jax.Array:
  """Mel power of every frame: ``padded [..., context + n] -> [..., n // hop, n_mels]``."""
  dtype = padded.dtype
  frames = _frames_from_padded(padded, config) * jnp.asarray(hann_window(config.n_fft), dtype)
  spectrum = jnp.fft.rfft(frames, n=config.n_fft, axis=-1)
  # re^2 + im^2 rather than abs()**2: no sqrt-then-square rounding.
  power = jnp.square(spectrum.real) + jnp.square(spectrum.imag)
  # HIGHEST: on TPU/GPU the default float32 matmul may drop to bf16/tf32 passes.
  return jnp.matmul(power, jnp.asarray(mel_filterbank(config), dtype),
                    precision=jax.lax.Precision.HIGHEST)


def _log_mel_from_padded(padded: jax.Array, config: LogMelConfig) -> jax.Array:
  """Log-mel of every causal frame: ``padded [..., context + n] -> [..., n // hop, n_mels]``."""
  return apply_log(_mel_power(padded, config), config)


def apply_log(mel: jax.Array, config: LogMelConfig) -> jax.Array:
  """Applies the configured log compression to mel power ``[...]`` (same shape out)."""
  if config.log_style == "whisper":
    logs = jnp.log10(jnp.maximum(mel, _WHISPER_LOG10_EPS))
    logs = jnp.maximum(logs, config.log_floor)
    return (logs + 4.0) / 4.0
  return jnp.log(mel + _NATURAL_LOG_EPS)


# Jitted at definition: run op by op, the framing and FFT take seconds to dispatch
# the first time; as one program they compile once per (shape, dtype, config).
@functools.partial(jax.jit, static_argnames="config")
def log_mel(samples: jax.Array, config: LogMelConfig) -> jax.Array:
  """Offline log-mel with the causal alignment (see the module docstring).

  Already jitted, with ``config`` static (a `LogMelConfig` is hashable); it can
  also be called inside other jitted code. The computation runs in the dtype of
  ``samples`` (float32 or float64).

  Args:
    samples: ``[..., N]`` floating audio at ``config.sample_rate``; ``N`` must be a
      multiple of ``hop_length`` (use `chunking.ChunkAssembler.flush` or pad).
    config: the front-end parameters.

  Returns:
    ``[..., N // hop_length, n_mels]`` features, same dtype as ``samples``.
  """
  samples = jnp.asarray(samples)
  _check_floating(samples, "log_mel")
  if samples.ndim < 1:
    raise ValueError("log_mel: samples must have at least one (time) axis, got a scalar")
  n = samples.shape[-1]
  if n % config.hop_length:
    raise ValueError(
        f"log_mel: got {n} samples, not a multiple of hop_length={config.hop_length}; "
        f"pad or trim to {n - n % config.hop_length} or {n + (-n) % config.hop_length}"
    )
  padded = jnp.pad(samples, [(0, 0)] * (samples.ndim - 1) + [(config.context, 0)])
  return _log_mel_from_padded(padded, config)


def segment_starts(chunk_segment_ids: jax.Array) -> jax.Array:
  """Where a packed row's segments begin: ``[B, C]`` segment id per chunk -> ``[B, C]`` bool.

  True at chunk 0 and wherever the id differs from the previous chunk's (padding
  chunks, id 0, after the last segment start one more "segment" of their own).
  """
  ids = jnp.asarray(chunk_segment_ids)
  return jnp.concatenate([jnp.ones_like(ids[:, :1], bool), ids[:, 1:] != ids[:, :-1]], axis=1)


@functools.partial(jax.jit, static_argnames="config")
def segmented_log_mel(samples: jax.Array, chunk_segment_ids: jax.Array,
                      config: LogMelConfig) -> jax.Array:
  """`log_mel` of a packed row: no frame sees samples of the segment before its own.

  Every chunk is framed with the last ``n_fft - hop`` samples of the chunk before it
  as left context (what `StreamingLogMel` carries), or zeros where a segment starts
  (what a stream of its own starts with). So each segment gets exactly the frames
  `log_mel` gives it alone; with one segment per row this equals `log_mel`.

  Args:
    samples: ``[B, S]`` floating audio, ``S = C * chunk`` whole chunks.
    chunk_segment_ids: ``[B, C]`` int segment id of every chunk (segments are runs
      of whole chunks).
    config: the front-end parameters; the chunk must be a multiple of ``hop_length``
      and at least ``n_fft - hop_length`` samples long.

  Returns:
    ``[B, S // hop_length, n_mels]`` features, same dtype as ``samples``.
  """
  samples = jnp.asarray(samples)
  _check_floating(samples, "segmented_log_mel")
  if samples.ndim != 2 or jnp.ndim(chunk_segment_ids) != 2:
    raise ValueError(f"segmented_log_mel: need samples [B, S] and chunk_segment_ids [B, C], "
                     f"got {tuple(samples.shape)} and {tuple(jnp.shape(chunk_segment_ids))}")
  batch, total = samples.shape
  chunks = jnp.shape(chunk_segment_ids)[1]
  chunk = total // chunks
  if chunk * chunks != total or chunk % config.hop_length or chunk < config.context:
    raise ValueError(
        f"segmented_log_mel: {total} samples in {chunks} chunks: each chunk must be a whole "
        f"multiple of hop_length={config.hop_length} and at least n_fft - hop_length = "
        f"{config.context} samples")
  per_chunk = samples.reshape(batch, chunks, chunk)
  context = jnp.pad(per_chunk[:, :-1, chunk - config.context:], ((0, 0), (1, 0), (0, 0)))
  context = jnp.where(segment_starts(chunk_segment_ids)[..., None], 0, context)
  frames = _log_mel_from_padded(jnp.concatenate([context, per_chunk], axis=-1), config)
  return frames.reshape(batch, total // config.hop_length, config.n_mels)


@dataclasses.dataclass(frozen=True)
class StreamingLogMel:
  """The log-mel front end as a streaming layer (the project's streaming contract).

  State is the last ``n_fft - hop_length`` samples seen (zeros before the stream
  starts), an array ``[B, context]``. Stepping over any split of a signal into
  chunks whose lengths are multiples of ``hop_length`` yields exactly the frames of
  `log_mel` over the whole signal.

  Usage::

    front = StreamingLogMel(LogMelConfig.from_config(config.audio))
    step = jax.jit(front.step)
    state = front.init_state(batch=1)
    state, frames = step(state, chunk)   # chunk [1, 2560] -> frames [1, 16, 80]
  """

  config: LogMelConfig

  @property
  def context(self) -> int:
    """Samples of state carried between steps, ``n_fft - hop_length``."""
    return self.config.context

  def init_state(self, batch: int, dtype: Any = jnp.float32) -> jax.Array:
    """Zeros ``[batch, n_fft - hop_length]``: the stream is silent before it starts."""
    if not jnp.issubdtype(dtype, jnp.floating):
      raise TypeError(f"StreamingLogMel.init_state: dtype must be floating, got {dtype}")
    return jnp.zeros((batch, self.context), dtype)

  def step(self, state: jax.Array, chunk: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Consumes one chunk.

    Args:
      state: ``[B, n_fft - hop_length]`` from `init_state` or the previous step.
      chunk: ``[B, n]`` samples, ``n`` a multiple of ``hop_length``, same dtype as
        ``state`` (a different dtype would change the state's type and recompile).

    Returns:
      ``(state [B, n_fft - hop_length], frames [B, n // hop_length, n_mels])``.
    """
    chunk = jnp.asarray(chunk)
    _check_floating(chunk, "StreamingLogMel.step")
    if chunk.ndim != 2 or state.ndim != 2:
      raise ValueError(
          f"StreamingLogMel.step: need state [B, {self.context}] and chunk [B, n], got "
          f"state {tuple(state.shape)} and chunk {tuple(chunk.shape)}"
      )
    if state.shape != (chunk.shape[0], self.context):
      raise ValueError(
          f"StreamingLogMel.step: state has shape {tuple(state.shape)}, expected "
          f"({chunk.shape[0]}, {self.context}) for a chunk of shape {tuple(chunk.shape)}"
      )
    if state.dtype != chunk.dtype:
      raise TypeError(
          f"StreamingLogMel.step: chunk dtype {chunk.dtype} differs from state dtype "
          f"{state.dtype}; build the state with init_state(batch, dtype={chunk.dtype})"
      )
    n = chunk.shape[-1]
    if n == 0 or n % self.config.hop_length:
      raise ValueError(
          f"StreamingLogMel.step: chunk has {n} samples, need a positive multiple of "
          f"hop_length={self.config.hop_length} (use chunking.ChunkAssembler)"
      )
    padded = jnp.concatenate([state, chunk], axis=-1)
    frames = _log_mel_from_padded(padded, self.config)
    return padded[:, padded.shape[-1] - self.context:], frames


@functools.partial(jax.jit, static_argnames="config")
def whisper_offline_log_mel(samples: jax.Array, config: LogMelConfig = LogMelConfig()
                            ) -> jax.Array:
  """Whisper's exact (non-streaming) log-mel recipe, e.g. to feed imported Whisper weights.

  As ``whisper.audio.log_mel_spectrogram``: a *centred* STFT (``n_fft // 2`` reflect
  padding each side), the last frame dropped, ``log10(max(mel, 1e-10))``, clamped
  below at ``max - 8``, then ``(x + 4) / 4``. Only the rate, FFT, hop and filterbank
  fields of ``config`` are used (its ``log_style``/``log_floor`` are ignored).
  Jitted, ``config`` static. Differences to know about:

  * The max is taken per example (over the last two axes); Whisper takes it over
    the whole tensor it is given, which is the same for its usual single clip.
  * Whisper's transcribe pads the clip with 30 s of zeros first
    (``pad_or_trim``/``padding``); do that before calling, if wanted.
  * Frames are centred (frame ``i`` spans ``i*hop ± n_fft/2``): `log_mel`'s causal
    frame ``i`` ends ``n_fft/2 - hop`` samples (40, i.e. 2.5 ms, by default) earlier.

  Args:
    samples: ``[..., N]`` floating audio, ``N > n_fft // 2`` (reflect padding needs
      it); ``N`` need not be a multiple of ``hop_length``.
    config: the front-end parameters (defaults: Whisper's 16 kHz / 80 mels / 400 / 160).

  Returns:
    ``[..., N // hop_length, n_mels]`` features.
  """
  samples = jnp.asarray(samples)
  _check_floating(samples, "whisper_offline_log_mel")
  n, half = samples.shape[-1], config.n_fft // 2
  if n <= half:
    raise ValueError(
        f"whisper_offline_log_mel: need more than n_fft // 2 = {half} samples for reflect "
        f"padding, got {n}"
    )
  hop = config.hop_length
  lead = [(0, 0)] * (samples.ndim - 1)
  padded = jnp.pad(samples, lead + [(half, half)], mode="reflect")
  # Centred frame i starts at i*hop of `padded`; there are 1 + n//hop of them and
  # Whisper drops the last. Our framing reads frame i as padded[i*hop : i*hop + n_fft]
  # and makes (len - context) // hop frames, so trimming `padded` to this length
  # (never longer than it is) yields exactly Whisper's kept frames.
  mel = _mel_power(padded[..., :config.context + (n // hop) * hop], config)
  logs = jnp.log10(jnp.maximum(mel, _WHISPER_LOG10_EPS))
  logs = jnp.maximum(logs, jnp.max(logs, axis=(-2, -1), keepdims=True) - _WHISPER_DYNAMIC_RANGE)
  return (logs + 4.0) / 4.0
