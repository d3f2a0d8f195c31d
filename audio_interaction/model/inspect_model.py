"""Looking at a config's model without running it: parameter counts, shapes, AOT lowering.

Pod-scale configs cannot be initialized on a laptop; `jax.eval_shape` gives their
parameter shapes, and lowering the jitted steps on abstract inputs checks that the
whole program traces, shards and has static shapes, without allocating anything.
"""

from __future__ import annotations

import dataclasses
import re
import statistics
import time

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
    cache_copy_lines: those cache-sized copies' HLO lines (first 160 characters).
  """

  entry_copies: int
  cache_copies: int
  cache_copy_bytes: int
  temp_bytes: int
  cache_copy_lines: tuple[str, ...] = ()


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
  entry = cache_bytes = 0
  lines = []
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
      lines.append(line.strip()[:160])
      size = 1
      for d in dims:
        size *= d
      cache_bytes += size * _DTYPE_BYTES.get(match.group(1), 4)
  memory = compiled.memory_analysis()
  return StepCopies(entry_copies=entry, cache_copies=len(lines), cache_copy_bytes=cache_bytes,
                    temp_bytes=int(getattr(memory, "temp_size_in_bytes", 0) or 0),
                    cache_copy_lines=tuple(lines))


# ------------------------------------------------------- cost and a roofline projection
@dataclasses.dataclass(frozen=True)
class Accelerator:
  """A device's published peak dense bf16 matmul FLOP/s and memory bandwidth (bytes/s)."""

  name: str
  peak_flops: float
  bandwidth: float


# Published specs (vendor datasheets / product pages), dense bf16 without sparsity:
# TPU v5e: 197 TFLOP/s, 819 GB/s HBM2 (Google Cloud TPU v5e documentation);
# TPU v5p: 459 TFLOP/s, 2,765 GB/s HBM2e (Google Cloud TPU v5p documentation);
# H100 SXM: 989 TFLOP/s (1,979 with sparsity), 3.35 TB/s HBM3 (NVIDIA H100 datasheet);
# A100 80GB SXM: 312 TFLOP/s, 2,039 GB/s HBM2e (NVIDIA A100 datasheet);
# L40S: 362 TFLOP/s (733 with sparsity), 864 GB/s GDDR6 (NVIDIA L40S datasheet).
ACCELERATORS = (
    Accelerator("TPU v5e", 197e12, 819e9),
    Accelerator("TPU v5p", 459e12, 2765e9),
    Accelerator("H100 SXM", 989e12, 3350e9),
    Accelerator("A100 80GB", 312e12, 2039e9),
    Accelerator("L40S", 362e12, 864e9),
)


def roofline_seconds(flops: float, bytes_accessed: float, peak_flops: float,
                     bandwidth: float) -> float:
  """A step's time if it ran at the device's peak compute or memory bandwidth, whichever
  binds: max(flops / peak, bytes / bandwidth). A lower bound, not a measurement."""
  return max(flops / peak_flops, bytes_accessed / bandwidth)


@dataclasses.dataclass(frozen=True)
class StepCost:
  """XLA's cost analysis of one lowered step (before compilation, one device)."""

  flops: float
  bytes_accessed: float

  def projected_seconds(self, device: Accelerator) -> float:
    return roofline_seconds(self.flops, self.bytes_accessed, device.peak_flops,
                            device.bandwidth)


def _cost(lowered) -> StepCost:
  cost = lowered.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  cost = cost or {}
  return StepCost(float(cost.get("flops", 0.0)), float(cost.get("bytes accessed", 0.0)))


def _proxy_loss(model: AudioInteractionModel, params, tokens, audio, slot_index):
  out = model.forward(params, tokens, audio, slot_index)
  lm = jax.nn.log_softmax(out.lm_logits, axis=-1)
  return (-jnp.mean(jnp.take_along_axis(lm, tokens[..., None], axis=-1))
          + jnp.mean(out.decision_logits) + jnp.mean(out.ctc_logits))


def step_costs(model: AudioInteractionModel, batch: int, length: int, chunks: int
               ) -> dict[str, StepCost]:
  """FLOPs and bytes of a train step and of a streaming step, from abstract shapes.

  "train": forward + backward over a batch of `batch` rows of `length` positions and
  `chunks` audio chunks (a cross-entropy proxy loss; the optimizer update, a few FLOPs
  per parameter, is not counted). "stream": one donated `perceive` at batch 1.
  Nothing is allocated or compiled, so pod-sized configs work on a laptop.
  """
  cfg = model.config
  params = jax.eval_shape(model.init, jax.random.key(0))
  tokens = jax.ShapeDtypeStruct((batch, length), jnp.int32)
  audio = jax.ShapeDtypeStruct((batch, chunks * cfg.chunk_samples), jnp.float32)
  train = jax.jit(jax.value_and_grad(
      lambda p, t, a, s: _proxy_loss(model, p, t, a, s))).lower(params, tokens, audio, tokens)
  state = jax.eval_shape(lambda: model.init_state(1))
  chunk = jax.ShapeDtypeStruct((1, cfg.chunk_samples), jnp.float32)
  stream = jax.jit(model.perceive, donate_argnums=1).lower(params, state, chunk)
  return {"train": _cost(train), "stream": _cost(stream)}


def measure_stream_step(model: AudioInteractionModel, repeats: int = 20) -> float:
  """Median seconds of the jitted, donated `perceive` on this machine (random weights)."""
  params = jax.jit(model.init)(jax.random.key(0))
  perceive = jax.jit(model.perceive, donate_argnums=1)
  state = model.init_state(1)
  chunk = jnp.zeros((1, model.config.chunk_samples), jnp.float32)
  state = jax.block_until_ready(perceive(params, state, chunk))[0]  # compiles
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    state = jax.block_until_ready(perceive(params, state, chunk))[0]
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def describe_costs(costs: dict[str, StepCost], batch: int, length: int, chunks: int,
                   cpu_stream_seconds: float | None) -> str:
  """A table: per step FLOPs and bytes (XLA), and the roofline projection per device."""
  def ms(seconds: float) -> str:
    return f"{1e3 * seconds:.3g} ms"

  train, stream = costs["train"], costs["stream"]
  lines = [
      f"train step (forward + backward, batch {batch} x {length} positions, {chunks} chunks): "
      f"{train.flops / 1e9:.4g} GFLOP, {train.bytes_accessed / 1e9:.4g} GB accessed",
      f"streaming step (perceive, batch 1, one chunk): {stream.flops / 1e6:.4g} MFLOP, "
      f"{stream.bytes_accessed / 1e6:.4g} MB accessed",
      "PROJECTION (roofline: max(FLOPs / peak, bytes / bandwidth) at the published dense "
      "bf16 peak and memory bandwidth; a lower bound, not a measurement):",
      f"  {'device':<10} {'peak TFLOP/s':>12} {'GB/s':>6} {'train step':>11} "
      f"{'stream step':>12}",
  ]
  for device in ACCELERATORS:
    lines.append(f"  {device.name:<10} {device.peak_flops / 1e12:>12.0f} "
                 f"{device.bandwidth / 1e9:>6.0f} {ms(train.projected_seconds(device)):>11} "
                 f"{ms(stream.projected_seconds(device)):>12}")
  measured = ("not measured (too large for this machine)" if cpu_stream_seconds is None
              else f"{ms(cpu_stream_seconds)} per chunk (median, random weights)")
  lines.append(f"MEASURED on this CPU: streaming step {measured}; train step: "
               "python benchmarks/train_step.py")
  return "\n".join(lines)
