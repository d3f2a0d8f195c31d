"""The generated reference pages (docs/configs.md, docs/cli.md) match the code."""

import pathlib
import subprocess
import sys

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"


def test_generated_docs_are_current(tmp_path):
  result = subprocess.run([sys.executable, str(DOCS / "generate.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  for name in ("configs.md", "cli.md"):
    fresh = (tmp_path / name).read_text()
    assert (DOCS / name).read_text() == fresh, (
        f"docs/{name} is stale: run `python docs/generate.py` and commit the result")


def test_configs_page_lists_every_field_with_its_rule():
  from audio_interaction import config_lib  # pylint: disable=import-outside-toplevel
  page = (DOCS / "configs.md").read_text()
  for path in config_lib.leaf_paths(config_lib.base_config()):
    assert f"| `{path}` |" in page, path
    assert config_lib.FIELD_RULES[path].describe.split("|")[0][:20] in page.replace("\\|", "|")


def test_docs_pages_exist_and_are_linked_from_the_readme():
  readme = (DOCS.parent / "README.md").read_text()
  for name in ("stream_format.md", "configs.md", "cli.md", "real_audio_log.md"):
    assert (DOCS / name).is_file()
    assert f"docs/{name}" in readme, name
