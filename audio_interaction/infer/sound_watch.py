"""Sounds a row's instruction asks for, watched by the sound-event head.

"Tell me when you hear a dog barking." and "Tell me when you have heard three
knocks." (the instructions of the corpus's `follow_sound_class` and `follow_count`
sub-tasks, and what a user types) name a sound class and, for the second, how many of
it. The decoder is trained to answer them, but its decision comes from its own
training world: on real recordings it does not know a real bark when it hears one,
while the sound-event head of a fitted bundle does (`train/sound_head.py`). A row whose
instruction asks for a sound (`parse_watch`) has that class watched by the head chunk
by chunk, as `SoundAlertRule` watches the alerting classes:

- heard with probability >= `threshold` for `chunks` chunks running starts a *sound*;
  it ends after `gap_chunks` chunks unheard (so one doorbell is one sound, and three
  knocks a third of a second apart are three);
- "tell me when you hear X": each sound of X is answered "i hear X"
  (`worlds.heard_message`), once, and X is not answered again until it has gone
  unheard for `hold_chunks` (a dog barking for a minute is one answer);
- "tell me when you have heard N Xs": the N-th sound of X is answered "that is N Xs"
  (`worlds.count_phrase`), once.

A watched row follows its instruction, not the alert rule: its alerts for other sounds
are off, as the corpus's streams under such an instruction keep quiet over every other
sound. A new instruction (`set_instruction`: a stream starting in the row, or a typed
instruction change) replaces the watch, or ends it when it asks for no sound. A change
asked for by voice ("from now on, tell me when you hear rain instead") reaches no
instruction text; the model answers it ("ok, i will listen for rain", the corpus's
`control_instruction_change`), and that reply (`heard_reply`) moves the watch to what
it says it will listen for: the head then keeps the decoder's word.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from typing import Final

import ml_collections
import numpy as np

from audio_interaction import stream_format as sf
from audio_interaction.corpus import worlds
from audio_interaction.data.tokenizer import normalize_text, number_to_words

# The `infer` keys of the watch (`sound_watches` reads them).
SOUND_WATCH_KEYS: Final[tuple[str, ...]] = ("sound_watch_threshold", "sound_watch_chunks",
                                            "sound_watch_gap_seconds",
                                            "sound_watch_hold_seconds")

# "... when you hear X", "... once you have heard X", "... if you hear X", and the
# model's own "ok, i will listen for X" (normalized text).
_ASKS_FOR = re.compile(r"(?:\b(?:when|whenever|once|if)\s+(?:you\s+)?(?:hear|have\s+heard)"
                       r"|\blisten\s+for)\s+(?P<what>.+)$")
_NUMBERS: Final[dict[str, int]] = {number_to_words(n): n for n in range(1, 100)}


@dataclasses.dataclass(frozen=True)
class WatchRequest:
  """What an instruction asks to be told: `label` (a `worlds.SOUNDS` class) each time it
  is heard (`count` None), or once its `count`-th sound has been heard."""

  label: str
  count: int | None = None

  @property
  def reply(self) -> str:
    """The answer's words: "i hear a dog barking", "that is three knocks"."""
    if self.count is None:
      return worlds.heard_message(self.label)
    return f"that is {worlds.count_phrase(self.count, self.label)}"


def _names(label: str) -> list[tuple[str, bool]]:
  """(words, counted) a sentence may call `label` by: its spoken name with and without
  the article, its label's words ("dog bark"), and, counted, its noun and plural."""
  info = worlds.sound_info(label)
  names = [(normalize_text(info.name), False), (worlds.sound_name_words(label), False),
           (normalize_text(label), False)]
  if info.noun is not None:
    names += [(info.noun, True), (info.plural, True)]
  return [(name, counted) for name, counted in names if name]


_NAMES: Final[tuple[tuple[str, str, bool], ...]] = tuple(
    (name, label, counted) for label in worlds.SOUNDS for name, counted in _names(label))


def parse_watch(instruction: str) -> WatchRequest | None:
  """The sound an instruction asks to be told about, or None.

  The words after "when you hear" / "when you have heard" (also "whenever", "once",
  "if") are matched against every class's names (`_names`); a name inside a longer
  one found there does not count ("alarm" in "a smoke alarm"); a number word right
  before a countable name asks for that many ("three doorbell rings"). None when no
  class is named, when two are ("rain or music": one watch per row), or when the
  words asked for are a word ("when you hear the word ...": a keyword, not a sound).
  """
  asked = _ASKS_FOR.search(normalize_text(instruction))
  if asked is None or asked.group("what").startswith("the word "):
    return None
  what = f" {asked.group('what')} "
  found: list[tuple[int, int, str, int | None]] = []  # (start, end, label, count)
  for name, label, counted in _NAMES:
    at = what.find(f" {name} ")
    if at < 0:
      continue
    count = None
    if counted:
      before = what[:at].split()
      count = _NUMBERS.get(before[-1]) if before else None
      if count is None:
        continue
    found.append((at, at + len(name) + 1, label, count))
  outermost = [(label, count) for start, end, label, count in found
               if not any(s <= start and end <= e and (s, e) != (start, end)
                          for s, e, _, _ in found)]
  labels = {label for label, _ in outermost}
  if len(labels) != 1:
    return None
  return WatchRequest(*max(outermost, key=lambda found: found[1] or 0))


class SoundWatches:
  """Each row's watch (module docstring), updated chunk by chunk.

  Attributes:
    threshold: a class's probability that counts as heard.
    chunks: chunks it must be heard for running to start a sound.
    gap_chunks: chunks unheard that end a sound.
    hold_chunks: chunks a "tell me when" class must go unheard before it is answered
      again.
  """

  def __init__(self, *, threshold: float, chunks: int, gap_chunks: int, hold_chunks: int,
               encode: Callable[[str], list[int]], decode: Callable[[Sequence[int]], str]):
    if not 0.0 < threshold <= 1.0:
      raise ValueError(f"sound watch threshold must be in (0, 1], got {threshold}")
    if chunks < 1 or gap_chunks < 1 or hold_chunks < 0:
      raise ValueError(f"sound watches need chunks >= 1, gap_chunks >= 1 and hold_chunks "
                       f">= 0, got {chunks}, {gap_chunks} and {hold_chunks}")
    self.threshold, self.chunks = threshold, chunks
    self.gap_chunks, self.hold_chunks = gap_chunks, hold_chunks
    self.encode, self.decode = encode, decode
    self.start(0)

  def start(self, rows: int) -> None:
    """`rows` rows, none watching."""
    self.requests: list[WatchRequest | None] = [None] * rows
    self._class = np.zeros(rows, np.int64)
    self._replies: list[list[int]] = [[] for _ in range(rows)]
    self._streak = np.zeros(rows, np.int64)  # chunks heard running
    self._unheard = np.zeros(rows, np.int64)  # chunks unheard running
    self._in_sound = np.zeros(rows, bool)
    self._sounds = np.zeros(rows, np.int64)  # sounds heard since the instruction
    self._armed = np.zeros(rows, bool)  # a "tell me when" row may answer its next sound
    self._due = np.zeros(rows, bool)  # an answer waits for the row to be free

  def set_instruction(self, row: int, instruction_ids: Sequence[int]) -> WatchRequest | None:
    """The row's instruction is now `instruction_ids`: its watch starts afresh (None:
    the instruction asks for no sound). Returns the request."""
    request = parse_watch(self.decode(list(instruction_ids)))
    self._watch(row, request)
    return request

  def heard_reply(self, row: int, reply_ids: Sequence[int]) -> WatchRequest | None:
    """The model's own reply `reply_ids` ended in `row`: when it says what it will
    listen for ("ok, i will listen for rain"), the row watches that from now on.
    Returns the new request, or None (the watch is unchanged)."""
    request = parse_watch(self.decode(list(reply_ids)))
    if request is not None:
      self._watch(row, request)
    return request

  def _watch(self, row: int, request: WatchRequest | None) -> None:
    self.requests[row] = request
    self._class[row] = 0 if request is None else worlds.SOUND_EVENT_LABELS.index(request.label)
    self._replies[row] = [] if request is None else list(self.encode(request.reply)) + [sf.EOR_ID]
    self._streak[row] = self._unheard[row] = self._sounds[row] = 0
    self._in_sound[row] = self._due[row] = False
    self._armed[row] = True

  def watching(self, row: int) -> bool:
    return self.requests[row] is not None

  def fire(self, probabilities: np.ndarray, rows: Sequence[int], free: np.ndarray
           ) -> dict[int, tuple[str, list[int]]]:
    """Updates the watching ones of `rows` with this chunk's head probabilities.

    Args:
      probabilities: [B, K] the head's class probabilities of each row's chunk.
      rows: the rows that perceived a chunk now (the others keep their history).
      free: [B] bool, the row may start an answer now (it is not saying one).
    Returns:
      {row: (watched label, the answer's token ids, `<eor>` last)} of the rows that
      answer now.
    """
    rows = np.asarray([row for row in rows if self.requests[row] is not None], np.int64)
    if not len(rows):
      return {}
    if probabilities.shape[1] == 0:
      raise ValueError("sound watches need a model with a sound-event head "
                       "(model.sound_event_classes > 0)")
    heard = probabilities[rows, self._class[rows]] >= self.threshold
    self._streak[rows] = streak = np.where(heard, self._streak[rows] + 1, 0)
    self._unheard[rows] = unheard = np.where(heard, 0, self._unheard[rows] + 1)
    counting = np.array([self.requests[row].count is not None for row in rows])
    self._armed[rows] |= ~counting & (unheard >= max(self.hold_chunks, 1))
    self._in_sound[rows] &= unheard < self.gap_chunks
    begins = ~self._in_sound[rows] & (streak >= self.chunks)
    self._in_sound[rows] |= begins
    self._sounds[rows] += begins
    targets = np.array([self.requests[row].count or 0 for row in rows])
    self._due[rows] |= np.where(counting, begins & (self._sounds[rows] == targets),
                                begins & self._armed[rows])
    self._armed[rows] &= ~(begins & ~counting)
    answering = rows[self._due[rows] & free[rows]]
    self._due[answering] = False
    return {int(row): (self.requests[row].label, list(self._replies[row]))
            for row in answering}


def sound_watches(infer: ml_collections.ConfigDict, encode: Callable[[str], list[int]],
                  decode: Callable[[Sequence[int]], str], *, chunk_seconds: float,
                  sound_event_classes: int) -> SoundWatches | None:
  """The watches a config's `infer` block asks for (`infer.sound_watch_threshold` > 0),
  None when they are off (or the block predates them).

  Args:
    encode, decode: the tokenizer's (the answers' ids; the instructions' text).
    sound_event_classes: the model's head size (0: no head; an error when watches are on).
  """
  if not infer.get("sound_watch_threshold", 0.0):
    return None
  if not sound_event_classes:
    raise ValueError(f"infer.sound_watch_threshold={infer.sound_watch_threshold} reads the "
                     f"sound-event head, and this model has none (model.sound_event_classes=0)")
  return SoundWatches(threshold=float(infer.sound_watch_threshold),
                      chunks=int(infer.sound_watch_chunks),
                      gap_chunks=max(1, int(round(infer.sound_watch_gap_seconds / chunk_seconds))),
                      hold_chunks=int(round(infer.sound_watch_hold_seconds / chunk_seconds)),
                      encode=encode, decode=decode)
