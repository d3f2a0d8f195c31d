"""The turn-end head, fitted alone over a frozen encoder (`audio-interaction fit-turn-head`).

The decision head learns *when to speak* from the corpus's turns, and on real voices it
cuts into most mid-turn pauses (docs/real_audio_log.md, "Towards real audio"). Whether a user has
finished is also in the sound of their last words (a falling or level pitch, a
lengthened last syllable, a clipped sentence); `model.turn_end_head` reads it from the
encoder, per chunk, over the mean of the chunk's frames, as the sound-event head does.

Its examples come from recorded single sentences of real voices on the TRAIN side
(`corpus.real_speech.recorded_lines`, the lines with an inner quiet dip,
`RecordedLine.pause_cut`): the line's first part, then silence, is a turn that goes on;
the whole line, then silence, a turn that has ended. The examples are the first
`chunks` chunks wholly after the speech (a random lead-in moves the chunk grid), half
of the streams through the corpus's per-utterance effects (rooms, telephone, noise).
Optionally the line's second part alone, then silence, as a turn that has ended
(`second_parts`: a short turn ends too, so how much was said no longer tells an end from
a pause by itself), chunks inside the whole line's words (`speech_chunks`: the head is read as
soon as a VAD hears a short silence, sometimes with a word's end in the chunk) and
sounds then silence (`sound_clips_per_class`: a door slam is no turn to answer) join as
turns that go on. The head is a logistic regression over those features
(`sound_head.fit_head`), fitted with a share of the voices held out, whose ROC AUC (on
the same kinds of examples) says whether it learned turn ends or voices.

What the head is for: the hybrid policy with `infer.hybrid_signal="turn_end"` speaks
once the VAD has heard a short silence and the head says the turn has ended, the
silence timer as backstop (`infer.policies.HybridPolicy`); `tune` chooses θ and the
silences on the dev set.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import tqdm
from sklearn import metrics  # librosa's dependency

from audio_interaction import stream_format as sf
from audio_interaction.audio.prosody import ProsodyEncoder
from audio_interaction.corpus import effects, real_speech, worlds
from audio_interaction.corpus.sounds import SoundBank
from audio_interaction.export import portable
from audio_interaction.infer.policies import ProsodyTurnEnd
from audio_interaction.model.model import TURN_ENDED, AudioInteractionModel
from audio_interaction.train import ctc_head, sound_head
from audio_interaction.model.clip_encoder import ChunkEncoder
from audio_interaction.train.clip_encoding import (added_dense_head, save_fitted_bundle,
                                                  with_dense_head)

TURN_GOES_ON = 1 - TURN_ENDED
CLASS_NAMES = tuple("ended" if k == TURN_ENDED else "goes on" for k in range(2))
# Silence after the speech of an example (s): more than the chunks read after it.
SILENCE_AFTER_SECONDS = 1.0
# What a fitted turn-end model reads per chunk: the encoder's mean frame (a head in the
# network) or the prosody of the speech before the chunk (`audio.prosody`, host-side).
TURN_END_FEATURES = ("encoder", "prosody")


class PausedLine(Protocol):
  """A recorded sentence with an inner quiet dip (`real_speech.RecordedLine`)."""

  voice: str
  pause_cut: int | None

  def audio(self) -> np.ndarray:
    """float32 [S] 16 kHz samples."""


def paused_lines(train_audio_root: str | os.PathLike, sources: Sequence[str]
                 ) -> list[real_speech.RecordedLine]:
  """The recorded lines of `sources` (`real_speech.recorded_lines`) that have an inner
  pause to cut at (`RecordedLine.pause_cut`)."""
  return [line for line in real_speech.recorded_lines(train_audio_root, tuple(sources))
          if line.pause_cut is not None]


def line_examples(encode: ChunkEncoder, lines: Sequence[PausedLine], *, chunks: int = 2,
                  speech_chunks: int = 0, second_parts: bool = False, seed: int = 0,
                  effects_share: float = 0.5, progress: bool = True
                  ) -> sound_head.ChunkExamples:
  """The turn-end examples of `lines` (each must have a `pause_cut`).

  Returns:
    features [N, D] float32 (`ChunkEncoder`: each chunk's mean encoder frame) and
    targets [N] (`TURN_GOES_ON` for the line cut at its pause, `TURN_ENDED` for the
    whole line): the first `chunks` chunks wholly after the speech of each; then, with
    `speech_chunks`, that many chunks wholly inside the whole line's speech (drawn at
    random), `TURN_GOES_ON`: a turn has not ended while its words go on; with
    `second_parts`, also the chunks after the line's part after its pause, alone,
    `TURN_ENDED` (a short turn that has ended).
  """
  rng = np.random.default_rng(seed)
  inside_rng = np.random.default_rng([seed, 1])  # its own stream: the rest draws the same
  size = encode.chunk_samples
  silence = np.zeros(int(SILENCE_AFTER_SECONDS * sf.SAMPLE_RATE), np.float32)
  features, targets = [], []
  for line in tqdm.tqdm(lines, desc="turn-end examples", leave=False, disable=not progress):
    if line.pause_cut is None:
      raise ValueError(f"a line of voice {line.voice!r} has no pause to cut at")
    audio = np.asarray(line.audio(), np.float32)
    # (target, speech, whether it is the whole line: only its words give inside chunks)
    turns = [(TURN_GOES_ON, audio[:line.pause_cut], False), (TURN_ENDED, audio, True)]
    if second_parts:
      turns.append((TURN_ENDED, audio[line.pause_cut:], False))
    for target, speech, whole in turns:
      lead = int(rng.uniform(0.2, 1.0) * sf.SAMPLE_RATE)
      stream = np.concatenate([np.zeros(lead, np.float32), speech, silence])
      start, end = lead, lead + len(speech)
      if rng.uniform() < effects_share:
        stream, rate, _ = effects.randomize(stream, rng)
        # A speed change moves the speech's start and end.
        start, end = int(round(start / rate)), int(round(end / rate))
      encoded = encode(stream)
      first = -(-end // size)
      for k in range(first, min(first + chunks, len(encoded))):
        features.append(encoded[k])
        targets.append(target)
      inside = np.arange(-(-start // size), end // size)
      if whole and speech_chunks and len(inside):
        for k in inside_rng.choice(inside, min(speech_chunks, len(inside)), replace=False):
          features.append(encoded[k])
          targets.append(TURN_GOES_ON)
  if not features:
    raise ValueError(f"no turn-end examples from {len(lines)} lines")
  return sound_head.ChunkExamples(np.asarray(features, np.float32),
                                  np.asarray(targets, np.int32))


def sound_examples(encode: ChunkEncoder, bank: SoundBank, per_class: int, *, chunks: int = 2,
                   seed: int = 0, effects_share: float = 0.5, progress: bool = True
                   ) -> sound_head.ChunkExamples:
  """Turns that never began: `per_class` clips of every sound class of `bank` (at most
  `sound_head.MAX_CLIP_SECONDS` each) between silences, the first `chunks` chunks wholly
  after each sound all `TURN_GOES_ON` (a door slam then silence is no turn to answer).

  Returns:
    features [N, D] float32 and targets [N].
  """
  rng = np.random.default_rng(seed)
  size = encode.chunk_samples
  silence = np.zeros(int(SILENCE_AFTER_SECONDS * sf.SAMPLE_RATE), np.float32)
  labels = [label for label in bank.labels() if label in worlds.SOUND_EVENT_LABELS]
  features = []
  for label in tqdm.tqdm(labels, desc="sounds as no turn", leave=False, disable=not progress):
    for _ in range(per_class):
      clip = bank.sample(label, rng).audio[:int(sound_head.MAX_CLIP_SECONDS * sf.SAMPLE_RATE)]
      lead = int(rng.uniform(0.2, 1.0) * sf.SAMPLE_RATE)
      stream = np.concatenate([np.zeros(lead, np.float32), np.asarray(clip, np.float32),
                               silence])
      end = lead + len(clip)
      if rng.uniform() < effects_share:
        stream, rate, _ = effects.randomize(stream, rng)
        end = int(round(end / rate))
      encoded = encode(stream)
      first = -(-end // size)
      features += list(encoded[first:first + chunks])
  if not features:  # an empty part: `ChunkExamples.concatenate` skips it
    return sound_head.ChunkExamples(np.zeros((0, 0), np.float32), np.zeros(0, np.int32))
  return sound_head.ChunkExamples(np.asarray(features, np.float32),
                                  np.full(len(features), TURN_GOES_ON, np.int32))


def roc_auc(scores: np.ndarray, targets: np.ndarray) -> float:
  """P(an ended chunk scores above one whose turn goes on); NaN without both kinds."""
  if len(np.unique(targets)) < 2:
    return float("nan")
  return float(metrics.roc_auc_score(targets == TURN_ENDED, scores))


def fit_turn_head(encode: ChunkEncoder, lines: Sequence[PausedLine], *,
                  max_lines: int | None = 1500, chunks: int = 2, speech_chunks: int = 0,
                  second_parts: bool = False,
                  sound_bank: SoundBank | None = None, sound_clips_per_class: int = 0,
                  held_out_share: float = 0.2, l2: float = 1e-2, steps: int = 300,
                  seed: int = 0, progress: bool = True, effects_share: float = 0.5
                  ) -> tuple[sound_head.HeadFit, dict[str, Any]]:
  """Fits a turn-end head over `encode`'s features (the arguments: `fit_bundle_turn_head`'s;
  `sound_bank`: where the `sound_clips_per_class` clips come from).

  Returns:
    (the fit: kernel [D, 2], bias [2] in the head's layout; a summary: lines, voices,
    examples, loss, ROC AUC on the fitted lines and on the held-out voices' lines).
  """
  if not lines:
    raise ValueError("no recorded line with a pause to cut at")
  lines = ctc_head.seeded_subset(lines, max_lines, seed)
  fitted, held = ctc_head.split_voices(lines, held_out_share, seed)
  if not 0.0 <= effects_share <= 1.0:
    raise ValueError(f"effects_share must be in [0, 1], got {effects_share}")
  examples = line_examples(encode, fitted, chunks=chunks, speech_chunks=speech_chunks,
                           second_parts=second_parts, seed=seed, progress=progress,
                           effects_share=effects_share)
  if sound_clips_per_class:
    examples = sound_head.ChunkExamples.concatenate([examples, sound_examples(
        encode, sound_bank, sound_clips_per_class, chunks=chunks, seed=seed,
        progress=progress, effects_share=effects_share)])
  fit = sound_head.fit_head(examples, len(CLASS_NAMES), l2=l2, steps=steps,
                            class_names=CLASS_NAMES)
  summary: dict[str, Any] = {
      "lines": len(fitted), "voices": len({l.voice for l in fitted}),
      "chunks_per_line": chunks, "speech_chunks_per_line": speech_chunks,
      "second_parts": second_parts, "effects_share": effects_share,
      "sound_clips_per_class": sound_clips_per_class,
      "examples": int(len(examples.targets)), "l2": l2, "steps": steps, "seed": seed,
      "loss": fit.loss, "train_recall": fit.recall,
      "train_auc": roc_auc(fit.probabilities(examples.features)[:, TURN_ENDED],
                           examples.targets)}
  if held:
    held_examples = line_examples(encode, held, chunks=chunks, speech_chunks=speech_chunks,
                                  second_parts=second_parts, seed=seed + 1, progress=progress,
                                  effects_share=effects_share)
    summary.update(held_out_lines=len(held), held_out_voices=len({l.voice for l in held}),
                   held_out_auc=roc_auc(
                       fit.probabilities(held_examples.features)[:, TURN_ENDED],
                       held_examples.targets))
  return fit, summary


def fit_bundle_turn_head(bundle: str | os.PathLike, out: str | os.PathLike, *,
                         train_audio_root: str | os.PathLike,
                         sources: tuple[str, ...] = ("amazon-queen-en", "fillets-cs"),
                         max_lines: int | None = 1500, chunks: int = 2,
                         speech_chunks: int = 0, second_parts: bool = False,
                         sound_clips_per_class: int = 0, held_out_share: float = 0.2,
                         l2: float = 1e-2, steps: int = 300,
                         seed: int = 0, progress: bool = True,
                         lines: Sequence[PausedLine] | None = None,
                         first_positions: str = "random", features: str = "encoder",
                         hybrid_gate: float = 0.0, effects_share: float = 0.5
                         ) -> dict[str, Any]:
  """Fits a bundle's turn-end head (added if it has none; `fit_turn_head`) and writes the
  bundle to `out`, with `infer.hybrid_signal="turn_end"` (its hybrid policy reads the
  head; its other `infer` settings are kept: `tune` chooses them).

  With `features="prosody"` the same fit reads `audio.prosody`'s features of each chunk
  instead of the encoder's: the network is unchanged, and the fitted model goes into
  `infer.prosody_turn_end` with `infer.hybrid_signal="prosody"` and
  `infer.hybrid_gate=hybrid_gate` (the P(SPEAK) a reply also needs).

  Args:
    bundle: a model bundle.
    train_audio_root: `fetch-train-audio`'s folder, read for `sources`' recorded lines
      (and the TRAIN sound bank's clips).
    max_lines: at most this many of the lines that have a pause (a seeded subset).
    chunks: chunks after the speech per example.
    speech_chunks: chunks inside each whole line's speech, as turns that go on
      (`line_examples`).
    second_parts: each line's part after its pause, alone, as a turn that has ended.
    sound_clips_per_class: clips of every class of the TRAIN sound bank whose
      following silence is no turn's end (`sound_examples`).
    held_out_share: share of the voices whose lines only measure the fit (AUC).
    lines: the lines themselves instead of reading `sources` (`PausedLine`s).
    first_positions: where each example starts in the encoder's position window
      (`ClipEncoder`): "random" fits a head that works anywhere in a stream.
    effects_share: the share of examples played through the corpus's per-utterance
      effects (`effects.randomize`: speed, pitch, rooms, microphones, telephone, noise)
      before they are read; the rest as recorded.
  Returns:
    `fit_turn_head`'s summary, with the bundle, the sources and whether the head was added.
  """
  if features not in TURN_END_FEATURES:
    raise ValueError(f"features must be one of {TURN_END_FEATURES}, got {features!r}")
  if not 0.0 <= hybrid_gate <= 1.0:
    raise ValueError(f"hybrid_gate must be in [0, 1], got {hybrid_gate}")
  if lines is None:
    lines = paused_lines(train_audio_root, sources)
  config, params, tokenizer = portable.load_bundle(bundle)
  head_added = features == "encoder" and not config.model.turn_end_head
  if head_added:
    config, params = added_dense_head(config, params, "turn_end_head", seed,
                                      turn_end_head=True)
  if features == "prosody":
    encode = ProsodyEncoder(sf.config_chunk_samples(config))
    described = {"features": features, "hybrid_gate": hybrid_gate}
  else:
    encode = ChunkEncoder(AudioInteractionModel(config), params,
                          first_positions=first_positions, seed=seed)
    described = {"head_added": head_added, "first_positions": first_positions}
  fit, summary = fit_turn_head(
      encode, lines, max_lines=max_lines, chunks=chunks, speech_chunks=speech_chunks,
      second_parts=second_parts,
      sound_bank=sound_head.train_sound_bank(train_audio_root) if sound_clips_per_class else None,
      sound_clips_per_class=sound_clips_per_class, held_out_share=held_out_share, l2=l2,
      steps=steps, seed=seed, progress=progress, effects_share=effects_share)
  summary = {"bundle": pathlib.Path(bundle).name, "sources": list(sources), **described,
             **summary}
  if features == "prosody":
    config.infer.hybrid_signal = "prosody"
    config.infer.prosody_turn_end = ProsodyTurnEnd(fit.kernel, fit.bias).to_block()
    config.infer.hybrid_gate = float(hybrid_gate)
    fit_key = "prosody_turn_end_fit"
  else:
    config.infer.hybrid_signal = "turn_end"
    params = with_dense_head(params, "turn_end_head", fit.kernel, fit.bias)
    fit_key = "turn_end_head_fit"
  save_fitted_bundle(bundle, out, params, tokenizer, config, fit_key, summary)
  return summary
