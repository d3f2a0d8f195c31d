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

import dataclasses
import math
from collections.abc import Callable
from typing import Final

import librosa
import numpy as np
# Simulated rooms (image-source impulse responses); a setup.py dependency.
import pyroomacoustics
from scipy import signal as sps

from audio_interaction.audio import io as audio_io
from audio_interaction.audio.level import POWER_FLOOR, power, rms_db
from audio_interaction.stream_format import SAMPLE_RATE


def db_to_gain(db: float) -> float:
  """Amplitude factor for a level change of `db` decibels."""
  return float(10.0 ** (db / 20.0))


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
  return 10.0 * np.log10(np.maximum(p, 0.0) + POWER_FLOOR)


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


# ------------------------------------------------------------ domain randomisation
# Per-utterance effects that widen the synthetic world towards real recordings
# (issue 13 item 2). Each is a pure function of (x, rng, ranges): float32 16 kHz in
# and out, the same length unless its docstring says otherwise, deterministic given
# the rng state, and each draws a fixed number of values from `rng` whatever it does.


def change_speed(x: np.ndarray, rng: np.random.Generator,
                 rate_range: tuple[float, float] = (0.85, 1.2)) -> tuple[np.ndarray, float]:
  """Tempo change without a pitch change (phase vocoder, `librosa.effects.time_stretch`
  with a 32 ms window).

  Returns (float32[round(n / rate)], rate): NOT the same length; a moment at t
  seconds in `x` is at t / rate in the result (scale word timings by 1 / rate).
  """
  rate = float(rng.uniform(*rate_range))
  if len(x) < 2048 or rate == 1.0:
    return x.astype(np.float32), 1.0
  # A 32 ms window: word edges smear by at most ~16 ms (librosa's 128 ms default
  # would blur them by ~64 ms).
  y = librosa.effects.time_stretch(x.astype(np.float32), rate=rate, n_fft=512, hop_length=128)
  return _fit(y, int(round(len(x) / rate))), rate


def _fit(y: np.ndarray, n: int) -> np.ndarray:
  """y cut or zero-padded to n samples, float32."""
  out = np.zeros(n, np.float32)
  out[:min(n, len(y))] = y[:n]
  return out


def pitch_shift(x: np.ndarray, rng: np.random.Generator,
                semitone_range: tuple[float, float] = (-3.0, 3.0)) -> np.ndarray:
  """Pitch (and with it the spectral envelope) moved by a random number of semitones;
  same length, onsets kept (`librosa.effects.pitch_shift`, soxr resampling)."""
  steps = float(rng.uniform(*semitone_range))
  if len(x) < 2048 or steps == 0.0:
    return x.astype(np.float32)
  y = librosa.effects.pitch_shift(x.astype(np.float32), sr=SAMPLE_RATE, n_steps=steps,
                                  res_type="soxr_hq")
  return _fit(y, len(x))


def formant_shift(x: np.ndarray, rng: np.random.Generator,
                  factor_range: tuple[float, float] = (0.88, 1.14), order: int = 16,
                  frame: int = 512) -> np.ndarray:
  """Formants moved by a random factor with the pitch kept: a longer or shorter vocal tract.

  Per 32 ms frame (Hann, 50 % overlap-add): an order-`order` LPC envelope, the
  residual (inverse filter), and the residual re-filtered through the envelope whose
  poles have their angles (frequencies) multiplied by the factor. The excitation, and
  so the pitch and the timing, is unchanged. Same length, level kept.
  """
  factor = float(rng.uniform(*factor_range))
  n = len(x)
  if n < 2 * frame or abs(factor - 1.0) < 1e-3:
    return x.astype(np.float32)
  hop = frame // 2
  window = np.hanning(frame + 1)[:frame]  # periodic Hann: overlap-adds to 1 at 50 %
  padded = np.concatenate([np.zeros(hop), x.astype(np.float64), np.zeros(frame)])
  out = np.zeros(len(padded))
  for start in range(0, len(padded) - frame + 1, hop):
    seg = padded[start:start + frame] * window
    if not np.any(seg):
      continue
    try:
      a = librosa.lpc(seg + 1e-7 * (np.arange(frame) % 2 - 0.5), order=order)  # dither: no 0/0
    except (FloatingPointError, ValueError):
      a = None
    if a is None or not np.all(np.isfinite(a)):  # a near-silent frame: leave it as is
      out[start:start + frame] += seg
      continue
    residual = sps.lfilter(a, [1.0], seg)
    roots = np.roots(a)
    angles = np.clip(np.angle(roots) * factor, -np.pi * 0.98, np.pi * 0.98)
    # Complex roots keep their conjugate pairs (angle sign kept); real roots stay real.
    real = np.abs(np.imag(roots)) < 1e-9
    angles[real] = np.angle(roots[real])
    radius = np.minimum(np.abs(roots), 0.995)  # stable
    warped = np.real(np.poly(radius * np.exp(1j * angles)))
    with np.errstate(over="ignore", invalid="ignore"):
      y = sps.lfilter([1.0], warped, residual)
      # Poles pulled in to 0.995 keep the filter stable, but moved close together their
      # gain can still reach 1e30 and more: each frame keeps its input's energy.
      gain = np.sqrt(np.sum(seg * seg) / np.sum(y * y))
    if not np.isfinite(gain):
      y, gain = seg, 1.0
    out[start:start + frame] += gain * y
  y = out[hop:hop + n]
  before = active_rms_db(x)
  return set_level(y, before) if before > -199.0 else y.astype(np.float32)


def mu_law(x: np.ndarray, mu: int = 255) -> np.ndarray:
  """G.711-style mu-law round trip at 8 bits (encode, quantise, decode); float32[n]."""
  y = np.clip(x.astype(np.float64), -1.0, 1.0)
  encoded = np.sign(y) * np.log1p(mu * np.abs(y)) / np.log1p(mu)
  quantised = np.round((encoded + 1.0) / 2.0 * mu) / mu * 2.0 - 1.0
  return (np.sign(quantised) * ((1.0 + mu) ** np.abs(quantised) - 1.0) / mu).astype(np.float32)


def telephone(x: np.ndarray, rng: np.random.Generator,
              low_range: tuple[float, float] = (250.0, 350.0),
              high_range: tuple[float, float] = (3200.0, 3500.0)) -> np.ndarray:
  """A narrow-band telephone channel: band-limit to ~300-3400 Hz (edges drawn in the
  ranges), down to 8 kHz, 8-bit mu-law, back up to 16 kHz. Same length, level kept,
  zero-phase filters (onsets kept). Nothing survives above ~3.5 kHz."""
  low = float(rng.uniform(*low_range))
  high = float(rng.uniform(*high_range))
  y = band_limit(x, low, high, order=6)
  peak = float(np.max(np.abs(y))) if len(y) else 0.0
  scale = 0.9 / peak if peak > 0.9 else 1.0  # the codec clips at full scale
  narrow = mu_law(resample(y * scale, SAMPLE_RATE, 8000)) / scale
  y = _fit(resample(narrow, 8000, SAMPLE_RATE), len(x))
  y = band_limit(y, None, high, order=6)  # the codec's quantisation noise stays in band
  before = active_rms_db(x)
  return set_level(y, before) if before > -199.0 else y


def room_impulse_response(rng: np.random.Generator,
                          rt60_range: tuple[float, float] = (0.15, 0.8),
                          max_seconds: float = 0.6) -> np.ndarray:
  """Impulse response float32[m] of a random shoebox room (pyroomacoustics, image
  source method): dimensions 3-10 x 3-8 x 2.4-3.5 m, a random RT60, source and
  microphone at random places at least 0.5 m from the walls and from each other.

  The response is cut to start at its direct path (lag 0, normalised to 1), so
  convolving with it keeps onsets (see the module docstring).
  """
  dims = np.array([rng.uniform(3.0, 10.0), rng.uniform(3.0, 8.0), rng.uniform(2.4, 3.5)])
  rt60 = float(rng.uniform(*rt60_range))
  margin = 0.5
  positions = [np.array([rng.uniform(margin, d - margin) for d in dims]) for _ in range(2)]
  if np.linalg.norm(positions[0] - positions[1]) < 0.5:
    positions[1] = np.where(positions[0] < dims / 2, dims - margin, margin)
  try:
    absorption, max_order = pyroomacoustics.inverse_sabine(rt60, dims)
  except ValueError:  # rt60 too short for this room: a dead room
    absorption, max_order = 0.99, 3
  room = pyroomacoustics.ShoeBox(dims, fs=SAMPLE_RATE, materials=pyroomacoustics.Material(
      absorption), max_order=min(int(max_order), 12), use_rand_ism=False)
  room.add_source(positions[0])
  room.add_microphone(positions[1])
  room.compute_rir()
  rir = np.asarray(room.rir[0][0], np.float64)
  direct = int(np.argmax(np.abs(rir)))
  rir = rir[direct:direct + int(max_seconds * SAMPLE_RATE)]
  return (rir / rir[0]).astype(np.float32)


def simulated_room(x: np.ndarray, rng: np.random.Generator,
                   rt60_range: tuple[float, float] = (0.15, 0.8)) -> np.ndarray:
  """`x` played in a random room (`room_impulse_response`); same length, level kept."""
  rir = room_impulse_response(rng, rt60_range)
  return apply_rir(x, rir, wet=1.0)


def peaking_eq_sos(center_hz: float, gain_db: float, q: float,
                   sample_rate: int = SAMPLE_RATE) -> np.ndarray:
  """One peaking-EQ biquad (RBJ audio EQ cookbook) as a second-order section [1, 6]."""
  a_gain = 10.0 ** (gain_db / 40.0)
  w0 = 2.0 * np.pi * center_hz / sample_rate
  alpha = np.sin(w0) / (2.0 * q)
  b = np.array([1.0 + alpha * a_gain, -2.0 * np.cos(w0), 1.0 - alpha * a_gain])
  a = np.array([1.0 + alpha / a_gain, -2.0 * np.cos(w0), 1.0 - alpha / a_gain])
  return np.concatenate([b / a[0], a / a[0]])[None, :]


def mic_colouration(x: np.ndarray, rng: np.random.Generator, bands: int = 3,
                    gain_db_range: tuple[float, float] = (-8.0, 8.0)) -> np.ndarray:
  """A random microphone/loudspeaker response: `bands` peaking filters at random
  frequencies (100 Hz-6 kHz, log-uniform), gains and Q (0.7-2.5), and a random
  roll-off of the lows (a small capsule) and highs. Zero-phase (onsets kept),
  same length, level kept."""
  centres = np.exp(rng.uniform(np.log(100.0), np.log(6000.0), size=bands))
  gains = rng.uniform(*gain_db_range, size=bands)
  qs = rng.uniform(0.7, 2.5, size=bands)
  low = float(rng.uniform(40.0, 250.0))
  high = float(rng.uniform(4500.0, 7800.0))
  sos = np.concatenate([peaking_eq_sos(c, g, q) for c, g, q in zip(centres, gains, qs)])
  if len(x) < 64:
    return x.astype(np.float32)
  y = sps.sosfiltfilt(sos, x.astype(np.float64))
  y = band_limit(y, low, high, order=2)
  before = active_rms_db(x)
  return set_level(y, before) if before > -199.0 else y.astype(np.float32)


# Channels a whole recording can be heard through, each keeping its length and level
# (`lead-in --channel`, and the sound-event head's fit on clips heard otherwise).
CHANNELS: Final[dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]]] = {
    "telephone": telephone,  # ~300-3400 Hz, 8 kHz, 8-bit mu-law
    "room": simulated_room,  # a random room's impulse response, RT60 0.15-0.8 s
    "microphone": mic_colouration,  # a random mic/loudspeaker response
}


def background_noise(x: np.ndarray, rng: np.random.Generator,
                     noise: np.ndarray | None = None,
                     snr_range: tuple[float, float] = (5.0, 30.0)) -> tuple[np.ndarray, float]:
  """`x` plus background noise at a random SNR; returns (float32[n], snr_db).

  `noise`: a recording (tiled from a random offset to the length of `x`); None
  draws coloured noise (white, pink or brown). The SNR is measured on the active
  part of `x` (|x| > 1e-4, as `active_rms_db`) against the noise over the same samples,
  so the pauses of sparse speech do not count.
  """
  snr = float(rng.uniform(*snr_range))
  exponent = float(rng.choice([0.0, 1.0, 2.0]))
  noise_seed = int(rng.integers(2**31))
  offset_u = float(rng.uniform())
  n = len(x)
  if n == 0:
    return x.astype(np.float32), snr
  if noise is None or len(noise) == 0:
    bed = colored_noise(np.random.default_rng(noise_seed), n, exponent)
  else:
    bed = np.roll(np.tile(noise, -(-n // len(noise)) + 1), -int(offset_u * len(noise)))[:n]
  active = np.abs(x) > 1e-4
  if not active.any() or power(bed[active]) <= 0.0:
    return x.astype(np.float32), snr
  gain = snr_gain(x[active], bed[active], snr)
  return (x.astype(np.float64) + gain * bed.astype(np.float64)).astype(np.float32), snr


@dataclasses.dataclass(frozen=True)
class Randomization:
  """Probabilities of the per-utterance effects (`randomize`); 0 turns one off."""

  p_speed: float = 0.5
  p_pitch: float = 0.4
  p_formant: float = 0.4
  p_telephone: float = 0.15
  p_room: float = 0.35
  p_mic: float = 0.5
  p_noise: float = 0.3
  speed_range: tuple[float, float] = (0.85, 1.2)
  semitone_range: tuple[float, float] = (-3.0, 3.0)
  formant_range: tuple[float, float] = (0.88, 1.14)
  noise_snr_range: tuple[float, float] = (10.0, 35.0)


def randomize(x: np.ndarray, rng: np.random.Generator,
              settings: Randomization = Randomization()) -> tuple[np.ndarray, float, tuple[str, ...]]:
  """The domain-randomisation chain of one utterance: speed, pitch, formants, mic
  colouration, room, telephone, background noise, each with its probability.

  Every stage gets its own generator seeded from `rng` in a fixed order, so one seed
  always gives the same result and switching one stage off does not change the
  others' draws. Returns (float32[round(n / rate)], rate, names of the applied
  stages): timings scale by 1 / rate (`change_speed`); the other stages keep length.
  """
  u = rng.uniform(size=7)
  seeds = rng.integers(2**31, size=7)
  gens = [np.random.default_rng(int(s)) for s in seeds]
  s = settings
  y, rate, applied = x.astype(np.float32), 1.0, []
  if u[0] < s.p_speed:
    y, rate = change_speed(y, gens[0], s.speed_range)
    applied.append("speed")
  if u[1] < s.p_pitch:
    y = pitch_shift(y, gens[1], s.semitone_range)
    applied.append("pitch")
  if u[2] < s.p_formant:
    y = formant_shift(y, gens[2], s.formant_range)
    applied.append("formant")
  if u[3] < s.p_mic:
    y = mic_colouration(y, gens[3])
    applied.append("mic")
  if u[4] < s.p_room:
    y = simulated_room(y, gens[4])
    applied.append("room")
  if u[5] < s.p_telephone:
    y = telephone(y, gens[5])
    applied.append("telephone")
  if u[6] < s.p_noise:
    y, _ = background_noise(y, gens[6], None, s.noise_snr_range)
    applied.append("noise")
  return y.astype(np.float32), rate, tuple(applied)
