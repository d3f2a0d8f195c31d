"""Loads a script of the repository (docs/*.py, benchmarks/*.py) as a module, for its tests."""

import importlib.util
import pathlib
import sys
import types

REPO = pathlib.Path(__file__).resolve().parent.parent


def load_script(relative_path: str) -> types.ModuleType:
  """The script at `relative_path` (from the repository root), executed as a module."""
  path = REPO / relative_path
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  # A script's dataclasses look their module up in sys.modules while they are made.
  sys.modules[spec.name] = module
  spec.loader.exec_module(module)
  return module
