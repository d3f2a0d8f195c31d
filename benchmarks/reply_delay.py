r"""Does a reply stay right when it starts later than the model would start it?

The policies (`infer/policies.py`) decide only *when* a reply starts; the reply is
always the model's. The silence timer starts it ~0.7 s after the end of speech and the
hybrid policy after a short silence, while the corpus only ever shows the model replies
that start at the chunk their answer is ready in. This runs each bundle over held-out
generated streams of the sub-tasks whose replies are scored for their words (B4 spoken
QA / chat, B7 instruction following) with, as rows of one batch:

* `model`: the model's own decisions (P(SPEAK) >= `--threshold`);
* `hybrid`, `timer`: the hybrid policy (model + Silero VAD, 0.2 s / 0.7 s) and the
  700 ms silence timer, the operating points `tune` chooses between;
* `ready+d`: every reply forced to start d chunks after the chunk it is ready in (no
  other replies), for each d of `--delays` -- the model's words alone, timing fixed.

and prints, per row, the exact-match rate of the expected replies answered within 6
chunks (the suites' rule, `eval.heldout.score_trace`) with a 95 % bootstrap interval
over streams, for chat (B4's chat sub-tasks) and for the other sub-tasks, and the
word error rate of the replies against the expected ones (a reply missing from the
window deletes its words): the tiny model's replies are rarely exact, but a reply of
the right kind ("four" for "three") is nearer than a word of no reply ("cairobi").
Then, teacher-forced on the same streams (`teacher forced`): each stream as the corpus
lays it out (`corpus.serialize`) with every reply that a policy could hold `max(--delays)`
chunks (`data.reply_delay.movable_delay`) held d chunks instead (`hold_replies`); one
forward pass, and over those replies' tokens the share the model's argmax gets right,
their mean NLL (nats; and its rise over the first delay's, paired on the same streams)
and the share of replies it gets wholly right -- the words alone,
without the noise of greedy decoding or decisions.

`data.reply_delay_chunks` (training batches with replies held back) is what should
flatten the `ready+d` rows.

Run::

  python benchmarks/reply_delay.py --bundle audio_interaction/assets/tiny --bundle runs/X_bundle \
      --streams 4                     # ~5 min per bundle, 2 cores
  python benchmarks/reply_delay.py --quick   # smoke test: the embedded model, 1 stream each
"""

from __future__ import annotations

import argparse
import collections
import json
import pathlib
import platform
import time

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from audio_interaction import stream_format as sf

from audio_interaction.corpus.build import heldout_sources
from audio_interaction.corpus.serialize import serialize
from audio_interaction.data import reply_delay
from audio_interaction.eval import metrics
from audio_interaction.eval import suites as suites_lib
from audio_interaction.eval.bootstrap import bootstrap_intervals
from audio_interaction.eval.heldout import first_chunk_reaching, score_trace
from audio_interaction.export import portable
from audio_interaction.audio.vad import ReplayDetector
from audio_interaction.infer.endpointing import SilenceTimer
from audio_interaction.infer.engine import Engine
from audio_interaction.infer.policies import (ScheduledTimerPolicy, ThresholdPolicy,
                                              policy_from_config)
from audio_interaction.infer.run_stream import run_policies

CHAT = frozenset({"chat_single", "chat_multi_turn", "chat_fillers"})
WINDOW_CHUNKS = 6  # the suites' answer window (eval.suites' default)


def policies_for(case, chunk_samples: int, chunk_seconds: float, delays, threshold: float):
  """(row names, policies) for one case: the model, hybrid, timer and forced starts.

  The hybrid and the timer replay one Silero pass over the case (as the suites'
  `Runner` does), each built as a bundle's `infer` block would build it.
  """
  readies = [first_chunk_reaching(r.ready_time, chunk_samples) for r in case.timeline.replies]
  names = ["model", "hybrid", "timer"] + [f"ready+{d}" for d in delays]
  vad = SilenceTimer(0.7, vad="silero", chunk_seconds=chunk_seconds)
  scores = vad.speech_probabilities(np.pad(case.audio, (0, -len(case.audio) % chunk_samples)))

  def deployed(policy: str):
    infer = ml_collections.ConfigDict({"policy": policy, "threshold": threshold,
                                       "vad": "silero", "silence_seconds": 0.7,
                                       "min_silence_seconds": 0.2})
    return policy_from_config(infer, chunk_seconds=chunk_seconds,
                              detector=ReplayDetector(scores, vad.frame_samples))

  policies = [ThresholdPolicy(threshold), deployed("hybrid"), deployed("silence_timer")]
  policies += [ScheduledTimerPolicy(frozenset(r + d for r in readies), frozenset(),
                                    yield_on_voice=False) for d in delays]
  return names, policies


def run_bundle(bundle: str, cases, args) -> dict:
  model, params, tokenizer, _ = portable.load_model(None, bundle)
  engine = Engine(model)
  config = model.config
  per_case = []  # (group, {row: (exact, expected, (expected text, reply) pairs)})
  examples = collections.defaultdict(list)
  for case in tqdm(cases, desc=pathlib.Path(bundle).name, leave=False):
    names, policies = policies_for(case, config.chunk_samples, config.chunk_seconds,
                                   args.delays, args.threshold)
    traces = run_policies(engine, params, case.audio,
                          tokenizer.encode(case.timeline.instruction), policies,
                          max_reply_tokens=args.max_reply_tokens)
    scores = {}
    for name, trace in zip(names, traces):
      score = score_trace(case.timeline, trace, tokenizer, window_chunks=WINDOW_CHUNKS)
      scores[name] = (score.exact, score.expected, score.answered)
      if len(examples[name]) < 3 and case.timeline.task in CHAT:
        examples[name].append([text for _, text in trace.reply_texts(tokenizer.decode)])
    per_case.append(("chat" if case.timeline.task in CHAT else "other", scores))
  rows = {}
  for name in per_case[0][1]:
    row = {}
    for group in ("chat", "other", "all"):
      cases_of = [s[name] for g, s in per_case if group in ("all", g)]
      if not cases_of:
        continue

      def figures(indices: np.ndarray) -> dict[str, float]:
        picked = [cases_of[i] for i in indices]
        answered = [pair for _, _, pairs in picked for pair in pairs]
        return {"exact": sum(p[0] for p in picked) / max(1, sum(p[1] for p in picked)),
                "wer": metrics.word_error_rate([e for e, _ in answered],
                                               [r for _, r in answered]).wer}

      cis = bootstrap_intervals(len(cases_of), figures, seed=args.seed)
      row[group] = {key: {"value": value, "low": cis[key]["low"], "high": cis[key]["high"]}
                    for key, value in figures(np.arange(len(cases_of))).items()}
      row[group]["replies"] = sum(p[1] for p in cases_of)
      row[group]["streams"] = len(cases_of)
    rows[name] = row
  return {"bundle": bundle, "rows": rows, "chat_examples": dict(examples),
          "teacher_forced": teacher_forced(model, params, tokenizer, cases, args.delays, args)}


def teacher_forced(model, params, tokenizer, cases, delays, args) -> dict:
  """Per delay d: token accuracy, mean NLL and whole-reply accuracy of the held replies."""
  config = model.config
  forward = jax.jit(model.forward)
  held_max = max(delays)
  per_stream = {d: [] for d in delays}
  for case in tqdm(cases, desc="teacher forced", leave=False):
    example = serialize(case.timeline, tokenizer, chunk_ms=config.chunk_ms,
                        slots_per_chunk=config.slots_per_chunk,
                        tokens_per_chunk=config.tokens_per_chunk)
    replies = reply_delay.chunk_replies(example)
    spans = reply_delay.reply_spans(replies)
    movable = [i for i, span in enumerate(spans) if reply_delay.movable_delay(
        span, held_max, replies, example["transcript_chunks"], args.guard_chunks)]
    if not movable:
      continue
    for d in delays:
      held = reply_delay.hold_replies(example, {i: d for i in movable})
      tokens = held["tokens"]
      length = -(-len(tokens) // 128) * 128
      chunks = int(held["num_chunks"])
      padded_chunks = -(-chunks // 16) * 16
      pad = lambda a, n, v: np.pad(a, (0, n - len(a)), constant_values=v)[None]
      outputs = forward(params, pad(tokens, length, sf.PAD_ID),
                        pad(held["audio"], padded_chunks * config.chunk_samples, 0.0),
                        pad(held["audio_slot_index"], length, sf.NO_INDEX))
      log_probs = np.asarray(jax.nn.log_softmax(outputs.lm_logits[0, :len(tokens)]))
      # the chunk of the token each position predicts
      next_chunk = (np.cumsum(tokens == sf.AUDIO_ID) - 1)[np.minimum(
          np.arange(len(tokens)) + 1, len(tokens) - 1)]
      right = log_probs.argmax(-1) == held["lm_targets"]
      nll = -log_probs[np.arange(len(tokens)), held["lm_targets"]]
      stream = collections.Counter()
      for i in movable:
        # positions predicting the held reply's tokens (its first: the <decide>'s)
        predicting = np.flatnonzero((held["lm_weights"] > 0)
                                    & (next_chunk >= spans[i].first + d)
                                    & (next_chunk <= spans[i].last + d))
        stream.update(tokens=len(predicting), right=int(right[predicting].sum()),
                      nll=float(nll[predicting].sum()), replies=1,
                      whole=int(right[predicting].all()))
      per_stream[d].append(stream)
  base = per_stream[delays[0]]

  def rates(picked: list) -> dict[str, float]:
    return {"token_accuracy": sum(s["right"] for s in picked) / sum(s["tokens"] for s in picked),
            "nll": sum(s["nll"] for s in picked) / sum(s["tokens"] for s in picked),
            "whole_replies": sum(s["whole"] for s in picked) / sum(s["replies"] for s in picked)}

  result = {}
  for d in delays:
    streams = per_stream[d]
    if not streams:
      continue

    def figures(indices: np.ndarray) -> dict[str, float]:
      held = rates([streams[i] for i in indices])
      # paired with the first delay on the same streams: what holding the replies costs
      held["nll_rise"] = held["nll"] - rates([base[i] for i in indices])["nll"]
      return held

    cis = bootstrap_intervals(len(streams), figures, seed=args.seed)
    result[f"held {d}"] = {key: {"value": value, "low": cis[key]["low"],
                                 "high": cis[key]["high"]}
                           for key, value in figures(np.arange(len(streams))).items()}
    result[f"held {d}"]["replies"] = sum(s["replies"] for s in streams)
    result[f"held {d}"]["streams"] = len(streams)
  return result


def print_table(result: dict) -> None:
  print(f"\n{result['bundle']}: exact-match / WER of the expected replies "
        "[95 % CI over streams]")
  groups = ("chat", "other", "all")
  print(f"{'row':<10}" + "".join(f"{g:>40}" for g in ("chat", "instruction / scene", "all")))
  for name, row in result["rows"].items():
    cells = []
    for group in groups:
      r = row.get(group)
      cells.append("—" if r is None else (
          f"{r['exact']['value']:.0%} [{r['exact']['low']:.0%}, {r['exact']['high']:.0%}] / "
          f"{r['wer']['value']:.0%} [{r['wer']['low']:.0%}, {r['wer']['high']:.0%}]"))
    print(f"{name:<10}" + "".join(f"{c:>40}" for c in cells))
  for name, replies in result["chat_examples"].items():
    print(f"  chat replies, {name}: {replies}")
  print("teacher forced, the replies a policy could hold (all streams) [95 % CI over streams]:")
  for name, row in result["teacher_forced"].items():
    cell = lambda key, fmt: (f"{format(row[key]['value'], fmt)} "
                             f"[{format(row[key]['low'], fmt)}, {format(row[key]['high'], fmt)}]")
    print(f"  {name:<8} token accuracy {cell('token_accuracy', '.0%')}, NLL {cell('nll', '.2f')}"
          f" nats (rise {cell('nll_rise', '+.2f')}), whole replies {cell('whole_replies', '.0%')} of {row['replies']} "
          f"({row['streams']} streams)")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--bundle", action="append", default=[],
                      help="a model bundle (repeat to compare; default the embedded model)")
  parser.add_argument("--streams", type=int, default=4, help="held-out streams per sub-task")
  parser.add_argument("--delays", type=int, nargs="+", default=[0, 1, 2, 3, 5])
  parser.add_argument("--threshold", type=float, default=0.5)
  parser.add_argument("--max-reply-tokens", type=int, default=24)
  parser.add_argument("--guard-chunks", type=int, default=3,
                      help="as data.reply_delay: chunks after a held reply free of words")
  parser.add_argument("--seed", type=int, default=1000, help="first held-out stream seed")
  parser.add_argument("--json", default=None, help="also write the figures here")
  parser.add_argument("--quick", action="store_true",
                      help="smoke test: the embedded model, 1 stream per sub-task, 2 delays")
  args = parser.parse_args()
  if args.quick:
    args.streams, args.delays = 1, [0, 4]
  bundles = args.bundle or [str(portable.EMBEDDED_BUNDLE)]
  began = time.perf_counter()
  speech, sounds = heldout_sources()
  cases = [c for c in suites_lib.generated_cases(["B4", "B7"], speech, sounds,
                                                 streams_per_subtask=args.streams, seed=args.seed)
           if c.timeline.mode != "offline"]
  if args.quick:
    cases = [c for c in cases if c.timeline.task in CHAT or c.timeline.task == "follow_keyword"]
  results = [run_bundle(bundle, cases, args) for bundle in bundles]
  for result in results:
    print_table(result)
  print(f"\n{len(cases)} streams per bundle, {time.perf_counter() - began:.0f} s on "
        f"{platform.machine()} ({platform.processor() or 'cpu'}), "
        f"{len(bundles)} bundle(s)")
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
  main()
