"""What `build-data` prints: readable lines, not a dataclass repr."""

from __future__ import annotations

import pathlib

from audio_interaction.apps import cli
from audio_interaction.corpus import build as corpus
from audio_interaction.data import storage
from synthetic_examples import SyntheticExamples


def _summary(tmp_path: pathlib.Path) -> storage.SplitSummary:
  make = SyntheticExamples(chunk_samples=160, max_chunks=3,
                                   abilities=("voice_chat", "realtime_asr"))
  return storage.build_split(tmp_path / "data", "train", 24, make, seed=0, shard_size=10,
                             chunk_samples=160, progress=False)


def test_a_split_summary_reads_as_text(tmp_path):
  summary = _summary(tmp_path)
  text = str(summary)
  assert "SplitSummary(" not in text and "{" not in text
  first, abilities, subtasks = text.splitlines()
  assert first.startswith("24 examples, 3 shards, ") and first.endswith(str(tmp_path / "data"))
  counts = summary.ability_counts
  assert abilities == (f"  by ability: realtime_asr {counts['realtime_asr']}, "
                       f"voice_chat {counts['voice_chat']}")
  low, high = min(summary.subtask_counts.values()), max(summary.subtask_counts.values())
  assert subtasks.startswith("  8 sub-tasks, ") and f"{low} (" in subtasks and f"{high} (" in subtasks


def test_build_data_prints_the_summary(tmp_path, monkeypatch, capsys):
  summary = _summary(tmp_path)
  monkeypatch.setattr(corpus, "build_corpus_split", lambda *args, **kwargs: summary)
  tiny = str(pathlib.Path(cli.__file__).resolve().parents[2] / "experiments" / "tiny.py")
  assert cli.main(["build-data", "--config", tiny, f"--config.data.dir={tmp_path}",
                   "--split", "train", "--num-examples", "24"]) == 0
  out = capsys.readouterr().out
  assert out.startswith("train: 24 examples, 3 shards") and "SplitSummary" not in out
  assert "by ability: " in out
