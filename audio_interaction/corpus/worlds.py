"""Closed answer worlds: every expected reply in the corpus comes from here and is checkable.

A small model trained on a CPU can be scored exactly only if the right answer is
unambiguous, so replies are drawn from closed worlds:

* arithmetic ("what is seven plus five" -> "twelve"), with chained follow-ups;
* a fact table shipped as data (`facts.json`: capitals, colors, animal sounds, ...);
* device commands with fixed confirmations ("turn on the kitchen light" ->
  "ok, kitchen light on");
* long replies (counting) for barge-in and backchannel streams;
* sound names, alert messages, scene questions and counts for sound events.

All texts are already in `tokenizer.normalize_text` form except for the comma of
device confirmations (normalization drops it when scoring).

Train/held-out splits are by a deterministic hash of each item's `key` (never
Python's salted `hash`), so an item is in the same split on every machine.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import pathlib
from collections.abc import Sequence
from typing import Final

import numpy as np

from audio_interaction.data.tokenizer import Tokenizer, normalize_text, number_to_words

TRAIN: Final[str] = "train"
HELDOUT: Final[str] = "heldout"
SPLITS: Final[tuple[str, ...]] = (TRAIN, HELDOUT)
DEFAULT_HELDOUT_FRACTION: Final[float] = 0.15

_FACTS_FILE = pathlib.Path(__file__).with_name("facts.json")


@dataclasses.dataclass(frozen=True)
class Item:
  """One question of a closed world and its one correct reply.

  `key` names the underlying fact (phrasings of the same fact share it, so they fall
  in the same split). `value` is the integer result of arithmetic items (for chained
  follow-ups); `relation`/`subject` identify facts (for follow-ups of the same kind).
  """

  world: str
  key: str
  question: str
  answer: str
  value: int | None = None
  relation: str | None = None
  subject: str | None = None


def split_of(key: str, heldout_fraction: float = DEFAULT_HELDOUT_FRACTION) -> str:
  """`HELDOUT` for a stable `heldout_fraction` of keys, else `TRAIN`."""
  digest = hashlib.sha256(key.encode("utf-8")).digest()
  unit = int.from_bytes(digest[:8], "big") / 2.0**64
  return HELDOUT if unit < heldout_fraction else TRAIN


def in_split(items: Sequence[Item], split: str | None,
             heldout_fraction: float = DEFAULT_HELDOUT_FRACTION) -> list[Item]:
  """The items of `split` (all of them for `split=None`)."""
  if split is not None and split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
  return [it for it in items if split is None or split_of(it.key, heldout_fraction) == split]


def choose(rng: np.random.Generator, options: Sequence):
  """A uniformly chosen element (keeps Python objects intact, unlike `rng.choice`)."""
  if not options:
    raise ValueError("nothing to choose from")
  return options[int(rng.integers(len(options)))]


# ------------------------------------------------------------------------ arithmetic

@functools.cache
def arithmetic_items() -> tuple[Item, ...]:
  """`a plus b` (0..12), `a minus b` (non-negative), `a times b` (0..10)."""
  items = []
  for a in range(13):
    for b in range(13):
      cases = [("plus", a + b)]
      if a >= b:
        cases.append(("minus", a - b))
      if a <= 10 and b <= 10:
        cases.append(("times", a * b))
      for op, value in cases:
        items.append(Item(
            world="arithmetic", key=f"arith:{a}:{op}:{b}",
            question=f"what is {number_to_words(a)} {op} {number_to_words(b)}",
            answer=number_to_words(value), value=value))
  return tuple(items)


def arithmetic_followup(value: int, rng: np.random.Generator) -> Item:
  """A chained question about the previous result ("now add four"), answer in 0..100."""
  options = [("add", b, value + b) for b in range(1, 10) if value + b <= 100]
  options += [("subtract", b, value - b) for b in range(1, 10) if b <= value]
  options += [("multiply by", m, value * m) for m in (2, 3) if 0 < value * m <= 100]
  verb, operand, result = choose(rng, options)
  return Item(world="arithmetic", key=f"arith_followup:{verb}:{operand}",
              question=f"now {verb} {number_to_words(operand)}",
              answer=number_to_words(result), value=result)


# ----------------------------------------------------------------------------- facts

@functools.cache
def _fact_table() -> dict:
  return json.loads(_FACTS_FILE.read_text())


@functools.cache
def fact_items() -> tuple[Item, ...]:
  """One item per row of `facts.json`."""
  table = _fact_table()
  items = []
  for row in table["facts"]:
    template = table["relations"][row["relation"]]
    items.append(Item(
        world="facts", key=f"fact:{row['relation']}:{row['subject']}",
        question=template["question"].format(subject=row["subject"]),
        answer=normalize_text(row["answer"]),
        relation=row["relation"], subject=row["subject"]))
  return tuple(items)


def fact_followup(item: Item, rng: np.random.Generator, split: str | None,
                  heldout_fraction: float = DEFAULT_HELDOUT_FRACTION) -> Item:
  """Another fact of the same relation, asked elliptically ("and the capital of spain")."""
  template = _fact_table()["relations"][item.relation]
  def peers(split_: str | None) -> list[Item]:
    return [it for it in in_split(fact_items(), split_, heldout_fraction)
            if it.relation == item.relation and it.subject != item.subject]

  # A small split may have no other fact of the relation; then any fact will do.
  other = choose(rng, peers(split) or peers(None))
  return dataclasses.replace(other, question=template["followup"].format(subject=other.subject))


@functools.cache
def fact_statements() -> tuple[Item, ...]:
  """Declarative sentences of the fact table ("the capital of france is paris")."""
  table = _fact_table()
  return tuple(
      Item(world="statements", key=f"fact:{row['relation']}:{row['subject']}",
           question=table["relations"][row["relation"]]["statement"].format(**row),
           answer="")
      for row in table["facts"])


# --------------------------------------------------------------------------- devices

ROOMS: Final[tuple[str, ...]] = (
    "kitchen", "bedroom", "living room", "bathroom", "hallway", "office", "garage")
DEVICES: Final[tuple[str, ...]] = ("light", "fan", "heater", "radio")
_DEVICE_PHRASINGS: Final[tuple[str, ...]] = (
    "turn {state} the {room} {device}",
    "switch {state} the {room} {device}",
    "please turn the {room} {device} {state}",
)


@functools.cache
def device_items() -> tuple[Item, ...]:
  """Commands with fixed confirmations; the phrasings of one command share its key."""
  return tuple(
      Item(world="devices", key=f"device:{room}:{device}:{state}",
           question=phrasing.format(state=state, room=room, device=device),
           answer=f"ok, {room} {device} {state}", subject=f"{room} {device}")
      for room in ROOMS for device in DEVICES for state in ("on", "off")
      for phrasing in _DEVICE_PHRASINGS)


def device_followup(item: Item, rng: np.random.Generator, split: str | None,
                    heldout_fraction: float = DEFAULT_HELDOUT_FRACTION) -> Item:
  """The same action on another device, asked elliptically ("and the bedroom fan too")."""
  state = item.answer.rsplit(" ", 1)[-1]
  def peers(split_: str | None) -> list[Item]:
    return [it for it in in_split(device_items(), split_, heldout_fraction)
            if it.subject != item.subject and it.answer.endswith(" " + state)]

  other = choose(rng, peers(split) or peers(None))
  return dataclasses.replace(other, question=f"and the {other.subject} too")


# ------------------------------------------------------------------- long replies

@functools.cache
def counting_items() -> tuple[Item, ...]:
  """Questions with long, checkable replies (at least 20 words), for barge-in/backchannel."""
  items = []
  for start in range(1, 11):
    for end in range(start + 19, start + 31):
      words = " ".join(number_to_words(n) for n in range(start, end + 1))
      items.append(Item(
          world="counting", key=f"count:{start}:{end}",
          question=f"count from {number_to_words(start)} to {number_to_words(end)}",
          answer=words))
  return tuple(items)


# ---------------------------------------------------------------------- all worlds

_WORLDS = {
    "arithmetic": arithmetic_items,
    "facts": fact_items,
    "devices": device_items,
    "counting": counting_items,
    "statements": fact_statements,
}
QUESTION_WORLDS: Final[tuple[str, ...]] = ("arithmetic", "facts", "devices")


def items(world: str, split: str | None = None,
          heldout_fraction: float = DEFAULT_HELDOUT_FRACTION) -> list[Item]:
  """All items of `world` in `split` (None: both splits)."""
  if world not in _WORLDS:
    raise KeyError(f"unknown world {world!r}; known: {sorted(_WORLDS)}")
  return in_split(_WORLDS[world](), split, heldout_fraction)


def sample_question(rng: np.random.Generator, split: str | None,
                    worlds: Sequence[str] = QUESTION_WORLDS,
                    heldout_fraction: float = DEFAULT_HELDOUT_FRACTION) -> Item:
  """A question from a uniformly chosen world, then a uniformly chosen item of it."""
  return choose(rng, items(choose(rng, worlds), split, heldout_fraction))


def followup(item: Item, rng: np.random.Generator, split: str | None,
             heldout_fraction: float = DEFAULT_HELDOUT_FRACTION) -> Item:
  """The next turn of a multi-turn chat whose answer depends on `item` (the history)."""
  if item.world == "arithmetic":
    return arithmetic_followup(item.value, rng)
  if item.world == "facts":
    return fact_followup(item, rng, split, heldout_fraction)
  if item.world == "devices":
    return device_followup(item, rng, split, heldout_fraction)
  raise ValueError(f"no follow-ups for world {item.world!r}")


def transcription_sentences(split: str | None,
                            heldout_fraction: float = DEFAULT_HELDOUT_FRACTION) -> list[str]:
  """Sentences to dictate: fact statements, questions and device commands."""
  sources = ("statements", "facts", "devices", "arithmetic")
  return [it.question for world in sources for it in items(world, split, heldout_fraction)]


# ------------------------------------------------------------------------- sounds

@dataclasses.dataclass(frozen=True)
class SoundInfo:
  """How the assistant speaks about one event class.

  `name` answers "what was that sound?"; `noun`/`plural` count discrete events (one
  clip = one counted event; None for classes that are not counted); `alert` is the
  proactive message for classes that need attention; `scene` is (question, yes, no)
  for classes that can form a continuous background.
  """

  name: str
  noun: str | None = None
  plural: str | None = None
  alert: str | None = None
  scene: tuple[str, str, str] | None = None


# The event classes of `sounds.SoundBank` (same names). Only classes where one clip is
# one unambiguous event are countable (a knock clip holds several raps, a bark clip
# several barks, so "three knocks" would be ambiguous).
SOUNDS: Final[dict[str, SoundInfo]] = {
    # Need attention.
    "smoke_alarm": SoundInfo("a smoke alarm", alert="the smoke alarm is going off"),
    "siren": SoundInfo("a siren", alert="there is a siren outside"),
    "alarm_clock": SoundInfo("an alarm clock", alert="your alarm clock is ringing"),
    "doorbell": SoundInfo("a doorbell", "doorbell ring", "doorbell rings",
                          alert="someone rang the doorbell"),
    "knock": SoundInfo("knocking", alert="someone is knocking at the door"),
    "glass_break": SoundInfo("glass breaking", alert="i heard glass breaking"),
    "crash": SoundInfo("a crash", "crash", "crashes", alert="something fell and crashed"),
    "baby_cry": SoundInfo("a baby crying", alert="the baby is crying"),
    "dog_bark": SoundInfo("a dog barking", alert="the dog is barking"),
    "phone_ring": SoundInfo("a phone ringing", "phone call", "phone calls",
                            alert="your phone is ringing"),
    # Benign.
    "rain": SoundInfo("rain", scene=("is it raining", "yes, it is raining",
                                     "no, it is not raining")),
    "music": SoundInfo("music", scene=("is there music playing", "yes, music is playing",
                                       "no, there is no music")),
    "keyboard": SoundInfo("typing on a keyboard", scene=(
        "is someone typing", "yes, someone is typing", "no, nobody is typing")),
    "water": SoundInfo("running water", scene=(
        "is the water running", "yes, the water is running", "no, the water is off")),
    "vacuum_cleaner": SoundInfo("a vacuum cleaner", scene=(
        "is someone vacuuming", "yes, someone is vacuuming", "no, nobody is vacuuming")),
    "clock_tick": SoundInfo("a clock ticking"),
    "bird": SoundInfo("a bird singing"),
    "cat": SoundInfo("a cat meowing"),
    "car": SoundInfo("a car passing", "passing car", "passing cars"),
    "footsteps": SoundInfo("footsteps"),
    "thunder": SoundInfo("thunder", "thunderclap", "thunderclaps"),
    "hammer": SoundInfo("hammering"),
    "notification": SoundInfo("a notification sound", "notification sound",
                              "notification sounds"),
    "farm_animal": SoundInfo("a farm animal"),
    "insect": SoundInfo("an insect buzzing"),
    "fireworks": SoundInfo("fireworks"),
}

# Roles used by the proactive (ability 5) sub-tasks: which classes need attention.
ALARM_LABELS: Final[tuple[str, ...]] = ("smoke_alarm", "siren", "alarm_clock")
DOOR_LABELS: Final[tuple[str, ...]] = ("doorbell", "knock")
BREAKAGE_LABELS: Final[tuple[str, ...]] = ("glass_break", "crash")
BABY_DOG_LABELS: Final[tuple[str, ...]] = ("baby_cry", "dog_bark")
ALERT_LABELS: Final[tuple[str, ...]] = (
    ALARM_LABELS + DOOR_LABELS + BREAKAGE_LABELS + BABY_DOG_LABELS + ("phone_ring",))
BENIGN_LABELS: Final[tuple[str, ...]] = tuple(x for x in SOUNDS if x not in ALERT_LABELS)
# The sound-event head's classes by id (the corpus's `sound_events` values): id 0
# (`stream_format.NO_SOUND_EVENT`) is no labelled sound, id i >= 1 the (i-1)-th of `SOUNDS`.
SOUND_EVENT_LABELS: Final[tuple[str | None, ...]] = (None, *SOUNDS)
# Continuous sounds that can lie under a whole stream (and be asked about as a scene).
BACKGROUND_LABELS: Final[tuple[str, ...]] = ("rain", "music", "keyboard", "water",
                                             "vacuum_cleaner")


def sound_info(label: str) -> SoundInfo:
  """How to speak about `label`; unknown classes get their label as a name."""
  return SOUNDS.get(label, SoundInfo(normalize_text(label)))


def sound_name(label: str) -> str:
  """"dog_bark" -> "a dog barking"."""
  return sound_info(label).name


# Words that name no sound: "a clock ticking" is spoken of as "clock ticking".
ARTICLES: Final[frozenset[str]] = frozenset({"a", "an", "the"})


def sound_name_words(label: str | None) -> str:
  """A class label -> the content words of its name ("dog_bark" -> "dog barking");
  "" for `None`, the "no labelled sound" class."""
  if label is None:
    return ""
  return " ".join(w for w in sound_name(label).split() if w not in ARTICLES)


def sound_name_tokens(tokenizer: Tokenizer) -> tuple[tuple[int, ...], ...]:
  """One tuple of `tokenizer` ids per sound-event class (`SOUND_EVENT_LABELS` order,
  () for "no sound"): the words a model fed the names (`model.sound_event_feed_names`)
  hears and a reply biased towards heard sounds (`infer.sound_name_bias`) says."""
  return tuple(tuple(tokenizer.encode(sound_name_words(label))) if label is not None else ()
               for label in SOUND_EVENT_LABELS)


def sound_name_phrase_tokens(tokenizer: Tokenizer) -> tuple[tuple[int, ...], ...]:
  """As `sound_name_tokens`, the whole name as a reply says it after its article
  ("typing on a keyboard", "alarm clock"): what `infer.sound_name_whole` biases."""
  def phrase(label: str) -> str:
    first, _, rest = sound_name(label).partition(" ")
    return rest if first in ARTICLES and rest else sound_name(label)
  return tuple(tuple(tokenizer.encode(phrase(label))) if label is not None else ()
               for label in SOUND_EVENT_LABELS)


def alert_message(label: str) -> str:
  info = sound_info(label)
  if info.alert is None:
    raise ValueError(f"{label!r} is not a class that needs attention")
  return info.alert


def listen_instruction(label: str) -> str:
  """The instruction that asks to be told of `label`: "Tell me when you hear a dog
  barking."."""
  return f"Tell me when you hear {sound_name(label)}."


def heard_message(label: str) -> str:
  """What a model says when it hears a sound it was asked to listen for: "i hear a dog
  barking"."""
  return f"i hear {sound_name(label)}"


def countable(label: str) -> bool:
  return sound_info(label).noun is not None


def count_phrase(n: int, label: str) -> str:
  """3, "knock" -> "three knocks"."""
  info = sound_info(label)
  if info.noun is None:
    raise ValueError(f"{label!r} is not a countable class")
  return f"{number_to_words(n)} {info.noun if n == 1 else info.plural}"


def seconds_ago(seconds: int) -> str:
  """Answer to "how long ago ...": whole seconds, in words."""
  unit = "second" if seconds == 1 else "seconds"
  return f"about {number_to_words(seconds)} {unit} ago"


def list_sounds(labels: Sequence[str]) -> str:
  """Names in order of occurrence: "a dog barking, then a doorbell"."""
  return ", then ".join(sound_name(label) for label in labels)


# --------------------------------------------------------------------- vocabulary

FILLERS: Final[tuple[str, ...]] = ("um", "uh", "er", "hmm")
BACKCHANNELS: Final[tuple[str, ...]] = ("uh huh", "mm hmm", "right", "okay", "yeah")
STOP_PHRASES: Final[tuple[str, ...]] = ("stop", "okay stop", "wait", "that's enough",
                                        "never mind")
WAKE_WORDS: Final[tuple[str, ...]] = ("computer", "assistant")
BYSTANDER_NAMES: Final[tuple[str, ...]] = ("tom", "anna", "maria", "sam", "lucy")
CUE_WORDS: Final[tuple[str, ...]] = ("report", "summary", "recap")
# Words after which an utterance cannot be over: a pause there is mid-utterance.
DANGLING_WORDS: Final[frozenset[str]] = frozenset({
    "what", "is", "the", "a", "an", "of", "plus", "minus", "times", "does", "color",
    "turn", "switch", "on", "off", "and", "to", "from", "how", "many", "sound", "please",
    "capital", "opposite", "legs", "count", "now", "add", "subtract", "by", "multiply"})
STOPWORDS: Final[frozenset[str]] = DANGLING_WORDS | {"has", "have", "says", "say", "make",
                                                      "too", "it", "are", "was"}


def all_texts() -> list[str]:
  """Every text the worlds can put into a stream (for training a tokenizer)."""
  texts: list[str] = []
  for world in _WORLDS:
    for it in items(world):
      texts += [it.question, it.answer]
  for label, info in SOUNDS.items():
    texts.append(info.name)
    texts += [t for t in (info.alert, info.plural) if t]
    texts += list(info.scene or ())
    if info.noun:
      texts += [count_phrase(n, label) for n in range(1, 6)]
  texts += [seconds_ago(s) for s in range(1, 31)]
  texts += list(FILLERS + BACKCHANNELS + STOP_PHRASES + WAKE_WORDS + BYSTANDER_NAMES
                + CUE_WORDS)
  return [t for t in texts if t]
