"""Looking at a config's model without running it: parameter counts, shapes, AOT lowering.

Pod-scale configs cannot be initialized on a laptop; `jax.eval_shape` gives their
parameter shapes, and lowering the jitted steps on abstract inputs checks that the
whole program traces, shards and has static shapes, without allocating anything.
"""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp

from audio_interaction import stream_format as sf
from audio_interaction.model.model import AudioInteractionModel, count_params


@dataclasses.dataclass(frozen=True)
class ModelSummary:
  total_params: int
  encoder_params: int
  decoder_params: int
  forward_flops: float | None  # XLA's estimate for one example of `sequence_chunks` chunks

  def describe(self) -> str:
    flops = "n/a" if self.forward_flops is None else f"{self.forward_flops / 1e9:.2f} GFLOP"
    return (f"params {self.total_params / 1e6:.1f} M (encoder + CTC head "
            f"{self.encoder_params / 1e6:.1f} M, "
            f"decoder {self.decoder_params / 1e6:.1f} M); full forward and streaming step "
            f"lower; forward cost {flops}")


def summarize(model: AudioInteractionModel, sequence_chunks: int = 8) -> ModelSummary:
  """Counts parameters with `eval_shape` and AOT-lowers the forward and the streaming step.

  Raises whatever tracing raises if either program does not lower (shape errors,
  non-static shapes, bad sharding names).
  """
  cfg = model.config
  params = jax.eval_shape(model.init, jax.random.key(0))
  per_chunk = sf.chunk_prefix_length(cfg.slots_per_chunk) + cfg.tokens_per_chunk
  length = 16 + sequence_chunks * per_chunk
  tokens = jax.ShapeDtypeStruct((1, length), jnp.int32)
  audio = jax.ShapeDtypeStruct((1, sequence_chunks * cfg.chunk_samples), jnp.float32)
  forward = jax.jit(model.forward).lower(params, tokens, audio, tokens)
  cost = forward.cost_analysis()
  flops = None
  if cost:
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", 0.0)) or None
  state = jax.eval_shape(lambda: model.init_state(1))
  chunk = jax.ShapeDtypeStruct((1, cfg.chunk_samples), jnp.float32)
  jax.jit(model.perceive, donate_argnums=1).lower(params, state, chunk)
  return ModelSummary(
      total_params=count_params(params),
      # The CTC head reads the encoder's frames: it is counted with the encoder.
      encoder_params=count_params((params["params"]["encoder"], params["params"]["ctc_head"])),
      decoder_params=count_params(params["params"]["decoder"]),
      forward_flops=flops)


@dataclasses.dataclass(frozen=True)
class StepCopies:
  """Copies in the compiled, state-donating `perceive` (XLA's optimized HLO).

  Attributes:
    entry_copies: `copy` instructions at the top level (buffers XLA copies between
      kernels; copies inside fusions are part of a kernel's loop).
    cache_copies: `copy` instructions anywhere whose operand has a ring cache's
      dimensions in any order (a cache copied, or transposed, every step).
    cache_copy_bytes: bytes those cache-sized copies write per step.
    temp_bytes: XLA's temporary buffer size (`memory_analysis()`).
  """

  entry_copies: int
  cache_copies: int
  cache_copy_bytes: int
  temp_bytes: int


_COPY = re.compile(r"= (\w+)\[([\d,]*)\][^ ]* copy\(")
_DTYPE_BYTES = {"f32": 4, "s32": 4, "bf16": 2, "f16": 2, "s8": 1, "u32": 4, "pred": 1}


def step_copies(model: AudioInteractionModel, batch: int = 1) -> StepCopies:
  """Compiles the donated `perceive` on abstract inputs and counts its copies."""
  params = jax.eval_shape(model.init, jax.random.key(0))
  state = jax.eval_shape(lambda: model.init_state(batch))
  chunk = jax.ShapeDtypeStruct((batch, model.config.chunk_samples), jnp.float32)
  compiled = jax.jit(model.perceive, donate_argnums=1).lower(params, state, chunk).compile()
  caches = [block["attention"] for block in state.encoder["blocks"]] + list(state.decoder)
  cache_dims = {tuple(sorted(leaf.shape)) for cache in caches for leaf in cache.values()}
  entry = cache = cache_bytes = 0
  in_entry = False
  for line in compiled.as_text().splitlines():
    if line and not line.startswith(" "):
      in_entry = line.startswith("ENTRY")
    match = _COPY.search(line)
    if not match:
      continue
    entry += in_entry
    dims = tuple(int(d) for d in match.group(2).split(",") if d)
    if tuple(sorted(dims)) in cache_dims:
      cache += 1
      size = 1
      for d in dims:
        size *= d
      cache_bytes += size * _DTYPE_BYTES.get(match.group(1), 4)
  memory = compiled.memory_analysis()
  return StepCopies(entry_copies=entry, cache_copies=cache, cache_copy_bytes=cache_bytes,
                    temp_bytes=int(getattr(memory, "temp_size_in_bytes", 0) or 0))
