"""A split written by an Apache Beam pipeline: same shards, bytes and layout as `build_split`.

For corpora that outgrow one machine (the paper's 2.6 M items are a cluster job), the
shards of `storage.build_split` are written by Beam workers on any runner (Direct,
Prism, Dataflow, Flink, Spark)::

  shard indices --Create--> --Reshuffle--> ParDo(write_shard) --> markers on disk
                                                  |  make_example(i, seed) for i in the shard
                                                  |  -> validate -> serialize -> ArrayRecord
  then, on the driver: PendingSplit.finish (TFDS names, dataset_info.json, metadata)

The unit of work is a shard (`shard_size` examples), not an example: grouping single
serialized examples into shards would shuffle every record (hundreds of kB of audio
each) between workers, while a shard index costs nothing to send and the shard is
written where it is generated. A shard is a pure function of (shard index, plan), so
a retried or speculative bundle rewrites it to a temporary file unique to the
attempt and renames it atomically onto the same name (`storage.write_shard`): no
duplicate and no partial example survives, and the result is byte-identical to the
local build's. Finished shards are skipped on a rerun, exactly like `build_split`.

`out_dir` must be a place that the driver and every worker see: a local disk for the
DirectRunner, a shared volume mounted at the same path on a Flink or Spark cluster, or
an object store (gs:// on Dataflow, s3://; any `etils.epath` path, see
`storage._writing`). The driver checks after the run that every shard arrived.

apache-beam is an optional extra (``pip install -e '.[beam]'``); it is imported only
when a Beam build runs.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import shlex
from collections.abc import Callable, Sequence

from audio_interaction.data import storage

log = logging.getLogger(__name__)

# `build-data --runner NAME` -> Beam runner. "direct" is Beam's DirectRunner: it runs
# on Prism when it can download the Prism binary, else in process (FnApiRunner).
RUNNERS: dict[str, str] = {
    "direct": "DirectRunner", "prism": "PrismRunner", "dataflow": "DataflowRunner",
    "flink": "FlinkRunner", "spark": "SparkRunner"}


def import_beam():
  """The `apache_beam` module, or an ImportError that says how to install it."""
  try:
    import apache_beam
  except ImportError as error:
    raise ImportError(
        "a Beam build needs apache-beam, an optional extra of audio_interaction: "
        "pip install -e '.[beam]' (or pip install 'apache-beam==2.77.*'); "
        "the default `--runner local` needs nothing more") from error
  return apache_beam


def option_flags(beam_options: Sequence[str] = (), pipeline_options: str = "") -> list[str]:
  """Beam pipeline flags from `--beam-option KEY=VALUE` items and a `--pipeline-options` string.

  ``["num_workers=8"]`` and ``"--project p --region r"`` give
  ``["--num_workers=8", "--project", "p", "--region", "r"]``.

  Raises:
    ValueError: an item is not KEY=VALUE.
  """
  flags = []
  for item in beam_options:
    key, sep, value = item.partition("=")
    key = key.strip().lstrip("-")
    if not sep or not key:
      raise ValueError(f"--beam-option must be KEY=VALUE (e.g. num_workers=8), got {item!r}")
    flags.append(f"--{key}={value}")
  return flags + shlex.split(pipeline_options)


def pipeline_options(runner: str, flags: Sequence[str] = ()):
  """Beam `PipelineOptions` for `runner` (a `RUNNERS` key or a Beam runner class name).

  Raises:
    ValueError: `flags` name the runner (use `runner`) or an option Beam does not know
      (Beam itself would only warn and drop it, e.g. a misspelt --num_workers).
  """
  beam = import_beam()
  flags = list(flags)
  names = [f.lstrip("-").partition("=")[0] for f in flags if f.startswith("-")]
  if "runner" in names:
    raise ValueError("the runner is chosen with --runner, not as a pipeline option")
  options = beam.options.pipeline_options.PipelineOptions(flags)
  known = options.get_all_options()
  # Beam logs "Discarding unparseable args" for these; a silently ignored option would
  # e.g. run a 270 CPU-hour job on one worker.
  unknown = sorted(set(options.get_all_options(retain_unknown_options=True)) - set(known))
  if unknown:
    raise ValueError(f"unknown Beam pipeline option(s) {', '.join('--' + u for u in unknown)}")
  options.view_as(beam.options.pipeline_options.StandardOptions).runner = RUNNERS.get(
      runner, runner)
  return options


@functools.cache
def _write_shards_dofn() -> type:
  """The DoFn class (defined once apache_beam is imported)."""
  beam = import_beam()

  class WriteShards(beam.DoFn):
    """shard index -> the shard written by `storage.write_shard`; emits its example count."""

    def __init__(self, shard_args: Callable[[int], tuple],
                 check_worker: Callable[[], None] | None):
      self._shard_args = shard_args
      self._check_worker = check_worker
      self._examples = beam.metrics.Metrics.counter("audio_interaction", "examples_written")

    def setup(self):
      # Once per worker, before any example: a worker without the speech engines or
      # sound packages would write different (or no) audio.
      if self._check_worker is not None:
        self._check_worker()

    def process(self, shard: int):
      marker = storage.write_shard(*self._shard_args(shard))
      count = marker["stop"] - marker["start"]
      self._examples.inc(count)
      yield count

  return WriteShards


def build_split_beam(
    out_dir: str | os.PathLike,
    split: str,
    num_examples: int,
    make_example: storage.ExampleFn,
    seed: int,
    shard_size: int = 256,
    *,
    runner: str = "direct",
    options: Sequence[str] = (),
    name: str = storage.DEFAULT_NAME,
    chunk_samples: int | None = None,
    description: str = "Streaming audio-interaction examples (see audio_interaction.data).",
    writer_options: str = storage.DEFAULT_WRITER_OPTIONS,
    check_worker: Callable[[], None] | None = None,
) -> storage.SplitSummary:
  """`storage.build_split` with the shards written by a Beam pipeline (see module doc).

  Same seed and plan -> the same files as `build_split`; resumable the same way (a
  local and a Beam run may even continue each other's build).

  Args:
    out_dir, split, num_examples, make_example, seed, shard_size, name,
      chunk_samples, description, writer_options: as for `storage.build_split`;
      `make_example` is pickled to the workers.
    runner: a `RUNNERS` key ("direct", "dataflow", ...) or a Beam runner class name
      (e.g. "BundleBasedDirectRunner", which retries failed bundles).
    options: Beam pipeline flags (`option_flags`), e.g. ``["--num_workers=8"]``.
    check_worker: called once on every worker before it writes (``DoFn.setup``);
      raises if the worker cannot produce the examples (missing assets).

  Returns:
    The `SplitSummary` of the finished split.

  Raises:
    ValueError: no installed filesystem handles `out_dir` (e.g. s3:// without s3fs), a
      bad option, or a plan mismatch.
    RuntimeError: the pipeline finished but shards are missing on the driver (the
      workers wrote to a filesystem the driver does not see).
  """
  beam = import_beam()
  beam_options = pipeline_options(runner, options)
  pending = storage.begin_split(out_dir, split, num_examples, seed, shard_size, name=name,
                                description=description)
  if isinstance(pending, storage.SplitSummary):
    return pending
  if pending.todo:
    # Workers need only the plan and paths, not the markers of finished shards.
    plan_only = dataclasses.replace(pending, done={}, todo=[])
    shard_args = functools.partial(plan_only.shard_args, make_example=make_example,
                                   chunk_samples=chunk_samples, writer_options=writer_options)
    log.info("Beam build of %s/%s: %d of %d shards to write on %s", name, split,
             len(pending.todo), pending.plan.num_shards, runner)
    with beam.Pipeline(options=beam_options) as pipeline:
      _ = (pipeline
           | "ShardIndices" >> beam.Create(pending.todo)
           # Create emits one bundle; Reshuffle spreads the shards over the workers.
           | "Spread" >> beam.Reshuffle()
           | "WriteShards" >> beam.ParDo(_write_shards_dofn()(shard_args, check_worker)))
  pending.rescan()
  if pending.todo:
    raise RuntimeError(
        f"the Beam pipeline finished but shards {pending.todo[:10]} of {pending.plan.num_shards} "
        f"are missing in {pending.work_dir}: do the workers write to the same filesystem "
        "as the driver? (docs/beam.md)")
  return pending.finish()

