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
from collections.abc import AsyncIterable, Callable, Sequence
from typing import Any

import numpy as np
import soundfile
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from audio_interaction.audio.chunking import ChunkAssembler
from audio_interaction.audio.io import validate_samples
from audio_interaction.data import effects
from audio_interaction.data import stream_format as sf
from audio_interaction.data.sources import SAMPLE_RATE
from audio_interaction.data.speech import EspeakEngine
from audio_interaction.data.tokenizer import Tokenizer
from audio_interaction.infer.engine import Engine
from audio_interaction.infer.run_stream import (REPLY_END, REPLY_START, YIELD, ChunkRecord,
                                                StreamStepper, StreamTrace)
from audio_interaction.infer.sources import SourceUnavailable
from audio_interaction.model.model import Params

# One of the chat instructions the corpus trains on (data/tasks.py), so the default
# model hears a familiar prompt.
DEFAULT_INSTRUCTION = "You are a helpful voice assistant. Answer briefly."
OVERFLOW_POLICIES = ("auto", "drop_oldest", "block")


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
    replies: (start time, text, how it ended) of the last replies.
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
    write_timeline(result, "runs/live/timeline.png", threshold=0.5, decode=tokenizer.decode)
  """

  def __init__(self, engine: Engine, params: Params, tokenizer: Tokenizer, *,
               instruction: str = DEFAULT_INSTRUCTION, threshold: float = 0.5,
               log_path: str | os.PathLike[str] | None = None, queue_chunks: int = 8,
               overflow: str = "auto", stall_timeout: float = 2.0,
               keep_seconds: float = 120.0, view: LiveView | None = None,
               speaker: SpokenReplies | None = None,
               on_event: Callable[[dict[str, Any]], None] | None = None,
               warm_up: bool = True):
    """Args:
      instruction: the starting instruction (text).
      threshold: P(SPEAK) to speak; `set_threshold` changes it live.
      log_path: JSONL event log (one line per event, flushed as written).
      queue_chunks: the most chunks waiting for perception.
      overflow: "drop_oldest", "block", or "auto" (drop for paced sources).
      stall_timeout: seconds without audio before a "stall" event.
      keep_seconds: stream time of audio and decisions kept for `LiveResult`.
      view, speaker, on_event: receive every event.
      warm_up: compile the model's steps before reading the source.
    """
    if overflow not in OVERFLOW_POLICIES:
      raise ValueError(f"overflow must be one of {OVERFLOW_POLICIES}, got {overflow!r}")
    self.engine, self.params, self.tokenizer = engine, params, tokenizer
    config = engine.model.config
    self.sample_rate, self.chunk_samples = config.sample_rate, config.chunk_samples
    self.chunk_seconds = self.chunk_samples / self.sample_rate
    self.instruction, self.threshold = instruction, threshold
    self.log_path = pathlib.Path(log_path) if log_path is not None else None
    self.queue_chunks, self.overflow, self.stall_timeout = queue_chunks, overflow, stall_timeout
    self.view, self.speaker, self.on_event = view, speaker, on_event
    self.warm_up = warm_up
    keep = max(1, math.ceil(keep_seconds / self.chunk_seconds))
    self._records: collections.deque[ChunkRecord] = collections.deque(maxlen=keep)
    self._audio: collections.deque[StreamChunk] = collections.deque(maxlen=keep)
    self._replies: collections.deque[tuple[float, str, str]] = collections.deque(maxlen=64)
    # The tail of the streaming (CTC) transcript: decoded whole, so pieces join into words.
    self._heard: collections.deque[int] = collections.deque(maxlen=48)
    self._compute_ms: collections.deque[float] = collections.deque(maxlen=4096)
    self._pending_instruction: str | None = None
    self._reply: _Reply | None = None
    self._log = None
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
    """Moves the decision threshold from the next chunk on."""
    self.threshold = threshold

  @property
  def received_seconds(self) -> float:
    return self.received_samples / self.sample_rate

  @property
  def dropped(self) -> int:
    return self._queue.dropped if self._queue is not None else 0

  # ------------------------------------------------------------------ events
  def emit(self, event: str, time_s: float, **fields: Any) -> dict[str, Any]:
    """Logs one event (stream time `time_s`) and hands it to the view, speaker and hook."""
    record = {"event": event, "time": round(time_s, 4), **fields}
    if self._log is not None:
      self._log.write(json.dumps(record) + "\n")
      self._log.flush()  # a crash or a kill loses nothing already decided
    for listener in (self.view, self.speaker, self.on_event):
      if listener is not None:
        listener(record)
    return record

  def _end_reply(self, how: str, time_s: float, chunk: int, **fields: Any) -> None:
    reply, self._reply = self._reply, None
    text = self.tokenizer.decode(reply.tokens)
    self._replies.append((reply.start, text, how))
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
        done, _ = await asyncio.wait({pending}, timeout=self.stall_timeout)
        if not done:
          if stalled_since is None:  # once per stall; the wait goes on
            stalled_since = time.monotonic() - self.stall_timeout
            self.stalls += 1
            self.emit("stall", self.received_seconds, waited_seconds=self.stall_timeout,
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
    drop = self.overflow == "drop_oldest" or (self.overflow == "auto" and paced)
    queue = self._queue = ChunkQueue(self.queue_chunks, drop_oldest=drop)
    if self.log_path is not None:
      self.log_path.parent.mkdir(parents=True, exist_ok=True)
      self._log = open(self.log_path, "w")
    # One thread for the model: steps stay in order, and the event loop stays free
    # to read audio (JAX releases the GIL while it computes).
    compute = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="perceive")
    reader = None
    try:
      self.emit("start", 0.0, source=getattr(source, "name", type(source).__name__),
                paced=paced, overflow="drop_oldest" if drop else "block",
                instruction=self.instruction, threshold=self.threshold,
                chunk_seconds=self.chunk_seconds, queue_chunks=self.queue_chunks)
      if self.speaker is not None:
        self.speaker.start()
      if self.view is not None:
        self.view.start()
      instruction_ids = self.tokenizer.encode(self.instruction)
      if self.warm_up:
        await loop.run_in_executor(compute, self._warm_up, instruction_ids)
      self.stepper = await loop.run_in_executor(
          compute, lambda: StreamStepper(self.engine, self.params, instruction_ids,
                                         threshold=self.threshold))
      reader = asyncio.create_task(self._read(source, queue))
      while (item := await queue.get()) is not None:
        if self._pending_instruction is not None:
          await self._change_instruction(loop, compute, item.index)
        self.stepper.threshold = self.threshold
        record = await loop.run_in_executor(compute, self.stepper.step, item.samples, item.index)
        # A zero-padded last chunk ends after the audio received: no lag, not negative.
        self._on_record(record, max(0.0, self.received_seconds - record.end))
      if self._reply is not None:  # the stream ended mid-reply
        self._end_reply("stream_end", self.received_seconds, self._reply.chunk)
      await reader
      if self.speaker is not None:
        await self.speaker.finish(self.received_seconds)
      result = self.result()
      self.emit("end", self.received_seconds, **self._summary(result))
      return result
    except BaseException as error:
      if reader is not None and not reader.done():
        reader.cancel()
        with contextlib.suppress(BaseException):  # its end is not the error to report
          await reader
      if isinstance(error, (asyncio.CancelledError, KeyboardInterrupt)):  # stopped by the user
        self.emit("end", self.received_seconds, interrupted=True, **self._summary(self.result()))
      else:
        self.emit("error", self.received_seconds, type=type(error).__name__,
                  message=str(error) or type(error).__name__, chunks=self.chunks,
                  dropped=self.dropped)
      if self.speaker is not None:
        await asyncio.shield(self.speaker.finish(self.received_seconds))
      raise
    finally:
      compute.shutdown(wait=True)
      if self.view is not None:
        self.view.stop()
      if self._log is not None:
        self._log.close()
        self._log = None

  def _warm_up(self, instruction_ids: list[int]) -> None:
    """Compiles the steps on a throwaway stream (speaking, so `speak` compiles too): a
    paced source's first seconds are not dropped while XLA compiles."""
    StreamStepper(self.engine, self.params, instruction_ids, threshold=0.0).step(
        np.zeros(self.chunk_samples, np.float32))

  async def _change_instruction(self, loop, compute, index: int) -> None:
    text, self._pending_instruction = self._pending_instruction, None
    time_s = index * self.chunk_seconds
    if self._reply is not None:  # the model hears new text: its reply is over
      self._end_reply("instruction_changed", time_s, index)
    tokens = [sf.SYS_ID, *self.tokenizer.encode(text), sf.END_SYS_ID]
    await loop.run_in_executor(compute, self.stepper.feed_text, tokens)
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
                      self.max_lag, list(self._replies), list(self._compute_ms), self.log_path)

  def _summary(self, result: LiveResult) -> dict[str, Any]:
    # The first chunks include compilation; the steady state is what a live run sees.
    steady = result.compute_ms[2:] or result.compute_ms
    median = float(np.median(steady)) if steady else float("nan")
    return {"chunks": result.chunks, "dropped": result.dropped, "stalls": result.stalls,
            "replies": len(result.replies), "max_lag_seconds": round(result.max_lag_seconds, 4),
            "median_compute_ms": round(median, 3),
            "real_time_factor": round(median / 1000 / self.chunk_seconds, 5)}


# -------------------------------------------------------------- the timeline
def write_timeline(result: LiveResult, path: str | os.PathLike[str], *, threshold: float,
                   decode: Callable[[list[int]], str] | None = None, frontend=None,
                   reference: Sequence[Any] = (), title: str = "") -> pathlib.Path | None:
  """The kept window as a timeline PNG (`eval.timeline_plot`): audio, log-mel when a
  `frontend` is given, reference spans, P(SPEAK) per chunk against `threshold` and
  what the model said where. Times are shifted to the window's start (the title says
  by how much). Returns None when nothing was perceived."""
  from audio_interaction.audio.features import log_mel
  from audio_interaction.eval.timeline_plot import plot_timeline

  if not result.trace.chunks:
    return None
  offset = result.audio_start
  chunks = [dataclasses.replace(c, start=c.start - offset, end=c.end - offset)
            for c in result.trace.chunks if c.start >= offset]
  spans = [dataclasses.replace(s, start=s.start - offset, end=s.end - offset)
           for s in reference if s.end > offset]
  mel = (np.asarray(log_mel(result.audio[None].astype(np.float32), frontend))[0]
         if frontend is not None and len(result.audio) else None)
  if offset > 0:
    title = f"{title} (last {result.stream_seconds - offset:.0f} s; add {offset:.1f} s for stream time)"
  return plot_timeline(path, result.audio, 16000, StreamTrace(chunks, result.trace.chunk_seconds),
                       threshold=threshold, decode=decode, log_mel=mel, reference=spans,
                       title=title)


# ------------------------------------------------------------------- the view
class LiveView:
  """Rich terminal view: lines for chunks and events above a status panel (stream time,
  lag, drops, compute, P(SPEAK) of the last chunks, the reply being written and the
  transcript of the last replies).

  Args:
    every_chunk: a line for every chunk; otherwise only for chunks that spoke.
  """

  _BARS = " ▁▂▃▄▅▆▇█"

  def __init__(self, console: Console | None = None, *, every_chunk: bool = False,
               transcript_lines: int = 6):
    self.console = console or Console()
    self.every_chunk = every_chunk
    self._transcript: collections.deque[str] = collections.deque(maxlen=transcript_lines)
    self._probs: collections.deque[float] = collections.deque(maxlen=40)
    self._status: dict[str, Any] = {"time": 0.0, "lag_seconds": 0.0, "dropped": 0,
                                    "compute_ms": 0.0, "stalls": 0}
    self._current = ""
    self._heard = ""
    self._live: Live | None = None

  def start(self) -> None:
    """Shows the status panel (refreshed 4 times a second) until `stop`."""
    self._live = Live(get_renderable=self._render, console=self.console, refresh_per_second=4,
                      transient=True, redirect_stdout=False, redirect_stderr=False)
    self._live.start()

  def stop(self) -> None:
    """Removes the panel and leaves the transcript of the last replies on screen."""
    if self._live is not None:
      self._live.stop()
      self._live = None
      for line in self._transcript:  # the transcript stays on screen
        self.console.print(line, highlight=False)

  def _print(self, text: str) -> None:
    self.console.print(text, highlight=False)

  def _render(self) -> Group:
    s = self._status
    bars = "".join(self._BARS[min(8, int(p * 8.999))] for p in self._probs)
    head = Text.assemble(("listening ", "bold"),
                         f"stream {s['time']:7.2f} s | lag {s['lag_seconds']:5.2f} s | "
                         f"dropped {s['dropped']} | stalls {s['stalls']} | "
                         f"compute {s['compute_ms']:5.1f} ms | P(speak) ", (bars, "red"))
    lines = [head, Text(f"  heard: …{self._heard[-90:]}", style="cyan")]
    lines += [Text(line) for line in self._transcript]
    if self._current:
      lines.append(Text(f"  speaking: {self._current}", style="green"))
    return Group(*lines)

  def __call__(self, event: dict[str, Any]) -> None:
    """Updates the view with one session event."""
    kind, t = event["event"], event["time"]
    self._status["time"] = max(self._status["time"], t)
    if kind == "chunk":
      self._status.update(lag_seconds=event["lag_seconds"], dropped=event["dropped"],
                          compute_ms=event["compute_ms"])
      self._probs.append(event["speak_probability"])
      self._heard = event.get("transcript_tail", self._heard)
      if event["spoke"]:
        self._current = (self._current + " " + event["reply_text"]).strip()
      if event["spoke"] or self.every_chunk:
        marker = f"[green]SPEAK[/] {event['reply_text']!r}" if event["spoke"] else "silent"
        self._print(f"  {event['start']:6.2f}-{event['end']:5.2f} s  "
                    f"P(speak)={event['speak_probability']:4.2f} {marker}")
    elif kind in ("reply_end", "yield"):
      cut = {"eor": "", "yield": " [yielded]", "stream_end": " [stream ended]",
             "instruction_changed": " [instruction changed]"}[event["reason"]]
      self._transcript.append(f"{event['reply_start']:7.2f} s  model: {event['text']}{cut}")
      self._current = ""
      if kind == "yield":
        self._print(f"  [yellow]yield[/] at {t:.2f} s (P(speak)={event['speak_probability']:.2f})")
    elif kind == "stall":
      self._status["stalls"] += 1
      self._print(f"  [red]stall[/]: no audio for {event['waited_seconds']:.1f} s at {t:.2f} s")
    elif kind == "resume":
      self._print(f"  audio back after {event['stalled_seconds']:.1f} s")
    elif kind == "drop" and event["dropped"] in (1, 10, 100, 1000):
      self._print(f"  [red]behind real time[/]: {event['dropped']} chunk(s) dropped, "
                  f"lag {event['lag_seconds']:.2f} s")
    elif kind == "instruction":
      self._print(f"  instruction at {t:.2f} s: {event['text']!r}")
    elif kind == "error":
      self._print(f"  [red]error[/]: {event['message']}")


# --------------------------------------------------------------- spoken replies
class SpokenReplies:
  """Speaks each finished reply with espeak-ng into a WAV aligned at stream time.

  A reply's speech starts at the stream time of its first token (or when the previous
  reply's speech ends, if later: one voice) and is cut where the model yielded. The
  file is written sequentially as replies finish, so its memory use is bounded.
  """

  # espeak-ng's own default speed; the corpus engine counts rates from its BASE_WPM.
  _DEFAULT_WPM = 175

  def __init__(self, path: str | os.PathLike[str], *, voice: str = "en-us",
               sample_rate: int = 16000):
    if not EspeakEngine.is_available():
      raise SourceUnavailable("spoken replies need espeak-ng (apt-get install espeak-ng)")
    self._engine = EspeakEngine()
    self.path, self.voice, self.sample_rate = pathlib.Path(path), voice, sample_rate
    self._queue: asyncio.Queue | None = None
    self._task: asyncio.Task | None = None
    self._file: soundfile.SoundFile | None = None
    self.written = 0  # samples
    self.spoken: list[tuple[float, float, str]] = []  # (start, end, text)

  def start(self) -> None:
    """Opens the WAV and starts the task that speaks replies in order (in a running loop)."""
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self._file = soundfile.SoundFile(self.path, "w", self.sample_rate, 1, "PCM_16")
    self._queue = asyncio.Queue()
    self._task = asyncio.create_task(self._work())

  def __call__(self, event: dict[str, Any]) -> None:
    """Queues a finished (or cut) reply for speaking."""
    if event["event"] in ("reply_end", "yield") and event["text"].strip() and self._queue:
      cut = event["time"] if event["reason"] != "eor" else None
      self._queue.put_nowait((event["reply_start"], event["text"], cut))

  async def synthesize(self, text: str) -> np.ndarray:
    """text -> [n] float32 speech at `sample_rate` (the corpus's espeak-ng engine, off the
    event loop)."""
    (audio,) = await asyncio.to_thread(
        self._engine.synthesize, self.voice, [text],
        self._DEFAULT_WPM / EspeakEngine.BASE_WPM, 0.0)
    return effects.resample(audio, SAMPLE_RATE, self.sample_rate)

  async def _work(self) -> None:
    while (item := await self._queue.get()) is not None:
      start, text, cut = item
      audio = await self.synthesize(text)
      at = max(int(round(start * self.sample_rate)), self.written)
      if cut is not None:
        audio = audio[:max(0, int(round(cut * self.sample_rate)) - at)]
      self._pad_to(at)
      self._file.write(audio)
      self.written += len(audio)
      self.spoken.append((at / self.sample_rate, self.written / self.sample_rate, text))

  def _pad_to(self, samples: int) -> None:
    if samples > self.written:
      self._file.write(np.zeros(samples - self.written, np.float32))
      self.written = samples

  async def finish(self, stream_seconds: float) -> None:
    """Speaks what is queued, pads the file to the stream's length and closes it."""
    if self._task is None:
      return
    task, self._task = self._task, None
    self._queue.put_nowait(None)
    try:
      await task
    finally:
      self._pad_to(int(round(stream_seconds * self.sample_rate)))
      self._file.close()


# -------------------------------------------------------------------- listen
def listen(source: AsyncIterable[np.ndarray], *, bundle: str | os.PathLike[str] | None = None,
           instruction: str = DEFAULT_INSTRUCTION, threshold: float = 0.5,
           out_dir: str | os.PathLike[str] = "runs/listen", speak: bool = False,
           stall_timeout: float = 2.0, console: Console | None = None,
           every_chunk: bool = False) -> dict[str, Any]:
  """`audio-interaction listen`: a model bundle (default: the embedded tiny model)
  listens to `source` with the live view; writes events.jsonl, timeline.png and,
  with `speak`, replies.wav into `out_dir`.

  Returns:
    A summary dict (paths, counts, replies, compute). On an error the log and the
    timeline of what came before are written, then the error is raised.
  """
  from audio_interaction.infer.demo import load_model

  console = console or Console()
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  model, params, tokenizer, note = load_model(None, bundle)
  console.print(f"[bold]model[/]: {note}; [bold]source[/]: "
                f"{getattr(source, 'name', type(source).__name__)}; threshold {threshold}; "
                f"instruction: {instruction!r}", highlight=False)
  speaker = SpokenReplies(out / "replies.wav") if speak else None
  session = LiveSession(Engine(model), params, tokenizer, instruction=instruction,
                        threshold=threshold, log_path=out / "events.jsonl",
                        stall_timeout=stall_timeout, speaker=speaker,
                        view=LiveView(console, every_chunk=every_chunk))
  try:
    result = asyncio.run(session.run(source))
  except KeyboardInterrupt:  # Ctrl-C ends a microphone session: a normal end
    result = session.result()
  finally:
    picture = write_timeline(session.result(), out / "timeline.png", threshold=threshold,
                             decode=tokenizer.decode, frontend=model.frontend,
                             title=f"listen: {getattr(source, 'name', '')}")
  summary = {"events_jsonl": str(session.log_path), "timeline_png": str(picture),
             "replies_wav": str(speaker.path) if speaker else None,
             "replies": [(round(start, 2), text, how) for start, text, how in result.replies],
             **session._summary(result)}
  console.print(f"[bold]done[/]: {summary['chunks']} chunks of {result.stream_seconds:.1f} s, "
                f"{summary['replies']} replies, dropped {summary['dropped']}, max lag "
                f"{summary['max_lag_seconds']:.2f} s, median compute "
                f"{summary['median_compute_ms']:.1f} ms per chunk; log: {session.log_path}; "
                f"timeline: {picture}" + (f"; speech: {speaker.path}" if speaker else ""),
                highlight=False)
  return summary
