"""A mixture over in-memory records: abilities come from the records themselves.

The benchmarks once failed on main: the tiny config gained an ability mixture and
`make_dataset` over a list of `SyntheticExamples` records raised "a mixture needs
the ability of every example", though every record carries its `ability`.
"""

from __future__ import annotations

import collections

import numpy as np
import pytest

from audio_interaction.data.pipeline import PipelineConfig, make_dataset
from synthetic_examples import SyntheticExamples

MAKE = SyntheticExamples(chunk_samples=160, max_chunks=4, abilities=("a", "b"),
                         offline_fraction=0.0)


def _config(**overrides) -> PipelineConfig:
  values = dict(batch_size=4, max_len=64, max_chunks=4, chunk_samples=160, slots_per_chunk=2,
                prefetch_batches=0, read_threads=1)
  values.update(overrides)
  return PipelineConfig(**values)


def _records(count: int) -> list[dict]:
  return [dict(MAKE(i, 0), example_index=i) for i in range(count)]


def test_a_mixture_reads_the_abilities_of_in_memory_records():
  records = _records(40)
  ds = make_dataset(records, _config(mixture={"a": 1.0, "b": 0.0}), shard_index=0,
                    shard_count=1)
  batch = next(iter(ds))
  picked = batch["segment_example_index"][:, 0]
  assert {records[i]["ability"] for i in picked} == {"a"}


def test_bytes_abilities_as_stored_records_hold_them():
  records = [dict(r, ability=r["ability"].encode()) for r in _records(40)]
  ds = make_dataset(records, _config(mixture={"b": 1.0}), shard_index=0, shard_count=1)
  picked = next(iter(ds))["segment_example_index"][:, 0]
  assert collections.Counter(records[i]["ability"] for i in picked) == {b"b": 4}


def test_explicit_abilities_still_win():
  records = _records(40)
  abilities = np.asarray(["b"] * 40)  # every example called "b", whatever it holds
  ds = make_dataset(records, _config(mixture={"b": 1.0}), abilities=abilities,
                    shard_index=0, shard_count=1)
  assert next(iter(ds))["tokens"].shape == (4, 64)


def test_without_abilities_the_error_says_what_to_do():
  records = [{k: v for k, v in r.items() if k != "ability"} for r in _records(8)]
  with pytest.raises(ValueError, match="mixture=None") as error:
    make_dataset(records, _config(mixture={"a": 1.0}), shard_index=0, shard_count=1)
  assert "read_split_metadata" in str(error.value)
