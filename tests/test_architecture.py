"""The package's shape: layers only point down, and no two files import each other in a circle.

The layer contract lives in `.importlinter` (run by `lint-imports`, here through its
Python API so a broken contract fails the suite); docs/architecture.md draws it.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import grimp

REPO = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = REPO / "audio_interaction"
LINT = ("import sys; from importlinter import cli; "
        "sys.exit(cli.lint_imports(config_filename='.importlinter', no_cache=True))")


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
  """Tarjan's algorithm: the components with more than one module (import circles)."""
  index: dict[str, int] = {}
  low: dict[str, int] = {}
  stack: list[str] = []
  on_stack: set[str] = set()
  circles: list[list[str]] = []
  sys.setrecursionlimit(max(10_000, sys.getrecursionlimit()))

  def visit(node: str) -> None:
    index[node] = low[node] = len(index)
    stack.append(node)
    on_stack.add(node)
    for nxt in graph.get(node, ()):
      if nxt not in index:
        visit(nxt)
        low[node] = min(low[node], low[nxt])
      elif nxt in on_stack:
        low[node] = min(low[node], index[nxt])
    if low[node] == index[node]:
      component = []
      while True:
        top = stack.pop()
        on_stack.discard(top)
        component.append(top)
        if top == node:
          break
      if len(component) > 1:
        circles.append(sorted(component))

  for node in sorted(graph):
    if node not in index:
      visit(node)
  return circles


def test_strongly_connected_finds_a_planted_circle():
  graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
  assert _strongly_connected(graph) == [["a", "b", "c"]]
  assert _strongly_connected({"a": {"b"}, "b": set()}) == []


def test_layers_contract_is_kept():
  # In a subprocess: import-linter configures logging (dictConfig), which would
  # disable the loggers of every module already imported in this test worker.
  result = subprocess.run([sys.executable, "-c", LINT], cwd=REPO, capture_output=True,
                          text=True, timeout=300, check=False)
  assert result.returncode == 0, (
      "a layer imports upward (run `lint-imports` to see the chain):\n" + result.stdout[-3000:]
      + result.stderr[-3000:])


def test_no_import_circle_between_files():
  graph = grimp.build_graph("audio_interaction", cache_dir=None)
  edges = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
  assert len(edges) > 50 and "audio_interaction.apps.cli" in edges
  assert _strongly_connected(edges) == []


def test_package_imports_sit_at_module_level():
  """Imports inside functions hide cycles; only the CLI's verbs import lazily (so `--help`
  and argument errors answer before the ~4 s of importing the stack)."""
  allowed = {PACKAGE / "apps" / "cli.py"}
  found = []
  for path in PACKAGE.rglob("*.py"):
    if path in allowed:
      continue
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        for inner in ast.walk(node):
          if (isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith(
              "audio_interaction")) or (isinstance(inner, ast.Import) and any(
                  a.name.startswith("audio_interaction") for a in inner.names)):
            found.append(f"{path.relative_to(REPO)}:{inner.lineno}")
  assert found == []
