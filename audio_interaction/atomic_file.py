"""Files that appear whole or not at all: written beside their name, then renamed on.

A checkpoint, a bundle's params or its config.json interrupted halfway (a killed
export, a full disk) must leave the previous file as it was, not half of a new one:
readers see the old file or the new one. Every writer of such a file in the library
goes through `replacing`. (Object stores have no rename; `data/storage.py` handles
those on top of this.)
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import uuid
from collections.abc import Iterator


def temporary_name(path: pathlib.Path) -> pathlib.Path:
  """A hidden name beside `path`, unique to this attempt (two processes, or two threads
  of one, may write the same file at once: Beam retries and speculative backups)."""
  return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:12]}.partial")


@contextlib.contextmanager
def replacing(path: str | os.PathLike) -> Iterator[pathlib.Path]:
  """Yields a temporary path beside `path` to write; when the block ends, the file there
  is flushed to disk and renamed onto `path` in one step (POSIX rename), keeping the
  permission bits of the file it replaces. If the block raises, or the file was not
  written, the temporary file is removed and `path` is left as it was.

  Example::

    with replacing(bundle / "params.msgpack") as tmp:
      tmp.write_bytes(payload)
  """
  path = pathlib.Path(path)
  tmp = temporary_name(path)
  try:
    yield tmp
    if not tmp.exists():
      raise FileNotFoundError(f"nothing was written to {tmp} (for {path})")
    descriptor = os.open(tmp, os.O_RDONLY)
    try:
      os.fsync(descriptor)
    finally:
      os.close(descriptor)
    if path.exists():
      os.chmod(tmp, path.stat().st_mode & 0o7777)
    os.replace(tmp, path)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise


def write_bytes(path: str | os.PathLike, data: bytes) -> pathlib.Path:
  """`path` holds `data`, or (if writing fails) what it held before."""
  with replacing(path) as tmp:
    tmp.write_bytes(data)
  return pathlib.Path(path)


def write_text(path: str | os.PathLike, text: str) -> pathlib.Path:
  """`path` holds `text` (UTF-8), or (if writing fails) what it held before."""
  return write_bytes(path, text.encode("utf-8"))
