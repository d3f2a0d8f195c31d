"""No absolute machine path in committed reports and pictures' texts.

A report or picture title that names /work/... or /home/... tells a reader where one
machine kept its checkout, and is wrong everywhere else: bundles are named relative
to the package (the embedded one) or by their directory's name.
"""

from __future__ import annotations

import pathlib
import shutil

import pytest

from audio_interaction.export import portable

REPO = pathlib.Path(__file__).resolve().parent.parent
MACHINE_PATHS = ("/work/", "/home/", "/root/", "/tmp/", "/Users/")
DOCS = sorted(p for p in (REPO / "docs").rglob("*") if p.suffix in (".md", ".json", ".txt"))


def _machine_paths(text: str) -> list[str]:
  return [line.strip() for line in text.splitlines() if any(p in line for p in MACHINE_PATHS)]


def test_there_are_committed_docs():
  assert any(p.name == "report.md" for p in DOCS)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_committed_docs_name_no_machine_path(path):
  assert not _machine_paths(path.read_text(errors="replace")), path.relative_to(REPO)


def test_readme_names_no_machine_path():
  assert not _machine_paths((REPO / "README.md").read_text())


def test_the_embedded_bundle_is_named_relative_to_the_package():
  *_, note = portable.load_model(None)
  assert note == "trained weights from the embedded bundle assets/tiny"


def test_another_bundle_is_named_by_its_directory(tmp_path):
  bundle = tmp_path / "nested" / "my_bundle"
  shutil.copytree(portable.EMBEDDED_BUNDLE, bundle)
  *_, note = portable.load_model(None, bundle)
  assert note == "trained weights from bundle my_bundle"
  assert not _machine_paths(note)
