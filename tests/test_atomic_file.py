"""atomic_file: a file is replaced whole or not at all."""

import os
import stat

import pytest

from audio_interaction import atomic_file


def test_a_write_replaces_the_file_and_keeps_its_permissions(tmp_path):
  path = tmp_path / "config.json"
  path.write_text("old")
  os.chmod(path, 0o640)
  atomic_file.write_text(path, "new")
  assert path.read_text() == "new"
  assert stat.S_IMODE(path.stat().st_mode) == 0o640
  assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]  # no leftovers
  atomic_file.write_bytes(tmp_path / "fresh.bin", b"\x00\x01")
  assert (tmp_path / "fresh.bin").read_bytes() == b"\x00\x01"


def test_an_interrupted_write_leaves_the_previous_file_whole(tmp_path):
  path = tmp_path / "params.msgpack"
  path.write_bytes(b"previous")
  with pytest.raises(KeyboardInterrupt):
    with atomic_file.replacing(path) as tmp:
      tmp.write_bytes(b"half of a ne")
      raise KeyboardInterrupt
  assert path.read_bytes() == b"previous"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["params.msgpack"]


def test_a_writer_that_wrote_nothing_is_an_error_not_an_empty_file(tmp_path):
  path = tmp_path / "model.safetensors"
  path.write_bytes(b"previous")
  with pytest.raises(FileNotFoundError, match="nothing was written"):
    with atomic_file.replacing(path):
      pass
  assert path.read_bytes() == b"previous"


def test_two_attempts_get_different_temporary_names(tmp_path):
  path = tmp_path / "shard"
  names = {atomic_file.temporary_name(path) for _ in range(4)}
  assert len(names) == 4 and all(n.parent == tmp_path and n.name.startswith(".shard.")
                                 for n in names)
