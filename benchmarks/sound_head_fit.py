r"""What `fit-sound-head`'s training examples do to naming and alerts on the DEV set.

The sound-event head of a bundle is fitted alone (`train/sound_head.py`) on three sets
of chunk features of the bundle's own encoder, each fit then scored on the real DEV
recordings (`build-real-dev`; whole packages held out from training):

* clean clips: `--per-class` clips of every class of the TRAIN sound bank;
* + corpus "none": and the "none" chunks of `--corpus-rows` rows of a built corpus
  (speech, silence, rooms) — `fit-sound-head`'s default;
* + corpus sounds: and those rows' labelled sounds too (under speech and noise);
* + other sounds: clean clips + corpus "none" + the TRAIN packages' recordings of
  sounds outside the head's classes (explosions, fire, applause...) as "none".

Figures per fit: DEV accuracy over the events of the bank's classes (a clip's class is
its chunks' best mean log-probability, "none" aside, as `sound_probe.py --head`); then,
per alert threshold θ, read as `infer/sound_alerts.py` reads the head (a chunk alerts
when a class that needs attention has P >= θ): the DEV alert events with an alerting
chunk by their class's recognisable time + 2 s (the eval's deadline) and how many of
those name the right class, and the false alerts (rising edges) on the benign DEV
events and on the 40 DEV turn-taking streams (speech). The eval (`audio-interaction
eval --sound-alert θ`) gives the suites' own B6 figures; this compares the fits fast.

What the head reads, side by side (`--context-chunks 0,4,16`): each chunk's features
alone (0), or beside the mean of the last K chunks' features (the chunk's own among
them; fewer at a clip's start), so a linear head can tell a sound that goes on (a
ringtone) from a short one (a notification tone). With `--rule-chunks N` alerts are
read as the shipped rule reads them (`infer/sound_alerts.py`, once per sound: the
alerting classes' probabilities summed, N chunks running, a 30 s hold) instead of by
rising edges, and `--speech` adds the DEV English clips as unaddressed speech: false
alarms per hour over benign events and speech together, as issue 13's goal counts them.

Run::

  python benchmarks/sound_head_fit.py --bundle runs/wt_snd2_head_bundle --corpus data/wt_snd2
  python benchmarks/sound_head_fit.py --bundle real-audio --corpus data/tiny --corpus-rows 600 \
      --fits "+ corpus 'none' + other sounds" --quiet-lead 2 --first-positions random \
      --context-chunks 0,4,16 --rule-chunks 4 --thresholds 0.3,0.4,0.5,0.6,0.7 --speech
  python benchmarks/sound_head_fit.py --quick   # smoke test: a random model, generated sounds
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import time

import jax
import numpy as np

from audio_interaction import config_lib
from audio_interaction.audio import io as audio_io
from audio_interaction.corpus import manifest, real_audio, worlds
from audio_interaction import stream_format as sf
from audio_interaction.data import storage
from audio_interaction.export import portable
from audio_interaction.infer.sound_alerts import SoundAlertRule
from audio_interaction.model.clip_encoder import FIRST_POSITIONS
from audio_interaction.model.model import AudioInteractionModel
from audio_interaction.stream_format import NO_SOUND_EVENT
from audio_interaction.train import sound_head

LABELS = worlds.SOUND_EVENT_LABELS
ALERT_IDS = [LABELS.index(label) for label in worlds.ALERT_LABELS]
THRESHOLDS = (0.6, 0.7, 0.8)
WINDOW_S = 2.0  # the eval's answer window after the recognisable time
HOLD_S = 30.0  # `--rule-chunks`: the shipped rule's hold


def edge_alerts(p: np.ndarray, theta: float) -> list[tuple[int, int]]:
  """(chunk, class id) of each rising edge of "some alerting class has P >= theta",
  named by the most probable alerting class there."""
  fire = p[:, ALERT_IDS].max(1) >= theta
  edges = np.flatnonzero(fire & ~np.concatenate([[False], fire[:-1]]))
  return [(int(t), ALERT_IDS[int(np.argmax(p[t, ALERT_IDS]))]) for t in edges]


def rule_alerts(p: np.ndarray, theta: float, chunks: int, chunk_seconds: float
                ) -> list[tuple[int, int]]:
  """(chunk, class id) of each alert the shipped rule raises over probabilities p [T, K]:
  once per sound, `chunks` chunks running, `HOLD_S` hold (`SoundAlertRule`)."""
  rule = SoundAlertRule(theta, chunks, int(round(HOLD_S / chunk_seconds)),
                        {class_id: [sf.EOR_ID] for class_id in ALERT_IDS}, once_per_sound=True)
  rule.start(1)
  free, index = np.ones(1, bool), np.zeros(1, np.int64)
  return [(t, fired[0]) for t in range(len(p))
          if (fired := rule.fire(p[t:t + 1], [0], index, free))]


def score(probabilities, events, streams, speech, chunk_seconds: float,
          thresholds=THRESHOLDS, rule_chunks: int = 0) -> dict:
  """The figures of one fit (see the module docstring); `probabilities`: features [N, D]
  -> the fitted head's [N, K]."""
  named_clips = [(label, probabilities(f)) for label, _, _, f in events if label in LABELS]
  correct = sum(LABELS[1 + int(np.argmax(np.log(p + 1e-9).mean(0)[1:]))] == label
                for label, p in named_clips)
  out = {"accuracy": correct / max(len(named_clips), 1), "events": len(named_clips)}
  event_p = [(label, role, onset, probabilities(f)) for label, role, onset, f in events]
  stream_p = [probabilities(f) for f in streams]
  speech_p = [probabilities(f) for f in speech]
  benign_hours = (sum(len(p) for _, role, _, p in event_p if role != "alert")
                  + sum(len(p) for p in speech_p)) * chunk_seconds / 3600
  for theta in thresholds:
    def alerts_of(p):
      return (rule_alerts(p, theta, rule_chunks, chunk_seconds) if rule_chunks
              else edge_alerts(p, theta))
    found = named = false = alerts = 0
    for label, role, onset, p in event_p:
      raised = alerts_of(p)
      if role == "alert":
        alerts += 1
        ready = onset + manifest.RECOGNISABLE_AFTER_S.get(label, manifest.DEFAULT_RECOGNISABLE_AFTER_S)
        last = int((ready + WINDOW_S) / chunk_seconds)  # chunks ending by the deadline
        hits = [class_id for chunk, class_id in raised if chunk < last]
        if hits:
          found += 1
          named += LABELS[hits[0]] == label
      else:
        false += len(raised)
    false_speech = sum(len(alerts_of(p)) for p in speech_p)
    out[theta] = {"alerts": alerts, "found": found, "named": named, "false_events": false,
                  "false_streams": sum(len(alerts_of(p)) for p in stream_p),
                  "false_speech": false_speech,
                  "false_per_hour": (false + false_speech) / benign_hours}
  return out


def window_means(features: np.ndarray, chunks: int) -> np.ndarray:
  """features [T, D] -> [T, D]: at each chunk the mean of the last `chunks` chunks'
  features, its own included (fewer at the start): causal, as a stream would have it."""
  sums = np.concatenate([np.zeros((1, features.shape[1])), np.cumsum(features, 0)])
  ends = np.arange(1, len(features) + 1)
  starts = np.maximum(ends - chunks, 0)
  return ((sums[ends] - sums[starts]) / (ends - starts)[:, None]).astype(np.float32)


class WithContext:
  """A clip encoder whose features carry, beside each chunk's own, `window_means` of
  every width in `widths` (in order): the fits slice what each reads (`columns`)."""

  def __init__(self, encode, widths):
    self.encode, self.widths = encode, tuple(widths)
    self.chunk_samples = encode.chunk_samples

  def __call__(self, audio: np.ndarray) -> np.ndarray:
    features = self.encode(audio)
    return np.concatenate([features] + [window_means(features, k) for k in self.widths], 1)

  def columns(self, width: int, context: int) -> np.ndarray:
    """The columns of chunk features (`width` of them per block) and, for `context` > 0,
    of that window's means."""
    blocks = [0] + ([1 + self.widths.index(context)] if context else [])
    return np.concatenate([np.arange(b * width, (b + 1) * width) for b in blocks])


def dev_rows(root: pathlib.Path, encode, speech: bool = False) -> tuple[list, list, list]:
  """(class, role, onset, features) of each DEV event row; features of each DEV stream;
  with `speech`, features of each DEV English clip (else none)."""
  events = []
  for line in (root / "events.jsonl").read_text().splitlines():
    row = json.loads(line)
    event = row["events"][0]
    events.append((event["class"], event["role"], event["onset"],
                   encode(audio_io.load_audio(root / row["audio"]))))
  def encoded(name):
    return [encode(audio_io.load_audio(root / json.loads(line)["audio"]))
            for line in (root / name).read_text().splitlines()]
  return events, encoded("streams.jsonl"), encoded("speech_en.jsonl") if speech else []


def quick_setup(seed: int, wrap):
  """A random model with a head; generated sounds as bank, dev events, streams and speech;
  `wrap` makes the clip encoder the fits read."""
  config = config_lib.load_config(str(config_lib.experiments_dir() / "tiny.py"),
                                  ["model.encoder.num_layers=1", "model.decoder.num_layers=1",
                                   f"model.sound_event_classes={len(LABELS)}"])
  model = AudioInteractionModel(config)
  encode = wrap(sound_head.SoundEventEncoder(model, model.init(jax.random.key(seed))))
  bank = sound_head.train_sound_bank(None)
  rng = np.random.default_rng(seed + 1)
  events = [(label, "alert" if label in worlds.ALERT_LABELS else "benign", 0.0,
             encode(bank.sample(label, rng).audio)) for label in ("siren", "rain", "dog_bark")]
  streams = [encode((0.05 * rng.normal(size=3 * 16000)).astype(np.float32))]
  corpus = sound_head.ChunkExamples(
      np.concatenate([f for _, _, _, f in events]),
      np.concatenate([np.full(len(f), NO_SOUND_EVENT) for _, _, _, f in events]).astype(np.int32))
  return encode, bank, events, streams, streams, corpus, model.config.chunk_seconds


def float_list(text: str) -> tuple[float, ...]:
  return tuple(float(v) for v in text.split(","))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--bundle", default="runs/wt_snd2_head_bundle",
                      help="a bundle whose model has a sound-event head (or real-audio)")
  parser.add_argument("--corpus", default="data/wt_snd2", help="a built corpus (build-data)")
  parser.add_argument("--corpus-rows", type=int, default=1200)
  parser.add_argument("--dev", type=pathlib.Path, default=pathlib.Path("data/real_dev"))
  parser.add_argument("--train-audio", default=str(real_audio.default_cache() / "extracted"))
  parser.add_argument("--per-class", type=int, default=64)
  parser.add_argument("--l2", type=float, default=1e-3)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--fits", default=None,
                      help="comma-separated fit names of the table (default: all four)")
  parser.add_argument("--quiet-lead", type=float, default=0.0,
                      help="longest quiet room before each clean clip (fit-sound-head's)")
  parser.add_argument("--first-positions", default="start", choices=FIRST_POSITIONS,
                      help="where each clip starts in the encoder's position window")
  parser.add_argument("--context-chunks", default="0",
                      help="comma-separated K: fits that read, beside each chunk, the mean of "
                           "the last K chunks' features (0: the chunk alone)")
  parser.add_argument("--thresholds", type=float_list, default=THRESHOLDS)
  parser.add_argument("--rule-chunks", type=int, default=0,
                      help="read alerts as the shipped rule (once per sound, N chunks running, "
                           "30 s hold); 0: rising edges")
  parser.add_argument("--speech", action="store_true",
                      help="the DEV English clips as unaddressed speech (false alarms per hour)")
  parser.add_argument("--quick", action="store_true", help="smoke test without data")
  args = parser.parse_args()
  contexts = [int(k) for k in args.context_chunks.split(",")]
  wrap = lambda encode: WithContext(encode, [k for k in contexts if k])

  began = time.perf_counter()
  if args.quick:
    encode, bank, events, streams, speech, corpus, chunk_seconds = quick_setup(args.seed, wrap)
    per_class, steps = 1, 20
    others = sound_head.ChunkExamples(corpus.features[:2], corpus.targets[:2])
  else:
    config, params, _ = portable.load_bundle(portable.resolve_bundle(args.bundle))
    model = AudioInteractionModel(config)
    encode = wrap(sound_head.SoundEventEncoder(model, params, first_positions=args.first_positions,
                                               seed=args.seed))
    bank = sound_head.train_sound_bank(args.train_audio)
    corpus = sound_head.corpus_examples(encode, storage.load_split(args.corpus, "train"),
                                        args.corpus_rows, args.seed)
    events, streams, speech = dev_rows(args.dev, encode, args.speech)
    others = sound_head.other_sound_examples(encode,
                                             sound_head.other_sound_refs(args.train_audio))
    chunk_seconds, per_class, steps = model.config.chunk_seconds, args.per_class, 300
  clean = sound_head.bank_examples(encode, bank, per_class, args.seed,
                                   lead_seconds=args.quiet_lead)
  none = corpus.targets == NO_SOUND_EVENT
  fits = {"clean clips": lambda: clean,
          "+ corpus 'none'": lambda: sound_head.ChunkExamples.concatenate(
              [clean, sound_head.ChunkExamples(corpus.features[none], corpus.targets[none])]),
          "+ corpus sounds": lambda: sound_head.ChunkExamples.concatenate([clean, corpus]),
          "+ corpus 'none' + other sounds": lambda: sound_head.ChunkExamples.concatenate(
              [clean, sound_head.ChunkExamples(corpus.features[none], corpus.targets[none]),
               others])}
  chosen = list(fits) if args.fits is None else args.fits.split(",")
  unknown = sorted(set(chosen) - set(fits))
  if unknown:
    raise SystemExit(f"--fits {unknown}: choose from {list(fits)}")
  width = events[0][3].shape[1] // (1 + len(encode.widths))
  print(f"encoded in {time.perf_counter() - began:.0f} s on {platform.machine()} "
        f"({len(clean.targets)} clean chunks, {len(corpus.targets)} corpus chunks, "
        f"{len(events)} DEV events, {len(streams)} DEV streams, {len(speech)} DEV speech clips)")
  rule = (f"the shipped rule, {args.rule_chunks} chunks" if args.rule_chunks
          else "rising edges")
  pooled = " / per hour of benign events and speech" if args.speech else ""
  header = "| fit | reads | DEV accuracy | " + " | ".join(
      f"θ={t}: alerts found (named) / false on events / false on streams{pooled}"
      for t in args.thresholds)
  print(f"alerts read by {rule}")
  print(header + " |")
  print("|---" * (3 + len(args.thresholds)) + "|")
  for name in chosen:
    for context in contexts:
      columns = encode.columns(width, context)
      examples = fits[name]()
      examples = sound_head.ChunkExamples(examples.features[:, columns], examples.targets)
      fitted = sound_head.fit_head(examples, len(LABELS), l2=args.l2, steps=steps)
      del examples
      figures = score(lambda f: fitted.probabilities(f[:, columns]), events, streams, speech,
                      chunk_seconds, args.thresholds, args.rule_chunks)
      cells = [f"{100 * figures['accuracy']:.1f} % of {figures['events']}"]
      for t in args.thresholds:
        f = figures[t]
        cells.append(f"{f['found']}/{f['alerts']} ({f['named']}) / {f['false_events']} / "
                     f"{f['false_streams']}" + (f" / {f['false_per_hour']:.0f}"
                                                if args.speech else ""))
      reads = f"+ mean of the last {context} chunks" if context else "the chunk"
      print(f"| {name} | {reads} | " + " | ".join(cells) + " |", flush=True)
  print(f"total {time.perf_counter() - began:.0f} s on {platform.machine()}")


if __name__ == "__main__":
  main()
