r"""Does a model know what to say late in a stream? Teacher-forced, before and after a cut.

Training rows of `data.max_chunks` chunks (64: 10.2 s for the tiny config) cut every
longer stream, so nothing after the cut is trained (`dataset-card --rows`); the live loop
and the eval's streams run on. This lays each stream of a held-out split out whole (one
row of its own length, as the corpus stored it), runs one forward pass of each bundle
over it -- its decoder attending as it does live (its own window, pinned prefix) -- and
scores, separately for the positions before chunk `--cut-chunks` and after it:

* reply tokens: the share the model's argmax gets right and their mean NLL (nats), and
  the share right of those found in the current instruction (what a copy head,
  `decoder.copy_instruction`, can copy: the keyword, the sound class, the count's noun);
* the share right of the reply tokens that name a sound the stream holds (tokens of
  the name of a class its chunks are labelled with, `worlds.sound_name_words`):
  what the decoder must take from what it heard, not from the instruction;
* decisions: SPEAK recall (P(SPEAK) >= 0.5 at the chunks that warrant speaking) and the
  share of SILENT chunks it would speak at;

per ability and in all, each with a 95 % bootstrap interval over streams. The words
alone, without the noise of greedy decoding or of decisions that came a chunk early.

Run::

  python benchmarks/late_replies.py --bundle embedded --bundle runs/X_bundle \
      --data data/tiny --split eval                       # ~1 min per bundle
  python benchmarks/late_replies.py --bundle runs/X_bundle --zeroed sound_event_feed \
      --data data/tiny --split eval       # and with its sound_event_feed* modules zeroed
  python benchmarks/late_replies.py --quick                # smoke test: 8 new streams, cut at 16 chunks
"""

from __future__ import annotations

import argparse
import atexit
import collections
import json
import math
import pathlib
import platform
import shutil
import tempfile
from collections.abc import Sequence

import jax
import numpy as np
import optax
from tqdm.auto import tqdm

from audio_interaction import config_lib, stream_format as sf
from audio_interaction.apps import cli
from audio_interaction.corpus import worlds
from audio_interaction.data import pipeline, storage
from audio_interaction.eval import bootstrap
from audio_interaction.export import portable
from audio_interaction.model import instruction_copy
from audio_interaction.model.model import AudioInteractionModel

# Rows are padded to a multiple of this many positions (and chunks), so a few shapes
# compile instead of one per stream.
ROUND_POSITIONS, ROUND_CHUNKS = 128, 32


def _round_up(value: int, multiple: int) -> int:
  return -(-value // multiple) * multiple


def stream_scores(logits: np.ndarray, decision_logits: np.ndarray, row: dict,
                  cut_position: int, name_tokens: Sequence[Sequence[int]] = ()
                  ) -> dict[str, np.ndarray]:
  """Per-stream sums, index 0 before `cut_position` and 1 from it on.

  Args:
    logits: [L, V] reply-token logits of one row; decision_logits: [L, 2].
    row: the padded row (`pipeline.pad_example`): tokens, lm_targets, lm_weights,
      decision_targets [L].
    cut_position: the first position of the cut chunk (the row's length if none).
    name_tokens: each sound-event class's name token ids (`worlds.sound_name_tokens`);
      with them the row needs its chunks' "sound_events".
  Returns:
    {"tokens", "correct", "nll", "copyable", "copyable_correct", "sound_name",
    "sound_name_correct", "speak", "speak_hit", "silent", "silent_spoken"}: each float64[2].
  """
  position = np.arange(len(row["lm_targets"]))
  side = (position >= cut_position).astype(int)
  targets = np.asarray(row["lm_targets"])
  is_reply = np.asarray(row["lm_weights"]) > 0
  nll = np.asarray(optax.softmax_cross_entropy_with_integer_labels(logits, targets), np.float64)
  correct = logits.argmax(-1) == targets
  copyable = is_reply & np.asarray(instruction_copy.copyable_targets(
      np.asarray(row["tokens"])[None], targets[None])[0])
  heard = {int(c) for c in np.asarray(row.get("sound_events", ())) if 0 < c < len(name_tokens)}
  heard_names = np.asarray(sorted({t for c in heard for t in name_tokens[c]}), np.int64)
  sound_name = is_reply & np.isin(targets, heard_names)
  decision = np.asarray(row["decision_targets"])
  speaks = decision_logits[:, int(sf.Decision.SPEAK)] >= decision_logits[:, int(sf.Decision.SILENT)]
  is_speak, is_silent = decision == int(sf.Decision.SPEAK), decision == int(sf.Decision.SILENT)

  def by_side(mask):
    return np.bincount(side[mask], minlength=2).astype(np.float64)

  def weighted(mask, values):
    return np.bincount(side[mask], weights=values[mask], minlength=2)

  return {"tokens": by_side(is_reply), "correct": by_side(is_reply & correct),
          "nll": weighted(is_reply, nll), "copyable": by_side(copyable),
          "copyable_correct": by_side(copyable & correct), "sound_name": by_side(sound_name),
          "sound_name_correct": by_side(sound_name & correct), "speak": by_side(is_speak),
          "speak_hit": by_side(is_speak & speaks), "silent": by_side(is_silent),
          "silent_spoken": by_side(is_silent & speaks)}


# Each rate of `pooled_rates`: (numerator, denominator) among the `stream_scores` sums.
RATES = {"token_accuracy": ("correct", "tokens"), "nll": ("nll", "tokens"),
         "instruction_token_accuracy": ("copyable_correct", "copyable"),
         "sound_name_accuracy": ("sound_name_correct", "sound_name"),
         "speak_recall": ("speak_hit", "speak"), "false_speak": ("silent_spoken", "silent")}
SIDES = ("before", "after")


def pooled_rates(sums: dict[str, np.ndarray]) -> dict[str, float]:
  """Rates of summed `stream_scores`, "before/nll" and so on (NaN where nothing was counted)."""
  return {f"{name}/{rate}": (float(sums[num][side] / sums[den][side]) if sums[den][side]
                             else math.nan)
          for side, name in enumerate(SIDES) for rate, (num, den) in RATES.items()}


def zeroed(params: dict, prefix: str) -> dict:
  """`params` with every top-level module whose name starts with `prefix` set to zero
  (e.g. "sound_event_feed": does the decoder use what it is fed?)."""
  modules = params["params"]
  hit = [name for name in modules if name.startswith(prefix)]
  if not hit:
    raise SystemExit(f"--zeroed {prefix}: no such module (the bundle has "
                     f"{', '.join(sorted(modules))})")
  return {**params, "params": {name: (jax.tree_util.tree_map(np.zeros_like, value)
                                      if name in hit else value)
                               for name, value in modules.items()}}


def score_bundle(bundle: str, source, indices: list[int], cut_chunks: int,
                 abilities: np.ndarray, zeroed_prefix: str = ""
                 ) -> dict[str, list[dict[str, np.ndarray]]]:
  """Ability -> per-stream `stream_scores` of one bundle over the online streams (with
  `zeroed_prefix`: its modules of that name zeroed first, `zeroed`)."""
  config, params, tokenizer = portable.load_bundle(portable.resolve_bundle(bundle))
  if zeroed_prefix:
    params = zeroed(params, zeroed_prefix)
  model = AudioInteractionModel(config)
  name_tokens = worlds.sound_name_tokens(tokenizer)
  forward = jax.jit(model.forward)
  per_ability = collections.defaultdict(list)
  for index in tqdm(indices, desc=pathlib.Path(bundle).name or bundle):
    example = pipeline.select_fields(source[index])
    length, chunks = len(example["tokens"]), int(example["num_chunks"])
    shape = pipeline.PipelineConfig.from_config(
        config, batch_size=1, max_len=_round_up(length, ROUND_POSITIONS),
        max_chunks=_round_up(chunks, ROUND_CHUNKS),
        max_transcript=max(1, len(example["transcript"])))
    row = pipeline.pad_example(example, shape)
    out = forward(params, row["tokens"][None], row["audio"][None],
                  row["audio_slot_index"][None])
    starts = np.flatnonzero(example["tokens"] == sf.AUDIO_ID)
    cut_position = int(starts[cut_chunks]) if chunks > cut_chunks else length
    per_ability[str(abilities[index])].append(stream_scores(
        np.asarray(out.lm_logits[0]), np.asarray(out.decision_logits[0]), row,
        cut_position, name_tokens))
  return per_ability


def summarize(streams: list[dict[str, np.ndarray]], resamples: int) -> dict[str, dict]:
  """Pooled rates over `streams`, their bootstrap intervals over streams, and each rate's
  denominator ("count": tokens, SPEAK or SILENT targets)."""
  stacked = {k: np.stack([s[k] for s in streams]) for k in streams[0]}  # [N, 2] each
  def total(idx):
    return {k: v[idx].sum(axis=0) for k, v in stacked.items()}
  counts = total(np.arange(len(streams)))
  intervals = bootstrap.bootstrap_intervals(len(streams), lambda idx: pooled_rates(total(idx)),
                                            resamples=resamples)
  return {name: {"value": value, **intervals.get(name, {}),
                 "count": float(counts[RATES[name.split("/")[1]][1]][SIDES.index(name.split("/")[0])])}
          for name, value in pooled_rates(counts).items()}


def _cell(entry: dict, percent: bool) -> str:
  if math.isnan(entry["value"]):
    return "—"
  scale, unit = (100, " %") if percent else (1, "")
  low, high = entry.get("low", math.nan), entry.get("high", math.nan)
  fmt = "{:.0f}" if percent else "{:.2f}"
  text = fmt.format(scale * entry["value"]) + unit
  if not math.isnan(low):
    text += f" [{fmt.format(scale * low)}, {fmt.format(scale * high)}]"
  return text


def _quick_split() -> str:
  """A fresh held-out split of 8 streams (the embedded model's tokenizer) for --quick."""
  directory = pathlib.Path(tempfile.mkdtemp(prefix="late_replies_"))
  atexit.register(shutil.rmtree, directory, ignore_errors=True)
  shutil.copytree(portable.resolve_bundle("embedded") / portable.TOKENIZER_DIR,
                  directory / "tokenizer")
  status = cli.main(["build-data", "--config", str(config_lib.experiments_dir() / "tiny.py"),
                     f"--config.data.dir={directory}", "--split", "eval", "--num-examples", "8",
                     "--subtasks", "follow_count,chat_multi_turn"])
  if status:
    raise SystemExit(f"build-data exited {status}")
  return str(directory)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--bundle", action="append", default=[],
                      help="a bundle directory or 'embedded' (repeatable)")
  parser.add_argument("--data", default="data/tiny", help="a built corpus directory")
  parser.add_argument("--split", default="eval")
  parser.add_argument("--cut-chunks", type=int, default=64,
                      help="the row length the comparison splits at (data.max_chunks)")
  parser.add_argument("--max-streams", type=int, default=0, help="0: every online stream")
  parser.add_argument("--resamples", type=int, default=bootstrap.RESAMPLES)
  parser.add_argument("--json", default="", help="also write every figure here")
  parser.add_argument("--zeroed", default="", metavar="PREFIX",
                      help="also score each bundle with its modules named PREFIX... zeroed")
  parser.add_argument("--quick", action="store_true", help="smoke test: 8 streams")
  args = parser.parse_args()
  bundles = args.bundle or ["embedded"]
  if args.quick:
    args.data, args.split, args.cut_chunks = _quick_split(), "eval", 16
  source = storage.load_split(args.data, args.split)
  abilities = storage.read_split_metadata(args.data, args.split).abilities
  indices = [i for i in range(len(source))
             if int(np.asarray(source[i]["tokens"])[1]) == sf.ONLINE_ID]
  limit = 8 if args.quick else args.max_streams
  if limit:
    indices = indices[:limit]
  resamples = 50 if args.quick else args.resamples
  print(f"# Teacher-forced, before and after chunk {args.cut_chunks} "
        f"({len(indices)} online streams of {args.data}:{args.split}; "
        f"{platform.machine()}, {jax.device_count()} {jax.default_backend()} device(s))\n")
  results = {}
  runs = [(bundle, "") for bundle in bundles]
  if args.zeroed:
    runs += [(bundle, args.zeroed) for bundle in bundles]
  for bundle, prefix in runs:
    per_ability = score_bundle(bundle, source, indices, args.cut_chunks, abilities, prefix)
    groups = {**{a: per_ability[a] for a in sorted(per_ability)},
              "all": [s for streams in per_ability.values() for s in streams]}
    name = f"{bundle}, {prefix}* zeroed" if prefix else bundle
    results[name] = {group: summarize(streams, resamples) for group, streams in groups.items()}
  bundles = list(results)
  metrics = (("token_accuracy", "reply-token accuracy", True), ("nll", "reply NLL, nats", False),
             ("instruction_token_accuracy", "accuracy on reply tokens of the instruction", True),
             ("sound_name_accuracy", "accuracy on reply tokens naming a sound the stream holds",
              True),
             ("speak_recall", "SPEAK recall", True), ("false_speak", "speaks at SILENT", True))
  for group in results[bundles[0]]:
    print(f"## {group}\n")
    print("| | " + " | ".join(f"{b}: before / after" for b in bundles) + " |")
    print("|---|" + "---|" * len(bundles))
    for key, label, percent in metrics:
      cells = []
      for bundle in bundles:
        figures = results[bundle].get(group)
        if figures is None:
          cells.append("—")
          continue
        before, after = figures[f"before/{key}"], figures[f"after/{key}"]
        cells.append(f"{_cell(before, percent)} / {_cell(after, percent)} "
                     f"({before['count']:.0f} / {after['count']:.0f})")
      print(f"| {label} | " + " | ".join(cells) + " |")
    print()
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
  main()
