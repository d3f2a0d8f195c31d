"""Distilling a chunk-causal audio encoder from the same encoder over whole windows.

Whisper's encoder learned to attend over its whole 30 s window. Run chunk-causally, as
streaming needs (each frame sees its own chunk and `encoder.left_chunks` before it),
its features change: Whisper tiny.en's own decoder, reading them, goes from 38 % to
over 140 % WER on the real dev set's speech (`benchmarks/whisper_causal_wer.py`). Here
the causal student learns to give, at every frame, the feature the teacher (the same
pretrained weights with full attention over the window) gives there. The loss is the
squared error relative to the teacher's mean square (1.0: predicting zeros). The
targets need no transcript, so any audio serves: the corpus's train streams and the
real recorded speech of the TRAIN packages (`fetch-train-audio`; the sources of
`data.randomize.recorded_speech_sources`, e.g. the English lines of "amazon-queen-en"), packed into
windows, some of them one clip followed by silence, as a short clip padded to
Whisper's window is.

`distill_encoder` resumes from its newest checkpoint (the windows of step s are a
pure function of (seed, s), so a resumed run equals an uninterrupted one), logs to
TensorBoard, and writes the student as a `transformers` WhisperEncoder checkpoint
(`workdir/encoder`) that a config's `init.encoder_checkpoint` names.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm

from audio_interaction import config_lib
from audio_interaction.corpus import real_speech
from audio_interaction.data import storage
from audio_interaction.model import pretrained
from audio_interaction.model.model import AudioInteractionModel, Params
from audio_interaction.train import checkpoint as checkpoint_lib
from audio_interaction.train import loop

log = logging.getLogger(__name__)

ENCODER_DIR = "encoder"  # the student, as a transformers checkpoint, in the workdir
# The gaps between packed clips (s): a pause, not a silence the padded windows teach.
GAP_SECONDS = (0.1, 1.0)
GAIN_DB = (-18.0, 0.0)


class NoDistillAudio(FileNotFoundError):
  """Neither source of distillation audio is there (or both are switched off)."""


def teacher_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` with one chunk of `distill.window_ms`: full attention over the window."""
  teacher = ml_collections.ConfigDict(config.to_dict())
  teacher.audio.chunk_ms = config.distill.window_ms
  teacher.data.max_chunks = 1
  config_lib.validate(teacher)
  return teacher


# ------------------------------------------------------------------------- audio
ClipSource = Callable[[int], np.ndarray]  # clip index -> float32 [n] at 16 kHz


@dataclasses.dataclass
class DistillAudio:
  """Clips to pack into windows: `sources` of (name, count, clip reader)."""

  sources: list[tuple[str, int, ClipSource]]

  @property
  def num_clips(self) -> int:
    return sum(count for _, count, _ in self.sources)

  def clip(self, index: int) -> np.ndarray:
    for _, count, read in self.sources:
      if index < count:
        return read(index)
      index -= count
    raise IndexError(index)

  def describe(self) -> str:
    return ", ".join(f"{count} {name}" for name, count, _ in self.sources)


def distill_audio(config: ml_collections.ConfigDict) -> DistillAudio:
  """The clips `config.distill` asks for: corpus train streams and/or recorded speech.

  Raises:
    NoDistillAudio: no source is switched on, or the ones that are hold nothing (the
      message names the command that builds or fetches each).
  """
  sources, missing = [], []
  if config.distill.corpus_streams:
    try:
      split = storage.load_split(config.data.dir, config.data.train_split)
      sources.append(("corpus streams", len(split),
                      lambda i: np.asarray(split[i]["audio"], np.float32)))
    except (FileNotFoundError, ValueError, OSError) as error:  # tfds names a missing dir
      missing.append(f"corpus streams in {config.data.dir} ({error.__class__.__name__}: "
                     "build them with `audio-interaction build-data --split train`)")
  if config.distill.recorded_speech:
    root = config.data.randomize.train_audio_root
    try:
      lines = real_speech.recorded_lines(
          os.path.expanduser(root),
          tuple(config.data.randomize.recorded_speech_sources)) if root else ()
    except (real_speech.MissingRecordedSpeech, FileNotFoundError, ValueError) as error:
      lines, reason = (), str(error)
    else:
      reason = "data.randomize.train_audio_root is empty"
    if lines:
      sources.append(("recorded speech lines", len(lines), lambda i: lines[i].audio()))
    else:
      missing.append(f"recorded speech ({reason}; run `audio-interaction fetch-train-audio`)")
  if not sources:
    raise NoDistillAudio("no audio to distill on: " + ("; ".join(missing) or
                         "distill.corpus_streams and distill.recorded_speech are both off"))
  for note in missing:
    log.warning("distillation without %s", note)
  return DistillAudio(sources)


def make_window(audio: DistillAudio, rng: np.random.Generator, samples: int,
                p_padded: float, sample_rate: int = 16000) -> np.ndarray:
  """float32 [samples]: one random clip then silence (probability `p_padded`), or clips
  packed with `GAP_SECONDS` gaps until the window is full; each at a random gain."""
  window = np.zeros(samples, np.float32)
  position, padded = 0, rng.random() < p_padded
  while position < samples:
    clip = audio.clip(int(rng.integers(audio.num_clips)))
    if clip.size == 0:  # an empty recording: its turn goes to a gap
      position += int(GAP_SECONDS[1] * sample_rate)
      continue
    if clip.size > samples - position:  # a long stream: a random stretch of it
      start = int(rng.integers(clip.size - (samples - position) + 1))
      clip = clip[start:start + samples - position]
    gain = 10.0 ** (rng.uniform(*GAIN_DB) / 20.0) / max(float(np.abs(clip).max()), 1e-4)
    window[position:position + clip.size] = clip * min(gain, 100.0)
    position += clip.size
    if padded:
      break
    position += int(rng.uniform(*GAP_SECONDS) * sample_rate)
  return window


def window_batch(audio: DistillAudio, seed: int, step: int, batch_size: int, samples: int,
                 p_padded: float) -> np.ndarray:
  """[batch_size, samples] windows of `step`: the same for the same (seed, step)."""
  rng = np.random.default_rng([seed, step])
  return np.stack([make_window(audio, rng, samples, p_padded) for _ in range(batch_size)])


# -------------------------------------------------------------------------- steps
def relative_error(student: jax.Array, teacher: jax.Array) -> jax.Array:
  """Mean squared error over frames and channels / the teacher's mean square (scalar)."""
  return jnp.mean(jnp.square(student - teacher)) / jnp.maximum(jnp.mean(jnp.square(teacher)),
                                                                1e-12)


@dataclasses.dataclass(frozen=True)
class DistillModels:
  """The student (streaming chunks) and teacher (one whole-window chunk) over the same
  parameters, and the frame counts that line them up."""

  student: AudioInteractionModel
  teacher: AudioInteractionModel
  student_frames: int  # log-mel frames of the whole student chunks inside the window
  window_samples: int

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "DistillModels":
    teacher = AudioInteractionModel(teacher_config(config))
    student = AudioInteractionModel(config)
    window_samples = teacher.config.chunk_samples
    chunks = window_samples // student.config.chunk_samples
    if chunks < 1:
      raise ValueError(f"distill.window_ms={config.distill.window_ms} is shorter than one "
                       f"chunk (audio.chunk_ms={config.audio.chunk_ms})")
    return cls(student, teacher, chunks * student.config.frames_per_chunk, window_samples)

  def teacher_params(self, params: Params) -> Params:
    """`params` for the teacher: the same weights, with zero adapters of the teacher's
    shapes (its one long chunk groups more frames per slot; their output is unused)."""
    shapes = jax.eval_shape(self.teacher.init, jax.random.key(0))["params"]["encoder"]
    encoder = dict(params["params"]["encoder"])
    for name in ("adapter_in", "adapter_out"):
      encoder[name] = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes[name])
    return _with_encoder(params, encoder)

  def encode(self, model: AudioInteractionModel, params: Params, mel: jax.Array) -> jax.Array:
    """Encoder frames [B, F/subsampling, D] of log-mel [B, F, n_mels] (full forward)."""
    return model.network.apply(params, mel, None,
                               method=lambda net, m, s: net.encoder(m, s))[1]

  def targets_and_inputs(self, teacher_params: Params, audio: jax.Array
                         ) -> tuple[jax.Array, jax.Array]:
    """(teacher frames over the student's span [B, T, D], the student's log-mel)."""
    mel = self.teacher.features(audio)
    student_mel = mel[:, :self.student_frames]
    target = self.encode(self.teacher, teacher_params, mel)
    span = self.student_frames // self.student.config.encoder.subsampling
    return jax.lax.stop_gradient(target[:, :span]), student_mel


def _with_encoder(params: Params, encoder: Params) -> Params:
  return {"params": {**params["params"], "encoder": encoder}}


def make_steps(models: DistillModels, optimizer: optax.GradientTransformation):
  """(train_step, eval_step), jitted. train_step(encoder, opt_state, teacher_params,
  frozen_params, audio) -> (encoder, opt_state, loss); eval_step(encoder,
  teacher_params, frozen_params, audio) -> loss. `audio`: [B, window_samples]."""

  def loss_fn(encoder, teacher_params, frozen, audio):
    target, mel = models.targets_and_inputs(teacher_params, audio)
    return relative_error(models.encode(models.student, _with_encoder(frozen, encoder), mel),
                          target)

  @jax.jit
  def train_step(encoder, opt_state, teacher_params, frozen, audio):
    loss, grads = jax.value_and_grad(loss_fn)(encoder, teacher_params, frozen, audio)
    updates, opt_state = optimizer.update(grads, opt_state, encoder)
    return optax.apply_updates(encoder, updates), opt_state, loss

  return train_step, jax.jit(loss_fn)


# Parameters of the encoder subtree that stay as imported: the key bias (Whisper has none;
# softmax ignores it, so its gradient is rounding noise that Adam would amplify) and the
# adapters (the loss does not reach them).
FROZEN_NAMES = ("key_bias", "adapter_in", "adapter_out")


def _labels(encoder: Params) -> Params:
  return jax.tree_util.tree_map_with_path(
      lambda path, _: "frozen" if any(getattr(k, "key", None) in FROZEN_NAMES for k in path)
      else "trained", encoder)


def make_optimizer(distill: ml_collections.ConfigDict, encoder: Params
                   ) -> optax.GradientTransformation:
  """AdamW with linear warm-up and cosine decay to 10 %, gradients clipped at 1; the
  `FROZEN_NAMES` parameters of `encoder` get no updates."""
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, distill.learning_rate, max(distill.warmup_steps, 1),
      max(distill.steps, distill.warmup_steps + 1), end_value=0.1 * distill.learning_rate)
  trained = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=0.0))
  return optax.multi_transform({"trained": trained, "frozen": optax.set_to_zero()},
                               _labels(encoder))


# ---------------------------------------------------------------------------- run
def distill_encoder(config: ml_collections.ConfigDict, workdir: str | os.PathLike,
                    *, audio: DistillAudio | None = None, progress: bool = True
                    ) -> dict[str, Any]:
  """Distills `config`'s encoder (from `init.encoder_checkpoint`) in `workdir`, on
  `audio` (default: `distill_audio(config)`). The teacher is `init.encoder_checkpoint`
  over whole windows; the student starts from `distill.init_student` if set (a former
  student, e.g. one distilled at another chunk length), else from the teacher's weights.

  Resumes from the newest checkpoint in `workdir/checkpoints`; logs `distill/loss` and
  `distill/eval_loss` (fixed held-back windows) to `workdir/tensorboard`; writes the
  student to `workdir/encoder` (transformers layout; `init.encoder_checkpoint`).

  Returns:
    {"steps", "first_eval_loss", "final_eval_loss", "encoder_dir", "audio"}.
  Raises:
    ValueError: the config has no `init.encoder_checkpoint` (nothing to distil).
    pretrained.CheckpointMismatch: `distill.init_student` is not this encoder's shape.
    NoDistillAudio: see `distill_audio`.
  """
  if not config.init.encoder_checkpoint:
    raise ValueError("distill-encoder needs init.encoder_checkpoint: the pretrained encoder "
                     "that is both the teacher and the student's start")
  distill = config.distill
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  models = DistillModels.from_config(config)
  audio = distill_audio(config) if audio is None else audio
  params = pretrained.init_from_pretrained(models.student, jax.random.key(config.seed),
                                           encoder_checkpoint=config.init.encoder_checkpoint)
  teacher_params = jax.device_put(models.teacher_params(params))
  if distill.init_student:
    params = pretrained.init_from_pretrained(models.student, jax.random.key(config.seed),
                                             encoder_checkpoint=distill.init_student)
  frozen = {"params": {k: v for k, v in params["params"].items() if k != "encoder"}}
  encoder = jax.device_put(params["params"]["encoder"])
  optimizer = make_optimizer(distill, encoder)
  # The step is the checkpoint's own number (restored.step), not part of the state.
  state = {"encoder": encoder, "opt_state": optimizer.init(encoder)}

  checkpointer = checkpoint_lib.Checkpointer(
      workdir / "checkpoints",
      checkpoint_lib.CheckpointOptions(save_interval_steps=distill.checkpoint_every,
                                       max_to_keep=2, keep_best=0),
      config=config)
  restored = checkpointer.restore_latest(checkpoint_lib.abstract_like(state))
  start = 0
  if restored is not None:
    state, start = restored.state, restored.step
    log.info("distillation resumes at step %d of %d", start, distill.steps)
  train_step, eval_step = make_steps(models, optimizer)
  # Held-back windows: another seed stream than any training step's.
  eval_audio = window_batch(audio, config.seed + 1_000_003, 0, max(distill.batch_size, 4),
                            models.window_samples, distill.p_padded)

  def evaluate(encoder) -> float:
    return float(eval_step(encoder, teacher_params, frozen, eval_audio))

  writer = loop.MetricWriter(workdir / "tensorboard")
  first_eval = evaluate(params["params"]["encoder"])
  if start == 0:
    writer.write(0, {"distill/eval_loss": first_eval})
  bar = tqdm.tqdm(total=distill.steps, initial=start, disable=not progress,
                  desc="distill-encoder", unit="step")
  encoder, opt_state, losses = state["encoder"], state["opt_state"], []
  final_eval = None
  for step in range(start, distill.steps):
    batch = window_batch(audio, config.seed, step, distill.batch_size, models.window_samples,
                         distill.p_padded)
    encoder, opt_state, loss = train_step(encoder, opt_state, teacher_params, frozen, batch)
    losses.append(loss)
    done = step + 1
    scalars = {}
    if done % distill.log_every == 0 or done == distill.steps:
      scalars["distill/loss"] = float(np.mean(jax.device_get(losses)))
      losses = []
    # Held-back loss at every checkpoint, whatever log_every is.
    if done % distill.checkpoint_every == 0 or done == distill.steps:
      scalars["distill/eval_loss"] = final_eval = evaluate(encoder)
    if scalars:
      writer.write(done, scalars)
      bar.set_postfix({k.split("/")[1]: f"{v:.4f}" for k, v in scalars.items()})
    checkpointer.save(done, {"encoder": encoder, "opt_state": opt_state},
                      force=done == distill.steps)
    bar.update(1)
  bar.close()
  checkpointer.wait_until_finished()
  if final_eval is None:  # resumed at the last step: nothing ran
    final_eval = evaluate(encoder)
  writer.close()
  encoder_dir = pretrained.save_whisper_encoder(
      workdir / ENCODER_DIR, _with_encoder(frozen, jax.device_get(encoder)),
      models.student.config,
      pretrained.read_checkpoint_config(config.init.encoder_checkpoint))
  return {"steps": distill.steps, "first_eval_loss": first_eval,
          "final_eval_loss": final_eval, "encoder_dir": str(encoder_dir),
          "audio": audio.describe()}
