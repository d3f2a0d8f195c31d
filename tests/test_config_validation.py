"""Every config field is type- and range-checked; bad values and bundles are one-line errors."""

from __future__ import annotations

import json
import shutil

import pytest

from audio_interaction import config_lib
from audio_interaction.export import portable

TINY = str(config_lib.experiments_dir() / "tiny.py")


def _load(overrides=()):
  return config_lib.load_config(TINY, list(overrides))


def test_every_field_of_base_config_has_a_rule_and_every_rule_a_field():
  leaves = set(config_lib.leaf_paths(config_lib.base_config()))
  assert leaves, "no leaves?"
  assert leaves - set(config_lib.FIELD_RULES) == set(), "fields without a validation rule"
  assert set(config_lib.FIELD_RULES) - leaves == set(), "rules for fields that do not exist"


def test_defaults_and_every_experiment_pass_their_rules():
  config_lib.validate(config_lib.base_config())
  for name in ("tiny.py", "tiny.py:conformer", "base.py", "pod.py"):
    config_lib.load_config(str(config_lib.experiments_dir() / name))


@pytest.mark.parametrize("override,field", [
    ("model.decoder.window=0", "model.decoder.window"),
    ("model.decoder.window=3", "model.decoder.window"),  # less than one chunk's positions
    ("model.decoder.pinned_prefix=-1", "model.decoder.pinned_prefix"),
    ("model.decoder.pinned_prefix=510", "model.decoder.pinned_prefix"),  # no chunk left
    ("audio.chunk_ms=0", "audio.chunk_ms"),
    ("audio.chunk_ms=-160", "audio.chunk_ms"),
    ("model.decoder.num_layers=two", "model.decoder.num_layers"),
    ("model.decoder.num_layers=2.5", "model.decoder.num_layers"),
    ("model.decoder.num_layers=True", "model.decoder.num_layers"),
    ("model.decoder.num_layers=None", "model.decoder.num_layers"),
    ("model.encoder.d_model=-128", "model.encoder.d_model"),
    ("model.encoder.num_heads=0", "model.encoder.num_heads"),
    ("model.encoder.subsampling=3", "model.encoder.subsampling"),
    ("model.norm_eps=0", "model.norm_eps"),
    ("model.dtype=float8", "model.dtype"),
    ("audio.fmin=-1", "audio.fmin"),
    ("audio.fmax=9000", "audio.fmax"),  # above Nyquist at 16 kHz
    ("audio.log_floor=nan", "audio.log_floor"),
    ("train.end_learning_rate_fraction=1.5", "train.end_learning_rate_fraction"),
    ("train.learning_rate=0", "train.learning_rate"),
    ("train.learning_rate=fast", "train.learning_rate"),
    ("train.steps=-5", "train.steps"),
    ("train.stages=((100, {'voice_chat': -1.0}),)", "train.stages"),
    ("train.stages=((100, {'voice_chat': 1.0}), (50, {'voice_chat': 1.0}))", "train.stages"),
    ("data.batch_size=0", "data.batch_size"),
    ("data.mixture={'voice_chatt': 1.0}", "data.mixture"),
    ("data.mixture={'voice_chat': 0.0}", "data.mixture"),
    ("data.dir=''", "data.dir"),
    ("data.packing=1", "data.packing"),
    ("sharding.mesh={'data': 0}", "sharding.mesh"),
    ("sharding.mesh={'data': -1, 'fsdp': -1}", "sharding.mesh"),
    ("sharding.logical_axis_rules=(('batch',),)", "sharding.logical_axis_rules"),
    ("seed=-1", "seed"),
    # Unknown enum strings.
    ("model.encoder.block=lstm", "model.encoder.block"),
    ("data.overflow=wrap", "data.overflow"),
    ("audio.log_style=ln", "audio.log_style"),
    ("infer.policy=always", "infer.policy"),
    ("infer.vad=silerio", "infer.vad"),
    # The operating point.
    ("infer.threshold=1.5", "infer.threshold"),
    ("infer.threshold=-0.1", "infer.threshold"),
    ("infer.silence_seconds=0", "infer.silence_seconds"),
    ("infer.min_silence_seconds=-0.1", "infer.min_silence_seconds"),
    ("infer.min_silence_seconds=2.0", "infer.min_silence_seconds"),  # > silence_seconds
    ("infer.temperature=-1", "infer.temperature"),
    ("infer.top_p=0", "infer.top_p"),
    ("infer.top_p=1.5", "infer.top_p"),
    ("infer.max_reply_tokens=0", "infer.max_reply_tokens"),
    ("infer.max_answer_tokens=0", "infer.max_answer_tokens"),
    ("infer.max_reply_tokens=8.5", "infer.max_reply_tokens"),
    # Architecture options of pretrained checkpoints.
    ("model.encoder.stem=whisper", "model.encoder.subsampling"),  # needs subsampling 2
    ("model.encoder.norm=batch", "model.encoder.norm"),
    ("model.encoder.positions=alibi", "model.encoder.positions"),
    ("model.encoder.norm_eps=0.0", "model.encoder.norm_eps"),
    ("model.encoder.max_positions=0", "model.encoder.max_positions"),
    ("model.decoder.tie_embeddings=1", "model.decoder.tie_embeddings"),
    ("train.freeze=('',)", "train.freeze"),
    ("train.slow=('',)", "train.slow"),
    ("data.ctc_targets=letters", "data.ctc_targets"),
    ("train.slow_lr_scale=0.0", "train.slow_lr_scale"),
    ("data.randomize.lead_in_seconds=(2.0, 1.0)", "data.randomize.lead_in_seconds"),
])
def test_bad_values_are_one_line_config_errors_naming_the_field(override, field):
  with pytest.raises(config_lib.ConfigError) as info:
    _load([override])
  message = str(info.value)
  assert field in message, message
  assert "\n" not in message, message
  assert isinstance(info.value, ValueError)


def test_edges_that_are_allowed():
  config = _load(["infer.threshold=0", "infer.top_p=1", "infer.temperature=0",
                  "infer.min_silence_seconds=0.7", "infer.policy=hybrid", "infer.vad=energy",
                  "data.overflow=drop", "audio.log_style=natural", "data.mixture=None",
                  "train.end_learning_rate_fraction=1"])
  assert config.infer.policy == "hybrid" and config.infer.threshold == 0.0


@pytest.mark.parametrize("override,message", [
    ("model.decoder.num_layer=3", "no field 'model.decoder.num_layer'"),
    ("modle.decoder.num_layers=3", "no field 'modle'"),
    ("model.decoder.num_layers", "not of the form field.path=value"),
    ("model.decoder=3", "model.decoder"),
    ("model.decoder.num_layers.x=3", "model.decoder.num_layers"),
])
def test_bad_override_syntax_is_a_config_error(override, message):
  with pytest.raises(config_lib.ConfigError, match=message) as info:
    _load([override])
  assert "\n" not in str(info.value)


def test_wrong_type_inside_a_config_file_names_the_file(tmp_path):
  file = tmp_path / "typed.py"
  file.write_text(
      "from audio_interaction import config_lib\n"
      "def get_config(arg=None):\n"
      "  config = config_lib.base_config()\n"
      "  config.model.decoder.num_layers = 'two'\n"
      "  return config\n")
  with pytest.raises(config_lib.ConfigError, match="typed.py.*num_layers"):
    config_lib.load_config(str(file))


def test_from_dict_checks_fields_and_fills_the_infer_block():
  values = json.loads(config_lib.base_config().to_json_best_effort())
  del values["infer"]  # a bundle from before the infer block
  config = config_lib.from_dict(values)
  assert config.infer.threshold == 0.5 and config.infer.policy == "model"
  values["model"]["decoder"]["num_layers"] = "two"
  with pytest.raises(config_lib.ConfigError, match="model.decoder.num_layers"):
    config_lib.from_dict(values)
  values["model"]["decoder"]["num_layers"] = 2
  values["model"]["decoder"]["window"] = 0
  with pytest.raises(config_lib.ConfigError, match="model.decoder.window"):
    config_lib.from_dict(values)
  values["model"]["decoder"]["window"] = 64
  values["model"]["decoder"]["windw"] = 64
  with pytest.raises(config_lib.ConfigError, match="model.decoder.windw"):
    config_lib.from_dict(values)


# ---------------------------------------------------------------------------- bundles


@pytest.fixture
def bundle(tmp_path):
  return shutil.copytree(portable.EMBEDDED_BUNDLE, tmp_path / "bundle")


def _edit_config(bundle, edit):
  file = bundle / "config.json"
  values = json.loads(file.read_text())
  edit(values)
  file.write_text(json.dumps(values))


def test_a_bundle_without_infer_block_or_with_part_of_one_loads_with_defaults(bundle):
  _edit_config(bundle, lambda values: values.pop("infer", None))  # saved before it existed
  config, _, _ = portable.load_bundle(bundle)
  assert config.infer.threshold == 0.5 and config.infer.max_reply_tokens >= 1
  assert not config.infer.word_watch
  _edit_config(bundle, lambda values: values.update(infer={"word_watch": True}))
  config, _, _ = portable.load_bundle(bundle)
  assert config.infer.word_watch and config.infer.threshold == 0.5


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_params_name_the_file(bundle, damage):
  file = bundle / "params.msgpack"
  data = file.read_bytes()
  file.write_bytes({"truncate": data[:len(data) // 2], "garbage": b"not a msgpack file at all",
                    "empty": b""}[damage])
  with pytest.raises(ValueError, match="params.msgpack: truncated or not a msgpack file") as info:
    portable.load_bundle(bundle)
  assert str(bundle) in str(info.value)


def test_config_json_that_is_not_json(bundle):
  (bundle / "config.json").write_text('{"model": {"decoder": ')
  with pytest.raises(ValueError, match="config.json: not JSON"):
    portable.load_bundle(bundle)


@pytest.mark.parametrize("edit,field", [
    (lambda v: v["model"]["decoder"].update(window=0), "model.decoder.window"),
    (lambda v: v["model"]["decoder"].update(num_layers="two"), "model.decoder.num_layers"),
    (lambda v: v["audio"].update(chunk_ms=0), "audio.chunk_ms"),
    (lambda v: v.update(infer={"threshold": 2.0}), "infer.threshold"),
    (lambda v: v["model"].update(colour="red"), "model.colour"),
])
def test_config_json_with_a_bad_field(bundle, edit, field):
  _edit_config(bundle, edit)
  with pytest.raises(ValueError, match="config.json") as info:
    portable.load_bundle(bundle)
  assert field in str(info.value)


@pytest.mark.parametrize("name", ["tokenizer/tokenizer.json", "tokenizer/tokenizer.model"])
def test_missing_tokenizer_file_is_named(bundle, name):
  (bundle / name).unlink()
  with pytest.raises(FileNotFoundError, match=name):
    portable.load_bundle(bundle)


def test_bundle_from_another_config_names_a_parameter(bundle):
  _edit_config(bundle, lambda v: v["model"]["decoder"].update(mlp_dim=256))
  with pytest.raises(ValueError, match=r"does not match its config.*\['decoder'\]") as info:
    portable.load_bundle(bundle)
  assert "mlp" in str(info.value).lower() or "Dense" in str(info.value)
