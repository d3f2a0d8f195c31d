"""Word spans of connected speech, carried over from a word-by-word rendering by DTW.

A TTS engine that says a whole sentence gives natural connected speech (coarticulation,
sentence intonation, its own pauses at commas) but no word timings. The same engine,
voice, rate and pitch saying each word on its own gives exact spans but citation-form
speech. `transfer_word_spans` aligns the two with dynamic time warping on MFCCs
(`librosa.sequence.dtw`) and maps each word's span from the word-by-word rendering onto
the connected one; the edges are then pulled in to the connected clip's voiced frames,
so a pause the engine put after a comma lies between two words, not inside one.
"""

from __future__ import annotations

from collections.abc import Sequence

import librosa
import numpy as np

from audio_interaction.corpus import effects
from audio_interaction.stream_format import SAMPLE_RATE

FRAME_HOP = 160  # 10 ms at 16 kHz
_N_FFT = 400
_N_MFCC = 20


def _features(audio: np.ndarray) -> np.ndarray:
  """float32[n] audio -> per-utterance normalised MFCCs float32[_N_MFCC, frames]."""
  mfcc = librosa.feature.mfcc(y=np.asarray(audio, np.float32), sr=SAMPLE_RATE,
                              n_mfcc=_N_MFCC, n_fft=_N_FFT, hop_length=FRAME_HOP)
  mfcc -= mfcc.mean(axis=1, keepdims=True)
  return mfcc / (mfcc.std(axis=1, keepdims=True) + 1e-5)


def _voiced_frames(audio: np.ndarray, threshold_db: float) -> np.ndarray:
  """bool[frames] on the MFCC frame grid: a frame is within `threshold_db` of the
  clip's loudest frame (`effects.frame_rms_db` levels, as `effects.trim_silence`)."""
  levels = effects.frame_rms_db(np.asarray(audio, np.float32), FRAME_HOP, FRAME_HOP)
  voiced = np.zeros(1 + len(audio) // FRAME_HOP, bool)
  voiced[:len(levels)] = levels > float(levels.max()) + threshold_db
  return voiced


def transfer_word_spans(reference: np.ndarray, reference_spans: Sequence[tuple[int, int]],
                        connected: np.ndarray, *, threshold_db: float = -40.0
                        ) -> list[tuple[int, int]]:
  """Maps word spans of `reference` onto `connected`, the same words said as one clip.

  Args:
    reference: float32[n] 16 kHz word-by-word rendering.
    reference_spans: (start, end) sample spans of its words, in order, non-overlapping.
    connected: float32[m] 16 kHz rendering of the same words in one utterance.
    threshold_db: a frame of `connected` is silent below this level relative to its
      loudest frame; word edges move inward past silent frames.

  Returns:
    (start, end) sample spans in `connected`, one per word, in order and
    non-overlapping, each at least one sample long and inside [0, m].

  Raises:
    ValueError: `connected` has fewer 10 ms frames than there are words.
  """
  if not reference_spans:
    return []
  m = len(connected)
  # Frames that start inside the clip: each word gets at least one of its own.
  usable = -(-m // FRAME_HOP)
  if usable < len(reference_spans):
    raise ValueError(f"connected clip of {m} samples is too short for "
                     f"{len(reference_spans)} words (one {FRAME_HOP}-sample frame each)")
  ref_features, con_features = _features(reference), _features(connected)
  _, path = librosa.sequence.dtw(X=ref_features, Y=con_features, metric="euclidean")
  n_ref, n_con = ref_features.shape[1], con_features.shape[1]
  # For every reference frame, the first and last connected frames it is matched to.
  first = np.full(n_ref, n_con, np.int64)
  last = np.full(n_ref, -1, np.int64)
  np.minimum.at(first, path[:, 0], path[:, 1])
  np.maximum.at(last, path[:, 0], path[:, 1])
  voiced = _voiced_frames(connected, threshold_db)
  out: list[tuple[int, int]] = []
  floor = 0
  for i, (start, end) in enumerate(reference_spans):
    # The frames this word may take: after the previous word, leaving one per later word.
    ceiling = usable - (len(reference_spans) - i)
    f0 = min(max(int(start) // FRAME_HOP, 0), n_ref - 1)
    f1 = min(max((int(end) - 1) // FRAME_HOP, f0), n_ref - 1)
    c0 = min(max(int(first[f0]), floor), ceiling)
    c1 = min(max(int(last[f1]), c0), ceiling)
    while c0 < c1 and not voiced[c0]:
      c0 += 1
    while c1 > c0 and not voiced[c1]:
      c1 -= 1
    out.append((c0 * FRAME_HOP, min((c1 + 1) * FRAME_HOP, m)))
    floor = c1 + 1
  return out
