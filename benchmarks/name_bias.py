r"""What does biasing replies towards the heard sounds' names cost per reply token?

Run::

  python benchmarks/name_bias.py                 # the real-audio bundle, 200 calls per setting
  python benchmarks/name_bias.py --quick         # a smoke test (10 calls)

The shipped real-audio bundle (it has a sound-event head) writes reply tokens through
the jitted, donated `Engine.speak` (4 tokens a call, as the live loop writes per chunk)
with three engines built from its config: no bias, the bias as a bag of tokens
(`infer.sound_name_bias`), and whole names (`infer.sound_name_whole`, the bundle's
default; `infer/name_bias.py`). The three are timed interleaved call for call on one XLA
thread, each from the same state (the bundle's prompt after 2 s of a synthetic alarm, so
the head has heard something), and the script prints each setting's median time per
call and its ratio to no bias, with the machine.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere
  sys.path.insert(0, str(REPO))

from benchmarks.stream_step import use_one_xla_thread, print_interleaved_medians  # noqa: E402  (no jax there)

use_one_xla_thread()  # before jax loads

import jax  # noqa: E402  (after the thread settings)
import numpy as np  # noqa: E402

from audio_interaction.corpus import sounds  # noqa: E402
from audio_interaction.export import portable  # noqa: E402
from audio_interaction.infer.engine import Engine  # noqa: E402

TOKENS_PER_CALL = 4
SETTINGS = {"no bias": {"sound_name_bias": 0.0},
            "bag of tokens": {"sound_name_bias": 8.0, "sound_name_whole": False},
            "whole names": {"sound_name_bias": 8.0, "sound_name_whole": True}}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--checkpoint", default="real-audio")
  parser.add_argument("--calls", type=int, default=200)
  parser.add_argument("--quick", action="store_true", help="10 calls per setting")
  args = parser.parse_args()
  if args.quick:
    args.calls = 10
  model, params, tokenizer, note = portable.load_model(None, args.checkpoint)
  if not model.config.sound_event_classes:
    parser.error(f"--checkpoint {args.checkpoint}: the model has no sound-event head, so "
                 "there are no heard sounds to name (try real-audio)")
  infer = portable.bundle_infer_config(args.checkpoint)
  engines = {}
  for name, values in SETTINGS.items():
    setting = infer.copy_and_resolve_references()
    setting.update(values)
    engines[name] = Engine.from_infer(model, setting, tokenizer)
  size = model.config.chunk_samples
  alarm, _ = sounds.gen_smoke_alarm(np.random.default_rng(0))
  audio = np.pad(0.3 * alarm / np.abs(alarm).max(), (0, 32000))[:32000].astype(np.float32)
  instruction = tokenizer.encode("What sound is this?")
  heard = engines["whole names"].init_state(params, [instruction])
  for begin in range(0, len(audio) - size + 1, size):
    heard, _ = engines["whole names"].perceive(params, heard, audio[None, begin:begin + size])
  active = np.ones(1, bool)
  times = {name: [] for name in engines}
  for call in range(args.calls + 1):
    for name, engine in engines.items():
      state = jax.tree_util.tree_map(lambda x: x.copy() if hasattr(x, "copy") else x, heard)
      began = time.perf_counter()
      _, tokens, _ = engine.speak(params, state, active, n=TOKENS_PER_CALL)
      jax.block_until_ready(tokens)
      if call:  # the first call compiles
        times[name].append(time.perf_counter() - began)
  print_interleaved_medians(times, "no bias", note=note, per=TOKENS_PER_CALL,
                            per_label="token", what=f"{args.calls} interleaved calls of "
                            f"{TOKENS_PER_CALL} reply tokens each")

if __name__ == "__main__":
  main()
