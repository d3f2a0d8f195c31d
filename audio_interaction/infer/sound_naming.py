"""Naming the sound of a clip from the sound-event head (`audio-interaction name-sound`).

"What sound is this?" is asked of the decoder in the corpus (`offline_sound_label`),
and on real recordings the real-audio bundle's decoder names none right (README: B3
0 % on the DEV set), while its sound-event head, fitted on real TRAIN recordings,
names the alerts it raises nearly always right. A clip's name from the head: each
chunk's class probabilities (softmax of the head's logits over the chunk-causal
encoder, what streaming computes), averaged over the clip's chunks; the sound class
(never "none") with the highest mean is the clip's sound. The mean, not the peak: a
clip is named by what is heard through it, not by its loudest 160 ms. A longer recording
can also be split where the head hears each sound (`sound_segments`).
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


def chunk_probabilities(logits: np.ndarray) -> np.ndarray:
  """logits [chunks, K] of the sound-event head (K = len(SOUND_EVENT_LABELS)) -> float32
  [chunks, K], each chunk's class probabilities (softmax); ValueError on another shape."""
  logits = np.asarray(logits, np.float32)
  if logits.ndim != 2 or logits.shape[0] == 0:
    raise ValueError(f"sound-event logits must be [chunks >= 1, classes], got {logits.shape}")
  if logits.shape[1] != len(worlds.SOUND_EVENT_LABELS):
    raise ValueError(f"{logits.shape[1]} sound-event classes; this project names "
                     f"{len(worlds.SOUND_EVENT_LABELS)} (worlds.SOUND_EVENT_LABELS)")
  return np.asarray(jax.nn.softmax(logits, axis=-1))


def clip_class_probabilities(logits: np.ndarray) -> np.ndarray:
  """logits [chunks, K] -> float64 [K]: each class's probability averaged over the
  chunks ("none" included, so the K means sum to 1)."""
  return chunk_probabilities(logits).mean(axis=0, dtype=np.float64)


def rank_sounds(logits: np.ndarray, top: int = 3) -> list[HeardSound]:
  """logits [chunks, K] -> the `top` sound classes by mean probability over the clip,
  most probable first ("none" is never one of them)."""
  if top < 1:
    raise ValueError(f"top must be >= 1, got {top}")
  means = clip_class_probabilities(logits)
  order = [k for k in np.argsort(-means, kind="stable") if k != NO_SOUND_EVENT][:top]
  return [HeardSound(worlds.SOUND_EVENT_LABELS[k], float(means[k])) for k in order]


@dataclasses.dataclass(frozen=True)
class SoundSegment:
  """A stretch of a recording where the head hears one sound class: [start_s, end_s)
  (chunk boundaries), the class, and its mean probability over the stretch."""

  start_s: float
  end_s: float
  label: str
  probability: float

  @property
  def name(self) -> str:
    return worlds.sound_name(self.label)


# How `sound_segments` finds a stretch: where some sound is heard, named as a whole, or
# where one class stays the likeliest.
SEGMENT_BY = ("sound", "class")


def check_segment_settings(threshold: float, min_chunks: int, by: str = "sound",
                           max_gap: int = 2) -> None:
  """ValueError unless 0 < threshold <= 1, min_chunks >= 1, `by` is one of `SEGMENT_BY`
  and max_gap >= 0 (`sound_segments`)."""
  if not 0.0 < threshold <= 1.0 or min_chunks < 1:
    raise ValueError(f"sound segments need 0 < threshold <= 1 and min_chunks >= 1, got "
                     f"threshold {threshold} and min_chunks {min_chunks}")
  if by not in SEGMENT_BY:
    raise ValueError(f"sound segments are found by one of {SEGMENT_BY}, got {by!r}")
  if max_gap < 0:
    raise ValueError(f"sound segments' max_gap must be >= 0 chunks, got {max_gap}")


def _bridged(heard: np.ndarray, max_gap: int) -> np.ndarray:
  """heard [chunks] bool with every gap of at most `max_gap` chunks between two heard
  chunks filled in."""
  out = heard.copy()
  indices = np.flatnonzero(heard)
  for before, after in zip(indices[:-1], indices[1:]):
    if 1 < after - before <= max_gap + 1:
      out[before + 1:after] = True
  return out


def sound_segments(logits: np.ndarray, chunk_seconds: float, threshold: float = 0.5,
                   min_chunks: int = 2, by: str = "sound", max_gap: int = 2
                   ) -> list[SoundSegment]:
  """logits [chunks, K] of a recording -> where each sound is heard, in time order.

  by="sound": a chunk hears a sound when the head's probability of "none" is at most
  1 - `threshold`; runs of such chunks with gaps of at most `max_gap` chunks between
  them (a ringtone's pauses between rings) are one stretch, a segment if it is at least
  `min_chunks` long, named as a clip is (the class of the highest mean probability over
  the stretch's chunks that hear a sound). A long sound the head hears now as one class
  and now as a kindred one (a ringtone: phone, alarm clock, notification in turn) stays
  one segment.
  by="class": a chunk hears the sound class (never "none") the head gives the highest
  probability, if that probability is >= `threshold`; a run of at least `min_chunks`
  consecutive chunks hearing the same class is a segment.
  """
  check_segment_settings(threshold, min_chunks, by, max_gap)
  probabilities = chunk_probabilities(logits)
  sounds = probabilities.copy()
  sounds[:, NO_SOUND_EVENT] = -1.0
  some_sound = 1.0 - probabilities[:, NO_SOUND_EVENT] >= threshold
  if by == "sound":
    heard = np.where(_bridged(some_sound, max_gap), 1, NO_SOUND_EVENT)
  else:
    heard = np.argmax(sounds, axis=-1)
    heard = np.where(sounds[np.arange(len(heard)), heard] >= threshold, heard, NO_SOUND_EVENT)
  segments, start = [], 0
  for index in range(1, len(heard) + 1):
    if index < len(heard) and heard[index] == heard[start]:
      continue
    if heard[start] != NO_SOUND_EVENT and index - start >= min_chunks:
      if by == "class":
        means = sounds[start:index].mean(axis=0)
        label_id = int(heard[start])
      else:  # the chunks of the stretch that hear a sound, not the gaps between them
        means = sounds[start:index][some_sound[start:index]].mean(axis=0)
        label_id = int(np.argmax(means))
      segments.append(SoundSegment(
          start * chunk_seconds, index * chunk_seconds, worlds.SOUND_EVENT_LABELS[label_id],
          float(means[label_id])))
    start = index
  return segments


class SoundNamer:
  """audio float32 [n] (16 kHz) -> `rank_sounds` of the clip, through a model's
  sound-event head over its encoder from the window's start (an offline clip)."""

  def __init__(self, model: AudioInteractionModel, params: Params):
    self._encode = ClipEncoder(model, params, output="sound_event_logits")
    self.chunk_seconds = model.config.chunk_seconds

  def logits(self, audio: np.ndarray) -> np.ndarray:
    """audio [n] -> the sound-event head's logits [ceil(n / chunk), K]."""
    return self._encode(np.asarray(audio, np.float32))

  def __call__(self, audio: np.ndarray, top: int = 3) -> list[HeardSound]:
    return rank_sounds(self.logits(audio), top)
