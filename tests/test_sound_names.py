"""The sound classes' name tokens (`train/sound_names.py`): filled from the run's
tokenizer by the train loop and the export, kept by the bundle, refused when they are
another tokenizer's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audio_interaction.corpus import worlds
from audio_interaction.data import storage
from audio_interaction.data.tokenizer import ByteTokenizer
from audio_interaction.export import portable
from audio_interaction.model.model import AudioInteractionModel
from audio_interaction.train import export as train_export
from audio_interaction.train import loop
from audio_interaction.train import sound_names
import train_testing


def test_a_name_is_fed_as_its_words_without_articles():
  assert worlds.sound_name_words("dog_bark") == "dog barking"
  assert worlds.sound_name_words("alarm_clock") == "alarm clock"
  assert worlds.sound_name_words("rain") == "rain"
  assert worlds.sound_name_words(None) == ""


def test_the_tokens_are_filled_from_the_tokenizer_and_other_ids_are_refused():
  tokenizer = ByteTokenizer()
  config = train_testing.train_config(**{"model.sound_event_feed_names": True})
  filled = sound_names.with_sound_name_tokens(config, tokenizer)
  tokens = filled.model.sound_event_name_tokens
  assert len(tokens) == len(worlds.SOUND_EVENT_LABELS) and tokens[0] == ()
  for label, ids in zip(worlds.SOUND_EVENT_LABELS[1:], tokens[1:]):
    assert tokenizer.decode(ids) == worlds.sound_name_words(label)
  assert config.model.sound_event_name_tokens == ()  # the caller's config is left as it was
  # Filling again with the same tokenizer (a resumed run) keeps them; another's are refused.
  assert sound_names.with_sound_name_tokens(filled, tokenizer).model.sound_event_name_tokens == tokens
  other = filled.copy_and_resolve_references()
  other.model.sound_event_name_tokens = tuple((i + 1,) for i in range(len(tokens)))
  with pytest.raises(ValueError, match="other ids than this tokenizer"):
    sound_names.with_sound_name_tokens(other, tokenizer)
  # Without the switch the config is returned as it is.
  plain = train_testing.train_config()
  assert sound_names.with_sound_name_tokens(plain, tokenizer) is plain
  fewer = train_testing.train_config(**{"model.sound_event_feed_names": True,
                                        "model.sound_event_classes": 5})
  with pytest.raises(ValueError, match="model.sound_event_classes=5"):
    sound_names.with_sound_name_tokens(fewer, tokenizer)


def test_a_trained_run_exports_a_bundle_that_keeps_the_names(tmp_path):
  config = train_testing.loop_config(tmp_path / "data", steps=2)
  config.model.sound_event_feed_names = True
  make = train_testing.synthetic_examples(config)
  storage.build_split(tmp_path / "data", "train", 8, make, seed=0, shard_size=8, progress=False)
  storage.build_split(tmp_path / "data", "eval", 4, make, seed=1, shard_size=4, progress=False)
  assert loop.train(config, tmp_path / "run", progress=False)["step"] == 2
  # The config file's names are empty; the export fills them from the checkpoint's tokenizer.
  assert config.model.sound_event_name_tokens == ()
  train_export.export_checkpoint(config, tmp_path / "run", tmp_path / "bundle", use_best=False)
  bundle_config, params, tokenizer = portable.load_bundle(tmp_path / "bundle")
  assert bundle_config.model.sound_event_name_tokens == worlds.sound_name_tokens(tokenizer)
  # The bundle runs, and its names reach the decoder: with the feed's gain up, a chunk's
  # answer moves.
  model = AudioInteractionModel(bundle_config)
  state = model.init_state(1)
  chunk = jnp.asarray(0.1 * np.random.default_rng(0).normal(size=(1, model.config.chunk_samples)),
                      jnp.float32)
  _, decision, _, _ = model.perceive(params, state, chunk)
  loud = jax.tree_util.tree_map(lambda x: x, params)
  loud["params"]["sound_event_name_gain"] = jnp.asarray(50.0)
  _, louder, _, _ = model.perceive(loud, state, chunk)
  assert np.abs(np.asarray(louder - decision)).max() > 1e-4
