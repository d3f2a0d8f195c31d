"""The benchmark metrics (DESIGN.md, B1-B8) as pure functions of times and texts.

Every time is *stream time* in seconds: where in the audio something happened, as a
user listening at real-time playback would feel it, never how fast this machine ran.
A reply's time is the end of the chunk after which its first token was written (the
earliest moment the system could have acted on that chunk). Texts are compared after
`tokenizer.normalize_text` (lower case, digits spelled out, punctuation dropped).

Conventions: a rate over zero items is NaN (undefined, not perfect); latency lists
hold None for items that were never answered.
"""

from __future__ import annotations

import collections

import dataclasses
import functools
import math
from collections.abc import Sequence

import jiwer
import numpy as np

from audio_interaction.data.tokenizer import normalize_text

Interval = tuple[float, float]  # [start, end) in seconds


# ---------------------------------------------------------------------------- text

def _words(text: str) -> list[str]:
  return normalize_text(text).split()


@dataclasses.dataclass(frozen=True)
class WerResult:
  """Corpus-level word error rate and its counts (see `word_error_rate`)."""

  wer: float
  substitutions: int
  deletions: int
  insertions: int
  reference_words: int

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> WerResult:
  """WER = (substitutions + deletions + insertions) / reference words, over all pairs.

  Counts come from jiwer's Levenshtein alignment of the normalized word sequences,
  summed over the pairs (a corpus WER, not a mean of per-utterance WERs). An empty
  hypothesis deletes every reference word; an empty reference makes every hypothesis
  word an insertion. With no reference words at all, WER is 0 if nothing was said and
  inf otherwise.
  """
  if len(references) != len(hypotheses):
    raise ValueError(f"{len(references)} references for {len(hypotheses)} hypotheses")
  subs = dels = ins = total = 0
  pairs = [(" ".join(_words(r)), " ".join(_words(h))) for r, h in zip(references, hypotheses)]
  for ref, hyp in pairs:
    if not ref:
      ins += len(hyp.split())
    elif not hyp:
      dels += len(ref.split())
      total += len(ref.split())
  scored = [(r, h) for r, h in pairs if r and h]
  if scored:
    out = jiwer.process_words([r for r, _ in scored], [h for _, h in scored])
    subs, dels, ins = subs + out.substitutions, dels + out.deletions, ins + out.insertions
    total += out.substitutions + out.deletions + out.hits
  errors = subs + dels + ins
  wer = errors / total if total else (0.0 if errors == 0 else math.inf)
  return WerResult(wer, subs, dels, ins, total)


def character_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> float:
  """CER = character edits / reference characters, over all pairs (corpus-level).

  Texts are normalized and their words joined by single spaces, which count as
  characters. Where WER passes 100 % (every word wrong, plus insertions) CER still
  tells a transcript that is nearly right ("remainin") from noise. An empty
  reference makes every hypothesis character an insertion; with no reference
  characters at all, CER is 0 if nothing was said and inf otherwise.
  """
  if len(references) != len(hypotheses):
    raise ValueError(f"{len(references)} references for {len(hypotheses)} hypotheses")
  pairs = [(" ".join(_words(r)), " ".join(_words(h))) for r, h in zip(references, hypotheses)]
  edits = sum(_character_edits(r, h) for r, h in pairs)
  total = sum(len(r) for r, _ in pairs)
  return edits / total if total else (0.0 if edits == 0 else math.inf)


@functools.lru_cache(maxsize=1 << 16)
def _character_edits(reference: str, hypothesis: str) -> int:
  """Levenshtein distance over characters. Cached: the bootstrap scores the same pairs
  a thousand times (`suites.headline_intervals`)."""
  if not reference or not hypothesis:
    return len(reference) + len(hypothesis)
  out = jiwer.process_characters(reference, hypothesis)
  return out.substitutions + out.deletions + out.insertions


def aligned_hits(reference: Sequence[str], hypothesis: Sequence[str]) -> list[tuple[int, int]]:
  """(reference index, hypothesis index) of every correctly recognised word.

  The words are aligned by jiwer's minimum-edit alignment; "hits" are the pairs it
  aligns as equal. Inputs are word lists (already normalized by the caller).
  """
  if not reference or not hypothesis:
    return []
  out = jiwer.process_words(" ".join(reference), " ".join(hypothesis))
  hits = []
  for chunk in out.alignments[0]:
    if chunk.type == "equal":
      hits += [(chunk.ref_start_idx + k, chunk.hyp_start_idx + k)
               for k in range(chunk.ref_end_idx - chunk.ref_start_idx)]
  return hits


def emission_delays(reference: Sequence[tuple[str, float, float]],
                    emitted: Sequence[tuple[str, float]]) -> list[float]:
  """Emission delay of each correctly recognised word: time emitted − time the word ended.

  Args:
    reference: (word, start s, end s) of every spoken word, in order.
    emitted: (word, emission time s) of every word the recogniser output, in order.
  Returns:
    One delay (s) per reference word aligned as a hit (`aligned_hits`); substituted,
    deleted and inserted words have no delay. A hit emitted before its word even
    started cannot be a recognition of it (the text alignment ignores time, so an early
    "the" may align with a later "the") and is left out. Negative delays of words
    emitted between their start and end (completed early) are kept.
  """
  ref = [normalize_text(w) for w, _, _ in reference]
  hyp = [normalize_text(w) for w, _ in emitted]
  return [emitted[j][1] - reference[i][2] for i, j in aligned_hits(ref, hyp)
          if emitted[j][1] >= reference[i][1]]


def exact_match(expected: str, said: str) -> bool:
  """Whether two answers are equal after `normalize_text` (B3, B4, B7 accuracy)."""
  return normalize_text(expected) == normalize_text(said)


def matching_answers(expected: Sequence[str], said: Sequence[str]) -> int:
  """How many expected answers some answer of `said` equals (after `normalize_text`),
  each of `said` used once, whenever it was said: what a model says, apart from when."""
  wanted = collections.Counter(normalize_text(t) for t in expected)
  return sum((wanted & collections.Counter(normalize_text(t) for t in said)).values())


# ----------------------------------------------------------------------- summaries

def summarize(values: Sequence[float | None]) -> dict[str, float]:
  """count, median, p90 and mean of the non-None values (NaN when there are none)."""
  kept = np.asarray([v for v in values if v is not None], np.float64)
  if not kept.size:
    return {"count": 0, "median": math.nan, "p90": math.nan, "mean": math.nan}
  return {"count": int(kept.size), "median": float(np.median(kept)),
          "p90": float(np.percentile(kept, 90)), "mean": float(kept.mean())}


def rate(numerator: float, denominator: float) -> float:
  """numerator / denominator, NaN for an empty denominator."""
  return numerator / denominator if denominator else math.nan


# ------------------------------------------------------------------ turn-taking (B5)

def response_latencies(turn_ends: Sequence[float], reply_starts: Sequence[float],
                       window: float) -> list[float | None]:
  """Response latency of each turn: first reply start − end of the user's speech.

  A reply answers a turn when it starts in [turn end, turn end + `window`]; each
  reply answers at most one turn (turns in order of their ends, earliest free reply
  first). A reply that starts before the turn ended never answers it (that is a cut-in,
  see `false_cut_in_rate`). Returns one latency (s) per turn, None if unanswered.
  """
  used: set[int] = set()
  latencies: list[float | None] = []
  order = sorted(range(len(reply_starts)), key=lambda i: reply_starts[i])
  for end in turn_ends:
    found = None
    for i in order:
      if i not in used and end <= reply_starts[i] <= end + window:
        used.add(i)
        found = reply_starts[i] - end
        break
    latencies.append(found)
  return latencies


def spans_with_reply(spans: Sequence[Interval], reply_starts: Sequence[float]) -> list[bool]:
  """For each span [start, end): did a reply start inside it?"""
  return [any(start <= t < end for t in reply_starts) for start, end in spans]


def false_cut_in_rate(turns: Sequence[Interval], reply_starts: Sequence[float]) -> float:
  """Fraction of user turns in which a reply started before the turn ended.

  A turn spans [first word start, end of its last content word); a reply starting
  inside it (in a mid-turn pause, on a filler, or simply before the question was
  over) cuts in. Overlapping turns are counted each. NaN for no turns.
  """
  hits = spans_with_reply(turns, reply_starts)
  return rate(sum(hits), len(hits))


def miss_rate(latencies: Sequence[float | None]) -> float:
  """Fraction of turns (or events) never answered in time: None entries of `latencies`."""
  return rate(sum(v is None for v in latencies), len(latencies))


# ------------------------------------------------------------------ proactive (B6)

@dataclasses.dataclass(frozen=True)
class AlertMatch:
  """Alerts matched to sound events (see `match_alerts`).

  onset_latencies: per event, alert start − event onset (s), None if not alerted.
  false_alarms: alerts that matched no event.
  alerts: all alerts raised.
  detectors: per event, the index (into the alert times given) of the alert that
    detected it, None if none.
  """

  onset_latencies: tuple[float | None, ...]
  false_alarms: int
  alerts: int
  detectors: tuple[int | None, ...] = ()

  @property
  def detected(self) -> int:
    return sum(v is not None for v in self.onset_latencies)


def match_alerts(events: Sequence[Interval], alert_times: Sequence[float]) -> AlertMatch:
  """Matches alerts to events that warrant one.

  Args:
    events: per event, (onset, deadline) s, in order of onset (`detectors` and the
      latencies follow the events sorted): an alert starting in [onset, deadline]
      detects it (the deadline is e.g. the time it became recognisable + a window).
      Events may overlap; each alert detects at most one event (events in order of
      onset, earliest free alert first), so one alert never counts for two.
    alert_times: start times (s) of the alerts the system raised.
  """
  used: set[int] = set()
  latencies: list[float | None] = []
  detectors: list[int | None] = []
  order = sorted(range(len(alert_times)), key=lambda i: alert_times[i])
  for onset, deadline in sorted(events):
    found = detector = None
    for i in order:
      if i not in used and onset <= alert_times[i] <= deadline:
        used.add(i)
        found, detector = alert_times[i] - onset, i
        break
    latencies.append(found)
    detectors.append(detector)
  return AlertMatch(tuple(latencies), len(alert_times) - len(used), len(alert_times),
                    tuple(detectors))


def late_alerts(match: AlertMatch, alert_times: Sequence[float],
                alert_sounds: Sequence[Interval], window: float) -> int:
  """How many of `match`'s false alarms were raised while an alert sound was still going
  (in [start, end + `window`] of one of `alert_sounds`): a ringtone named 4 s in, after
  its deadline. They stay false alarms (and the sound a miss) by `match_alerts`'s rule;
  this tells them from alerts raised in benign audio.

  Args:
    match: `match_alerts(events, alert_times)`.
    alert_times: the same alert start times (s).
    alert_sounds: (start, end) s of each sound that warrants an alert.
    window: seconds after a sound's end that still count as during it.
  """
  used = {d for d in match.detectors if d is not None}
  return sum(1 for index, at in enumerate(alert_times) if index not in used and any(
      start <= at <= end + window for start, end in alert_sounds))


def alert_scores(matches: Sequence[AlertMatch]) -> dict[str, float]:
  """Precision (detections / alerts), recall (detections / events) and F1 over streams.

  NaN where a denominator is zero (no alerts raised: precision; no events: recall).
  """
  detected = sum(m.detected for m in matches)
  alerts = sum(m.alerts for m in matches)
  events = sum(len(m.onset_latencies) for m in matches)
  precision, recall = rate(detected, alerts), rate(detected, events)
  f1 = (2 * precision * recall / (precision + recall)
        if precision + recall > 0 else (0.0 if events and alerts else math.nan))
  return {"precision": precision, "recall": recall, "f1": f1, "events": events,
          "alerts": alerts, "detected": detected}


def false_alarms_per_hour(false_alarms: int, seconds: float) -> float:
  """False alarms per hour of audio listened to: false_alarms / (seconds / 3600)."""
  return rate(false_alarms, seconds / 3600.0)


# ------------------------------------------------------------ interaction control (B8)

def speaking_segments(reply_chunks: Sequence[tuple[float, float]]) -> list[Interval]:
  """Merges the (start, end) s of the chunks in which reply tokens were written into
  contiguous speaking segments (the system "speaks" while it writes its reply)."""
  segments: list[list[float]] = []
  for start, end in sorted(reply_chunks):
    if segments and start <= segments[-1][1] + 1e-9:
      segments[-1][1] = max(segments[-1][1], end)
    else:
      segments.append([start, end])
  return [(s, e) for s, e in segments]


def yield_latencies(onsets: Sequence[float], speaking: Sequence[Interval]
                    ) -> list[float | None]:
  """For each time the user starts talking over the system: when did it stop speaking?

  Args:
    onsets: onset times (s) of the user's interrupting speech.
    speaking: the system's speaking segments [start, end) (`speaking_segments`).
  Returns:
    Per onset, end of the speaking segment containing it − onset (s); None if the
    system was not speaking at the onset (nothing to yield: excluded by `yield_rate`).
  """
  out: list[float | None] = []
  for onset in onsets:
    segment = next(((s, e) for s, e in speaking if s <= onset < e), None)
    out.append(None if segment is None else segment[1] - onset)
  return out


def yield_rate(latencies: Sequence[float | None], max_latency: float) -> float:
  """Fraction of barge-ins (while speaking) after which speech stopped within `max_latency` s.

  `latencies` from `yield_latencies`; None entries (not speaking at the onset) are
  not counted. The same function gives the *backchannel* yield rate, where lower is
  better ("uh-huh" should not stop a reply).
  """
  counted = [v for v in latencies if v is not None]
  return rate(sum(v <= max_latency for v in counted), len(counted))


def false_reply_rate(unaddressed: Sequence[Interval], reply_starts: Sequence[float]) -> float:
  """Fraction of utterances not addressed to the system during which it started a reply.

  Each span is [utterance start, utterance end + grace): a reply starting there
  answers speech meant for someone else. NaN for no such utterances.
  """
  hits = spans_with_reply(unaddressed, reply_starts)
  return rate(sum(hits), len(hits))
