r"""What a linear CTC head can read from each block of a frozen encoder, and from the
whole window.

`fit-ctc-head` fits a linear head over the encoder's final frames; over the real-audio
bundle's chunk-causal Whisper encoder it writes 95-101 % WER on the DEV English clips
(docs/real_audio_log.md, "The CTC head fitted alone"). This asks whether a linear head
reading something else would do better. It encodes `--max-lines` recorded lines of the
TRAIN side's English voices (`fit-ctc-head`'s lines and voice split: 5 % of the voices
held out) once, keeping every block's output frames, and fits one head over each read
(`train.ctc_head.fit_head`, the same fit as `fit-ctc-head`):

* `block0` ... `blockN`: one block's output frames (the last, the final norm's output,
  is what the model's own CTC head reads);
* `all`: every block's frames side by side.

`--whole-window` encodes each clip as Whisper reads one: a single window of up to 30 s
(the clip, then silence) with full attention, instead of chunk by chunk with nothing of
the future: what a head could read with the whole clip in view. `--imported` puts
Whisper tiny.en's own weights in the bundle's encoder first (the real-audio bundle
trained its top block).

Figures per read: greedy WER on the held-out voices at the best evaluation (the step
chosen on them), on the first 200 training lines (does the head fit what it was fitted
on?), and on `--monitor` (e.g. the DEV English clips; it chooses nothing).

Run::

  python benchmarks/ctc_head_reads.py --bundle real-audio --monitor data/real_dev/speech_en.jsonl
  python benchmarks/ctc_head_reads.py --bundle real-audio --imported --whole-window --reads final \
      --monitor data/real_dev/speech_en.jsonl
  python benchmarks/ctc_head_reads.py --quick   # smoke test: the real-audio bundle, flite lines
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import platform
import subprocess
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from audio_interaction import config_lib
from audio_interaction.audio import io as audio_io
from audio_interaction.corpus import real_speech
from audio_interaction.export import portable
from audio_interaction.model import pretrained
from audio_interaction.model.clip_encoder import padded_to_power_of_two
from audio_interaction.model.model import AudioInteractionModel
from audio_interaction.train import ctc_head

QUICK_LINES = (("turn the kitchen light on please", "slt"),
               ("what time does the shop close", "kal"),
               ("tell me a story about the sea", "slt"), ("how warm is it outside today", "kal"),
               ("the train leaves at nine", "awb"), ("please close the door", "awb"))
# Whisper's window, in milliseconds: the longest clip its positions cover.
WHISPER_WINDOW_MS = 30000


@dataclasses.dataclass(frozen=True)
class FliteLine:
  """A line spoken by flite (`--quick`), shaped like `real_speech.RecordedLine`."""

  wav: pathlib.Path
  text: str
  voice: str

  def audio(self) -> np.ndarray:
    return audio_io.load_audio(self.wav)


def quick_lines(directory: pathlib.Path) -> list[FliteLine]:
  lines = []
  for i, (text, voice) in enumerate(QUICK_LINES * 2):
    wav = directory / f"line_{i}.wav"
    subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(wav)], check=True)
    lines.append(FliteLine(wav, text, f"{voice}{i % 3}"))
  return lines


def whole_window_config(config):
  """The bundle's config with one chunk as long as Whisper's window (a whole number of
  the decoder's slots), read with full attention: the clip and the silence after it."""
  config = config_lib.from_dict(config.to_dict())
  model = AudioInteractionModel(config).config
  frames_per_slot = model.encoder_frames_per_chunk // model.slots_per_chunk
  ms_per_frame = model.chunk_seconds * 1000 / model.encoder_frames_per_chunk
  window = min(model.encoder.max_positions, int(WHISPER_WINDOW_MS / ms_per_frame))
  frames = window // frames_per_slot * frames_per_slot
  config.audio.chunk_ms = int(round(frames * ms_per_frame))
  config.model.slots_per_chunk = frames // frames_per_slot
  config.model.encoder.left_chunks = 1
  return config


class BlockFrames:
  """audio [n] -> float32 [frames, D * blocks]: every encoder block's output frames
  side by side (the last block's after the final norm), chunk-causal as the model
  streams, or over one whole window."""

  def __init__(self, config, encoder_params, seed: int):
    config = config_lib.from_dict(config.to_dict())
    config.model.sound_event_blocks = tuple(range(config.model.encoder.num_layers - 1))
    # The taps need a sound-event head's shape; its weights are never read here.
    config.model.sound_event_classes = max(config.model.sound_event_classes, 1)
    self.model = AudioInteractionModel(config)
    self.config = self.model.config
    self.blocks = config.model.encoder.num_layers
    period = self.config.encoder.positions_restart_every
    self.position_period = None if self.config.encoder.positions == "rope" else period
    self._rng = np.random.default_rng(seed)
    variables = {"params": {"encoder": encoder_params}}

    def encode(net, mel, first):
      _, encoded, _, taps = net.encoder(mel, None, first_position=first)
      return jnp.concatenate([*taps, encoded], axis=-1)

    self._encode = jax.jit(lambda audio, first: self.model.network.apply(
        variables, self.model.features(audio), first, method=encode))

  def __call__(self, audio: np.ndarray, first_position: int | None = None) -> np.ndarray:
    """`first_position` None: a random chunk boundary of the position window, as
    `fit-ctc-head` places its lines (a whole chunk must fit: not the same draws as
    `ClipEncoder.next_first_position`, which may also start a clip in the last,
    partial chunk)."""
    per_chunk = self.config.encoder_frames_per_chunk
    if first_position is None:
      first_position = 0 if self.position_period is None else int(self._rng.integers(
          0, max(1, self.position_period // per_chunk))) * per_chunk
    chunks = max(1, -(-audio.size // self.config.chunk_samples))
    padded = padded_to_power_of_two(audio, self.config.chunk_samples)
    out = self._encode(jnp.asarray(padded), jnp.full((1,), first_position, jnp.int32))
    return np.asarray(out)[0, :chunks * per_chunk]


class FromStart:
  """A `BlockFrames` that encodes every clip from position 0 (as `eval` encodes a file)."""

  def __init__(self, encoder: BlockFrames):
    self.encoder = encoder

  def __call__(self, audio: np.ndarray) -> np.ndarray:
    return self.encoder(audio, first_position=0)


def columns(clips: ctc_head.TranscribedFrames, read: slice) -> ctc_head.TranscribedFrames:
  return ctc_head.TranscribedFrames([f[:, read] for f in clips.features], clips.texts,
                                    clips.voices)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--bundle", default="real-audio")
  parser.add_argument("--train-audio", default=os.path.expanduser(
      "~/.cache/audio_interaction/debs/extracted"), help="fetch-train-audio's folder")
  parser.add_argument("--sources", default="amazon-queen-en")
  parser.add_argument("--max-lines", type=int, default=2000)
  parser.add_argument("--steps", type=int, default=1000)
  parser.add_argument("--eval-every", type=int, default=250)
  parser.add_argument("--reads", default=None,
                      help="comma-separated: block0..blockN, final (the last block), all "
                           "(default: every block and all)")
  parser.add_argument("--whole-window", action="store_true",
                      help="each clip in one window with full attention, as Whisper reads it")
  parser.add_argument("--imported", action="store_true",
                      help="Whisper tiny.en's own weights in the encoder")
  parser.add_argument("--monitor", default=None, help="a manifest of transcribed clips")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--quick", action="store_true",
                      help="twelve flite lines, 40 steps (smoke test)")
  args = parser.parse_args()
  print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"jax {jax.__version__} on {jax.default_backend()}")
  config, params, tokenizer = portable.load_bundle(args.bundle)
  encoder_params = params["params"]["encoder"]
  if args.imported:
    shaped = AudioInteractionModel(config)
    encoder_params = pretrained.import_encoder(
        jax.tree_util.tree_map(np.asarray, params),
        pretrained.checkpoint_tensors("installed:whisper-tiny.en"), shaped.config
    )["params"]["encoder"]
  if args.whole_window:
    config = whole_window_config(config)
  encoder = BlockFrames(config, encoder_params, args.seed)
  width = encoder.config.encoder.d_model
  names = [f"block{b}" for b in range(encoder.blocks)] + ["all"]
  wanted = args.reads.split(",") if args.reads else names
  reads = {}
  for name in wanted:
    if name == "final":
      name = f"block{encoder.blocks - 1}"
    if name not in names:
      parser.error(f"--reads {name!r}: choose from {names} or final")
    b = int(name[5:]) if name != "all" else None
    reads[name] = slice(None) if b is None else slice(b * width, (b + 1) * width)
  print(f"bundle {pathlib.Path(args.bundle).name}: encoder "
        f"{'imported (Whisper tiny.en)' if args.imported else 'as in the bundle'}, "
        f"{'one whole window' if args.whole_window else 'chunk-causal'} "
        f"({encoder.config.chunk_seconds * 1000:.0f} ms chunks)")
  began = time.perf_counter()
  with tempfile.TemporaryDirectory() as directory:
    if args.quick:
      lines, held_share, args.steps, args.eval_every = (
          quick_lines(pathlib.Path(directory)), 0.34, 40, 20)
    else:
      lines = list(real_speech.recorded_lines(args.train_audio, tuple(args.sources.split(","))))
      held_share = 0.05
    lines = ctc_head.seeded_subset(lines, args.max_lines, args.seed)
    train_lines, held_lines = ctc_head.split_voices(lines, held_share, args.seed)
    train = ctc_head.encode_lines(encoder, train_lines, seed=args.seed,
                                  description="encoding training lines")
    held = ctc_head.encode_lines(encoder, held_lines, seed=args.seed + 1,
                                 description="encoding held-out lines")
    monitor = (ctc_head.manifest_frames(FromStart(encoder), args.monitor)
               if args.monitor else None)
  encoded = time.perf_counter() - began
  print(f"{len(train)} training lines ({train.frames} frames), {len(held)} held out "
        f"({len(set(held.voices))} voices); encoded in {encoded:.0f} s")
  print(f"\n| read | held-out voices WER | best step | training lines WER (first 200) "
        f"| {'monitor WER' if monitor else '-'} | fit time |")
  print("|---|---|---|---|---|---|")
  first = ctc_head.TranscribedFrames(train.features[:200], train.texts[:200],
                                     train.voices[:200])
  for name, read in reads.items():
    start = time.perf_counter()
    fit = ctc_head.fit_head(
        ctc_head.labelled(columns(train, read), tokenizer),
        ctc_head.labelled(columns(held, read), tokenizer), tokenizer,
        encoder.config.decoder.vocab_size, steps=args.steps, eval_every=args.eval_every,
        seed=args.seed, progress=False,
        monitor=ctc_head.labelled(columns(monitor, read), tokenizer) if monitor else None)
    best = next(r for r in fit.history if r["step"] == fit.best_step) if fit.history else {}
    fitted = ctc_head.held_out_wer(fit.kernel, fit.bias, columns(first, read), tokenizer)
    shown = f"{100 * best['monitor_wer']:.1f} %" if "monitor_wer" in best else "-"
    print(f"| {name} | {100 * best.get('held_out_wer', float('nan')):.1f} % | "
          f"{fit.best_step} | {100 * fitted:.1f} % | {shown} | "
          f"{time.perf_counter() - start:.0f} s |", flush=True)


if __name__ == "__main__":
  main()
