"""Tests of `audio_interaction.train.checkpoint`: contents, resharding, errors, recovery.

The state is the real model's parameter tree (small config) with an AdamW state, but
filled with seeded random numbers instead of `model.init`: nothing has to compile, and
every value is checkable. Cross-device and signal tests run this file as a child
process (``python tests/test_checkpoint.py <mode> ...``) so that each side gets its
own simulated device count.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec

import model_testing
from audio_interaction.data import pipeline, storage
from audio_interaction.corpus import worlds
from audio_interaction.data import tokenizer as tokenizer_lib
from audio_interaction.model.model import AudioInteractionModel
from audio_interaction.train import checkpoint, sharding
from synthetic_examples import SyntheticExamples

OPTIMIZER = optax.adamw(1e-3, weight_decay=0.01)
CHUNK, K = 160, 2
PIPELINE = pipeline.PipelineConfig(batch_size=2, max_len=80, max_chunks=10, chunk_samples=CHUNK,
                                   slots_per_chunk=K, seed=5, num_epochs=None, read_threads=1,
                                   prefetch_batches=2)
MESHES = {1: {"data": 1, "fsdp": 1, "tensor": 1}, 8: {"data": 2, "fsdp": 2, "tensor": 2}}
SUBPROCESS_TIMEOUT = 240  # seconds; generous because the 2 cores are shared

# Orbax runs each save/restore in a fresh asyncio loop and closes it; a TensorStore
# future that completes afterwards (from a C++ thread) may still post its callback to
# the closed loop. Harmless (the operation already finished), and intermittent.
pytestmark = pytest.mark.filterwarnings(
    r"ignore:(?s).*Event loop is closed:pytest.PytestUnraisableExceptionWarning")


# ----------------------------------------------------------------------------
# Helpers shared by the tests and the child processes.


def _state_shapes(config) -> tuple[AudioInteractionModel, dict]:
  """Shapes of {params, opt_state (AdamW), step} for the model of `config`; no compiling."""
  model = AudioInteractionModel(config)
  params = jax.eval_shape(model.init, jax.random.key(0))
  return model, {"params": params, "opt_state": jax.eval_shape(OPTIMIZER.init, params),
                 "step": jax.ShapeDtypeStruct((), jnp.int32)}


def _host_values(shapes, seed: int):
  """Seeded NumPy values for every leaf of `shapes` (ints in [0, 1000))."""
  rng = np.random.default_rng(seed)
  def fill(leaf):
    if np.issubdtype(leaf.dtype, np.integer):
      return rng.integers(0, 1000, leaf.shape).astype(leaf.dtype)
    return rng.standard_normal(leaf.shape).astype(leaf.dtype)
  return jax.tree.map(fill, shapes)


def _shardings(model, shapes, config, mesh):
  """Params by the logical-axis rules; AdamW moments like their params; the rest replicated."""
  params = sharding.logical_to_sharding(model.logical_axes(), mesh,
                                        config.sharding.logical_axis_rules)
  replicated = NamedSharding(mesh, PartitionSpec())
  opt_state = optax.tree_map_params(OPTIMIZER, lambda _, s: s, shapes["opt_state"], params,
                                    transform_non_params=lambda _: replicated)
  return {"params": params, "opt_state": opt_state, "step": replicated}


def _sharded_state(config, mesh, seed: int):
  """(state on `mesh`, abstract target for `mesh`) of the model of `config`."""
  model, shapes = _state_shapes(config)
  shardings = _shardings(model, shapes, config, mesh)
  state = jax.device_put(_host_values(shapes, seed), shardings)
  return state, checkpoint.abstract_state(shapes, shardings)


def _assert_trees_equal(actual, expected) -> int:
  """Same structure (namedtuple types included) and equal leaves; returns the leaf count."""
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(e))
  return len(jax.tree.leaves(expected))


def _ids(batch) -> list[int]:
  return [int(i) for i in batch["segment_example_index"].reshape(-1)]


def _child(args: list[str], num_devices: int, **kwargs) -> subprocess.Popen:
  # XLA reads the flag when jax initializes its backend, so it goes in the child's env.
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={num_devices}",
             JAX_PLATFORMS="cpu")
  return subprocess.Popen([sys.executable, __file__, *args], env=env, text=True, **kwargs)


# ----------------------------------------------------------------------------
# Fixtures.


@pytest.fixture(scope="module")
def config():
  return model_testing.small_config()


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory):
  out = storage.dataset_dir(tmp_path_factory.mktemp("data"))
  generator = SyntheticExamples(chunk_samples=CHUNK, slots_per_chunk=K, max_chunks=10)
  storage.build_split(out, "train", 24, generator, 3, shard_size=8, chunk_samples=CHUNK,
                      progress=False)
  return out


@pytest.fixture(scope="module")
def sp_tokenizer():
  pytest.importorskip("sentencepiece")
  return tokenizer_lib.train_sentencepiece(worlds.all_texts(), 200)


@pytest.fixture
def mesh():
  return sharding.make_mesh({"data": -1})


# ----------------------------------------------------------------------------
# Tests.


def test_everything_saved_comes_back_and_the_iterator_resumes(tmp_path, config, split_dir,
                                                              sp_tokenizer, mesh):
  state, abstract = _sharded_state(config, mesh, seed=1)
  iterator = iter(pipeline.load_dataset(split_dir, "train", PIPELINE))
  for _ in range(3):
    next(iterator)
  with checkpoint.Checkpointer(tmp_path, checkpoint.CheckpointOptions(save_interval_steps=3),
                               config=config, tokenizer=sp_tokenizer) as ckpt:
    assert not ckpt.save(2, state, data_iterator=iterator)  # Off the interval.
    assert ckpt.save(3, state, data_iterator=iterator)
    # Running on after the save must not change what was saved (async save).
    expected = [next(iterator) for _ in range(2)]
  iterator.close()
  step_dir = tmp_path / "3"
  for item in ("state/_METADATA", "data_iterator/process_0-of-1.json",
               "tokenizer/tokenizer.json", "config/config.json", "commit_success.txt"):
    assert (step_dir / item).exists(), item

  # A new process would start like this: a fresh checkpointer and a fresh iterator.
  fresh = iter(pipeline.load_dataset(split_dir, "train", PIPELINE))
  with checkpoint.Checkpointer(tmp_path, config=config) as ckpt:
    restored = ckpt.restore_latest(abstract, data_iterator=fresh)
  assert restored.step == 3 and restored.data_iterator is fresh
  count = _assert_trees_equal(restored.state, state)
  assert count > 100  # params, mu and nu of every parameter, count, step
  assert isinstance(restored.state["opt_state"][0], optax.ScaleByAdamState)
  for got, target in zip(jax.tree.leaves(restored.state), jax.tree.leaves(abstract)):
    assert got.sharding == target.sharding
  for want in expected:
    got = next(fresh)
    assert _ids(got) == _ids(want)
    for name in want:
      np.testing.assert_array_equal(got[name], want[name])
  fresh.close()
  assert isinstance(restored.tokenizer, tokenizer_lib.SentencePieceTokenizer)
  assert restored.tokenizer.model_bytes == sp_tokenizer.model_bytes
  text = "what is seven plus five"
  assert restored.tokenizer.encode(text) == sp_tokenizer.encode(text)
  assert restored.config == checkpoint.config_to_json(config)
  assert restored.config["model"]["decoder"]["vocab_size"] == 64


def test_restoring_into_another_model_config_names_the_mismatched_shapes(tmp_path, config, mesh):
  state, _ = _sharded_state(config, mesh, seed=2)
  with checkpoint.Checkpointer(tmp_path, config=config) as ckpt:
    ckpt.save(10, state, force=True)
  other = model_testing.small_config(**{"model.decoder.d_model": 96})
  _, abstract = _sharded_state(other, mesh, seed=2)
  with checkpoint.Checkpointer(tmp_path, config=other) as ckpt:
    with pytest.raises(checkpoint.CheckpointMismatchError) as caught:
      ckpt.restore_latest(abstract)
  error = caught.value
  message = str(error)
  assert error.step == 10 and error.mismatched and not error.missing and not error.unexpected
  # The embedding table is [vocab, d_model]: 64 x 192 saved, 64 x 96 wanted.
  embedding = [p for p in error.mismatched if p.startswith("params/") and "embed" in p]
  assert embedding, sorted(error.mismatched)[:5]
  assert error.mismatched[embedding[0]] == ((64, 192), (64, 96))
  # The message lists parameters first, each with both shapes.
  listed = re.findall(r"^  (params/\S+): saved \((.*)\), expected \((.*)\)$", message, re.M)
  assert listed, message
  for path, saved, wanted in listed:
    assert error.mismatched[path] == tuple(
        tuple(int(n) for n in shape.split(",") if n.strip()) for shape in (saved, wanted))
  assert any("192" in saved and "96" in wanted for _, saved, wanted in listed), message
  assert "model.decoder.d_model: saved 192, current 96" in message
  # AdamW moments are named like their params.
  assert any(p.startswith("opt_state/0/mu/") for p in error.mismatched)
  # A mismatch is the caller's problem, not corruption: nothing was moved aside.
  assert (tmp_path / "10" / "commit_success.txt").exists()

  # Missing and unexpected arrays are named too.
  model, shapes = _state_shapes(config)
  shardings = _shardings(model, shapes, config, mesh)
  target = checkpoint.abstract_state(shapes, shardings)
  target["extra"] = jax.ShapeDtypeStruct((3,), jnp.float32, sharding=shardings["step"])
  del target["step"]
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    with pytest.raises(checkpoint.CheckpointMismatchError,
                       match=r"(?s)extra: missing from the checkpoint.*step: unexpected"):
      ckpt.restore(10, target)
    with pytest.raises(ValueError, match="without a sharding"):
      ckpt.restore(10, shapes)


def test_half_written_and_truncated_steps_are_skipped_for_the_last_good_one(
    tmp_path, config, mesh, caplog):
  state, abstract = _sharded_state(config, mesh, seed=3)
  options = checkpoint.CheckpointOptions(max_to_keep=None)
  with checkpoint.Checkpointer(tmp_path, options) as ckpt:
    for step in (2, 3, 4):
      ckpt.save(step, jax.tree.map(lambda x, s=step: x + (s - 2), state), force=True)
  # A save killed before Orbax's commit (its tmp directory), a step directory without
  # the commit marker, and two committed steps with truncated files: array data
  # (fails reading the metadata) and the per-process array metadata (fails restoring).
  shutil.copytree(tmp_path / "4", tmp_path / "8.orbax-checkpoint-tmp-1700000000")
  shutil.copytree(tmp_path / "4", tmp_path / "6")
  (tmp_path / "6" / "commit_success.txt").unlink()
  truncated = [tmp_path / "3" / "state" / "array_metadatas" / "process_0"]
  truncated += list((tmp_path / "4" / "state" / "d").iterdir())
  for path in truncated:
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])

  # Read the module's logger directly: another test in the same worker may have
  # configured logging (dictConfig disables existing loggers; a handler may stop
  # propagation), which must not hide these warnings from the test.
  logger = logging.getLogger(checkpoint.__name__)
  logger.disabled = False
  logger.addHandler(caplog.handler)
  with caplog.at_level(logging.WARNING, logger=checkpoint.__name__):
    with checkpoint.Checkpointer(tmp_path, options) as ckpt:
      assert ckpt.all_steps() == [2, 3, 4]  # 6 moved aside at start, 8 never counted
      restored = ckpt.restore_latest(abstract)
      assert restored.step == 2
      _assert_trees_equal(restored.state, state)
      # The broken steps are out of the way: the run can save them again.
      assert ckpt.all_steps() == [2]
      assert ckpt.save(4, state, force=True, wait=True)
  assert not (tmp_path / "8.orbax-checkpoint-tmp-1700000000").exists()  # Orbax cleaned it.
  logger.removeHandler(caplog.handler)
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  def warned(step: int, why: str) -> bool:
    return any(f"step {step} " in w and why in w for w in warnings)
  assert warned(8, "unfinished save"), warnings
  assert warned(6, "commit_success.txt"), warnings
  assert warned(4, "skipped"), warnings
  assert warned(3, "skipped"), warnings
  names = sorted(p.name for p in tmp_path.iterdir())
  for step in (3, 4, 6):
    assert any(n.startswith(f"{step}.unusable-") for n in names), names

  # If no step can be read, nothing is moved and the error lists every step.
  for data in (tmp_path / "4" / "state" / "d").iterdir():
    data.write_bytes(b"")
  for data in (tmp_path / "2" / "state" / "d").iterdir():
    data.write_bytes(b"")
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    with pytest.raises(checkpoint.CheckpointError, match=r"(?s)step 4: .*step 2: "):
      ckpt.restore_latest(abstract)
    assert ckpt.all_steps() == [2, 4]


def test_keeps_the_last_k_and_the_best_by_eval_metric(tmp_path, mesh):
  options = checkpoint.CheckpointOptions(save_interval_steps=2, max_to_keep=2, keep_best=1,
                                         best_metric="eval_loss", best_mode="min")
  state = jax.device_put({"w": np.zeros(3, np.float32)}, NamedSharding(mesh, PartitionSpec()))
  eval_loss = {3: 2.0, 6: 0.5, 9: 1.0, 12: 3.0}  # step 3 and 9 are off the interval
  saved = []
  with checkpoint.Checkpointer(tmp_path, options) as ckpt:
    for step in range(1, 13):
      metrics = {"eval_loss": eval_loss[step]} if step in eval_loss else None
      if ckpt.save(step, state, metrics=metrics):
        saved.append(step)
    ckpt.wait_until_finished()
    assert saved == [2, 3, 4, 6, 8, 9, 10, 12]  # Evaluated steps are always saved.
    assert ckpt.all_steps() == [6, 10, 12] and ckpt.best_step() == 6
    with pytest.raises(ValueError, match="eval_loss"):
      ckpt.save(13, state, metrics={"accuracy": 1.0})
  assert sorted(int(p.name) for p in tmp_path.iterdir() if p.name.isdigit()) == [6, 10, 12]
  # After a restart the best is still known (its metrics are on disk) and kept.
  with checkpoint.Checkpointer(tmp_path, options) as ckpt:
    assert ckpt.best_step() == 6 and ckpt.metrics(6) == {"eval_loss": 0.5}
    assert ckpt.save(14, state)
    ckpt.save(15, state, metrics={"eval_loss": 0.25})
    ckpt.wait_until_finished()
    assert ckpt.all_steps() == [14, 15]  # 15 is now both among the last 2 and the best.
    assert ckpt.best_step() == 15


def test_preemption_guard_sets_a_flag_and_restores_the_handlers():
  # Python's default SIGINT handler as the "previous" one, whatever the test runner set.
  original = signal.signal(signal.SIGINT, signal.default_int_handler)
  try:
    with checkpoint.PreemptionGuard() as guard:
      assert not guard.should_stop and guard.signal_name is None
      os.kill(os.getpid(), signal.SIGINT)  # No KeyboardInterrupt: only the flag.
      deadline = time.time() + 5
      while not guard.should_stop and time.time() < deadline:
        time.sleep(0.01)
      assert guard.should_stop and guard.signal_name == "SIGINT"
      # A second signal falls back to the previous handler: Ctrl-C twice still interrupts.
      with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
  finally:
    signal.signal(signal.SIGINT, original)


def test_a_checkpoint_moves_between_8_devices_and_1(tmp_path):
  """Save on mesh (data 2, fsdp 2, tensor 2) and restore on 1 device, and the reverse."""
  outputs = {}
  def run_pair(save_devices: int, restore_devices: int):
    directory = str(tmp_path / f"from_{save_devices}")
    for mode, devices in (("save", save_devices), ("restore", restore_devices)):
      child = _child([mode, str(devices), directory], devices,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
      out, err = child.communicate(timeout=SUBPROCESS_TIMEOUT)
      outputs[(save_devices, mode)] = (child.returncode, out, err[-3000:])
      if child.returncode:
        return
  # The two directions are independent: run them side by side.
  threads = [threading.Thread(target=run_pair, args=pair) for pair in ((8, 1), (1, 8))]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  for (source, mode), (code, out, err) in sorted(outputs.items()):
    assert code == 0, f"{mode} (checkpoint from {source} devices) failed:\n{err}"
  for source, target in ((8, 1), (1, 8)):
    saved = json.loads(outputs[(source, "save")][1].strip().splitlines()[-1])
    restored = json.loads(outputs[(source, "restore")][1].strip().splitlines()[-1])
    assert saved["devices"] == source and restored["devices"] == target
    # On 8 devices the arrays really are split (fsdp x tensor), not replicated.
    assert max(saved["shards"], restored["shards"]) == 4
    assert restored["leaves"] == saved["leaves"] > 100
    assert restored["checksum"] == pytest.approx(saved["checksum"], rel=1e-6)


def test_sigterm_saves_the_current_step_and_exits_cleanly(tmp_path):
  log = (tmp_path / "stderr.txt").open("w")
  child = _child(["loop", "1", str(tmp_path / "ckpt")], 1, stdout=subprocess.PIPE, stderr=log)
  lines = []
  try:
    for line in child.stdout:  # Wait until the loop runs (jit compiled, a few steps done).
      lines.append(line.strip())
      if line.strip() == "step 3":
        child.send_signal(signal.SIGTERM)
        break
    out, _ = child.communicate(timeout=SUBPROCESS_TIMEOUT)
  finally:
    if child.poll() is None:
      child.kill()
    log.close()
  lines += out.strip().splitlines()
  assert child.returncode == 0, (tmp_path / "stderr.txt").read_text()[-3000:]
  final = [line for line in lines if line.startswith("SIGTERM at step ")]
  assert len(final) == 1, lines
  step = int(final[0].split()[3].rstrip(":"))
  assert step >= 3
  with checkpoint.Checkpointer(tmp_path / "ckpt") as ckpt:
    assert ckpt.latest_step() == step  # The interval (1000) never saved: this is the exit save.
    target = checkpoint.abstract_state(
        {"w": jax.ShapeDtypeStruct((4,), jnp.float32), "step": jax.ShapeDtypeStruct((), jnp.int32)},
        NamedSharding(sharding.make_mesh({"data": -1}), PartitionSpec()))
    restored = ckpt.restore_latest(target)
  assert int(restored.state["step"]) == step
  np.testing.assert_array_equal(np.asarray(restored.state["w"]), np.full(4, float(step)))


# ----------------------------------------------------------------------------
# Child processes.


def _child_save_or_restore(mode: str, num_devices: int, directory: str) -> None:
  assert len(jax.devices()) == num_devices, jax.devices()
  config = model_testing.small_config()
  mesh = sharding.make_mesh(MESHES[num_devices])
  ckpt = checkpoint.Checkpointer(directory, config=config)
  expected, abstract = _sharded_state(config, mesh, seed=7)
  if mode == "save":
    assert ckpt.save(5, expected, force=True, wait=True)
    arrays = expected
  else:
    restored = ckpt.restore_latest(abstract)
    assert restored.step == 5
    arrays = restored.state
    _assert_trees_equal(arrays, expected)
    for got, target in zip(jax.tree.leaves(arrays), jax.tree.leaves(abstract)):
      assert got.sharding == target.sharding, (got.sharding, target.sharding)
  ckpt.close()
  leaves = jax.tree.leaves(arrays)
  print(json.dumps({
      "devices": len(jax.devices()),
      "leaves": len(leaves),
      "checksum": float(sum(np.abs(np.asarray(x, np.float64)).sum() for x in leaves)),
      # Most distinct pieces any array is cut into.
      "shards": max(len({str(s.index) for s in x.addressable_shards}) for x in leaves),
  }))


def _child_loop(directory: str) -> int:
  """A training loop stand-in: one step every 20 ms until SIGTERM/SIGINT."""
  ckpt = checkpoint.Checkpointer(directory, checkpoint.CheckpointOptions(
      save_interval_steps=1000, keep_best=0))
  replicated = NamedSharding(sharding.make_mesh({"data": -1}), PartitionSpec())
  state = jax.device_put({"w": np.zeros(4, np.float32), "step": np.int32(0)}, replicated)
  train_step = jax.jit(lambda s: {"w": s["w"] + 1, "step": s["step"] + 1}, donate_argnums=0)
  with checkpoint.PreemptionGuard() as guard:
    for step in range(1, 10_000):
      state = train_step(state)
      ckpt.save(step, state)
      print(f"step {step}", flush=True)
      if guard.should_stop:
        ckpt.save(step, state, force=True, wait=True)
        print(f"{guard.signal_name} at step {step}: checkpoint saved, exiting", flush=True)
        break
      time.sleep(0.02)
    else:
      return 3  # Never signalled.
  ckpt.close()
  return 0 if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL else 4


if __name__ == "__main__":
  logging.basicConfig(level=logging.WARNING)
  child_mode, child_devices, child_directory = sys.argv[1], int(sys.argv[2]), sys.argv[3]
  if child_mode == "loop":
    sys.exit(_child_loop(child_directory))
  _child_save_or_restore(child_mode, child_devices, child_directory)
