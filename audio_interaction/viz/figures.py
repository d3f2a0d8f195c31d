"""Writing a matplotlib figure: one place for the PNG settings every picture uses."""

from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  # pylint: disable=wrong-import-position

DPI = 110


def save_figure(figure, out: str | pathlib.Path) -> pathlib.Path:
  """Writes `figure` as a PNG at `out` (its folder made) and closes it; returns `out`."""
  out = pathlib.Path(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  figure.savefig(out, dpi=DPI)
  plt.close(figure)
  return out
