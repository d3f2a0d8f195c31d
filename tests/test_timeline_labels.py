"""Timeline pictures: reply labels never overlap each other or the legend, stay inside
their axes, and the legend explains the green shading and the purple words.

Checked on the rendered figure with matplotlib's text bounding boxes.
"""

from __future__ import annotations

import itertools

import matplotlib.pyplot as plt
import numpy as np
import pytest

from audio_interaction import stream_format as sf
from audio_interaction.infer.run_stream import ChunkRecord, StreamTrace
from audio_interaction.viz import timeline

CHUNK_S = 0.16
WORDS = ["three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
         "ok,", "turning", "the", "bedroom", "radio", "on", "smoke", "alarm", "going", "off"]


def _decode(ids) -> str:
  return " ".join(WORDS[(i - sf.NUM_SPECIAL_TOKENS) % len(WORDS)] for i in ids
                  if i >= sf.NUM_SPECIAL_TOKENS)


def _crowded_trace(num_chunks: int = 120, every: int = 3, seed: int = 0) -> StreamTrace:
  """A reply every `every` chunks, each several tokens long (long labels, close starts),
  and the encoder hearing a word every other chunk."""
  rng = np.random.default_rng(seed)
  chunks = []
  for index in range(num_chunks):
    speak = index % every == 0
    tokens = ([int(t) for t in rng.integers(sf.NUM_SPECIAL_TOKENS, 40, size=3)] + [sf.EOR_ID]
              if speak else [])
    chunks.append(ChunkRecord(
        index=index, start=index * CHUNK_S, end=(index + 1) * CHUNK_S,
        speak_probability=0.9 if speak else float(rng.uniform(0, 0.4)), spoke=speak,
        reply_tokens=tokens, compute_seconds=0.001,
        heard_tokens=[int(rng.integers(sf.NUM_SPECIAL_TOKENS, 40))] if index % 2 else []))
  return StreamTrace(chunks, CHUNK_S)


def _expected(num: int, gap: float) -> list[timeline.Span]:
  return [timeline.Span(i * gap + 0.3, i * gap + 0.8,
                        "three four five six seven eight nine ten eleven twelve thirteen",
                        "expected_reply") for i in range(num)] + [
      timeline.Span(0.2, 0.5, "please", "word"), timeline.Span(0.6, 1.2, "", "pause")]


def _overlap(a, b) -> bool:
  return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _inside(box, outer, tolerance: float = 0.5) -> bool:
  return (box.x0 >= outer.x0 - tolerance and box.x1 <= outer.x1 + tolerance
          and box.y0 >= outer.y0 - tolerance and box.y1 <= outer.y1 + tolerance)


def _labels(figure, gid: str):
  return [t for ax in figure.axes for t in ax.texts if t.get_gid() == gid]


@pytest.mark.parametrize("num_chunks,every", [(120, 3), (60, 1), (30, 2)])
def test_crowded_reply_labels_do_not_overlap_and_stay_inside(num_chunks, every):
  trace = _crowded_trace(num_chunks, every)
  audio = np.random.default_rng(1).standard_normal(int(num_chunks * CHUNK_S * 16000)) * 0.1
  figure = timeline.timeline_figure(audio.astype(np.float32), 16000, trace, threshold=0.5,
                                    decode=_decode, reference=_expected(8, 0.6),
                                    title="crowded")
  try:
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    for gid, minimum in (("reply", 0.5 * len(trace.replies)), ("expected_reply", 4)):
      texts = _labels(figure, gid)
      assert len(texts) >= minimum, (gid, len(texts))
      boxes = [t.get_window_extent(renderer) for t in texts]
      for (a, box_a), (b, box_b) in itertools.combinations(zip(texts, boxes), 2):
        assert not _overlap(box_a, box_b), f"{gid}: {a.get_text()!r} overlaps {b.get_text()!r}"
      # A label's white box must not hide another label either.
      patches = [(t, t.get_bbox_patch()) for t in texts if t.get_bbox_patch() is not None]
      for (a, patch), b in itertools.product(patches, texts):
        if a is not b:
          assert not _overlap(patch.get_window_extent(renderer), b.get_window_extent(renderer)), (
              f"{gid}: the box of {a.get_text()!r} covers {b.get_text()!r}")
      for text, box in zip(texts, boxes):
        assert _inside(box, text.axes.get_window_extent(renderer)), (
            f"{gid} label {text.get_text()!r} outside its axes")
        legend = text.axes.get_legend()
        if legend is not None:
          assert not _overlap(box, legend.get_window_extent(renderer)), text.get_text()
    # Every reply is labelled, or the legend says how many were left out.
    decision = _labels(figure, "reply")[0].axes
    title = decision.get_legend().get_title().get_text()
    left_out = int(title.split()[0]) if title else 0
    assert len(_labels(figure, "reply")) + left_out == len(trace.replies)
  finally:
    plt.close(figure)


def test_the_legend_explains_the_shading_and_the_heard_words():
  figure = timeline.timeline_figure(np.zeros(16000 * 5, np.float32), 16000, _crowded_trace(30),
                                    threshold=0.5, decode=_decode)
  try:
    decision = figure.axes[-1]
    entries = [t.get_text() for t in decision.get_legend().get_texts()]
    assert any("spoke" in e for e in entries), entries
    assert any("heard" in e and "encoder" in e for e in entries), entries
    handles = decision.get_legend().legend_handles
    shading = next(h for h, e in zip(handles, entries) if "spoke" in e)
    heard = next(h for h, e in zip(handles, entries) if "heard" in e)
    assert shading.get_facecolor()[:3] == pytest.approx(plt.matplotlib.colors.to_rgb("tab:green"))
    assert heard.get_color() == "tab:purple"
  finally:
    plt.close(figure)


def test_plot_timeline_writes_the_png(tmp_path):
  out = timeline.plot_timeline(tmp_path / "t.png", np.zeros(16000 * 3, np.float32), 16000,
                               _crowded_trace(18), threshold=0.5, decode=_decode,
                               reference=_expected(2, 1.0), title="t")
  assert out.stat().st_size > 10_000


def test_sound_runs_merge_chunks_and_are_drawn_with_a_legend_entry():
  trace = _crowded_trace(12)
  heard = [None, "dog_bark", "dog_bark", "dog_bark", None, "siren", "siren", "dog_bark",
           "dog_bark", None, None, "siren"]
  probability = [0, 0.9, 0.6, 0.8, 0, 0.7, 0.4, 0.9, 0.9, 0, 0, 0.95]
  for chunk, label, p in zip(trace.chunks, heard, probability):
    chunk.sound_event, chunk.sound_probability = label, p
  # The siren at chunk 6 is below 0.5: its run is one chunk.
  assert trace.sound_runs() == [(pytest.approx(0.16), pytest.approx(0.64), "dog_bark"),
                                (pytest.approx(0.8), pytest.approx(0.96), "siren"),
                                (pytest.approx(1.12), pytest.approx(1.44), "dog_bark"),
                                (pytest.approx(1.76), pytest.approx(1.92), "siren")]
  assert [r[2] for r in trace.sound_runs(0.3)] == ["dog_bark", "siren", "dog_bark", "siren"]
  assert trace.sound_runs(0.3)[1][1] == pytest.approx(1.12)  # 0.4 now counts: two chunks
  figure = timeline.timeline_figure(np.zeros(16000 * 2, np.float32), 16000, trace,
                                    threshold=0.5, decode=_decode)
  try:
    decision = figure.axes[-1]
    drawn = _labels(figure, "sound")
    assert [t.get_text() for t in drawn] == ["dog bark", "siren", "dog bark", "siren"]
    assert all(t.get_color() == "tab:orange" for t in drawn)
    for a, b in itertools.combinations(drawn, 2):  # placed like the replies: none overlap
      assert not _overlap(a.get_window_extent(), b.get_window_extent())
    entries = [t.get_text() for t in decision.get_legend().get_texts()]
    assert any("sound-event" in e for e in entries), entries
  finally:
    plt.close(figure)


def test_sound_labels_of_adjacent_runs_do_not_overlap():
  trace = _crowded_trace(24)
  for chunk in trace.chunks:  # a different class every chunk: names 0.16 s apart
    chunk.sound_event = ("vacuum_cleaner", "notification", "glass_break")[chunk.index % 3]
    chunk.sound_probability = 0.9
  figure = timeline.timeline_figure(np.zeros(16000 * 4, np.float32), 16000, trace,
                                    threshold=0.5, decode=_decode)
  try:
    drawn = _labels(figure, "sound")
    assert len(drawn) >= 2
    inside = figure.axes[-1].get_window_extent()
    for label in drawn:
      assert _inside(label.get_window_extent(), inside)
    for a, b in itertools.combinations(drawn, 2):
      assert not _overlap(a.get_window_extent(), b.get_window_extent()), (a.get_text(), b.get_text())
  finally:
    plt.close(figure)


def test_the_turn_end_head_is_drawn_when_the_model_has_one():
  trace = _crowded_trace(6)
  figure = timeline.timeline_figure(np.zeros(16000, np.float32), 16000, trace, threshold=0.5)
  try:
    assert not [l for l in figure.axes[-1].get_lines() if "turn ended" in l.get_label()]
  finally:
    plt.close(figure)
  for chunk, p in zip(trace.chunks, [0.1, 0.2, 0.9, 0.95, 0.3, 0.1]):
    chunk.turn_end_probability = p
  figure = timeline.timeline_figure(np.zeros(16000, np.float32), 16000, trace, threshold=0.5)
  try:
    (line,) = [l for l in figure.axes[-1].get_lines() if "turn ended" in l.get_label()]
    assert list(line.get_ydata()) == [0.1, 0.2, 0.9, 0.95, 0.3, 0.1]
    entries = [t.get_text() for t in figure.axes[-1].get_legend().get_texts()]
    assert any("turn ended" in e for e in entries), entries
  finally:
    plt.close(figure)
