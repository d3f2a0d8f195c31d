"""Replies biased towards the names of the sounds the sound-event head heard.

The sound-event head names held-out sounds that its decoder answers with a few stock
names (docs/real_audio_log.md, "Naming what the head heard"). `NameBias` hands the reply the head's
words at sampling time, untrained: where the decoder is about to name a sound (it gives the
names' tokens at least `gate` of its probability), each class's name is biased up by
`strength` times how lately and how surely the class was heard
(`EngineState.heard_sounds`). The decoder says when a sound is named, the head which;
biased everywhere, the names broke the replies' other words ("breaking" for "i heard
glass breaking", README).

Two ways to bias a name:
- as a bag of tokens (`whole=False`): every token of the name, at every naming step.
  A name's pieces then come out in any order or mixed with another name's ("smcat
  meowing", "a keyboard" for "typing on a keyboard"), and sub-word pieces ("i", "a",
  "s") pull on any word.
- whole (`whole=True`): only a name's first token where a name may start; once the bias
  has started a name (at a naming step, a name's first token the decoder would not have
  chosen itself), the name's next token until it is said in full, ungated and
  `GOING_ON_FACTOR` times as strong: the decoder does not expect the rest of a name it
  did not choose. A first piece the decoder chose itself is its own word, whatever it
  shares with a name ("f" of "something fell", "b" of "the baby is crying"). Which name
  a started prefix continues is weighed by how surely each was heard.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from audio_interaction.model.layers import Array
from audio_interaction.model.model import name_token_counts

# A started name's weight: its heard probability over the largest started candidate's
# (the surest goes on at full strength), the divisor at least this much so that names
# heard only faintly are not raised to full strength, and the weight at least this much
# so that a started name heard faintly is still nudged on.
_HEARD_FLOOR = 0.05
# A started name goes on at this many times the strength: the decoder, which did not
# choose it, is sure of its own next piece ("sm" + "cat meowing" at 8 nats, `listen` on
# a generated smoke alarm); at 4 x 8 nats the name is said to its end.
GOING_ON_FACTOR = 4.0


class NameBias:
  """The bias's constant tables, and the two pure functions the engine's reply step calls.

  Attributes:
    strength: nats per unit of heard probability.
    gate: the naming probability a bias needs (first tokens in `whole` mode, all name
      tokens otherwise).
    once: a token the current reply has said is not biased again (`EngineState.reply_said`;
      in `whole` mode: a name is not started again).
    whole: names biased whole (see the module docstring).
  """

  def __init__(self, name_tokens: Sequence[Sequence[int]], classes: int, vocab: int, *,
               strength: float, gate: float, once: bool, whole: bool):
    """`name_tokens`: one token id sequence per sound-event class (() for "no sound").

    Raises:
      ValueError: not one name per class of the model's sound-event head (or no head).
    """
    if not classes or len(name_tokens) != classes:
      raise ValueError(
          f"infer.sound_name_bias needs a sound-event head and the name tokens of each of its "
          f"classes: the model has {classes} classes, {len(name_tokens)} names were given")
    self.strength, self.gate, self.once, self.whole = strength, gate, once, whole
    longest = max(len(name) for name in name_tokens)
    # [K, longest + 1] the names' ids, -1 past each end (so a finished name matches no token).
    sequences = np.full((classes, longest + 1), -1, np.int32)
    for label, name in enumerate(name_tokens):
      sequences[label, :len(name)] = name
    self.sequences = jnp.asarray(sequences)
    self.lengths = jnp.asarray([len(name) for name in name_tokens], jnp.int32)
    if whole:
      firsts = [name[:1] for name in name_tokens]
      self.matrix = jnp.asarray((name_token_counts(firsts, vocab) > 0).astype(np.float32))
    else:
      self.matrix = jnp.asarray((name_token_counts(name_tokens, vocab) > 0).astype(np.float32))
    self.is_name_token = jnp.max(self.matrix, axis=0) > 0   # [V] what the gate sums

  def logits(self, next_logits: Array, heard_sounds: Array, reply_said: Array,
             name_progress: Array) -> tuple[Array, Array]:
    """The biased logits [B, V], and whether a name may start at this step [B] bool
    (`advance`'s `naming`: the decoder is naming a sound, and no name is under way).

    Args:
      next_logits: [B, V] the decoder's logits of the next reply token.
      heard_sounds: [B, K] per class, the lately heard probability.
      reply_said: [B, V] bool tokens the current reply has said.
      name_progress: [B, K] int32 how many tokens of each name the reply has just said
        (0: none), `advance`'s count.
    """
    vocab = next_logits.shape[-1]
    naming = jnp.sum(jnp.where(self.is_name_token, jax.nn.softmax(next_logits, -1), 0.0),
                     axis=-1) >= self.gate
    start = self.strength * (heard_sounds @ self.matrix)
    if self.once:
      start = jnp.where(reply_said, 0.0, start)
    bias = jnp.where(naming[:, None], start, 0.0)
    if not self.whole:
      return next_logits + bias, naming
    started = name_progress > 0
    candidates = jnp.where(started, heard_sounds, 0.0)
    weights = candidates / jnp.maximum(jnp.max(candidates, -1, keepdims=True), _HEARD_FLOOR)
    weights = jnp.where(started, jnp.maximum(weights, _HEARD_FLOOR), 0.0)
    next_ids = self._next_ids(name_progress)
    going_on = GOING_ON_FACTOR * self.strength * jnp.sum(
        weights[..., None] * jax.nn.one_hot(next_ids, vocab), 1)
    in_name = jnp.any(started, axis=-1)
    # A name said in full is not the start of another ("smoke alarm" + "clock").
    return next_logits + jnp.where(in_name[:, None], going_on, bias), naming & ~in_name

  def advance(self, name_progress: Array, token: Array, naming: Array,
              decoder_logits: Array) -> Array:
    """`name_progress` [B, K] after the reply wrote `token` [B] at a step that was
    `naming` [B] or not, where the decoder's own logits were `decoder_logits` [B, V]: a
    name goes on where the token is its next one, starts where the bias chose its first
    token at a naming step (the decoder's own most likely token was another), and is
    forgotten once said in full."""
    next_ids = self._next_ids(name_progress)
    goes_on = (name_progress > 0) & (next_ids == token[:, None])
    by_bias = naming & (token != jnp.argmax(decoder_logits, axis=-1))
    starts = by_bias[:, None] & (self.sequences[None, :, 0] == token[:, None])
    progress = jnp.where(goes_on, name_progress + 1, jnp.where(starts, 1, 0))
    return jnp.where(progress >= self.lengths[None], 0, progress).astype(jnp.int32)

  def _next_ids(self, name_progress: Array) -> Array:
    """[B, K] each class's name token after the `name_progress` [B, K] said so far."""
    return jnp.take_along_axis(self.sequences[None], name_progress[..., None], axis=-1)[..., 0]
