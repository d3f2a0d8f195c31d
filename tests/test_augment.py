"""Training augmentation (model/augment.py): off is exact, on is per (seed, step, row),
padding and labels are untouched, the step still learns."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audio_interaction import config_lib
from audio_interaction.audio.features import log_mel
from audio_interaction.model import augment as augment_lib
from audio_interaction.model.model import AudioInteractionModel
from audio_interaction.train import losses
from audio_interaction.train.trainer import Trainer
import train_testing

ON = augment_lib.AugmentConfig(enabled=True, probability=1.0, gain_db=(-6.0, 6.0),
                               noise_probability=1.0, noise_snr_db=(5.0, 20.0),
                               spec_time_masks=2, spec_time_mask_frames=10,
                               spec_freq_masks=2, spec_freq_mask_bins=8)


def _augment_overrides(**fields):
  values = dict(enabled=True, **fields)
  return {f"train.augment.{k}": v for k, v in values.items()}


@pytest.fixture(scope="module")
def setup():
  config = train_testing.train_config()
  (batch,), spec = train_testing.fixed_batches(config, count=1)
  batch = {k: np.asarray(v) for k, v in batch.items()}
  model = AudioInteractionModel(config)
  return config, batch, spec, model


def _augmentation(batch, config: augment_lib.AugmentConfig, step: int, seed: int = 0):
  rows = batch["audio"].shape[0]
  return augment_lib.Augmentation(keys=augment_lib.row_keys(seed, step, rows),
                                  chunk_valid=jnp.asarray(batch["chunk_segment_ids"] != 0),
                                  config=config)


def test_batch_has_padding_chunks(setup):
  _, batch, _, _ = setup
  valid = batch["chunk_segment_ids"] != 0
  assert valid.any(axis=1).all() and (~valid).any(), "the tests below need padding chunks"


def test_off_is_bit_identical_to_plain_features_and_forward(setup):
  config, batch, _, model = setup
  audio = jnp.asarray(batch["audio"])
  plain = np.asarray(log_mel(audio, model.frontend))
  np.testing.assert_array_equal(np.asarray(model.features(audio)), plain)
  disabled = _augmentation(batch, dataclasses.replace(ON, enabled=False), step=3)
  np.testing.assert_array_equal(np.asarray(model.features(audio, disabled)), plain)
  # Enabled but every row skipped (probability 0): the same numbers, through the jnp.where path.
  never = _augmentation(batch, dataclasses.replace(ON, probability=0.0), step=3)
  np.testing.assert_array_equal(np.asarray(model.features(audio, never)), plain)
  # The trainer with the default config (augmentation off) draws no keys and its loss is
  # the plain forward's.
  trainer = Trainer(config)
  assert not config.train.augment.enabled and trainer.augment_keys(jnp.int32(5), 4) is None
  params = trainer.init_state(0).params
  loss, _, _ = jax.jit(trainer.loss_and_grads)(params, batch)
  outputs = model.forward(params, batch["tokens"], batch["audio"], batch["audio_slot_index"],
                          positions=batch["positions"])
  want, _ = losses.stream_losses(
      outputs, batch, reply_weight=1.0, decision_weight=1.0,
      speak_class_weight=config.train.speak_class_weight, ctc_weight=config.train.ctc_loss_weight,
      sound_event_weight=config.train.sound_event_loss_weight,
      normalizers=losses.loss_normalizers(
          batch, speak_class_weight=config.train.speak_class_weight,
          ctc_weight=config.train.ctc_loss_weight,
          sound_event_weight=config.train.sound_event_loss_weight))
  np.testing.assert_allclose(float(loss), float(want), rtol=1e-6)


def test_on_is_deterministic_per_step_and_differs_across_steps_and_rows(setup):
  _, batch, _, model = setup
  audio = jnp.asarray(batch["audio"])
  features = jax.jit(model.features)
  a = np.asarray(features(audio, _augmentation(batch, ON, step=7)))
  b = np.asarray(features(audio, _augmentation(batch, ON, step=7)))
  c = np.asarray(features(audio, _augmentation(batch, ON, step=8)))
  d = np.asarray(features(audio, _augmentation(batch, ON, step=7, seed=1)))
  plain = np.asarray(model.features(audio))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, plain)
  assert not np.allclose(a, c) and not np.allclose(a, d)
  # A row's augmentation depends on its key only, not on the rest of the batch.
  keys = augment_lib.row_keys(0, 7, audio.shape[0])
  one = augment_lib.Augmentation(keys=keys[1:2], chunk_valid=jnp.asarray(
      batch["chunk_segment_ids"][1:2] != 0), config=ON)
  np.testing.assert_allclose(np.asarray(features(audio[1:2], one))[0], a[1], atol=1e-5)


def test_gain_is_the_drawn_gain_and_padding_stays_silent(setup):
  _, batch, _, _ = setup
  audio = jnp.asarray(batch["audio"])
  gain_only = augment_lib.AugmentConfig(enabled=True, gain_db=(6.0, 6.0))
  out = np.asarray(augment_lib.augment_waveform(_augmentation(batch, gain_only, 1), audio))
  np.testing.assert_allclose(out, np.asarray(audio) * 10 ** (6 / 20), rtol=1e-6, atol=1e-7)
  noisy = np.asarray(augment_lib.augment_waveform(_augmentation(batch, ON, 1), audio))
  chunk = audio.shape[1] // batch["chunk_segment_ids"].shape[1]
  padding = np.repeat(batch["chunk_segment_ids"] == 0, chunk, axis=1)
  np.testing.assert_array_equal(noisy[padding], np.asarray(audio)[padding])
  # And noise is on real chunks.
  assert not np.allclose(noisy[~padding], np.asarray(audio)[~padding])


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 25.0])
def test_noise_is_mixed_at_the_drawn_snr(setup, snr_db):
  _, batch, _, _ = setup
  audio = jnp.asarray(batch["audio"])
  config = augment_lib.AugmentConfig(enabled=True, noise_probability=1.0,
                                     noise_snr_db=(snr_db, snr_db))
  out = np.asarray(augment_lib.augment_waveform(_augmentation(batch, config, 2), audio),
                   np.float64)
  chunk = audio.shape[1] // batch["chunk_segment_ids"].shape[1]
  valid = np.repeat(batch["chunk_segment_ids"] != 0, chunk, axis=1)
  x = np.asarray(audio, np.float64)
  for row in range(x.shape[0]):
    signal, noise = x[row][valid[row]], (out[row] - x[row])[valid[row]]
    measured = 10 * np.log10(np.mean(signal ** 2) / np.mean(noise ** 2))
    assert abs(measured - snr_db) < 0.01, (row, measured)


def test_spec_masks_stay_inside_real_frames_and_fill_with_the_row_mean(setup):
  _, batch, _, model = setup
  audio = jnp.asarray(batch["audio"])
  mel = model.features(audio)
  masks_only = augment_lib.AugmentConfig(enabled=True, spec_time_masks=2,
                                         spec_time_mask_frames=10, spec_freq_masks=2,
                                         spec_freq_mask_bins=8)
  frames_per_chunk = mel.shape[1] // batch["chunk_segment_ids"].shape[1]
  frame_valid = np.repeat(batch["chunk_segment_ids"] != 0, frames_per_chunk, axis=1)
  mel = np.asarray(mel)
  masked_any = 0
  for step in range(8):
    out = np.asarray(augment_lib.spec_augment(_augmentation(batch, masks_only, step),
                                              jnp.asarray(mel)))
    changed = out != mel
    assert not changed[~frame_valid].any(), "a mask reached a padding frame"
    for row in range(mel.shape[0]):
      fill = mel[row][frame_valid[row]].mean(axis=0)
      rows_, bins = np.nonzero(changed[row])
      np.testing.assert_allclose(out[row][rows_, bins], fill[bins], rtol=1e-5, atol=1e-6)
      # Time masks: at most 2 x 10 frames fully masked (every bin changed or equal to fill).
      full = (out[row] == fill[None, :].astype(out.dtype)).all(axis=1) & frame_valid[row]
      assert full.sum() <= 20
      # Frequency masks: at most 2 x 8 bins masked over every real frame.
      full_bins = (out[row][frame_valid[row]] == fill[None, :].astype(out.dtype)).all(axis=0)
      assert full_bins.sum() <= 16
    masked_any += changed.sum()
  assert masked_any > 0


def test_config_block_validates_and_reaches_the_trainer():
  config = train_testing.train_config(**_augment_overrides(gain_db=(-3.0, 3.0),
                                                           spec_time_masks=1))
  trainer = Trainer(config)
  assert trainer.augment.enabled and trainer.augment.gain_db == (-3.0, 3.0)
  assert trainer.augment.spec_time_masks == 1
  for bad in ("train.augment.gain_db=(3.0, -3.0)", "train.augment.probability=1.5",
              "train.augment.noise_snr_db=5", "train.augment.spec_time_masks=-1"):
    with pytest.raises(config_lib.ConfigError, match=bad.split("=")[0]):
      train_testing.train_config(**dict([bad.split("=", 1)]))


def test_gradient_accumulation_with_augmentation_equals_one_big_batch(setup):
  """Each row is augmented from its own key: micro-batching changes memory, not numbers."""
  _, batch, _, _ = setup
  results = []
  for accum in (1, 2):
    config = train_testing.train_config(**_augment_overrides(noise_probability=1.0),
                                        **{"train.grad_accum_steps": accum})
    trainer = Trainer(config)
    params = trainer.init_state(0).params
    keys = trainer.augment_keys(jnp.int32(3), batch["audio"].shape[0])
    loss, _, grads = jax.jit(trainer.loss_and_grads)(params, batch, keys)
    plain, _, _ = jax.jit(trainer.loss_and_grads)(params, batch)
    results.append((float(loss), jax.device_get(grads)))
    assert abs(float(loss) - float(plain)) > 1e-4  # augmentation changed the loss
  np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-5)
  for got, want in zip(jax.tree_util.tree_leaves(results[1][1]),
                       jax.tree_util.tree_leaves(results[0][1])):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-6)


def test_train_step_with_augmentation_compiles_and_learns(setup):
  config = train_testing.train_config(**_augment_overrides())
  trainer = Trainer(config)
  state = trainer.init_state(0)
  (batch,), spec = train_testing.fixed_batches(config, count=1)
  step = trainer.compile_train_step(spec)
  device_batch = trainer.device_batch(batch)
  history = []
  for _ in range(30):
    state, metrics = step.fn(state, device_batch)
    history.append(losses.finalize_metrics(jax.device_get(metrics)))
  assert int(state.step) == 30
  first, last = history[0], history[-1]
  assert last["reply_loss"] < 0.3 * first["reply_loss"]
  assert last["decision_loss"] < 0.5 * first["decision_loss"]
  # The eval step never augments: twice on the same params gives the same loss.
  eval_step = trainer.compile_eval_step(spec)
  a = jax.device_get(eval_step(state.params, device_batch))["loss"]
  b = jax.device_get(eval_step(state.params, device_batch))["loss"]
  assert a == b
