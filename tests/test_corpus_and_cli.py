"""Corpus glue, model bundles and the CLI, end to end on small inputs."""

import jax
import numpy as np
import pytest

from audio_interaction import config_lib
from audio_interaction.apps import cli
from audio_interaction.corpus import build as corpus
from audio_interaction.data import storage
from audio_interaction.data.tokenizer import ByteTokenizer
from audio_interaction.export import portable
from audio_interaction.model.model import AudioInteractionModel

TINY = str(config_lib.experiments_dir() / "tiny.py")
SUBTASKS = ("chat_single", "alert_alarm", "offline_asr")


@pytest.fixture(scope="module")
def config(tmp_path_factory):
  directory = tmp_path_factory.mktemp("corpus")
  return config_lib.load_config(TINY, [f"data.dir={directory}"])


def test_corpus_examples_are_deterministic_and_cover_subtasks(config):
  make = corpus.CorpusExamples.from_config(config, "train", SUBTASKS)
  corpus.build_tokenizer(config, examples_per_task=2)
  examples = [make(i, 0) for i in range(3)]
  assert [e["subtask"] for e in examples] == list(SUBTASKS)
  again = make(1, 0)
  for field in ("tokens", "audio", "decision_targets"):
    np.testing.assert_array_equal(again[field], examples[1][field])
  other_seed = make(1, 1)
  assert any(not np.array_equal(other_seed[f], examples[1][f]) for f in ("tokens", "audio"))
  for example in examples:
    storage.validate_example(example, chunk_samples=2560)


def test_build_data_cli_writes_a_readable_split(config, capsys):
  directory = config.data.dir
  code = cli.main(["build-data", "--config", TINY, f"--config.data.dir={directory}",
                   "--split", "eval", "--num-examples", "3", "--subtasks", ",".join(SUBTASKS)])
  assert code == 0
  source = storage.load_split(directory, "eval")
  assert len(source) == 3
  assert sorted(storage.read_split_metadata(directory, "eval").abilities) == sorted(
      ["voice_chat", "proactive_help", "offline_understanding"])


def test_cli_reports_config_typos_as_errors(capsys):
  assert cli.main(["inspect", "--config", TINY, "--config.model.decoder.num_layer=2"]) == 2
  assert "no field 'model.decoder.num_layer'" in capsys.readouterr().err


def test_bundle_round_trip_and_mismatch(tmp_path):
  config = config_lib.load_config(TINY)
  model = AudioInteractionModel(config)
  params = model.init(jax.random.key(3))
  portable.save_bundle(tmp_path / "bundle", params, ByteTokenizer(), config)
  loaded_config, loaded, tokenizer = portable.load_bundle(tmp_path / "bundle")
  assert loaded_config.to_dict() == config.to_dict()
  assert tokenizer.vocab_size == ByteTokenizer().vocab_size
  for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(loaded)):
    np.testing.assert_array_equal(a, b)
  # A config that no longer matches the params is named, parameter by parameter.
  text = (tmp_path / "bundle" / "config.json").read_text()
  (tmp_path / "bundle" / "config.json").write_text(text.replace('"num_layers": 4', '"num_layers": 3'))
  with pytest.raises(ValueError, match="in the bundle only"):
    portable.load_bundle(tmp_path / "bundle")
  with pytest.raises(FileNotFoundError, match="params.msgpack is missing"):
    portable.load_bundle(tmp_path)
