"""`audio-interaction eval`: load a model (a bundle, a training workdir, or the embedded
one), build the cases (held-out streams or a manifest), run the suites, write the report."""

from __future__ import annotations

import dataclasses
import pathlib
import tempfile
import time
from typing import Any

from audio_interaction.corpus.build import heldout_sources
from audio_interaction.eval import suites as suites_lib
from audio_interaction.eval.report import write_report
from audio_interaction.export import portable
from audio_interaction.infer.engine import Engine
from audio_interaction.train import export as train_export


def load_checkpoint(checkpoint: str | None, config=None):
  """(model, params, tokenizer, note) from a bundle directory, a training workdir (its best
  checkpoint, exported to a temporary bundle; needs `config`), or the embedded model."""
  if checkpoint is None:
    return portable.load_model(None)
  path = pathlib.Path(checkpoint)
  if (path / portable.PARAMS_FILE).exists():
    return portable.load_model(None, path)
  if (path / "checkpoints").is_dir():
    if config is None:
      raise ValueError(f"{path} is a training workdir: give its --config to read it")
    bundle = pathlib.Path(tempfile.mkdtemp(prefix="eval_bundle_"))
    train_export.export_checkpoint(config, path, bundle)
    model, params, tokenizer, _ = portable.load_model(None, bundle)
    return model, params, tokenizer, f"best checkpoint of {path}"
  raise FileNotFoundError(f"{path} is neither a model bundle ({portable.PARAMS_FILE}) nor a "
                          "training workdir (checkpoints/)")


def run_eval(*, checkpoint: str | None, suites: str, manifest: str | None, streams: int,
             out_dir: str | pathlib.Path, config=None,
             eval_config: suites_lib.EvalConfig | None = None, progress: bool = True,
             command: str = "") -> dict[str, Any]:
  """Loads the model, builds the cases, runs the suites and writes the report.

  Returns {"paths": {...}, "results": the JSON-able results, "seconds": wall time}.
  """
  began = time.perf_counter()
  names = suites_lib.parse_suites(suites)
  eval_config = eval_config or suites_lib.EvalConfig()
  eval_config = dataclasses.replace(eval_config, streams_per_subtask=streams)
  model, params, tokenizer, note = load_checkpoint(checkpoint, config)
  chunk_ms = 1000 * model.config.chunk_samples // model.config.sample_rate
  if manifest:
    cases = suites_lib.cases_from_manifest(manifest, names, chunk_ms=chunk_ms)
    source = f"manifest {manifest}"
  else:
    speech, sounds = heldout_sources()
    cases = suites_lib.generated_cases(names, speech, sounds, streams_per_subtask=streams,
                                       seed=eval_config.seed, chunk_ms=chunk_ms)
    source = f"{streams} held-out generated stream(s) per sub-task"
  if not cases:
    raise ValueError(f"no cases for suites {names} from {source}")
  results = suites_lib.evaluate(Engine(model), params, tokenizer, cases, names, eval_config,
                                progress=progress)
  results["source"] = source
  paths = write_report(results, out_dir, note=f"{note}; {source}", command=command)
  return {"paths": paths, "results": suites_lib.json_safe(results),
          "seconds": time.perf_counter() - began}
