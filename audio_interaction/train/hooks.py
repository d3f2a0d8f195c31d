"""Trainer hooks: what happens around the step (progress, logging, evals, checkpoints).

Levanter's pattern: the loop only steps; everything else is a hook added with how
often it runs. A hook with `at_end` also runs after the last step, whatever the
interval (a run of 30 steps still gets its eval and its checkpoint), and hooks run in
the order they were added, so an eval that ranks a checkpoint runs before the save.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any


@dataclasses.dataclass
class StepInfo:
  """What a hook sees after a step.

  Attributes:
    step: steps completed (the state's step).
    state: the train state after it.
    final: this is the run's last step (its end, or a stop on a signal).
  """

  step: int
  state: Any
  final: bool


@dataclasses.dataclass
class Hook:
  name: str
  fn: Callable[[StepInfo], None]
  every: int
  at_end: bool


class Hooks:
  """An ordered list of hooks, each run every `every` steps (and at the end if asked)."""

  def __init__(self):
    self._hooks: list[Hook] = []

  def add(self, name: str, fn: Callable[[StepInfo], None], *, every: int = 1,
          at_end: bool = True) -> None:
    if every < 1:
      raise ValueError(f"hook {name!r}: every must be >= 1, got {every}")
    self._hooks.append(Hook(name, fn, every, at_end))

  @property
  def names(self) -> list[str]:
    return [hook.name for hook in self._hooks]

  def run(self, info: StepInfo) -> None:
    for hook in self._hooks:
      if info.step % hook.every == 0 or (info.final and hook.at_end):
        hook.fn(info)
