r"""Does the data keep up? Batches/s of the Grain input pipeline over a stored split.

Standalone run on a small synthetic dataset (built once into a temp dir, ~60 MB)::

  python benchmarks/data_pipeline.py
  python benchmarks/data_pipeline.py --data_dir /tmp/ai_bench --batch_size 16 --read_threads 2

It prints one row per pipeline variant (padded, packed): batches/s, examples/s,
non-padding tokens/s and the fraction of row positions that hold data. Compare
batches/s with the train step time of the same batch size: the pipeline keeps up
if batches/s > 1 / step time.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import pathlib
import tempfile
import time
from typing import Any

from audio_interaction.data import pipeline
from audio_interaction.data import storage


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
  generator = storage.SyntheticExamples(chunk_samples=chunk_samples, min_chunks=4,
                                        max_chunks=max_chunks, vocab_size=1024)
  storage.build_split(out_dir, "train", num_examples, generator, seed=0,
                      num_workers=num_workers, shard_size=64, chunk_samples=chunk_samples)


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
  args = parser.parse_args()

  with tempfile.TemporaryDirectory() as tmp:
    out_dir = storage.dataset_dir(args.data_dir or tmp)
    start = time.perf_counter()
    build_synthetic(out_dir, args.num_examples, args.chunk_samples, args.max_chunks,
                    args.build_workers)
    print(f"dataset: {out_dir} ({args.num_examples} examples, "
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
      result = measure_pipeline(out_dir, "train", config, num_batches=args.num_batches)
      print(f"{name:<12} {config.batch_size:>5} {result['batches_per_s']:>10.1f} "
            f"{result['examples_per_s']:>11.1f} {result['tokens_per_s']:>10.0f} "
            f"{result['fill']:>5.2f}")
    # Let Grain's iterators finalize before interpreter shutdown tears modules down.
    gc.collect()


if __name__ == "__main__":
  main()
