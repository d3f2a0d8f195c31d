"""`audio-interaction serve`: many live streams over websockets, one batched model step.

One process, one asyncio event loop, one compute thread:

* **HTTP**: `GET /` serves the page (`apps/static/`: microphone → AudioWorklet → 16 kHz
  PCM over the websocket, a live P(SPEAK) strip, the transcript, the replies spoken by
  the browser). Only the files shipped in `apps/static/` are served.
* **Websocket** `/ws`: the protocol of docs/serve_protocol.md — a JSON `start`
  message, binary PCM frames, JSON events back.
* **Compute**: the streams share one `infer.slots.SlotBatcher` (a fixed number of
  slots in one jitted step; a stream joins and leaves without recompiling). The
  scheduler ticks when every active stream has a chunk waiting or the oldest chunk
  has waited `max_wait` (a quarter chunk, 40 ms, by default), so a stalled client never holds
  up the others: its stream is not advanced (not padded with silence) and it gets a
  `stall` event after `stall_timeout` seconds without audio.

Security: binds 127.0.0.1 by default. Any other `--host` requires a token (given with
`--token`, or generated and printed), sent as `Authorization: Bearer TOKEN` or
`?token=TOKEN`. Requests whose `Host` is not a name of this server are refused
(DNS rebinding), websocket requests from a foreign `Origin` too. Limits: message
size (close 1009), connections (HTTP 503, or close 1013), streams (close 1013 when
every slot is busy), audio rate (audio beyond `max_speed` × real time, after a burst
allowance, is dropped and counted; a client whose dropped audio exceeds
`flood_seconds` is closed with 1008), a `start` message within `start_timeout` s.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import hmac
import ipaddress
import itertools
import json
import math
import pathlib
import secrets
import sys
import time
import urllib.parse
from typing import Any

import ml_collections
import numpy as np
# The websocket server: `websockets` comes with the "live" and "test" extras.
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from audio_interaction import config_lib
from audio_interaction import stream_format as sf
from audio_interaction.audio.chunking import ChunkAssembler
from audio_interaction.audio.io import AudioError, Resampler, validate_samples
from audio_interaction.data.tokenizer import Tokenizer
from audio_interaction.export.portable import bundle_infer_config, load_model
from audio_interaction.infer.engine import Engine
from audio_interaction.infer.live import DEFAULT_INSTRUCTION
from audio_interaction.infer.policies import policy_from_config
from audio_interaction.infer.slots import SlotBatcher, SlotsFull, StreamEvents
from audio_interaction.infer.sound_alerts import sound_alert_rule
from audio_interaction.infer.instruction_watch import instruction_watches
from audio_interaction.infer.sources import PcmDecoder
from audio_interaction.model.model import Params

STATIC_DIR = pathlib.Path(__file__).resolve().parent / "static"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml"}
PAGE_HEADERS = [("Content-Security-Policy",
                 "default-src 'self'; connect-src 'self'; img-src 'self' data:; "
                 "style-src 'self'; script-src 'self'; frame-ancestors 'none'"),
                ("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer"),
                ("Cache-Control", "no-store")]
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
SAMPLE_RATES = (8000, 48000)  # the range a client may send
PCM_FORMATS = ("s16le", "f32le")
MAX_INSTRUCTION_CHARS = 400

# Close codes (RFC 6455): every refusal after the handshake says why in its reason.
CLOSE_NORMAL, CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_TRY_LATER = 1000, 1008, 1009, 1013


@dataclasses.dataclass
class ServeConfig:
  """How the server runs.

  Attributes:
    host, port: where it listens (port 0: any free port, printed).
    token: required from every websocket client; None: none (loopback only).
    slots: streams stepped together (the batch size, compiled once).
    max_connections: open websocket connections at most.
    max_message_bytes: the largest message a client may send (bigger: close 1009).
    max_speed: audio beyond this × real time (after `burst_seconds`) is dropped.
    burst_seconds: audio a client may send ahead of real time at once.
    flood_seconds: dropped audio after which a client is closed (1008).
    stall_timeout: seconds without audio before a `stall` event.
    start_timeout: seconds to send the `start` message.
    max_wait: how long the oldest waiting chunk waits for the other streams (s);
      None: a quarter chunk.
    queue_chunks: chunks a stream may have waiting; older ones are dropped.
    allow_origins: extra browser origins allowed besides this server's own.
    log_dir: one JSONL event log per connection (None: no logs).
  """

  host: str = "127.0.0.1"
  port: int = 8765
  token: str | None = None
  slots: int = 8
  max_connections: int = 16
  max_message_bytes: int = 128 * 1024
  max_speed: float = 2.0
  burst_seconds: float = 2.0
  flood_seconds: float = 10.0
  stall_timeout: float = 2.0
  start_timeout: float = 10.0
  max_wait: float | None = None
  queue_chunks: int = 8
  allow_origins: tuple[str, ...] = ()
  log_dir: str | None = "runs/serve"

  def __post_init__(self):
    if not is_loopback(self.host) and not self.token:
      raise ValueError(f"--host {self.host} exposes the server beyond this machine: a token "
                       "is required (--token, or let serve generate one)")
    for name in ("slots", "max_connections", "max_message_bytes", "queue_chunks"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    for name in ("max_speed", "burst_seconds", "flood_seconds", "stall_timeout",
                 "start_timeout"):
      if not getattr(self, name) > 0:
        raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


def is_loopback(host: str) -> bool:
  if host == "localhost":
    return True
  try:
    return ipaddress.ip_address(host).is_loopback
  except ValueError:
    return False


class _RateLimit:
  """A token bucket in seconds of audio: `rate` × real time, `burst` seconds ahead."""

  def __init__(self, rate: float, burst: float):
    self.rate, self.burst = rate, burst
    self.allowance, self.last = burst, time.monotonic()

  def take(self, seconds: float) -> bool:
    now = time.monotonic()
    self.allowance = min(self.burst, self.allowance + (now - self.last) * self.rate)
    self.last = now
    if seconds <= self.allowance:
      self.allowance -= seconds
      return True
    return False


class ProtocolError(ValueError):
  """A client message the protocol does not allow (answered with an error event)."""


def _number(message: dict, name: str, default: float, low: float, high: float) -> float:
  value = message.get(name, default)
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
    raise ProtocolError(f"{name} must be a number, got {value!r}")
  if not low <= value <= high:
    raise ProtocolError(f"{name} must be in [{low:g}, {high:g}], got {value!r}")
  return float(value)


def _instruction(message: dict, default: str) -> str:
  text = message.get("instruction", default)
  if not isinstance(text, str):
    raise ProtocolError(f"instruction must be a string, got {type(text).__name__}")
  if len(text) > MAX_INSTRUCTION_CHARS:
    raise ProtocolError(f"instruction is {len(text)} characters; at most {MAX_INSTRUCTION_CHARS}")
  return text


def parse_start(message: dict, default_threshold: float) -> dict[str, Any]:
  """The checked fields of a `start` message (ProtocolError names the bad one)."""
  rate = message.get("sample_rate", sf.SAMPLE_RATE)
  if isinstance(rate, bool) or not isinstance(rate, int) or not (
      SAMPLE_RATES[0] <= rate <= SAMPLE_RATES[1]):
    raise ProtocolError(f"sample_rate must be an integer in [{SAMPLE_RATES[0]}, "
                        f"{SAMPLE_RATES[1]}] Hz, got {rate!r}")
  pcm_format = message.get("format", "s16le")
  if pcm_format not in PCM_FORMATS:
    raise ProtocolError(f"format must be one of {', '.join(PCM_FORMATS)}, got {pcm_format!r}")
  return {"instruction": _instruction(message, DEFAULT_INSTRUCTION), "sample_rate": rate,
          "format": pcm_format,
          "threshold": _number(message, "threshold", default_threshold, 0.0, 1.0)}


class Connection:
  """One client's stream: decode → resample → chunks → the batcher; records → events."""

  def __init__(self, server: Server, websocket: ServerConnection, number: int):
    self.server, self.websocket, self.number = server, websocket, number
    self.outbox: asyncio.Queue = asyncio.Queue(maxsize=4096)
    self.row = self.stream_id = None
    self.events: StreamEvents | None = None
    self.policy = None
    self.rate_limit = _RateLimit(server.config.max_speed, server.config.burst_seconds)
    self.received_seconds = 0.0
    self.rate_dropped_seconds = 0.0
    self.rate_dropped_frames = 0
    self.perceived = self.pushed = 0
    self.stalls = 0
    self.last_message = 0.0  # time.monotonic() of the last message received
    self.stalled_since: float | None = None  # the last message before a reported stall
    self._last_drop_event = 0.0
    self._log = None
    self.closing = False
    self.done = asyncio.Event()

  # ---------------------------------------------------------------- events
  def emit(self, event: dict[str, Any], flush: bool = True) -> None:
    """Queues one event for the client (and its log line; `flush=False` when the caller
    flushes the log once for several events)."""
    message = json.dumps(event)
    if self._log is not None:
      self._log.write(message + "\n")
      if flush:
        self._log.flush()
    try:
      self.outbox.put_nowait(message)
    except asyncio.QueueFull:  # the client does not read its events
      if not self.closing:
        self.closing = True
        asyncio.ensure_future(self.websocket.close(CLOSE_POLICY, "events not being read"))

  def error(self, message: str, **fields: Any) -> None:
    self.emit({"event": "error", "time": round(self.stream_time, 4), "message": message,
               **fields})

  @property
  def stream_time(self) -> float:
    return self.received_seconds

  async def send_loop(self) -> None:
    with contextlib.suppress(ConnectionClosed):
      while True:
        await self.websocket.send(await self.outbox.get())

  # -------------------------------------------------------------- messages
  def start(self, message: dict) -> None:
    fields = parse_start(message, self.server.default_threshold)
    server = self.server
    ids = server.tokenizer.encode(fields["instruction"])
    self.policy = policy_from_config(server.infer, chunk_seconds=server.chunk_seconds,
                                     threshold=fields["threshold"])
    threshold = getattr(self.policy, "threshold", fields["threshold"])
    self.row, self.stream_id = server.batcher.join(ids, self.policy)
    self.events = StreamEvents(server.tokenizer.decode, threshold)
    self.decoder = PcmDecoder(fields["format"])
    self.sample_rate = fields["sample_rate"]
    self.resampler = Resampler(self.sample_rate, sf.SAMPLE_RATE)
    self.assembler = ChunkAssembler(server.chunk_samples)
    if server.config.log_dir is not None:
      path = pathlib.Path(server.config.log_dir) / f"connection-{self.number}.jsonl"
      path.parent.mkdir(parents=True, exist_ok=True)
      self._log = open(path, "w")
    server.by_stream[(self.row, self.stream_id)] = self
    config = server.config
    self.emit({"event": "ready", "time": 0.0, "connection": self.number, "slot": self.row,
               "slots": config.slots, "instruction": fields["instruction"],
               "threshold": threshold, "policy": type(self.policy).__name__,
               "sample_rate": self.sample_rate, "format": fields["format"],
               "model_sample_rate": sf.SAMPLE_RATE, "chunk_seconds": server.chunk_seconds,
               "limits": {"max_message_bytes": config.max_message_bytes,
                          "max_speed": config.max_speed, "burst_seconds": config.burst_seconds,
                          "flood_seconds": config.flood_seconds,
                          "stall_timeout": config.stall_timeout}})

  def control(self, message: dict) -> None:
    kind = message.get("type")
    if kind == "instruction":
      text = _instruction(message, "")
      ids = self.server.tokenizer.encode(text)
      tokens = sf.instruction_tokens(ids)
      self.server.batcher.change_instruction(self.row, self.stream_id, ids)
      self.emit({"event": "instruction", "time": round(self.stream_time, 4), "text": text,
                 "tokens": len(tokens)})
    elif kind == "threshold":
      threshold = _number(message, "threshold", 0.5, 0.0, 1.0)
      if hasattr(self.policy, "threshold"):
        self.policy.threshold = threshold
      self.events.threshold = threshold
      self.emit({"event": "threshold", "time": round(self.stream_time, 4),
                 "threshold": threshold})
    elif kind == "start":
      raise ProtocolError("the stream has started already")
    else:
      raise ProtocolError(f"unknown message type {kind!r}; expected start, instruction, "
                          "threshold or stop")

  def audio(self, data: bytes) -> bool:
    """Takes one binary frame; False when the client floods and must be closed."""
    width = self.decoder.dtype.itemsize
    seconds = (len(data) + self.decoder.pending_bytes) // width / self.sample_rate
    if not self.rate_limit.take(seconds):
      self.rate_dropped_seconds += seconds
      self.rate_dropped_frames += 1
      now = time.monotonic()
      if now - self._last_drop_event > 0.5:
        self._last_drop_event = now
        self.emit({"event": "drop", "time": round(self.stream_time, 4), "reason": "rate",
                   "dropped_seconds": round(self.rate_dropped_seconds, 3),
                   "dropped_frames": self.rate_dropped_frames,
                   "max_speed": self.server.config.max_speed})
      return self.rate_dropped_seconds <= self.server.config.flood_seconds
    samples = self.decoder.decode(data)
    if not samples.size:
      return True
    if self.decoder.dtype.kind == "f":  # integer PCM always decodes to finite samples
      validate_samples(samples, expected_ndim=(1,),
                       where=f"connection {self.number} at {self.stream_time:.2f} s")
    self.received_seconds += samples.size / self.sample_rate
    self._push(self.resampler(samples))
    return True

  def _push(self, samples: np.ndarray, flush: bool = False) -> None:
    chunks = self.assembler.push(samples) if samples.size else []
    if flush:
      chunks += self.assembler.flush(pad=True)
    now = time.monotonic()
    for chunk in chunks:
      if self.server.batcher.push(self.row, self.stream_id, chunk, now):
        self.emit({"event": "drop", "time": round(self.stream_time, 4), "reason": "behind",
                   "dropped_chunks": self.server.batcher.dropped(self.row, self.stream_id)})
      self.pushed += 1
    if chunks:
      self.server.wake.set()

  def finish_audio(self) -> None:
    """The end of the stream: the resampler's tail and a zero-padded last chunk."""
    self._push(self.resampler.flush(), flush=True)

  def on_record(self, step) -> None:
    record = step.record
    self.perceived += 1
    batch = self.server.batcher
    fields = {"lag_seconds": round(step.stepped - step.arrived, 4),
              "step_ms": round(1000 * record.compute_seconds, 3),
              "batch": batch.step_seconds[-1][0] if batch.step_seconds else 1}
    for event in self.events.events(record, **fields):
      self.emit(event, flush=False)
    if self._log is not None:
      self._log.flush()
    if self.perceived >= self.pushed and self._ending:
      self._ending.set()

  _ending: asyncio.Event | None = None

  def summary(self) -> dict[str, Any]:
    return {"chunks": self.perceived, "replies": self.events.replies if self.events else 0,
            "received_seconds": round(self.received_seconds, 3),
            "dropped_rate_seconds": round(self.rate_dropped_seconds, 3),
            "dropped_behind_chunks": (self.server.batcher.dropped(self.row, self.stream_id)
                                      if self.row is not None else 0),
            "stalls": self.stalls}

  def close_log(self) -> None:
    if self._log is not None:
      self._log.close()
      self._log = None


class Server:
  """The serving process: the batcher, its scheduler, and the websocket/HTTP front."""

  def __init__(self, engine: Engine, params: Params, tokenizer: Tokenizer,
               infer: ml_collections.ConfigDict, config: ServeConfig):
    self.engine, self.params, self.tokenizer, self.infer = engine, params, tokenizer, infer
    self.config = config
    model_config = engine.model.config
    self.chunk_samples, self.chunk_seconds = model_config.chunk_samples, model_config.chunk_seconds
    self.default_threshold = float(infer.threshold)
    self.batcher = SlotBatcher(engine, params, config.slots,
                               max_reply_tokens=infer.max_reply_tokens,
                               queue_chunks=config.queue_chunks, max_wait=config.max_wait,
                               sound_alerts=sound_alert_rule(
                                   infer, tokenizer.encode, chunk_seconds=self.chunk_seconds,
                                   sound_event_classes=model_config.sound_event_classes),
                               watches=instruction_watches(
                                   infer, tokenizer.encode, tokenizer.decode,
                                   chunk_seconds=self.chunk_seconds,
                                   sound_event_classes=model_config.sound_event_classes))
    self.by_stream: dict[tuple[int, int], Connection] = {}
    self.connections: set[Connection] = set()
    self.numbers = itertools.count(1)
    self.refused = collections.Counter()
    self.static = {"/" + p.name: p for p in STATIC_DIR.iterdir() if p.suffix in CONTENT_TYPES}
    self.static["/"] = STATIC_DIR / "index.html"
    self.port = config.port
    self.wake: asyncio.Event | None = None

  # ------------------------------------------------------------ handshake
  def allowed_hosts(self) -> set[str]:
    names = set(LOOPBACK_NAMES)
    if self.config.host not in ("0.0.0.0", "::"):
      names.add(self.config.host)
    for origin in self.config.allow_origins:
      names.add(urllib.parse.urlsplit(origin).hostname or "")
    return names

  def allowed_origins(self) -> set[str]:
    origins = set()
    for name in self.allowed_hosts():
      host = f"[{name}]" if ":" in name else name
      for scheme in ("http", "https"):
        origins.add(f"{scheme}://{host}:{self.port}")
    return origins | set(self.config.allow_origins)

  def _host_ok(self, request: Request) -> bool:
    host = request.headers.get("Host", "")
    name = urllib.parse.urlsplit(f"//{host}").hostname or ""
    return self.config.host in ("0.0.0.0", "::") or name in self.allowed_hosts()

  def _token_ok(self, request: Request) -> bool:
    if not self.config.token:
      return True
    given = request.headers.get("Authorization", "")
    given = given[7:] if given.startswith("Bearer ") else ""
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(request.path).query)
    given = given or (query.get("token") or [""])[0]
    return hmac.compare_digest(given.encode(), self.config.token.encode())

  def _refuse(self, status: int, reason: str, why: str) -> Response:
    self.refused[why] += 1
    headers = Headers([("Content-Type", "text/plain; charset=utf-8"), ("Connection", "close")])
    return Response(status, reason, headers, (why + "\n").encode())

  def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
    path = urllib.parse.urlsplit(request.path).path
    if not self._host_ok(request):
      return self._refuse(403, "Forbidden", "unknown Host header (DNS rebinding?)")
    if path != "/ws":
      file = self.static.get(path)
      if file is None or request.headers.get("Upgrade"):
        return self._refuse(404, "Not Found", "not found")
      headers = Headers([("Content-Type", CONTENT_TYPES[file.suffix])] + PAGE_HEADERS)
      return Response(200, "OK", headers, file.read_bytes())
    origin = request.headers.get("Origin")
    if origin is not None and origin not in self.allowed_origins():
      return self._refuse(403, "Forbidden", f"origin {origin} not allowed")
    if not self._token_ok(request):
      return self._refuse(401, "Unauthorized", "missing or wrong token")
    if len(self.connections) >= self.config.max_connections:
      return self._refuse(503, "Service Unavailable",
                          f"{self.config.max_connections} connections open; try later")
    return None

  # -------------------------------------------------------------- handler
  async def handle(self, websocket: ServerConnection) -> None:
    if len(self.connections) >= self.config.max_connections:
      self.refused["connections"] += 1
      await websocket.close(CLOSE_TRY_LATER, "too many connections")
      return
    conn = Connection(self, websocket, next(self.numbers))
    self.connections.add(conn)
    sender = asyncio.create_task(conn.send_loop())
    close_code, close_reason = CLOSE_NORMAL, "end of stream"
    try:
      close_code, close_reason = await self._converse(conn)
    except ConnectionClosed:
      close_code = None
    finally:
      if conn.row is not None:
        self.batcher.leave(conn.row, conn.stream_id)
        self.by_stream.pop((conn.row, conn.stream_id), None)
      self.connections.discard(conn)
      if close_code is not None:
        with contextlib.suppress(asyncio.TimeoutError, ConnectionClosed):
          await asyncio.wait_for(self._drain(conn), timeout=2.0)
        await websocket.close(close_code, close_reason)
      sender.cancel()
      conn.close_log()

  async def _drain(self, conn: Connection) -> None:
    while not conn.outbox.empty():
      await asyncio.sleep(0.01)

  async def _converse(self, conn: Connection) -> tuple[int, str]:
    websocket, config = conn.websocket, self.config
    # 1. the start message
    deadline = time.monotonic() + config.start_timeout
    while conn.row is None:
      try:
        message = await asyncio.wait_for(websocket.recv(),
                                         timeout=max(0.0, deadline - time.monotonic()))
      except asyncio.TimeoutError:
        return CLOSE_POLICY, f"no start message within {config.start_timeout:g} s"
      if isinstance(message, bytes):
        conn.error("audio before the start message; send {\"type\": \"start\", ...} first")
        continue
      try:
        parsed = self._json(message)
        if parsed.get("type") != "start":
          raise ProtocolError(f"expected a start message, got type {parsed.get('type')!r}")
        conn.start(parsed)
      except SlotsFull as error:
        conn.error(str(error))
        return CLOSE_TRY_LATER, "every slot is busy; try later"
      except (ProtocolError, ValueError) as error:
        conn.error(str(error))
    # 2. audio and control messages. A watchdog reports stalls: a timeout around every
    # recv (asyncio.wait_for) would cost a task and a timer per audio frame.
    conn.last_message = time.monotonic()
    watchdog = asyncio.create_task(self._watch_stall(conn))
    try:
      return await self._audio_and_control(conn)
    finally:
      watchdog.cancel()

  async def _watch_stall(self, conn: Connection) -> None:
    """Emits `stall` once `stall_timeout` seconds pass without a message."""
    timeout = self.config.stall_timeout
    while True:
      idle = time.monotonic() - conn.last_message
      if idle < timeout or conn.stalled_since is not None:
        # While stalled, look often enough that the next stall after a resume is late by
        # at most a quarter of the timeout.
        await asyncio.sleep(max(timeout - idle, 0.0) if conn.stalled_since is None
                            else timeout / 4)
        continue
      conn.stalled_since = conn.last_message
      conn.stalls += 1
      conn.emit({"event": "stall", "time": round(conn.stream_time, 4),
                 "waited_seconds": timeout})

  async def _audio_and_control(self, conn: Connection) -> tuple[int, str]:
    websocket, config = conn.websocket, self.config
    while True:
      message = await websocket.recv()
      conn.last_message = time.monotonic()
      if isinstance(message, bytes):
        if conn.stalled_since is not None:
          conn.emit({"event": "resume", "time": round(conn.stream_time, 4),
                     "stalled_seconds": round(conn.last_message - conn.stalled_since, 3)})
          conn.stalled_since = None
        try:
          if not conn.audio(message):
            return CLOSE_POLICY, (f"flood: more than {config.flood_seconds:g} s of audio "
                                  f"sent faster than {config.max_speed:g}x real time")
        except (AudioError, ValueError) as error:
          conn.error(str(error))
        continue
      try:
        parsed = self._json(message)
        if parsed.get("type") == "stop":
          return await self._stop(conn)
        conn.control(parsed)
      except (ProtocolError, ValueError) as error:
        conn.error(str(error))

  @staticmethod
  def _json(message: str) -> dict:
    try:
      parsed = json.loads(message)
    except json.JSONDecodeError as error:
      raise ProtocolError(f"not JSON: {error}") from None
    if not isinstance(parsed, dict):
      raise ProtocolError(f"expected a JSON object, got {type(parsed).__name__}")
    return parsed

  async def _stop(self, conn: Connection) -> tuple[int, str]:
    """`stop`: the last audio is perceived, a running reply ended, `end` sent."""
    conn._ending = asyncio.Event()
    conn.finish_audio()
    if conn.perceived < conn.pushed:
      with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(conn._ending.wait(), timeout=10.0)
    interrupted = conn.events.interrupt("stream_end", conn.stream_time, conn.perceived)
    if interrupted is not None:
      conn.emit(interrupted)
    conn.emit({"event": "end", "time": round(conn.stream_time, 4), **conn.summary()})
    return CLOSE_NORMAL, "end of stream"

  # ------------------------------------------------------------ scheduler
  async def schedule(self, compute: concurrent.futures.Executor) -> None:
    """Ticks the batcher when it is ready; hands each record to its connection."""
    loop = asyncio.get_running_loop()
    while True:
      self.wake.clear()
      delay = self.batcher.ready()
      if delay is None or delay > 0:
        # A timer that sets the event: wait_for would start a task at every wake-up
        # (every chunk of every stream).
        timer = loop.call_later(1.0 if delay is None else delay, self.wake.set)
        await self.wake.wait()
        timer.cancel()
        continue
      steps = await loop.run_in_executor(compute, self.batcher.tick)
      for step in steps:
        conn = self.by_stream.get((step.row, step.stream_id))
        if conn is not None:
          conn.on_record(step)

  async def run(self, ready: asyncio.Future | None = None) -> None:
    """Serves until cancelled."""
    compute = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="serve-step")
    loop = asyncio.get_running_loop()
    self.wake = asyncio.Event()
    try:
      await loop.run_in_executor(compute, self.batcher.warm_up)
      async with serve(self.handle, self.config.host, self.config.port,
                       process_request=self.process_request,
                       max_size=self.config.max_message_bytes, max_queue=16,
                       # PCM and short JSON events barely compress; deflating every
                       # frame both ways costs more CPU than the bytes it saves.
                       compression=None,
                       open_timeout=5, close_timeout=2, server_header=None) as server:
        self.port = next(iter(server.sockets)).getsockname()[1]
        if ready is not None:
          ready.set_result(self.port)
        await self.schedule(compute)
    finally:
      compute.shutdown(wait=False, cancel_futures=True)


def run_server(config: ServeConfig, *, bundle: str | None = None,
               infer: ml_collections.ConfigDict | None = None) -> None:
  """Loads the model and serves until Ctrl-C (`audio-interaction serve`)."""
  infer = infer if infer is not None else bundle_infer_config(bundle)
  model, params, tokenizer, note = load_model(config_lib.load_config(
      str(config_lib.experiments_dir() / "tiny.py")), bundle)
  engine = Engine.from_infer(model, infer, tokenizer)
  server = Server(engine, params, tokenizer, infer, config)
  print(f"serve: {note}; {config.slots} slots; compiling ...", flush=True)

  async def main() -> None:
    ready = asyncio.get_running_loop().create_future()
    task = asyncio.ensure_future(server.run(ready))
    done, _ = await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if ready.done():
      host = f"[{config.host}]" if ":" in config.host else config.host
      query = f"?token={config.token}" if config.token else ""
      print(f"serving on http://{host}:{ready.result()}/{query}", flush=True)
      print(f"websocket: ws://{host}:{ready.result()}/ws (protocol: docs/serve_protocol.md)",
            flush=True)
    await task

  with contextlib.suppress(KeyboardInterrupt):
    asyncio.run(main())


def generate_token() -> str:
  return secrets.token_urlsafe(18)


def main_args(args: Any, infer: ml_collections.ConfigDict) -> int:
  """The `serve` verb with parsed arguments (called by `apps/cli.py`)."""
  token = args.token
  if not is_loopback(args.host) and not token:
    token = generate_token()
    print(f"serve: --host {args.host} exposes the server: generated token {token}",
          file=sys.stderr, flush=True)
  config = ServeConfig(host=args.host, port=args.port, token=token, slots=args.slots,
                       max_connections=args.max_connections,
                       max_message_bytes=args.max_message_bytes, max_speed=args.max_speed,
                       flood_seconds=args.flood_seconds, stall_timeout=args.stall_timeout,
                       allow_origins=tuple(args.allow_origin or ()),
                       log_dir=None if args.log_dir == "" else args.log_dir)
  if args.threshold is not None:
    infer.threshold = args.threshold
  run_server(config, bundle=args.checkpoint, infer=infer)
  return 0
