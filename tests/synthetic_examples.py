"""A stand-in for the corpus builder: valid stream-format examples with random content.

A test fixture (tests and benchmarks of storage, the input pipeline and the train
step use it), independent of the synthetic world in `audio_interaction/corpus/`.
Benchmarks import it by putting this folder on `sys.path`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from audio_interaction import stream_format as sf

@dataclasses.dataclass(frozen=True)
class SyntheticExamples:
  """`make_example` stand-in with the layout of `stream_format`, random lengths and content.

  For tests and benchmarks of storage and the input pipeline, independent of the
  corpus builder. Deterministic in (index, seed); picklable, so it works with
  `build_split(num_workers > 1)`. Online examples follow
  ``<bos> <online> <sys> instr </sys> (<audio> <a>×k <decide> reply≤tokens_per_chunk)*``;
  a fraction `offline_fraction` uses the offline layout. Audio is noise.
  """

  chunk_samples: int = 160
  slots_per_chunk: int = 2
  tokens_per_chunk: int = 4
  min_chunks: int = 1
  max_chunks: int = 12
  vocab_size: int = 256
  abilities: tuple[str, ...] = sf.ABILITIES
  offline_fraction: float = 0.2
  speak_probability: float = 0.2

  def __call__(self, index: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng([seed, index])
    k = self.slots_per_chunk
    num_chunks = int(rng.integers(self.min_chunks, self.max_chunks + 1))
    ability = self.abilities[int(rng.integers(len(self.abilities)))]
    subtask = f"{ability}/{int(rng.integers(4))}"
    word = lambda n: list(rng.integers(sf.NUM_SPECIAL_TOKENS, self.vocab_size, size=n))
    instruction = word(int(rng.integers(1, 6)))
    tokens: list[int] = []
    slots: list[int] = []
    decisions: list[int] = []
    trained: list[bool] = []  # Is the token *after* this position an LM target?

    def put(token: int, slot: int = sf.NO_INDEX, decision: int = sf.NO_INDEX,
            train_next: bool = False) -> None:
      tokens.append(int(token))
      slots.append(slot)
      decisions.append(decision)
      trained.append(train_next)

    offline = rng.random() < self.offline_fraction
    put(sf.BOS_ID)
    put(sf.OFFLINE_ID if offline else sf.ONLINE_ID)
    if offline:
      put(sf.AUDIO_ID)
      for slot in range(k * num_chunks):
        put(sf.AUDIO_SLOT_ID, slot=slot)
      put(sf.SYS_ID)
      for t in instruction:
        put(t)
      put(sf.END_SYS_ID, train_next=True)
      for t in word(int(rng.integers(1, 8))):
        put(t, train_next=True)
      put(sf.EOR_ID)
      trained[-2] = True  # The last answer token predicts <eor>.
    else:
      put(sf.SYS_ID)
      for t in instruction:
        put(t)
      put(sf.END_SYS_ID)
      reply: list[int] = []
      for chunk in range(num_chunks):
        put(sf.AUDIO_ID)
        for j in range(k):
          put(sf.AUDIO_SLOT_ID, slot=chunk * k + j)
        if not reply and rng.random() < self.speak_probability:
          reply = word(int(rng.integers(1, 2 * self.tokens_per_chunk))) + [sf.EOR_ID]
        speak = bool(reply)
        put(sf.DECIDE_ID, decision=int(sf.Decision.SPEAK if speak else sf.Decision.SILENT),
            train_next=speak)
        budget, reply = reply[:self.tokens_per_chunk], reply[self.tokens_per_chunk:]
        for i, t in enumerate(budget):
          put(t, train_next=i + 1 < len(budget))
    tokens_arr = np.asarray(tokens, np.int32)
    train = np.asarray(trained)
    lm_targets = np.full_like(tokens_arr, sf.PAD_ID)
    lm_targets[:-1] = np.where(train[:-1], tokens_arr[1:], sf.PAD_ID)
    audio = rng.standard_normal(num_chunks * self.chunk_samples).astype(np.float32) * 0.1
    heard_chunks = np.sort(rng.integers(0, num_chunks, size=int(rng.integers(0, num_chunks + 1))))
    return {
        "tokens": tokens_arr,
        "audio_slot_index": np.asarray(slots, np.int32),
        "lm_targets": lm_targets,
        "lm_weights": (lm_targets != sf.PAD_ID).astype(np.float32),
        "decision_targets": np.asarray(decisions, np.int32),
        "audio": audio,
        "num_chunks": np.int32(num_chunks),
        "transcript": np.asarray(word(len(heard_chunks)), np.int32),
        "transcript_chunks": heard_chunks.astype(np.int32),
        # Drawn last, so the fields above are what they were before this one existed.
        "sound_events": rng.integers(0, 5, size=num_chunks).astype(np.int32),
        "ability": ability,
        "subtask": subtask,
    }
