"""The 28 sub-tasks (7 abilities x 4) of DESIGN.md as small specs over shared scenarios.

Each `SubTask` is a scenario function plus parameters; `SubTask.build(seed, speech,
sounds, cfg)` composes a `Timeline` with a `Composer`, deterministically from the seed
and independent of which voice or sound bank is used (timing comes from the sources'
word timings and `recognisable_after`). Replies come from the closed worlds of
`worlds.py`, or, with `TaskConfig.general_sentences` / `recorded_lines`, from general
English sentences and real recorded lines (`real_speech.py`).

Ready times (when a reply becomes warranted; see `timeline.py` for the labels):

* offline (ability 1): the end of the clip.
* transcription: each word's end (one reply per word).
* questions, commands, wake-word questions, cues, instruction changes: the end of the
  utterance's last content word (never a pause or filler inside it).
* sounds to react to / alerts: the event's onset + its `recognisable_after`.
* counting: the N-th target event's recognisable time.
* a question about a sound that is still playing: max(question end, sound recognisable).
* barge-in: the reply is ready at the question's end and interrupted at the onset of
  the user's interrupting speech.

Quiet spans (must stay SILENT): pauses and fillers inside questions, distractor and
benign sounds, speech not addressed to the assistant, the old target after an
instruction change, the user's "stop" after a barge-in.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import numpy as np

from audio_interaction.corpus import effects, real_speech, worlds
from audio_interaction.corpus.clips import SoundClip, SoundSource, SpeechClip, SpeechSource, Word
from audio_interaction.corpus.timeline import (
    BARGE_IN_AUDIBLE_S, DEFAULT_CHUNK_MS, DEFAULT_LEAD_IN, OFFLINE, ONLINE, Composer, Filler,
    Pause, Speech, Timeline)
from audio_interaction.data.tokenizer import normalize_text
from audio_interaction.corpus.worlds import choose
from audio_interaction.stream_format import ABILITIES



# Questions about the scene: a bed nobody chose would change their answers.
ENVIRONMENT_ABILITY: Final[int] = ABILITIES.index("environment_answers") + 1


@dataclasses.dataclass(frozen=True)
class TaskConfig:
  """Knobs shared by all builders.

  `chunk_ms` is used only to place barge-ins and backchannels after the reply has
  audibly started (the first SPEAK chunk ends within one chunk of the ready time);
  the timeline itself serializes at any chunk size.
  """

  split: str = worlds.TRAIN
  heldout_fraction: float = worlds.DEFAULT_HELDOUT_FRACTION
  speech_level_db: tuple[float, float] = (-30.0, -20.0)
  # Quiet before the stream's first sound (s). A live stream starts whenever the
  # microphone opens, often long before anyone speaks.
  lead_in: tuple[float, float] = DEFAULT_LEAD_IN
  event_level_db: tuple[float, float] = (-8.0, 2.0)  # relative to speech
  background_snr_db: tuple[float, float] = (5.0, 20.0)  # noisy ASR, optional beds
  scene_snr_db: tuple[float, float] = (0.0, 10.0)  # a scene asked about must be audible
  negative_rate: float = 0.15  # proactive streams with benign sounds only
  # A real room bed (music, ambience) under the whole stream, when the sound source
  # has beds; never where the scene is asked about or a bed is already chosen.
  ambience_probability: float = 0.0
  ambience_snr_db: tuple[float, float] = (12.0, 35.0)
  # Dictation from general English (`texts.dialogue_sentences`) instead of a closed
  # world's sentence, with this probability; 0 draws nothing from the rng.
  general_sentences: tuple[str, ...] = ()
  general_text_probability: float = 0.0
  # Real recorded lines (`real_speech`) as the clip of offline transcription and as the
  # question with a pause inside, with this probability; 0 draws nothing from the rng.
  recorded_lines: tuple[real_speech.RecordedLine, ...] = ()
  recorded_speech_probability: float = 0.0
  # The per-utterance effects the TTS voices get (speed, pitch, formants, mic, room,
  # telephone, noise), for the recorded lines too; None leaves them as recorded.
  recorded_randomization: effects.Randomization | None = None
  chunk_ms: int = DEFAULT_CHUNK_MS


# A scenario composes the stream on the composer and returns the instruction text.
Scenario = Callable[..., str]


@dataclasses.dataclass(frozen=True)
class SubTask:
  """One of the 28 sub-tasks: a scenario and its parameters."""

  name: str
  ability: int
  summary: str
  scenario: Scenario
  params: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  mode: str = ONLINE

  def build(self, seed: int, speech: SpeechSource, sounds: SoundSource,
            cfg: TaskConfig | None = None) -> Timeline:
    """Composes one timeline, deterministic in (name, seed, sources, cfg)."""
    cfg = cfg or TaskConfig()
    composer = Composer(
        task=self.name, ability=self.ability, seed=seed, split=cfg.split,
        speech=speech, sounds=sounds, speech_level_db=cfg.speech_level_db,
        event_level_db=cfg.event_level_db, lead_in=cfg.lead_in)
    instruction = self.scenario(composer, cfg, **self.params)
    if (cfg.ambience_probability and self.ability != ENVIRONMENT_ABILITY
        and not composer.has_backgrounds
        and composer.uniform(0.0, 1.0) < cfg.ambience_probability):
      composer.ambience(composer.uniform(*cfg.ambience_snr_db))
    tail = (0.2, 0.5) if self.mode == OFFLINE else (0.5, 1.0)
    return composer.finish(instruction, mode=self.mode, tail=tail)


# ------------------------------------------------------------------- shared helpers

def _labels(c: Composer, candidates: Sequence[str], *, exclude: Sequence[str] = ()) -> list[str]:
  """Classes of `candidates` that the sound source has; a clear error if none."""
  have = set(c.sounds.labels())
  found = [label for label in candidates if label in have and label not in exclude]
  if not found:
    raise ValueError(f"sub-task {c.task!r} needs a sound of one of {list(candidates)} "
                     f"(excluding {list(exclude)}); the sound source has {sorted(have)}")
  return found


def _event_labels(c: Composer, *, exclude: Sequence[str] = ()) -> list[str]:
  """Benign classes (nothing needing attention) the source has."""
  return _labels(c, worlds.BENIGN_LABELS, exclude=exclude)


def _countable_labels(c: Composer) -> list[str]:
  """Classes whose events are counted one clip = one event."""
  return _labels(c, [label for label in worlds.SOUNDS if worlds.countable(label)])


def _split_points(words: Sequence[str]) -> list[int]:
  """Word indices i such that words[:i] is clearly unfinished (a pause there is mid-turn)."""
  return [i for i in range(1, len(words))
          if words[i - 1] in worlds.DANGLING_WORDS or i == len(words) - 1]


def _with_pause(c: Composer, text: str, seconds: tuple[float, float]) -> list:
  words = text.split()
  i = choose(c.rng, _split_points(words))
  return [" ".join(words[:i]), Pause(c.uniform(*seconds)), " ".join(words[i:])]


def _recorded(c: Composer, cfg: TaskConfig, pause_s: tuple[float, float] | None = None
              ) -> tuple[Speech, real_speech.RecordedLine] | None:
  """A recorded line as speech (with a pause inside when `pause_s` is given), and the
  line, with `cfg.recorded_speech_probability`, else None; draws from the rng only
  when p > 0."""
  pool = cfg.recorded_lines
  if pause_s is not None:
    pool = tuple(line for line in pool if line.pause_cut is not None)
  if not (cfg.recorded_speech_probability > 0 and pool):
    return None
  if c.rng.random() >= cfg.recorded_speech_probability:
    return None
  line = choose(c.rng, pool)
  pause = None if pause_s is None else c.uniform(*pause_s)
  effects_rng = (None if cfg.recorded_randomization is None
                 else np.random.default_rng(int(c.rng.integers(2**31))))
  speech = real_speech.recorded_speech(line, pause_s=pause,
                                       randomization=cfg.recorded_randomization,
                                       rng=effects_rng)
  return None if speech is None else (speech, line)


def _with_fillers(c: Composer, text: str) -> list:
  words = text.split()
  points = _split_points(words)
  count = min(len(points), int(c.rng.integers(1, 3)))
  chosen = sorted(int(p) for p in c.rng.choice(points, size=count, replace=False))
  pieces: list = []
  previous = 0
  for i in chosen:
    pieces += [" ".join(words[previous:i]), Pause(c.uniform(0.1, 0.3)),
               Filler(choose(c.rng, worlds.FILLERS)), Pause(c.uniform(0.15, 0.5))]
    previous = i
  return pieces + [" ".join(words[previous:])]


def _play_quiet(c: Composer, label: str, kind: str, gap: tuple[float, float] = (0.4, 1.5)):
  """Plays an event that must not be answered, then leaves a gap."""
  event = c.play(label, role=kind)
  c.quiet(event.start, event.end, kind)
  c.wait(*gap)
  return event


# Instructions of the chat sub-tasks (speech is to be answered) and of the proactive ones
# (watch for sounds that need attention; speech is not).
CHAT_INSTRUCTIONS = (
    "You are a helpful voice assistant. Answer briefly.",
    "Answer the user's questions and commands in a few words.",
    "You are a voice assistant: listen, and reply when the user is done speaking.")
_LISTEN = ("You are an assistant who listens to the surroundings. Answer briefly.",
           "Answer questions about what you hear around you, in a few words.")
MONITOR_INSTRUCTIONS = (
    "Let me know if anything needs my attention.",
    "Keep an ear on the house and tell me if something needs attention.",
    "Warn me about anything important you hear; ignore ordinary sounds.")


# ----------------------------------------------------------------------- scenarios

def transcribe(c: Composer, cfg: TaskConfig, *, offline: bool = False, noise: bool = False,
               long_pauses: bool = False, speakers: int = 1) -> str:
  """Dictation: one reply per word, ready at the word's end (offline: the transcript)."""
  sentences = worlds.transcription_sentences(cfg.split, cfg.heldout_fraction)
  count = 1 if offline else int(c.rng.integers(1, 4))
  utterances = []
  for i in range(count):
    text = choose(c.rng, sentences)
    if cfg.general_text_probability > 0 and cfg.general_sentences and (
        c.rng.random() < cfg.general_text_probability):
      text = choose(c.rng, cfg.general_sentences)
    recorded = _recorded(c, cfg) if offline else None
    if recorded is not None:
      utterance = c.place(recorded[0])
    else:
      pieces = _with_pause(c, text, (0.8, 2.0)) if long_pauses else text
      utterance = c.say(pieces, speaker=f"speaker{i % speakers}")
    utterances.append(utterance)
    if not offline:
      for word in utterance.content_words:
        if normalize_text(word.text):
          c.reply(normalize_text(word.text), word.end, f"the word {word.text!r} ended",
                  kind="transcript")
    c.wait(0.4, 1.5)
  if noise:
    c.background(choose(c.rng, _labels(c, worlds.BACKGROUND_LABELS)),
                 c.uniform(*cfg.background_snr_db))
  if offline:
    c.reply(" ".join(u.text for u in utterances), 0.0, "end of clip", kind="transcript")
    return choose(c.rng, ("Transcribe the audio.", "Write down what is said.",
                          "What does the speaker say?"))
  return choose(c.rng, ("Transcribe the speech as you hear it.",
                        "Write down every word as soon as it is spoken.",
                        "Live captions: transcribe what people say."))


def describe_sounds(c: Composer, cfg: TaskConfig, *, question: str) -> str:
  """Offline clips of sound events: name one, count one class, or a question about order."""
  del cfg
  if question == "label":
    label = choose(c.rng, _labels(c, list(worlds.SOUNDS)))
    c.play(label)
    c.reply(worlds.sound_name(label), 0.0, "end of clip")
    return choose(c.rng, ("What sound is this?", "Name the sound in the clip."))
  if question == "count":
    label = choose(c.rng, _countable_labels(c))
    n = int(c.rng.integers(1, 6))
    others = [x for x in c.sounds.labels() if x in worlds.SOUNDS and x != label]
    distractor_at = int(c.rng.integers(0, n + 1)) if others and c.rng.random() < 0.5 else -1
    for i in range(n + 1):
      if i == distractor_at:
        c.play(choose(c.rng, others), role="distractor")
        c.wait(0.3, 1.0)
      if i < n:
        c.play(label, role="target")
        c.wait(0.3, 1.0)
    c.reply(worlds.number_to_words(n), 0.0, "end of clip")
    return f"How many {worlds.sound_info(label).plural} are in the clip?"
  if question == "order":
    pool = _labels(c, list(worlds.SOUNDS))
    count = min(len(pool), int(c.rng.integers(2, 4)))
    labels = [pool[int(i)] for i in c.rng.choice(len(pool), size=count, replace=False)]
    for label in labels:
      c.play(label)
      c.wait(0.3, 1.0)
    kind = choose(c.rng, ("first", "last", "present", "absent"))
    if kind in ("first", "last"):
      c.reply(worlds.sound_name(labels[0 if kind == "first" else -1]), 0.0, "end of clip")
      return f"Which sound comes {kind} in the clip?"
    absent = [x for x in pool if x not in labels]
    asked = choose(c.rng, labels) if kind == "present" or not absent else choose(c.rng, absent)
    c.reply("yes" if asked in labels else "no", 0.0, "end of clip")
    return f"Is there {worlds.sound_name(asked)} in the clip? Answer yes or no."
  raise ValueError(f"unknown question {question!r}")


def follow_keyword(c: Composer, cfg: TaskConfig) -> str:
  """Say "heard <kw>" as soon as the keyword has been spoken; other sentences stay quiet."""
  sentences = worlds.transcription_sentences(cfg.split, cfg.heldout_fraction)
  target = choose(c.rng, [s for s in sentences if _keywords(s)])
  keyword = choose(c.rng, _keywords(target))
  others = [s for s in sentences if keyword not in s.split()]
  count = int(c.rng.integers(2, 5))
  target_at = int(c.rng.integers(count))
  for i in range(count):
    utterance = c.say(target if i == target_at else choose(c.rng, others))
    if i != target_at:
      c.quiet(utterance.start, utterance.end, "no keyword")
      c.wait(0.4, 1.2)
      continue
    word = next((w for w in utterance.content_words if normalize_text(w.text) == keyword), None)
    if word is None:
      raise ValueError(f"speech source's words {utterance.content_words} lack {keyword!r}")
    reply = c.reply(f"heard {keyword}", word.end, f"the keyword {keyword!r} ended")
    c.after_reply(reply)
  return f'Whenever you hear the word "{keyword}", say "heard {keyword}".'


def _keywords(sentence: str) -> list[str]:
  words = sentence.split()
  return [w for w in words if len(w) >= 3 and w not in worlds.STOPWORDS and words.count(w) == 1]


def follow_sound(c: Composer, cfg: TaskConfig) -> str:
  """React when a named class is recognisable; other events before it stay quiet."""
  del cfg
  target = choose(c.rng, _event_labels(c))
  others = _event_labels(c, exclude=(target,))
  for _ in range(int(c.rng.integers(1, 4))):
    _play_quiet(c, choose(c.rng, others), "distractor")
  event = c.play(target, role="target")
  c.reply(worlds.heard_message(target), event.recognisable_at, f"{target} recognisable")
  return worlds.listen_instruction(target)


def follow_count(c: Composer, cfg: TaskConfig) -> str:
  """Report when the N-th event of a class has been recognised (distractors interleaved)."""
  del cfg
  target = choose(c.rng, _countable_labels(c))
  others = _event_labels(c, exclude=(target,))
  n = int(c.rng.integers(2, 6))
  for k in range(n):
    if c.rng.random() < 0.4:
      _play_quiet(c, choose(c.rng, others), "distractor", gap=(0.3, 1.0))
    event = c.play(target, role="target")
    if k < n - 1:
      c.quiet(event.start, event.end, f"count {k + 1} of {n}")
      c.wait(0.3, 1.2)
  c.reply(f"that is {worlds.count_phrase(n, target)}", event.recognisable_at,
          f"target {n} of {n} recognisable")
  return f"Tell me when you have heard {worlds.count_phrase(n, target)}."


def summary_at_cue(c: Composer, cfg: TaskConfig) -> str:
  """List the sounds heard so far when the user says the cue word (history)."""
  del cfg
  cue = choose(c.rng, worlds.CUE_WORDS)
  pool = _event_labels(c)
  count = min(len(pool), int(c.rng.integers(2, 4)))
  labels = [pool[int(i)] for i in c.rng.choice(len(pool), size=count, replace=False)]
  for label in labels:
    _play_quiet(c, label, "listening")
  utterance = c.say(choose(c.rng, (cue, f"okay, {cue}", f"{cue} please")))
  c.reply(worlds.list_sounds(labels), utterance.speech_end, "the cue ended")
  return f'When I say "{cue}", list the sounds you heard, in order.'


def chat(c: Composer, cfg: TaskConfig, *, turns: tuple[int, int] = (1, 1),
         pause: bool = False, fillers: bool = False) -> str:
  """Questions and commands; answered at the end of the question, not at a pause inside it."""
  item = worlds.sample_question(c.rng, cfg.split, heldout_fraction=cfg.heldout_fraction)
  for turn in range(int(c.rng.integers(turns[0], turns[1] + 1))):
    if turn:
      item = worlds.followup(item, c.rng, cfg.split, cfg.heldout_fraction)
    recorded = _recorded(c, cfg, (0.6, 1.6)) if pause and not turn else None
    if recorded is not None:
      utterance = c.place(recorded[0])
      c.hold_pauses(utterance)
      c.after_reply(c.reply(recorded[1].reply, utterance.speech_end, "turn ended"))
      break
    if pause:
      pieces = _with_pause(c, item.question, (0.6, 1.6))
    elif fillers:
      pieces = _with_fillers(c, item.question)
    else:
      pieces = item.question
    utterance = c.say(pieces)
    c.hold_pauses(utterance)
    reply = c.reply(item.answer, utterance.speech_end, f"turn {turn + 1} ended")
    c.after_reply(reply)
  return choose(c.rng, CHAT_INSTRUCTIONS)


def proactive(c: Composer, cfg: TaskConfig, *, alerts: Sequence[str]) -> str:
  """Benign sounds stay quiet; an alert is announced as soon as it is recognisable."""
  alerts = _labels(c, alerts)  # fail early, also for streams without an alert
  if c.rng.random() < 0.4:
    c.background(choose(c.rng, _labels(c, worlds.BACKGROUND_LABELS)),
                 c.uniform(*cfg.background_snr_db))
  benign = _event_labels(c)
  for _ in range(int(c.rng.integers(1, 4))):
    _play_quiet(c, choose(c.rng, benign), "benign")
  if c.rng.random() >= cfg.negative_rate:
    label = choose(c.rng, alerts)
    event = c.play(label, role="alert")
    reply = c.reply(worlds.alert_message(label), event.recognisable_at,
                    f"{label} recognisable", kind="alert")
    if c.rng.random() < 0.5:
      c.after_reply(reply)
      _play_quiet(c, choose(c.rng, benign), "benign")
  return choose(c.rng, MONITOR_INSTRUCTIONS)


def ask_about_sound(c: Composer, cfg: TaskConfig, *, when: str) -> str:
  """Questions about an event: after it ("what was that"), during it, or how long ago."""
  del cfg
  label = choose(c.rng, _event_labels(c))
  name = worlds.sound_name(label)
  if when == "after":
    event = c.play(label)
    c.quiet(event.start, event.end, "not asked yet")
    c.wait(0.5, 3.0)
    utterance = c.say(choose(c.rng, ("what was that sound", "what was that",
                                     "what did you just hear", "what was that noise")))
    c.reply(name, utterance.speech_end, "question ended (answer from history)")
  elif when == "during":
    event = c.play(label, at=c.cursor)
    utterance = c.say(choose(c.rng, ("what is that sound", "what is that noise",
                                     "what am i hearing right now")),
                      at=max(0.0, event.start + c.uniform(-0.6, 0.6)))
    c.reply(name, max(utterance.speech_end, event.recognisable_at),
            "question ended and sound recognisable")
  elif when == "since":
    event = c.play(label)
    c.quiet(event.start, event.end, "not asked yet")
    question = c.prepare(f"how long ago did you hear {name}")
    # Place the question so that its end is a whole number of seconds (+-0.25) after
    # the onset, and late enough to start after the event.
    earliest = event.end - event.start + 0.3 + question.speech_end + 0.25
    seconds = max(int(c.rng.integers(2, 10)), math.ceil(earliest))
    utterance = c.place(question, speech_end_at=event.start + seconds + c.uniform(-0.25, 0.25))
    c.reply(worlds.seconds_ago(round(utterance.speech_end - event.start)),
            utterance.speech_end, "question ended (elapsed time from history)")
  else:
    raise ValueError(f"unknown when {when!r}")
  return choose(c.rng, _LISTEN)


def scene_question(c: Composer, cfg: TaskConfig) -> str:
  """A yes/no question about the ongoing background ("is it raining?")."""
  scenes = _labels(c, [x for x in worlds.BACKGROUND_LABELS if worlds.sound_info(x).scene])
  label = choose(c.rng, scenes)
  question, yes, no = worlds.sound_info(label).scene
  present = c.rng.random() < 0.5
  others = [x for x in _labels(c, worlds.BACKGROUND_LABELS) if x != label]
  if present:
    c.background(label, c.uniform(*cfg.scene_snr_db))
  elif others and c.rng.random() < 0.7:
    c.background(choose(c.rng, others), c.uniform(*cfg.scene_snr_db))
  c.wait(1.0, 2.5)  # the scene has been heard for a while before the question
  utterance = c.say(question)
  c.reply(yes if present else no, utterance.speech_end, "question ended")
  return choose(c.rng, _LISTEN)


def long_reply(c: Composer, cfg: TaskConfig, *, interrupt: bool) -> str:
  """A long answer the user talks over: "stop" (yield), or "uh-huh" (keep going)."""
  item = choose(c.rng, worlds.items("counting", cfg.split, cfg.heldout_fraction))
  question = c.say(item.question)
  ready = question.speech_end
  # The user reacts once the reply is audible: it starts within a chunk of `ready`.
  onset = ready + cfg.chunk_ms / 1000 + c.uniform(0.1, 0.4)
  if not interrupt:
    c.reply(item.answer, ready, "question ended")
    for _ in range(int(c.rng.integers(1, 3))):
      c.say(choose(c.rng, worlds.BACKCHANNELS), at=onset, level_offset_db=c.uniform(-6, 0))
      onset = c.cursor + c.uniform(0.8, 2.0)
    return choose(c.rng, CHAT_INSTRUCTIONS)
  if c.rng.random() < 0.5:
    stop = c.say(choose(c.rng, worlds.STOP_PHRASES), at=onset)
    c.reply(item.answer, ready, "question ended", interrupted_at=stop.speech_start)
    c.quiet(stop.speech_start + BARGE_IN_AUDIBLE_S, stop.end + 1.0, "yield")
    c.wait(1.0, 1.5)
  else:
    other = worlds.sample_question(c.rng, cfg.split, heldout_fraction=cfg.heldout_fraction)
    new = c.say(f"actually, {other.question}", at=onset)
    c.reply(item.answer, ready, "question ended", interrupted_at=new.speech_start)
    c.quiet(new.speech_start + BARGE_IN_AUDIBLE_S, new.speech_end, "yield")
    c.after_reply(c.reply(other.answer, new.speech_end, "new question ended"))
  return choose(c.rng, CHAT_INSTRUCTIONS)


def addressed_only(c: Composer, cfg: TaskConfig) -> str:
  """Answer only speech addressed with the wake word; others' questions stay quiet."""
  wake = choose(c.rng, worlds.WAKE_WORDS)
  count = int(c.rng.integers(1, 3))
  addressed_at = int(c.rng.integers(count + 1))
  for i in range(count + 1):
    item = worlds.sample_question(c.rng, cfg.split, heldout_fraction=cfg.heldout_fraction)
    if i == addressed_at:
      utterance = c.say(f"{wake}, {item.question}")
      c.after_reply(c.reply(item.answer, utterance.speech_end, "addressed question ended"))
      continue
    name = choose(c.rng, worlds.BYSTANDER_NAMES)
    speaker = choose(c.rng, ("user", "bystander"))
    utterance = c.say(f"{name}, {item.question}", speaker=speaker, addressed=False,
                      level_offset_db=c.uniform(-6.0, 0.0))
    c.quiet(utterance.start, utterance.end + 0.8, "not addressed")
    c.wait(1.0, 2.0)
  return (f'Only answer when someone addresses you as "{wake}". '
          "Ignore speech meant for other people.")


def instruction_change(c: Composer, cfg: TaskConfig) -> str:
  """The user changes what to listen for mid-stream; the old target then stays quiet."""
  del cfg
  old = choose(c.rng, _event_labels(c))
  new = choose(c.rng, _event_labels(c, exclude=(old,)))
  if c.rng.random() < 0.5:
    _play_quiet(c, new, "not the target yet")
  event = c.play(old, role="target")
  c.after_reply(c.reply(worlds.heard_message(old), event.recognisable_at,
                        f"{old} recognisable"))
  change = c.say(f"from now on, tell me when you hear {worlds.sound_name(new)} instead")
  c.after_reply(c.reply(f"ok, i will listen for {worlds.sound_name(new)}", change.speech_end,
                        "instruction change ended"))
  _play_quiet(c, old, "old target")
  event = c.play(new, role="target")
  c.reply(worlds.heard_message(new), event.recognisable_at, f"{new} recognisable")
  return worlds.listen_instruction(old)


def demo_tour(c: Composer, cfg: TaskConfig) -> str:
  """The demo's stream: a question with a long pause inside, an alarm, then a question
  whose long answer the user talks over ("stop", or a new question: barge-in).

  Not a training sub-task: it strings three scenarios together under one instruction,
  so it shows the whole loop in one picture (and how a model copes with a mix it was
  not trained on).
  """
  chat(c, cfg, pause=True)
  c.wait(0.8, 1.5)
  alarm = choose(c.rng, _labels(c, worlds.ALARM_LABELS))
  event = c.play(alarm, role="alert")
  c.after_reply(c.reply(worlds.alert_message(alarm), event.recognisable_at,
                        f"{alarm} recognisable", kind="alert"))
  long_reply(c, cfg, interrupt=True)
  return ("You are a helpful voice assistant. Answer briefly, and tell me at once "
          "if something needs my attention.")


# The demo's stream (`demo_tour`), built like a sub-task but never trained on.
DEMO_TOUR: Final[SubTask] = SubTask("demo_tour", 4, "question with a pause, alarm, barge-in",
                                    demo_tour)


# ------------------------------------------------------------------------ registry

def _specs() -> list[SubTask]:
  s = SubTask
  return [
      s("offline_asr", 1, "transcribe a clip", transcribe, {"offline": True}, OFFLINE),
      s("offline_sound_label", 1, "name the sound event in a clip", describe_sounds,
        {"question": "label"}, OFFLINE),
      s("offline_count_events", 1, "count events of one class in a clip", describe_sounds,
        {"question": "count"}, OFFLINE),
      s("offline_clip_qa", 1, "a question about the sounds of a clip", describe_sounds,
        {"question": "order"}, OFFLINE),
      s("asr_clean", 2, "streaming transcription", transcribe),
      s("asr_noisy", 2, "streaming transcription over noise or music", transcribe,
        {"noise": True}),
      s("asr_long_pauses", 2, "streaming transcription with long pauses", transcribe,
        {"long_pauses": True}),
      s("asr_two_speakers", 2, "streaming transcription of two alternating speakers",
        transcribe, {"speakers": 2}),
      s("follow_keyword", 3, "react to a keyword", follow_keyword),
      s("follow_sound_class", 3, "react to a sound class", follow_sound),
      s("follow_count", 3, "count events and report at N", follow_count),
      s("follow_summary_cue", 3, "summarize the sounds heard at a cue", summary_at_cue),
      s("chat_single", 4, "one question or command", chat),
      s("chat_multi_turn", 4, "follow-ups that depend on earlier turns", chat,
        {"turns": (2, 3)}),
      s("chat_mid_pause", 4, "a long pause inside the question: don't cut in", chat,
        {"pause": True}),
      s("chat_fillers", 4, "hesitations and fillers inside the question", chat,
        {"fillers": True}),
      s("alert_alarm", 5, "alarm or siren", proactive, {"alerts": worlds.ALARM_LABELS}),
      s("alert_door", 5, "doorbell or knock", proactive, {"alerts": worlds.DOOR_LABELS}),
      s("alert_breakage", 5, "glass breaking or crash", proactive,
        {"alerts": worlds.BREAKAGE_LABELS}),
      s("alert_baby_dog", 5, "baby crying or dog barking", proactive,
        {"alerts": worlds.BABY_DOG_LABELS}),
      s("env_what_sound", 6, '"what was that sound?" after the sound', ask_about_sound,
        {"when": "after"}),
      s("env_scene_question", 6, '"is it raining?"-type questions', scene_question),
      s("env_speech_and_event", 6, "a question while the sound plays", ask_about_sound,
        {"when": "during"}),
      s("env_time_since", 6, "time since an event", ask_about_sound, {"when": "since"}),
      s("control_barge_in", 7, "the user talks over a reply: stop", long_reply,
        {"interrupt": True}),
      s("control_not_addressed", 7, "speech not addressed to the assistant", addressed_only),
      s("control_backchannel", 7, 'backchannels ("uh-huh") do not stop a reply', long_reply,
        {"interrupt": False}),
      s("control_instruction_change", 7, "the instruction changes mid-stream",
        instruction_change),
  ]


SUBTASKS: Final[dict[str, SubTask]] = {spec.name: spec for spec in _specs()}


def subtasks_of(ability: int) -> list[SubTask]:
  return [spec for spec in SUBTASKS.values() if spec.ability == ability]


def build(name: str, seed: int, speech: SpeechSource, sounds: SoundSource,
          cfg: TaskConfig | None = None) -> Timeline:
  """Builds sub-task `name` (see `SUBTASKS`, or "demo_tour": `DEMO_TOUR`) from `seed`."""
  if name == DEMO_TOUR.name:
    return DEMO_TOUR.build(seed, speech, sounds, cfg)
  if name not in SUBTASKS:
    raise KeyError(f"unknown sub-task {name!r}; known: {list(SUBTASKS)} and "
                   f"{DEMO_TOUR.name!r}")
  return SUBTASKS[name].build(seed, speech, sounds, cfg)


# ------------------------------------------------------------- tokenizer corpus

class _TextOnlySpeech:
  """Silent 'speech' with plausible word timings: composes streams for their text only."""

  def say(self, text: str, rng: np.random.Generator, voice: str | None = None) -> SpeechClip:
    del rng, voice
    words, t = [], 0.0
    for word in text.split():
      words.append(Word(word, t, t + 0.3))
      t += 0.35
    return SpeechClip(np.zeros(int(t * 16000) + 1, np.float32), tuple(words), "text")

  def voices(self) -> tuple[str, ...]:
    return ("text", "text2")


class _TextOnlySounds:

  def sample(self, label: str, rng: np.random.Generator) -> SoundClip:
    del rng
    return SoundClip(np.zeros(8000, np.float32), label, "text", 0.2)

  def labels(self) -> tuple[str, ...]:
    return tuple(worlds.SOUNDS)


def training_texts(examples_per_task: int = 40, cfg: TaskConfig | None = None) -> list[str]:
  """Texts a tokenizer should cover: every world text, plus the instructions, utterances
  and replies of `examples_per_task` composed streams per sub-task (text only, no audio)."""
  texts = worlds.all_texts()
  speech, sounds = _TextOnlySpeech(), _TextOnlySounds()
  for spec in SUBTASKS.values():
    for seed in range(examples_per_task):
      timeline = spec.build(seed, speech, sounds, cfg)
      texts.append(timeline.instruction)
      texts += [" ".join(w.text for w in u.words) for u in timeline.utterances]
      texts += [r.text for r in timeline.replies]
  return texts
