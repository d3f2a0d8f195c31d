"""The live loop: the model listens to a stream as it arrives, decides, and answers.

Two asyncio tasks and one compute thread:

* the **reader** takes pieces from an `AudioSource` (`infer/sources.py`), checks
  each (`audio.io.validate_samples`: dtype, rank, rate, NaN/Inf), cuts them into
  chunks (`ChunkAssembler`) and puts them on a **bounded** `ChunkQueue`. When
  compute falls behind a paced source (microphone, socket, file at real time) the
  oldest waiting chunk is dropped and counted; an unpaced source is read more
  slowly instead. If the source gives nothing for `stall_timeout` seconds, a
  "stall" event is logged and the reader keeps waiting ("resume" when audio returns).
* the **perceiver** steps the model once per chunk in a worker thread (so reading
  goes on meanwhile) with `run_stream.StreamStepper` -- the step `run_stream` uses:
  perceive, decide, and, when speaking, at most `tokens_per_chunk` reply tokens
  before the next chunk. A reply therefore never holds up perception, the layout is
  exactly the stream format's, and a live run equals `run_stream` and the full
  forward (greedy). A chunk decided SILENT while a reply runs stops it: "yield".
* the instruction can change between chunks: `LiveSession.set_instruction` feeds
  ``<sys> text </sys>`` before the next chunk.

Everything that happens is an event (a dict with the stream time "time" in
seconds), written at once to a JSONL log, shown by the rich `LiveView`, optionally
spoken by `SpokenReplies` (espeak-ng, into a WAV aligned at stream time), and the
last `keep_seconds` of audio and decisions become a timeline PNG at the end
(`write_timeline`). Memory is bounded whatever the stream's length.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import json
import math
import os
import pathlib
import time
from collections.abc import AsyncIterable, Sequence
from typing import Any, Protocol

import ml_collections
import numpy as np

from audio_interaction.audio.chunking import ChunkAssembler
from audio_interaction.audio.io import validate_samples
from audio_interaction import stream_format as sf
from audio_interaction.data.tokenizer import Tokenizer
from audio_interaction.infer.engine import Engine
from audio_interaction.infer.policies import (DEFAULT_THRESHOLD, DecisionPolicy, ThresholdPolicy,
                                              policy_from_config)
from audio_interaction.infer.run_stream import (REPLY_CAPPED, REPLY_END, REPLY_START, YIELD,
                                                ChunkRecord, StreamStepper, StreamTrace)
from audio_interaction.infer.sound_alerts import SOUND_ALERT_KEYS, sound_alert_rule
from audio_interaction.infer.instruction_watch import WATCH_KEYS, instruction_watches
from audio_interaction.model.model import Params

# One of the chat instructions the corpus trains on (data/tasks.py), so the default
# model hears a familiar prompt.
DEFAULT_INSTRUCTION = "You are a helpful voice assistant. Answer briefly."
OVERFLOW_POLICIES = ("auto", "drop_oldest", "block")


class EventSink(Protocol):
  """Receives every event of a session (a dict with "event" and the stream "time").

  Only `__call__` is required: a plain function is a sink. A sink may also have
  `start()` (called in the running event loop before the first event) and
  `async finish(result)` (called once at the end, also after an error or Ctrl-C, with
  what the session did so far), e.g. `JsonlLog`, `apps.live_view.LiveView`,
  `apps.live_view.SpokenReplies`, `viz.timeline.TimelinePicture`.
  """

  def __call__(self, event: dict[str, Any]) -> None: ...


class JsonlLog:
  """Writes each event as one JSON line, flushed at once: a crash or a kill loses
  nothing already decided."""

  def __init__(self, path: str | os.PathLike[str]):
    self.path = pathlib.Path(path)
    self._file = None

  def start(self) -> None:
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self._file = open(self.path, "w")

  def __call__(self, event: dict[str, Any]) -> None:
    if self._file is not None:
      self._file.write(json.dumps(event) + "\n")
      self._file.flush()

  async def finish(self, result: LiveResult) -> None:
    del result
    if self._file is not None:
      self._file.close()
      self._file = None


@dataclasses.dataclass
class LiveConfig:
  """How a live session runs (one object, so apps and tests set it in one place).

  Attributes:
    instruction: the starting instruction (text).
    policy: who decides when to speak (`infer/policies.py`); None: `ThresholdPolicy(threshold)`.
    threshold: P(SPEAK) of the default policy (a `policy` keeps its own);
      `LiveSession.set_threshold` changes either live.
    max_reply_tokens: the longest reply; None: no cap.
    queue_chunks: the most chunks waiting for perception.
    overflow: "drop_oldest", "block", or "auto" (drop for paced sources).
    stall_timeout: seconds without audio before a "stall" event.
    keep_seconds: stream time of audio and decisions kept for `LiveResult`.
    warm_up: compile the model's steps before reading the source.
    sound_alerts: `infer.sound_alert_*` settings (threshold, chunks, hold_seconds) of
      alerts from the sound-event head (`infer/sound_alerts.py`); None or threshold 0:
      the policy alone decides.
    watch: `infer.sound_watch_*` and `infer.word_watch` settings: what the instruction
      asks to be told ("tell me when you hear ...", "whenever you hear the word ...")
      watched by the heads (`infer/instruction_watch.py`); None or both off: the decoder
      alone answers.
  """

  instruction: str = DEFAULT_INSTRUCTION
  policy: DecisionPolicy | None = None
  threshold: float = DEFAULT_THRESHOLD
  max_reply_tokens: int | None = None
  queue_chunks: int = 8
  overflow: str = "auto"
  stall_timeout: float = 2.0
  keep_seconds: float = 120.0
  warm_up: bool = True
  sound_alerts: ml_collections.ConfigDict | None = None
  watch: ml_collections.ConfigDict | None = None

  def __post_init__(self):
    if self.overflow not in OVERFLOW_POLICIES:
      raise ValueError(f"overflow must be one of {OVERFLOW_POLICIES}, got {self.overflow!r}")
    if not self.stall_timeout > 0:  # NaN too
      raise ValueError(f"stall_timeout must be > 0, got {self.stall_timeout}")
    if not math.isfinite(self.threshold):
      raise ValueError(f"threshold must be a finite number, got {self.threshold}")

  @classmethod
  def from_infer(cls, infer: ml_collections.ConfigDict, *, chunk_seconds: float,
                 threshold: float | None = None, **fields: Any) -> LiveConfig:
    """The operating point of a config's (or bundle's) `infer` block, with overrides."""
    threshold = infer.threshold if threshold is None else threshold
    alerts = ml_collections.ConfigDict({key: infer[key] for key in SOUND_ALERT_KEYS})
    # A bundle saved before the watches existed has none of their keys: no watch.
    watch = ml_collections.ConfigDict({key: infer[key] for key in WATCH_KEYS
                                       if key in infer})
    return cls(policy=policy_from_config(infer, chunk_seconds=chunk_seconds,
                                         threshold=threshold),
               threshold=threshold, max_reply_tokens=infer.max_reply_tokens,
               **{"sound_alerts": alerts, "watch": watch, **fields})


# ------------------------------------------------------------------ the queue
@dataclasses.dataclass
class StreamChunk:
  """A chunk on its way to perception: `samples` [chunk_samples], of which `real` are audio."""

  index: int
  samples: np.ndarray
  real: int


class ChunkQueue:
  """Bounded FIFO between the reader and perception; never holds more than `capacity`.

  With `drop_oldest`, `put` never waits: a full queue loses its oldest chunk (the
  freshest audio matters most for deciding now) and counts it in `dropped`.
  Otherwise `put` waits for room (backpressure on an unpaced source). `close(error)`
  lets the consumer take what is queued, then `get` raises `error` (or returns None).
  """

  def __init__(self, capacity: int, drop_oldest: bool):
    if capacity < 1:
      raise ValueError(f"queue capacity must be >= 1, got {capacity}")
    self.capacity, self.drop_oldest = capacity, drop_oldest
    self.dropped = 0
    self._items: collections.deque[StreamChunk] = collections.deque()
    self._changed = asyncio.Condition()
    self._closed = False
    self._error: BaseException | None = None

  def __len__(self) -> int:
    return len(self._items)

  async def put(self, item: StreamChunk) -> StreamChunk | None:
    """Queues `item`; returns the chunk dropped to make room, if any."""
    async with self._changed:
      dropped = None
      if self.drop_oldest:
        if len(self._items) >= self.capacity:
          dropped = self._items.popleft()
          self.dropped += 1
      else:
        await self._changed.wait_for(lambda: len(self._items) < self.capacity)
      self._items.append(item)
      self._changed.notify_all()
      return dropped

  async def close(self, error: BaseException | None = None) -> None:
    """No more chunks; `get` raises `error` (if any) once the queue is empty."""
    async with self._changed:
      self._closed, self._error = True, error
      self._changed.notify_all()

  async def get(self) -> StreamChunk | None:
    """The next chunk; None once closed and empty (or the reader's error, raised)."""
    async with self._changed:
      await self._changed.wait_for(lambda: self._items or self._closed)
      if self._items:
        item = self._items.popleft()
        self._changed.notify_all()
        return item
      if self._error is not None:
        raise self._error
      return None


# ----------------------------------------------------------------- the result
REPLIES_KEPT = 64  # replies a session keeps (text and times) for the summary and timeline


@dataclasses.dataclass
class LiveResult:
  """What a session did, for the timeline and the summary.

  Attributes:
    trace: the chunks perceived in the kept window (stream times).
    audio: [S] the stream's audio of the kept window (dropped chunks included).
    audio_start: stream time of `audio[0]`.
    stream_seconds: audio received in all.
    chunks, dropped, stalls: counts over the whole session.
    max_lag_seconds: worst stream time received minus stream time processed.
    replies: (start time, text, how it ended) of the last replies (at most
      `REPLIES_KEPT`, for display: `len(replies)` of `reply_count` are listed).
    reply_count: every reply of the session, however long it ran.
    compute_ms: per-chunk compute of the last chunks (at most 4096).
    log_path: the JSONL event log, if any.
  """

  trace: StreamTrace
  audio: np.ndarray
  audio_start: float
  stream_seconds: float
  chunks: int
  dropped: int
  stalls: int
  max_lag_seconds: float
  replies: list[tuple[float, str, str]]
  compute_ms: list[float]
  log_path: pathlib.Path | None
  reply_count: int


@dataclasses.dataclass
class _Reply:
  start: float
  chunk: int
  tokens: list[int] = dataclasses.field(default_factory=list)


# ------------------------------------------------------------------ the session
class LiveSession:
  """One live stream through one model.

  Example::

    session = LiveSession(engine, params, tokenizer, log_path="runs/live/events.jsonl")
    result = asyncio.run(session.run(FileSource("talk.wav", speed=1.0)))
    write_timeline(result, "runs/live/timeline.png", threshold=session.threshold, decode=tokenizer.decode)
  """

  def __init__(self, engine: Engine, params: Params, tokenizer: Tokenizer,
               config: LiveConfig | None = None, sinks: Sequence[EventSink] = ()):
    """Args:
      config: how the session runs (`LiveConfig`; default: its defaults).
      sinks: receive every event, in order (`EventSink`); `sinks` may be appended to
        before `run`.
    """
    config = config if config is not None else LiveConfig()
    self.config = config
    self.engine, self.params, self.tokenizer = engine, params, tokenizer
    model_config = engine.model.config
    self.sample_rate, self.chunk_samples = model_config.sample_rate, model_config.chunk_samples
    self.chunk_seconds = model_config.chunk_seconds
    self.instruction = config.instruction
    self.policy: DecisionPolicy = (config.policy if config.policy is not None
                                   else ThresholdPolicy(config.threshold))
    # What the picture and the log show: the policy's own threshold when it has one.
    self.threshold = getattr(self.policy, "threshold", config.threshold)
    self.sound_alerts = None if config.sound_alerts is None else sound_alert_rule(
        config.sound_alerts, tokenizer.encode, chunk_seconds=self.chunk_seconds,
        sound_event_classes=model_config.sound_event_classes)
    self.watches = None if config.watch is None else instruction_watches(
        config.watch, tokenizer.encode, tokenizer.decode,
        chunk_seconds=self.chunk_seconds, sound_event_classes=model_config.sound_event_classes)
    self.sinks: list[EventSink] = list(sinks)
    keep_seconds = config.keep_seconds
    keep = max(1, math.ceil(keep_seconds / self.chunk_seconds))
    self._records: collections.deque[ChunkRecord] = collections.deque(maxlen=keep)
    self._audio: collections.deque[StreamChunk] = collections.deque(maxlen=keep)
    self._replies: collections.deque[tuple[float, str, str]] = collections.deque(
        maxlen=REPLIES_KEPT)  # the last ones, for display; `_reply_count` counts them all
    self._reply_count = 0
    # The tail of the streaming (CTC) transcript: decoded whole, so pieces join into words.
    self._heard: collections.deque[int] = collections.deque(maxlen=48)
    self._compute_ms: collections.deque[float] = collections.deque(maxlen=4096)
    self._pending_instruction: str | None = None
    self._reply: _Reply | None = None
    self.stepper: StreamStepper | None = None
    self.received_samples = 0
    self.chunks = self.stalls = 0
    self.max_lag = 0.0
    self._queue: ChunkQueue | None = None

  # ------------------------------------------------------------ control API
  def set_instruction(self, text: str) -> None:
    """Changes the instruction: ``<sys> text </sys>`` is fed before the next chunk."""
    self._pending_instruction = text

  def set_threshold(self, threshold: float) -> None:
    """Moves the decision threshold (of a policy that has one) from the next chunk on."""
    if not math.isfinite(threshold):  # above 1 is allowed: never speak
      raise ValueError(f"threshold must be a finite number, got {threshold}")
    self.threshold = threshold
    if hasattr(self.policy, "threshold"):
      self.policy.threshold = threshold

  @property
  def received_seconds(self) -> float:
    return self.received_samples / self.sample_rate

  @property
  def dropped(self) -> int:
    return self._queue.dropped if self._queue is not None else 0

  # ------------------------------------------------------------------ events
  def emit(self, event: str, time_s: float, **fields: Any) -> dict[str, Any]:
    """Hands one event (stream time `time_s`) to every sink, in order."""
    record = {"event": event, "time": round(time_s, 4), **fields}
    for sink in self.sinks:
      sink(record)
    return record

  @property
  def log_path(self) -> pathlib.Path | None:
    """The JSONL log of the first `JsonlLog` sink, if any."""
    return next((s.path for s in self.sinks if isinstance(s, JsonlLog)), None)

  def _end_reply(self, how: str, time_s: float, chunk: int, **fields: Any) -> None:
    reply, self._reply = self._reply, None
    text = self.tokenizer.decode(reply.tokens)
    self._replies.append((reply.start, text, how))
    self._reply_count += 1
    name = "yield" if how == "yield" else "reply_end"
    self.emit(name, time_s, chunk=chunk, reply_start=reply.start, text=text,
              tokens=reply.tokens, reason=how, **fields)

  def _on_record(self, record: ChunkRecord, lag: float) -> None:
    self.chunks += 1
    self.max_lag = max(self.max_lag, lag)
    self._records.append(record)
    self._compute_ms.append(1000 * record.compute_seconds)
    probability = round(record.speak_probability, 5)
    self._heard.extend(record.heard_tokens)
    heard = {"heard_tokens": record.heard_tokens}
    if record.heard_tokens:
      heard["transcript_tail"] = self.tokenizer.decode(self._heard)
    if record.sound_event is not None:  # the sound-event head's class, when it hears one
      heard["sound_event"] = record.sound_event
      heard["sound_probability"] = round(record.sound_probability, 5)
    if record.sound_alert is not None:  # this chunk's reply is the head's alert
      heard["sound_alert"] = record.sound_alert
    if record.turn_end_probability is not None:  # the turn-end head's P(turn ended)
      heard["turn_end_probability"] = round(record.turn_end_probability, 5)
    # The chunk first: a reply's events follow the decision that caused them.
    self.emit("chunk", record.end, chunk=record.index, start=record.start, end=record.end,
              speak_probability=probability, threshold=self.threshold,
              decision="SPEAK" if record.spoke else "SILENT", spoke=record.spoke,
              reply_tokens=record.reply_tokens, reply_text=self.tokenizer.decode(record.reply_tokens),
              lag_seconds=round(lag, 4), compute_ms=round(1000 * record.compute_seconds, 3),
              queued=len(self._queue) if self._queue is not None else 0, dropped=self.dropped,
              **heard)
    if YIELD in record.events and self._reply is not None:
      self._end_reply("yield", record.end, record.index, speak_probability=probability)
    if REPLY_START in record.events:
      self._reply = _Reply(record.end, record.index)
      self.emit("reply_start", record.end, chunk=record.index, speak_probability=probability)
    if self._reply is not None:
      self._reply.tokens += record.reply_tokens
    if REPLY_END in record.events and self._reply is not None:
      self._end_reply("eor", record.end, record.index)
    if REPLY_CAPPED in record.events and self._reply is not None:
      self._end_reply("max_tokens", record.end, record.index)

  # ------------------------------------------------------------------- tasks
  async def _read(self, source: AsyncIterable[np.ndarray], queue: ChunkQueue) -> None:
    """Source -> validated pieces -> chunks -> queue; closes the queue (with the error)."""
    name = getattr(source, "name", type(source).__name__)
    rate = getattr(source, "sample_rate", self.sample_rate)
    assembler = ChunkAssembler(self.chunk_samples)
    iterator = aiter(source)
    index = 0

    async def next_piece():
      return await anext(iterator)

    async def enqueue(samples: np.ndarray, real: int) -> None:
      nonlocal index
      chunk = StreamChunk(index, samples, real)
      index += 1
      self._audio.append(chunk)
      dropped = await queue.put(chunk)
      if dropped is not None:
        self.emit("drop", dropped.index * self.chunk_seconds, chunk=dropped.index,
                  dropped=queue.dropped,
                  lag_seconds=round(self.received_seconds - dropped.index * self.chunk_seconds, 4))

    error = None
    pending = None
    try:
      stalled_since = None
      while True:
        pending = pending or asyncio.ensure_future(next_piece())
        done, _ = await asyncio.wait({pending}, timeout=self.config.stall_timeout)
        if not done:
          if stalled_since is None:  # once per stall; the wait goes on
            stalled_since = time.monotonic() - self.config.stall_timeout
            self.stalls += 1
            self.emit("stall", self.received_seconds, waited_seconds=self.config.stall_timeout,
                      source=name)
          continue
        finished, pending = pending, None
        try:
          piece = finished.result()
        except StopAsyncIteration:
          break
        if stalled_since is not None:
          self.emit("resume", self.received_seconds,
                    stalled_seconds=round(time.monotonic() - stalled_since, 3))
          stalled_since = None
        validate_samples(piece, sample_rate=rate, expected_rate=self.sample_rate,
                         expected_ndim=(1,), where=f"{name} at {self.received_seconds:.2f} s")
        self.received_samples += piece.shape[0]
        for chunk in assembler.push(piece):
          await enqueue(chunk, self.chunk_samples)
      real = assembler.num_pending
      for chunk in assembler.flush(pad=True):  # the last partial chunk, zero-padded
        await enqueue(chunk, real)
    except asyncio.CancelledError:
      raise
    except Exception as caught:  # handed to the perceiver, which logs and raises it
      error = caught
    finally:
      if pending is not None:
        pending.cancel()
      await queue.close(error)

  async def run(self, source: AsyncIterable[np.ndarray]) -> LiveResult:
    """Runs the session until the source ends (or fails: the error is raised after
    everything before it was perceived and logged).

    Args:
      source: an `AudioSource`, or any async iterable of float32 [n] pieces at the
        model's rate.
    """
    loop = asyncio.get_running_loop()
    paced = getattr(source, "paced", True)
    config = self.config
    drop = config.overflow == "drop_oldest" or (config.overflow == "auto" and paced)
    queue = self._queue = ChunkQueue(config.queue_chunks, drop_oldest=drop)
    for sink in self.sinks:
      if hasattr(sink, "start"):
        sink.start()
    # One thread for the model: steps stay in order, and the event loop stays free
    # to read audio (JAX releases the GIL while it computes).
    compute = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="perceive")
    reader = None
    try:
      self.emit("start", 0.0, source=getattr(source, "name", type(source).__name__),
                paced=paced, overflow="drop_oldest" if drop else "block",
                instruction=self.instruction, threshold=self.threshold,
                chunk_seconds=self.chunk_seconds, queue_chunks=config.queue_chunks,
                policy=type(self.policy).__name__)
      instruction_ids = self.tokenizer.encode(self.instruction)
      if config.warm_up:
        await loop.run_in_executor(compute, self._warm_up, instruction_ids)
      self.stepper = await loop.run_in_executor(
          compute, lambda: StreamStepper(self.engine, self.params, [instruction_ids],
                                         [self.policy], max_reply_tokens=config.max_reply_tokens,
                                         sound_alerts=self.sound_alerts,
                                         watches=self.watches))
      reader = asyncio.create_task(self._read(source, queue))
      while (item := await queue.get()) is not None:
        if self._pending_instruction is not None:
          await self._change_instruction(loop, compute, item.index)
        record = await loop.run_in_executor(compute, self.stepper.step, item.samples, item.index)
        # A zero-padded last chunk ends after the audio received: no lag, not negative.
        self._on_record(record, max(0.0, self.received_seconds - record.end))
      if self._reply is not None:  # the stream ended mid-reply
        self._end_reply("stream_end", self.received_seconds, self._reply.chunk)
      await reader
      result = self.result()
      self.emit("end", self.received_seconds, **self.summary(result))
      await self._finish_sinks()
      return result
    except BaseException as error:
      if reader is not None and not reader.done():
        reader.cancel()
        with contextlib.suppress(BaseException):  # its end is not the error to report
          await reader
      if isinstance(error, (asyncio.CancelledError, KeyboardInterrupt)):  # stopped by the user
        self.emit("end", self.received_seconds, interrupted=True, **self.summary(self.result()))
      else:
        self.emit("error", self.received_seconds, type=type(error).__name__,
                  message=str(error) or type(error).__name__, chunks=self.chunks,
                  dropped=self.dropped)
      await asyncio.shield(self._finish_sinks())
      raise
    finally:
      compute.shutdown(wait=True)

  async def _finish_sinks(self) -> None:
    """Each sink's `finish(result)`, once, in order (also after an error)."""
    result = self.result()
    for sink in self.sinks:
      if hasattr(sink, "finish"):
        await sink.finish(result)

  def _warm_up(self, instruction_ids: list[int]) -> None:
    """Compiles the steps on a throwaway stream (speaking, so `speak` compiles too): a
    paced source's first seconds are not dropped while XLA compiles."""
    StreamStepper(self.engine, self.params, [instruction_ids], [ThresholdPolicy(0.0)]).step(
        np.zeros(self.chunk_samples, np.float32))

  async def _change_instruction(self, loop, compute, index: int) -> None:
    text, self._pending_instruction = self._pending_instruction, None
    time_s = index * self.chunk_seconds
    if self._reply is not None:  # the model hears new text: its reply is over
      self._end_reply("instruction_changed", time_s, index)
    ids = self.tokenizer.encode(text)
    tokens = sf.instruction_tokens(ids)
    await loop.run_in_executor(compute, self.stepper.change_instruction, ids)
    self.instruction = text
    self.emit("instruction", time_s, chunk=index, text=text, tokens=len(tokens))

  # ----------------------------------------------------------------- results
  def result(self) -> LiveResult:
    """What the session did so far (also after an error)."""
    audio_chunks = list(self._audio)
    if audio_chunks:
      audio = np.concatenate([c.samples[:c.real] for c in audio_chunks])
      audio_start = audio_chunks[0].index * self.chunk_seconds
    else:
      audio, audio_start = np.zeros(0, np.float32), 0.0
    return LiveResult(StreamTrace(list(self._records), self.chunk_seconds), audio, audio_start,
                      self.received_seconds, self.chunks, self.dropped, self.stalls,
                      self.max_lag, list(self._replies), list(self._compute_ms), self.log_path,
                      reply_count=self._reply_count)

  def summary(self, result: LiveResult) -> dict[str, Any]:
    """Counts, lag and steady-state compute of `result`, as the "end" event carries them."""
    # The first chunks include compilation; the steady state is what a live run sees.
    steady = result.compute_ms[2:] or result.compute_ms
    median = float(np.median(steady)) if steady else float("nan")
    return {"chunks": result.chunks, "dropped": result.dropped, "stalls": result.stalls,
            "replies": result.reply_count, "replies_listed": len(result.replies),
            "max_lag_seconds": round(result.max_lag_seconds, 4),
            "median_compute_ms": round(median, 3),
            "real_time_factor": round(median / 1000 / self.chunk_seconds, 5)}
