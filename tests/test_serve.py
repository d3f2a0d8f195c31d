"""`audio-interaction serve` refuses what it must, bounds what clients can do, and stays
up: against 127.0.0.1 only, every loop bounded in count and time."""

import asyncio
import json
import urllib.error
import urllib.request

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from audio_interaction.apps.serve import ServeConfig, parse_start, ProtocolError
from test_serve_page import start_server, stop_server

TOKEN = "s3cret-token"
SLOTS, MAX_CONNECTIONS, MAX_BYTES = 2, 4, 8192


@pytest.fixture(scope="module")
def port(tmp_path_factory):
  process, port = start_server(
      tmp_path_factory.mktemp("serve"), "--token", TOKEN, "--slots", str(SLOTS),
      "--max-connections", str(MAX_CONNECTIONS), "--max-message-bytes", str(MAX_BYTES),
      "--max-speed", "2", "--flood-seconds", "3", "--stall-timeout", "1")
  yield port
  stop_server(process)


def _url(port, query=""):
  return f"ws://127.0.0.1:{port}/ws{query}"


def _auth():
  return {"Authorization": f"Bearer {TOKEN}"}


def _start(**fields):
  return json.dumps({"type": "start", "instruction": "Answer briefly.", "sample_rate": 16000,
                     "format": "s16le", "threshold": 0.5, **fields})


def _pcm(seconds, seed=0):
  audio = 0.05 * np.random.default_rng(seed).normal(size=int(16000 * seconds))
  return (audio * 32767).astype("<i2").tobytes()


async def _events_until(ws, names, timeout=10.0, limit=2000):
  """Events until one whose name is in `names` (bounded in count and time)."""
  seen = []
  async with asyncio.timeout(timeout):
    for _ in range(limit):
      event = json.loads(await ws.recv())
      seen.append(event)
      if event["event"] in names:
        return seen
  raise AssertionError(f"none of {names} in {len(seen)} events")


def run(coroutine):
  return asyncio.run(asyncio.wait_for(coroutine, timeout=60))


def test_missing_or_wrong_token_is_refused_the_right_one_accepted(port):
  async def go():
    for query, headers in (("", {}), ("?token=wrong", {}),
                           ("", {"Authorization": "Bearer wrong"})):
      with pytest.raises(InvalidStatus) as refused:
        await connect(_url(port, query), additional_headers=headers, open_timeout=5)
      assert refused.value.response.status_code == 401
    for query, headers in (("", _auth()), (f"?token={TOKEN}", {})):
      async with connect(_url(port, query), additional_headers=headers) as ws:
        await ws.send(_start())
        assert json.loads(await ws.recv())["event"] == "ready"
  run(go())


def test_exposing_the_server_requires_a_token():
  with pytest.raises(ValueError, match="token is required"):
    ServeConfig(host="0.0.0.0", token=None)
  assert ServeConfig(host="0.0.0.0", token="t").token == "t"
  assert ServeConfig(host="127.0.0.1").token is None


def test_foreign_origin_and_unknown_host_are_refused(port):
  async def go():
    with pytest.raises(InvalidStatus) as refused:
      await connect(_url(port), additional_headers=_auth(), origin="http://evil.example",
                    open_timeout=5)
    assert refused.value.response.status_code == 403
    async with connect(_url(port), additional_headers=_auth(),
                       origin=f"http://127.0.0.1:{port}") as ws:  # the page's own origin
      await ws.send(_start())
      assert json.loads(await ws.recv())["event"] == "ready"
  run(go())
  # DNS rebinding: a page of another name resolving to 127.0.0.1 gets nothing.
  request = urllib.request.Request(f"http://127.0.0.1:{port}/", headers={"Host": "evil.example"})
  with pytest.raises(urllib.error.HTTPError) as refused:
    urllib.request.urlopen(request, timeout=5)
  assert refused.value.code == 403
  with urllib.request.urlopen(f"http://127.0.0.1:{port}/app.js", timeout=5) as page:
    assert b"getUserMedia" in page.read()  # the page itself loads
  with pytest.raises(urllib.error.HTTPError) as missing:
    urllib.request.urlopen(f"http://127.0.0.1:{port}/%2e%2e/setup.py", timeout=5)
  assert missing.value.code == 404


def test_oversized_frame_closes_with_1009(port):
  async def go():
    async with connect(_url(port), additional_headers=_auth()) as ws:
      await ws.send(_start())
      await _events_until(ws, {"ready"})
      await ws.send(b"\0" * (MAX_BYTES + 2))
      with pytest.raises(ConnectionClosed):
        await _events_until(ws, set(), timeout=10)
      assert ws.close_code == 1009
  run(go())


def test_a_flood_is_dropped_counted_and_closed_with_1008(port):
  async def go():
    async with connect(_url(port), additional_headers=_auth()) as ws:
      await ws.send(_start())
      await _events_until(ws, {"ready"})
      frame = _pcm(0.2)  # 6400 bytes < the size limit
      drops, closed = [], False
      for _ in range(200):  # 40 s of audio as fast as possible: 2 s burst + 2x real time
        try:
          await ws.send(frame)
        except ConnectionClosed:
          closed = True
          break
        await asyncio.sleep(0.005)
      try:
        async with asyncio.timeout(20):
          for _ in range(5000):
            event = json.loads(await ws.recv())
            if event["event"] == "drop" and event["reason"] == "rate":
              drops.append(event)
      except ConnectionClosed:
        closed = True
      assert closed and ws.close_code == 1008 and "flood" in ws.close_reason
      assert drops and drops[-1]["dropped_seconds"] > 0
      # Counted: what was dropped at least reached the flood limit, and no more audio
      # was accepted than the burst plus 2x real time over the time the flood lasted.
      assert drops[-1]["max_speed"] == 2.0
  run(go())


def test_connections_are_bounded_and_the_server_stays_up(port):
  async def go():
    async def attempt():
      try:
        ws = await connect(_url(port), additional_headers=_auth(), open_timeout=10)
      except InvalidStatus as refused:
        return refused.response.status_code
      return ws
    results = await asyncio.gather(*(attempt() for _ in range(100)))
    opened = [r for r in results if not isinstance(r, int)]
    refused = [r for r in results if isinstance(r, int)]
    # Some may be accepted then closed at once with 1013 (a race at the handshake).
    alive = []
    for ws in opened:
      try:
        await ws.send(_start())
        event = json.loads(await asyncio.wait_for(ws.recv(), 10))
        alive.append((ws, event["event"]))
      except ConnectionClosed:
        assert ws.close_code == 1013
    assert len(alive) <= MAX_CONNECTIONS and set(refused) <= {503}
    assert len(refused) >= 100 - MAX_CONNECTIONS - 0
    # At most SLOTS streams: the others are told every slot is busy (1013).
    ready = [ws for ws, name in alive if name == "ready"]
    assert len(ready) == min(SLOTS, len(alive))
    for ws, _ in alive:
      await ws.close()
    await asyncio.sleep(0.5)
    async with connect(_url(port), additional_headers=_auth()) as ws:  # still serving
      await ws.send(_start())
      assert json.loads(await ws.recv())["event"] == "ready"
  run(go())


def test_malformed_messages_get_an_error_event_and_the_connection_goes_on(port):
  async def go():
    async with connect(_url(port), additional_headers=_auth()) as ws:
      for bad, expected in (("{not json", "not JSON"), ("[1, 2]", "JSON object"),
                            (b"\x01\x02", "before the start"),
                            (_start(threshold=1.5), "threshold must be in [0, 1]"),
                            (_start(format="mp3"), "format must be one of"),
                            (_start(sample_rate=96000), "sample_rate must be")):
        await ws.send(bad)
        event = json.loads(await ws.recv())
        assert event["event"] == "error" and expected in event["message"], event
      await ws.send(_start())
      assert json.loads(await ws.recv())["event"] == "ready"
      await ws.send('{"type": "dance"}')
      event = json.loads(await ws.recv())
      assert event["event"] == "error" and "unknown message type" in event["message"]
      pcm = _pcm(0.5)
      for start in range(0, len(pcm), 3200):  # 0.1 s frames, under the size limit
        await ws.send(pcm[start:start + 3200])
      await ws.send(json.dumps({"type": "stop"}))
      events = await _events_until(ws, {"end"})
      assert sum(e["event"] == "chunk" for e in events) == 4  # 0.5 s: 3 chunks + padded one
  run(go())


def test_a_stalled_client_is_reported_and_resumes(port):
  async def go():
    async with connect(_url(port), additional_headers=_auth()) as ws:
      await ws.send(_start())
      await _events_until(ws, {"ready"})
      pcm = _pcm(0.32)
      await ws.send(pcm[:5120])
      await ws.send(pcm[5120:])
      events = await _events_until(ws, {"stall"}, timeout=10)
      assert sum(e["event"] == "chunk" for e in events) == 2
      await ws.send(_pcm(0.16, seed=1))
      await _events_until(ws, {"resume"}, timeout=10)
  run(go())


def test_start_messages_are_checked():
  assert parse_start({"type": "start"}, 0.4)["threshold"] == 0.4
  for bad in ({"threshold": -0.1}, {"threshold": True}, {"threshold": float("nan")},
              {"sample_rate": 16000.5}, {"instruction": 3}, {"instruction": "x" * 401}):
    with pytest.raises(ProtocolError):
      parse_start({"type": "start", **bad}, 0.5)
