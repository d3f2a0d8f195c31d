"""Timeline pictures of a stream: audio, what was said and heard, and what the model did.

Rows, top to bottom: waveform; log-mel; reference spans (words with fillers and
mid-utterance pauses marked, sound events, the times where a reply was warranted);
then a decision row. `plot_timeline` draws a model's run there: P(SPEAK) per chunk
against the threshold, with the chunks where the model spoke shaded and its reply
text written where it began -- to show *why* the model spoke: which chunk, which
probability. `plot_labels` draws a training example's targets there instead: the
SILENT/SPEAK label of every chunk and the reply tokens written after it.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import matplotlib
import matplotlib.patches

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from audio_interaction.audio.features import log_mel  # noqa: E402
from audio_interaction.corpus.timeline import Timeline  # noqa: E402
from audio_interaction.infer.live import LiveResult  # noqa: E402
from audio_interaction.infer.run_stream import StreamTrace  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Span:
  """A labelled interval of stream time (seconds) drawn on the reference row."""

  start: float
  end: float
  label: str
  kind: str = "word"  # "word", "filler", "pause", "event", "expected_reply"


_KIND_COLOURS = {"word": "tab:blue", "filler": "tab:purple", "pause": "0.75",
                 "event": "tab:orange", "expected_reply": "tab:green"}
# Reference row level of each kind: fillers and pauses sit among the words.
_KIND_LEVELS = {"word": 2, "filler": 2, "pause": 2, "event": 1, "expected_reply": 0}


def _printable(text: str) -> str:
  """Text a font can draw: control characters (an untrained byte model writes them) as '?'."""
  return "".join(ch if ch.isprintable() else "?" for ch in text)


def timeline_spans(timeline: Timeline) -> list[Span]:
  """Reference spans of a composed timeline: words (fillers as "filler"), the
  mid-utterance holds that must stay SILENT ("pause"), sound events, and each
  expected reply from its ready time."""
  spans = []
  for utterance in timeline.utterances:
    spans += [Span(w.start, w.end, w.text, "filler" if filler else "word")
              for w, filler in zip(utterance.words, utterance.fillers)]
    # Unlabelled: a hold spans the filler words it contains, whose text is drawn.
    spans += [Span(h.start, h.end, "", "pause") for h in utterance.holds]
  spans += [Span(e.start, e.end, e.label, "event") for e in timeline.sounds]
  spans += [Span(r.ready_time, r.ready_time + 0.5, r.text, "expected_reply")
            for r in timeline.replies]
  return spans


@dataclasses.dataclass(frozen=True)
class ChunkLabel:
  """A chunk's training target: [start, end) in seconds, SPEAK or not, and the text of
  the reply tokens that follow its `<decide>` ("" if none)."""

  start: float
  end: float
  speak: bool
  text: str = ""


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
  duration = max(len(audio) / sample_rate, trace.chunks[-1].end if trace.chunks else 0.0)
  figure, ax = _figure(audio, sample_rate, duration, log_mel, reference)
  ends = np.array([c.end for c in trace.chunks])
  probs = np.array([c.speak_probability for c in trace.chunks])
  # Each value spans its own chunk: decided at the chunk end, from what it heard in it.
  ax.step(ends, probs, where="pre", color="tab:red", label="P(SPEAK) at <decide>")
  ax.axhline(threshold, color="k", linestyle="--", linewidth=0.8, label=f"threshold {threshold}")
  for chunk in trace.chunks:
    if chunk.spoke:
      ax.axvspan(chunk.start, chunk.end, color="tab:green", alpha=0.2, linewidth=0)
  for start, tokens in trace.replies:
    text = _printable(decode(tokens) if decode else " ".join(map(str, tokens)))
    ax.text(start, 0.06, text[:60], fontsize=7, clip_on=True,
            bbox=dict(facecolor="white", alpha=0.8, linewidth=0))
  if decode is not None:
    # What the encoder's CTC head heard, each word at the time it was emitted.
    for word, emitted in trace.heard_words(decode):
      ax.text(emitted, 0.93, _printable(word), fontsize=6, color="tab:purple", rotation=30,
              va="top", clip_on=True)
  ax.set_ylim(0, 1)
  ax.set_ylabel("decision")
  ax.legend(loc="lower right", fontsize=7)
  return _save(figure, path, title)


def plot_labels(path: str | pathlib.Path, audio: np.ndarray, sample_rate: int,
                chunks: Sequence[ChunkLabel], *, log_mel: np.ndarray | None = None,
                reference: Sequence[Span] = (), note: str = "", title: str = ""
                ) -> pathlib.Path:
  """Writes the timeline PNG of a training example's targets and returns its path.

  Args:
    audio: [S] samples of the stream.
    chunks: every chunk's label and reply text, in order (empty for offline examples).
    log_mel: optional [F, n_mels] features to show.
    reference: spans to draw (see `timeline_spans`).
    note: text written in the decision row (e.g. an offline example's answer).
  """
  duration = max(len(audio) / sample_rate, chunks[-1].end if chunks else 0.0)
  figure, ax = _figure(audio, sample_rate, duration, log_mel, reference)
  for chunk in chunks:
    if chunk.speak:
      ax.axvspan(chunk.start, chunk.end, ymax=0.5, color="tab:green", alpha=0.5, linewidth=0)
    ax.axvline(chunk.start, color="0.85", linewidth=0.4)
    if chunk.text:
      # One chunk is narrow: its tokens are written upwards from the chunk's start.
      ax.text(chunk.start, 0.55, _printable(chunk.text), rotation=90, fontsize=6, va="bottom",
              clip_on=True)
  if note:
    ax.text(0.01, 0.25, note[:120], transform=ax.transAxes, fontsize=8,
            bbox=dict(facecolor="white", alpha=0.8, linewidth=0))
  ax.set_ylim(0, 1)
  ax.set_yticks([0.25, 0.75], ["SPEAK\nlabel", "reply\ntokens"], fontsize=7)
  ax.set_ylabel("targets")
  return _save(figure, path, title)


def _figure(audio: np.ndarray, sample_rate: int, duration: float, log_mel: np.ndarray | None,
            reference: Sequence[Span]) -> tuple[plt.Figure, plt.Axes]:
  """The waveform, log-mel and reference rows; returns the figure and its decision row."""
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
    for span in reference:
      level = _KIND_LEVELS.get(span.kind, 1)
      ax.broken_barh([(span.start, max(span.end - span.start, 0.02))], (level + 0.1, 0.8),
                     color=_KIND_COLOURS.get(span.kind, "tab:gray"), alpha=0.5)
      ax.text(span.start, level + 0.5, span.label, fontsize=7, va="center", clip_on=True)
    ax.set_ylim(0, 3)
    ax.set_yticks([0.5, 1.5, 2.5], ["expected\nreply", "events", "words"], fontsize=7)
    marks = [k for k in ("filler", "pause") if any(span.kind == k for span in reference)]
    if marks:
      ax.legend(handles=[matplotlib.patches.Patch(color=_KIND_COLOURS[k], alpha=0.5,
                                                  label="hold (stay silent)" if k == "pause" else k)
                         for k in marks], loc="upper right", fontsize=7)
  ax = axes["decision"]
  ax.set_xlabel("stream time (s)")
  ax.set_xlim(0, duration)
  return figure, ax


def _save(figure: plt.Figure, path: str | pathlib.Path, title: str) -> pathlib.Path:
  path = pathlib.Path(path)
  if title:
    figure.suptitle(title)
  figure.tight_layout()
  path.parent.mkdir(parents=True, exist_ok=True)
  figure.savefig(path, dpi=110)
  plt.close(figure)
  return path


# -------------------------------------------------------------- the timeline
def write_timeline(result: LiveResult, path: str | os.PathLike[str], *, threshold: float,
                   decode: Callable[[list[int]], str] | None = None, frontend=None,
                   reference: Sequence[Any] = (), title: str = "") -> pathlib.Path | None:
  """The kept window as a timeline PNG (`eval.timeline_plot`): audio, log-mel when a
  `frontend` is given, reference spans, P(SPEAK) per chunk against `threshold` and
  what the model said where. Times are shifted to the window's start (the title says
  by how much). Returns None when nothing was perceived."""
  if not result.trace.chunks:
    return None
  offset = result.audio_start
  chunks = [dataclasses.replace(c, start=c.start - offset, end=c.end - offset)
            for c in result.trace.chunks if c.start >= offset]
  spans = [dataclasses.replace(s, start=s.start - offset, end=s.end - offset)
           for s in reference if s.end > offset]
  mel = None
  if frontend is not None and len(result.audio):
    # The picture shows all the audio; only the mel needs whole hops: the last partial
    # hop is zero-padded (less than one frame, drawn over the audio's own length).
    audio = np.asarray(result.audio, np.float32)
    audio = np.pad(audio, (0, -len(audio) % frontend.hop_length))
    mel = np.asarray(log_mel(audio[None], frontend))[0]
  if offset > 0:
    title = f"{title} (last {result.stream_seconds - offset:.0f} s; add {offset:.1f} s for stream time)"
  return plot_timeline(path, result.audio, 16000, StreamTrace(chunks, result.trace.chunk_seconds),
                       threshold=threshold, decode=decode, log_mel=mel, reference=spans,
                       title=title)
