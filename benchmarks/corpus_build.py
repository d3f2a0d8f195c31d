r"""What a corpus build costs: examples per CPU-hour, local pool vs Apache Beam, and 2.6 M items.

Builds the same split (same seed) twice, side by side in one process: with the local
writer (`--runner local`, one worker) and as a Beam pipeline (in-process FnApiRunner,
the engine Beam's DirectRunner runs locally), checks the shards are byte-identical,
and prints CPU seconds (this process + its TTS subprocesses), examples per CPU-hour,
the Beam/local ratio, and the CPU-hours of the paper's 2.6 M items at each rate::

  python benchmarks/corpus_build.py                 # 56 examples: 2 of each of the 28 sub-tasks
  python benchmarks/corpus_build.py --num_examples 112 --runner BundleBasedDirectRunner
  python benchmarks/corpus_build.py --quick         # smoke test: 6 examples, 3 sub-tasks

The Beam half needs the [beam] extra; without it only the local build is measured.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import resource
import tempfile
import time

from audio_interaction import config_lib
from audio_interaction.corpus import build as corpus
from audio_interaction.corpus import tasks
from audio_interaction.data import dataset_card

PAPER_ITEMS = 2_600_000


def _cpu_seconds() -> float:
  """CPU time of this process and of its finished children (espeak, flite, ... subprocesses)."""
  own = resource.getrusage(resource.RUSAGE_SELF)
  children = resource.getrusage(resource.RUSAGE_CHILDREN)
  return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(config, data_dir: pathlib.Path, split: str, num_examples: int, subtasks, runner: str,
            shard_size: int) -> dict[str, float]:
  """Builds one split into `data_dir` (tokenizer already there); CPU and wall seconds."""
  config = config_lib.load_config(config, [f"data.dir={data_dir}"])
  cpu, wall = _cpu_seconds(), time.perf_counter()
  corpus.build_corpus_split(config, split, num_examples, subtasks=subtasks, runner=runner,
                            progress=False, shard_size=shard_size)
  return {"cpu_s": _cpu_seconds() - cpu, "wall_s": time.perf_counter() - wall}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default=str(config_lib.experiments_dir() / "tiny.py"))
  parser.add_argument("--num_examples", type=int, default=56)
  parser.add_argument("--shard_size", type=int, default=8)
  parser.add_argument("--runner", default="FnApiRunner",
                      help="the Beam runner measured against the local build")
  parser.add_argument("--quick", action="store_true",
                      help="smoke test: 6 examples of 3 sub-tasks (figures not the docs')")
  args = parser.parse_args()
  subtasks = tuple(tasks.SUBTASKS)
  if args.quick:
    args.num_examples, args.shard_size = 6, 4
    subtasks = ("chat_single", "alert_alarm", "offline_asr")
  cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
              if line.startswith("model name")), platform.processor())
  print(f"machine: {cpu}, {os.cpu_count()} cores (load {os.getloadavg()[0]:.1f} at start); "
        "figures measured side by side in this run")
  print(f"mode: {'quick (smoke test)' if args.quick else 'full'}; {args.num_examples} examples "
        f"of {len(subtasks)} sub-tasks, shard_size {args.shard_size}, config {args.config}")
  try:
    import apache_beam  # noqa: F401
    runners = ["local", args.runner]
  except ImportError:
    runners = ["local"]
    print("Beam: skipped (apache-beam not installed: pip install -e '.[beam]')")

  with tempfile.TemporaryDirectory() as tmp:
    root = pathlib.Path(tmp)
    base = config_lib.load_config(args.config, [f"data.dir={root / 'tokenizer_home'}"])
    corpus.build_tokenizer(base, examples_per_task=4)
    results = {}
    for runner in ["warm-up", *runners]:
      directory = root / runner
      (directory / corpus.TOKENIZER_DIR).parent.mkdir(parents=True)
      os.symlink(corpus.tokenizer_path(base), directory / corpus.TOKENIZER_DIR)
      if runner == "warm-up":  # Engines started, recordings cached: as on a busy worker.
        measure(args.config, directory, "train", len(subtasks), subtasks, "local", len(subtasks))
        continue
      results[runner] = measure(args.config, directory, "train", args.num_examples, subtasks,
                                runner, args.shard_size)
    if len(runners) == 2:
      shards = [sorted((root / r).glob("*-train.array_record-*")) for r in runners]
      same = [a.read_bytes() for a in shards[0]] == [b.read_bytes() for b in shards[1]]
      print(f"shards byte-identical (local vs {args.runner}): {same}")
    card = dataset_card.dataset_card(root / "local", "train")

  print(f"\n{'build':<22} {'CPU s':>8} {'wall s':>8} {'examples/CPU-hour':>18} "
        f"{'2.6M items: CPU-hours':>22}")
  for runner, r in results.items():
    per_hour = args.num_examples / r["cpu_s"] * 3600
    print(f"{runner:<22} {r['cpu_s']:>7.1f}s {r['wall_s']:>7.1f}s {per_hour:>18,.0f} "
          f"{PAPER_ITEMS / per_hour:>22,.0f}")
  if len(results) == 2:
    local, beam = results["local"], results[args.runner]
    print(f"Beam/local CPU per example: {beam['cpu_s'] / local['cpu_s']:.2f}x")
  seconds = 3600 * card.audio_hours / card.num_examples
  print(f"audio: {seconds:.1f} s per example -> {PAPER_ITEMS * seconds / 3600:,.0f} hours "
        f"for 2.6M items; {len(card.voices)} voices, {len(card.sounds)} sound classes here")


if __name__ == "__main__":
  main()
