"""Training loop: kill -9 and resume == uninterrupted; 2 processes == 1 process."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from audio_interaction.data import storage
from audio_interaction.export import portable
from audio_interaction.train import export as train_export
import train_testing

SCRIPT = pathlib.Path(__file__).parent / "scripts" / "train_run.py"
STEPS = 6


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  directory = tmp_path_factory.mktemp("data")
  make = train_testing.synthetic_examples(train_testing.train_config())
  storage.build_split(directory, "train", 64, make, seed=0, shard_size=16, progress=False)
  storage.build_split(directory, "eval", 8, make, seed=1, shard_size=8, progress=False)
  return directory


def _command(data_dir, workdir, out="", batch=4, augment=False, max_seconds=0.0):
  return ([sys.executable, str(SCRIPT), "--data", str(data_dir), "--workdir", str(workdir),
           "--steps", str(STEPS), "--batch", str(batch)] + (["--out", str(out)] if out else [])
          + (["--augment"] if augment else [])
          + (["--max-seconds", str(max_seconds)] if max_seconds else []))


def _run(command, env=None):
  result = subprocess.run(command, capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, **(env or {})))
  assert result.returncode == 0, result.stderr[-4000:]
  return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def uninterrupted_workdir(data_dir, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("uninterrupted")
  report = _run(_command(data_dir, workdir, workdir / "params.npz"))
  assert report["step"] == STEPS
  return workdir


@pytest.fixture(scope="module")
def uninterrupted(uninterrupted_workdir):
  return np.load(uninterrupted_workdir / "params.npz")


def test_run_wrote_metrics_and_exports_a_bundle(data_dir, uninterrupted_workdir, uninterrupted,
                                                tmp_path):
  history = [json.loads(line) for line in
             (uninterrupted_workdir / "tensorboard" / "history.jsonl").read_text().splitlines()]
  logged = [row for row in history if "decision_f1" in row]
  assert logged and {"tokens_per_second_per_device", "tflops_per_device", "mfu",
                     "learning_rate", "step_time", "truncated_fraction",
                     "dropped_fraction"} <= set(logged[-1])
  assert list((uninterrupted_workdir / "tensorboard").glob("events.out.tfevents.*"))
  assert [row["step"] for row in history if "eval/loss" in row] == [STEPS]
  config = train_testing.loop_config(data_dir)
  train_export.export_checkpoint(config, uninterrupted_workdir, tmp_path / "bundle", use_best=False)
  _, params, tokenizer = portable.load_bundle(tmp_path / "bundle")
  flat = {jax.tree_util.keystr(p): np.asarray(v)
          for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  for key in uninterrupted.files:
    np.testing.assert_array_equal(flat[key], uninterrupted[key])
  assert tokenizer.vocab_size == 268
  # The same checkpoint as safetensors: the same params, bit for bit.
  train_export.export_checkpoint(config, uninterrupted_workdir, tmp_path / "st", use_best=False,
                                 export_format="safetensors")
  _, from_safetensors, _ = portable.load_bundle(tmp_path / "st")
  for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(from_safetensors),
                  strict=True):
    np.testing.assert_array_equal(a, b)


def _assert_same_params(got, want, atol):
  assert sorted(got.files) == sorted(want.files)
  for key in want.files:
    np.testing.assert_allclose(got[key], want[key], atol=atol, rtol=0, err_msg=key)


def _step_dirs(checkpoints):
  """The step folders; a kill can leave Orbax's "<step>.orbax-checkpoint-tmp" beside them,
  with its own commit_success.txt written before the rename."""
  return [d for d in checkpoints.glob("[0-9]*") if d.name.isdigit()]


def _kill_after_first_checkpoint(command, workdir):
  process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  checkpoints = workdir / "checkpoints"
  deadline = time.monotonic() + 600
  # Kill as soon as a first checkpoint is committed: mid-run, with work after it lost.
  while time.monotonic() < deadline and process.poll() is None:
    if any((d / "commit_success.txt").exists() for d in _step_dirs(checkpoints)):
      break
    time.sleep(0.05)
  assert process.poll() is None, "the run ended before it could be killed"
  process.send_signal(signal.SIGKILL)
  process.wait()
  committed = sorted(int(d.name) for d in _step_dirs(checkpoints)
                     if (d / "commit_success.txt").exists())
  assert committed and committed[-1] < STEPS


def test_a_time_budget_stops_at_a_checkpoint_and_the_next_run_resumes(data_dir, uninterrupted,
                                                                      tmp_path):
  # A budget spent at once stops the run after its first step, with a checkpoint there.
  first = _run(_command(data_dir, tmp_path, max_seconds=1e-6))
  assert first["step"] == 1 and first["stopped_by"] == "max_seconds"
  assert [int(d.name) for d in _step_dirs(tmp_path / "checkpoints")] == [1]
  history = [json.loads(line) for line in
             (tmp_path / "tensorboard" / "history.jsonl").read_text().splitlines()]
  assert [row["step"] for row in history if "eval/loss" in row] == [1]  # its final eval
  second = _run(_command(data_dir, tmp_path, tmp_path / "params.npz"))
  assert second["step"] == STEPS and second["stopped_by"] is None
  _assert_same_params(np.load(tmp_path / "params.npz"), uninterrupted, atol=0)


def test_kill_9_then_resume_equals_uninterrupted(data_dir, uninterrupted, tmp_path):
  workdir = tmp_path / "killed"
  _kill_after_first_checkpoint(_command(data_dir, workdir), workdir)
  report = _run(_command(data_dir, workdir, tmp_path / "resumed.npz"))
  assert report["step"] == STEPS
  # Same data in the same order from the restored iterator: bit-for-bit on one CPU.
  _assert_same_params(np.load(tmp_path / "resumed.npz"), uninterrupted, atol=0)


def test_augmented_kill_9_then_resume_equals_uninterrupted(data_dir, uninterrupted, tmp_path):
  """Augmentation draws from (seed, step, row): a resumed run redraws exactly what the
  uninterrupted one drew after the checkpoint."""
  whole = tmp_path / "augmented"
  report = _run(_command(data_dir, whole, tmp_path / "augmented.npz", augment=True))
  assert report["step"] == STEPS
  augmented = np.load(tmp_path / "augmented.npz")
  # The augmentation is really on: other parameters than the plain run's.
  assert any(not np.allclose(augmented[k], uninterrupted[k], atol=1e-6) for k in augmented.files)
  workdir = tmp_path / "augmented_killed"
  _kill_after_first_checkpoint(_command(data_dir, workdir, augment=True), workdir)
  report = _run(_command(data_dir, workdir, tmp_path / "augmented_resumed.npz", augment=True))
  assert report["step"] == STEPS
  _assert_same_params(np.load(tmp_path / "augmented_resumed.npz"), augmented, atol=0)


def _free_port() -> int:
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def _run_two_processes(data_dir, workdir, out, max_seconds=0.0) -> list[dict]:
  port = _free_port()
  processes = []
  for rank in range(2):
    env = dict(os.environ, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
               JAX_PROCESS_ID=str(rank), JAX_PLATFORMS="cpu")
    processes.append(subprocess.Popen(
        _command(data_dir, workdir, out, batch=2, max_seconds=max_seconds),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
  outputs = [p.communicate(timeout=900) for p in processes]
  for process, (stdout, stderr) in zip(processes, outputs):
    assert process.returncode == 0, stderr[-4000:]
  return [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs]


def test_two_process_run_equals_one_process(data_dir, uninterrupted, tmp_path):
  """2 processes × 2 rows vs 1 process × 4 rows: the same global batches; a time budget
  stops both at the same step (process 0's clock, checked every log_every = 2 steps)."""
  workdir = tmp_path / "two"
  stopped = _run_two_processes(data_dir, workdir, "", max_seconds=1e-6)
  assert [(r["step"], r["stopped_by"]) for r in stopped] == [(2, "max_seconds")] * 2
  reports = _run_two_processes(data_dir, workdir, tmp_path / "two.npz")
  assert [(r["processes"], r["step"]) for r in reports] == [(2, STEPS)] * 2
  # Rows reach the loss in another order: sums differ in the last bits only.
  _assert_same_params(np.load(tmp_path / "two.npz"), uninterrupted, atol=1e-5)
