r"""What does the live loop cost and how fast does it answer? Compute, an hour's memory, latency.

Run::

  python benchmarks/live_loop.py                # full run (the hour-long stream: minutes)
  python benchmarks/live_loop.py --quick        # smoke test, about a minute
  python benchmarks/live_loop.py --bundle DIR   # another model bundle (default: embedded tiny)

With the embedded tiny model (`audio_interaction/assets/tiny`), batch 1, float32, the
whole `infer.live.LiveSession` (reader task, bounded queue, model step in its thread,
JSONL log; no terminal view) over generated held-out streams, it measures:

1. per-chunk compute of the loop's step (perceive + up to `tokens_per_chunk` reply
   tokens when speaking) p50/p90/p99 and the real-time factor; the loop's own
   overhead per chunk (wall time minus compute); and a stream played at real time
   (speed 1): lag p50/p99 and dropped chunks;
2. a 60-minute stream (generated streams of several sub-tasks, cycled) read as fast
   as the loop goes: wall time (x real time), resident memory (VmRSS) at minute 5
   vs minute 60, and per-chunk compute in minute 5 vs minute 60 -- flat, or the loop
   keeps something per chunk;
3. stream-time response latency on voice-chat streams (end of the question -> first
   reply token) of the model vs the silence-timer baseline (a VAD + 700 ms of
   silence, `infer.endpointing.SilenceTimer`) on the same streams, with miss and
   cut-in rates (`eval.metrics`);
4. a 120-minute 44.1 kHz stereo FLAC (written on the fly in a temp dir) read by
   `infer.sources.FileSource` as fast as it goes -- decoded block by block, mixed
   down and resampled to 16 kHz by the streaming resampler (`audio.io.stream_audio`):
   resident memory at minute 5 vs minute 120 of the file, and the process's peak.
   The source alone (the loop's own memory over a long stream is section 2): this is
   what used to decode the file whole (a 2-hour file peaked at 5.25 GB).

As in `benchmarks/stream_step.py`, sections run in subprocesses restricted to one
XLA thread (`ONE_THREAD_ENV`): one process per section in the full run (each RSS
reading covers one job), one for all with ``--quick``. The parent prints the
machine, each section as it finishes, and a Markdown table for the README.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.util
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere, package not installed
  sys.path.insert(0, str(REPO))


def import_path(name: str, path: pathlib.Path):
  """Imports a module from a file (benchmarks/ is not a package)."""
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


# Shared with the step benchmark: one-thread environment, RSS, percentiles, machine.
stream_step = import_path("stream_step_benchmark", REPO / "benchmarks" / "stream_step.py")
ONE_THREAD_ENV, rss_mb, percentiles_ms = (stream_step.ONE_THREAD_ENV, stream_step.rss_mb,
                                          stream_step.percentiles_ms)
check = stream_step.check

CHAT = ("chat_single", "chat_multi_turn", "chat_mid_pause", "chat_fillers")
# The long stream cycles these (speech, pauses, alarms, barge-ins, background sounds).
LONG_POOL = CHAT + ("alert_alarm", "control_barge_in", "asr_noisy", "env_what_sound")
RESPONSE_WINDOW_S = 2.0  # a reply answers a turn if it starts within this after its end
SEED = 9000  # held-out streams, away from heldout.py's seeds


# --------------------------------------------------------------------- helpers
def load(bundle: str | None):
  """(engine, params, tokenizer, note) of the bundle (default: the embedded tiny model)."""
  from audio_interaction.export.portable import load_model
  from audio_interaction.infer.engine import Engine
  model, params, tokenizer, note = load_model(None, bundle)
  return Engine(model), params, tokenizer, note


def build_streams(names: tuple[str, ...], per_name: int, chunk_ms: int) -> list:
  """[(sub-task, timeline, audio [S])] from held-out voices, sounds and world items."""
  from audio_interaction.corpus import tasks, worlds
  from audio_interaction.corpus.timeline import render
  from audio_interaction.corpus.build import heldout_sources as default_sources
  speech, sounds = default_sources()
  config = tasks.TaskConfig(split=worlds.HELDOUT, chunk_ms=chunk_ms)
  streams = []
  for k in range(per_name):
    for name in names:
      timeline = tasks.build(name, SEED + k, speech, sounds, config)
      streams.append((name, timeline, render(timeline, chunk_ms=chunk_ms)))
  return streams


def run_session(engine, params, tokenizer, source, *, instruction: str, log_path=None,
                on_event=None, keep_seconds: float = 120.0, threshold: float = 0.5):
  """One `LiveSession` over `source`; returns (result, chunk events, wall seconds)."""
  from audio_interaction.infer.live import JsonlLog, LiveConfig, LiveSession
  chunks: list[dict] = []

  def collect(event: dict) -> None:
    if event["event"] == "chunk":
      chunks.append(event)
    if on_event is not None:
      on_event(event)

  config = LiveConfig(instruction=instruction, threshold=threshold, keep_seconds=keep_seconds)
  sinks = ([JsonlLog(log_path)] if log_path is not None else []) + [collect]
  session = LiveSession(engine, params, tokenizer, config, sinks)
  start = time.perf_counter()
  result = asyncio.run(session.run(source))
  return result, chunks, time.perf_counter() - start


class CyclingSource:
  """`minutes` of audio from a pool of streams played one after the other, unpaced.

  Pieces are views into the pool, so the source itself holds no more memory as the
  stream goes on: what grows in RSS is the loop's.
  """

  paced = False
  sample_rate = 16000

  def __init__(self, pool: list, minutes: float, piece_ms: float = 20.0):
    self.pool, self.total = pool, int(minutes * 60 * self.sample_rate)
    self.piece = int(piece_ms * self.sample_rate / 1000)
    self.name = f"{len(pool)} generated streams cycled for {minutes:g} min"

  async def pieces(self) -> AsyncIterator:
    done, k = 0, 0
    while done < self.total:
      audio = self.pool[k % len(self.pool)]
      k += 1
      for start in range(0, len(audio), self.piece):
        piece = audio[start:start + min(self.piece, self.total - done)]
        done += len(piece)
        yield piece
        await asyncio.sleep(0)
        if done >= self.total:
          return

  def __aiter__(self):
    return self.pieces()


def peak_rss_mb() -> float:
  """Peak resident set size of this process in MB (VmHWM)."""
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) / 1024
  return float("nan")


# -------------------------------------------------------------------- sections
def section_latency(quick: bool, bundle: str | None) -> dict:
  """1. Per-chunk compute of the live step, loop overhead, and a real-time run."""
  import numpy as np
  from audio_interaction.infer.sources import ArraySource
  engine, params, tokenizer, note = load(bundle)
  cfg = engine.model.config
  chunk_s = cfg.chunk_samples / cfg.sample_rate
  streams = build_streams(CHAT, 1 if quick else 4, round(1000 * chunk_s))
  # Warm-up: threshold 0 speaks at every chunk, so perceive and speak both compile.
  _, _, warm_wall = run_session(engine, params, tokenizer,
                           ArraySource(streams[0][2][:12 * cfg.chunk_samples]),
                           instruction=streams[0][1].instruction, threshold=0.0)
  compute, speaking, loop_overhead, spoke = [], [], [], 0
  for _, timeline, audio in streams:
    _, chunks, wall = run_session(engine, params, tokenizer, ArraySource(audio),
                                  instruction=timeline.instruction)
    loop_overhead.append((wall - sum(c["compute_ms"] for c in chunks) / 1000) / len(chunks))
    compute += [c["compute_ms"] / 1000 for c in chunks]
    speaking += [c["compute_ms"] / 1000 for c in chunks if c["spoke"]]
    spoke += sum(c["spoke"] for c in chunks)
  stats = percentiles_ms(compute)
  # A speaking chunk also writes up to tokens_per_chunk tokens: its own cost.
  speak_p50 = percentiles_ms(speaking)["p50"] if speaking else float("nan")

  # Real time: the streams one after the other, played at speed 1.
  seconds = 5.0 if quick else 30.0
  audio = np.concatenate([a for _, _, a in streams])
  while len(audio) < seconds * 16000:
    audio = np.concatenate([audio, audio])
  audio = audio[:int(seconds * 16000)]
  result, chunks, wall = run_session(engine, params, tokenizer, ArraySource(audio, speed=1.0),
                                     instruction=streams[0][1].instruction)
  lags = sorted(c["lag_seconds"] for c in chunks)
  return {
      "note": note, "chunk_ms": 1000 * chunk_s, "streams": len(streams), "spoke": spoke,
      **stats, "rtf_p50": stats["p50"] / 1000 / chunk_s, "rtf_p99": stats["p99"] / 1000 / chunk_s,
      "first_call_s": warm_wall, "speaking_p50": speak_p50,
      "loop_overhead_ms": 1000 * statistics.median(loop_overhead) if loop_overhead else float("nan"),
      "realtime": {"seconds": seconds, "wall_s": wall, "chunks": result.chunks,
                   "dropped": result.dropped, "lag_p50_s": lags[len(lags) // 2],
                   "lag_p99_s": lags[min(len(lags) - 1, int(0.99 * len(lags)))],
                   "lag_max_s": result.max_lag_seconds},
  }


def section_long(quick: bool, bundle: str | None) -> dict:
  """2. An hour-long stream faster than real time: RSS and compute, minute 5 vs minute 60."""
  engine, params, tokenizer, _ = load(bundle)
  cfg = engine.model.config
  chunk_s = cfg.chunk_samples / cfg.sample_rate
  minutes, early, late = (2.0, 1, 2) if quick else (60.0, 5, 60)
  pool = [a for _, _, a in build_streams(LONG_POOL, 1, round(1000 * chunk_s))]
  gc.collect()
  rss = {"start": rss_mb()}
  per_minute = round(60 / chunk_s)
  marks = {early * per_minute - 1: f"minute_{early}", late * per_minute - 1: f"minute_{late}"}

  def mark(event: dict) -> None:
    if event["event"] == "chunk" and event["chunk"] in marks:
      gc.collect()  # what is still referenced, not what the collector has yet to free
      rss[marks[event["chunk"]]] = rss_mb()

  with tempfile.TemporaryDirectory() as tmp:
    log = pathlib.Path(tmp) / "events.jsonl"
    result, chunks, wall = run_session(engine, params, tokenizer, CyclingSource(pool, minutes),
                                       instruction="You are a helpful voice assistant. "
                                                   "Answer briefly.",
                                       log_path=log, on_event=mark)
    log_mb = log.stat().st_size / 2 ** 20
  window = lambda m: [c["compute_ms"] / 1000 for c in chunks[(m - 1) * per_minute:m * per_minute]]
  early_stats, late_stats = percentiles_ms(window(early)), percentiles_ms(window(late))
  return {
      "minutes": minutes, "early": early, "late": late, "rss_mb": rss, "wall_s": wall,
      "x_real_time": result.stream_seconds / wall, "chunks": result.chunks,
      "dropped": result.dropped, "replies": sum(1 for c in chunks if c["spoke"]),
      "early_ms": early_stats, "late_ms": late_stats,
      "ratio_p50": late_stats["p50"] / early_stats["p50"], "log_mb": log_mb,
  }


def section_response(quick: bool, bundle: str | None, vad: str) -> dict:
  """3. End of question -> first reply token: the model vs the silence timer."""
  from audio_interaction.infer.sources import ArraySource
  from audio_interaction.eval import metrics
  from audio_interaction.infer.endpointing import SilenceTimer
  engine, params, tokenizer, _ = load(bundle)
  cfg = engine.model.config
  chunk_s = cfg.chunk_seconds
  timer = SilenceTimer(silence_seconds=0.7, vad=vad, chunk_seconds=chunk_s)
  streams = build_streams(CHAT, 1 if quick else 8, round(1000 * chunk_s))
  latencies = {"model": [], "timer": []}
  turns_all, starts_all = [], {"model": [], "timer": []}
  for name, timeline, audio in streams:
    result, _, _ = run_session(engine, params, tokenizer, ArraySource(audio),
                               instruction=timeline.instruction)
    starts = {"model": [start for start, _, _ in result.replies],
              "timer": timer.response_times(audio)}
    ends = [reply.ready_time for reply in timeline.replies]
    # Each turn: from the first word of the utterance it answers to the question's end.
    turns = []
    for end in ends:
      before = [u.words[0].start for u in timeline.utterances if u.words[0].start < end]
      turns.append((max(before) if before else 0.0, end))
    for policy in latencies:
      latencies[policy] += metrics.response_latencies(ends, starts[policy], RESPONSE_WINDOW_S)
      # Cut-ins are counted per stream (the turns' own replies).
      starts_all[policy].append((turns, starts[policy]))
    turns_all += turns
  out = {"vad": vad, "streams": len(streams), "turns": len(turns_all),
         "window_s": RESPONSE_WINDOW_S}
  for policy, values in latencies.items():
    cut_in = [metrics.spans_with_reply(t, s) for t, s in starts_all[policy]]
    flat = [hit for hits in cut_in for hit in hits]
    out[policy] = {**metrics.summarize(values), "miss_rate": metrics.miss_rate(values),
                   "cut_in_rate": metrics.rate(sum(flat), len(flat))}
  return out


def write_long_file(path: pathlib.Path, minutes: float, rate: int = 44100) -> None:
  """A `minutes`-long 44.1 kHz stereo FLAC written second by second (two drifting tones
  and noise, so the codec has work to do): what a long field recording looks like."""
  import numpy as np
  import soundfile
  rng = np.random.default_rng(0)
  t = np.arange(rate) / rate
  with soundfile.SoundFile(path, "w", rate, 2, subtype="PCM_16") as file:
    for second in range(int(minutes * 60)):
      f = 200 + 5 * (second % 60)
      left = 0.3 * np.sin(2 * np.pi * f * (t + second)) + 0.02 * rng.standard_normal(rate)
      right = 0.2 * np.sin(2 * np.pi * 1.5 * f * (t + second)) + 0.02 * rng.standard_normal(rate)
      file.write(np.stack([left, right], 1).astype(np.float32))
    file.write(np.zeros((rate // 3 + 7, 2), np.float32))  # an odd length


def section_file(quick: bool, bundle: str | None) -> dict:
  """4. A long 44.1 kHz stereo file through FileSource: RSS at minute 5 vs minute 120."""
  del bundle  # no model: the source's own memory
  from audio_interaction.infer.sources import FileSource
  minutes, early, late = (3.0, 1, 3) if quick else (120.0, 5, 120)
  with tempfile.TemporaryDirectory() as tmp:
    path = pathlib.Path(tmp) / "long_44k_stereo.flac"
    start = time.perf_counter()
    write_long_file(path, minutes)
    write_s = time.perf_counter() - start
    file_mb = path.stat().st_size / 2 ** 20
    gc.collect()
    rss = {"start": rss_mb()}
    marks = {m * 60 * 16000: f"minute_{m}" for m in (early, late)}

    async def read() -> int:
      done, pending = 0, sorted(marks)
      async for piece in FileSource(path, speed=float("inf")):
        done += len(piece)
        while pending and done >= pending[0]:
          gc.collect()
          rss[marks[pending.pop(0)]] = rss_mb()
      return done

    start = time.perf_counter()
    samples = asyncio.run(read())
    read_s = time.perf_counter() - start
  return {"minutes": minutes, "early": early, "late": late, "rss_mb": rss,
          "peak_mb": peak_rss_mb(), "file_mb": file_mb, "write_s": write_s, "read_s": read_s,
          "x_real_time": samples / 16000 / read_s, "seconds_at_16k": samples / 16000}


SECTIONS = {"latency": section_latency, "long": section_long, "response": section_response,
            "file": section_file}


# ---------------------------------------------------------------------- parent
def run_workers(sections: list[str], args: argparse.Namespace, cache_dir: str) -> dict:
  """Runs `sections` in order in one one-thread subprocess; returns {section: result}."""
  import os
  env = {**os.environ, **ONE_THREAD_ENV, "JAX_COMPILATION_CACHE_DIR": cache_dir,
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
  with tempfile.TemporaryDirectory() as tmp:
    out = pathlib.Path(tmp) / "result.json"
    command = [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker",
               ",".join(sections), "--out", str(out), "--vad", args.vad]
    command += ["--quick"] if args.quick else []
    command += ["--bundle", args.bundle] if args.bundle else []
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO)
    if done.returncode:
      sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
      raise RuntimeError(f"sections {sections} failed (exit {done.returncode})")
    return json.loads(out.read_text())


def worker(sections: list[str], args: argparse.Namespace) -> dict:
  results = {}
  for name in sections:
    start = time.perf_counter()
    if name == "response":
      results[name] = section_response(args.quick, args.bundle, args.vad)
    else:
      results[name] = SECTIONS[name](args.quick, args.bundle)
    results[name]["section_wall_s"] = time.perf_counter() - start
  return results


def run_and_print(args: argparse.Namespace, cache_dir: str) -> dict:
  """Runs the sections (one process each, or one for all with --quick), printing each."""
  order = ["latency", "long", "response", "file"]
  batched = run_workers(order, args, cache_dir) if args.quick else {}
  get = lambda s: batched[s] if args.quick else run_workers([s], args, cache_dir)[s]

  lat = get("latency")
  rt = lat["realtime"]
  print(f"1. live step per {lat['chunk_ms']:.0f} ms chunk over {lat['streams']} voice-chat "
        f"streams ({lat['n']} chunks after a warm-up stream, {lat['spoke']} of them speaking); "
        f"model: {lat['note']}")
  print(f"   compute p50 {lat['p50']:.2f} ms  p90 {lat['p90']:.2f} ms  p99 {lat['p99']:.2f} ms; "
        f"real-time factor p50 {lat['rtf_p50']:.3f}, p99 {lat['rtf_p99']:.3f}; first session "
        f"(12 chunks, compiles the steps) {lat['first_call_s']:.1f} s")
  print(f"   speaking chunks (perceive + reply tokens) p50 {lat['speaking_p50']:.2f} ms; loop "
        f"overhead (reader, queue, thread hop, log) {lat['loop_overhead_ms']:.2f} ms/chunk")
  print(f"   played at real time for {rt['seconds']:.0f} s: {rt['chunks']} chunks, dropped "
        f"{rt['dropped']}, lag p50 {rt['lag_p50_s']:.3f} s, p99 {rt['lag_p99_s']:.3f} s, max "
        f"{rt['lag_max_s']:.3f} s  [{lat['section_wall_s']:.0f} s]\n")

  long = get("long")
  rss, e, l = long["rss_mb"], long["early"], long["late"]
  flat_rss = rss[f"minute_{l}"] - rss[f"minute_{e}"] <= max(20.0, 0.05 * rss[f"minute_{e}"])
  flat_ms = abs(long["ratio_p50"] - 1) <= 0.25
  print(f"2. a {long['minutes']:.0f}-minute stream, unpaced: {long['chunks']} chunks in "
        f"{long['wall_s']:.0f} s ({long['x_real_time']:.1f}x real time), dropped "
        f"{long['dropped']}, {long['replies']} chunks spoke; JSONL log {long['log_mb']:.1f} MB")
  print(f"   RSS: start {rss['start']:.0f} MB, minute {e} {rss[f'minute_{e}']:.0f} MB, minute "
        f"{l} {rss[f'minute_{l}']:.0f} MB -> flat (within max(20 MB, 5%)): {check(flat_rss)}")
  print(f"   compute p50 minute {e} {long['early_ms']['p50']:.2f} ms, minute {l} "
        f"{long['late_ms']['p50']:.2f} ms (ratio {long['ratio_p50']:.2f}) -> flat (within 25%): "
        f"{check(flat_ms)}  [{long['section_wall_s']:.0f} s]\n")

  resp = get("response")
  if "error" in resp:
    print(f"3. response latency: FAILED: {resp['error']}\n")
  else:
    print(f"3. response latency, end of question -> first reply token (stream time), "
          f"{resp['turns']} turns in {resp['streams']} voice-chat streams, window "
          f"{resp['window_s']:.1f} s; baseline: {resp['vad']} VAD + 700 ms silence")
    print(f"   {'policy':<22} {'median':>8} {'p90':>8} {'answered':>9} {'miss':>6} {'cut-in':>7}")
    for policy, label in (("model", "model (P(SPEAK)>=0.5)"), ("timer", "silence timer")):
      r = resp[policy]
      print(f"   {label:<22} {r['median']:>7.2f}s {r['p90']:>7.2f}s {r['count']:>9} "
            f"{r['miss_rate']:>6.0%} {r['cut_in_rate']:>7.0%}")
    print(f"   [{resp['section_wall_s']:.0f} s]\n")

  file = get("file")
  frss, fe, fl = file["rss_mb"], file["early"], file["late"]
  flat_file = frss[f"minute_{fl}"] - frss[f"minute_{fe}"] <= max(20.0, 0.05 * frss[f"minute_{fe}"])
  print(f"4. a {file['minutes']:.0f}-minute 44.1 kHz stereo FLAC ({file['file_mb']:.0f} MB, written "
        f"in {file['write_s']:.0f} s) through FileSource (block decode, mix-down, streaming "
        f"resample to 16 kHz): {file['seconds_at_16k']:.1f} s of audio in {file['read_s']:.0f} s "
        f"({file['x_real_time']:.0f}x real time)")
  print(f"   RSS: start {frss['start']:.0f} MB, minute {fe} {frss[f'minute_{fe}']:.0f} MB, minute "
        f"{fl} {frss[f'minute_{fl}']:.0f} MB -> flat (within max(20 MB, 5%)): {check(flat_file)}; "
        f"process peak {file['peak_mb']:.0f} MB  [{file['section_wall_s']:.0f} s]\n")
  return {"latency": lat, "long": long, "response": resp, "file": file,
          "checks": {"RSS flat": flat_rss, "compute flat": flat_ms,
                     "real time, no drops": rt["dropped"] == 0, "file RSS flat": flat_file}}


def markdown_table(info: dict, results: dict, command: str, wall_s: float) -> str:
  lat, long, resp = results["latency"], results["long"], results["response"]
  rt, rss = lat["realtime"], long["rss_mb"]
  e, l = long["early"], long["late"]
  rows = [
      ("Machine", f"{info['cpu']}, {info['cores']} cores (shared, load {info['load_1min']:.1f} "
                  f"at start), jax {info['jax']}"),
      (f"Live step per {lat['chunk_ms']:.0f} ms chunk, p50 / p90 / p99 ({lat['n']} chunks)",
       f"{lat['p50']:.2f} / {lat['p90']:.2f} / {lat['p99']:.2f} ms"),
      ("Real-time factor, p50 / p99", f"{lat['rtf_p50']:.3f} / {lat['rtf_p99']:.3f}"),
      ("Speaking chunk (perceive + reply tokens), p50", f"{lat['speaking_p50']:.2f} ms"),
      ("Loop overhead (reader, queue, thread hop, log) per chunk",
       f"{lat['loop_overhead_ms']:.2f} ms"),
      (f"Played at real time ({rt['seconds']:.0f} s): lag p50 / p99, dropped",
       f"{rt['lag_p50_s']:.3f} / {rt['lag_p99_s']:.3f} s, {rt['dropped']}"),
      (f"{long['minutes']:.0f}-minute stream: wall time", f"{long['wall_s']:.0f} s "
                                                          f"({long['x_real_time']:.1f}x real time)"),
      (f"RSS minute {e} / minute {l}", f"{rss[f'minute_{e}']:.0f} / {rss[f'minute_{l}']:.0f} MB"),
      (f"Compute p50 minute {e} / minute {l}",
       f"{long['early_ms']['p50']:.2f} / {long['late_ms']['p50']:.2f} ms"),
  ]
  if "error" not in resp:
    for policy, label in (("model", "model"), ("timer", f"silence timer ({resp['vad']} + 700 ms)")):
      r = resp[policy]
      rows.append((f"Response latency, {label}: median / p90, miss, cut-in ({resp['turns']} turns)",
                   f"{r['median']:.2f} / {r['p90']:.2f} s, {r['miss_rate']:.0%}, "
                   f"{r['cut_in_rate']:.0%}"))
  file = results["file"]
  fe, fl = file["early"], file["late"]
  rows.append((f"{file['minutes']:.0f}-minute 44.1 kHz stereo FLAC through FileSource: RSS minute "
               f"{fe} / minute {fl}, peak",
               f"{file['rss_mb'][f'minute_{fe}']:.0f} / {file['rss_mb'][f'minute_{fl}']:.0f} MB, "
               f"{file['peak_mb']:.0f} MB ({file['x_real_time']:.0f}x real time)"))
  rows += [("Checks", ", ".join(f"{k} {check(v)}" for k, v in results["checks"].items())),
           ("Command, wall time", f"`{command}`, {wall_s:.0f} s")]
  lines = ["| Live loop, tiny model, batch 1, one XLA thread (`NPROC=1`) | Value |", "|---|---|"]
  return "\n".join(lines + [f"| {name} | {value} |" for name, value in rows])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
  parser.add_argument("--bundle", default=None, help="model bundle (default: the embedded one)")
  parser.add_argument("--vad", default="silero", help="the silence timer's VAD")
  parser.add_argument("--worker", help=argparse.SUPPRESS)
  parser.add_argument("--out", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    pathlib.Path(args.out).write_text(json.dumps(worker(args.worker.split(","), args)))
    return
  start = time.perf_counter()
  command = "python benchmarks/live_loop.py" + (" --quick" if args.quick else "")
  stream_step.run_report(command, args.quick, "each section in a subprocess", "live_loop",
                         lambda cache_dir: run_and_print(args, cache_dir), markdown_table,
                         start)


if __name__ == "__main__":
  main()
