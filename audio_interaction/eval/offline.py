"""Offline answers (ability 1, B1/B3): the whole clip, then the instruction, then the answer.

The offline layout of the stream format (`serialize.py`)::

    <bos> <offline> <audio> <a>*(k*n) <sys> instruction </sys> answer <eor>

puts every audio slot of the clip *before* the instruction, with no `<decide>`
positions, which the streaming `Engine` (whose `perceive` lays out
`<audio> <a>*k <decide>` per chunk) cannot express. So the answer is written here with
the model's full-sequence `forward`, greedily, one token per call. The sequence is
padded to a bucket of `_BUCKET` positions (and the audio to a bucket of chunks) so the
jitted forward compiles once per bucket, not once per token; padding is masked (`<pad>`
tokens are invalid) and the encoder is chunk-causal, so neither changes the logits of
the real positions.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from audio_interaction import stream_format as sf
from audio_interaction.data.tokenizer import Tokenizer
from audio_interaction.model.model import AudioInteractionModel, Params

_BUCKET = 64  # positions
_AUDIO_BUCKET = 16  # chunks


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


@functools.lru_cache(maxsize=4)
def _jitted_forward(model: AudioInteractionModel):
  return jax.jit(lambda params, tokens, audio, index: model.forward(
      params, tokens, audio, index).lm_logits)


def offline_prompt(num_chunks: int, slots_per_chunk: int, instruction_ids: list[int]
                   ) -> tuple[list[int], list[int]]:
  """Token ids and audio-slot indices of the offline prompt (before the answer)."""
  slots = num_chunks * slots_per_chunk
  tokens = [sf.BOS_ID, sf.OFFLINE_ID, sf.AUDIO_ID] + [sf.AUDIO_SLOT_ID] * slots
  tokens += [sf.SYS_ID, *instruction_ids, sf.END_SYS_ID]
  index = [sf.NO_INDEX] * 3 + list(range(slots))
  index += [sf.NO_INDEX] * (len(tokens) - len(index))
  return tokens, index


def offline_answer(model: AudioInteractionModel, params: Params, tokenizer: Tokenizer,
                   audio: np.ndarray, instruction: str, *, max_tokens: int = 48) -> str:
  """The model's greedy answer to `instruction` about the clip `audio`.

  Args:
    audio: float32[S] 16 kHz samples (zero-padded to whole chunks).
    instruction: e.g. "Transcribe the audio.".
    max_tokens: answer length cap (tokens) if `<eor>` never comes.
  Returns:
    The decoded answer, `<eor>` excluded.
  """
  config = model.config
  size = config.chunk_samples
  num_chunks = max(1, -(-len(audio) // size))
  padded = np.zeros(_round_up(num_chunks, _AUDIO_BUCKET) * size, np.float32)
  padded[:len(audio)] = audio
  tokens, index = offline_prompt(num_chunks, config.slots_per_chunk,
                                 tokenizer.encode(instruction))
  forward = _jitted_forward(model)
  answer: list[int] = []
  for _ in range(max_tokens):
    length = len(tokens)
    width = _round_up(length, _BUCKET)
    ids = np.zeros((1, width), np.int32)
    ids[0, :length] = tokens
    slots = np.full((1, width), sf.NO_INDEX, np.int32)
    slots[0, :length] = index
    logits = forward(params, ids, padded[None], slots)
    token = int(np.argmax(np.asarray(logits[0, length - 1])))
    if token == sf.EOR_ID:
      break
    answer.append(token)
    tokens.append(token)
    index.append(sf.NO_INDEX)
  return tokenizer.decode(answer)
