"""Train step: it learns, accumulation is exact, and sharding does not change the numbers."""

import json
import os
import pathlib
import subprocess
import sys

from flax import traverse_util
import jax
import numpy as np
import pytest

from audio_interaction import config_lib
from audio_interaction.model.model import AudioInteractionModel
from audio_interaction.train import losses
from audio_interaction.train.trainer import Trainer
import model_testing
import train_testing

SCRIPT = pathlib.Path(__file__).parent / "scripts" / "train_steps.py"


def test_overfits_a_fixed_batch():
  config = train_testing.train_config()
  trainer = Trainer(config)
  state = trainer.init_state(0)
  (batch,), spec = train_testing.fixed_batches(config, count=1)
  step = trainer.compile_train_step(spec)
  assert step.flops_per_step > 0 and "temp_size_in_bytes" in step.memory
  device_batch = trainer.device_batch(batch)
  first = None
  for _ in range(40):
    state, metrics = step.fn(state, device_batch)
    if first is None:
      first = losses.finalize_metrics(jax.device_get(metrics))
  rates = losses.finalize_metrics(jax.device_get(metrics))
  assert first["reply_loss"] > 3.0  # ~ln(64) at the start
  assert rates["reply_loss"] < 0.05 and rates["decision_loss"] < 0.05
  assert rates["token_accuracy"] == 1.0 and rates["decision_f1"] == 1.0
  # The CTC head memorises random transcripts of noise more slowly; it must still learn.
  assert rates["ctc_loss"] < 0.5 * first["ctc_loss"]
  # So must the sound-event head, chunk by chunk.
  assert rates["sound_event_loss"] < 0.5 * first["sound_event_loss"]
  assert rates["sound_event_recall"] > first["sound_event_recall"]


def test_a_sound_event_head_of_the_wrong_size_is_named():
  from audio_interaction.corpus import worlds
  config = train_testing.train_config(**{"model.sound_event_classes": 7})
  with pytest.raises(ValueError, match=f"needs {len(worlds.SOUND_EVENT_LABELS)} outputs"):
    Trainer(config)


def _grads_with_accumulation(config, batch, accum: int, class_weights=None):
  config.unlock()
  config.train.grad_accum_steps = accum
  trainer = Trainer(config, sound_event_class_weights=class_weights)
  params = trainer.init_state(0).params
  batch = {k: np.asarray(v) for k, v in batch.items()}
  loss, metrics, grads = jax.jit(trainer.loss_and_grads)(params, trainer.device_batch(batch))
  return float(loss), jax.device_get(metrics), jax.device_get(grads)


def test_gradient_accumulation_equals_one_big_batch():
  """Micro-batches of very unequal fill: token-weighted accumulation gives the one big
  batch's loss and gradients (a mean of per-micro-batch means would not)."""
  config = train_testing.train_config()
  (batch,), _ = train_testing.fixed_batches(config, count=1)
  batch = dict(batch)
  rows = batch["lm_weights"].shape[0]
  assert rows >= 4
  # The second half of the rows trains only a few reply tokens: unequal micro-batches.
  weights = np.array(batch["lm_weights"])
  for row in range(rows // 2, rows):
    kept = np.flatnonzero(weights[row])[:1]
    weights[row] = 0
    weights[row, kept] = 1
  batch["lm_weights"] = weights
  assert weights[:rows // 2].sum() >= 3 * weights[rows // 2:].sum() > 0
  # Class weights of the sound-event loss far from 1: their normaliser is whole-batch too.
  classes = config.model.sound_event_classes
  class_weights = np.random.default_rng(0).uniform(0.1, 5.0, classes).astype(np.float32)
  for weights in (None, class_weights):
    whole = _grads_with_accumulation(config, batch, 1, weights)
    for accum in (2, 4):
      loss, metrics, grads = _grads_with_accumulation(config, batch, accum, weights)
      np.testing.assert_allclose(loss, whole[0], rtol=1e-5)
      for key in ("reply_nll", "reply_tokens", "decision_nll", "tp", "fp", "fn",
                  "sound_event_nll", "sound_event_weight"):
        np.testing.assert_allclose(metrics[key], whole[1][key], rtol=1e-5)
      for got, want in zip(jax.tree_util.tree_leaves(grads),
                           jax.tree_util.tree_leaves(whole[2])):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-6)
  unweighted = _grads_with_accumulation(config, batch, 1)
  assert abs(whole[0] - unweighted[0]) > 1e-3  # the weights reach the loss


def test_class_weights_of_the_wrong_size_are_named():
  config = train_testing.train_config()
  with pytest.raises(ValueError, match="the head has"):
    Trainer(config, sound_event_class_weights=np.ones(3))


def _run(tmp_path, devices, mesh, name):
  out = tmp_path / f"{name}.npz"
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  result = subprocess.run([sys.executable, str(SCRIPT), "--devices", str(devices),
                           "--mesh", json.dumps(mesh), "--steps", "3", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1]), np.load(out)


def test_three_steps_on_8_devices_equal_one_device(tmp_path):
  one, one_params = _run(tmp_path, 1, {"data": 1, "fsdp": 1, "tensor": 1}, "one")
  eight, eight_params = _run(tmp_path, 8, {"data": 2, "fsdp": 2, "tensor": 2}, "eight")
  assert eight["devices"] == 8 and one["step"] == eight["step"] == 3
  np.testing.assert_allclose(one["losses"], eight["losses"], rtol=1e-5)
  for key in one_params.files:
    # Adam normalises updates, so tiny reduction-order differences stay tiny.
    np.testing.assert_allclose(eight_params[key], one_params[key], atol=2e-5, rtol=0,
                               err_msg=key)


def test_bf16_compute_keeps_fp32_master_params_and_learns():
  config = train_testing.train_config(**{"model.dtype": "bfloat16"})
  trainer = Trainer(config)
  state = trainer.init_state(0)
  (batch,), spec = train_testing.fixed_batches(config, count=1)
  step = trainer.compile_train_step(spec)
  device_batch = trainer.device_batch(batch)
  losses_seen = []
  for _ in range(15):
    state, metrics = step.fn(state, device_batch)
    losses_seen.append(float(metrics["loss"]))
  assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(state.params)} == {np.dtype("float32")}
  assert np.isfinite(losses_seen).all() and losses_seen[-1] < 0.5 * losses_seen[0]


def test_curriculum_stages_pick_the_mixture_by_step():
  from audio_interaction.train import loop
  config = train_testing.train_config(**{
      "train.stages": ((100, {"offline_understanding": 1.0}),
                       (300, {"offline_understanding": 1.0, "voice_chat": 3.0})),
      "data.mixture": {"voice_chat": 1.0}})
  assert loop.stage_mixture(config, 0) == {"offline_understanding": 1.0}
  assert loop.stage_index(config, 99) == 0 and loop.stage_index(config, 100) == 1
  assert loop.stage_mixture(config, 299) == {"offline_understanding": 1.0, "voice_chat": 3.0}
  assert loop.stage_mixture(config, 300) == {"voice_chat": 1.0}  # after the last stage
  assert loop.stage_index(config, 10_000) == 2


def test_init_from_a_bundle_starts_from_its_weights_and_refuses_another_model(tmp_path):
  import pytest
  from audio_interaction.data.tokenizer import ByteTokenizer
  from audio_interaction.export import portable
  from audio_interaction.train import loop
  config, params, tokenizer = portable.load_bundle(portable.EMBEDDED_BUNDLE)
  config.train.init_from = "embedded"
  got = loop.initial_params(config, tokenizer)
  state = Trainer(config).state_from_params(got)
  assert int(state.step) == 0
  for (path, want), have in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                                jax.tree_util.tree_leaves(state.params)):
    np.testing.assert_array_equal(np.asarray(have), want, err_msg=jax.tree_util.keystr(path))
  # Adam's moments start at zero: a fresh optimizer, not the bundle's.
  assert all(float(np.abs(np.asarray(m)).max()) == 0.0
             for m in jax.tree_util.tree_leaves(state.opt_state) if np.ndim(m) >= 1)

  with pytest.raises(ValueError, match="tokenizer differs"):
    loop.initial_params(config, ByteTokenizer())
  # How far attention reaches shapes no weight: a run may start at another window.
  reach = config.copy_and_resolve_references()
  reach.model.decoder.window, reach.model.decoder.pinned_prefix = 320, 64
  for want, have in zip(jax.tree_util.tree_leaves(params),
                        jax.tree_util.tree_leaves(loop.initial_params(reach, tokenizer))):
    np.testing.assert_array_equal(np.asarray(have), want)
  other = config.copy_and_resolve_references()
  other.model.decoder.num_layers = 2
  with pytest.raises(ValueError, match=r"model\.decoder\.num_layers"):
    loop.initial_params(other, tokenizer)
  with pytest.raises(ValueError, match="do not fit the model config"):
    Trainer(other).state_from_params(params)


@pytest.mark.parametrize("head,fields,prefix", [
    ("copy", {"model.decoder.copy_instruction": True, "model.decoder.copy_memory": 5},
     ("['params']['decoder']['copy']",)),
    ("sound_events", {"model.sound_event_classes": 7, "model.sound_event_blocks": (0,)},
     ("['params']['sound_event_head']",)),
    ("sound_feed", {"model.sound_event_classes": 7, "model.sound_event_feed": True},
     ("['params']['sound_event_head']", "['params']['sound_event_feed']")),
    ("sound_names", {"model.sound_event_classes": 3, "model.sound_event_feed_names": True,
                     "model.sound_event_name_tokens": ((), (20,), (21, 22))},
     ("['params']['sound_event_head']", "['params']['sound_event_name_")),
])
def test_a_bundle_without_a_head_starts_a_run_with_it(tmp_path, head, fields, prefix):
  from audio_interaction.data.tokenizer import ByteTokenizer
  from audio_interaction.export import portable
  from audio_interaction.train import loop
  plain = model_testing.small_config()
  params = model_testing.perturbed(AudioInteractionModel(plain).init(jax.random.key(0)), 3)
  portable.save_bundle(tmp_path / "plain", params, ByteTokenizer(), plain)
  config = model_testing.small_config(**fields, **{"train.init_from": f"'{tmp_path / 'plain'}'"})
  started = loop.initial_params(config, ByteTokenizer())
  # Every weight the bundle has, unchanged; the head's, as a fresh init gives them.
  added = model_testing.added_parameters(params, started)
  assert added and all(path.startswith(prefix) for path in added), (head, added)
  fresh = traverse_util.flatten_dict(AudioInteractionModel(config).init(jax.random.key(config.seed)))
  bundle_has = traverse_util.flatten_dict(params)
  for path, value in traverse_util.flatten_dict(started).items():
    if path not in bundle_has:
      np.testing.assert_array_equal(value, fresh[path], err_msg=str(path))
  # Any other difference is still refused.
  config.model.decoder.mlp_dim += 8
  with pytest.raises(ValueError, match="decoder.mlp_dim"):
    loop.initial_params(config, ByteTokenizer())


def _two_steps(config):
  """(params before, train state after two steps on one fixed batch)."""
  trainer = Trainer(config)
  state = trainer.init_state(0)
  before = jax.device_get(state.params)
  (batch,), spec = train_testing.fixed_batches(config, count=1)
  step = trainer.compile_train_step(spec)
  for _ in range(2):
    state, _ = step.fn(state, trainer.device_batch(batch))
  return before, state


def test_frozen_parameters_do_not_move_and_have_no_optimizer_state():
  config = train_testing.train_config(
      **{"train.freeze": ("encoder/*", "ctc_head/*", "sound_event_head/*")})
  before, state = _two_steps(config)
  after = jax.device_get(state.params)
  for part in ("encoder", "ctc_head", "sound_event_head"):
    jax.tree_util.tree_map(np.testing.assert_array_equal, before["params"][part],
                           after["params"][part])
  moved = jax.tree_util.tree_map(lambda a, b: not np.array_equal(a, b),
                                 before["params"]["decoder"], after["params"]["decoder"])
  assert all(jax.tree_util.tree_leaves(moved))
  # Adam's moments exist for the trainable parameters only.
  count = lambda tree: sum(x.size for x in jax.tree_util.tree_leaves(tree))
  moments = count(state.opt_state) - 2  # less the step counts
  trainable = count(before["params"]["decoder"])
  assert 2 * trainable <= moments < 2 * trainable + 8


def test_slow_parameters_take_the_scaled_learning_rate():
  """The warmup's first step has a learning rate of 0, so nothing moves and the second
  step sees the same gradients in both runs: a slow parameter then moves exactly
  `slow_lr_scale` times as far as at the full rate."""
  def first_step_moves(**overrides):
    config = train_testing.train_config(**{"train.learning_rate": 1e-2,
                                           "train.warmup_steps": 1,
                                           "train.weight_decay": 0.0,
                                           "train.clip_norm": 1e9, **overrides})
    before, state = _two_steps(config)
    return jax.tree_util.tree_map(lambda a, b: np.abs(np.asarray(b) - np.asarray(a)),
                                  before["params"], jax.device_get(state.params)["params"])

  full = first_step_moves()
  tuned = first_step_moves(**{"train.slow": ("ctc_head/*",), "train.slow_lr_scale": 0.25,
                              "train.freeze": ("encoder/*",)})
  kernel = lambda moves: moves["ctc_head"]["kernel"]
  moved = kernel(full) > 0
  assert moved.mean() > 0.5
  np.testing.assert_allclose(kernel(tuned)[moved], 0.25 * kernel(full)[moved], rtol=0.05)
  jax.tree_util.tree_map(lambda m: np.testing.assert_array_equal(m, 0), tuned["encoder"])
  np.testing.assert_allclose(tuned["decoder"]["final_norm"]["scale"],
                             full["decoder"]["final_norm"]["scale"], rtol=0.05)
  with pytest.raises(ValueError, match="train.slow pattern 'ctc_hed/\\*' matches no parameter"):
    Trainer(train_testing.train_config(**{"train.slow": ("ctc_hed/*",)}))


def test_a_freeze_pattern_that_matches_nothing_is_named():
  config = train_testing.train_config(**{"train.freeze": ("encoder/*", "decodr/*")})
  with pytest.raises(ValueError, match="'decodr/\\*' matches no parameter"):
    Trainer(config)


def test_train_reports_the_streams_cut_to_fit_a_row():
  from audio_interaction.data.pipeline import PipelineCounters
  from audio_interaction.train import loop
  config = config_lib.load_config("experiments/tiny.py")
  assert loop.truncation_rates(PipelineCounters()) == {}
  assert loop.truncation_warning(config, PipelineCounters()) is None
  counters = PipelineCounters(examples=40, truncated=18, dropped=2)
  assert loop.truncation_rates(counters) == {"truncated_fraction": 0.45, "dropped_fraction": 0.05}
  warning = loop.truncation_warning(config, counters)
  assert "45% of the 40 training streams" in warning
  assert "data.max_chunks=64, 10.2 s" in warning and "max_len=320" in warning
  # Under a tenth cut: no warning.
  assert loop.truncation_warning(config, PipelineCounters(examples=40, truncated=3)) is None
  assert loop.truncation_warning(config, PipelineCounters(examples=40, truncated=4)) is not None
