"""`audio-interaction serve` under load: how many real-time streams one process holds.

1. **Batched step per batch size** (the scaling curve): `SlotBatcher.tick` with every
   slot holding a stream, silent rows (perceive only) and speaking rows (perceive +
   `tokens_per_chunk` reply tokens), and silent with only a quarter of the slots having
   a chunk (the step gathers those rows); p50 per tick, per stream, and the streams one
   core-pair could hold at that batch if the step were all (160 ms / step x B).
2. **Host-side overhead per tick** (robust to the machine's load): the CPU time of the
   stepping thread per `tick` (Python bookkeeping, jit dispatch, transfers; XLA runs the
   step on its own threads, so the compute itself is not in it) and of building the
   tick's JSON events, against the floor of the bare jitted calls with the same shapes.
   Thread CPU time barely moves when other jobs load the machine, unlike wall times.
   With `--compare-ref REF` the same is measured for the code at git REF (exported to a
   temporary folder), side by side in this run.
3. **N localhost clients at real time**: a `serve` subprocess with N slots; N
   websocket clients in this process send generated audio (espeak-ng questions
   between silences, each client at its own phase) in 40 ms frames at real time.
   End-to-end latency per chunk = the chunk's event received minus its last frame
   sent. N is held at real time when p99 < one chunk (160 ms), nothing is dropped
   and every chunk is answered. The largest such N is the headline. Also printed: the
   server's CPU time per chunk served, all threads (XLA's included) and its event-loop
   thread alone (websocket I/O, audio decoding, events); CPU time per chunk moves far
   less with the machine's load than latencies do. With `--compare-ref REF`, REF's
   server runs each N too, right after this tree's.

The clients share the machine with the server (2 cores here), so the figures are for
the whole loop on one box. The machine and its load are printed with the figures.

Usage:
  python benchmarks/serve.py --streams 8,16,24,32,40          # the headline (quiet machine)
  python benchmarks/serve.py --compare-ref 6d6dfde --skip-scaling --streams 16,32
  python benchmarks/serve.py --quick                          # a smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

CHUNK_SECONDS = 0.16
FRAME_SECONDS = 0.04


def machine() -> str:
  model = platform.processor() or "?"
  with open("/proc/cpuinfo") as info:
    for line in info:
      if line.startswith("model name"):
        model = line.split(":", 1)[1].strip()
        break
  return f"{model}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at start"


def generated_audio(seconds: float, seed: int) -> np.ndarray:
  """Spoken questions (espeak-ng, if present) between silences, else noise bursts."""
  rng = np.random.default_rng(seed)
  pieces, total = [], 0
  texts = ("How many legs does a dog have?", "What time is it?", "Turn on the light please.",
           "What is the capital of France?")
  tmp = pathlib.Path(tempfile.mkdtemp())
  while total < seconds * 16000:
    gap = np.zeros(int(rng.uniform(0.5, 2.0) * 16000), np.float32)
    if shutil.which("espeak-ng"):
      wav = tmp / "q.wav"
      subprocess.run(["espeak-ng", "-s", "160", "-w", str(wav), texts[rng.integers(len(texts))]],
                     check=True, capture_output=True)
      from audio_interaction.audio.io import load_audio
      speech = 0.8 * load_audio(str(wav), 16000)
    else:
      speech = (0.05 * rng.normal(size=16000)).astype(np.float32)
    pieces += [gap, speech.astype(np.float32)]
    total += len(gap) + len(speech)
  shutil.rmtree(tmp, ignore_errors=True)
  return np.concatenate(pieces)[:int(seconds * 16000)]


# ------------------------------------------------------------ 1. step scaling
def step_scaling(sizes: list[int], ticks: int) -> list[tuple[int, float, float]]:
  from audio_interaction.export.portable import load_model
  from audio_interaction.infer.engine import Engine
  from audio_interaction.infer.policies import ThresholdPolicy
  from audio_interaction.infer.slots import SlotBatcher
  model, params, tokenizer, _ = load_model(None)
  engine = Engine(model)
  size = model.config.chunk_samples
  ids = tokenizer.encode("You are a helpful voice assistant. Answer briefly.")
  rng = np.random.default_rng(0)
  rows = []
  for batch in sizes:
    timings = {}
    # (name, threshold, streams with a chunk at each tick): every slot, or a quarter of
    # them, as when clients' chunks arrive at different phases.
    for name, threshold, share in (("silent", 2.0, 1), ("speaking", 0.0, 1),
                                   ("quarter", 2.0, 4)):
      if share > 1 and batch < 4:
        continue
      batcher = SlotBatcher(engine, params, batch, max_prompt_tokens=64)
      batcher.warm_up()
      streams = [batcher.join(ids, ThresholdPolicy(threshold)) for _ in range(batch)]
      seconds = []
      for tick in range(ticks + 2):
        for row, sid in streams[:batch // share] if tick >= 2 else streams:
          batcher.push(row, sid, (0.05 * rng.normal(size=size)).astype(np.float32))
        began = time.perf_counter()
        batcher.tick()
        if tick >= 2:  # the first ticks prefill the joins
          seconds.append(time.perf_counter() - began)
      timings[name] = 1000 * float(np.median(seconds))
    rows.append((batch, timings["silent"], timings["speaking"]))
    quarter = (f"; a quarter of the slots with a chunk {timings['quarter']:.1f} ms"
               if "quarter" in timings else "")
    print(f"  batch {batch:3d}: step p50 {timings['silent']:.1f} ms silent, "
          f"{timings['speaking']:.1f} ms speaking{quarter}; per stream "
          f"{timings['silent'] / batch:.2f} ms; "
          f"{1000 * CHUNK_SECONDS * batch / timings['silent']:.0f} streams' worth of real time "
          f"at this batch (silent)", flush=True)
  return rows


# ------------------------------------------------------------ 2. host overhead
def overhead_worker(slots: int, ticks: int) -> dict[str, Any]:
  """Runs in a subprocess on one tree (PYTHONPATH): CPU ms per tick of this thread.

  Uses only APIs the compared versions share (SlotBatcher, StreamEvents, Engine).
  A quarter of the rows speak (threshold 0), so the reply bookkeeping runs too.
  """
  import jax
  from audio_interaction.export.portable import load_model
  from audio_interaction.infer.engine import Engine
  from audio_interaction.infer.policies import ThresholdPolicy
  from audio_interaction.infer.slots import SlotBatcher, StreamEvents
  model, params, tokenizer, _ = load_model(None)
  engine = Engine(model)
  size = model.config.chunk_samples
  ids = tokenizer.encode("You are a helpful voice assistant. Answer briefly.")
  rng = np.random.default_rng(0)
  batcher = SlotBatcher(engine, params, slots, max_prompt_tokens=64, max_reply_tokens=48)
  batcher.warm_up()
  streams = [batcher.join(ids, ThresholdPolicy(0.0 if i % 4 == 0 else 2.0))
             for i in range(slots)]
  events = {stream: StreamEvents(tokenizer.decode, 0.5) for stream in streams}
  tick_cpu, events_cpu, tick_wall = [], [], []
  for tick in range(ticks + 3):
    for row, sid in streams:
      batcher.push(row, sid, (0.05 * rng.normal(size=size)).astype(np.float32))
    cpu, wall = time.thread_time(), time.perf_counter()
    steps = batcher.tick()
    tick_done = time.thread_time()
    wall = time.perf_counter() - wall
    for step in steps:  # the server's `Connection.on_record`: events, one JSON each
      for event in events[(step.row, step.stream_id)].events(
          step.record, lag_seconds=0.01, step_ms=1.0, batch=len(steps)):
        json.dumps(event)
    if tick >= 3:  # the first ticks prefill the joins
      tick_cpu.append(tick_done - cpu)
      events_cpu.append(time.thread_time() - tick_done)
      tick_wall.append(wall)
  # The floor: the bare jitted calls of a tick (perceive every row, speak a quarter)
  # and their transfers, with no bookkeeping around them.
  params = jax.device_put(params)  # on the device once, as the stepper keeps them
  state = engine.init_state(params, [ids] * slots)
  chunks, advance = np.zeros((slots, size), np.float32), np.ones(slots, bool)
  speaking = np.arange(slots) % 4 == 0
  floor = []
  for tick in range(ticks + 3):
    cpu = time.thread_time()
    state, probs = engine.perceive_rows(params, state, chunks, advance)
    jax.device_get((state.heard, probs))
    state, tokens, count = engine.speak(params, state, speaking, n=model.config.tokens_per_chunk)
    jax.device_get((tokens, count))
    if tick >= 3:
      floor.append(time.thread_time() - cpu)
  ms = lambda values: 1000 * float(np.median(values))
  return {"slots": slots, "tick_cpu_ms": ms(tick_cpu), "events_cpu_ms": ms(events_cpu),
          "floor_cpu_ms": ms(floor), "tick_wall_ms": ms(tick_wall)}


def exported_tree(ref: str) -> str:
  """The package at git `ref`, exported to a temporary folder (for PYTHONPATH)."""
  root = subprocess.run(["git", "rev-parse", "--show-toplevel"], check=True,
                        capture_output=True, text=True).stdout.strip()
  folder = tempfile.mkdtemp(prefix=f"serve-{ref}-")
  archive = subprocess.run(["git", "-C", root, "archive", ref, "audio_interaction"],
                           check=True, capture_output=True).stdout
  subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
  return folder


COMPILE_CACHE = tempfile.mkdtemp(prefix="serve-bench-xla-")


def tree_env(tree: str | None) -> dict[str, str]:
  """The environment of a subprocess running the package at `tree` (None: this one)."""
  env = dict(os.environ)
  # Every server of a run compiles the same steps: the persistent cache makes the later
  # ones start in seconds (a tree's different code compiles to different entries).
  env.setdefault("JAX_COMPILATION_CACHE_DIR", COMPILE_CACHE)
  env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  if tree is not None:
    env["PYTHONPATH"] = tree + os.pathsep + env.get("PYTHONPATH", "")
  return env


def host_overhead(sizes: list[int], ticks: int, trees: dict[str, str | None]) -> None:
  for slots in sizes:
    found = {}
    for name, tree in trees.items():
      output = subprocess.run(
          [sys.executable, __file__, "--overhead-worker", str(slots), "--ticks", str(ticks)],
          env=tree_env(tree), check=True, capture_output=True, text=True).stdout
      found[name] = json.loads(output.strip().splitlines()[-1])
      row = found[name]
      print(f"  batch {slots:3d} [{name}]: stepping thread CPU per tick {row['tick_cpu_ms']:.2f} ms "
            f"(bare jitted calls {row['floor_cpu_ms']:.2f} ms, so Python bookkeeping "
            f"{row['tick_cpu_ms'] - row['floor_cpu_ms']:.2f} ms); events + JSON "
            f"{row['events_cpu_ms']:.2f} ms; tick wall p50 {row['tick_wall_ms']:.1f} ms",
            flush=True)
    if len(found) == 2:
      (new_name, new), (old_name, old) = found.items()
      print(f"  batch {slots:3d}: host CPU per tick (stepping + events) {old_name} / {new_name} = "
            f"{(old['tick_cpu_ms'] + old['events_cpu_ms']) / (new['tick_cpu_ms'] + new['events_cpu_ms']):.2f}x",
            flush=True)


# ------------------------------------------------------------ 3. clients
def start_server(slots: int, log_dir: str, tree: str | None = None
                 ) -> tuple[subprocess.Popen, int]:
  process = subprocess.Popen(
      [sys.executable, "-m", "audio_interaction", "serve", "--port", "0", "--slots", str(slots),
       "--max-connections", str(slots + 4), "--log-dir", log_dir],
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=tree_env(tree))
  deadline = time.monotonic() + 300
  while time.monotonic() < deadline:
    line = process.stdout.readline()
    if not line:
      break
    found = re.search(r"serving on http://[^:]+:(\d+)/", line)
    if found:
      return process, int(found.group(1))
  process.kill()
  raise RuntimeError("the server did not start")


async def client(port: int, audio: np.ndarray, phase: float, results: dict) -> None:
  from websockets.asyncio.client import connect
  pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
  frame_bytes = int(FRAME_SECONDS * 16000) * 2
  sent_at: dict[int, float] = {}
  lags, drops, chunks = [], 0, 0
  async with connect(f"ws://127.0.0.1:{port}/ws", max_size=2**22) as ws:
    await ws.send(json.dumps({"type": "start", "sample_rate": 16000, "format": "s16le"}))
    json.loads(await ws.recv())
    await asyncio.sleep(phase)

    async def send():
      loop = asyncio.get_running_loop()
      origin = loop.time()
      for k, start in enumerate(range(0, len(pcm), frame_bytes)):
        await asyncio.sleep(max(0.0, origin + k * FRAME_SECONDS - loop.time()))
        await ws.send(pcm[start:start + frame_bytes])
        end_sample = (start + frame_bytes) // 2
        if end_sample % 2560 == 0:
          sent_at[end_sample // 2560 - 1] = time.monotonic()
      await ws.send(json.dumps({"type": "stop"}))

    sender = asyncio.create_task(send())
    async for message in ws:
      event = json.loads(message)
      if event["event"] == "chunk":
        chunks += 1
        if event["chunk"] in sent_at:
          lags.append(time.monotonic() - sent_at[event["chunk"]])
      elif event["event"] == "drop":
        drops += 1
      elif event["event"] == "end":
        break
    await sender
  results["lags"] += lags
  results["drops"] += drops
  results["chunks"] += chunks
  results["expected"] += len(audio) // 2560


async def run_clients(port: int, streams: int, seconds: float) -> dict:
  results = {"lags": [], "drops": 0, "chunks": 0, "expected": 0}
  audios = [generated_audio(seconds, seed) for seed in range(min(streams, 4))]
  rng = np.random.default_rng(1)
  await asyncio.wait_for(asyncio.gather(*(
      client(port, audios[i % len(audios)], float(rng.uniform(0, CHUNK_SECONDS)), results)
      for i in range(streams))), timeout=seconds * 3 + 60)
  return results


def held_at_real_time(results: dict) -> bool:
  lags = results["lags"]
  return bool(lags) and float(np.percentile(lags, 99)) < CHUNK_SECONDS and (
      results["drops"] == 0 and results["chunks"] >= results["expected"])


def cpu_seconds(pid: int, thread: int | None = None) -> float:
  """CPU time (user + system) of a process, or of one of its threads."""
  path = f"/proc/{pid}/task/{thread}/stat" if thread is not None else f"/proc/{pid}/stat"
  with open(path) as stat:
    fields = stat.read().rsplit(")", 1)[1].split()
  return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve_clients(streams: int, seconds: float, log_dir: str, tree: str | None) -> dict:
  """One server with `streams` slots, `streams` clients; latencies and server CPU."""
  process, port = start_server(streams, log_dir, tree)
  try:
    load = os.getloadavg()[0]
    # The event loop runs in the server's main thread (its id is the process id).
    loop_cpu, total_cpu = cpu_seconds(process.pid, process.pid), cpu_seconds(process.pid)
    began = time.monotonic()
    results = asyncio.run(run_clients(port, streams, seconds))
    wall = time.monotonic() - began
    loop_cpu = cpu_seconds(process.pid, process.pid) - loop_cpu
    total_cpu = cpu_seconds(process.pid) - total_cpu
  finally:
    process.terminate()
    process.wait(timeout=20)
  lags = np.asarray(results["lags"]) * 1000
  return {**results, "load": load, "p50": float(np.percentile(lags, 50)),
          "p99": float(np.percentile(lags, 99)), "held": held_at_real_time(results),
          "loop_ms_per_chunk": 1000 * loop_cpu / max(results["chunks"], 1),
          "server_ms_per_chunk": 1000 * total_cpu / max(results["chunks"], 1),
          "server_cores": total_cpu / wall}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
  parser.add_argument("--seconds", type=float, default=None, help="stream length per client")
  parser.add_argument("--streams", default=None,
                      help="client counts to try in order, e.g. 8,16,24,32,40 (stops at the "
                           "first N not held)")
  parser.add_argument("--sizes", default=None, help="batch sizes of the scaling curve")
  parser.add_argument("--overhead-sizes", default=None,
                      help="batch sizes of the host-overhead section, e.g. 8,32")
  parser.add_argument("--skip-scaling", action="store_true", help="no step-scaling section")
  parser.add_argument("--skip-overhead", action="store_true", help="no host-overhead section")
  parser.add_argument("--skip-clients", action="store_true", help="no client section")
  parser.add_argument("--compare-ref", default=None,
                      help="git ref of the code to compare against (sections 2 and 3)")
  parser.add_argument("--ticks", type=int, default=None, help=argparse.SUPPRESS)
  parser.add_argument("--overhead-worker", type=int, default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.overhead_worker is not None:
    print(json.dumps(overhead_worker(args.overhead_worker, args.ticks or 30)))
    return
  began = time.monotonic()
  parse = lambda text: [int(n) for n in text.split(",")]
  sizes = parse(args.sizes) if args.sizes else (
      [1, 4] if args.quick else [1, 2, 4, 8, 16, 32, 48, 64])
  overhead_sizes = parse(args.overhead_sizes) if args.overhead_sizes else (
      [4] if args.quick else [32])
  counts = parse(args.streams) if args.streams else (
      [2, 4] if args.quick else [8, 16, 24, 32, 40, 48, 64])
  seconds = args.seconds or (3.0 if args.quick else 20.0)
  trees: dict[str, str | None] = {"this tree": None}
  if args.compare_ref:
    trees[args.compare_ref] = exported_tree(args.compare_ref)
  print(f"Machine: {machine()}; jax on CPU; tiny model (embedded bundle)", flush=True)

  if not args.skip_scaling:
    print("1. batched step per batch size (tiny model, every slot streaming):", flush=True)
    step_scaling(sizes, ticks=5 if args.quick else 40)

  if not args.skip_overhead:
    print("2. host-side CPU per tick, outside the XLA compute (thread CPU time, p50; robust "
          "to load; a quarter of the rows speaking):", flush=True)
    host_overhead(overhead_sizes, 10 if args.quick else 30, trees)

  if args.skip_clients:
    return
  print(f"3. N localhost clients at real time ({seconds:g} s each, {FRAME_SECONDS * 1000:.0f} ms "
        "frames, random phases; server and clients on this machine):", flush=True)
  best = {name: 0 for name in trees}
  tried = []
  log_dir = tempfile.mkdtemp()
  for streams in counts:
    for name, tree in trees.items():
      if best[name] < (tried[-1] if tried else 0):
        continue  # this tree already failed a smaller N
      run = serve_clients(streams, seconds, log_dir, tree)
      print(f"  N={streams:3d} [{name}]: latency chunk in -> decision out p50 {run['p50']:.1f} ms, "
            f"p99 {run['p99']:.1f} ms; chunks {run['chunks']}/{run['expected']}, drops "
            f"{run['drops']}; server CPU per chunk {run['server_ms_per_chunk']:.2f} ms (event "
            f"loop {run['loop_ms_per_chunk']:.2f} ms), {run['server_cores']:.2f} cores; "
            f"load {run['load']:.1f}; "
            f"{'held at real time' if run['held'] else 'NOT held at real time'}", flush=True)
      if run["held"]:
        best[name] = streams
    tried.append(streams)
    if all(best[name] < streams for name in trees):
      break
  shutil.rmtree(log_dir, ignore_errors=True)
  shutil.rmtree(COMPILE_CACHE, ignore_errors=True)
  for name in trees:
    print(f"Largest N held at real time [{name}] (p99 < {CHUNK_SECONDS * 1000:.0f} ms, no drops, "
          f"every chunk answered): {best[name]} streams (tried {', '.join(map(str, tried))})",
          flush=True)
  print(f"wall time {time.monotonic() - began:.0f} s", flush=True)


if __name__ == "__main__":
  main()
