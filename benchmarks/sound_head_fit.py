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

Run::

  python benchmarks/sound_head_fit.py --bundle runs/wt_snd2_head_bundle --corpus data/wt_snd2
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
from audio_interaction.data import storage
from audio_interaction.export import portable
from audio_interaction.model.model import AudioInteractionModel
from audio_interaction.stream_format import NO_SOUND_EVENT
from audio_interaction.train import sound_head

LABELS = worlds.SOUND_EVENT_LABELS
ALERT_IDS = [LABELS.index(label) for label in worlds.ALERT_LABELS]
THRESHOLDS = (0.6, 0.7, 0.8)
WINDOW_S = 2.0  # the eval's answer window after the recognisable time


def rising_edges(fire: np.ndarray) -> int:
  return int(fire[0]) + int((fire[1:] & ~fire[:-1]).sum()) if fire.size else 0


def score(fit, events, streams, chunk_seconds: float) -> dict:
  """The figures of one fit (see the module docstring)."""
  named_clips = [(label, fit.probabilities(f)) for label, _, _, f in events if label in LABELS]
  correct = sum(LABELS[1 + int(np.argmax(np.log(p + 1e-9).mean(0)[1:]))] == label
                for label, p in named_clips)
  out = {"accuracy": correct / max(len(named_clips), 1), "events": len(named_clips)}
  for theta in THRESHOLDS:
    found = named = false = 0
    alerts = 0
    for label, role, onset, f in events:
      p = fit.probabilities(f)
      fire = p[:, ALERT_IDS].max(1) >= theta
      if role == "alert":
        alerts += 1
        ready = onset + manifest.RECOGNISABLE_AFTER_S.get(label, manifest.DEFAULT_RECOGNISABLE_AFTER_S)
        last = int((ready + WINDOW_S) / chunk_seconds)  # chunks ending by the deadline
        hits = np.flatnonzero(fire[:last])
        if hits.size:
          found += 1
          named += LABELS[ALERT_IDS[int(np.argmax(p[hits[0], ALERT_IDS]))]] == label
      else:
        false += rising_edges(fire)
    speech = sum(rising_edges(fit.probabilities(f)[:, ALERT_IDS].max(1) >= theta)
                 for f in streams)
    out[theta] = {"alerts": alerts, "found": found, "named": named, "false_events": false,
                  "false_streams": speech}
  return out


def dev_rows(root: pathlib.Path, encode) -> tuple[list, list]:
  """(class, role, onset, features) of each DEV event row; features of each DEV stream."""
  events = []
  for line in (root / "events.jsonl").read_text().splitlines():
    row = json.loads(line)
    event = row["events"][0]
    events.append((event["class"], event["role"], event["onset"],
                   encode(audio_io.load_audio(root / row["audio"]))))
  streams = [encode(audio_io.load_audio(root / json.loads(line)["audio"]))
             for line in (root / "streams.jsonl").read_text().splitlines()]
  return events, streams


def quick_setup(seed: int):
  """A random model with a head; generated sounds as bank, dev events and streams."""
  config = config_lib.load_config(str(config_lib.experiments_dir() / "tiny.py"),
                                  ["model.encoder.num_layers=1", "model.decoder.num_layers=1",
                                   f"model.sound_event_classes={len(LABELS)}"])
  model = AudioInteractionModel(config)
  encode = sound_head.SoundEventEncoder(model, model.init(jax.random.key(seed)))
  bank = sound_head.train_sound_bank(None)
  rng = np.random.default_rng(seed + 1)
  events = [(label, "alert" if label in worlds.ALERT_LABELS else "benign", 0.0,
             encode(bank.sample(label, rng).audio)) for label in ("siren", "rain", "dog_bark")]
  streams = [encode((0.05 * rng.normal(size=3 * 16000)).astype(np.float32))]
  corpus = sound_head.ChunkExamples(
      np.concatenate([f for _, _, _, f in events]),
      np.concatenate([np.full(len(f), NO_SOUND_EVENT) for _, _, _, f in events]).astype(np.int32))
  return encode, bank, events, streams, corpus, model.config.chunk_seconds


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--bundle", default="runs/wt_snd2_head_bundle",
                      help="a bundle whose model has a sound-event head")
  parser.add_argument("--corpus", default="data/wt_snd2", help="a built corpus (build-data)")
  parser.add_argument("--corpus-rows", type=int, default=1200)
  parser.add_argument("--dev", type=pathlib.Path, default=pathlib.Path("data/real_dev"))
  parser.add_argument("--train-audio", default=str(real_audio.default_cache() / "extracted"))
  parser.add_argument("--per-class", type=int, default=64)
  parser.add_argument("--l2", type=float, default=1e-3)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--quick", action="store_true", help="smoke test without data")
  args = parser.parse_args()

  began = time.perf_counter()
  if args.quick:
    encode, bank, events, streams, corpus, chunk_seconds = quick_setup(args.seed)
    per_class, steps = 1, 20
    others = sound_head.ChunkExamples(corpus.features[:2], corpus.targets[:2])
  else:
    config, params, _ = portable.load_bundle(args.bundle)
    model = AudioInteractionModel(config)
    encode = sound_head.SoundEventEncoder(model, params)
    bank = sound_head.train_sound_bank(args.train_audio)
    corpus = sound_head.corpus_examples(encode, storage.load_split(args.corpus, "train"),
                                        args.corpus_rows, args.seed)
    events, streams = dev_rows(args.dev, encode)
    others = sound_head.other_sound_examples(encode,
                                             sound_head.other_sound_refs(args.train_audio))
    chunk_seconds, per_class, steps = model.config.chunk_seconds, args.per_class, 300
  clean = sound_head.bank_examples(encode, bank, per_class, args.seed)
  none = corpus.targets == NO_SOUND_EVENT
  fits = {"clean clips": clean,
          "+ corpus 'none'": sound_head.ChunkExamples.concatenate(
              [clean, sound_head.ChunkExamples(corpus.features[none], corpus.targets[none])]),
          "+ corpus sounds": sound_head.ChunkExamples.concatenate([clean, corpus]),
          "+ corpus 'none' + other sounds": sound_head.ChunkExamples.concatenate(
              [clean, sound_head.ChunkExamples(corpus.features[none], corpus.targets[none]),
               others])}
  print(f"encoded in {time.perf_counter() - began:.0f} s on {platform.machine()} "
        f"({len(clean.targets)} clean chunks, {len(corpus.targets)} corpus chunks, "
        f"{len(events)} DEV events, {len(streams)} DEV streams)")
  header = "| fit | DEV accuracy | " + " | ".join(
      f"θ={t}: alerts found (named) / false on events / false on streams" for t in THRESHOLDS)
  print(header + " |")
  print("|---" * (2 + len(THRESHOLDS)) + "|")
  for name, examples in fits.items():
    fitted = sound_head.fit_head(examples, len(LABELS), l2=args.l2, steps=steps)
    figures = score(fitted, events, streams, chunk_seconds)
    cells = [f"{100 * figures['accuracy']:.1f} % of {figures['events']}"]
    for t in THRESHOLDS:
      f = figures[t]
      cells.append(f"{f['found']}/{f['alerts']} ({f['named']}) / {f['false_events']} / "
                   f"{f['false_streams']}")
    print(f"| {name} | " + " | ".join(cells) + " |")
  print(f"total {time.perf_counter() - began:.0f} s on {platform.machine()}")


if __name__ == "__main__":
  main()
