"""`audio-interaction eval`: load a model (a bundle, a training workdir, or the embedded
one), build the cases (held-out streams or a manifest), run the suites, write the report."""

from __future__ import annotations

import dataclasses
import pathlib
import tempfile
import time
from typing import Any

from audio_interaction.corpus.build import heldout_sources
from audio_interaction.corpus.manifest import ManifestReport, read_manifest
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


RUN_FILES = ("results.json", "report.md")  # an --out directory holding one is a run


class RunExists(ValueError):
  """`--out` already holds a run, and `--overwrite` was not given."""


def check_out_dir(out_dir: str | pathlib.Path, overwrite: bool) -> None:
  """Refuses an `out_dir` that is a file, or holds a run (unless `overwrite`)."""
  out = pathlib.Path(out_dir)
  if out.exists() and not out.is_dir():
    raise ValueError(f"--out {out} is a file, not a directory")
  found = [name for name in RUN_FILES if (out / name).exists()]
  if found and not overwrite:
    raise RunExists(f"--out {out} already holds a run ({', '.join(found)}); give another "
                    "--out, or --overwrite to replace it")


def _skip_note(report: ManifestReport) -> str:
  """" (2 rows; 3 rows skipped: 2 malformed_json, 1 unknown_label)", for the report."""
  if not report.num_skipped:
    return f" ({len(report.rows)} rows)"
  reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(report.skipped.items()))
  return f" ({len(report.rows)} rows; {report.num_skipped} rows skipped: {reasons})"


def run_eval(*, checkpoint: str | None, suites: str, manifest: str | None, streams: int,
             out_dir: str | pathlib.Path, config=None,
             eval_config: suites_lib.EvalConfig | None = None, progress: bool = True,
             command: str = "", overwrite: bool = False) -> dict[str, Any]:
  """Loads the model, builds the cases, runs the suites and writes the report.

  `out_dir` must not hold a run already (`results.json` or `report.md`) unless
  `overwrite`: `RunExists` otherwise, before anything is loaded.

  Returns {"paths": {...}, "results": the JSON-able results, "seconds": wall time}.
  """
  began = time.perf_counter()
  names = suites_lib.parse_suites(suites)
  eval_config = eval_config or suites_lib.EvalConfig()
  eval_config = dataclasses.replace(eval_config, streams_per_subtask=streams)
  check_out_dir(out_dir, overwrite)
  # The manifest first: a bad one is reported before the model loads.
  manifest_report = read_manifest(manifest) if manifest else None
  model, params, tokenizer, note = load_checkpoint(checkpoint, config)
  chunk_ms = model.config.chunk_ms
  if manifest_report is not None:
    cases = suites_lib.cases_from_manifest(manifest_report, names, chunk_ms=chunk_ms)
    source = f"manifest {manifest}" + _skip_note(manifest_report)
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
  if manifest_report is not None:
    results["manifest"] = {"path": str(manifest), "rows": len(manifest_report.rows),
                           "skipped": dict(sorted(manifest_report.skipped.items()))}
  paths = write_report(results, out_dir, note=f"{note}; {source}", command=command)
  return {"paths": paths, "results": suites_lib.json_safe(results),
          "seconds": time.perf_counter() - began}
