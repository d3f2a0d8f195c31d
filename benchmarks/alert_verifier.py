r"""A second stage for the alerts: Whisper's encoder, as trained, over the last seconds.

The streaming head (first stage) reads each 160 ms chunk through the chunk-causal
encoder; its false alarms in benign audio are confusions (notification tones taken for
a phone, doors and fire for crashes and bells) that more TRAIN sounds and more context
in the head did not undo (docs/real_audio_log.md, "More notification tones, more sounds to call
'none'"). Wake-word systems answer the same problem with a cascade: a cheap detector
runs on every frame, and a stronger model checks the few moments it fires on. Here the
stronger model is Whisper tiny.en's own encoder with full attention over the last
`--window` seconds (the imported weights, as Whisper was trained; nothing of the
stream's future), read by a linear head fitted on the same TRAIN bank as the first
stage's (`sound_head.fit_head` over each block's mean frame): when the rule would
alert, the verifier either names the sound (an alerting class whose probabilities sum
to at least φ: the most probable of them) or vetoes the alert, and the rule asks again
at the next chunk while the sound goes on.

Scored as `sound_head_positions.py` scores (the alert rule, once per sound, each DEV
recording from the stream's start): recall by the eval's deadline, false alerts in
benign audio and unaddressed speech, late alerts, naming; each first-stage threshold θ
alone and with each φ.

Run::

  python benchmarks/alert_verifier.py --bundle real-audio --corpus data/wt_snd \
      --dev data/real_dev/events.jsonl --dev data/real_dev_random30/events.jsonl \
      --dev data/real_dev_speech_random30/speech_benign.jsonl   # ~15 min
  python benchmarks/alert_verifier.py --quick   # smoke test: a random model, generated sounds
"""

from __future__ import annotations

import pathlib
import platform
import time

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from audio_interaction.data import storage
from audio_interaction.export import portable
from audio_interaction.infer.sound_naming import SoundNamer, chunk_probabilities
from audio_interaction.model import pretrained
from audio_interaction.model.model import AudioInteractionModel, Params
from audio_interaction.stream_format import NO_SOUND_EVENT
from audio_interaction.train import distill, sound_head

# Sibling benchmarks (scripts run with benchmarks/ on sys.path).
from sound_head_features import LayerFeatures  # noqa: E402
from sound_head_positions import (ALERT_IDS, LABELS, dev_recordings,  # noqa: E402
                                  head_fit_arguments, head_fit_setup, quick_config,
                                  score)


class WindowFeatures:
  """audio [n] (the last `window` seconds, or fewer: zeros before) -> [2 (L + 1), D]:
  each block's and the final norm's mean and spread over the window's frames, from an
  encoder with full attention over the window."""

  def __init__(self, config: ml_collections.ConfigDict, params: Params, window_seconds: float):
    model = AudioInteractionModel(config)
    config = ml_collections.ConfigDict(config.to_dict())
    config.distill.window_ms = int(round(window_seconds * 1000))
    teacher = AudioInteractionModel(distill.teacher_config(config))
    self.samples = teacher.config.chunk_samples
    models = distill.DistillModels(model, teacher, 0, self.samples)
    self._features = LayerFeatures(teacher, models.teacher_params(params))

  def __call__(self, audio: np.ndarray) -> np.ndarray:
    window = np.zeros(self.samples, np.float32)
    tail = audio[-self.samples:]
    window[self.samples - tail.size:] = tail
    return self._features(window, 0)[0]


def window_end_chunks(targets: np.ndarray, label_id: int) -> np.ndarray:
  """The chunk indices (exclusive ends) at which a window may end on a clip's sound:
  after each chunk `targets` gives `label_id`."""
  return np.flatnonzero(targets == label_id) + 1


def verifier_examples(windows: WindowFeatures, root, corpus: str, per_class: int,
                      corpus_rows: int, chunk_samples: int, rng: np.random.Generator
                      ) -> tuple[np.ndarray, np.ndarray]:
  """(features [N, 2 (L + 1), D], targets [N]): a window ending on each bank clip's sound
  (after 0-2 s of quiet room), windows of "none" (the corpus rows' unlabelled stretches,
  sounds outside the classes)."""
  bank = sound_head.train_sound_bank(root)
  x, y = [], []
  labels = [label for label in bank.labels() if label in LABELS]
  for label in tqdm(labels, desc="bank windows", leave=False):
    label_id = LABELS.index(label)
    for _ in range(per_class):
      audio = bank.sample(label, rng).audio[:int(sound_head.MAX_CLIP_SECONDS * 16000)]
      lead = sound_head.quiet_lead(rng, 2.0, chunk_samples)
      targets = np.concatenate([np.full(lead.size // chunk_samples, NO_SOUND_EVENT),
                                sound_head.clip_chunk_targets(audio, label_id, chunk_samples)])
      end = int(rng.choice(window_end_chunks(targets, label_id)))
      x.append(windows(np.concatenate([lead, audio])[:end * chunk_samples]))
      y.append(label_id)
  if root is None:
    return np.stack(x), np.asarray(y, np.int32)
  rows = storage.load_split(corpus, "train")
  for i in tqdm(rng.permutation(len(rows))[:corpus_rows], desc="corpus windows", leave=False):
    row = rows[int(i)]
    labels_per_chunk = np.asarray(row["sound_events"], np.int32)
    span = windows.samples // chunk_samples
    quiet = np.convolve(labels_per_chunk != NO_SOUND_EVENT, np.ones(span), "full")[:len(
        labels_per_chunk)] == 0  # no labelled chunk in the window ending here
    ends = np.flatnonzero(quiet) + 1
    if ends.size:
      end = int(rng.choice(ends))
      x.append(windows(np.asarray(row["audio"], np.float32)[:end * chunk_samples]))
      y.append(NO_SOUND_EVENT)
  for ref in tqdm(sound_head.other_sound_refs(root), desc="other sounds", leave=False):
    audio = sound_head.load_other_sound(ref)
    end = int(rng.integers(1, -(-audio.size // chunk_samples) + 1))
    x.append(windows(audio[:end * chunk_samples]))
    y.append(NO_SOUND_EVENT)
  return np.stack(x), np.asarray(y, np.int32)


class Precomputed:
  """`score`'s fit for rows whose "features" are already the first stage's probabilities."""

  def probabilities(self, features: np.ndarray) -> np.ndarray:
    return features


class Verifier:
  """A fitted window head: `(row, chunk index) -> class id or None` for `score`."""

  def __init__(self, fit: sound_head.HeadFit, windows: WindowFeatures, rows_read: list[int],
               min_alert: float, chunk_samples: int, cache: dict):
    self.fit, self.windows, self.rows_read = fit, windows, rows_read
    self.min_alert, self.chunk_samples, self.cache = min_alert, chunk_samples, cache
    self.asked: set[tuple[int, int]] = set()  # (row, chunk) pairs verified

  def __call__(self, row: dict, index: int) -> int | None:
    key = (id(row), index)
    self.asked.add(key)
    if key not in self.cache:
      self.cache[key] = self.windows(row["audio"][:(index + 1) * self.chunk_samples])
    p = self.fit.probabilities(self.cache[key][self.rows_read].reshape(1, -1))[0]
    alerting = p[ALERT_IDS]
    if alerting.sum() < self.min_alert:
      return None
    return ALERT_IDS[int(np.argmax(alerting))]


def main() -> None:
  parser = head_fit_arguments(__doc__.split("\n\n")[0])
  parser.add_argument("--window", type=float, default=3.2, help="seconds the verifier reads")
  parser.add_argument("--min-alert", default="0.3,0.5,0.7",
                      help="φ: the verifier's summed alerting probability that lets an alert through")
  parser.add_argument("--l2", type=float, default=1e-3)
  args = parser.parse_args()
  thresholds = [float(t) for t in args.thresholds.split(",")]
  min_alerts = [float(t) for t in args.min_alert.split(",")]

  began = time.perf_counter()
  rng = np.random.default_rng(args.seed)
  model, params, root, per_class, steps = head_fit_setup(args)
  chunk_samples = model.config.chunk_samples
  if args.quick:
    config, whisper, dev_paths = quick_config(), params, None
  else:
    config = portable.bundle_config(args.bundle)
    whisper = pretrained.init_from_pretrained(
        model, jax.random.key(0), encoder_checkpoint=config.init.encoder_checkpoint)
    dev_paths = args.dev or [pathlib.Path("data/real_dev_random30/events.jsonl")]
  windows = WindowFeatures(config, whisper, args.window)
  x, y = verifier_examples(windows, root, args.corpus, per_class, args.corpus_rows,
                           chunk_samples, rng)

  namer = SoundNamer(model, params)
  first_stage = lambda audio, first: chunk_probabilities(namer.logits(audio))  # noqa: E731
  if args.quick:
    clip = (0.1 * rng.normal(size=3 * 16000)).astype(np.float32)
    dev = [{"set": "quick", "features": first_stage(clip, 0), "audio": clip,
            "alerts": [(0.0, 2.5, 2.0, "siren")], "benign_seconds": 1.0}]
  else:
    dev = dev_recordings(dev_paths, first_stage)
  sets = sorted({row["set"] for row in dev}) + ["pooled"]
  print(f"{len(y)} verifier windows of {args.window:g} s, {len(dev)} DEV rows; "
        f"prepared in {time.perf_counter() - began:.0f} s on {platform.machine()}\n")

  layers = model.config.encoder.num_layers
  variants = {"means": [2 * b for b in range(layers + 1)],
              "means + spreads": list(range(2 * layers + 2))}
  cache: dict = {}
  print("| verifier reads | θ | φ | " + " | ".join(
      f"{s}: recall / false (per h) / late / named" for s in sets) + " | verified |")
  print("|---" * (4 + len(sets)) + "|")
  for name, rows_read in variants.items():
    fit = sound_head.fit_head(sound_head.ChunkExamples(x[:, rows_read].reshape(len(x), -1), y),
                              len(LABELS), l2=args.l2, steps=steps)
    for t in thresholds:
      for phi in [None] + min_alerts:
        if phi is None and name != "means":
          continue
        verifier = None if phi is None else Verifier(fit, windows, rows_read, phi,
                                                     chunk_samples, cache)
        cells = []
        for s in sets:
          rows = dev if s == "pooled" else [row for row in dev if row["set"] == s]
          r = score(Precomputed(), rows, t, args.chunks, model.config.chunk_seconds, verifier)
          cells.append(f"{r['recall']:.0%} / {r['false']} ({r['per_hour']:.0f}) / "
                       f"{r['late']} / {r['named']:.0%}")
        label = "— (first stage alone)" if phi is None else name
        asked = "" if verifier is None else str(len(verifier.asked))
        print(f"| {label} | {t:g} | {'' if phi is None else f'{phi:g}'} | "
              + " | ".join(cells) + f" | {asked} |", flush=True)
  print(f"total {time.perf_counter() - began:.0f} s on {platform.machine()}")


if __name__ == "__main__":
  main()
