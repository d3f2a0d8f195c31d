"""`WebSocketSource` against a real local server (127.0.0.1, a free port): every way a
connection fails is a `SourceUnavailable` with the reason, never a raw library error."""

from __future__ import annotations

import asyncio
import http
import socket

import numpy as np
import pytest

from audio_interaction.infer import sources

ws_server = pytest.importorskip("websockets.asyncio.server")

TIMEOUT = 20.0  # every test is bounded: a hang is a failure, not a stuck suite


async def _collect(source: sources.AudioSource, got: list[np.ndarray]) -> np.ndarray:
  async for piece in source:
    got.append(piece)
  return np.concatenate(got) if got else np.zeros(0, np.float32)


def _run_against(handler, make_source, **serve_kwargs):
  """Serves `handler` on 127.0.0.1:<free port>, reads `make_source(url)`; returns
  (pieces read, the error raised or None)."""
  got: list[np.ndarray] = []

  async def main():
    async with ws_server.serve(handler, "127.0.0.1", 0, **serve_kwargs) as server:
      port = server.sockets[0].getsockname()[1]
      try:
        await asyncio.wait_for(_collect(make_source(f"ws://127.0.0.1:{port}"), got), TIMEOUT)
      except Exception as error:  # pylint: disable=broad-except
        return error
    return None

  return got, asyncio.run(main())


def _pcm(n: int) -> bytes:
  return (np.arange(n) % 100).astype("<i2").tobytes()


@pytest.mark.parametrize("url", ["http://127.0.0.1:8765/", "ftp://example.org/x",
                                 "127.0.0.1:8765", "ws://", "wss:///path", "not a url"])
def test_a_bad_url_is_refused_with_the_reason(url):
  with pytest.raises(sources.SourceUnavailable, match="websocket .*: not a websocket URL"):
    sources.WebSocketSource(url)


def test_a_refused_connection_says_so():
  with socket.socket() as probe:  # a port nothing listens on
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
  source = sources.WebSocketSource(f"ws://127.0.0.1:{port}")
  with pytest.raises(sources.SourceUnavailable, match=f"127.0.0.1:{port}: connection refused"):
    asyncio.run(asyncio.wait_for(_collect(source, []), TIMEOUT))


def test_a_rejected_handshake_names_the_http_status():
  async def forbid(connection, request):
    return connection.respond(http.HTTPStatus.FORBIDDEN, "go away\n")

  _, error = _run_against(lambda c: None, sources.WebSocketSource, process_request=forbid)
  assert isinstance(error, sources.SourceUnavailable), repr(error)
  assert "HTTP 403" in str(error)


def test_a_message_too_big_is_a_clear_error_after_the_audio_before_it():
  async def handler(connection):
    await connection.send(_pcm(500))  # 1000 bytes: fine
    await connection.send(_pcm(5000))  # 10000 bytes: over the limit
    await connection.wait_closed()

  got, error = _run_against(
      handler, lambda url: sources.WebSocketSource(url, max_message_bytes=4096))
  assert isinstance(error, sources.SourceUnavailable), repr(error)
  assert "larger than 4096 bytes" in str(error) and "max_message_bytes" in str(error)
  assert sum(len(p) for p in got) == 500


def test_a_dropped_connection_is_a_clear_error_after_the_audio_before_it():
  async def handler(connection):
    await connection.send(_pcm(800))
    await asyncio.sleep(0.2)
    connection.transport.abort()  # no close frame: the network went away

  got, error = _run_against(handler, sources.WebSocketSource)
  assert isinstance(error, sources.SourceUnavailable), repr(error)
  assert "connection dropped" in str(error)
  assert sum(len(p) for p in got) == 800


def test_a_server_closing_with_an_error_code_names_it():
  async def handler(connection):
    await connection.send(_pcm(100))
    await connection.close(code=1011, reason="encoder crashed")

  got, error = _run_against(handler, sources.WebSocketSource)
  assert isinstance(error, sources.SourceUnavailable), repr(error)
  assert "code 1011" in str(error) and "encoder crashed" in str(error)
  assert sum(len(p) for p in got) == 100


def test_a_normal_close_ends_the_stream():
  async def handler(connection):
    await connection.send(_pcm(300))

  got, error = _run_against(handler, sources.WebSocketSource)
  assert error is None and sum(len(p) for p in got) == 300
