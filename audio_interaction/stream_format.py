"""The stream format: the one layout shared by training, evaluation and live inference.

A training sequence in *online* mode (see DESIGN.md) is, position by position::

    <bos> <online> <sys> instruction tokens </sys>
    chunk 0:  <audio> <a>×k <decide>                          decision SILENT
    chunk 1:  <audio> <a>×k <decide> r r r  (≤ tokens_per_chunk)  decision SPEAK
    chunk 2:  <audio> <a>×k <decide> r <eor>                   decision SPEAK
    chunk 3:  <audio> <a>×k <decide>                          decision SILENT

Why there is no ``<speak>`` token between ``<decide>`` and the reply: the decision
head and the LM head both read the hidden state at ``<decide>``, so one forward pass
over a chunk yields the decision *and* the first reply token. The LM target at
``<decide>`` is the first reply token of that chunk when the decision is SPEAK and is
masked otherwise. ``<eor>`` is a reply token (it counts in the chunk's budget); a
reply cut by a barge-in simply stops, with no ``<eor>``.

``<a>`` positions are audio slots: their embeddings come from the audio encoder's
adapter (k slots per chunk, in stream order), not from the token table.

*Offline* mode::

    <bos> <offline> <audio> <a>×(k·n_chunks) <sys> instruction </sys> answer <eor>

with LM loss on ``answer <eor>`` only.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Final

import numpy as np

# Audio everywhere in the library: 16 kHz mono float32.
SAMPLE_RATE: Final[int] = 16000

# The chunk length a config gets unless it says otherwise (`config.audio.chunk_ms`).
DEFAULT_CHUNK_MS: Final[int] = 160


def samples_per_chunk(sample_rate: int, chunk_ms: int) -> int:
  """Audio samples in one chunk of `chunk_ms` milliseconds at `sample_rate`."""
  return int(sample_rate) * int(chunk_ms) // 1000


def config_chunk_samples(config) -> int:
  """Samples per chunk of a full experiment config (`config.audio`); the model's view of
  the same geometry (ms, seconds, frames, slots) is `ModelConfig`'s derived properties."""
  return samples_per_chunk(config.audio.sample_rate, config.audio.chunk_ms)


# The seven abilities (DESIGN.md's table), in order: ability number n is ABILITIES[n - 1].
# Examples carry these names (`metadata`) and input-pipeline mixtures are keyed by them.
ABILITIES: Final[tuple[str, ...]] = (
    "offline_understanding", "realtime_asr", "instruction_following", "voice_chat",
    "proactive_help", "environment_answers", "interaction_control",
)


def ability_name(number: int) -> str:
  """The name of ability `number` (1-7, as in DESIGN.md's table)."""
  if not 1 <= number <= len(ABILITIES):
    raise ValueError(f"ability number must be in 1..{len(ABILITIES)}, got {number}")
  return ABILITIES[number - 1]


# Special tokens occupy the first ids of every vocabulary, in this order, so that a
# checkpoint's tokenizer and the model agree on them without a lookup table.
SPECIAL_TOKENS: Final[tuple[str, ...]] = (
    "<pad>",
    "<bos>",
    "<eos>",
    "<unk>",
    "<online>",
    "<offline>",
    "<sys>",
    "</sys>",
    "<audio>",
    "<a>",
    "<decide>",
    "<eor>",
)
_ID = {name: index for index, name in enumerate(SPECIAL_TOKENS)}
PAD_ID: Final[int] = _ID["<pad>"]
BOS_ID: Final[int] = _ID["<bos>"]
EOS_ID: Final[int] = _ID["<eos>"]
UNK_ID: Final[int] = _ID["<unk>"]
ONLINE_ID: Final[int] = _ID["<online>"]
OFFLINE_ID: Final[int] = _ID["<offline>"]
SYS_ID: Final[int] = _ID["<sys>"]
END_SYS_ID: Final[int] = _ID["</sys>"]
AUDIO_ID: Final[int] = _ID["<audio>"]
AUDIO_SLOT_ID: Final[int] = _ID["<a>"]
DECIDE_ID: Final[int] = _ID["<decide>"]
EOR_ID: Final[int] = _ID["<eor>"]
NUM_SPECIAL_TOKENS: Final[int] = len(SPECIAL_TOKENS)


class Decision(enum.IntEnum):
  """Classes of the fused decision head, read at every ``<decide>`` position."""

  SILENT = 0
  SPEAK = 1


NUM_DECISIONS: Final[int] = len(Decision)

# Value of `audio_slot_index` / `decision_target` at positions that have none.
NO_INDEX: Final[int] = -1


def chunk_prefix_length(slots_per_chunk: int) -> int:
  """Positions a chunk occupies before its reply tokens: ``<audio>``, k slots, ``<decide>``."""
  return slots_per_chunk + 2


# ---------------------------------------------------------------------- builders
# Every caller lays the format out through these, so the layout has one owner.

def next_token_targets(tokens: Sequence[int], is_reply: Sequence[bool]
                       ) -> tuple[np.ndarray, np.ndarray]:
  """The LM targets of a laid-out sequence: each position's target is the next token,
  weighted only where that token is a reply (or answer) token.

  Args:
    tokens: int[L], the sequence.
    is_reply: bool[L], which positions hold reply tokens.
  Returns:
    (lm_targets int32[L], PAD_ID at the last position; lm_weights float32[L], 1 where
    the next token is a reply token, else 0).
  """
  tokens = np.asarray(tokens, np.int32)
  targets = np.full_like(tokens, PAD_ID)
  targets[:-1] = tokens[1:]
  weights = np.zeros(len(tokens), np.float32)
  weights[:-1] = np.asarray(is_reply, np.float32)[1:]
  return targets, weights


def instruction_tokens(instruction_ids: Sequence[int]) -> list[int]:
  """``<sys> instruction </sys>``: how an instruction (or a changed one) is fed."""
  return [SYS_ID, *map(int, instruction_ids), END_SYS_ID]


def online_prompt(instruction_ids: Sequence[int]) -> list[int]:
  """``<bos> <online> <sys> instruction </sys>``: the start of every online stream."""
  return [BOS_ID, ONLINE_ID, *instruction_tokens(instruction_ids)]


def chunk_tokens(slots_per_chunk: int) -> list[int]:
  """``<audio> <a>×k <decide>``: one perceived chunk (the slots take audio embeddings)."""
  return [AUDIO_ID, *[AUDIO_SLOT_ID] * slots_per_chunk, DECIDE_ID]


def offline_prefix() -> list[int]:
  """``<bos> <offline> <audio>``: what comes before an offline clip's audio slots."""
  return [BOS_ID, OFFLINE_ID, AUDIO_ID]


def offline_prompt(num_chunks: int, slots_per_chunk: int, instruction_ids: Sequence[int]
                   ) -> tuple[list[int], list[int]]:
  """The offline prompt before the answer: (token ids [P], audio-slot index [P]).

  ``<bos> <offline> <audio> <a>×(k·n) <sys> instruction </sys>``; slot j of the clip
  has index j, every other position NO_INDEX.
  """
  slots = num_chunks * slots_per_chunk
  prefix = offline_prefix()
  tokens = prefix + [AUDIO_SLOT_ID] * slots + instruction_tokens(instruction_ids)
  index = [NO_INDEX] * len(prefix) + list(range(slots))
  index += [NO_INDEX] * (len(tokens) - len(index))
  return tokens, index


# One serialized example (before batching/padding). `L` is the number of sequence
# positions, `S = num_chunks * chunk_samples` the number of audio samples (16 kHz).
# Position i's LM target is the token the model must write *after* position i.
EXAMPLE_FIELDS: Final[dict[str, tuple[str, str]]] = {
    "tokens": ("int32[L]", "token ids; audio slots hold AUDIO_SLOT_ID"),
    "audio_slot_index": ("int32[L]", "index of the audio slot (chunk*k + j) or NO_INDEX"),
    "lm_targets": ("int32[L]", "next-token target at each position (PAD_ID where none)"),
    "lm_weights": ("float32[L]", "1.0 where the LM target is trained, else 0.0"),
    "decision_targets": ("int32[L]", "Decision at <decide> positions, NO_INDEX elsewhere"),
    "audio": ("float32[S]", "16 kHz mono waveform, num_chunks whole chunks"),
    "num_chunks": ("int32[]", "number of audio chunks (k slots each)"),
    "transcript": ("int32[N]", "token ids of the words heard (every speaker), by end time"),
    "transcript_chunks": ("int32[N]", "chunk in which each transcript token's word ends"),
    "sound_events": ("int32[C]", "per chunk: NO_SOUND_EVENT, or 1 + the index in "
                     "corpus.worlds.SOUNDS of the loudest labelled sound active in it"),
}
# `sound_events` of a chunk where no labelled sound is active (C = num_chunks).
NO_SOUND_EVENT: Final[int] = 0
