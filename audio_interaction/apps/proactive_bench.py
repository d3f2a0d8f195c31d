"""`audio-interaction proactive-bench`: the Proactive-Sound-Bench layout run through a
bundle (`eval/proactive_bench.py` has the format and the scoring)."""

from __future__ import annotations

import pathlib
from typing import Any

import ml_collections
from tqdm.auto import tqdm

from audio_interaction.eval import proactive_bench as bench
from audio_interaction.export.portable import bundle_infer_config, load_model
from audio_interaction.infer.engine import Engine
from audio_interaction.infer.policies import policy_from_config
from audio_interaction.infer.run_stream import run_stream


def run_proactive_bench(*, manifest: str | pathlib.Path, root: str | pathlib.Path,
                        out_dir: str | pathlib.Path, bundle: str | None = None,
                        infer: ml_collections.ConfigDict | None = None,
                        answers: str | None = None, overwrite: bool = False,
                        instruction: str = bench.PROACTIVE_INSTRUCTION,
                        progress: bool = True) -> dict[str, Any]:
  """Runs every clip of the manifest under the bundle's operating point (`infer`:
  default the bundle's own, `bundle_infer_config`); writes OUT/predictions.jsonl and
  OUT/stats.json. Returns {"paths", "stats"}."""
  out = pathlib.Path(out_dir)
  if (out / bench.PREDICTIONS_FILE).exists() and not overwrite:
    raise ValueError(f"--out {out} already holds {bench.PREDICTIONS_FILE}; give another --out, "
                     "or --overwrite to replace it")
  if not pathlib.Path(root).is_dir():
    raise FileNotFoundError(f"--root {root} is not a directory")
  rows, problems = bench.read_bench_manifest(manifest)
  reference = bench.read_answers(answers) if answers else None
  model, params, tokenizer, _ = load_model(None, bundle)
  infer = infer if infer is not None else bundle_infer_config(bundle)
  engine = Engine.from_infer(model, infer, tokenizer)
  instruction_ids = tokenizer.encode(instruction)

  def replies_of(audio):
    policy = policy_from_config(infer, chunk_seconds=model.config.chunk_seconds)
    trace = run_stream(engine, params, audio, instruction_ids, policy,
                       max_reply_tokens=infer.max_reply_tokens)
    return [text for _, text in trace.reply_texts(tokenizer.decode)]

  predictions, stats = bench.run_bench(
      rows, root, replies_of, answers=reference, problems=problems,
      progress=lambda items: tqdm(items, desc="clips", disable=not progress))
  stats["instruction"] = instruction
  stats["policy"] = {"policy": infer.policy, "threshold": infer.threshold}
  return {"paths": bench.write_outputs(out, predictions, stats), "stats": stats}
