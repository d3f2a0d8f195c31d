"""Configs: every experiment loads, has the advertised size, lowers; typos are errors."""

import pytest

from audio_interaction import config_lib
from audio_interaction.model.inspect_model import summarize
from audio_interaction.model.model import AudioInteractionModel


def _load(name, overrides=()):
  return config_lib.load_config(str(config_lib.experiments_dir() / name), overrides)


@pytest.mark.parametrize("name,low,high", [
    ("tiny.py", 1e6, 10e6),
    ("small.py", 10e6, 30e6),
    ("base.py", 100e6, 300e6),
    ("pod.py", 1e9, 5e9),
])
def test_config_size_and_aot_lowering(name, low, high):
  summary = summarize(AudioInteractionModel(_load(name)))
  assert low <= summary.total_params <= high, summary.describe()
  assert summary.encoder_params + summary.decoder_params == summary.total_params


def test_variant_selects_conformer():
  assert _load("tiny.py:conformer").model.encoder.block == "conformer"
  with pytest.raises(ValueError, match="unknown config variant"):
    _load("tiny.py:conformr")


def test_whole_streams_variant_has_the_tiny_weights_and_rows_of_thirty_seconds():
  import jax
  from audio_interaction.train import loop
  tiny, whole = _load("tiny.py"), _load("tiny.py:whole_streams")

  def shapes(config):
    return jax.tree_util.tree_map(
        lambda a: a.shape, jax.eval_shape(AudioInteractionModel(config).init, jax.random.key(0)))
  assert shapes(tiny) == shapes(whole)  # the embedded bundle can start it (train.init_from)
  assert loop.ATTENTION_REACH_FIELDS >= {
      f"decoder.{k}" for k in ("window", "pinned_prefix")
      if tiny.model.decoder[k] != whole.model.decoder[k]}
  assert whole.data.max_chunks * whole.audio.chunk_ms >= 30_000 > tiny.data.max_chunks * tiny.audio.chunk_ms
  # The live loop's layout: the pinned prompt and a recent window the rows were trained on.
  assert whole.model.decoder.window <= whole.data.max_len and whole.model.decoder.pinned_prefix


def test_every_head_a_tiny_variant_adds_can_start_from_the_embedded_bundle():
  from audio_interaction.corpus import worlds
  from audio_interaction.train import loop
  tiny = _load("tiny.py")
  for variant, heads in (("copy", 1), ("sound_events", 1), ("sound_events,sound_feed", 2),
                         ("sound_events,sound_names", 2)):
    added = loop.added_head_fields(_load(f"tiny.py:whole_streams,{variant}"), tiny)
    switched = sorted(added & set(loop.ADDED_HEAD_FIELDS))
    assert len(switched) == heads, (variant, switched)
  sound = _load("tiny.py:sound_events")
  assert sound.model.sound_event_classes == len(worlds.SOUND_EVENT_LABELS)
  assert sound.train.sound_event_loss_weight > 0


def test_override_typo_is_an_error():
  with pytest.raises(config_lib.ConfigError, match="no field 'model.decoder.num_layer'"):
    _load("tiny.py", ["model.decoder.num_layer=3"])


def test_override_changes_value_with_type():
  config = _load("tiny.py", ["model.decoder.num_layers=2", "audio.fmin=20",
                             "model.encoder.block=conformer"])
  assert config.model.decoder.num_layers == 2
  assert config.audio.fmin == 20.0 and isinstance(config.audio.fmin, float)
  assert config.model.encoder.block == "conformer"


def test_typo_inside_a_config_file_is_an_error(tmp_path):
  file = tmp_path / "typo.py"
  file.write_text(
      "from audio_interaction import config_lib\n"
      "def get_config(arg=None):\n"
      "  config = config_lib.base_config()\n"
      "  config.model.decoder.num_layer = 3\n"
      "  return config\n")
  with pytest.raises(config_lib.ConfigError,
                     match="'model.decoder.num_layer' is not a known field"):
    config_lib.load_config(str(file))


@pytest.mark.parametrize("override,message", [
    ("audio.chunk_ms=165", "whole number of hops"),
    ("model.slots_per_chunk=3", "not divisible by model.slots_per_chunk"),
    ("model.decoder.num_kv_heads=3", "multiple of"),
    ("model.encoder.block=lstm", "encoder.block"),
])
def test_inconsistent_values_are_errors(override, message):
  with pytest.raises(config_lib.ConfigError, match=message):
    _load("tiny.py", [override])
