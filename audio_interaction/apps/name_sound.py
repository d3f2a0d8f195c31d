"""`audio-interaction name-sound`: what sound a model's sound-event head hears in files.

Each file is read (any rate and channel count: resampled to 16 kHz mono) and named as
one clip (`infer.sound_naming`: the head's class probabilities averaged over the
clip's chunks, the most probable sound classes first) and, on request, split where the
head hears each sound (`sound_naming.sound_segments`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

from audio_interaction import stream_format as sf
from audio_interaction.audio import io as audio_io
from audio_interaction.export import portable
from audio_interaction.infer import sound_naming
from audio_interaction.infer.sound_naming import SoundNamer
from audio_interaction.model.model import AudioInteractionModel


@dataclasses.dataclass(frozen=True)
class SegmentSettings:
  """`sound_naming.sound_segments`' threshold, shortest run (chunks), what a run is of
  (`SEGMENT_BY`) and the longest gap (chunks) a "sound" stretch bridges."""

  threshold: float = 0.5
  min_chunks: int = 2
  by: str = "sound"
  max_gap: int = 2

  def __post_init__(self):
    sound_naming.check_segment_settings(self.threshold, self.min_chunks, self.by,
                                        self.max_gap)


def name_sound_files(paths: Sequence[str | os.PathLike], bundle: str | os.PathLike | None = None,
                     top: int = 3, segments: SegmentSettings | None = None
                     ) -> list[dict[str, Any]]:
  """Per file: {"file", "seconds", "sounds": [{"label", "name", "probability"}, ...]}
  (the `top` classes, most probable first), and with `segments` "segments": [{"start_s",
  "end_s", "label", "name", "probability"}, ...] (`sound_naming.sound_segments`).

  Args:
    paths: audio files (AudioError names a missing, empty or undecodable one before any
      model work).
    bundle: a model bundle with a sound-event head (default: the embedded model).
  Raises:
    ValueError: the bundle's model has no sound-event head, or `top` < 1.
  """
  if top < 1:
    raise ValueError(f"--top must be >= 1, got {top}")
  clips = [(str(path), audio_io.load_audio(path)) for path in paths]
  config, params, _ = portable.load_bundle(portable.resolve_bundle(bundle))
  if not config.model.sound_event_classes:
    raise ValueError(f"{bundle or 'the embedded model'}: its model has no sound-event head "
                     "(model.sound_event_classes is 0; the real-audio bundle has one: "
                     "--checkpoint real-audio; `fit-sound-head` adds one to a bundle)")
  namer = SoundNamer(AudioInteractionModel(config), params)
  out = []
  for path, audio in clips:
    logits = namer.logits(audio)
    result = {"file": path, "seconds": round(len(audio) / sf.SAMPLE_RATE, 3),
              "sounds": [{"label": heard.label, "name": heard.name,
                          "probability": round(heard.probability, 4)}
                         for heard in sound_naming.rank_sounds(logits, top)]}
    if segments is not None:
      result["segments"] = [
          {"start_s": round(s.start_s, 3), "end_s": round(s.end_s, 3), "label": s.label,
           "name": s.name, "probability": round(s.probability, 4)}
          for s in sound_naming.sound_segments(logits, namer.chunk_seconds,
                                               segments.threshold, segments.min_chunks,
                                               segments.by, segments.max_gap)]
    out.append(result)
  return out

