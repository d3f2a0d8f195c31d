"""The paper's Proactive-Sound-Bench layout: should the assistant speak up about a clip?

Manifest (JSONL, one clip per line)::

    {"id": "kitchen_003", "path": "kitchen/kettle_03.wav",   # relative to --root
     "description": "a kettle whistling", "decision": "RESPOND"}   # or IGNORE

and, optionally, a second JSONL file of reference replies, `{"id": ..., "standard_answers":
[...]}`, kept beside the predictions for a reply-quality evaluator (not scored here).

Each clip is run through the model as a stream (`infer.run_stream.run_stream`, the
bundle's decision policy) under `PROACTIVE_INSTRUCTION`; the decision is RESPOND if
the model replied anywhere in the clip, else IGNORE. Predictions are written as the
benchmark's evaluator reads them, one row per id: `{"id", "_raw_reply":
"<Decision>RESPOND</Decision><Reply>…</Reply>"}` (the reply text is the model's replies
joined; empty for IGNORE). Statistics: decision accuracy overall and per domain (the
first directory of `path`; "." for files at the root), the confusion counts, and rows
that could not be scored, counted by reason: `missing_file`, `unreadable_audio`, and
manifest lines that are `bad_row`s (not JSON, no id/path, a decision that is not
RESPOND/IGNORE). None of them stops the run.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import pathlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

import numpy as np

from audio_interaction.audio import io as audio_io
from audio_interaction.eval import metrics
from audio_interaction.eval.suites import json_safe
from audio_interaction.stream_format import SAMPLE_RATE

# The proactive-help instruction of the corpus (`corpus.tasks.proactive`, its first
# phrasing): the model was trained to speak up under it, only when something needs it.
PROACTIVE_INSTRUCTION: Final[str] = "Let me know if anything needs my attention."
DECISIONS: Final[tuple[str, str]] = ("RESPOND", "IGNORE")
PREDICTIONS_FILE: Final[str] = "predictions.jsonl"
STATS_FILE: Final[str] = "stats.json"
_DECISION = re.compile(r"<Decision>\s*(RESPOND|IGNORE)\s*</Decision>", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class BenchRow:
  id: str
  path: str
  decision: str
  description: str = ""

  @property
  def domain(self) -> str:
    """The first directory of the clip's path ("." for a file at the root)."""
    parts = pathlib.PurePosixPath(self.path.replace("\\", "/")).parts
    return parts[0] if len(parts) > 1 else "."


def read_bench_manifest(path: str | pathlib.Path) -> tuple[list[BenchRow], dict[str, list[str]]]:
  """(rows, problems): problems maps "bad_row" to the lines that could not be read."""
  rows, problems = [], collections.defaultdict(list)
  for number, line in enumerate(pathlib.Path(path).read_text(encoding="utf-8").splitlines(), 1):
    if not line.strip():
      continue
    try:
      item = json.loads(line)
      if not isinstance(item, dict):
        raise ValueError("not an object")
      decision = str(item.get("decision", "")).strip().upper()
      if "id" not in item or not isinstance(item.get("path"), str) or decision not in DECISIONS:
        raise ValueError("needs id, path and decision RESPOND/IGNORE")
      rows.append(BenchRow(str(item["id"]), item["path"], decision,
                           str(item.get("description", ""))))
    except ValueError as error:
      problems["bad_row"].append(f"line {number}: {error}")
  return rows, dict(problems)


def read_answers(path: str | pathlib.Path) -> dict[str, list[str]]:
  """id -> standard answers, from a JSONL of `{"id", "standard_answers": [...]}`."""
  out = {}
  for line in pathlib.Path(path).read_text(encoding="utf-8").splitlines():
    if line.strip():
      item = json.loads(line)
      answers = item.get("standard_answers", [])
      out[str(item["id"])] = [answers] if isinstance(answers, str) else list(answers)
  return out


def raw_reply(decision: str, reply: str) -> str:
  """The evaluator's raw reply: "<Decision>RESPOND</Decision><Reply>…</Reply>"."""
  return f"<Decision>{decision}</Decision><Reply>{reply}</Reply>"


def parse_decision(raw: str) -> str | None:
  """RESPOND / IGNORE from a raw reply, or None if it has no decision tag."""
  found = _DECISION.search(raw)
  return found.group(1).upper() if found else None


def run_bench(rows: Sequence[BenchRow], root: str | pathlib.Path,
              replies_of: Callable[[np.ndarray], list[str]],
              answers: Mapping[str, list[str]] | None = None,
              problems: Mapping[str, list[str]] | None = None,
              progress: Callable[[Iterable], Iterable] = iter
              ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
  """Runs every clip; returns (predictions, stats).

  `replies_of(audio float32[n] at 16 kHz)` -> the reply texts the model gave on the
  clip (empty: it stayed quiet). A missing or unreadable file is counted and listed in
  the stats, and has no prediction.
  """
  predictions, scored = [], []
  problems = {k: list(v) for k, v in (problems or {}).items()}
  for row in progress(rows):
    file = pathlib.Path(root) / row.path
    if not file.is_file():
      problems.setdefault("missing_file", []).append(row.id)
      continue
    try:
      audio = audio_io.load_audio(file, SAMPLE_RATE, resample=True)
    except audio_io.AudioError:
      problems.setdefault("unreadable_audio", []).append(row.id)
      continue
    replies = [r.strip() for r in replies_of(audio) if r.strip()]
    decision = "RESPOND" if replies else "IGNORE"
    prediction = {"id": row.id, "_raw_reply": raw_reply(decision, " ".join(replies))}
    if answers and row.id in answers:
      prediction["standard_answers"] = answers[row.id]
    predictions.append(prediction)
    scored.append((row, decision))
  return predictions, bench_stats(scored, problems, len(rows))


def bench_stats(scored: Sequence[tuple[BenchRow, str]], problems: Mapping[str, list[str]],
                rows: int) -> dict[str, Any]:
  """Decision accuracy overall and per domain, confusion counts, unscored rows."""
  def block(items):
    correct = sum(row.decision == said for row, said in items)
    confusion = collections.Counter(f"{row.decision}->{said}" for row, said in items)
    return {"accuracy": metrics.rate(correct, len(items)), "correct": correct,
            "scored": len(items), "confusion": dict(sorted(confusion.items()))}

  domains = collections.defaultdict(list)
  for row, said in scored:
    domains[row.domain].append((row, said))
  return {"rows": rows, **block(scored),
          "per_domain": {d: block(items) for d, items in sorted(domains.items())},
          "not_scored": {k: len(v) for k, v in sorted(problems.items())},
          "not_scored_ids": {k: v for k, v in sorted(problems.items())}}


def write_outputs(out_dir: str | pathlib.Path, predictions: Sequence[dict],
                  stats: dict) -> dict[str, pathlib.Path]:
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  paths = {"predictions": out / PREDICTIONS_FILE, "stats": out / STATS_FILE}
  paths["predictions"].write_text("".join(json.dumps(p) + "\n" for p in predictions))
  paths["stats"].write_text(json.dumps(json_safe(stats), indent=1))
  return paths


def format_stats(stats: dict) -> str:
  """A few lines: overall accuracy, per domain, what was not scored."""
  def pct(value):
    return "—" if value is None or value != value else f"{value:.0%}"
  lines = [f"decision accuracy {pct(stats['accuracy'])} ({stats['correct']}/{stats['scored']} "
           f"clips; {stats['rows']} rows)"]
  for domain, block in stats["per_domain"].items():
    lines.append(f"  {domain}: {pct(block['accuracy'])} ({block['correct']}/{block['scored']})")
  if stats["not_scored"]:
    lines.append("not scored: " + ", ".join(f"{n} {k}" for k, n in stats["not_scored"].items()))
  return "\n".join(lines)
