"""Percentile-bootstrap intervals over cases: a hand-computed case, the seed, and that the
interval of every headline brackets the figure the suite reports."""

import math

import numpy as np
import pytest

from audio_interaction.eval import bootstrap


def test_two_cases_hand_computed():
  # Resampled means of [0, 1] are 0, 0.5, 1 with chances 1/4, 1/2, 1/4: with 1000
  # resamples both extremes occur (a miss has chance 0.75**1000), so the 2.5th and
  # 97.5th percentiles are exactly 0 and 1.
  assert bootstrap.interval([0.0, 1.0], resamples=1000, seed=3) == (0.0, 1.0)
  assert bootstrap.interval([2.0, 2.0, 2.0]) == (2.0, 2.0)


def test_hand_computed_percentiles_of_a_known_resample_distribution():
  # One case: every resample is that case, whatever the seed.
  result = bootstrap.bootstrap_intervals(1, lambda idx: {"x": 7.0 * len(idx)}, resamples=20)
  assert result == {"x": {"low": 7.0, "high": 7.0, "resamples": 20, "cases": 1}}


def test_same_seed_same_interval_other_seed_other_interval():
  values = np.random.default_rng(0).normal(size=30)
  a = bootstrap.interval(values, seed=1, resamples=200)
  assert a == bootstrap.interval(values, seed=1, resamples=200)
  assert a != bootstrap.interval(values, seed=2, resamples=200)
  assert a[0] < values.mean() < a[1]


def test_undefined_resamples_are_left_out_and_counted():
  # The statistic is NaN when the draw holds only case 0.
  values = np.array([0.0, 1.0])

  def stat(idx):
    kept = values[idx][values[idx] > 0]
    return {"m": float(kept.mean()) if kept.size else math.nan}

  result = bootstrap.bootstrap_intervals(2, stat, resamples=400, seed=0)["m"]
  assert result["low"] == result["high"] == 1.0
  assert 0 < result["resamples"] < 400
  assert bootstrap.bootstrap_intervals(0, stat) == {}
  with pytest.raises(ValueError):
    bootstrap.bootstrap_intervals(2, stat, level=1.5)
