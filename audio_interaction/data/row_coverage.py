"""What a training row keeps of a built split: the supervision a row shape never trains.

A row holds `data.max_chunks` chunks and `data.max_len` positions; `pipeline.fit_example`
cuts a longer online stream to its first chunks and drops a longer offline example. The
targets after the cut are never trained, and they are not spread evenly: late replies
are what instruction following and alerts are about. Reads every record of the split::

  audio-interaction dataset-card --config experiments/tiny.py --split train --rows
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from audio_interaction import stream_format as sf
from audio_interaction.data import pipeline


@dataclasses.dataclass(frozen=True)
class Coverage:
  """Counts of one group of examples (an ability, or all).

  Attributes:
    examples: examples read.
    cut: online streams cut to their first chunks.
    dropped: examples that fit no row at all (offline ones too long, or nothing fits).
    reply_tokens, reply_tokens_kept: weighted reply-token targets in the examples, and
      in what the rows keep of them.
    speak_targets, speak_targets_kept: SPEAK decision targets, the same way.
  """

  examples: int = 0
  cut: int = 0
  dropped: int = 0
  reply_tokens: int = 0
  reply_tokens_kept: int = 0
  speak_targets: int = 0
  speak_targets_kept: int = 0

  def __add__(self, other: Coverage) -> Coverage:
    return Coverage(*(a + b for a, b in zip(dataclasses.astuple(self),
                                            dataclasses.astuple(other))))

  @property
  def reply_tokens_fraction(self) -> float:
    """Share of the reply tokens a row keeps (1.0 with none to keep)."""
    return self.reply_tokens_kept / self.reply_tokens if self.reply_tokens else 1.0

  @property
  def speak_targets_fraction(self) -> float:
    return self.speak_targets_kept / self.speak_targets if self.speak_targets else 1.0


def _targets(example: Mapping[str, np.ndarray] | None) -> tuple[int, int]:
  if example is None:
    return 0, 0
  return (int(np.count_nonzero(example["lm_weights"] > 0)),
          int(np.count_nonzero(example["decision_targets"] == int(sf.Decision.SPEAK))))


def example_coverage(record: Mapping[str, Any], config: pipeline.PipelineConfig) -> Coverage:
  """The `Coverage` of one stored record under `config`'s row shape."""
  example = pipeline.select_fields(record)
  counters = pipeline.PipelineCounters()  # what the training pipeline counts of the fit
  fitted = pipeline.fit_example(example, config, counters)
  replies, speaks = _targets(example)
  replies_kept, speaks_kept = _targets(fitted)
  return Coverage(examples=counters.examples, cut=counters.truncated, dropped=counters.dropped,
                  reply_tokens=replies, reply_tokens_kept=replies_kept,
                  speak_targets=speaks, speak_targets_kept=speaks_kept)


def row_coverage(source: Sequence[Mapping[str, Any]], abilities: Sequence[str],
                 config: pipeline.PipelineConfig, *, progress: bool = True
                 ) -> dict[str, Coverage]:
  """Per ability (and "all"), what rows of `config`'s shape keep of `source`.

  Args:
    source: stored records (`storage.load_split`), N of them.
    abilities: str[N], the ability of each record.
    config: the row shape (max_len, max_chunks, max_transcript, chunk_samples, overflow).
  Returns:
    {ability: Coverage} in ability order, then "all".
  """
  if len(abilities) != len(source):
    raise ValueError(f"{len(abilities)} abilities for {len(source)} records")
  totals: dict[str, Coverage] = collections.defaultdict(Coverage)
  for index in tqdm(range(len(source)), desc="rows", disable=not progress):
    totals[str(abilities[index])] += example_coverage(source[index], config)
  result = dict(sorted(totals.items()))
  result["all"] = sum(result.values(), Coverage())
  return result


def markdown(coverage: Mapping[str, Coverage], config: pipeline.PipelineConfig,
             chunk_ms: int) -> str:
  """A table of `row_coverage`'s result, headed by the row shape."""
  seconds = config.max_chunks * chunk_ms / 1000
  lines = [f"## What a training row keeps ({config.max_chunks} chunks = {seconds:.1f} s, "
           f"{config.max_len} positions)", "",
           "| ability | examples | cut | dropped | reply tokens kept | SPEAK targets kept |",
           "|---|---:|---:|---:|---:|---:|"]
  for name, c in coverage.items():
    label = f"**{name}**" if name == "all" else name
    lines.append(f"| {label} | {c.examples:,} | {c.cut:,} | {c.dropped:,} | "
                 f"{c.reply_tokens_fraction:.0%} of {c.reply_tokens:,} | "
                 f"{c.speak_targets_fraction:.0%} of {c.speak_targets:,} |")
  return "\n".join(lines)
