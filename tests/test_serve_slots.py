"""Continuous batching (`infer/slots.py`): streams join and leave rows of one compiled
batch, stall, change instruction; every stream decides and speaks exactly as alone."""

import functools

import jax
import numpy as np
import pytest

from audio_interaction import stream_format as sf
from audio_interaction.data.tokenizer import ByteTokenizer
from audio_interaction.infer.engine import Engine, gathered_rows
from audio_interaction.infer.policies import ThresholdPolicy
from audio_interaction.infer.run_stream import StreamStepper, run_stream
from audio_interaction.infer.slots import SlotBatcher, SlotsFull, StreamEvents
from audio_interaction.model.model import AudioInteractionModel
import model_testing


@functools.cache
def _setting(pinned: int = 0):
  tokenizer = ByteTokenizer()
  config = model_testing.small_config(**{"model.decoder.vocab_size": tokenizer.vocab_size,
                                         "model.decoder.pinned_prefix": pinned})
  model = AudioInteractionModel(config)
  params = model.init(jax.random.key(7))
  engine = Engine(model)
  size = model.config.chunk_samples
  rng = np.random.default_rng(5)
  audios = [(scale * rng.normal(size=n * size)).astype(np.float32)
            for n, scale in ((9, 0.1), (10, 0.05), (7, 0.2))]
  instructions = [tokenizer.encode(t) for t in
                  ("answer when asked", "say hi", "tell me when the kettle boils, please")]
  # A threshold inside the observed range, so that each stream both speaks and is silent.
  probes = [run_stream(engine, params, audios[i], instructions[i], ThresholdPolicy(2.0))
            for i in ((0,) if not pinned else (2,))]
  threshold = float(np.median([c.speak_probability for p in probes for c in p.chunks]))
  return engine, params, tokenizer, audios, instructions, threshold


@pytest.fixture(scope="module")
def setting():
  return _setting()


def _summary(records):
  return ([r.index for r in records], [r.spoke for r in records],
          [r.reply_tokens for r in records], [r.events for r in records],
          [r.heard_tokens for r in records],
          np.asarray([r.speak_probability for r in records]))


def _assert_same(got, want):
  for a, b in zip(got[:5], want[:5]):
    assert a == b
  np.testing.assert_allclose(got[5], want[5], atol=2e-5)


def _chunks(audio, size):
  return [audio[i:i + size] for i in range(0, len(audio), size)]


@pytest.mark.parametrize("pinned", [0, 8])
def test_streams_joining_leaving_and_stalling_equal_each_stream_alone(pinned):
  """pinned: the changed instruction of C is also pinned (the window of 24 positions is
  outlived by every stream)."""
  engine, params, _, audios, instructions, threshold = _setting(pinned)
  size = engine.model.config.chunk_samples
  batcher = SlotBatcher(engine, params, slots=2, max_reply_tokens=6)
  batcher.warm_up()
  compiled = lambda: tuple(f._cache_size() for f in (
      engine._perceive_rows, engine._perceive_some, engine._prefill, engine._speak,
      engine._speak_some, engine._reset_rows))
  sizes_after_warm_up = compiled()
  # tick -> stream: A joins at 0 and leaves after its 9 chunks; B joins at 2 and
  # stalls at ticks 5-6 (no chunk: not advanced); C joins at 10 in A's freed row and
  # gets a new instruction before its chunk 3.
  plan = {"A": (0, audios[0], instructions[0]), "B": (2, audios[1], instructions[1]),
          "C": (10, audios[2], instructions[2])}
  stalls = {"B": {5, 6}}
  new_instruction = instructions[1]
  joined, sent, got = {}, {k: 0 for k in plan}, {k: [] for k in plan}
  for tick in range(40):
    for name, (start, audio, ids) in plan.items():
      if tick == start:
        joined[name] = batcher.join(ids, ThresholdPolicy(threshold))
      if name in joined and tick not in stalls.get(name, ()) and sent[name] < len(audio) // size:
        row, sid = joined[name]
        if name == "C" and sent[name] == 3:
          batcher.change_instruction(row, sid, new_instruction)
        batcher.push(row, sid, _chunks(audio, size)[sent[name]])
        sent[name] += 1
    for step in batcher.tick():
      name = next(n for n, (row, sid) in joined.items()
                  if row == step.row and sid == step.stream_id)
      got[name].append(step.record)
    for name, (row, sid) in list(joined.items()):
      if len(got[name]) == len(plan[name][1]) // size:
        batcher.leave(row, sid)
        del joined[name]
        if name == "A":
          assert batcher.join([], ThresholdPolicy(0.5))[0] == row  # the row is free again
          batcher.leave(row, batcher._rows[row].stream_id)
  assert joined == {}
  assert batcher.active == 0
  # No compilation after the warm-up: joins, leaves, stalls and a fed instruction reuse it.
  assert compiled() == sizes_after_warm_up

  for name, (_, audio, ids) in plan.items():
    alone = StreamStepper(engine, params, [ids], [ThresholdPolicy(threshold)],
                          max_reply_tokens=6)
    records = []
    for index, chunk in enumerate(_chunks(audio, size)):
      if name == "C" and index == 3:
        alone.change_instruction(new_instruction)
      records.append(alone.step(chunk))
    want = _summary(records)
    _assert_same(_summary(got[name]), want)
    assert any(want[1]) and not all(want[1]), name  # each stream both speaks and is silent
  # A was in the batch with B while B stalled; it still equals run_stream.
  trace = run_stream(engine, params, audios[0], instructions[0], ThresholdPolicy(threshold),
                     max_reply_tokens=6)
  _assert_same(_summary(got["A"]), _summary(trace.chunks))


def test_full_batch_refuses_a_stream_and_a_slow_stream_drops_its_oldest_chunk(setting):
  engine, params, _, audios, instructions, _ = setting
  size = engine.model.config.chunk_samples
  batcher = SlotBatcher(engine, params, slots=1, queue_chunks=2)
  row, sid = batcher.join(instructions[0], ThresholdPolicy(0.5))
  with pytest.raises(SlotsFull):
    batcher.join(instructions[1], ThresholdPolicy(0.5))
  chunks = _chunks(audios[0], size)
  assert [batcher.push(row, sid, c) for c in chunks[:4]] == [0, 0, 1, 1]
  assert batcher.dropped(row, sid) == 2
  steps = batcher.tick() + batcher.tick()
  assert [s.record.index for s in steps] == [2, 3]  # dropped chunks keep their indices
  assert batcher.tick() == []
  batcher.leave(row, sid)
  batcher.push(row, sid, chunks[0])  # a stream that left is ignored
  assert batcher.waiting() == (0, 0, None)


def test_ready_waits_for_every_active_stream_at_most_max_wait(setting):
  engine, params, _, audios, instructions, _ = setting
  size = engine.model.config.chunk_samples
  batcher = SlotBatcher(engine, params, slots=3, max_wait=0.08)
  a = batcher.join(instructions[0], ThresholdPolicy(0.5))
  b = batcher.join(instructions[1], ThresholdPolicy(0.5))
  assert batcher.ready(now=0.0) is None  # nothing waits
  batcher.push(*a, audios[0][:size], arrived=10.0)
  assert batcher.ready(now=10.03) == pytest.approx(0.05)  # b has no chunk yet
  assert batcher.ready(now=10.2) == 0.0  # b is late: a goes on without it
  batcher.push(*b, audios[1][:size], arrived=10.05)
  assert batcher.ready(now=10.05) == 0.0  # everyone has a chunk


def test_stream_events_follow_a_reply():
  tokenizer = ByteTokenizer()
  from audio_interaction.infer.run_stream import ChunkRecord
  events = StreamEvents(tokenizer.decode, threshold=0.5)
  hi = tokenizer.encode("hi")
  first = events.events(ChunkRecord(0, 0.0, 0.16, 0.9, True, hi, 0.01,
                                    events=["reply_start"], heard_tokens=tokenizer.encode("so")))
  assert [e["event"] for e in first] == ["chunk", "heard", "reply_start", "reply_tokens"]
  assert first[0]["decision"] == "SPEAK" and first[1]["text"] == "so"
  assert first[3]["reply_text"] == "hi"
  last = events.events(ChunkRecord(1, 0.16, 0.32, 0.9, True, tokenizer.encode("!") + [sf.EOR_ID],
                                   0.01, events=["reply_end"]))
  assert [e["event"] for e in last] == ["chunk", "reply_tokens", "reply_end"]
  assert last[-1]["text"] == "hi!" and last[-1]["reason"] == "eor"
  tokens = events.events(ChunkRecord(2, 0.32, 0.48, 0.9, True, hi, 0.01, events=["reply_start"]))
  stop = events.events(ChunkRecord(3, 0.48, 0.64, 0.1, False, [], 0.01, events=["yield"]))
  assert tokens[-1]["event"] == "reply_tokens"
  assert [e["event"] for e in stop] == ["chunk", "yield"] and stop[-1]["text"] == "hi"


@pytest.mark.parametrize("advance", [[True, False, True], [False, True, False]],
                         ids=["whole batch", "gathered row"])
def test_perceive_rows_keeps_held_rows_bit_for_bit_and_steps_the_others(setting, advance):
  engine, params, _, audios, instructions, _ = setting
  advance = np.array(advance)
  stepped_rows, held_rows = np.flatnonzero(advance), np.flatnonzero(~advance)
  size = engine.model.config.chunk_samples
  chunks = np.stack([a[:size] for a in audios])
  later = np.stack([a[size:2 * size] for a in audios])
  start = engine.init_state(params, instructions)
  start, _ = engine.perceive(params, start, chunks)  # some history in every ring
  before = jax.tree_util.tree_map(np.asarray, start.stream)
  copy = jax.tree_util.tree_map(lambda x: x.copy(), start)
  held, probs = engine.perceive_rows(params, start, later, advance)
  plain, want = engine.perceive(params, copy, later)
  for got_leaf, was, stepped in zip(jax.tree_util.tree_leaves(held.stream),
                                    jax.tree_util.tree_leaves(before),
                                    jax.tree_util.tree_leaves(plain.stream)):
    np.testing.assert_array_equal(np.asarray(got_leaf)[held_rows], was[held_rows])  # untouched
    np.testing.assert_allclose(np.asarray(got_leaf)[stepped_rows],
                               np.asarray(stepped)[stepped_rows], atol=1e-5)
  np.testing.assert_allclose(np.asarray(probs)[stepped_rows], np.asarray(want)[stepped_rows],
                             atol=1e-5)


def test_speak_rows_gathers_the_speaking_rows_and_equals_speak(setting):
  engine, params, _, audios, instructions, _ = setting
  size = engine.model.config.chunk_samples
  state, _ = engine.perceive(params, engine.init_state(params, instructions),
                             np.stack([a[:size] for a in audios]))
  active = np.array([False, True, False])
  assert gathered_rows(active) is not None  # one row of three: the gathered path
  before = jax.tree_util.tree_map(np.asarray, state.stream)
  copy = jax.tree_util.tree_map(lambda x: x.copy(), state)
  got_state, got_tokens, got_count = engine.speak_rows(params, state, active, n=5)
  want_state, want_tokens, want_count = engine.speak(params, copy, active, n=5)
  np.testing.assert_array_equal(np.asarray(got_tokens), np.asarray(want_tokens))
  np.testing.assert_array_equal(np.asarray(got_count), np.asarray(want_count))
  assert int(np.asarray(got_count)[1]) > 0 and not np.asarray(got_count)[[0, 2]].any()
  for got, was, want in zip(jax.tree_util.tree_leaves(got_state.stream),
                            jax.tree_util.tree_leaves(before),
                            jax.tree_util.tree_leaves(want_state.stream)):
    np.testing.assert_array_equal(np.asarray(got)[[0, 2]], was[[0, 2]])
    np.testing.assert_allclose(np.asarray(got)[1], np.asarray(want)[1], atol=1e-5)


@pytest.mark.parametrize("batch, rows, bucket", [(32, 0, 4), (32, 4, 4), (32, 5, 8),
                                                 (32, 16, 16), (32, 17, None), (3, 1, 1),
                                                 (3, 2, None), (1, 1, None)])
def test_gathered_rows_pads_to_the_smallest_bucket_with_unmasked_rows(batch, rows, bucket):
  mask = np.zeros(batch, bool)
  mask[np.random.default_rng(batch + rows).choice(batch, rows, replace=False)] = True
  got = gathered_rows(mask)
  if bucket is None:
    assert got is None
    return
  assert len(got) == bucket and len(set(got.tolist())) == bucket  # distinct rows
  assert set(np.flatnonzero(mask)) <= set(got.tolist())  # every masked row is computed


def test_a_stream_in_a_slot_alerts_as_it_does_alone():
  from audio_interaction.corpus import worlds
  from audio_interaction.infer.sound_alerts import SoundAlertRule
  from audio_interaction.train import sound_head
  labels = worlds.SOUND_EVENT_LABELS
  tokenizer = ByteTokenizer()
  model, params = model_testing.sound_head_model(2, tokenizer.vocab_size)
  size = model.config.chunk_samples
  rng = np.random.default_rng(0)
  # Loud and quiet stretches, and a head that calls the loud chunks a siren: its siren
  # column is the direction from the quiet chunks' features to the loud ones'.
  loud = np.repeat([1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 0, 1], size)
  audio = ((0.2 * loud + 0.002) * rng.normal(size=loud.size)).astype(np.float32)
  features = sound_head.SoundEventEncoder(model, params)(audio)
  is_loud = loud[::size].astype(bool)
  direction = features[is_loud].mean(0) - features[~is_loud].mean(0)
  middle = 0.5 * (features[is_loud].mean(0) + features[~is_loud].mean(0))
  scale = 20.0 / float(direction @ direction)
  kernel = np.zeros((direction.size, len(labels)), np.float32)
  kernel[:, labels.index("siren")] = scale * direction
  bias = np.zeros(len(labels), np.float32)
  bias[labels.index("siren")] = -scale * float(direction @ middle)
  params = model_testing.with_sound_head(params, kernel, bias)
  engine = Engine(model)
  reply = tokenizer.encode("siren") + [sf.EOR_ID]  # said within two chunks
  rule = lambda: SoundAlertRule(threshold=0.5, chunks=1, hold_chunks=2,
                                replies={labels.index("siren"): reply})
  alone = StreamStepper(engine, params, [[20]], [ThresholdPolicy(2.0)], sound_alerts=rule())
  want = [alone.step(chunk) for chunk in _chunks(audio, size)]
  alerts = [r.sound_alert for r in want]
  # One alert per loud stretch (3 quiet chunks re-arm it in between).
  assert alerts == ["siren", None, None, None, None, "siren", None, None, None, None, None,
                    "siren"]
  batcher = SlotBatcher(engine, params, slots=2, sound_alerts=rule())
  other = batcher.join([21], ThresholdPolicy(2.0))
  row, sid = batcher.join([20], ThresholdPolicy(2.0))
  got = []
  for index, chunk in enumerate(_chunks(audio, size)):
    batcher.push(row, sid, chunk)
    if index % 3 == 0:  # the other stream advances now and then
      batcher.push(*other, (0.3 * rng.normal(size=size)).astype(np.float32))
    got += [s.record for s in batcher.tick() if s.row == row]
  assert [r.sound_alert for r in got] == alerts
  assert [r.reply_tokens for r in got] == [r.reply_tokens for r in want]


def test_stream_events_of_an_alert_cutting_a_reply():
  tokenizer = ByteTokenizer()
  from audio_interaction.infer.run_stream import ChunkRecord
  events = StreamEvents(tokenizer.decode, threshold=0.5)
  events.events(ChunkRecord(0, 0.0, 0.16, 0.9, True, tokenizer.encode("so"), 0.01,
                            events=["reply_start"]))
  cut = events.events(ChunkRecord(1, 0.16, 0.32, 0.9, True, tokenizer.encode("the"), 0.01,
                                  events=["yield", "reply_start"], sound_event="siren",
                                  sound_probability=0.9, sound_alert="siren"))
  assert [e["event"] for e in cut] == ["chunk", "yield", "reply_start", "reply_tokens"]
  assert cut[0]["sound_alert"] == "siren" and cut[0]["sound_event"] == "siren"
  assert cut[1]["text"] == "so" and cut[3]["reply_text"] == "the"
