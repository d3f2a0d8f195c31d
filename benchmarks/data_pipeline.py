r"""Does the data keep up? Batches/s of the Grain input pipeline over a stored split.

Standalone run on a small synthetic dataset (built once into a temp dir, ~60 MB)::

  python benchmarks/data_pipeline.py
  python benchmarks/data_pipeline.py --data_dir /tmp/ai_bench --batch_size 16 --read_threads 2
  python benchmarks/data_pipeline.py --quick   # smoke test: small split, few batches,
                                               # 3 generated examples, a 1+1-layer step

It prints one row per pipeline variant (padded, packed): batches/s, examples/s,
non-padding tokens/s and the fraction of row positions that hold data. Compare
batches/s with the train step time of the same batch size: the pipeline keeps up
if batches/s > 1 / step time.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import pathlib
import platform
import tempfile
import sys
import time
from typing import Any

from audio_interaction.data import pipeline
from audio_interaction.data import storage

# The synthetic examples are a test fixture (tests/synthetic_examples.py).
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))
from synthetic_examples import SyntheticExamples  # noqa: E402


def measure_pipeline(out_dir: str | pathlib.Path, split: str, config: pipeline.PipelineConfig,
                     num_batches: int = 40, warmup_batches: int = 5) -> dict[str, Any]:
  """Times `num_batches` batches after `warmup_batches` (thread start-up excluded).

  Args:
    out_dir: a TFDS dataset directory written by `storage.build_split`.
    split: its split to read.
    config: the pipeline; `num_epochs` should be None so the data cannot run out.
    num_batches: batches timed.
    warmup_batches: batches read before the clock starts.

  Returns:
    batches_per_s, examples_per_s, tokens_per_s (non-padding positions), fill
    (fraction of positions that are not padding), seconds.
  """
  iterator = iter(pipeline.load_dataset(out_dir, split, config, shard_index=0, shard_count=1))
  try:
    for _ in range(warmup_batches):
      next(iterator)
    examples = tokens = 0
    start = time.perf_counter()
    for _ in range(num_batches):
      batch = next(iterator)
      examples += int((batch["segment_example_index"] >= 0).sum())
      tokens += int((batch["segment_ids"] > 0).sum())
    seconds = time.perf_counter() - start
  finally:
    iterator.close()
  return {
      "batches_per_s": num_batches / seconds,
      "examples_per_s": examples / seconds,
      "tokens_per_s": tokens / seconds,
      "fill": tokens / (num_batches * config.batch_size * config.max_len),
      "seconds": seconds,
  }


def build_synthetic(out_dir: pathlib.Path, num_examples: int, chunk_samples: int,
                    max_chunks: int, num_workers: int) -> None:
  """Writes (or resumes, or reuses) a synthetic split "train" in `out_dir`."""
  generator = SyntheticExamples(chunk_samples=chunk_samples, min_chunks=4,
                                        max_chunks=max_chunks, vocab_size=1024)
  storage.build_split(out_dir, "train", num_examples, generator, seed=0,
                      num_workers=num_workers, shard_size=64, chunk_samples=chunk_samples)


def measure_generation(data_dir: pathlib.Path, num_examples: int = 28,
                       tokenizer_examples_per_task: int = 10) -> dict[str, float]:
  """Examples/s of the real corpus generator (TTS, sounds, render, serialize), one process."""
  from audio_interaction import config_lib
  from audio_interaction.corpus import build as corpus
  config = config_lib.load_config(str(config_lib.experiments_dir() / "tiny.py"),
                                  [f"data.dir={data_dir}"])
  corpus.build_tokenizer(config, examples_per_task=tokenizer_examples_per_task)
  make = corpus.CorpusExamples.from_config(config, "train")
  make(0, 0)  # engines and caches warm up once per worker process
  start = time.perf_counter()
  for index in range(1, num_examples + 1):  # 28: one pass over the 28 sub-tasks
    make(index, 0)
  seconds = time.perf_counter() - start
  return {"examples_per_s": num_examples / seconds, "seconds": seconds}


def measure_train_step(batch_size: int, max_chunks: int, max_len: int, steps: int = 5,
                       layers: int = 0) -> dict[str, float]:
  """Seconds per step of the tiny config at this row shape (synthetic batch).

  `layers` > 0 replaces the config's encoder and decoder depth (a quick smoke test).
  """
  import jax
  import numpy as np
  from audio_interaction import config_lib
  from audio_interaction.train.trainer import Trainer
  config = config_lib.load_config(
      str(config_lib.experiments_dir() / "tiny.py"),
      [f"data.batch_size={batch_size}", f"data.max_chunks={max_chunks}",
       f"data.max_len={max_len}", "data.prefetch_batches=0",
       *([f"model.encoder.num_layers={layers}", f"model.decoder.num_layers={layers}"]
         if layers else [])])
  trainer = Trainer(config)
  state = trainer.init_state(0)
  # Uniform reading: the step's cost depends on the row shape, not the abilities.
  cfg = pipeline.PipelineConfig.from_config(config, mixture=None)
  generator = SyntheticExamples(chunk_samples=cfg.chunk_samples, min_chunks=max_chunks,
                                        max_chunks=max_chunks, vocab_size=256,
                                        offline_fraction=0.0)
  source = [dict(generator(i, 0), example_index=i) for i in range(batch_size)]
  batch = next(iter(pipeline.make_dataset(source, cfg, shard_index=0, shard_count=1)))
  step = trainer.compile_train_step(pipeline.batch_spec(cfg))
  device_batch = trainer.device_batch(batch)
  state, metrics = step.fn(state, device_batch)
  jax.block_until_ready(metrics)
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    state, metrics = step.fn(state, device_batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  return {"step_s": float(np.median(times))}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data_dir", default=None, help="default: a fresh temp dir")
  parser.add_argument("--num_examples", type=int, default=256)
  parser.add_argument("--chunk_samples", type=int, default=2560, help="160 ms at 16 kHz")
  parser.add_argument("--max_chunks", type=int, default=40)
  parser.add_argument("--max_len", type=int, default=320)
  parser.add_argument("--batch_size", type=int, default=8)
  parser.add_argument("--read_threads", type=int, default=2)
  parser.add_argument("--num_batches", type=int, default=40)
  parser.add_argument("--build_workers", type=int, default=1)
  parser.add_argument("--skip_model", action="store_true",
                      help="only the Grain pipeline (no generator, no train step)")
  parser.add_argument("--quick", action="store_true",
                      help="smoke test: 48 examples of up to 16 chunks, 8 batches, 3 generated "
                           "examples, a 1+1-layer train step (figures not the README's)")
  args = parser.parse_args()
  generated, layers, steps = 28, 0, 5
  if args.quick:
    args.num_examples, args.max_chunks, args.max_len, args.num_batches = 48, 16, 128, 8
    args.batch_size = min(args.batch_size, 4)
    generated, layers, steps = 3, 1, 2
  cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
              if line.startswith("model name")), platform.processor())
  print(f"machine: {cpu}, {os.cpu_count()} cores (load {os.getloadavg()[0]:.1f} at start); "
        "figures measured side by side in this run")
  print(f"mode: {'quick (smoke test: small split, not comparable to the full run)' if args.quick else 'full'}")

  with tempfile.TemporaryDirectory() as tmp:
    out_dir = storage.dataset_dir(args.data_dir or tmp)
    start = time.perf_counter()
    build_synthetic(out_dir, args.num_examples, args.chunk_samples, args.max_chunks,
                    args.build_workers)
    print(f"dataset: {'a temp dir' if args.data_dir is None else out_dir} "
          f"({args.num_examples} examples of 4-{args.max_chunks} chunks, "
          f"{time.perf_counter() - start:.1f} s to build or reuse)")
    base = pipeline.PipelineConfig(
        batch_size=args.batch_size, max_len=args.max_len, max_chunks=args.max_chunks,
        chunk_samples=args.chunk_samples, slots_per_chunk=2, read_threads=args.read_threads)
    variants = {
        "padded": base,
        "packed(G=4)": dataclasses.replace(base, packing=True, max_segments=4),
    }
    print(f"{'pipeline':<12} {'batch':>5} {'batches/s':>10} {'examples/s':>11} "
          f"{'tokens/s':>10} {'fill':>5}")
    for name, config in variants.items():
      result = measure_pipeline(out_dir, "train", config, num_batches=args.num_batches,
                                warmup_batches=2 if args.quick else 5)
      print(f"{name:<12} {config.batch_size:>5} {result['batches_per_s']:>10.1f} "
            f"{result['examples_per_s']:>11.1f} {result['tokens_per_s']:>10.0f} "
            f"{result['fill']:>5.2f}")
      if name == "padded":
        padded_batches_per_s = result["batches_per_s"]
    if not args.skip_model:
      generation = measure_generation(pathlib.Path(tmp) / "corpus", generated,
                                      tokenizer_examples_per_task=2 if args.quick else 10)
      train = measure_train_step(args.batch_size, args.max_chunks, args.max_len, steps, layers)
      consumed = args.batch_size / train["step_s"]
      print(f"\ncorpus generation (TTS + sounds + render + serialize, 1 process): "
            f"{generation['examples_per_s']:.2f} examples/s")
      print(f"tiny{f' ({layers}+{layers} layers)' if layers else ''} train step at batch "
            f"{args.batch_size} x {args.max_chunks} chunks "
            f"({args.max_len} positions): {1000 * train['step_s']:.0f} ms "
            f"= {consumed:.1f} examples/s consumed")
      print(f"Grain (padded) feeds {padded_batches_per_s * train['step_s']:.0f}x what the step "
            f"needs; live generation would need {consumed / generation['examples_per_s']:.1f} "
            f"generator processes to keep up (so the corpus is built ahead, stored).")
    # Let Grain's iterators finalize before interpreter shutdown tears modules down.
    gc.collect()


if __name__ == "__main__":
  main()
