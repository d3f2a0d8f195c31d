"""Continuous batching: many live streams in one batched, jitted step.

A `SlotBatcher` holds one `StreamStepper` of `slots` rows, compiled once. A stream
joins a free row (`join`: the row's state is reset in place and prefilled with its
instruction, `Engine.reset_rows`, no recompilation), sends chunks (`push`) and leaves
(`leave`: the row is free for the next stream). `tick` steps every row that has a
chunk waiting, one chunk each, in one batched step (`StreamStepper.step_rows`); rows
without a chunk are **not advanced**: their model state, policy and reply are left
exactly as they were. So every stream's decisions and reply tokens equal running
it alone (`run_stream` on its audio), whoever else comes and goes.

When to tick is `ready` (used by the server's scheduler, `apps/serve.py`): as soon as
every active stream has a chunk waiting, or when the oldest waiting chunk has waited
`max_wait` seconds (a quarter chunk, 40 ms, by default). A slow or stalled client therefore delays the others by at most
`max_wait`; its own stream simply pauses (it is not padded with silence, which would
change what the model hears) and resumes where it stopped when audio returns. A
stream whose backlog exceeds `queue_chunks` loses its oldest chunk (counted, as the
live loop's `ChunkQueue` does): the freshest audio matters most for deciding now.

`StreamEvents` turns one stream's `ChunkRecord`s into the protocol's JSON events
(docs/serve_protocol.md): chunk decisions, streaming transcript, reply tokens, reply
end, yield.

Sampling note: rows share the engine's PRNG key, so with `temperature > 0` a
stream's sampled tokens depend on its neighbours; greedy decoding (the bundles'
default) is exactly independent of them.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from audio_interaction import stream_format as sf
from audio_interaction.infer.engine import PROMPT_BUCKET, Engine, prompt_width
from audio_interaction.infer.policies import DecisionPolicy, ThresholdPolicy
from audio_interaction.infer.run_stream import (REPLY_CAPPED, REPLY_END, REPLY_START, YIELD,
                                                ChunkRecord, StreamStepper)
from audio_interaction.infer.sound_alerts import SoundAlertRule
from audio_interaction.infer.instruction_watch import InstructionWatches
from audio_interaction.model.model import Params


class SlotsFull(RuntimeError):
  """Every slot holds a stream."""


@dataclasses.dataclass
class _Slot:
  stream_id: int
  instruction_ids: list[int]
  policy: DecisionPolicy
  chunks: collections.deque = dataclasses.field(default_factory=collections.deque)
  received: int = 0  # chunks pushed (a chunk's index in its stream is its push order)
  dropped: int = 0  # chunks dropped because the stream fell `queue_chunks` behind
  started: bool = False  # the row was reset for this stream


@dataclasses.dataclass
class SlotRecord:
  """One stream's step: its record and when its chunk arrived (time.monotonic())."""

  row: int
  stream_id: int
  record: ChunkRecord
  arrived: float
  stepped: float


class SlotBatcher:
  """`slots` rows stepped together; streams join and leave rows without recompiling.

  Thread use: `join`, `leave`, `push`, `feed`, `ready` may be called from one thread
  (the server's event loop) while `tick` runs in another (the compute thread).
  `sound_alerts` (`infer/sound_alerts.py`): alerts from the sound-event head in every
  stream (a new stream in a row starts with that row's alert history forgotten);
  `watches` (`infer/instruction_watch.py`): the sound each stream's instruction asks
  for, watched by the head (a new stream or instruction starts its row's watch afresh).
  """

  def __init__(self, engine: Engine, params: Params, slots: int, *,
               max_reply_tokens: int | None = None, queue_chunks: int = 8,
               max_wait: float | None = None, max_prompt_tokens: int = 128,
               sound_alerts: SoundAlertRule | None = None,
               watches: InstructionWatches | None = None):
    if slots < 1:
      raise ValueError(f"slots must be >= 1, got {slots}")
    if queue_chunks < 1:
      raise ValueError(f"queue_chunks must be >= 1, got {queue_chunks}")
    self.engine, self.params, self.slots = engine, params, slots
    config = engine.model.config
    self.chunk_samples, self.chunk_seconds = config.chunk_samples, config.chunk_seconds
    self.queue_chunks = queue_chunks
    self.max_prompt_tokens = int(max_prompt_tokens)
    self.max_wait = 0.25 * self.chunk_seconds if max_wait is None else float(max_wait)
    # Idle rows hold an empty instruction and a policy that never speaks; they are
    # never advanced, so neither matters.
    self.stepper = StreamStepper(engine, params, [[]] * slots,
                                 [ThresholdPolicy(2.0) for _ in range(slots)],
                                 max_reply_tokens=max_reply_tokens, sound_alerts=sound_alerts,
                                 watches=watches)
    self._lock = threading.Lock()
    self._rows: dict[int, _Slot] = {}
    self._free = list(range(slots))
    self._next_id = 0
    self._feeds: dict[int, list[int]] = {}
    self._repins: dict[int, list[int]] = {}  # {row: a changed instruction to pin}
    self.ticks = 0
    self.step_seconds: collections.deque[tuple[int, float]] = collections.deque(maxlen=4096)

  # ---------------------------------------------------------- event-loop side
  @property
  def active(self) -> int:
    return len(self._rows)

  def join(self, instruction_ids: Sequence[int], policy: DecisionPolicy) -> tuple[int, int]:
    """Takes a free row for a new stream; returns (row, stream id). Raises `SlotsFull`,
    or ValueError for an instruction longer than `max_prompt_tokens` with its markers."""
    self._check_prompt(instruction_ids)
    with self._lock:
      if not self._free:
        raise SlotsFull(f"all {self.slots} slots are busy")
      row = self._free.pop(0)
      self._next_id += 1
      self._rows[row] = _Slot(self._next_id, [int(t) for t in instruction_ids], policy)
      self._feeds.pop(row, None)
      self._repins.pop(row, None)
      return row, self._next_id

  def leave(self, row: int, stream_id: int) -> None:
    """Frees the row of stream `stream_id` (a no-op if it already left)."""
    with self._lock:
      slot = self._rows.get(row)
      if slot is not None and slot.stream_id == stream_id:
        del self._rows[row]
        self._feeds.pop(row, None)
        self._repins.pop(row, None)
        self._free.append(row)
        self._free.sort()

  def push(self, row: int, stream_id: int, chunk: np.ndarray, arrived: float | None = None
           ) -> int:
    """Queues one chunk [chunk_samples] of a stream; returns how many chunks were dropped
    to make room (0 or 1)."""
    arrived = time.monotonic() if arrived is None else arrived
    with self._lock:
      slot = self._rows.get(row)
      if slot is None or slot.stream_id != stream_id:
        return 0
      dropped = 0
      if len(slot.chunks) >= self.queue_chunks:  # a dropped chunk keeps its index
        slot.chunks.popleft()
        slot.dropped += 1
        dropped = 1
      slot.chunks.append((np.asarray(chunk, np.float32), arrived, slot.received))
      slot.received += 1
      return dropped

  def feed(self, row: int, stream_id: int, tokens: Sequence[int]) -> None:
    """Text tokens (e.g. `stream_format.instruction_tokens(new)`, at most
    `max_prompt_tokens`) fed to the stream before its next chunk."""
    if len(tokens) > self.max_prompt_tokens:
      raise ValueError(f"{len(tokens)} tokens to feed; at most {self.max_prompt_tokens}")
    with self._lock:
      slot = self._rows.get(row)
      if slot is not None and slot.stream_id == stream_id:
        self._feeds.setdefault(row, []).extend(int(t) for t in tokens)

  def change_instruction(self, row: int, stream_id: int, instruction_ids: Sequence[int]
                         ) -> None:
    """The stream's instruction changes before its next chunk: `<sys> new </sys>` is fed
    and, with a pinned prefix, pinned (`StreamStepper.change_instruction`)."""
    self._check_prompt(instruction_ids)
    with self._lock:
      slot = self._rows.get(row)
      if slot is not None and slot.stream_id == stream_id:
        self._feeds.setdefault(row, []).extend(sf.instruction_tokens(instruction_ids))
        self._repins[row] = [int(t) for t in instruction_ids]

  def _check_prompt(self, instruction_ids: Sequence[int]) -> None:
    """ValueError for an instruction whose online prompt exceeds `max_prompt_tokens`."""
    length = len(sf.online_prompt(list(instruction_ids)))
    if length > self.max_prompt_tokens:
      raise ValueError(f"the instruction is {length} tokens with its markers; at most "
                       f"{self.max_prompt_tokens}")

  def set_policy(self, row: int, stream_id: int, policy: DecisionPolicy) -> None:
    """Replaces the stream's policy from its next chunk on (e.g. a moved threshold)."""
    with self._lock:
      slot = self._rows.get(row)
      if slot is not None and slot.stream_id == stream_id:
        slot.policy = policy
        if slot.started:
          self.stepper.policies[row] = policy

  def waiting(self) -> tuple[int, int, float | None]:
    """(active streams, streams with a chunk waiting, arrival time of the oldest one)."""
    with self._lock:
      heads = [s.chunks[0][1] for s in self._rows.values() if s.chunks]
      return len(self._rows), len(heads), (min(heads) if heads else None)

  def ready(self, now: float | None = None) -> float | None:
    """0 when a tick should run now; else seconds until it should (None: no chunk waits)."""
    now = time.monotonic() if now is None else now
    active, with_chunk, oldest = self.waiting()
    if oldest is None:
      return None
    if with_chunk == active:
      return 0.0
    return max(0.0, oldest + self.max_wait - now)

  def dropped(self, row: int, stream_id: int) -> int:
    with self._lock:
      slot = self._rows.get(row)
      return slot.dropped if slot is not None and slot.stream_id == stream_id else 0

  # ------------------------------------------------------------ compute side
  def tick(self) -> list[SlotRecord]:
    """One batched step over every row with a chunk waiting (compute thread)."""
    with self._lock:
      starts = {row: slot for row, slot in self._rows.items() if not slot.started}
      for slot in starts.values():
        slot.started = True
      feeds, self._feeds = self._feeds, {}
      repins, self._repins = self._repins, {}
      taken: dict[int, tuple[int, np.ndarray, float, int]] = {}
      for row, slot in self._rows.items():
        if slot.chunks:
          chunk, arrived, index = slot.chunks.popleft()
          taken[row] = (slot.stream_id, chunk, arrived, index)
    if starts:
      self.stepper.reset_rows({row: (slot.instruction_ids, slot.policy)
                               for row, slot in starts.items()})
    with self._lock:  # a policy set between join and start
      for row, slot in starts.items():
        self.stepper.policies[row] = slot.policy
    if feeds:
      self.stepper.feed_rows(feeds)
    if repins:
      self.stepper.repin_rows(repins)
    if not taken:
      return []
    chunks = np.zeros((self.slots, self.chunk_samples), np.float32)
    advance = np.zeros(self.slots, bool)
    indices = np.zeros(self.slots, np.int64)
    for row, (_, chunk, _, index) in taken.items():
      chunks[row], advance[row], indices[row] = chunk, True, index
    began = time.perf_counter()
    records = self.stepper.step_rows(chunks, advance, indices)
    stepped = time.monotonic()
    self.step_seconds.append((len(taken), time.perf_counter() - began))
    self.ticks += 1
    return [SlotRecord(row, stream_id, records[row], arrived, stepped)
            for row, (stream_id, _, arrived, _) in taken.items()]

  def warm_up(self) -> None:
    """Compiles every step a stream can need (join, perceive and speak for every row
    bucket, and a prefill per prompt width up to `max_prompt_tokens`) on a throwaway
    stream, so no client waits for XLA."""
    self.stepper.state = self.engine.compile_rows(self.stepper.params, self.stepper.state,
                                                  self.stepper.tokens_per_chunk)
    row, stream_id = self.join([], ThresholdPolicy(0.0))
    self.push(row, stream_id, np.zeros(self.chunk_samples, np.float32))
    self.tick()
    for width in range(PROMPT_BUCKET, prompt_width(self.max_prompt_tokens) + 1, PROMPT_BUCKET):
      self.stepper.feed_rows({row: [sf.PAD_ID + 1] * width})
    self.push(row, stream_id, np.zeros(self.chunk_samples, np.float32))
    self.tick()
    self.leave(row, stream_id)


# ---------------------------------------------------------------- the events
class StreamEvents:
  """One stream's records -> protocol events (dicts with "event" and stream "time" s).

  Args:
    decode: token ids -> text (the bundle's tokenizer).
    threshold: shown with each chunk's decision (the policy's own, if it has one).
  """

  def __init__(self, decode: Callable[[Sequence[int]], str], threshold: float):
    self.decode, self.threshold = decode, threshold
    self._heard: collections.deque[int] = collections.deque(maxlen=64)
    self._reply: list[int] | None = None
    self._reply_start = 0.0
    self.replies = 0

  def events(self, record: ChunkRecord, **chunk_fields: Any) -> list[dict[str, Any]]:
    """The events of one perceived chunk, in order: the decision first."""
    out = []
    probability = round(record.speak_probability, 5)
    chunk = {"event": "chunk", "time": round(record.end, 4), "chunk": record.index,
             "speak_probability": probability, "threshold": self.threshold,
             "decision": "SPEAK" if record.spoke else "SILENT", **chunk_fields}
    if record.sound_event is not None:  # the sound-event head's class, when it hears one
      chunk["sound_event"] = record.sound_event
      chunk["sound_probability"] = round(record.sound_probability, 5)
    if record.sound_alert is not None:  # this chunk starts the head's alert
      chunk["sound_alert"] = record.sound_alert
    if record.turn_end_probability is not None:  # the turn-end head's P(turn ended)
      chunk["turn_end_probability"] = round(record.turn_end_probability, 5)
    if self._reply is not None and (record.fed_tokens or (REPLY_START in record.events
                                                          and YIELD not in record.events)):
      # Text was fed before this chunk (a new instruction): the model decides afresh.
      out.append(self.interrupt("instruction_changed", record.start, record.index))
    out.append(chunk)
    if record.heard_tokens:
      self._heard.extend(record.heard_tokens)
      out.append({"event": "heard", "time": round(record.end, 4), "chunk": record.index,
                  "tokens": record.heard_tokens, "text": self.decode(record.heard_tokens),
                  "transcript_tail": self.decode(list(self._heard))})
    if YIELD in record.events and self._reply is not None:
      out.append(self._end("yield", "yield", record))
    if REPLY_START in record.events:
      self._reply, self._reply_start = [], record.end
      out.append({"event": "reply_start", "time": round(record.end, 4), "chunk": record.index,
                  "speak_probability": probability})
    if self._reply is not None and record.reply_tokens:
      self._reply += record.reply_tokens
      out.append({"event": "reply_tokens", "time": round(record.end, 4), "chunk": record.index,
                  "tokens": record.reply_tokens, "text": self.decode(record.reply_tokens),
                  "reply_text": self.decode(self._reply)})
    if REPLY_END in record.events and self._reply is not None:
      out.append(self._end("reply_end", "eor", record))
    if REPLY_CAPPED in record.events and self._reply is not None:
      out.append(self._end("reply_end", "max_tokens", record))
    return out

  def interrupt(self, reason: str, time_s: float, chunk: int) -> dict[str, Any] | None:
    """Ends a running reply from outside (instruction changed, stream ended)."""
    if self._reply is None:
      return None
    tokens, self._reply = self._reply, None
    self.replies += 1
    return {"event": "reply_end", "time": round(time_s, 4), "chunk": chunk,
            "reply_start": self._reply_start, "text": self.decode(tokens), "tokens": tokens,
            "reason": reason}

  def _end(self, name: str, reason: str, record: ChunkRecord) -> dict[str, Any]:
    tokens, self._reply = self._reply, None
    self.replies += 1
    return {"event": name, "time": round(record.end, 4), "chunk": record.index,
            "reply_start": self._reply_start, "text": self.decode(tokens), "tokens": tokens,
            "reason": reason}
