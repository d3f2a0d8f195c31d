"""`memory://` as an `etils.epath` path: an object store (fsspec's in-memory one) for tests.

A test fixture: ``epath.Path("memory://bucket/x")`` is a `MemoryPath` whose files live in
fsspec's process-wide `MemoryFileSystem` (so in-process Beam runners see them), reached
only through the epath API, like gs:// or s3://: no POSIX file, no atomic rename. Any
`os` call on such a path would act on a local relative path ``memory:/bucket/x``
instead, which the tests check does not appear.
"""

from __future__ import annotations

import os
import pathlib

import fsspec
from etils import epath
from etils.epath import backend, gpath

PREFIX = "memory://"


class _MemoryBackend(backend._FileSystemSpecBackend):  # pylint: disable=protected-access
  """epath's fsspec backend (what gs:// uses without TensorFlow), on the memory store."""

  def fs(self, path) -> fsspec.AbstractFileSystem:
    return fsspec.filesystem("memory")

  def glob(self, path) -> list[str]:
    # The memory store lists "/bucket/x"; epath's backend would prefix "memory://" and
    # make "memory:///bucket/x".
    return [PREFIX + p.lstrip("/") for p in self.fs(path).glob(os.fspath(path))]


_BACKEND = _MemoryBackend()


@epath.register_path_cls(PREFIX)
class MemoryPath(gpath.PosixGPath):
  """``memory://bucket/a/b`` kept as the parts ``/ memory bucket a b`` (like gs:// in epath)."""

  def __new__(cls, *parts):
    full = "/".join(os.fspath(p) for p in parts)
    if full.startswith(PREFIX):
      parts = ("/memory/" + full[len(PREFIX):],)
    return pathlib.PurePosixPath.__new__(cls, *parts)

  @property
  def _uri_scheme(self) -> str | None:
    return "memory" if self.parts[:2] == ("/", "memory") else None

  @property
  def _backend(self) -> backend.Backend:
    return _BACKEND


def objects(root: str) -> dict[str, bytes]:
  """Every object under `root` (``memory://...``): name relative to `root` -> its bytes."""
  fs = fsspec.filesystem("memory")
  base = "/" + root[len(PREFIX):].rstrip("/")
  return {path[len(base) + 1:]: fs.cat_file(path) for path in fs.find(base)}


def clear() -> None:
  """Empties the process-wide memory store."""
  fs = fsspec.filesystem("memory")
  fs.store.clear()
  fs.pseudo_dirs.clear()
  fs.pseudo_dirs.append("")
