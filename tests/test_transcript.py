"""Streaming CTC transcript: greedy decoding by hand, and chunk by chunk == full forward."""

import jax
import jax.numpy as jnp
import numpy as np

from audio_interaction.infer.engine import Engine
from audio_interaction.infer.policies import ThresholdPolicy
from audio_interaction.infer.run_stream import run_stream
from audio_interaction.infer.transcript import (
    BLANK_ID, collapse_ctc, heard_words, stable_emissions)
from audio_interaction.model.model import AudioInteractionModel
import model_testing

B = BLANK_ID


def test_collapse_merges_repeats_drops_blanks_and_carries_across_chunks():
  labels = np.asarray([[5, 5, B, 5], [B, 7, 7, 8]])
  tokens, last = collapse_ctc(labels, np.asarray([B, B]))
  assert tokens == [[5, 5], [7, 8]]
  np.testing.assert_array_equal(last, [5, 8])
  # The next chunk starts with the same label: the same emission continues.
  tokens, last = collapse_ctc(np.asarray([[5, B, B, 9], [8, 8, B, 8]]), last)
  assert tokens == [[9], [8]]
  np.testing.assert_array_equal(last, [9, 8])


def test_stable_emissions_wait_for_a_word_to_stop_changing():
  partials = [[], ["hel"], ["hello"], ["hello", "wor"], ["hello", "world"]]
  assert stable_emissions(partials, 0.5) == (("hello", 1.5), ("world", 2.5))
  assert stable_emissions([], 0.5) == ()


def test_heard_words_decodes_cumulatively():
  pieces = {1: "on", 2: "e", 3: " two"}
  decode = lambda ids: "".join(pieces[i] for i in ids)
  assert heard_words([[1], [2], [], [3]], decode, 0.16) == (
      ("one", 2 * 0.16), ("two", 4 * 0.16))


def test_streaming_transcript_equals_greedy_ctc_of_the_full_forward():
  model = AudioInteractionModel(model_testing.small_config())
  params = model.init(jax.random.key(7))
  cfg = model.config
  rng = np.random.default_rng(3)
  num_chunks = 9
  audio = (0.2 * rng.normal(size=num_chunks * cfg.chunk_samples)).astype(np.float32)
  trace = run_stream(Engine(model), params, audio, [20, 21], ThresholdPolicy(2.0))
  tokens, slots = model_testing.online_sequence(
      rng, num_chunks, cfg.slots_per_chunk, cfg.tokens_per_chunk, cfg.decoder.vocab_size)[:2]
  full = model.forward(params, jnp.asarray(tokens[None]), jnp.asarray(audio[None]),
                       jnp.asarray(slots[None]))
  # The CTC head reads the encoder only, so any token sequence gives the same frames.
  labels = np.asarray(jnp.argmax(full.ctc_logits[0], -1))
  expected, _ = collapse_ctc(labels[None], np.asarray([B]))
  heard = [t for chunk in trace.chunks for t in chunk.heard_tokens]
  assert heard == expected[0]
  assert len(heard) > 0  # a random head emits non-blank labels, so this is not vacuous
