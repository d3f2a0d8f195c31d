"""Fitting the sound-event head on its own, over a trained model's frozen encoder.

Trained with everything else, from sounds laid under speech, rooms and noise in the
corpus's streams, the head named 25-33 % of the real DEV sound events; a linear probe on
the very same chunk features, fitted on clean clips of the TRAIN sound bank, named 61 %
(`benchmarks/sound_probe.py --bundle B --chunk-window 1`). The head is linear over each
chunk's mean encoder frame (and, with `model.sound_event_blocks`, lower blocks' chunk
means beside it: `--read-blocks`), so fitting it alone is a convex problem, a
multinomial logistic regression: this module encodes

* clean clips of every class of the TRAIN sound bank, the same number per class (a
  chunk is labelled with the clip's class when it holds the sound: its loudest frame
  within 30 dB of the clip's, the corpus's rule; "none" otherwise), on request each
  after a quiet room of a random length (`quiet_lead`, labelled "none"): in a stream a
  sound comes after something, not into an empty encoder memory (on the DEV events at
  random leads it found 77 % of the alerts instead of 60 %, and raised 9 false alarms in
  benign audio instead of 4: docs/real_audio_log.md, "Where the false alarms come from"), and
* rows of a built corpus split: their "none" chunks (speech, silence, rooms, benign
  beds), without which the head calls speech an alarm (on the 40 real DEV turn-taking
  streams, 95 false alerts at 0.8 from clean clips alone, 2 with these), and on request
  their labelled chunks too (sounds under speech and noise: on the DEV events they
  cost more recall than they saved false alarms),

and fits the head's kernel and bias on them, each sound class weighing the same in the
loss and "none" as much as all of them together, with an L2 penalty. Everything else in
the bundle is unchanged.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import pathlib
from collections.abc import Iterable, Sequence
from typing import Any

import jax
import ml_collections
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from audio_interaction.corpus import build, effects, real_audio, worlds
from audio_interaction.corpus.sounds import SoundBank
from audio_interaction.data import storage
from audio_interaction.export import portable
from audio_interaction.model.model import AudioInteractionModel, Params
from audio_interaction.model.clip_encoder import ClipEncoder, SoundEventEncoder
from audio_interaction.train.clip_encoding import (added_dense_head, save_fitted_bundle,
                                                  with_dense_head)
from audio_interaction.stream_format import NO_SOUND_EVENT

# A chunk holds a clip's sound when its loudest frame is within this of the clip's peak
# (`corpus.serialize.sound_event_targets` labels the corpus the same way).
ACTIVE_BELOW_PEAK_DB = 30.0
MAX_CLIP_SECONDS = 8.0
# The quiet room before a clean clip: coloured noise between these levels (dBFS), far
# below any sound of the bank.
QUIET_LEAD_DB = (-60.0, -40.0)
# The channels a clip may be heard through in the fit (`bank_examples`): a far room and
# another microphone, where a user's device hears a sound.
HEARD_THROUGH = ("room", "microphone")


@dataclasses.dataclass
class ChunkExamples:
  """Chunk features and their targets: `features` float32 [N, D] (what the head reads of
  each chunk, `SoundEventEncoder`), `targets` int32 [N] (class ids of
  `worlds.SOUND_EVENT_LABELS`)."""

  features: np.ndarray
  targets: np.ndarray

  @classmethod
  def concatenate(cls, parts: Sequence["ChunkExamples"]) -> "ChunkExamples":
    """The parts' examples in order (empty parts, whatever their feature width, skipped);
    ValueError when all are empty."""
    parts = [p for p in parts if len(p.targets)]
    if not parts:
      raise ValueError("no chunk examples to fit the sound-event head on")
    return cls(np.concatenate([p.features for p in parts]),
               np.concatenate([p.targets for p in parts]))


def clip_chunk_targets(audio: np.ndarray, label_id: int, chunk_samples: int) -> np.ndarray:
  """int32 [chunks]: `label_id` for the chunks of a clean clip that hold its sound (the
  loudest 10 ms frame within `ACTIVE_BELOW_PEAK_DB` of the clip's), `NO_SOUND_EVENT`
  for the others."""
  chunks = max(1, -(-audio.size // chunk_samples))
  padded = np.zeros(chunks * chunk_samples, np.float32)
  padded[:audio.size] = audio
  frame = 160  # 10 ms
  levels = effects.frame_rms_db(padded, frame, frame).reshape(chunks, chunk_samples // frame).max(1)
  active = levels >= levels.max() - ACTIVE_BELOW_PEAK_DB
  return np.where(active, label_id, NO_SOUND_EVENT).astype(np.int32)


def quiet_lead(rng: np.random.Generator, max_seconds: float, chunk_samples: int
               ) -> np.ndarray:
  """float32 [k * chunk_samples]: a quiet room of 0 to `max_seconds` in whole chunks (so
  the clip after it keeps its chunk boundaries), coloured noise (exponent 0 to 2) at a
  level drawn from `QUIET_LEAD_DB`."""
  chunks = int(rng.integers(0, int(max_seconds * 16000) // chunk_samples + 1))
  if chunks == 0:
    return np.zeros(0, np.float32)
  noise = effects.colored_noise(rng, chunks * chunk_samples, float(rng.uniform(0.0, 2.0)))
  return effects.set_level(noise, float(rng.uniform(*QUIET_LEAD_DB)),
                           active_only=False).astype(np.float32)


def train_sound_bank(train_audio_root: str | os.PathLike | None) -> SoundBank:
  """The TRAIN sound bank: `fetch-train-audio`'s recordings under `train_audio_root`
  with the procedural sounds, or the procedural sounds alone when it is None."""
  if train_audio_root is None:
    return SoundBank(use_recordings=False)
  return build.sound_source(worlds.TRAIN, {"enabled": True,
                                           "train_audio_root": str(train_audio_root)})


def other_sound_refs(train_audio_root: str | os.PathLike) -> list[real_audio.AudioRef]:
  """The TRAIN packages' recordings of sounds outside the head's classes (unmapped
  `real_audio.train_sound_clips`: files, and members of archives such as
  `openarena-data`'s doors)."""
  return [c.ref for c in real_audio.train_sound_clips(str(train_audio_root)) if not c.mapped]


def load_other_sound(ref: real_audio.AudioRef) -> np.ndarray:
  """float32 [samples] at 16 kHz: a recording of `other_sound_refs`, at most
  `MAX_CLIP_SECONDS`."""
  return ref.load()[:int(MAX_CLIP_SECONDS * 16000)]


def bank_examples(encode: ClipEncoder, bank: SoundBank, per_class: int, seed: int,
                  labels: Iterable[str] | None = None, progress: bool = True,
                  lead_seconds: float = 0.0, channel_share: float = 0.0,
                  channels: Sequence[str] = HEARD_THROUGH) -> ChunkExamples:
  """`per_class` clean clips of every class of `bank` (known to `worlds.SOUND_EVENT_LABELS`),
  each after a `quiet_lead` of at most `lead_seconds` (its chunks "none"), encoded chunk
  by chunk with `clip_chunk_targets`; a `channel_share` of them (lead and clip) heard
  through one of `channels` (`effects.CHANNELS`, drawn uniformly), their targets those of
  the clip as recorded (a room's tail is not the sound)."""
  unknown = sorted(set(channels) - set(effects.CHANNELS))
  if unknown:
    raise ValueError(f"channels {unknown}: choose from {sorted(effects.CHANNELS)}")
  if not 0.0 <= channel_share <= 1.0:
    raise ValueError(f"channel_share {channel_share}: must be in [0, 1]")
  rng = np.random.default_rng(seed)
  lead_rng = np.random.default_rng([seed, 1])  # the clips drawn do not depend on the leads
  channel_rng = np.random.default_rng([seed, 2])  # ... nor on the channels
  names = [label for label in (labels or bank.labels()) if label in worlds.SOUND_EVENT_LABELS]
  features, targets = [], []
  for label in tqdm(names, desc="clean clips per class", disable=not progress, leave=False):
    for _ in range(per_class):
      audio = bank.sample(label, rng).audio[:int(MAX_CLIP_SECONDS * 16000)]
      lead = quiet_lead(lead_rng, lead_seconds, encode.chunk_samples)
      played = np.concatenate([lead, audio])
      if channel_share and channel_rng.uniform() < channel_share:
        channel = effects.CHANNELS[channels[int(channel_rng.integers(len(channels)))]]
        played = channel(played, channel_rng).astype(np.float32)
      features.append(encode(played))
      targets.append(np.concatenate([
          np.full(lead.size // encode.chunk_samples, NO_SOUND_EVENT, np.int32),
          clip_chunk_targets(audio, worlds.SOUND_EVENT_LABELS.index(label),
                             encode.chunk_samples)]))
  return ChunkExamples(np.concatenate(features), np.concatenate(targets))


def other_sound_examples(encode: ClipEncoder, refs: Sequence[real_audio.AudioRef],
                         progress: bool = True) -> ChunkExamples:
  """Recordings of sounds outside the head's classes (the TRAIN packages' explosions,
  fire, doors, applause, engines: `other_sound_refs`), every chunk labelled
  `NO_SOUND_EVENT`, at most `MAX_CLIP_SECONDS` each: a head must say "none" to a sound it
  has no name for, not the nearest class."""
  features = [encode(load_other_sound(ref))
              for ref in tqdm(refs, desc="other sounds", disable=not progress, leave=False)]
  if not features:
    return ChunkExamples(np.zeros((0, 0), np.float32), np.zeros(0, np.int32))
  stacked = np.concatenate(features)
  return ChunkExamples(stacked, np.full(len(stacked), NO_SOUND_EVENT, np.int32))


def corpus_examples(encode: ClipEncoder, source: Sequence[dict[str, Any]], rows: int,
                    seed: int, progress: bool = True, none_only: bool = False
                    ) -> ChunkExamples:
  """`rows` examples of a built split (a random subset), each chunk with its stored
  `sound_events` target (padding chunks, -1, left out; with `none_only`, every chunk
  holding a labelled sound too)."""
  picked = np.random.default_rng(seed).permutation(len(source))[:rows]
  features, targets = [], []
  for index in tqdm(picked, desc="corpus rows", disable=not progress, leave=False):
    example = source[int(index)]
    chunk_features = encode(np.asarray(example["audio"], np.float32))
    labels = np.asarray(example["sound_events"], np.int32)[:len(chunk_features)]
    keep = labels == NO_SOUND_EVENT if none_only else labels >= 0
    features.append(chunk_features[:len(labels)][keep])
    targets.append(labels[keep])
  return ChunkExamples(np.concatenate(features), np.concatenate(targets))


def example_weights(targets: np.ndarray, classes: int) -> np.ndarray:
  """float32 [N]: each sound class the same total weight, `NO_SOUND_EVENT` as much as all
  the sound classes together; mean 1."""
  counts = np.bincount(targets, minlength=classes).astype(np.float64)
  present_sounds = int((counts[1:] > 0).sum())
  class_total = np.where(counts > 0, 1.0, 0.0)
  class_total[NO_SOUND_EVENT] = max(present_sounds, 1) if counts[NO_SOUND_EVENT] else 0.0
  per_example = class_total / np.maximum(counts, 1.0)
  weights = per_example[targets]
  return (weights / weights.mean()).astype(np.float32)


@dataclasses.dataclass
class HeadFit:
  """A fitted head: `kernel` [D, K], `bias` [K] (in the head's own parameter layout), and
  the fit's weighted training loss and accuracy per class."""

  kernel: np.ndarray
  bias: np.ndarray
  loss: float
  recall: dict[str, float]

  def probabilities(self, features: np.ndarray) -> np.ndarray:
    """The head's class probabilities [N, K] of chunk features [N, D]."""
    logits = features @ self.kernel + self.bias
    return np.asarray(jax.nn.softmax(logits, axis=-1))


def fit_head(examples: ChunkExamples, classes: int, *, l2: float = 1e-3, steps: int = 300,
             class_names: Sequence[str] | None = None) -> HeadFit:
  """Multinomial logistic regression of `examples` (weighted by `example_weights`), by
  L-BFGS on standardised features; the scaling is folded back into the kernel and bias
  so the head reads the raw features.

  Args:
    examples: features [N, D], targets [N] in [0, classes).
    classes: K, the head's outputs.
    l2: penalty on the standardised kernel (sum of squares, times l2).
    steps: L-BFGS iterations.
    class_names: the names `HeadFit.recall` gives the classes (default: the sound
      events', "none" for `NO_SOUND_EVENT`).
  """
  x = np.asarray(examples.features, np.float64)
  mean, scale = x.mean(0), x.std(0) + 1e-6
  standard = jnp.asarray((x - mean) / scale, jnp.float32)
  targets = jnp.asarray(examples.targets)
  weights = jnp.asarray(example_weights(examples.targets, classes))

  def loss_fn(params):
    logits = standard @ params["kernel"] + params["bias"]
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    return (weights * nll).mean() + l2 * jnp.sum(params["kernel"] ** 2)

  params = {"kernel": jnp.zeros((x.shape[1], classes)), "bias": jnp.zeros(classes)}
  solver = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(loss_fn)

  @jax.jit
  def step(params, state):
    value, grad = value_and_grad(params, state=state)
    updates, state = solver.update(grad, state, params, value=value, grad=grad,
                                   value_fn=loss_fn)
    return optax.apply_updates(params, updates), state, value

  state = solver.init(params)
  for _ in range(steps):
    params, state, value = step(params, state)
  kernel = np.asarray(params["kernel"], np.float64) / scale[:, None]
  bias = np.asarray(params["bias"], np.float64) - mean @ kernel
  predicted = np.argmax(x @ kernel + bias, axis=1)
  recall = {}
  for class_id in sorted(set(examples.targets.tolist())):
    mask = examples.targets == class_id
    name = (worlds.SOUND_EVENT_LABELS[class_id] or "none") if class_names is None else (
        class_names[class_id])
    recall[name] = float((predicted[mask] == class_id).mean())
  return HeadFit(kernel.astype(np.float32), bias.astype(np.float32), float(value), recall)


def with_head(params: Params, fit: HeadFit) -> Params:
  """`params` with the sound-event head's kernel and bias replaced by `fit`'s (the
  same shapes and dtypes; ValueError naming the mismatch otherwise)."""
  return with_dense_head(params, "sound_event_head", fit.kernel, fit.bias)


def added_head(config: ml_collections.ConfigDict, params: Params, seed: int = 0,
               read_blocks: Sequence[int] = ()) -> tuple[ml_collections.ConfigDict, Params]:
  """(`config` with a sound-event head of every class of `worlds.SOUND_EVENT_LABELS`
  reading `read_blocks` beside the final frames (`model.sound_event_blocks`), `params`
  with that head's freshly initialised kernel and bias) for a model that has none, or
  one reading other blocks: the rest of the model is unchanged, since the head only
  reads the encoder."""
  return added_dense_head(config, params, "sound_event_head", seed,
                          sound_event_classes=len(worlds.SOUND_EVENT_LABELS),
                          sound_event_blocks=tuple(read_blocks))


def class_counts(targets: np.ndarray) -> dict[str, int]:
  """{class name: chunks} of a target array (for logs and bundle metadata)."""
  counts = collections.Counter(int(t) for t in targets)
  return {(worlds.SOUND_EVENT_LABELS[k] or "none"): v for k, v in sorted(counts.items())}


def fit_bundle_head(bundle: str | os.PathLike, out: str | os.PathLike, *,
                    train_audio_root: str | None, corpus_dir: str | None = None,
                    corpus_split: str = "train", per_class: int = 64, corpus_rows: int = 1200,
                    corpus_sounds: bool = False, other_sounds: bool = True, seed: int = 0,
                    l2: float = 1e-3, steps: int = 300, progress: bool = True,
                    first_positions: str = "random", lead_seconds: float = 0.0,
                    read_blocks: Sequence[int] | None = None,
                    channel_share: float = 0.0) -> dict[str, Any]:
  """Fits a bundle's sound-event head (`fit_head`) and writes the bundle with it to `out`.

  Args:
    bundle: a model bundle whose model has a sound-event head.
    out: the new bundle's directory (the rest of the bundle is copied unchanged).
    train_audio_root: `fetch-train-audio`'s folder (the TRAIN sound bank's recordings);
      None: the procedural sounds only.
    lead_seconds: the longest quiet room before each clean clip (`bank_examples`).
    channel_share: the share of clean clips heard through a room or another microphone
      (`bank_examples`, `HEARD_THROUGH`).
    read_blocks: the lower encoder blocks the head reads beside the final frames
      (`model.sound_event_blocks`); None keeps the bundle's. A head of another input
      width is initialised afresh before the fit.
    corpus_dir: a built corpus (`build-data`) whose `corpus_split` rows add "none"
      chunks (and with `corpus_sounds` their labelled sounds); None: clean clips only
      (a head that has never heard speech as "none").
    other_sounds: with `train_audio_root`, its recordings of sounds outside the head's
      classes join as "none" (`other_sound_examples`).
  A bundle whose model has no sound-event head gets one (`added_head`), every class
  of `worlds.SOUND_EVENT_LABELS`; so does one whose head reads other blocks.

  Returns:
    A summary: examples per class, the fit's loss and per-class training recall.
  """
  config, params, tokenizer = portable.load_bundle(bundle)
  blocks = tuple(config.model.sound_event_blocks if read_blocks is None else read_blocks)
  head_added = not config.model.sound_event_classes
  if head_added or blocks != tuple(config.model.sound_event_blocks):
    config, params = added_head(config, params, seed, blocks)
  model = AudioInteractionModel(config)
  encode = SoundEventEncoder(model, params, first_positions=first_positions, seed=seed)
  bank = train_sound_bank(train_audio_root)
  parts = [bank_examples(encode, bank, per_class, seed, progress=progress,
                         lead_seconds=lead_seconds, channel_share=channel_share)]
  others = []
  if train_audio_root is not None and other_sounds:
    others = other_sound_refs(train_audio_root)
    parts.append(other_sound_examples(encode, others, progress=progress))
  if corpus_dir is not None:
    parts.append(corpus_examples(encode, storage.load_split(corpus_dir, corpus_split),
                                 corpus_rows, seed, progress=progress,
                                 none_only=not corpus_sounds))
  examples = ChunkExamples.concatenate(parts)
  fit = fit_head(examples, config.model.sound_event_classes, l2=l2, steps=steps)
  summary = {"bundle": pathlib.Path(bundle).name, "clips_per_class": per_class,
             "corpus_rows": corpus_rows if corpus_dir is not None else 0,
             "corpus_sounds": corpus_sounds, "other_sound_recordings": len(others),
             "train_audio": train_audio_root is not None, "l2": l2, "steps": steps,
             "seed": seed, "first_positions": first_positions, "lead_seconds": lead_seconds,
             "channel_share": channel_share, "channels": list(HEARD_THROUGH),
             "read_blocks": list(blocks),
             "head_added": head_added,
             "chunks": class_counts(examples.targets),
             "loss": fit.loss, "train_recall": fit.recall}
  save_fitted_bundle(bundle, out, with_head(params, fit), tokenizer, config,
                     "sound_event_head_fit", summary)
  return summary
