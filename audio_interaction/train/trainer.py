"""The sharded train step: state, optimizer, shardings, compiled once ahead of the loop.

`Trainer` owns the model, the optax optimizer, the mesh and the logical-axis rules.
Parameter and optimizer-state shardings are derived from the logical names the
modules give their parameters (Flax boxes survive `optax.init`), so one table in
the config decides how everything is split.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Mapping
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from audio_interaction.corpus import worlds
from audio_interaction.data.pipeline import make_global_batch
from audio_interaction.model import augment as augment_lib
from audio_interaction.model import pretrained
from audio_interaction.model.model import AudioInteractionModel, Params, param_mismatches
from audio_interaction.train import losses, sharding

Batch = Mapping[str, jax.Array]
# Fields of a pipeline batch the step reads.
STEP_FIELDS = ("tokens", "audio", "audio_slot_index", "positions", "segment_ids", "lm_targets",
               "lm_weights", "decision_targets", "transcript", "chunk_segment_ids",
               "transcript_segment_ids", "sound_events")


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Params
  opt_state: optax.OptState


def freeze_labels(params: Params, patterns: tuple[str, ...],
                  slow_patterns: tuple[str, ...] = ()) -> Params:
  """"frozen", "slow" or "trainable" per parameter: frozen when its path without the
  leading "params" ("encoder/block0/ffn/fc1/kernel") matches one of the glob
  `patterns`, else slow when it matches one of `slow_patterns` (freezing wins).

  On boxed parameters a label replaces the whole box, so that the frozen parameters'
  optimizer state is absent (not an empty box) and shardings derived from the boxed
  state match the real one.
  """
  def label(path, _):
    names = [str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey)]
    joined = "/".join(names[1:] if names[:1] == ["params"] else names)
    if any(fnmatch.fnmatchcase(joined, p) for p in patterns):
      return "frozen"
    return "slow" if any(fnmatch.fnmatchcase(joined, p) for p in slow_patterns) else "trainable"
  return jax.tree_util.tree_map_with_path(
      label, params, is_leaf=lambda x: isinstance(x, nn.Partitioned))


def check_freeze_patterns(params: Params, patterns: tuple[str, ...],
                          field: str = "train.freeze") -> None:
  """Raises ValueError naming a `field` (`train.freeze`, `train.slow`) pattern that
  matches no parameter (a typo would otherwise silently train everything at full rate)."""
  paths = ["/".join(str(k.key) for k in path[1:])
           for path, _ in jax.tree_util.tree_leaves_with_path(params)]
  for pattern in patterns:
    if not any(fnmatch.fnmatchcase(path, pattern) for path in paths):
      raise ValueError(f"{field} pattern {pattern!r} matches no parameter; paths look "
                       f"like {paths[0]!r}")


def make_optimizer(train: ml_collections.ConfigDict
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """AdamW with linear warmup then cosine decay, after global-norm clipping.

  With `train.freeze` patterns, an `optax.multi_transform` gives the matching
  parameters no update and no optimizer state; the clipping norm is then the
  trainable parameters' alone. With `train.slow` patterns (pretrained layers that
  should move, but less than fresh ones), the matching parameters follow the same
  schedule times `train.slow_lr_scale`, clipped on their own norm.
  """
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=train.learning_rate, warmup_steps=train.warmup_steps,
      decay_steps=max(train.steps, train.warmup_steps + 1),
      end_value=train.learning_rate * train.end_learning_rate_fraction)

  def adamw(learning_rate: optax.Schedule) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(train.clip_norm),
                       optax.adamw(learning_rate, weight_decay=train.weight_decay))

  optimizer = adamw(schedule)
  freeze, slow = tuple(train.freeze), tuple(train.slow)
  if freeze or slow:
    groups = {"trainable": optimizer, "frozen": optax.set_to_zero()}
    if slow:  # only then: a run with `freeze` alone keeps the optimizer state it had
      scale = float(train.slow_lr_scale)
      groups["slow"] = adamw(lambda step: schedule(step) * scale)
    optimizer = optax.multi_transform(groups, lambda params: freeze_labels(params, freeze, slow))
  return optimizer, schedule


@dataclasses.dataclass
class CompiledStep:
  """A train step compiled ahead of the loop, with XLA's cost and memory figures.

  `flops_per_step` is XLA's estimate for one device's partition of the program.
  """

  fn: Any
  flops_per_step: float
  memory: str


def check_sound_event_classes(classes: int) -> None:
  """A sound-event head has one output per class of `worlds.SOUNDS` plus "none" (the
  ids the corpus writes); ValueError naming the number it should be otherwise."""
  if classes and classes != len(worlds.SOUND_EVENT_LABELS):
    raise ValueError(f"model.sound_event_classes={classes}: the corpus labels chunks with "
                     f"{len(worlds.SOUNDS)} sound classes and 'none', so the head needs "
                     f"{len(worlds.SOUND_EVENT_LABELS)} outputs (or 0 for no head)")


class Trainer:
  """Builds and runs the sharded train and eval steps of one config.

  `sound_event_class_weights` ([K] float, `losses.balanced_sound_event_weights`) weighs
  the sound-event loss per class; None: every chunk 1.
  """

  def __init__(self, config: ml_collections.ConfigDict, mesh: Mesh | None = None, *,
               sound_event_class_weights: np.ndarray | None = None):
    self.config = config
    check_sound_event_classes(config.model.sound_event_classes)
    if sound_event_class_weights is not None:
      sound_event_class_weights = np.asarray(sound_event_class_weights, np.float32)
      if sound_event_class_weights.shape != (config.model.sound_event_classes,):
        raise ValueError(f"sound_event_class_weights has shape {sound_event_class_weights.shape}"
                         f"; the head has {config.model.sound_event_classes} classes")
    self.sound_event_class_weights = sound_event_class_weights
    self.model = AudioInteractionModel(config)
    patterns = {f"train.{f}": tuple(config.train[f]) for f in ("freeze", "slow") if config.train[f]}
    if patterns:  # tracing the model's init only when there is something to check
      shapes = jax.eval_shape(self.model.init, jax.random.key(0))
      for field, field_patterns in patterns.items():
        check_freeze_patterns(shapes, field_patterns, field)
    self.optimizer, self.schedule = make_optimizer(config.train)
    self.augment = augment_lib.AugmentConfig.from_config(config.train.augment)
    self.mesh = mesh if mesh is not None else sharding.make_mesh(config.sharding.mesh)
    self.rules = tuple(config.sharding.logical_axis_rules)
    self.state_shardings = self._state_shardings()

  # ------------------------------------------------------------------ state
  def _init_boxed(self, rng: jax.Array) -> TrainState:
    params = self.model.init_boxed(rng)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=self.optimizer.init(params))

  def _state_shardings(self) -> TrainState:
    abstract = jax.eval_shape(self._init_boxed, jax.random.key(0))
    return sharding.logical_to_sharding(nn.get_partition_spec(abstract), self.mesh, self.rules)

  def init_state(self, seed: int) -> TrainState:
    """Fresh parameters and optimizer state, created directly in their shardings; with
    `config.init` checkpoints, the encoder / decoder imported from them."""
    init = jax.jit(lambda rng: nn.unbox(self._init_boxed(rng)),
                   out_shardings=self.state_shardings)
    with sharding.activate(self.mesh, self.rules):
      state = init(jax.random.key(seed))
    checkpoints = self.config.init
    if not (checkpoints.encoder_checkpoint or checkpoints.decoder_checkpoint):
      return state
    params = pretrained.init_from_pretrained(
        self.model, jax.random.key(seed), encoder_checkpoint=checkpoints.encoder_checkpoint,
        decoder_checkpoint=checkpoints.decoder_checkpoint)
    params = jax.device_put(params, self.state_shardings.params)
    opt_state = jax.jit(self.optimizer.init, out_shardings=self.state_shardings.opt_state)(
        params)
    return state.replace(params=params, opt_state=opt_state)

  def state_from_params(self, params: Params) -> TrainState:
    """A step-0 state holding `params` (placed in their shardings), fresh optimizer.

    Raises:
      ValueError: `params` do not have this config's tree or shapes (the first
        differing parameter is named).
    """
    abstract = self.abstract_state().params
    problems = param_mismatches(abstract, params, extra="not in this config")
    if problems:
      raise ValueError(f"initial params do not fit the model config: first {problems[0]} "
                       f"({len(problems)} parameter(s) differ)")
    placed = jax.tree_util.tree_map(
        lambda value, target: jax.device_put(jnp.asarray(value, target.dtype), target.sharding),
        params, abstract)
    init_opt = jax.jit(self.optimizer.init, out_shardings=self.state_shardings.opt_state)
    with sharding.activate(self.mesh, self.rules):
      opt_state = init_opt(placed)
    return TrainState(step=jnp.zeros((), jnp.int32), params=placed, opt_state=opt_state)

  def abstract_state(self) -> TrainState:
    """Shapes, dtypes and shardings of the state: the target for checkpoint restore."""
    shapes = jax.eval_shape(lambda: nn.unbox(self._init_boxed(jax.random.key(0))))
    return jax.tree_util.tree_map(
        lambda shape, s: jax.ShapeDtypeStruct(shape.shape, shape.dtype, sharding=s),
        shapes, self.state_shardings)

  def batch_sharding(self, ndim: int) -> NamedSharding:
    return sharding.batch_sharding(self.mesh, self.rules, ndim)

  def batch_partition_spec(self) -> PartitionSpec:
    return self.batch_sharding(2).spec

  # ------------------------------------------------------------------- step
  def _loss(self, params: Params, batch: Batch, normalizers=None, augment_keys=None):
    train = self.config.train
    augment = None
    if augment_keys is not None:
      augment = augment_lib.Augmentation(keys=augment_keys,
                                         chunk_valid=batch["chunk_segment_ids"] != 0,
                                         config=self.augment)
    # Segment ids keep the examples of a packed row apart; a padded row needs none.
    packed = self.config.data.packing
    outputs = self.model.forward(
        params, batch["tokens"], batch["audio"], batch["audio_slot_index"],
        positions=batch["positions"], segment_ids=batch["segment_ids"] if packed else None,
        chunk_segment_ids=batch["chunk_segment_ids"] if packed else None, augment=augment)
    return losses.stream_losses(outputs, batch, reply_weight=train.reply_loss_weight,
                                decision_weight=train.decision_loss_weight,
                                speak_class_weight=train.speak_class_weight,
                                ctc_weight=train.ctc_loss_weight,
                                sound_event_weight=train.sound_event_loss_weight,
                                sound_event_class_weights=self.sound_event_class_weights,
                                normalizers=normalizers,
                                num_segments=self.config.data.max_segments if packed else None)

  def augment_keys(self, step: jax.Array, rows: int) -> jax.Array | None:
    """[rows] keys of the training augmentation at `step` (None when it is off).

    Row r of step s always gets fold_in(fold_in(key(config.seed), s), r): the same
    draws whatever the micro-batching, sharding or restarts (`model/augment.py`).
    """
    if not self.augment.enabled:
      return None
    return augment_lib.row_keys(self.config.seed, step, rows)

  def loss_and_grads(self, params: Params, batch: Batch, augment_keys: jax.Array | None = None
                     ) -> tuple[jax.Array, dict, Params]:
    """(loss, summed metrics, gradients) of a batch, over `grad_accum_steps` micro-batches.

    Each term is divided by the whole batch's normalizer (`losses.loss_normalizers`),
    so the micro-batches' losses and gradients simply add up to the whole batch's,
    however unequally their rows are filled: accumulation changes memory, not numbers.
    `augment_keys` ([B] keys, `augment_keys`): augment each row with its key; None:
    no augmentation (evaluation).
    """
    train = self.config.train
    accum = train.grad_accum_steps
    normalizers = losses.loss_normalizers(batch, speak_class_weight=train.speak_class_weight,
                                          ctc_weight=train.ctc_loss_weight,
                                          sound_event_weight=train.sound_event_loss_weight,
                                          sound_event_class_weights=self.sound_event_class_weights)
    grad_fn = jax.value_and_grad(self._loss, has_aux=True)
    if accum == 1:
      (loss, metrics), grads = grad_fn(params, batch, normalizers, augment_keys)
      return loss, metrics, grads
    split = lambda x: x.reshape(accum, x.shape[0] // accum, *x.shape[1:])
    micro = jax.tree_util.tree_map(split, dict(batch))
    micro_keys = None if augment_keys is None else split(augment_keys)

    def accumulate(carry, inputs):
      micro_batch, keys = inputs
      (loss, metrics), grads = grad_fn(params, micro_batch, normalizers, keys)
      total_loss, total_metrics, total_grads = carry
      return (total_loss + loss, losses.add_metrics(total_metrics, metrics),
              jax.tree_util.tree_map(jnp.add, total_grads, grads)), None

    first = jax.tree_util.tree_map(lambda x: x[0], micro)
    zero_metrics = jax.eval_shape(lambda: self._loss(params, first, normalizers)[1])
    zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), zero_metrics)
    zero_grads = jax.tree_util.tree_map(jnp.zeros_like, params)
    (loss, metrics, grads), _ = jax.lax.scan(
        accumulate, (jnp.zeros((), jnp.float32), zeros, zero_grads), (micro, micro_keys))
    return loss, metrics, grads

  def _train_step(self, state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
    keys = self.augment_keys(state.step, batch["audio"].shape[0])
    loss, metrics, grads = self.loss_and_grads(state.params, batch, keys)
    updates, opt_state = self.optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads),
                   learning_rate=self.schedule(state.step))
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

  def _eval_step(self, params: Params, batch: Batch) -> dict:
    loss, metrics = self._loss(params, batch)  # never augmented
    return dict(metrics, loss=loss)

  def lower_train_step(self, batch_shapes: Mapping[str, jax.ShapeDtypeStruct]):
    """The train step jitted with explicit shardings and donated state, lowered on
    abstract inputs (nothing allocated: checks pod configs on any machine)."""
    batch_shapes = {k: batch_shapes[k] for k in STEP_FIELDS}
    batch_shardings = {k: self.batch_sharding(len(v.shape)) for k, v in batch_shapes.items()}
    jitted = jax.jit(self._train_step, in_shardings=(self.state_shardings, batch_shardings),
                     out_shardings=(self.state_shardings, None), donate_argnums=0)
    with sharding.activate(self.mesh, self.rules):
      return jitted.lower(self.abstract_state(), batch_shapes)

  def state_bytes_per_device(self) -> dict[str, int]:
    """Bytes of the train state's shards on one device, from shapes and shardings:
    {"params", "opt_state"} (largest shard; uneven splits round up)."""
    def shard_bytes(tree) -> int:
      return sum(int(np.prod(x.sharding.shard_shape(x.shape))) * x.dtype.itemsize
                 for x in jax.tree_util.tree_leaves(tree))
    state = self.abstract_state()
    return {"params": shard_bytes(state.params), "opt_state": shard_bytes(state.opt_state)}

  def compile_train_step(self, batch_shapes: Mapping[str, jax.ShapeDtypeStruct]
                         ) -> CompiledStep:
    """jit with explicit shardings and donated state, lowered and compiled now."""
    with sharding.activate(self.mesh, self.rules):
      compiled = self.lower_train_step(batch_shapes).compile()
    cost = compiled.cost_analysis()
    cost = (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}
    return CompiledStep(fn=compiled, flops_per_step=float(cost.get("flops", 0.0)),
                        memory=str(compiled.memory_analysis()))

  def compile_eval_step(self, batch_shapes: Mapping[str, jax.ShapeDtypeStruct]):
    batch_shapes = {k: batch_shapes[k] for k in STEP_FIELDS}
    batch_shardings = {k: self.batch_sharding(len(v.shape)) for k, v in batch_shapes.items()}
    jitted = jax.jit(self._eval_step, in_shardings=(self.state_shardings.params, batch_shardings))
    with sharding.activate(self.mesh, self.rules):
      return jitted.lower(self.abstract_state().params, batch_shapes).compile()

  def device_batch(self, local_batch: Mapping[str, Any]) -> dict[str, jax.Array]:
    """This process's numpy batch -> global jax.Arrays sharded over the batch axes."""
    local = {k: local_batch[k] for k in STEP_FIELDS}
    return make_global_batch(local, self.mesh, self.batch_partition_spec())
