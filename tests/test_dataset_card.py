"""The dataset card of a built split, checked against the examples and the records."""

from __future__ import annotations

import collections
import dataclasses
import json

import numpy as np
import pytest

from audio_interaction import config_lib
from audio_interaction import stream_format as sf
from audio_interaction.apps import cli
from audio_interaction.corpus import build as corpus
from audio_interaction.data import dataset_card, storage
from synthetic_examples import SyntheticExamples

GENERATOR = SyntheticExamples(chunk_samples=160, max_chunks=8)
VOICES = ("espeak:en-us+m3", "flite:slt", "piper:joe")
SOUNDS = ("alarm", "dog_bark", "rain")
TINY = str(config_lib.experiments_dir() / "tiny.py")


@dataclasses.dataclass(frozen=True)
class _WithCardFields:
  """GENERATOR plus 0-3 utterance voices and 0-2 sounds drawn from (index, seed)."""

  def __call__(self, index: int, seed: int) -> dict:
    rng = np.random.default_rng([seed, index, 1])
    example = GENERATOR(index, seed)
    example["voices"] = tuple(VOICES[i] for i in rng.integers(3, size=rng.integers(4)))
    example["sounds"] = tuple(SOUNDS[i] for i in rng.integers(3, size=rng.integers(3)))
    return example


def test_card_counts_what_the_examples_hold(tmp_path):
  make = _WithCardFields()
  # Two shards, so the counts are merged across shard markers.
  summary = storage.build_split(tmp_path, "train", 11, make, 3, shard_size=4, progress=False)
  examples = [make(i, 3) for i in range(11)]
  card = dataset_card.dataset_card(tmp_path, "train")

  assert (card.num_examples, card.num_shards, card.num_bytes) == (
      11, 3, summary.num_bytes)
  assert card.audio_hours == pytest.approx(
      sum(len(e["audio"]) for e in examples) / sf.SAMPLE_RATE / 3600)
  expected_subtasks = collections.Counter((e["ability"], e["subtask"]) for e in examples)
  assert {(a, s): n for a, counts in card.subtasks.items()
          for s, n in counts.items()} == dict(expected_subtasks)
  assert card.abilities == dict(collections.Counter(e["ability"] for e in examples))
  assert card.voices == dict(collections.Counter(v for e in examples for v in e["voices"]))
  assert card.sounds == dict(collections.Counter(s for e in examples for s in e["sounds"]))
  engines = collections.Counter(v.split(":")[0] for e in examples for v in e["voices"])
  assert card.engines == dict(sorted(engines.items()))

  text = card.markdown()
  assert f"{sum(card.voices.values()):,} utterances in {len(card.voices)} voices" in text
  for ability, count in card.abilities.items():
    assert f"| {ability} | {count:,} |" in text


def test_card_of_a_split_without_counts_or_without_split_is_an_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="no finished split 'train'"):
    dataset_card.dataset_card(tmp_path, "train")
  storage.build_split(tmp_path, "train", 2, GENERATOR, 3, progress=False)
  build_json = tmp_path / "train.build.json"
  done = json.loads(build_json.read_text())
  del done["audio_samples"]  # As written before the card existed.
  build_json.write_text(json.dumps(done))
  with pytest.raises(ValueError, match="built before the dataset card"):
    dataset_card.dataset_card(tmp_path, "train")


def test_card_of_a_corpus_split_matches_its_records(tmp_path, capsys):
  config = config_lib.load_config(TINY, [f"data.dir={tmp_path}"])
  corpus.build_tokenizer(config, examples_per_task=2)
  subtasks = ("chat_single", "alert_alarm")
  assert cli.main(["build-data", "--config", TINY, f"--config.data.dir={tmp_path}",
                   "--split", "eval", "--num-examples", "2",
                   "--subtasks", ",".join(subtasks)]) == 0
  capsys.readouterr()
  assert cli.main(["dataset-card", "--config", TINY, f"--config.data.dir={tmp_path}",
                   "--split", "eval", "--json", str(tmp_path / "card.json")]) == 0
  printed = capsys.readouterr().out
  card = json.loads((tmp_path / "card.json").read_text())
  source = storage.load_split(tmp_path, "eval")
  samples = sum(len(source[i]["audio"]) for i in range(len(source)))
  assert card["audio_hours"] == pytest.approx(samples / sf.SAMPLE_RATE / 3600)
  assert sorted(s for counts in card["subtasks"].values() for s in counts) == sorted(subtasks)
  make = corpus.CorpusExamples.from_config(config, "eval", subtasks)
  timelines = [make.timeline(i, corpus.split_seed(config, "eval")) for i in range(2)]
  assert card["voices"] == dict(collections.Counter(
      u.voice for t in timelines for u in t.utterances))
  assert card["sounds"] == dict(collections.Counter(
      e.label for t in timelines for e in (*t.sounds, *t.backgrounds)))
  assert sum(card["sounds"].values()) >= 1  # alert_alarm sounds an alert
  assert sum(card["voices"].values()) >= 1  # chat_single: the user asks something
  assert printed.startswith("# Dataset card: split `eval`")
  # --rows reads the records: what rows of the config's shape keep of them.
  assert cli.main(["dataset-card", "--config", TINY, f"--config.data.dir={tmp_path}",
                   "--config.data.max_chunks=4", "--split", "eval", "--rows",
                   "--json", str(tmp_path / "card.json")]) == 0
  assert "## What a training row keeps (4 chunks = 0.6 s," in capsys.readouterr().out
  rows = json.loads((tmp_path / "card.json").read_text())["rows"]
  assert rows["all"]["examples"] == 2 and rows["all"]["cut"] == 2  # both streams last > 0.6 s
  assert rows["all"]["speak_targets"] >= rows["all"]["speak_targets_kept"]
