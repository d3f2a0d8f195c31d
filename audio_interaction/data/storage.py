"""Storage: stream-format examples as a TFDS dataset of ArrayRecord shards.

A split is written by `build_split` and read back, without TensorFlow, by any of::

  tfds.data_source(name, data_dir=data_dir, split=split)     # data_dir/name/version
  tfds.builder_from_directory(out_dir).as_data_source(split)
  storage.load_split(out_dir, split)

On disk (`out_dir` is a TFDS dataset directory, e.g. ``data_dir/audio_interaction/1.0.0``)::

  dataset_info.json, features.json              TFDS metadata: every *finished* split
  {name}-{split}.array_record-00000-of-00042    shards, TFDS naming; record i of the
                                                split is `make_example(i, seed)`
  {split}.build.json                            the build plan + counts per ability/sub-task,
                                                audio samples, utterances per voice and
                                                events per sound class (`dataset_card`)
  {split}.metadata.npz                          ability and sub-task id of every example
                                                (lets the input pipeline mix by ability
                                                without reading the records)
  _build/{split}/                               only while a split is being built

Each record is a serialized ``tf.train.Example`` proto, written and parsed with the
proto classes bundled in TFDS and decoded by TFDS's NumPy path, so TensorFlow is not
needed. Every array of `stream_format.EXAMPLE_FIELDS` is a ``tfds.features.Tensor`` of
shape ``(None,)`` with ``encoding='bytes'``: the raw little-endian buffer is stored
and decoded with ``np.frombuffer``, which is far cheaper than a proto ``FloatList`` of
hundreds of thousands of audio samples. Scalars (`num_chunks`) use the same raw
encoding with shape ``()`` so they decode with their exact dtype (a proto
``Int64List`` would turn ``int32`` into ``int64``). The metadata strings (`ability`,
`subtask`) are ``tfds.features.Text`` (decoded as bytes); `example_index` is a
``tfds.features.Scalar`` (int64).

Why not ``GeneratorBasedBuilder.download_and_prepare``: it rebuilds a split from
scratch after a crash and parallelizes only through Apache Beam. `build_split` writes
the same TFDS layout itself and is resumable: each shard is written to a temporary
file and renamed atomically, a small JSON marker then records it as finished, a rerun
skips finished shards, and the shards are moved to their TFDS names and the metadata
written only once every shard exists. Shards are built in parallel in ``spawn``
worker processes, or as an Apache Beam pipeline by `data.beam_storage` (the same
`begin_split` / `write_shard` / `PendingSplit.finish`, so both write the same bytes).
Two concurrent builds of the same split are not supported.

`out_dir` may be any `etils.epath` path: local, or an object store (gs://, s3://) that
the workers of a Beam build on Dataflow write to. There, with no atomic rename and no
local writer, a shard is written to a local temporary file, uploaded under a temporary
name and then renamed, so a final object exists only once it is whole (`_writing`).
Reading a split back (`load_split`, the input pipeline) expects a local path.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import functools
import json
import multiprocessing
import os
import pathlib
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from etils import epath
import tensorflow_datasets as tfds
from array_record.python import array_record_module
import tqdm
from tensorflow_datasets.core import dataset_info as tfds_dataset_info
from tensorflow_datasets.core import example_serializer
from tensorflow_datasets.core import file_adapters
from tensorflow_datasets.core import naming
from tensorflow_datasets.core import splits as tfds_splits

from audio_interaction import atomic_file
from audio_interaction import stream_format as sf

DEFAULT_NAME = "audio_interaction"
# 1.1.0: examples carry the transcript (`transcript`, `transcript_chunks`).
# 1.2.0: and the sound event of every chunk (`sound_events`).
DEFAULT_VERSION = "1.2.0"
# String fields every generated example carries besides `EXAMPLE_FIELDS`.
METADATA_FIELDS: tuple[str, ...] = ("ability", "subtask")
# Stored with every record: its index in the split (record i == make_example(i, seed)).
INDEX_FIELD = "example_index"
# Optional per-example string sequences a `make_example` may add: counted into
# `{split}.build.json` for the dataset card, never stored in the records.
CARD_FIELDS: tuple[str, ...] = ("voices", "sounds")
# TFDS's ArrayRecord options: one record per group, so any record can be read
# alone; zstd-compressed. "group_size:1,uncompressed" reads ~6x faster (0.14 vs
# 0.86 ms for a 236 kB record) for ~10% more disk on float32 audio.
DEFAULT_WRITER_OPTIONS = "group_size:1"
_BUILD_DIR = "_build"

ExampleFn = Callable[[int, int], Mapping[str, Any]]
"""`make_example(index, seed)` -> EXAMPLE_FIELDS arrays + `ability`, `subtask` strings."""


# ----------------------------------------------------------------------------
# Features and validation.


def _field_spec(spec: str) -> tuple[np.dtype, bool]:
  """Parses an EXAMPLE_FIELDS spec like ``"int32[L]"`` into (dtype, is_vector)."""
  dtype, _, dims = spec.partition("[")
  return np.dtype(dtype), dims.rstrip("]") != ""


@functools.cache
def features() -> tfds.features.FeaturesDict:
  """The TFDS features of one stored example, derived from `EXAMPLE_FIELDS`."""
  spec = {}
  for name, (field, doc) in sf.EXAMPLE_FIELDS.items():
    dtype, is_vector = _field_spec(field)
    # Scalars are raw bytes too: a proto Int64List would decode int32 as int64.
    spec[name] = tfds.features.Tensor(
        shape=(None,) if is_vector else (), dtype=dtype,
        encoding=tfds.features.Encoding.BYTES, doc=doc)
  for name in METADATA_FIELDS:
    spec[name] = tfds.features.Text()
  spec[INDEX_FIELD] = tfds.features.Scalar(dtype=np.int64, doc="index of the example in its split")
  return tfds.features.FeaturesDict(spec)


@functools.cache
def _example_serializer() -> example_serializer.ExampleSerializer:
  return example_serializer.ExampleSerializer(features().get_serialized_info())


def serialize(example: Mapping[str, Any]) -> bytes:
  """One validated example (+ `example_index`) -> the bytes of its stored record.

  The same ``tf.train.Example`` proto as ``FeaturesDict.serialize_example``, but
  serialized deterministically: protobuf otherwise writes the feature map in a
  per-process hash order, and a rebuilt shard would differ byte-wise.
  """
  proto = _example_serializer().get_tf_example(features().encode_example(example))
  return proto.SerializeToString(deterministic=True)


def validate_example(example: Mapping[str, Any], *,
                     chunk_samples: int | None = None) -> dict[str, Any]:
  """Checks one generated example and returns it with exact dtypes.

  Args:
    example: `EXAMPLE_FIELDS` arrays (int32[L] / float32[L] / float32[S] / int32[])
      plus the `METADATA_FIELDS` strings.
    chunk_samples: if given, `audio` must hold exactly `num_chunks * chunk_samples`
      samples; otherwise a whole number of samples per chunk.

  Returns:
    A new dict whose arrays have exactly the dtypes of `EXAMPLE_FIELDS` (lossless
    same-kind casts, e.g. int64 -> int32 for small values, are applied).

  Raises:
    ValueError: a field is missing, has the wrong rank/kind, or lengths disagree.
  """
  missing = [k for k in (*sf.EXAMPLE_FIELDS, *METADATA_FIELDS) if k not in example]
  if missing:
    raise ValueError(f"example is missing fields {missing}")
  out: dict[str, Any] = {}
  for name, (field, _) in sf.EXAMPLE_FIELDS.items():
    dtype, is_vector = _field_spec(field)
    value = np.asarray(example[name])
    if value.ndim != (1 if is_vector else 0):
      raise ValueError(f"field {name!r} must be {field}, got shape {value.shape}")
    if value.dtype != dtype:
      cast = value.astype(dtype)
      if not np.can_cast(value.dtype, dtype, casting="same_kind") or not np.array_equal(
          cast, value):
        raise ValueError(f"field {name!r} must be {field}, got dtype {value.dtype}")
      value = cast
    out[name] = value
  for dim in ("L", "N"):
    lengths = {n: len(out[n]) for n, (f, _) in sf.EXAMPLE_FIELDS.items()
               if f.endswith(f"[{dim}]")}
    if len(set(lengths.values())) > 1:
      raise ValueError(f"fields of length {dim} disagree: {lengths}")
  num_chunks, num_samples = int(out["num_chunks"]), len(out["audio"])
  if num_chunks < 0:
    raise ValueError(f"num_chunks must be >= 0, got {num_chunks}")
  if len(out["sound_events"]) != num_chunks:
    raise ValueError(f"sound_events has {len(out['sound_events'])} entries for "
                     f"num_chunks={num_chunks}")
  heard_chunks = out["transcript_chunks"]
  if len(heard_chunks) and (heard_chunks.min() < 0 or heard_chunks.max() >= num_chunks
                            or np.any(np.diff(heard_chunks) < 0)):
    raise ValueError(f"transcript_chunks must be non-decreasing chunk indices in "
                     f"[0, {num_chunks}), got {heard_chunks.tolist()}")
  if chunk_samples is not None and num_samples != num_chunks * chunk_samples:
    raise ValueError(
        f"audio has {num_samples} samples, expected num_chunks*chunk_samples = "
        f"{num_chunks}*{chunk_samples}")
  if chunk_samples is None and (num_samples % max(num_chunks, 1) or
                                (num_chunks == 0 and num_samples)):
    raise ValueError(f"audio ({num_samples} samples) is not {num_chunks} whole chunks")
  for name in METADATA_FIELDS:
    value = example[name]
    if isinstance(value, bytes):
      value = value.decode()
    if not isinstance(value, str) or not value:
      raise ValueError(f"metadata field {name!r} must be a non-empty string, got {value!r}")
    out[name] = value
  return out


# ----------------------------------------------------------------------------
# Layout.


def _is_local(path: str | os.PathLike) -> bool:
  return "://" not in os.fspath(path)


def _public_path(path: str | os.PathLike) -> pathlib.Path | epath.Path:
  """What callers get: a local path as the `pathlib.Path` they always got, else an `epath.Path`."""
  return pathlib.Path(path) if _is_local(path) else epath.Path(path)


def dataset_dir(data_dir: str | os.PathLike, name: str = DEFAULT_NAME,
                version: str = DEFAULT_VERSION) -> pathlib.Path | epath.Path:
  """The directory `tfds.data_source(name, data_dir=data_dir)` reads: data_dir/name/version."""
  return _public_path(epath.Path(data_dir) / name / version)


def _version_of(out_dir: epath.Path) -> str:
  return out_dir.name if tfds.core.Version.is_valid(out_dir.name) else DEFAULT_VERSION


def _template(out_dir: epath.Path, name: str, split: str) -> naming.ShardedFileTemplate:
  return naming.ShardedFileTemplate(
      data_dir=out_dir, dataset_name=name, split=split,
      filetype_suffix=file_adapters.FileFormat.ARRAY_RECORD.file_suffix)


def _tmp_suffix() -> str:
  """A temporary-file suffix unique to this attempt: Beam may run two attempts of one
  shard at once (retries, speculative backups), even as threads of one process."""
  return f"tmp-{os.getpid()}-{uuid.uuid4().hex[:12]}"


@contextlib.contextmanager
def _writing(path: epath.Path) -> Iterator[str]:
  """Yields a local file name to write; `path` then becomes that file, whole or not at all.

  `path` may be local or on an object store (gs://, s3://, any `epath` path). The
  file is written under a temporary name unique to this attempt (Beam may run two
  attempts of one shard at once, retries or speculative backups) and then moved onto
  `path`: locally by an atomic rename of a file written next to it; on an object store
  (no atomic rename, no local writer) the file is written to local disk, uploaded
  under the temporary name and only then renamed (copied) onto `path`, so `path`
  exists only once the whole file does. A failed attempt deletes its temporary file.
  """
  if _is_local(path):
    with atomic_file.replacing(os.fspath(path)) as tmp:
      yield os.fspath(tmp)
    return
  tmp = path.with_name(f"{path.name}.{_tmp_suffix()}")
  with tempfile.TemporaryDirectory(prefix="audio_interaction-") as local_dir:
    local = os.path.join(local_dir, path.name)
    yield local
    try:
      with open(local, "rb") as src, tmp.open("wb") as dst:
        shutil.copyfileobj(src, dst)
      tmp.replace(path)
    except BaseException:
      tmp.unlink(missing_ok=True)
      raise


def _write_json(path: epath.Path, value: Any) -> None:
  """Writes JSON atomically: a reader (or a resumed build) never sees half a file."""
  with _writing(path) as local:
    pathlib.Path(local).write_text(json.dumps(value, indent=1, sort_keys=True))


@dataclasses.dataclass(frozen=True)
class _Plan:
  """What a split build promises; a rerun with a different plan is an error."""

  name: str
  split: str
  num_examples: int
  seed: int
  shard_size: int

  @property
  def num_shards(self) -> int:
    return max(1, -(-self.num_examples // self.shard_size))

  def shard_range(self, shard: int) -> tuple[int, int]:
    return shard * self.shard_size, min((shard + 1) * self.shard_size, self.num_examples)


@dataclasses.dataclass(frozen=True)
class SplitSummary:
  """What `build_split` reports about a finished split."""

  split: str
  num_examples: int
  num_shards: int
  num_bytes: int
  ability_counts: dict[str, int]
  subtask_counts: dict[str, int]
  out_dir: pathlib.Path | epath.Path

  def describe(self) -> str:
    """A few readable lines: size and place, examples per ability, the sub-tasks' spread.

    The first line does not repeat the split's name, so a caller can prefix it
    (``f"{split}: {summary}"`` -- `__str__` is this text).
    """
    megabytes = self.num_bytes / 1e6
    size = f"{megabytes:.1f} MB" if megabytes >= 0.1 else f"{self.num_bytes / 1e3:.1f} kB"
    shards = f"{self.num_shards} shard{'s' if self.num_shards != 1 else ''}"
    lines = [f"{self.num_examples:,} examples, {shards}, {size} in {self.out_dir}"]
    if self.ability_counts:
      lines.append("  by ability: " + ", ".join(
          f"{name} {count:,}" for name, count in sorted(self.ability_counts.items())))
    if self.subtask_counts:
      counts = sorted(self.subtask_counts.items(), key=lambda item: (item[1], item[0]))
      (fewest, low), (most, high) = counts[0], counts[-1]
      spread = (f"{low:,} examples each" if low == high else
                f"{low:,} ({fewest}) to {high:,} ({most}) examples each")
      lines.append(f"  {len(counts)} sub-task{'s' if len(counts) != 1 else ''}, {spread}")
    return "\n".join(lines)

  def __str__(self) -> str:
    return self.describe()


@dataclasses.dataclass(frozen=True)
class SplitMetadata:
  """Ability and sub-task of every example of a split, without reading the records.

  Attributes:
    ability_names: sorted distinct abilities; `ability_ids[i]` indexes it.
    ability_ids: int16[num_examples].
    subtask_names: sorted distinct sub-tasks; `subtask_ids[i]` indexes it.
    subtask_ids: int16[num_examples].
  """

  ability_names: tuple[str, ...]
  ability_ids: np.ndarray
  subtask_names: tuple[str, ...]
  subtask_ids: np.ndarray

  @property
  def abilities(self) -> np.ndarray:
    """str[num_examples]: the ability of every example."""
    return np.asarray(self.ability_names)[self.ability_ids]


# ----------------------------------------------------------------------------
# Writing shards (runs in worker processes).


def _shard_name(shard: int) -> str:
  return f"shard-{shard:05d}"


def _card_entries(raw: Mapping[str, Any], index: int) -> dict[str, list[str]]:
  """The `CARD_FIELDS` of one generated example (absent fields: empty)."""
  entries = {}
  for name in CARD_FIELDS:
    values = raw.get(name, ())
    if isinstance(values, str) or not all(isinstance(v, str) and v for v in values):
      raise ValueError(f"make_example({index}) field {name!r} must be a sequence of "
                       f"non-empty strings, got {values!r}")
    entries[name] = list(values)
  return entries


def write_shard(work_dir: epath.Path, shard: int, start: int, stop: int,
                make_example: ExampleFn, seed: int, chunk_samples: int | None,
                writer_options: str) -> dict[str, Any]:
  """Writes examples [start, stop) to one ArrayRecord shard of `work_dir`; returns its marker.

  Safe to run any number of times, even concurrently (a retried or speculative Beam
  bundle): the records go to a temporary file unique to this attempt, which becomes
  the shard only once it is whole (`_writing`: an atomic rename locally, an upload
  then a rename on an object store), so the shard is whole or absent and a rerun
  replaces it with the same bytes; a failed attempt deletes its temporary file.
  The marker (`{shard}.json`, what makes the shard count as finished) is written last.
  """
  data_path = work_dir / f"{_shard_name(shard)}.array_record"
  abilities, subtasks, samples = [], [], 0
  card: dict[str, list[str]] = {name: [] for name in CARD_FIELDS}
  with _writing(data_path) as tmp_path:
    writer = array_record_module.ArrayRecordWriter(tmp_path, writer_options)
    try:
      for index in range(start, stop):
        try:
          raw = make_example(index, seed)
          example = validate_example(raw, chunk_samples=chunk_samples)
          for name, values in _card_entries(raw, index).items():
            card[name] += values
        except Exception as e:
          raise RuntimeError(f"make_example({index}, {seed}) failed: {e}") from e
        abilities.append(example["ability"])
        subtasks.append(example["subtask"])
        samples += len(example["audio"])
        example[INDEX_FIELD] = index
        writer.write(serialize(example))
    finally:
      writer.close()
    num_bytes = os.path.getsize(tmp_path)
  marker = {
      "shard": shard, "start": start, "stop": stop,
      "num_bytes": num_bytes,
      "abilities": abilities, "subtasks": subtasks, "audio_samples": samples,
      **{f"{name}_counts": _counts(values) for name, values in card.items()},
  }
  # The marker is written last: a shard counts as finished only once both exist.
  _write_json(work_dir / f"{_shard_name(shard)}.json", marker)
  return marker


def _write_shard_task(args: tuple) -> dict[str, Any]:
  return write_shard(*args)


# ----------------------------------------------------------------------------
# Building a split.


def _load_info_splits(out_dir: epath.Path) -> dict[str, tfds_splits.SplitInfo]:
  """The splits already listed in out_dir/dataset_info.json (empty if none)."""
  if not (out_dir / "dataset_info.json").exists():
    return {}
  info = tfds.builder_from_directory(os.fspath(out_dir)).info
  return dict(info.splits.items())


def _finished_marker(work_dir: epath.Path, final_path: epath.Path,
                     shard: int) -> dict[str, Any] | None:
  marker_path = work_dir / f"{_shard_name(shard)}.json"
  if not marker_path.exists():
    return None
  data_path = work_dir / f"{_shard_name(shard)}.array_record"
  # A finalization that crashed half-way may already have moved the shard.
  if not data_path.exists() and not final_path.exists():
    return None
  return json.loads(marker_path.read_text())


@dataclasses.dataclass
class PendingSplit:
  """A split build in progress (`begin_split`): the shards still to write, then `finish`.

  Attributes:
    out_dir: the TFDS dataset directory.
    work_dir: ``out_dir/_build/{split}``, where `write_shard` puts shards and markers.
    plan: what the build promises (name, split, num_examples, seed, shard_size).
    todo: shard indices without a finished marker, ascending.
    done: shard index -> marker, for the finished ones.
    description: stored in dataset_info.json by `finish`.
  """

  out_dir: epath.Path
  work_dir: epath.Path
  plan: _Plan
  todo: list[int]
  done: dict[int, dict[str, Any]]
  description: str

  @property
  def final_paths(self) -> list[epath.Path]:
    template = _template(self.out_dir, self.plan.name, self.plan.split)
    return [template.sharded_filepath(shard_index=i, num_shards=self.plan.num_shards)
            for i in range(self.plan.num_shards)]

  def shard_args(self, shard: int, make_example: ExampleFn, chunk_samples: int | None,
                 writer_options: str) -> tuple:
    """The arguments of `write_shard` for one shard of this plan."""
    return (self.work_dir, shard, *self.plan.shard_range(shard), make_example,
            self.plan.seed, chunk_samples, writer_options)

  def rescan(self) -> None:
    """Re-reads the finished markers from `work_dir` (after other processes wrote shards)."""
    for shard, final_path in enumerate(self.final_paths):
      if (marker := _finished_marker(self.work_dir, final_path, shard)) is not None:
        self.done[shard] = marker
    self.todo = [s for s in range(self.plan.num_shards) if s not in self.done]

  def finish(self) -> SplitSummary:
    """Moves the shards to their TFDS names and writes the metadata (all shards done)."""
    if self.todo:
      raise RuntimeError(f"split {self.plan.split!r}: shards {self.todo[:10]} of "
                         f"{self.plan.num_shards} are not written yet")
    return _finalize(self.out_dir, self.work_dir, self.plan, self.done, self.final_paths,
                     self.description)


def _check_filesystem(out_dir: epath.Path) -> None:
  """Fails clearly, before any work, if no installed filesystem reaches `out_dir`'s scheme."""
  if _is_local(out_dir):
    return
  try:
    out_dir.exists()
  except Exception as error:
    # fsspec raises ImportError ("Install s3fs ..."), TensorFlow's gfile (which epath
    # uses when TensorFlow is installed) UnimplementedError; other errors (credentials,
    # network) are the store's own and pass through.
    if not isinstance(error, (ImportError, NotImplementedError)) and (
        type(error).__name__ != "UnimplementedError"):
      raise
    scheme = os.fspath(out_dir).partition("://")[0]
    raise ValueError(
        f"cannot write to {os.fspath(out_dir)!r}: no installed filesystem handles "
        f"{scheme}:// ({error}). etils.epath reaches gs:// through TensorFlow's tf.io.gfile "
        "when TensorFlow is installed, else through fsspec: pip install gcsfs (gs://) or "
        "s3fs (s3://), with EPATH_USE_TF=0 if TensorFlow is installed") from error


def begin_split(out_dir: str | os.PathLike, split: str, num_examples: int, seed: int,
                shard_size: int, *, name: str = DEFAULT_NAME,
                description: str = "Streaming audio-interaction examples "
                                   "(see audio_interaction.data).") -> PendingSplit | SplitSummary:
  """Starts or resumes a split build: its `SplitSummary` if it is already finished.

  Checks the plan against a finished or unfinished build in `out_dir` (a different
  plan is a ValueError), deletes temporary files of killed runs and lists the
  finished shards. See `build_split` for the arguments.
  """
  if num_examples < 1 or shard_size < 1:
    raise ValueError(
        f"need num_examples >= 1 and shard_size >= 1, got {num_examples}, {shard_size}")
  out_dir = epath.Path(out_dir)
  _check_filesystem(out_dir)
  plan = _Plan(name=name, split=split, num_examples=num_examples, seed=seed,
               shard_size=shard_size)
  plan_dict = dataclasses.asdict(plan)
  work_dir = out_dir / _BUILD_DIR / split
  build_json = out_dir / f"{split}.build.json"

  if not work_dir.exists() and build_json.exists() and split in _load_info_splits(out_dir):
    done = json.loads(build_json.read_text())
    if done["plan"] != plan_dict:
      raise ValueError(
          f"split {split!r} in {out_dir} was built with {done['plan']}, not {plan_dict}; "
          "delete it or use another directory")
    return _summary_from_build_json(out_dir, done)

  work_dir.mkdir(parents=True, exist_ok=True)
  plan_path = work_dir / "plan.json"
  if plan_path.exists():
    previous = json.loads(plan_path.read_text())
    if previous != plan_dict:
      raise ValueError(
          f"an unfinished build of split {split!r} in {out_dir} uses plan {previous}, "
          f"not {plan_dict}; rerun with the same arguments or delete {work_dir}")
  else:
    _write_json(plan_path, plan_dict)
  # Temporary files of a killed run are never reused: their shard is rewritten.
  for stale in work_dir.glob("*.tmp-*"):
    stale.unlink(missing_ok=True)
  pending = PendingSplit(out_dir=out_dir, work_dir=work_dir, plan=plan, todo=[], done={},
                         description=description)
  pending.rescan()
  return pending


def build_split(
    out_dir: str | os.PathLike,
    split: str,
    num_examples: int,
    make_example: ExampleFn,
    seed: int,
    num_workers: int = 1,
    shard_size: int = 256,
    *,
    name: str = DEFAULT_NAME,
    chunk_samples: int | None = None,
    progress: bool = True,
    description: str = "Streaming audio-interaction examples (see audio_interaction.data).",
    writer_options: str = DEFAULT_WRITER_OPTIONS,
) -> SplitSummary:
  """Writes examples ``make_example(i, seed)``, i < num_examples, as a TFDS split.

  Resumable: kill it at any point and call it again with the same arguments; it
  continues from the finished shards, with no duplicates and no gaps. Calling it
  for a split that is already finished (same plan) returns at once.

  Args:
    out_dir: TFDS dataset directory; use `dataset_dir(data_dir, name, version)` so
      that ``tfds.data_source(name, data_dir=data_dir)`` finds it. Its base name is
      the dataset version if it parses as one (else "1.0.0").
    split: split name, e.g. "train".
    num_examples: examples in the split.
    make_example: deterministic ``(index, seed) -> example``: the arrays of
      `EXAMPLE_FIELDS` plus `ability` and `subtask` strings, and optionally the
      `CARD_FIELDS` (sequences of strings, e.g. the voices of its utterances). Must
      be picklable (module-level function or class instance) when `num_workers > 1`.
    seed: passed to every `make_example` call.
    num_workers: processes writing shards (``spawn``); 1 writes in this process.
    shard_size: examples per shard (the unit of parallel work and of resumption).
    name: dataset name recorded in the metadata and file names.
    chunk_samples: if given, every example's audio is checked to be
      `num_chunks * chunk_samples` samples.
    progress: show a tqdm progress bar (examples).
    description: stored in dataset_info.json.
    writer_options: ArrayRecord writer options (readers need no matching option).

  Returns:
    A `SplitSummary` of the finished split.

  Raises:
    ValueError: `out_dir` already holds this split (finished or in progress) built
      with a different plan (num_examples, seed, shard_size or name).
  """
  pending = begin_split(out_dir, split, num_examples, seed, shard_size, name=name,
                        description=description)
  if isinstance(pending, SplitSummary):
    return pending
  tasks = [pending.shard_args(s, make_example, chunk_samples, writer_options)
           for s in pending.todo]
  markers = pending.done
  with tqdm.tqdm(total=num_examples, initial=sum(m["stop"] - m["start"] for m in markers.values()),
                 unit="ex", desc=f"{name}/{split}", disable=not progress) as bar:
    if num_workers <= 1 or len(tasks) <= 1:
      for task in tasks:
        marker = _write_shard_task(task)
        markers[marker["shard"]] = marker
        bar.update(marker["stop"] - marker["start"])
    else:
      # spawn, not fork: the parent may hold JAX/threads, which fork would copy
      # in a broken state.
      context = multiprocessing.get_context("spawn")
      with concurrent.futures.ProcessPoolExecutor(
          max_workers=min(num_workers, len(tasks)), mp_context=context) as pool:
        futures = [pool.submit(_write_shard_task, task) for task in tasks]
        try:
          for future in concurrent.futures.as_completed(futures):
            marker = future.result()
            markers[marker["shard"]] = marker
            bar.update(marker["stop"] - marker["start"])
        except BaseException:
          for future in futures:
            future.cancel()
          raise
  pending.todo = []  # Every task's marker is in pending.done (the same dict as `markers`).
  return pending.finish()


def _finalize(out_dir: epath.Path, work_dir: epath.Path, plan: _Plan,
              markers: dict[int, dict[str, Any]], final_paths: Sequence[epath.Path],
              description: str) -> SplitSummary:
  """Moves finished shards to their TFDS names and writes the metadata.

  Idempotent: if it crashes, the work directory is still there and the next
  `build_split` call finalizes again.
  """
  shards = [markers[s] for s in range(plan.num_shards)]
  covered = [i for m in shards for i in range(m["start"], m["stop"])]
  if covered != list(range(plan.num_examples)):  # Guards the no-gap/no-duplicate promise.
    raise RuntimeError(f"shards of split {plan.split!r} do not cover 0..{plan.num_examples - 1}")

  abilities = [a for m in shards for a in m["abilities"]]
  subtasks = [t for m in shards for t in m["subtasks"]]
  ability_names, ability_ids = np.unique(np.asarray(abilities), return_inverse=True)
  subtask_names, subtask_ids = np.unique(np.asarray(subtasks), return_inverse=True)
  with _writing(out_dir / f"{plan.split}.metadata.npz") as local, open(local, "wb") as file:
    np.savez(file, ability_names=ability_names, ability_ids=ability_ids.astype(np.int16),
             subtask_names=subtask_names, subtask_ids=subtask_ids.astype(np.int16))

  for shard, final_path in enumerate(final_paths):
    data_path = work_dir / f"{_shard_name(shard)}.array_record"
    if data_path.exists():
      # Atomic locally; on an object store a server-side copy then a delete: the final
      # object appears whole, and a crash in between leaves the source for a rerun.
      data_path.replace(final_path)

  split_info = tfds_splits.SplitInfo(
      name=plan.split,
      shard_lengths=[m["stop"] - m["start"] for m in shards],
      num_bytes=sum(m["num_bytes"] for m in shards),
      filename_template=_template(out_dir, plan.name, plan.split),
  )
  splits = _load_info_splits(out_dir)
  splits[plan.split] = split_info
  identity = tfds_dataset_info.DatasetIdentity(
      name=plan.name, version=tfds.core.Version(_version_of(out_dir)),
      data_dir=os.fspath(out_dir), module_name="")
  info = tfds_dataset_info.DatasetInfo(builder=identity, features=features(),
                                       description=description)
  info.set_file_format(file_adapters.FileFormat.ARRAY_RECORD)
  info.set_splits(tfds_splits.SplitDict(list(splits.values())))
  info.write_to_directory(os.fspath(out_dir))

  done = {
      "plan": dataclasses.asdict(plan),
      "num_bytes": int(split_info.num_bytes),
      "ability_counts": _counts(abilities),
      "subtask_counts": _counts(subtasks),
  }
  # Shards written before the card counts existed (a resumed old build) leave them out.
  if all("audio_samples" in m for m in shards):
    done["audio_samples"] = sum(m["audio_samples"] for m in shards)
    for name in CARD_FIELDS:
      total = collections.Counter()
      for m in shards:
        total.update(m[f"{name}_counts"])
      done[f"{name}_counts"] = dict(sorted(total.items()))
  _write_json(out_dir / f"{plan.split}.build.json", done)
  # Removing the work directory is what marks the split finished.
  work_dir.rmtree()
  if _is_local(out_dir):  # Object stores have no empty directories to remove.
    try:
      os.rmdir(out_dir / _BUILD_DIR)
    except OSError:
      pass  # Another split is still being built.
  return _summary_from_build_json(out_dir, done)


def _counts(values: Sequence[str]) -> dict[str, int]:
  names, counts = np.unique(np.asarray(values), return_counts=True)
  return {str(n): int(c) for n, c in zip(names, counts)}


def _summary_from_build_json(out_dir: epath.Path, done: dict[str, Any]) -> SplitSummary:
  plan = _Plan(**done["plan"])
  return SplitSummary(split=plan.split, num_examples=plan.num_examples,
                      num_shards=plan.num_shards, num_bytes=done["num_bytes"],
                      ability_counts=done["ability_counts"],
                      subtask_counts=done["subtask_counts"], out_dir=_public_path(out_dir))


# ----------------------------------------------------------------------------
# Reading.


def load_split(out_dir: str | os.PathLike, split: str):
  """A random-access TFDS data source over a finished split (no TensorFlow needed).

  ``source[i]`` is a dict of NumPy arrays: the `EXAMPLE_FIELDS`, `example_index`
  and the metadata strings as bytes.

  Raises:
    ValueError: the split was written with other fields (an older format version).
  """
  builder = tfds.builder_from_directory(os.fspath(out_dir))
  missing = sorted(set(sf.EXAMPLE_FIELDS) - set(builder.info.features.keys()))
  if missing:
    raise ValueError(
        f"{out_dir} holds examples without the fields {missing} (format "
        f"{builder.info.version}, this code writes {DEFAULT_VERSION}); rebuild the split "
        f"with `audio-interaction build-data` into an empty directory")
  return builder.as_data_source(split)


def split_summary(out_dir: str | os.PathLike, split: str) -> SplitSummary:
  """The `SplitSummary` of a finished split (what `build_split` returned)."""
  out_dir = epath.Path(out_dir)
  return _summary_from_build_json(out_dir, json.loads((out_dir / f"{split}.build.json").read_text()))


def read_split_metadata(out_dir: str | os.PathLike, split: str) -> SplitMetadata:
  """Ability and sub-task of every example of a finished split."""
  with np.load(pathlib.Path(out_dir) / f"{split}.metadata.npz") as data:
    return SplitMetadata(
        ability_names=tuple(str(n) for n in data["ability_names"]),
        ability_ids=data["ability_ids"],
        subtask_names=tuple(str(n) for n in data["subtask_names"]),
        subtask_ids=data["subtask_ids"],
    )
