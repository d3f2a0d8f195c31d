"""Timelines: a stream composed from timed parts, what the assistant must say and when.

A `Timeline` holds an instruction, the timed events of a stream (user utterances with
word timings, sound events, overlapping backgrounds at an SNR) and the assistant's
expected replies, each with its *ready time*: the stream time by which a listener who
understood everything so far knows the reply is warranted (the question's last word
has ended, the alarm has sounded long enough to be recognised, the N-th counted event
has happened...). Times are seconds from the stream start, snapped to whole samples.

From ready times the decision labels follow (`schedule`), for any chunk size:
chunk t (samples [t*C, (t+1)*C)) may SPEAK only once its *end* has reached the ready
time, i.e. the first SPEAK chunk of a reply is the first chunk whose end is >= the
ready time. A reply then emits at most `tokens_per_chunk` tokens per chunk, ending with
`<eor>`. A reply that the user talks over (barge-in) stops: the chunk whose end reaches
the interruption's audible time is SILENT, and no `<eor>` is written.

`Composer` is the one mechanism the sub-task builders (`tasks.py`) use to place speech
and sounds and to record replies and quiet spans; `render` mixes the audio.
"""

from __future__ import annotations

import collections
import dataclasses
import zlib
from collections.abc import Sequence
from typing import Callable, Final

import numpy as np

from audio_interaction.corpus import effects
from audio_interaction import stream_format
from audio_interaction.corpus.clips import (
    SAMPLE_RATE, SoundClip, SoundSource, SpeechClip, SpeechSource, Word)
from audio_interaction.data.tokenizer import normalize_text

DEFAULT_CHUNK_MS: Final[int] = stream_format.DEFAULT_CHUNK_MS
# How long interrupting speech must have sounded before a listener can tell that the
# user is talking over the reply (a syllable's onset); the reply yields from the chunk
# whose end reaches `interrupted_at + BARGE_IN_AUDIBLE_S`.
BARGE_IN_AUDIBLE_S: Final[float] = 0.08
# Speaking rate used to estimate when a spoken reply is over, so that builders place
# the user's next turn after it (not over it, which would be a barge-in).
SPOKEN_WORD_S: Final[float] = 0.4
# Draws of a new speaker's voice before naming an unused voice explicitly.
_VOICE_DRAWS: Final[int] = 4
ONLINE: Final[str] = "online"
OFFLINE: Final[str] = "offline"


def to_sample(t: float) -> int:
  """Stream time (s) -> sample index at SAMPLE_RATE."""
  return int(round(t * SAMPLE_RATE))


def snap(t: float) -> float:
  """Rounds a time to a whole sample, so every timeline time is k / SAMPLE_RATE."""
  return to_sample(t) / SAMPLE_RATE


def chunk_samples_of(chunk_ms: float) -> int:
  """Samples per chunk; an error unless `chunk_ms` is a whole number of samples."""
  samples = SAMPLE_RATE * chunk_ms / 1000
  if samples < 1 or abs(samples - round(samples)) > 1e-6:
    raise ValueError(f"chunk_ms={chunk_ms} is not a whole number of samples at {SAMPLE_RATE} Hz")
  return int(round(samples))


def first_chunk_reaching(t: float, chunk_samples: int) -> int:
  """Index of the first chunk whose end time is >= `t` (0 for t <= one chunk)."""
  return max(0, -(-to_sample(t) // chunk_samples) - 1)


def stable_hash(text: str) -> int:
  """A process-independent 32-bit hash (Python's `hash` is salted per process)."""
  return zlib.crc32(text.encode("utf-8"))


# --------------------------------------------------------------------- the timeline

@dataclasses.dataclass(frozen=True)
class Span:
  """An interval (s) of the stream; `kind` says why it is there (e.g. "pause")."""

  start: float
  end: float
  kind: str


class _Placed:
  """Audio placed on the timeline at `start` (s); it ends when its samples do."""

  start: float
  audio: np.ndarray

  @property
  def end(self) -> float:
    return self.start + len(self.audio) / SAMPLE_RATE


@dataclasses.dataclass(frozen=True, eq=False)
class Utterance(_Placed):
  """Speech placed on the stream.

  `audio` float32[n] at 16 kHz starts at `start` (s) and is mixed with gain `gain`
  (linear; its active level is `level_db` dBFS). `words` have absolute times; `fillers`
  flags the words of fillers ("um"). `holds` are the mid-utterance pauses: from the end
  of the content word before a pause/filler to the start of the content word after it.
  """

  start: float
  audio: np.ndarray
  words: tuple[Word, ...]
  fillers: tuple[bool, ...]
  holds: tuple[Span, ...]
  speaker: str
  voice: str
  addressed: bool
  gain: float
  level_db: float

  @property
  def content_words(self) -> tuple[Word, ...]:
    return tuple(w for w, filler in zip(self.words, self.fillers) if not filler)

  @property
  def speech_end(self) -> float:
    """End of the last content word: when the utterance is complete for a listener."""
    return self.content_words[-1].end

  @property
  def speech_start(self) -> float:
    return self.words[0].start

  @property
  def text(self) -> str:
    """Normalized text of the content words."""
    return " ".join(t for t in (normalize_text(w.text) for w in self.content_words) if t)


@dataclasses.dataclass(frozen=True, eq=False)
class SoundEvent(_Placed):
  """A sound event placed at `start` (s); nameable from `recognisable_at` (s) on."""

  start: float
  audio: np.ndarray
  label: str
  source: str
  recognisable_at: float
  role: str
  gain: float
  level_db: float


@dataclasses.dataclass(frozen=True, eq=False)
class Background(_Placed):
  """A continuous sound under [start, end) at `snr_db` below the stream's speech level."""

  start: float
  audio: np.ndarray
  label: str
  snr_db: float
  gain: float


@dataclasses.dataclass(frozen=True)
class Reply:
  """An expected assistant reply.

  `ready_time` (s): the reply is warranted once the stream has been heard up to here,
  and not before. `interrupted_at` (s): onset of user speech that talks over this
  reply (barge-in), or None. `reason` says what made it ready, for humans.
  """

  text: str
  ready_time: float
  reason: str
  kind: str = "answer"
  interrupted_at: float | None = None

  @property
  def stop_time(self) -> float | None:
    """When the interruption is audible; the reply yields from the chunk reaching it."""
    if self.interrupted_at is None:
      return None
    return snap(self.interrupted_at + BARGE_IN_AUDIBLE_S)


@dataclasses.dataclass(frozen=True, eq=False)
class Timeline:
  """One composed stream (online) or clip (offline) and its expected replies.

  Offline timelines have exactly one reply, the answer, whose ready time is the end
  of the clip. `quiet` spans must stay SILENT: every chunk whose end lies in
  [span.start, span.end) has decision SILENT (pauses inside a question, fillers, benign sounds, speech not
  addressed to the assistant...).
  """

  task: str
  ability: int
  seed: int
  split: str
  mode: str
  instruction: str
  duration: float
  speech_level_db: float
  utterances: tuple[Utterance, ...]
  sounds: tuple[SoundEvent, ...]
  backgrounds: tuple[Background, ...]
  replies: tuple[Reply, ...]
  quiet: tuple[Span, ...]

  @property
  def num_samples(self) -> int:
    return to_sample(self.duration)

  def validate(self) -> None:
    """Raises ValueError if the timeline is inconsistent."""
    if self.mode not in (ONLINE, OFFLINE):
      raise ValueError(f"mode must be {ONLINE!r} or {OFFLINE!r}, got {self.mode!r}")
    if self.mode == OFFLINE and len(self.replies) != 1:
      raise ValueError(f"an offline timeline has one answer, got {len(self.replies)}")
    readies = [r.ready_time for r in self.replies]
    if readies != sorted(readies):
      raise ValueError(f"{self.task}: replies are not in order of ready time: {readies}")
    for reply in self.replies:
      if not reply.text.strip():
        raise ValueError(f"{self.task}: empty reply {reply}")
      if not 0.0 <= reply.ready_time <= self.duration + 1e-9:
        raise ValueError(f"{self.task}: ready time outside the stream: {reply}")
      if reply.interrupted_at is not None and reply.interrupted_at <= reply.ready_time:
        raise ValueError(f"{self.task}: interrupted before it was ready: {reply}")
    items = [*self.utterances, *self.sounds, *self.backgrounds]
    for item in items:
      if item.start < 0 or item.end > self.duration + 1e-9:
        raise ValueError(f"{self.task}: {type(item).__name__} [{item.start:.3f}, "
                         f"{item.end:.3f}] outside the stream (duration {self.duration:.3f})")
    for utterance in self.utterances:
      times = [t for w in utterance.words for t in (w.start, w.end)]
      if times != sorted(times):
        raise ValueError(f"{self.task}: word times not increasing: {utterance.words}")
    for span in self.quiet:
      if span.end < span.start:
        raise ValueError(f"{self.task}: quiet span ends before it starts: {span}")


# ---------------------------------------------------------------------- composition

@dataclasses.dataclass(frozen=True)
class Pause:
  """A silence of `seconds` inside an utterance (`Composer.say` pieces)."""

  seconds: float


@dataclasses.dataclass(frozen=True)
class Filler:
  """A filler ("um") inside an utterance; its words are not content."""

  text: str


@dataclasses.dataclass(frozen=True, eq=False)
class Speech:
  """Synthesized speech not yet on the stream; times (s) from the start of `audio`."""

  audio: np.ndarray
  words: tuple[Word, ...]
  fillers: tuple[bool, ...]
  holds: tuple[Span, ...]
  speaker: str
  voice: str

  @property
  def duration(self) -> float:
    return len(self.audio) / SAMPLE_RATE

  @property
  def speech_end(self) -> float:
    """End of the last content word."""
    return max(w.end for w, filler in zip(self.words, self.fillers) if not filler)


def gain_for_level(audio: np.ndarray, level_db: float) -> float:
  """Linear gain that brings `audio`'s active level (`effects.active_rms_db`) to `level_db` dBFS.

  Levels and SNRs are set on the *active* part, so a sparse utterance is not made
  louder than a dense one; digital silence keeps gain 1.
  """
  current = effects.active_rms_db(audio)
  return 1.0 if current <= -199.0 else effects.db_to_gain(level_db - current)


def estimated_reply_end(reply: Reply) -> float:
  """When a spoken reply would be over (s), to place the user's next turn after it."""
  end = reply.ready_time + 0.3 + SPOKEN_WORD_S * len(reply.text.split())
  return end if reply.interrupted_at is None else min(end, reply.interrupted_at)


# Quiet before a stream's first sound (s): `Composer`'s and `tasks.TaskConfig`'s default.
DEFAULT_LEAD_IN: tuple[float, float] = (0.2, 1.0)


class Composer:
  """Places speech and sounds on a stream and records what the assistant must say when.

  Builders move a `cursor` (s) forward, `say` things and `play` sounds at it (or at
  explicit times), and record `reply`s and `quiet` spans; `finish` returns the
  `Timeline`. Randomness: `rng` drives the builder's own choices; every rendered part
  gets a fresh generator from `part_rng()`, so a voice that consumes more or fewer
  random numbers does not change the builder's later choices.
  """

  def __init__(self, *, task: str, ability: int, seed: int, split: str,
               speech: SpeechSource, sounds: SoundSource,
               speech_level_db: tuple[float, float] = (-30.0, -20.0),
               event_level_db: tuple[float, float] = (-8.0, 2.0),
               lead_in: tuple[float, float] = DEFAULT_LEAD_IN):
    """`event_level_db` is relative to the stream's speech level (dB)."""
    self.task, self.ability, self.seed, self.split = task, ability, seed, split
    self.speech, self.sounds = speech, sounds
    root = np.random.SeedSequence([seed, stable_hash(task)])
    choice_seed, self._part_seeds = root.spawn(2)
    self.rng = np.random.default_rng(choice_seed)
    self.speech_level_db = float(self.rng.uniform(*speech_level_db))
    self._event_level_db = event_level_db
    self._voices: dict[str, str] = {}
    self.cursor = snap(self.rng.uniform(*lead_in))
    self.utterances: list[Utterance] = []
    self.sound_events: list[SoundEvent] = []
    self.replies: list[Reply] = []
    self.quiet_spans: list[Span] = []
    self._backgrounds: list[tuple[str, float, float | None, float]] = []
    self._ambience_snr_db: float | None = None

  # -- randomness and voices ----------------------------------------------------

  def part_rng(self) -> np.random.Generator:
    """A fresh generator for one rendered part (deterministic in the call order)."""
    return np.random.default_rng(self._part_seeds.spawn(1)[0])

  def uniform(self, low: float, high: float) -> float:
    return float(self.rng.uniform(low, high))

  def _speak(self, text: str, speaker: str) -> SpeechClip:
    """`text` in `speaker`'s voice, which is fixed for the stream once first drawn.

    The source draws a new speaker's voice itself (so its engine weights and voice
    split apply); a voice already taken by another speaker is drawn again, and
    after a few tries an unused voice is named explicitly.
    """
    if speaker in self._voices:
      return self.speech.say(text, self.part_rng(), voice=self._voices[speaker])
    taken = set(self._voices.values())
    clip = self.speech.say(text, self.part_rng())
    for _ in range(_VOICE_DRAWS):
      if clip.voice not in taken:
        break
      clip = self.speech.say(text, self.part_rng())
    else:
      unused = [v for v in self.speech.voices() if v not in taken]
      if unused:
        voice = unused[int(self.rng.integers(len(unused)))]
        clip = self.speech.say(text, self.part_rng(), voice=voice)
    self._voices[speaker] = clip.voice
    return clip

  # -- placing things -------------------------------------------------------------

  def wait(self, low: float, high: float | None = None) -> float:
    """Advances the cursor by `low` s, or by a uniform draw in [low, high); returns it."""
    self.cursor = snap(self.cursor + (low if high is None else self.uniform(low, high)))
    return self.cursor

  def wait_until(self, t: float) -> float:
    self.cursor = snap(max(self.cursor, t))
    return self.cursor

  def prepare(self, pieces: str | Sequence[str | Pause | Filler], *,
              speaker: str = "user") -> Speech:
    """Synthesizes `pieces` in `speaker`'s voice without placing it (see `place`).

    Text pieces and fillers are synthesized separately and butted together; `Pause`s
    insert silence. Every pause or filler between content words becomes a hold span.
    """
    if isinstance(pieces, str):
      pieces = [pieces]
    audio, words, fillers, holds = self._synthesize(pieces, speaker)
    return Speech(audio=audio, words=tuple(words), fillers=fillers, holds=tuple(holds),
                  speaker=speaker, voice=self._voices[speaker])

  def place(self, speech: Speech, *, at: float | None = None,
            speech_end_at: float | None = None, addressed: bool = True,
            level_offset_db: float = 0.0) -> Utterance:
    """Puts prepared speech on the stream at `at` (default: the cursor), or so that its
    last content word ends at `speech_end_at`. The cursor moves to its end if later."""
    if speech_end_at is not None:
      start = snap(speech_end_at - speech.speech_end)
    else:
      start = snap(self.cursor if at is None else at)
    if start < 0:
      raise ValueError(f"utterance {speech.words} would start before the stream ({start:.3f} s)")
    shift = lambda t: snap(start + t)  # pylint: disable=unnecessary-lambda-assignment
    level_db = self.speech_level_db + level_offset_db
    utterance = Utterance(
        start=start, audio=speech.audio,
        words=tuple(Word(w.text, shift(w.start), shift(w.end)) for w in speech.words),
        fillers=speech.fillers,
        holds=tuple(Span(shift(h.start), shift(h.end), h.kind) for h in speech.holds),
        speaker=speech.speaker, voice=speech.voice, addressed=addressed,
        gain=gain_for_level(speech.audio, level_db), level_db=level_db)
    self.utterances.append(utterance)
    self.wait_until(utterance.end)
    return utterance

  def say(self, pieces: str | Sequence[str | Pause | Filler], *, speaker: str = "user",
          at: float | None = None, speech_end_at: float | None = None,
          addressed: bool = True, level_offset_db: float = 0.0) -> Utterance:
    """`prepare` then `place`: one utterance on the stream."""
    return self.place(self.prepare(pieces, speaker=speaker), at=at,
                      speech_end_at=speech_end_at, addressed=addressed,
                      level_offset_db=level_offset_db)

  def _synthesize(self, pieces: Sequence[str | Pause | Filler], speaker: str
                  ) -> tuple[np.ndarray, list[Word], tuple[bool, ...], list[Span]]:
    """Audio, words, filler flags and hold spans of `pieces`, times from the audio's start."""
    offset = 0  # samples
    parts: list[tuple[int, np.ndarray]] = []
    words: list[Word] = []
    fillers: list[bool] = []
    holds: list[Span] = []
    hold_from: float | None = None  # set while inside a run of pauses/fillers
    hold_kind = "pause"
    last_content_end: float | None = None
    for piece in pieces:
      here = offset / SAMPLE_RATE
      if isinstance(piece, Pause):
        if hold_from is None:
          hold_from = here if last_content_end is None else last_content_end
        offset += to_sample(piece.seconds)
        continue
      is_filler = isinstance(piece, Filler)
      clip = self._speak(piece.text if is_filler else piece, speaker)
      if not clip.words:
        raise ValueError(f"speech source returned no words for {piece!r}")
      placed = [Word(w.text, here + w.start, here + w.end) for w in clip.words]
      if is_filler:
        hold_kind = "filler"
        if hold_from is None:
          hold_from = placed[0].start if last_content_end is None else last_content_end
      else:
        if hold_from is not None:
          holds.append(Span(hold_from, placed[0].start, hold_kind))
          hold_from, hold_kind = None, "pause"
        last_content_end = placed[-1].end
      words += placed
      fillers += [is_filler] * len(placed)
      parts.append((offset, np.asarray(clip.audio, np.float32)))
      offset += len(clip.audio)
    if all(fillers):
      raise ValueError(f"utterance {pieces!r} has no content words")
    audio = np.zeros(offset, np.float32)
    for part_offset, part in parts:
      audio[part_offset:part_offset + len(part)] += part
    return audio, words, tuple(fillers), holds

  def play(self, label: str, *, at: float | None = None, role: str = "event",
           level_db: float | None = None) -> SoundEvent:
    """Places one event of class `label` at `at` (or the cursor); the cursor moves past it."""
    clip = self.sounds.sample(label, self.part_rng())
    start = snap(self.cursor if at is None else at)
    if level_db is None:
      level_db = self.speech_level_db + self.uniform(*self._event_level_db)
    audio = np.asarray(clip.audio, np.float32)
    event = SoundEvent(
        start=start, audio=audio, label=clip.label, source=clip.source,
        recognisable_at=snap(start + clip.recognisable_after), role=role,
        gain=gain_for_level(audio, level_db), level_db=level_db)
    self.sound_events.append(event)
    self.wait_until(event.end)
    return event

  def background(self, label: str, snr_db: float, start: float = 0.0,
                 end: float | None = None) -> None:
    """Plays class `label` continuously under [start, end) (end None: to the stream's end)."""
    self._backgrounds.append((label, snap(start), None if end is None else snap(end), snr_db))

  @property
  def has_backgrounds(self) -> bool:
    return bool(self._backgrounds)

  def ambience(self, snr_db: float) -> None:
    """Plays a real room bed (music or ambience, the sound source's `sample_bed`) under
    the whole stream, `snr_db` below the speech; nothing if the source has no beds."""
    self._ambience_snr_db = float(snr_db)

  def _render_background(self, label: str, start: float, end: float, snr_db: float,
                         draw: Callable[[np.random.Generator], SoundClip] | None = None
                         ) -> Background:
    """`draw(rng)` gives the clips looped to fill [start, end) (default: class `label`)."""
    draw = draw or (lambda rng: self.sounds.sample(label, rng))
    need = to_sample(end) - to_sample(start)
    pieces, have = [], 0
    while have < need:
      clip = draw(self.part_rng())
      piece = effects.fade(clip.audio, to_sample(0.02), to_sample(0.02))
      if not len(piece):
        raise ValueError(f"sound source returned an empty {label!r} clip")
      pieces.append(piece)
      have += len(piece)
    audio = effects.fade(np.concatenate(pieces)[:need], to_sample(0.05), to_sample(0.05))
    return Background(start=start, audio=audio, label=label, snr_db=snr_db,
                      gain=gain_for_level(audio, self.speech_level_db - snr_db))

  def _render_ambience(self, duration: float) -> tuple[Background, ...]:
    sample_bed = getattr(self.sounds, "sample_bed", None)
    if self._ambience_snr_db is None or sample_bed is None:
      return ()
    first = sample_bed(self.part_rng(), duration)
    if first is None:
      return ()
    clips = iter([first])

    def draw(rng: np.random.Generator) -> SoundClip:
      return next(clips, None) or sample_bed(rng, duration)

    return (self._render_background(first.label, 0.0, duration, self._ambience_snr_db, draw),)

  # -- what the assistant must do ---------------------------------------------------

  def reply(self, text: str, ready_time: float, reason: str, *, kind: str = "answer",
            interrupted_at: float | None = None) -> Reply:
    """Records an expected reply, warranted from `ready_time` (s) on."""
    reply = Reply(text=text, ready_time=snap(ready_time), reason=reason, kind=kind,
                  interrupted_at=None if interrupted_at is None else snap(interrupted_at))
    self.replies.append(reply)
    return reply

  def quiet(self, start: float, end: float, kind: str) -> None:
    """Every chunk whose end falls in [start, end) must be SILENT."""
    self.quiet_spans.append(Span(snap(start), snap(end), kind))

  def hold_pauses(self, utterance: Utterance) -> None:
    """Makes the utterance's mid-utterance pauses quiet: don't cut in."""
    self.quiet_spans.extend(utterance.holds)

  def after_reply(self, reply: Reply, low: float = 0.3, high: float = 1.2) -> float:
    """Moves the cursor past the moment the reply would have been spoken, plus a gap."""
    self.wait_until(estimated_reply_end(reply))
    return self.wait(low, high)

  def finish(self, instruction: str, *, mode: str = ONLINE,
             tail: tuple[float, float] = (0.5, 1.0)) -> Timeline:
    """The composed timeline; online streams get a tail long enough for the last reply."""
    end = self.cursor
    if mode == ONLINE and self.replies:
      end = max(end, max(estimated_reply_end(r) for r in self.replies))
    duration = snap(end + self.uniform(*tail))
    replies = self.replies
    if mode == OFFLINE:
      # The answer follows the whole clip.
      replies = [dataclasses.replace(r, ready_time=duration) for r in replies]
    backgrounds = tuple(
        self._render_background(label, start, duration if stop is None else stop, snr)
        for label, start, stop, snr in self._backgrounds) + self._render_ambience(duration)
    timeline = Timeline(
        task=self.task, ability=self.ability, seed=self.seed, split=self.split, mode=mode,
        instruction=instruction, duration=duration, speech_level_db=self.speech_level_db,
        utterances=tuple(self.utterances), sounds=tuple(self.sound_events),
        backgrounds=backgrounds, replies=tuple(sorted(replies, key=lambda r: r.ready_time)),
        quiet=tuple(sorted(self.quiet_spans, key=lambda s: (s.start, s.end))))
    timeline.validate()
    return timeline


# ---------------------------------------------------------------------------- audio

PARTS: Final[tuple[str, ...]] = ("speech", "sounds", "background")


def render(timeline: Timeline, *, chunk_ms: int = DEFAULT_CHUNK_MS,
           num_chunks: int | None = None, parts: Sequence[str] = PARTS) -> np.ndarray:
  """Mixes the timeline to float32[num_chunks * chunk_samples] at 16 kHz.

  `num_chunks` defaults to the whole chunks covering the stream; the audio is
  zero-padded (or cut) to it. Each part is scaled to its level; if the mix would
  clip, everything is scaled down together (SNRs are kept). `parts` selects what to
  include (the scale is always that of the full mix), e.g. to measure an SNR.
  """
  chunk = chunk_samples_of(chunk_ms)
  if num_chunks is None:
    num_chunks = max(1, -(-timeline.num_samples // chunk))
  total = num_chunks * chunk
  unknown = set(parts) - set(PARTS)
  if unknown:
    raise ValueError(f"unknown parts {sorted(unknown)}; known: {PARTS}")
  groups = {"speech": timeline.utterances, "sounds": timeline.sounds,
            "background": timeline.backgrounds}
  mixes = {}
  for name, items in groups.items():
    mix = np.zeros(total, np.float64)
    for item in items:
      start = to_sample(item.start)
      piece = np.asarray(item.audio, np.float64)[:max(0, total - start)] * item.gain
      mix[start:start + len(piece)] += piece
    mixes[name] = mix
  full = sum(mixes.values())
  peak = float(np.max(np.abs(full))) if total else 0.0
  scale = 0.98 / peak if peak > 0.98 else 1.0
  return (sum(mixes[name] for name in parts) * scale).astype(np.float32)


# ------------------------------------------------------------------------- labels

@dataclasses.dataclass(frozen=True)
class ReplyPlan:
  """Where one reply's tokens go: `counts[i]` tokens after chunk `chunks[i]`'s `<decide>`."""

  chunks: tuple[int, ...]
  counts: tuple[int, ...]
  completed: bool  # all tokens, `<eor>` included, were emitted (False: cut by a barge-in)


@dataclasses.dataclass(frozen=True)
class Schedule:
  """Decision labels per chunk (int32[num_chunks] of `Decision`) and each reply's plan."""

  num_chunks: int
  decisions: np.ndarray
  plans: tuple[ReplyPlan, ...]


def schedule(timeline: Timeline, reply_lengths: Sequence[int], *, chunk_samples: int,
             tokens_per_chunk: int) -> Schedule:
  """Assigns reply tokens to chunks; `reply_lengths[i]` counts reply i's tokens incl. `<eor>`.

  Rules: a reply starts at the first chunk whose end reaches its ready time, or later
  if an earlier reply is still being emitted (one reply at a time; a new reply starts
  at a chunk's `<decide>`, never after an `<eor>` in the same chunk). It emits
  min(tokens_per_chunk, remaining) tokens per chunk: SPEAK on each of those chunks.
  If the user talks over it, the chunk whose end reaches `reply.stop_time` is SILENT
  and the rest of the reply is dropped (no `<eor>`). The stream is extended past the
  timeline's duration if the last reply needs more chunks.
  """
  if len(reply_lengths) != len(timeline.replies):
    raise ValueError(f"{len(reply_lengths)} reply lengths for {len(timeline.replies)} replies")
  if tokens_per_chunk < 1:
    raise ValueError(f"tokens_per_chunk must be >= 1, got {tokens_per_chunk}")
  replies = timeline.replies
  pending = collections.deque(sorted(range(len(replies)), key=lambda i: replies[i].ready_time))
  min_chunks = max(1, -(-timeline.num_samples // chunk_samples))
  chunks: dict[int, list[int]] = {i: [] for i in range(len(replies))}
  counts: dict[int, list[int]] = {i: [] for i in range(len(replies))}
  completed = dict.fromkeys(range(len(replies)), False)
  decisions: list[int] = []

  def reached(t: float | None, end_sample: int) -> bool:
    return t is not None and end_sample >= to_sample(t)

  active, remaining, c = None, 0, 0
  while c < min_chunks or pending or active is not None:
    end_sample = (c + 1) * chunk_samples
    emitted = 0
    if active is not None and reached(replies[active].stop_time, end_sample):
      active = None  # yields to the barge-in: this chunk is SILENT
    else:
      while active is None and pending and reached(replies[pending[0]].ready_time, end_sample):
        candidate = pending.popleft()
        if not reached(replies[candidate].stop_time, end_sample):
          active, remaining = candidate, int(reply_lengths[candidate])
        # else: talked over before it could start; it is never spoken.
      if active is not None:
        emitted = min(tokens_per_chunk, remaining)
        chunks[active].append(c)
        counts[active].append(emitted)
        remaining -= emitted
        if remaining == 0:
          completed[active] = True
          active = None
    decisions.append(int(stream_format.Decision.SPEAK if emitted else
                         stream_format.Decision.SILENT))
    c += 1
  plans = tuple(ReplyPlan(tuple(chunks[i]), tuple(counts[i]), completed[i])
                for i in range(len(replies)))
  return Schedule(num_chunks=c, decisions=np.asarray(decisions, np.int32), plans=plans)
