r"""What does answering a clip question from the sound-event head cost, against the decoder?

Run::

  python benchmarks/clip_questions.py           # the real-audio bundle, 5 s clips, 8 rounds
  python benchmarks/clip_questions.py --quick   # a smoke test (1 s clips, 2 rounds)

The shipped real-audio bundle answers "What sound is this?" and "How many doorbell rings
are in the clip?" about the same clip (a generated smoke alarm after 1 s of quiet, then
noise) in two ways, timed interleaved on one XLA thread: the decoder (`Engine.answer`:
the clip's slots, the question, then up to `infer.max_answer_tokens` reply tokens) and
the head (`infer/clip_questions.answer_clip` with `infer.sound_questions`: the encoder
and its head over the clip, then host-side counting). It prints each one's median per
answer and its ratio to the decoder's, with the machine.
"""

from __future__ import annotations

import argparse
import functools
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script from anywhere
  sys.path.insert(0, str(REPO))

from benchmarks.instruction_watch import alarm_then_noise  # noqa: E402  (one XLA thread first)
from benchmarks.stream_step import use_one_xla_thread, print_interleaved_medians  # noqa: E402

use_one_xla_thread()  # before jax loads

import numpy as np  # noqa: E402

from audio_interaction.export import portable  # noqa: E402
from audio_interaction.infer.clip_questions import answer_clip, clip_answers  # noqa: E402
from audio_interaction.infer.engine import Engine, dequantize_params  # noqa: E402
from audio_interaction.infer.sound_naming import SoundNamer  # noqa: E402

QUESTIONS = ("What sound is this?", "How many doorbell rings are in the clip?")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="a smoke test: short clips, 2 rounds")
  parser.add_argument("--bundle", default="real-audio")
  args = parser.parse_args()
  seconds, rounds = (1.0, 2) if args.quick else (5.0, 8)
  model, params, tokenizer, _ = portable.load_model(None, args.bundle)
  infer = portable.bundle_infer_config(args.bundle)
  engine = Engine.from_infer(model, infer, tokenizer)
  answers = clip_answers(infer, chunk_seconds=model.config.chunk_seconds,
                         sound_event_classes=model.config.sound_event_classes)
  if answers is None:
    raise SystemExit(f"{args.bundle}: its infer block does not answer from the head "
                     "(infer.sound_questions)")
  namer = SoundNamer(model, dequantize_params(params))
  audio = alarm_then_noise(seconds, np.random.default_rng(0))
  # Not cached: every answer encodes the clip, as `ask` does.
  ways = {"the decoder": dict(answers=None, head_logits=None),
          "the sound-event head": dict(answers=answers,
                                       head_logits=functools.partial(namer.logits, audio))}
  said = {}
  for name, way in ways.items():  # compile and warm up
    said[name] = [answer_clip(engine, params, tokenizer, audio, q,
                              max_tokens=infer.max_answer_tokens, **way) for q in QUESTIONS]
  times: dict[str, list[float]] = {name: [] for name in ways}
  for _ in range(rounds):
    for question in QUESTIONS:
      for name, way in ways.items():
        began = time.perf_counter()
        answer_clip(engine, params, tokenizer, audio, question,
                    max_tokens=infer.max_answer_tokens, **way)
        times[name].append(time.perf_counter() - began)
  print_interleaved_medians(
      times, "the decoder", note=f"{args.bundle} bundle",
      what=f"{len(QUESTIONS)} questions about a {seconds:.0f} s clip, {rounds} rounds",
      per=1, per_label="answer")
  for name, answered in said.items():
    print(f"\n{name}: " + "; ".join(f"{q} -> {a!r}" for q, a in zip(QUESTIONS, answered)))


if __name__ == "__main__":
  main()
