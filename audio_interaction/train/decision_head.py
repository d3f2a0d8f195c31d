"""The decoder's decision head refitted over its frozen hidden states on real recordings
(`audio-interaction fit-decision-head`).

The decision head (P(SPEAK) at each chunk's `<decide>`) was trained on the synthetic
world only, and on real speech it has it backwards: on TRAIN-side real lines its
P(SPEAK) ranks chunks inside the words *above* the silence after a finished turn
(docs/real_audio_log.md, "Whether to answer"). What the decoder's hidden state at `<decide>` holds
is better than what the head reads of it: which instruction the stream runs under, and
whether speech has just ended. This module fits the head again, as a logistic
regression over that state, on recorded lines of real voices (TRAIN side,
`corpus.real_speech.recorded_lines`, the lines with an inner quiet dip), each streamed
twice: under a chat instruction (`tasks.CHAT_INSTRUCTIONS`: the speech is the user's
turn) and under a monitoring one (`tasks.MONITOR_INSTRUCTIONS`: watch for sounds that need
attention; speech in the room is not addressed to the assistant). Targets, at the chunks
of the first `after_seconds` wholly after the speech:

* chat, the whole line: SPEAK (a finished turn);
* chat, the line cut at its pause: SILENT (a turn that goes on);
* monitoring, either: SILENT (nobody asked);

and, with `speech_chunks`, chunks wholly inside the words: SILENT.

Features: the hidden state is not an output of the streaming step, but the LM head's
logits at `<decide>` are (`EngineState.next_logits`), and they are a linear image of it:
logits = hidden @ W_lm. A linear fit over the logits (kernel A [V, 2], bias b) is
therefore exactly the decision head hidden @ (W_lm @ A) + b, which needs the head's bias
(`model.decoder.decision_bias`, set by the fit). The fit is `sound_head.fit_head` with a
share of the voices held out (their ROC AUC says whether it learned turns or voices).

What it is for: the gated timer (`infer.policy="gated_timer"`,
`infer.policies.GatedTimerPolicy`) speaks at the VAD timer's firing only when this head
agrees then, so the VAD says *when* and the model *whether*; `tune` chooses θ and the
silence on the dev set. On the real-audio bundle the head tells the instruction apart perfectly
anywhere in the first 30 s of a stream, but a finished sentence from a paused one only
near the stream's start (docs/real_audio_log.md, "Whether to answer"), so the shipped point is a low
θ after the timer's own silence: the timer's turn-taking, without its replies to speech
under an instruction to watch for sounds. Alerts stay the sound-event head's
(`infer/sound_alerts.py`): no sound example is fitted here.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
import tqdm

from audio_interaction import stream_format as sf
from audio_interaction.corpus import effects, tasks
from audio_interaction.data.tokenizer import Tokenizer
from audio_interaction.export import portable
from audio_interaction.infer.engine import Engine, dequantize_params
from audio_interaction.model.model import AudioInteractionModel, Params
from audio_interaction.train import ctc_head, sound_head
from audio_interaction.train.clip_encoding import save_fitted_bundle
from audio_interaction.train.turn_head import PausedLine, paused_lines, roc_auc

CLASS_NAMES = tuple(d.name.lower() for d in sf.Decision)
SPEAK, SILENT = int(sf.Decision.SPEAK), int(sf.Decision.SILENT)
# Silence after each example's speech (s): at least `after_seconds`.
SILENCE_AFTER_SECONDS = 1.5
MODES = ("chat", "monitor")


def lm_kernel(params: Params, tie_embeddings: bool) -> np.ndarray:
  """float64 [D, V]: the LM head's map from the decoder's hidden state to its logits (the
  token table, transposed, when embeddings are tied)."""
  decoder = dequantize_params(params)["params"]["decoder"]
  if tie_embeddings:
    return np.asarray(decoder["embed"]["embedding"], np.float64).T
  return np.asarray(decoder["heads"]["lm"]["kernel"], np.float64)


def decide_logits(engine: Engine, params: Params, streams: Sequence[np.ndarray],
                  instructions: Sequence[Sequence[int]]) -> np.ndarray:
  """The LM head's logits at every chunk's `<decide>` of B streams run side by side,
  nothing written (each stream only perceives).

  Args:
    streams: B float32 [S_b] 16 kHz recordings (zero-padded to the longest, in whole chunks).
    instructions: B instructions' token ids.
  Returns:
    float32 [B, N, V], N = the longest stream's chunks.
  """
  size = engine.model.config.chunk_samples
  length = max(len(s) for s in streams)
  length += -length % size
  batch = np.stack([np.pad(np.asarray(s, np.float32), (0, length - len(s))) for s in streams])
  state = engine.init_state(params, [list(ids) for ids in instructions])
  logits = []
  for k in range(length // size):
    state, _ = engine.perceive(params, state, batch[:, k * size:(k + 1) * size])
    logits.append(np.asarray(state.next_logits, np.float32))
  return np.stack(logits, axis=1)


def line_examples(engine: Engine, params: Params, tokenizer: Tokenizer,
                  lines: Sequence[PausedLine], *, after_seconds: float = 1.0,
                  speech_chunks: int = 0, max_lead_seconds: float = 30.0, seed: int = 0,
                  effects_share: float = 0.5, batch_lines: int = 4, progress: bool = True
                  ) -> tuple[sound_head.ChunkExamples, np.ndarray]:
  """The decision examples of `lines` (each must have a `pause_cut`; module docstring).

  Each line, cut at its pause and whole, is streamed after a quiet room of 0 to
  `max_lead_seconds` (`sound_head.quiet_lead`: the stream's place in the encoder's position
  window varies), half through the corpus's per-utterance effects, under one chat and one
  monitoring instruction (drawn per line).

  Returns:
    (features [N, V] (the LM logits at `<decide>`) and targets [N] in `sf.Decision`,
    groups [N] str: "chat ended" | "chat goes on" | "monitor" | "inside": what each
    example is, for the summary's AUCs).
  """
  rng = np.random.default_rng(seed)
  inside_rng = np.random.default_rng([seed, 1])
  size = engine.model.config.chunk_samples
  chunk_seconds = engine.model.config.chunk_seconds
  silence = np.zeros(int(max(SILENCE_AFTER_SECONDS, after_seconds + chunk_seconds)
                         * sf.SAMPLE_RATE), np.float32)
  features, targets, groups = [], [], []
  starts = range(0, len(lines), batch_lines)
  for first in tqdm.tqdm(starts, desc="decision examples", leave=False, disable=not progress):
    streams, instructions, meta = [], [], []
    for line in lines[first:first + batch_lines]:
      if line.pause_cut is None:
        raise ValueError(f"a line of voice {line.voice!r} has no pause to cut at")
      audio = np.asarray(line.audio(), np.float32)
      chat = tasks.CHAT_INSTRUCTIONS[int(rng.integers(len(tasks.CHAT_INSTRUCTIONS)))]
      monitor = tasks.MONITOR_INSTRUCTIONS[int(rng.integers(len(tasks.MONITOR_INSTRUCTIONS)))]
      for ended, speech in ((False, audio[:line.pause_cut]), (True, audio)):
        lead = sound_head.quiet_lead(rng, max_lead_seconds, size)
        stream = np.concatenate([lead, speech, silence])
        start, end = len(lead), len(lead) + len(speech)
        if rng.uniform() < effects_share:
          stream, rate, _ = effects.randomize(stream, rng)
          start, end = int(round(start / rate)), int(round(end / rate))
        for mode, instruction in zip(MODES, (chat, monitor)):
          streams.append(stream)
          instructions.append(tokenizer.encode(instruction))
          meta.append((mode, ended, start, end))
    logits = decide_logits(engine, params, streams, instructions)
    for row, (mode, ended, start, end) in enumerate(meta):
      first_after = -(-end // size)
      last_after = (end + int(after_seconds * sf.SAMPLE_RATE)) // size  # exclusive
      for k in range(first_after, min(last_after, len(streams[row]) // size)):
        features.append(logits[row, k])
        speaks = mode == "chat" and ended
        targets.append(SPEAK if speaks else SILENT)
        groups.append("monitor" if mode == "monitor" else
                      "chat ended" if ended else "chat goes on")
      inside = np.arange(-(-start // size), end // size)
      if ended and speech_chunks and len(inside):
        for k in inside_rng.choice(inside, min(speech_chunks, len(inside)), replace=False):
          features.append(logits[row, k])
          targets.append(SILENT)
          groups.append("inside")
  if not features:
    raise ValueError(f"no decision examples from {len(lines)} lines")
  return (sound_head.ChunkExamples(np.asarray(features, np.float32),
                                   np.asarray(targets, np.int32)), np.asarray(groups))


def group_aucs(speak_probability: np.ndarray, groups: np.ndarray) -> dict[str, float]:
  """ROC AUC of P(SPEAK) between the "chat ended" examples and each other group's (NaN
  for a group that is absent)."""
  ended = groups == "chat ended"
  aucs = {}
  for group in ("chat goes on", "monitor", "inside"):
    other = groups == group
    keep = ended | other
    aucs[f"ended_vs_{group.replace(' ', '_')}"] = (
        roc_auc(speak_probability[keep], np.where(ended[keep], 1, 0))
        if other.any() and ended.any() else float("nan"))
  return aucs


@dataclasses.dataclass
class DecisionFit:
  """A refitted decision head: `kernel` [D, 2] and `bias` [2] in the head's layout,
  `over_logits` the same fit over the LM logits at `<decide>` (kernel [V, 2]: kernel =
  W_lm @ over_logits.kernel), `summary` what the fit did."""

  kernel: np.ndarray
  bias: np.ndarray
  over_logits: sound_head.HeadFit
  summary: dict[str, Any]


def fit_decision_head(engine: Engine, params: Params, tokenizer: Tokenizer,
                      lines: Sequence[PausedLine], *, max_lines: int | None = 800,
                      after_seconds: float = 1.0, speech_chunks: int = 2,
                      max_lead_seconds: float = 30.0, held_out_share: float = 0.2,
                      l2: float = 1e-2, steps: int = 300, seed: int = 0, progress: bool = True
                      ) -> DecisionFit:
  """Fits the decision head over the decoder's hidden states (arguments:
  `fit_bundle_decision_head`'s). The summary: lines, voices, examples, loss, the AUCs of
  `group_aucs` on the fitted and the held-out voices' lines, for the new head and the old.
  """
  if not lines:
    raise ValueError("no recorded line with a pause to cut at")
  lines = ctc_head.seeded_subset(lines, max_lines, seed)
  fitted, held = ctc_head.split_voices(lines, held_out_share, seed)
  options = dict(after_seconds=after_seconds, speech_chunks=speech_chunks,
                 max_lead_seconds=max_lead_seconds, progress=progress)
  examples, groups = line_examples(engine, params, tokenizer, fitted, seed=seed, **options)
  fit = sound_head.fit_head(examples, len(CLASS_NAMES), l2=l2, steps=steps,
                            class_names=CLASS_NAMES)
  to_hidden = lm_kernel(params, engine.model.config.decoder.tie_embeddings)
  kernel = (to_hidden @ fit.kernel.astype(np.float64)).astype(np.float32)
  old_kernel = np.asarray(dequantize_params(params)["params"]["decoder"]["heads"]["decision"]
                          ["kernel"], np.float64)
  pinv = np.linalg.pinv(to_hidden)

  def old_speak(features: np.ndarray) -> np.ndarray:
    # The old head reads the hidden state the logits came from (exact when W_lm has full
    # row rank: the summary's lm_kernel_rank == D); a bias it may have cannot move an AUC.
    logits = (features.astype(np.float64) @ pinv) @ old_kernel
    return np.asarray(jax.nn.softmax(logits, axis=-1))[:, SPEAK]

  summary: dict[str, Any] = {
      "lines": len(fitted), "voices": len({l.voice for l in fitted}),
      "after_seconds": after_seconds, "speech_chunks_per_line": speech_chunks,
      "max_lead_seconds": max_lead_seconds, "examples": int(len(examples.targets)),
      "l2": l2, "steps": steps, "seed": seed, "loss": fit.loss, "train_recall": fit.recall,
      "lm_kernel_rank": int(np.linalg.matrix_rank(to_hidden)),
      "train_auc": group_aucs(fit.probabilities(examples.features)[:, SPEAK], groups),
      "train_auc_old_head": group_aucs(old_speak(examples.features), groups)}
  if held:
    held_examples, held_groups = line_examples(engine, params, tokenizer, held,
                                               seed=seed + 1, **options)
    summary.update(
        held_out_lines=len(held), held_out_voices=len({l.voice for l in held}),
        held_out_auc=group_aucs(fit.probabilities(held_examples.features)[:, SPEAK],
                                held_groups),
        held_out_auc_old_head=group_aucs(old_speak(held_examples.features), held_groups))
  return DecisionFit(kernel, fit.bias.astype(np.float32), fit, summary)


def with_decision_head(params: Params, kernel: np.ndarray, bias: np.ndarray) -> Params:
  """`params` with the decoder's decision head set to `kernel` [D, 2] and `bias` [2] (cast
  to the kernel's dtype; ValueError naming a shape mismatch)."""
  heads = params["params"]["decoder"]["heads"]
  old = np.asarray(heads["decision"]["kernel"])
  if old.shape != np.shape(kernel) or np.shape(bias) != (old.shape[-1],):
    raise ValueError(f"decision head: the fit gives kernel {np.shape(kernel)}, bias "
                     f"{np.shape(bias)}; the model has kernel {old.shape}")
  decision = {"kernel": np.asarray(kernel).astype(old.dtype),
              "bias": np.asarray(bias).astype(old.dtype)}
  decoder = dict(params["params"]["decoder"], heads=dict(heads, decision=decision))
  return dict(params, params=dict(params["params"], decoder=decoder))


def fit_bundle_decision_head(bundle: str | os.PathLike, out: str | os.PathLike, *,
                             train_audio_root: str | os.PathLike,
                             sources: tuple[str, ...] = ("amazon-queen-en", "fillets-cs"),
                             max_lines: int | None = 800, after_seconds: float = 1.0,
                             speech_chunks: int = 2, max_lead_seconds: float = 30.0,
                             held_out_share: float = 0.2, l2: float = 1e-2, steps: int = 300,
                             seed: int = 0, progress: bool = True,
                             lines: Sequence[PausedLine] | None = None) -> dict[str, Any]:
  """Refits a bundle's decision head (`fit_decision_head`; the bias is added,
  `model.decoder.decision_bias`) and writes the bundle to `out`, its `infer` block kept
  (`tune` chooses the operating point for the new head).

  Args:
    bundle: a model bundle.
    train_audio_root: `fetch-train-audio`'s folder, read for `sources`' recorded lines.
    max_lines: at most this many of the lines that have a pause (a seeded subset).
    after_seconds: the chunks wholly within this long after the speech are examples.
    speech_chunks: chunks inside each whole line's words, SILENT.
    max_lead_seconds: the longest quiet room before a line.
    held_out_share: share of the voices whose lines only measure the fit (AUCs).
    lines: the lines themselves instead of reading `sources` (`PausedLine`s).
  Returns:
    `fit_decision_head`'s summary, with the bundle and the sources.
  """
  if lines is None:
    lines = paused_lines(train_audio_root, sources)
  config, params, tokenizer = portable.load_bundle(bundle)
  model = AudioInteractionModel(config)
  fit = fit_decision_head(
      Engine(model), params, tokenizer, lines, max_lines=max_lines,
      after_seconds=after_seconds, speech_chunks=speech_chunks,
      max_lead_seconds=max_lead_seconds, held_out_share=held_out_share, l2=l2, steps=steps,
      seed=seed, progress=progress)
  summary = {"bundle": pathlib.Path(bundle).name, "sources": list(sources), **fit.summary}
  config = ml_collections.ConfigDict(config.to_dict())
  config.model.decoder.decision_bias = True
  params = with_decision_head(params, fit.kernel, fit.bias)
  save_fitted_bundle(bundle, out, params, tokenizer, config, "decision_head_fit", summary)
  return summary
