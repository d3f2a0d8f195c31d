"""The spoken lines of Flight of the Amazon Queen, read from its ScummVM data file.

Debian's `flight-of-the-amazon-queen` (freeware: "give this game away", see its
copyright file) is the CD ("talkie") version of a 1995 adventure game, packed in one
ScummVM data file, `queen.1c`. Its 6,745 `.SB` resources are the game's spoken lines:
about 4.5 hours of professional English voice acting (Joe King, Faye Russell and the
people they meet), stored as MP3 at 11,025 Hz. That is by far the most real English
speech on the TRAIN side; the lines' text is not stored in a form we read, so
`train/pseudo_label.py` transcribes them.

The file, as this package ships it (big-endian): b"QTBL", a 6-byte version
("CEM10\\0": CD, English), 2 reserved bytes, a compression byte (1: MP3) and a
uint16 entry count; then per entry a 12-byte NUL-padded name, a bundle byte, a uint32
offset and a uint32 size (21 bytes each); then the resources back to back, the first
right after the table. `read_table` checks all of that and names what is wrong.

Speakers, from the resource names: "NNNNNNJ1.SB" and "JOE*.SB" are Joe; "NNNNNNP1.SB"
is the other person of dialogue NN (one character per dialogue file, nearly always);
cut-scene NN's lines ("CNNx_NNN.SB") are "cutscene-NN"; the rest "<name's letters
before a digit>" ("numbered" when it starts with one). Only approximately one voice
each: the labels group lines, nothing is trained on them.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import re
import struct
from typing import Final

PACKAGE: Final[str] = "flight-of-the-amazon-queen"
DATA_FILE: Final[str] = "usr/share/scummvm/flight-of-the-amazon-queen/queen.1c"
MAGIC: Final[bytes] = b"QTBL"
MP3: Final[int] = 1
_HEADER: Final[struct.Struct] = struct.Struct(">4s6s2sBH")
_ENTRY: Final[struct.Struct] = struct.Struct(">12sBII")
SPEECH_SUFFIX: Final[str] = ".SB"
_DIALOGUE_LINE = re.compile(r"^([0-9A-Z]{2})[0-9A-Z]{4}([JP])[A-Z]?[0-9]*\.SB$")
_CUTSCENE_LINE = re.compile(r"^C([0-9]{2})[A-Z]?_")


class QueenArchiveError(ValueError):
  """`queen.1c` is not the file this reader knows (truncated, another version)."""


@dataclasses.dataclass(frozen=True)
class Entry:
  """One resource of the archive: its name and where its bytes are."""

  name: str
  offset: int
  size: int


@functools.lru_cache(maxsize=2)
def read_table(path: str | pathlib.Path) -> tuple[Entry, ...]:
  """The resource table of `queen.1c` at `path`, in file order.

  Raises QueenArchiveError naming the problem: not a QTBL file, a compression other
  than MP3, a table that does not end where the first resource starts, or a resource
  past the end of the file (a truncated download).
  """
  path = pathlib.Path(path)
  size = path.stat().st_size
  with path.open("rb") as f:
    head = f.read(_HEADER.size)
    if len(head) < _HEADER.size:
      raise QueenArchiveError(f"{path}: {size} bytes, too short for a QTBL header")
    magic, version, _, compression, count = _HEADER.unpack(head)
    if magic != MAGIC:
      raise QueenArchiveError(f"{path}: starts with {magic!r}, not {MAGIC!r}: not a "
                              "ScummVM Flight of the Amazon Queen data file")
    if compression != MP3:
      raise QueenArchiveError(f"{path}: compression {compression}, this reader knows MP3 "
                              f"({MP3}) only (version {version!r})")
    table = f.read(count * _ENTRY.size)
  if len(table) < count * _ENTRY.size:
    raise QueenArchiveError(f"{path}: the table of {count} entries is cut short")
  entries = []
  for raw_name, _, offset, length in _ENTRY.iter_unpack(table):
    name = raw_name.split(b"\0", 1)[0].decode("ascii", "replace")
    if offset + length > size:
      raise QueenArchiveError(f"{path}: {name} ends at byte {offset + length}, past the "
                              f"file's {size} (truncated?)")
    entries.append(Entry(name, offset, length))
  table_end = _HEADER.size + count * _ENTRY.size
  first = min((e.offset for e in entries), default=table_end)
  if first != table_end:
    raise QueenArchiveError(f"{path}: the first resource starts at byte {first}, not "
                            f"after the table ({table_end})")
  return tuple(entries)


@functools.lru_cache(maxsize=2)
def _by_name(path: str) -> dict[str, Entry]:
  return {e.name: e for e in read_table(path)}


def read_member(path: str | pathlib.Path, name: str) -> bytes:
  """The bytes of resource `name` of the archive at `path` (KeyError if absent)."""
  entry = _by_name(str(path)).get(name)
  if entry is None:
    raise KeyError(f"{path}: no resource {name!r}")
  with open(path, "rb") as f:
    f.seek(entry.offset)
    return f.read(entry.size)


def speaker_of(name: str) -> str:
  """"020006J1.SB" -> "joe"; "020006P1.SB" -> "dialogue-02"; "C12A_003.SB" ->
  "cutscene-12"; "COMIC_01.SB" -> "COMIC"."""
  match = _DIALOGUE_LINE.match(name)
  if match:
    return "joe" if match.group(2) == "J" else f"dialogue-{match.group(1)}"
  if name.startswith("JOE"):
    return "joe"
  cutscene = _CUTSCENE_LINE.match(name)
  if cutscene:
    return f"cutscene-{cutscene.group(1)}"
  # "1000SSSS.SB"-style names (numbered descriptions) share one label.
  return re.split(r"[_0-9.]", name, maxsplit=1)[0] or "numbered"


def speech_entries(path: str | pathlib.Path) -> list[Entry]:
  """The spoken lines (`.SB` resources) of the archive at `path`, sorted by name."""
  return sorted((e for e in read_table(path) if e.name.endswith(SPEECH_SUFFIX)),
                key=lambda e: e.name)
