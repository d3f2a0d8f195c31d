r"""Can an encoder tell real sounds apart? A linear probe, TRAIN sound bank -> DEV events.

Before a sound-event head is trained into a model, this measures whether the
features it would read carry the classes at all. For each encoder, every clip is
encoded, its frames are pooled (mean and standard deviation over the clip), and a
logistic regression fitted on clips drawn from the corpus's own TRAIN sound bank
(what `build-data` mixes into streams: the TRAIN packages' recordings plus the
procedural generators) names the class of each real sound event of the dev set
(`data/real_dev/events.jsonl`, whole packages held out from training). Encoders:

* the embedded tiny model's chunk-causal encoder (or `--bundle DIR`'s);
* Whisper tiny.en, chunk-causal as `experiments/whisper_tiny.py` runs it (`--set`
  changes the chunking, e.g. `audio.chunk_ms=320 model.encoder.left_chunks=8`);
* Whisper tiny.en over its whole 30 s window (how it was trained; not streamable);
* (`--student DIR`) the chunk-causal Whisper with `distill-encoder`'s weights.

and (`--head BUNDLE`) a trained model's own sound-event head, with no probe: each
clip's class is the head's most likely sound class averaged over the clip's chunks.

Run::

  audio-interaction fetch-train-audio && audio-interaction build-real-dev --out data/real_dev
  python benchmarks/sound_probe.py --dev data/real_dev/events.jsonl   # ~5 min, 2 cores
  python benchmarks/sound_probe.py --quick   # smoke test: procedural sounds, no data needed

Prints, per encoder, the dev accuracy with a 95 % bootstrap interval over clips (dev
events of classes the TRAIN bank has), the macro recall over those classes, and the
share of the commonest dev class (what always naming it would score).
"""

from __future__ import annotations

import argparse
import collections
import json
import pathlib
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from audio_interaction import config_lib
from audio_interaction.audio import io as audio_io
from audio_interaction.corpus import real_audio, worlds
from audio_interaction.eval import bootstrap
from audio_interaction.export import portable
from audio_interaction.model import pretrained
from audio_interaction.train import distill, sound_head

MAX_SECONDS = 10.0  # longer clips are cut: the probe pools what the first 10 s hold


def dev_events(manifest: pathlib.Path) -> list[tuple[str, np.ndarray]]:
  """(class, the event's audio, float32) of each single-event row of `manifest`."""
  out = []
  for line in manifest.read_text().splitlines():
    row = json.loads(line)
    if len(row["events"]) != 1:
      continue
    event = row["events"][0]
    audio = audio_io.load_audio(manifest.parent / row["audio"])
    start, end = (int(16000 * event[k]) for k in ("onset", "offset"))
    out.append((event["class"], audio[start:max(end, start + 1600)][:int(MAX_SECONDS * 16000)]))
  return out


QUICK_CLASSES = ("siren", "dog_bark", "phone_ring", "rain")


def train_bank_clips(root: str | None, per_class: int, seed: int
                     ) -> list[tuple[str, np.ndarray]]:
  """`per_class` clips of every class of the corpus's TRAIN sound bank (root None: the
  procedural sounds of `QUICK_CLASSES` only)."""
  bank = sound_head.train_sound_bank(root)
  labels = QUICK_CLASSES if root is None else bank.labels()
  rng = np.random.default_rng(seed)
  return [(label, bank.sample(label, rng).audio[:int(MAX_SECONDS * 16000)])
          for label in labels for _ in range(per_class)]


def whole_chunks(audio: np.ndarray, chunk: int) -> tuple[np.ndarray, int]:
  """(`audio` zero-padded to a power of two of whole chunks so few shapes compile,
  [1, n]; how many chunks the clip reaches)."""
  chunks = max(1, -(-audio.size // chunk))
  padded = np.zeros((1, (1 << int(np.ceil(np.log2(chunks)))) * chunk), np.float32)
  padded[0, :audio.size] = audio
  return padded, chunks


class PooledEncoder:
  """Mean and standard deviation of an encoder's frames over a clip: [2 * D]; with
  `chunk_window` W > 0, over each chunk's last W chunks instead: [chunks, 2 * D] (what a
  streaming head with W chunks of memory could read)."""

  def __init__(self, model, params, window_samples: int | None = None, chunk_window: int = 0):
    self.model, self.params, self.window = model, params, window_samples
    self.chunk_window = chunk_window
    chunk = model.config.chunk_samples
    self._encode = jax.jit(lambda p, audio: model.network.apply(
        p, model.features(audio), None, method=lambda net, m, s: net.encoder(m, s))[1])
    self._chunk = chunk
    self._samples_per_frame = model.config.hop_length * model.config.encoder.subsampling

  def __call__(self, audio: np.ndarray) -> np.ndarray:
    if self.window is None:
      padded, _ = whole_chunks(audio, self._chunk)
    else:  # one window of its own length (clips are cut to MAX_SECONDS, shorter)
      padded = np.zeros((1, self.window), np.float32)
      padded[0, :audio.size] = audio[:self.window]
    frames = np.asarray(self._encode(self.params, jnp.asarray(padded)))[0]
    used = frames[:max(1, -(-audio.size // self._samples_per_frame))]
    if not self.chunk_window:
      return np.concatenate([used.mean(0), used.std(0)])
    per_chunk = self.model.config.encoder_frames_per_chunk
    chunks = -(-len(used) // per_chunk)
    windows = [frames[max(0, c + 1 - self.chunk_window) * per_chunk:(c + 1) * per_chunk]
               for c in range(chunks)]
    return np.stack([np.concatenate([w.mean(0), w.std(0)]) for w in windows])


class HeadClassifier:
  """A bundle's sound-event head: the class of a clip from its chunks' mean log-probabilities."""

  def __init__(self, bundle: str):
    model, params, _, _ = portable.load_model(None, bundle)
    if not model.config.sound_event_classes:
      raise ValueError(f"{bundle}: the model has no sound-event head (model.sound_event_classes)")
    self._chunk = model.config.chunk_samples

    def log_probs(p, audio):
      def heads(net, mel):
        encoded = net.encoder(mel, None)
        return net.sound_event_logits(encoded.frames, encoded.taps)
      return jax.nn.log_softmax(model.network.apply(p, model.features(audio), method=heads))

    self._log_probs = jax.jit(log_probs)
    self._params = params

  def __call__(self, audio: np.ndarray) -> str:
    padded, chunks = whole_chunks(audio, self._chunk)
    scores = np.asarray(self._log_probs(self._params, jnp.asarray(padded)))[0, :chunks].mean(0)
    return worlds.SOUND_EVENT_LABELS[1 + int(np.argmax(scores[1:]))]  # never "none"


def probe(train_x, train_y, dev_x, dev_y) -> np.ndarray:
  """The dev predictions of a logistic regression fitted on the TRAIN features: one
  row per clip, or (lists of [chunks, F] arrays) one per chunk, a clip's class then
  the best mean log-probability over its chunks."""
  from sklearn.linear_model import LogisticRegression  # pylint: disable=import-outside-toplevel
  from sklearn.pipeline import make_pipeline  # pylint: disable=import-outside-toplevel
  from sklearn.preprocessing import StandardScaler  # pylint: disable=import-outside-toplevel
  del dev_y
  classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=0.1))
  if isinstance(train_x, np.ndarray):
    classifier.fit(train_x, train_y)
    return classifier.predict(dev_x)
  classifier.fit(np.concatenate(train_x), np.repeat(train_y, [len(x) for x in train_x]))
  classes = classifier.classes_
  return np.array([classes[np.argmax(np.log(classifier.predict_proba(x) + 1e-9).mean(0))]
                   for x in dev_x])


def encoders(args: argparse.Namespace) -> dict[str, PooledEncoder]:
  """The encoders to compare, by name."""
  model, params, _, note = portable.load_model(None, args.bundle)
  out = {f"tiny ({note.split(' from ')[-1]})": PooledEncoder(model, params,
                                                             chunk_window=args.chunk_window)}
  config = config_lib.load_config(args.config, args.set)
  models = distill.DistillModels.from_config(config)
  imported = pretrained.init_from_pretrained(models.student, jax.random.key(0),
                                             encoder_checkpoint=config.init.encoder_checkpoint)
  out[f"whisper chunk-causal {config.audio.chunk_ms} ms"] = PooledEncoder(
      models.student, imported, chunk_window=args.chunk_window)
  if not args.no_full_window:
    out["whisper whole 30 s window"] = PooledEncoder(
        models.teacher, models.teacher_params(imported), models.window_samples)
  if args.student:
    out["whisper distilled"] = PooledEncoder(models.student, pretrained.init_from_pretrained(
        models.student, jax.random.key(0), encoder_checkpoint=args.student),
        chunk_window=args.chunk_window)
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--dev", type=pathlib.Path, default=pathlib.Path("data/real_dev/events.jsonl"))
  parser.add_argument("--train-audio", default=str(real_audio.default_cache() / "extracted"),
                      help="fetch-train-audio's folder")
  parser.add_argument("--per-class", type=int, default=24, help="TRAIN bank clips per class")
  parser.add_argument("--bundle", default=None, help="a model bundle (default: the embedded one)")
  parser.add_argument("--config", default=str(config_lib.experiments_dir() / "whisper_tiny.py"))
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
  parser.add_argument("--student", default="", help="distill-encoder's WORKDIR/encoder")
  parser.add_argument("--head", action="append", default=[], metavar="BUNDLE",
                      help="also score this bundle's own sound-event head (repeatable)")
  parser.add_argument("--heads-only", action="store_true", help="skip the probes")
  parser.add_argument("--no-full-window", action="store_true",
                      help="skip the whole-window Whisper (10x slower than the others)")
  parser.add_argument("--chunk-window", type=int, default=0, metavar="W",
                      help="probe per chunk over its last W chunks (0: one pool per clip)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--quick", action="store_true",
                      help="smoke test: a few procedural sounds as both TRAIN and dev")
  parser.add_argument("--json", default="", help="also write the figures here")
  args = parser.parse_args()

  if args.quick:  # procedural sounds of other seeds stand in for the dev events
    args.no_full_window = True
    dev = train_bank_clips(None, 3, args.seed + 1)
    train = train_bank_clips(None, 4, args.seed)
  else:
    dev = dev_events(args.dev)
    train = train_bank_clips(args.train_audio, args.per_class, args.seed)
  train_classes = {label for label, _ in train}
  dev = [(label, audio) for label, audio in dev if label in train_classes]
  dev_y = np.array([label for label, _ in dev])
  train_y = np.array([label for label, _ in train])
  common, common_n = collections.Counter(dev_y).most_common(1)[0]
  print(f"{len(train)} TRAIN bank clips ({len(train_classes)} classes); {len(dev)} dev events "
        f"of those classes ({len(set(dev_y))} classes; commonest {common}: "
        f"{100 * common_n / len(dev):.0f} %)")
  report = {}

  def predictions():
    if not args.heads_only:
      for name, encode in encoders(args).items():
        pack = np.stack if not encode.chunk_window else list
        train_x = pack([encode(a) for _, a in tqdm.tqdm(train, desc=f"{name}: train",
                                                        leave=False)])
        dev_x = pack([encode(a) for _, a in tqdm.tqdm(dev, desc=f"{name}: dev", leave=False)])
        yield f"probe: {name}", probe(train_x, train_y, dev_x, dev_y)
    for bundle in args.head:
      classify = HeadClassifier(bundle)
      yield f"head: {pathlib.Path(bundle).name}", np.array(
          [classify(a) for _, a in tqdm.tqdm(dev, desc=f"{bundle}: dev", leave=False)])

  began = time.perf_counter()
  for name, predicted in predictions():
    correct = predicted == dev_y
    interval = bootstrap.bootstrap_intervals(
        len(dev), lambda idx: {"accuracy": float(correct[idx].mean())}, resamples=1000)["accuracy"]
    recalls = {c: float(correct[dev_y == c].mean()) for c in sorted(set(dev_y))}
    report[name] = {"accuracy": float(correct.mean()), "low": interval["low"],
                    "high": interval["high"], "macro_recall": float(np.mean(list(recalls.values()))),
                    "recall": recalls,
                    "confusions": collections.Counter(
                        f"{t}->{p}" for t, p in zip(dev_y, predicted) if t != p).most_common(5)}
    print(f"{name:<34} accuracy {100 * correct.mean():5.1f} % [{100 * interval['low']:.1f}, "
          f"{100 * interval['high']:.1f}]  macro recall {100 * report[name]['macro_recall']:5.1f} %"
          f"  ({time.perf_counter() - began:.0f} s on {platform.machine()})")
    began = time.perf_counter()
    print("   " + ", ".join(f"{c} {100 * r:.0f}%" for c, r in recalls.items()))
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
  main()
