r"""What CTC beam search with an English word LM does to a CTC head's transcripts.

Every transcribed clip of a manifest is encoded by the bundle's encoder (with 1 s of
silence after it, `ctc_head.manifest_frames`) and read by its CTC head; the clip is then
written twice: greedily, as the streaming transcript writes it, and by the beam search
of `infer/ctc_lm.py` (lexicon words only, PocketSphinx's US English 3-gram model) at
each point of a grid of (LM weight, word score). The grid point is picked on half A of
the clips (a seeded shuffle) and reported on half B and on all, with a 95 % bootstrap
interval over clips; decoding time per second of audio, greedy against beam, is
measured side by side in the same run.

Run::

  python benchmarks/ctc_lm_decoding.py --bundle runs/ctcfit_c1 --manifest data/real_dev/speech_en.jsonl
  python benchmarks/ctc_lm_decoding.py --quick   # smoke test: the embedded model, flite clips
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import subprocess
import tempfile
import time

import numpy as np
import scipy.special

from audio_interaction.eval import bootstrap, metrics
from audio_interaction.export import portable
from audio_interaction.infer import ctc_lm, transcript
from audio_interaction.model.model import AudioInteractionModel
from audio_interaction.train import ctc_head
from audio_interaction.model.clip_encoder import FrameEncoder

QUICK_SENTENCES = ("turn the kitchen light on please", "what time does the shop close",
                   "tell me a story about the sea", "how warm is it outside today")


def quick_manifest(directory: pathlib.Path) -> str:
  """Four flite clips with their text (`--quick`)."""
  rows = []
  for i, text in enumerate(QUICK_SENTENCES):
    wav = directory / f"clip_{i}.wav"
    subprocess.run(["flite", "-voice", ("slt", "kal")[i % 2], "-t", text, "-o", str(wav)],
                   check=True)
    rows.append(json.dumps({"audio": wav.name, "transcript": text}))
  path = directory / "speech.jsonl"
  path.write_text("\n".join(rows) + "\n")
  return str(path)


def head_log_probs(bundle: str, manifest: str, cache: str | None, spelling: str | None
                   ) -> tuple[list[np.ndarray], list[str], object, int, float, str]:
  """(log-probs [T_i, V] per clip, texts, tokenizer, V, seconds per frame, how the head
  spells: `data.ctc_targets`) of the bundle's CTC head."""
  config, params, tokenizer = portable.load_bundle(bundle)
  model = AudioInteractionModel(config)
  key = json.dumps({"params": ctc_head.bundle_weights_id(bundle), "manifest": manifest})
  clips = ctc_head.TranscribedFrames.load(cache, key) if cache else None
  if clips is None:
    clips = ctc_head.manifest_frames(FrameEncoder(model, params),
                                     manifest)
    if cache:
      clips.save(cache, key)
  head = params["params"]["ctc_head"]
  kernel = np.asarray(head["kernel"], np.float32)
  bias = np.asarray(head["bias"], np.float32)
  log_probs = [scipy.special.log_softmax(f.astype(np.float32) @ kernel + bias, axis=-1)
               for f in clips.features]
  frame_seconds = model.config.chunk_seconds / model.config.encoder_frames_per_chunk
  return (log_probs, clips.texts, tokenizer, kernel.shape[1], frame_seconds,
          spelling or config.data.get("ctc_targets", "tokens"))


def greedy_text(log_probs: np.ndarray, tokenizer) -> str:
  labels = np.argmax(log_probs, axis=-1)[None]
  tokens, _ = transcript.collapse_ctc(labels, np.array([transcript.BLANK_ID]))
  return tokenizer.decode(tokens[0])


def per_clip_errors(texts, hypotheses) -> np.ndarray:
  """[N, 2]: (word errors, reference words) per clip."""
  out = []
  for text, hypothesis in zip(texts, hypotheses):
    result = metrics.word_error_rate([text], [hypothesis])
    out.append((result.substitutions + result.deletions + result.insertions,
                result.reference_words))
  return np.asarray(out, np.float64)


def corpus_wer(errors: np.ndarray, idx) -> float:
  return float(errors[idx, 0].sum() / max(errors[idx, 1].sum(), 1))


def report(name: str, errors: np.ndarray, idx: np.ndarray) -> str:
  ci = bootstrap.bootstrap_intervals(len(idx), lambda r: {"wer": corpus_wer(errors, idx[r])})
  low, high = ci["wer"]["low"], ci["wer"]["high"]
  return (f"{name}: WER {100 * corpus_wer(errors, idx):.1f} % "
          f"[{100 * low:.1f} %, {100 * high:.1f} %] over {len(idx)} clips")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--bundle", default=str(portable.EMBEDDED_BUNDLE),
                      help="a model bundle (default: the embedded model)")
  parser.add_argument("--manifest", help="a manifest of transcribed clips")
  parser.add_argument("--features-cache", help="an .npz keeping the encoded clips")
  parser.add_argument("--lm-weights", default="0.3,0.5,0.8")
  parser.add_argument("--word-scores", default="0,1,2")
  parser.add_argument("--beam", type=int, default=32)
  parser.add_argument("--spelling", choices=ctc_lm.SPELLINGS, default=None,
                      help="how the head writes a word (default: the bundle's data.ctc_targets)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--quick", action="store_true",
                      help="the embedded model on four flite clips, a 2-point grid")
  args = parser.parse_args()
  if not args.quick and not args.manifest:
    parser.error("--manifest is required (or --quick)")
  print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
  with tempfile.TemporaryDirectory() as directory:
    manifest = quick_manifest(pathlib.Path(directory)) if args.quick else args.manifest
    if args.quick:
      args.lm_weights, args.word_scores = "0.5", "0,1"
    log_probs, texts, tokenizer, vocab, frame_seconds, spelling = head_log_probs(
        args.bundle, manifest, args.features_cache, args.spelling)
  audio_seconds = sum(len(lp) for lp in log_probs) * frame_seconds
  began = time.perf_counter()
  greedy = [greedy_text(lp, tokenizer) for lp in log_probs]
  greedy_seconds = time.perf_counter() - began
  halves = np.random.default_rng(args.seed).permutation(len(texts))
  half_a, half_b = np.sort(halves[0::2]), np.sort(halves[1::2])
  every = np.arange(len(texts))
  greedy_errors = per_clip_errors(texts, greedy)
  grid = []
  for lm_weight in map(float, args.lm_weights.split(",")):
    for word_score in map(float, args.word_scores.split(",")):
      settings = ctc_lm.BeamSettings(lm_weight=lm_weight, word_score=word_score,
                                     beam_size=args.beam)
      decoder = ctc_lm.CtcLmDecoder(tokenizer, vocab, settings, spelling=spelling)
      began = time.perf_counter()
      hypotheses = [decoder.decode(lp) for lp in log_probs]
      seconds = time.perf_counter() - began
      errors = per_clip_errors(texts, hypotheses)
      grid.append((corpus_wer(errors, half_a), settings, errors, seconds, hypotheses))
      print(f"  LM weight {lm_weight:g}, word score {word_score:g}: half A WER "
            f"{100 * corpus_wer(errors, half_a):.1f} %, all {100 * corpus_wer(errors, every):.1f} %"
            f" ({seconds:.1f} s)")
  _, chosen, errors, beam_seconds, hypotheses = min(grid, key=lambda g: g[0])
  print(f"head spelling: {spelling}")
  print(f"picked on half A: LM weight {chosen.lm_weight:g}, word score {chosen.word_score:g}, "
        f"beam {chosen.beam_size}")
  for name, idx in (("half B", half_b), ("all", every)):
    print(report(f"greedy, {name}", greedy_errors, idx))
    print(report(f"LM beam search, {name}", errors, idx))
  print(f"CER all: greedy {100 * metrics.character_error_rate(texts, greedy):.1f} %, "
        f"LM beam search {100 * metrics.character_error_rate(texts, hypotheses):.1f} %")
  print(f"decoding {audio_seconds:.0f} s of audio: greedy {greedy_seconds:.2f} s, beam search "
        f"{beam_seconds:.1f} s ({beam_seconds / max(greedy_seconds, 1e-9):.0f}x; "
        f"{1000 * beam_seconds / max(audio_seconds, 1e-9):.1f} ms per audio second)")
  for text, before, after in list(zip(texts, greedy, hypotheses))[:6]:
    print(f"  {text!r}: greedy {before!r} -> {after!r}")


if __name__ == "__main__":
  main()
