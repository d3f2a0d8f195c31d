r"""What does one streaming step cost? Latency, cached vs recompute, flatness over an hour.

Run::

  python benchmarks/stream_step.py            # full run, a few minutes
  python benchmarks/stream_step.py --quick    # smoke test, well under a minute
  python benchmarks/stream_step.py --simulate-long   # full run, but jump to minute 60

For the tiny config (``experiments/tiny.py``, batch 1, float32) it measures:

1. per-chunk latency of the jitted, state-donating `AudioInteractionModel.perceive`
   on one CPU thread: p50/p90/p99 and the real-time factor (time / chunk length);
   and, interleaved chunk for chunk, the same step with the ring KV caches written
   after attention (`config.model.cache_write="after"`, the older order) against the
   default "before", with the cache-sized copies each compiled step makes;
2. the decision for the newest chunk with the cached step vs recomputing
   `model.forward` over the whole stream so far, at 10, 30 and 60 s of audio;
3. per-chunk latency at minute 1 vs minute 60 of a stream (and the process RSS);
4. our log-mel front end vs librosa (`benchmarks/logmel.py`).

The measurements run in subprocesses restricted to one XLA thread (see
`ONE_THREAD_ENV`), one after the other, so they do not compete for the two shared
cores: in the full run one process per section, so each RSS reading covers one
job only; with ``--quick`` one process for all. The parent prints the machine,
each section as it finishes, and a closing Markdown table to paste into a README.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import math
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere, package not installed
  sys.path.insert(0, str(REPO))

CONFIG = "experiments/tiny.py"
MINUTE_60_CHUNK = 22_500  # 60 min of 160 ms chunks

# One thread for XLA:CPU in jax 0.10. What each variable does (checked on this jaxlib):
# * NPROC=1: the PJRT CPU client sizes its intra-op thread pool from NPROC
#   (`DefaultThreadPoolSize`, else the core count): one "tf_XLAEigen" thread runs
#   the step while the Python caller waits. This is what makes the step
#   single-threaded; section 1 checks it from /proc (threads that did work).
# * --xla_cpu_multi_thread_eigen=false: still accepted, but on its own two
#   "tf_XLAEigen" threads still share the step (thunk runtime); kept, harmless.
# * intra_op_parallelism_threads=1 is a TensorFlow option, not an XLA flag: with
#   "--" XLA aborts ("Unknown flag in XLA_FLAGS"), without it is silently ignored.
# * OMP/OpenBLAS/MKL/numba = 1 keep numpy/librosa (section 4) on one thread too.
ONE_THREAD_ENV = {
    "NPROC": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
    "JAX_PLATFORMS": "cpu",
}


def use_one_xla_thread() -> None:
  """Sets `ONE_THREAD_ENV` where not set already: call it before jax is imported (a
  benchmark script's preamble; this module imports no jax at its top)."""
  for name, value in ONE_THREAD_ENV.items():
    os.environ.setdefault(name, value)


# --------------------------------------------------------------------- helpers
def rss_mb() -> float:
  """Resident set size of this process in MB (VmRSS from /proc/self/status)."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) / 1024
  return float("nan")


def thread_cpu_ticks() -> dict[str, tuple[str, int]]:
  """Per thread of this process: (name, CPU clock ticks used so far, user + system)."""
  ticks = {}
  for tid in os.listdir("/proc/self/task"):
    try:
      with open(f"/proc/self/task/{tid}/stat") as f:
        name, fields = f.read().split(" (", 1)[1].rsplit(")", 1)
      ticks[tid] = (name, int(fields.split()[11]) + int(fields.split()[12]))
    except (FileNotFoundError, ProcessLookupError):  # the thread ended meanwhile
      continue
  return ticks


def busy_threads(before: dict[str, tuple[str, int]], after: dict[str, tuple[str, int]],
                 share: float = 0.05, names: tuple[str, ...] | None = None) -> int:
  """Threads (optionally only those named `names`) that did >= `share` of the CPU work.

  XLA:CPU names its intra-op pool threads "tf_XLAEigen"; the Python thread that
  dispatches a step and waits for it also shows up, but it never runs alongside them.
  """
  used = {t: (name, ticks - before.get(t, ("", 0))[1]) for t, (name, ticks) in after.items()}
  total = sum(u for _, u in used.values())
  return sum(1 for name, u in used.values()
             if total and u >= share * total and (names is None or name in names))


def percentiles_ms(seconds: list[float]) -> dict[str, float]:
  """p50/p90/p99 and mean of a list of durations, in ms."""
  ordered = sorted(seconds)

  def pick(q: float) -> float:
    return 1e3 * ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]

  return {"p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99),
          "mean": 1e3 * statistics.fmean(ordered), "n": len(ordered)}


def quick_params(model, seed: int = 0):
  """Random weights with `model.init`'s tree and shapes, drawn in numpy.

  The step's cost does not depend on the weights' values (no data-dependent control
  flow; normal-sized values, no denormals), and compiling `model.init` takes 10-20 s
  on one thread, most of a quick run. Fan-in scaled normals, norm scales at 1.
  """
  import jax
  import numpy as np
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(model.init, jax.random.key(seed))

  def draw(path, leaf):
    name = jax.tree_util.keystr(path)
    if "scale" in name:
      return np.ones(leaf.shape, leaf.dtype)
    if "bias" in name:
      return np.zeros(leaf.shape, leaf.dtype)
    fan_in = 1 if "embedding" in name else max(1, math.prod(leaf.shape[:-1]))
    return (rng.standard_normal(leaf.shape) / math.sqrt(fan_in)).astype(leaf.dtype)

  return jax.device_put(jax.tree_util.tree_map_with_path(draw, shapes))


def load_tiny(quick: bool, cache_write: str = "before"):
  """(model, params, jitted donated perceive, jitted prefill, prompt tokens [1, P])."""
  import jax
  import numpy as np
  from audio_interaction import config_lib
  from audio_interaction.model.model import AudioInteractionModel

  model = AudioInteractionModel(config_lib.load_config(
      str(REPO / CONFIG), [f"model.cache_write={cache_write}"]))
  if quick:
    params = quick_params(model)
  else:
    # Jitted: one compile (then shared by the workers through the persistent cache)
    # instead of dispatching the initializers op by op, far slower on one thread.
    params = jax.jit(model.init)(jax.random.key(0))
  # Donating the state lets XLA update the ring caches in the caller's buffers.
  perceive = jax.jit(model.perceive, donate_argnums=1)
  prefill = jax.jit(model.prefill)
  testing = import_path("model_testing", REPO / "tests" / "model_testing.py")
  tokens, _, prompt_length, _ = testing.online_sequence(
      np.random.default_rng(0), 0, model.config.slots_per_chunk, 0,
      model.config.decoder.vocab_size)
  return model, params, perceive, prefill, tokens[None, :prompt_length]


def import_path(name: str, path: pathlib.Path):
  """Imports a module from a file (benchmarks/ and tests/ are not packages)."""
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def noise_chunks(count: int, chunk_samples: int, seed: int = 0):
  """`count` chunks [count, 1, chunk] of quiet noise, host numpy (as a microphone gives)."""
  import numpy as np
  rng = np.random.default_rng(seed)
  return (0.1 * rng.standard_normal((count, 1, chunk_samples))).astype(np.float32)


def timed_step(perceive: Callable, params, state, chunk) -> tuple[Any, float]:
  """One step, host chunk in -> decision on the host and the new state ready."""
  import jax
  import numpy as np
  start = time.perf_counter()
  state, decision, lm, _ = perceive(params, state, chunk)
  np.asarray(decision)  # the live loop reads the decision to act on it
  jax.block_until_ready((state, lm))
  return state, time.perf_counter() - start


def start_stream(model, params, prefill, prompt):
  """A new stream's state after the instruction prefill."""
  import jax.numpy as jnp
  state, _ = prefill(params, model.init_state(1), jnp.asarray(prompt))
  return state


# -------------------------------------------------------------------- sections
def section_latency(quick: bool) -> dict:
  """1. Per-chunk latency of the donated `perceive`, steady state, one thread; and the
  older cache order (write after attention) interleaved with it, chunk for chunk."""
  import jax
  from audio_interaction.model.inspect_model import step_copies
  model, params, perceive, prefill, prompt = load_tiny(quick)
  old_model, _, old_perceive, old_prefill, _ = load_tiny(True, cache_write="after")
  warmup, timed = (20, 100) if quick else (50, 300)
  chunks = noise_chunks(warmup + timed, model.config.chunk_samples)
  state = start_stream(model, params, prefill, prompt)
  old_state = start_stream(old_model, params, old_prefill, prompt)

  start = time.perf_counter()
  state, _ = timed_step(perceive, params, state, chunks[0])
  compile_s = time.perf_counter() - start
  old_state, _ = timed_step(old_perceive, params, old_state, chunks[0])
  for chunk in chunks[1:warmup]:
    state, _ = timed_step(perceive, params, state, chunk)
    old_state, _ = timed_step(old_perceive, params, old_state, chunk)

  times, cpu_times, old_times, old_cpu_times = [], [], [], []
  ticks = {}
  cpu_busy = wall_busy = 0.0
  for chunk in chunks[warmup:]:
    # The default step: its thread use is read around its own steps only.
    before, cpu_before, wall_before = (thread_cpu_ticks(), time.process_time(),
                                       time.perf_counter())
    cpu_start = time.process_time()
    state, seconds = timed_step(perceive, params, state, chunk)
    # CPU time of the whole process (XLA thread + caller): unlike wall time, it does
    # not count the time spent waiting for a core that another user's job holds.
    cpu_times.append(time.process_time() - cpu_start)
    times.append(seconds)
    cpu_busy += time.process_time() - cpu_before
    wall_busy += time.perf_counter() - wall_before
    for tid, (name, used) in thread_cpu_ticks().items():
      ticks[tid] = (name, ticks.get(tid, (name, 0))[1] + used - before.get(tid, (name, 0))[1])
    cpu_start = time.process_time()
    old_state, seconds = timed_step(old_perceive, params, old_state, chunk)
    old_cpu_times.append(time.process_time() - cpu_start)
    old_times.append(seconds)
  after = ticks
  before = {}
  cpu_per_wall = cpu_busy / wall_busy
  copies = {"before": step_copies(model), "after": step_copies(old_model)}

  chunk_s = model.config.chunk_samples / model.config.sample_rate
  stats = percentiles_ms(times)
  cost = perceive.lower(params, state, chunks[0]).cost_analysis()  # of the HLO, no compile
  cost = cost[0] if isinstance(cost, list) else cost
  state_bytes = sum(x.nbytes for x in jax.tree_util.tree_leaves(state))
  return {
      **stats,
      "chunk_ms": 1e3 * chunk_s,
      "rtf_p50": stats["p50"] / (1e3 * chunk_s),
      "rtf_p99": stats["p99"] / (1e3 * chunk_s),
      "first_call_s": compile_s,
      "cpu_p50": percentiles_ms(cpu_times)["p50"],
      "xla_workers_busy": busy_threads(before, after, names=("tf_XLAEigen",)),
      "threads_busy": busy_threads(before, after),
      "process_threads": len(after),
      "cpu_per_wall": cpu_per_wall,
      "backend": jax.default_backend(),
      "device": str(jax.devices()[0]),
      "jax": jax.__version__,
      "step_mflops": cost.get("flops", float("nan")) / 1e6,
      "state_mb": state_bytes / 2**20,
      "params": int(sum(x.size for x in jax.tree_util.tree_leaves(params))),
      "cache_write": {
          order: {**percentiles_ms(t), "cpu_p50": percentiles_ms(c)["p50"],
                  "entry_copies": copies[order].entry_copies,
                  "cache_copies": copies[order].cache_copies,
                  "cache_copy_mb": copies[order].cache_copy_bytes / 2**20,
                  "temp_mb": copies[order].temp_bytes / 2**20}
          for order, t, c in (("before", times, cpu_times), ("after", old_times, old_cpu_times))},
  }


def section_recompute(quick: bool) -> dict:
  """2. Decision for the newest chunk: cached step vs the full forward from the start."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  model, params, perceive, prefill, prompt = load_tiny(quick)
  cfg = model.config
  testing = import_path("model_testing", REPO / "tests" / "model_testing.py")
  lengths_s = (2.0, 4.0, 8.0) if quick else (10.0, 30.0, 60.0)
  forward_repeats, step_repeats = (3, 21) if quick else (5, 50)
  chunk_s = cfg.chunk_samples / cfg.sample_rate

  def recompute(params, tokens, audio, slot_index):
    # What the newest chunk needs, the same two outputs as `perceive`: the decision
    # and the first reply token's logits at the last `<decide>` (the last token here).
    out = model.forward(params, tokens, audio, slot_index)
    return out.decision_logits[:, -1], out.lm_logits[:, -1]

  recompute = jax.jit(recompute)  # compiles once per length (static shapes)
  rows = []
  for seconds in lengths_s:
    num_chunks = math.ceil(seconds / chunk_s - 1e-9)
    # No reply tokens: the stream so far is prompt + <audio> <a>*k <decide> per chunk.
    tokens, slot_index, prompt_length, _ = testing.online_sequence(
        np.random.default_rng(0), num_chunks, cfg.slots_per_chunk, 0,
        cfg.decoder.vocab_size)
    chunks = noise_chunks(num_chunks, cfg.chunk_samples, seed=1)
    args = (params, jnp.asarray(tokens[None]), jnp.asarray(chunks[:, 0].reshape(1, -1)),
            jnp.asarray(slot_index[None]))

    start = time.perf_counter()
    full_decision, _ = jax.block_until_ready(recompute(*args))
    compile_s = time.perf_counter() - start

    # The cached path: stream all but the newest chunk; the newest chunk's step is
    # then timed from copies of that state (a donated step consumes its input).
    state = start_stream(model, params, prefill, prompt)
    for chunk in chunks[:-1]:
      state, _, _, _ = perceive(params, state, chunk)
    copy = lambda tree: jax.block_until_ready(jax.tree_util.tree_map(jnp.copy, tree))
    _, decision, _, _ = perceive(params, copy(state), chunks[-1])

    # Side by side: each recompute is followed by its share of cached steps, so a
    # change in the machine's load hits both columns alike.
    forward_times, step_times = [], []
    for _ in range(forward_repeats):
      start = time.perf_counter()
      jax.block_until_ready(recompute(*args))
      forward_times.append(time.perf_counter() - start)
      for _ in range(step_repeats // forward_repeats):
        _, seconds = timed_step(perceive, params, copy(state), chunks[-1])
        step_times.append(seconds)
    rows.append({
        "audio_s": num_chunks * chunk_s,
        "chunks": num_chunks,
        "tokens": int(tokens.shape[0]),
        "recompute_ms": 1e3 * statistics.median(forward_times),
        "recompute_compile_s": compile_s,
        "cached_ms": 1e3 * statistics.median(step_times),
        "max_abs_decision_diff": float(np.abs(np.asarray(decision) -
                                              np.asarray(full_decision)).max()),
    })
    rows[-1]["ratio"] = rows[-1]["recompute_ms"] / rows[-1]["cached_ms"]
    del args, state
    gc.collect()
  return {"rows": rows, "forward_repeats": forward_repeats, "step_repeats": step_repeats}


def section_long(quick: bool, simulate: bool) -> dict:
  """3. Latency and RSS at minute 1 vs minute 60 of one stream.

  The stream runs chunk by chunk to 59:00 (or, simulated, jumps there: see below).
  Then minute 60 of that stream (chunks 22,125-22,499) is timed interleaved,
  chunk for chunk, with minute 1 of a fresh stream (chunks 0-374), so both see the
  same load from the rest of the machine.
  """
  model, params, perceive, prefill, prompt = load_tiny(quick)
  cfg = model.config
  chunk_s = cfg.chunk_samples / cfg.sample_rate
  per_minute = round(60 / chunk_s)  # 375
  start_59 = MINUTE_60_CHUNK - per_minute
  compared = 100 if quick else per_minute
  tokens_per_chunk = 2 + cfg.slots_per_chunk  # <audio> <a>*k <decide>
  frames_per_chunk = cfg.encoder_frames_per_chunk
  pool = noise_chunks(512, cfg.chunk_samples, seed=2)  # recycled: content does not matter

  warm = start_stream(model, params, prefill, prompt)
  for chunk in pool[:10]:  # compile and warm up on a throwaway stream
    warm, _ = timed_step(perceive, params, warm, chunk)
  del warm

  state = start_stream(model, params, prefill, prompt)
  profile: list[float] = []  # every timed step of the long stream, in order
  rss = {"start": rss_mb()}
  wall = time.perf_counter()
  if simulate:
    # Only positions grow with stream time (no reply tokens: exactly P + (k+2)*chunks
    # decoder positions and 4*chunks encoder frames). Stream a minute for real, set
    # the positions to their 59:00 values minus a refill span, then step that span
    # with real audio so every ring-cache slot holds minute-59 data before timing.
    fill = max(math.ceil(cfg.decoder.window / tokens_per_chunk), cfg.encoder.left_chunks) + 2
    head = 100 if quick else per_minute
    for j in range(head):
      state, seconds = timed_step(perceive, params, state, pool[j % len(pool)])
      profile.append(seconds)
    rss["minute_1"] = rss_mb()
    jump_to = start_59 - fill
    offset = jump_to - head
    encoder = dict(state.encoder)
    encoder["next_frame"] = encoder["next_frame"] + offset * frames_per_chunk
    state = state.replace(encoder=encoder,
                          next_position=state.next_position + offset * tokens_per_chunk)
    for j in range(jump_to, start_59):
      state, seconds = timed_step(perceive, params, state, pool[j % len(pool)])
    mode = (f"simulated: {head} chunks streamed, positions advanced to chunk {jump_to}, "
            f"{fill} chunks streamed to refill the ring caches")
  else:
    for j in range(start_59):
      state, seconds = timed_step(perceive, params, state, pool[j % len(pool)])
      profile.append(seconds)
      if j + 1 == per_minute:
        rss["minute_1"] = rss_mb()
    mode = f"real: {MINUTE_60_CHUNK} chunks streamed one by one"

  fresh = start_stream(model, params, prefill, prompt)
  early, late = [], []
  for j in range(compared):
    fresh, seconds = timed_step(perceive, params, fresh, pool[j % len(pool)])
    early.append(seconds)
    state, seconds = timed_step(perceive, params, state, pool[(start_59 + j) % len(pool)])
    late.append(seconds)
  del fresh
  gc.collect()
  rss["minute_60"] = rss_mb()
  wall = time.perf_counter() - wall

  chunks_done = start_59 + compared
  expected_position = prompt.shape[1] + tokens_per_chunk * chunks_done
  early_stats, late_stats = percentiles_ms(early), percentiles_ms(late)
  by_minute = {}
  if not simulate:
    for minute in (1, 10, 20, 30, 40, 50, 59):
      window = profile[(minute - 1) * per_minute:minute * per_minute]
      by_minute[minute] = 1e3 * statistics.median(window)
  return {
      "mode": mode,
      "simulated": simulate,
      "minute_1": early_stats,
      "minute_60": late_stats,
      "ratio_p50": late_stats["p50"] / early_stats["p50"],
      "ratio_mean": late_stats["mean"] / early_stats["mean"],
      "p50_by_minute_ms": by_minute,
      "rss_mb": rss,
      "stream_seconds_reached": chunks_done * chunk_s,
      "next_position": int(state.next_position[0]),
      "expected_next_position": int(expected_position),
      "next_frame": int(state.encoder["next_frame"][0]),
      "wall_s": wall,
      "chunks_stepped": len(profile) + (0 if not simulate else fill) + 2 * compared,
  }


def section_logmel(quick: bool) -> dict:
  """4. Our jitted log-mel vs librosa on the same audio (`benchmarks/logmel.py`)."""
  logmel = import_path("logmel_benchmark", REPO / "benchmarks" / "logmel.py")
  seconds, repeats = (2.0, 3) if quick else (10.0, 7)
  result = logmel.measure(seconds=seconds, repeats=repeats, verbose=False)
  result["repeats"] = repeats
  return result


SECTIONS = {
    "latency": section_latency,
    "recompute": section_recompute,
    "long": section_long,
    "logmel": section_logmel,
}


# ---------------------------------------------------------------------- parent
def machine() -> dict:
  """CPU model, core counts, versions: printed with every result."""
  model_name = "unknown"
  with open("/proc/cpuinfo") as f:
    for line in f:
      if line.startswith("model name"):
        model_name = line.split(":", 1)[1].strip()
        break
  import jax
  return {
      "cpu": model_name,
      "cores": os.cpu_count(),
      "usable_cores": len(os.sched_getaffinity(0)),
      "load_1min": os.getloadavg()[0],
      "python": platform.python_version(),
      "jax": jax.__version__,
  }


def print_interleaved_medians(times: dict[str, list[float]], baseline: str, *, note: str,
                              what: str, per: int, per_label: str) -> None:
  """Prints the machine line and a Markdown table of settings timed interleaved: each
  one's median per call, per `per_label` (the median over `per`), and its ratio to
  `baseline`'s median.

  Args:
    times: {setting: seconds of each timed call}, `baseline` among them.
    note: what ran (the model's note); what: the calls ("8 rows, 60 chunks ...").
  """
  where = machine()
  print(f"{note}; {where['cpu']}, {where['usable_cores']} usable cores, one XLA thread, "
        f"load {where['load_1min']:.1f}, jax {where['jax']}; {what}\n")
  print(f"| setting | median per call | per {per_label} | against {baseline} |")
  print("|---|---|---|---|")
  base = statistics.median(times[baseline])
  for name, values in times.items():
    median = statistics.median(values)
    print(f"| {name} | {1e3 * median:.2f} ms | {1e3 * median / per:.2f} ms | "
          f"{median / base:.2f}x |")


def run_workers(sections: list[str], quick: bool, simulate: bool, cache_dir: str
                ) -> dict[str, dict]:
  """Runs `sections` in order in one one-thread subprocess; returns {section: result}.

  The workers of a run share a persistent compilation cache (fresh for each run), so
  the step is compiled once per run rather than once per section: on one thread of
  a busy machine a compile takes seconds, which would dominate a quick run.
  """
  env = {**os.environ, **ONE_THREAD_ENV, "JAX_COMPILATION_CACHE_DIR": cache_dir,
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
  with tempfile.TemporaryDirectory() as tmp:
    out = pathlib.Path(tmp) / "result.json"
    command = [sys.executable, str(pathlib.Path(__file__).resolve()),
               "--worker", ",".join(sections), "--out", str(out)]
    command += ["--quick"] if quick else []
    command += ["--simulate-long"] if simulate else []
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO)
    if done.returncode:
      sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
      raise RuntimeError(f"sections {sections} failed (exit {done.returncode})")
    return json.loads(out.read_text())


def worker(sections: list[str], quick: bool, simulate: bool) -> dict[str, dict]:
  """The subprocess side: runs the sections, timing each."""
  results = {}
  for name in sections:
    start = time.perf_counter()
    results[name] = (section_long(quick, simulate) if name == "long"
                     else SECTIONS[name](quick))
    results[name]["section_wall_s"] = time.perf_counter() - start
  return results


def check(passed: bool) -> str:
  return "PASS" if passed else "FAIL"


def run_and_print(quick: bool, simulate: bool, cache_dir: str) -> dict[str, Any]:
  """Runs the four sections one after the other, printing each as it finishes.

  Full mode gives each section its own process, so no section inherits another's
  memory (RSS) or allocator state. Quick mode runs them all in one process (long
  before recompute, to keep its RSS clean), saving three start-ups.
  """
  batched = (run_workers(["latency", "long", "recompute", "logmel"], quick, simulate,
                         cache_dir) if quick else {})

  def run_worker(section: str) -> dict:
    return batched[section] if quick else run_workers([section], quick, simulate,
                                                      cache_dir)[section]

  lat = run_worker("latency")
  one_thread = lat["xla_workers_busy"] <= 1 and lat["cpu_per_wall"] <= 1.1
  print(f"1. perceive, one {lat['chunk_ms']:.0f} ms chunk ({lat['n']} chunks after warm-up, "
        f"backend {lat['backend']}, {lat['params'] / 1e6:.2f} M params, "
        f"{lat['step_mflops']:.1f} MFLOP/step, state {lat['state_mb']:.2f} MB donated)")
  print(f"   p50 {lat['p50']:.2f} ms  p90 {lat['p90']:.2f} ms  p99 {lat['p99']:.2f} ms  "
        f"mean {lat['mean']:.2f} ms; real-time factor p50 {lat['rtf_p50']:.4f}, "
        f"p99 {lat['rtf_p99']:.4f}; first call (compile) {lat['first_call_s']:.1f} s")
  print(f"   CPU time per step (not counting waits for a core held by other jobs): "
        f"p50 {lat['cpu_p50']:.2f} ms")
  print(f"   while timing: {lat['xla_workers_busy']} XLA intra-op worker thread busy, "
        f"{lat['threads_busy']} of {lat['process_threads']} threads busy in all (the caller "
        f"waits while XLA runs), CPU time / wall time {lat['cpu_per_wall']:.2f} -> one thread: "
        f"{check(one_thread)}")
  new, old = lat["cache_write"]["before"], lat["cache_write"]["after"]
  no_copies = new["cache_copies"] == 0
  print("   ring KV caches written before vs after attention (config.model.cache_write), "
        "interleaved chunk for chunk:")
  for order, row in (("before", new), ("after", old)):
    print(f"     {order:>6}: p50 {row['p50']:.2f} ms  p90 {row['p90']:.2f} ms  mean "
          f"{row['mean']:.2f} ms  CPU p50 {row['cpu_p50']:.2f} ms; compiled step: "
          f"{row['entry_copies']} top-level copies, {row['cache_copies']} cache-sized "
          f"({row['cache_copy_mb']:.2f} MB per step), temp {row['temp_mb']:.2f} MB")
  print(f"     before/after p50 {new['p50'] / old['p50']:.3f}, mean "
        f"{new['mean'] / old['mean']:.3f}; no cache-sized copy: {check(no_copies)}"
        f"  [{lat['section_wall_s']:.0f} s]\n")

  rec = run_worker("recompute")
  print(f"2. decision for the newest chunk: cached perceive vs model.forward from the start "
        f"(median of {rec['step_repeats']} / {rec['forward_repeats']})")
  print(f"   {'audio':>7} {'chunks':>6} {'tokens':>6} {'cached ms':>10} {'recompute ms':>13} "
        f"{'ratio':>8} {'|decision diff|':>16}")
  for row in rec["rows"]:
    print(f"   {row['audio_s']:>6.2f}s {row['chunks']:>6} {row['tokens']:>6} "
          f"{row['cached_ms']:>10.2f} {row['recompute_ms']:>13.1f} {row['ratio']:>7.1f}x "
          f"{row['max_abs_decision_diff']:>16.1e}")
  ratios = [row["ratio"] for row in rec["rows"]]
  grows = all(a < b for a, b in zip(ratios, ratios[1:]))
  print(f"   check: ratio grows with length: {check(grows)}  [{rec['section_wall_s']:.0f} s]\n")

  long = run_worker("long")
  m1, m60 = long["minute_1"], long["minute_60"]
  flat = abs(long["ratio_p50"] - 1) <= 0.15
  print(f"3. minute 1 vs minute 60 ({long['mode']}); minute 60 of that stream timed "
        f"interleaved, chunk for chunk, with minute 1 of a fresh stream ({m1['n']} chunks each)")
  print(f"   minute 1:  p50 {m1['p50']:.2f} ms  p90 {m1['p90']:.2f} ms  p99 {m1['p99']:.2f} ms")
  print(f"   minute 60: p50 {m60['p50']:.2f} ms  p90 {m60['p90']:.2f} ms  p99 {m60['p99']:.2f} ms")
  print(f"   ratio minute60/minute1: p50 {long['ratio_p50']:.3f}, mean {long['ratio_mean']:.3f}"
        f" -> flat (within 15%): {check(flat)}")
  print(f"   stream reached {long['stream_seconds_reached'] / 60:.1f} min: decoder position "
        f"{long['next_position']} (expected {long['expected_next_position']}), encoder frame "
        f"{long['next_frame']}; {long['chunks_stepped']} steps in {long['wall_s']:.0f} s")
  if long["p50_by_minute_ms"]:
    print("   p50 by stream minute (one after the other, so load drift shows too): " +
          ", ".join(f"{m}: {v:.2f}" for m, v in long["p50_by_minute_ms"].items()) + " ms")
  print("   RSS: " + ", ".join(f"{k} {v:.0f} MB" for k, v in long["rss_mb"].items()) +
        f"  [{long['section_wall_s']:.0f} s]\n")

  mel = run_worker("logmel")
  print(f"4. log-mel of {mel['audio_seconds']:.0f} s ({mel['frames']} frames), median of "
        f"{mel['repeats']}: ours (jax jit) {mel['jax_ms']:.2f} ms, librosa {mel['librosa_ms']:.2f}"
        f" ms -> librosa/ours {mel['librosa_over_jax']:.2f}x; max |diff| "
        f"{mel['max_abs_diff']:.1e}; streaming step {mel['jax_step_ms']:.3f} ms per chunk  "
        f"[{mel['section_wall_s']:.0f} s]\n")
  return {"latency": lat, "recompute": rec, "long": long, "logmel": mel,
          "checks": {"one thread": one_thread, "no cache copy": no_copies,
                     "ratio grows": grows, "flat": flat}}


def markdown_table(info: dict, results: dict[str, Any], command: str, wall_s: float) -> str:
  """The closing table, one figure per row, ready to paste into the README."""
  lat, rec, long, mel = (results[k] for k in ("latency", "recompute", "long", "logmel"))
  m1, m60, rss = long["minute_1"], long["minute_60"], long["rss_mb"]
  rows = [
      ("Machine", f"{info['cpu']}, {info['cores']} cores (shared, load {info['load_1min']:.1f}"
                  f" at start), jax {info['jax']} ({lat['backend']})"),
      (f"`perceive` per {lat['chunk_ms']:.0f} ms chunk, p50 / p90 / p99 ({lat['n']} chunks)",
       f"{lat['p50']:.2f} / {lat['p90']:.2f} / {lat['p99']:.2f} ms"),
      ("Real-time factor (compute / chunk), p50 / p99",
       f"{lat['rtf_p50']:.3f} / {lat['rtf_p99']:.3f}"),
      ("`perceive` CPU time per chunk, p50 (less sensitive to other jobs' load)",
       f"{lat['cpu_p50']:.2f} ms"),
      ("Ring caches written before / after attention: p50 per chunk (interleaved)",
       f"{lat['cache_write']['before']['p50']:.2f} / {lat['cache_write']['after']['p50']:.2f} ms"
       f" (**{lat['cache_write']['before']['p50'] / lat['cache_write']['after']['p50']:.2f}x**)"),
      ("Cache-sized copies in the compiled step, before / after",
       f"{lat['cache_write']['before']['cache_copies']} / "
       f"{lat['cache_write']['after']['cache_copies']} "
       f"({lat['cache_write']['after']['cache_copy_mb']:.1f} MB per step); top-level copies "
       f"{lat['cache_write']['before']['entry_copies']} / "
       f"{lat['cache_write']['after']['entry_copies']}"),
  ]
  for row in rec["rows"]:
    rows.append((f"Decision for the newest chunk at {row['audio_s']:.0f} s of audio: "
                 "cached step / recompute from start",
                 f"{row['cached_ms']:.2f} / {row['recompute_ms']:.0f} ms "
                 f"(**{row['ratio']:.0f}x**)"))
  rows += [
      (f"Per-chunk p50, minute 1 / minute 60{' (simulated)' if long['simulated'] else ''}",
       f"{m1['p50']:.2f} / {m60['p50']:.2f} ms (ratio **{long['ratio_p50']:.2f}**)"),
      ("Process RSS, minute 1 / minute 60", f"{rss['minute_1']:.0f} / {rss['minute_60']:.0f} MB"),
      (f"Log-mel of {mel['audio_seconds']:.0f} s of audio, librosa / ours",
       f"{mel['librosa_ms']:.1f} / {mel['jax_ms']:.1f} ms (ours **{mel['librosa_over_jax']:.1f}x**"
       " faster)"),
      ("Checks", ", ".join(f"{k} {check(v)}" for k, v in results["checks"].items())),
      ("Command, wall time", f"`{command}`, {wall_s:.0f} s"),
  ]
  lines = ["| Tiny config (`experiments/tiny.py`), batch 1, float32, one CPU thread "
           "(`NPROC=1`) | Value |", "|---|---|"]
  lines += [f"| {name} | {value} |" for name, value in rows]
  return "\n".join(lines)


def run_report(command: str, quick: bool, setup: str, name: str,
               run_sections: Callable[[str], dict], table: Callable[..., str],
               start: float) -> None:
  """The parent's part of a benchmark: prints the machine and `setup`, runs the sections
  (`run_sections(cache_dir)`, sharing a fresh compilation cache), then the Markdown
  `table(info, results, command, wall_s)` and the wall time since `start`."""
  info = machine()
  print(f"machine: {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), "
        f"load {info['load_1min']:.2f} at start; python {info['python']}, jax {info['jax']}")
  print(f"{setup} with " + " ".join(f"{k}={v}" for k, v in ONE_THREAD_ENV.items()))
  print(f"mode: {'quick (smoke test)' if quick else 'full'}\n")
  with tempfile.TemporaryDirectory(prefix=f"{name}_jax_cache_") as cache_dir:
    results = run_sections(cache_dir)
  wall_s = time.perf_counter() - start
  print("Markdown (paste into the README):\n")
  print(table(info, results, command, wall_s))
  print(f"\ntotal wall time: {wall_s:.0f} s")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
  parser.add_argument("--simulate-long", action="store_true",
                      help="reach minute 60 by advancing positions (default with --quick)")
  parser.add_argument("--worker", help=argparse.SUPPRESS)  # comma-separated sections
  parser.add_argument("--out", help=argparse.SUPPRESS)
  args = parser.parse_args()
  simulate = args.simulate_long or args.quick

  if args.worker:
    results = worker(args.worker.split(","), args.quick, simulate)
    pathlib.Path(args.out).write_text(json.dumps(results))
    return

  start = time.perf_counter()
  command = "python benchmarks/stream_step.py" + (" --quick" if args.quick else "") + (
      " --simulate-long" if args.simulate_long and not args.quick else "")
  run_report(command, args.quick, f"config: {CONFIG} (batch 1, float32); each section in "
             "its own subprocess", "stream_step",
             lambda cache_dir: run_and_print(args.quick, simulate, cache_dir), markdown_table,
             start)


if __name__ == "__main__":
  main()
