"""Every notebook in notebooks/ runs top to bottom (SMALL mode, on CPU), and none is
committed with outputs."""

import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 300
# What each notebook leaves in its working directory when it ran to the end.
WRITES = {
    "quickstart": "quickstart_timeline.png",
    "data_gallery": "gallery_chat_single.png",
    "train_anywhere": "runs/train_anywhere/bundle/params.msgpack",
    "decide_when_to_speak": "tuned_bundle/config.json",
    "what_the_head_hears": "head_hears.png",
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path, monkeypatch):
  monkeypatch.setenv("AI_NOTEBOOK_SMALL", "1")  # the kernel inherits the environment
  notebook = nbformat.read(path, as_version=4)
  NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                 resources={"metadata": {"path": str(tmp_path)}}).execute()
  if path.stem in WRITES:
    assert (tmp_path / WRITES[path.stem]).exists()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path):
  notebook = nbformat.read(path, as_version=4)
  nbformat.validate(notebook)
  dirty = [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"
           and (cell.get("outputs") or cell.get("execution_count") is not None)]
  assert not dirty, (f"{path.name}: cells {dirty} have outputs or execution counts; "
                     "clear them before committing (Jupyter: Edit > Clear Outputs of All Cells)")


def test_every_notebook_opens_with_the_install_cell():
  for path in NOTEBOOKS:
    cells = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    assert "AI_NOTEBOOK_SMALL" in cells[0].source and "jax.devices()" in cells[0].source, path.name


def test_there_are_notebooks():
  assert {p.stem for p in NOTEBOOKS} >= {"quickstart", "data_gallery", "train_anywhere",
                                         "decide_when_to_speak", "inside_the_model"}
