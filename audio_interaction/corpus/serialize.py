"""Timeline -> stream-format example (`stream_format.EXAMPLE_FIELDS`), and back for reading.

`serialize` is the one path from a composed `Timeline` to the arrays the model trains
and is evaluated on; `decode_example` / `describe` invert it from the arrays alone
(no timeline), for debugging: which chunk decided what, and what was said when.

Online layout (see `stream_format`)::

    <bos> <online> <sys> instruction </sys>
    per chunk c:  <audio> <a>*k <decide> [reply tokens of chunk c]

Decision labels and the placement of reply tokens come from `timeline.schedule`.
LM loss (`lm_weights` = 1) is on every position whose next token is a reply token:
the `<decide>` of a SPEAK chunk (its target is the chunk's first reply token) and the
reply tokens before the chunk's last one. A chunk's output ends at the budget or
after `<eor>`, so the `<audio>` that follows is never a trained target.

Offline layout::

    <bos> <offline> <audio> <a>*(k*n) <sys> instruction </sys> answer <eor>

with LM loss on `answer <eor>`.

Both layouts also carry, per chunk, the labelled sound active in it (`sound_events`:
the target of the encoder's sound-event head), and the transcript of what is heard
(the content words of every utterance, fillers left out, ordered by end time) with
the chunk in which each word ends: the target of the encoder's auxiliary CTC loss,
and what lets a pipeline cut a stream at a chunk boundary and keep exactly the words
that ended before the cut.
"""

from __future__ import annotations

import dataclasses
from typing import Final

import numpy as np

from audio_interaction import stream_format as sf
from audio_interaction.stream_format import SAMPLE_RATE
from audio_interaction.corpus import effects, worlds
from audio_interaction.corpus.timeline import (
    OFFLINE, ONLINE, Timeline, chunk_samples_of, first_chunk_reaching, render, schedule,
    to_sample)
from audio_interaction.data.tokenizer import Tokenizer, normalize_text

METADATA_FIELDS: Final[tuple[str, ...]] = ("ability", "subtask", "seed", "split", "mode")


def metadata(timeline: Timeline) -> dict[str, str]:
  """String metadata of an example, kept apart from the arrays of `EXAMPLE_FIELDS`.

  `ability` is the ability's name (`stream_format.ABILITIES`, e.g. "voice_chat").
  """
  return {"ability": sf.ability_name(timeline.ability), "subtask": timeline.task,
          "seed": str(timeline.seed), "split": timeline.split, "mode": timeline.mode}


def _encode_text(tokenizer: Tokenizer, text: str) -> list[int]:
  ids = tokenizer.encode(text)
  bad = [i for i in ids if (i < sf.NUM_SPECIAL_TOKENS and i != sf.UNK_ID)
         or i >= tokenizer.vocab_size]
  if bad:
    raise ValueError(f"tokenizer produced special or out-of-range ids {bad} for {text!r}")
  return ids


def transcript(timeline: Timeline, tokenizer: Tokenizer, chunk_samples: int
               ) -> tuple[np.ndarray, np.ndarray]:
  """Token ids of the words heard in `timeline` and the chunk in which each word ends.

  Content words of every utterance (any speaker, addressed or not: the encoder hears
  them all), ordered by end time; each word is tokenized alone so that its tokens
  carry its chunk. Returns (ids int32[N], chunks int32[N]).
  """
  words = sorted((word.end, normalize_text(word.text))
                 for utterance in timeline.utterances for word in utterance.content_words)
  ids: list[int] = []
  chunks: list[int] = []
  for end, text in words:
    if not text:
      continue
    word_ids = _encode_text(tokenizer, text)
    ids += word_ids
    chunks += [first_chunk_reaching(end, chunk_samples)] * len(word_ids)
  return np.asarray(ids, np.int32), np.asarray(chunks, np.int32)


# A sound is active in a chunk where its level there is within this of its loudest
# chunk's: the rests of a ringtone, the gaps of a run of footsteps are not the sound.
SOUND_EVENT_ACTIVE_DB: Final[float] = -30.0


def sound_event_targets(timeline: Timeline, chunk_samples: int, num_chunks: int) -> np.ndarray:
  """The `sound_events` field: per chunk, `stream_format.NO_SOUND_EVENT` or 1 + the
  index in `worlds.SOUNDS` of the loudest sound event active in the chunk.

  Only the foreground sound events count, not the background beds under a whole
  stream: a bed is the scene (the decoder answers questions about it), and counted as
  an event it made "music" a third of all labelled chunks, a prior the head then gave
  every melodic sound (a first 1,000-step head named 27 of 29 real ringtones "music").
  Loudness is each event's mean square in the chunk, at the gain it is mixed with.

  Returns:
    int32 [num_chunks].
  """
  class_ids = {label: i for i, label in enumerate(worlds.SOUND_EVENT_LABELS) if label}
  targets = np.full(num_chunks, sf.NO_SOUND_EVENT, np.int32)
  loudest = np.full(num_chunks, -np.inf)
  total = num_chunks * chunk_samples
  for item in timeline.sounds:
    start = to_sample(item.start)
    if item.label not in class_ids or start >= total:
      continue
    piece = np.asarray(item.audio, np.float64)[:total - start] * item.gain
    if not piece.any():
      continue
    # The event on the stream's chunk grid, from the first chunk it reaches.
    first = start // chunk_samples
    placed = np.zeros(-(-(start - first * chunk_samples + len(piece)) // chunk_samples)
                      * chunk_samples)
    placed[start - first * chunk_samples:][:len(piece)] = piece
    level = effects.frame_rms_db(placed, chunk_samples, chunk_samples)
    chunks = first + np.flatnonzero(level >= level.max() + SOUND_EVENT_ACTIVE_DB)
    louder = level[chunks - first] > loudest[chunks]
    targets[chunks[louder]] = class_ids[item.label]
    loudest[chunks[louder]] = level[chunks - first][louder]
  return targets


def serialize(timeline: Timeline, tokenizer: Tokenizer, *, chunk_ms: int = sf.DEFAULT_CHUNK_MS,
              sample_rate: int = SAMPLE_RATE, slots_per_chunk: int,
              tokens_per_chunk: int) -> dict[str, np.ndarray]:
  """The example of `timeline`: exactly the fields of `stream_format.EXAMPLE_FIELDS`.

  Arrays: `tokens`, `audio_slot_index`, `lm_targets`, `decision_targets` int32[L],
  `lm_weights` float32[L], `audio` float32[num_chunks * chunk_samples] (16 kHz),
  `num_chunks` int32[], `transcript` and `transcript_chunks` int32[N] (see
  `transcript`), `sound_events` int32[num_chunks] (`sound_event_targets`).
  Deterministic: same timeline and arguments, same bytes.
  """
  if sample_rate != SAMPLE_RATE:
    raise ValueError(f"the stream format is {SAMPLE_RATE} Hz audio, got sample_rate={sample_rate}")
  if slots_per_chunk < 1:
    raise ValueError(f"slots_per_chunk must be >= 1, got {slots_per_chunk}")
  chunk = chunk_samples_of(chunk_ms)
  instruction = _encode_text(tokenizer, timeline.instruction)
  replies = [_encode_text(tokenizer, r.text) + [sf.EOR_ID] for r in timeline.replies]

  tokens: list[int] = []
  slots: list[int] = []
  decisions: list[int] = []
  is_reply: list[bool] = []

  def emit(ids, *, slot=None, decision=sf.NO_INDEX, reply=False):
    for token in ids:
      tokens.append(token)
      slots.append(sf.NO_INDEX if slot is None else slot)
      decisions.append(decision)
      is_reply.append(reply)

  def emit_audio(first_slot: int, count: int):
    for j in range(count):
      emit([sf.AUDIO_SLOT_ID], slot=first_slot + j)

  if timeline.mode == OFFLINE:
    num_chunks = max(1, -(-timeline.num_samples // chunk))
    emit(sf.offline_prefix())
    emit_audio(0, num_chunks * slots_per_chunk)
    emit(sf.instruction_tokens(instruction))
    emit(replies[0], reply=True)
  elif timeline.mode == ONLINE:
    plan = schedule(timeline, [len(r) for r in replies], chunk_samples=chunk,
                    tokens_per_chunk=tokens_per_chunk)
    num_chunks = plan.num_chunks
    said: dict[int, list[int]] = {}
    for reply_tokens, reply_plan in zip(replies, plan.plans):
      position = 0
      for c, count in zip(reply_plan.chunks, reply_plan.counts):
        said.setdefault(c, []).extend(reply_tokens[position:position + count])
        position += count
    emit(sf.online_prompt(instruction))
    for c in range(num_chunks):
      emit([sf.AUDIO_ID])
      emit_audio(c * slots_per_chunk, slots_per_chunk)
      emit([sf.DECIDE_ID], decision=int(plan.decisions[c]))
      emit(said.get(c, []), reply=True)
  else:
    raise ValueError(f"unknown mode {timeline.mode!r}")

  tokens_array = np.asarray(tokens, np.int32)
  targets, weights = sf.next_token_targets(tokens_array, is_reply)
  if tokens_array.max() >= tokenizer.vocab_size:
    raise ValueError("token id beyond the tokenizer's vocabulary")
  heard, heard_chunks = transcript(timeline, tokenizer, chunk)
  return {
      "tokens": tokens_array,
      "audio_slot_index": np.asarray(slots, np.int32),
      "lm_targets": targets,
      "lm_weights": weights,
      "decision_targets": np.asarray(decisions, np.int32),
      "audio": render(timeline, chunk_ms=chunk_ms, num_chunks=num_chunks),
      "num_chunks": np.asarray(num_chunks, np.int32),
      "transcript": heard,
      "transcript_chunks": np.minimum(heard_chunks, num_chunks - 1).astype(np.int32),
      "sound_events": sound_event_targets(timeline, chunk, num_chunks),
  }


# -------------------------------------------------------------------------- inverse

@dataclasses.dataclass(frozen=True)
class ChunkView:
  """One chunk read back: [start, end) in seconds, its decision and the tokens after it."""

  index: int
  start: float
  end: float
  decision: sf.Decision
  tokens: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class ReplyView:
  """One reply read back: its text, the chunks it spans, and whether `<eor>` ended it."""

  text: str
  first_chunk: int
  last_chunk: int
  completed: bool


@dataclasses.dataclass(frozen=True)
class ExampleView:
  """An example decoded from its arrays alone."""

  mode: str
  instruction: str
  num_chunks: int
  chunk_ms: float
  slots_per_chunk: int
  chunks: tuple[ChunkView, ...]  # online only
  replies: tuple[ReplyView, ...]  # offline: the answer


def decode_example(example: dict[str, np.ndarray], tokenizer: Tokenizer) -> ExampleView:
  """Reads an example back into chunks, decisions and replies (inverse of `serialize`).

  A reply ends at `<eor>` (completed) or at the first SILENT chunk after it started
  (cut by a barge-in): `schedule` never leaves a running reply silent otherwise.
  """
  tokens = [int(t) for t in example["tokens"]]
  decisions = example["decision_targets"]
  num_chunks = int(example["num_chunks"])
  chunk_ms = len(example["audio"]) / num_chunks / SAMPLE_RATE * 1000
  if tokens[:2] == [sf.BOS_ID, sf.OFFLINE_ID]:
    sys_at = tokens.index(sf.SYS_ID)
    end_sys = tokens.index(sf.END_SYS_ID, sys_at)
    answer = tokens[end_sys + 1:]
    completed = bool(answer) and answer[-1] == sf.EOR_ID
    slots = tokens.count(sf.AUDIO_SLOT_ID)
    return ExampleView(
        mode=OFFLINE, instruction=tokenizer.decode(tokens[sys_at + 1:end_sys]),
        num_chunks=num_chunks, chunk_ms=chunk_ms, slots_per_chunk=slots // num_chunks,
        chunks=(), replies=(ReplyView(tokenizer.decode(answer), 0, num_chunks - 1, completed),))
  if tokens[:3] != [sf.BOS_ID, sf.ONLINE_ID, sf.SYS_ID]:
    raise ValueError(f"not a stream-format example: starts with {tokens[:3]}")
  end_sys = tokens.index(sf.END_SYS_ID)
  instruction = tokenizer.decode(tokens[3:end_sys])
  chunk_starts = [i for i, t in enumerate(tokens) if t == sf.AUDIO_ID]
  if len(chunk_starts) != num_chunks:
    raise ValueError(f"{len(chunk_starts)} <audio> markers for num_chunks={num_chunks}")
  chunks: list[ChunkView] = []
  slots_per_chunk = 0
  for c, begin in enumerate(chunk_starts):
    stop = chunk_starts[c + 1] if c + 1 < num_chunks else len(tokens)
    decide = tokens.index(sf.DECIDE_ID, begin, stop)
    slots_per_chunk = decide - begin - 1
    chunks.append(ChunkView(
        index=c, start=c * chunk_ms / 1000, end=(c + 1) * chunk_ms / 1000,
        decision=sf.Decision(int(decisions[decide])), tokens=tuple(tokens[decide + 1:stop])))

  replies: list[ReplyView] = []
  current: list[int] = []
  first = -1

  def close(last: int, completed: bool):
    nonlocal current, first
    replies.append(ReplyView(tokenizer.decode(current), first, last, completed))
    current, first = [], -1

  for chunk in chunks:
    if chunk.decision == sf.Decision.SILENT or not chunk.tokens:
      if first >= 0:
        close(chunk.index - 1, False)
      continue
    for token in chunk.tokens:
      if first < 0:
        first = chunk.index
      if token == sf.EOR_ID:
        close(chunk.index, True)
      else:
        current.append(token)
  if first >= 0:
    close(num_chunks - 1, False)
  return ExampleView(mode=ONLINE, instruction=instruction, num_chunks=num_chunks,
                     chunk_ms=chunk_ms, slots_per_chunk=slots_per_chunk, chunks=tuple(chunks),
                     replies=tuple(replies))


def describe(example: dict[str, np.ndarray], tokenizer: Tokenizer) -> str:
  """A readable per-chunk timeline of an example, e.g.::

    chunk  12 (1.92-2.08 s) SPEAK 'twelve <eor>'

  followed by the replies read back ("reply 0: chunks 12-12 complete 'twelve'").
  """
  view = decode_example(example, tokenizer)
  lines = [f"{view.mode} example: {view.num_chunks} chunks of {view.chunk_ms:g} ms, "
           f"{view.slots_per_chunk} audio slots per chunk",
           f"instruction: {view.instruction!r}"]
  for chunk in view.chunks:
    line = f"chunk {chunk.index:3d} ({chunk.start:.2f}-{chunk.end:.2f} s) {chunk.decision.name}"
    if chunk.tokens:
      line += f" '{tokenizer.decode(chunk.tokens, keep_special=True)}'"
    lines.append(line)
  for i, reply in enumerate(view.replies):
    status = "complete" if reply.completed else "cut"
    lines.append(f"reply {i}: chunks {reply.first_chunk}-{reply.last_chunk} {status} "
                 f"'{reply.text}'")
  return "\n".join(lines)
