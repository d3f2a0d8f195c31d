"""`audio-interaction ask`: a question about each audio file, answered by the model.

The offline tasks ("what sound is this?", "how many times did the dog bark?",
"transcribe this") are one prompt layout (`stream_format.offline_prompt`): the clip's
audio slots after `<offline> <audio>`, then the question as the instruction, then the
answer. Each file is read (any rate and channel count: resampled to 16 kHz mono) and
answered through the engine's cache (`Engine.answer`) with the bundle's own `infer`
block: its sampling, its longest answer and, where it has a sound-event head and
`infer.sound_name_bias`, the names of what the head heard biased into the answer. With
`infer.sound_questions`, a question about the clip's sounds ("what sound is this?", "how
many doorbell rings are in the clip?") is answered by the head instead
(`infer/clip_questions.py`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

from audio_interaction import stream_format as sf
from audio_interaction.audio import io as audio_io
from audio_interaction.export import portable
from audio_interaction.infer.clip_questions import answer_clip, clip_answers
from audio_interaction.infer.engine import Engine, dequantize_params
from audio_interaction.infer.sound_naming import SoundNamer

DEFAULT_QUESTION = "What sound is this?"


def ask_files(paths: Sequence[str | os.PathLike], question: str = DEFAULT_QUESTION,
              bundle: str | os.PathLike | None = None) -> list[dict[str, Any]]:
  """Per file: {"file", "seconds", "question", "answer"}.

  Args:
    paths: audio files (AudioError names a missing, empty or undecodable one before any
      model work).
    question: what to ask about each (the instruction of the offline prompt).
    bundle: a model bundle (default: the embedded model).

  Raises:
    ValueError: an empty question.
  """
  if not question.strip():
    raise ValueError("the question is empty: ask something about the audio")
  clips = [(str(path), audio_io.load_audio(path)) for path in paths]
  model, params, tokenizer, _ = portable.load_model(None, bundle)
  infer = portable.bundle_infer_config(bundle)
  engine = Engine.from_infer(model, infer, tokenizer)
  answers = clip_answers(infer, chunk_seconds=model.config.chunk_seconds,
                         sound_event_classes=model.config.sound_event_classes)
  namer = None if answers is None else SoundNamer(model, dequantize_params(params))
  return [{"file": path, "seconds": round(len(audio) / sf.SAMPLE_RATE, 3), "question": question,
           "answer": answer_clip(engine, params, tokenizer, audio, question,
                                 max_tokens=infer.max_answer_tokens, answers=answers,
                                 head_logits=namer and functools.partial(namer.logits, audio))}
          for path, audio in clips]
