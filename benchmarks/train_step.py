r"""Train-step throughput: tokens/s, TFLOP/s and MFU, against this machine's matmul peak.

  python benchmarks/train_step.py            # tiny and base, 1 vs 8 simulated devices
  python benchmarks/train_step.py --quick    # smoke test: tiny at a short row, 1 vs 2
                                             # devices, 1+1 layers, 2 steps

Each measurement runs in its own subprocess (the simulated device count must be set
before JAX starts); the peak is a float32 matmul timed in the same run. FLOPs per
step are XLA's cost analysis of the compiled step (of one device's partition). Batches are synthetic examples in
the stream format at the config's row shape (or a shorter one for base, which is
labelled).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _child(args: argparse.Namespace) -> None:
  os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
  sys.path.insert(0, str(ROOT / "tests"))
  import jax
  import numpy as np

  from audio_interaction import config_lib
  from audio_interaction.data.pipeline import PipelineConfig, batch_spec, make_dataset
  from synthetic_examples import SyntheticExamples  # a test fixture: tests/ is on sys.path
  from audio_interaction.train.loop import measure_peak_flops
  from audio_interaction.train.trainer import Trainer

  overrides = [f"data.batch_size={args.batch}", f"data.max_chunks={args.chunks}",
               f"data.max_len={args.length}", "data.prefetch_batches=0",
               f'sharding.mesh={{"data": {args.devices}, "fsdp": 1, "tensor": 1}}']
  if args.layers:
    overrides += [f"model.encoder.num_layers={args.layers}",
                  f"model.decoder.num_layers={args.layers}"]
  config = config_lib.load_config(str(ROOT / "experiments" / f"{args.config}.py"), overrides)
  trainer = Trainer(config)
  state = trainer.init_state(0)
  # The step's cost depends on the row shape, not on which ability a row holds: read
  # the synthetic examples uniformly (the config's ability mixture would need every
  # ability among the few examples of one batch).
  pipeline = PipelineConfig.from_config(config, mixture=None)
  make = SyntheticExamples(chunk_samples=pipeline.chunk_samples, min_chunks=args.chunks,
                           max_chunks=args.chunks, vocab_size=config.model.decoder.vocab_size,
                           slots_per_chunk=config.model.slots_per_chunk,
                           tokens_per_chunk=config.model.tokens_per_chunk, offline_fraction=0.0)
  source = [dict(make(i, 0), example_index=i) for i in range(args.batch)]
  batch = next(iter(make_dataset(source, pipeline, shard_index=0, shard_count=1)))
  began = time.perf_counter()
  step = trainer.compile_train_step(batch_spec(pipeline))
  compile_s = time.perf_counter() - began
  device_batch = trainer.device_batch(batch)
  state, metrics = step.fn(state, device_batch)
  jax.block_until_ready(metrics)
  times = []
  for _ in range(args.steps):
    began = time.perf_counter()
    state, metrics = step.fn(state, device_batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - began)
  step_s = float(np.median(times))
  tokens = float(np.sum(batch["tokens"] != 0))
  print(json.dumps({
      "config": args.config + (f", {args.layers}+{args.layers} layers" if args.layers else ""),
      "devices": args.devices, "batch": args.batch,
      "chunks": args.chunks, "length": args.length, "compile_s": compile_s,
      "step_s": step_s, "tokens_per_s": tokens / step_s,
      "flops_per_step": step.flops_per_step, "peak_flops": measure_peak_flops(),
      "params": sum(x.size for x in jax.tree_util.tree_leaves(state.params))}))


def _run(config: str, devices: int, batch: int, chunks: int, length: int, steps: int,
         layers: int = 0) -> dict:
  command = [sys.executable, __file__, "--child", "--config", config, "--devices", str(devices),
             "--batch", str(batch), "--chunks", str(chunks), "--length", str(length),
             "--steps", str(steps), "--layers", str(layers)]
  result = subprocess.run(command, capture_output=True, text=True, check=False)
  if result.returncode:
    raise RuntimeError(result.stderr[-3000:])
  return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--quick", action="store_true")
  parser.add_argument("--child", action="store_true")
  parser.add_argument("--config", default="tiny")
  parser.add_argument("--devices", type=int, default=1)
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--chunks", type=int, default=64)
  parser.add_argument("--length", type=int, default=320)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--layers", type=int, default=0,
                      help="encoder and decoder layers (0: the config's)")
  args = parser.parse_args()
  if args.child:
    _child(args)
    return

  cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
              if line.startswith("model name")), platform.processor())
  print(f"machine: {cpu}, {os.cpu_count()} cores (load {os.getloadavg()[0]:.1f} at start); "
        "figures measured side by side in this run")
  if args.quick:
    # A smoke test (tests/test_benchmarks.py runs it): the same code paths with one
    # encoder and one decoder layer at a short row (compiling is most of its time),
    # so the figures are not the README's.
    print("mode: quick (smoke test; 1+1 layers, short rows: not comparable to the full run)")
    steps, layers, runs = 2, 1, [("tiny", 1, 2, 8, 64), ("tiny", 2, 4, 8, 64)]
  else:
    steps, layers, runs = 5, 0, [("tiny", 1, 4, 64, 320), ("tiny", 8, 8, 64, 320)]
    # base at the tiny row shape would not fit the time budget of a benchmark on a
    # laptop CPU: one short row per step, labelled as such.
    runs.append(("base", 1, 1, 16, 96))
  rows = [_run(config, devices, batch, chunks, length, steps, layers)
          for config, devices, batch, chunks, length in runs]
  print("\n| config | devices | batch × chunks (positions) | step | tokens/s/device | "
        "TFLOP/s/device | MFU vs measured peak | compile |")
  print("|---|---|---|---|---|---|---|---|")
  for row in rows:
    # XLA's cost analysis of the partitioned program is per device already.
    flops = row["flops_per_step"] / row["step_s"]
    print(f"| {row['config']} ({row['params'] / 1e6:.0f} M) | {row['devices']} | "
          f"{row['batch']} × {row['chunks']} ({row['length']}) | {1000 * row['step_s']:.0f} ms | "
          f"{row['tokens_per_s'] / row['devices']:.0f} | {flops / 1e12:.4f} | "
          f"{flops / row['peak_flops']:.1%} (peak {row['peak_flops'] / 1e9:.0f} GFLOP/s) | "
          f"{row['compile_s']:.0f} s |")
  one, eight = rows[0], rows[1]
  print(f"\nstep time, {eight['devices']} simulated devices (global batch {eight['batch']}) "
        f"vs 1 device (batch {one['batch']}): {eight['step_s'] / one['step_s']:.2f}x — the "
        f"{eight['devices']} 'devices' share {os.cpu_count()} cores, so this measures "
        "partitioning overhead, not speed-up.")


if __name__ == "__main__":
  main()
