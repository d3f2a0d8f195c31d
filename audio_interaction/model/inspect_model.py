"""Looking at a config's model without running it: parameter counts, shapes, AOT lowering.

Pod-scale configs cannot be initialized on a laptop; `jax.eval_shape` gives their
parameter shapes, and lowering the jitted steps on abstract inputs checks that the
whole program traces, shards and has static shapes, without allocating anything.
"""

from __future__ import annotations

import dataclasses

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
