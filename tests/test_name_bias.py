"""The name bias's two functions by hand: which logits it raises, how a name goes on."""

import jax.numpy as jnp
import numpy as np
import pytest

from audio_interaction.infer.name_bias import GOING_ON_FACTOR, NameBias

VOCAB = 64
# Class 0 is "no sound"; 1: one token; 2: three; 3 and 4 share a token (as "smoke alarm"
# and "alarm clock" share "alarm"): 3 ends with it, 4 starts with it.
NAMES = ((), (10,), (20, 21, 22), (30, 31), (31, 32))


def bias(whole: bool, once: bool = False, strength: float = 10.0, gate: float = 0.2) -> NameBias:
  return NameBias(NAMES, len(NAMES), VOCAB, strength=strength, gate=gate, once=once, whole=whole)


def decoder_logits(naming_mass: float, on: int = 10) -> jnp.ndarray:
  """[1, V] logits with `naming_mass` on token `on` and the rest on token 60."""
  logits = np.full((1, VOCAB), -40.0, np.float32)
  logits[0, on], logits[0, 60] = np.log(naming_mass), np.log(1 - naming_mass)
  return jnp.asarray(logits)


def raised(name_bias: NameBias, logits, heard, said=(), progress=None) -> dict[int, float]:
  """{token: how much the bias raised it}, and whether a name may start."""
  reply_said = np.zeros((1, VOCAB), bool)
  reply_said[0, list(said)] = True
  progress = np.zeros((1, len(NAMES)), np.int32) if progress is None else progress
  out, naming = name_bias.logits(logits, jnp.asarray([heard], jnp.float32),
                                 jnp.asarray(reply_said), jnp.asarray(progress, jnp.int32))
  delta = np.asarray(out - logits)[0]
  return {int(t): round(float(delta[t]), 4) for t in np.flatnonzero(delta)}, bool(naming[0])


HEARD = [0.0, 0.0, 0.5, 0.0, 0.0]  # class 2 heard at 0.5


def test_a_bag_of_tokens_raises_every_token_of_a_heard_name_where_the_decoder_names():
  assert raised(bias(False), decoder_logits(0.3), HEARD) == ({20: 5.0, 21: 5.0, 22: 5.0}, True)
  # Below the gate: nothing.
  assert raised(bias(False), decoder_logits(0.1), HEARD) == ({}, False)
  # Once: a said token is not raised again.
  assert raised(bias(False, once=True), decoder_logits(0.3), HEARD, said=(21,))[0] == {
      20: 5.0, 22: 5.0}


def test_a_whole_name_starts_with_its_first_token_and_goes_on_ungated():
  # Where a name may start: only first tokens (and the gate counts only first tokens).
  assert raised(bias(True), decoder_logits(0.3), HEARD) == ({20: 5.0}, True)
  assert raised(bias(True), decoder_logits(0.3, on=21), HEARD) == ({}, False)
  # Midway through class 2's name: its next token at full strength, though the decoder
  # gives no name any probability, and stronger; no name may start meanwhile.
  progress = np.array([[0, 0, 1, 0, 0]])
  going_on = 10.0 * GOING_ON_FACTOR
  assert raised(bias(True), decoder_logits(0.01), HEARD, progress=progress) == (
      {21: going_on}, False)
  progress[0, 2] = 2
  assert raised(bias(True), decoder_logits(0.01), HEARD, progress=progress)[0] == {22: going_on}
  # A started name of a class hardly heard: a nudge, not the strength.
  started_unheard = np.array([[0, 0, 0, 1, 0]])
  assert raised(bias(True), decoder_logits(0.01), HEARD, progress=started_unheard)[0] == {
      31: 0.05 * going_on}
  # Once: a name already started in this reply is not started again.
  assert raised(bias(True, once=True), decoder_logits(0.3), HEARD, said=(20,)) == ({}, True)


def test_advance_counts_a_name_through_and_forgets_it_at_its_end():
  name_bias = bias(True)

  def advance(progress, token, naming=True, own=60):
    """With the decoder's own most likely token `own` (60: no name's)."""
    return np.asarray(name_bias.advance(jnp.asarray([progress], jnp.int32),
                                        jnp.asarray([token]), jnp.asarray([naming]),
                                        decoder_logits(0.9, on=own)))[0].tolist()

  assert advance([0, 0, 0, 0, 0], 20) == [0, 0, 1, 0, 0]
  assert advance([0, 0, 1, 0, 0], 21) == [0, 0, 2, 0, 0]
  assert advance([0, 0, 2, 0, 0], 22) == [0, 0, 0, 0, 0]   # said in full
  assert advance([0, 0, 1, 0, 0], 5, naming=False) == [0, 0, 0, 0, 0]  # broken off
  assert advance([0, 0, 0, 0, 0], 20, naming=False) == [0, 0, 0, 0, 0]  # not a naming step
  # A first token the decoder chose itself is its own word ("b" of "the baby is crying").
  assert advance([0, 0, 0, 0, 0], 20, own=20) == [0, 0, 0, 0, 0]
  assert advance([0, 0, 1, 0, 0], 21, own=21) == [0, 0, 2, 0, 0]  # (a started name goes on)
  assert advance([0, 0, 0, 0, 0], 10) == [0, 0, 0, 0, 0]   # a one-token name is said at once
  # "30 31" said in full does not start "31 32": the engine passes naming=False mid-name.
  _, naming = raised(name_bias, decoder_logits(0.3, on=31), HEARD,
                     progress=np.array([[0, 0, 0, 1, 0]]))
  assert not naming
  assert advance([0, 0, 0, 1, 0], 31, naming=naming) == [0, 0, 0, 0, 0]


def test_one_name_per_class_of_a_head_is_required():
  with pytest.raises(ValueError, match="the model has 5 classes, 2 names were given"):
    NameBias(NAMES[:2], len(NAMES), VOCAB, strength=1.0, gate=0.1, once=False, whole=True)
  with pytest.raises(ValueError, match="the model has 0 classes"):
    NameBias((), 0, VOCAB, strength=1.0, gate=0.1, once=False, whole=False)
