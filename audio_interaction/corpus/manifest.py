"""Real corpora as speech and sound sources: JSONL manifests and TFDS-style examples.

The 28 sub-task builders (`tasks.py`) compose streams from any `SpeechSource` and
`SoundSource`. `ManifestSpeech` and `ManifestSounds` serve real recordings through
those Protocols, so the same builders compose streams from a researcher's corpus:

    report = read_manifest("my_corpus/manifest.jsonl")
    timeline = tasks.build("alert_alarm", seed, ManifestSpeech(report.rows),
                           ManifestSounds(report.rows))

A manifest is one JSON object per line (blank lines are ignored)::

    {"audio": "clips/0001.flac",        # relative to the manifest's folder, or absolute
     "transcript": "what is two plus two",   # optional: what is said
     "words": [["what", 0.31, 0.52], ...],   # optional: exact word times (s, clip start)
     "speaker": "spk17",                # optional: keeps one voice per speaker in a stream
     "label": "smoke_alarm",            # optional: sound event class (`worlds.SOUNDS`)
     "recognisable_after": 0.9,         # optional: s after which the sound can be named
     "reply": "four", "reply_time": 1.2}  # optional: an expected reply and when (s) it is due

A row needs an audio path and a `transcript`/`words`, a `label`, `events` or `turns`.
`reply`/`reply_time` are read, checked and kept on the row for builders of one's own;
the built-in builders take their replies from the closed worlds.

Other formats' field names are read as ours (`TEXT_KEYS`, `AUDIO_KEYS`): `text` and
`sentence` for `transcript`; `audio_filepath` (NeMo) and `path` for `audio`. `id` names
the row; `offset` and `duration` (s) select a segment of the file (NeMo). Keys we do
not know are ignored, counted in `ManifestReport.ignored_keys` and named in one warning
(the row is used). References are normalised by `tokenizer.normalize_text` (tags such
as `<s>`, `</s>`, `[noise]`, `<unk>` dropped; case, punctuation; numbers as words).

Annotated long recordings (docs/manifests.md has the schema with an example)::

    {"audio": "kitchen_20min.flac", "id": "kitchen-1",
     "instruction": "Tell me if anything needs my attention.",   # optional override
     "alert_classes": ["kettle_whistle"],       # optional: this row's own alert classes
     "events": [{"onset": 61.2, "offset": 64.0, "class": "kettle_whistle", "role": "alert"},
                {"onset": 90.0, "offset": 91.5, "class": "dog", "role": "benign"},
                {"onset": 120.3, "offset": 121.0, "class": "speech", "role": "barge_in"}],
     "turns": [{"start": 10.0, "end": 12.4, "reply_expected": true}]}

An event's `role` is one of `ROLES` (alert, benign, addressed_speech,
unaddressed_speech, barge_in). Without a role, a class declared as an alert (the row's
`alert_classes`, or `read_manifest(alert_classes=...)` from a class file,
`read_classes`) is an alert, a class of `worlds.SOUNDS` takes its role from there, and
any other class gets `UNKNOWN_ROLE`: counted in `ManifestReport.unknown_classes`,
warned about, and never scored (not silently benign). A whole-clip `label` must be a
known or declared class (else `unknown_label`). A turn's `reply_expected` defaults to
true.

Word timing. Comprehension-aware labels are only as exact as the word times: a reply
to a question is warranted at the end of its last word. Rows with `words` give exact
times. Rows without them get *approximate* times: the words are laid end to end over
the clip's voiced region (energy-based trim, `effects.trim_silence`), each taking a
share proportional to its length in letters; such clips are `ManifestClip`s with
`approximate_timing=True`. For exact labels, give `words` (e.g. from a forced aligner
such as the Montreal Forced Aligner, or a CTC aligner) or pass
`exact_timing_only=True` to `ManifestSpeech`.

Matching text. `ManifestSpeech.say(text)` serves a row whose transcript equals `text`
after `tokenizer.normalize_text` ("Two plus 2?" == "two plus two"), or raises
`NotInManifest` (a KeyError) naming the text. Builders that split an utterance
(mid-utterance pauses, fillers) ask for the pieces, so those need rows of their own. `utterances()` lists every transcribed row, for builders that can
take any utterance (transcription).

Validation (`read_manifest`, `from_tfds_examples`): every row is checked and decoded
once; a bad row is skipped and counted by reason in `ManifestReport.skipped`, with one
`logging.warning` per reason (its count and the first offending line), or, with
`strict=True`, raises `ManifestError` naming the line and the problem. Reasons:
`bad_encoding` (a line that is not UTF-8), `malformed_json` (not JSON, nested too
deeply, a number too long to read, or not a JSON object), `bad_field`
(wrong type or value, words that do not match the transcript or lie outside the clip),
`unknown_label` (a `label` that is not one of `worlds.SOUNDS`: it would otherwise be
scored as some benign sound), `no_annotation` (neither transcript nor label),
`empty_transcript`, `missing_file`, `corrupt_audio` (undecodable or empty),
`nan_audio` (NaN/Inf samples), `wrong_sample_rate` (only with `resample=False`;
otherwise the audio is resampled and counted in `ManifestReport.resampled`), and
`unmapped_label` (TFDS labels outside a given `label_map`). Audio files are not kept
in memory (a LibriSpeech-sized manifest would not fit): rows reload them on use,
through a small LRU cache. A manifest path that is a directory, missing or unreadable
is a `ManifestError` naming it.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import logging
import math
import os
import pathlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Final

import numpy as np
import soundfile

from audio_interaction.audio import io as audio_io
from audio_interaction.corpus import effects, sounds, worlds
from audio_interaction.stream_format import SAMPLE_RATE
from audio_interaction.corpus.clips import SoundClip, SpeechClip, Word
from audio_interaction.corpus.speech import split_words
from audio_interaction.data.tokenizer import normalize_text

log = logging.getLogger(__name__)

# Field names of other manifest formats, read as ours (the first one present wins; two
# that disagree make a `bad_field`): NeMo's `audio_filepath` and `text`, Common Voice's
# `path` and `sentence`.
TEXT_KEYS: Final[tuple[str, ...]] = ("transcript", "text", "sentence")
# What an annotated event may carry; other keys are ignored (counted, one warning).
EVENT_KEYS: Final[frozenset[str]] = frozenset({"onset", "offset", "class", "role"})
AUDIO_KEYS: Final[tuple[str, ...]] = ("audio", "audio_filepath", "path")
KEYS: Final[frozenset[str]] = frozenset({
    *TEXT_KEYS, *AUDIO_KEYS, "words", "speaker", "label", "recognisable_after", "reply",
    "reply_time", "duration", "id", "offset", "events", "turns", "instruction",
    "alert_classes", "lead_in"})

# Roles of an annotated event (`events`), see the module docstring.
ROLES: Final[tuple[str, ...]] = (
    "alert", "benign", "addressed_speech", "unaddressed_speech", "barge_in")
UNKNOWN_ROLE: Final[str] = "unknown"  # an event whose class is neither declared nor known

# Seconds after a sound's first onset at which a listener can name it, per class: about
# one unit of the sound (a bark, a siren sweep, the second beep of a smoke alarm). The
# recorded classes share `sounds.RECORDING_DELAY_S`; a row's `recognisable_after`
# overrides it.
RECOGNISABLE_AFTER_S: Final[Mapping[str, float]] = {
    **sounds.RECORDING_DELAY_S,
    "smoke_alarm": 1.0, "doorbell": 0.4, "knock": 0.3, "glass_break": 0.2, "crash": 0.2,
    "baby_cry": 0.6, "rain": 1.0, "keyboard": 0.6, "clock_tick": 1.0, "footsteps": 0.8,
}
DEFAULT_RECOGNISABLE_AFTER_S: Final[float] = 0.5

# ESC-50 class names -> our event classes (`worlds.SOUNDS`), for `from_tfds_examples(...,
# label_map=ESC50_LABELS)`. Classes with no counterpart (sneezing, chainsaw, church
# bells, ...) are left out, so their clips are skipped as `unmapped_label`.
ESC50_LABELS: Final[Mapping[str, str]] = {
    "dog": "dog_bark", "cat": "cat", "crying_baby": "baby_cry", "crow": "bird",
    "chirping_birds": "bird", "rooster": "farm_animal", "hen": "farm_animal",
    "pig": "farm_animal", "cow": "farm_animal", "sheep": "farm_animal", "insects": "insect",
    "rain": "rain", "pouring_water": "water", "toilet_flush": "water",
    "thunderstorm": "thunder", "footsteps": "footsteps", "door_wood_knock": "knock",
    "keyboard_typing": "keyboard", "vacuum_cleaner": "vacuum_cleaner",
    "clock_alarm": "alarm_clock", "clock_tick": "clock_tick",
    "glass_breaking": "glass_break", "siren": "siren", "fireworks": "fireworks",
}

_AUDIO_CACHE_CLIPS = 128  # file rows decoded on use; LibriSpeech clips are ~0.5 MB


class ManifestError(ValueError):
  """A bad manifest row in strict mode (the message names the file, the line and the
  problem), or a manifest path that cannot be read (a directory, missing)."""


class NotInManifest(KeyError):
  """No row has the requested transcript or label."""

  def __str__(self) -> str:
    return str(self.args[0])  # KeyError would print the repr, escaping every quote


@dataclasses.dataclass(frozen=True)
class Event:
  """An annotated event inside a recording: [onset, offset) s from the row's start,
  its class, and its role (one of `ROLES`, or `UNKNOWN_ROLE` when no role was given and
  the class is neither a declared alert class nor one of `worlds.SOUNDS`)."""

  onset: float
  offset: float
  label: str
  role: str

  @property
  def duration(self) -> float:
    return self.offset - self.onset


@dataclasses.dataclass(frozen=True)
class Turn:
  """An annotated user turn [start, end) s; `reply_expected`: the assistant should answer
  once it ends (False: speech that must not be answered)."""

  start: float
  end: float
  reply_expected: bool


class _RowProblem(Exception):
  """Why one row cannot be used: `reason` (a `ManifestReport.skipped` key) and details."""

  def __init__(self, reason: str, message: str):
    super().__init__(message)
    self.reason = reason


# ------------------------------------------------------------------------------ rows

@functools.lru_cache(maxsize=_AUDIO_CACHE_CLIPS)
def _load_file(path: str, sample_rate: int) -> np.ndarray:
  audio = audio_io.load_audio(path, sample_rate, resample=True)
  audio.setflags(write=False)  # shared by every clip drawn from the cache
  return audio


@dataclasses.dataclass(frozen=True, eq=False)
class ManifestRow:
  """One validated recording.

  `source` is the audio file's path, or "<name>:<index>" for in-memory examples
  (whose samples are in `audio`; file rows have `audio` None and load on use).
  `where` locates the row for messages ("line 3", "example 3"). Times are seconds
  from the clip's start; `words` is None when the row gave no word times. `lead_in`:
  seconds of quiet played before the recording proper (`corpus/lead_in.py`), heard but
  not counted as benign time.
  """

  source: str
  where: str
  sample_rate: int
  duration: float
  transcript: str | None = None
  words: tuple[Word, ...] | None = None
  speaker: str | None = None
  label: str | None = None
  recognisable_after: float | None = None
  reply: str | None = None
  reply_time: float | None = None
  audio: np.ndarray | None = dataclasses.field(default=None, repr=False)
  id: str | None = None
  offset: float = 0.0
  events: tuple[Event, ...] = ()
  turns: tuple[Turn, ...] = ()
  instruction: str | None = None
  alert_classes: tuple[str, ...] = ()
  lead_in: float = 0.0

  def load(self) -> np.ndarray:
    """The samples: float32[round(duration * sample_rate)], read-only (the segment from
    `offset` on, for rows that give one)."""
    if self.audio is not None:
      return self.audio
    audio = _load_file(self.source, self.sample_rate)
    start = int(round(self.offset * self.sample_rate))
    return audio[start:start + int(round(self.duration * self.sample_rate))]

  @property
  def name(self) -> str:
    """The row's `id`, else its file name and place ("a.wav@line 3")."""
    if self.id is not None:
      return self.id
    return f"{self.source.replace(chr(92), '/').rsplit('/', 1)[-1]}@{self.where}"

  @property
  def voice(self) -> str:
    """Voice name of this row's speech: "manifest:<speaker>", or "manifest"."""
    return "manifest" if self.speaker is None else f"manifest:{self.speaker}"


def _number(value: Any, name: str) -> float:
  # bool is an int subclass; `true` as a time is a mistake, not 1 s.
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
    raise _RowProblem("bad_field", f"{name} must be a finite number, got {value!r}")
  if value < 0:
    raise _RowProblem("bad_field", f"{name} must be >= 0, got {value!r}")
  return float(value)


def _text(value: Any, name: str) -> str:
  if not isinstance(value, str) or not value.strip():
    raise _RowProblem("bad_field", f"{name} must be a non-empty string, got {value!r}")
  return value


def _alias(row: Mapping[str, Any], names: Sequence[str]) -> tuple[str, Any] | None:
  """(name, value) of the first of `names` in `row`; two that disagree are a bad field."""
  present = [(n, row[n]) for n in names if n in row]
  if not present:
    return None
  if any(v != present[0][1] for _, v in present[1:]):
    raise _RowProblem("bad_field", f"{' and '.join(n for n, _ in present)} disagree: "
                                   f"{[v for _, v in present]!r}")
  return present[0]


def _classes(value: Any) -> tuple[str, ...]:
  if not isinstance(value, (list, tuple)):
    raise _RowProblem("bad_field", f"alert_classes must be a list of class names, got {value!r}")
  return tuple(_text(v, "an alert class").strip() for v in value)


def _events(value: Any, alert_classes: Collection[str]) -> tuple[Event, ...]:
  if not isinstance(value, (list, tuple)):
    raise _RowProblem("bad_field", f"events must be a list of objects, got {value!r}")
  events = []
  for item in value:
    if not isinstance(item, dict) or not {"onset", "offset", "class"} <= set(item):
      raise _RowProblem("bad_field", f"each event needs onset, offset and class, got {item!r}")
    extra = sorted(set(item) - EVENT_KEYS)
    if extra:
      raise _RowProblem("bad_field", f"unknown event keys {extra} in {item!r}")
    onset, offset = _number(item["onset"], "an event onset"), _number(item["offset"],
                                                                      "an event offset")
    if offset <= onset:
      raise _RowProblem("bad_field", f"an event's offset must follow its onset: {item!r}")
    label = _text(item["class"], "an event class").strip()
    role = item.get("role")
    if role is None:
      if label in alert_classes:
        role = "alert"
      elif label in worlds.SOUNDS:
        role = "alert" if label in worlds.ALERT_LABELS else "benign"
      else:
        role = UNKNOWN_ROLE
    elif role not in ROLES:
      raise _RowProblem("bad_field", f"an event's role must be one of {list(ROLES)}, got "
                                     f"{role!r}")
    events.append(Event(onset, offset, label, role))
  return tuple(sorted(events, key=lambda e: (e.onset, e.offset)))


def _turns(value: Any) -> tuple[Turn, ...]:
  if not isinstance(value, (list, tuple)):
    raise _RowProblem("bad_field", f"turns must be a list of objects, got {value!r}")
  turns = []
  for item in value:
    if not isinstance(item, dict) or not {"start", "end"} <= set(item):
      raise _RowProblem("bad_field", f"each turn needs start and end, got {item!r}")
    extra = sorted(set(item) - {"start", "end", "reply_expected"})
    if extra:
      raise _RowProblem("bad_field", f"unknown turn keys {extra} in {item!r}")
    start, end = _number(item["start"], "a turn start"), _number(item["end"], "a turn end")
    if end <= start:
      raise _RowProblem("bad_field", f"a turn's end must follow its start: {item!r}")
    expected = item.get("reply_expected", True)
    if not isinstance(expected, bool):
      raise _RowProblem("bad_field", f"reply_expected must be true or false, got {expected!r}")
    turns.append(Turn(start, end, expected))
  return tuple(sorted(turns, key=lambda t: (t.start, t.end)))


def _fields(row: Mapping[str, Any], alert_classes: Collection[str] = ()) -> dict[str, Any]:
  """The optional fields of a row, type-checked (times not yet against the clip length).

  `alert_classes`: classes declared as alerts outside the row (a class file); the
  row's own `alert_classes` add to them.
  """
  out: dict[str, Any] = {}
  text = _alias(row, TEXT_KEYS)
  row = {k: v for k, v in row.items() if k not in TEXT_KEYS}
  if text is not None:
    row["transcript"] = text[1]
  if "transcript" in row:
    if not isinstance(row["transcript"], str):
      raise _RowProblem("bad_field", f"transcript must be a string, got {row['transcript']!r}")
    if not normalize_text(row["transcript"]):
      raise _RowProblem("empty_transcript",
                        f"transcript {row['transcript']!r} is empty after normalization")
    out["transcript"] = row["transcript"]
  if "words" in row:
    words = row["words"]
    if not isinstance(words, (list, tuple)) or not words:
      raise _RowProblem("bad_field", f"words must be a non-empty list of [word, start, end], "
                                     f"got {words!r}")
    parsed = []
    for item in words:
      if not isinstance(item, (list, tuple)) or len(item) != 3:
        raise _RowProblem("bad_field", f"each word must be [word, start, end], got {item!r}")
      parsed.append(Word(_text(item[0], "a word"), _number(item[1], "a word start"),
                         _number(item[2], "a word end")))
    times = [t for w in parsed for t in (w.start, w.end)]
    if times != sorted(times):
      raise _RowProblem("bad_field", f"word times must increase and not overlap: {words!r}")
    spoken = " ".join(normalize_text(w.text) for w in parsed)
    if "transcript" in out and normalize_text(spoken) != normalize_text(out["transcript"]):
      raise _RowProblem("bad_field", f"words {spoken!r} do not match the transcript "
                                     f"{normalize_text(out['transcript'])!r}")
    out["words"] = tuple(parsed)
    out.setdefault("transcript", " ".join(w.text for w in parsed))
  for name in ("speaker", "label", "reply", "instruction"):
    if name in row:
      out[name] = _text(row[name], name)
  if "id" in row:
    if isinstance(row["id"], bool) or not isinstance(row["id"], (str, int)):
      raise _RowProblem("bad_field", f"id must be a string or an integer, got {row['id']!r}")
    out["id"] = str(row["id"])
  if "alert_classes" in row:
    out["alert_classes"] = _classes(row["alert_classes"])
  declared = {*alert_classes, *out.get("alert_classes", ())}
  if "label" in out and out["label"] not in worlds.SOUNDS and out["label"] not in declared:
    raise _RowProblem("unknown_label", f"label {out['label']!r} is neither a known sound class "
                                       "nor a declared alert class (alert_classes, --classes); "
                                       f"known: {', '.join(sorted(worlds.SOUNDS))}")
  if "label" in out and out["label"] in declared:  # kept on the row: its role is alert
    out["alert_classes"] = tuple(dict.fromkeys((*out.get("alert_classes", ()), out["label"])))
  if "events" in row:
    out["events"] = _events(row["events"], declared)
  if "turns" in row:
    out["turns"] = _turns(row["turns"])
  for name in ("recognisable_after", "reply_time", "offset", "lead_in"):
    if name in row:
      out[name] = _number(row[name], name)
  if "duration" in row:
    out["duration"] = _number(row["duration"], "duration")
    if out["duration"] == 0:
      raise _RowProblem("bad_field", "duration must be > 0")
  if not ({"transcript", "label", "events", "turns"} & set(out)):
    raise _RowProblem("no_annotation", "the row has no transcript/words, label, events or "
                                       "turns, so no suite can use it")
  return out


def _row(source: str, where: str, fields: Mapping[str, Any], num_samples: int,
         sample_rate: int, audio: np.ndarray | None = None) -> ManifestRow:
  """A row from checked fields and its decoded length; times must lie within the clip."""
  fields = dict(fields)
  duration = num_samples / sample_rate
  # Times written to the millisecond (or the sample) are still inside the clip.
  slack = max(1.0 / sample_rate, 1e-3)
  offset = fields.get("offset", 0.0)
  if "duration" in fields or offset:
    # A segment of the file (NeMo's offset + duration): up to 0.1 s of rounding allowed.
    wanted = fields.pop("duration", duration - offset)
    if offset + wanted > duration + 0.1 or wanted <= 0:
      raise _RowProblem("bad_field", f"offset {offset:g} + duration {wanted:g} s lie beyond the "
                                     f"file's {duration:.3f} s")
    duration = min(wanted, duration - offset)
  late = [f"{name}={fields[name]:g}" for name in ("recognisable_after", "reply_time")
          if name in fields and fields[name] > duration + slack]
  late += [f"word {w.text!r} ends at {w.end:g}" for w in fields.get("words", ())
           if w.end > duration + slack]
  late += [f"event {e.label!r} ends at {e.offset:g}" for e in fields.get("events", ())
           if e.offset > duration + slack]
  late += [f"turn ends at {t.end:g}" for t in fields.get("turns", ()) if t.end > duration + slack]
  if fields.get("lead_in", 0.0) > duration + slack:
    late.append(f"lead_in={fields['lead_in']:g}")
  if late:
    raise _RowProblem("bad_field", f"times beyond the clip's {duration:.3f} s: {', '.join(late)}")
  return ManifestRow(source=source, where=where, sample_rate=sample_rate, duration=duration,
                     audio=audio, **fields)


class _Collector:
  """Counts skipped rows per reason and logs them; in strict mode the first one raises."""

  def __init__(self, name: str, strict: bool):
    self.name, self.strict = name, strict
    self.skipped: collections.Counter[str] = collections.Counter()
    self.first: dict[str, tuple[str, str]] = {}
    self.ignored_keys: collections.Counter[str] = collections.Counter()
    self.ignored_first: str | None = None
    self.unknown_classes: collections.Counter[str] = collections.Counter()

  def ignore(self, where: str, keys: Sequence[str]) -> None:
    self.ignored_keys.update(keys)
    if self.ignored_first is None:
      self.ignored_first = where

  def kept(self, row: ManifestRow) -> None:
    self.unknown_classes.update(e.label for e in row.events if e.role == UNKNOWN_ROLE)

  def skip(self, where: str, problem: _RowProblem) -> None:
    if self.strict:
      raise ManifestError(f"{self.name}, {where}: {problem.reason}: {problem}") from problem
    self.skipped[problem.reason] += 1
    self.first.setdefault(problem.reason, (where, str(problem)))

  def log(self, resampled: int, target_rate: int) -> None:
    for reason, count in sorted(self.skipped.items()):
      where, message = self.first[reason]
      log.warning("%s: skipped %d row(s): %s (first at %s: %s)", self.name, count, reason,
                  where, message)
    if resampled:
      log.warning("%s: %d row(s) not at %d Hz are resampled on load", self.name, resampled,
                  target_rate)
    if self.ignored_keys:  # one warning for all of them: the rows are used
      keys = ", ".join(f"{k!r} ({n} row(s))" for k, n in sorted(self.ignored_keys.items()))
      log.warning("%s: ignored unknown keys %s (first at %s); known: %s", self.name, keys,
                  self.ignored_first, ", ".join(sorted(KEYS)))
    if self.unknown_classes:
      classes = ", ".join(f"{k!r} ({n})" for k, n in sorted(self.unknown_classes.items()))
      log.warning("%s: events of unknown class with no role: %s; they are not scored (give "
                  "them a role, or declare alert classes with alert_classes / --classes)",
                  self.name, classes)


@dataclasses.dataclass(frozen=True)
class ManifestReport:
  """What a manifest (or a TFDS iterable) yielded.

  `rows`: the usable rows, in order. `skipped`: reason -> number of rows skipped
  (see the module docstring). `resampled`: rows whose audio is at another rate and
  is converted to `sample_rate` on load. `ignored_keys`: unknown key -> rows that had
  it (the rows are used; one warning). `unknown_classes`: class -> events of that
  class with no role that are neither declared alerts nor known sounds (not scored).
  """

  name: str
  sample_rate: int
  rows: tuple[ManifestRow, ...]
  skipped: dict[str, int]
  resampled: int
  ignored_keys: dict[str, int] = dataclasses.field(default_factory=dict)
  unknown_classes: dict[str, int] = dataclasses.field(default_factory=dict)

  @property
  def num_skipped(self) -> int:
    return sum(self.skipped.values())


# -------------------------------------------------------------------------- readers

def _file_rate(path: str) -> int | None:
  """The file's rate from its header, or None if soundfile cannot read it (`load_audio`
  may still decode it through its fallback)."""
  try:
    return int(soundfile.info(path).samplerate)
  except (soundfile.SoundFileError, RuntimeError):
    return None


def _has_non_finite(path: str) -> bool:
  try:
    data, _ = soundfile.read(path, dtype="float32")
  except (soundfile.SoundFileError, RuntimeError):
    return False
  return not np.isfinite(data).all()


def _decode_row(row: Mapping[str, Any], base: pathlib.Path, sample_rate: int,
                resample: bool, where: str, collector: _Collector,
                alert_classes: Collection[str] = ()) -> tuple[ManifestRow, bool]:
  """A manifest row checked and its audio decoded once; and whether it needs resampling."""
  unknown = sorted(set(row) - KEYS)
  row = {k: v for k, v in row.items() if k in KEYS}
  if isinstance(row.get("events"), (list, tuple)):  # an event's extra keys: ignored too
    extra = sorted({f"events.{k}" for e in row["events"] if isinstance(e, dict)
                    for k in set(e) - EVENT_KEYS})
    if extra:
      unknown += extra
      row["events"] = [{k: v for k, v in e.items() if k in EVENT_KEYS}
                       if isinstance(e, dict) else e for e in row["events"]]
  audio_field = _alias(row, AUDIO_KEYS)
  if audio_field is None:
    raise _RowProblem("bad_field", f"the row has no audio path ({' / '.join(AUDIO_KEYS)})")
  # absolute paths stay absolute
  path = os.path.join(base, _text(audio_field[1], audio_field[0]))
  fields = _fields({k: v for k, v in row.items() if k not in AUDIO_KEYS}, alert_classes)
  if unknown:
    collector.ignore(where, unknown)
  if not os.path.isfile(path):
    raise _RowProblem("missing_file", f"audio file {path} not found")
  rate = _file_rate(path)
  if rate is not None and rate != sample_rate and not resample:
    raise _RowProblem("wrong_sample_rate", f"{path} is at {rate} Hz, expected {sample_rate} Hz "
                                           "(resample=True converts it)")
  try:
    audio = audio_io.load_audio(path, sample_rate, resample=True)
  except audio_io.AudioError as error:
    reason = "nan_audio" if _has_non_finite(path) else "corrupt_audio"
    raise _RowProblem(reason, str(error)) from error
  return _row(path, where, fields, len(audio), sample_rate), rate not in (None, sample_rate)


def read_classes(path: str | os.PathLike) -> tuple[str, ...]:
  """Alert class names from a class file: one per line, or a JSON list; blank lines and
  lines starting with '#' are ignored. A missing file is a `ManifestError`."""
  try:
    text = pathlib.Path(path).read_text(encoding="utf-8")
  except OSError as error:
    raise ManifestError(f"class file {path} cannot be read: {error.strerror or error}") from error
  if text.lstrip().startswith("["):
    try:
      return _classes(json.loads(text))
    except (ValueError, _RowProblem) as error:
      raise ManifestError(f"class file {path}: {error}") from error
  return tuple(line.strip() for line in text.splitlines()
               if line.strip() and not line.lstrip().startswith("#"))


def _line_text(data: bytes, first: bool) -> str:
  """One manifest line as text; a byte-order mark before the first line is allowed."""
  try:
    return data.decode("utf-8-sig" if first else "utf-8")
  except UnicodeDecodeError as error:
    raise _RowProblem("bad_encoding", f"not UTF-8: byte {data[error.start]:#04x} at column "
                                      f"{error.start + 1}") from error


def _parse_line(line: str) -> dict[str, Any]:
  """One JSON object; anything else (not JSON, too deep, not an object) is `malformed_json`."""
  try:
    row = json.loads(line)
  except RecursionError as error:  # e.g. 100k nested brackets
    raise _RowProblem("malformed_json", "JSON nested too deeply to read") from error
  except ValueError as error:  # JSONDecodeError, or an integer beyond Python's digit limit
    raise _RowProblem("malformed_json", f"not JSON: {error}") from error
  if not isinstance(row, dict):
    raise _RowProblem("malformed_json", f"expected a JSON object, got {type(row).__name__}")
  return row


def read_rows(path: str | os.PathLike) -> list[dict[str, Any]]:
  """The rows of a JSONL manifest as they are written (dicts, blank lines skipped), for
  tools that rewrite a manifest and keep what they do not read; nothing but the JSON is
  checked (`read_manifest` checks the rest).

  Raises:
    ManifestError: the file is missing, or a line is not UTF-8 or not a JSON object
      (naming the file and the line).
  """
  path = pathlib.Path(path)
  try:
    lines = path.read_bytes().splitlines()
  except OSError as error:
    raise ManifestError(f"manifest {path} cannot be read: {error.strerror or error}") from error
  rows = []
  for number, data in enumerate(lines, start=1):
    try:
      line = _line_text(data, number == 1)
      if line.strip():
        rows.append(_parse_line(line))
    except _RowProblem as problem:
      raise ManifestError(f"{path} line {number}: {problem}") from None
  return rows


def read_manifest(path: str | os.PathLike, *, sample_rate: int = SAMPLE_RATE,
                  strict: bool = False, resample: bool = True,
                  alert_classes: Collection[str] = ()) -> ManifestReport:
  """Reads and validates a JSONL manifest (format and checks: module docstring).

  Args:
    path: the manifest; relative audio paths are taken from its folder.
    sample_rate: the rate (Hz) rows are served at; the sources need `SAMPLE_RATE`.
    strict: raise `ManifestError` at the first bad row instead of skipping it.
    resample: convert audio at other rates; False makes them bad rows.
    alert_classes: classes declared as alerts for every row (e.g. `read_classes`).

  Every audio file is decoded once here (to find corrupt and NaN audio), so reading
  takes about as long as decoding the corpus.

  Raises:
    ManifestError: `path` is a directory, missing or unreadable; or, with `strict`, a bad row.
  """
  path = pathlib.Path(path)
  collector = _Collector(str(path), strict)
  rows: list[ManifestRow] = []
  resampled = 0
  if path.is_dir():
    raise ManifestError(f"manifest {path} is a directory, not a JSONL file (give the "
                        "manifest file inside it)")
  try:
    file = open(path, "rb")  # bytes: one line that is not UTF-8 is one bad row
  except FileNotFoundError as error:
    raise ManifestError(f"manifest {path} not found") from error
  except OSError as error:
    raise ManifestError(f"manifest {path} cannot be read: {error.strerror or error}") from error
  with file:
    for number, data in enumerate(file, start=1):
      where = f"line {number}"
      try:
        line = _line_text(data, first=number == 1)
        if not line.strip():
          continue
        row = _parse_line(line)
        parsed, needs_resampling = _decode_row(row, path.parent, sample_rate, resample, where,
                                               collector, alert_classes)
      except _RowProblem as problem:
        collector.skip(where, problem)
        continue
      collector.kept(parsed)
      rows.append(parsed)
      resampled += needs_resampling
  collector.log(resampled, sample_rate)
  return ManifestReport(name=str(path), sample_rate=sample_rate, rows=tuple(rows),
                        skipped=dict(collector.skipped), resampled=resampled,
                        ignored_keys=dict(collector.ignored_keys),
                        unknown_classes=dict(collector.unknown_classes))


def _as_text(value: Any) -> str:
  """TFDS text features come out of `tfds.as_numpy` as bytes."""
  if isinstance(value, np.ndarray) and value.ndim == 0:
    value = value.item()
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _as_float_audio(samples: Any) -> np.ndarray:
  """float32 mono from a TFDS audio feature: [n] or [n, channels]; integer PCM (TFDS's
  default, 16-bit values in int16/int32/int64) is scaled by 1/32768."""
  samples = np.asarray(samples)
  if samples.ndim == 2:
    samples = samples.mean(axis=1)
  if samples.ndim != 1:
    raise _RowProblem("bad_field", f"audio must be [n] or [n, channels], got {samples.shape}")
  if np.issubdtype(samples.dtype, np.integer):
    return (samples / 32768.0).astype(np.float32)
  if not np.issubdtype(samples.dtype, np.floating):
    raise _RowProblem("bad_field", f"audio has dtype {samples.dtype}, expected numbers")
  return samples.astype(np.float32)


def from_tfds_examples(examples: Iterable[Mapping[str, Any]], *, sample_rate: int,
                       audio_key: str = "audio", text_key: str = "text",
                       label_key: str = "label", speaker_key: str | None = None,
                       label_names: Sequence[str] | None = None,
                       label_map: Mapping[str, str] | None = None,
                       label_as_transcript: bool = False,
                       alert_classes: Collection[str] = (),
                       target_rate: int = SAMPLE_RATE, strict: bool = False,
                       name: str = "tfds") -> ManifestReport:
  """In-memory rows from dict examples, as `tfds.as_numpy(tfds.load(...))` yields them.

  E.g. LibriSpeech (`text_key="text"`, `speaker_key="speaker_id"`, 16 kHz) or an
  ESC-50-style set (`label_names=info.features["label"].names`,
  `label_map=ESC50_LABELS`). Examples are kept in memory: take a subset
  (`ds.take(n)`) of a large dataset.

  Args:
    examples: dicts with `audio_key` (samples at `sample_rate`, float or integer PCM)
      and `text_key` and/or `label_key`; other keys are ignored.
    sample_rate: the dataset's audio rate (Hz); other rates are resampled to `target_rate`.
    label_names: names of integer class labels (a TFDS `ClassLabel`'s `names`).
    label_map: dataset class -> our event class; classes outside it are skipped.
    label_as_transcript: the (mapped) class is what is said, not a sound (keyword sets
      such as speech_commands): it becomes the row's `transcript`.
    alert_classes: classes declared as alerts (labels outside `worlds.SOUNDS` and these
      are `unknown_label` skips).
    strict: raise `ManifestError` at the first bad example.
  """
  collector = _Collector(name, strict)
  rows: list[ManifestRow] = []
  resampled = 0
  for index, example in enumerate(examples):
    where = f"example {index}"
    try:
      if audio_key not in example:
        raise _RowProblem("bad_field", f"no {audio_key!r} in the example (keys {sorted(example)})")
      row: dict[str, Any] = {}
      if text_key in example:
        row["transcript"] = _as_text(example[text_key])
      if label_key in example and not (label_as_transcript and "transcript" in row):
        label = example[label_key]
        if label_names is not None and np.issubdtype(np.asarray(label).dtype, np.integer):
          label = label_names[int(label)]
        label = _as_text(label)
        if label_map is not None:
          if label not in label_map:
            raise _RowProblem("unmapped_label", f"class {label!r} is not in the label map")
          label = label_map[label]
        row["transcript" if label_as_transcript else "label"] = label
      if speaker_key is not None and speaker_key in example:
        row["speaker"] = _as_text(example[speaker_key])
      fields = _fields(row, alert_classes)
      audio = _as_float_audio(example[audio_key])
      if not len(audio):
        raise _RowProblem("corrupt_audio", "audio is empty")
      if not np.isfinite(audio).all():
        raise _RowProblem("nan_audio", f"audio has {int((~np.isfinite(audio)).sum())} "
                                       "NaN/Inf samples")
      if sample_rate != target_rate:
        audio = effects.resample(audio, sample_rate, target_rate)
        resampled += 1
      audio.setflags(write=False)
      rows.append(_row(f"{name}:{index}", where, fields, len(audio), target_rate, audio))
    except _RowProblem as problem:
      collector.skip(where, problem)
  collector.log(resampled, target_rate)
  return ManifestReport(name=name, sample_rate=target_rate, rows=tuple(rows),
                        skipped=dict(collector.skipped), resampled=resampled)


# -------------------------------------------------------------------------- sources

@dataclasses.dataclass(frozen=True)
class ManifestClip(SpeechClip):
  """A `SpeechClip` from a manifest row; `approximate_timing` is True when its word
  times were spread over the voiced region rather than given (module docstring)."""

  approximate_timing: bool = False
  source: str = ""


def loud_span(audio: np.ndarray, lead_in: float = 0.0, sample_rate: int = SAMPLE_RATE,
              threshold_db: float = -40.0) -> tuple[int, int]:
  """[lo, hi) samples of `audio` float32[n] between its first and last loud frame after
  its first `lead_in` seconds (`effects.trim_silence` of the rest, in the whole clip's
  samples): a lead-in is a quiet room no one speaks or sounds in, and its noise would
  otherwise pass for the onset. (lo, lo) when the rest is silent."""
  skip = min(len(audio), int(round(lead_in * sample_rate)))
  lo, hi = effects.trim_silence(audio[skip:], threshold_db=threshold_db)
  return lo + skip, hi + skip


def spread_words(text: str, audio: np.ndarray, sample_rate: int = SAMPLE_RATE,
                 lead_in: float = 0.0) -> tuple[Word, ...]:
  """Approximate word times for `text` spoken in `audio` float32[n].

  The words (`speech.split_words`) are laid end to end over the voiced region
  (`loud_span` after the first `lead_in` seconds; all of the rest if it is silent), each
  taking a share proportional to its normalized letters. Times in seconds from the
  clip's start.
  """
  tokens = split_words(text)
  if not tokens:
    raise ValueError(f"no words in {text!r}")
  lo, hi = loud_span(audio, lead_in, sample_rate)
  if hi <= lo:  # silent after the lead: lo is where the lead ends
    hi = len(audio)
  weights = np.array([max(1, len(normalize_text(t).replace(" ", ""))) for t in tokens], float)
  edges = lo + (hi - lo) * np.concatenate([[0.0], np.cumsum(weights) / weights.sum()])
  return tuple(Word(t, edges[i] / sample_rate, edges[i + 1] / sample_rate)
               for i, t in enumerate(tokens))


def _check_rate(rows: Sequence[ManifestRow]) -> None:
  wrong = [r for r in rows if r.sample_rate != SAMPLE_RATE]
  if wrong:
    raise ValueError(f"sources serve {SAMPLE_RATE} Hz audio; {wrong[0].where} of "
                     f"{wrong[0].source} was read at {wrong[0].sample_rate} Hz")


class ManifestSpeech:
  """A `SpeechSource` over transcribed manifest rows (module docstring).

  Args:
    rows: rows of `read_manifest` / `from_tfds_examples`; rows without a transcript
      are ignored.
    exact_timing_only: use only rows with given word times.
  """

  def __init__(self, rows: Iterable[ManifestRow], *, exact_timing_only: bool = False):
    self._rows = tuple(r for r in rows if r.transcript is not None
                       and (r.words is not None or not exact_timing_only))
    if not self._rows:
      raise ValueError("no transcribed rows" + (" with word times" if exact_timing_only else ""))
    _check_rate(self._rows)
    self._by_text: dict[str, list[ManifestRow]] = collections.defaultdict(list)
    for row in self._rows:
      self._by_text[normalize_text(row.transcript)].append(row)

  def voices(self) -> tuple[str, ...]:
    return tuple(sorted({r.voice for r in self._rows}))

  def utterances(self) -> tuple[ManifestRow, ...]:
    """Every transcribed row, in manifest order."""
    return self._rows

  def clip(self, row: ManifestRow) -> ManifestClip:
    """The row's audio and words (given, or spread over the voiced region)."""
    audio = row.load()
    words = row.words
    if words is None:
      words = spread_words(row.transcript, audio, row.sample_rate, lead_in=row.lead_in)
    return ManifestClip(audio=audio, words=words, voice=row.voice,
                        approximate_timing=row.words is None, source=row.source)

  def say(self, text: str, rng: np.random.Generator, voice: str | None = None) -> ManifestClip:
    """A recording of `text` (compared after `normalize_text`), chosen with `rng`.

    Prefers rows of `voice` (a speaker's voice stays the same within a stream) and
    falls back to any speaker. Raises `NotInManifest` (a KeyError) if no row says `text`.
    """
    key = normalize_text(text)
    rows = self._by_text.get(key)
    if not rows:
      known = sorted(self._by_text)
      raise NotInManifest(f"no manifest row has the transcript {key!r} (asked for {text!r}); "
                     f"{len(known)} transcripts, e.g. {known[:3]}")
    same_voice = [r for r in rows if r.voice == voice]
    rows = same_voice or rows
    return self.clip(rows[int(rng.integers(len(rows)))])


class ManifestSounds:
  """A `SoundSource` over labelled manifest rows.

  `recognisable_after` is the row's value if given, else the clip's first onset after
  its `lead_in` (`effects.trim_silence`) plus `RECOGNISABLE_AFTER_S[label]`
  (`DEFAULT_RECOGNISABLE_AFTER_S` for other classes), at most the clip's length.
  """

  def __init__(self, rows: Iterable[ManifestRow]):
    self._by_label: dict[str, list[ManifestRow]] = collections.defaultdict(list)
    for row in rows:
      if row.label is not None:
        self._by_label[row.label].append(row)
    if not self._by_label:
      raise ValueError("no labelled rows")
    _check_rate([r for rs in self._by_label.values() for r in rs])

  def labels(self) -> tuple[str, ...]:
    return tuple(sorted(self._by_label))

  def sample(self, label: str, rng: np.random.Generator) -> SoundClip:
    """A recording of class `label`, chosen with `rng`; `NotInManifest` (a KeyError) if none."""
    rows = self._by_label.get(label)
    if not rows:
      raise NotInManifest(f"no manifest row has the label {label!r}; labels: {list(self.labels())}")
    row = rows[int(rng.integers(len(rows)))]
    audio = row.load()
    recognisable = row.recognisable_after
    if recognisable is None:  # the sound's onset after the row's quiet lead-in
      onset, _ = loud_span(audio, row.lead_in, row.sample_rate, threshold_db=-45.0)
      recognisable = onset / row.sample_rate + RECOGNISABLE_AFTER_S.get(
          label, DEFAULT_RECOGNISABLE_AFTER_S)
    return SoundClip(audio=audio, label=label, source=row.source,
                     recognisable_after=min(recognisable, row.duration))
