"""What an instruction asks to be told, watched by the model's heads.

The corpus's instruction-following sub-tasks ask for things a head hears better than the
decoder decides them on real audio: "Tell me when you hear a dog barking.", "Tell me when
you have heard three crashes." (`follow_sound_class`, `follow_count`: the sound-event
head), 'Whenever you hear the word "seven", say "heard seven".' and 'When I say
"report", list the sounds you heard, in order.' (`follow_keyword`,
`follow_summary_cue`: the encoder's CTC transcript, and for the list the head). The
decoder is trained to answer them, but its decision comes from its own training world.
A row whose instruction asks for one of these (`parse_watch`) has it watched chunk by
chunk:

- a *sound* of a class starts when the head gives it probability >= `threshold` for
  `chunks` chunks running, and ends after `gap_chunks` chunks unheard (one doorbell is
  one sound, three crashes a third of a second apart three; `SoundTracker`, which the
  offline questions of `clip_questions` count with too);
- "tell me when you hear X": each sound of X is answered "i hear X"
  (`worlds.heard_message`), and X is not answered again until it has gone unheard for
  `hold_chunks` (a dog barking for a minute is one answer);
- "tell me when you have heard N Xs": the N-th sound of X is answered "that is N Xs"
  (`worlds.count_phrase`), once;
- with `words` on, "whenever you hear the word W": W in the streaming CTC transcript is
  answered with what the instruction says to say ("heard W"), each time it is heard,
  once it is whole (the transcript goes on with another word, or adds nothing for
  `pause_chunks`: the CTC head writes a word before its last sound);
- with `words` on, "when I say C, list the sounds you heard": C in the transcript is
  answered, once the transcript pauses after it, with every class heard since the
  start, or since the last list (in `LISTED_AFTER_CHUNKS` chunks, running or not), in
  the order they were heard, each once ("a dog barking, then a doorbell",
  `worlds.list_sounds`).

A watched row follows its instruction, not the alert rule: its alerts for other sounds
are off, as the corpus's streams under such an instruction keep quiet over every other
sound. A new instruction (`set_instruction`: a stream starting in the row, or a typed
instruction change) replaces the watch, or ends it when it asks for nothing watched. A
change asked for by voice ("from now on, tell me when you hear rain instead") reaches no
instruction text: with `words` on, the transcript's "tell me when you hear X" moves a
sound watch to X, and so does the model's own reply saying what it will listen for
("ok, i will listen for rain", the corpus's answer to such a change; `heard_reply`):
the head keeps the decoder's word. Off, neither moves it: a decoder that says "ok, i
will listen for ..." unasked (the real-audio one does, on real recordings) cannot move
a watch the user set.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from typing import Any, Final

import ml_collections
import numpy as np

from audio_interaction import config_lib
from audio_interaction import stream_format as sf
from audio_interaction.corpus import worlds
from audio_interaction.data.tokenizer import normalize_text, number_to_words

# The `infer` keys of the watches (`instruction_watches` reads them).
WATCH_KEYS: Final[tuple[str, ...]] = ("sound_watch_threshold", "sound_watch_chunks",
                                      "sound_watch_gap_seconds", "sound_watch_hold_seconds",
                                      "word_watch", "word_watch_pause_seconds")

SOUND, COUNT, WORD, SUMMARY = "sound", "count", "word", "summary"

# "... when you hear X", "... once you have heard X", "... if you hear X", and the
# model's own "ok, i will listen for X" (normalized text).
_ASKS_FOR = re.compile(r"(?:\b(?:when|whenever|once|if)\s+(?:you\s+)?(?:hear|have\s+heard)"
                       r"|\blisten\s+for)\s+(?P<what>.+)$")
# 'whenever you hear the word "seven", say "heard seven"' (normalized: no quotes).
_ASKS_FOR_WORD = re.compile(r"\bhear\s+the\s+word\s+(?P<word>\S+)(?:\s+say\s+(?P<say>.+))?$")
# 'when I say "report", list the sounds you heard' (normalized).
_ASKS_FOR_LIST = re.compile(r"\bwhen\s+i\s+say\s+(?P<cue>.+?)\s+list\s+the\s+sounds\b")
_NUMBERS: Final[dict[str, int]] = {number_to_words(n): n for n in range(1, 100)}
_COLUMNS: Final[dict[str | None, int]] = {label: i for i, label in
                                          enumerate(worlds.SOUND_EVENT_LABELS)}
# Transcript tokens kept per row for finding a word or a spoken request in.
_TRANSCRIPT_TOKENS: Final[int] = 48
# Chunks, running or not, a class must be heard in to join the list of sounds heard: a
# list names footsteps and a ticking clock, which the head hears stroke by stroke, not
# for `chunks` chunks running.
LISTED_AFTER_CHUNKS: Final[int] = 2
# Today's settings, for a bundle saved before a key existed (in eval as in listen).
_DEFAULTS: Final[ml_collections.ConfigDict] = config_lib.base_config().infer


@dataclasses.dataclass(frozen=True)
class WatchRequest:
  """What an instruction asks to be told (module docstring).

  Attributes:
    kind: SOUND, COUNT, WORD or SUMMARY.
    label: the `worlds.SOUNDS` class (SOUND, COUNT).
    count: how many sounds of it (COUNT).
    word: the word (WORD) or the cue (SUMMARY), normalized.
    say: what to answer the word with (WORD; default "heard <word>").
  """

  kind: str
  label: str | None = None
  count: int | None = None
  word: str | None = None
  say: str | None = None

  @property
  def column(self) -> int:
    """The label's column of the sound-event head's probabilities."""
    return class_column(self.label)

  @property
  def reply(self) -> str:
    """The answer's words ("i hear a dog barking", "that is three crashes", "heard
    seven"); a SUMMARY's depend on the sounds heard (`worlds.list_sounds`)."""
    if self.kind == SOUND:
      return worlds.heard_message(self.label)
    if self.kind == COUNT:
      return f"that is {worlds.count_phrase(self.count, self.label)}"
    if self.kind == WORD:
      return self.say or f"heard {self.word}"
    raise ValueError("a summary's answer is the sounds heard: worlds.list_sounds")


def class_column(label: str) -> int:
  """`label`'s column of the sound-event head's probabilities (one table, no search)."""
  return _COLUMNS[label]


def _head_word(label: str) -> str:
  """What a user calls the thing that sounds ("the phone", "the dog", "the baby"): the
  first word of a two-word label, unless another label has it too ("alarm": an alarm
  clock, or a smoke alarm?); "" for one-word labels (their label is their name)."""
  words = label.split("_")
  if len(words) < 2 or any(words[0] in other.split("_") for other in worlds.SOUNDS
                           if other != label):
    return ""
  return words[0]


def _names(label: str) -> list[tuple[str, bool]]:
  """(words, counted) a sentence may call `label` by: its spoken name with and without
  the article, its label's words ("dog bark"), what sounds ("phone": `_head_word`), and,
  counted, its noun and plural."""
  info = worlds.sound_info(label)
  names = [(normalize_text(info.name), False), (worlds.sound_name_words(label), False),
           (normalize_text(label), False), (_head_word(label), False)]
  if info.noun is not None:
    names += [(info.noun, True), (info.plural, True)]
  return [(name, counted) for name, counted in names if name]


_NAMES: Final[tuple[tuple[str, str, bool], ...]] = tuple(
    (name, label, counted) for label in worlds.SOUNDS for name, counted in _names(label))


def parse_watch(instruction: str) -> WatchRequest | None:
  """What an instruction asks to be told, or None.

  A word: "whenever you hear the word W[, say S]". A list: "when I say C, list the
  sounds you heard". A sound: the words after "when you hear" / "when you have heard"
  (also "whenever", "once", "if", "listen for") matched against every class's names
  (`_names`); a name inside a longer one found there does not count ("alarm" in "a
  smoke alarm"); a number word right before a countable name asks for that many
  ("three doorbell rings"). None when nothing is asked for, or two classes are ("rain
  or music": one watch per row).
  """
  text = normalize_text(instruction)
  if (word := _ASKS_FOR_WORD.search(text)) is not None:
    return WatchRequest(WORD, word=word.group("word"), say=word.group("say"))
  if (cue := _ASKS_FOR_LIST.search(text)) is not None:
    return WatchRequest(SUMMARY, word=cue.group("cue"))
  asked = _ASKS_FOR.search(text)
  if asked is None:
    return None
  outermost = named_sounds(asked.group("what"))
  if len({label for label, _ in outermost}) != 1:
    return None
  label, count = max(outermost, key=lambda found: found[1] or 0)
  return WatchRequest(SOUND if count is None else COUNT, label, count)


def named_sounds(what: str, counted_alone: bool = False) -> list[tuple[str, int | None]]:
  """(class, count) of every class normalized text `what` names (`_names`), in the order
  of `_NAMES`; a name inside a longer one found there does not count ("alarm" in "a
  smoke alarm"). A countable name counts with the number word right before it ("three
  doorbell rings": 3); without one it names nothing, unless `counted_alone` (count
  None: "how many doorbell rings")."""
  what = f" {what} "
  found: list[tuple[int, int, str, int | None]] = []  # (start, end, label, count)
  for name, label, counted in _NAMES:
    at = what.find(f" {name} ")
    if at < 0:
      continue
    count = None
    if counted:
      before = what[:at].split()
      count = _NUMBERS.get(before[-1]) if before else None
      if count is None and not counted_alone:
        continue
    found.append((at, at + len(name) + 1, label, count))
  return [(label, count) for start, end, label, count in found
          if not any(s <= start and end <= e and (s, e) != (start, end)
                     for s, e, _, _ in found)]


class SoundTracker:
  """Sounds of every class in each row, chunk by chunk: a class heard (probability >=
  `threshold`) for `chunks` chunks running begins a sound, which ends once the class has
  gone unheard for `gap_chunks` chunks ("none" is never heard).

  Attributes:
    unheard: [rows, K] chunks each class has gone unheard, running.
  """

  def __init__(self, threshold: float, chunks: int, gap_chunks: int):
    self.threshold, self.chunks, self.gap_chunks = threshold, chunks, gap_chunks
    self.start(0)

  def start(self, rows: int) -> None:
    """`rows` rows, no sound heard."""
    classes = len(worlds.SOUND_EVENT_LABELS)
    self._streak = np.zeros((rows, classes), np.int64)  # chunks heard running
    self.unheard = np.zeros((rows, classes), np.int64)
    self._in_sound = np.zeros((rows, classes), bool)

  def hear(self, probabilities: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`rows`' chunk: probabilities [B, K] (rows indexes B) -> (heard, begins), each
    [len(rows), K] bool: the classes heard in the chunk, and those whose sound begins."""
    heard = probabilities[rows] >= self.threshold
    heard[:, sf.NO_SOUND_EVENT] = False
    self._streak[rows] = streak = np.where(heard, self._streak[rows] + 1, 0)
    self.unheard[rows] = unheard = np.where(heard, 0, self.unheard[rows] + 1)
    self._in_sound[rows] &= unheard < self.gap_chunks
    begins = ~self._in_sound[rows] & (streak >= self.chunks)
    self._in_sound[rows] |= begins
    return heard, begins

  def restart(self, row: int, column: int) -> None:
    """A sound of the class running in the row counts as beginning when next heard."""
    self._in_sound[row, column] = False


class InstructionWatches:
  """Each row's watch (module docstring), updated chunk by chunk.

  Attributes:
    threshold: a class's probability that counts as heard (0: no sound-event head is
      read; sounds and lists are not watched).
    chunks: chunks it must be heard for running to start a sound.
    gap_chunks: chunks unheard that end a sound.
    hold_chunks: chunks a "tell me when" class must go unheard before it is answered
      again.
    words: words, cues and spoken requests are watched in the CTC transcript.
    pause_chunks: chunks the transcript must add nothing for, after a watched word or
      cue, before it is answered (a word followed by another is answered at once).
    requests: each row's request (None: nothing watched).
  """

  def __init__(self, *, threshold: float, chunks: int, gap_chunks: int, hold_chunks: int,
               words: bool, encode: Callable[[str], list[int]],
               decode: Callable[[Sequence[int]], str], pause_chunks: int = 1):
    if not 0.0 <= threshold <= 1.0:
      raise ValueError(f"sound watch threshold must be in [0, 1], got {threshold}")
    if chunks < 1 or gap_chunks < 1 or hold_chunks < 0:
      raise ValueError(f"sound watches need chunks >= 1, gap_chunks >= 1 and hold_chunks "
                       f">= 0, got {chunks}, {gap_chunks} and {hold_chunks}")
    if pause_chunks < 1:
      raise ValueError(f"word watches need pause_chunks >= 1, got {pause_chunks}")
    self.threshold, self.chunks = threshold, chunks
    self.gap_chunks, self.hold_chunks = gap_chunks, hold_chunks
    self.words, self.pause_chunks = words, pause_chunks
    self._sounds_heard = SoundTracker(threshold, chunks, gap_chunks)
    self.encode, self.decode = encode, decode
    self.start(0)

  def start(self, rows: int) -> None:
    """`rows` rows, none watching."""
    classes = len(worlds.SOUND_EVENT_LABELS)
    self.requests: list[WatchRequest | None] = [None] * rows
    self._sounds_heard.start(rows)
    self._sounds = np.zeros(rows, np.int64)  # sounds of the asked class since the request
    self._armed = np.zeros(rows, bool)  # a "tell me when" row may answer its next sound
    self._due: list[list[int] | None] = [None] * rows  # an answer waiting for a free row
    self._history: list[list[str]] = [[] for _ in range(rows)]  # classes heard, in order
    self._heard_chunks = np.zeros((rows, classes), np.int64)  # since the last list
    self._transcript: list[list[int]] = [[] for _ in range(rows)]  # not yet acted on
    self._quiet = np.zeros(rows, np.int64)  # chunks the transcript added nothing, running

  def serves(self, request: WatchRequest | None) -> bool:
    """Whether these watches can answer `request`: sounds, counts and lists read the
    sound-event head (`threshold` > 0), words and lists the transcript (`words`)."""
    if request is None:
      return False
    needs_head = request.kind in (SOUND, COUNT, SUMMARY)
    needs_words = request.kind in (WORD, SUMMARY)
    return (bool(self.threshold) or not needs_head) and (self.words or not needs_words)

  def set_instruction(self, row: int, instruction_ids: Sequence[int]) -> WatchRequest | None:
    """The row's instruction is now `instruction_ids`: its watch starts afresh (None:
    the instruction asks for nothing these watches answer). Returns the request."""
    request = parse_watch(self.decode(list(instruction_ids)))
    request = request if self.serves(request) else None
    self._watch(row, request)
    self._history[row] = []
    self._heard_chunks[row] = 0
    return request

  def heard_reply(self, row: int, reply_ids: Sequence[int]) -> WatchRequest | None:
    """The model's own reply `reply_ids` ended in `row`: with `words` on, when it says
    what it will listen for ("ok, i will listen for rain"), the row watches that from
    now on. Returns the new request, or None (the watch is unchanged)."""
    if not self.words:
      return None
    return self._moved_by(row, self.decode(list(reply_ids)))

  def _moved_by(self, row: int, text: str) -> WatchRequest | None:
    """A sound asked for in `text` (a reply, the transcript) moves the row's watch."""
    request = parse_watch(text)
    if (not self.serves(request) or request.kind not in (SOUND, COUNT)
        or request == self.requests[row]):
      return None
    self._watch(row, request)
    return request

  def _watch(self, row: int, request: WatchRequest | None) -> None:
    self.requests[row] = request
    if request is not None and request.label is not None:
      # A sound of the class running when it is asked for counts as beginning now.
      self._sounds_heard.restart(row, request.column)
    self._sounds[row] = 0
    self._armed[row] = True
    self._due[row] = None
    self._transcript[row] = []

  def watching(self, row: int) -> bool:
    return self.requests[row] is not None

  def fire(self, probabilities: np.ndarray, transcript: Sequence[Sequence[int]],
           rows: Sequence[int], free: np.ndarray) -> dict[int, tuple[str, list[int]]]:
    """Updates `rows` with this chunk's head probabilities and transcript tokens.

    Args:
      probabilities: [B, K] the head's class probabilities of each row's chunk (K may be
        0 when no sound is watched).
      transcript: B lists of the CTC transcript's tokens emitted at this chunk.
      rows: the rows that perceived a chunk now (the others keep their history).
      free: [B] bool, the row may start an answer now (it is not saying one).
    Returns:
      {row: (what was watched: a class, the word or the cue; the answer's token ids,
      `<eor>` last)} of the rows that answer now.
    """
    rows = np.asarray(rows, np.int64)
    if self.threshold and len(rows):
      self._hear_sounds(probabilities, rows)
    if self.words:
      for row in rows.tolist():
        self._hear_words(row, transcript[row])
    out = {}
    for row in rows.tolist():
      if self._due[row] is not None and free[row]:
        request = self.requests[row]
        out[row] = (request.label or request.word, self._due[row])
        self._due[row] = None
    return out

  def _hear_sounds(self, probabilities: np.ndarray, rows: np.ndarray) -> None:
    """Sounds of every class, for the rows' sound, count and list requests."""
    if probabilities.shape[1] == 0:
      raise ValueError("sound watches need a model with a sound-event head "
                       "(model.sound_event_classes > 0)")
    heard, begins = self._sounds_heard.hear(probabilities, rows)  # [R, K] each
    unheard = self._sounds_heard.unheard[rows]
    self._heard_chunks[rows] += heard
    listed = heard & (self._heard_chunks[rows] == LISTED_AFTER_CHUNKS)  # [R, K]
    for i, row in enumerate(rows.tolist()):
      request = self.requests[row]
      for class_id in np.flatnonzero(listed[i]).tolist():
        self._history[row].append(worlds.SOUND_EVENT_LABELS[class_id])
      if request is None or request.kind not in (SOUND, COUNT):
        continue
      column = request.column
      if request.kind == SOUND and unheard[i, column] >= max(self.hold_chunks, 1):
        self._armed[row] = True
      if not begins[i, column]:
        continue
      self._sounds[row] += 1
      if request.kind == COUNT and self._sounds[row] == request.count:
        self._due[row] = self._answer(request.reply)
      elif request.kind == SOUND and self._armed[row]:
        self._due[row] = self._answer(request.reply)
        self._armed[row] = False

  def _hear_words(self, row: int, tokens: Sequence[int]) -> None:
    """The row's transcript so far (`tokens`: this chunk's): its word, its cue, or a
    spoken request.

    A word is answered once it is whole: when the transcript goes on with another word,
    or has added nothing for `pause_chunks` chunks (a pause), so "seven" is not
    answered in "seventy", nor while the speaker is still saying it (the CTC head often
    writes a word before its last sound). A cue is answered once the
    transcript has paused as long after it: when the request has ended ("recap
    please").
    """
    added = [int(t) for t in tokens]
    self._quiet[row] = 0 if added else self._quiet[row] + 1
    request = self.requests[row]
    listening_for = request is not None and request.kind in (WORD, SUMMARY)
    if not added and not listening_for:
      return
    kept = (self._transcript[row] + added)[-_TRANSCRIPT_TOKENS:]
    self._transcript[row] = kept
    text = normalize_text(self.decode(kept))
    if listening_for:
      words, wanted = text.split(), request.word.split()
      ends = [i + len(wanted) for i in range(len(words) - len(wanted) + 1)
              if words[i:i + len(wanted)] == wanted]
      followed = bool(ends) and request.kind == WORD and ends[0] < len(words)
      if not ends or not (followed or self._quiet[row] >= self.pause_chunks):
        return
      self._transcript[row] = []
      if request.kind == WORD:
        self._due[row] = self._answer(request.reply)
      elif self._history[row]:
        self._due[row] = self._answer(worlds.list_sounds(self._history[row]))
        self._history[row] = []
        self._heard_chunks[row] = 0
      return
    if self._moved_by(row, text) is not None:
      self._transcript[row] = []

  def _answer(self, text: str) -> list[int]:
    return list(self.encode(text)) + [sf.EOR_ID]


def sound_settings(infer: ml_collections.ConfigDict, chunk_seconds: float) -> dict[str, Any]:
  """What a *sound* is under a config's `infer` block, in chunks: `SoundTracker`'s
  {"threshold", "chunks", "gap_chunks"} from `infer.sound_watch_threshold`,
  `sound_watch_chunks` and `sound_watch_gap_seconds` (today's defaults where the block
  predates them); the watches' and the clip questions' (`clip_questions.clip_answers`)
  alike."""
  threshold, chunks, gap_seconds = (infer.get(key, _DEFAULTS[key]) for key in (
      "sound_watch_threshold", "sound_watch_chunks", "sound_watch_gap_seconds"))
  return {"threshold": float(threshold), "chunks": int(chunks),
          "gap_chunks": max(1, int(round(gap_seconds / chunk_seconds)))}


def instruction_watches(infer: ml_collections.ConfigDict, encode: Callable[[str], list[int]],
                        decode: Callable[[Sequence[int]], str], *, chunk_seconds: float,
                        sound_event_classes: int) -> InstructionWatches | None:
  """The watches a config's `infer` block asks for (`infer.sound_watch_threshold` > 0:
  sounds, counts and lists; `infer.word_watch`: words, cues and spoken requests), None
  when both are off (or the block predates them).

  Args:
    encode, decode: the tokenizer's (the answers' ids; the instructions' text).
    sound_event_classes: the model's head size (0: no head; an error when sounds are
      watched).
  """
  sound = sound_settings(infer, chunk_seconds)
  words = bool(infer.get("word_watch", False))
  if not sound["threshold"] and not words:
    return None
  if sound["threshold"] and not sound_event_classes:
    raise ValueError(f"infer.sound_watch_threshold={sound['threshold']} reads the "
                     f"sound-event head, and this model has none (model.sound_event_classes=0)")
  return InstructionWatches(
      **sound, hold_chunks=int(round(infer.sound_watch_hold_seconds / chunk_seconds)),
      words=words, encode=encode, decode=decode,
      pause_chunks=max(1, int(round(infer.get("word_watch_pause_seconds",
                                              _DEFAULTS.word_watch_pause_seconds)
                                    / chunk_seconds))))
