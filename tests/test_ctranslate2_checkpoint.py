"""Whisper in CTranslate2's format: the reader's tensors rebuild the reference encoder.

A small random `transformers` Whisper is converted by CTranslate2's own converter,
read back by `ctranslate2_checkpoint` (no ctranslate2 at run time), imported, and the
encoder's hidden states compared with the torch model's; the Whisper tiny.en package
the `whisper_tiny` config uses is compared with CTranslate2's own encoder.
"""

import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audio_interaction import config_lib
from audio_interaction.model import ctranslate2_checkpoint as ct2c
from audio_interaction.model import pretrained
from audio_interaction.model.model import AudioInteractionModel
import model_testing

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
ctranslate2 = pytest.importorskip("ctranslate2")

N_MELS = 80


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  """(CTranslate2 directory, the torch reference encoder) of a small random Whisper."""
  config = model_testing.small_whisper_config(transformers, N_MELS)
  torch.manual_seed(0)
  model = transformers.WhisperForConditionalGeneration(config).eval()
  gen = torch.Generator().manual_seed(0)
  with torch.no_grad():  # non-zero biases and norms, so each must be read
    for p in model.parameters():
      p.add_(0.05 * torch.randn(p.shape, generator=gen))
  root = tmp_path_factory.mktemp("ct2")
  model.save_pretrained(root / "hf", safe_serialization=True)
  ctranslate2.converters.TransformersConverter(str(root / "hf")).convert(str(root / "ct2"))
  return root / "ct2", model.model.encoder


def _model(directory, overrides=()):
  config = config_lib.load_config(model_testing.TINY, ["audio.chunk_ms=320", *overrides])
  return AudioInteractionModel(pretrained.configure(config, encoder_checkpoint=str(directory)))


def _encode(model, params, mel):
  return np.asarray(model.network.apply(params, jnp.asarray(mel), None,
                                        method=lambda net, m, s: net.encoder(m, s))[1])


def test_the_directory_is_recognised_and_its_config_derived(converted):
  directory, _ = converted
  assert ct2c.is_ctranslate2_directory(directory)
  assert not ct2c.is_ctranslate2_directory(directory.parent / "hf")
  assert pretrained.read_checkpoint_config(directory) == {
      "model_type": "whisper", "num_mel_bins": N_MELS, "d_model": 64, "encoder_layers": 2,
      "encoder_attention_heads": 4, "encoder_ffn_dim": 96, "max_source_positions": 16,
      "activation_function": "gelu"}


def test_imported_encoder_equals_the_reference_whisper_encoder(converted):
  directory, reference = converted
  model = _model(directory)
  params = pretrained.init_from_pretrained(model, jax.random.key(0),
                                           encoder_checkpoint=str(directory))
  frames = model.config.frames_per_chunk  # one chunk: full attention, as Whisper's
  mel = np.random.default_rng(0).normal(size=(2, frames, N_MELS)).astype(np.float32)
  mel[:, -1] = 0.0  # ours is Whisper delayed by one frame (see test_pretrained)
  delayed = np.concatenate([np.zeros_like(mel[:, :1]), mel[:, :-1]], axis=1)
  with torch.no_grad():
    want = reference(torch.from_numpy(delayed).transpose(1, 2)).last_hidden_state.numpy()
  # CTranslate2 stores float32 here (no quantisation asked): the same numbers as torch's.
  np.testing.assert_allclose(_encode(model, params, mel), want, atol=1e-4, rtol=1e-4)


def test_query_key_and_value_are_split_in_that_order(converted):
  directory, _ = converted
  source = ct2c.CTranslate2WhisperSource(directory)
  hf = pretrained.TensorSource(directory.parent / "hf")
  for name in ("q_proj.weight", "k_proj.weight", "v_proj.weight", "q_proj.bias", "v_proj.bias"):
    full = f"model.encoder.layers.1.self_attn.{name}"
    np.testing.assert_array_equal(source[full], hf[full])
  assert "model.encoder.layers.1.self_attn.k_proj.bias" not in source
  assert set(source) <= set(hf)


def _variables_file(path, version=6, spec="WhisperSpec", tensor=np.zeros((2, 3), np.float32),
                    nbytes=None):
  name, raw = "encoder/conv1/weight", tensor.tobytes()
  def string(text):
    return struct.pack("<H", len(text) + 1) + text.encode() + b"\0"
  blob = struct.pack("<I", version) + string(spec) + struct.pack("<II", 1, 1) + string(name)
  blob += struct.pack("<B", tensor.ndim) + b"".join(struct.pack("<I", d) for d in tensor.shape)
  blob += struct.pack("<BI", {np.float32: 0, np.float16: 4}[tensor.dtype.type],
                      len(raw) if nbytes is None else nbytes) + raw + struct.pack("<I", 0)
  path.write_bytes(blob)
  return path


def test_read_model_bin_reads_names_shapes_and_values(tmp_path):
  tensor = np.arange(6, dtype=np.float16).reshape(2, 3)
  spec, variables = ct2c.read_model_bin(_variables_file(tmp_path / "model.bin", tensor=tensor))
  assert spec == "WhisperSpec"
  np.testing.assert_array_equal(variables["encoder/conv1/weight"], tensor)


@pytest.mark.parametrize("damage, message", [
    (dict(version=2), "binary version 2"),
    (dict(nbytes=8), "does not fit"),
])
def test_a_damaged_file_is_named(tmp_path, damage, message):
  with pytest.raises(ct2c.CTranslate2FormatError, match=message):
    ct2c.read_model_bin(_variables_file(tmp_path / "model.bin", **damage))


def test_a_truncated_file_and_another_spec_are_named(tmp_path):
  path = _variables_file(tmp_path / "model.bin")
  path.write_bytes(path.read_bytes()[:40])
  with pytest.raises(ct2c.CTranslate2FormatError, match="truncated"):
    ct2c.read_model_bin(path)
  _variables_file(tmp_path / "model.bin", spec="TransformerSpec")
  with pytest.raises(ct2c.CTranslate2FormatError, match="not a WhisperSpec"):
    ct2c.CTranslate2WhisperSource(tmp_path)
  with pytest.raises(FileNotFoundError, match="model.bin is missing"):
    ct2c.CTranslate2WhisperSource(tmp_path / "nowhere")


def test_the_shipped_whisper_tiny_en_matches_ctranslate2s_own_encoder():
  pytest.importorskip(ct2c.WHISPER_TINY_EN_PACKAGE[1])
  directory = ct2c.installed_whisper_tiny_en()
  # One 30 s chunk: full attention over Whisper's whole window.
  model = _model(directory, ["audio.chunk_ms=30000", "data.max_chunks=1"])
  params = pretrained.init_from_pretrained(model, jax.random.key(0),
                                           encoder_checkpoint=str(directory))
  mel = (np.random.default_rng(1).normal(size=(1, 3000, N_MELS)) * 0.5).astype(np.float32)
  mel[:, -1] = 0.0
  delayed = np.concatenate([np.zeros_like(mel[:, :1]), mel[:, :-1]], axis=1)
  whisper = ctranslate2.models.Whisper(str(directory), compute_type="float32")
  want = np.asarray(whisper.encode(ctranslate2.StorageView.from_array(
      np.array(delayed.transpose(0, 2, 1), order="C")), to_cpu=True))
  got = _encode(model, params, mel)
  assert got.shape == want.shape == (1, 1500, 384)
  # Both run the float16 weights in float32; outputs reach ~15 in magnitude.
  np.testing.assert_allclose(got, want, atol=2e-3, rtol=1e-3)


@pytest.mark.parametrize("variant", ["", ":chunk320", ":chunk320,tune_top_block"])
def test_the_whisper_tiny_config_has_the_installed_checkpoints_shapes(variant):
  pytest.importorskip(ct2c.WHISPER_TINY_EN_PACKAGE[1])
  from audio_interaction.train import trainer
  config = config_lib.load_config(str(config_lib.experiments_dir() / "whisper_tiny.py")
                                  + variant)
  # Both variants see 2.56 s of left context and train on 10.24 s rows, in 160 or 320 ms chunks.
  assert config.model.encoder.left_chunks * config.audio.chunk_ms == 2560
  assert config.data.max_chunks * config.audio.chunk_ms == 10240
  derived = pretrained.configure(config, encoder_checkpoint=config.init.encoder_checkpoint)
  assert derived.model.encoder.to_dict() == config.model.encoder.to_dict()
  assert derived.audio.to_dict() == config.audio.to_dict()
  model = AudioInteractionModel(config)
  shapes = jax.eval_shape(model.init, jax.random.key(0))
  trainer.check_freeze_patterns(shapes, tuple(config.train.freeze))
  labels = trainer.freeze_labels(shapes, tuple(config.train.freeze), tuple(config.train.slow))
  # Fresh parts train at the full rate; Whisper's blocks are frozen or (the top one) slow.
  whisper = [label for path, label in jax.tree_util.tree_leaves_with_path(
      labels["params"]["encoder"]) if "adapter" not in jax.tree_util.keystr(path)]
  fresh = [label for part, tree in labels["params"].items() if part != "encoder"
           for label in jax.tree_util.tree_leaves(tree)]
  assert set(fresh) == {"trainable"}
  assert set(whisper) == ({"frozen", "slow"} if "tune_top_block" in variant else {"frozen"})
  with pytest.raises(ValueError, match="not both"):
    config_lib.load_config(str(config_lib.experiments_dir() / "whisper_tiny.py")
                           + ":finetune_encoder,tune_top_block")


def test_an_unknown_installed_checkpoint_is_named():
  with pytest.raises(FileNotFoundError, match="unknown installed checkpoint 'installed:nope'"):
    pretrained.resolve_checkpoint("installed:nope")
  assert str(pretrained.resolve_checkpoint("some/dir")) == "some/dir"
