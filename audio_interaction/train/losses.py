"""Losses and training metrics over the stream format ("comprehension-aware training").

Reply cross-entropy on the positions the serializer marked (`lm_weights`), and a
class-weighted cross-entropy on the decision head at `<decide>` positions: SPEAK is
rare (a few chunks per stream), so its term is weighted up. An auxiliary CTC loss
aligns the encoder's frames with the transcript of what is heard (blank = `<pad>`),
so the encoder learns words even where no reply depends on them yet, and an auxiliary
cross-entropy on the sound-event head says, chunk by chunk, which labelled sound is
heard (`corpus.serialize.sound_event_targets`), so it learns sounds the same way. Metrics are returned as
sums and counts so they add up exactly across devices, accumulation steps and
batches; `finalize_metrics` turns them into rates.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from audio_interaction.stream_format import NO_SOUND_EVENT, PAD_ID, Decision
from audio_interaction.model.layers import Array
from audio_interaction.model.model import ForwardOutputs


def ctc_loss(ctc_logits: Array, transcript: Array, chunk_segment_ids: Array,
             transcript_segment_ids: Array | None = None, num_segments: int = 1
             ) -> tuple[Array, Array]:
  """CTC negative log-likelihood of each segment's transcript under its encoder frames.

  A packed row holds several examples (segments 1..G, 0 = padding): each is its own
  CTC problem (its frames, its tokens), so no alignment crosses a segment boundary
  and the row's NLL is the sum of what each example gives in a row of its own.
  optax's CTC skips padded frames wherever they lie, so segment g is the whole row
  with every frame outside g marked as padding.

  Args:
    ctc_logits: [B, F', V] float32; F' = C * frames per chunk; class `PAD_ID` is blank.
    transcript: [B, N] int32 token ids of the row's segments one after the other,
      `PAD_ID` after the last.
    chunk_segment_ids: [B, C] int32, 0 on padding chunks (their frames are ignored).
    transcript_segment_ids: [B, N] int32 segment of each transcript token (0 on
      padding); None: one segment per row (any non-zero chunk id).
    num_segments: G, the most segments in a row (static).
  Returns:
    (nll [B] float32 per row, number of transcript tokens [B] float32).
  """
  frames_per_chunk = ctc_logits.shape[1] // chunk_segment_ids.shape[1]
  label_padding = transcript == PAD_ID
  heard = (~label_padding).sum(axis=1).astype(jnp.float32)
  if transcript_segment_ids is None:
    frame_padding = jnp.repeat(chunk_segment_ids == 0, frames_per_chunk, axis=1)
    nll = optax.ctc_loss(ctc_logits, frame_padding.astype(jnp.float32), transcript,
                         label_padding.astype(jnp.float32), blank_id=PAD_ID)
    return nll, heard
  batch, length = transcript.shape
  segment = jnp.arange(1, num_segments + 1, dtype=jnp.int32)[None, :, None]  # [1, G, 1]
  frame_segments = jnp.repeat(chunk_segment_ids, frames_per_chunk, axis=1)[:, None]
  frame_padding = frame_segments != segment  # [B, G, F']
  # Segment g's tokens are a contiguous run of the row's transcript: move it to the front.
  counts = (transcript_segment_ids[:, None] == segment).sum(-1)  # [B, G]
  offsets = jnp.cumsum(counts, axis=1) - counts
  index = offsets[..., None] + jnp.arange(length, dtype=jnp.int32)
  labels = jnp.take_along_axis(transcript[:, None], jnp.minimum(index, length - 1), axis=2)
  segment_padding = jnp.arange(length)[None, None] >= counts[..., None]  # [B, G, N]
  labels = jnp.where(segment_padding, PAD_ID, labels)
  logits = jnp.broadcast_to(ctc_logits[:, None], (batch, num_segments, *ctc_logits.shape[1:]))
  nll = optax.ctc_loss(logits.reshape(batch * num_segments, *ctc_logits.shape[1:]),
                       frame_padding.reshape(batch * num_segments, -1).astype(jnp.float32),
                       labels.reshape(batch * num_segments, length),
                       segment_padding.reshape(batch * num_segments, length).astype(jnp.float32),
                       blank_id=PAD_ID).reshape(batch, num_segments)
  # An unused segment (no frames) adds nothing.
  used = ~frame_padding.all(axis=2)
  return jnp.where(used, nll, 0.0).sum(axis=1), heard


def decision_class_weights(decision_targets: Array, speak_class_weight: float) -> Array:
  """[B, L] weight of each `<decide>` target: `speak_class_weight` for SPEAK, 1 for
  SILENT, 0 where no decision is trained (target < 0)."""
  is_speak = decision_targets == Decision.SPEAK
  return jnp.where(decision_targets >= 0, jnp.where(is_speak, speak_class_weight, 1.0), 0.0)


def loss_normalizers(batch: Mapping[str, Array], *, speak_class_weight: float,
                     ctc_weight: float = 0.0, sound_event_weight: float = 0.0,
                     sound_event_class_weights: Array | None = None) -> dict[str, Array]:
  """What each loss term is divided by, from the labels alone (never the parameters).

  Computed once over a whole batch and handed to every micro-batch's `stream_losses`,
  so summing micro-batch losses and gradients gives exactly the whole batch's, however
  unequally the micro-batches are filled (MaxText's gradient accumulation does the same).

  `sound_event_class_weights` ([K] or None: all 1) weighs each chunk's sound-event
  target by its class (`balanced_sound_event_weights`).

  Returns:
    {"reply_tokens", "decision_weight"[, "ctc_tokens"][, "sound_event_weight"]}: float32
    scalars, at least 1 ("sound_event_weight": the summed class weight of the chunks with
    a target, their count when unweighted).
  """
  norms = {
      "reply_tokens": batch["lm_weights"].astype(jnp.float32).sum(),
      "decision_weight": decision_class_weights(batch["decision_targets"],
                                                speak_class_weight).sum(),
  }
  if ctc_weight:
    norms["ctc_tokens"] = (batch["transcript"] != PAD_ID).sum().astype(jnp.float32)
  if sound_event_weight:
    norms["sound_event_weight"] = sound_event_chunk_weights(
        batch["sound_events"], sound_event_class_weights).sum()
  return {k: jnp.maximum(v, 1.0) for k, v in norms.items()}


def stream_losses(outputs: ForwardOutputs, batch: Mapping[str, Array], *,
                  reply_weight: float, decision_weight: float, speak_class_weight: float,
                  ctc_weight: float = 0.0, sound_event_weight: float = 0.0,
                  sound_event_class_weights: Array | None = None,
                  normalizers: Mapping[str, Array] | None = None,
                  num_segments: int | None = None) -> tuple[Array, dict[str, Array]]:
  """Total loss and summable metrics of one batch.

  Args:
    outputs: the model's full forward ([B, L, V], [B, L, 2] and [B, F', V] logits).
    batch: `lm_targets` int32 [B, L], `lm_weights` float32 [B, L], `decision_targets`
      int32 [B, L] (-1 where no decision is trained); with `ctc_weight` > 0 also
      `transcript` int32 [B, N] and `chunk_segment_ids` int32 [B, C], and for packed
      rows `transcript_segment_ids` int32 [B, N] (CTC per segment, `ctc_loss`); with
      `sound_event_weight` > 0 `sound_events` int32 [B, C] (-1 on padding chunks).
    reply_weight, decision_weight, ctc_weight: weights of the terms in the total; the
      CTC term is the summed NLL per transcript token; `sound_event_weight` weighs the
      sound-event head's mean cross-entropy per chunk (`sound_event_terms`), each chunk
      weighted by its class's entry of `sound_event_class_weights` ([K]; None: 1).
    speak_class_weight: weight of SPEAK targets relative to SILENT ones.
    normalizers: the denominators of the terms (`loss_normalizers` of the whole batch
      when this is one micro-batch of it); default: this batch's own.
    num_segments: G, the most examples in a packed row; None: one per row.
  Returns:
    (scalar loss, dict of sums: reply_nll, reply_tokens, reply_correct, decision_nll,
    decision_weight, decisions, tp, fp, fn, with CTC ctc_nll, ctc_tokens, and with the
    sound-event term the sums of `sound_event_terms`).
  """
  if normalizers is None:
    normalizers = loss_normalizers(batch, speak_class_weight=speak_class_weight,
                                   ctc_weight=ctc_weight, sound_event_weight=sound_event_weight,
                                   sound_event_class_weights=sound_event_class_weights)
  lm_weights = batch["lm_weights"].astype(jnp.float32)
  reply_nll = optax.softmax_cross_entropy_with_integer_labels(
      outputs.lm_logits, batch["lm_targets"])
  reply_tokens = lm_weights.sum()
  reply_loss = (reply_nll * lm_weights).sum() / normalizers["reply_tokens"]
  reply_correct = ((jnp.argmax(outputs.lm_logits, -1) == batch["lm_targets"]) * lm_weights).sum()

  targets = batch["decision_targets"]
  has_decision = targets >= 0
  safe_targets = jnp.where(has_decision, targets, 0)
  decision_nll = optax.softmax_cross_entropy_with_integer_labels(
      outputs.decision_logits, safe_targets)
  is_speak = safe_targets == Decision.SPEAK
  weights = decision_class_weights(targets, speak_class_weight)
  decision_loss = (decision_nll * weights).sum() / normalizers["decision_weight"]

  predicted_speak = jnp.argmax(outputs.decision_logits, -1) == Decision.SPEAK
  counted = lambda mask: (mask & has_decision).sum().astype(jnp.float32)
  metrics = {
      "reply_nll": (reply_nll * lm_weights).sum(),
      "reply_tokens": reply_tokens,
      "reply_correct": reply_correct,
      "decision_nll": (decision_nll * weights).sum(),
      "decision_weight": weights.sum(),
      "decisions": has_decision.sum().astype(jnp.float32),
      "tp": counted(predicted_speak & is_speak),
      "fp": counted(predicted_speak & ~is_speak),
      "fn": counted(~predicted_speak & is_speak),
  }
  total = reply_weight * reply_loss + decision_weight * decision_loss
  if ctc_weight:
    nll, heard = ctc_loss(outputs.ctc_logits, batch["transcript"], batch["chunk_segment_ids"],
                          None if num_segments is None else batch["transcript_segment_ids"],
                          num_segments=num_segments or 1)
    metrics["ctc_nll"], metrics["ctc_tokens"] = nll.sum(), heard.sum()
    total = total + ctc_weight * nll.sum() / normalizers["ctc_tokens"]
  if sound_event_weight:
    if outputs.sound_event_logits is None:
      raise ValueError("sound_event_weight > 0 but the model has no sound-event head "
                       "(model.sound_event_classes = 0)")
    sums = sound_event_terms(outputs.sound_event_logits, batch["sound_events"],
                             sound_event_class_weights)
    metrics.update(sums)
    total = total + sound_event_weight * sums["sound_event_nll"] / normalizers[
        "sound_event_weight"]
  return total, metrics


def sound_event_chunk_weights(targets: Array, class_weights: Array | None = None) -> Array:
  """[B, C] float32 weight of each chunk's sound-event target: its class's entry of
  `class_weights` ([K]; None: 1), 0 on padding chunks (target -1)."""
  valid = targets >= 0
  if class_weights is None:
    return valid.astype(jnp.float32)
  return jnp.where(valid, jnp.asarray(class_weights, jnp.float32)[jnp.where(valid, targets, 0)],
                   0.0)


def balanced_sound_event_weights(counts: np.ndarray, strength: float) -> np.ndarray:
  """Per-class weights of the sound-event loss that even out the sound classes.

  A corpus labels far more chunks with long sounds (thunder, rain, a car) than with a
  ring or a knock, and a head trained on those counts learns the long ones. Sound class
  c (1..K-1) gets (mean count of the sound classes / count_c) ** `strength` (0: no
  balancing, 1: every class the same total weight), rescaled so that the sound chunks
  keep their total weight; `NO_SOUND_EVENT` keeps 1, so the balance between "a sound"
  and "none" stays the data's. A class without chunks gets the largest weight (it
  has no targets to weigh until a corpus has it).

  Args:
    counts: [K] chunks labelled with each class id (`NO_SOUND_EVENT` at 0).
    strength: the exponent, >= 0.
  Returns:
    [K] float32 weights.
  """
  counts = np.asarray(counts, np.float64)
  if counts.ndim != 1 or counts.size < 2 or (counts < 0).any():
    raise ValueError(f"counts must be [K >= 2] non-negative chunk counts, got {counts}")
  sounds = counts[1:]
  present = sounds > 0
  weights = np.ones_like(counts)
  if present.any() and strength:
    raw = np.where(present, sounds.sum() / present.sum() / np.maximum(sounds, 1.0), 0.0)
    raw = raw ** strength
    raw = np.where(present, raw, raw.max())
    weights[1:] = raw * sounds.sum() / (raw * sounds).sum()
  return weights.astype(np.float32)


def sound_event_terms(logits: Array, targets: Array, class_weights: Array | None = None
                      ) -> dict[str, Array]:
  """Summed (class-weighted) cross-entropy and counts of the sound-event head.

  Args:
    logits: [B, C, K] float32 per chunk.
    targets: [B, C] int32: `NO_SOUND_EVENT`, a class 1..K-1, or -1 (padding: ignored).
    class_weights: [K] weight of each class's targets (`balanced_sound_event_weights`);
      None: 1.
  Returns:
    {"sound_event_nll": summed weighted NLL, "sound_event_weight": summed weight,
    "sound_event_chunks": chunks with a target, "sound_event_heard": chunks holding a
    labelled sound, "sound_event_named": of those, the ones whose top class is theirs,
    "sound_event_quiet": chunks without one, "sound_event_false": of those, the ones
    given a class}: float32 scalars.
  """
  valid = targets >= 0
  safe = jnp.where(valid, targets, NO_SOUND_EVENT)
  weights = sound_event_chunk_weights(targets, class_weights)
  nll = optax.softmax_cross_entropy_with_integer_labels(logits, safe)
  predicted = jnp.argmax(logits, -1)
  heard = valid & (targets != NO_SOUND_EVENT)
  quiet = valid & (targets == NO_SOUND_EVENT)
  count = lambda mask: mask.sum().astype(jnp.float32)
  return {"sound_event_nll": (weights * nll).sum(),
          "sound_event_weight": weights.sum(),
          "sound_event_chunks": count(valid),
          "sound_event_heard": count(heard),
          "sound_event_named": count(heard & (predicted == targets)),
          "sound_event_quiet": count(quiet),
          "sound_event_false": count(quiet & (predicted != NO_SOUND_EVENT))}


def finalize_metrics(sums: Mapping[str, float]) -> dict[str, float]:
  """Rates from summed metrics: losses per token/decision, accuracy, precision/recall/F1.

  Precision is 1 when nothing was predicted SPEAK and recall is 1 when nothing was
  to be said (no false triggers / nothing missed); F1 follows from them.
  """
  def ratio(a, b, empty):
    return float(a) / float(b) if float(b) > 0 else empty

  tp, fp, fn = (float(sums[k]) for k in ("tp", "fp", "fn"))
  precision = ratio(tp, tp + fp, 1.0)
  recall = ratio(tp, tp + fn, 1.0)
  f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
  rates = {}
  if "ctc_nll" in sums:
    rates["ctc_loss"] = ratio(sums["ctc_nll"], sums["ctc_tokens"], 0.0)
  if "sound_event_nll" in sums:
    rates["sound_event_loss"] = ratio(sums["sound_event_nll"], sums["sound_event_weight"], 0.0)
    # Of the chunks holding a labelled sound, named right; of the rest, given a class.
    rates["sound_event_recall"] = ratio(sums["sound_event_named"], sums["sound_event_heard"], 1.0)
    rates["sound_event_false_rate"] = ratio(sums["sound_event_false"],
                                            sums["sound_event_quiet"], 0.0)
  return rates | {
      "reply_loss": ratio(sums["reply_nll"], sums["reply_tokens"], 0.0),
      "token_accuracy": ratio(sums["reply_correct"], sums["reply_tokens"], 0.0),
      "decision_loss": ratio(sums["decision_nll"], sums["decision_weight"], 0.0),
      "decision_precision": precision,
      "decision_recall": recall,
      "decision_f1": f1,
  }


def add_metrics(a: Mapping[str, Array], b: Mapping[str, Array]) -> dict[str, Array]:
  """Elementwise sum of two metric dicts with the same keys."""
  return jax.tree_util.tree_map(jnp.add, dict(a), dict(b))
