r"""What the prosody turn-end signal costs a live stream, beside the log-mel front end.

`infer.hybrid_signal="prosody"` runs `audio.prosody.ProsodyTracker` on the host for every
chunk of every stream (YIN pitch, level and periodicity of the chunk's new 10 ms frames,
then 14 numbers over the last 10 s). This times one chunk's `push` (after `--history`
seconds of speech-like audio, so the history is full) beside one streaming log-mel step on
the same chunk (`features.StreamingLogMel`, what perception pays before the model), and
prints their ratio and the share of the chunk's real time each takes.

Run::

  python benchmarks/prosody_cost.py            # 160 ms chunks, 200 timed chunks
  python benchmarks/prosody_cost.py --quick    # smoke test: 20 chunks
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import jax
import numpy as np

from audio_interaction.audio import features, prosody

RATE = 16000


def voiced_audio(seconds: float, rng: np.random.Generator) -> np.ndarray:
  """Speech-like test audio: 0.4 s tones of wandering pitch with 0.1 s pauses, in noise."""
  out, hz = [], 150.0
  while sum(len(x) for x in out) < seconds * RATE:
    hz = float(np.clip(hz * 2 ** (rng.normal(0, 2) / 12), 90, 300))
    t = np.arange(int(0.4 * RATE)) / RATE
    out += [0.2 * np.sin(2 * np.pi * hz * t), np.zeros(int(0.1 * RATE))]
  audio = np.concatenate(out)[:int(seconds * RATE)]
  return (audio + 0.003 * rng.normal(size=audio.size)).astype(np.float32)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--chunk-ms", type=int, default=160)
  parser.add_argument("--chunks", type=int, default=200, help="timed chunks")
  parser.add_argument("--history", type=float, default=prosody.HISTORY_SECONDS)
  parser.add_argument("--quick", action="store_true", help="smoke test: 20 chunks")
  args = parser.parse_args()
  chunks = 20 if args.quick else args.chunks
  chunk = RATE * args.chunk_ms // 1000
  rng = np.random.default_rng(0)
  audio = voiced_audio(args.history + chunks * chunk / RATE, rng)
  warm = int(args.history * RATE) // chunk * chunk

  tracker = prosody.ProsodyTracker()
  for start in range(0, warm, chunk):
    tracker.push(audio[start:start + chunk])
  frontend = features.StreamingLogMel(features.LogMelConfig())
  state = frontend.init_state(1)
  step = jax.jit(frontend.step)
  state, mel = step(state, audio[None, :chunk])  # compile
  jax.block_until_ready(mel)

  prosody_s, logmel_s = [], []
  for c in range(chunks):
    piece = audio[warm + c * chunk:warm + (c + 1) * chunk]
    began = time.perf_counter()
    tracker.push(piece)
    prosody_s.append(time.perf_counter() - began)
    began = time.perf_counter()
    state, mel = step(state, piece[None])
    jax.block_until_ready(mel)
    logmel_s.append(time.perf_counter() - began)
  p, m = statistics.median(prosody_s), statistics.median(logmel_s)
  chunk_s = chunk / RATE
  print(f"{platform.machine()} ({platform.processor() or 'cpu'}), {chunks} chunks of "
        f"{args.chunk_ms} ms after {args.history:g} s of history; medians")
  print("| per chunk | time | share of the chunk's real time |")
  print("|---|---|---|")
  print(f"| prosody (`ProsodyTracker.push`) | {1e3 * p:.2f} ms | {100 * p / chunk_s:.2f} % |")
  print(f"| streaming log-mel step | {1e3 * m:.2f} ms | {100 * m / chunk_s:.2f} % |")
  print(f"prosody / log-mel: {p / m:.2f}x")


if __name__ == "__main__":
  main()
