"""Prosody of the speech before a pause, chunk by chunk: the turn-end cue without words.

A speaker who pauses mid-turn tends to hold or raise the pitch of the last syllable and
keep its loudness; one who has finished lets pitch and energy fall towards their own
baseline (final lowering) and draws the last syllable out. `ProsodyTracker` reads that
from a live stream: fed one chunk at a time, it gives after each chunk the
`FEATURE_NAMES` of the audio up to the chunk's end (nothing later), over the last
`HISTORY_SECONDS`; `prosody_features` runs it over a recording.

Pitch is librosa's YIN over 40 ms frames every 10 ms, each frame computed from its own
samples (a frame is final once its last sample has arrived, so chunk by chunk equals
the whole recording at once). A frame is voiced when it is periodic (`aperiodicity`),
its pitch is in the speaking range and its level within `VOICED_BELOW_PEAK_DB` of the
loudest frame of the history. Pitch
(semitones) and level (dB) are read relative to the speaker's own median over the voiced
frames of the history: a deep voice and a high one end a turn alike.

Measured on the real DEV turns (docs/real_audio_log.md, "Prosody hears a turn's end"): a linear read
of these 14 numbers tells a pause inside a turn from its end better than one of Whisper's
384-wide chunk features, on voices neither was fitted on.
"""

from __future__ import annotations

import librosa
import numpy as np

SAMPLE_RATE = 16000
HOP = 160  # 10 ms
FRAME = 640  # 40 ms: two periods of the lowest pitch tracked
F0_RANGE_HZ = (60.0, 400.0)
VOICED_BELOW_PEAK_DB = 30.0
# YIN's usual voicing bound on the normalised difference (`aperiodicity`): below it a
# frame repeats itself, as a voice does and room noise does not.
MAX_APERIODICITY = 0.3
SILENT_DB = -60.0  # frames below this are never voiced
HISTORY_SECONDS = 10.0
TAILS_S = (0.1, 0.3, 0.6)  # the stretches of the last voiced speech read
FEATURE_NAMES = (
    "pitch of the last 0.1 s", "pitch of the last 0.3 s", "pitch of the last 0.6 s",
    "pitch slope, last 0.3 s", "pitch slope, last 0.6 s",
    "level of the last 0.1 s", "level of the last 0.3 s", "level slope, last 0.3 s",
    "length of the last voiced run", "voiced share of the last 0.6 s",
    "silence since the last voiced frame", "voiced speech heard (log s)",
    "pitch spread", "no voiced frame yet")
NUM_FEATURES = len(FEATURE_NAMES)


def aperiodicity(frames: np.ndarray) -> np.ndarray:
  """frames [FRAME, F] -> [F]: YIN's cumulative mean normalised difference, at its
  lowest over the lags of the pitch range (de Cheveigné & Kawahara 2002): near 0 for a
  periodic frame (a voice), near 1 for noise, coloured noise too (whose plain
  autocorrelation is high at short lags)."""
  window = FRAME // 2
  x = frames.astype(np.float64).T  # [F, FRAME]
  lags = np.arange(1, int(SAMPLE_RATE / F0_RANGE_HZ[0]) + 1)
  # d(lag) = sum_j<window (x_j - x_j+lag)^2 = E(start) + E(shifted) - 2 r(lag), the
  # cross term by FFT.
  size = 2 * FRAME
  cross = np.fft.irfft(np.conj(np.fft.rfft(x[:, :window], size)) * np.fft.rfft(x, size),
                       size)[:, lags]
  energy = np.concatenate([np.zeros((len(x), 1)), np.cumsum(x * x, axis=1)], axis=1)
  shifted = energy[:, lags + window] - energy[:, lags]
  difference = np.maximum(energy[:, window:window + 1] + shifted - 2 * cross, 0.0).T
  cumulative_mean = np.cumsum(difference, axis=0) / lags[:, None]
  normalised = difference / np.maximum(cumulative_mean, 1e-12)
  lowest_lag = int(SAMPLE_RATE / F0_RANGE_HZ[1])
  return normalised[lowest_lag - 1:].min(0)


def _frames(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(pitch in semitones re 100 Hz [F] or NaN out of range, level dB [F], aperiodicity
  [F]) of the whole frames of `samples` (F = (n - FRAME) // HOP + 1)."""
  f0 = librosa.yin(samples, fmin=F0_RANGE_HZ[0], fmax=F0_RANGE_HZ[1], sr=SAMPLE_RATE,
                   frame_length=FRAME, hop_length=HOP, center=False)
  frames = librosa.util.frame(samples, frame_length=FRAME, hop_length=HOP)
  level = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=0) + 1e-10)
  count = min(len(f0), len(level))
  f0, level, frames = f0[:count], level[:count], frames[:, :count]
  in_range = (f0 > F0_RANGE_HZ[0] * 1.05) & (f0 < F0_RANGE_HZ[1] * 0.95)
  semitones = np.where(in_range, 12 * np.log2(np.maximum(f0, 1.0) / 100.0), np.nan)
  return semitones, level, aperiodicity(frames)


def _slope(values: np.ndarray, frames: np.ndarray) -> float:
  """Least-squares slope per second of `values` at frame indices `frames` (0: < 3 frames)."""
  if len(values) < 3:
    return 0.0
  t = frames * (HOP / SAMPLE_RATE)
  t = t - t.mean()
  return float((t * (values - values.mean())).sum() / max((t * t).sum(), 1e-12))


def features_of(semitones: np.ndarray, level: np.ndarray, voiced: np.ndarray,
                silence_seconds: float) -> np.ndarray:
  """float32 [NUM_FEATURES]: the prosody of a history's frames (semitones, level dB,
  voiced: [F] each, oldest first); `silence_seconds`: from the end of its last voiced
  frame to now."""
  out = np.zeros(NUM_FEATURES, np.float32)
  v = np.flatnonzero(voiced)
  if not len(v):
    out[-1] = 1.0
    return out
  pitch_ref, level_ref = np.median(semitones[v]), np.median(level[v])
  last = v[-1]
  frame_s = HOP / SAMPLE_RATE

  def tail(seconds: float) -> np.ndarray:
    return v[v > last - seconds / frame_s]
  t3, t6 = tail(0.3), tail(0.6)
  unvoiced_before = np.flatnonzero(~voiced[:last + 1])
  run = last - (unvoiced_before[-1] if len(unvoiced_before) else -1)
  out[:-1] = [
      *(np.median(semitones[tail(s)]) - pitch_ref for s in TAILS_S),
      _slope(semitones[t3], t3), _slope(semitones[t6], t6),
      np.median(level[tail(0.1)]) - level_ref, np.median(level[t3]) - level_ref,
      _slope(level[t3], t3),
      run * frame_s, len(t6) * frame_s / 0.6, silence_seconds,
      np.log1p(len(v) * frame_s), np.std(semitones[v])]
  return out


class ProsodyTracker:
  """A stream's prosody, chunk by chunk: `push(chunk)` -> the features after it.

  State: the samples of the frame not yet whole, and the last `HISTORY_SECONDS` of
  frames as arrays (pitch, level, voiced, end sample), so a chunk costs its new frames
  and one read of the history, not a pass over Python objects per frame.
  """

  def __init__(self, history_seconds: float = HISTORY_SECONDS):
    self.history_frames = max(1, int(round(history_seconds * SAMPLE_RATE / HOP)))
    self.reset()

  def reset(self) -> None:
    """Forgets the stream (a new one begins)."""
    self._pending = np.zeros(0, np.float32)  # samples after the last whole frame's start
    self._heard = 0  # samples pushed
    self._pitch = np.zeros(0)  # semitones, NaN out of range
    self._level = np.zeros(0)  # dB
    self._voiced = np.zeros(0, bool)
    self._ends = np.zeros(0, np.int64)  # each frame's end sample

  @property
  def frames_held(self) -> int:
    """Frames in the history (at most `history_frames`)."""
    return len(self._level)

  def push(self, chunk: np.ndarray) -> np.ndarray:
    """chunk float32 [n] (16 kHz, the stream's next samples) -> float32 [NUM_FEATURES]:
    the prosody of everything heard so far (within the history)."""
    chunk = np.asarray(chunk, np.float32).reshape(-1)
    samples = np.concatenate([self._pending, chunk])
    first_end = self._heard - self._pending.size + FRAME  # end sample of the next frame
    self._heard += chunk.size
    if samples.size < FRAME:
      self._pending = samples
      return self.features()
    semitones, level, aperiodic = _frames(samples)
    held, keep = len(self._level), self.history_frames
    levels = np.concatenate([self._level, level])
    # Each new frame's loudest frame: itself and the `keep` frames before it.
    peak = np.array([levels[max(0, held + i - keep):held + i + 1].max()
                     for i in range(len(level))])
    voiced = (~np.isnan(semitones) & (aperiodic <= MAX_APERIODICITY)
              & (level >= peak - VOICED_BELOW_PEAK_DB) & (level > SILENT_DB))
    self._pitch = np.concatenate([self._pitch, semitones])[-keep:]
    self._level = levels[-keep:]
    self._voiced = np.concatenate([self._voiced, voiced])[-keep:]
    self._ends = np.concatenate(
        [self._ends, first_end + HOP * np.arange(len(level), dtype=np.int64)])[-keep:]
    self._pending = samples[len(semitones) * HOP:]
    return self.features()

  def features(self) -> np.ndarray:
    """The features of the history as it stands (float32 [NUM_FEATURES])."""
    v = np.flatnonzero(self._voiced)
    silence = (self._heard - self._ends[v[-1]]) / SAMPLE_RATE if len(v) else 0.0
    return features_of(np.nan_to_num(self._pitch), self._level, self._voiced, silence)


def prosody_features(audio: np.ndarray, chunk_samples: int) -> np.ndarray:
  """audio float32 [n] -> [ceil(n / chunk_samples), NUM_FEATURES]: `ProsodyTracker`'s
  features after each chunk of the recording."""
  tracker = ProsodyTracker()
  audio = np.asarray(audio, np.float32)
  chunks = max(1, -(-audio.size // chunk_samples))
  return np.stack([tracker.push(audio[c * chunk_samples:(c + 1) * chunk_samples])
                   for c in range(chunks)])


class ProsodyEncoder:
  """`prosody_features` with a chunk encoder's interface (`clip_encoder.ChunkEncoder`:
  audio [n] -> [chunks, NUM_FEATURES], `chunk_samples`), so the turn-end fit reads it."""

  def __init__(self, chunk_samples: int):
    self.chunk_samples = chunk_samples

  def __call__(self, audio: np.ndarray) -> np.ndarray:
    return prosody_features(audio, self.chunk_samples)
