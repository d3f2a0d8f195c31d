"""`audio-interaction eval`: load a model (a bundle, a training workdir, or the embedded
one), build the cases (held-out streams or a manifest), run the suites, write the report."""

from __future__ import annotations

import dataclasses
import pathlib
import shlex
import tempfile
import time
from typing import Any

from audio_interaction.corpus.build import heldout_sources
from audio_interaction.corpus.manifest import ManifestReport, read_classes, read_manifest
from audio_interaction.eval import suites as suites_lib
from audio_interaction.eval import tfds_sources
from audio_interaction.eval.report import write_report
from audio_interaction.export import portable
from audio_interaction.train import export as train_export


def load_checkpoint(checkpoint: str | None, config=None):
  """(model, params, tokenizer, note) from a bundle directory, a training workdir (its best
  checkpoint, exported to a temporary bundle; needs `config`), or the embedded model."""
  if checkpoint is None:
    return portable.load_model(None)
  path = portable.resolve_bundle(checkpoint)
  if portable.bundle_params_file(path) is not None:
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


def check_out_dir(out_dir: str | pathlib.Path, overwrite: bool,
                  run_files: tuple[str, ...] = RUN_FILES) -> None:
  """Refuses an `out_dir` that is a file, or holds a run (one of `run_files`) unless
  `overwrite`."""
  out = pathlib.Path(out_dir)
  if out.exists() and not out.is_dir():
    raise ValueError(f"--out {out} is a file, not a directory")
  found = [name for name in run_files if (out / name).exists()]
  if found and not overwrite:
    raise RunExists(f"--out {out} already holds a run ({', '.join(found)}); give another "
                    "--out, or --overwrite to replace it")


def skip_note(report: ManifestReport) -> str:
  """" (2 rows; 3 rows skipped: 2 malformed_json, 1 unknown_label)", for the report, with
  ignored keys and events of unknown class."""
  notes = [f"{len(report.rows)} rows"]
  if report.num_skipped:
    reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(report.skipped.items()))
    notes.append(f"{report.num_skipped} rows skipped: {reasons}")
  if report.ignored_keys:
    notes.append("ignored keys " + ", ".join(f"{k} ({n})" for k, n in
                                             sorted(report.ignored_keys.items())))
  if report.unknown_classes:
    notes.append("events of unknown class, not scored: " + ", ".join(
        f"{k} ({n})" for k, n in sorted(report.unknown_classes.items())))
  return f" ({'; '.join(notes)})"


def eval_command(*, suites: str, manifest: str | None = None, tfds: str | None = None,
                 classes: str | None = None, streams: int = 2, checkpoint: str | None = None,
                 out_dir: str | None = None, extra: tuple[str, ...] = ()) -> str:
  """The command line that reproduces a run: `--streams` only for generated streams."""
  parts = ["audio-interaction", "eval", "--suites", suites]
  for flag, value in (("--checkpoint", checkpoint), ("--manifest", manifest), ("--tfds", tfds),
                      ("--classes", classes)):
    if value:
      parts += [flag, str(value)]
  if not manifest and not tfds:
    parts += ["--streams", str(streams)]
  if out_dir:
    parts += ["--out", str(out_dir)]
  return shlex.join([*parts, *extra])


def run_eval(*, checkpoint: str | None, suites: str, manifest: str | None, streams: int,
             out_dir: str | pathlib.Path, config=None,
             eval_config: suites_lib.EvalConfig | None = None, progress: bool = True,
             command: str = "", overwrite: bool = False, tfds: str | None = None,
             classes: str | None = None) -> dict[str, Any]:
  """Loads the model, builds the cases, runs the suites and writes the report.

  Cases come from `manifest` (JSONL, docs/manifests.md), `tfds` ("NAME:SPLIT",
  `eval/tfds_sources.py`), or `streams` held-out generated streams per sub-task (raised
  for B5/B6 to `eval_config.min_turns` / `min_alert_events`). `classes`: a class file
  of alert classes (`manifest.read_classes`) for manifest and TFDS rows.

  `out_dir` must not hold a run already (`results.json` or `report.md`) unless
  `overwrite`: `RunExists` otherwise, before anything is loaded.

  Returns {"paths": {...}, "results": the JSON-able results, "seconds": wall time}.
  """
  began = time.perf_counter()
  names = suites_lib.parse_suites(suites)
  eval_config = eval_config or suites_lib.EvalConfig()
  eval_config = dataclasses.replace(eval_config, streams_per_subtask=streams)
  check_out_dir(out_dir, overwrite)
  if manifest and tfds:
    raise ValueError("give --manifest or --tfds, not both")
  # The sources first: a bad one is reported before the model loads.
  alert_classes = read_classes(classes) if classes else ()
  manifest_report = read_manifest(manifest, alert_classes=alert_classes) if manifest else None
  tfds_source = tfds_sources.load_tfds(tfds, alert_classes=alert_classes) if tfds else None
  model, params, tokenizer, note = load_checkpoint(checkpoint, config)
  chunk_ms = model.config.chunk_ms
  if manifest_report is not None:
    cases = suites_lib.cases_from_manifest(manifest_report, names, chunk_ms=chunk_ms,
                                           answer_window_s=eval_config.answer_window_s)
    source = f"manifest {manifest}" + skip_note(manifest_report)
  elif tfds_source is not None:
    cases = tfds_sources.cases_from_tfds(tfds_source, names, chunk_ms=chunk_ms)
    source = f"TFDS {tfds}" + skip_note(tfds_source.report)
  else:
    speech, sounds = heldout_sources()
    cases = suites_lib.generated_cases(
        names, speech, sounds, streams_per_subtask=streams, seed=eval_config.seed,
        chunk_ms=chunk_ms, minimum={"B5": eval_config.min_turns,
                                    "B6": eval_config.min_alert_events},
        max_streams_per_subtask=eval_config.max_streams_per_subtask)
    source = (f"{streams} held-out generated stream(s) per sub-task (more for B5/B6 to reach "
              f"{eval_config.min_turns} turns / {eval_config.min_alert_events} alert events)")
  if not cases:
    raise ValueError(f"no cases for suites {names} from {source}")
  engine = suites_lib.evaluation_engine(model, tokenizer, eval_config)
  results = suites_lib.evaluate(engine, params, tokenizer, cases, names, eval_config,
                                progress=progress)
  results["source"] = source
  for key, where, report in (("manifest", manifest, manifest_report),
                             ("tfds", tfds, tfds_source and tfds_source.report)):
    if report is not None:
      results[key] = {"path": str(where), "rows": len(report.rows),
                      "skipped": dict(sorted(report.skipped.items()))}
      if report.ignored_keys:
        results[key]["ignored_keys"] = dict(sorted(report.ignored_keys.items()))
      if report.unknown_classes:
        results[key]["unknown_classes"] = dict(sorted(report.unknown_classes.items()))
  paths = write_report(results, out_dir, note=f"{note}; {source}", command=command)
  return {"paths": paths, "results": suites_lib.json_safe(results),
          "seconds": time.perf_counter() - began}
