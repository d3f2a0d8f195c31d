"""Copying from the instruction: a pointer head over the current instruction's tokens.

A streaming instruction names what the reply must say ("Whenever you hear the word
"ten", say "heard ten"", "Tell me when you hear running water"): the reply's keyword,
sound class or count noun is a token of the instruction. A small decoder learns *when*
to reply long before it learns to carry an arbitrary word from the instruction to the
reply through its attention (session 32: late replies at the right time, with the
keyword of another stream). The copy head gives it that path directly, as a
pointer-generator does (See et al., 2017): at every position a query attends over the
text tokens of the current ``<sys> ... </sys>`` block, and the next-token distribution
is the mixture

    p(v) = (1 - g) * softmax(lm)(v) + g * sum_j attention_j [token_j = v],

with the gate g read from the same hidden state. With no instruction in view the copy
weight is 0 and the LM head's distribution is returned unchanged.

Sources: text tokens (not special, not audio slots) inside the latest instruction
block, its first `memory` tokens; a ``<sys>`` starts a new block (a changed
instruction replaces the old one). The streaming steps carry the block's keys in an
explicit `CopyMemory` (`memory` slots), so a step sees exactly the sources the full
forward sees at the same position, however long the stream has run.
"""

from __future__ import annotations

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from audio_interaction import stream_format as sf
from audio_interaction.model import layers
from audio_interaction.model.layers import Array, DType

# The gate's bias at initialisation: a copy weight of ~5 %, so a trained decoder given
# a fresh copy head starts from (almost) the distribution it had.
GATE_BIAS_INIT = -3.0


@flax.struct.dataclass
class CopyMemory:
  """The current instruction's copy sources, carried between streaming steps.

  Attributes:
    keys: [B, M, Dk] the copy keys of the block's first M source tokens.
    tokens: [B, M] int32 their token ids.
    count: [B] int32 sources written in the current block (slots >= count are stale).
    in_instruction: [B] bool: the stream is inside ``<sys> ... </sys>``.
  """

  keys: Array
  tokens: Array
  count: Array
  in_instruction: Array


def init_copy_memory(batch: int, memory: int, key_dim: int, dtype: DType = jnp.float32
                     ) -> CopyMemory:
  """An empty memory (no instruction seen yet) of `memory` slots."""
  return CopyMemory(keys=jnp.zeros((batch, memory, key_dim), dtype),
                    tokens=jnp.zeros((batch, memory), jnp.int32),
                    count=jnp.zeros((batch,), jnp.int32),
                    in_instruction=jnp.zeros((batch,), bool))


@flax.struct.dataclass
class Sources:
  """Where a run of positions reads and writes copy sources (`source_layout`).

  Attributes:
    block: [B, T] int32 ``<sys>`` tokens seen in the run up to and including each
      position (0: still the block the memory holds).
    is_source: [B, T] bool: the position is one of its block's first M text tokens.
    slot: [B, T] int32 its rank in the block (the memory slot it fills).
    count: [B] int32 the memory's count after the run.
    in_instruction: [B] bool inside an instruction after the run.
  """

  block: Array
  is_source: Array
  slot: Array
  count: Array
  in_instruction: Array


def _last_index(flags: Array) -> Array:
  """flags [B, T] bool -> [B, T] int32: the latest index <= t where flags holds, or -1."""
  index = jnp.broadcast_to(jnp.arange(flags.shape[1], dtype=jnp.int32), flags.shape)
  return jax.lax.cummax(jnp.where(flags, index, -1), axis=1)


def source_layout(tokens: Array, valid: Array, memory: CopyMemory | None,
                  memory_size: int) -> Sources:
  """Which positions of a run are copy sources, and where they go in the memory.

  Args:
    tokens: [B, T] int32 token ids of the run.
    valid: [B, T] bool; invalid positions (padding, rows that do not advance) are
      neither markers nor sources.
    memory: the state before the run (None: a sequence's start, nothing seen).
    memory_size: M, sources kept per block.
  Returns:
    `Sources`.
  """
  batch = tokens.shape[0]
  count0 = jnp.zeros((batch,), jnp.int32) if memory is None else memory.count
  inside0 = jnp.zeros((batch,), bool) if memory is None else memory.in_instruction
  opens = valid & (tokens == sf.SYS_ID)
  closes = valid & (tokens == sf.END_SYS_ID)
  last_marker = _last_index(opens | closes)
  marker_opens = jnp.take_along_axis(opens, jnp.maximum(last_marker, 0), axis=1)
  inside = jnp.where(last_marker >= 0, marker_opens, inside0[:, None])
  candidate = valid & inside & (tokens >= sf.NUM_SPECIAL_TOKENS)
  before = jnp.cumsum(candidate, axis=1, dtype=jnp.int32) - candidate
  last_open = _last_index(opens)
  # A <sys> is no candidate, so the count before it is the count up to it.
  at_open = jnp.take_along_axis(before, jnp.maximum(last_open, 0), axis=1)
  slot = jnp.where(last_open >= 0, before - at_open, count0[:, None] + before)
  total = candidate.sum(axis=1, dtype=jnp.int32)
  final_open = last_open[:, -1]
  since_open = total - at_open[:, -1]
  count = jnp.where(final_open >= 0, since_open, count0 + total)
  return Sources(block=jnp.cumsum(opens, axis=1, dtype=jnp.int32),
                 is_source=candidate & (slot < memory_size), slot=slot,
                 count=jnp.minimum(count, memory_size), in_instruction=inside[:, -1])


def sources_in_view(sources: Sources, query_index: Array) -> Array:
  """[B, Tq, T] bool: which of a run's positions a query at each of `query_index` [Tq]
  (indices into the run) copies from: sources of its own block, at or before it."""
  index = jnp.arange(sources.block.shape[1])
  query_block = sources.block[:, query_index]
  return (sources.is_source[:, None, :] & (index[None, None, :] <= query_index[None, :, None])
          & (sources.block[:, None, :] == query_block[..., None]))


def copyable_targets(tokens: Array, targets: Array, valid: Array | None = None,
                     memory_size: int = 64) -> Array:
  """Which next tokens a copy head could copy: the target is one of the sources in view.

  Args:
    tokens: [B, T] int32 a whole sequence; targets: [B, T] int32 each position's next
      token; valid: [B, T] bool (None: all).
    memory_size: M, as `decoder.copy_memory`.
  Returns:
    [B, T] bool: the target equals a source token of the position's instruction block,
    at or before it.
  """
  if valid is None:
    valid = jnp.ones(jnp.shape(tokens), bool)
  layout = source_layout(jnp.asarray(tokens), jnp.asarray(valid), None, memory_size)
  in_view = sources_in_view(layout, jnp.arange(jnp.shape(tokens)[1]))
  return (in_view & (jnp.asarray(tokens)[:, None, :] == jnp.asarray(targets)[:, :, None])).any(-1)


class InstructionCopy(nn.Module):
  """The copy head: mixes the LM head's distribution with copies of instruction tokens."""

  key_dim: int
  memory: int
  dtype: DType = jnp.float32
  param_dtype: DType = jnp.float32

  @nn.compact
  def __call__(self, lm_logits: Array, hidden: Array, tokens: Array, valid: Array,
               memory: CopyMemory | None, segment_ids: Array | None = None,
               queries_at_last: bool = False) -> tuple[Array, CopyMemory]:
    """Next-token log-probabilities with copying, and the memory after the run.

    Args:
      lm_logits: [B, Tq, V] the LM head's logits (Tq = 1 with `queries_at_last`, else T).
      hidden: [B, T, D] the final hidden state at every position of the run.
      tokens: [B, T] int32; valid: [B, T] bool.
      memory: the state before the run, or None for a whole sequence.
      segment_ids: [B, T] int32 for packed rows: no copying across segments.
      queries_at_last: only the run's last position asks (the streaming chunk step).
    Returns:
      (log-probabilities [B, Tq, V] float32, used as logits; the memory after the run).
    """
    batch, length, _ = hidden.shape
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    project = lambda name: nn.DenseGeneral(
        self.key_dim, kernel_init=layers.dense_init(("embed", "copy_key")), use_bias=False,
        name=name, **kw)
    keys = project("key")(hidden)
    query_hidden = hidden[:, -1:] if queries_at_last else hidden
    queries = project("query")(query_hidden)
    gate_logit = nn.DenseGeneral(
        1, kernel_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed", None)),
        bias_init=nn.initializers.constant(GATE_BIAS_INIT), name="gate", **kw)(
            query_hidden)[..., 0].astype(jnp.float32)

    if memory is None:
      memory = init_copy_memory(batch, self.memory, self.key_dim, keys.dtype)
    sources = source_layout(tokens, valid, memory, self.memory)
    query_index = jnp.arange(length)[-1:] if queries_at_last else jnp.arange(length)
    query_block = sources.block[:, query_index]
    # The memory's slots are in view until the run opens a new block.
    memory_visible = ((jnp.arange(self.memory)[None, None, :] < memory.count[:, None, None])
                      & (query_block[..., None] == 0))
    run_visible = sources_in_view(sources, query_index)
    if segment_ids is not None:
      run_visible &= segment_ids[:, None, :] == segment_ids[:, query_index, None]
    visible = jnp.concatenate([memory_visible, run_visible], axis=-1)
    all_keys = jnp.concatenate([memory.keys.astype(keys.dtype), keys], axis=1)
    all_tokens = jnp.concatenate([memory.tokens, tokens], axis=1)
    scores = jnp.einsum("bqk,bsk->bqs", queries, all_keys).astype(jnp.float32)
    scores = jnp.where(visible, scores * self.key_dim ** -0.5, layers.MASKED_SCORE)
    attention = jax.nn.softmax(scores, axis=-1) * visible
    vocab = lm_logits.shape[-1]
    copy = jnp.einsum("bqs,bsv->bqv", attention,
                      jax.nn.one_hot(all_tokens, vocab, dtype=jnp.float32))
    any_source = visible.any(axis=-1)

    generate = jax.nn.log_softmax(lm_logits.astype(jnp.float32), axis=-1)
    mixed = jnp.logaddexp(
        generate + jax.nn.log_sigmoid(-gate_logit)[..., None],
        jnp.where(copy > 0, jnp.log(jnp.maximum(copy, 1e-30)), -jnp.inf)
        + jax.nn.log_sigmoid(gate_logit)[..., None])
    log_probs = jnp.where(any_source[..., None], mixed, generate)

    # Only the run's last block stays; an earlier one's slots would collide with it.
    kept = sources.is_source & (sources.block == sources.block[:, -1:])
    slot = jnp.where(kept, sources.slot, self.memory)  # out of range: dropped
    rows = jnp.arange(batch)[:, None]
    updated = CopyMemory(
        keys=memory.keys.at[rows, slot].set(keys.astype(memory.keys.dtype), mode="drop"),
        tokens=memory.tokens.at[rows, slot].set(tokens, mode="drop"),
        count=sources.count, in_instruction=sources.in_instruction)
    return log_probs, updated
