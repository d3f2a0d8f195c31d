"""The one stepping loop: perceive → decide → respond, chunk by chunk, for a batch of streams.

`StreamStepper` is the only place that calls the engine for online streams: the live
loop (`infer/live.py`), `run_stream` (a recording, no pacing), `run_policies` (one
recording under several decision policies as one batch, for the evaluation sweeps and
the silence-timer baseline) and the benchmarks all step through it, so their
decisions agree by construction, and `stream_sequence` lays any run out in the stream
format for the full-sequence forward to check.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np

from audio_interaction.audio.io import AudioError, validate_samples
from audio_interaction import stream_format as sf
from audio_interaction.corpus import worlds
from audio_interaction.infer.engine import Engine, EngineState, padded_rows
from audio_interaction.infer import policies as policies_lib
from audio_interaction.infer.policies import DecisionPolicy
from audio_interaction.infer.sound_alerts import SoundAlertRule
from audio_interaction.infer.instruction_watch import InstructionWatches
from audio_interaction.infer.transcript import BLANK_ID, collapse_ctc, heard_words
from audio_interaction.model.model import TURN_ENDED, Params

# Reply transitions a chunk can carry (`ChunkRecord.events`).
REPLY_START, REPLY_END, YIELD, REPLY_CAPPED = "reply_start", "reply_end", "yield", "reply_capped"


@dataclasses.dataclass
class ChunkRecord:
  """What happened at one chunk. Times are stream times in seconds.

  Attributes:
    index: the chunk's index in the stream (dropped chunks of a live run keep theirs).
    reply_tokens: tokens written after this chunk's `<decide>` (≤ tokens_per_chunk).
    fed_tokens: text tokens fed before this chunk's audio (e.g. a changed instruction).
    events: reply transitions at this chunk: REPLY_START (first token of a reply),
      REPLY_END (`<eor>` written), YIELD (SILENT while a reply was running: barge-in;
      or the reply cut short by a sound alert, which starts at the same chunk),
      REPLY_CAPPED (the reply reached the stepper's `max_reply_tokens`).
    heard_tokens: tokens the streaming CTC transcript emitted at this chunk.
    sound_event: the sound-event head's most likely class at this chunk (a
      `corpus.worlds.SOUNDS` label), None when that is "no sound" or the model has no
      head; sound_probability its probability (0 then).
    sound_alert: the class whose alert the sound-event head started at this chunk
      (`infer/sound_alerts.py`; its reply tokens are this chunk's and the next ones'),
      None otherwise.
    turn_end_probability: P(the user's turn has ended) at this chunk: the row's prosody
      model's when its policy reads one (`infer.hybrid_signal="prosody"`), else the
      turn-end head's; None without either.
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
  sound_event: str | None = None
  sound_probability: float = 0.0
  sound_alert: str | None = None
  turn_end_probability: float | None = None


def sound_events_heard(probabilities: np.ndarray) -> list[tuple[str | None, float]]:
  """Per row of the sound-event head's probabilities [B, K]: (its most likely class, or
  None for "no sound" or no head (K = 0), and that class's probability)."""
  if probabilities.shape[1] == 0:
    return [(None, 0.0)] * probabilities.shape[0]
  best = np.argmax(probabilities, axis=1)
  return [(None, 0.0) if b == sf.NO_SOUND_EVENT
          else (worlds.SOUND_EVENT_LABELS[b], float(row[b]))
          for b, row in zip(best.tolist(), probabilities)]


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

  def sound_runs(self, min_probability: float = 0.5) -> list[tuple[float, float, str]]:
    """(start s, end s, class) of each run of consecutive chunks whose sound-event head
    heard the same class with at least `min_probability`."""
    runs: list[tuple[float, float, str]] = []
    for chunk in self.chunks:
      label = chunk.sound_event if chunk.sound_probability >= min_probability else None
      if label is None:
        continue
      if runs and runs[-1][2] == label and abs(runs[-1][1] - chunk.start) < 1e-9:
        runs[-1] = (runs[-1][0], chunk.end, label)
      else:
        runs.append((chunk.start, chunk.end, label))
    return runs

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
  """The one perceive → decide → respond step, for B independent streams in one batch.

  Used by `run_stream`, the live loop (`infer/live.py`), the evaluation's policy
  sweeps (`run_policies`) and the benchmarks. Each `step` perceives one chunk per row
  (one batched `Engine.perceive`), asks each row's `DecisionPolicy` whether to speak,
  and writes up to `tokens_per_chunk` reply tokens for the rows that do (one batched
  `Engine.speak`): exactly the stream format's layout, so a reply never holds up the
  next chunk. A reply runs over chunks until `<eor>`; a row whose policy says SILENT
  while it runs stops it (YIELD); a reply reaching `max_reply_tokens` is cut
  (REPLY_CAPPED) and its row stays silent until its policy says SILENT once.

  With `sound_alerts` (`infer/sound_alerts.py`), a free row whose sound-event head hears
  a class that needs attention says that class's alert instead, whatever its policy:
  the alert's tokens are written into the stream `tokens_per_chunk` per chunk, as the
  model's own replies are. With `watches` (`infer/instruction_watch.py`), a row whose
  instruction asks for something the heads can hear ("tell me when you hear a dog
  barking", "whenever you hear the word seven") answers it when they hear it, the same
  way, and says no alerts of other sounds.

  Attributes:
    policies: one per row; may be replaced between steps.
    replying: [B] a reply is running in that row.
  """

  def __init__(self, engine: Engine, params: Params,
               instructions: Sequence[Sequence[int]], policies: Sequence[DecisionPolicy], *,
               max_reply_tokens: int | None = None, seed: int = 0,
               sound_alerts: SoundAlertRule | None = None,
               sound_alert_rows: Sequence[int] | None = None,
               watches: InstructionWatches | None = None):
    """Starts each row with `<bos> <online> <sys> instruction </sys>` (compiles on first use).

    Args:
      instructions: B lists of instruction token ids.
      policies: B decision policies (`infer/policies.py`), started here.
      max_reply_tokens: the longest reply (tokens, `<eor>` included); None: no cap.
      sound_alerts: alerts from the sound-event head; None: the policies alone decide.
      sound_alert_rows: the rows the alerts and watches speak in (default: all), e.g.
        not a baseline's row.
      watches: what each row's instruction asks to be told, watched by the heads;
        None: the decoder alone answers such instructions.
    """
    if len(instructions) != len(policies):
      raise ValueError(f"{len(instructions)} instructions but {len(policies)} policies")
    if max_reply_tokens is not None and max_reply_tokens < 1:
      raise ValueError(f"max_reply_tokens must be >= 1, got {max_reply_tokens}")
    # On the device once: host (numpy) weights would be transferred at every step.
    self.engine, self.params = engine, jax.device_put(params)
    self.policies = list(policies)
    for policy in self.policies:
      _check_signal(policy, engine)
      policy.start()
    self.max_reply_tokens = max_reply_tokens
    config = engine.model.config
    self.chunk_samples, self.sample_rate = config.chunk_samples, config.sample_rate
    self.tokens_per_chunk = config.tokens_per_chunk
    self.rows = len(self.policies)
    self.state: EngineState = engine.init_state(params, [list(i) for i in instructions],
                                                seed=seed)
    self.replying = np.zeros(self.rows, bool)
    self._reply_tokens = np.zeros(self.rows, np.int64)
    self._capped = np.zeros(self.rows, bool)
    self._said: list[list[int]] = [[] for _ in range(self.rows)]  # the running reply's tokens
    self.steps = 0
    self._fed: list[list[int]] = [[] for _ in range(self.rows)]
    self._last_label = np.full(self.rows, BLANK_ID)
    self.sound_alerts = sound_alerts
    if sound_alerts is not None:
      sound_alerts.start(self.rows)
    # Alert tokens still to write, per row.
    self._alert_tokens: list[list[int]] = [[] for _ in range(self.rows)]
    self._alert_rows = np.zeros(self.rows, bool)
    self._alert_rows[list(range(self.rows) if sound_alert_rows is None
                          else sound_alert_rows)] = True
    self.watches = watches
    if watches is not None:
      watches.start(self.rows)
      for row, ids in enumerate(instructions):
        watches.set_instruction(row, ids)

  @property
  def chunk_seconds(self) -> float:
    return self.engine.model.config.chunk_seconds

  def feed_text(self, tokens: Sequence[int], rows: Sequence[int] | None = None) -> None:
    """Feeds text tokens [T] to `rows` (default all) before the next chunk, e.g.
    `stream_format.instruction_tokens(new instruction)`.

    A running reply is not continued across fed text: the model hears the text and
    decides afresh at the next chunk.
    """
    tokens = [int(t) for t in tokens]
    rows = range(self.rows) if rows is None else list(rows)
    valid = np.zeros((self.rows, len(tokens)), bool)
    valid[list(rows)] = True
    batch = np.broadcast_to(np.asarray(tokens, np.int32), (self.rows, len(tokens)))
    self.state = self.engine.feed(self.params, self.state, batch, valid)
    for row in rows:
      self._fed[row] += tokens
      self.replying[row] = False
      self._reply_tokens[row] = 0
      self._alert_tokens[row] = []

  def change_instruction(self, instruction_ids: Sequence[int],
                         rows: Sequence[int] | None = None) -> None:
    """The instruction of `rows` (default all) changes before the next chunk:
    `<sys> new </sys>` is fed (`feed_text`) and, with a pinned prefix, becomes the
    pinned instruction (`Engine.repin_rows`), so it stays in view as the first one did."""
    rows = range(self.rows) if rows is None else list(rows)
    self.feed_text(sf.instruction_tokens(instruction_ids), rows)
    self.repin_rows({row: instruction_ids for row in rows})

  def repin_rows(self, instructions: dict[int, Sequence[int]]) -> None:
    """{row: instruction ids}: each row's pinned prefix becomes that instruction's."""
    self.state = self.engine.repin_rows(self.params, self.state,
                                        {row: list(ids) for row, ids in instructions.items()})
    if self.watches is not None:
      for row, ids in instructions.items():
        self.watches.set_instruction(row, ids)

  def step(self, chunk: np.ndarray, index: int | None = None) -> ChunkRecord:
    """One row's step: chunk [chunk_samples] float32 (index: default the step count)."""
    if self.rows != 1:
      raise ValueError(f"step() is for one row; this stepper has {self.rows}: use step_batch")
    return self.step_batch(np.asarray(chunk)[None], index)[0]

  def step_batch(self, chunks: np.ndarray, index: int | None = None) -> list[ChunkRecord]:
    """Perceives chunks [B, chunk_samples] (or [chunk_samples], the same for every row).

    Returns:
      One `ChunkRecord` per row (`compute_seconds` is the batch's time over B).
    """
    began = time.perf_counter()
    index = self.steps if index is None else index
    chunks = np.asarray(chunks)
    if chunks.ndim == 1:
      chunks = np.broadcast_to(chunks, (self.rows, chunks.shape[0]))
    rows = np.arange(self.rows)
    indices = np.full(self.rows, index, np.int64)
    chunks = self._checked(chunks, rows, indices)
    self.state, probs = self.engine.perceive(self.params, self.state, chunks)
    labels, probs, sounds, turn_end = jax.device_get(
        (self.state.heard, probs, self.state.sound_events, self.state.turn_end))
    heard, self._last_label = collapse_ctc(labels, self._last_label)
    speak_probability = np.asarray(probs[:, sf.Decision.SPEAK], np.float64)
    turn_ended = _turn_ended(turn_end)
    active, written, counts, alerts = self._decide_and_speak(rows, indices, chunks,
                                                             speak_probability, sounds,
                                                             turn_ended, heard)
    elapsed = (time.perf_counter() - began) / self.rows
    return self._records(rows, indices, speak_probability, active, written, counts, elapsed,
                         heard, sound_events_heard(sounds), alerts, turn_ended)

  def _checked(self, chunks: np.ndarray, rows: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """chunks [B, chunk_samples] as float32, the given rows' samples checked in one pass
    (on a bad chunk, row by row, so the error names its chunk and row)."""
    try:
      validate_samples(chunks[rows], expected_rate=self.sample_rate, expected_ndim=(2,),
                       expected_length=self.chunk_samples, where="step")
    except AudioError:
      for row in rows:
        validate_samples(chunks[row], expected_rate=self.sample_rate, expected_ndim=(1,),
                         expected_length=self.chunk_samples,
                         where=f"chunk {indices[row]} row {row}")
      raise
    return np.asarray(chunks, np.float32)

  def _records(self, rows: np.ndarray, indices: np.ndarray, speak_probability: np.ndarray,
               active: np.ndarray, written: np.ndarray, counts: np.ndarray, elapsed: float,
               heard: list[list[int]], sounds: list[tuple[str | None, float]],
               alerts: dict[int, str], turn_ended: np.ndarray | None) -> list[ChunkRecord]:
    """The reply bookkeeping of `rows` after their step, over all rows at once, and one
    `ChunkRecord` per row of `rows`.

    Args:
      rows: [R] the rows that stepped; indices [B] each row's chunk index;
        speak_probability [B]; active [B] bool (the policy said SPEAK);
        written [B, n] int32 reply tokens; counts [B] how many of them were written;
        heard: B lists of transcript tokens; sounds: B (sound event, probability);
        alerts: {row: class} of the sound alerts started now; turn_ended: [B] the
        turn-end head's P(turn ended), None without the head.
    """
    stepped = np.zeros(self.rows, bool)
    stepped[rows] = True
    counts = np.where(stepped & active, counts, 0)
    wrote = counts > 0
    last = written[np.arange(self.rows), np.maximum(counts - 1, 0)] if written.shape[1] else (
        np.zeros(self.rows, np.int64))
    # An alert started now cuts the model's running reply short (a YIELD) and starts a
    # reply of its own.
    alerted = np.zeros(self.rows, bool)
    alerted[list(alerts)] = True
    yielded = stepped & self.replying & (~active | alerted)
    started = wrote & (~self.replying | alerted)
    self._capped &= ~alerted
    ended = wrote & (last == sf.EOR_ID)
    going = wrote & ~ended
    self._reply_tokens = np.where(started, 0, self._reply_tokens) + counts
    capped = going & (self.max_reply_tokens is not None) & (
        self._reply_tokens >= (self.max_reply_tokens or 0))
    self._capped |= capped
    self.replying = np.where(stepped, going & ~capped, self.replying)
    self._heard_replies(started, wrote, ended, written, counts)
    seconds = self.chunk_seconds
    records = []
    flags = np.stack([yielded, started, ended, capped], axis=1)[rows].tolist()
    for row, index, probability, spoke, count, row_flags in zip(
        rows.tolist(), indices[rows].tolist(), speak_probability[rows].tolist(),
        active[rows].tolist(), counts[rows].tolist(), flags):
      events = [name for name, flag in zip((YIELD, REPLY_START, REPLY_END, REPLY_CAPPED),
                                           row_flags) if flag]
      records.append(ChunkRecord(index, index * seconds, (index + 1) * seconds, probability,
                                 spoke, written[row, :count].tolist(), elapsed,
                                 self._fed[row], events, heard[row], *sounds[row],
                                 alerts.get(row), self._turn_end_of(row, turn_ended)))
      self._fed[row] = []
    self.steps += 1
    return records

  def _heard_replies(self, started: np.ndarray, wrote: np.ndarray, ended: np.ndarray,
                     written: np.ndarray, counts: np.ndarray) -> None:
    """Keeps each row's running reply; a finished one goes to the watches (a reply saying
    what the model will listen for may move the row's watch:
    `InstructionWatches.heard_reply`)."""
    if self.watches is None:
      return
    for row in np.flatnonzero(wrote).tolist():
      self._said[row] = ([] if started[row] else self._said[row]) + (
          written[row, :counts[row]].tolist())
      if ended[row]:
        self.watches.heard_reply(row, self._said[row])
        self._said[row] = []

  def _turn_end_of(self, row: int, turn_ended: np.ndarray | None) -> float | None:
    """The row's P(turn ended) at this chunk: its policy's prosody model's
    (`HybridPolicy.turn_end_probability`: what the policy decides on), else the
    turn-end head's, else None."""
    from_policy = getattr(self.policies[row], "turn_end_probability", None)
    if from_policy is not None:
      return from_policy
    return None if turn_ended is None else float(turn_ended[row])

  # ------------------------------------------------------ continuous batching
  # A server keeps one stepper of B slots and lets streams join and leave rows
  # (`infer/slots.py`): `reset_rows` starts a stream in a row without recompiling,
  # `step_rows` advances only the rows that have a chunk, each at its own index.

  def reset_rows(self, rows: dict[int, tuple[Sequence[int], DecisionPolicy]]) -> None:
    """Starts new streams in some rows: {row: (instruction ids, policy)}.

    The row's engine state is reset in place and prefilled with its instruction
    (`Engine.reset_rows`), its policy is started, and its reply bookkeeping forgotten;
    the other rows are untouched.
    """
    if not rows:
      return
    self.state = self.engine.reset_rows(self.params, self.state,
                                        {row: [int(t) for t in ids]
                                         for row, (ids, _) in rows.items()})
    for row, (ids, policy) in rows.items():
      _check_signal(policy, self.engine)
      policy.start()
      self.policies[row] = policy
      self.replying[row] = self._capped[row] = False
      self._reply_tokens[row] = 0
      self._fed[row] = []
      self._last_label[row] = BLANK_ID
      self._alert_tokens[row] = []
      if self.sound_alerts is not None:
        self.sound_alerts.reset_row(row)
      if self.watches is not None:
        self.watches.set_instruction(row, ids)

  def feed_rows(self, tokens_per_row: dict[int, Sequence[int]]) -> None:
    """`feed_text` with different tokens per row (padded to a `prompt_width` bucket, so
    it compiles once per bucket); rows not given do not advance."""
    tokens_per_row = {row: [int(t) for t in tokens] for row, tokens in tokens_per_row.items()
                      if len(tokens)}
    if not tokens_per_row:
      return
    self.state = self.engine.feed(self.params, self.state,
                                  *padded_rows(tokens_per_row, self.rows))
    for row, tokens in tokens_per_row.items():
      self._fed[row] += tokens
      self.replying[row] = False
      self._reply_tokens[row] = 0
      self._alert_tokens[row] = []

  def _decide_and_speak(self, rows, indices, chunks: np.ndarray, speak_probability: np.ndarray,
                        sounds: np.ndarray, turn_ended: np.ndarray | None,
                        heard: Sequence[Sequence[int]], gathered: bool = False
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, str]]:
    """Asks each of `rows`' policies (and the sound alerts and watches), then writes the
    replies of those that speak (`gathered`: computing only their rows,
    `Engine.speak_rows`) and the alerts' next tokens. A policy reads P(SPEAK), or
    `turn_ended` [B] when it decides on the turn-end head (`policies.reads_turn_end`);
    the watches read the head's `sounds` [B, K] and the transcript tokens `heard` (B
    lists).

    Returns:
      (active [B] bool, written tokens [B, n] int32, counts [B], {row: class} of the
      alerts started now).
    """
    active = np.zeros(self.rows, bool)
    for row in rows:
      policy = self.policies[row]
      signal = speak_probability
      if policies_lib.reads_turn_end(policy):
        if turn_ended is None:  # a policy swapped in after the checks at start
          _check_signal(policy, self.engine)
        signal = turn_ended
      wants = bool(policy.decide(int(indices[row]), chunks[row], float(signal[row]),
                                 bool(self.replying[row])))
      if self._capped[row]:  # a cut reply does not restart until the policy lets go
        self._capped[row] = wants
        wants = False
      active[row] = wants
    alerts, alert_tokens = self._alerts(rows, indices, sounds, heard)
    alerting = np.zeros(self.rows, bool)
    alerting[list(alert_tokens)] = True
    active &= ~alerting
    written = np.zeros((self.rows, 0), np.int32)
    counts = np.zeros(self.rows, np.int64)
    if active.any():
      limit = None
      if self.max_reply_tokens is not None:  # a new reply has the whole budget
        used = np.where(self.replying, self._reply_tokens, 0)
        limit = np.maximum(self.max_reply_tokens - used, 0).astype(np.int32)
      speak = self.engine.speak_rows if gathered else self.engine.speak
      self.state, tokens, count = speak(self.params, self.state, active,
                                        n=self.tokens_per_chunk, limit=limit)
      written, counts = jax.device_get((tokens, count))
    if alert_tokens:
      self.state = self.engine.feed(self.params, self.state,
                                    *padded_rows(alert_tokens, self.rows))
      width = max(written.shape[1], self.tokens_per_chunk)
      written = np.pad(np.asarray(written, np.int32), ((0, 0), (0, width - written.shape[1])))
      counts = np.array(counts, np.int64)
      for row, tokens in alert_tokens.items():
        written[row, :len(tokens)], written[row, len(tokens):] = tokens, sf.PAD_ID
        counts[row] = len(tokens)
    return active | alerting, written, counts, alerts

  def _alerts(self, rows, indices: np.ndarray, sounds: np.ndarray,
              heard: Sequence[Sequence[int]]) -> tuple[dict[int, str], dict[int, list[int]]]:
    """({row: class, or the watched word} of the sound alerts and watches answered from
    now, {row: their tokens to write now} for every row with one running)."""
    started = {}
    free = np.array([not t for t in self._alert_tokens])
    listening = [row for row in rows if self._alert_rows[row]]
    if self.watches is not None:
      # Every listening row: one without a request still keeps the sounds it heard and
      # its transcript, where a spoken request may come.
      for row, (label, tokens) in self.watches.fire(sounds, heard, listening, free).items():
        self._alert_tokens[row], started[row] = tokens, label
      listening = [row for row in listening if not self.watches.watching(row)]
    if self.sound_alerts is not None:
      for row, class_id in self.sound_alerts.fire(sounds, listening, indices, free).items():
        self._alert_tokens[row] = list(self.sound_alerts.replies[class_id])
        started[row] = worlds.SOUND_EVENT_LABELS[class_id]
    now = {}
    for row in rows:
      if self._alert_tokens[row]:
        now[int(row)] = self._alert_tokens[row][:self.tokens_per_chunk]
        self._alert_tokens[row] = self._alert_tokens[row][self.tokens_per_chunk:]
    return started, now

  def step_rows(self, chunks: np.ndarray, advance: Sequence[bool], indices: Sequence[int]
                ) -> list[ChunkRecord | None]:
    """Steps the rows where `advance` is True, row i as its chunk `indices[i]`.

    The other rows' model state, policy and replies do not move (their chunk is
    ignored: pass zeros). For every advanced row the record equals what `step_batch`
    gives when that stream runs alone. Only the advanced rows (and the speaking ones)
    are computed, padded to an `engine.row_buckets` size (`Engine.perceive_rows`,
    `Engine.speak_rows`).

    Args:
      chunks: [B, chunk_samples] float32.
      advance: [B] bool.
      indices: [B] the chunk index of each row's stream.
    Returns:
      One `ChunkRecord` per advanced row, None for the others.
    """
    began = time.perf_counter()
    advance = np.asarray(advance, bool)
    chunks = np.asarray(chunks)
    if chunks.shape != (self.rows, self.chunk_samples) or advance.shape != (self.rows,):
      raise ValueError(f"step_rows needs chunks [{self.rows}, {self.chunk_samples}] and "
                       f"advance [{self.rows}], got {chunks.shape} and {advance.shape}")
    rows = np.flatnonzero(advance)
    indices = np.asarray(indices, np.int64)
    chunks = self._checked(chunks, rows, indices)
    self.state, probs = self.engine.perceive_rows(self.params, self.state, chunks, advance)
    # One transfer per step.
    labels, probs, sounds, turn_end = jax.device_get(
        (self.state.heard, probs, self.state.sound_events, self.state.turn_end))
    heard, last_label = collapse_ctc(labels, self._last_label)
    self._last_label = np.where(advance, last_label, self._last_label)
    speak_probability = np.asarray(probs[:, sf.Decision.SPEAK], np.float64)
    turn_ended = _turn_ended(turn_end)
    active, written, counts, alerts = self._decide_and_speak(rows, indices, chunks,
                                                             speak_probability, sounds,
                                                             turn_ended, heard, gathered=True)
    elapsed = time.perf_counter() - began
    records: list[ChunkRecord | None] = [None] * self.rows
    for row, record in zip(rows.tolist(), self._records(rows, indices, speak_probability, active,
                                                        written, counts, elapsed, heard,
                                                        sound_events_heard(sounds), alerts,
                                                        turn_ended)):
      records[row] = record
    return records

def _turn_ended(turn_end: np.ndarray) -> np.ndarray | None:
  """The turn-end head's probabilities [B, 2] -> P(turn ended) [B]; None ([B, 0]) without it."""
  return np.asarray(turn_end[:, TURN_ENDED], np.float64) if turn_end.shape[1] else None


def _check_signal(policy: DecisionPolicy, engine: Engine) -> None:
  if policies_lib.reads_turn_end(policy) and not engine.model.config.turn_end_head:
    raise ValueError("the policy decides on the turn-end head (infer.hybrid_signal="
                     "'turn_end'), and this model has none: fit one with "
                     "`audio-interaction fit-turn-head`")


def _padded(engine: Engine, audio: np.ndarray, where: str) -> np.ndarray:
  """`audio` [S] checked whole (so an error names the sample's index in the recording)
  and zero-padded to whole chunks."""
  config = engine.model.config
  audio = validate_samples(np.asarray(audio), expected_rate=config.sample_rate,
                           expected_ndim=(1,), where=where)
  return np.pad(audio, (0, -len(audio) % config.chunk_samples)).astype(np.float32)


def run_policies(engine: Engine, params: Params, audio: np.ndarray,
                 instruction_ids: Sequence[int], policies: Sequence[DecisionPolicy], *,
                 max_reply_tokens: int | None = None, seed: int = 0,
                 on_chunk: Callable[[list[ChunkRecord]], None] | None = None,
                 sound_alerts: SoundAlertRule | None = None,
                 sound_alert_rows: Sequence[int] | None = None,
                 watches: InstructionWatches | None = None) -> list[StreamTrace]:
  """Runs the model once over `audio` for several decision policies, as one batch.

  Every row perceives the same chunks and holds its own replies (rows are
  independent streams), so a `ThresholdPolicy` row is exactly `run_stream` with it,
  and a timer row is the silence-timer baseline with the same model writing replies.

  Args:
    audio: float32[S] 16 kHz samples; a partial last chunk is zero-padded.
    instruction_ids: the instruction's token ids (the same for every row).
    policies: one per row.
    sound_alerts, sound_alert_rows, watches: alerts from the sound-event head, and
      what the instruction asks to be told, in those rows (default all; `StreamStepper`).
  Returns:
    One `StreamTrace` per policy.
  """
  padded = _padded(engine, audio, "run_policies")
  stepper = StreamStepper(engine, params, [list(instruction_ids)] * len(policies), policies,
                          max_reply_tokens=max_reply_tokens, seed=seed,
                          sound_alerts=sound_alerts, sound_alert_rows=sound_alert_rows,
                          watches=watches)
  size = stepper.chunk_samples
  records: list[list[ChunkRecord]] = [[] for _ in policies]
  for index in range(len(padded) // size):
    step = stepper.step_batch(padded[index * size:(index + 1) * size])
    for row, record in enumerate(step):
      records[row].append(record)
    if on_chunk is not None:
      on_chunk(step)
  return [StreamTrace(r, stepper.chunk_seconds) for r in records]


def run_stream(engine: Engine, params: Params, audio: np.ndarray, instruction_ids: list[int],
               policy: DecisionPolicy, *, max_reply_tokens: int | None = None,
               on_chunk: Callable[[ChunkRecord], None] | None = None,
               sound_alerts: SoundAlertRule | None = None,
               watches: InstructionWatches | None = None) -> StreamTrace:
  """Perceives `audio` chunk by chunk and speaks when `policy` says so.

  Args:
    engine: the jitted steps.
    audio: [S] float32 16 kHz samples; a partial last chunk is zero-padded.
    instruction_ids: token ids of the instruction.
    policy: e.g. `ThresholdPolicy(config.infer.threshold)` or `policy_from_config`.
    max_reply_tokens: the longest reply; None: no cap.
    on_chunk: optional callback(ChunkRecord) for live views.
    sound_alerts: alerts from the sound-event head (`infer/sound_alerts.py`).
    watches: what the instruction asks to be told (`infer/instruction_watch.py`).
  """
  callback = None if on_chunk is None else (lambda records: on_chunk(records[0]))
  (trace,) = run_policies(engine, params, audio, instruction_ids, [policy],
                          max_reply_tokens=max_reply_tokens, on_chunk=callback,
                          sound_alerts=sound_alerts, watches=watches)
  return trace


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
  tokens = sf.online_prompt(instruction_ids)
  slots = [sf.NO_INDEX] * len(tokens)
  decide_at, reply_at = [], []
  for perceived, chunk in enumerate(trace.chunks):
    tokens += chunk.fed_tokens
    slots += [sf.NO_INDEX] * len(chunk.fed_tokens)
    tokens += sf.chunk_tokens(slots_per_chunk)
    slots += [sf.NO_INDEX] + [perceived * slots_per_chunk + j for j in range(slots_per_chunk)]
    slots += [sf.NO_INDEX]
    decide_at.append(len(tokens) - 1)
    for token in chunk.reply_tokens:
      reply_at.append((len(tokens) - 1, token))
      tokens.append(token)
      slots.append(sf.NO_INDEX)
  return np.asarray(tokens, np.int32), np.asarray(slots, np.int32), decide_at, reply_at
