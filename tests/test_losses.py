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


def test_finalize_reports_ctc_loss_per_transcript_token():
  sums = {"reply_nll": 2.0, "reply_tokens": 4.0, "reply_correct": 3.0, "decision_nll": 1.0,
          "decision_weight": 2.0, "decisions": 2.0, "tp": 1.0, "fp": 1.0, "fn": 0.0,
          "ctc_nll": 9.0, "ctc_tokens": 3.0}
  rates = losses.finalize_metrics(sums)
  assert rates["ctc_loss"] == 3.0 and rates["reply_loss"] == 0.5
  assert rates["token_accuracy"] == 0.75 and rates["decision_precision"] == 0.5
  assert rates["decision_recall"] == 1.0
