"""What the corpus builder asks of its audio sources: speech with word timings, and sounds.

Implementations live in `speech.py` (TTS engines) and `sounds.py` (recordings and
procedural sounds). All audio is float32 mono at `SAMPLE_RATE`.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np

from audio_interaction.stream_format import SAMPLE_RATE


@dataclasses.dataclass(frozen=True)
class Word:
  """One word of a rendered utterance; times in seconds from the clip's start."""

  text: str
  start: float
  end: float


@dataclasses.dataclass(frozen=True)
class SpeechClip:
  """A rendered utterance: `audio` float32[n] at 16 kHz and its exact word timings."""

  audio: np.ndarray
  words: tuple[Word, ...]
  voice: str

  @property
  def duration(self) -> float:
    return len(self.audio) / SAMPLE_RATE


@dataclasses.dataclass(frozen=True)
class SoundClip:
  """A sound event: `audio` float32[n] at 16 kHz, its event class and where it came from.

  `recognisable_after` is the time (s, from the clip's start) after which a listener
  can name the sound: e.g. the second beep of an alarm, not the first 10 ms.
  """

  audio: np.ndarray
  label: str
  source: str
  recognisable_after: float

  @property
  def duration(self) -> float:
    return len(self.audio) / SAMPLE_RATE


class SpeechSource(Protocol):
  """Turns text into speech with word timings; deterministic given `rng`."""

  def say(self, text: str, rng: np.random.Generator, voice: str | None = None) -> SpeechClip:
    ...

  def voices(self) -> tuple[str, ...]:
    ...


class SoundSource(Protocol):
  """Produces sound events of named classes; deterministic given `rng`."""

  def sample(self, label: str, rng: np.random.Generator) -> SoundClip:
    ...

  def labels(self) -> tuple[str, ...]:
    ...
