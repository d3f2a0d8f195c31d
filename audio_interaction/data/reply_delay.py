"""Replies held back a few chunks: the context a timer-driven policy gives the model.

The corpus starts every reply at the chunk whose end reaches its ready time, so in
training the model writes a reply only right after it decided the turn was over. At
inference a policy may hold the reply back: the silence timer fires ~0.7 s after the
end of speech, and the hybrid policy waits for a short silence first. The model then
sees, for the first time, a finished turn followed by `<decide>` positions with no
reply after them, and is asked to start one there. The shipped tiny model, forced to
start 5 chunks (0.8 s) after the right one, gets 10 % of the held-out instruction and
scene replies exact against 18 % on time, its teacher-forced NLL of the replies rises
by 0.42 nats, and it writes words of no reply ("yourider", "cairobi") for chat questions
(`benchmarks/reply_delay.py`; README, "A reply started late is still the answer").

`delay_replies` moves a completed reply d chunks later (d uniform in
1..`max_delay_chunks`, with `probability`), as a policy that held it would: the held
chunks keep their SPEAK decision target (speaking *was* right there; the reply was
held, not unwarranted) with nothing written after their `<decide>`, and the reply's
tokens follow the `<decide>` of the chunks d later, chunk for chunk. A reply moves
only where that is what a policy could have done: it ended with `<eor>` (a reply cut
by a barge-in stays tied to the voice that cut it), the chunks it moves into exist
and hold no reply, and no transcribed word ends after the reply's first chunk and up to
`guard_chunks` after its new last one (held past the user's next words, a reply is
no longer the answer to the words before them).

The example keeps its length, audio, transcript and sound-event labels; only where
reply tokens sit and which `<decide>` positions predict them change. The stored
corpus is untouched: the pipeline applies this with Grain's `random_map`, so each
epoch draws new delays, the same on a resumed run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from audio_interaction import stream_format as sf


@dataclasses.dataclass(frozen=True)
class ReplySpan:
  """A reply in an example: the chunks `first..last` whose `<decide>` it follows."""

  first: int
  last: int
  completed: bool  # its last token is <eor>


def chunk_replies(example: Mapping[str, np.ndarray]) -> list[list[int]]:
  """The reply tokens written after each chunk's `<decide>` of an online example.

  Args:
    example: an online example's per-position fields (`tokens` int32[L]).
  Returns:
    One list of token ids per chunk (empty where the chunk wrote nothing).
  """
  tokens = np.asarray(example["tokens"])
  audio = np.flatnonzero(tokens == sf.AUDIO_ID)
  decide = np.flatnonzero(tokens == sf.DECIDE_ID)
  if len(audio) != len(decide):
    raise ValueError(f"online example with {len(audio)} <audio> and {len(decide)} <decide>")
  ends = np.append(audio[1:], len(tokens))
  return [tokens[d + 1:e].tolist() for d, e in zip(decide, ends)]


def reply_spans(replies: list[list[int]]) -> list[ReplySpan]:
  """The replies of `chunk_replies`: runs of chunks with tokens, split after each `<eor>`."""
  spans, first = [], None
  for c, said in enumerate(replies):
    if not said:
      if first is not None:  # a reply that stopped without <eor>: cut by a barge-in
        spans.append(ReplySpan(first, c - 1, False))
        first = None
      continue
    if first is None:
      first = c
    if said[-1] == sf.EOR_ID:
      spans.append(ReplySpan(first, c, True))
      first = None
  if first is not None:
    spans.append(ReplySpan(first, len(replies) - 1, False))
  return spans


def movable_delay(span: ReplySpan, delay: int, replies: list[list[int]],
                  word_end_chunks: np.ndarray, guard_chunks: int) -> bool:
  """Whether `span` can start `delay` chunks later (see the module docstring)."""
  if not span.completed:
    return False
  new_last = span.last + delay
  if new_last >= len(replies) or any(replies[c] for c in range(span.last + 1, new_last + 1)):
    return False
  # The words a reply answers end in its first chunk (it is ready at their end).
  return not np.any((word_end_chunks > span.first)
                    & (word_end_chunks <= new_last + guard_chunks))


def lay_out(example: Mapping[str, np.ndarray], replies: list[list[int]],
            decisions: np.ndarray) -> dict[str, np.ndarray]:
  """The example's per-position fields rebuilt with `replies[c]` after chunk c's `<decide>`.

  Args:
    example: an online example (per-position fields of `stream_format`'s layout).
    replies: reply token ids per chunk (the same tokens in total as the example's).
    decisions: int32[num_chunks], the decision target at each chunk's `<decide>`.
  Returns:
    A copy with `tokens`, `audio_slot_index`, `lm_targets`, `lm_weights` and
    `decision_targets` laid out again (L unchanged); other fields as they were.
  """
  tokens = np.asarray(example["tokens"])
  slots = np.asarray(example["audio_slot_index"])
  audio = np.flatnonzero(tokens == sf.AUDIO_ID)
  decide = np.flatnonzero(tokens == sf.DECIDE_ID)
  pieces_tokens, pieces_slots, pieces_decisions, pieces_reply = [], [], [], []

  def add(ids, slot_ids, decision_ids, reply: bool):
    pieces_tokens.append(np.asarray(ids, np.int32))
    pieces_slots.append(np.asarray(slot_ids, np.int32))
    pieces_decisions.append(np.asarray(decision_ids, np.int32))
    pieces_reply.append(np.full(len(ids), reply))

  preamble = slice(0, audio[0])
  add(tokens[preamble], slots[preamble], np.full(audio[0], sf.NO_INDEX), False)
  for c, (start, d) in enumerate(zip(audio, decide)):
    prefix = slice(start, d + 1)
    prefix_decisions = np.full(d + 1 - start, sf.NO_INDEX)
    prefix_decisions[-1] = decisions[c]
    add(tokens[prefix], slots[prefix], prefix_decisions, False)
    said = replies[c]
    add(said, np.full(len(said), sf.NO_INDEX), np.full(len(said), sf.NO_INDEX), True)
  new_tokens = np.concatenate(pieces_tokens)
  if len(new_tokens) != len(tokens):
    raise ValueError(f"laid out {len(new_tokens)} positions for an example of {len(tokens)}")
  targets, weights = sf.next_token_targets(new_tokens, np.concatenate(pieces_reply))
  out = dict(example)
  out.update(tokens=new_tokens, audio_slot_index=np.concatenate(pieces_slots),
             lm_targets=targets, lm_weights=weights,
             decision_targets=np.concatenate(pieces_decisions))
  return out


def hold_replies(example: Mapping[str, np.ndarray], delays: Mapping[int, int]
                 ) -> dict[str, np.ndarray]:
  """The example with reply i of `reply_spans` started `delays[i]` chunks later.

  The caller has checked each move with `movable_delay` (in order: a later reply's
  check reads the layout before the earlier ones moved, and moves only ever go right).

  Args:
    example: an online example's per-position fields.
    delays: {index of the reply among `reply_spans(chunk_replies(example))`: chunks}.
  Returns:
    A copy laid out again by `lay_out` (the example itself when nothing moves).
  """
  replies = chunk_replies(example)
  return _held(example, replies, reply_spans(replies), delays)


def _held(example: Mapping[str, np.ndarray], replies: list[list[int]],
          spans: list[ReplySpan], delays: Mapping[int, int]) -> dict[str, np.ndarray]:
  """`hold_replies` with the example's `chunk_replies` and `reply_spans` already read
  (`replies` is changed in place)."""
  if not any(delay > 0 for delay in delays.values()):
    return dict(example)
  tokens = np.asarray(example["tokens"])
  decisions = np.asarray(example["decision_targets"])[tokens == sf.DECIDE_ID].copy()
  for index, span in enumerate(spans):
    delay = delays.get(index, 0)
    if delay <= 0:
      continue
    said = replies[span.first:span.last + 1]
    for c in range(span.first, span.last + 1):
      replies[c] = []
    for offset, tokens_of_chunk in enumerate(said):
      replies[span.first + delay + offset] = tokens_of_chunk
    decisions[span.first:span.last + delay + 1] = int(sf.Decision.SPEAK)
  return lay_out(example, replies, decisions)


def delay_replies(example: Mapping[str, np.ndarray], rng: np.random.Generator, *,
                  max_delay_chunks: int, probability: float = 0.5,
                  guard_chunks: int = 3) -> dict[str, np.ndarray]:
  """The example with some completed replies held back 1..`max_delay_chunks` chunks.

  Args:
    example: from `pipeline.select_fields`: per-position fields int32/float32[L],
      `transcript_chunks` int32[N] (the chunk each transcribed word ends in).
    rng: draws which replies move and by how much (one draw per reply).
    max_delay_chunks: the longest hold, in chunks (0 returns the example as is).
    probability: chance that a reply is held.
    guard_chunks: chunks after a held reply's new end that must hold no word's end.
  Returns:
    The example (offline examples and examples where nothing moved unchanged), or a
    copy laid out again by `lay_out`: same length, audio and transcript.
  """
  tokens = np.asarray(example["tokens"])
  if max_delay_chunks < 1 or len(tokens) < 2 or tokens[1] != sf.ONLINE_ID:
    return dict(example)
  replies = chunk_replies(example)
  spans = reply_spans(replies)
  word_ends = np.asarray(example["transcript_chunks"])
  delays = {}
  for index, span in enumerate(spans):
    delay = int(rng.integers(1, max_delay_chunks + 1))
    if rng.random() < probability and movable_delay(span, delay, replies, word_ends,
                                                    guard_chunks):
      delays[index] = delay
  return _held(example, replies, spans, delays)
