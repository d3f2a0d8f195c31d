"""The training loop: data → sharded step → metrics, evals and checkpoints; resumable.

`train(config, workdir)` resumes from the newest good checkpoint in `workdir` (params,
optimizer state, step, the Grain iterator's position), so killing a run and starting
it again continues exactly where the last checkpoint was, with the same data order.
Metrics of step N are read after step N+1 is dispatched, so logging never stalls the
device. SIGTERM/SIGINT save a checkpoint and end the run cleanly.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import time
from collections.abc import Mapping
from typing import Any

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
from flax import traverse_util
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from audio_interaction.data import pipeline as pipeline_lib
from audio_interaction.data import storage
from audio_interaction.data import tokenizer as tokenizer_lib
from audio_interaction.export import portable
from audio_interaction.model.model import AudioInteractionModel
from audio_interaction.train import checkpoint as checkpoint_lib
from audio_interaction.train import losses
from audio_interaction.train import sound_names
from audio_interaction.train.evaluators import evaluators_from_config
from audio_interaction.train.hooks import Hooks, StepInfo
from audio_interaction.train.trainer import Trainer
from audio_interaction.viz.training_curves import plot_training_curves

logger = logging.getLogger(__name__)


def maybe_initialize_distributed() -> None:
  """Joins a multi-process run when the launcher set JAX_COORDINATOR_ADDRESS & co.

  On CPU the processes talk over gloo. Safe to call more than once.
  """
  address = os.environ.get("JAX_COORDINATOR_ADDRESS")
  if not address or jax.distributed.is_initialized():
    return
  # CPU processes exchange collectives over gloo (it only affects the CPU backend;
  # asking which backend is in use would initialise it too early).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=address,
                             num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                             process_id=int(os.environ["JAX_PROCESS_ID"]))


def measure_peak_flops(size: int = 1024, repeats: int = 5) -> float:
  """FLOP/s of one device on a float32 matmul: the MFU denominator when none is given."""
  a = jnp.ones((size, size), jnp.float32)
  matmul = jax.jit(lambda x: x @ x)
  matmul(a).block_until_ready()
  times = []
  for _ in range(repeats):
    began = time.perf_counter()
    matmul(a).block_until_ready()
    times.append(time.perf_counter() - began)
  return 2 * size ** 3 / min(times)


def _vocabulary(tokenizer: tokenizer_lib.Tokenizer) -> list[str]:
  return [tokenizer.decode([i], keep_special=True) for i in range(tokenizer.vocab_size)]


# Model fields that set how far the decoder's attention reaches, not any weight: a
# bundle trained at one window may start a run at another (e.g. whole streams with the
# instruction pinned, `experiments/tiny.py:whole_streams`).
ATTENTION_REACH_FIELDS = frozenset({"decoder.window", "decoder.pinned_prefix"})
# Model fields that add a head on top of the same network, each with the fields that only
# shape that head: a bundle without the head starts a run with it, the head's weights
# freshly initialised (`config.seed`).
ADDED_HEAD_FIELDS = {"decoder.copy_instruction": ("decoder.copy_memory",),
                     "sound_event_classes": ("sound_event_blocks",),
                     "sound_event_feed": (),
                     "sound_event_feed_names": ("sound_event_name_tokens",)}


def _model_fields(config: ml_collections.ConfigDict) -> dict[str, Any]:
  return traverse_util.flatten_dict(config.model.to_dict(), sep=".")


def added_head_fields(config: ml_collections.ConfigDict,
                      bundle_config: ml_collections.ConfigDict) -> set[str]:
  """The model fields (dotted, below `model.`) of the heads `config` adds to a bundle
  trained with `bundle_config`: each switch of `ADDED_HEAD_FIELDS` on here and off
  there, with the fields that only shape its head."""
  mine, theirs = _model_fields(config), _model_fields(bundle_config)
  return {field for switch, settings in ADDED_HEAD_FIELDS.items()
          if mine.get(switch) and not theirs.get(switch) for field in (switch, *settings)}


def initial_params(config: ml_collections.ConfigDict, tokenizer: tokenizer_lib.Tokenizer
                   ) -> dict:
  """The weights of `config.train.init_from` (a bundle folder or "embedded").

  A bundle without a head this config adds (`ADDED_HEAD_FIELDS`: the copy head, the
  sound-event head, its feeds to the decoder) gives every weight it has; the head's are
  freshly initialised.

  Raises:
    ValueError: the bundle's model config (but for `ATTENTION_REACH_FIELDS` and heads
      it lacks) or tokenizer differs from this run's (a model trained on other token ids
      would start from nonsense).
  """
  source = config.train.init_from
  directory = portable.resolve_bundle(source)
  bundle_config, params, bundle_tokenizer = portable.load_bundle(directory)
  mine, theirs = (_model_fields(c) for c in (config, bundle_config))
  added = added_head_fields(config, bundle_config)
  differ = sorted(k for k in set(mine) | set(theirs)
                  if mine.get(k) != theirs.get(k)
                  and k not in ATTENTION_REACH_FIELDS and k not in added)
  if differ:
    raise ValueError(f"train.init_from={source!r}: its model config differs from this "
                     f"config's (first at model.{differ[0]})")
  if _vocabulary(bundle_tokenizer) != _vocabulary(tokenizer):
    raise ValueError(f"train.init_from={source!r}: its tokenizer differs from the data's "
                     f"({config.data.dir}/tokenizer); copy the bundle's tokenizer there "
                     "before building the corpus")
  if added:
    fresh = traverse_util.flatten_dict(AudioInteractionModel(config).init(
        jax.random.key(config.seed)))
    fresh.update(traverse_util.flatten_dict(params))
    params = traverse_util.unflatten_dict(fresh)
  return params


def stage_mixture(config: ml_collections.ConfigDict, step: int) -> dict[str, float] | None:
  """The data mixture of the curriculum stage that `step` belongs to."""
  for until_step, mixture in config.train.stages:
    if step < until_step:
      return dict(mixture)
  return None if config.data.mixture is None else dict(config.data.mixture)


def stage_index(config: ml_collections.ConfigDict, step: int) -> int:
  for index, (until_step, _) in enumerate(config.train.stages):
    if step < until_step:
      return index
  return len(config.train.stages)


def data_dir(config: ml_collections.ConfigDict) -> pathlib.Path:
  return pathlib.Path(config.data.dir)


def load_tokenizer(config: ml_collections.ConfigDict) -> tokenizer_lib.Tokenizer:
  """The tokenizer saved next to the data (byte-level when the data has none)."""
  directory = data_dir(config) / "tokenizer"
  if directory.exists():
    return tokenizer_lib.Tokenizer.load(directory)
  return tokenizer_lib.ByteTokenizer()


def make_iterator(config: ml_collections.ConfigDict, split: str, mixture,
                  num_epochs: int | None = None, training: bool = True,
                  counters: pipeline_lib.PipelineCounters | None = None):
  """A Grain iterator over a built split with this process's shard (`training=False`:
  batches as stored, no reply delays); `counters` count the streams cut to fit a row."""
  overrides = {} if training else {"reply_delay_chunks": 0}
  pipeline = pipeline_lib.PipelineConfig.from_config(config, mixture=mixture,
                                                     num_epochs=num_epochs, **overrides)
  tokenizer = load_tokenizer(config) if pipeline.ctc_targets == "characters" else None
  dataset = pipeline_lib.load_dataset(data_dir(config), split, pipeline, tokenizer=tokenizer,
                                      counters=counters)
  return iter(dataset), pipeline


# From this share of cut streams on, `train` warns once: what comes after a row's end
# is never trained (e.g. the replies late in long instruction-following streams).
TRUNCATION_WARNING_FRACTION = 0.1


def truncation_rates(counters: pipeline_lib.PipelineCounters) -> dict[str, float]:
  """{"truncated_fraction", "dropped_fraction"} of the examples read so far ({} before any)."""
  if not counters.examples:
    return {}
  return {"truncated_fraction": counters.truncated / counters.examples,
          "dropped_fraction": counters.dropped / counters.examples}


def truncation_warning(config: ml_collections.ConfigDict,
                       counters: pipeline_lib.PipelineCounters) -> str | None:
  """The warning `train` logs when many streams do not fit a row, else None."""
  rates = truncation_rates(counters)
  if not rates or rates["truncated_fraction"] < TRUNCATION_WARNING_FRACTION:
    return None
  seconds = config.data.max_chunks * config.audio.chunk_ms / 1000
  return (f"{rates['truncated_fraction']:.0%} of the {counters.examples} training streams read "
          f"so far are longer than a row (data.max_chunks={config.data.max_chunks}, "
          f"{seconds:.1f} s; data.max_len={config.data.max_len} positions): only their "
          "first part is trained, never what comes later in them. Raise data.max_chunks "
          "and data.max_len (data.packing=True fills the longer rows) to train on whole "
          "streams, as experiments/tiny.py:whole_streams does for the tiny config")


def sound_event_class_counts(directory: str | os.PathLike, split: str, classes: int
                             ) -> np.ndarray:
  """[classes] int64: how many chunks of a built split are labelled with each sound-event
  class id (the corpus's `sound_events`; padding -1 is not counted)."""
  counts = np.zeros(classes, np.int64)
  source = storage.load_split(directory, split)
  for index in tqdm(range(len(source)), desc=f"counting sound classes of {split}",
                    disable=jax.process_index() != 0, leave=False):
    labels = np.asarray(source[index]["sound_events"]).ravel()
    counts += np.bincount(labels[labels >= 0], minlength=classes)[:classes]
  return counts


def sound_event_class_weights(config: ml_collections.ConfigDict) -> np.ndarray | None:
  """The sound-event loss's class weights (`train.sound_event_balance` of the train
  split's class counts, `losses.balanced_sound_event_weights`); None when unbalanced."""
  strength = config.train.sound_event_balance
  if not (strength and config.train.sound_event_loss_weight):
    return None
  counts = sound_event_class_counts(data_dir(config), config.data.train_split,
                                    config.model.sound_event_classes)
  weights = losses.balanced_sound_event_weights(counts, strength)
  logger.info("sound-event class weights (balance %s): %s", strength,
              np.array2string(weights, precision=2))
  return weights


@dataclasses.dataclass
class MetricWriter:
  """TensorBoard scalars (process 0 only), each row also appended to history.jsonl as
  it is written (a run killed midway keeps what it logged), and held in memory."""

  directory: pathlib.Path
  history: list[dict[str, float]] = dataclasses.field(default_factory=list)

  def __post_init__(self):
    self._writer = None
    if jax.process_index() == 0:
      from tensorboardX import SummaryWriter
      self._writer = SummaryWriter(str(self.directory))

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    row = {"step": step, **scalars}
    self.history.append(row)
    if self._writer is not None:
      for name, value in scalars.items():
        self._writer.add_scalar(name, value, step)
      self._writer.flush()
      with open(self.directory / "history.jsonl", "a") as file:
        file.write(json.dumps(row) + "\n")

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()


class _MetricWindow:
  """Summed train metrics of the steps since the last log line, for rates and throughput."""

  def __init__(self):
    self.reset()

  def reset(self) -> None:
    self.sums, self.steps, self.tokens, self.learning_rate = None, 0, 0.0, 0.0
    self.began = time.perf_counter()

  def add(self, metrics: Mapping[str, jax.Array], tokens: float) -> None:
    summable = {k: v for k, v in metrics.items() if k not in ("learning_rate", "grad_norm")}
    self.sums = summable if self.sums is None else losses.add_metrics(self.sums, summable)
    self.steps += 1
    self.tokens += tokens
    self.learning_rate = float(metrics["learning_rate"])

  def elapsed(self) -> float:
    return time.perf_counter() - self.began


def evaluate(trainer: Trainer, eval_step, params, config: ml_collections.ConfigDict
             ) -> dict[str, float]:
  """Rates over `config.train.eval_batches` batches of the held-out split (same each time)."""
  iterator, _ = make_iterator(config, config.data.eval_split, None, training=False)
  sums = None
  for _, local in zip(range(config.train.eval_batches), iterator):
    metrics = eval_step(params, trainer.device_batch(local))
    sums = metrics if sums is None else losses.add_metrics(sums, metrics)
  sums = jax.device_get(sums)
  rates = losses.finalize_metrics(sums)
  rates["loss"] = float(sums["loss"]) / config.train.eval_batches
  return rates


def over_time_budget(train_config: ml_collections.ConfigDict, done: int, began: float) -> bool:
  """Whether this run has used up `train.max_seconds` (0: no budget) by step `done`.

  One process checks after every step. Several check every `log_every` steps, on
  process 0's clock, broadcast (a host sync, hence not every step): their clocks
  differ, and every process must stop at the same step.
  """
  if not train_config.max_seconds:
    return False
  if jax.process_count() == 1:
    return time.perf_counter() - began >= train_config.max_seconds
  if done % train_config.log_every:
    return False
  over = np.asarray(time.perf_counter() - began >= train_config.max_seconds)
  return bool(multihost_utils.broadcast_one_to_all(over))


def train(config: ml_collections.ConfigDict, workdir: str | os.PathLike,
          *, progress: bool = True) -> dict[str, Any]:
  """Trains `config` in `workdir`, resuming from its newest good checkpoint.

  Returns:
    {"step": last step, "train": last logged train rates, "eval": last eval rates,
    "stopped_by": signal name, "max_seconds" (the run's time budget) or None}.
  """
  maybe_initialize_distributed()
  workdir = pathlib.Path(workdir).resolve()  # Orbax's tensorstore needs absolute paths
  workdir.mkdir(parents=True, exist_ok=True)
  train_config = config.train
  tokenizer = load_tokenizer(config)
  config = sound_names.with_sound_name_tokens(config, tokenizer)
  trainer = Trainer(config, sound_event_class_weights=sound_event_class_weights(config))
  if tokenizer.vocab_size > config.model.decoder.vocab_size:
    raise ValueError(f"the data's tokenizer has {tokenizer.vocab_size} ids but "
                     f"model.decoder.vocab_size is {config.model.decoder.vocab_size}")
  checkpointer = checkpoint_lib.Checkpointer(
      workdir / "checkpoints",
      checkpoint_lib.CheckpointOptions(save_interval_steps=train_config.checkpoint_every,
                                       max_to_keep=train_config.keep_checkpoints,
                                       keep_best=1, best_metric="eval_loss"),
      config=config, tokenizer=tokenizer)

  latest = checkpointer.latest_step() or 0
  stage = stage_index(config, latest)
  counters = pipeline_lib.PipelineCounters()
  iterator, pipeline = make_iterator(config, config.data.train_split, stage_mixture(config, latest),
                                     counters=counters)
  restored = checkpointer.restore_latest(trainer.abstract_state(), data_iterator=iterator)
  if restored is not None and stage_index(config, restored.step) != stage:
    # The newest step was unreadable and an older one of another stage restored.
    stage = stage_index(config, restored.step)
    iterator, pipeline = make_iterator(config, config.data.train_split,
                                       stage_mixture(config, restored.step), counters=counters)
    restored = checkpointer.restore(restored.step, trainer.abstract_state(),
                                    data_iterator=iterator)
  if restored is not None:
    state = restored.state
  elif train_config.init_from:
    state = trainer.state_from_params(initial_params(config, tokenizer))
  else:
    state = trainer.init_state(config.seed)
  start = int(restored.step) if restored is not None else 0

  spec = pipeline_lib.batch_spec(pipeline, jax.process_count())
  began = time.perf_counter()
  logger.info("compiling the train and eval steps (%d device(s), batch %s)",
              jax.device_count(), spec["tokens"].shape)
  compiled = trainer.compile_train_step(spec)
  eval_step = trainer.compile_eval_step(spec)
  logger.info("compiled in %.1f s: %.3g FLOP per step per device", time.perf_counter() - began,
              compiled.flops_per_step)
  peak = train_config.peak_flops_per_device or measure_peak_flops()
  devices = jax.device_count()
  if jax.process_index() == 0:
    logger.debug("train step memory: %s", compiled.memory)
    (workdir / "compiled_step.txt").write_text(
        f"flops_per_step {compiled.flops_per_step}\npeak_flops_per_device {peak}\n"
        f"{compiled.memory}\n")

  writer = MetricWriter(workdir / "tensorboard")
  bar = tqdm(total=train_config.steps, initial=start, disable=not progress or jax.process_index(),
             desc="train", dynamic_ncols=True)
  run = {"train": {}, "eval": {}, "eval_metrics": None, "iterator": iterator,
         "warned_truncation": False}
  window = _MetricWindow()

  def log_window(info: StepInfo) -> None:
    if not window.steps:
      return
    sums, steps, elapsed = jax.device_get(window.sums), window.steps, window.elapsed()
    rates = losses.finalize_metrics(sums)
    step_time = elapsed / steps
    # XLA's cost analysis of an SPMD program counts one device's share of the work.
    flops = compiled.flops_per_step / step_time
    rates.update(loss=float(sums["loss"]) / steps, learning_rate=window.learning_rate,
                 step_time=step_time,
                 tokens_per_second_per_device=window.tokens / elapsed / devices,
                 tflops_per_device=flops / 1e12, mfu=flops / peak)
    rates.update(truncation_rates(counters))
    if not run["warned_truncation"] and (warning := truncation_warning(config, counters)):
      logger.warning(warning)
      run["warned_truncation"] = True
    # The window holds steps up to the previous one (metrics are read one step late).
    writer.write(info.step - 1, rates)
    run["train"] = rates
    bar.set_postfix(loss=f"{rates['loss']:.3f}", f1=f"{rates['decision_f1']:.2f}")
    window.reset()

  def teacher_forced_eval(info: StepInfo) -> None:
    began = time.perf_counter()
    run["eval"] = evaluate(trainer, eval_step, info.state.params, config)
    writer.write(info.step, {f"eval/{k}": v for k, v in run["eval"].items()})
    run["eval_metrics"] = {"eval_loss": run["eval"]["loss"]}
    logger.info("step %d: eval loss %.4f, token accuracy %.3f, decision F1 %.3f (%.1f s)",
                info.step, run["eval"]["loss"], run["eval"]["token_accuracy"],
                run["eval"]["decision_f1"], time.perf_counter() - began)

  def scheduled_evaluator(scheduled):
    def evaluate_free(info: StepInfo) -> None:
      if jax.process_count() > 1:  # it steps one stream on this host's devices
        logger.warning("skipping evaluator %s: single-process runs only", scheduled.name)
        return
      began = time.perf_counter()
      scores = scheduled.evaluator.run(info.state.params)
      writer.write(info.step, {f"{scheduled.name}/{k}": v for k, v in scores.items()})
      logger.info("step %d: %s %s (%.1f s)", info.step, scheduled.name,
                  ", ".join(f"{k} {v:.3g}" for k, v in sorted(scores.items())),
                  time.perf_counter() - began)
    return evaluate_free

  def save_checkpoint(info: StepInfo) -> None:
    metrics, run["eval_metrics"] = run["eval_metrics"], None
    if checkpointer.save(info.step, info.state, data_iterator=run["iterator"], metrics=metrics,
                         force=info.final):
      logger.info("step %d: checkpoint saved%s", info.step,
                  " (eval-ranked)" if metrics else "")

  hooks = Hooks()
  hooks.add("progress", lambda info: bar.update(1))
  hooks.add("log", log_window, every=train_config.log_every, at_end=False)
  hooks.add("eval", teacher_forced_eval, every=train_config.eval_every)
  for scheduled in evaluators_from_config(config, tokenizer):
    hooks.add(scheduled.name, scheduled_evaluator(scheduled), every=scheduled.every)
  hooks.add("checkpoint", save_checkpoint)  # last: it saves the eval's ranking metric

  stopped_by = None
  pending = None  # (metrics, tokens) of the last step: read after the next is dispatched
  run_began = time.perf_counter()
  logger.info("training steps %d to %d; hooks: %s", start, train_config.steps,
              ", ".join(hooks.names))
  with checkpoint_lib.PreemptionGuard() as guard:
    for step in range(start, train_config.steps):
      if stage_index(config, step) != stage:
        stage = stage_index(config, step)
        iterator, pipeline = make_iterator(config, config.data.train_split,
                                           stage_mixture(config, step), counters=counters)
        run["iterator"] = iterator
        logger.info("step %d: curriculum stage %d", step, stage)
      local = next(iterator)
      state, metrics = compiled.fn(state, trainer.device_batch(local))
      if pending is not None:
        window.add(*pending)  # the previous step's metrics are ready by now
      pending = (metrics, float(np.sum(local["tokens"] != 0)) * jax.process_count())
      done = step + 1
      # A spent time budget ends the run as its last step would: the final eval and
      # checkpoint hooks run.
      out_of_time = done < train_config.steps and over_time_budget(train_config, done, run_began)
      hooks.run(StepInfo(done, state, final=done == train_config.steps or out_of_time))
      if out_of_time:
        stopped_by = "max_seconds"
        logger.warning("stopping at step %d: train.max_seconds=%g spent", done,
                       train_config.max_seconds)
        break
      if guard.should_stop:
        stopped_by = guard.signal_name
        checkpointer.save(done, state, data_iterator=iterator, force=True, wait=True)
        logger.warning("stopping at step %d on %s after saving a checkpoint", done, stopped_by)
        break
  if pending is not None:  # the last steps' metrics: a short run still gets its train row
    window.add(*pending)
    log_window(StepInfo(int(jax.device_get(state.step)) + 1, state, final=True))
  checkpointer.wait_until_finished()
  checkpointer.close()
  bar.close()
  writer.close()
  if jax.process_index() == 0:
    plot_training_curves(workdir / "tensorboard" / "history.jsonl",
                         workdir / "training_curves.png", title=f"{workdir.name}")
  last_train, last_eval = run["train"], run["eval"]
  return {"step": int(jax.device_get(state.step)), "train": last_train, "eval": last_eval,
          "stopped_by": stopped_by, "history": writer.history}
