"""Causal LM decoder over one interleaved sequence of text tokens and audio slots.

RMSNorm, RoPE, SwiGLU, grouped-query attention restricted to a sliding window, so
the ring KV cache (one buffer per layer of `window` slots plus one chunk step's
positions, see `decoder_cache_size`) bounds memory and compute per step however long
the stream runs. With `decoder.pinned_prefix` = P > 0 the stream's first P positions
(its instruction) stay in view for good: past the window a query sees them and its
last `window - P` positions, at the distances a query at `window - 1` sees (an
attention sink, `layers.pinned_window_mask`), so a model trained on sequences no
longer than the window still reads its instruction after an hour of listening. The LM
head and the fused decision head read the same final hidden state in one call.
"""

from __future__ import annotations


import flax.linen as nn
import jax.numpy as jnp

from audio_interaction import stream_format as sf
from audio_interaction.stream_format import AUDIO_SLOT_ID, NUM_DECISIONS
from audio_interaction.model import instruction_copy, layers
from audio_interaction.model.instruction_copy import CopyMemory, InstructionCopy
from audio_interaction.model.layers import Array, DType
from audio_interaction.model.model_config import ModelConfig

DecoderCache = tuple[dict[str, Array], ...]


class DecoderBlock(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, x: Array, positions: Array, valid: Array, segment_ids: Array | None,
               cache: dict[str, Array] | None):
    """x: [B, T, D] -> ([B, T, D], updated cache)."""
    cfg, dec = self.config, self.config.decoder
    kw = dict(dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype)
    h, cache = layers.Attention(
        num_heads=dec.num_heads, num_kv_heads=dec.num_kv_heads, head_dim=dec.head_dim,
        mask_fn=layers.pinned_window_mask(dec.window, dec.pinned_prefix),
        pinned=dec.pinned_prefix, pinned_horizon=dec.window - 1, rope_theta=dec.rope_theta,
        history=dec.window - 1, cache_write=cfg.cache_write, qkv_bias=dec.qkv_bias,
        name="attention", **kw)(layers.RMSNorm(cfg.norm_eps, name="attention_norm", **kw)(x),
                                positions, valid=valid, segment_ids=segment_ids, cache=cache)
    x = x + h
    x = x + layers.SwiGLU(dec.mlp_dim, name="mlp", **kw)(
        layers.RMSNorm(cfg.norm_eps, name="mlp_norm", **kw)(x))
    return layers.constrain(x, ("batch", "length", "act_embed")), cache


class FusedHeads(nn.Module):
  """LM head and decision head over one hidden state: one call, one pass."""

  config: ModelConfig

  @nn.compact
  def __call__(self, hidden: Array, embedding: Array | None = None) -> tuple[Array, Array]:
    """hidden: [B, T, D] -> (lm logits [B, T, V] float32, decision logits [B, T, NUM_DECISIONS]).

    `embedding` [V, D]: the token table, read as the LM head when embeddings are tied
    (`decoder.tie_embeddings`, Qwen2.5-0.5B's layout); None: the head's own kernel.
    """
    cfg = self.config
    kw = dict(dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype, use_bias=False)
    if embedding is None:
      lm = nn.DenseGeneral(cfg.decoder.vocab_size,
                           kernel_init=layers.dense_init(("embed", "vocab")), name="lm",
                           **kw)(hidden)
    else:
      lm = jnp.einsum("btd,vd->btv", hidden.astype(cfg.compute_dtype),
                      embedding.astype(cfg.compute_dtype))
    decision = nn.DenseGeneral(NUM_DECISIONS,
                               kernel_init=layers.dense_init(("embed", "decisions")),
                               name="decision",
                               **{**kw, "use_bias": cfg.decoder.decision_bias})(hidden)
    lm = layers.constrain(lm.astype(jnp.float32), ("batch", "length", "act_vocab"))
    return lm, decision.astype(jnp.float32)


class Decoder(nn.Module):
  """Causal LM over token embeddings with audio-slot embeddings placed at `<a>` positions."""

  config: ModelConfig

  @nn.compact
  def __call__(self, tokens: Array, audio_embeddings: Array | None, positions: Array, *,
               valid: Array | None = None, segment_ids: Array | None = None,
               cache: DecoderCache | None = None, heads_at_last: bool = False,
               copy_memory: CopyMemory | None = None
               ) -> tuple[Array, Array, DecoderCache | None, CopyMemory | None]:
    """Runs the decoder over T positions (a whole sequence, or one step after `cache`).

    Args:
      tokens: [B, T] int32 token ids; audio slots hold `<a>`.
      audio_embeddings: [B, T, D] embeddings to add at `<a>` positions (others are
        ignored), or None when the positions hold no audio.
      positions: [B, T] int32 absolute positions.
      valid: [B, T] bool; False positions (padding) are not attended to or cached.
      segment_ids: [B, T] int32 for packed rows (full-sequence mode only).
      cache: per-layer ring caches for the step mode (see `init_decoder_cache`).
      heads_at_last: compute the heads at the last position only ([B, 1, ...]); the
        streaming step needs only the `<decide>` position.
      copy_memory: the copy head's sources before these positions (step mode with
        `decoder.copy_instruction`); None: a sequence's start.
    Returns:
      (lm logits [B, T', V], decision logits [B, T', NUM_DECISIONS], new cache or None,
      the copy memory after these positions or None without a copy head), with T' = 1
      when `heads_at_last` else T. With a copy head the LM logits are the mixture's
      log-probabilities.
    """
    cfg = self.config
    if valid is None:
      valid = jnp.ones(tokens.shape, bool)
    embed = nn.Embed(cfg.decoder.vocab_size, cfg.decoder.d_model,
                     embedding_init=nn.with_logical_partitioning(
                         nn.initializers.normal(1.0), ("vocab", "embed")),
                     dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype, name="embed")
    x = embed(tokens)
    if audio_embeddings is not None:
      is_slot = (tokens == AUDIO_SLOT_ID)[..., None]
      x = x + jnp.where(is_slot, audio_embeddings.astype(x.dtype), 0)
    x = layers.constrain(x, ("batch", "length", "act_embed"))

    new_cache = []
    for i in range(cfg.decoder.num_layers):
      x, layer_cache = DecoderBlock(cfg, name=f"block{i}")(
          x, positions, valid, segment_ids, None if cache is None else cache[i])
      new_cache.append(layer_cache)
    if heads_at_last and not cfg.decoder.copy_instruction:
      x = x[:, -1:]  # only the copy head reads the hidden state of every position
    hidden = layers.RMSNorm(cfg.norm_eps, dtype=cfg.compute_dtype,
                            param_dtype=cfg.weight_dtype, name="final_norm")(x)
    lm_logits, decision_logits = FusedHeads(cfg, name="heads")(
        hidden[:, -1:] if heads_at_last else hidden,
        embed.embedding if cfg.decoder.tie_embeddings else None)
    if cfg.decoder.copy_instruction:
      # Every position's hidden state: a run's instruction tokens become copy sources
      # even when only its last position asks for the heads.
      lm_logits, copy_memory = InstructionCopy(
          cfg.decoder.head_dim, cfg.decoder.copy_memory, dtype=cfg.compute_dtype,
          param_dtype=cfg.weight_dtype, name="copy")(
              lm_logits, hidden, tokens, valid, copy_memory, segment_ids,
              queries_at_last=heads_at_last)
    else:
      copy_memory = None
    return (lm_logits, decision_logits, (None if cache is None else tuple(new_cache)),
            copy_memory)


def decoder_cache_size(config: ModelConfig) -> int:
  """Cache slots per layer: the pinned prefix's (`decoder.pinned_prefix`), plus a ring of
  `window` slots, plus a chunk step's positions less one when the step writes before it
  attends (a query sees `window - 1` positions before its own, and the step's writes
  must not evict them; `layers.ring_holds_step`)."""
  dec = config.decoder
  if config.cache_write == "after":
    return dec.pinned_prefix + dec.window
  return dec.pinned_prefix + layers.ring_size(
      dec.window - 1, sf.chunk_prefix_length(config.slots_per_chunk))


def init_copy_memory(config: ModelConfig, batch: int, dtype: DType = jnp.float32
                     ) -> CopyMemory | None:
  """The copy head's empty memory (`instruction_copy.CopyMemory`), None without one."""
  dec = config.decoder
  if not dec.copy_instruction:
    return None
  return instruction_copy.init_copy_memory(batch, dec.copy_memory, dec.head_dim, dtype)


def init_decoder_cache(config: ModelConfig, batch: int, dtype: DType = jnp.float32
                       ) -> DecoderCache:
  """Empty per-layer ring caches of `decoder_cache_size` slots (S): tuple of
  {"k","v": [B, S, K, Dh], "pos": [B, S]}."""
  dec = config.decoder
  size = decoder_cache_size(config)
  return tuple(layers.init_kv_cache(batch, size, dec.num_kv_heads, dec.head_dim, dtype)
               for _ in range(dec.num_layers))
