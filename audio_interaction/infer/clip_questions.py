"""Questions about a clip's sounds, answered by the model's sound-event head.

The offline sound tasks ask what a head hears better than the decoder answers it: on the
real DEV sounds the real-audio bundle's decoder names 32 of 100 ("What sound is this?",
its answers biased towards the head's names), where the head's own name of the clip is
right for 46. With `infer.sound_questions` on, a question these answers cover
(`parse_clip_question`) is answered from the head's probabilities over the clip, any
other by the decoder; a sound is what the instruction watch calls one
(`infer.sound_watch_threshold`, `sound_watch_chunks`, `sound_watch_gap_seconds`):

- "What sound is this?", "Name the sound in the clip." (also "What's that noise?", "What
  can you hear?"): the class of the highest mean probability over the clip, never
  "none" (`sound_naming.rank_sounds`: what `name-sound` says);
- "How many doorbell rings are in the clip?" ("How many times did the dog bark?"): the
  sounds of that class, as a number word;
- "Is there a dog barking in the clip? Answer yes or no." ("Did the dog bark?", "Is the
  phone ringing?"): "yes" when the class is heard in the clip (in `LISTED_AFTER_CHUNKS`
  chunks, running or not, as a watched list hears it);
- "Which sound comes first in the clip?" (or last): of the classes heard in the clip,
  the first to be, or the last one heard (the clip's name when none is).

The answers are the corpus's words for them (`worlds.sound_name`, number words, yes/no),
so the suites score them as they score the decoder's.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Final

import numpy as np

from audio_interaction.corpus import worlds
from audio_interaction.data.tokenizer import Tokenizer, normalize_text, number_to_words
from audio_interaction.infer.engine import Engine
from audio_interaction.infer.instruction_watch import (LISTED_AFTER_CHUNKS, SoundTracker,
                                                       class_column, named_sounds,
                                                       sound_settings)
from audio_interaction.infer.sound_naming import chunk_probabilities, rank_sounds
from audio_interaction.model.model import Params

NAME, COUNT, PRESENCE, ORDER = "name", "count", "presence", "order"

# Normalized questions (no punctuation, lower case): the corpus's, and how people ask.
_NAME = re.compile(r"^(?:what sound is (?:this|that|it|in the clip)|name the sound(?: in the "
                   r"clip)?|what is (?:this|that) (?:sound|noise)|what'?s (?:this|that)(?: sound|"
                   r" noise)?|what (?:sound|noise) (?:is|was) (?:this|that)|what was that"
                   r"(?: sound| noise)?|what (?:do|can) you hear(?: in the clip)?)$")
_COUNT = re.compile(r"^how many (?:times )?(?P<what>.+?)(?: are| were| do you hear| did you hear)?"
                    r"(?: in the clip)?$")
_PRESENCE = re.compile(r"^(?:is there|are there|was there|were there|do you hear|did you hear|"
                       r"can you hear|is|was|did) (?P<what>.+?)(?: in the clip)?"
                       r"(?: answer yes or no)?$")
_ORDER = re.compile(r"^which sound (?:comes|came) (?P<which>first|last)(?: in the clip)?$")


@dataclasses.dataclass(frozen=True)
class ClipQuestion:
  """What a question asks about a clip's sounds.

  Attributes:
    kind: NAME, COUNT, PRESENCE or ORDER.
    label: the `worlds.SOUNDS` class asked about (COUNT, PRESENCE).
    which: "first" or "last" (ORDER).
  """

  kind: str
  label: str | None = None
  which: str | None = None


def parse_clip_question(question: str) -> ClipQuestion | None:
  """The question's `ClipQuestion`, or None (not one the head answers: a transcript, a
  question about two classes or none of ours). A class is found by the names the
  instruction watches read (`instruction_watch.named_sounds`): "doorbell rings", "the
  dog", "a smoke alarm"."""
  text = normalize_text(question)
  if _NAME.search(text):
    return ClipQuestion(NAME)
  if (order := _ORDER.search(text)) is not None:
    return ClipQuestion(ORDER, which=order.group("which"))
  for kind, pattern in ((COUNT, _COUNT), (PRESENCE, _PRESENCE)):
    asked = pattern.search(text)
    if asked is None:
      continue
    labels = {label for label, _ in named_sounds(asked.group("what"), counted_alone=True)}
    return ClipQuestion(kind, labels.pop()) if len(labels) == 1 else None
  return None


@dataclasses.dataclass(frozen=True)
class ClipAnswers:
  """Answers `ClipQuestion`s from a clip's sound-event head probabilities, a sound being
  what the sound watch calls one (`instruction_watch.SoundTracker`: heard with
  probability >= `threshold` for `chunks` chunks running, over after `gap_chunks`
  unheard), and a class being in the clip when heard in `LISTED_AFTER_CHUNKS` chunks,
  running or not (as a watched list counts it: footsteps are heard step by step).
  """

  threshold: float
  chunks: int
  gap_chunks: int

  def __post_init__(self):
    if not 0.0 < self.threshold <= 1.0 or self.chunks < 1 or self.gap_chunks < 1:
      raise ValueError(f"sound questions need 0 < threshold <= 1, chunks >= 1 and "
                       f"gap_chunks >= 1, got {self.threshold}, {self.chunks} and "
                       f"{self.gap_chunks}")

  def answer(self, question: ClipQuestion, logits: np.ndarray) -> str:
    """The answer's words.

    Args:
      question: from `parse_clip_question`.
      logits: [chunks, K] the sound-event head's logits over the clip.
    """
    if question.kind == NAME:
      return worlds.sound_name(rank_sounds(logits, top=1)[0].label)
    tracker = SoundTracker(self.threshold, self.chunks, self.gap_chunks)
    tracker.start(1)
    probabilities = chunk_probabilities(logits)
    heard, begins = zip(*(tracker.hear(probabilities[t:t + 1], np.zeros(1, np.int64))
                          for t in range(len(probabilities))))
    heard, begins = np.concatenate(heard), np.concatenate(begins)  # [chunks, K]
    asked = None if question.label is None else class_column(question.label)
    if question.kind == COUNT:
      return number_to_words(int(begins[:, asked].sum()))
    # When each class has been heard in enough chunks to be in the clip, in order.
    reached = np.cumsum(heard, axis=0) >= LISTED_AFTER_CHUNKS  # [chunks, K]
    present = np.flatnonzero(reached[-1]) if len(reached) else np.zeros(0, np.int64)
    if question.kind == PRESENCE:
      return "yes" if asked in present else "no"
    if question.kind == ORDER:
      if not len(present):  # nothing heard long enough: the clip's likeliest class
        return worlds.sound_name(rank_sounds(logits, top=1)[0].label)
      if question.which == "first":  # the first to be heard enough
        chosen = min(present, key=lambda k: int(np.argmax(reached[:, k])))
      else:  # the last one heard
        chosen = max(present, key=lambda k: int(np.flatnonzero(heard[:, k])[-1]))
      return worlds.sound_name(worlds.SOUND_EVENT_LABELS[chosen])
    raise ValueError(f"unknown question kind {question.kind!r}")


# The `infer` keys of the answers (`clip_answers` reads them; a sound is the watch's).
CLIP_QUESTION_KEYS: Final[tuple[str, ...]] = ("sound_questions",)


def clip_answers(infer, *, chunk_seconds: float, sound_event_classes: int
                 ) -> ClipAnswers | None:
  """The answers a config's `infer` block asks for (`infer.sound_questions`, a sound by
  `infer.sound_watch_threshold`, `sound_watch_chunks` and `sound_watch_gap_seconds`),
  None when off (or the block predates the key).

  Args:
    sound_event_classes: the model's head size (0: no head; an error when the answers
      are on).
  """
  if not infer.get("sound_questions", False):
    return None
  sound = sound_settings(infer, chunk_seconds)
  if not sound["threshold"]:
    raise ValueError("infer.sound_questions answers from what the sound watch hears: set "
                     "infer.sound_watch_threshold > 0 too")
  if not sound_event_classes:
    raise ValueError("infer.sound_questions reads the sound-event head, and this model has "
                     "none (model.sound_event_classes=0)")
  return ClipAnswers(**sound)


def answer_clip(engine: Engine, params: Params, tokenizer: Tokenizer, audio: np.ndarray,
                question: str, *, max_tokens: int, answers: ClipAnswers | None = None,
                head_logits: Callable[[], np.ndarray] | None = None) -> str:
  """The model's answer to `question` about a clip: from the sound-event head when
  `answers` covers it (`parse_clip_question`), else the decoder's (`Engine.answer`).

  Args:
    audio: float32 [n] 16 kHz samples.
    max_tokens: the decoder's longest answer.
    answers, head_logits: the head's answers, and what gives this clip's head logits
      [chunks, K] (`SoundNamer.logits` of the clip; a caller that needs them too can
      pass a cached one): both, or neither (the decoder answers everything).
  """
  asked = parse_clip_question(question) if answers is not None else None
  if asked is not None:
    if head_logits is None:
      raise ValueError("answers from the sound-event head need the clip's head logits")
    return answers.answer(asked, head_logits())
  return tokenizer.decode(engine.answer(params, audio, tokenizer.encode(question),
                                        max_tokens=max_tokens))
