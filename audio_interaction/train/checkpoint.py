"""Checkpoints: one Orbax step directory holds everything needed to resume a run.

Usage from a training loop::

  ckpt = Checkpointer(workdir / "checkpoints", CheckpointOptions(save_interval_steps=500),
                      config=config, tokenizer=tokenizer)
  abstract = abstract_state(jax.eval_shape(init_state, rng), state_shardings)
  restored = ckpt.restore_latest(abstract, data_iterator=train_iterator)
  state, start = (restored.state, restored.step) if restored else (init_state(rng), 0)
  with PreemptionGuard() as guard:
    for step in range(start + 1, num_steps + 1):
      state = train_step(state, next(train_iterator))
      ckpt.save(step, state, data_iterator=train_iterator,
                metrics={"eval_loss": loss} if step % eval_every == 0 else None)
      if guard.should_stop:
        ckpt.save(step, state, data_iterator=train_iterator, force=True, wait=True)
        logging.warning("%s at step %d: checkpoint saved, exiting", guard.signal_name, step)
        break
  ckpt.close()

On disk, ``<directory>/<step>/`` holds one Orbax item per sub-directory:

* ``state/``: the train-state pytree (params, optimizer state, step, ...) in Orbax's
  PyTree format (OCDBT + zarr: ``_METADATA`` with the tree and per-leaf shape/dtype,
  ``_sharding``, ``manifest.ocdbt`` and ``d/`` with the data). Arrays are stored
  unsharded-by-layout, so any mesh can read them back.
* ``data_iterator/process_<i>-of-<n>.json``: each process's Grain iterator state
  (Grain's own Orbax handler).
* ``tokenizer/tokenizer.json``: every file that `Tokenizer.save` writes, base64-encoded
  in one JSON object (``{"format": ..., "files": {name: base64}}``). Storing bytes
  rather than copying a directory keeps it one atomic Orbax item and does not depend
  on which files a tokenizer kind writes (that format may still change).
* ``config/config.json``: the experiment config (``ConfigDict.to_json_best_effort``).
* ``metrics/metrics``: the metrics passed to `Checkpointer.save` (Orbax's own item),
  used to keep the best checkpoint.
* ``_CHECKPOINT_METADATA`` and ``commit_success.txt``, written by Orbax on commit.

Saves are asynchronous: `save` returns once the arrays are copied to host memory
(so a donated `state` may be overwritten right after), the files are written by a
background thread. Orbax writes into ``<step>.orbax-checkpoint-tmp-<time>`` and
renames it when done, so a killed save never looks like a checkpoint.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import os
import pathlib
import re
import signal
import tempfile
import threading
import time
import types
from collections.abc import Mapping, Sequence
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from audio_interaction.data import tokenizer as tokenizer_lib

try:  # The Store class is not exported; without it typed PRNG keys lose their impl.
  from orbax.checkpoint._src.metadata import array_metadata_store as _array_metadata_store
except ImportError:  # pragma: no cover  (a future Orbax may move it)
  _array_metadata_store = None

logger = logging.getLogger(__name__)

# Item names: sub-directories of a step directory.
STATE = "state"
DATA_ITERATOR = "data_iterator"
TOKENIZER = "tokenizer"
CONFIG = "config"
# Orbax writes this file last, just before the atomic rename of the tmp directory
# (and it is the only commit signal on object stores).
COMMIT_MARKER = "commit_success.txt"
_ORBAX_TMP = ".orbax-checkpoint-tmp"
_STEP_NAME = re.compile(r"^(0|[1-9]\d*)$")  # Orbax's default step directory names.
_TOKENIZER_FORMAT = "tokenizer-files-base64/v1"
_MAX_LISTED = 20  # mismatches spelled out in an error message


class CheckpointError(Exception):
  """Base class of the errors of this module."""


class CheckpointMismatchError(CheckpointError, ValueError):
  """A checkpoint does not fit what is being restored (another model config, ...).

  Attributes:
    step: the checkpoint step.
    mismatched: {path: (saved shape, expected shape)}.
    missing: paths the restore target has but the checkpoint does not.
    unexpected: paths the checkpoint has but the restore target does not.
  """

  def __init__(self, message: str, *, step: int,
               mismatched: Mapping[str, tuple[tuple[int, ...], tuple[int, ...]]] | None = None,
               missing: Sequence[str] = (), unexpected: Sequence[str] = ()):
    super().__init__(message)
    self.step = step
    self.mismatched = dict(mismatched or {})
    self.missing = list(missing)
    self.unexpected = list(unexpected)


class CheckpointUnsafeError(CheckpointError, ValueError):
  """A checkpoint names a file outside the place it is restored to (a crafted checkpoint).

  Not a `CheckpointCorruptError`: `restore_latest` stops instead of falling back to an
  older step, so that the refusal is seen.
  """

  def __init__(self, step: int | None, reason: str):
    super().__init__(f"checkpoint step {step}: {reason}" if step is not None else reason)
    self.step = step
    self.reason = reason


class CheckpointCorruptError(CheckpointError):
  """A checkpoint step directory cannot be read (half-written, truncated, ...)."""

  def __init__(self, step: int | None, reason: str):
    super().__init__(f"checkpoint step {step}: {reason}" if step is not None else reason)
    self.step = step
    self.reason = reason


@dataclasses.dataclass(frozen=True)
class CheckpointOptions:
  """When to save and what to keep.

  Attributes:
    save_interval_steps: `save` writes a checkpoint when ``step % interval == 0``
      (or when forced, or when given metrics).
    max_to_keep: the K most recent checkpoints are kept; None keeps all.
    keep_best: additionally keep this many checkpoints with the best
      `best_metric` (0 disables). Checkpoints saved without metrics are kept only
      while they are among the K most recent.
    best_metric: name of the metric in ``save(metrics=...)`` that ranks checkpoints.
    best_mode: "min" (e.g. a loss) or "max" (e.g. an accuracy).
    async_save: write files in a background thread.
    replica_parallel: let the processes holding replicas of an array write parts of
      it cooperatively. None = only when there are several processes: with one
      process there is nothing to share, and it costs a compiled slice per shard
      (about 10 s on the first save of a small model on 8 CPU devices).
  """

  save_interval_steps: int = 1000
  max_to_keep: int | None = 3
  keep_best: int = 1
  best_metric: str = "eval_loss"
  best_mode: str = "min"
  async_save: bool = True
  replica_parallel: bool | None = None

  def __post_init__(self):
    if self.save_interval_steps < 1:
      raise ValueError(f"save_interval_steps must be >= 1, got {self.save_interval_steps}")
    if self.max_to_keep is not None and self.max_to_keep < 1:
      raise ValueError(f"max_to_keep must be None or >= 1, got {self.max_to_keep}")
    if self.keep_best < 0:
      raise ValueError(f"keep_best must be >= 0, got {self.keep_best}")
    if self.best_mode not in ("min", "max"):
      raise ValueError(f"best_mode must be 'min' or 'max', got {self.best_mode!r}")


@dataclasses.dataclass(frozen=True)
class Restored:
  """What `Checkpointer.restore_latest` / `restore` give back.

  Attributes:
    step: the checkpoint's step.
    state: the train state, laid out as the abstract target asked (shardings).
    data_iterator: the iterator passed in, now positioned where it was saved.
    tokenizer: the tokenizer saved with the checkpoint (None if none was).
    config: the saved config as a JSON dict (None if none was).
    metrics: the metrics saved with this step (None if none were).
  """

  step: int
  state: Any
  data_iterator: Any | None
  tokenizer: tokenizer_lib.Tokenizer | None
  config: dict[str, Any] | None
  metrics: dict[str, Any] | None


# ----------------------------------------------------------------------------
# Restore targets.


def abstract_state(shapes: Any, shardings: Any) -> Any:
  """Restore target: `shapes` (e.g. from `jax.eval_shape`) with shardings attached.

  Args:
    shapes: pytree of objects with `.shape` and `.dtype` (ShapeDtypeStruct, arrays).
    shardings: one `jax.sharding.Sharding` for every leaf, or a pytree of them
      matching `shapes` (e.g. from `sharding.logical_to_sharding` on the current mesh).

  Returns:
    The pytree of `jax.ShapeDtypeStruct(shape, dtype, sharding=...)`.
  """
  if isinstance(shardings, jax.sharding.Sharding):
    return jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=shardings), shapes)
  return jax.tree.map(
      lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings)


def abstract_like(tree: Any) -> Any:
  """Restore target with the shapes, dtypes and shardings of existing `jax.Array`s."""
  return jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


# ----------------------------------------------------------------------------
# Helpers: paths, shapes, configs, tokenizers.


def _key_name(entry: Any) -> str:
  for attr in ("key", "idx", "name"):  # DictKey / FlattenedIndexKey, SequenceKey, GetAttrKey
    if hasattr(entry, attr):
      return str(getattr(entry, attr))
  return str(entry)


def _path_str(path: Sequence[Any]) -> str:
  # Orbax's metadata turns namedtuples (optax states) into dicts, so attribute and
  # dict keys must print alike: "opt_state/0/mu/decoder/...".
  return "/".join(_key_name(entry) for entry in path)


def _stored_shape(leaf: Any) -> tuple[int, ...]:
  """Shape of `leaf` as Orbax stores it (typed PRNG keys are stored as key data)."""
  dtype = getattr(leaf, "dtype", None)
  if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
    data = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(leaf.shape, dtype))
    return tuple(data.shape)
  return tuple(np.shape(leaf) if not hasattr(leaf, "shape") else leaf.shape)


def _flat_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {_path_str(path): _stored_shape(leaf) for path, leaf in flat}


def _flatten_json(value: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(value, Mapping):
    out = {}
    for key, item in value.items():
      out.update(_flatten_json(item, f"{prefix}{key}."))
    return out
  return {prefix.rstrip("."): value}


def config_to_json(config: Any) -> dict[str, Any]:
  """A config (`ConfigDict` or mapping) as the JSON dict stored in checkpoints."""
  if hasattr(config, "to_json_best_effort"):
    return json.loads(config.to_json_best_effort(sort_keys=True))
  return json.loads(json.dumps(dict(config), sort_keys=True, default=str))


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
  """Fields whose values differ, as ``"a.b: saved X, current Y"`` lines."""
  a, b = _flatten_json(saved), _flatten_json(current)
  lines = []
  for key in sorted(set(a) | set(b)):
    if a.get(key, "<absent>") != b.get(key, "<absent>"):
      lines.append(f"{key}: saved {a.get(key, '<absent>')!r}, current {b.get(key, '<absent>')!r}")
  return lines


def tokenizer_to_json(tokenizer: tokenizer_lib.Tokenizer) -> dict[str, Any]:
  """Every file `tokenizer.save` writes, base64-encoded, in one JSON-able dict."""
  with tempfile.TemporaryDirectory() as tmp:
    root = pathlib.Path(tokenizer.save(tmp))
    files = {
        path.relative_to(root).as_posix(): base64.b64encode(path.read_bytes()).decode("ascii")
        for path in sorted(root.rglob("*")) if path.is_file()
    }
  return {"format": _TOKENIZER_FORMAT, "files": files}


def _tokenizer_files(payload: Mapping[str, Any]) -> dict[str, bytes]:
  if payload.get("format") != _TOKENIZER_FORMAT:
    raise ValueError(f"unknown tokenizer item format {payload.get('format')!r}")
  return {name: base64.b64decode(data, validate=True) for name, data in payload["files"].items()}


def tokenizer_from_files(files: Mapping[str, bytes], *, step: int | None = None
                         ) -> tokenizer_lib.Tokenizer:
  """Rebuilds a tokenizer from the files `tokenizer.save` wrote (see `tokenizer_to_json`).

  The names come from the checkpoint: each must be a plain relative name that stays
  inside the temporary directory (no absolute path, ``..``, backslash, drive or NUL),
  and so must the model file its ``tokenizer.json`` names. Every name is checked
  before anything is written.

  Raises:
    CheckpointUnsafeError: naming `step` and the refused name.
  """
  with tempfile.TemporaryDirectory() as tmp:
    try:
      paths = {name: tokenizer_lib.safe_join(tmp, name, what="tokenizer file name")
               for name in files}
    except tokenizer_lib.UnsafePathError as e:
      raise CheckpointUnsafeError(step, f"{e}; refusing to restore its tokenizer") from None
    for name, data in files.items():
      paths[name].parent.mkdir(parents=True, exist_ok=True)
      paths[name].write_bytes(data)
    try:
      return tokenizer_lib.Tokenizer.load(tmp)
    except tokenizer_lib.UnsafePathError as e:  # The temporary path would mean nothing.
      raise CheckpointUnsafeError(
          step, f"tokenizer.json: {e.what} {e.name!r} {e.reason}; refusing to restore its "
          "tokenizer") from None


def _describe(error: BaseException) -> str:
  text = str(error).splitlines()[0] if str(error) else ""
  return f"{type(error).__name__}: {text[:300]}"


def _all_processes_agree(ok: bool) -> bool:
  """True if `ok` on every process (a collective: every process must call it)."""
  if jax.process_count() == 1:
    return ok
  return bool(np.all(multihost_utils.process_allgather(np.asarray(ok))))


def _barrier(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def _type_handler_registry(replica_parallel: bool) -> Any:
  """Orbax's standard type handlers, with replica-parallel writes of jax.Arrays on/off."""
  th = ocp.type_handlers
  handlers = [(t, th.get_type_handler(t)) for t in (int, float, bytes, np.number, np.ndarray, str)]
  store = _array_metadata_store.Store() if _array_metadata_store is not None else None
  handlers.append((jax.Array, th.ArrayHandler(use_replica_parallel=replica_parallel,
                                              array_metadata_store=store)))
  return th.create_type_handler_registry(*handlers)


@dataclasses.dataclass(frozen=True)
class _MetricGetter:
  """`best_fn` for Orbax: the ranking metric of a step's metrics dict."""

  name: str

  def __call__(self, metrics: Mapping[str, Any]) -> float:
    return float(metrics[self.name])


# ----------------------------------------------------------------------------
# The checkpointer.


class _DropMissingMetricsWarning(logging.Filter):
  """Drops Orbax's warning for every save without metrics: most saves have none."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Requested `tracked_metric`")


_ABSL_FILTER = _DropMissingMetricsWarning()


class Checkpointer:
  """An `ocp.CheckpointManager` with this project's items, retention and recovery.

  Every process of a multi-process run must create it and call `save`, `restore*`
  and `close` at the same points (Orbax synchronizes them); only process 0 writes
  the JSON items and moves broken step directories aside.
  """

  def __init__(self, directory: str | pathlib.Path | epath.Path,
               options: CheckpointOptions = CheckpointOptions(), *,
               config: Any | None = None,
               tokenizer: tokenizer_lib.Tokenizer | None = None):
    """Opens (or creates) the checkpoint directory.

    Step directories that can never be restored are moved aside first, with a
    warning: ones without a commit marker (half-written) and ones whose metrics
    file cannot be parsed (Orbax would fail to start on them). Orbax's own
    unfinished ``*.orbax-checkpoint-tmp-*`` directories are ignored and deleted.

    Args:
      directory: where step directories live (local path or any `epath` URL).
      options: save interval and retention.
      config: the run's config, saved with every checkpoint and compared against
        the saved one to explain shape mismatches.
      tokenizer: saved with every checkpoint.
    """
    # Orbax's tensorstore back end rejects relative paths; URLs (gs://...) pass through.
    self.directory = epath.Path(directory)
    if "://" not in str(directory):
      self.directory = epath.Path(os.path.abspath(str(directory)))
    self.options = options
    self._config_json = config_to_json(config) if config is not None else None
    # The tokenizer does not change during a run: encode it once.
    self._tokenizer_json = tokenizer_to_json(tokenizer) if tokenizer is not None else None
    self._move_aside_unusable_steps()
    logging.getLogger("absl").addFilter(_ABSL_FILTER)  # Adding it twice is a no-op.
    self._manager = ocp.CheckpointManager(
        self.directory, options=self._manager_options(), handler_registry=self._registry())

  # ------------------------------------------------------------------ setup
  def _manager_options(self) -> ocp.CheckpointManagerOptions:
    opts, policies = self.options, ocp.checkpoint_managers
    keep = [policies.LatestN(n=opts.max_to_keep)]
    best_fn = None
    if opts.keep_best > 0:
      best_fn = _MetricGetter(opts.best_metric)
      # BestN sorts ascending and keeps the tail, so "min" sorts in reverse.
      keep.append(policies.BestN(get_metric_fn=best_fn, reverse=opts.best_mode == "min",
                                 n=opts.keep_best, keep_checkpoints_without_metrics=False))
    return ocp.CheckpointManagerOptions(
        # No InitialSavePolicy (Orbax's default would also save the first step).
        save_decision_policy=policies.AnySavePolicy([
            policies.FixedIntervalPolicy(opts.save_interval_steps),
            policies.PreemptionCheckpointingPolicy(),  # JAX's multi-host preemption notice
        ]),
        # "Keep if any policy keeps": the last K, and the best by metric.
        preservation_policy=policies.AnyPreservationPolicy(keep),
        # `best_fn` must also be set: without it Orbax does not write the metrics to
        # disk, so after a restart BestN would see no metrics and delete the best.
        best_fn=best_fn,
        best_mode=opts.best_mode,
        enable_async_checkpointing=opts.async_save,
        cleanup_tmp_directories=True,
        create=True,
    )

  def _registry(self) -> ocp.handlers.DefaultCheckpointHandlerRegistry:
    # Registered up front (not lazily on first save) so that metadata and restore
    # work in a fresh process that has not saved anything yet.
    replica_parallel = self.options.replica_parallel
    if replica_parallel is None:
      replica_parallel = jax.process_count() > 1
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    entries = [
        (STATE, (ocp.args.PyTreeSave, ocp.args.PyTreeRestore),
         ocp.PyTreeCheckpointHandler(
             type_handler_registry=_type_handler_registry(replica_parallel))),
        (DATA_ITERATOR, (grain.checkpoint.CheckpointSave, grain.checkpoint.CheckpointRestore),
         grain.checkpoint.CheckpointHandler()),
        (TOKENIZER, (ocp.args.JsonSave, ocp.args.JsonRestore),
         ocp.JsonCheckpointHandler(filename="tokenizer.json")),
        (CONFIG, (ocp.args.JsonSave, ocp.args.JsonRestore),
         ocp.JsonCheckpointHandler(filename="config.json")),
    ]
    for item, arg_types, handler in entries:
      for arg_type in arg_types:  # One handler instance serves both directions.
        registry.add(item, arg_type, handler)
    return registry

  def _step_dir(self, step: int) -> epath.Path:
    return self.directory / str(step)

  def _move_aside(self, name: str) -> str:
    """Renames `directory/name` so Orbax no longer sees it as a step; returns the new name."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = self.directory / f"{name}.unusable-{stamp}"
    suffix = 1
    while target.exists():
      target = self.directory / f"{name}.unusable-{stamp}-{suffix}"
      suffix += 1
    (self.directory / name).rename(target)
    return target.name

  def _move_aside_unusable_steps(self) -> None:
    # A step directory that stays visible to Orbax counts as the latest step: saves
    # at or below it are refused (should_save) or fail (step exists), and it takes
    # one of the K "latest" slots. So it is moved aside, not only skipped.
    if jax.process_index() == 0 and self.directory.exists():
      for child in sorted(self.directory.iterdir(), key=lambda p: p.name):
        name = child.name
        if _ORBAX_TMP in name:
          logger.warning(
              "checkpoint step %s in %s skipped: %s is an unfinished save (the process "
              "stopped before committing it); Orbax deletes it",
              name.split(".")[0], self.directory, name)
          continue
        if not _STEP_NAME.match(name) or not child.is_dir():
          continue
        reason = None
        if not (child / COMMIT_MARKER).exists():
          reason = f"no {COMMIT_MARKER} (a half-written save)"
        elif (child / "metrics" / "metrics").exists():
          try:
            json.loads((child / "metrics" / "metrics").read_text())
          except (ValueError, OSError) as error:
            reason = f"unreadable metrics file ({_describe(error)})"
        if reason:
          moved = self._move_aside(name)
          logger.warning("checkpoint step %s in %s skipped: %s; moved to %s",
                         name, self.directory, reason, moved)
    _barrier("audio_interaction_checkpoint_prepare")

  # ------------------------------------------------------------------- saving
  def save(self, step: int, state: Any, *, data_iterator: Any | None = None,
           metrics: Mapping[str, Any] | None = None, force: bool = False,
           wait: bool = False) -> bool:
    """Saves a checkpoint of `step` if the interval says so (or if forced).

    Args:
      step: the training step `state` is at (steps completed).
      state: pytree of arrays: params, optimizer state, step, ...
      data_iterator: the Grain iterator feeding the loop; its position is saved.
      metrics: eval metrics of this step, e.g. ``{"eval_loss": 1.3}``. A step with
        metrics is always saved (it is a candidate for the best checkpoint) and
        must contain `options.best_metric`.
      force: save even off the interval (e.g. before exiting); a step that is
        already saved is left as it is.
      wait: block until the files are written (e.g. before exiting).

    Returns:
      Whether a checkpoint of `step` was started.
    """
    if metrics is not None:
      metrics = {name: float(value) for name, value in metrics.items()}
      if self.options.keep_best > 0 and self.options.best_metric not in metrics:
        raise ValueError(f"metrics {sorted(metrics)} lack the ranking metric "
                         f"{self.options.best_metric!r} (CheckpointOptions.best_metric)")
      force = True
    if force and step in self._manager.all_steps():
      saved = False
    else:
      items = {STATE: ocp.args.PyTreeSave(state)}
      if data_iterator is not None:
        items[DATA_ITERATOR] = grain.checkpoint.CheckpointSave(data_iterator)
      if self._tokenizer_json is not None:
        items[TOKENIZER] = ocp.args.JsonSave(self._tokenizer_json)
      if self._config_json is not None:
        items[CONFIG] = ocp.args.JsonSave(self._config_json)
      saved = self._manager.save(step, args=ocp.args.Composite(**items), metrics=metrics,
                                 force=force)
    if wait:
      self._manager.wait_until_finished()
    return saved

  def wait_until_finished(self) -> None:
    """Blocks until the pending asynchronous save is written and committed."""
    self._manager.wait_until_finished()

  # ---------------------------------------------------------------- restoring
  def restore_latest(self, abstract_state: Any, *, data_iterator: Any | None = None
                     ) -> Restored | None:
    """Restores the newest checkpoint that can be read, or returns None if there is none.

    Steps are tried newest first. A step that cannot be read (truncated or
    corrupt files, missing commit marker) is skipped with a warning naming it and
    why; once an older step restores, the skipped ones are moved aside so that the
    run can save those steps again. If no step can be read, nothing is moved and
    `CheckpointError` lists every step's failure (the fault may be in the target).

    Args:
      abstract_state: pytree of `jax.ShapeDtypeStruct` with shardings for the
        current mesh (see `abstract_state`), matching the saved state's structure.
      data_iterator: a fresh iterator of the same pipeline; it is moved to the
        saved position.

    Raises:
      CheckpointMismatchError: the newest readable step does not fit the target
        (another model config: the message names each path and both shapes).
    """
    self._manager.reload()
    failures: list[CheckpointCorruptError] = []
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        restored = self.restore(step, abstract_state, data_iterator=data_iterator)
      except CheckpointCorruptError as error:
        logger.warning("checkpoint step %d in %s skipped: %s; trying an older step",
                       step, self.directory, error.reason)
        failures.append(error)
        continue
      if failures:
        self._set_aside_failed([f.step for f in failures])
      return restored
    if failures:
      raise CheckpointError(
          f"no checkpoint in {self.directory} could be restored:\n" +
          "\n".join(f"  {error}" for error in failures))
    return None

  def restore(self, step: int, abstract_state: Any, *, data_iterator: Any | None = None
              ) -> Restored:
    """Restores checkpoint `step` (no fallback); see `restore_latest` for the arguments.

    Shapes and the tree structure must match; dtypes may differ (Orbax casts, e.g.
    float32 params into a bfloat16 target).

    Raises:
      FileNotFoundError: there is no step directory `step`.
      CheckpointMismatchError: the checkpoint does not fit `abstract_state` or
        `data_iterator` (shapes, missing/unexpected arrays, process count).
      CheckpointCorruptError: the step cannot be read.
    """
    if not self._step_dir(step).exists():
      raise FileNotFoundError(f"no checkpoint step {step} in {self.directory}; "
                              f"steps there: {self.all_steps()}")
    abstract_state = self._checked_target(abstract_state)
    # 1. Read the metadata. Failures here are the checkpoint's fault, on any process.
    error = None
    saved_tree = None
    try:
      if not (self._step_dir(step) / COMMIT_MARKER).exists():
        raise FileNotFoundError(f"no {COMMIT_MARKER} (a half-written save)")
      saved_tree = self._manager.item_metadata(step)[STATE]
      if saved_tree is None:
        raise FileNotFoundError(f"no '{STATE}' item")
      saved_tree = saved_tree.tree
    except Exception as e:  # pylint: disable=broad-exception-caught  (any read failure)
      error = e
    if not _all_processes_agree(error is None):
      raise CheckpointCorruptError(
          step, _describe(error) if error else "unreadable on another process")
    # 2. Compare with the target. Only the iterator file is per process, but every
    # process must still take the same branch (the others would wait in a barrier).
    mismatch = None
    try:
      self._check_compatible(step, saved_tree, abstract_state, data_iterator)
    except CheckpointMismatchError as e:
      mismatch = e
    if not _all_processes_agree(mismatch is None):
      raise mismatch or CheckpointMismatchError(
          f"checkpoint step {step} in {self.directory} does not fit another process's "
          "state or data iterator (see its error)", step=step)
    # 3. Read the data.
    items = {STATE: ocp.args.PyTreeRestore(
        abstract_state, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_state))}
    if data_iterator is not None:
      items[DATA_ITERATOR] = grain.checkpoint.CheckpointRestore(data_iterator)
    for name in (TOKENIZER, CONFIG):
      if (self._step_dir(step) / name).exists():
        items[name] = ocp.args.JsonRestore()
    result = tokenizer_files = metrics = None
    try:
      result = self._manager.restore(step, args=ocp.args.Composite(**items))
      if TOKENIZER in items:
        tokenizer_files = _tokenizer_files(result[TOKENIZER])
      metrics = self._manager.metrics(step)
    except Exception as e:  # pylint: disable=broad-exception-caught  (any read failure)
      error = e
    if not _all_processes_agree(error is None):
      raise CheckpointCorruptError(
          step, _describe(error) if error else "unreadable on another process")
    # 4. Interpret: errors here are incompatibilities, not corruption, so they raise.
    tokenizer = (tokenizer_from_files(tokenizer_files, step=step)
                 if tokenizer_files is not None else None)
    config = result[CONFIG] if CONFIG in items else None
    logger.info("restored checkpoint step %d from %s", step, self.directory)
    return Restored(step=step, state=result[STATE],
                    data_iterator=result[DATA_ITERATOR] if data_iterator is not None else None,
                    tokenizer=tokenizer, config=config,
                    metrics=dict(metrics) if metrics is not None else None)

  @staticmethod
  def _checked_target(abstract_state: Any) -> Any:
    """Arrays become ShapeDtypeStructs; every leaf must carry a sharding."""
    def check(path, leaf):
      if isinstance(leaf, jax.Array):
        return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=leaf.sharding)
      if not isinstance(leaf, jax.ShapeDtypeStruct) or leaf.sharding is None:
        # Orbax would silently restore such a leaf as a host NumPy array.
        raise ValueError(
            f"restore target leaf {_path_str(path)!r} is {type(leaf).__name__} without a "
            "sharding; build the target with abstract_state(shapes, shardings)")
      return leaf
    return jax.tree_util.tree_map_with_path(check, abstract_state)

  def _check_compatible(self, step: int, saved_tree: Any, abstract_state: Any,
                        data_iterator: Any | None) -> None:
    saved, expected = _flat_shapes(saved_tree), _flat_shapes(abstract_state)
    mismatched = {path: (saved[path], shape) for path, shape in expected.items()
                  if path in saved and saved[path] != shape}
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    if mismatched or missing or unexpected:
      lines = [f"checkpoint step {step} in {self.directory} does not fit the state being "
               f"restored: {len(mismatched)} arrays have other shapes, {len(missing)} are "
               f"missing from the checkpoint, {len(unexpected)} are unexpected"]
      # Parameters first: optimizer moments repeat their shapes and add no information.
      order = sorted(mismatched, key=lambda path: not path.startswith("params"))
      listed = [f"  {path}: saved {mismatched[path][0]}, expected {mismatched[path][1]}"
                for path in order]
      listed += [f"  {path}: missing from the checkpoint (expected {expected[path]})"
                 for path in missing]
      listed += [f"  {path}: unexpected (saved {saved[path]})" for path in unexpected]
      lines += listed[:_MAX_LISTED]
      if len(listed) > _MAX_LISTED:
        lines.append(f"  ... and {len(listed) - _MAX_LISTED} more")
      differences = self._config_differences(step)
      if differences:
        lines.append("the saved config differs from the current one in:")
        lines += [f"  {line}" for line in differences[:_MAX_LISTED]]
      raise CheckpointMismatchError("\n".join(lines), step=step, mismatched=mismatched,
                                    missing=missing, unexpected=unexpected)
    if data_iterator is not None:
      iterator_dir = self._step_dir(step) / DATA_ITERATOR
      own_file = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
      if not iterator_dir.exists():
        raise CheckpointMismatchError(
            f"checkpoint step {step} in {self.directory} has no data iterator state; "
            "restore without data_iterator to start the data from the beginning", step=step)
      if not (iterator_dir / own_file).exists():
        saved_files = sorted(p.name for p in iterator_dir.iterdir())
        raise CheckpointMismatchError(
            f"checkpoint step {step} in {self.directory} holds data iterator states "
            f"{saved_files}, none for this process ({own_file}): it was saved by another "
            "number of processes", step=step)

  def _config_differences(self, step: int) -> list[str]:
    if self._config_json is None:
      return []
    try:
      saved = json.loads((self._step_dir(step) / CONFIG / "config.json").read_text())
    except (OSError, ValueError):
      return []
    return config_differences(saved, self._config_json)

  def _set_aside_failed(self, steps: Sequence[int]) -> None:
    if jax.process_index() == 0:
      for step in steps:
        moved = self._move_aside(str(step))
        logger.warning("moved unreadable checkpoint step %d in %s to %s", step,
                       self.directory, moved)
    _barrier("audio_interaction_checkpoint_set_aside")
    self._manager.reload()

  # ------------------------------------------------------------ inspection
  def all_steps(self) -> list[int]:
    """Steps on disk (committed), oldest first."""
    return list(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    """The step with the best `best_metric` (the latest step if none has metrics)."""
    return self._manager.best_step()

  def metrics(self, step: int) -> dict[str, Any] | None:
    return self._manager.metrics(step)

  def close(self) -> None:
    """Waits for pending saves and deletions, then releases Orbax's resources."""
    self._manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


# ----------------------------------------------------------------------------
# Preemption.


class PreemptionGuard:
  """Turns SIGTERM/SIGINT into a flag the training loop checks after each step.

  The handler only records the signal: saving from inside a signal handler would
  run Orbax and JAX at an arbitrary point of the interrupted code. A second signal
  while the first is pending falls back to the previous handler (e.g. Ctrl-C twice
  raises KeyboardInterrupt). Handlers can only be installed from the main thread;
  elsewhere the guard warns and never fires. The previous handlers come back on exit.

  With several processes, `should_stop` is a collective (every process must read
  it at the same point of each step) so that all of them stop at the same step,
  even if only one was signalled.
  """

  def __init__(self, signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT)):
    self._signals = tuple(signals)
    self._previous: dict[int, Any] = {}
    self._received: int | None = None

  def __enter__(self) -> PreemptionGuard:
    if threading.current_thread() is not threading.main_thread():
      logger.warning("PreemptionGuard entered outside the main thread: signals are not caught")
      return self
    for sig in self._signals:
      previous = signal.signal(sig, self._handle)
      # None: a handler installed outside Python; the default is the closest match.
      self._previous[sig] = signal.SIG_DFL if previous is None else previous
    return self

  def __exit__(self, *exc_info) -> None:
    self._restore_handlers()

  def _restore_handlers(self) -> None:
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    self._previous.clear()

  def _handle(self, signum: int, frame: types.FrameType | None) -> None:
    if self._received is None:
      self._received = signum
      return
    previous = self._previous.get(signum, signal.SIG_DFL)
    self._restore_handlers()
    if callable(previous):
      previous(signum, frame)
    elif previous == signal.SIG_DFL:
      signal.raise_signal(signum)

  @property
  def should_stop(self) -> bool:
    """True once a signal arrived (on any process, when there are several)."""
    return _all_processes_agree_any(self._received is not None)

  @property
  def signal_name(self) -> str | None:
    """Name of the signal received on this process (e.g. "SIGTERM"), or None."""
    return signal.Signals(self._received).name if self._received is not None else None


def _all_processes_agree_any(flag: bool) -> bool:
  if jax.process_count() == 1:
    return flag
  return bool(np.any(multihost_utils.process_allgather(np.asarray(flag))))
