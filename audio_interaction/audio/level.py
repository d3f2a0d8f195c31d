"""Signal level in dBFS (full scale = 1.0): one definition for the corpus's levelling
(`corpus/effects.py`) and the energy VAD (`audio/vad.py`)."""

from __future__ import annotations

import math

import numpy as np

# Power floor (about -200 dBFS) so levels of digital silence are finite.
POWER_FLOOR = 1e-20


def power(x: np.ndarray) -> float:
  """Mean square of `x` (float[n]); 0.0 for an empty array."""
  if x.size == 0:
    return 0.0
  x64 = x.astype(np.float64)
  return float(np.mean(x64 * x64))


def rms_db(x: np.ndarray) -> float:
  """RMS level of `x` in dBFS (full scale = 1.0); about -200 for silence."""
  return 10.0 * math.log10(power(x) + POWER_FLOOR)
