"""Timeline pictures of a stream: audio, what was said and heard, and what the model did.

Rows, top to bottom: waveform; log-mel; reference spans (words, sound events, the
chunks where a reply was warranted); P(SPEAK) per chunk against the threshold, with
the chunks where the model spoke shaded and its reply text written where it began.
The point is to show *why* the model spoke: which chunk, which probability.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable, Sequence

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from audio_interaction.infer.run_stream import StreamTrace  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Span:
  """A labelled interval of stream time (seconds) drawn on the reference row."""

  start: float
  end: float
  label: str
  kind: str = "word"  # "word", "event", "expected_reply"


_KIND_COLOURS = {"word": "tab:blue", "event": "tab:orange", "expected_reply": "tab:green"}


def plot_timeline(path: str | pathlib.Path, audio: np.ndarray, sample_rate: int,
                  trace: StreamTrace, *, threshold: float,
                  decode: Callable[[list[int]], str] | None = None,
                  log_mel: np.ndarray | None = None, reference: Sequence[Span] = (),
                  title: str = "") -> pathlib.Path:
  """Writes the timeline PNG and returns its path.

  Args:
    audio: [S] samples of the stream.
    trace: what the engine did per chunk (`run_stream`).
    threshold: the decision threshold used.
    decode: token ids -> text for reply labels (ids are printed without it).
    log_mel: optional [F, n_mels] features to show.
    reference: ground-truth spans to draw (words, events, expected replies).
  """
  path = pathlib.Path(path)
  duration = max(len(audio) / sample_rate, trace.chunks[-1].end if trace.chunks else 0.0)
  rows = [("wave", 1.0)] + ([("mel", 1.2)] if log_mel is not None else [])
  rows += [("reference", 0.9)] if reference else []
  rows += [("decision", 1.4)]
  figure, axes = plt.subplots(len(rows), 1, figsize=(max(10, duration * 0.9), 2.0 * len(rows)),
                              sharex=True, height_ratios=[h for _, h in rows],
                              squeeze=False)
  axes = {name: ax for (name, _), ax in zip(rows, axes[:, 0])}

  times = np.arange(len(audio)) / sample_rate
  axes["wave"].plot(times, audio, linewidth=0.4, color="0.3")
  axes["wave"].set_ylabel("audio")
  if log_mel is not None:
    axes["mel"].imshow(log_mel.T, origin="lower", aspect="auto", cmap="magma",
                       extent=(0, len(audio) / sample_rate, 0, log_mel.shape[1]))
    axes["mel"].set_ylabel("log-mel")
  if reference:
    ax = axes["reference"]
    levels = {"word": 2, "event": 1, "expected_reply": 0}
    for span in reference:
      level = levels.get(span.kind, 1)
      ax.broken_barh([(span.start, max(span.end - span.start, 0.02))], (level + 0.1, 0.8),
                     color=_KIND_COLOURS.get(span.kind, "tab:gray"), alpha=0.5)
      ax.text(span.start, level + 0.5, span.label, fontsize=7, va="center", clip_on=True)
    ax.set_ylim(0, 3)
    ax.set_yticks([0.5, 1.5, 2.5], ["expected\nreply", "events", "words"], fontsize=7)

  ax = axes["decision"]
  ends = np.array([c.end for c in trace.chunks])
  probs = np.array([c.speak_probability for c in trace.chunks])
  ax.step(ends, probs, where="post", color="tab:red", label="P(SPEAK) at <decide>")
  ax.axhline(threshold, color="k", linestyle="--", linewidth=0.8, label=f"threshold {threshold}")
  for chunk in trace.chunks:
    if chunk.spoke:
      ax.axvspan(chunk.start, chunk.end, color="tab:green", alpha=0.2, linewidth=0)
  for start, tokens in trace.replies:
    text = decode(tokens) if decode else " ".join(map(str, tokens))
    ax.text(start, 0.06, text[:60], fontsize=7, clip_on=True,
            bbox=dict(facecolor="white", alpha=0.8, linewidth=0))
  ax.set_ylim(0, 1)
  ax.set_ylabel("decision")
  ax.set_xlabel("stream time (s)")
  ax.legend(loc="lower right", fontsize=7)
  ax.set_xlim(0, duration)
  if title:
    figure.suptitle(title)
  figure.tight_layout()
  path.parent.mkdir(parents=True, exist_ok=True)
  figure.savefig(path, dpi=110)
  plt.close(figure)
  return path
