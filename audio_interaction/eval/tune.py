"""Choosing the operating point (`config.infer`) on a dev set: `audio-interaction tune`.

Candidates (`Grid`): the model alone (`ThresholdPolicy`, θ over a grid), the hybrid
(`HybridPolicy`: θ × `min_silence_seconds` × `silence_seconds`), the gated timer (θ ×
`silence_seconds`, when `Grid.gated_thresholds` are given) and the silence timer
(`SilenceTimerPolicy` over silence lengths: the baseline, and the fallback when nothing
else is good enough). Each candidate is an `infer` block and runs as the policy
`policy_from_config` builds from it, i.e. exactly what a bundle holding that block
deploys.

Runs (`run_candidates`): every candidate of one recording is a row of one batch
(`run_policies`: one model pass per recording), and the recording's VAD runs once: the
timer-driven rows replay its scores (`audio.vad.ReplayDetector`). Rows are exact: a
reply written changes the state, so every row is its own run of the model.

Scores (`score_candidate`), with the evaluation's own definitions: B5 false cut-in
rate, miss rate and median response latency (`suites.turn_taking`, what `suite_b5`
reports for the model), B6 alert recall, false alarms per hour of benign audio and
the share of detected alerts that name the right class (`suites.alert_naming`, in
`suites.suite_b6`'s model block).

Selection rule (`select`), after the issue's goal (false cut-in ≤ the 700 ms timer's,
miss ≤ 10 %, median latency ≤ 0.35 s, alert recall ≥ 80 % at ≤ 10 false alarms/h):

1. The reference is the silence timer at `Rule.reference_silence_seconds` (0.7 s),
   scored on the same cases.
2. A candidate *meets the turn-taking constraints* when its false cut-in rate is at
   most the reference's and its miss rate at most `Rule.max_miss` (10 %). If some of
   those also keep the decoder's false alarms within the budget (below; B6 cases of
   benign sounds or of speech nobody addressed to the assistant), only they go on: the
   goal asks for all of it, and a timer that answers every utterance does not meet it
   by answering it a chunk sooner.
3. Among those, if some reach the latency goal (median ≤ `Rule.target_latency_s`,
   0.35 s), the one of them with the lowest false cut-in + miss wins (then the lower
   latency): within the latency the goal asks for, interrupting fewer users is worth
   more than answering sooner (a rule that always takes the fastest picks the point
   at the edge of the cut-in constraint, which held-out turns then cross: docs/real_audio_log.md, "A
   turn-end head in the model"). If none reaches it, the lowest median response latency wins. A tie
   (latencies are chunk quantised, so ties are common) goes to the candidate with
   false alarms/h within the budget (below), then the highest alert
   recall, then the fewer false alarms/h (replies to unaddressed speech count: a gated
   timer that leaves it unanswered beats the timer at the same latency), then the
   lower false cut-in + miss, then the earlier candidate in grid order.
4. If none meets them, the one with the lowest false cut-in + miss rate (ties as in 3,
   latency first), and the result says so (`meets_constraints: false`, a warning).

Sound alerts (`Grid.sound_alert_thresholds`, for a model with a sound-event head): after
the policy is chosen, it runs again with alerts from the head at each threshold
(`infer.sound_alert_threshold`, 0 = off, always a candidate; with
`Grid.sound_alert_holds` and `Grid.sound_alert_chunks`, each threshold at each
`sound_alert_hold_seconds` and each `sound_alert_chunks`), one model
pass per point per recording. On half A the highest alert recall among thresholds with at
most `Rule.max_false_alarms_per_hour` false alarms per hour of benign audio wins (ties:
the alert text accuracy, then the lower threshold). That is the goal's figure
(`Rule.false_alarm_figure`): an alert raised while a real alarm still sounds, after its
deadline, is a miss, which recall already counts, not an alarm in benign audio; `tune
--budget-counts-late-alerts` reads the whole figure, as tunes before session 25 did. If
no threshold is within the budget ("off" alone does not count), the highest alert F1
(ties: the fewer false alarms), flagged: "the fewest false alarms" would always pick
"off", whose few alerts are the decoder's. The chosen threshold joins the `infer` block.
With `Grid.keep_policy` (`tune --keep-policy`) the policy is not searched: the bundle's
own point is scored beside the reference timer and kept, and only the alerts are tuned.

Honest figures: the cases are split in two halves (`split_halves`, seeded, stratified
by suite and by whether a case has turns/alert events); the rule picks on half A, and
the chosen point is reported on half B (not used to choose) and on all cases, each
headline with its 95 % bootstrap interval over cases (`suites.headline_intervals`),
next to the reference timer on the same cases.
"""

from __future__ import annotations

import collections
import itertools
import dataclasses
import json
import math
import pathlib
from collections.abc import Callable, Sequence
from typing import Any, Final

import ml_collections
import numpy as np
from tqdm.auto import tqdm

from audio_interaction.data.tokenizer import Tokenizer
from audio_interaction.eval import report, suites
from audio_interaction.eval.suites import Case, CaseRun, EvalConfig
from audio_interaction.audio.vad import ReplayDetector
from audio_interaction.infer.endpointing import SilenceTimer
from audio_interaction.infer.engine import Engine
from audio_interaction.infer.policies import policy_from_config
from audio_interaction.infer.run_stream import StreamTrace, run_policies
from audio_interaction.infer.sound_alerts import sound_alert_rule
from audio_interaction.model.model import Params
from audio_interaction.viz.report_plots import plot_alert_tune, plot_tune

TUNE_SUITES: Final[tuple[str, ...]] = ("B5", "B6")
MODEL, HYBRID, GATED, TIMER = "model", "hybrid", "gated_timer", "silence_timer"
# Where the goal puts the figures the rule does not constrain (reported only).
GOAL_LATENCY_S: Final[float] = 0.35
GOAL_RECALL: Final[float] = 0.8
GOAL_ALERT_TEXT: Final[float] = 0.7


@dataclasses.dataclass(frozen=True)
class Candidate:
  """One operating point: a policy and the knobs it reads (None: not used by it)."""

  policy: str
  threshold: float | None = None
  min_silence_seconds: float | None = None
  silence_seconds: float | None = None

  @property
  def name(self) -> str:
    if self.policy == MODEL:
      return f"model θ={self.threshold:g}"
    if self.policy == TIMER:
      return f"timer {self.silence_seconds:g}s"
    if self.policy == GATED:
      return f"gated timer θ={self.threshold:g} {self.silence_seconds:g}s"
    return (f"hybrid θ={self.threshold:g} min={self.min_silence_seconds:g}s "
            f"timer={self.silence_seconds:g}s")

  @classmethod
  def from_infer(cls, block: ml_collections.ConfigDict) -> "Candidate":
    """The operating point an `infer` block deploys (its policy and the knobs it reads)."""
    if block.policy == MODEL:
      return cls(MODEL, threshold=float(block.threshold))
    if block.policy == TIMER:
      return cls(TIMER, silence_seconds=float(block.silence_seconds))
    if block.policy == GATED:
      return cls(GATED, threshold=float(block.threshold),
                 silence_seconds=float(block.silence_seconds))
    if block.policy == HYBRID:
      return cls(HYBRID, threshold=float(block.threshold),
                 min_silence_seconds=float(block.min_silence_seconds),
                 silence_seconds=float(block.silence_seconds))
    raise ValueError(f"infer.policy={block.policy!r}: not a policy tune knows "
                     f"({MODEL}, {HYBRID}, {GATED}, {TIMER})")

  def infer_block(self, base: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`base` (a config's `infer`) with this candidate's policy and knobs."""
    block = ml_collections.ConfigDict(base.to_dict())
    block.policy = self.policy
    for key in ("threshold", "min_silence_seconds", "silence_seconds"):
      if getattr(self, key) is not None:
        block[key] = float(getattr(self, key))
    return block


@dataclasses.dataclass(frozen=True)
class Grid:
  """The candidates' knobs (s for times). Hybrid points with min_silence > silence are
  skipped (`HybridPolicy` refuses them)."""

  thresholds: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9)
  hybrid_thresholds: tuple[float, ...] = (0.5, 0.7, 0.9)
  min_silences: tuple[float, ...] = (0.2, 0.4)
  hybrid_silences: tuple[float, ...] = (0.7, 1.0, 1.5)
  timer_silences: tuple[float, ...] = (0.5, 0.7, 1.0, 1.5)
  # The gated timer (θ × silence); no threshold: not searched (tunes before it existed).
  gated_thresholds: tuple[float, ...] = ()
  gated_silences: tuple[float, ...] = (0.5, 0.7, 1.0)
  sound_alert_thresholds: tuple[float, ...] = ()
  sound_alert_holds: tuple[float, ...] = ()
  sound_alert_chunks: tuple[int, ...] = ()
  sound_alert_once_per_sound: tuple[bool, ...] = ()
  # The bundle's own operating point, kept whatever the rule says (scored beside the
  # reference timer): only the sound alerts are tuned.
  keep_policy: Candidate | None = None

  def candidates(self, reference_silence_seconds: float = suites.REFERENCE_SILENCE_SECONDS
                 ) -> list[Candidate]:
    """Model, then hybrid, gated-timer and timer candidates; the reference timer always included
    (with `keep_policy`: that point and the reference timer only)."""
    if self.keep_policy is not None:
      timer = Candidate(TIMER, silence_seconds=reference_silence_seconds)
      return [self.keep_policy] + ([timer] if self.keep_policy != timer else [])
    timers = sorted(set(self.timer_silences) | {reference_silence_seconds})
    out = [Candidate(MODEL, threshold=t) for t in self.thresholds]
    out += [Candidate(HYBRID, threshold=t, min_silence_seconds=m, silence_seconds=s)
            for t in self.hybrid_thresholds for m in self.min_silences
            for s in self.hybrid_silences if m <= s]
    out += [Candidate(GATED, threshold=t, silence_seconds=s)
            for t in self.gated_thresholds for s in self.gated_silences]
    out += [Candidate(TIMER, silence_seconds=s) for s in timers]
    return out


# The false-alarm figures a `Rule` can budget (`suites.alerts`).
FALSE_ALARM_FIGURES = ("benign_false_alarms_per_hour", "false_alarms_per_hour")


@dataclasses.dataclass(frozen=True)
class Rule:
  """The selection rule's constants (see the module docstring)."""

  reference_silence_seconds: float = suites.REFERENCE_SILENCE_SECONDS
  max_miss: float = 0.10
  max_false_alarms_per_hour: float = 10.0
  target_latency_s: float = GOAL_LATENCY_S
  # Which false-alarm figure the budget reads: the goal's "false alarms per hour of
  # benign sound" (late alerts of real alarms left out: they are misses, which recall
  # already counts), or "false_alarms_per_hour" (every alert that detected nothing).
  false_alarm_figure: str = "benign_false_alarms_per_hour"

  def __post_init__(self):
    if self.false_alarm_figure not in FALSE_ALARM_FIGURES:
      raise ValueError(f"false_alarm_figure {self.false_alarm_figure!r}: choose from "
                       f"{FALSE_ALARM_FIGURES}")

  def false_alarm_rate(self, figures: dict[str, float]) -> float:
    """The false alarms per hour the budget reads from a candidate's `figures` (NaN when
    undefined); rows written before the benign figure existed give their whole figure."""
    return figures.get(self.false_alarm_figure, figures["false_alarms_per_hour"])

  def false_alarms(self, figures: dict[str, float]) -> float:
    """`false_alarm_rate`, inf when undefined (for comparisons)."""
    return _finite(self.false_alarm_rate(figures), math.inf)

  def false_alarm_label(self) -> str:
    """What the budgeted figure is, in words."""
    whole = "false alarms per hour of benign audio"
    if self.false_alarm_figure == "benign_false_alarms_per_hour":
      return f"{whole} (late alerts of real alarms left out)"
    return whole

  def describe(self) -> str:
    return (f"Among candidates with false cut-in <= the {self.reference_silence_seconds:g} s "
            f"silence timer's and miss <= {self.max_miss:.0%} (on tuning half A), and "
            f"{self.false_alarm_label()} <= {self.max_false_alarms_per_hour:g} if some of "
            f"them have it: of those with a median response latency <= "
            f"{self.target_latency_s:g} s, the lowest false cut-in + miss, else the lowest "
            f"median response latency; ties: latency, then false alarms within the budget "
            f"first, then the highest alert recall, then the fewer false alarms, then the "
            "lower false cut-in + miss, then grid order. If none meets them: the lowest "
            "false cut-in + miss (same ties).")


# ------------------------------------------------------------------------------ runs

def run_candidates(engine: Engine, params: Params, tokenizer: Tokenizer, case: Case,
                   blocks: Sequence[ml_collections.ConfigDict], *,
                   max_reply_tokens: int | None = None,
                   timer: SilenceTimer | None = None) -> list[StreamTrace]:
  """Runs every candidate `infer` block over one recording as one batch.

  The blocks' timer-driven policies share one VAD pass: `timer` (or a new one of the
  blocks' common `vad`) scores the recording once and each policy replays the scores.

  Args:
    case: an online case; case.audio float32[S] 16 kHz (zero-padded to whole chunks).
    blocks: B `infer` blocks (`Candidate.infer_block`), all with the same `vad` and the
      same sound alerts (`infer.sound_alert_*`: one rule per batch).
    timer: the VAD to score with (reused across recordings to load it once).
  Returns:
    B traces, row b run under `policy_from_config(blocks[b])`.
  """
  chunk_seconds = engine.model.config.chunk_seconds
  chunk = engine.model.config.chunk_samples
  audio = np.asarray(case.audio, np.float32)
  audio = np.pad(audio, (0, -len(audio) % chunk))
  vads = {b.vad for b in blocks if b.policy != MODEL}
  if len(vads) > 1:
    raise ValueError(f"the candidates must share one VAD (its scores are replayed), got {vads}")
  detector_of: Callable[[], ReplayDetector | None] = lambda: None
  if vads:
    (vad,) = vads
    if timer is None or timer.vad != vad:
      timer = SilenceTimer(vad=vad, chunk_seconds=chunk_seconds)
    scores = timer.speech_probabilities(audio)
    detector_of = lambda: ReplayDetector(scores, timer.frame_samples)
  policies = [policy_from_config(b, chunk_seconds=chunk_seconds, detector=detector_of())
              for b in blocks]
  alert_keys = ("sound_alert_threshold", "sound_alert_chunks", "sound_alert_hold_seconds")
  alert_settings = {tuple(b[k] for k in alert_keys) for b in blocks}
  if len(alert_settings) > 1:
    raise ValueError(f"the candidates must share their sound alerts, got {alert_settings}")
  alerts = sound_alert_rule(blocks[0], tokenizer.encode, chunk_seconds=chunk_seconds,
                            sound_event_classes=engine.model.config.sound_event_classes)
  return run_policies(engine, params, audio, tokenizer.encode(case.timeline.instruction),
                      policies, max_reply_tokens=max_reply_tokens, sound_alerts=alerts)


def tune_cases(report_cases: Sequence[Case]) -> list[Case]:
  """The B5 and B6 cases to tune on: a recording with turns is not also a B6 case (its
  replies to the turns would count as false alarms)."""
  with_turns = {c.name.split(":", 1)[1] for c in report_cases if "B5" in c.suites}
  return [c for c in report_cases if "B5" in c.suites or (
      "B6" in c.suites and c.name.split(":", 1)[1] not in with_turns)]


def split_halves(cases: Sequence[Case], seed: int) -> tuple[list[int], list[int]]:
  """Indices of tuning half A and held-out half B.

  Stratified: cases are grouped by suite and by whether they hold scored items (turns,
  alert events); each group is shuffled (numpy `default_rng(seed)`) and dealt A, B, A, …
  """
  groups: dict[tuple, list[int]] = collections.defaultdict(list)
  for i, case in enumerate(cases):
    suite = min(case.suites)
    groups[(suite, suites.case_units(case, suite) > 0)].append(i)
  rng = np.random.default_rng(seed)
  half_a, half_b = [], []
  for key in sorted(groups):
    order = rng.permutation(groups[key])
    half_a += [int(i) for i in order[0::2]]
    half_b += [int(i) for i in order[1::2]]
  return sorted(half_a), sorted(half_b)


# ---------------------------------------------------------------------------- scores

def _runs(cases: Sequence[Case], traces: Sequence[StreamTrace], threshold: float = 0.0,
          timers: Sequence[StreamTrace] | None = None) -> list[CaseRun]:
  """CaseRuns whose operating-threshold trace (`CaseRun.model`) is a candidate's."""
  return [CaseRun(case, threshold, sweep={threshold: trace},
                  timer=None if timers is None else timers[i])
          for i, (case, trace) in enumerate(zip(cases, traces))]


def score_candidate(cases: Sequence[Case], traces: Sequence[StreamTrace],
                    tokenizer: Tokenizer, config: EvalConfig) -> dict[str, float]:
  """One candidate's figures over `cases` (its `traces`, one per case).

  Returns {"turns", "false_cut_in_rate", "miss_rate", "median_latency_s",
  "p90_latency_s", "events", "recall", "precision", "f1", "false_alarms_per_hour",
  "late_alerts", "benign_false_alarms_per_hour" (late alerts of real alarms left out,
  `suites.alerts`; the budget reads `Rule.false_alarm_figure`), "benign_hours",
  "alert_text_accuracy"}; NaN where a suite has no items.
  """
  runs = _runs(cases, traces)
  b5 = [r for r in runs if "B5" in r.case.suites]
  b6 = [r for r in runs if "B6" in r.case.suites]
  turn = suites.turn_taking(b5, lambda r: suites.reply_starts(r.model), config)
  out = {"turns": turn["turns"], "false_cut_in_rate": turn["false_cut_in_rate"],
         "miss_rate": turn["miss_rate"],
         "median_latency_s": turn["response_latency_s"]["median"],
         "p90_latency_s": turn["response_latency_s"]["p90"]}
  if b6:
    alert = suites.suite_b6(b6, tokenizer, config)["model"]
    out |= {"events": alert["events"], "recall": alert["recall"],
            "precision": alert["precision"], "f1": alert["f1"],
            "false_alarms_per_hour": alert["false_alarms_per_hour"],
            "late_alerts": alert["late_alerts"],
            "benign_false_alarms_per_hour": alert["benign_false_alarms_per_hour"],
            "benign_hours": alert["hours"], "alert_text_accuracy": alert["naming"]["rate"]}
  else:
    out |= {"events": 0, "recall": math.nan, "precision": math.nan, "f1": math.nan,
            "false_alarms_per_hour": math.nan, "late_alerts": 0,
            "benign_false_alarms_per_hour": math.nan, "benign_hours": 0.0,
            "alert_text_accuracy": math.nan}
  return out


# ------------------------------------------------------------------------- selection

@dataclasses.dataclass(frozen=True)
class Selection:
  """The rule's pick: index into the score table; whether it meets the B5 constraints."""

  index: int
  meets_constraints: bool
  reference_cut_in: float
  eligible: tuple[int, ...]


def _finite(value: float | None, default: float) -> float:
  return default if value is None or not math.isfinite(value) else float(value)


def select(table: Sequence[dict[str, float]], reference_cut_in: float,
           rule: Rule = Rule()) -> Selection:
  """Applies the selection rule (module docstring) to candidates' figures on half A.

  Args:
    table: per candidate, in grid order, at least "false_cut_in_rate", "miss_rate",
      "median_latency_s", "false_alarms_per_hour", "recall" (NaN: undefined).
    reference_cut_in: the reference timer's false cut-in rate on the same cases.
  """
  if not table:
    raise ValueError("no candidates to select from")
  if not math.isfinite(reference_cut_in):
    raise ValueError("the reference timer's false cut-in rate is undefined: no turns to tune on")

  def b6_key(row: dict) -> tuple:
    alarms = rule.false_alarms(row)
    quiet = alarms <= rule.max_false_alarms_per_hour
    return (not quiet, -_finite(row["recall"], -math.inf), alarms)

  def latency(row: dict) -> float:
    return round(_finite(row["median_latency_s"], math.inf), 9)

  eligible = tuple(i for i, row in enumerate(table)
                   if _finite(row["false_cut_in_rate"], math.inf) <= reference_cut_in + 1e-9
                   and _finite(row["miss_rate"], math.inf) <= rule.max_miss + 1e-9)
  errors = [round(_finite(r["false_cut_in_rate"], math.inf) + _finite(r["miss_rate"], math.inf),
                  9) for r in table]
  if eligible:
    quiet = [i for i in eligible
             if rule.false_alarms(table[i]) <= rule.max_false_alarms_per_hour]
    competing = quiet or eligible
    fast = [i for i in competing if latency(table[i]) <= rule.target_latency_s + 1e-9]
    if fast:
      best = min(fast, key=lambda i: (errors[i], latency(table[i]), *b6_key(table[i]), i))
    else:
      best = min(competing, key=lambda i: (latency(table[i]), *b6_key(table[i]), errors[i], i))
    return Selection(best, True, reference_cut_in, eligible)
  best = min(range(len(table)), key=lambda i: (errors[i], latency(table[i]),
                                              *b6_key(table[i]), i))
  return Selection(best, False, reference_cut_in, ())


def select_sound_alert(table: Sequence[dict[str, float]], rule: Rule, off_index: int | None = 0
                       ) -> tuple[int, bool]:
  """(index of the chosen threshold's row, whether it is within the false-alarm budget)
  by the module docstring's rule; rows in threshold order, each with "recall", "f1",
  "false_alarms_per_hour" (and `rule.false_alarm_figure`) and "alert_text_accuracy"; row
  `off_index` is alerts off,
  which alone within the budget does not end the search (its recall is the decoder's,
  near none: choosing it would switch the head's alerts off whenever none of them is
  within the budget)."""
  fa = [rule.false_alarms(row) for row in table]
  recall = [_finite(row["recall"], 0.0) for row in table]
  f1 = [_finite(row["f1"], 0.0) for row in table]
  text = [_finite(row["alert_text_accuracy"], 0.0) for row in table]
  within = [i for i in range(len(table)) if fa[i] <= rule.max_false_alarms_per_hour]
  if set(within) - {off_index}:
    return min(within, key=lambda i: (-recall[i], -text[i], i)), True
  best = min(range(len(table)), key=lambda i: (-f1[i], fa[i], i))
  return best, best in within


def tune_sound_alerts(engine: Engine, params: Params, tokenizer: Tokenizer,
                      cases: Sequence[Case], block: ml_collections.ConfigDict,
                      thresholds: Sequence[float], halves: dict[str, Sequence[int]],
                      config: EvalConfig, rule: Rule, *, holds: Sequence[float] = (),
                      chunks: Sequence[int] = (), once_per_sound: Sequence[bool] = (),
                      progress: bool = True) -> tuple[dict[str, Any], list[StreamTrace]]:
  """The chosen policy `block` with sound alerts off and at each of `thresholds` × `holds`
  (`sound_alert_hold_seconds`) × `chunks` (`sound_alert_chunks`) × `once_per_sound`
  (`sound_alert_once_per_sound`; an axis not given: the block's value): one run per
  point per case, scored per half, the point chosen on half A (`select_sound_alert`).
  Returns ({"candidates": [{"threshold", "hold_seconds", "chunks", "once_per_sound",
  "A", "B", "all"}], "index", the chosen point's four knobs, "within_budget", "infer"},
  the chosen point's traces, one per case)."""
  axes = {"hold_seconds": sorted({float(h) for h in holds})
                          or [float(block.sound_alert_hold_seconds)],
          "chunks": sorted({int(c) for c in chunks}) or [int(block.sound_alert_chunks)],
          "once_per_sound": sorted({bool(o) for o in once_per_sound})
                            or [bool(block.sound_alert_once_per_sound)]}
  # "Off" keeps the block's other knobs, so choosing it leaves them as they were.
  off = {"threshold": 0.0, **{name: type(values[0])(block[_ALERT_KNOBS[name]])
                              for name, values in axes.items()}}
  points = [off] + [{"threshold": t, **dict(zip(axes, combination))}
                    for t in sorted({float(t) for t in thresholds if t})
                    for combination in itertools.product(*axes.values())]
  rows, runs = [], []
  for point in tqdm(points, desc="sound alert points", disable=not progress):
    trial = ml_collections.ConfigDict(block.to_dict())
    for name, value in point.items():
      trial[_ALERT_KNOBS[name]] = value
    traces = [run_candidates(engine, params, tokenizer, case, [trial],
                             max_reply_tokens=config.max_reply_tokens)[0] for case in cases]
    runs.append(traces)
    rows.append({**point, **{
        half: score_candidate([cases[i] for i in idx], [traces[i] for i in idx], tokenizer,
                              config) for half, idx in halves.items()}})
  index, within = select_sound_alert([row["A"] for row in rows], rule)
  infer = ml_collections.ConfigDict(block.to_dict())
  for name, value in points[index].items():
    infer[_ALERT_KNOBS[name]] = value
  return {"candidates": rows, "index": index, **points[index], "within_budget": within,
          "infer": infer.to_dict()}, runs[index]


# A sound-alert point's knobs and the `infer` keys they set.
_ALERT_KNOBS = {"threshold": "sound_alert_threshold", "hold_seconds": "sound_alert_hold_seconds",
                "chunks": "sound_alert_chunks", "once_per_sound": "sound_alert_once_per_sound"}


def _alert_point(row: dict[str, Any]) -> str:
  """A sound-alert point's name: 'θ (chunks, hold)'; rows written before the chunks axis
  have none."""
  run = f"{row['chunks']} chunks, " if "chunks" in row else ""
  once = "once per sound, " if row.get("once_per_sound") else ""
  return f"{row['threshold']:g} ({once}{run}hold {row['hold_seconds']:g} s)"


def goal_checks(figures: dict[str, float], reference_cut_in: float,
                rule: Rule = Rule()) -> dict[str, dict[str, Any]]:
  """The issue's goal, figure by figure: {name: {"value", "target", "sense" ("<=" or
  ">="), "met" (None when undefined), "label"}}."""
  reference = f"the {rule.reference_silence_seconds:g} s timer's on the same cases"
  checks = {
      "false_cut_in_rate": (figures["false_cut_in_rate"], reference_cut_in, "<=",
                            f"B5 false cut-in (target: {reference})"),
      "miss_rate": (figures["miss_rate"], rule.max_miss, "<=", "B5 miss rate"),
      "median_latency_s": (figures["median_latency_s"], GOAL_LATENCY_S, "<=",
                           "B5 median response latency"),
      "recall": (figures["recall"], GOAL_RECALL, ">=", "B6 alert recall"),
      "false_alarms_per_hour": (rule.false_alarm_rate(figures),
                                rule.max_false_alarms_per_hour, "<=",
                                f"B6 {rule.false_alarm_label()}"),
      "alert_text_accuracy": (figures["alert_text_accuracy"], GOAL_ALERT_TEXT, ">=",
                              "B6 alerts naming the right class"),
  }
  out = {}
  for name, (value, target, sense, label) in checks.items():
    met = None
    if math.isfinite(value) and math.isfinite(target):
      met = value <= target + 1e-9 if sense == "<=" else value >= target - 1e-9
    out[name] = {"value": value, "target": target, "sense": sense, "met": met, "label": label}
  return out


def chosen_report(cases: Sequence[Case], chosen: Sequence[StreamTrace],
                  reference: Sequence[StreamTrace], tokenizer: Tokenizer,
                  config: EvalConfig) -> dict[str, Any]:
  """B5 (chosen vs the reference timer on the same cases) and B6 blocks of the suites,
  each with 95 % bootstrap intervals of its headlines (`suites.headline_intervals`)."""
  light = dataclasses.replace(config, sweep_silences=())
  runs = _runs(cases, chosen, timers=reference)
  out = {}
  for suite in TUNE_SUITES:
    picked = [r for r in runs if suite in r.case.suites]
    if not picked:
      continue
    result = {"name": suites.SUITE_NAMES[suite], **suites.SUITES[suite](picked, tokenizer, light)}
    result.pop("sweep_model", None)
    result.pop("sweep_silence_timer", None)
    for block in result.values():
      if isinstance(block, dict):
        block.pop("latencies", None)
    result["intervals"] = suites.headline_intervals(suite, picked, tokenizer, light)
    out[suite] = result
  return out


# ------------------------------------------------------------------------- the whole run

def tune(engine: Engine, params: Params, tokenizer: Tokenizer, cases: Sequence[Case],
         base_infer: ml_collections.ConfigDict, grid: Grid = Grid(), rule: Rule = Rule(), *,
         config: EvalConfig | None = None, seed: int = 0, progress: bool = True,
         sources: Sequence[str] | None = None) -> dict[str, Any]:
  """Runs every candidate over `cases`, picks on half A, reports on half B and all.

  Args:
    cases: online B5/B6 cases (`tune_cases`), at least two with turns (one per half).
    base_infer: the bundle's `infer` block: the candidates change only policy,
      threshold, min_silence_seconds and silence_seconds (`vad`: the timer's VAD).
    config: answer window, reply cap, bootstrap settings (default: `EvalConfig.from_infer`).
    sources: each case's manifest: the chosen point and the reference timer are also
      scored per manifest over all its cases (`chosen["by_source"]`).
  Returns:
    JSON-able (after `suites.json_safe`): {"rule", "grid", "split", "candidates":
    [{"name", "policy", knobs, "A", "B", "all"}], "reference", "chosen": {"name",
    "index", "infer", "meets_constraints", "halves": {"B", "all"}, "goal": {...}},
    "timing"}.
  """
  config = config or EvalConfig.from_infer(base_infer)
  if sources is not None and len(sources) != len(cases):
    raise ValueError(f"{len(sources)} sources for {len(cases)} cases")
  turns = [c for c in cases if "B5" in c.suites and suites.case_units(c, "B5")]
  if len(turns) < 2:
    raise ValueError(f"tune needs at least 2 turn-taking recordings with turns (one per half); "
                     f"got {len(turns)} among {len(cases)} cases")
  candidates = grid.candidates(rule.reference_silence_seconds)
  blocks = [c.infer_block(base_infer) for c in candidates]
  reference = candidates.index(Candidate(TIMER, silence_seconds=rule.reference_silence_seconds))
  timer = SilenceTimer(vad=base_infer.vad, chunk_seconds=engine.model.config.chunk_seconds)
  traces: list[list[StreamTrace]] = []  # [case][candidate]
  chunks = 0
  for case in tqdm(cases, desc="tune recordings", disable=not progress):
    traces.append(run_candidates(engine, params, tokenizer, case, blocks,
                                 max_reply_tokens=config.max_reply_tokens, timer=timer))
    chunks += len(traces[-1][0].chunks)
  half_a, half_b = split_halves(cases, seed)
  halves = {"A": half_a, "B": half_b, "all": list(range(len(cases)))}

  def figures(k: int, indices: Sequence[int]) -> dict[str, float]:
    return score_candidate([cases[i] for i in indices], [traces[i][k] for i in indices],
                           tokenizer, config)

  table = [{half: figures(k, idx) for half, idx in halves.items()}
           for k in range(len(candidates))]
  selection = select([row["A"] for row in table], table[reference]["A"]["false_cut_in_rate"],
                     rule)
  if grid.keep_policy is not None:
    kept = candidates.index(grid.keep_policy)
    selection = dataclasses.replace(selection, index=kept,
                                    meets_constraints=kept in selection.eligible)
  k = selection.index
  chosen = {"name": candidates[k].name, "index": k,
            "infer": blocks[k].to_dict(), "meets_constraints": selection.meets_constraints,
            "eligible_on_A": [candidates[i].name for i in selection.eligible],
            "halves": {}, "goal": {}}
  # The suites' silence-timer block is the reference timer (its label reads the config).
  beside = dataclasses.replace(config, baseline_silence_seconds=rule.reference_silence_seconds,
                               vad=base_infer.vad)
  if grid.sound_alert_thresholds:
    if not engine.model.config.sound_event_classes:
      raise ValueError("--sound-alert-thresholds: the model has no sound-event head")
    stage, alert_traces = tune_sound_alerts(engine, params, tokenizer, cases, blocks[k],
                                            grid.sound_alert_thresholds, halves, config, rule,
                                            holds=grid.sound_alert_holds,
                                            chunks=grid.sound_alert_chunks,
                                            once_per_sound=grid.sound_alert_once_per_sound,
                                            progress=progress)
    chosen["sound_alerts"] = stage
    chosen["infer"] = stage["infer"]
    chosen["name"] += (f", sound alerts {_alert_point(stage)}" if stage["threshold"] else "")
    chosen_traces = alert_traces
    chosen_figures = stage["candidates"][stage["index"]]
  else:
    chosen_traces = [traces[i][k] for i in range(len(cases))]
    chosen_figures = table[k]
  for half in ("B", "all"):
    idx = halves[half]
    chosen["halves"][half] = chosen_report(
        [cases[i] for i in idx], [chosen_traces[i] for i in idx],
        [traces[i][reference] for i in idx], tokenizer, beside)
    chosen["goal"][half] = goal_checks(chosen_figures[half],
                                       table[reference][half]["false_cut_in_rate"], rule)
  if sources is not None:
    of_source: dict[str, list[int]] = collections.defaultdict(list)  # in the manifests' order
    for i, source in enumerate(sources):
      of_source[source].append(i)
    chosen["by_source"] = [
        {"source": source, "cases": len(idx),
         "chosen": score_candidate([cases[i] for i in idx], [chosen_traces[i] for i in idx],
                                   tokenizer, config),
         "reference": figures(reference, idx)}
        for source, idx in of_source.items()]
  return {
      "rule": rule.describe(), "rule_constants": dataclasses.asdict(rule),
      "grid": dataclasses.asdict(grid),
      "split": {"seed": seed, **{h: [cases[i].name for i in halves[h]] for h in ("A", "B")}},
      "counts": {h: {"cases": len(idx), "turns": table[0][h]["turns"],
                     "alert_events": table[0][h]["events"]} for h, idx in halves.items()},
      "candidates": [{"name": c.name, **dataclasses.asdict(c), **row}
                     for c, row in zip(candidates, table)],
      "reference": {"name": candidates[reference].name, "index": reference},
      "chosen": chosen,
      "timing": {"recordings": len(cases), "chunks": chunks, "rows": len(candidates),
                 "model_passes": len(cases)},
  }


# ----------------------------------------------------------------------------- report

def _pct(value: float | None) -> str:
  return report.fmt(value, "%")


def _alarms(half: dict) -> str:
  """False alarms per hour, and in brackets without late alerts (rows written before the
  split have none)."""
  benign = half.get("benign_false_alarms_per_hour")
  whole = report.fmt(half["false_alarms_per_hour"])
  return whole if benign is None else f"{whole} ({report.fmt(benign)})"


def _table(result: dict) -> str:
  """Markdown: every candidate's figures on half A (tuning) and on all cases."""
  chosen, reference = result["chosen"]["index"], result["reference"]["index"]
  eligible = set(result["chosen"]["eligible_on_A"])
  lines = ["| candidate | A: cut-in | A: miss | A: median latency | A: recall | A: FA/h | "
           "A: alert text | all: cut-in | all: miss | all: median latency |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for i, c in enumerate(result["candidates"]):
    a, every = c["A"], c["all"]
    mark = (" **(chosen)**" if i == chosen else "") + (" (reference)" if i == reference else "")
    mark += " ✓" if c["name"] in eligible else ""
    lines.append(f"| {c['name']}{mark} | {_pct(a['false_cut_in_rate'])} | {_pct(a['miss_rate'])}"
                 f" | {report.fmt(a['median_latency_s'], 's')} | {_pct(a['recall'])} | "
                 f"{report.fmt(a['false_alarms_per_hour'])} | {_pct(a['alert_text_accuracy'])} | "
                 f"{_pct(every['false_cut_in_rate'])} | {_pct(every['miss_rate'])} | "
                 f"{report.fmt(every['median_latency_s'], 's')} |")
  return "\n".join(lines)


def _goal_lines(goal: dict) -> list[str]:
  lines = ["| goal | value | target | met |", "|---|---|---|---|"]
  for name, check in goal.items():
    kind = "s" if name.endswith("_s") else ("f" if name == "false_alarms_per_hour" else "%")
    met = {True: "yes", False: "**no**", None: "—"}[check["met"]]
    lines.append(f"| {check['label']} | {report.fmt(check['value'], kind)} | {check['sense']} "
                 f"{report.fmt(check['target'], kind)} | {met} |")
  return lines


def warning(result: dict) -> str | None:
  """The loud line when no candidate met the turn-taking constraints on half A."""
  if result["chosen"]["meets_constraints"]:
    return None
  return (f"WARNING: no candidate meets the turn-taking constraints on half A (false cut-in "
          f"<= {result['reference']['name']}'s, miss <= "
          f"{result['rule_constants']['max_miss']:.0%}); chose the lowest cut-in + miss "
          f"instead: {result['chosen']['name']}")


def write_tune_report(result: dict, out_dir: str | pathlib.Path, *, note: str = "",
                      command: str = "") -> dict[str, pathlib.Path]:
  """Writes tune.json, tune.md and tune.png (`viz.report_plots.plot_tune`) into `out_dir`,
  and tune_alerts.png (`plot_alert_tune`) when the alerts were tuned."""
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  result = suites.json_safe(result)
  chosen = result["chosen"]
  # Results written before the figure was a constant budgeted the whole figure.
  rule = Rule(**{"false_alarm_figure": "false_alarms_per_hour", **result["rule_constants"]})
  paths = {"json": out / "tune.json", "markdown": out / "tune.md",
           "plot": plot_tune(result["candidates"], chosen["index"], result["reference"]["index"],
                             out / "tune.png",
                             max_miss=rule.max_miss)}
  if "sound_alerts" in chosen:
    paths["alert_plot"] = plot_alert_tune(
        chosen["sound_alerts"]["candidates"], chosen["sound_alerts"]["index"],
        out / "tune_alerts.png", budget=rule.max_false_alarms_per_hour,
        alarms=rule.false_alarm_rate, alarms_label=rule.false_alarm_label())
  paths["json"].write_text(json.dumps({**result, "note": note, "command": command}, indent=1))
  counts = result["counts"]
  alarm = warning(result)
  infer = chosen["infer"]
  knobs = ", ".join(f"{k}={infer[k]}" for k in ("policy", "threshold", "min_silence_seconds",
                                                  "silence_seconds", "vad", "hybrid_signal",
                                                  "hybrid_gate",
                                                  "sound_alert_threshold",
                                                  "sound_alert_chunks",
                                                  "sound_alert_hold_seconds",
                                                  "sound_alert_once_per_sound") if k in infer)
  text = ["# Operating point chosen on the dev set", "",
          f"Model: {note}." if note else "", f"Reproduce: `{command}`" if command else "", "",
          f"**{alarm}**" if alarm else "",
          f"Chosen: **{chosen['name']}** (`infer`: {knobs}).", "",
          f"Rule: {result['rule']}", "",
          "Cases: " + "; ".join(f"{h}: {c['cases']} recordings, {c['turns']} turns, "
                                f"{c['alert_events']} alert events" for h, c in counts.items())
          + f" (split seed {result['split']['seed']}). "
          f"{result['timing']['rows']} candidates, one batched model pass per recording "
          f"({result['timing']['model_passes']} passes"
          + (f", {result['timing']['wall_seconds']:.0f} s in all" if "wall_seconds" in
             result["timing"] else "") + ").", ""]
  for half, title in (("B", "held-out half B (not used to choose)"), ("all", "all cases")):
    text += [f"## The chosen point on {title}", "",
             "Brackets: 95 % bootstrap intervals over cases; beside it: the reference silence "
             "timer driving the same model on the same cases.", "",
             report.summary_table({"suites": chosen["halves"][half]}), "",
             *_goal_lines(chosen["goal"][half]), ""]
  if chosen.get("by_source"):
    text += ["## The chosen point by manifest (all cases)", "",
             "Each manifest's cases alone; beside each, the reference timer on them.", "",
             "| manifest | recordings | turns | cut-in | miss | median latency | "
             "timer: cut-in / miss / latency | alert recall | FA/h |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in chosen["by_source"]:
      mine, timer = row["chosen"], row["reference"]
      text.append(
          f"| {row['source']} | {row['cases']} | {mine['turns']} | "
          f"{_pct(mine['false_cut_in_rate'])} | {_pct(mine['miss_rate'])} | "
          f"{report.fmt(mine['median_latency_s'], 's')} | "
          f"{_pct(timer['false_cut_in_rate'])} / {_pct(timer['miss_rate'])} / "
          f"{report.fmt(timer['median_latency_s'], 's')} | {_pct(mine['recall'])} | "
          f"{_alarms(mine)} |")
    text.append("")
  if "sound_alerts" in chosen:
    stage = chosen["sound_alerts"]
    text += ["## Sound alerts (the chosen policy, alerts from the sound-event head)", "",
             "" if stage["within_budget"] else
             f"**No threshold keeps false alarms within "
             f"{result['rule_constants']['max_false_alarms_per_hour']:g}/h on half A: the "
             "highest alert F1 chosen.**", "",
             "FA/h: false alarms per hour; in brackets without the late alerts of real alarms "
             "(raised while the alarm still sounds, after its deadline: a miss, but not an "
             "alarm in benign audio).", "",
             "| alert threshold (chunks, hold) | A: recall | A: F1 | A: FA/h | A: alert text | "
             "A: cut-in | all: recall | all: FA/h | all: alert text |",
             "|---|---|---|---|---|---|---|---|---|"]
    for i, row in enumerate(stage["candidates"]):
      a, every = row["A"], row["all"]
      name = _alert_point(row) if row["threshold"] else "off"
      text.append(f"| {name}{' **(chosen)**' if i == stage['index'] else ''} | "
                  f"{_pct(a['recall'])} | {report.fmt(a['f1'])} | "
                  f"{_alarms(a)} | "
                  f"{_pct(a['alert_text_accuracy'])} | {_pct(a['false_cut_in_rate'])} | "
                  f"{_pct(every['recall'])} | {_alarms(every)} | "
                  f"{_pct(every['alert_text_accuracy'])} |")
    text += ["", "![alert recall vs false alarms](tune_alerts.png)", ""]
  text += ["## Every candidate", "",
           "✓: meets the turn-taking constraints on half A. FA/h: false alarms per hour of "
           "benign audio; alert text: the alert names the right class.", "",
           _table(result), "", "![cut-in vs miss](tune.png)", ""]
  paths["markdown"].write_text("\n".join(line for line in text if line is not None) + "\n")
  return paths
