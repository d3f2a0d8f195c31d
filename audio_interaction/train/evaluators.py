"""Evaluators configured in `config.train.evals`, run by the training loop as hooks.

big_vision's pattern: each entry names a type and how often it runs; the loop builds
them once and calls `run(params)` every `every` steps, logging what it returns under
`<name>/...`. The teacher-forced loss on the eval split stays the loop's own eval (it
picks the best checkpoint); these measure what the model does when it runs free.

* "heldout": new held-out streams (held-out voices, sounds and world items), the
  model alone through the stepper with `config.infer`'s policy, scored as
  `audio-interaction heldout` does: recall, exact text, precision, false triggers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Protocol

import ml_collections

from audio_interaction.corpus import tasks
from audio_interaction.corpus.build import heldout_sources
from audio_interaction.data.tokenizer import Tokenizer
from audio_interaction.eval import heldout
from audio_interaction.infer.engine import Engine
from audio_interaction.infer.policies import policy_from_config
from audio_interaction.model.model import AudioInteractionModel, Params


class Evaluator(Protocol):
  """Something the loop runs on the current parameters every `every` steps."""

  def run(self, params: Params) -> dict[str, float]:
    """Scalars to log (names without the evaluator's prefix)."""


@dataclasses.dataclass
class ScheduledEvaluator:
  name: str
  every: int
  evaluator: Evaluator


class HeldoutEvaluator:
  """Free-running held-out streams: `streams` per online sub-task (or of `subtasks`)."""

  def __init__(self, config: ml_collections.ConfigDict, tokenizer: Tokenizer, *,
               streams: int = 1, subtasks: Sequence[str] = ()):
    self.model = AudioInteractionModel(config)
    self.engine = Engine(self.model)
    self.tokenizer = tokenizer
    self.infer = config.infer
    self.streams = streams
    online = [n for n, spec in tasks.SUBTASKS.items() if spec.mode != "offline"]
    unknown = set(subtasks) - set(online)
    if unknown:
      raise ValueError(f"heldout evaluator: unknown or offline sub-tasks {sorted(unknown)}")
    self.subtasks = tuple(subtasks) or tuple(online)
    self._sources = None  # TTS engines and sound banks load on the first run

  def run(self, params: Params) -> dict[str, float]:
    if self._sources is None:
      self._sources = heldout_sources()
    speech, sounds = self._sources
    policy = policy_from_config(self.infer, chunk_seconds=self.model.config.chunk_seconds)
    result = heldout.evaluate_heldout(
        self.engine, params, self.tokenizer, speech, sounds, policy=policy,
        streams_per_subtask=self.streams, max_reply_tokens=self.infer.max_reply_tokens,
        subtasks=self.subtasks, progress=False)
    overall = result["overall"]
    return {key: float(value) for key, value in overall.items()
            if isinstance(value, (int, float)) and value == value}  # drop NaN


def evaluators_from_config(config: ml_collections.ConfigDict, tokenizer: Tokenizer
                           ) -> list[ScheduledEvaluator]:
  """The evaluators `config.train.evals` asks for (validated by `config_lib`)."""
  specs: Mapping[str, Mapping] = config.train.evals or {}
  built = []
  for name, spec in sorted(specs.items()):
    if spec["type"] == "heldout":
      evaluator = HeldoutEvaluator(config, tokenizer, streams=spec.get("streams", 1),
                                   subtasks=tuple(spec.get("subtasks", ())))
    else:  # config_lib.EVALUATOR_TYPES lists what exists; a new type needs a branch here
      raise ValueError(f"train.evals.{name}: unknown evaluator type {spec['type']!r}")
    built.append(ScheduledEvaluator(name, spec["every"], evaluator))
  return built
