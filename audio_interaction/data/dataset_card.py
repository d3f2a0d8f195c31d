"""The dataset card of a built split: abilities, sub-tasks, hours of audio, voices, sounds.

Computed from the split's build metadata alone (``{split}.build.json`` and
``{split}.metadata.npz``, written by `storage.build_split` and the Beam build), so a
card of millions of examples costs no record reads::

  audio-interaction dataset-card --config experiments/tiny.py --split train
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import pathlib
from typing import Any

import numpy as np

from audio_interaction import stream_format as sf
from audio_interaction.data import storage


@dataclasses.dataclass(frozen=True)
class DatasetCard:
  """What a built split holds.

  Attributes:
    split: split name.
    num_examples, num_shards, num_bytes: size on disk.
    audio_hours: total audio of the examples, hours.
    subtasks: ability -> sub-task -> examples.
    voices: qualified voice ("espeak:en-us+m3") -> utterances.
    sounds: sound class -> events (foreground events and backgrounds).
  """

  split: str
  num_examples: int
  num_shards: int
  num_bytes: int
  audio_hours: float
  subtasks: dict[str, dict[str, int]]
  voices: dict[str, int]
  sounds: dict[str, int]

  @property
  def abilities(self) -> dict[str, int]:
    """Ability -> examples."""
    return {a: sum(counts.values()) for a, counts in self.subtasks.items()}

  @property
  def engines(self) -> dict[str, int]:
    """Speech engine -> utterances (the part of a voice name before ':')."""
    totals: collections.Counter = collections.Counter()
    for voice, count in self.voices.items():
      totals[voice.partition(":")[0]] += count
    return dict(sorted(totals.items()))

  def to_json(self) -> dict[str, Any]:
    return {**dataclasses.asdict(self), "abilities": self.abilities, "engines": self.engines}

  def markdown(self) -> str:
    """The card as Markdown: a summary, then tables of abilities, voices and sounds."""
    utterances, events = sum(self.voices.values()), sum(self.sounds.values())
    lines = [
        f"# Dataset card: split `{self.split}`", "",
        f"- {self.num_examples:,} examples in {self.num_shards:,} ArrayRecord "
        f"shard{'s' if self.num_shards != 1 else ''} "
        f"({self.num_bytes / 1e6:,.1f} MB)",
        f"- {self.audio_hours:,.2f} hours of audio "
        f"({3600 * self.audio_hours / self.num_examples:.1f} s per example)",
        f"- {len(self.abilities)} abilities, "
        f"{sum(len(s) for s in self.subtasks.values())} sub-tasks",
        f"- {utterances:,} utterances in {len(self.voices)} voices of "
        f"{len(self.engines)} engines ({', '.join(self.engines)})",
        f"- {events:,} sound events of {len(self.sounds)} classes", "",
        "| ability | examples | sub-tasks (examples) |", "|---|---:|---|"]
    for ability, counts in self.subtasks.items():
      listed = ", ".join(f"{name} ({count:,})" for name, count in counts.items())
      lines.append(f"| {ability} | {sum(counts.values()):,} | {listed} |")
    lines += ["", "| engine | utterances | voices |", "|---|---:|---:|"]
    for engine, count in self.engines.items():
      voices = sum(1 for v in self.voices if v.partition(":")[0] == engine)
      lines.append(f"| {engine} | {count:,} | {voices} |")
    lines += ["", "| sound class | events |", "|---|---:|"]
    for label, count in sorted(self.sounds.items(), key=lambda item: (-item[1], item[0])):
      lines.append(f"| {label} | {count:,} |")
    return "\n".join(lines)


def dataset_card(out_dir: str | os.PathLike, split: str) -> DatasetCard:
  """The `DatasetCard` of a finished split in `out_dir` (a `storage.build_split` directory).

  Raises:
    FileNotFoundError: `split` is not a finished split of `out_dir`.
    ValueError: the split was built before the card's counts were recorded.
  """
  out_dir = pathlib.Path(out_dir)
  build_json = out_dir / f"{split}.build.json"
  if not build_json.exists():
    raise FileNotFoundError(f"no finished split {split!r} in {out_dir} (no {build_json.name}); "
                            "build it with `audio-interaction build-data`")
  done = json.loads(build_json.read_text())
  missing = [k for k in ("audio_samples", *(f"{n}_counts" for n in storage.CARD_FIELDS))
             if k not in done]
  if missing:
    raise ValueError(f"{build_json} has no {missing}: the split was built before the dataset "
                     "card's counts were recorded; rebuild it into an empty directory")
  metadata = storage.read_split_metadata(out_dir, split)
  pairs, counts = np.unique(np.stack([metadata.ability_ids, metadata.subtask_ids]), axis=1,
                            return_counts=True)
  subtasks: dict[str, dict[str, int]] = {}
  for (ability_id, subtask_id), count in zip(pairs.T, counts):
    ability = metadata.ability_names[ability_id]
    subtasks.setdefault(ability, {})[metadata.subtask_names[subtask_id]] = int(count)
  summary = storage.split_summary(out_dir, split)
  return DatasetCard(
      split=split, num_examples=summary.num_examples, num_shards=summary.num_shards,
      num_bytes=summary.num_bytes,
      audio_hours=done["audio_samples"] / sf.SAMPLE_RATE / 3600,
      subtasks={a: dict(sorted(s.items())) for a, s in sorted(subtasks.items())},
      voices=done["voices_counts"], sounds=done["sounds_counts"])
