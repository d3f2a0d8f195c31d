"""Host-side re-chunking of a live audio source into the fixed chunks the model steps on.

Microphones, sockets and file readers deliver pieces of whatever length they like
(37 samples, 5000 samples, ...). The jitted model step wants one static chunk size,
so `ChunkAssembler` buffers the pieces and hands out ``chunk_samples``-long chunks
as soon as each is complete. Because the chunks are contiguous and in order, the
features computed chunk by chunk (`features.StreamingLogMel`) equal the offline
features of everything pushed, whatever the piece sizes were.
"""

from __future__ import annotations

import numpy as np


class ChunkAssembler:
  """Turns pieces of any length into consecutive chunks of exactly ``chunk_samples``.

  Usage::

    assembler = ChunkAssembler(chunk_samples=2560)
    for piece in source:                      # piece: float [n], any n >= 0
      for chunk in assembler.push(piece):     # chunk: float32 [2560]
        state, frames = step(state, chunk[None])
    tail = assembler.flush(pad=True)          # [] or [zero-padded last chunk]

  Pieces are 1-D (mono) floating arrays; they are copied, so the caller may reuse
  its buffers.
  """

  def __init__(self, chunk_samples: int, dtype: np.dtype | type = np.float32):
    """Args: chunk_samples: length of every chunk handed out; dtype: its dtype."""
    if int(chunk_samples) != chunk_samples or chunk_samples <= 0:
      raise ValueError(f"chunk_samples must be a positive integer, got {chunk_samples!r}")
    self.chunk_samples = int(chunk_samples)
    self.dtype = np.dtype(dtype)
    if not np.issubdtype(self.dtype, np.floating):
      raise TypeError(f"ChunkAssembler dtype must be floating, got {self.dtype}")
    # A fixed buffer of one chunk: pending samples always fit, since a full chunk is
    # handed out the moment it completes.
    self._buffer = np.zeros(self.chunk_samples, self.dtype)
    self._pending = 0
    self.samples_pushed = 0  # total real samples received, for the caller's clock

  @property
  def num_pending(self) -> int:
    """Samples received but not yet handed out in a chunk (``< chunk_samples``)."""
    return self._pending

  def push(self, piece: np.ndarray) -> list[np.ndarray]:
    """Adds a piece ``[n]`` (any ``n >= 0``); returns the chunks ``[chunk_samples]`` it completed.

    Returns a list (possibly empty) rather than a generator so that the piece is
    consumed even if the caller ignores the result.
    """
    piece = np.asarray(piece)
    if piece.ndim != 1:
      raise ValueError(
          f"ChunkAssembler.push: pieces must be mono 1-D arrays [n], got shape {piece.shape}"
      )
    if not np.issubdtype(piece.dtype, np.floating):
      raise TypeError(
          f"ChunkAssembler.push: piece has dtype {piece.dtype}; expected floating samples "
          "in [-1, 1] (convert integer PCM first, e.g. int16 / 32768)"
      )
    self.samples_pushed += piece.shape[0]
    chunks = []
    offset = 0
    while offset < piece.shape[0]:
      take = min(self.chunk_samples - self._pending, piece.shape[0] - offset)
      self._buffer[self._pending:self._pending + take] = piece[offset:offset + take]
      self._pending += take
      offset += take
      if self._pending == self.chunk_samples:
        chunks.append(self._buffer.copy())
        self._pending = 0
    return chunks

  def flush(self, pad: bool = True) -> list[np.ndarray]:
    """Hands out what is pending at the end of the stream and empties the buffer.

    Args:
      pad: if True the remainder is zero-padded to a full ``[chunk_samples]`` chunk
        (read `num_pending` first to know how many samples are real); if False it is
        returned as is, ``[num_pending]``.

    Returns:
      ``[]`` if nothing is pending, else a one-element list with the last chunk.
    """
    if not self._pending:
      return []
    tail = self._buffer[:self._pending].copy()
    self._pending = 0
    if pad:
      tail = np.pad(tail, (0, self.chunk_samples - tail.shape[0]))
    return [tail]
