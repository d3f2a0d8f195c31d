"""File names read from a checkpoint or a bundle cannot write or read outside their place.

A checkpoint stores its tokenizer as {relative file name: bytes}; restoring writes them
into a temporary directory. A bundle's `tokenizer/tokenizer.json` names its model file.
Crafted names (absolute, `..`, backslashes, NUL, drive letters, symlinks out) must be
rejected with an error naming the step (or file) and the bad name, and nothing may be
written outside.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import model_testing
from audio_interaction.corpus import worlds
from audio_interaction.data import tokenizer as tokenizer_lib
from audio_interaction.export import portable
from audio_interaction.train import checkpoint as checkpoint_lib

pytestmark = pytest.mark.filterwarnings(
    r"ignore:(?s).*Event loop is closed:pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(scope="module")
def sp_tokenizer():
  pytest.importorskip("sentencepiece")
  return tokenizer_lib.train_sentencepiece(worlds.all_texts(), 200)


def _saved_checkpoint(directory, tokenizer) -> dict:
  """Saves step 7 with `tokenizer`; returns the state restored into."""
  state = {"w": jnp.arange(6.0).reshape(2, 3)}
  with checkpoint_lib.Checkpointer(
      directory, checkpoint_lib.CheckpointOptions(save_interval_steps=1, keep_best=0),
      tokenizer=tokenizer) as saver:
    assert saver.save(7, state, wait=True)
  return state


def _craft_tokenizer_item(directory, edit) -> None:
  """Rewrites the tokenizer item of step 7: `edit(files)` changes {name: base64}."""
  item = directory / "7" / "tokenizer" / "tokenizer.json"
  payload = json.loads(item.read_text())
  edit(payload["files"])
  item.write_text(json.dumps(payload))


def _b64(data: bytes) -> str:
  return base64.b64encode(data).decode("ascii")


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
  """Temporary directories are made under `tmp_path/tmp`, so `../x` lands in `tmp_path`."""
  tmp = tmp_path / "tmp"
  tmp.mkdir()
  monkeypatch.setattr(tempfile, "tempdir", str(tmp))
  return tmp_path


def _files_under(root) -> set[str]:
  return {os.path.relpath(os.path.join(d, f), root)
          for d, _, files in os.walk(root) for f in files}


@pytest.mark.parametrize("bad_name", [
    "../escaped.txt",
    "../../escaped.txt",
    "sub/../../escaped.txt",
    "ABSOLUTE",  # replaced by an absolute path inside the sandbox
    "..\\escaped.txt",
    "C:\\escaped.txt",
    "C:escaped.txt",
    "nul\x00.txt",
    "",
])
def test_crafted_checkpoint_tokenizer_names_are_rejected(sandbox, bad_name):
  ckpt_dir = sandbox / "ckpt"
  state = _saved_checkpoint(ckpt_dir, tokenizer_lib.ByteTokenizer())
  if bad_name == "ABSOLUTE":
    bad_name = str(sandbox / "escaped.txt")
  _craft_tokenizer_item(ckpt_dir, lambda files: files.update({bad_name: _b64(b"owned")}))
  before = _files_under(sandbox)
  with checkpoint_lib.Checkpointer(ckpt_dir) as reader:
    with pytest.raises(checkpoint_lib.CheckpointError) as info:
      reader.restore_latest(checkpoint_lib.abstract_like(state))
  message = str(info.value)
  assert "step 7" in message and repr(bad_name) in message, message
  assert _files_under(sandbox) == before  # nothing written anywhere in the sandbox
  assert not (sandbox / "escaped.txt").exists()
  assert os.listdir(sandbox / "tmp") == []  # the temporary directory was cleaned up


def test_tokenizer_from_files_rejects_escaping_names_directly(sandbox):
  for name in ("../x", "/etc/x", "a/../../x"):
    with pytest.raises(ValueError, match="x"):
      checkpoint_lib.tokenizer_from_files(
          {"tokenizer.json": b"{}", name: b"owned"}, step=3)
  assert not (sandbox / "x").exists()


def test_crafted_model_file_in_checkpoint_is_rejected(sandbox, sp_tokenizer):
  """A checkpoint whose tokenizer.json points its model file outside the temp dir."""
  secret = sandbox / "secret.model"
  secret.write_bytes(sp_tokenizer.model_bytes)  # readable, but outside: must not be used
  ckpt_dir = sandbox / "ckpt"
  state = _saved_checkpoint(ckpt_dir, sp_tokenizer)

  def edit(files):
    meta = json.loads(base64.b64decode(files["tokenizer.json"]))
    meta["model_file"] = str(secret)
    files["tokenizer.json"] = _b64(json.dumps(meta).encode())
  _craft_tokenizer_item(ckpt_dir, edit)
  with checkpoint_lib.Checkpointer(ckpt_dir) as reader:
    with pytest.raises(checkpoint_lib.CheckpointError, match=r"step 7.*model_file") as info:
      reader.restore_latest(checkpoint_lib.abstract_like(state))
  assert str(secret) in str(info.value)


def test_safe_checkpoint_still_restores(sandbox, sp_tokenizer):
  ckpt_dir = sandbox / "ckpt"
  state = _saved_checkpoint(ckpt_dir, sp_tokenizer)
  with checkpoint_lib.Checkpointer(ckpt_dir) as reader:
    restored = reader.restore_latest(checkpoint_lib.abstract_like(state))
  assert restored.tokenizer.model_bytes == sp_tokenizer.model_bytes
  np.testing.assert_array_equal(restored.state["w"], state["w"])


# ---------------------------------------------------------------------------- bundles


@pytest.fixture(scope="module")
def bundle_params():
  from audio_interaction.model.model import AudioInteractionModel  # pylint: disable=g-import-not-at-top
  config = model_testing.small_config()
  shapes = jax.eval_shape(AudioInteractionModel(config).init, jax.random.key(0))
  return config, jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def _bundle(tmp_path, bundle_params, sp_tokenizer):
  config, params = bundle_params
  return portable.save_bundle(tmp_path / "bundle", params, sp_tokenizer, config)


def _set_model_file(bundle, value) -> None:
  meta_file = bundle / "tokenizer" / "tokenizer.json"
  meta = json.loads(meta_file.read_text())
  meta["model_file"] = value
  meta_file.write_text(json.dumps(meta))


@pytest.mark.parametrize("bad", ["ABSOLUTE", "../../outside.model", "../tokenizer/../../outside.model",
                                 "..\\outside.model", "C:\\outside.model", 7, None])
def test_bundle_model_file_must_stay_inside(tmp_path, bundle_params, sp_tokenizer, bad):
  bundle = _bundle(tmp_path, bundle_params, sp_tokenizer)
  outside = tmp_path / "outside.model"
  outside.write_bytes(sp_tokenizer.model_bytes)
  if bad == "ABSOLUTE":
    bad = str(outside)
  _set_model_file(bundle, bad)
  with pytest.raises(ValueError, match="model_file") as info:
    portable.load_bundle(bundle)
  assert repr(bad) in str(info.value) and "tokenizer.json" in str(info.value)


def test_bundle_model_file_symlinked_outside_is_rejected(tmp_path, bundle_params, sp_tokenizer):
  bundle = _bundle(tmp_path, bundle_params, sp_tokenizer)
  outside = tmp_path / "outside.model"
  outside.write_bytes(sp_tokenizer.model_bytes)
  model = bundle / "tokenizer" / "tokenizer.model"
  model.unlink()
  model.symlink_to(outside)
  with pytest.raises(ValueError, match="outside"):
    portable.load_bundle(bundle)


def test_good_bundle_still_loads(tmp_path, bundle_params, sp_tokenizer):
  bundle = _bundle(tmp_path, bundle_params, sp_tokenizer)
  _, _, tokenizer = portable.load_bundle(bundle)
  assert tokenizer.model_bytes == sp_tokenizer.model_bytes
  # A plain relative name in a subdirectory of the tokenizer directory is fine.
  (bundle / "tokenizer" / "sub").mkdir()
  (bundle / "tokenizer" / "sub" / "m.model").write_bytes(sp_tokenizer.model_bytes)
  _set_model_file(bundle, "sub/m.model")
  assert portable.load_bundle(bundle)[2].model_bytes == sp_tokenizer.model_bytes
