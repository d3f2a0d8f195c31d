"""Fake recordings for tests of the real-audio readers: speech-like tone syllables."""

import numpy as np


def speechlike(seed: int, rate: int, seconds: float = 1.2, channels: int = 1) -> np.ndarray:
  """Tone syllables with gaps under 0.35 s, 0.2 s of silence either side."""
  rng = np.random.default_rng(seed)
  pieces = [np.zeros(int(0.2 * rate))]
  made = 0.0
  while made < seconds:
    n = int(rng.uniform(0.12, 0.25) * rate)
    t = np.arange(n) / rate
    pieces.append(0.3 * np.sin(2 * np.pi * rng.uniform(150, 300) * t) * np.hanning(n))
    gap = int(rng.uniform(0.03, 0.1) * rate)
    pieces.append(np.zeros(gap))
    made += (n + gap) / rate
  pieces.append(np.zeros(int(0.2 * rate)))
  x = np.concatenate(pieces).astype(np.float32)
  return np.stack([x] * channels, axis=1) if channels > 1 else x
