r"""Can a frozen encoder hear that a turn has ended? A linear probe, TRAIN lines -> DEV turns.

The decision head, trained on TTS turns, cuts into 82-92 % of the real DEV turns, and
trained on ~1,000 real paused turns of one game's cast it learned those voices only
(docs/real_audio_log.md, "Four hours of real English voices"). Before a turn-end head is fitted over
a frozen encoder (as `fit-sound-head` fits the sound head), this measures whether the
encoder's chunk features carry the difference at all, on voices the probe never heard:

* TRAIN (recorded lines of `--sources` that are single sentences with an inner quiet
  dip, `RecordedLine.pause_cut`): the line's first part then silence is "unfinished",
  the whole line then silence "finished"; the examples are the mean encoder frames of
  the first `--chunks` chunks wholly after the speech (a random lead-in moves the chunk
  grid), half of the streams through the corpus's effects (rooms, telephone, noise).
  A fifth of the voices is held out: their AUC says whether the probe learned voices
  or turn ends.
* DEV (`--dev`, e.g. the turn manifests of `build-real-dev`): in each turn, the chunks
  wholly inside a stretch the VAD hears no voice in (>= `--min-pause` s; first
  `--chunks` of each) are "unfinished"; the first `--chunks` chunks wholly after the
  turn's end are "finished". A turn whose words before its pause are a finished
  sentence (`streams.jsonl`) cannot be told by anyone; `streams_split.jsonl`'s can.

Then (`--thresholds`, `--min-silences`) it runs the probe as the model of the hybrid
policy (`infer.policies.HybridPolicy`: speak when P(finished) >= θ after a short
silence, the 700 ms timer as backstop) over every DEV turn, beside the timer alone, and
prints B5's false cut-in, miss and median latency (the suites' definitions): what a
fitted turn-end head would give, before one is built into the model.

Prints, per DEV manifest: the probe's ROC AUC over chunks with a 95 % bootstrap
interval over turns (0.5: it hears nothing), and at P(finished) >= 0.5 the share of
pause chunks called finished (a cut-in's raw material) and of end chunks called
unfinished (a late reply's). Then the point half A of the streams picks by the goal's
rule (cut-in at most the 700 ms timer's, miss at most 10 %, then the fastest), with its
figures on half B, which chose nothing.

`--features prosody` fits the probe on the pitch and level of the speech before each
chunk (`audio/prosody.py`) instead of the encoder's chunk features; `both` on the two
side by side.

Run::

  audio-interaction fetch-train-audio && audio-interaction build-real-dev --out data/real_dev
  python benchmarks/turn_end_probe.py --bundle audio_interaction/assets/tiny \
      --dev data/real_dev/streams_split.jsonl --dev data/real_dev/streams.jsonl   # ~5 min, 2 cores
  python benchmarks/turn_end_probe.py --bundle real-audio --features prosody \
      --dev data/real_dev/streams_split.jsonl --dev data/real_dev/streams.jsonl   # ~3 min
  python benchmarks/turn_end_probe.py --quick   # smoke test: flite sentences, no data needed
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import platform
import subprocess
import tempfile
import time

import numpy as np
import soundfile
import tqdm

from audio_interaction import stream_format as sf
from audio_interaction.audio import io as audio_io
from audio_interaction.audio.prosody import FEATURE_NAMES, ProsodyEncoder
from audio_interaction.corpus import manifest, real_speech
from audio_interaction.eval import bootstrap
from audio_interaction.eval import metrics as eval_metrics
from audio_interaction.infer import policies
from audio_interaction.export import portable
from audio_interaction.infer.endpointing import SilenceTimer
from audio_interaction.model.model import AudioInteractionModel
from audio_interaction.train import sound_head, turn_head
from audio_interaction.model.clip_encoder import ChunkEncoder, ClipEncoder, SoundEventEncoder

UNFINISHED, FINISHED = turn_head.TURN_GOES_ON, turn_head.TURN_ENDED
roc_auc = turn_head.roc_auc


QUICK_SENTENCES = ("turn the kitchen light on please", "what time does the shop close",
                   "tell me a story about the sea", "how warm is it outside today")


@dataclasses.dataclass(frozen=True)
class QuickLine:
  """A flite sentence standing in for a recorded line (`--quick`): cut at its middle."""

  samples: np.ndarray
  voice: str
  pause_cut: int

  def audio(self) -> np.ndarray:
    return self.samples


def flite(text: str, voice: str, directory: pathlib.Path) -> np.ndarray:
  wav = directory / f"{voice}_{abs(hash(text))}.wav"
  subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(wav)], check=True)
  return audio_io.load_audio(wav)


def quick_data(directory: pathlib.Path) -> tuple[list[QuickLine], str]:
  """Flite lines for TRAIN and a manifest of two paused turns for DEV (`--quick`)."""
  lines = [QuickLine(a, voice, len(a) // 2) for voice in ("slt", "kal")
           for a in (flite(t, voice, directory) for t in QUICK_SENTENCES)]
  rows = []
  for i, voice in enumerate(("awb", "rms")):
    first, second = (flite(t, voice, directory) for t in QUICK_SENTENCES[i:i + 2])
    gap, tail = np.zeros(int(0.8 * sf.SAMPLE_RATE), np.float32), np.zeros(sf.SAMPLE_RATE,
                                                                           np.float32)
    stream = np.concatenate([gap, first, gap, second, tail])
    path = directory / f"stream_{i}.wav"
    soundfile.write(path, stream, sf.SAMPLE_RATE)
    end = (len(stream) - len(tail)) / sf.SAMPLE_RATE
    rows.append(json.dumps({"audio": path.name, "turns": [
        {"start": len(gap) / sf.SAMPLE_RATE, "end": end, "reply_expected": True}]}))
  dev = directory / "streams.jsonl"
  dev.write_text("\n".join(rows) + "\n")
  return lines, str(dev)


class WithoutFeatures:
  """A chunk encoder with some of its feature columns zeroed (what the fit cannot read)."""

  def __init__(self, encode, columns: list[int]):
    self.encode, self.columns, self.chunk_samples = encode, columns, encode.chunk_samples

  def __call__(self, audio: np.ndarray) -> np.ndarray:
    out = np.array(self.encode(audio), np.float32)
    out[:, self.columns] = 0.0
    return out


class JoinedEncoder:
  """Two chunk encoders' features side by side ([chunks, D1 + D2])."""

  def __init__(self, first, second):
    self.first, self.second, self.chunk_samples = first, second, first.chunk_samples

  def __call__(self, audio: np.ndarray) -> np.ndarray:
    a, b = self.first(audio), self.second(audio)
    rows = min(len(a), len(b))
    return np.concatenate([a[:rows], b[:rows]], axis=1).astype(np.float32)


def encoded_row(encode: ClipEncoder, row, cache: dict) -> tuple[np.ndarray, np.ndarray]:
  """(audio float32[S], encoder chunk features [C, D]) of a manifest row, each row encoded
  once: the probe's examples and the policy sweep read the same DEV streams."""
  key = (row.source, row.offset)
  if key not in cache:
    audio = np.asarray(row.load(), np.float32)
    cache[key] = (audio, encode(audio))
  return cache[key]


def dev_examples(encode: ClipEncoder, path: str, chunks: int, min_pause: float,
                 cache: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Chunk features [N, D], labels [N] and the turn each belongs to [N] of a manifest
  (`cache`: `encoded_row`'s)."""
  timer = SilenceTimer(vad="silero")
  size = encode.chunk_samples
  chunk_s = size / sf.SAMPLE_RATE
  features, labels, turns = [], [], []
  turn_id = -1
  rows = [r for r in manifest.read_manifest(path).rows if r.turns]
  for row in tqdm.tqdm(rows, desc=pathlib.Path(path).name, leave=False):
    audio, encoded = encoded_row(encode, row, cache)
    voice = timer.speech_probabilities(audio) >= 0.5
    frame_s = timer.frame_seconds
    for turn in row.turns:
      if not turn.reply_expected:
        continue
      turn_id += 1
      # Quiet stretches inside the turn, in VAD frames.
      lo, hi = int(turn.start / frame_s), int(turn.end / frame_s)
      quiet = ~voice[lo:hi]
      edges = np.flatnonzero(np.diff(np.concatenate([[0], quiet.astype(int), [0]])))
      for start, stop in zip(edges[::2], edges[1::2]):
        begin_s, end_s = (lo + start) * frame_s, (lo + stop) * frame_s
        if end_s - begin_s < min_pause or begin_s <= turn.start + 0.05:
          continue
        first = int(np.ceil(begin_s / chunk_s))
        for c in range(first, min(first + chunks, int(end_s / chunk_s))):
          features.append(encoded[c])
          labels.append(UNFINISHED)
          turns.append(turn_id)
      first = int(np.ceil(turn.end / chunk_s))
      for c in range(first, min(first + chunks, len(encoded))):
        features.append(encoded[c])
        labels.append(FINISHED)
        turns.append(turn_id)
  return (np.asarray(features, np.float32), np.asarray(labels, np.int32),
          np.asarray(turns, np.int32))


def reply_starts(policy, audio: np.ndarray, finished: np.ndarray, chunk_samples: int,
                 reply_chunks: int) -> list[float]:
  """When `policy` starts replies over `audio`, chunk by chunk, with the probe's
  P(finished) of each chunk as its P(SPEAK); a reply runs until the policy stops it or
  `reply_chunks` chunks have passed (as a model's reply ends at its `<eor>`)."""
  policy.start()
  replying, starts, length = False, [], 0
  padded = np.pad(audio, (0, -len(audio) % chunk_samples))
  for c in range(len(padded) // chunk_samples):
    speak = policy.decide(c, padded[c * chunk_samples:(c + 1) * chunk_samples],
                          float(finished[c]) if c < len(finished) else 0.0, replying)
    if speak and not replying:
      starts.append((c + 1) * chunk_samples / sf.SAMPLE_RATE)
      length = 0
    length += 1
    replying = speak and length < reply_chunks
  return starts


GOAL_TIMER_S = 0.7  # the goal's reference: cut in no more than a 700 ms silence timer
GOAL_MAX_MISS = 0.10


def pick_on_half_a(rows: list[dict]) -> dict | None:
  """The hybrid row of `policy_sweep` that half A's turns pick by the goal's rule: cut-in
  at most the 700 ms timer's (on half A) and miss at most 10 %, then the lowest median
  latency (then the fewest cut-ins); None when no row qualifies. Its half B figures are
  a held-out estimate: half B chose nothing."""
  timer = next(r for r in rows if r["policy"] == f"silence timer {GOAL_TIMER_S:g} s")
  allowed = [r for r in rows if r["policy"].startswith("hybrid")
             and r["half_A"]["false_cut_in"] <= timer["half_A"]["false_cut_in"]
             and r["half_A"]["miss"] <= GOAL_MAX_MISS]
  if not allowed:
    return None
  return min(allowed, key=lambda r: (r["half_A"]["median_latency_s"],
                                     r["half_A"]["false_cut_in"]))


def policy_sweep(fit, encode: ClipEncoder, paths: list[str], thresholds, min_silences,
                 backstops, reply_seconds: float, cache: dict) -> list[dict]:
  """B5 (false cut-in, miss, median latency; the suites' definitions, 2 s answer window)
  over the turns of `paths` of the silence timer at each of `backstops` (s) and of the
  hybrid policy with the probe as its model, for each (threshold, min_silence, backstop
  timer); `cache`: `encoded_row`'s."""
  chunk_s = encode.chunk_samples / sf.SAMPLE_RATE
  streams = []
  for path in paths:
    for row in manifest.read_manifest(path).rows:
      turns = [(t.start, t.end) for t in row.turns if t.reply_expected]
      if turns:
        audio, encoded = encoded_row(encode, row, cache)
        streams.append((audio, fit.probabilities(encoded)[:, FINISHED], turns))

  def figures(latencies: list, cut_ins: list) -> dict:
    answered = [v for v in latencies if v is not None]
    return {"turns": len(latencies),
            "false_cut_in": eval_metrics.rate(sum(cut_ins), len(cut_ins)),
            "miss": eval_metrics.miss_rate(latencies),
            "median_latency_s": float(np.median(answered)) if answered else float("nan")}

  # Halves by a seeded shuffle: the manifests' rows come in patterns (a source's turns
  # together, pause lengths in turn), which every other row would split unevenly.
  in_half_b = np.random.default_rng(0).permutation(len(streams)) % 2 == 1

  def score(name: str, make_policy) -> dict:
    """The policy over every stream, and over each half (A, B)."""
    per_half = {"A": ([], []), "B": ([], [])}
    for index, (audio, finished, turns) in enumerate(streams):
      starts = reply_starts(make_policy(), audio, finished, encode.chunk_samples,
                            max(1, round(reply_seconds / chunk_s)))
      latencies, cut_ins = per_half["AB"[int(in_half_b[index])]]
      latencies += eval_metrics.response_latencies([e for _, e in turns], starts, 2.0)
      cut_ins += eval_metrics.spans_with_reply(turns, starts)
    both = [a + b for a, b in zip(*per_half.values())]
    return {"policy": name, **figures(*both),
            **{f"half_{half}": figures(*lists) for half, lists in per_half.items()}}

  rows = [score(f"silence timer {timer:g} s",
                lambda: policies.SilenceTimerPolicy(SilenceTimer(timer, chunk_seconds=chunk_s)))
          for timer in sorted(set(backstops) | {GOAL_TIMER_S})]
  for backstop in backstops:
    for threshold in thresholds:
      for min_silence in (m for m in min_silences if m <= backstop):
        rows.append(score(
            f"hybrid: probe >= {threshold}, silence >= {min_silence} s, timer {backstop:g} s",
            lambda: policies.HybridPolicy(SilenceTimer(backstop, chunk_seconds=chunk_s),
                                          threshold=threshold, min_silence_seconds=min_silence)))
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--bundle", default=str(portable.EMBEDDED_BUNDLE))
  parser.add_argument("--train-audio", default="~/.cache/audio_interaction/debs/extracted")
  parser.add_argument("--sources", default="amazon-queen-en,fillets-cs")
  parser.add_argument("--dev", action="append", default=[])
  parser.add_argument("--quick", action="store_true",
                      help="smoke test: flite sentences and two flite streams, no data needed")
  parser.add_argument("--chunks", type=int, default=2)
  parser.add_argument("--min-pause", type=float, default=0.3)
  parser.add_argument("--max-lines", type=int, default=1500)
  parser.add_argument("--l2", type=float, default=1e-2)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.7, 0.8, 0.9, 0.95])
  parser.add_argument("--min-silences", type=float, nargs="+", default=[0.2, 0.4])
  parser.add_argument("--backstops", type=float, nargs="+", default=[0.7],
                      help="the hybrid's backstop silence timers (s); each also runs alone")
  parser.add_argument("--reply-seconds", type=float, default=1.5,
                      help="a reply nobody stops ends after this long")
  parser.add_argument("--read-blocks", default="", metavar="I,J,...",
                      help="lower encoder blocks whose chunk means the probe reads beside the "
                           "final frames' (as `model.sound_event_blocks` gives the sound head)")
  parser.add_argument("--features", choices=("encoder", "prosody", "both"), default="encoder",
                      help="what the probe reads per chunk: the bundle's encoder, the pitch and "
                           "level of the speech before the chunk (audio/prosody.py), or both")
  parser.add_argument("--prosody-without", default="", metavar="NAME,...",
                      help="with --features prosody: features the probe may not read "
                           "(audio.prosody.FEATURE_NAMES), e.g. to see what carries it")
  parser.add_argument("--json", default=None)
  args = parser.parse_args()
  if not args.quick and not args.dev:
    parser.error("--dev is required (or --quick)")
  if args.quick:
    with tempfile.TemporaryDirectory(prefix="turn_end_probe-") as directory:
      lines, dev = quick_data(pathlib.Path(directory))
      args.dev = [dev]
      run(args, lines)
  else:
    lines = [l for l in real_speech.recorded_lines(args.train_audio,
                                                   tuple(args.sources.split(",")))
             if l.pause_cut is not None]
    run(args, lines)


def run(args: argparse.Namespace, lines) -> None:
  """Fits the probe on `lines` (`turn_head.fit_turn_head`: at most `--max-lines`, a fifth
  of their voices held out) and scores args.dev."""
  began = time.perf_counter()
  config, params, _ = portable.load_bundle(args.bundle)
  blocks = tuple(int(b) for b in args.read_blocks.split(",") if b.strip())
  if blocks:  # the sound head's wider read (the head itself is not used here)
    config, params = sound_head.added_head(config, params, read_blocks=blocks)
    encode = SoundEventEncoder(AudioInteractionModel(config), params)
  else:
    encode = ChunkEncoder(AudioInteractionModel(config), params)
  if args.features == "prosody":
    encode = ProsodyEncoder(encode.chunk_samples)
    if args.prosody_without:
      dropped = [name.strip() for name in args.prosody_without.split(",") if name.strip()]
      unknown = [name for name in dropped if name not in FEATURE_NAMES]
      if unknown:
        raise SystemExit(f"--prosody-without: unknown features {unknown}; choose from "
                         f"{FEATURE_NAMES}")
      encode = WithoutFeatures(encode, [FEATURE_NAMES.index(name) for name in dropped])
  elif args.features == "both":
    encode = JoinedEncoder(encode, ProsodyEncoder(encode.chunk_samples))
  fit, summary = turn_head.fit_turn_head(encode, lines, max_lines=args.max_lines,
                                         chunks=args.chunks, l2=args.l2, seed=args.seed)
  print(f"{pathlib.Path(args.bundle).name} ({args.features}): {summary['lines']} TRAIN lines, "
        f"{summary['examples']} chunks; AUC on them {summary['train_auc']:.3f}, on "
        f"{summary['held_out_lines']} lines of held-out TRAIN voices "
        f"{summary['held_out_auc']:.3f}")
  report = {"bundle": args.bundle, "features": args.features,
            "prosody_without": args.prosody_without, "read_blocks": list(blocks),
            "train_lines": summary["lines"],
            "train_auc": summary["train_auc"], "held_out_lines": summary["held_out_lines"],
            "held_out_auc": summary["held_out_auc"]}
  encoded_rows: dict = {}
  for path in args.dev:
    dx, dy, turns = dev_examples(encode, path, args.chunks, args.min_pause, encoded_rows)
    if not len(dy):
      print(f"{pathlib.Path(path).name}: no turns to score")
      continue
    scores = fit.probabilities(dx)[:, FINISHED]
    auc = roc_auc(scores, dy)
    ids = np.unique(turns)

    def statistic(sample):
      keep = np.concatenate([np.flatnonzero(turns == ids[i]) for i in sample])
      return {"auc": roc_auc(scores[keep], dy[keep])}
    interval = bootstrap.bootstrap_intervals(len(ids), statistic, resamples=500)["auc"]
    said = scores >= 0.5
    report[path] = {"auc": auc, "low": interval["low"], "high": interval["high"],
                    "pause_chunks": int((dy == UNFINISHED).sum()),
                    "end_chunks": int((dy == FINISHED).sum()),
                    "pause_called_finished": float(said[dy == UNFINISHED].mean()),
                    "end_called_unfinished": float((~said)[dy == FINISHED].mean())}
    r = report[path]
    print(f"{pathlib.Path(path).name}: AUC {auc:.3f} [{interval['low']:.3f}, "
          f"{interval['high']:.3f}] over {len(ids)} turns; pause chunks called finished "
          f"{100 * r['pause_called_finished']:.0f} % of {r['pause_chunks']}, end chunks "
          f"called unfinished {100 * r['end_called_unfinished']:.0f} % of {r['end_chunks']}")
  if args.dev:
    report["policies"] = policy_sweep(fit, encode, args.dev, args.thresholds, args.min_silences,
                                      args.backstops, args.reply_seconds, encoded_rows)
    print(f"B5 over the turns of {', '.join(pathlib.Path(p).name for p in args.dev)}:")
    for r in report["policies"]:
      print(f"  {r['policy']:<58} false cut-in {100 * r['false_cut_in']:3.0f} %, miss "
            f"{100 * r['miss']:3.0f} %, median latency {r['median_latency_s']:.2f} s "
            f"({r['turns']} turns)")
    timer = next(r for r in report["policies"]
                 if r["policy"] == f"silence timer {GOAL_TIMER_S:g} s")
    picked = pick_on_half_a(report["policies"])
    report["picked_on_half_a"] = picked and picked["policy"]

    def halves(r):
      return "; ".join(f"half {h}: false cut-in {100 * r[f'half_{h}']['false_cut_in']:.0f} %, "
                       f"miss {100 * r[f'half_{h}']['miss']:.0f} %, median latency "
                       f"{r[f'half_{h}']['median_latency_s']:.2f} s" for h in "AB")
    print(f"  the {GOAL_TIMER_S:g} s timer: {halves(timer)}")
    print("  picked on half A (cut-in <= the timer's, miss <= 10 %, then fastest): "
          + ("none qualifies" if picked is None else f"{picked['policy']}: {halves(picked)}"))
  print(f"{time.perf_counter() - began:.0f} s on {platform.machine()} ({platform.processor() or 'cpu'})")
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
  main()
