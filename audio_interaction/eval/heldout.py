"""Free-running check of a model on held-out generated streams: when it spoke, what it said.

Teacher-forced metrics (the training loop's eval) say how well the model predicts
the labels; this says what it *does* when it runs alone, chunk by chunk, greedy, on
streams made from held-out voices, sounds and world items. Each expected reply has a
ready chunk (the first chunk at which it is warranted); a model reply that starts
within `window_chunks` after it counts as a hit, and its text is compared, after
normalization, with the expected text. Model replies that match no expected reply
are false triggers. Offline examples are skipped here (they have no timing).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence

import numpy as np
from tqdm.auto import tqdm

from audio_interaction.corpus import tasks
from audio_interaction import stream_format as sf
from audio_interaction.stream_format import SAMPLE_RATE
from audio_interaction.corpus.timeline import first_chunk_reaching, render
from audio_interaction.data.tokenizer import Tokenizer
from audio_interaction.eval import metrics
from audio_interaction.infer.engine import Engine
from audio_interaction.infer.policies import DecisionPolicy
from audio_interaction.infer.run_stream import StreamTrace, run_stream
from audio_interaction.model.model import Params


@dataclasses.dataclass
class StreamScore:
  subtask: str
  ability: str
  expected: int  # replies the stream warrants
  hits: int  # of them, answered within the window
  exact: int  # of the hits, with the exact expected text
  model_replies: int
  false_triggers: int
  latencies: list[float]  # seconds from ready chunk end to the first reply token
  # (expected text, the reply that answered it or "" when none did), per expected reply
  answered: list[tuple[str, str]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Match:
  hits: int
  exact: int
  false_triggers: int
  latency_chunks: tuple[int, ...]
  # (expected text, the model reply matched to it or "" when none was), in ready order
  answered: tuple[tuple[str, str], ...] = dataclasses.field(default=(), compare=False)


def match_replies(expected: list[tuple[int, str]], model: list[tuple[int, str]],
                  window_chunks: int) -> Match:
  """Matches model replies to expected ones, in order of readiness.

  Args:
    expected: (ready chunk, text) of each warranted reply.
    model: (start chunk, text) of each reply the model wrote.
    window_chunks: a model reply starting in [ready, ready + window] answers it; one
      that starts before `ready` is early, i.e. a false trigger, never a hit.
  Returns:
    hits, exact-text hits (after `normalize_text`), model replies matching nothing,
    and each hit's delay in chunks.
  """
  used: set[int] = set()
  hits = exact = 0
  latencies, answered = [], []
  for ready, text in sorted(expected):
    answered.append((text, ""))
    for index, (start, said) in enumerate(model):
      if index in used or not ready <= start <= ready + window_chunks:
        continue
      used.add(index)
      hits += 1
      exact += metrics.exact_match(text, said)
      latencies.append(start - ready)
      answered[-1] = (text, said)
      break
  return Match(hits, exact, len(model) - len(used), tuple(latencies), tuple(answered))


def score_stream(engine: Engine, params: Params, tokenizer: Tokenizer, timeline,
                 *, policy: DecisionPolicy, window_chunks: int,
                 max_reply_tokens: int | None = None) -> StreamScore:
  """Runs the engine over one rendered timeline and matches its replies to the expected ones."""
  config = engine.model.config
  chunk_ms = config.chunk_ms
  audio = render(timeline, chunk_ms=chunk_ms)
  trace = run_stream(engine, params, audio, tokenizer.encode(timeline.instruction), policy,
                     max_reply_tokens=max_reply_tokens)
  return score_trace(timeline, trace, tokenizer, window_chunks=window_chunks)


def score_trace(timeline, trace: StreamTrace, tokenizer: Tokenizer, *,
                window_chunks: int) -> StreamScore:
  """Matches the replies of a trace (from `run_stream` or any driver) to the expected ones."""
  chunk_s = trace.chunk_seconds
  chunk_samples = int(round(chunk_s * SAMPLE_RATE))
  model = [(int(round(start / chunk_s)) - 1, text) for start, text in trace.reply_texts(tokenizer.decode)]
  expected = [(first_chunk_reaching(r.ready_time, chunk_samples), r.text)
              for r in timeline.replies]
  match = match_replies(expected, model, window_chunks)
  return StreamScore(timeline.task, sf.ability_name(timeline.ability), len(expected),
                     match.hits, match.exact, len(model), match.false_triggers,
                     [c * chunk_s for c in match.latency_chunks], list(match.answered))


def evaluate_heldout(engine: Engine, params: Params, tokenizer: Tokenizer, speech, sounds, *,
                     policy: DecisionPolicy, streams_per_subtask: int = 2, seed: int = 5000,
                     max_reply_tokens: int | None = None, window_chunks: int = 6,
                     subtasks: Sequence[str] | None = None, progress: bool = True) -> dict:
  """Scores every online sub-task on `streams_per_subtask` held-out streams.

  Returns:
    {"per_ability": {ability: rates}, "overall": rates, "streams": [StreamScore...]},
    rates = reply recall (hit rate), exact-match rate (over expected replies),
    precision (hits / model replies), false triggers per stream, median latency (s).
  """
  config = engine.model.config
  task_config = tasks.TaskConfig(split="heldout",
                                 chunk_ms=config.chunk_ms)
  names = [n for n, spec in tasks.SUBTASKS.items() if spec.mode != "offline"]
  if subtasks is not None:
    names = [n for n in names if n in set(subtasks)]
  scores = []
  jobs = [(name, seed + k) for name in names for k in range(streams_per_subtask)]
  for name, stream_seed in tqdm(jobs, desc="held-out streams", disable=not progress):
    timeline = tasks.build(name, stream_seed, speech, sounds, task_config)
    scores.append(score_stream(engine, params, tokenizer, timeline, policy=policy,
                               window_chunks=window_chunks, max_reply_tokens=max_reply_tokens))
  by_ability = collections.defaultdict(list)
  for score in scores:
    by_ability[score.ability].append(score)
  return {"per_ability": {a: rates(s) for a, s in sorted(by_ability.items())},
          "overall": rates(scores), "streams": scores}


def rates(scores: list[StreamScore]) -> dict[str, float]:
  """Aggregate rates over streams (see `evaluate_heldout`)."""
  expected = sum(s.expected for s in scores)
  hits = sum(s.hits for s in scores)
  replies = sum(s.model_replies for s in scores)
  latencies = [l for s in scores for l in s.latencies]
  return {
      "streams": len(scores),
      "expected_replies": expected,
      "recall": hits / expected if expected else 1.0,
      "exact_match": sum(s.exact for s in scores) / expected if expected else 1.0,
      "precision": hits / replies if replies else 1.0,
      "false_triggers_per_stream": sum(s.false_triggers for s in scores) / max(len(scores), 1),
      "median_latency_s": float(np.median(latencies)) if latencies else float("nan"),
  }


def format_table(result: dict) -> str:
  """A Markdown table of `evaluate_heldout`'s per-ability and overall rates."""
  lines = ["| ability | streams | replies warranted | answered in time (recall) | exact text | "
           "precision | false triggers / stream | median latency |",
           "|---|---|---|---|---|---|---|---|"]
  rows = list(result["per_ability"].items()) + [("**all online**", result["overall"])]
  for name, r in rows:
    lines.append(f"| {name} | {r['streams']} | {r['expected_replies']} | {r['recall']:.0%} | "
                 f"{r['exact_match']:.0%} | {r['precision']:.0%} | "
                 f"{r['false_triggers_per_stream']:.2f} | {r['median_latency_s']:.2f} s |")
  return "\n".join(lines)
