"""Live loop: equals run_stream and the full forward; barge-in, stalls, bad frames,
backpressure, PCM sources and the `listen` verb."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import math
import shutil
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile

from audio_interaction import config_lib
from audio_interaction.apps import cli
from audio_interaction.audio.io import AudioError
from audio_interaction import stream_format as sf
from audio_interaction.corpus import tasks, worlds
from audio_interaction.corpus.timeline import render
from audio_interaction.data.tokenizer import ByteTokenizer
from audio_interaction.export import portable
from audio_interaction.apps import live_view
from audio_interaction.infer import live, sources
from audio_interaction.infer.engine import Engine
from audio_interaction.infer.policies import ThresholdPolicy
from audio_interaction.infer.run_stream import run_stream, stream_sequence
from audio_interaction.model.model import AudioInteractionModel
import model_testing

RATE, CHUNK = 16000, 2560
CHUNK_S = CHUNK / RATE


# --------------------------------------------------------------------- helpers
def read_log(path) -> list[dict]:
  """Every line must be one JSON object."""
  return [json.loads(line) for line in path.read_text().splitlines()]


def of_kind(events: list[dict], kind: str) -> list[dict]:
  return [e for e in events if e["event"] == kind]


@dataclasses.dataclass(frozen=True)
class ScriptedState:
  chunk: int = 0
  said: int = 0
  # One blank CTC frame per chunk: the stand-in hears no words.
  heard: np.ndarray = dataclasses.field(default_factory=lambda: np.full((1, 1), sf.PAD_ID))
  # No sound-event head: no class probabilities.
  sound_events: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((1, 0)))
  turn_end: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((1, 0)))


class ScriptedEngine:
  """An `Engine` stand-in: P(SPEAK) per chunk from `probs`, reply tokens from `reply`.

  `delay` seconds of sleep per perceive make a slow model. The reply never ends
  unless `reply` holds `<eor>`; after it, the next reply starts from its beginning.
  """

  def __init__(self, probs, reply, *, delay: float = 0.0, tokens_per_chunk: int = 3):
    config = types.SimpleNamespace(chunk_samples=CHUNK, sample_rate=RATE,
                                   chunk_seconds=CHUNK / RATE, tokens_per_chunk=tokens_per_chunk)
    self.model = types.SimpleNamespace(config=config)
    self.probs, self.reply, self.delay = list(probs), list(reply), delay
    self.fed: list[list[int]] = []

  def init_state(self, params, instruction_ids, seed=0):
    return ScriptedState()

  def feed(self, params, state, tokens, valid=None):
    self.fed.append([int(t) for t in np.asarray(tokens)[0]])
    return state

  def perceive(self, params, state, chunk):
    assert chunk.shape == (1, CHUNK)
    time.sleep(self.delay)
    p = self.probs[min(state.chunk, len(self.probs) - 1)]
    return dataclasses.replace(state, chunk=state.chunk + 1), np.asarray([[1 - p, p]])

  def speak(self, params, state, active, n, limit=None):
    said = state.said
    tokens = []
    budget = n if limit is None else min(n, int(np.asarray(limit)[0]))
    while len(tokens) < budget:
      token = self.reply[said % len(self.reply)]
      said += 1
      tokens.append(token)
      if token == sf.EOR_ID:
        said = 0
        break
    row = np.zeros((1, n), np.int32)
    row[0, :len(tokens)] = tokens
    return dataclasses.replace(state, said=said), row, np.asarray([len(tokens)])


def session_for(engine, tmp_path, *, sinks=(), params=None, tokenizer=None,
                **config) -> live.LiveSession:
  """A session logging to tmp_path/events.jsonl; `config` are `LiveConfig` fields."""
  return live.LiveSession(engine, params, tokenizer or ByteTokenizer(), live.LiveConfig(**config),
                          [live.JsonlLog(tmp_path / "events.jsonl"), *sinks])


def generated_stream(speech, sounds, name: str = "chat_single", seed: int = 3) -> np.ndarray:
  timeline = tasks.build(name, seed, speech, sounds, tasks.TaskConfig(chunk_ms=160))
  return render(timeline, chunk_ms=160)


@pytest.fixture(scope="module")
def small():
  """A small random model whose vocabulary covers ByteTokenizer's ids."""
  tokenizer = ByteTokenizer()
  config = model_testing.small_config(**{"model.decoder.vocab_size": tokenizer.vocab_size})
  model = AudioInteractionModel(config)
  return model, model.init(jax.random.key(4)), tokenizer, config


# -------------------------------------------- (a) equals run_stream and forward
def test_live_loop_equals_run_stream_and_the_full_forward(small, speech, sounds, tmp_path):
  model, params, tokenizer, config = small
  engine = Engine(model)
  audio = generated_stream(speech, sounds)[:40 * CHUNK]
  instruction = "answer briefly"
  ids = tokenizer.encode(instruction)
  probe = run_stream(engine, params, audio, ids, ThresholdPolicy(2.0))  # never speaks
  # A threshold inside the observed range: the random model speaks on some chunks only.
  threshold = float(np.median([c.speak_probability for c in probe.chunks]))
  offline = run_stream(engine, params, audio, ids, ThresholdPolicy(threshold))

  session = session_for(engine, tmp_path, params=params, tokenizer=tokenizer,
                        instruction=instruction, threshold=threshold)
  result = asyncio.run(session.run(sources.ArraySource(audio, piece_ms=37)))
  trace = result.trace
  assert [c.index for c in trace.chunks] == list(range(len(offline.chunks)))
  assert [c.spoke for c in trace.chunks] == [c.spoke for c in offline.chunks]
  assert any(c.spoke for c in trace.chunks) and not all(c.spoke for c in trace.chunks)
  assert [c.reply_tokens for c in trace.chunks] == [c.reply_tokens for c in offline.chunks]
  np.testing.assert_allclose([c.speak_probability for c in trace.chunks],
                             [c.speak_probability for c in offline.chunks], atol=1e-6)
  assert result.dropped == 0 and not np.any(np.isnan(result.audio))

  # The full forward over the stream-format sequence the loop produced.
  tokens, slots, decide_at, reply_at = stream_sequence(trace, ids, model.config.slots_per_chunk)
  padded = np.pad(audio, (0, -len(audio) % CHUNK))
  full = model.forward(params, jnp.asarray(tokens[None]), jnp.asarray(padded[None]),
                       jnp.asarray(slots[None]))
  probs = np.asarray(jax.nn.softmax(full.decision_logits[0], -1))[decide_at, sf.Decision.SPEAK]
  np.testing.assert_allclose([c.speak_probability for c in trace.chunks], probs, atol=2e-5)
  assert [p >= threshold for p in probs] == [c.spoke for c in trace.chunks]
  greedy = np.asarray(jnp.argmax(full.lm_logits[0], -1))
  assert reply_at and all(greedy[position] == token for position, token in reply_at)

  # The log: one chunk event per chunk, with what the loop decided and wrote.
  events = read_log(tmp_path / "events.jsonl")
  chunks = of_kind(events, "chunk")
  assert [e["spoke"] for e in chunks] == [c.spoke for c in trace.chunks]
  assert [e["reply_tokens"] for e in chunks] == [c.reply_tokens for c in trace.chunks]
  assert {"speak_probability", "decision", "lag_seconds", "compute_ms", "reply_text"} <= set(chunks[0])
  assert events[0]["event"] == "start" and events[-1]["event"] == "end"


def test_instruction_change_mid_stream_is_in_the_forward_sequence(small, tmp_path):
  model, params, tokenizer, config = small
  engine = Engine(model)
  audio = (0.1 * np.random.default_rng(1).normal(size=16 * CHUNK)).astype(np.float32)
  # Threshold 0 speaks at every chunk; change the instruction after a chunk whose reply
  # is still running (found on a probe run: greedy, so the session repeats it).
  probe = run_stream(engine, params, audio, tokenizer.encode("listen"), ThresholdPolicy(0.0))
  running = [c.index for c in probe.chunks[3:12] if c.reply_tokens[-1] != sf.EOR_ID]
  assert running, "the probe never had a reply running across chunks 3-11"
  change_after = running[0]
  session = session_for(engine, tmp_path, params=params, tokenizer=tokenizer,
                        instruction="listen", threshold=0.0)

  def change(event):
    if event["event"] == "chunk" and event["chunk"] == change_after:
      session.set_instruction("now count")

  session.sinks.append(change)
  trace = asyncio.run(session.run(sources.ArraySource(audio))).trace
  assert trace.chunks[change_after + 1].fed_tokens == sf.instruction_tokens(
      tokenizer.encode("now count"))
  events = read_log(tmp_path / "events.jsonl")
  assert of_kind(events, "instruction")[0]["chunk"] == change_after + 1
  # The running reply is ended by the change.
  assert [e["chunk"] for e in of_kind(events, "reply_end")
          if e["reason"] == "instruction_changed"] == [change_after + 1]

  tokens, slots, decide_at, reply_at = stream_sequence(trace, tokenizer.encode("listen"),
                                                       model.config.slots_per_chunk)
  full = model.forward(params, jnp.asarray(tokens[None]), jnp.asarray(audio[None]),
                       jnp.asarray(slots[None]))
  probs = np.asarray(jax.nn.softmax(full.decision_logits[0], -1))[decide_at, sf.Decision.SPEAK]
  np.testing.assert_allclose([c.speak_probability for c in trace.chunks], probs, atol=2e-5)
  greedy = np.asarray(jnp.argmax(full.lm_logits[0], -1))
  assert reply_at and all(greedy[position] == token for position, token in reply_at)


# ------------------------------------------------------------------ (b) barge-in
def test_barge_in_stops_the_reply_at_the_first_silent_chunk(tmp_path):
  # Speaks from chunk 3 with a reply that never ends; chunk 8 hears the user: SILENT.
  probs = [0.1] * 3 + [0.9] * 5 + [0.1] * 6
  engine = ScriptedEngine(probs, [40, 41, 42, 43])
  session = session_for(engine, tmp_path)
  audio = np.zeros(len(probs) * CHUNK, np.float32)
  trace = asyncio.run(session.run(sources.ArraySource(audio))).trace
  events = read_log(tmp_path / "events.jsonl")
  assert [e["chunk"] for e in of_kind(events, "reply_start")] == [3]
  (yielded,) = of_kind(events, "yield")
  assert yielded["chunk"] == 8 and yielded["time"] == pytest.approx(9 * CHUNK_S)
  assert len(yielded["tokens"]) == 5 * 3  # chunks 3-7, tokens_per_chunk each
  # Within one chunk: nothing is written at or after the chunk that heard the user.
  assert all(not c.reply_tokens for c in trace.chunks[8:])
  assert not of_kind(events, "reply_end")


class ThresholdSchedule:
  """A `DecisionPolicy` whose threshold follows the chunk index: [(from chunk, threshold)]."""

  def __init__(self, schedule):
    self.schedule = list(schedule)

  def start(self):
    pass

  def decide(self, index, chunk, speak_probability, replying):
    threshold = [t for start, t in self.schedule if index >= start][-1]
    return speak_probability >= threshold


def test_barge_in_with_the_embedded_model(tmp_path):
  model, params, tokenizer, _ = live_load_embedded()  # a broken bundle is a failure
  engine = Engine(model)
  rng = np.random.default_rng(0)
  audio = (0.05 * rng.normal(size=30 * CHUNK)).astype(np.float32)
  ids = tokenizer.encode(live.DEFAULT_INSTRUCTION)
  # Silent until chunk 10, then speaking whatever it hears (threshold 0).
  probe = run_stream(engine, params, audio, ids, ThresholdSchedule([(0, 2.0), (10, 0.0)]))
  assert probe.chunks[10].spoke and probe.chunks[10].reply_tokens
  running = [c.index for c in probe.chunks[10:28] if c.reply_tokens[-1] != sf.EOR_ID]
  assert running, "the embedded model never had a reply running over two chunks"
  # The user starts talking over the reply at the chunk after one where it runs: from
  # there a threshold above every probability plays the model's SILENT.
  barge_in = running[0] + 1
  policy = ThresholdSchedule([(0, 2.0), (10, 0.0), (barge_in, 2.0)])
  session = session_for(engine, tmp_path, params=params, tokenizer=tokenizer, policy=policy)
  trace = asyncio.run(session.run(sources.ArraySource(audio))).trace
  np.testing.assert_allclose([c.speak_probability for c in trace.chunks[:barge_in]],
                             [c.speak_probability for c in probe.chunks[:barge_in]], atol=1e-6)
  events = read_log(tmp_path / "events.jsonl")
  assert [e["chunk"] for e in of_kind(events, "yield")] == [barge_in]
  assert all(not c.reply_tokens for c in trace.chunks[barge_in:])


def live_load_embedded():
  from audio_interaction.export.portable import load_model
  return load_model(None)


# ------------------------------------------------------ (c) stalls, ends mid-reply
def test_a_stalled_source_does_not_hang_and_the_loop_resumes(tmp_path):
  engine = ScriptedEngine([0.0], [40])
  session = session_for(engine, tmp_path, stall_timeout=0.3)
  audio = np.zeros(int(3.0 * RATE), np.float32)
  source = sources.ArraySource(audio, speed=20.0, stall_at=1.0, stall_seconds=2.0)
  began = time.monotonic()
  result = asyncio.run(asyncio.wait_for(session.run(source), timeout=30))
  assert time.monotonic() - began < 15
  events = read_log(tmp_path / "events.jsonl")
  (stall,) = of_kind(events, "stall")
  (resume,) = of_kind(events, "resume")
  assert stall["time"] == pytest.approx(1.0, abs=0.03)
  assert 1.7 < resume["stalled_seconds"] < 4.0
  assert result.chunks == math.ceil(3.0 / CHUNK_S) and result.stalls == 1
  # Chunks after the stall were perceived: the loop resumed.
  assert max(e["chunk"] for e in of_kind(events, "chunk")) == result.chunks - 1
  assert events[-1]["event"] == "end"


def test_a_source_ending_mid_reply_ends_cleanly_with_the_log_flushed(tmp_path):
  engine = ScriptedEngine([0.0, 0.9], [40, 41])  # speaks from chunk 1, never <eor>
  session = session_for(engine, tmp_path)
  audio = np.zeros(int(1.3 * RATE), np.float32)  # 8 chunks, the last one partial
  asyncio.run(session.run(sources.ArraySource(audio, speed=50.0)))
  events = read_log(tmp_path / "events.jsonl")
  (ended,) = of_kind(events, "reply_end")
  assert ended["reason"] == "stream_end" and ended["time"] == pytest.approx(1.3)
  assert len(of_kind(events, "chunk")) == 9
  assert events[-1]["event"] == "end" and events[-1]["replies"] == 1


# ---------------------------------------------------------------- (d) bad frames
async def good_then(bad: np.ndarray, seconds: float = 1.0):
  for _ in range(int(seconds / 0.02)):
    yield np.zeros(320, np.float32)
  yield bad


@pytest.mark.parametrize("bad, message", [
    (np.array([0.0, np.nan, 0.0], np.float32), r"1 NaN value at index \[1\]"),
    (np.zeros(320, np.int16), r"dtype int16, expected floating point"),
    (np.zeros((320, 2), np.float32), r"rank 2"),
])
def test_bad_frames_raise_a_clear_error_after_logging_everything_before(bad, message, tmp_path):
  session = session_for(ScriptedEngine([0.0], [40]), tmp_path)
  with pytest.raises(AudioError, match=message):
    asyncio.run(session.run(good_then(bad)))
  events = read_log(tmp_path / "events.jsonl")
  # 1 s of good audio: its 6 whole chunks were perceived and logged first.
  assert [e["chunk"] for e in of_kind(events, "chunk")] == list(range(6))
  assert events[-1]["event"] == "error" and "at 1.00 s" in events[-1]["message"]
  assert events[-1]["type"] == "AudioError"


def test_a_source_at_the_wrong_rate_is_refused(tmp_path):
  session = session_for(ScriptedEngine([0.0], [40]), tmp_path)
  source = sources.ArraySource(np.zeros(8000, np.float32), sample_rate=8000)
  with pytest.raises(AudioError, match="sample rate is 8000 Hz, expected 16000 Hz"):
    asyncio.run(session.run(source))
  events = read_log(tmp_path / "events.jsonl")
  assert [e["event"] for e in events] == ["start", "error"]


def test_nan_in_f32le_pcm_is_caught(tmp_path):
  samples = np.zeros(RATE, "<f4")
  samples[9000] = np.nan
  source = sources.PcmStreamSource(io.BytesIO(samples.tobytes()), "f32le", paced=False)
  session = session_for(ScriptedEngine([0.0], [40]), tmp_path)
  with pytest.raises(AudioError, match="NaN"):
    asyncio.run(session.run(source))
  chunks = of_kind(read_log(tmp_path / "events.jsonl"), "chunk")
  assert chunks and chunks[-1]["end"] <= 9000 / RATE


# ------------------------------------------------------------- (e) backpressure
def test_a_slow_model_drops_the_oldest_chunks_from_a_bounded_queue(tmp_path):
  # A chunk arrives every 16 ms (10x real time); the model takes 40 ms per chunk.
  engine = ScriptedEngine([0.0], [40], delay=0.04)
  session = session_for(engine, tmp_path, queue_chunks=4)
  audio = np.zeros(60 * CHUNK, np.float32)
  result = asyncio.run(session.run(sources.ArraySource(audio, speed=10.0)))
  events = read_log(tmp_path / "events.jsonl")
  chunks, drops = of_kind(events, "chunk"), of_kind(events, "drop")
  assert result.dropped > 0 and len(drops) == result.dropped
  assert result.chunks + result.dropped == 60
  assert max(e["queued"] for e in chunks) <= 4
  assert result.max_lag_seconds > 2 * CHUNK_S and max(e["lag_seconds"] for e in chunks) > 0
  # The dropped chunks are the oldest waiting: what is perceived stays in stream order.
  perceived = [e["chunk"] for e in chunks]
  assert perceived == sorted(perceived) and not set(perceived) & {e["chunk"] for e in drops}
  assert events[-1]["event"] == "end" and events[-1]["dropped"] == result.dropped


def test_an_unpaced_source_is_read_more_slowly_instead(tmp_path):
  engine = ScriptedEngine([0.0], [40], delay=0.005)
  session = session_for(engine, tmp_path, queue_chunks=2)
  result = asyncio.run(session.run(sources.ArraySource(np.zeros(30 * CHUNK, np.float32))))
  assert result.dropped == 0 and result.chunks == 30
  assert max(e["queued"] for e in of_kind(read_log(tmp_path / "events.jsonl"), "chunk")) <= 2


# ----------------------------------------------------------------- (f) PCM input
async def collect(source) -> np.ndarray:
  return np.concatenate([piece async for piece in source])


@pytest.mark.parametrize("pcm_format", ["s16le", "f32le"])
def test_pcm_from_a_file_object_and_a_stream_reader(pcm_format):
  rng = np.random.default_rng(0)
  if pcm_format == "s16le":
    raw = rng.integers(-32768, 32768, 5001).astype("<i2")
    expected = raw.astype(np.float32) / 32768
  else:
    raw = rng.uniform(-1, 1, 5001).astype("<f4")
    expected = raw.astype(np.float32)
  data = raw.tobytes()
  got = asyncio.run(collect(sources.PcmStreamSource(io.BytesIO(data), pcm_format, piece_ms=7)))
  np.testing.assert_array_equal(got, expected)

  async def from_reader():
    reader = asyncio.StreamReader()
    for start in range(0, len(data), 333):  # splits samples across reads
      reader.feed_data(data[start:start + 333])
    reader.feed_eof()
    return await collect(sources.PcmStreamSource(reader, pcm_format))

  np.testing.assert_array_equal(asyncio.run(from_reader()), expected)
  decoder = sources.PcmDecoder(pcm_format)
  pieces = [decoder.decode(data[i:i + 5]) for i in range(0, len(data), 5)]
  np.testing.assert_array_equal(np.concatenate(pieces), expected)


def test_pcm_errors_name_the_problem():
  with pytest.raises(AudioError, match="unknown PCM format 's24le'"):
    sources.PcmDecoder("s24le")
  with pytest.raises(AudioError, match="ended inside a sample.*1 trailing"):
    asyncio.run(collect(sources.PcmStreamSource(io.BytesIO(b"\x00\x01\x02"), "s16le")))


def test_websocket_frames_are_pcm():
  websockets_server = pytest.importorskip("websockets.asyncio.server")
  samples = (np.arange(4000) - 2000).astype("<i2")

  async def handler(connection):
    await connection.send("text frames carry no audio")
    for start in range(0, len(samples), 999):
      await connection.send(samples[start:start + 999].tobytes())

  async def main():
    async with websockets_server.serve(handler, "127.0.0.1", 0) as server:
      port = server.sockets[0].getsockname()[1]
      return await collect(sources.WebSocketSource(f"ws://127.0.0.1:{port}"))

  np.testing.assert_array_equal(asyncio.run(main()), samples.astype(np.float32) / 32768)


def test_a_missing_microphone_is_a_clear_error():
  with pytest.raises(sources.SourceUnavailable, match="sounddevice|PortAudio|microphone"):
    asyncio.run(collect(sources.MicSource("no-such-device-xyz")))


def test_a_file_source_streams_the_file(tmp_path):
  audio = np.random.default_rng(2).uniform(-0.5, 0.5, (12345, 2)).astype(np.float32)
  soundfile.write(tmp_path / "stereo.wav", audio, RATE, subtype="FLOAT")
  got = asyncio.run(collect(sources.FileSource(tmp_path / "stereo.wav", speed=float("inf"))))
  np.testing.assert_allclose(got, audio.mean(1), atol=1e-7)
  soundfile.write(tmp_path / "slow.wav", audio[:, 0], 8000, subtype="FLOAT")  # resampled
  assert len(asyncio.run(collect(sources.FileSource(tmp_path / "slow.wav",
                                                    speed=float("inf"))))) == 2 * 12345
  with pytest.raises(AudioError, match="not found"):
    asyncio.run(collect(sources.FileSource(tmp_path / "missing.wav")))
  # At 2x real time, 0.77 s of audio takes about 0.39 s.
  began = time.monotonic()
  asyncio.run(collect(sources.FileSource(tmp_path / "stereo.wav", speed=2.0)))
  assert 0.25 < time.monotonic() - began < 1.5


# --------------------------------------------------------------- spoken replies
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_spoken_replies_are_aligned_at_stream_time(tmp_path):
  reply = ByteTokenizer().encode("hello there") + [sf.EOR_ID]
  probs = [0.0] * 10 + [0.9] * 10 + [0.0] * 20
  speaker = live_view.SpokenReplies(tmp_path / "replies.wav")
  session = session_for(ScriptedEngine(probs, reply, tokens_per_chunk=4), tmp_path,
                        sinks=[speaker])
  result = asyncio.run(session.run(sources.ArraySource(np.zeros(40 * CHUNK, np.float32))))
  spoken, rate = soundfile.read(tmp_path / "replies.wav")
  assert rate == RATE and len(spoken) == round(result.stream_seconds * RATE)
  first_sound = np.argmax(np.abs(spoken) > 1e-3) / RATE
  start = result.replies[0][0]  # the end of chunk 10, where the first token was written
  assert start == pytest.approx(11 * CHUNK_S) and start <= first_sound < start + 0.3


# ------------------------------------------------------------------ (g) the CLI
@pytest.fixture(scope="module")
def bundle(small, tmp_path_factory):
  model, params, tokenizer, config = small
  return portable.save_bundle(tmp_path_factory.mktemp("bundle"), params, tokenizer, config)


def test_cli_listen_on_a_wav_writes_the_log_and_timeline(bundle, tmp_path, speech, sounds):
  audio = generated_stream(speech, sounds)[:int(2.5 * RATE)]
  soundfile.write(tmp_path / "talk.wav", audio, RATE)
  out = tmp_path / "out"
  code = cli.main(["listen", str(tmp_path / "talk.wav"), "--checkpoint", str(bundle),
                   "--speed", "inf", "--threshold", "0.3", "--out", str(out)])
  assert code == 0
  events = read_log(out / "events.jsonl")
  assert events[0]["event"] == "start" and events[-1]["event"] == "end"
  assert len(of_kind(events, "chunk")) == math.ceil(2.5 / CHUNK_S)
  assert (out / "timeline.png").stat().st_size > 10_000


def test_cli_listen_reads_pcm_on_stdin(bundle, tmp_path, monkeypatch):
  pcm = (np.zeros(RATE) + 0.01 * np.sin(np.arange(RATE))).astype(np.float32)
  monkeypatch.setattr("sys.stdin", types.SimpleNamespace(buffer=io.BytesIO(
      (pcm * 32767).astype("<i2").tobytes())))
  out = tmp_path / "out"
  assert cli.main(["listen", "--stdin", "--speed", "inf", "--checkpoint", str(bundle),
                   "--out", str(out)]) == 0
  assert len(of_kind(read_log(out / "events.jsonl"), "chunk")) == math.ceil(1 / CHUNK_S)
  # Wrong-rate PCM is refused with the reason, exit code 2.
  monkeypatch.setattr("sys.stdin", types.SimpleNamespace(buffer=io.BytesIO(b"\0" * 3200)))
  assert cli.main(["listen", "--stdin", "--rate", "8000", "--checkpoint", str(bundle),
                   "--out", str(out)]) == 2
  assert read_log(out / "events.jsonl")[-1]["event"] == "error"


def test_a_session_stopped_by_the_user_ends_its_log(tmp_path):
  session = session_for(ScriptedEngine([0.0], [40]), tmp_path)
  source = sources.ArraySource(np.zeros(10 * RATE, np.float32), speed=1.0)

  async def stop_soon():
    await asyncio.wait_for(session.run(source), timeout=0.6)  # as Ctrl-C cancels it

  with pytest.raises((asyncio.TimeoutError, TimeoutError)):
    asyncio.run(stop_soon())
  events = read_log(tmp_path / "events.jsonl")
  assert events[-1]["event"] == "end" and events[-1]["interrupted"]
  assert 1 <= len(of_kind(events, "chunk")) <= 5


# ------------------------------------------------ long runs: every reply is counted
def test_the_reply_count_is_every_reply_not_the_ones_kept(tmp_path):
  """A model that always speaks and always ends its reply at once: one reply per chunk,
  more than the 64 the session keeps for display."""
  engine = ScriptedEngine([0.9], [40, sf.EOR_ID])
  session = session_for(engine, tmp_path, warm_up=False)
  audio = np.zeros(100 * CHUNK, np.float32)
  result = asyncio.run(asyncio.wait_for(session.run(sources.ArraySource(audio)), timeout=60))
  events = read_log(tmp_path / "events.jsonl")
  ended = of_kind(events, "reply_end")
  assert len(ended) > 64
  assert result.reply_count == len(ended)
  assert len(result.replies) == 64  # the last 64, for display
  assert [start for start, _, _ in result.replies] == [e["reply_start"] for e in ended[-64:]]
  end = events[-1]
  assert end["event"] == "end" and end["replies"] == len(ended) and end["replies_listed"] == 64
  summary = session.summary(result)
  assert (summary["replies"], summary["replies_listed"]) == (len(ended), 64)


class HearingEngine(ScriptedEngine):
  """A `ScriptedEngine` with a sound-event head: it hears a dog bark (P 0.8) from chunk
  2 on, nothing before."""

  def perceive(self, params, state, chunk):
    state, probs = super().perceive(params, state, chunk)
    sounds = np.zeros((1, len(worlds.SOUND_EVENT_LABELS)))
    heard = (worlds.SOUND_EVENT_LABELS.index("dog_bark") if state.chunk > 2
             else sf.NO_SOUND_EVENT)
    sounds[0, heard], sounds[0, sf.NO_SOUND_EVENT if heard else 1] = 0.8, 0.2
    return dataclasses.replace(state, sound_events=sounds), probs


def test_chunk_events_say_which_sound_the_head_heard(tmp_path):
  engine = HearingEngine([0.1] * 5, [40])
  audio = np.zeros(5 * CHUNK, np.float32)
  asyncio.run(session_for(engine, tmp_path).run(sources.ArraySource(audio)))
  chunks = of_kind(read_log(tmp_path / "events.jsonl"), "chunk")
  assert [c.get("sound_event") for c in chunks] == [None, None, "dog_bark", "dog_bark", "dog_bark"]
  assert [c.get("sound_probability") for c in chunks[2:]] == [0.8] * 3


def test_a_session_says_the_heads_alert_when_its_bundle_asks_for_it(tmp_path):
  engine = HearingEngine([0.1] * 6, [40])  # the model itself never speaks
  engine.model.config.sound_event_classes = len(worlds.SOUND_EVENT_LABELS)
  infer = config_lib.base_config().infer
  infer.sound_alert_threshold = 0.5
  config = live.LiveConfig.from_infer(infer, chunk_seconds=CHUNK / RATE)
  session = live.LiveSession(engine, None, ByteTokenizer(), config,
                             [live.JsonlLog(tmp_path / "events.jsonl")])
  asyncio.run(session.run(sources.ArraySource(np.zeros(12 * CHUNK, np.float32))))
  events = read_log(tmp_path / "events.jsonl")
  chunks = of_kind(events, "chunk")
  # Once, though the dog barks on: an alert per presence of the class.
  assert [c.get("sound_alert") for c in chunks] == [None, None, "dog_bark"] + [None] * 9
  alert = ByteTokenizer().encode(worlds.alert_message("dog_bark"))
  # Written 3 tokens per chunk from the alert's chunk on, as the engine's own replies are,
  # and fed to the model (it hears what it said).
  assert [t for c in chunks for t in c["reply_tokens"]] == alert + [sf.EOR_ID]
  assert chunks[2]["reply_tokens"] == alert[:3]
  pieces = [3] * (len(alert) // 3) + [len(alert) % 3 + 1]
  fed = engine.fed[-len(pieces):]
  assert [t for feed, n in zip(fed, pieces) for t in feed[:n]] == alert + [sf.EOR_ID]
  assert [e["text"] for e in of_kind(events, "reply_end")] == [worlds.alert_message("dog_bark")]
