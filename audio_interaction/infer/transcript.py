"""The streaming transcript: what the encoder's CTC head hears, chunk by chunk.

The CTC head reads every encoder frame, so the transcript costs one argmax per frame
inside `perceive` and needs no decoding pass. Greedy CTC decoding merges repeated
labels and drops blanks (`<pad>`); a label repeated across a chunk boundary is one
label, so the last label of the previous chunk is carried per stream.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from audio_interaction import stream_format as sf

BLANK_ID = sf.PAD_ID


def collapse_ctc(labels: np.ndarray, previous: np.ndarray) -> tuple[list[list[int]], np.ndarray]:
  """Greedy CTC decoding of one chunk of frames for B streams.

  Args:
    labels: [B, F] int argmax labels of the chunk's frames.
    previous: [B] int label of each stream's last frame before this chunk
      (`BLANK_ID` at the start).
  Returns:
    (tokens emitted in this chunk, per stream; the new `previous` [B]).
  """
  labels = np.asarray(labels)
  previous = np.asarray(previous)
  before = np.concatenate([previous[:, None], labels[:, :-1]], axis=1)
  emit = (labels != before) & (labels != BLANK_ID)
  # A copy: `labels` may be a read-only view of a device array, and callers reset rows
  # of the returned state in place.
  return ([row[keep].astype(int).tolist() for row, keep in zip(labels, emit)],
          labels[:, -1].copy())


def stable_emissions(partials: Sequence[Sequence[str]], chunk_seconds: float
                     ) -> tuple[tuple[str, float], ...]:
  """Emission times of the final partial hypothesis's words.

  Args:
    partials: the partial hypothesis (a word list) after each chunk, in order.
    chunk_seconds: chunk length (s); chunk c ends at (c + 1) * chunk_seconds.
  Returns:
    (word, time) per word of `partials[-1]`: time = end of the first chunk c such that
    every partial from c on starts with the final hypothesis's words up to this one (a
    word still growing, "hel" -> "hello", is emitted when it stops changing).
  """
  if not partials:
    return ()
  final = list(partials[-1])
  out = []
  for i, word in enumerate(final):
    prefix = final[:i + 1]
    first = len(partials) - 1
    while first > 0 and list(partials[first - 1][:i + 1]) == prefix:
      first -= 1
    out.append((word, (first + 1) * chunk_seconds))
  return tuple(out)


def heard_words(heard_per_chunk: Sequence[Sequence[int]], decode, chunk_seconds: float
                ) -> tuple[tuple[str, float], ...]:
  """Words of a streaming CTC transcript with their emission times (stream seconds).

  Args:
    heard_per_chunk: token ids emitted at each chunk (from `collapse_ctc`).
    decode: token ids -> text (e.g. `Tokenizer.decode`).
    chunk_seconds: chunk length.
  """
  tokens: list[int] = []
  words: list[str] = []
  partials = []
  for heard in heard_per_chunk:
    if heard:  # most chunks emit nothing: their partial is the previous one
      tokens += heard
      words = decode(tokens).split()
    partials.append(words)
  return stable_emissions(partials, chunk_seconds)
