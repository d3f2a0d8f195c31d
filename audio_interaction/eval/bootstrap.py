"""Percentile-bootstrap confidence intervals over evaluation cases.

A headline figure is a statistic of a set of cases (a WER pooled over clips, a median
latency over every turn of every stream, ...). Its 95 % interval here is the percentile
bootstrap over *cases*: draw as many cases as there are, with replacement, score the
draw the same way, and repeat `resamples` times; the interval is the 2.5th and 97.5th
percentiles of the resampled values (numpy's linear interpolation). Cases, not turns or
words, are resampled because items within one stream are not independent.

Resamples where a statistic is undefined (NaN: e.g. no turn was answered) are left out
of that statistic's percentiles; `resamples` in the result says how many were kept.
The draws come from `numpy.random.default_rng(seed)`: the same seed gives the same
intervals.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

LEVEL = 0.95
RESAMPLES = 1000


def bootstrap_intervals(num_cases: int,
                        statistic: Callable[[np.ndarray], Mapping[str, float]], *,
                        resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL
                        ) -> dict[str, dict[str, float]]:
  """Intervals of every value `statistic` returns.

  Args:
    num_cases: how many cases there are (indices 0..num_cases-1).
    statistic: indices int[num_cases] of one resample (with repeats) -> name -> value.
    resamples: how many resamples; seed: the generator's seed; level: e.g. 0.95.
  Returns:
    name -> {"low", "high", "resamples" (finite values kept), "cases": num_cases};
    low/high NaN when no resample gave a finite value (or there are no cases).
  """
  if not 0 < level < 1:
    raise ValueError(f"level must be in (0, 1), got {level}")
  draws: dict[str, list[float]] = collections.defaultdict(list)
  names: set[str] = set()
  rng = np.random.default_rng(seed)
  for _ in range(resamples if num_cases else 0):
    values = statistic(rng.integers(0, num_cases, num_cases))
    for name, value in values.items():
      names.add(name)
      if value is not None and math.isfinite(value):
        draws[name].append(float(value))
  tail = 100 * (1 - level) / 2
  out = {}
  for name in sorted(names):
    kept = draws.get(name, [])
    low, high = (np.percentile(kept, [tail, 100 - tail]) if kept else (math.nan, math.nan))
    out[name] = {"low": float(low), "high": float(high), "resamples": len(kept),
                 "cases": num_cases}
  return out


def interval(values: Sequence[float], statistic: Callable[[np.ndarray], float] = np.mean, *,
             resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL
             ) -> tuple[float, float]:
  """(low, high) of `statistic` over per-case `values` (e.g. the mean of per-case scores)."""
  array = np.asarray(values, np.float64)
  result = bootstrap_intervals(len(array), lambda idx: {"x": float(statistic(array[idx]))},
                               resamples=resamples, seed=seed, level=level)
  if "x" not in result:
    return math.nan, math.nan
  return result["x"]["low"], result["x"]["high"]
