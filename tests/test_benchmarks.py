"""Every benchmark in benchmarks/ runs: its `--quick` mode exits 0 and prints figures.

Benchmarks are scripts no other test imports, so a change to the library can break
one silently (train_step.py and data_pipeline.py once failed on main while the
README quoted their figures). Each `--quick` run is a smoke test of the full code
path at small sizes: about 5 s to 2 min each on a shared 2-core machine, one
subprocess per benchmark, parametrized so `pytest -n 2` spreads them.

New benchmarks are picked up by the glob: each must accept `--quick`.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

BENCHMARKS = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = sorted(path.name for path in BENCHMARKS.glob("*.py") if not path.name.startswith("_"))
# train_step.py's sections each start child processes that compile the step: run as one
# test they took 7 minutes on a loaded 2-core machine, so each section is its own test
# (`pytest -n 2` spreads them).
SPLIT_BY_SECTION = {"train_step.py": ("host", "packing", "scaling", "xla", "copy", "sounds")}
RUNS = [(script, ()) for script in SCRIPTS if script not in SPLIT_BY_SECTION] + [
    (script, ("--sections", section))
    for script, sections in SPLIT_BY_SECTION.items() for section in sections]

# A figure: a number with a unit, a ratio ("8.7x") or a percentage.
FIGURE = re.compile(r"\d+(?:\.\d+)?\s*(?:ms|s|x|MB|GB|%|GFLOP/s|examples/s)(?![A-Za-z])")
# How a benchmark reports a section that crashed while the others went on.
SECTION_FAILED = re.compile(r"^.*\bFAILED:.*$", re.MULTILINE)

# Seconds per --quick run before the test gives up (a hang is a failure too).
TIMEOUT_S = 420


def test_there_are_benchmarks():
  assert {"logmel.py", "stream_step.py", "live_loop.py", "train_step.py",
          "data_pipeline.py"} <= set(SCRIPTS)


def test_every_section_of_a_split_benchmark_is_run():
  for script, sections in SPLIT_BY_SECTION.items():
    parser_default = re.search(r'"--sections", default="([^"]+)"',
                               (BENCHMARKS / script).read_text())
    assert parser_default and set(parser_default.group(1).split(",")) == set(sections)


@pytest.mark.parametrize("script,options", RUNS,
                         ids=[" ".join((script, *options)) for script, options in RUNS])
def test_benchmark_quick_mode_runs_and_prints_figures(script, options, tmp_path):
  env = dict(os.environ, MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
  try:
    result = subprocess.run([sys.executable, str(BENCHMARKS / script), "--quick", *options],
                            capture_output=True, text=True, timeout=TIMEOUT_S, cwd=tmp_path,
                            env=env, check=False)
  except subprocess.TimeoutExpired as error:
    pytest.fail(f"{script} --quick ran over {TIMEOUT_S} s; output so far:\n"
                f"{(error.stdout or b'')[-3000:]!r}")
  output = result.stdout
  assert result.returncode == 0, (
      f"{script} --quick exited {result.returncode}\nstdout:\n{output[-3000:]}\n"
      f"stderr:\n{result.stderr[-5000:]}")
  figures = FIGURE.findall(output)
  assert len(figures) >= 3, f"{script} --quick printed no figures:\n{output[-3000:]}"
  failed = SECTION_FAILED.findall(output)
  assert not failed, f"{script} --quick: a section failed:\n" + "\n".join(failed)
  assert not re.search(r"\bnan\b", output, re.IGNORECASE), f"{script}: NaN figure\n{output}"
