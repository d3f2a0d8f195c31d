"""Run the engine over a recorded waveform, chunk by chunk, and keep a trace of what it did.

This is the perceive → decide → respond loop without real-time pacing. Its one step,
`StreamStepper.step`, is also the step of the live loop (`infer/live.py`): the same
engine calls in the same order, so a trace made here is what a live run on the same
audio does (greedy decoding is deterministic), and `stream_sequence` lays either out
in the stream format for the full-sequence forward to check.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import numpy as np

from audio_interaction.audio.io import validate_samples
from audio_interaction import stream_format as sf
from audio_interaction.infer.engine import Engine, EngineState
from audio_interaction.infer.transcript import BLANK_ID, collapse_ctc, heard_words
from audio_interaction.model.model import Params

# Reply transitions a chunk can carry (`ChunkRecord.events`).
REPLY_START, REPLY_END, YIELD = "reply_start", "reply_end", "yield"


@dataclasses.dataclass
class ChunkRecord:
  """What happened at one chunk. Times are stream times in seconds.

  Attributes:
    index: the chunk's index in the stream (dropped chunks of a live run keep theirs).
    reply_tokens: tokens written after this chunk's `<decide>` (≤ tokens_per_chunk).
    fed_tokens: text tokens fed before this chunk's audio (e.g. a changed instruction).
    events: reply transitions at this chunk: REPLY_START (first token of a reply),
      REPLY_END (`<eor>` written), YIELD (SILENT while a reply was running: barge-in).
    heard_tokens: tokens the streaming CTC transcript emitted at this chunk.
  """

  index: int
  start: float
  end: float
  speak_probability: float
  spoke: bool
  reply_tokens: list[int]
  compute_seconds: float
  fed_tokens: list[int] = dataclasses.field(default_factory=list)
  events: list[str] = dataclasses.field(default_factory=list)
  heard_tokens: list[int] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class StreamTrace:
  chunks: list[ChunkRecord]
  chunk_seconds: float

  def reply_texts(self, decode: Callable[[list[int]], str]) -> list[tuple[float, str]]:
    """(stream time s of the first token, text) of each reply; `decode` drops `<eor>`
    (as `Tokenizer.decode` does with every special token)."""
    return [(start, decode(tokens)) for start, tokens in self.replies]

  def heard_words(self, decode: Callable[[list[int]], str]) -> tuple[tuple[str, float], ...]:
    """The streaming transcript's words with their emission times (stream seconds)."""
    return heard_words([c.heard_tokens for c in self.chunks], decode, self.chunk_seconds)

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


class StreamStepper:
  """One stream's perceive → decide → respond step, shared by `run_stream` and the live loop.

  Each `step` perceives one chunk and, when P(SPEAK) ≥ threshold, writes up to
  `tokens_per_chunk` reply tokens after it: exactly the stream format's layout, so a
  reply never holds up the next chunk. A reply runs over chunks until `<eor>`; a
  chunk decided SILENT while it runs cuts it (barge-in: the model yields).

  Attributes:
    threshold: P(SPEAK) to speak; may be changed between steps (the latency ↔
      false-trigger knob).
    replying: a reply is running (the last chunk wrote tokens and no `<eor>`).
  """

  def __init__(self, engine: Engine, params: Params, instruction_ids: Sequence[int], *,
               threshold: float = 0.5):
    """Starts the stream with `<bos> <online> <sys> instruction </sys>` (compiles on first use)."""
    self.engine, self.params, self.threshold = engine, params, threshold
    config = engine.model.config
    self.chunk_samples, self.sample_rate = config.chunk_samples, config.sample_rate
    self.tokens_per_chunk = config.tokens_per_chunk
    self.state: EngineState = engine.init_state(params, [list(instruction_ids)])
    self.replying = False
    self.steps = 0
    self._fed: list[int] = []
    self._last_label = np.full(1, BLANK_ID)

  @property
  def chunk_seconds(self) -> float:
    return self.chunk_samples / self.sample_rate

  def feed_text(self, tokens: Sequence[int]) -> None:
    """Feeds text tokens [T] before the next chunk (e.g. `<sys> new instruction </sys>`).

    A running reply is not continued across fed text: the model hears the text and
    decides afresh at the next chunk.
    """
    tokens = [int(t) for t in tokens]
    self.state = self.engine.feed(self.params, self.state, np.asarray([tokens], np.int32))
    self._fed += tokens
    self.replying = False

  def step(self, chunk: np.ndarray, index: int | None = None) -> ChunkRecord:
    """Perceives chunk [chunk_samples] float32 (index in the stream: default the step count)."""
    began = time.perf_counter()
    index = self.steps if index is None else index
    chunk = validate_samples(chunk, expected_rate=self.sample_rate, expected_ndim=(1,),
                             expected_length=self.chunk_samples, where=f"chunk {index}")
    self.state, probs = self.engine.perceive(self.params, self.state, chunk[None])
    (heard,), self._last_label = collapse_ctc(np.asarray(self.state.heard), self._last_label)
    speak_probability = float(probs[0, sf.Decision.SPEAK])
    spoke = speak_probability >= self.threshold
    tokens: list[int] = []
    if spoke:
      self.state, written, count = self.engine.speak(self.params, self.state, np.ones(1, bool),
                                                     n=self.tokens_per_chunk)
      tokens = [int(t) for t in np.asarray(written[0, :int(count[0])])]
    events = []
    if self.replying and not spoke:
      events.append(YIELD)
    if tokens and not self.replying:
      events.append(REPLY_START)
    if tokens and tokens[-1] == sf.EOR_ID:
      events.append(REPLY_END)
    self.replying = bool(tokens) and tokens[-1] != sf.EOR_ID
    seconds = self.chunk_seconds
    record = ChunkRecord(index, index * seconds, (index + 1) * seconds, speak_probability, spoke,
                         tokens, time.perf_counter() - began, self._fed, events, heard)
    self._fed = []
    self.steps += 1
    return record


def run_stream(engine: Engine, params: Params, audio: np.ndarray, instruction_ids: list[int],
               *, threshold: float = 0.5,
               on_chunk: Callable[[ChunkRecord], None] | None = None) -> StreamTrace:
  """Perceives `audio` chunk by chunk and speaks when P(SPEAK) ≥ `threshold`.

  Args:
    engine: the jitted steps.
    audio: [S] float32 16 kHz samples; a partial last chunk is zero-padded.
    instruction_ids: token ids of the instruction.
    threshold: decision threshold, the latency ↔ false-trigger knob.
    on_chunk: optional callback(ChunkRecord) for live views.
  """
  config = engine.model.config
  # Checked whole first, so that an error names the sample's index in the recording.
  audio = validate_samples(np.asarray(audio), expected_rate=config.sample_rate,
                           expected_ndim=(1,), where="run_stream")
  size = config.chunk_samples
  padded = np.pad(audio, (0, -len(audio) % size)).astype(np.float32)
  stepper = StreamStepper(engine, params, instruction_ids, threshold=threshold)
  records = []
  for index in range(len(padded) // size):
    record = stepper.step(padded[index * size:(index + 1) * size])
    records.append(record)
    if on_chunk is not None:
      on_chunk(record)
  return StreamTrace(records, stepper.chunk_seconds)


def stream_sequence(trace: StreamTrace, instruction_ids: Sequence[int], slots_per_chunk: int
                    ) -> tuple[np.ndarray, np.ndarray, list[int], list[tuple[int, int]]]:
  """Lays out what a run fed the model, in the stream format, for `model.forward`.

  Args:
    trace: every chunk the model perceived, in order (none dropped).
    instruction_ids: the instruction the run started with.
    slots_per_chunk: audio slots per chunk (`config.slots_per_chunk`).

  Returns:
    tokens [L] int32; audio_slot_index [L] int32 (the i-th perceived chunk's slots
    are i*k … i*k+k-1, so the audio is the perceived chunks concatenated); the
    `<decide>` position of each chunk; (position, token) of each reply token, where
    position is the one whose LM output predicts it.
  """
  tokens = [sf.BOS_ID, sf.ONLINE_ID, sf.SYS_ID, *map(int, instruction_ids), sf.END_SYS_ID]
  slots = [sf.NO_INDEX] * len(tokens)
  decide_at, reply_at = [], []
  for perceived, chunk in enumerate(trace.chunks):
    tokens += chunk.fed_tokens
    slots += [sf.NO_INDEX] * len(chunk.fed_tokens)
    tokens += [sf.AUDIO_ID] + [sf.AUDIO_SLOT_ID] * slots_per_chunk + [sf.DECIDE_ID]
    slots += [sf.NO_INDEX] + [perceived * slots_per_chunk + j for j in range(slots_per_chunk)]
    slots += [sf.NO_INDEX]
    decide_at.append(len(tokens) - 1)
    for token in chunk.reply_tokens:
      reply_at.append((len(tokens) - 1, token))
      tokens.append(token)
      slots.append(sf.NO_INDEX)
  return np.asarray(tokens, np.int32), np.asarray(slots, np.int32), decide_at, reply_at
