r"""Weights on each alerting class's evidence, chosen on DEV half A: fewer false alarms?

The alert rule (`infer.sound_alerts`, once per sound) sums the sound-event head's
probabilities of the alerting classes and alerts when the sum stays >= θ for `chunks`
chunks. The false alarms left on the real DEV set are a few classes heard in benign
sounds (notification tones taken for a phone, door slams for a crash), so one threshold
for all classes trades every class's recall for those few. Here each alerting class k
gets a weight w_k on its probability (the rule then sums w_k p_k, and names the class
with the most weighted evidence; w_k = 1 for all is the shipped rule).

The head reads the encoder only, so its probabilities do not depend on what the model
says: each recording is encoded once (the eval's audio, from the stream's start,
streamed past the full window as the stepper does) and the rule is replayed over the
probabilities for every candidate, all recordings as rows of one batch. The weights are
chosen on tuning half A by `tune`'s split (the same manifests in the same order give the
same halves) and its rule for alerts (the highest recall within 10 false alarms per hour
of benign audio, else the highest F1), by coordinate search over the classes, and
reported on held-out half B. Scored as the eval's B6 scores (`suites.alerts`: deadlines,
late alerts in an alert sound left out of the benign rate); an alert starts after its
chunk and the row is never busy saying one, so a count can differ from the eval's by an
alert or two, and the model's own replies (none on these sets at the shipped point) are
not counted. Check a chosen point with `audio-interaction eval`.

Run::

  audio-interaction lead-in --manifest data/real_dev/events.jsonl --lead random:30 \
      --out data/real_dev_random30
  audio-interaction lead-in --manifest data/real_dev/speech_en.jsonl --lead random:30 \
      --unaddressed --out data/real_dev_speech_random30
  python benchmarks/alert_class_weights.py --bundle real-audio \
      --manifest data/real_dev/streams_split.jsonl \
      --manifest data/real_dev_random30/events.jsonl \
      --manifest data/real_dev_speech_random30/speech_en.jsonl          # ~20 min
  python benchmarks/alert_class_weights.py --quick   # smoke test: a random model
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import platform
import tempfile
import time
import types
from collections.abc import Sequence

import jax
import numpy as np
import soundfile
import tqdm

from audio_interaction import config_lib
from audio_interaction import stream_format as sf
from audio_interaction.apps import tune_run
from audio_interaction.corpus import worlds
from audio_interaction.eval import metrics, suites, tune
from audio_interaction.export import portable
from audio_interaction.infer.sound_alerts import SoundAlertRule
from audio_interaction.model.clip_encoder import ClipEncoder
from audio_interaction.model.model import AudioInteractionModel

LABELS = worlds.SOUND_EVENT_LABELS
ALERT_IDS = [LABELS.index(label) for label in worlds.ALERT_LABELS]
BUDGET_PER_HOUR = 10.0  # the goal's false alarms per hour of benign audio


@dataclasses.dataclass
class Recordings:
  """The B6 cases and their head probabilities, padded into one batch.

  probabilities: [N, C, K] per case and chunk (zeros past a case's end, which the rule
  hears as silence); chunks: [N] each case's own chunk count.
  """

  cases: list[suites.Case]
  probabilities: np.ndarray
  chunks: np.ndarray


@dataclasses.dataclass(frozen=True)
class Score:
  """What the rule did on a set of cases (`suites.alerts`' figures)."""

  recall: float
  f1: float
  false_per_hour: float  # in benign audio: late alerts of real alarms left out
  false_alarms: int
  named: float
  detected: int
  events: int

  def row(self) -> str:
    return (f"{self.recall:.0%} ({self.detected}/{self.events}) / {self.false_per_hour:.1f} "
            f"({self.false_alarms}) / {self.named:.0%}")


def encode_cases(cases: Sequence[suites.Case], model: AudioInteractionModel, params
                 ) -> Recordings:
  """Each case's head probabilities from the stream's start ("no sound" zeroed, as the
  stepper gives the rule)."""
  encode = ClipEncoder(model, params, output="sound_event_logits")
  per_case = []
  for case in tqdm.tqdm(cases, desc="encoding B6 recordings", unit="recording"):
    logits = encode(case.audio, 0)
    probabilities = np.array(jax.nn.softmax(logits, axis=-1))
    probabilities[:, sf.NO_SOUND_EVENT] = 0.0
    per_case.append(probabilities)
  chunks = np.array([p.shape[0] for p in per_case])
  batch = np.zeros((len(cases), int(chunks.max()), per_case[0].shape[1]), np.float32)
  for i, p in enumerate(per_case):
    batch[i, :p.shape[0]] = p
  return Recordings(list(cases), batch, chunks)


def alerts(recordings: Recordings, rows: np.ndarray, weights: np.ndarray, threshold: float,
           chunks: int, hold_chunks: int, chunk_seconds: float
           ) -> list[list[tuple[float, int]]]:
  """Per row of `rows`: (start s, class id) of the alerts the weighted rule raises.

  weights: [K] on each class's probability (only the alerting classes' count)."""
  rule = SoundAlertRule(threshold=threshold, chunks=chunks, hold_chunks=hold_chunks,
                        replies={i: [sf.EOR_ID] for i in ALERT_IDS}, once_per_sound=True)
  rule.start(len(rows))
  probabilities = recordings.probabilities[rows] * weights
  free = np.ones(len(rows), bool)
  everyone = np.arange(len(rows))
  out: list[list[tuple[float, int]]] = [[] for _ in rows]
  # Past a case's end its probabilities are zeros, under any θ > 0: nothing fires there.
  for index in range(int(recordings.chunks[rows].max())):
    for row, class_id in rule.fire(probabilities[:, index], everyone, everyone, free).items():
      out[row].append(((index + 1) * chunk_seconds, class_id))
  return out


def matched(recordings: Recordings, rows: np.ndarray, raised: list[list[tuple[float, int]]],
            window_s: float) -> list[tuple[list[tuple[float, float, str]], metrics.AlertMatch]]:
  """Per row: its alert events (onset, deadline, the alert text they warrant) and how the
  raised alerts matched them (`metrics.match_alerts`, as the eval's B6)."""
  out = []
  for i, row in zip(rows, raised):
    events = suites.case_named_alert_events(recordings.cases[i], window_s)
    out.append((events, metrics.match_alerts([(on, deadline) for on, deadline, _ in events],
                                             [t for t, _ in row])))
  return out


def score(recordings: Recordings, rows: np.ndarray, raised: list[list[tuple[float, int]]],
          window_s: float) -> Score:
  """The eval's B6 figures of the alerts raised in `rows` (`suites.alerts`), and the share
  of detected events whose alert names the event's class."""
  runs = [types.SimpleNamespace(case=recordings.cases[i], starts=[t for t, _ in row])
          for i, row in zip(rows, raised)]
  figures = suites.alerts(runs, lambda run: run.starts,
                          types.SimpleNamespace(answer_window_s=window_s))
  named = detected = events = false = 0
  for row, (named_events, match) in zip(raised, matched(recordings, rows, raised, window_s)):
    events += len(named_events)
    false += match.false_alarms
    for (_, _, text), detector in zip(named_events, match.detectors):
      if detector is not None:
        detected += 1
        named += suites.alert_text(LABELS[row[detector][1]]) == text
  return Score(recall=figures["recall"], f1=figures["f1"],
               false_per_hour=figures["benign_false_alarms_per_hour"],
               false_alarms=false - figures["late_alerts"],
               named=named / max(detected, 1), detected=detected, events=events)


def better(a: Score, b: Score) -> bool:
  """`tune`'s alert rule: within the budget first, then the highest recall (else F1),
  then the fewer false alarms."""
  a_in, b_in = a.false_per_hour <= BUDGET_PER_HOUR, b.false_per_hour <= BUDGET_PER_HOUR
  if a_in != b_in:
    return a_in
  key_a = (a.recall if a_in else a.f1, -a.false_alarms)
  key_b = (b.recall if b_in else b.f1, -b.false_alarms)
  return key_a > key_b


def choose(evaluate, thresholds: Sequence[float], grid: Sequence[float], rounds: int
           ) -> tuple[float, np.ndarray, Score]:
  """Coordinate search on half A: for each threshold, each alerting class's weight in
  turn over `grid`, `rounds` times; the best (threshold, weights, half-A score)."""
  best = None
  for threshold in thresholds:
    weights = np.ones(len(LABELS), np.float32)
    current = evaluate(threshold, weights)
    for _ in range(rounds):
      moved = False
      for class_id in ALERT_IDS:
        for w in grid:
          if w == weights[class_id]:
            continue
          trial = weights.copy()
          trial[class_id] = w
          result = evaluate(threshold, trial)
          if better(result, current):
            weights, current, moved = trial, result, True
      if not moved:
        break
    if best is None or better(current, best[2]):
      best = (threshold, weights, current)
  return best


def quick_manifests(folder: pathlib.Path, seed: int) -> list[str]:
  """Two small manifests: a turn stream with an alert, and sound events (noise)."""
  rng = np.random.default_rng(seed)

  def wav(name: str, seconds: float) -> str:
    audio = (0.05 * rng.normal(size=int(seconds * sf.SAMPLE_RATE))).astype(np.float32)
    soundfile.write(folder / name, audio, sf.SAMPLE_RATE)
    return name

  turns = {"audio": wav("turn.wav", 4.0), "duration": 4.0,
           "events": [{"onset": 0.2, "offset": 1.0, "class": "doorbell", "role": "alert"},
                      {"onset": 1.5, "offset": 3.0, "class": "speech",
                       "role": "addressed_speech"}],
           "turns": [{"start": 1.5, "end": 3.0, "reply_expected": True}]}
  events = [{"audio": wav(f"event{i}.wav", 3.0), "duration": 3.0,
             "events": [{"onset": 0.5, "offset": 2.0, "class": label,
                         "role": "alert" if label in worlds.ALERT_LABELS else "benign"}]}
            for i, label in enumerate(["doorbell", "crash", "rain", "phone_ring"])]
  (folder / "streams.jsonl").write_text(json.dumps(turns) + "\n")
  (folder / "events.jsonl").write_text("".join(json.dumps(row) + "\n" for row in events))
  return [str(folder / "streams.jsonl"), str(folder / "events.jsonl")]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--bundle", default="real-audio", help="a bundle with a sound-event head")
  parser.add_argument("--manifest", action="append", default=[],
                      help="tune's manifests, in tune's order (repeat)")
  parser.add_argument("--split-seed", type=int, default=0, help="tune's --seed")
  parser.add_argument("--thresholds", default="0.3,0.4,0.5")
  parser.add_argument("--weights", default="0,0.25,0.5,0.75,1,1.5,2",
                      help="the grid each class's weight is searched over")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--chunks", type=int, default=4)
  parser.add_argument("--hold-seconds", type=float, default=30.0)
  parser.add_argument("--quick", action="store_true", help="smoke test without data")
  args = parser.parse_args()

  began = time.perf_counter()
  if args.quick:
    config = config_lib.load_config(
        str(config_lib.experiments_dir() / "tiny.py"),
        ["model.encoder.num_layers=1", "model.decoder.num_layers=1",
         f"model.sound_event_classes={len(LABELS)}"])
    model = AudioInteractionModel(config)
    params = model.init(jax.random.key(0))
    manifests = quick_manifests(pathlib.Path(tempfile.mkdtemp()), args.split_seed)
  else:
    config, params, _ = portable.load_bundle(portable.resolve_bundle(args.bundle))
    model = AudioInteractionModel(config)
    manifests = args.manifest
  infer = config.infer
  eval_window = suites.EvalConfig().answer_window_s
  cases, notes, _ = tune_run.load_cases(manifests, config.audio.chunk_ms, eval_window)
  half_a, half_b = tune.split_halves(cases, args.split_seed)
  b6 = [i for i, case in enumerate(cases) if "B6" in case.suites]
  recordings = encode_cases([cases[i] for i in b6], model, params)
  position = {case_index: row for row, case_index in enumerate(b6)}
  sets = {"half A": np.array([position[i] for i in half_a if i in position], np.int64),
          "half B": np.array([position[i] for i in half_b if i in position], np.int64),
          "all": np.arange(len(b6))}
  chunk_seconds = model.config.chunk_seconds
  hold = int(round(args.hold_seconds / chunk_seconds))
  print(f"encoded {len(b6)} B6 recordings in {time.perf_counter() - began:.0f} s on "
        f"{platform.machine()} ({'; '.join(notes)})")

  def evaluate(name: str, threshold: float, weights: np.ndarray) -> Score:
    rows = sets[name]
    raised = alerts(recordings, rows, weights, threshold, args.chunks, hold, chunk_seconds)
    return score(recordings, rows, raised, eval_window)

  shipped = float(infer.sound_alert_threshold) or 0.3
  ones = np.ones(len(LABELS), np.float32)
  searched = time.perf_counter()
  threshold, weights, _ = choose(lambda t, w: evaluate("half A", t, w),
                                 [float(t) for t in args.thresholds.split(",")],
                                 [float(w) for w in args.weights.split(",")], args.rounds)
  print(f"searched in {time.perf_counter() - searched:.0f} s")
  changed = ", ".join(f"{LABELS[i]} {weights[i]:g}" for i in ALERT_IDS if weights[i] != 1)
  print("\n| rule | half A: recall / false alarms per hour of benign audio (count) / named "
        "| **half B** | all |")
  print("|---|---|---|---|")
  rows = {f"one threshold θ = {shipped:g} (shipped)": (shipped, ones),
          f"θ = {threshold:g}, class weights chosen on half A ({changed or 'none moved'})":
          (threshold, weights)}
  for name, (t, w) in rows.items():
    print(f"| {name} | " + " | ".join(evaluate(s, t, w).row() for s in sets) + " |")
  print("\nPer alerting class on all recordings, shipped rule: events / detected / "
        "false alarms naming it")
  raised = alerts(recordings, sets["all"], ones, shipped, args.chunks, hold, chunk_seconds)
  matches = matched(recordings, sets["all"], raised, eval_window)
  for class_id in ALERT_IDS:
    text = suites.alert_text(LABELS[class_id])
    events = detected = false = 0
    for row, (named_events, match) in zip(raised, matches):
      events += sum(t == text for _, _, t in named_events)
      detected += sum(d is not None and t == text
                      for (_, _, t), d in zip(named_events, match.detectors))
      used = {d for d in match.detectors if d is not None}
      false += sum(j not in used and c == class_id for j, (_, c) in enumerate(row))
    print(f"  {LABELS[class_id]}: {events} / {detected} / {false}")
  print(f"total {time.perf_counter() - began:.0f} s on {platform.machine()} "
        f"({jax.device_count()} CPU devices)")


if __name__ == "__main__":
  main()
