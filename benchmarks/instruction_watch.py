r"""What do the instruction watches cost per chunk of a batch of streams?

Run::

  python benchmarks/instruction_watch.py           # the real-audio bundle, 8 rows, 60 chunks
  python benchmarks/instruction_watch.py --quick   # a smoke test (2 rows, 8 chunks)

Three `StreamStepper`s over the shipped real-audio bundle, each stepping the same rows
of audio (a generated smoke alarm after 1 s of quiet, then speech-band noise) under
instructions that ask for a sound, a count, a word and a list, in turn (`infer/
instruction_watch.py`): without watches, with the sound watch (the bundle's setting),
and with the word watch too (the CTC transcript decoded per row per chunk). The three
are stepped interleaved chunk by chunk on one XLA thread, and the script prints each
one's median time per chunk (the whole step: perceive, decide, the watches and the
alerts) and its ratio to no watches, with the machine. The watches are host-side
Python over the head's probabilities and the transcript tokens the step already
fetches: they add no device work.
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

import numpy as np  # noqa: E402

from audio_interaction.corpus import sounds  # noqa: E402
from audio_interaction.export import portable  # noqa: E402
from audio_interaction.infer.engine import Engine  # noqa: E402
from audio_interaction.infer.instruction_watch import instruction_watches  # noqa: E402
from audio_interaction.infer.policies import policy_from_config  # noqa: E402
from audio_interaction.infer.run_stream import StreamStepper  # noqa: E402
from audio_interaction.infer.sound_alerts import sound_alert_rule  # noqa: E402

INSTRUCTIONS = ("Tell me when you hear a smoke alarm.",
                "Tell me when you have heard two crashes.",
                'Whenever you hear the word "seven", say "heard seven".',
                'When I say "recap", list the sounds you heard, in order.')
SETTINGS = {"no watches": {"sound_watch_threshold": 0.0, "word_watch": False},
            "sound watch": {"word_watch": False},
            "sound and word watches": {"word_watch": True}}


def alarm_then_noise(seconds: float, rng: np.random.Generator) -> np.ndarray:
  """1 s of quiet, a smoke alarm, then noise: float32 [seconds * 16 kHz]."""
  alarm, _ = sounds.gen_smoke_alarm(rng)
  noise = 0.02 * rng.standard_normal(int(seconds * 16000))
  audio = np.concatenate([np.zeros(16000), 0.3 * alarm / np.abs(alarm).max(), noise])
  return audio[:int(seconds * 16000)].astype(np.float32)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--checkpoint", default="real-audio")
  parser.add_argument("--rows", type=int, default=8)
  parser.add_argument("--chunks", type=int, default=60)
  parser.add_argument("--quick", action="store_true", help="2 rows, 8 chunks")
  args = parser.parse_args()
  if args.quick:
    args.rows, args.chunks = 2, 8
  model, params, tokenizer, note = portable.load_model(None, args.checkpoint)
  if not model.config.sound_event_classes:
    parser.error(f"--checkpoint {args.checkpoint}: the model has no sound-event head, so "
                 "there are no sounds to watch (try real-audio)")
  infer = portable.bundle_infer_config(args.checkpoint)
  config = model.config
  instructions = [tokenizer.encode(INSTRUCTIONS[row % len(INSTRUCTIONS)])
                  for row in range(args.rows)]
  steppers = {}
  for name, values in SETTINGS.items():
    setting = infer.copy_and_resolve_references()
    setting.update({"sound_watch_threshold": setting.sound_watch_threshold or 0.3, **values})
    policies = [policy_from_config(setting, chunk_seconds=config.chunk_seconds)
                for _ in range(args.rows)]
    steppers[name] = StreamStepper(
        Engine.from_infer(model, setting, tokenizer), params, instructions, policies,
        max_reply_tokens=setting.max_reply_tokens,
        sound_alerts=sound_alert_rule(setting, tokenizer.encode,
                                      chunk_seconds=config.chunk_seconds,
                                      sound_event_classes=config.sound_event_classes),
        watches=instruction_watches(setting, tokenizer.encode, tokenizer.decode,
                                    chunk_seconds=config.chunk_seconds,
                                    sound_event_classes=config.sound_event_classes))
  audio = alarm_then_noise((args.chunks + 1) * config.chunk_seconds, np.random.default_rng(0))
  size = config.chunk_samples
  times = {name: [] for name in steppers}
  for index in range(args.chunks + 1):
    chunk = np.broadcast_to(audio[index * size:(index + 1) * size], (args.rows, size))
    for name, stepper in steppers.items():
      began = time.perf_counter()
      stepper.step_batch(chunk)
      if index:  # the first step compiles
        times[name].append(time.perf_counter() - began)
  print_interleaved_medians(times, "no watches", note=note, per=args.rows, per_label="row",
                            what=f"{args.rows} rows, {args.chunks} chunks of "
                            f"{config.chunk_seconds:g} s, interleaved (a call: one step)")

if __name__ == "__main__":
  main()
