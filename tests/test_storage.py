"""Tests of `audio_interaction.data.storage`: TFDS/ArrayRecord round trip and resumable builds."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from audio_interaction.data import storage
from audio_interaction import stream_format as sf
from synthetic_examples import SyntheticExamples

CHUNK = 160  # Small chunks keep the shards tiny.
GENERATOR = SyntheticExamples(chunk_samples=CHUNK, max_chunks=8)
SEED = 7


def _assert_record_equals(record: dict, expected: dict, index: int) -> None:
  assert int(record[storage.INDEX_FIELD]) == index
  for name, (field, _) in sf.EXAMPLE_FIELDS.items():
    got, want = np.asarray(record[name]), np.asarray(expected[name])
    assert got.dtype == np.dtype(field.partition("[")[0]), (name, got.dtype)
    np.testing.assert_array_equal(got, want, err_msg=f"{name} of example {index}")
  for name in storage.METADATA_FIELDS:
    assert record[name].decode() == expected[name]


def _records(out_dir: pathlib.Path, split: str) -> list[dict]:
  source = storage.load_split(out_dir, split)
  return [source[i] for i in range(len(source))]


def _shard_bytes(out_dir: pathlib.Path, split: str) -> list[bytes]:
  return [p.read_bytes() for p in sorted(out_dir.glob(f"*-{split}.array_record-*"))]


@dataclasses.dataclass(frozen=True)
class _FailingExamples:
  """Delegates to GENERATOR but raises at one index: a crash mid-build."""

  fail_at: int

  def __call__(self, index: int, seed: int) -> dict:
    if index == self.fail_at:
      raise RuntimeError("simulated crash")
    return GENERATOR(index, seed)


def test_round_trip_reads_back_equal_arrays_without_tensorflow(tmp_path):
  out = storage.dataset_dir(tmp_path)
  summary = storage.build_split(out, "train", 30, GENERATOR, SEED, shard_size=7,
                                chunk_samples=CHUNK, progress=False)
  assert (summary.num_examples, summary.num_shards) == (30, 5)

  # The documented readers: by name from data_dir, and from the dataset directory.
  by_name = tfds.data_source("audio_interaction", data_dir=os.fspath(tmp_path), split="train")
  by_dir = tfds.builder_from_directory(os.fspath(out)).as_data_source("train")
  assert len(by_name) == len(by_dir) == 30
  for index in range(30):
    expected = GENERATOR(index, SEED)
    _assert_record_equals(by_name[index], expected, index)
    _assert_record_equals(by_dir[index], expected, index)

  metadata = storage.read_split_metadata(out, "train")
  expected_abilities = [GENERATOR(i, SEED)["ability"] for i in range(30)]
  assert metadata.abilities.tolist() == expected_abilities
  assert sum(summary.ability_counts.values()) == 30
  # Nothing left of the build machinery.
  assert not (out / "_build").exists()
  # Reading never needs TensorFlow (it may be installed, for `eval --tfds`): checked in
  # a fresh interpreter, since other tests in this worker may have imported it.
  reader = ("import sys, tensorflow_datasets as tfds; "
            f"source = tfds.builder_from_directory({os.fspath(out)!r}).as_data_source('train'); "
            "[source[i] for i in range(len(source))]; "
            "print('tensorflow' in sys.modules)")
  result = subprocess.run([sys.executable, "-c", reader], capture_output=True, text=True,
                          timeout=300, check=True)
  assert result.stdout.strip().splitlines()[-1] == "False", result.stdout + result.stderr


def test_parallel_build_equals_sequential_build(tmp_path):
  sequential = storage.build_split(tmp_path / "a" / "1.0.0", "train", 24, GENERATOR, SEED,
                                   shard_size=6, progress=False)
  parallel = storage.build_split(tmp_path / "b" / "1.0.0", "train", 24, GENERATOR, SEED,
                                 num_workers=2, shard_size=6, progress=False)
  assert _shard_bytes(sequential.out_dir, "train") == _shard_bytes(parallel.out_dir, "train")
  assert sequential.ability_counts == parallel.ability_counts


def test_rerun_of_finished_split_is_a_noop_and_plan_changes_are_errors(tmp_path):
  out = storage.dataset_dir(tmp_path)
  storage.build_split(out, "train", 10, GENERATOR, SEED, shard_size=4, progress=False)
  before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
  storage.build_split(out, "train", 10, GENERATOR, SEED, shard_size=4, progress=False)
  assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
  with pytest.raises(ValueError, match="built with"):
    storage.build_split(out, "train", 10, GENERATOR, SEED + 1, shard_size=4, progress=False)


def test_second_split_keeps_the_first(tmp_path):
  out = storage.dataset_dir(tmp_path)
  storage.build_split(out, "train", 9, GENERATOR, SEED, shard_size=4, progress=False)
  storage.build_split(out, "validation", 5, GENERATOR, SEED + 1, shard_size=4, progress=False,
                      writer_options="group_size:1,uncompressed")
  builder = tfds.builder_from_directory(os.fspath(out))
  assert {name: info.num_examples for name, info in builder.info.splits.items()} == {
      "train": 9, "validation": 5}
  _assert_record_equals(storage.load_split(out, "validation")[4], GENERATOR(4, SEED + 1), 4)


def test_crash_in_process_then_resume(tmp_path):
  out = storage.dataset_dir(tmp_path)
  with pytest.raises(RuntimeError, match="simulated crash"):
    storage.build_split(out, "train", 20, _FailingExamples(fail_at=13), SEED, shard_size=5,
                        progress=False)
  work = out / "_build" / "train"
  assert sorted(p.name for p in work.glob("shard-*.json")) == [
      "shard-00000.json", "shard-00001.json"]
  assert not (out / "dataset_info.json").exists()  # Not readable until complete.
  (work / "shard-00003.array_record.tmp-999").write_bytes(b"half a shard")
  (work / "shard-00002.array_record").write_bytes(b"shard without its marker")
  with pytest.raises(ValueError, match="unfinished build"):
    storage.build_split(out, "train", 20, GENERATOR, SEED, shard_size=4, progress=False)

  storage.build_split(out, "train", 20, GENERATOR, SEED, shard_size=5, progress=False)
  records = _records(out, "train")
  assert [int(r[storage.INDEX_FIELD]) for r in records] == list(range(20))
  for index, record in enumerate(records):
    _assert_record_equals(record, GENERATOR(index, SEED), index)


def test_crash_during_finalization_then_resume(tmp_path, monkeypatch):
  out = storage.dataset_dir(tmp_path)
  original = storage.tfds_dataset_info.DatasetInfo.write_to_directory

  def crash(*args, **kwargs):
    raise OSError("disk full")

  monkeypatch.setattr(storage.tfds_dataset_info.DatasetInfo, "write_to_directory", crash)
  with pytest.raises(OSError, match="disk full"):
    storage.build_split(out, "train", 12, GENERATOR, SEED, shard_size=5, progress=False)
  # The shards were already moved to their TFDS names; the split is not finished.
  assert len(list(out.glob("*-train.array_record-*"))) == 3
  assert (out / "_build" / "train").exists()

  monkeypatch.setattr(storage.tfds_dataset_info.DatasetInfo, "write_to_directory", original)
  storage.build_split(out, "train", 12, GENERATOR, SEED, shard_size=5, progress=False)
  records = _records(out, "train")
  assert [int(r[storage.INDEX_FIELD]) for r in records] == list(range(12))
  _assert_record_equals(records[11], GENERATOR(11, SEED), 11)


_KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, TESTS_DIR)
    from audio_interaction.data import storage
    from synthetic_examples import SyntheticExamples

    class SlowExamples:
      # A module-level class, so that spawn workers can unpickle it.
      def __call__(self, index, seed):
        time.sleep(0.04)
        return SyntheticExamples(chunk_samples=160, max_chunks=8)(index, seed)

    if __name__ == "__main__":
      storage.build_split(sys.argv[1], "train", 96, SlowExamples(), 7, num_workers=2,
                          shard_size=4, progress=False)
""")


def test_sigkill_mid_build_then_rerun_gives_each_index_once(tmp_path):
  script = tmp_path / "build.py"
  script.write_text(_KILL_SCRIPT.replace("TESTS_DIR", repr(os.fspath(pathlib.Path(__file__).parent))))
  out = storage.dataset_dir(tmp_path / "killed")
  work = out / "_build" / "train"
  # Own session, so the kill reaches the spawn workers too (as a Ctrl-\ or OOM
  # kill of the whole job would).
  process = subprocess.Popen([sys.executable, os.fspath(script), os.fspath(out)],
                             start_new_session=True)
  try:
    deadline = time.monotonic() + 45
    while len(list(work.glob("shard-*.json"))) < 3:
      assert process.poll() is None, "build ended before it could be killed"
      assert time.monotonic() < deadline, "build made no progress"
      time.sleep(0.05)
  finally:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
  finished = len(list(work.glob("shard-*.json")))
  assert 3 <= finished < 24, finished
  assert not (out / "dataset_info.json").exists()

  storage.build_split(out, "train", 96, GENERATOR, SEED, num_workers=1, shard_size=4,
                      progress=False)
  indices = [int(r[storage.INDEX_FIELD]) for r in _records(out, "train")]
  assert sorted(indices) == list(range(96)) and indices == list(range(96))

  reference = storage.build_split(tmp_path / "reference" / "1.0.0", "train", 96, GENERATOR,
                                  SEED, shard_size=4, progress=False)
  assert _shard_bytes(out, "train") == _shard_bytes(reference.out_dir, "train")
  done = json.loads((out / "train.build.json").read_text())
  assert done["ability_counts"] == reference.ability_counts


def test_validate_example_rejects_bad_examples():
  good = GENERATOR(0, SEED)
  storage.validate_example(good, chunk_samples=CHUNK)
  with pytest.raises(ValueError, match="missing"):
    storage.validate_example({k: v for k, v in good.items() if k != "lm_weights"})
  with pytest.raises(ValueError, match="length L disagree"):
    storage.validate_example(dict(good, lm_targets=good["lm_targets"][:-1]))
  with pytest.raises(ValueError, match="length N disagree"):
    storage.validate_example(dict(good, transcript=np.append(good["transcript"], 20)))
  num_chunks = int(good["num_chunks"])
  with pytest.raises(ValueError, match="transcript_chunks must be non-decreasing"):
    storage.validate_example(dict(good, transcript=np.asarray([20, 21], np.int32),
                                  transcript_chunks=np.asarray([0, num_chunks], np.int32)))
  with pytest.raises(ValueError, match="transcript_chunks must be non-decreasing"):
    storage.validate_example(dict(good, transcript=np.asarray([20, 21], np.int32),
                                  transcript_chunks=np.asarray([1, 0], np.int32)))
  with pytest.raises(ValueError, match="num_chunks"):
    storage.validate_example(dict(good, audio=good["audio"][:-1]), chunk_samples=CHUNK)
  with pytest.raises(ValueError, match="dtype"):
    storage.validate_example(dict(good, tokens=good["tokens"].astype(np.float32)))
  # Lossless casts are fine (e.g. int64 from a Python list).
  cast = storage.validate_example(dict(good, tokens=good["tokens"].astype(np.int64)))
  assert cast["tokens"].dtype == np.int32
