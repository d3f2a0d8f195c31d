"""`audio-interaction transcribe`: what a model's CTC head hears in audio files.

Each file is read (any rate and channel count: resampled to 16 kHz mono), encoded by
the bundle's chunk-causal encoder and read by its CTC head in one full pass (what
streaming computes chunk by chunk), then written greedily, as the live transcript
writes it, or with `lm` by the beam search with the English word LM
(`infer/ctc_lm.py`) fed chunk by chunk. Each word comes with the stream time (s) of
the end of the chunk from which the transcript keeps it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from audio_interaction import stream_format as sf
from audio_interaction.audio import io as audio_io
from audio_interaction.export import portable
from audio_interaction.infer import ctc_lm, transcript
from audio_interaction.model.clip_encoder import ClipEncoder
from audio_interaction.model.model import AudioInteractionModel


def greedy_timed_words(logits: np.ndarray, frames_per_chunk: int, chunk_seconds: float,
                       decode) -> tuple[tuple[str, float], ...]:
  """logits [T, V] of a clip's CTC head -> (word, time) as the live transcript writes
  them: greedy labels collapsed chunk by chunk (`transcript.collapse_ctc`), a label
  repeated across a chunk boundary counted once."""
  labels = np.argmax(logits, axis=-1)
  previous = np.array([transcript.BLANK_ID])
  heard = []
  for start in range(0, len(labels), frames_per_chunk):
    tokens, previous = transcript.collapse_ctc(labels[None, start:start + frames_per_chunk],
                                               previous)
    heard.append(tokens[0])
  return transcript.heard_words(heard, decode, chunk_seconds)


def transcribe_files(paths: Sequence[str | os.PathLike], bundle: str | os.PathLike | None = None,
                     lm: ctc_lm.BeamSettings | None = None) -> list[dict[str, Any]]:
  """Per file: {"file", "seconds", "text", "words": [[word, time s], ...]}.

  Args:
    paths: audio files (AudioError names a missing, empty or undecodable one before any
      model work).
    bundle: a model bundle (default: the embedded model).
    lm: beam-search settings for the English word LM; None: greedy.
  """
  clips = [(str(path), audio_io.load_audio(path)) for path in paths]
  config, params, tokenizer = portable.load_bundle(portable.resolve_bundle(bundle))
  model = AudioInteractionModel(config)
  encode = ClipEncoder(model, params, output="ctc_logits")
  frames, seconds = model.config.encoder_frames_per_chunk, model.config.chunk_seconds
  decoder = None if lm is None else ctc_lm.CtcLmDecoder(
      tokenizer, model.config.decoder.vocab_size, lm,
      spelling=config.data.get("ctc_targets", "tokens"))
  out = []
  for path, audio in clips:
    logits = encode(audio)
    if decoder is None:
      words = greedy_timed_words(logits, frames, seconds, tokenizer.decode)
    else:
      words = decoder.timed_words(logits, frames, seconds)
    out.append({"file": path, "seconds": round(len(audio) / sf.SAMPLE_RATE, 3),
                "text": " ".join(w for w, _ in words),
                "words": [[w, round(t, 3)] for w, t in words]})
  return out
