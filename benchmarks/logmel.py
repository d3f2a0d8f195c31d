r"""Log-mel speed: our jitted JAX front end vs librosa, side by side on the same audio.

Run::

  python benchmarks/logmel.py            # 10 s of audio
  python benchmarks/logmel.py 60         # 60 s of audio
  python benchmarks/logmel.py --quick    # smoke test: 2 s, 3 repeats

Prints a table (median of several timed repeats after a warm-up) and the ratio
librosa / JAX (> 1 means JAX is faster). Also times one streaming step on a single
160 ms chunk, the per-chunk cost the live loop pays. `measure` returns the same
figures as a dict for `benchmarks/stream_step.py`.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import jax
import librosa
import numpy as np

from audio_interaction.audio import features


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
  fn()  # warm-up: compilation, caches, librosa's lazy imports
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def measure(seconds: float = 10.0, repeats: int = 7, chunk_ms: int = 160,
            config: features.LogMelConfig | None = None, verbose: bool = True) -> dict:
  """Times log-mel of ``seconds`` of 16 kHz audio (batch 1, float32) with JAX and librosa.

  Both compute the same features: the causal framing (left padding of
  ``n_fft - hop`` zeros), power spectrum, Slaney mel filterbank, Whisper-style log.

  Args:
    seconds: audio length; rounded down to whole hops.
    repeats: timed repeats per method (the median is reported).
    chunk_ms: chunk length for the streaming-step timing.
    config: front-end parameters; default `features.LogMelConfig()`.
    verbose: print the table.

  Returns:
    A dict with ``audio_seconds``, ``frames``, ``jax_ms``, ``librosa_ms``,
    ``librosa_over_jax`` (speed-up of JAX), ``max_abs_diff`` (between the two
    outputs), ``chunk_ms``, ``jax_step_ms`` (one jitted `StreamingLogMel.step` on
    a ``[1, chunk]`` chunk) and ``step_real_time_factor`` (step time / chunk time).
  """
  config = config or features.LogMelConfig()
  hop = config.hop_length
  n = int(seconds * config.sample_rate) // hop * hop
  if n <= 0:
    raise ValueError(f"seconds={seconds} is shorter than one hop ({hop} samples)")
  audio = (0.1 * np.random.default_rng(0).standard_normal((1, n))).astype(np.float32)

  jitted = jax.jit(features.log_mel, static_argnames="config")
  device_audio = jax.device_put(audio)
  jax_out = np.asarray(jitted(device_audio, config=config))
  jax_s = _median_seconds(lambda: jitted(device_audio, config=config).block_until_ready(),
                          repeats)

  def librosa_log_mel() -> np.ndarray:
    padded = np.pad(audio, [(0, 0), (config.context, 0)])
    mel = librosa.feature.melspectrogram(
        y=padded, sr=config.sample_rate, n_fft=config.n_fft, hop_length=hop, window="hann",
        center=False, power=2.0, n_mels=config.n_mels, fmin=config.fmin, fmax=config.fmax)
    logs = np.maximum(np.log10(np.maximum(mel, 1e-10)), config.log_floor)
    return np.swapaxes((logs + 4.0) / 4.0, -1, -2)

  librosa_out = librosa_log_mel()
  librosa_s = _median_seconds(librosa_log_mel, repeats)

  chunk = config.sample_rate * chunk_ms // 1000
  front = features.StreamingLogMel(config)
  step = jax.jit(front.step)
  state = front.init_state(1)
  chunk_audio = jax.device_put(audio[:, :chunk] if chunk <= n else np.zeros((1, chunk),
                                                                            np.float32))
  step_s = _median_seconds(lambda: jax.block_until_ready(step(state, chunk_audio)),
                           max(repeats, 50))

  result = {
      "audio_seconds": n / config.sample_rate,
      "frames": n // hop,
      "jax_ms": 1e3 * jax_s,
      "librosa_ms": 1e3 * librosa_s,
      "librosa_over_jax": librosa_s / jax_s,
      "max_abs_diff": float(np.abs(jax_out - librosa_out).max()),
      "chunk_ms": chunk_ms,
      "jax_step_ms": 1e3 * step_s,
      "step_real_time_factor": step_s / (chunk_ms / 1e3),
  }
  if verbose:
    print(f"log-mel of {result['audio_seconds']:.2f} s of audio ({result['frames']} frames, "
          f"{config.n_mels} mels), float32, batch 1, {jax.devices()[0].platform}, "
          f"median of {repeats}")
    print(f"  {'method':<28}{'time (ms)':>12}")
    print(f"  {'jax (jit, log_mel)':<28}{result['jax_ms']:>12.2f}")
    print(f"  {'librosa (melspectrogram+log)':<28}{result['librosa_ms']:>12.2f}")
    print(f"  {'ratio librosa / jax':<28}{result['librosa_over_jax']:>12.2f}x")
    print(f"  max |jax - librosa| = {result['max_abs_diff']:.2e}")
    print(f"  streaming step, one {chunk_ms} ms chunk: {result['jax_step_ms']:.3f} ms "
          f"(real-time factor {result['step_real_time_factor']:.4f})")
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("seconds", type=float, nargs="?", default=10.0, help="audio length")
  parser.add_argument("--repeats", type=int, default=7, help="timed repeats per method")
  parser.add_argument("--quick", action="store_true", help="smoke test: 2 s, 3 repeats")
  args = parser.parse_args()
  if args.quick:
    args.seconds, args.repeats = 2.0, 3
  measure(args.seconds, args.repeats)


if __name__ == "__main__":
  main()
