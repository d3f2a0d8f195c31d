"""On-the-fly training augmentation inside the jitted step: gain, noise, SpecAugment.

`AudioInteractionModel.features(audio, augment)` applies it between the waveform and
the encoder when an `Augmentation` is passed (training only; evaluation and every
streaming step never pass one, so they see the audio as it is):

1. waveform, per row: a random gain (`gain_db`), then coloured noise (white, pink
   or brown, drawn per row) at a random SNR (`noise_snr_db`, relative to the row's
   mean power over its real chunks) with probability `noise_probability`;
2. log-mel, per row: `spec_time_masks` time masks of 0..`spec_time_mask_frames`
   frames and `spec_freq_masks` frequency masks of 0..`spec_freq_mask_bins` bins
   (SpecAugment, Park et al. 2019).

Every row is augmented with probability `probability`, from its own key, so a row's
augmentation depends on (key of the row) only: not on the batch it sits in, the
number of micro-batches or the sharding. The trainer derives the keys from
(config.seed, step, row), so each epoch sees new augmentations and a resumed run
draws exactly what the uninterrupted one did.

Labels stay true:
- padding chunks (`chunk_valid` False) get no noise and no masks, and time masks
  lie inside the row's real frames;
- masked log-mel values are the row's mean (per mel bin) over its real frames, not
  the floor: a mask must not look like a pause, which is what turn-taking labels
  are about; a time mask is at most `spec_time_mask_frames` frames (100 ms at 10),
  shorter than any pause the labels depend on;
- gain and noise never move an onset.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp

Array = jax.Array

# Power-spectrum exponents of the noise colours: white, pink, brown.
NOISE_EXPONENTS = (0.0, 1.0, 2.0)


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """Static settings (hashable); `config.train.augment` holds the same fields."""

  enabled: bool = False
  probability: float = 1.0
  gain_db: tuple[float, float] = (0.0, 0.0)
  noise_probability: float = 0.0
  noise_snr_db: tuple[float, float] = (10.0, 30.0)
  spec_time_masks: int = 0
  spec_time_mask_frames: int = 0
  spec_freq_masks: int = 0
  spec_freq_mask_bins: int = 0

  @classmethod
  def from_config(cls, augment: Mapping[str, Any]) -> "AugmentConfig":
    """From `config.train.augment` (a ConfigDict or dict)."""
    return cls(enabled=bool(augment["enabled"]), probability=float(augment["probability"]),
               gain_db=tuple(float(v) for v in augment["gain_db"]),
               noise_probability=float(augment["noise_probability"]),
               noise_snr_db=tuple(float(v) for v in augment["noise_snr_db"]),
               spec_time_masks=int(augment["spec_time_masks"]),
               spec_time_mask_frames=int(augment["spec_time_mask_frames"]),
               spec_freq_masks=int(augment["spec_freq_masks"]),
               spec_freq_mask_bins=int(augment["spec_freq_mask_bins"]))


@flax.struct.dataclass
class Augmentation:
  """What `features`/`forward` need to augment a batch.

  Attributes:
    keys: [B] typed PRNG keys, one per row (`row_keys`).
    chunk_valid: [B, C] bool, False on padding chunks.
    config: the static settings.
  """

  keys: Array
  chunk_valid: Array
  config: AugmentConfig = flax.struct.field(pytree_node=False)


def row_keys(seed: int, step: Array, rows: int, offset: int | Array = 0) -> Array:
  """[rows] keys for rows offset.. offset+rows-1 of step `step`: fold_in(fold_in(key(seed), step), row)."""
  step_key = jax.random.fold_in(jax.random.key(seed), step)
  return jax.vmap(lambda r: jax.random.fold_in(step_key, r))(
      offset + jnp.arange(rows, dtype=jnp.int32))


def _row_draws(key: Array, config: AugmentConfig) -> dict[str, Array]:
  k_apply, k_gain, k_noise, k_snr, k_colour, k_white, k_time, k_freq = jax.random.split(key, 8)
  return {
      "apply": jax.random.uniform(k_apply) < config.probability,
      "gain_db": jax.random.uniform(k_gain, minval=config.gain_db[0], maxval=config.gain_db[1]),
      "noise": jax.random.uniform(k_noise) < config.noise_probability,
      "snr_db": jax.random.uniform(k_snr, minval=config.noise_snr_db[0],
                                   maxval=config.noise_snr_db[1]),
      "colour": jax.random.randint(k_colour, (), 0, len(NOISE_EXPONENTS)),
      "white": k_white, "time": k_time, "freq": k_freq,
  }


def coloured_noise(key: Array, n: int, exponent: Array) -> Array:
  """float32[n] Gaussian noise with power spectrum ~ 1/f**exponent (unit RMS)."""
  white = jax.random.normal(key, (n,), jnp.float32)
  spectrum = jnp.fft.rfft(white)
  f = jnp.fft.rfftfreq(n)
  f = f.at[0].set(f[1])
  noise = jnp.fft.irfft(spectrum * f ** (-exponent / 2.0), n).astype(jnp.float32)
  return noise / (jnp.sqrt(jnp.mean(noise * noise)) + 1e-12)


def augment_waveform_row(key: Array, audio: Array, sample_valid: Array,
                         config: AugmentConfig) -> Array:
  """One row: audio float32[S], sample_valid bool[S] -> float32[S] (gain, then noise)."""
  d = _row_draws(key, config)
  gain = jnp.where(d["apply"], 10.0 ** (d["gain_db"] / 20.0), 1.0)
  y = audio * gain
  if config.noise_probability > 0:
    exponent = jnp.asarray(NOISE_EXPONENTS, jnp.float32)[d["colour"]]
    noise = coloured_noise(d["white"], audio.shape[-1], exponent)
    count = jnp.maximum(sample_valid.sum(), 1)
    p_signal = jnp.sum(jnp.where(sample_valid, y * y, 0.0)) / count
    p_noise = jnp.sum(jnp.where(sample_valid, noise * noise, 0.0)) / count
    scale = jnp.sqrt(p_signal / (jnp.maximum(p_noise, 1e-20) * 10.0 ** (d["snr_db"] / 10.0)))
    on = d["apply"] & d["noise"]
    y = jnp.where(sample_valid & on, y + scale * noise, y)
  return y


def spec_augment_row(key: Array, mel: Array, frame_valid: Array,
                     config: AugmentConfig) -> Array:
  """One row: mel [F, n_mels], frame_valid bool[F] -> [F, n_mels] with masked regions
  set to the row's per-bin mean over its real frames (see the module docstring)."""
  d = _row_draws(key, config)
  frames, bins = mel.shape
  count = jnp.maximum(frame_valid.sum(), 1)
  fill = jnp.sum(jnp.where(frame_valid[:, None], mel, 0.0), axis=0) / count  # [n_mels]
  t = jnp.arange(frames)
  masked_t = jnp.zeros((frames,), bool)
  for k in jax.random.split(d["time"], config.spec_time_masks) if config.spec_time_masks else ():
    k_width, k_start = jax.random.split(k)
    width = jax.random.randint(k_width, (), 0, config.spec_time_mask_frames + 1)
    width = jnp.minimum(width, frame_valid.sum())
    start = jax.random.randint(k_start, (), 0, frame_valid.sum() - width + 1)
    masked_t |= (t >= start) & (t < start + width)
  b = jnp.arange(bins)
  masked_f = jnp.zeros((bins,), bool)
  for k in jax.random.split(d["freq"], config.spec_freq_masks) if config.spec_freq_masks else ():
    k_width, k_start = jax.random.split(k)
    width = jax.random.randint(k_width, (), 0, min(config.spec_freq_mask_bins, bins) + 1)
    start = jax.random.randint(k_start, (), 0, bins - width + 1)
    masked_f |= (b >= start) & (b < start + width)
  mask = (masked_t[:, None] | masked_f[None, :]) & frame_valid[:, None] & d["apply"]
  return jnp.where(mask, fill[None, :].astype(mel.dtype), mel)


def augment_waveform(augment: Augmentation, audio: Array) -> Array:
  """audio [B, S] -> [B, S]: gain and noise per row (padding chunks untouched)."""
  chunk_samples = audio.shape[-1] // augment.chunk_valid.shape[-1]
  sample_valid = jnp.repeat(augment.chunk_valid, chunk_samples, axis=-1)
  return jax.vmap(lambda k, x, v: augment_waveform_row(k, x, v, augment.config))(
      augment.keys, audio, sample_valid)


def spec_augment(augment: Augmentation, mel: Array) -> Array:
  """mel [B, F, n_mels] -> [B, F, n_mels]: SpecAugment masks per row."""
  c = augment.config
  if not (c.spec_time_masks and c.spec_time_mask_frames) and not (
      c.spec_freq_masks and c.spec_freq_mask_bins):
    return mel
  frames_per_chunk = mel.shape[1] // augment.chunk_valid.shape[-1]
  frame_valid = jnp.repeat(augment.chunk_valid, frames_per_chunk, axis=-1)
  return jax.vmap(lambda k, m, v: spec_augment_row(k, m, v, augment.config))(
      augment.keys, mel, frame_valid)
