r"""Where in the stream the sound-event head's training clips sit, and what that does to alerts.

`fit-sound-head` encodes each clean TRAIN-bank clip somewhere in the encoder's position
window (`model/clip_encoder.py`). Whisper's position table makes the place matter, and
a live stream meets sounds in two kinds of place: anywhere (a sound 12 s in) and at the
very start (the first chunks of every stream, position 0, nothing in the encoder's
memory). This benchmark encodes the training clips once per kind of place and fits the
head on mixtures of them, so the fits differ only in where their clips sit, not in
which clips were drawn:

* `uniform`: every clip from a uniform random chunk boundary of the window (session 23's
  fit);
* `+ start`: one clip (and one "none" recording) in 8 from position 0 instead
  (`START_SHARE`: every stream begins there, which a uniform draw reaches once in 188);
* `+ quiet lead`: every clip after 0-2 s of quiet room (`sound_head.quiet_lead`);
* `+ both`.

Each fit is repeated over `--repeats` resamplings of its examples (bootstrap over
clips), and each is scored on DEV recordings played as the eval plays them (the whole
recording from the stream's start, lead-in included) by the alert rule itself
(`infer.sound_alerts.SoundAlertRule`: once per sound, `--chunks` chunks running, hold
30 s) at each threshold: alert events detected by their recognisable time + 2 s (the
eval's deadline, `metrics.match_alerts`); alerts raised in benign audio (false alarms)
and their rate per hour of it (lead-ins excluded, as the eval's B6); alerts raised
during an alert sound after its deadline (late: a miss, not a false alarm); and the
detected alerts naming their class. The eval itself
(`audio-interaction eval --suites B6`) also speaks each alert, which blocks the row
for a few chunks; here a row is always free, so a count can differ from the eval's by
an alert or two. It compares fits fast; it does not replace the eval.

Run::

  audio-interaction lead-in --manifest data/real_dev/events.jsonl --lead random:30 \
      --out data/real_dev_random30
  python benchmarks/sound_head_positions.py --bundle real-audio --corpus data/wt_snd \
      --dev data/real_dev_random30/events.jsonl --dev data/real_dev/events.jsonl   # ~15 min
  python benchmarks/sound_head_positions.py --quick   # smoke test: a random model, generated sounds
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import time
from typing import Callable

import jax
import ml_collections
import numpy as np

from audio_interaction import config_lib
from audio_interaction import stream_format as sf
from audio_interaction.audio import io as audio_io
from audio_interaction.corpus import manifest, real_audio, worlds
from audio_interaction.data import storage
from audio_interaction.eval import metrics
from audio_interaction.eval.suites import benign_seconds
from audio_interaction.export import portable
from audio_interaction.infer.sound_alerts import SoundAlertRule
from audio_interaction.model import clip_encoder
from audio_interaction.model.model import AudioInteractionModel
from audio_interaction.stream_format import NO_SOUND_EVENT
from audio_interaction.train import sound_head

LABELS = worlds.SOUND_EVENT_LABELS
ALERT_IDS = [LABELS.index(label) for label in worlds.ALERT_LABELS]
WINDOW_S = 2.0  # the eval's answer window after the recognisable time
HOLD_S = 30.0
START_SHARE = 0.125  # the `+ start` variants' clips from position 0


class Pool:
  """Chunk examples of the same clips encoded one way: per clip, features [c, D] and
  targets [c]."""

  def __init__(self):
    self.features: list[np.ndarray] = []
    self.targets: list[np.ndarray] = []

  def add(self, features: np.ndarray, targets: np.ndarray) -> None:
    self.features.append(features)
    self.targets.append(targets)

  def pick(self, clips: np.ndarray) -> sound_head.ChunkExamples:
    if not len(clips):
      return sound_head.ChunkExamples(np.zeros((0, 0), np.float32), np.zeros(0, np.int32))
    return sound_head.ChunkExamples(np.concatenate([self.features[i] for i in clips]),
                                    np.concatenate([self.targets[i] for i in clips]))


def encode_bank(encode: clip_encoder.SoundEventEncoder, clips: list[tuple[str, np.ndarray]],
                leads: list[np.ndarray], seed: int) -> dict[str, Pool]:
  """The bank clips encoded four ways (the module docstring's places)."""
  rng = np.random.default_rng(seed)
  period = encode.position_period
  per_chunk = encode._encoder_frames_per_chunk  # pylint: disable=protected-access
  pools = {name: Pool() for name in ("uniform", "start", "uniform+lead", "start+lead")}
  for (label, audio), lead in zip(clips, leads):
    uniform = 0 if period is None else int(rng.integers(0, -(-period // per_chunk))) * per_chunk
    own = sound_head.clip_chunk_targets(audio, LABELS.index(label), encode.chunk_samples)
    led = np.concatenate([np.full(lead.size // encode.chunk_samples, NO_SOUND_EVENT, np.int32),
                          own])
    for name, first in (("uniform", uniform), ("start", 0)):
      pools[name].add(encode(audio, first), own)
      pools[name + "+lead"].add(encode(np.concatenate([lead, audio]), first), led)
  return pools


def none_chunks(features: np.ndarray, labels: np.ndarray | None
                ) -> tuple[np.ndarray, np.ndarray]:
  """The "none" examples of one recording's chunk features [c, D]: every chunk of a
  recording without labels (a sound outside the classes), else the chunks its stored
  per-chunk `labels` call `NO_SOUND_EVENT` (as fit-sound-head's corpus rows); (features,
  targets)."""
  keep = np.ones(len(features), bool)
  if labels is not None:
    keep = np.pad(labels == NO_SOUND_EVENT, (0, max(0, len(keep) - len(labels))))[:len(keep)]
  return features[keep], np.full(int(keep.sum()), NO_SOUND_EVENT, np.int32)


def mixture(pools: dict[str, Pool], lead: bool, start: bool, clips: np.ndarray,
            at_start: np.ndarray) -> sound_head.ChunkExamples:
  """The examples of `clips`, those with `at_start` from position 0 when `start`."""
  suffix = "+lead" if lead else ""
  if not start:
    return pools["uniform" + suffix].pick(clips)
  return sound_head.ChunkExamples.concatenate([
      pools["uniform" + suffix].pick(clips[~at_start[clips]]),
      pools["start" + suffix].pick(clips[at_start[clips]])])


def dev_recordings(paths: list[pathlib.Path], encode) -> list[dict]:
  """Each DEV row encoded from the stream's start: its features, alert (onset, deadline,
  offset, class) tuples, benign seconds (as the eval's B6: lead-in excluded) and audio."""
  rows = []
  for path in paths:
    for line in path.read_text().splitlines():
      row = json.loads(line)
      audio = audio_io.load_audio(path.parent / row["audio"])
      alerts = []
      for event in row["events"]:
        if event["role"] == "alert":
          ready = min(event["onset"] + manifest.RECOGNISABLE_AFTER_S.get(
              event["class"], manifest.DEFAULT_RECOGNISABLE_AFTER_S), event["offset"])
          alerts.append((event["onset"], ready + WINDOW_S, event["offset"], event["class"]))
      duration = audio.size / 16000
      benign = max(0.0, benign_seconds(duration, [(a, d - WINDOW_S) for a, d, _, _ in alerts],
                                       WINDOW_S) - float(row.get("lead_in", 0.0)))
      rows.append({"set": f"{path.parent.name}/{path.stem}", "features": encode(audio, 0),
                   "alerts": alerts, "benign_seconds": benign, "audio": audio})
  return rows


def score(fit: sound_head.HeadFit, rows: list[dict], threshold: float, chunks: int,
          chunk_seconds: float, verify: Callable[[dict, int], int | None] | None = None
          ) -> dict[str, float]:
  """Alert recall, false alerts, their rate per benign hour and the share named right.

  `verify(row, chunk index)`, if given, is asked about each alert the rule raises: the
  class id to name, or None to veto it (the rule then stays armed, and asks again at the
  next chunk the sound is still heard)."""
  rule = SoundAlertRule(threshold=threshold, chunks=chunks,
                        hold_chunks=int(round(HOLD_S / chunk_seconds)),
                        replies={i: [sf.EOR_ID] for i in ALERT_IDS}, once_per_sound=True)
  found = events = false = late = named = 0
  benign = 0.0
  for row in rows:
    probabilities = fit.probabilities(row["features"])
    rule.start(1)
    times, classes = [], []
    for index, p in enumerate(probabilities):
      fired = rule.fire(p[None], [0], np.array([index]), np.ones(1, bool))
      if fired and verify is not None:
        named_as = verify(row, index)
        if named_as is None:
          rule.rearm(0, fired[0])
          fired = {}
        else:
          fired = {0: named_as}
      if fired:
        times.append((index + 1) * chunk_seconds)  # the alert starts after its chunk
        classes.append(LABELS[fired[0]])
    match = metrics.match_alerts([(on, deadline) for on, deadline, _, _ in row["alerts"]],
                                 times)
    found += match.detected
    events += len(row["alerts"])
    row_late = metrics.late_alerts(match, times, [(on, off) for on, _, off, _ in row["alerts"]],
                                   WINDOW_S)
    late, false = late + row_late, false + match.false_alarms - row_late
    benign += row["benign_seconds"]
    for (_, _, _, label), detector in zip(sorted(row["alerts"]), match.detectors):
      named += detector is not None and classes[detector] == label
  return {"recall": found / max(events, 1), "false": false, "late": late,
          "per_hour": false / max(benign / 3600, 1e-9), "named": named / max(found, 1),
          "events": events}


def quick_config() -> ml_collections.ConfigDict:
  """The --quick model's config: a one-layer tiny model with a sound-event head."""
  return config_lib.load_config(
      str(config_lib.experiments_dir() / "tiny.py"),
      ["model.encoder.num_layers=1", "model.decoder.num_layers=1",
       f"model.sound_event_classes={len(LABELS)}"])


def quick_setup(seed: int):
  """A random model with a head; generated sounds as bank and as the DEV rows."""
  model = AudioInteractionModel(quick_config())
  return model, model.init(jax.random.key(seed))


def head_fit_arguments(description: str) -> argparse.ArgumentParser:
  """The options every sound-head fit benchmark takes (this one's and
  `sound_head_features.py`'s)."""
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument("--bundle", default="real-audio", help="a bundle with a sound-event head")
  parser.add_argument("--corpus", default="data/wt_snd", help="a built corpus (build-data)")
  parser.add_argument("--corpus-rows", type=int, default=600)
  parser.add_argument("--dev", type=pathlib.Path, action="append",
                      help="DEV event manifests (repeat); default the random-lead copy")
  parser.add_argument("--train-audio", default=str(real_audio.default_cache() / "extracted"))
  parser.add_argument("--per-class", type=int, default=64)
  parser.add_argument("--thresholds", default="0.3,0.4,0.5,0.6")
  parser.add_argument("--chunks", type=int, default=4)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--quick", action="store_true", help="smoke test without data")
  return parser


def head_fit_setup(args: argparse.Namespace):
  """(model, params, TRAIN audio root or None, clips per class, L-BFGS steps): the bundle
  and the TRAIN bank, or with --quick a random model and the generated sounds."""
  if args.quick:
    model, params = quick_setup(args.seed)
    return model, params, None, 2, 20
  config, params, _ = portable.load_bundle(portable.resolve_bundle(args.bundle))
  return AudioInteractionModel(config), params, args.train_audio, args.per_class, 300


def main() -> None:
  parser = head_fit_arguments(__doc__.split("\n\n")[0])
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  thresholds = [float(t) for t in args.thresholds.split(",")]

  began = time.perf_counter()
  rng = np.random.default_rng(args.seed)
  model, params, root, per_class, steps = head_fit_setup(args)
  encode = clip_encoder.SoundEventEncoder(model, params, first_positions="random", seed=args.seed)
  bank = sound_head.train_sound_bank(root)
  labels = [label for label in bank.labels() if label in LABELS]
  clips = [(label, bank.sample(label, rng).audio[:int(sound_head.MAX_CLIP_SECONDS * 16000)])
           for label in labels for _ in range(per_class)]
  leads = [sound_head.quiet_lead(rng, 2.0, encode.chunk_samples) for _ in clips]
  pools = encode_bank(encode, clips, leads, args.seed)
  none_pools = {"uniform": Pool(), "start": Pool()}  # "none" items, both places each
  if args.quick:
    audios = [(0.05 * rng.normal(size=3 * 16000)).astype(np.float32)]
    audios = [(a, np.zeros(-(-a.size // encode.chunk_samples), np.int32)) for a in audios]
    dev = [{"set": "quick", "features": encode(clip, 0),
            "alerts": ([(0.0, 2.5, 2.0, label)] if label in worlds.ALERT_LABELS else []),
            "benign_seconds": clip.size / 16000} for label, clip in clips[::per_class]]
  else:
    rows = storage.load_split(args.corpus, "train")
    picked = np.random.default_rng(args.seed).permutation(len(rows))[:args.corpus_rows]
    audios = [(np.asarray(rows[int(i)]["audio"], np.float32),
               np.asarray(rows[int(i)]["sound_events"], np.int32)) for i in picked]
    audios += [(sound_head.load_other_sound(ref), None)
               for ref in sound_head.other_sound_refs(root)]
    dev = dev_recordings(args.dev or [pathlib.Path("data/real_dev_random30/events.jsonl")],
                         encode)
  for audio, labels in audios:
    uniform = encode.next_first_position()
    for name, first in (("uniform", uniform), ("start", 0)):
      none_pools[name].add(*none_chunks(encode(audio, first), labels))
  none_at_start = rng.random(len(audios)) < START_SHARE
  none_items = np.arange(len(audios))
  at_start = rng.random(len(clips)) < START_SHARE
  sets = sorted({row["set"] for row in dev})
  print(f"encoded in {time.perf_counter() - began:.0f} s on {platform.machine()} "
        f"({len(clips)} clips x 4 places, {len(audios)} 'none' recordings x 2, "
        f"{len(dev)} DEV rows: {', '.join(sets)})")
  print("| fit | θ | " + " | ".join(f"{name}: recall / false (per h) / late / named"
                                   for name in sets) + " |")
  print("|---" * (2 + len(sets)) + "|")
  variants = {"uniform": (False, False), "+ start": (False, True),
              "+ quiet lead": (True, False), "+ both": (True, True)}
  for name, (lead, start) in variants.items():
    results = {(t, s): [] for t in thresholds for s in sets}
    for repeat in range(args.repeats):
      picked = (np.arange(len(clips)) if repeat == 0 else
                np.random.default_rng([args.seed, repeat]).integers(0, len(clips), len(clips)))
      none = (sound_head.ChunkExamples.concatenate([
          none_pools["uniform"].pick(none_items[~none_at_start]),
          none_pools["start"].pick(none_items[none_at_start])]) if start
              else none_pools["uniform"].pick(none_items))
      examples = sound_head.ChunkExamples.concatenate(
          [mixture(pools, lead, start, picked, at_start), none])
      fit = sound_head.fit_head(examples, len(LABELS), steps=steps)
      for t in thresholds:
        for s in sets:
          results[t, s].append(score(fit, [r for r in dev if r["set"] == s], t, args.chunks,
                                     model.config.chunk_seconds))
    for t in thresholds:
      cells = []
      for s in sets:
        runs = results[t, s]
        mean = {k: float(np.mean([r[k] for r in runs]))
                for k in ("recall", "false", "late", "per_hour", "named")}
        spread = (f" ({min(r['recall'] for r in runs):.0%}-{max(r['recall'] for r in runs):.0%}"
                  f", {min(r['false'] for r in runs)}-{max(r['false'] for r in runs)})")
        cells.append(f"{mean['recall']:.0%} / {mean['false']:.1f} ({mean['per_hour']:.0f}) / "
                     f"{mean['late']:.1f} / {mean['named']:.0%}{spread}")
      print(f"| {name} | {t:g} | " + " | ".join(cells) + " |", flush=True)
  print(f"total {time.perf_counter() - began:.0f} s on {platform.machine()}; "
        f"means over {args.repeats} fits (bootstrap resamplings of the clips; the first is "
        f"the clips themselves), ranges of recall and false alerts in brackets")


if __name__ == "__main__":
  main()
