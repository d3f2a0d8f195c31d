r"""int8 weight-only inference vs float32: decision agreement, per-chunk time, param memory.

Run::

  python benchmarks/quantized.py            # every online sub-task, 2 held-out streams each
  python benchmarks/quantized.py --quick    # 3 sub-tasks, 1 stream each: a smoke test

The embedded tiny model (`export.portable.load_model(None)`) runs every held-out stream
(held-out voices and sounds: `corpus.build.heldout_sources`, `corpus.tasks.build` with
the held-out split, `corpus.timeline.render`, as `eval/heldout.py` makes them) twice
through the same `run_stream` loop and decision policy (the bundle's threshold): once
with float32 params, once with int8 params (`infer.engine.params_for(params, "int8")`,
`config.infer.weights = "int8"`). It prints, side by side:

* decision agreement: the share of chunks where both decide the same (speak or not),
  end to end (each run feeds its own replies back), and the largest |P(SPEAK)| gap;
* per-chunk time of the jitted, donated `perceive` on one XLA thread, the two param
  sets interleaved chunk for chunk over the same audio;
* parameter memory (int8 values + float32 scales vs float32).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere
  sys.path.insert(0, str(REPO))

from benchmarks.stream_step import use_one_xla_thread  # noqa: E402  (no jax there)

use_one_xla_thread()  # before jax loads

import jax  # noqa: E402  (after the thread settings)
import numpy as np  # noqa: E402

from audio_interaction import stream_format as sf  # noqa: E402
from audio_interaction.corpus import build, tasks  # noqa: E402
from audio_interaction.corpus.timeline import render  # noqa: E402
from audio_interaction.export import portable  # noqa: E402
from audio_interaction.infer import engine as engine_lib  # noqa: E402
from audio_interaction.infer.policies import ThresholdPolicy  # noqa: E402
from audio_interaction.infer.run_stream import run_stream  # noqa: E402

QUICK_SUBTASKS = 3


def heldout_streams(config, quick: bool, seed: int = 7000):
  """[(sub-task, timeline, audio [S])] of held-out streams."""
  speech, sounds = build.heldout_sources()
  task_config = tasks.TaskConfig(split="heldout", chunk_ms=config.chunk_ms)
  names = [n for n, spec in tasks.SUBTASKS.items() if spec.mode != "offline"]
  per_subtask = 1 if quick else 2
  if quick:
    names = names[:QUICK_SUBTASKS]
  streams = []
  for name in names:
    for k in range(per_subtask):
      timeline = tasks.build(name, seed + k, speech, sounds, task_config)
      streams.append((name, timeline, render(timeline, chunk_ms=config.chunk_ms)))
  return streams


def perceive_times(engine, params_by_name: dict, audio: np.ndarray, prompt: list[int]
                   ) -> dict[str, list[float]]:
  """Per-chunk seconds of `Engine.perceive` for each param set, interleaved chunk for chunk."""
  size = engine.model.config.chunk_samples
  padded = np.zeros(-(-len(audio) // size) * size, np.float32)
  padded[:len(audio)] = audio
  chunks = padded.reshape(-1, 1, size)
  states = {name: engine.init_state(p, [prompt]) for name, p in params_by_name.items()}
  times = {name: [] for name in params_by_name}
  for index, chunk in enumerate(chunks):
    for name, params in params_by_name.items():
      start = time.perf_counter()
      states[name], probs = engine.perceive(params, states[name], chunk)
      np.asarray(probs)
      jax.block_until_ready(states[name])
      if index >= 3:  # the first calls compile
        times[name].append(time.perf_counter() - start)
  return times


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--quick", action="store_true", help=f"{QUICK_SUBTASKS} sub-tasks, one "
                                                            "stream each")
  args = parser.parse_args()
  wall = time.perf_counter()
  model, params, tokenizer, note = portable.load_model(None)
  infer = portable.bundle_infer_config()
  config = model.config
  weights = {"float32": engine_lib.params_for(params, "float32"),
             "int8": engine_lib.params_for(params, "int8")}
  engine = engine_lib.Engine(model, engine_lib.SamplingConfig.from_infer(infer))
  print(f"model: {note}; threshold {infer.threshold}; jax {jax.__version__} "
        f"({jax.default_backend()}), NPROC={os.environ.get('NPROC')}")
  streams = heldout_streams(config, args.quick)
  print(f"{len(streams)} held-out streams ({'quick' if args.quick else 'full'})\n")

  agree = total = 0
  gap = 0.0
  times = {name: [] for name in weights}
  header = f"{'sub-task':<28} {'chunks':>6} {'agree':>7} {'max |dP|':>9}"
  print(header)
  for name, timeline, audio in streams:
    prompt = tokenizer.encode(timeline.instruction)
    traces = {w: run_stream(engine, p, audio, prompt, ThresholdPolicy(infer.threshold),
                            max_reply_tokens=int(infer.max_reply_tokens))
              for w, p in weights.items()}
    spoke = {w: np.array([c.spoke for c in t.chunks]) for w, t in traces.items()}
    prob = {w: np.array([c.speak_probability for c in t.chunks]) for w, t in traces.items()}
    same = int(np.sum(spoke["float32"] == spoke["int8"]))
    agree, total = agree + same, total + len(spoke["float32"])
    stream_gap = float(np.abs(prob["float32"] - prob["int8"]).max())
    gap = max(gap, stream_gap)
    print(f"{name:<28} {len(spoke['float32']):>6} {100 * same / len(spoke['float32']):>6.1f}% "
          f"{stream_gap:>9.4f}")
    for w, t in perceive_times(engine, weights, audio, sf.online_prompt(prompt)).items():
      times[w] += t

  memory = {w: engine_lib.param_bytes(p) / 2**20 for w, p in weights.items()}
  p50 = {w: 1e3 * statistics.median(t) for w, t in times.items()}
  mean = {w: 1e3 * statistics.fmean(t) for w, t in times.items()}
  share = 100 * agree / total
  print(f"\ndecision agreement int8 vs float32: {agree} of {total} chunks = {share:.2f}% "
        f"(target >= 99%: {'PASS' if share >= 99 else 'FAIL'}); largest |P(SPEAK) gap| "
        f"{gap:.4f}\n")
  print("| weights | perceive p50 per chunk | mean | param memory |")
  print("|---|---|---|---|")
  for w in weights:
    print(f"| {w} | {p50[w]:.2f} ms | {mean[w]:.2f} ms | {memory[w]:.2f} MB |")
  print(f"\nint8 / float32: time p50 {p50['int8'] / p50['float32']:.2f}x, memory "
        f"{memory['int8'] / memory['float32']:.2f}x ({len(times['int8'])} chunks timed, "
        f"interleaved)")
  print(f"total wall time: {time.perf_counter() - wall:.0f} s")


if __name__ == "__main__":
  main()
