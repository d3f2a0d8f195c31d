"""Shared fixtures: tiny deterministic audio sources with exact timings.

`ToneSpeech` renders each word as a tone burst whose length grows with the word, with
random gaps from the caller's generator; `ToneSounds` renders each event class as a
short beep pattern. They implement the `sources.py` Protocols, so the composer is
tested without any TTS engine or sound bank (its timing must not depend on the voice).
"""

from __future__ import annotations

import os
import tempfile
import zlib

import numpy as np
import pytest

from audio_interaction.apps import cpu_host
from audio_interaction.corpus import worlds
from audio_interaction.stream_format import SAMPLE_RATE
from audio_interaction.corpus.clips import SoundClip, SpeechClip, Word


def _tone(freq: float, seconds: float, amplitude: float = 0.3) -> np.ndarray:
  t = np.arange(int(round(seconds * SAMPLE_RATE))) / SAMPLE_RATE
  ramp = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.005) if len(t) else t
  return (amplitude * ramp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


# Tests start many processes that compile the same small programs (a run, the run
# that resumes it, ...): a persistent compilation cache shared by the session and its
# subprocesses turns the repeats into cache hits. Numbers are unaffected.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), "audio_interaction_test_jax_cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


class ToneSpeech:
  """One tone burst per word (50 ms + 25 ms per letter), 40-120 ms gaps; exact timings."""

  _VOICES = {"tone_low": 180.0, "tone_mid": 260.0, "tone_high": 340.0}

  def say(self, text: str, rng: np.random.Generator, voice: str | None = None) -> SpeechClip:
    if voice is None:
      voice = self.voices()[int(rng.integers(len(self._VOICES)))]
    base = self._VOICES[voice]
    pieces, words, t = [], [], 0.05
    pieces.append(np.zeros(int(round(t * SAMPLE_RATE)), np.float32))
    for word in text.split():
      gap = int(round(rng.uniform(0.04, 0.12) * SAMPLE_RATE))
      length = int(round((0.05 + 0.025 * len(word)) * SAMPLE_RATE))
      freq = base * (1 + (zlib.crc32(word.encode()) % 7) / 10)
      pieces.append(_tone(freq, length / SAMPLE_RATE))
      words.append(Word(word, t, t + length / SAMPLE_RATE))
      pieces.append(np.zeros(gap, np.float32))
      t += (length + gap) / SAMPLE_RATE
    return SpeechClip(np.concatenate(pieces), tuple(words), voice)

  def voices(self) -> tuple[str, ...]:
    return tuple(self._VOICES)


class ToneSounds:
  """Each class is a train of beeps at a class-specific pitch; recognisable after 2 beeps."""

  def __init__(self, labels: tuple[str, ...] = tuple(worlds.SOUNDS)):
    self._labels = labels

  def sample(self, label: str, rng: np.random.Generator) -> SoundClip:
    if label not in self._labels:
      raise KeyError(label)
    freq = 400.0 + zlib.crc32(label.encode()) % 2000
    beep = rng.uniform(0.08, 0.15)
    gap = rng.uniform(0.05, 0.1)
    count = int(rng.integers(3, 7))
    pieces = []
    for _ in range(count):
      pieces += [_tone(freq, beep, 0.5), np.zeros(int(round(gap * SAMPLE_RATE)), np.float32)]
    return SoundClip(np.concatenate(pieces), label, "tones", recognisable_after=2 * beep + gap)

  def labels(self) -> tuple[str, ...]:
    return self._labels


@pytest.fixture(scope="session")
def speech() -> ToneSpeech:
  return ToneSpeech()


@pytest.fixture(scope="session")
def sounds() -> ToneSounds:
  return ToneSounds()


def pytest_configure(config):
  """The test workers (`pytest -n`, started after this) and every subprocess a test
  starts run under tcmalloc, as the command line does (`apps/cpu_host.py`): XLA:CPU
  steps run ~1.3x faster. The main process itself keeps the malloc it started with."""
  if hasattr(config, "workerinput"):  # a worker: its environment came from the main process
    return
  env = cpu_host.environment_with_tcmalloc()
  if env is not None:
    os.environ["LD_PRELOAD"] = env["LD_PRELOAD"]
