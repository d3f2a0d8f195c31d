r"""What the sound-event head reads, and what that does to alerts.

The head was linear over each chunk's *mean final encoder frame*
(`AudioInteractionNetwork.sound_event_features` without `model.sound_event_blocks`).
Its remaining false alarms in benign audio were confusions a linear read of that vector
could not undo (footsteps taken for a crash, notification tones for a phone: docs/real_audio_log.md,
"Where the false alarms come from"). Two cheap ways to give a linear head more to read,
without training the encoder:

* the *spread* of the chunk's frames beside their mean (a 160 ms chunk holds 8 frames:
  an impact is one loud frame, a tone eight alike);
* the mean of a *lower* block's frames beside the final one (Whisper's top block is
  fine-tuned on speech tasks; lower blocks keep more of the sound's acoustics).

This benchmark (which chose `model.sound_event_blocks=(0, 1, 2)` for the shipped head:
docs/real_audio_log.md, "What the head reads") encodes the TRAIN-bank clips once (each at a uniform
random place of the position window, as `fit-sound-head` does; optionally after a quiet
lead), keeps every block's per-chunk mean and spread, fits the head
(`sound_head.fit_head`: the same weighted logistic regression) on each set of features
over the *same* examples, and scores each fit with the alert rule over DEV recordings
(`sound_head_positions.score`: recall by the eval's deadline, alerts in benign audio,
late alerts, naming).

Run::

  python benchmarks/sound_head_features.py --bundle real-audio --corpus data/wt_snd \
      --dev data/real_dev_random30/events.jsonl --dev data/real_dev/events.jsonl   # ~20 min
  python benchmarks/sound_head_features.py --quick   # smoke test: a random model, generated sounds
"""

from __future__ import annotations

import pathlib
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from audio_interaction.corpus import worlds
from audio_interaction.data import storage
from audio_interaction.model import clip_encoder
from audio_interaction.model.encoder import EncoderBlock
from audio_interaction.model.model import AudioInteractionModel, Params
from audio_interaction.stream_format import NO_SOUND_EVENT
from audio_interaction.train import sound_head

# Sibling benchmark (scripts run with benchmarks/ on sys.path): the alert scoring and the
# DEV rows are the ones `sound_head_positions.py` measured positions with.
from sound_head_positions import (LABELS, dev_recordings, head_fit_arguments,  # noqa: E402
                                  head_fit_setup, none_chunks, score)


class LayerFeatures:
  """audio [n] -> [chunks, 2 * (L + 1), D]: per chunk, the mean and the spread (std) of
  its frames after each of the L encoder blocks and after the final norm (the last mean
  is what the shipped head reads), encoded from `first` (an encoder frame)."""

  def __init__(self, model: AudioInteractionModel, params: Params):
    config = model.config
    self.chunk_samples = config.chunk_samples
    self.layers = config.encoder.num_layers
    per_chunk = config.encoder_frames_per_chunk

    def per_chunk_stats(frames):  # [1, F, D] -> [C, 2, D]
      grouped = frames[0].reshape(-1, per_chunk, frames.shape[-1]).astype(jnp.float32)
      return jnp.stack([grouped.mean(1), grouped.std(1)], axis=1)

    def encode(net, mel, first):
      return net.encoder(mel, None, first_position=first)[1]

    def run(p, audio, first):
      encoded, captured = model.network.apply(
          p, model.features(audio), first, method=encode,
          capture_intermediates=lambda module, _: isinstance(module, EncoderBlock))
      blocks = captured["intermediates"]["encoder"]
      stats = [per_chunk_stats(blocks[f"block{i}"]["__call__"][0][0])
               for i in range(self.layers)] + [per_chunk_stats(encoded)]
      return jnp.concatenate(stats, axis=1)  # [C, 2 (L + 1), D]

    self._run = jax.jit(run)
    self._params = params

  def __call__(self, audio: np.ndarray, first: int) -> np.ndarray:
    chunks = max(1, -(-audio.size // self.chunk_samples))
    padded = clip_encoder.padded_to_power_of_two(audio, self.chunk_samples)
    out = self._run(self._params, jnp.asarray(padded), jnp.full((1,), first, jnp.int32))
    return np.asarray(out)[:chunks]


def variants(layers: int) -> dict[str, tuple[list[int], int]]:
  """{name: (the rows of `LayerFeatures`' output a head reads, context chunks)}; row 2i is
  block i's mean, 2i + 1 its spread, 2L and 2L + 1 the final norm's. Context k > 0: beside
  the chunk's rows, their mean over the chunk and the k - 1 before it (`with_context`)."""
  final_mean, final_std = 2 * layers, 2 * layers + 1
  chosen = {"final mean": ([final_mean], 0),
            "final mean + spread": ([final_mean, final_std], 0)}
  for block in range(layers - 1):
    chosen[f"block {block} mean + final mean"] = ([2 * block, final_mean], 0)
  means = [2 * block for block in range(layers)] + [final_mean]
  chosen["every block's mean (shipped)"] = (means, 0)
  chosen["every block's mean + spread"] = (list(range(2 * layers + 2)), 0)
  for context in CONTEXT_CHUNKS:
    chosen[f"every block's mean + their mean over the last {context} chunks"] = (means, context)
  return chosen


# Context lengths (chunks) of the variants that read what came before the chunk too: a
# ringtone goes on and repeats, a notification chime is over in a second.
CONTEXT_CHUNKS = (8, 16)


def with_context(features: np.ndarray, context: int) -> np.ndarray:
  """features [C, ...] of one clip -> [C, 2, ...] (context > 0: each chunk's own features
  and their causal mean over it and the `context - 1` chunks before it, fewer at the
  clip's start) or the features unchanged (context 0)."""
  if context == 0:
    return features
  sums = np.cumsum(features, axis=0, dtype=np.float64)
  before = np.concatenate([np.zeros((context,) + features.shape[1:]), sums])[:len(features)]
  counts = np.minimum(np.arange(1, len(features) + 1), context).reshape(
      (-1,) + (1,) * (features.ndim - 1))
  return np.stack([features, ((sums - before) / counts).astype(features.dtype)], axis=1)


def main() -> None:
  parser = head_fit_arguments(__doc__.split("\n\n")[0])
  parser.add_argument("--quiet-lead", type=float, default=0.0,
                      help="the longest quiet room before each clip (fit-sound-head's option)")
  parser.add_argument("--l2", type=float, default=1e-3)
  args = parser.parse_args()
  thresholds = [float(t) for t in args.thresholds.split(",")]

  began = time.perf_counter()
  rng = np.random.default_rng(args.seed)
  model, params, root, per_class, steps = head_fit_setup(args)
  features = LayerFeatures(model, params)
  # Uniform places of the position window, drawn as fit-sound-head draws them.
  places = clip_encoder.ChunkEncoder(model, params, first_positions="random", seed=args.seed)
  bank = sound_head.train_sound_bank(root)
  examples_x, examples_y = [], []
  for label in [label for label in bank.labels() if label in LABELS]:
    for _ in range(per_class):
      audio = bank.sample(label, rng).audio[:int(sound_head.MAX_CLIP_SECONDS * 16000)]
      lead = sound_head.quiet_lead(rng, args.quiet_lead, features.chunk_samples)
      examples_x.append(features(np.concatenate([lead, audio]), places.next_first_position()))
      examples_y.append(np.concatenate([
          np.full(lead.size // features.chunk_samples, NO_SOUND_EVENT, np.int32),
          sound_head.clip_chunk_targets(audio, LABELS.index(label), features.chunk_samples)]))
  if args.quick:
    clips = [(label, bank.sample(label, rng).audio[:3 * 16000]) for label in bank.labels()
             if label in LABELS][:4]
    dev = [{"set": "quick", "features": features(clip, 0),
            "alerts": ([(0.0, 2.5, 2.0, label)] if label in worlds.ALERT_LABELS else []),
            "benign_seconds": clip.size / 16000} for label, clip in clips]
    nones = [(0.05 * rng.normal(size=3 * 16000)).astype(np.float32)]
    none_labels = [np.zeros(-(-nones[0].size // features.chunk_samples), np.int32)]
  else:
    rows = storage.load_split(args.corpus, "train")
    picked = rng.permutation(len(rows))[:args.corpus_rows]
    nones = [np.asarray(rows[int(i)]["audio"], np.float32) for i in picked]
    none_labels = [np.asarray(rows[int(i)]["sound_events"], np.int32) for i in picked]
    for ref in sound_head.other_sound_refs(root):
      nones.append(sound_head.load_other_sound(ref))
      none_labels.append(None)
    dev = dev_recordings(args.dev or [pathlib.Path("data/real_dev_random30/events.jsonl")],
                         features)
  # The indices of each clip's chunks that are examples: all of a bank clip's; of a "none"
  # recording those `none_chunks` keeps (the context is still taken over the whole clip).
  kept = [np.arange(len(clip)) for clip in examples_x]
  for audio, labels in zip(nones, none_labels):
    clip = features(audio, places.next_first_position())
    keep, targets = none_chunks(np.arange(len(clip)), labels)
    examples_x.append(clip)
    kept.append(keep)
    examples_y.append(targets)
  y = np.concatenate(examples_y)
  sets = sorted({row["set"] for row in dev})
  print(f"encoded in {time.perf_counter() - began:.0f} s on {platform.machine()} "
        f"({len(y)} chunk examples, {len(dev)} DEV rows: {', '.join(sets)}; quiet lead "
        f"≤ {args.quiet_lead:g} s)\n")
  print("| head reads | dims | train recall (sound classes) | θ | " + " | ".join(
      f"{name}: recall / benign false (per h) / late / named" for name in sets) + " |")
  print("|---" * (4 + len(sets)) + "|")
  for name, (rows_read, context) in variants(features.layers).items():
    # Per clip (the context must not reach into the clip before), then concatenated.
    flat = lambda f: with_context(f[:, rows_read], context).reshape(len(f), -1)  # noqa: E731
    x = np.concatenate([flat(clip)[keep] for clip, keep in zip(examples_x, kept)])
    fit = sound_head.fit_head(sound_head.ChunkExamples(x, y), len(LABELS),
                              l2=args.l2, steps=steps)
    mean_recall = np.mean([r for k, r in fit.recall.items() if k != "none"] or [0.0])
    read = {s: [dict(row, features=flat(row["features"])) for row in dev if row["set"] == s]
            for s in sets}
    for t in thresholds:
      cells = []
      for s in sets:
        r = score(fit, read[s], t, args.chunks, model.config.chunk_seconds)
        cells.append(f"{r['recall']:.0%} / {r['false']} ({r['per_hour']:.0f}) / {r['late']} / "
                     f"{r['named']:.0%}")
      print(f"| {name} | {x.shape[1]} | {mean_recall:.0%} | {t:g} | "
            + " | ".join(cells) + " |", flush=True)
  print(f"total {time.perf_counter() - began:.0f} s on {platform.machine()}")


if __name__ == "__main__":
  main()
