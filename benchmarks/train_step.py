r"""Train-step throughput: tokens/s, TFLOP/s and MFU, against this machine's matmul peak.

  python benchmarks/train_step.py            # all sections below
  python benchmarks/train_step.py --sections packing --corpus /tmp/corpus
  python benchmarks/train_step.py --quick    # smoke test: 1+1 layers, short rows, 2 steps
  python benchmarks/train_step.py --sections host [--baseline-tree ../older_checkout]
  python benchmarks/train_step.py --sections xla

Sections (`--sections`):

* scaling: tiny 1 vs 8 simulated devices, and base at a short row; batches are
  synthetic full-length streams at the config's row shape.
* host: the same tiny step under glibc's malloc, under tcmalloc, and under tcmalloc
  on one simulated device per core (what `audio-interaction train` runs,
  `apps/cpu_host.py`), children in turns; with `--baseline-tree`, first another
  checkout's own code (e.g. a git worktree of an older commit) under glibc on one device,
  what the rest is compared with.
* xla: the step as `train` runs it under XLA:CPU options (`XLA_CPU_OPTIONS`: XNNPACK,
  the classic runtime, fast math, fusion emitters), each against none, children in turns.
* copy: the tiny step with the copy head (`model.decoder.copy_instruction`) against
  without, in one child, timed in turns.
* sounds: the same with the sound-event head, and with its classes' names fed to the
  decoder (`model.sound_event_feed_names`), against neither.
* packing: useful (non-padding) tokens/s of padded vs packed rows of the tiny config
  on a real length distribution: a corpus split (`--corpus`, default data/tiny; e.g.
  ``audio-interaction build-data --config experiments/tiny.py
  --config.data.dir=/tmp/corpus --split train --num-examples 200``), or without one
  tests/synthetic_examples.py's lengths (the output says which).

Each measurement runs in its own subprocess (the simulated device count must be set
before JAX starts, and a preloaded allocator before the process starts), under
tcmalloc unless the section says otherwise; the peak is a float32 matmul timed in the same run. FLOPs per
step are XLA's cost analysis of the compiled step (of one device's partition).
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

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent


# Config overrides of the variants a child measures side by side (`--variants`).
VARIANTS = {
    "padded": ["data.packing=False"],
    "packed": ["data.packing=True"],
    # bfloat16 activations and matmul inputs (issue 13.5: this CPU has avx512_bf16).
    "bf16": ["data.packing=False", "model.dtype=bfloat16"],
    # The copy head over the instruction (`decoder.copy_instruction`).
    "copy": ["data.packing=False", "model.decoder.copy_instruction=True"],
    # The sound-event head on the encoder, and with it the decoder hearing each class as
    # its name's words (`model.sound_event_feed_names`).
    "sound_head": ["data.packing=False", "model.sound_event_classes=27",
                   "train.sound_event_loss_weight=1.0"],
    "sound_names": ["data.packing=False", "model.sound_event_classes=27",
                    "train.sound_event_loss_weight=1.0", "model.sound_event_feed_names=True"],
}


def _child(args: argparse.Namespace) -> None:
  """Compiles one train step per variant, then times them in turns (so load on the
  machine hits every variant alike); prints one JSON line, a list of results."""
  os.environ["XLA_FLAGS"] = " ".join(
      [f"--xla_force_host_platform_device_count={args.devices}", *args.xla_flags.split()])
  import jax
  import numpy as np

  from audio_interaction import config_lib
  from audio_interaction.apps import cpu_host
  from audio_interaction.data.pipeline import PipelineConfig, batch_spec
  from audio_interaction.data.tokenizer import ByteTokenizer
  from audio_interaction.train import sound_names
  from audio_interaction.train.loop import measure_peak_flops
  from audio_interaction.train.trainer import Trainer

  overrides = [f"data.batch_size={args.batch}", f"data.max_chunks={args.chunks}",
               f"data.max_len={args.length}", "data.prefetch_batches=0",
               f'sharding.mesh={{"data": {args.devices}, "fsdp": 1, "tensor": 1}}']
  if args.layers:
    overrides += [f"model.encoder.num_layers={args.layers}",
                  f"model.decoder.num_layers={args.layers}"]
  runs = []
  for variant in args.variants.split(","):
    config = config_lib.load_config(str(ROOT / "experiments" / f"{args.config}.py"),
                                     overrides + VARIANTS[variant])
    # The names' ids, as the train loop fills them (their cost does not depend on which).
    config = sound_names.with_sound_name_tokens(config, ByteTokenizer())
    trainer = Trainer(config)
    batches = _batches(args, config)
    began = time.perf_counter()
    step = trainer.compile_train_step(batch_spec(PipelineConfig.from_config(config)))
    compile_s = time.perf_counter() - began
    device_batches = [trainer.device_batch(batch) for batch in batches[:args.steps]]
    state, metrics = step.fn(trainer.init_state(0), device_batches[0])
    jax.block_until_ready(metrics)
    runs.append(dict(variant=variant, step=step, state=state, batches=batches,
                     device_batches=device_batches, compile_s=compile_s, times=[]))
  for i in range(args.steps):
    for run in runs:
      began = time.perf_counter()
      run["state"], metrics = run["step"].fn(
          run["state"], run["device_batches"][i % len(run["device_batches"])])
      jax.block_until_ready(metrics)
      run["times"].append(time.perf_counter() - began)
  peak = measure_peak_flops()
  results = []
  for run in runs:
    batches, times = run["batches"], run["times"]
    # Useful tokens: positions that hold an example (not padding), per batch read.
    useful = float(np.mean([np.sum(batch["tokens"] != 0) for batch in batches]))
    step_s = float(np.median(times))
    results.append({
        "config": args.config + (f", {args.layers}+{args.layers} layers" if args.layers else ""),
        "variant": run["variant"], "devices": args.devices, "batch": args.batch,
        "data": args.data, "chunks": args.chunks, "length": args.length,
        "compile_s": run["compile_s"], "step_s": step_s, "tokens_per_s": useful / step_s,
        "fill": useful / (args.batch * args.length),
        "chunk_fill": float(np.mean([np.mean(b["chunk_segment_ids"] > 0) for b in batches])),
        "examples_per_batch": float(np.mean([np.sum(b["segment_example_index"] >= 0)
                                             for b in batches])),
        "flops_per_step": run["step"].flops_per_step, "peak_flops": peak,
        "params": sum(x.size for x in jax.tree_util.tree_leaves(run["state"].params)),
        "allocator": cpu_host.active()})
  print(json.dumps(results))


def _batches(args: argparse.Namespace, config) -> list[dict]:
  """The batches to time: `args.data` = "fixed" (one batch of full-length synthetic
  streams, reused), "synthetic" (tests/synthetic_examples.py's length distribution,
  1..max_chunks chunks, 20 % offline) or "corpus" (a split the corpus builder wrote,
  read with the config's ability mixture)."""
  sys.path.insert(0, str(ROOT / "tests"))
  from synthetic_examples import SyntheticExamples  # a test fixture: tests/ is on sys.path
  from audio_interaction.data.pipeline import PipelineConfig, load_dataset, make_dataset

  # Content varies from batch to batch: average the data figures over more batches
  # than are timed (reading them is cheap).
  count = 1 if args.data == "fixed" else max(args.steps, 40)
  # The step's cost depends on the row shape, not on which ability a row holds.
  if args.data == "corpus":
    pipeline = PipelineConfig.from_config(config)
    dataset = load_dataset(args.corpus, "train", pipeline, shard_index=0, shard_count=1)
  else:
    # Synthetic examples carry abilities at random: read them uniformly.
    pipeline = PipelineConfig.from_config(config, mixture=None)
    fixed = args.data == "fixed"
    make = SyntheticExamples(
        chunk_samples=pipeline.chunk_samples, min_chunks=args.chunks if fixed else 1,
        max_chunks=args.chunks, vocab_size=config.model.decoder.vocab_size,
        slots_per_chunk=config.model.slots_per_chunk,
        tokens_per_chunk=config.model.tokens_per_chunk, offline_fraction=0.0 if fixed else 0.2)
    examples = args.batch * (1 if fixed else pipeline.max_segments * count)
    source = [dict(make(i, 0), example_index=i) for i in range(examples)]
    dataset = make_dataset(source, pipeline, shard_index=0, shard_count=1)
  iterator = iter(dataset)
  return [next(iterator) for _ in range(count)]


def _run(config: str, devices: int, batch: int, chunks: int, length: int, steps: int,
         layers: int = 0, data: str = "fixed", corpus: str = "",
         variants: str = "padded", malloc: str = "tcmalloc", xla_flags: str = "",
         tree: pathlib.Path | None = None) -> list[dict]:
  """One child's results; `tree`: another checkout of the project whose own benchmark
  and library the child runs (its code, this machine and run)."""
  script = pathlib.Path(__file__) if tree is None else tree / "benchmarks" / "train_step.py"
  command = [sys.executable, str(script), "--child", "--config", config, "--devices",
             str(devices), "--batch", str(batch), "--chunks", str(chunks), "--length",
             str(length), "--steps", str(steps), "--layers", str(layers), "--data", data,
             "--corpus", corpus, "--variants", variants]
  command += [f"--xla-flags={xla_flags}"] if xla_flags else []
  env = _child_environment(malloc)
  if tree is not None:
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tree), env.get("PYTHONPATH")) if p)
  result = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
  if result.returncode:
    raise RuntimeError(result.stderr[-3000:])
  return json.loads(result.stdout.strip().splitlines()[-1])


def _child_environment(malloc: str) -> dict[str, str]:
  """This process's environment with `malloc` ("tcmalloc" or "system") for a child."""
  from audio_interaction.apps import cpu_host
  clean = {k: v for k, v in os.environ.items()
           if k != "LD_PRELOAD"}
  if malloc == "system":
    return clean
  env = cpu_host.environment_with_tcmalloc(clean)
  if env is None:
    raise RuntimeError("no tcmalloc on this machine (Debian: libtcmalloc-minimal4, which "
                       "install.sh installs)")
  return env


def _tiny_shape(args: argparse.Namespace) -> tuple[int, int, int, int, int, int]:
  """(steps, layers, batch, chunks, length, devices per core) of the host sections' tiny
  step: the README's shape, or the smoke test's; one device per core as `train` counts
  the cores (apps/cpu_host.py) when the batch divides."""
  steps, layers, (batch, chunks, length) = ((2, 1, (2, 8, 64)) if args.quick
                                            else (6, 0, (4, 64, 320)))
  cores = len(os.sched_getaffinity(0))
  per_core = cores if cores > 1 and batch % cores == 0 else 1
  return steps, layers, batch, chunks, length, per_core


def _in_turns(args: argparse.Namespace, setups: dict[str, dict], title: str,
              first_column: str) -> None:
  """Runs the tiny step once per set-up (`_run` keywords) per round, rounds in turns (so
  the machine's load hits every set-up alike), and prints each set-up's median step and
  tokens/s against the first set-up's."""
  steps, layers, batch, chunks, length, _ = _tiny_shape(args)
  rounds = 1 if args.quick else 2
  rows = {name: [] for name in setups}
  for _ in range(rounds):
    for name, options in setups.items():
      rows[name].append(_run("tiny", batch=batch, chunks=chunks, length=length, steps=steps,
                             layers=layers, **options)[0])
  print(f"\n{title}: tiny, global batch {batch} × {chunks} chunks ({length} positions), "
        f"{rounds} child process(es) each, in turns")
  first = next(iter(rows))
  print(f"\n| {first_column} (malloc loaded) | step (median of children) | tokens/s | vs {first} | compile |")
  print("|---|---|---|---|---|")
  baseline = float(np.median([r["step_s"] for r in rows[first]]))
  for name, runs in rows.items():
    step_s = float(np.median([r["step_s"] for r in runs]))
    tokens = float(np.median([r["tokens_per_s"] * r["step_s"] for r in runs]))
    compile_s = float(np.median([r["compile_s"] for r in runs]))
    loaded = ",".join(sorted({r.get("allocator", "not reported") for r in runs}))
    print(f"| {name} ({loaded}) | {1000 * step_s:.0f} ms | {tokens / step_s:.0f} | "
          f"{baseline / step_s:.2f}x | {compile_s:.0f} s |")


def _host(args: argparse.Namespace) -> None:
  """The tiny step as a CPU host can run it: glibc malloc on one device (what a plain
  `python` process gets), tcmalloc on one device, and tcmalloc on one device per core
  (what `audio-interaction train` runs, `apps/cpu_host.py`); children in turns; with
  `--baseline-tree`, that checkout's own code under glibc on one device first."""
  per_core = _tiny_shape(args)[-1]
  setups = {"glibc malloc, 1 device": dict(malloc="system", devices=1),
            "tcmalloc, 1 device": dict(malloc="tcmalloc", devices=1),
            f"tcmalloc, {per_core} devices (one per core)": dict(malloc="tcmalloc",
                                                                 devices=per_core)}
  if args.baseline_tree:
    tree = pathlib.Path(args.baseline_tree).resolve()
    setups = {f"{tree.name}'s code, glibc malloc, 1 device": dict(malloc="system", devices=1,
                                                                  tree=tree), **setups}
  _in_turns(args, setups, "CPU host set-up", "set-up")


# XLA:CPU options a host could run the step with (`--sections xla`), each against none.
XLA_CPU_OPTIONS = {
    "none": "",
    "XNNPACK kernels": "--xla_cpu_use_xnnpack=true",
    "the classic (non-thunk) runtime": "--xla_cpu_use_thunk_runtime=false",
    "fast math": "--xla_cpu_enable_fast_math=true",
    "fusion emitters": "--xla_cpu_use_fusion_emitters=true",
}


def _xla(args: argparse.Namespace) -> None:
  """The tiny step as `train` runs it (tcmalloc, one device per core) under each of
  `XLA_CPU_OPTIONS`: children in turns, each option's median step against none's."""
  per_core = _tiny_shape(args)[-1]
  options = {name: flags for name, flags in XLA_CPU_OPTIONS.items()
             if not args.xla_options or name == "none" or flags in args.xla_options}
  if args.quick:  # the smoke test: one option beside none
    options = dict(list(options.items())[:2])
  _in_turns(args, {f"{name} (`{flags or '-'}`)": dict(devices=per_core, xla_flags=flags)
                   for name, flags in options.items()},
            f"XLA:CPU options, tcmalloc, {per_core} device(s)", "XLA_FLAGS")


def _scaling(args: argparse.Namespace) -> None:
  """Tokens/s, TFLOP/s and MFU of full rows: 1 vs 8 simulated devices (and base)."""
  if args.quick:
    steps, layers, runs = 2, 1, [("tiny", 1, 2, 8, 64), ("tiny", 2, 4, 8, 64)]
  else:
    steps, layers, runs = 5, 0, [("tiny", 1, 4, 64, 320), ("tiny", 8, 8, 64, 320)]
    # base at the tiny row shape would not fit the time budget of a benchmark on a
    # laptop CPU: one short row per step, labelled as such.
    runs.append(("base", 1, 1, 16, 96))
  rows = [_run(config, devices, batch, chunks, length, steps, layers)[0]
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


def _packing(args: argparse.Namespace) -> None:
  """Useful (non-padding) tokens/s of padded vs packed rows on a real length distribution."""
  corpus = args.corpus or str(ROOT / "data" / "tiny")
  data = "corpus" if (pathlib.Path(corpus) / "train.metadata.npz").exists() else "synthetic"
  where = (f"the corpus split {corpus}/train (config mixture)" if data == "corpus" else
           "tests/synthetic_examples.py's lengths (no corpus on disk; build one with "
           "`audio-interaction build-data --split train` and pass --corpus)")
  steps, layers, batch, chunks, length, _ = _tiny_shape(args)
  print(f"\npacked vs padded rows: tiny, batch {batch} × {chunks} chunks ({length} positions), "
        f"data: {where}; each step a different batch")
  padded, packed = _run("tiny", 1, batch, chunks, length, steps, layers, data, corpus,
                        variants="padded,packed")
  print("\n| rows | examples / batch | positions holding data | chunks holding audio | step | "
        "useful tokens/s |")
  print("|---|---|---|---|---|---|")
  for row in (padded, packed):
    print(f"| {row['variant']} | {row['examples_per_batch']:.1f} | {row['fill']:.0%} | "
          f"{row['chunk_fill']:.0%} | {1000 * row['step_s']:.0f} ms | {row['tokens_per_s']:.0f} |")
  print(f"\nuseful tokens/s (mean useful tokens of {max(steps, 40)} batches / median step), "
        "packed vs padded (steps timed in turns): "
        f"{packed['tokens_per_s'] / padded['tokens_per_s']:.2f}x")


def _added_heads(args: argparse.Namespace, what: str, rows: list[tuple[str, str]]) -> None:
  """The tiny step with each of `rows` (label, variant; the first the baseline), in one
  child, timed in turns."""
  steps, layers, batch, chunks, length, _ = _tiny_shape(args)
  results = _run("tiny", 1, batch, chunks, length, steps, layers,
                 variants=",".join(variant for _, variant in rows))
  print(f"\n{what}: tiny, batch {batch} × {chunks} chunks ({length} positions), full rows")
  print("\n| model | parameters | step | tokens/s | FLOPs per step (XLA) |")
  print("|---|---|---|---|---|")
  for (label, _), row in zip(rows, results):
    print(f"| {label} | {row['params'] / 1e6:.3f} M | {1000 * row['step_s']:.0f} ms | "
          f"{row['tokens_per_s']:.0f} | {row['flops_per_step'] / 1e9:.1f} G |")
  base = results[0]
  for (label, _), row in zip(rows[1:], results[1:]):
    print(f"\n{label} vs {rows[0][0]}: step time {row['step_s'] / base['step_s']:.2f}x; "
          f"FLOPs {row['flops_per_step'] / base['flops_per_step']:.2f}x")


def _copy(args: argparse.Namespace) -> None:
  """The tiny step with and without the copy head."""
  _added_heads(args, "copy head", [("LM head", "padded"), ("LM head + copy head", "copy")])


def _sounds(args: argparse.Namespace) -> None:
  """The tiny step without a sound-event head, with one, and with its classes' names
  fed to the decoder."""
  _added_heads(args, "sound-event head and its names fed to the decoder",
               [("no sound-event head", "padded"), ("+ sound-event head", "sound_head"),
                ("+ its classes' names fed to the decoder", "sound_names")])


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
  parser.add_argument("--data", choices=("fixed", "synthetic", "corpus"), default="fixed",
                      help="(child) batches: see _batches")
  parser.add_argument("--corpus", default="",
                      help="a corpus directory with a train split (default: data/tiny); "
                           "without one the packing section uses synthetic lengths")
  parser.add_argument("--variants", default="padded",
                      help=f"(child) comma-separated, of {sorted(VARIANTS)}")
  parser.add_argument("--sections", default="host,packing,scaling,xla,copy,sounds",
                      help="comma-separated: host (malloc, devices per core), packing (padded "
                           "vs packed rows), scaling (devices, MFU), xla (XLA:CPU options), "
                           "copy (the copy head against none)")
  parser.add_argument("--xla-flags", default="", help="(child) more XLA_FLAGS")
  parser.add_argument("--baseline-tree", default="",
                      help="(host section) another checkout of the project (e.g. a git "
                           "worktree of an older commit): its code's step, glibc, 1 device, "
                           "is the first row and what the others are compared with")
  parser.add_argument("--xla-options", nargs="*", default=[],
                      help="(xla section) only these of XLA_CPU_OPTIONS' flags, beside none")
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
  sections = {"host": _host, "packing": _packing, "scaling": _scaling, "xla": _xla,
              "copy": _copy, "sounds": _sounds}
  for name in args.sections.split(","):
    if name not in sections:
      parser.error(f"--sections: unknown section {name!r}; choose from {sorted(sections)}")
    sections[name](args)


if __name__ == "__main__":
  main()
