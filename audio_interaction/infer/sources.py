"""Live audio sources: async iterators of float32 mono 16 kHz pieces [n], any n.

Every source is an `AudioSource`: ``async for piece in source`` yields the audio as
it arrives, in pieces of whatever length the device, file or socket gives (the live
loop re-chunks them with `audio.chunking.ChunkAssembler`). Two attributes tell the
loop how to treat it:

* ``sample_rate``: the rate the pieces are at; the loop refuses anything but the
  model's 16 kHz with an `AudioError` naming it (`audio.io.validate_samples`);
* ``paced``: the source delivers at a clock rate it does not wait for (a microphone,
  a socket, a file played at real time). When compute falls behind such a source
  the loop drops chunks; an unpaced one (a file read as fast as possible) is simply
  read more slowly instead.

Pieces are not checked here beyond decoding: the loop validates each one (dtype,
rank, NaN/Inf), so that a bad piece fails after everything before it was logged.
`MicSource` and `WebSocketSource` import their packages (sounddevice, websockets:
``pip install 'audio_interaction[live]'``) only when iterated, and raise
`SourceUnavailable` naming the missing package, library or device.
"""

from __future__ import annotations

import abc
import asyncio
import math
import os
import sys
import threading
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any, BinaryIO

import numpy as np

from audio_interaction.audio.io import AudioError, probe_audio, stream_audio
from audio_interaction.stream_format import SAMPLE_RATE

# Raw PCM layouts accepted on stdin and websockets: little-endian, mono, interleaved.
PCM_FORMATS: dict[str, np.dtype] = {"s16le": np.dtype("<i2"), "f32le": np.dtype("<f4")}
_INSTALL_LIVE = "pip install 'audio_interaction[live]'"


class SourceUnavailable(RuntimeError):
  """A source cannot start: its package, system library, device or server is missing."""


class AudioSource(abc.ABC):
  """An async iterable of float32 mono pieces [n] at `sample_rate`.

  Attributes:
    name: shown in logs and error messages.
    sample_rate: Hz of the pieces (the loop requires the model's rate).
    paced: True when audio arrives on its own clock (see the module docstring).
  """

  name: str = "source"
  sample_rate: int = SAMPLE_RATE
  paced: bool = True

  @abc.abstractmethod
  def pieces(self) -> AsyncIterator[np.ndarray]:
    """Yields pieces [n] as they arrive; returns at the end of the stream."""

  def __aiter__(self) -> AsyncIterator[np.ndarray]:
    return self.pieces()


class PcmDecoder:
  """Raw little-endian PCM bytes -> float32 samples, carrying a split sample to the next call."""

  def __init__(self, pcm_format: str = "s16le"):
    if pcm_format not in PCM_FORMATS:
      raise AudioError(f"unknown PCM format {pcm_format!r}; known: {', '.join(PCM_FORMATS)}")
    self.format = pcm_format
    self.dtype = PCM_FORMATS[pcm_format]
    self._carry = b""

  @property
  def pending_bytes(self) -> int:
    """Bytes of a sample not yet complete."""
    return len(self._carry)

  def decode(self, data: bytes) -> np.ndarray:
    """bytes -> [n] float32 (s16le scaled by 1/32768); a split sample waits for the next call."""
    data = self._carry + bytes(data)
    whole = len(data) - len(data) % self.dtype.itemsize
    self._carry = data[whole:]
    samples = np.frombuffer(data[:whole], self.dtype)
    if self.dtype.kind == "i":
      return samples.astype(np.float32) / np.float32(2 ** (8 * self.dtype.itemsize - 1))
    return samples.astype(np.float32)

  def finish(self, where: str) -> None:
    """At the end of the stream: a dangling partial sample is a malformed stream."""
    if self._carry:
      raise AudioError(f"{where}: stream ended inside a sample ({len(self._carry)} trailing "
                       f"bytes; {self.format} samples are {self.dtype.itemsize} bytes)")


class _Pacer:
  """Waits until audio is due at `speed` × real time (infinite speed: just yields control)."""

  def __init__(self, speed: float, sample_rate: int):
    if not speed > 0:
      raise ValueError(f"speed must be > 0 (float('inf') for as fast as possible), got {speed}")
    self.speed, self.sample_rate = speed, sample_rate
    self._origin: float | None = None

  async def until(self, samples: int) -> None:
    """Sleeps until the first `samples` samples are due since the first call."""
    if math.isinf(self.speed):
      await asyncio.sleep(0)  # let the loop run its other tasks between pieces
      return
    now = asyncio.get_running_loop().time()
    if self._origin is None:
      self._origin = now
    await asyncio.sleep(max(0.0, self._origin + samples / self.sample_rate / self.speed - now))

  def pause(self, seconds: float) -> None:
    """Shifts the clock: audio after a stall is due later, not delivered in a burst."""
    if self._origin is not None:
      self._origin += seconds


class ArraySource(AudioSource):
  """A numpy waveform played at `speed` × real time, for tests, demos and benchmarks.

  Args:
    audio: [S] samples (dtype not converted: the loop checks it).
    sample_rate: the rate `audio` is at.
    speed: 1.0 real time; float('inf') as fast as the loop reads (unpaced).
    piece_ms: length of the pieces handed out.
    stall_at, stall_seconds: optionally stop delivering for `stall_seconds` (wall time)
      once the stream reaches `stall_at` seconds, as a network source can.
  """

  def __init__(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE, *,
               speed: float = float("inf"), piece_ms: float = 20.0,
               stall_at: float | None = None, stall_seconds: float = 0.0, name: str = "array"):
    self.audio = np.asarray(audio)
    self.sample_rate, self.speed, self.name = int(sample_rate), speed, name
    self.piece = max(1, int(round(piece_ms * sample_rate / 1000)))
    self.stall_at, self.stall_seconds = stall_at, stall_seconds
    self.paced = not math.isinf(speed)
    _Pacer(speed, sample_rate)  # checks speed now rather than when iterated

  async def pieces(self) -> AsyncIterator[np.ndarray]:
    pacer = _Pacer(self.speed, self.sample_rate)
    stalled = self.stall_at is None
    for start in range(0, self.audio.shape[0], self.piece):
      if not stalled and start >= self.stall_at * self.sample_rate:
        stalled = True
        await asyncio.sleep(self.stall_seconds)
        pacer.pause(self.stall_seconds)
      piece = self.audio[start:start + self.piece]
      await pacer.until(start + piece.shape[0])
      yield piece


class FileSource(AudioSource):
  """An audio file played at `speed` × real time (float('inf'): as fast as possible).

  The file is checked when the source is made (`audio.io.probe_audio`: missing,
  empty, corrupt or zero-length files are an `AudioError` at once, before any model
  loads), then decoded block by block, mixed down to mono per block and, at another
  rate than 16 kHz, resampled by a streaming resampler (`audio.io.stream_audio`):
  memory stays flat whatever the file's length, rate and channels. ``resample=False``
  makes another rate an error instead.
  """

  def __init__(self, path: str | os.PathLike[str], *, speed: float = 1.0,
               piece_ms: float = 20.0, resample: bool = True):
    self.path, self.speed, self.resample = os.fspath(path), speed, resample
    self.name = self.path
    self.piece_ms = piece_ms
    self.paced = not math.isinf(speed)
    _Pacer(speed, SAMPLE_RATE)
    self.info = probe_audio(self.path, require_rate=None if resample else SAMPLE_RATE)

  async def pieces(self) -> AsyncIterator[np.ndarray]:
    pacer = _Pacer(self.speed, SAMPLE_RATE)
    done = 0
    for piece in stream_audio(self.path, SAMPLE_RATE, block_seconds=self.piece_ms / 1000,
                              resample=self.resample, info=self.info):
      done += piece.shape[0]
      await pacer.until(done)
      yield piece


async def _threaded_reads(read: Any, nbytes: int, max_pending: int = 32
                          ) -> AsyncIterator[bytes]:
  """Yields `read(nbytes)` results from a daemon thread until b"" (end of stream).

  Why a daemon thread rather than `asyncio.to_thread`: a read blocked on a pipe cannot
  be cancelled, and a thread of the default executor would hold up interpreter exit
  after an error until the writer sends more. At most `max_pending` reads wait for
  the loop, so a fast writer never fills memory.
  """
  loop = asyncio.get_running_loop()
  queue: asyncio.Queue = asyncio.Queue()
  credits = threading.Semaphore(max_pending)

  def work() -> None:
    while True:
      credits.acquire()
      try:
        data = read(nbytes)
      except Exception as error:  # handed to the loop, which raises it there
        loop.call_soon_threadsafe(queue.put_nowait, error)
        return
      loop.call_soon_threadsafe(queue.put_nowait, data or b"")
      if not data:
        return

  threading.Thread(target=work, name="pcm-reader", daemon=True).start()
  while True:
    item = await queue.get()
    credits.release()
    if isinstance(item, Exception):
      raise item
    if not item:
      return
    yield item


class PcmStreamSource(AudioSource):
  """Raw PCM (s16le or f32le, mono) from an `asyncio.StreamReader` or a binary file object.

  Args:
    stream: e.g. ``sys.stdin.buffer``, an open file, or a StreamReader of a socket.
    pcm_format: "s16le" (16-bit signed) or "f32le" (32-bit float).
    sample_rate: the rate the writer sends (the loop requires the model's 16 kHz).
    piece_ms: bytes asked for per read.
    paced: True for a live writer (e.g. ``arecord -f S16_LE -r 16000 -c 1 -t raw``).
  """

  def __init__(self, stream: asyncio.StreamReader | BinaryIO, pcm_format: str = "s16le", *,
               sample_rate: int = SAMPLE_RATE, piece_ms: float = 20.0, paced: bool = True,
               name: str = "pcm"):
    self.decoder_format = pcm_format
    PcmDecoder(pcm_format)  # checks the format now
    self.stream, self.sample_rate, self.paced, self.name = stream, int(sample_rate), paced, name
    self.nbytes = max(1, int(round(piece_ms * sample_rate / 1000))) * PCM_FORMATS[pcm_format].itemsize

  async def pieces(self) -> AsyncIterator[np.ndarray]:
    decoder = PcmDecoder(self.decoder_format)
    if isinstance(self.stream, asyncio.StreamReader):
      async def reads():
        while data := await self.stream.read(self.nbytes):
          yield data
      chunks = reads()
    else:
      # read1 returns what is there now (low latency on a live pipe); read waits for all.
      chunks = _threaded_reads(getattr(self.stream, "read1", self.stream.read), self.nbytes)
    async for data in chunks:
      samples = decoder.decode(data)
      if samples.size:
        yield samples
    decoder.finish(self.name)


class StdinSource(PcmStreamSource):
  """Raw PCM on standard input: ``arecord -f S16_LE -r 16000 -c 1 -t raw | audio-interaction listen --stdin``."""

  def __init__(self, pcm_format: str = "s16le", *, sample_rate: int = SAMPLE_RATE,
               piece_ms: float = 20.0, paced: bool = True):
    super().__init__(sys.stdin.buffer, pcm_format, sample_rate=sample_rate, piece_ms=piece_ms,
                     paced=paced, name="stdin")


def _import_sounddevice():
  try:
    import sounddevice
  except ImportError as error:
    raise SourceUnavailable(f"the microphone needs the Python package 'sounddevice' "
                            f"({_INSTALL_LIVE}): {error}") from error
  except OSError as error:  # the package is there, its PortAudio library is not
    raise SourceUnavailable(f"the microphone needs the PortAudio library for 'sounddevice' "
                            f"(apt-get install libportaudio2): {error}") from error
  return sounddevice


class MicSource(AudioSource):
  """The microphone through sounddevice (PortAudio), 16 kHz mono float32.

  Args:
    device: a sounddevice device name or index (default: the system's input).
    piece_ms: PortAudio block length.
    max_pending: blocks waiting for the loop before the oldest is dropped
      (counted in `overflows`): the recorder thread never blocks.
  """

  paced = True

  def __init__(self, device: int | str | None = None, *, piece_ms: float = 20.0,
               max_pending: int = 64):
    self.device, self.max_pending = device, max_pending
    self.piece = max(1, int(round(piece_ms * SAMPLE_RATE / 1000)))
    self.name = f"mic {device}" if device is not None else "mic"
    self.overflows = 0

  async def pieces(self) -> AsyncIterator[np.ndarray]:
    sd = _import_sounddevice()
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    def put(block: np.ndarray) -> None:
      if queue.qsize() >= self.max_pending:
        queue.get_nowait()
        self.overflows += 1
      queue.put_nowait(block)

    def callback(indata, frames, time_info, status) -> None:  # PortAudio's thread
      loop.call_soon_threadsafe(put, indata[:, 0].copy())

    try:
      stream = sd.InputStream(samplerate=SAMPLE_RATE, channels=1, dtype="float32",
                              blocksize=self.piece, device=self.device, callback=callback)
    except (sd.PortAudioError, ValueError) as error:
      try:
        inputs = [d["name"] for d in sd.query_devices() if d["max_input_channels"] > 0]
      except sd.PortAudioError:
        inputs = []
      raise SourceUnavailable(f"microphone {self.device if self.device is not None else '(default)'}"
                              f" cannot record 16 kHz mono: {error}; input devices: "
                              f"{inputs or 'none'}") from error
    with stream:
      while True:
        yield await queue.get()


class WebSocketSource(AudioSource):
  """A websocket client: binary frames are raw PCM (`pcm_format`), text frames are ignored.

  The stream ends when the server closes the connection normally (code 1000/1001).
  Every other end is a `SourceUnavailable` with the reason, after the audio received
  before it: a URL that is not ws:// or wss:// (raised at construction), a refused
  connection, no answer within `open_timeout` s, a handshake the server rejects (its
  HTTP status), a message larger than `max_message_bytes`, a connection dropped without
  a close frame, or a server closing with an error code.
  """

  paced = True

  def __init__(self, url: str, pcm_format: str = "s16le", *, sample_rate: int = SAMPLE_RATE,
               max_message_bytes: int = 2**20, open_timeout: float = 10.0):
    PcmDecoder(pcm_format)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
      raise SourceUnavailable(f"websocket {url}: not a websocket URL: expected "
                              "ws://host[:port][/path] or wss://...")
    if max_message_bytes < 1 or not open_timeout > 0:
      raise ValueError(f"max_message_bytes must be >= 1 and open_timeout > 0, got "
                       f"{max_message_bytes} and {open_timeout}")
    self.url, self.pcm_format, self.sample_rate, self.name = url, pcm_format, int(sample_rate), url
    self.max_message_bytes, self.open_timeout = int(max_message_bytes), float(open_timeout)

  async def pieces(self) -> AsyncIterator[np.ndarray]:
    try:
      from websockets import exceptions as ws_errors
      from websockets.asyncio.client import connect
    except ImportError as error:
      raise SourceUnavailable(f"websocket sources need the Python package 'websockets' >= 13 "
                              f"({_INSTALL_LIVE}): {error}") from error
    decoder = PcmDecoder(self.pcm_format)
    where = f"websocket {self.url}"
    try:
      connection = await connect(self.url, max_size=self.max_message_bytes,
                                 open_timeout=self.open_timeout)
    except ws_errors.InvalidURI as error:
      raise SourceUnavailable(f"{where}: not a websocket URL: {error}") from error
    except ws_errors.InvalidStatus as error:
      response = error.response
      raise SourceUnavailable(f"{where}: the server rejected the connection: HTTP "
                              f"{response.status_code} {response.reason_phrase}") from error
    except ws_errors.InvalidHandshake as error:
      raise SourceUnavailable(f"{where}: the websocket handshake failed: {error}") from error
    except ConnectionRefusedError as error:
      raise SourceUnavailable(f"{where}: connection refused (is the server running and "
                              "listening on that port?)") from error
    except TimeoutError as error:
      raise SourceUnavailable(f"{where}: no answer within {self.open_timeout:g} s") from error
    except (OSError, ValueError, ws_errors.WebSocketException) as error:
      raise SourceUnavailable(f"{where}: cannot connect: {error}") from error
    async with connection:
      try:
        async for message in connection:
          if isinstance(message, str):
            continue
          samples = decoder.decode(message)
          if samples.size:
            yield samples
      except ws_errors.ConnectionClosedError as error:
        raise SourceUnavailable(f"{where}: {self._closed_reason(error, ws_errors)}") from error
    decoder.finish(self.name)

  def _closed_reason(self, error: Any, ws_errors: Any) -> str:
    """Why a connection closed abnormally, from the close frames sent and received."""
    sent, received = error.sent, error.rcvd
    if isinstance(error.__cause__, ws_errors.PayloadTooBig) or (
        sent is not None and sent.code == 1009):
      return (f"a message larger than {self.max_message_bytes} bytes arrived "
              "(max_message_bytes)")
    if received is not None:
      return (f"the server closed the connection with code {received.code}"
              + (f": {received.reason}" if received.reason else ""))
    if sent is not None:
      return f"connection lost (code {sent.code}" + (f": {sent.reason})" if sent.reason else ")")
    return "connection dropped (closed without a close frame)"
