"""Fitting the encoder's CTC head on its own, on real recorded speech with its text.

Trained inside the full mixture, the CTC head reads a few hundred real lines among
thousands of TTS streams for ~1,000 steps, and on the 389 real English DEV clips it
wrote 98-101 % WER whatever the encoder (docs/real_audio_log.md, "Four hours of real English
voices"). The head is linear over each encoder frame, so once a frozen encoder has
turned every recorded line into frames, the head can be fitted alone: every line many
times over, in minutes, with a held-out set of *voices* telling when to stop. This
module

* encodes the recorded lines of `corpus.real_speech` (the TRAIN side's English voices,
  Whisper's transcripts; `english_lines`), each with 0.1-0.8 s of silence on either
  side (a clip seldom starts on its first word) and, for `copies` > 0, again through the
  corpus's per-utterance effects (speed, pitch, formants, mic, room, telephone, noise),
* holds out every line of a share of the voices,
* fits the head's kernel and bias by CTC (blank = `<pad>`, the streaming decoder's
  blank) with Adam, keeping the parameters with the lowest held-out greedy WER,

and writes a bundle in which only the CTC head changed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from audio_interaction import atomic_file
from audio_interaction import stream_format as sf
from audio_interaction.corpus import effects, manifest, real_audio, real_speech
from audio_interaction.data.tokenizer import Tokenizer
from audio_interaction.eval import metrics
from audio_interaction.export import portable
from audio_interaction.infer import transcript
from audio_interaction.model.model import AudioInteractionModel, Params
from audio_interaction.model.clip_encoder import ClipEncoder, FrameEncoder
from audio_interaction.train.clip_encoding import save_fitted_bundle, with_dense_head

log = logging.getLogger(__name__)

TARGET_KINDS = ("tokens", "characters")
SILENCE_SECONDS = (0.1, 0.8)
# Clips are padded to a multiple of this many frames, so a few shapes compile.
FRAME_BUCKET = 128


@dataclasses.dataclass
class TranscribedFrames:
  """Encoded clips with their text: `features[i]` float16 [F_i, D] (encoder frames),
  `texts[i]`, `voices[i]` (who speaks) and, once `labelled`, `labels[i]` int32 [T_i]
  (the ids the head should write; empty before)."""

  features: list[np.ndarray]
  texts: list[str]
  voices: list[str]
  labels: list[np.ndarray] = dataclasses.field(default_factory=list)

  def __len__(self) -> int:
    return len(self.texts)

  @property
  def frames(self) -> int:
    return int(sum(len(f) for f in self.features))

  def save(self, path: str | os.PathLike, key: str) -> None:
    """Writes features, texts and voices (not the labels) with `key`, what made them."""
    lengths = np.array([len(f) for f in self.features], np.int64)
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_file.replacing(path) as temporary:
      with open(temporary, "wb") as f:
        np.savez(f, features=np.concatenate(self.features), lengths=lengths,
                 texts=np.array(self.texts, dtype=str), voices=np.array(self.voices, dtype=str),
                 key=np.array(key))

  @classmethod
  def load(cls, path: str | os.PathLike, key: str) -> "TranscribedFrames | None":
    """The clips `save` wrote to `path` with the same `key`; None when there are none
    (or they were made otherwise)."""
    if not pathlib.Path(path).is_file():
      return None
    with np.load(path) as data:
      if str(data["key"]) != key:
        return None
      bounds = np.cumsum(data["lengths"])[:-1]
      return cls(np.split(data["features"], bounds), data["texts"].tolist(),
                 data["voices"].tolist())


def ctc_labels(tokenizer: Tokenizer, text: str, targets: str = "tokens") -> np.ndarray:
  """int32 [T]: `text`'s ids as the head writes them: the tokenizer's pieces
  ("tokens") or its ids spelling each word ("characters", `Tokenizer.spell`)."""
  if targets not in TARGET_KINDS:
    raise ValueError(f"CTC targets {targets!r}: choose from {TARGET_KINDS}")
  if targets == "tokens":
    ids = tokenizer.encode(text)
  else:
    ids = [i for word in tokenizer.spell(text.split()) for i in word]
  return np.asarray(ids, np.int32)


Line = TypeVar("Line")


def seeded_subset(lines: Sequence[Line], max_lines: int | None, seed: int) -> list[Line]:
  """At most `max_lines` of `lines` (None: all), a seeded random subset in their order:
  every fit over recorded lines (`RecordedLine`s, the turn-end fits' `PausedLine`s)
  draws its `--max-lines` the same way."""
  if max_lines is None or len(lines) <= max_lines:
    return list(lines)
  keep = np.random.default_rng(seed).permutation(len(lines))[:max_lines]
  return [lines[i] for i in sorted(keep)]


def split_voices(lines: Sequence[real_speech.RecordedLine], held_out_share: float,
                 seed: int) -> tuple[list[real_speech.RecordedLine], list[real_speech.RecordedLine]]:
  """(training lines, held-out lines): every line of a random `held_out_share` of the
  voices is held out (at least one voice when the share is > 0), so the held-out WER
  is on voices the head never heard."""
  voices = sorted({line.voice for line in lines})
  rng = np.random.default_rng(seed)
  count = int(round(held_out_share * len(voices)))
  if held_out_share > 0:
    count = min(max(count, 1), len(voices) - 1)
  held = set(rng.permutation(voices)[:count].tolist()) if count > 0 else set()
  return ([l for l in lines if l.voice not in held], [l for l in lines if l.voice in held])


def labelled(clips: TranscribedFrames, tokenizer: Tokenizer, targets: str = "tokens"
             ) -> TranscribedFrames:
  """`clips` with the labels of their texts (`ctc_labels`), without the clips whose
  labels cannot fit their frames (CTC needs a frame per label and a blank between two
  equal ones; logged)."""
  out = TranscribedFrames([], [], [], [])
  for features, text, voice in zip(clips.features, clips.texts, clips.voices):
    labels = ctc_labels(tokenizer, text, targets)
    repeats = int(np.sum(labels[1:] == labels[:-1]))
    if len(labels) == 0 or len(features) < len(labels) + repeats:
      continue
    out.features.append(features)
    out.texts.append(text)
    out.voices.append(voice)
    out.labels.append(labels)
  if len(out) < len(clips):
    log.warning("%d of %d clips skipped: more labels than frames", len(clips) - len(out),
                len(clips))
  return out


def encode_lines(encode: ClipEncoder, lines: Sequence[real_speech.RecordedLine], *,
                 copies: int = 0, randomization: effects.Randomization | None = None,
                 seed: int = 0, progress: bool = True, description: str = "encoding lines"
                 ) -> TranscribedFrames:
  """Each line once as recorded and `copies` more times through `randomization`
  (default `effects.Randomization()`), with silence of `SILENCE_SECONDS` either side,
  as encoder frames (unlabelled: `labelled`). A line that cannot be decoded is skipped
  (logged)."""
  settings = randomization or effects.Randomization()
  rng = np.random.default_rng(seed)
  out = TranscribedFrames([], [], [])
  skipped = 0
  for line in tqdm(lines, desc=description, disable=not progress, unit="line"):
    try:
      audio = line.audio()
    except real_audio.UNDECODABLE as error:
      log.warning("%s: %s", line.ref.relpath, error)
      skipped += 1
      continue
    for copy in range(copies + 1):
      version = audio if copy == 0 else effects.randomize(audio, rng, settings)[0]
      before, after = (int(rng.uniform(*SILENCE_SECONDS) * sf.SAMPLE_RATE) for _ in range(2))
      padded = np.concatenate([np.zeros(before, np.float32), version,
                               np.zeros(after, np.float32)])
      out.features.append(encode(padded).astype(np.float16))
      out.texts.append(line.text)
      out.voices.append(line.voice)
  if skipped:
    log.warning("%d of %d lines skipped: undecodable", skipped, len(lines))
  return out


def manifest_frames(encode: ClipEncoder, path: str | os.PathLike, *,
                    tail_seconds: float = 1.0, progress: bool = True) -> TranscribedFrames:
  """The transcribed rows of a manifest (`corpus.manifest`), each clip with
  `tail_seconds` of silence after it (a streaming transcript's last words come out once
  the next chunks arrive), as encoder frames (unlabelled: `labelled`): a quick
  greedy-WER monitor of the head on, e.g., the real DEV set (`eval --suites B2` gives the
  figure to report)."""
  report = manifest.read_manifest(path)
  out = TranscribedFrames([], [], [])
  tail = np.zeros(int(tail_seconds * sf.SAMPLE_RATE), np.float32)
  rows = [row for row in report.rows if row.transcript]
  for row in tqdm(rows, desc=f"encoding {pathlib.Path(path).name}", disable=not progress,
                  unit="clip"):
    out.features.append(encode(np.concatenate([row.load(), tail])).astype(np.float16))
    out.texts.append(row.transcript)
    out.voices.append(row.voice)
  if not len(out):
    raise ValueError(f"{path}: no rows with a transcript")
  return out


@dataclasses.dataclass(frozen=True)
class Batch:
  """features float32 [B, F, D]; frame_padding [B, F] (1 = padding); labels int32
  [B, N]; label_padding [B, N]."""

  features: np.ndarray
  frame_padding: np.ndarray
  labels: np.ndarray
  label_padding: np.ndarray


def _bucket(frames: int) -> int:
  return -(-frames // FRAME_BUCKET) * FRAME_BUCKET


def make_batch(clips: TranscribedFrames, indices: Sequence[int], frames: int,
               label_length: int) -> Batch:
  """The clips `indices` padded to `frames` frames and `label_length` labels."""
  width = clips.features[indices[0]].shape[1]
  features = np.zeros((len(indices), frames, width), np.float32)
  frame_padding = np.ones((len(indices), frames), np.float32)
  labels = np.full((len(indices), label_length), sf.PAD_ID, np.int32)
  label_padding = np.ones((len(indices), label_length), np.float32)
  for row, i in enumerate(indices):
    f, y = clips.features[i], clips.labels[i]
    features[row, :len(f)] = f
    frame_padding[row, :len(f)] = 0.0
    labels[row, :len(y)] = y
    label_padding[row, :len(y)] = 0.0
  return Batch(features, frame_padding, labels, label_padding)


def epoch_batches(clips: TranscribedFrames, frames_per_batch: int, seed: int, epoch: int
                  ) -> Iterator[Batch]:
  """One pass over `clips` in batches of about `frames_per_batch` padded frames: clips
  grouped by their length bucket (`FRAME_BUCKET`), shuffled within it, and the batches
  in a shuffled order; the same (seed, epoch) always gives the same batches."""
  rng = np.random.default_rng([seed, epoch])
  by_bucket: dict[int, list[int]] = {}
  for i, f in enumerate(clips.features):
    by_bucket.setdefault(_bucket(len(f)), []).append(i)
  plan = []
  for frames, members in sorted(by_bucket.items()):
    # One label length per bucket, whatever the batch, so each bucket compiles once.
    label_length = -(-max(len(clips.labels[i]) for i in members) // 16) * 16
    size = max(1, frames_per_batch // frames)
    order = rng.permutation(members)
    plan += [(order[s:s + size].tolist(), frames, label_length)
             for s in range(0, len(order), size)]
  for k in rng.permutation(len(plan)):
    indices, frames, label_length = plan[k]
    yield make_batch(clips, indices, frames, label_length)


def greedy_transcripts(kernel: np.ndarray, bias: np.ndarray, clips: TranscribedFrames,
                       tokenizer: Tokenizer) -> list[str]:
  """The head's greedy CTC transcript of every clip (as streaming writes it:
  `infer.transcript.collapse_ctc`, then the tokenizer's decoding)."""
  out = []
  for features in clips.features:
    labels = np.argmax(features.astype(np.float32) @ kernel + bias, axis=-1)
    tokens, _ = transcript.collapse_ctc(labels[None], np.array([transcript.BLANK_ID]))
    out.append(tokenizer.decode(tokens[0]))
  return out


def held_out_wer(kernel: np.ndarray, bias: np.ndarray, clips: TranscribedFrames,
                 tokenizer: Tokenizer) -> float:
  """Corpus WER of the head's greedy transcripts of `clips` against their texts."""
  return metrics.word_error_rate(clips.texts,
                                 greedy_transcripts(kernel, bias, clips, tokenizer)).wer


@dataclasses.dataclass
class CtcHeadFit:
  """A fitted head: `kernel` [D, V], `bias` [V] (the parameters of the step with the
  lowest held-out WER, or the last step's without a held-out set), `best_step`, and the
  fit's `history`: {step, loss[, held_out_wer][, monitor_wer]} at each evaluation."""

  kernel: np.ndarray
  bias: np.ndarray
  best_step: int
  history: list[dict[str, float]]


def fit_head(train: TranscribedFrames, held_out: TranscribedFrames | None,
             tokenizer: Tokenizer, vocab_size: int, *, steps: int = 3000,
             learning_rate: float = 2e-3, frames_per_batch: int = 16384,
             weight_decay: float = 1e-4, eval_every: int = 250, seed: int = 0,
             init: tuple[np.ndarray, np.ndarray] | None = None,
             monitor: TranscribedFrames | None = None, progress: bool = True
             ) -> CtcHeadFit:
  """Fits a linear CTC head (frames [F, D] -> logits [F, V], blank `PAD_ID`) on `train`.

  Args:
    train: encoded clips with their labels (`encode_lines`, then `labelled`).
    held_out: clips scored every `eval_every` steps by greedy WER; the best step's
      parameters are returned. None: the last step's.
    vocab_size: V, the head's outputs (the decoder's vocabulary).
    steps: Adam steps (warm-up then cosine decay of `learning_rate`), over as many
      epochs of `train` as they take.
    frames_per_batch: padded frames per batch (batch size = this // clip length).
    init: (kernel [D, V], bias [V]) to start from; None: zeros (uniform outputs).
    monitor: clips whose greedy WER is recorded at each evaluation as "monitor_wer"
      (e.g. `manifest_frames` of a dev set); it plays no part in choosing the step.
  """
  if not len(train):
    raise ValueError("no training clips to fit the CTC head on")
  width = train.features[0].shape[1]
  if init is None:
    params = {"kernel": jnp.zeros((width, vocab_size)), "bias": jnp.zeros(vocab_size)}
  else:
    params = {"kernel": jnp.asarray(init[0], jnp.float32),
              "bias": jnp.asarray(init[1], jnp.float32)}
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, learning_rate, min(200, steps // 10 + 1), steps, learning_rate * 0.05)
  optimizer = optax.adamw(schedule, weight_decay=weight_decay)
  opt_state = optimizer.init(params)

  @jax.jit
  def step(params, opt_state, features, frame_padding, labels, label_padding):
    def loss_fn(p):
      logits = features @ p["kernel"] + p["bias"]
      nll = optax.ctc_loss(logits, frame_padding, labels, label_padding, blank_id=sf.PAD_ID)
      return nll.sum() / jnp.maximum((1.0 - label_padding).sum(), 1.0)
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  def as_numpy(p):
    return np.asarray(p["kernel"], np.float32), np.asarray(p["bias"], np.float32)

  history: list[dict[str, float]] = []
  best = (np.inf, 0, as_numpy(params))
  losses: list[jax.Array] = []
  epoch, done = 0, 0
  bar = tqdm(total=steps, desc="fitting the CTC head", disable=not progress, unit="step")
  while done < steps:
    for batch in epoch_batches(train, frames_per_batch, seed, epoch):
      params, opt_state, loss = step(
          params, opt_state, batch.features, batch.frame_padding, batch.labels, batch.label_padding)
      losses.append(loss)  # read at the evaluations: no host sync per step
      done += 1
      bar.update(1)
      if done % eval_every == 0 or done == steps:
        record = {"step": done,
                  "loss": float(np.mean(jax.device_get(losses[-eval_every:])))}
        del losses[:-eval_every]
        if held_out is not None and len(held_out):
          record["held_out_wer"] = held_out_wer(*as_numpy(params), held_out, tokenizer)
          if record["held_out_wer"] < best[0]:
            best = (record["held_out_wer"], done, as_numpy(params))
        if monitor is not None:
          record["monitor_wer"] = held_out_wer(*as_numpy(params), monitor, tokenizer)
        history.append(record)
        bar.set_postfix({k: round(v, 3) for k, v in record.items() if k != "step"})
      if done == steps:
        break
    epoch += 1
  bar.close()
  if held_out is None or not len(held_out):
    best = (np.inf, steps, as_numpy(params))
  kernel, bias = best[2]
  return CtcHeadFit(kernel, bias, best[1], history)


def with_ctc_head(params: Params, kernel: np.ndarray, bias: np.ndarray) -> Params:
  """`params` with the CTC head's kernel and bias replaced (same shapes and dtypes;
  ValueError naming the mismatch otherwise)."""
  return with_dense_head(params, "ctc_head", kernel, bias)


def bundle_weights_id(bundle: str | os.PathLike) -> str:
  """What names a bundle's weights in a features cache's key: the SHA-256 of its
  params.msgpack (its folder name when it has none)."""
  params_file = pathlib.Path(bundle) / "params.msgpack"
  if not params_file.is_file():
    return pathlib.Path(bundle).name
  return hashlib.sha256(params_file.read_bytes()).hexdigest()


def fit_bundle_ctc_head(bundle: str | os.PathLike, out: str | os.PathLike, *,
                        train_audio_root: str, sources: Sequence[str] = ("amazon-queen-en",),
                        held_out_share: float = 0.05, copies: int = 1,
                        max_lines: int | None = None, steps: int = 3000,
                        learning_rate: float = 2e-3, frames_per_batch: int = 16384,
                        eval_every: int = 250, warm_start: bool = False, seed: int = 0,
                        monitor_manifest: str | os.PathLike | None = None,
                        targets: str | None = None,
                        features_cache: str | os.PathLike | None = None,
                        progress: bool = True, first_positions: str = "random"
                        ) -> dict[str, Any]:
  """Fits a bundle's CTC head (`fit_head`) on recorded lines and writes the bundle with
  it to `out` (the rest unchanged; metadata["ctc_head_fit"] = the summary).

  Args:
    bundle: a model bundle.
    train_audio_root: `fetch-train-audio`'s folder.
    sources: recorded-speech sources (`real_speech.SOURCES`) whose lines are the data;
      their text must be in the language the head should write.
    held_out_share: share of the voices held out for choosing the step.
    copies: extra versions of each training line through the corpus's effects.
    max_lines: use at most this many lines (a random subset), e.g. for a quick look.
    warm_start: start from the bundle's own head instead of zeros.
    monitor_manifest: a manifest whose transcribed clips' greedy WER is logged at each
      evaluation (`manifest_frames`; it does not choose the step).
    targets: "tokens" or "characters" (`ctc_labels`); None: the bundle's
      `data.ctc_targets`. Either decodes the same way when streaming, so the choice is
      the fit's alone.
    features_cache: a folder keeping the encoded clips (train.npz, held_out.npz,
      monitor.npz, each with what made it), so another fit of the same bundle on the
      same lines (other targets, steps or rate) skips the encoding.
    first_positions: where each line starts in the encoder's position window
      (`ClipEncoder`; "random": anywhere, as in a live transcript). The monitor's clips
      start at 0, as `eval` and `transcribe` encode a file.

  Returns:
    A summary: lines, clips, frames, voices held out, the history and best step.
  """
  config, params, tokenizer = portable.load_bundle(bundle)
  targets = targets or config.data.get("ctc_targets", "tokens")
  model = AudioInteractionModel(config)
  lines = list(real_speech.recorded_lines(train_audio_root, tuple(sources)))
  lines = seeded_subset(lines, max_lines, seed)
  train_lines, held_lines = split_voices(lines, held_out_share, seed)
  encode = FrameEncoder(model, params, first_positions=first_positions, seed=seed)
  made_by = {"params": bundle_weights_id(bundle),
             "sources": list(sources), "max_lines": max_lines, "seed": seed,
             "held_out_share": held_out_share, "first_positions": first_positions}

  def cached(name: str, how: dict[str, Any], make) -> TranscribedFrames:
    key = json.dumps(dict(made_by, part=name, **how), sort_keys=True)
    path = pathlib.Path(features_cache) / f"{name}.npz" if features_cache else None
    clips = TranscribedFrames.load(path, key) if path else None
    if clips is None:
      clips = make()
      if path:
        clips.save(path, key)
    return labelled(clips, tokenizer, targets)

  train = cached("train", {"copies": copies}, lambda: encode_lines(
      encode, train_lines, copies=copies, seed=seed, progress=progress,
      description="encoding training lines"))
  held_out = cached("held_out", {}, lambda: encode_lines(
      encode, held_lines, copies=0, seed=seed + 1, progress=progress,
      description="encoding held-out lines")) if held_lines else None
  monitor = cached("monitor", {"manifest": str(monitor_manifest)}, lambda: manifest_frames(
      FrameEncoder(model, params), monitor_manifest, progress=progress)
  ) if monitor_manifest else None
  head = params["params"]["ctc_head"]
  init = (np.asarray(head["kernel"]), np.asarray(head["bias"])) if warm_start else None
  kernel, bias = np.asarray(head["kernel"], np.float32), np.asarray(head["bias"], np.float32)
  before = {name: held_out_wer(kernel, bias, clips, tokenizer)
            for name, clips in (("held_out_wer", held_out), ("monitor_wer", monitor))
            if clips is not None}
  fit = fit_head(train, held_out, tokenizer, config.model.decoder.vocab_size, steps=steps,
                 learning_rate=learning_rate, frames_per_batch=frames_per_batch,
                 eval_every=eval_every, seed=seed, init=init, monitor=monitor,
                 progress=progress)
  summary = {"bundle": pathlib.Path(bundle).name, "sources": list(sources),
             "targets": targets, "lines": len(train_lines), "held_out_lines": len(held_lines),
             "held_out_voices": sorted({l.voice for l in held_lines}),
             "copies": copies, "train_clips": len(train), "train_frames": train.frames,
             "steps": steps, "learning_rate": learning_rate,
             "frames_per_batch": frames_per_batch, "warm_start": warm_start, "seed": seed,
             "first_positions": first_positions, "before": before,
             "monitor_manifest": str(monitor_manifest) if monitor_manifest else None,
             "best_step": fit.best_step,
             "history": fit.history}
  # The bundle says how its head now spells (what the eval's LM beam search reads).
  config.data.ctc_targets = targets
  save_fitted_bundle(bundle, out, with_ctc_head(params, fit.kernel, fit.bias), tokenizer,
                     config, "ctc_head_fit", summary)
  return summary
