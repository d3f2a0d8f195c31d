"""Fake recordings for tests of the real-audio readers: speech-like tone syllables."""

import numpy as np


def speechlike(seed: int, rate: int, seconds: float = 1.2, channels: int = 1) -> np.ndarray:
  """Tone syllables with gaps under 0.35 s, 0.2 s of silence either side."""
  rng = np.random.default_rng(seed)
  pieces = [np.zeros(int(0.2 * rate))]
  made = 0.0
  while made < seconds:
    n = int(rng.uniform(0.12, 0.25) * rate)
    t = np.arange(n) / rate
    pieces.append(0.3 * np.sin(2 * np.pi * rng.uniform(150, 300) * t) * np.hanning(n))
    gap = int(rng.uniform(0.03, 0.1) * rate)
    pieces.append(np.zeros(gap))
    made += (n + gap) / rate
  pieces.append(np.zeros(int(0.2 * rate)))
  x = np.concatenate(pieces).astype(np.float32)
  return np.stack([x] * channels, axis=1) if channels > 1 else x


def mp3_bytes(audio: np.ndarray, rate: int) -> bytes:
  """`audio` (float32 [n]) as an MP3 file's bytes."""
  import io
  import soundfile as sf
  buffer = io.BytesIO()
  sf.write(buffer, np.asarray(audio, np.float32), rate, format="MP3")
  return buffer.getvalue()


def queen_archive_file(path, resources, *, magic=b"QTBL", compression=1, shift=0) -> None:
  """A ScummVM QTBL file at `path` holding `resources` ((name, bytes) pairs), laid out as
  corpus/queen_archive.py's docstring says; `shift` moves every offset."""
  import struct
  header = struct.pack(">4s6s2sBH", magic, b"CEM10\0", b"\0\0", compression, len(resources))
  offset = len(header) + 21 * len(resources) + shift
  table, blobs = b"", b""
  for name, blob in resources:
    table += struct.pack(">12sBII", name.encode("ascii"), 1, offset, len(blob))
    offset += len(blob)
    blobs += blob
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(header + table + b"\0" * shift + blobs)
