"""Signal helpers for rendering streams: levels, placement, mixing at an SNR, resampling,
coloured noise and small room/microphone effects.

Everything here is plain NumPy/SciPy on float32 mono arrays at `SAMPLE_RATE` (16 kHz)
unless a rate is passed. Functions that draw random parameters take an explicit
`np.random.Generator` so renders are deterministic given a seed.

Timing contract: none of these effects moves an onset. Filters are zero-phase
(`sosfiltfilt`) and the room impulse response has its direct path at lag 0, so a word
or event that starts at sample `i` in the dry signal still starts at sample `i` after
`random_channel` (reverberation only adds a decaying tail after it).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import signal as sps

from audio_interaction.audio import io as audio_io
from audio_interaction.stream_format import SAMPLE_RATE

# Power floor (about -200 dBFS) so levels of digital silence are finite.
_EPS = 1e-20


def db_to_gain(db: float) -> float:
  """Amplitude factor for a level change of `db` decibels."""
  return float(10.0 ** (db / 20.0))


def power(x: np.ndarray) -> float:
  """Mean square of `x` (float[n]); 0.0 for an empty array."""
  if x.size == 0:
    return 0.0
  x64 = x.astype(np.float64)
  return float(np.mean(x64 * x64))


def rms_db(x: np.ndarray) -> float:
  """RMS level of `x` in dBFS (full scale = 1.0); about -200 for silence."""
  return 10.0 * math.log10(power(x) + _EPS)


def active_rms_db(x: np.ndarray, threshold: float = 1e-4) -> float:
  """RMS level (dBFS) over samples with |x| > `threshold` only.

  Speech clips are mostly gaps; levelling them on the whole-clip RMS would make
  sparse utterances louder than dense ones, so we level on the active part.
  """
  active = x[np.abs(x) > threshold]
  return rms_db(active) if active.size else -200.0


def set_level(x: np.ndarray, target_db: float, active_only: bool = True) -> np.ndarray:
  """Scale `x` (float[n]) so its (active-sample) RMS is `target_db` dBFS; float32[n]."""
  current = active_rms_db(x) if active_only else rms_db(x)
  if current <= -199.0:
    return x.astype(np.float32)
  return (x * db_to_gain(target_db - current)).astype(np.float32)


def place(timeline_len: int, clip: np.ndarray, start: int) -> np.ndarray:
  """Put `clip` (float[m]) on a silent timeline of `timeline_len` samples at sample `start`.

  Parts of the clip before sample 0 or after the timeline's end are cut off, so
  `start` may be negative or near the end. Returns float32[timeline_len]; add several
  placed clips to build a scene.
  """
  out = np.zeros(int(timeline_len), np.float32)
  start = int(start)
  lo = max(0, start)
  hi = min(int(timeline_len), start + len(clip))
  if hi > lo:
    out[lo:hi] = clip[lo - start:hi - start]
  return out


def snr_gain(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> float:
  """Factor for `noise` so that 10*log10(P(signal) / P(gain*noise)) == snr_db.

  P is the mean square over each whole array. Returns 0.0 when the noise is silent.
  """
  p_noise = power(noise)
  if p_noise <= 0.0:
    return 0.0
  return float(math.sqrt(power(signal) / (p_noise * 10.0 ** (snr_db / 10.0))))


def mix_at_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
  """Add `noise` to `signal` (both float[n]) at a signal-to-noise ratio of `snr_db` dB.

  The noise is tiled or cut to `len(signal)` first; powers are mean squares over the
  full length (so for sparse speech the SNR counts its pauses too: pass only the
  active region if you want an active-speech SNR). Returns float32[len(signal)].
  A silent noise returns the signal unchanged.
  """
  n = len(signal)
  if n == 0:
    return signal.astype(np.float32)
  if len(noise) == 0:
    return signal.astype(np.float32)
  reps = -(-n // len(noise))
  noise = np.tile(noise, reps)[:n] if reps > 1 else noise[:n]
  gain = snr_gain(signal, noise, snr_db)
  return (signal.astype(np.float64) + gain * noise.astype(np.float64)).astype(np.float32)


def resample(x: np.ndarray, rate_in: int, rate_out: int = SAMPLE_RATE) -> np.ndarray:
  """float[n] from `rate_in` to `rate_out` Hz; float32, with round(n * rate_out / rate_in)
  samples. The library's one resampler, `audio.io.resample` (soxr, anti-aliased)."""
  return audio_io.resample(x, rate_in, rate_out)


def colored_noise(rng: np.random.Generator, n: int, exponent: float = 0.0) -> np.ndarray:
  """Gaussian noise float32[n] with power spectrum ~ 1/f**exponent, unit RMS.

  exponent 0 = white, 1 = pink, 2 = brown (red). Shaped in the frequency domain.
  """
  if n <= 0:
    return np.zeros(0, np.float32)
  white = rng.standard_normal(n)
  if exponent == 0.0:
    out = white
  else:
    spec = np.fft.rfft(white)
    f = np.fft.rfftfreq(n)
    f[0] = f[1] if n > 1 else 1.0
    spec *= f ** (-exponent / 2.0)
    out = np.fft.irfft(spec, n)
  out = out / (np.sqrt(np.mean(out * out)) + 1e-12)
  return out.astype(np.float32)


def band_limit(x: np.ndarray, low_hz: float | None, high_hz: float | None,
               order: int = 4, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """Zero-phase Butterworth high-pass at `low_hz` and/or low-pass at `high_hz`; float32[n].

  Zero phase (forward-backward) so onsets do not shift; None skips that edge.
  """
  nyq = sample_rate / 2.0
  y = x.astype(np.float64)
  if len(y) < 3 * (2 * order + 1):  # Too short for filtfilt padding: leave as is.
    return x.astype(np.float32)
  if low_hz is not None and 0 < low_hz < nyq:
    sos = sps.butter(order, low_hz / nyq, btype="highpass", output="sos")
    y = sps.sosfiltfilt(sos, y)
  if high_hz is not None and 0 < high_hz < nyq:
    sos = sps.butter(order, high_hz / nyq, btype="lowpass", output="sos")
    y = sps.sosfiltfilt(sos, y)
  return y.astype(np.float32)


def band_pass(x: np.ndarray, low_hz: float, high_hz: float, order: int = 2,
              sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """Zero-phase Butterworth band-pass between `low_hz` and `high_hz`; float32[n]."""
  nyq = sample_rate / 2.0
  lo = min(max(low_hz / nyq, 1e-4), 0.98)
  hi = min(max(high_hz / nyq, lo + 1e-3), 0.999)
  sos = sps.butter(order, [lo, hi], btype="bandpass", output="sos")
  if len(x) < 3 * (4 * order + 1):
    return x.astype(np.float32)
  return sps.sosfiltfilt(sos, x.astype(np.float64)).astype(np.float32)


def synthetic_rir(rng: np.random.Generator, rt60: float,
                  sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """A small-room impulse response float32[n]: direct path at lag 0, early reflections,
  then an exponentially decaying noise tail that falls 60 dB in `rt60` seconds.

  n = 0.8 * rt60 s (at most 0.6 s), enough for the audible part of the tail.
  The direct path is 1.0, so convolving keeps onsets where they were.
  """
  n = max(int(min(0.8 * rt60, 0.6) * sample_rate), 16)
  t = np.arange(n) / sample_rate
  decay = 10.0 ** (-3.0 * t / rt60)  # amplitude: -60 dB at t = rt60
  tail = rng.standard_normal(n) * decay
  # Walls absorb highs faster than lows: low-pass the tail a little.
  tail = sps.lfilter([0.5, 0.5], [1.0], tail)
  start = int(0.003 * sample_rate)  # the diffuse tail begins after the first reflections
  tail[:start] = 0.0
  rir = 0.15 * tail
  # Sparse early reflections 2-25 ms after the direct sound.
  for _ in range(int(rng.integers(3, 9))):
    lag = int(rng.uniform(0.002, 0.025) * sample_rate)
    if lag < n:
      rir[lag] += rng.uniform(-0.5, 0.5) * 10.0 ** (-3.0 * lag / sample_rate / rt60)
  rir[0] = 1.0
  return rir.astype(np.float32)


def apply_rir(x: np.ndarray, rir: np.ndarray, wet: float = 1.0) -> np.ndarray:
  """Convolve `x` (float[n]) with `rir`, keep n samples, mix `wet` of the reverberant
  part with the dry signal, and keep the original active level; float32[n]."""
  if len(x) == 0:
    return x.astype(np.float32)
  y = sps.fftconvolve(x.astype(np.float64), rir.astype(np.float64))[:len(x)]
  y = (1.0 - wet) * x + wet * y
  before = active_rms_db(x)
  return set_level(y, before) if before > -199.0 else y.astype(np.float32)


def random_channel(x: np.ndarray, rng: np.random.Generator,
                   p_reverb: float = 0.5, p_band: float = 0.5, p_noise: float = 0.6,
                   rt60_range: tuple[float, float] = (0.08, 0.45),
                   noise_snr_range: tuple[float, float] = (30.0, 50.0)) -> np.ndarray:
  """Random small room + microphone: reverb, band-limiting, a low noise floor.

  Each stage is applied with its probability; the random draws happen in a fixed
  order whatever is applied, so one seed always consumes the same draws. Returns
  float32[len(x)] with onsets unchanged (see module docstring).
  """
  u = rng.uniform(size=3)
  rt60 = float(rng.uniform(*rt60_range))
  wet = float(rng.uniform(0.3, 0.9))
  rir_seed = int(rng.integers(2**31))
  low = float(rng.uniform(60.0, 300.0))
  high = float(rng.choice([3400.0, 4000.0, 5500.0, 7000.0]))
  snr = float(rng.uniform(*noise_snr_range))
  exponent = float(rng.choice([0.0, 1.0, 2.0]))
  noise_seed = int(rng.integers(2**31))
  y = x.astype(np.float32)
  if u[0] < p_reverb:
    y = apply_rir(y, synthetic_rir(np.random.default_rng(rir_seed), rt60), wet)
  if u[1] < p_band:
    y = band_limit(y, low, high)
  if u[2] < p_noise and len(y):
    noise = colored_noise(np.random.default_rng(noise_seed), len(y), exponent)
    # Noise floor relative to the active level, not the whole clip (mostly pauses).
    gain = db_to_gain(active_rms_db(y) - snr)
    y = (y + gain * noise).astype(np.float32)
  return y


def fade(x: np.ndarray, fade_in: int, fade_out: int) -> np.ndarray:
  """Raised-cosine fade of `fade_in`/`fade_out` samples at the ends of `x`; float32[n].

  Keeps cuts click-free; the fades stay inside the array so its span is unchanged.
  """
  y = x.astype(np.float32).copy()
  n = len(y)
  fi = min(fade_in, n // 2)
  fo = min(fade_out, n // 2)
  if fi > 0:
    y[:fi] *= (0.5 - 0.5 * np.cos(np.pi * (np.arange(fi) + 0.5) / fi)).astype(np.float32)
  if fo > 0:
    y[n - fo:] *= (0.5 + 0.5 * np.cos(np.pi * (np.arange(fo) + 0.5) / fo)).astype(np.float32)
  return y


def frame_rms_db(x: np.ndarray, frame: int, hop: int) -> np.ndarray:
  """Per-frame RMS level in dBFS, float64[num_frames]; frame i covers x[i*hop : i*hop+frame]."""
  if len(x) < frame:
    return np.array([rms_db(x)])
  idx = np.arange(0, len(x) - frame + 1, hop)
  x64 = x.astype(np.float64)
  c = np.concatenate([[0.0], np.cumsum(x64 * x64)])
  p = (c[idx + frame] - c[idx]) / frame
  return 10.0 * np.log10(np.maximum(p, 0.0) + _EPS)


def trim_silence(x: np.ndarray, threshold_db: float = -40.0, floor_db: float = -60.0,
                 frame: int = 160, hop: int = 80) -> tuple[int, int]:
  """Span [lo, hi) of `x` between its first and last loud frame.

  A frame (10 ms, 5 ms hop at 16 kHz) is loud when its RMS is above both
  `threshold_db` below the loudest frame and the absolute `floor_db`. The thresholds
  are fixed, so the same audio always trims the same way. Returns (0, 0) for silence.
  """
  levels = frame_rms_db(x, frame, hop)
  peak = float(levels.max()) if levels.size else -200.0
  thr = max(peak + threshold_db, floor_db)
  loud = np.nonzero(levels > thr)[0]
  if loud.size == 0:
    return 0, 0
  lo = int(loud[0] * hop)
  hi = int(min(len(x), loud[-1] * hop + frame))
  return lo, hi
