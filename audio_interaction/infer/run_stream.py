"""Run the engine over a recorded waveform, chunk by chunk, and keep a trace of what it did.

This is the perceive → decide → respond loop without real-time pacing: the same
engine calls the live loop makes, in the same order, so a trace made here is what a
live run on the same audio would do (greedy decoding is deterministic).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from audio_interaction.audio.io import validate_samples
from audio_interaction.data import stream_format as sf
from audio_interaction.infer.engine import Engine
from audio_interaction.model.model import Params


@dataclasses.dataclass
class ChunkRecord:
  """What happened at one chunk. Times are stream times in seconds."""

  index: int
  start: float
  end: float
  speak_probability: float
  spoke: bool
  reply_tokens: list[int]
  compute_seconds: float


@dataclasses.dataclass
class StreamTrace:
  chunks: list[ChunkRecord]
  chunk_seconds: float

  @property
  def replies(self) -> list[tuple[float, list[int]]]:
    """Replies as (stream time of the first token, tokens), split where speaking stopped."""
    replies, current, start = [], [], None
    for chunk in self.chunks:
      if chunk.spoke and chunk.reply_tokens:
        if start is None:
          start = chunk.end
        current += chunk.reply_tokens
        if current[-1] != sf.EOR_ID:
          continue
      if start is not None:
        replies.append((start, current))
      current, start = [], None
    if start is not None:
      replies.append((start, current))
    return replies

  def real_time_factor(self) -> float:
    """Compute time over stream time (< 1: faster than real time)."""
    return sum(c.compute_seconds for c in self.chunks) / (len(self.chunks) * self.chunk_seconds)


def run_stream(engine: Engine, params: Params, audio: np.ndarray, instruction_ids: list[int],
               *, threshold: float = 0.5, on_chunk=None) -> StreamTrace:
  """Perceives `audio` chunk by chunk and speaks when P(SPEAK) ≥ `threshold`.

  Args:
    engine: the jitted steps.
    audio: [S] float32 16 kHz samples; a partial last chunk is zero-padded.
    instruction_ids: token ids of the instruction.
    threshold: decision threshold, the latency ↔ false-trigger knob.
    on_chunk: optional callback(ChunkRecord) for live views.
  """
  config = engine.model.config
  audio = validate_samples(np.asarray(audio), expected_rate=config.sample_rate,
                           expected_ndim=(1,), where="run_stream")
  size = config.chunk_samples
  padded = np.pad(audio, (0, -len(audio) % size)).astype(np.float32)
  state = engine.init_state(params, [instruction_ids])
  records = []
  for index in range(len(padded) // size):
    began = time.perf_counter()
    state, probs = engine.perceive(params, state, padded[None, index * size:(index + 1) * size])
    speak_probability = float(probs[0, sf.Decision.SPEAK])
    spoke = speak_probability >= threshold
    tokens: list[int] = []
    if spoke:
      state, written, count = engine.speak(params, state, np.ones(1, bool),
                                           n=config.tokens_per_chunk)
      tokens = [int(t) for t in np.asarray(written[0, :int(count[0])])]
    record = ChunkRecord(index, index * size / config.sample_rate,
                         (index + 1) * size / config.sample_rate, speak_probability, spoke,
                         tokens, time.perf_counter() - began)
    records.append(record)
    if on_chunk is not None:
      on_chunk(record)
  return StreamTrace(records, size / config.sample_rate)
