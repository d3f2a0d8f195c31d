r"""What does pinning the instruction cost a streaming step? Pinned vs plain, side by side.

Run::

  python benchmarks/pinned_prefix.py            # a minute or two
  python benchmarks/pinned_prefix.py --quick    # smoke test

For the tiny config (``experiments/tiny.py``, batch 1, float32, one XLA thread) it
streams the same noise through two copies of the model, one with
``model.decoder.pinned_prefix=0`` (the plain sliding window) and one with 64, chunk
for chunk and interleaved, past the end of the decoder's window (where the pinned
copy scores its prefix a second time, at the window end's RoPE distances), and
prints the per-chunk latency of each and their ratio, and the decoder cache sizes.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))

PINNED = 64


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--quick", action="store_true", help="fewer chunks: a smoke test")
  args = parser.parse_args()
  stream_step = _stream_step()
  os.environ.update(stream_step.ONE_THREAD_ENV)  # before jax is imported
  import jax
  from audio_interaction import config_lib
  from audio_interaction.model.decoder import decoder_cache_size
  from audio_interaction.model.model import AudioInteractionModel

  def load(pinned: int):
    model = AudioInteractionModel(config_lib.load_config(
        str(REPO / stream_step.CONFIG), [f"model.decoder.pinned_prefix={pinned}"]))
    return model, jax.jit(model.perceive, donate_argnums=1), jax.jit(model.prefill)

  plain, pinned = load(0), load(PINNED)
  model = plain[0]
  params = (stream_step.quick_params(model) if args.quick
            else jax.jit(model.init)(jax.random.key(0)))
  _, _, _, _, prompt = stream_step.load_tiny(quick=True)
  # Past the window: at least window / 4 positions per chunk of quiet.
  warmup = model.config.decoder.window // 4 + 20
  timed = 60 if args.quick else 300
  chunks = stream_step.noise_chunks(warmup + timed, model.config.chunk_samples)
  states = [stream_step.start_stream(m, params, prefill, prompt)
            for m, _, prefill in (plain, pinned)]
  times = ([], [])
  for i, chunk in enumerate(chunks):
    for j, (_, perceive, _) in enumerate((plain, pinned)):
      states[j], seconds = stream_step.timed_step(perceive, params, states[j], chunk)
      if i >= warmup:
        times[j].append(seconds)
  plain_ms, pinned_ms = (stream_step.percentiles_ms(t) for t in times)
  info = stream_step.machine()
  print(f"machine: {info['cpu']}, {info['usable_cores']} usable cores (load {info['load_1min']:.1f}); "
        f"jax {jax.__version__}, one XLA thread")
  print(f"tiny config, window {model.config.decoder.window}; timed {timed} chunks after "
        f"{warmup} (past the window)")
  print("| decoder | cache slots per layer | p50 ms | p90 ms |")
  print("|---|---|---|---|")
  for name, (m, _, _), stats in (("plain", plain, plain_ms),
                                 (f"pinned_prefix={PINNED}", pinned, pinned_ms)):
    print(f"| {name} | {decoder_cache_size(m.config)} | {stats['p50']:.2f} | "
          f"{stats['p90']:.2f} |")
  print(f"pinned / plain, p50: {pinned_ms['p50'] / plain_ms['p50']:.2f}x")


def _stream_step():
  import importlib.util
  spec = importlib.util.spec_from_file_location("stream_step", REPO / "benchmarks" /
                                                "stream_step.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


if __name__ == "__main__":
  main()
