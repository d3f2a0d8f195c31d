"""Naming the sound of a clip from the sound-event head (`audio-interaction name-sound`).

"What sound is this?" is asked of the decoder in the corpus (`offline_sound_label`),
and on real recordings the real-audio bundle's decoder names none right (README: B3
0 % on the DEV set), while its sound-event head, fitted on real TRAIN recordings,
names the alerts it raises nearly always right. A clip's name from the head: each
chunk's class probabilities (softmax of the head's logits over the chunk-causal
encoder, what streaming computes), averaged over the clip's chunks; the sound class
(never "none") with the highest mean is the clip's sound. The mean, not the peak: a
clip is named by what is heard through it, not by its loudest 160 ms.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from audio_interaction.corpus import worlds
from audio_interaction.model.clip_encoder import ClipEncoder
from audio_interaction.model.model import AudioInteractionModel, Params
from audio_interaction.stream_format import NO_SOUND_EVENT


@dataclasses.dataclass(frozen=True)
class HeardSound:
  """A sound class of `worlds.SOUND_EVENT_LABELS` and its mean probability over a clip."""

  label: str
  probability: float

  @property
  def name(self) -> str:
    """What a listener calls it: `worlds.sound_name` ("a dog barking")."""
    return worlds.sound_name(self.label)


def clip_class_probabilities(logits: np.ndarray) -> np.ndarray:
  """logits float [chunks, K] of the sound-event head (K = len(SOUND_EVENT_LABELS))
  -> float64 [K]: each class's probability averaged over the chunks ("none" included,
  so the K means sum to 1)."""
  logits = np.asarray(logits, np.float64)
  if logits.ndim != 2 or logits.shape[0] == 0:
    raise ValueError(f"sound-event logits must be [chunks >= 1, classes], got {logits.shape}")
  if logits.shape[1] != len(worlds.SOUND_EVENT_LABELS):
    raise ValueError(f"{logits.shape[1]} sound-event classes; this project names "
                     f"{len(worlds.SOUND_EVENT_LABELS)} (worlds.SOUND_EVENT_LABELS)")
  return np.asarray(jax.nn.softmax(logits, axis=-1)).mean(axis=0)


def rank_sounds(logits: np.ndarray, top: int = 3) -> list[HeardSound]:
  """logits [chunks, K] -> the `top` sound classes by mean probability over the clip,
  most probable first ("none" is never one of them)."""
  if top < 1:
    raise ValueError(f"top must be >= 1, got {top}")
  means = clip_class_probabilities(logits)
  order = [k for k in np.argsort(-means, kind="stable") if k != NO_SOUND_EVENT][:top]
  return [HeardSound(worlds.SOUND_EVENT_LABELS[k], float(means[k])) for k in order]


class SoundNamer:
  """audio float32 [n] (16 kHz) -> `rank_sounds` of the clip, through a model's
  sound-event head over its encoder from the window's start (an offline clip)."""

  def __init__(self, model: AudioInteractionModel, params: Params):
    self._encode = ClipEncoder(model, params, output="sound_event_logits")

  def __call__(self, audio: np.ndarray, top: int = 3) -> list[HeardSound]:
    return rank_sounds(self._encode(np.asarray(audio, np.float32)), top)
