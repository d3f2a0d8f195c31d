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
import matplotlib.lines
import matplotlib.patches

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from audio_interaction.audio.features import log_mel  # noqa: E402
from audio_interaction.stream_format import SAMPLE_RATE  # noqa: E402
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


def timeline_figure(audio: np.ndarray, sample_rate: int, trace: StreamTrace, *,
                    threshold: float, decode: Callable[[list[int]], str] | None = None,
                    log_mel: np.ndarray | None = None, reference: Sequence[Span] = (),
                    title: str = "") -> plt.Figure:
  """The figure `plot_timeline` writes, laid out, with every label placed (open: close it).

  Reply labels (gid "reply") start where their reply began, each in the lowest free
  row of the decision axes; a label that would run into the next one of its row or
  past the axes is shortened with "…", so no two overlap and all stay inside. The
  legends sit outside the axes, to the right.
  """
  duration = max(len(audio) / sample_rate, trace.chunks[-1].end if trace.chunks else 0.0)
  figure, ax, reference_ax = _figure(audio, sample_rate, duration, log_mel, reference)
  ends = np.array([c.end for c in trace.chunks])
  probs = np.array([c.speak_probability for c in trace.chunks])
  # Each value spans its own chunk: decided at the chunk end, from what it heard in it.
  ax.step(ends, probs, where="pre", color="tab:red", label="P(SPEAK) at <decide>")
  turn_ended = [c.turn_end_probability for c in trace.chunks]
  # A turn-end head's, or the prosody model the policy decides on (`ChunkRecord`).
  if trace.chunks and all(p is not None for p in turn_ended):
    ax.step(ends, turn_ended, where="pre", color="tab:blue", linewidth=1.0,
            label="P(turn ended)")
  ax.axhline(threshold, color="k", linestyle="--", linewidth=0.8, label=f"threshold {threshold}")
  for chunk in trace.chunks:
    if chunk.spoke:
      ax.axvspan(chunk.start, chunk.end, color="tab:green", alpha=0.2, linewidth=0)
  handles = [*ax.get_lines(),
             matplotlib.patches.Patch(color="tab:green", alpha=0.2, label="chunk where it spoke"),
             matplotlib.patches.Patch(facecolor="white", edgecolor="0.6", linewidth=0.6,
                                      label="reply text, from its first token")]
  if decode is not None:
    # What the encoder's CTC head heard, each word at the time it was emitted.
    for word, emitted in trace.heard_words(decode):
      ax.text(emitted, 0.93, _printable(word), fontsize=6, color="tab:purple", rotation=30,
              va="top", clip_on=True, transform=ax.get_xaxis_transform())
    handles.append(matplotlib.lines.Line2D(
        [], [], color="tab:purple", marker=r"$\mathit{word}$", markersize=16, linestyle="none",
        label="heard: word the encoder's CTC\nhead emitted, at that time"))
  sound_runs = trace.sound_runs()
  for start, end, _ in sound_runs:  # what the sound-event head heard, where
    ax.plot([start, end], [0.8, 0.8], color="tab:orange", linewidth=3, solid_capstyle="butt")
  if sound_runs:
    handles.append(matplotlib.lines.Line2D(
        [], [], color="tab:orange", linewidth=3,
        label="heard: sound the sound-event\nhead named (P >= 0.5)"))
  ax.set_ylim(0, 1)
  ax.set_ylabel("decision")
  legend = _outside_legend(ax, handles)
  renderer = _layout(figure, title)
  replies = [(start, _printable(decode(tokens) if decode else " ".join(map(str, tokens))))
             for start, tokens in trace.replies]
  dropped = _place_labels(ax, renderer, replies, band=(0.02, 0.74), fontsize=7, gid="reply",
                          bbox=_LABEL_BOX)
  # The sound runs' names above their bars, placed like the replies so none overlap.
  _place_labels(ax, renderer, [(start, _printable(label.replace("_", " ")))
                               for start, _, label in sound_runs],
                band=(0.81, 0.99), fontsize=6, gid="sound", color="tab:orange")
  if dropped:
    legend.set_title(f"{dropped} reply label{'s' if dropped > 1 else ''} left out: no room",
                     prop={"size": 7})
  if reference_ax is not None:
    _place_expected_replies(reference_ax, renderer, reference)
  return figure


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
  figure = timeline_figure(audio, sample_rate, trace, threshold=threshold, decode=decode,
                           log_mel=log_mel, reference=reference, title=title)
  return _write(figure, path)


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
  figure, ax, reference_ax = _figure(audio, sample_rate, duration, log_mel, reference)
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
  renderer = _layout(figure, title)
  if reference_ax is not None:
    _place_expected_replies(reference_ax, renderer, reference)
  return _write(figure, path)


# Pictures are drawn at this resolution and labels measured at it: text extents do not
# scale exactly with the dpi (hinting), so measuring at another would misplace them.
_DPI = 110

# White box behind a label, over the curves and shading; pad in points (no boxstyle:
# with one, matplotlib reads pad in font sizes).
_LABEL_BOX = dict(facecolor="white", alpha=0.8, linewidth=0, pad=2.0)


def _figure(audio: np.ndarray, sample_rate: int, duration: float, log_mel: np.ndarray | None,
            reference: Sequence[Span]) -> tuple[plt.Figure, plt.Axes, plt.Axes | None]:
  """The waveform, log-mel and reference rows; returns the figure, its decision row and
  its reference row (None without reference spans). Expected-reply labels are placed
  after the layout (`_place_expected_replies`)."""
  rows = [("wave", 1.0)] + ([("mel", 1.2)] if log_mel is not None else [])
  rows += [("reference", 0.9)] if reference else []
  rows += [("decision", 1.4)]
  figure, axes = plt.subplots(len(rows), 1, figsize=(max(10, duration * 0.9) + 2.2,
                                                     2.0 * len(rows)),
                              sharex=True, height_ratios=[h for _, h in rows],
                              squeeze=False, dpi=_DPI)
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
      if span.kind != "expected_reply":
        ax.text(span.start, level + 0.5, span.label, fontsize=7, va="center", clip_on=True)
    ax.set_ylim(0, 3)
    ax.set_yticks([0.5, 1.5, 2.5], ["expected\nreply", "events", "words"], fontsize=7)
    marks = [k for k in ("filler", "pause") if any(span.kind == k for span in reference)]
    if marks:
      _outside_legend(ax, [matplotlib.patches.Patch(
          color=_KIND_COLOURS[k], alpha=0.5, label="hold (stay silent)" if k == "pause" else k)
          for k in marks])
  ax = axes["decision"]
  ax.set_xlabel("stream time (s)")
  ax.set_xlim(0, duration)
  return figure, ax, axes.get("reference")


def _outside_legend(ax: plt.Axes, handles: Sequence[Any]):
  """A legend right of the axes (labels inside the axes can never run into it)."""
  return ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.005, 1.0),
                   borderaxespad=0.0, fontsize=7)


def _layout(figure: plt.Figure, title: str):
  """Title and tight layout, then a renderer: labels are placed in the final geometry."""
  if title:
    figure.suptitle(title)
  figure.tight_layout()
  return figure.canvas.get_renderer()


def _write(figure: plt.Figure, path: str | pathlib.Path) -> pathlib.Path:
  """Saves a laid-out figure as is (a new layout would move the placed labels)."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  figure.savefig(path, dpi=_DPI)
  plt.close(figure)
  return path


def _place_expected_replies(ax: plt.Axes, renderer, reference: Sequence[Span]) -> None:
  """Expected-reply texts in their band of the reference row, inside the axes."""
  labels = [(s.start, _printable(s.label)) for s in reference
            if s.kind == "expected_reply" and s.label]
  level = _KIND_LEVELS["expected_reply"]
  y0, y1 = ax.get_ylim()
  band = ((level + 0.1 - y0) / (y1 - y0), (level + 0.9 - y0) / (y1 - y0))
  _place_labels(ax, renderer, labels, band=band, fontsize=7, gid="expected_reply")


def _place_labels(ax: plt.Axes, renderer, labels: Sequence[tuple[float, str]], *,
                  band: tuple[float, float], fontsize: float, gid: str,
                  bbox: dict[str, Any] | None = None, margin_px: float = 4.0,
                  color: str | None = None) -> int:
  """Writes each (x, text) at data x in the lowest free row of `band` (axes fractions).

  Rows are as tall as a line of text (with its box); a row is free at x when its last
  label ends left of x. A label is shortened ("…") to end before the axes' right edge;
  when no row is free, the row whose last label can be shortened the least gives way
  (keeping at least a few characters). Extents are measured with the renderer, so
  the figure's layout must be final. Returns how many labels found no room.
  """
  if not labels:
    return 0
  box = ax.get_window_extent(renderer)
  to_px = renderer.points_to_pixels
  pad = to_px(bbox.get("pad", 0.0)) if bbox else 0.0
  probe = ax.text(0, 0, "Ag|", fontsize=fontsize, transform=ax.transAxes)
  line_px = probe.get_window_extent(renderer).height
  probe.remove()
  pitch = line_px + 2 * pad + 2
  low, high = box.y0 + band[0] * box.height, box.y0 + band[1] * box.height
  num_rows = max(1, int((high - low) // pitch))
  # Per row, its labels left to right: (Text, its full text).
  rows: list[list[tuple[Any, str]]] = [[] for _ in range(num_rows)]
  right = box.x1 - pad - 2
  dropped = 0
  for x, text in sorted(labels, key=lambda item: item[0]):
    x_px = ax.transData.transform((x, 0))[0]
    if not box.x0 - 1 <= x_px < right or not text:
      dropped += bool(text)
      continue
    artist = ax.text(x, 0.0, text, fontsize=fontsize, va="bottom", ha="left", clip_on=True,
                     transform=ax.get_xaxis_transform(), bbox=bbox, gid=gid, color=color)
    start = x_px - pad - margin_px  # the previous label of a row must end before this
    free = [i for i, row in enumerate(rows)
            if not row or _extent(row[-1][0], renderer).x1 <= start]
    if free:
      row = free[0]
    else:
      # Shorten the last label of some row; the one keeping most of its text gives way.
      best = max(range(num_rows), key=lambda i: start - _extent(rows[i][-1][0], renderer).x0)
      last, last_text = rows[best][-1]
      if not _fit(last, last_text, start - _extent(last, renderer).x0, renderer, min_chars=4):
        artist.remove()
        dropped += 1
        continue
      row = best
    if not _fit(artist, text, right - x_px, renderer, min_chars=1):
      artist.remove()
      dropped += 1
      continue
    y_px = low + row * pitch + pad
    artist.set_y((y_px - box.y0) / box.height)
    rows[row].append((artist, text))
  return dropped


def _extent(artist, renderer):
  return artist.get_window_extent(renderer)


def _fit(artist, full: str, max_width: float, renderer, min_chars: int) -> bool:
  """Shortens `artist`'s text to a prefix of `full` ending in "…", at most `max_width`
  pixels wide. Returns False, leaving the text as it was, when `min_chars` characters
  do not fit.
  """
  if artist.get_window_extent(renderer).width <= max_width:
    return True
  original = artist.get_text()
  lo, hi = 0, len(full) - 1  # most characters kept before the "…" that fit
  while lo < hi:
    mid = (lo + hi + 1) // 2
    artist.set_text(full[:mid].rstrip() + "…")
    if artist.get_window_extent(renderer).width <= max_width:
      lo = mid
    else:
      hi = mid - 1
  if lo < min_chars:
    artist.set_text(original)
    return False
  artist.set_text(full[:lo].rstrip() + "…")
  return True


# -------------------------------------------------------------- the timeline
def write_timeline(result: LiveResult, path: str | os.PathLike[str], *, threshold: float,
                   decode: Callable[[list[int]], str] | None = None, frontend=None,
                   reference: Sequence[Any] = (), title: str = "") -> pathlib.Path | None:
  """The kept window as a timeline PNG (`plot_timeline`): audio, log-mel when a
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
  return plot_timeline(path, result.audio, SAMPLE_RATE, StreamTrace(chunks, result.trace.chunk_seconds),
                       threshold=threshold, decode=decode, log_mel=mel, reference=spans,
                       title=title)


class TimelinePicture:
  """A live-session sink (`infer.live.EventSink`) that draws the kept window at the end
  (`write_timeline`), also after an error or Ctrl-C: what came before is shown."""

  def __init__(self, path: str | os.PathLike[str], *, threshold: float,
               decode: Callable[[list[int]], str] | None = None, frontend=None,
               reference: Sequence[Any] = (), title: str = ""):
    self.path, self.threshold, self.decode = pathlib.Path(path), threshold, decode
    self.frontend, self.reference, self.title = frontend, reference, title
    self.written: pathlib.Path | None = None

  def __call__(self, event: dict[str, Any]) -> None:
    del event  # the picture is drawn from the session's result

  async def finish(self, result: LiveResult) -> None:
    self.written = write_timeline(result, self.path, threshold=self.threshold,
                                  decode=self.decode, frontend=self.frontend,
                                  reference=self.reference, title=self.title)
