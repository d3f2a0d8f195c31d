"""Loss terms against hand-computed cases."""

import jax.numpy as jnp
import numpy as np

from audio_interaction import stream_format as sf
from audio_interaction.train import losses


def test_ctc_loss_of_one_label_over_two_uniform_frames():
  # Classes {blank, a}, uniform: paths for "a" over 2 frames are aa, a_, _a -> P = 3/4.
  logits = jnp.zeros((1, 2, 2))
  a = 1
  nll, heard = losses.ctc_loss(logits, jnp.asarray([[a, sf.PAD_ID]]), jnp.asarray([[1]]))
  np.testing.assert_allclose(nll, [-np.log(0.75)], rtol=1e-5)
  np.testing.assert_array_equal(heard, [1.0])


def test_ctc_loss_ignores_padding_chunks_and_scores_empty_transcripts():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(1, 4, 5)), jnp.float32)  # 2 chunks of 2 frames
  label = jnp.asarray([[3, 4, sf.PAD_ID]])
  alone, _ = losses.ctc_loss(logits[:, :2], label, jnp.asarray([[1]]))
  # Garbage frames of a padding chunk must not change the row's loss.
  padded_logits = logits.at[:, 2:].set(100.0)
  padded, _ = losses.ctc_loss(padded_logits, label, jnp.asarray([[1, 0]]))
  np.testing.assert_allclose(padded, alone, rtol=1e-5)
  # An empty transcript: the only path is blank everywhere.
  empty, heard = losses.ctc_loss(logits, jnp.full((1, 3), sf.PAD_ID), jnp.asarray([[1, 1]]))
  log_probs = np.asarray(logits) - np.log(np.exp(np.asarray(logits)).sum(-1, keepdims=True))
  np.testing.assert_allclose(empty, [-log_probs[0, :, sf.PAD_ID].sum()], rtol=1e-5)
  np.testing.assert_array_equal(heard, [0.0])


def test_sound_event_terms_by_hand():
  # Three classes (none, a, b). Row 0: chunk targets none, a, b, padding; row 1: a.
  logits = jnp.log(jnp.asarray([[[0.5, 0.25, 0.25], [0.2, 0.6, 0.2], [0.7, 0.1, 0.2],
                                 [0.0001, 0.0001, 0.9998]],
                                [[0.1, 0.1, 0.8], [0.3, 0.3, 0.4], [0.3, 0.3, 0.4],
                                 [0.3, 0.3, 0.4]]], jnp.float32))
  targets = jnp.asarray([[0, 1, 2, -1], [1, -1, -1, -1]])
  sums = losses.sound_event_terms(logits, targets)
  want_nll = -(np.log(0.5) + np.log(0.6) + np.log(0.2) + np.log(0.1))
  np.testing.assert_allclose(sums["sound_event_nll"], want_nll, rtol=1e-5)
  assert float(sums["sound_event_chunks"]) == 4  # padding chunks are not counted
  # Heard: a (named a: right), b (named none: wrong), a (named b: wrong).
  assert float(sums["sound_event_heard"]) == 3 and float(sums["sound_event_named"]) == 1
  assert float(sums["sound_event_quiet"]) == 1 and float(sums["sound_event_false"]) == 0
  rates = losses.finalize_metrics({"reply_nll": 0.0, "reply_tokens": 0.0, "reply_correct": 0.0,
                                   "decision_nll": 0.0, "decision_weight": 0.0,
                                   "decisions": 0.0, "tp": 0.0, "fp": 0.0, "fn": 0.0,
                                   **{k: float(v) for k, v in sums.items()}})
  np.testing.assert_allclose(rates["sound_event_loss"], want_nll / 4, rtol=1e-5)
  assert float(sums["sound_event_weight"]) == 4  # unweighted: the chunk count
  assert rates["sound_event_recall"] == 1 / 3 and rates["sound_event_false_rate"] == 0.0


def test_sound_event_term_in_the_total_is_its_weighted_mean_per_chunk():
  from audio_interaction.model.model import ForwardOutputs
  rng = np.random.default_rng(1)
  batch = {"lm_targets": jnp.zeros((1, 3), jnp.int32), "lm_weights": jnp.zeros((1, 3)),
           "decision_targets": jnp.full((1, 3), -1), "sound_events": jnp.asarray([[0, 2, -1]])}
  outputs = ForwardOutputs(jnp.zeros((1, 3, 4)), jnp.zeros((1, 3, 2)), jnp.zeros((1, 2, 4)),
                           jnp.asarray(rng.normal(size=(1, 3, 3)), jnp.float32))
  kwargs = dict(reply_weight=1.0, decision_weight=1.0, speak_class_weight=4.0)
  without, _ = losses.stream_losses(outputs, batch, **kwargs)
  total, metrics = losses.stream_losses(outputs, batch, sound_event_weight=0.5, **kwargs)
  np.testing.assert_allclose(total - without, 0.5 * metrics["sound_event_nll"] / 2, rtol=1e-5)
  no_head = outputs.replace(sound_event_logits=None)
  with np.testing.assert_raises_regex(ValueError, "no sound-event head"):
    losses.stream_losses(no_head, batch, sound_event_weight=0.5, **kwargs)


def test_class_weighted_sound_event_terms_by_hand():
  # Classes (none, a, b) weighted (1, 2, 0.5); targets none, a, b and one padding chunk.
  probs = np.asarray([[[0.5, 0.25, 0.25], [0.2, 0.6, 0.2], [0.7, 0.1, 0.2], [0.1, 0.1, 0.8]]])
  targets = jnp.asarray([[0, 1, 2, -1]])
  sums = losses.sound_event_terms(jnp.log(jnp.asarray(probs, jnp.float32)), targets,
                                  jnp.asarray([1.0, 2.0, 0.5]))
  want = -(np.log(0.5) + 2 * np.log(0.6) + 0.5 * np.log(0.2))
  np.testing.assert_allclose(sums["sound_event_nll"], want, rtol=1e-5)
  np.testing.assert_allclose(sums["sound_event_weight"], 3.5)
  assert float(sums["sound_event_chunks"]) == 3  # counts stay counts
  norms = losses.loss_normalizers(
      {"lm_weights": jnp.ones((1, 2)), "decision_targets": jnp.full((1, 2), -1),
       "sound_events": targets}, speak_class_weight=4.0, sound_event_weight=1.0,
      sound_event_class_weights=jnp.asarray([1.0, 2.0, 0.5]))
  np.testing.assert_allclose(norms["sound_event_weight"], 3.5)


def test_balanced_sound_event_weights_by_hand():
  # none 100 chunks; sounds a 30, b 10, c 0 (absent): mean sound count 20.
  counts = np.array([100, 30, 10, 0])
  full = losses.balanced_sound_event_weights(counts, 1.0)
  # 20/30 and 20/10: each class then weighs 20 chunks' worth, 40 in all as before; the
  # absent class gets the largest, "none" 1.
  np.testing.assert_allclose(full, [1.0, 2 / 3, 2.0, 2.0], rtol=1e-6)
  half = losses.balanced_sound_event_weights(counts, 0.5)
  ratio = np.sqrt(3.0)  # (30 / 10) ** 0.5
  w_a = 40 / (30 + 10 * ratio)
  np.testing.assert_allclose(half, [1.0, w_a, w_a * ratio, w_a * ratio], rtol=1e-6)
  np.testing.assert_allclose(losses.balanced_sound_event_weights(counts, 0.0), 1.0)
  with np.testing.assert_raises_regex(ValueError, "non-negative"):
    losses.balanced_sound_event_weights(np.array([3, -1]), 1.0)


def test_finalize_reports_ctc_loss_per_transcript_token():
  sums = {"reply_nll": 2.0, "reply_tokens": 4.0, "reply_correct": 3.0, "decision_nll": 1.0,
          "decision_weight": 2.0, "decisions": 2.0, "tp": 1.0, "fp": 1.0, "fn": 0.0,
          "ctc_nll": 9.0, "ctc_tokens": 3.0}
  rates = losses.finalize_metrics(sums)
  assert rates["ctc_loss"] == 3.0 and rates["reply_loss"] == 0.5
  assert rates["token_accuracy"] == 0.75 and rates["decision_precision"] == 0.5
  assert rates["decision_recall"] == 1.0
