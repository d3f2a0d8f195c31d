"""`audio-interaction tune`: choose a bundle's operating point on dev-set manifests
(`eval/tune.py`), write tune.json / tune.md / tune.png (and tune_alerts.png), and
optionally store the chosen `infer` block in the bundle."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np

from audio_interaction.apps.eval_run import check_out_dir, skip_note
from audio_interaction.corpus.manifest import read_manifest
from audio_interaction.eval import suites, tune
from audio_interaction.export import portable

TUNE_FILES = ("tune.json", "tune.md")


def load_cases(manifests: Sequence[str], chunk_ms: int, answer_window_s: float,
               *, max_cases: int | None = None, seed: int = 0
               ) -> tuple[list[suites.Case], list[str], list[str]]:
  """The B5/B6 cases of the manifests (`tune.tune_cases`), a note per manifest, and
  each case's manifest.

  `max_cases`: at most this many cases per suite, a seeded random subset (the order of
  the manifests kept).

  Raises:
    ValueError: no manifest, a manifest without usable rows, or no turns at all (the
      rule needs B5 turns); the message names the manifests and what they held.
  """
  if not manifests:
    raise ValueError("tune needs at least one --manifest")
  cases, notes, sources = [], [], []
  for path in manifests:
    report = read_manifest(path)
    if not report.rows:
      raise ValueError(f"manifest {path} has no usable rows{skip_note(report)}")
    found = tune.tune_cases(suites.cases_from_manifest(
        report, tune.TUNE_SUITES, chunk_ms=chunk_ms, answer_window_s=answer_window_s))
    notes.append(f"{path}{skip_note(report)}: " + ", ".join(
        f"{s} {sum(s in c.suites for c in found)} cases" for s in tune.TUNE_SUITES))
    cases += found
    sources += [str(path)] * len(found)
  if max_cases is not None:
    rng = np.random.default_rng(seed)
    keep = set()
    for suite in tune.TUNE_SUITES:
      where = [i for i, c in enumerate(cases) if suite in c.suites]
      keep |= set(rng.permutation(where)[:max_cases].tolist())
    cases = [c for i, c in enumerate(cases) if i in keep]
    sources = [s for i, s in enumerate(sources) if i in keep]
  turns = sum(suites.case_units(c, "B5") for c in cases if "B5" in c.suites)
  if not turns:
    events = sum(suites.case_units(c, "B6") for c in cases if "B6" in c.suites)
    raise ValueError(
        f"no turn-taking turns in {', '.join(manifests)} ({len(cases)} B5/B6 cases, "
        f"{events} alert events): tune chooses on B5 turns, so give a manifest of "
        "turn-taking streams (rows with `turns`, or addressed speech with a `reply`; "
        "docs/manifests.md)")
  return cases, notes, sources


def _bundle_metadata(bundle: str | pathlib.Path) -> dict[str, Any]:
  """A bundle's metadata.json, {} when it has none or it is not a JSON object."""
  path = pathlib.Path(bundle) / portable.METADATA_FILE
  try:
    metadata = json.loads(path.read_text()) if path.exists() else {}
  except (json.JSONDecodeError, UnicodeDecodeError):
    return {}
  return metadata if isinstance(metadata, dict) else {}


def run_tune(*, checkpoint: str | None, manifests: Sequence[str], out_dir: str | pathlib.Path,
             grid: tune.Grid = tune.Grid(), rule: tune.Rule = tune.Rule(), seed: int = 0,
             max_cases: int | None = None, resamples: int = 1000, write_bundle: bool = False,
             overwrite: bool = False, progress: bool = True, command: str = "",
             keep_policy: bool = False) -> dict[str, Any]:
  """Loads the bundle (default: the embedded one), tunes, writes the report.

  With `keep_policy`, the bundle's own policy stays (the grid's policy candidates are
  not run; `Grid.keep_policy`) and only the sound alerts are tuned.

  With `write_bundle`, the chosen `infer` block is stored in the bundle's config.json
  (`portable.write_bundle_infer`). Returns {"result", "paths", "bundle", "written",
  "seconds"}.
  """
  began = time.perf_counter()
  check_out_dir(out_dir, overwrite, TUNE_FILES)
  bundle = portable.resolve_bundle(checkpoint or None)
  if portable.bundle_params_file(bundle) is None:
    raise FileNotFoundError(f"{bundle} is not a model bundle (neither "
                            f"{' nor '.join(portable.PARAMS_FILES.values())}); tune reads and "
                            "writes bundles (export a workdir first)")
  base_infer = portable.bundle_infer_config(bundle)
  if keep_policy:
    grid = dataclasses.replace(grid, keep_policy=tune.Candidate.from_infer(base_infer))
  eval_config = suites.EvalConfig.from_infer(base_infer, bootstrap_resamples=resamples)
  model, params, tokenizer, note = portable.load_model(None, bundle)
  cases, notes, sources = load_cases(manifests, model.config.chunk_ms,
                                     eval_config.answer_window_s, max_cases=max_cases, seed=seed)
  # The engine the eval runs, with the bundle's sampling (e.g. its name bias).
  engine = suites.evaluation_engine(model, tokenizer, eval_config)
  result = tune.tune(engine, params, tokenizer, cases, base_infer, grid, rule,
                     config=eval_config, seed=seed, progress=progress, sources=sources)
  result["manifests"] = notes
  result["timing"]["wall_seconds"] = time.perf_counter() - began
  paths = tune.write_tune_report(result, out_dir, note=note, command=command)
  written = None
  if write_bundle:
    written = portable.write_bundle_infer(
        bundle, ml_collections.ConfigDict(result["chosen"]["infer"]))
    record = {"chosen": result["chosen"]["name"], "manifests": result["manifests"],
              "split_seed": seed, "command": command}
    if keep_policy:  # the policy kept was chosen by an earlier tune: say which
      earlier = _bundle_metadata(bundle).get("operating_point")
      if isinstance(earlier, dict):
        record["policy_chosen_by"] = earlier.get("policy_chosen_by", earlier)
    portable.record_in_metadata(bundle, "operating_point", record)
  return {"result": suites.json_safe(result), "paths": paths, "bundle": bundle,
          "written": written, "seconds": time.perf_counter() - began}
