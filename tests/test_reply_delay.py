"""Replies held back in training batches (data/reply_delay.py, the pipeline's random_map)."""

from __future__ import annotations

import numpy as np
import pytest

from audio_interaction import stream_format as sf
from audio_interaction.corpus import tasks
from audio_interaction.corpus.serialize import decode_example, serialize
from audio_interaction.data import reply_delay
from audio_interaction.data.pipeline import PipelineConfig, make_dataset, select_fields
from audio_interaction.data.tokenizer import ByteTokenizer

SPEAK, SILENT = int(sf.Decision.SPEAK), int(sf.Decision.SILENT)
R1, R2, R3 = 60, 61, 62  # reply token ids of the hand-made examples


class FixedDraws:
  """An rng stand-in: every reply is held (`random` 0) by `delay` chunks."""

  def __init__(self, delay: int):
    self.delay = delay

  def integers(self, low: int, high: int) -> int:
    assert low <= self.delay < high
    return self.delay

  def random(self) -> float:
    return 0.0


def _example(said: list[list[int]], decisions: list[int], word_end_chunks=()) -> dict:
  """An online example with one audio slot per chunk, laid out by hand."""
  tokens = [sf.BOS_ID, sf.ONLINE_ID, sf.SYS_ID, 50, sf.END_SYS_ID]
  slots = [sf.NO_INDEX] * len(tokens)
  decision_at = [sf.NO_INDEX] * len(tokens)
  reply = [False] * len(tokens)
  for c, (ids, decision) in enumerate(zip(said, decisions)):
    tokens += [sf.AUDIO_ID, sf.AUDIO_SLOT_ID, sf.DECIDE_ID, *ids]
    slots += [sf.NO_INDEX, c, sf.NO_INDEX] + [sf.NO_INDEX] * len(ids)
    decision_at += [sf.NO_INDEX, sf.NO_INDEX, decision] + [sf.NO_INDEX] * len(ids)
    reply += [False, False, False] + [True] * len(ids)
  targets = tokens[1:] + [sf.PAD_ID]
  weights = [1.0 if i + 1 < len(tokens) and reply[i + 1] else 0.0 for i in range(len(tokens))]
  return {"tokens": np.asarray(tokens, np.int32), "audio_slot_index": np.asarray(slots, np.int32),
          "lm_targets": np.asarray(targets, np.int32),
          "lm_weights": np.asarray(weights, np.float32),
          "decision_targets": np.asarray(decision_at, np.int32),
          "transcript_chunks": np.asarray(word_end_chunks, np.int32),
          "audio": np.zeros(len(said) * 4, np.float32)}


def _assert_same(got: dict, want: dict):
  assert set(got) == set(want)
  for name in want:
    np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_a_held_reply_moves_whole_and_its_held_chunks_still_say_speak():
  # A two-chunk reply ready at chunk 1 (the question's last word ends there), held 2.
  before = _example([[], [R1, R2], [R3, sf.EOR_ID], [], [], [], []],
                    [SILENT, SPEAK, SPEAK, SILENT, SILENT, SILENT, SILENT], word_end_chunks=[0, 1])
  after = reply_delay.delay_replies(before, FixedDraws(2), max_delay_chunks=3, guard_chunks=2)
  want = _example([[], [], [], [R1, R2], [R3, sf.EOR_ID], [], []],
                  [SILENT, SPEAK, SPEAK, SPEAK, SPEAK, SILENT, SILENT], word_end_chunks=[0, 1])
  _assert_same(after, want)
  # The held chunks' <decide> predicts nothing; the third chunk's predicts the reply.
  decide = np.flatnonzero(after["tokens"] == sf.DECIDE_ID)
  assert after["lm_weights"][decide].tolist() == [0, 0, 0, 1, 1, 0, 0]
  assert after["lm_targets"][decide[3]] == R1


@pytest.mark.parametrize("said, decisions, word_ends, why", [
    ([[], [R1, R2], [], [], [], []], [SILENT, SPEAK, SILENT, SILENT, SILENT, SILENT], [1],
     "cut by a barge-in: no <eor>"),
    ([[], [R1, sf.EOR_ID], [], [R2, sf.EOR_ID], []],
     [SILENT, SPEAK, SILENT, SPEAK, SILENT], [1, 3], "a later reply is in the way"),
    ([[], [], [], [R1, sf.EOR_ID], []], [SILENT, SILENT, SILENT, SPEAK, SILENT],
     [3], "past the stream's end"),
    ([[], [R1, sf.EOR_ID], [], [], [], [], []],
     [SILENT, SPEAK, SILENT, SILENT, SILENT, SILENT, SILENT], [1, 5], "the user speaks again"),
])
def test_a_reply_stays_where_no_policy_could_have_held_it(said, decisions, word_ends, why):
  before = _example(said, decisions, word_end_chunks=word_ends)
  after = reply_delay.delay_replies(before, FixedDraws(2), max_delay_chunks=2, guard_chunks=2)
  _assert_same(after, before)


def test_the_guard_counts_from_the_new_end():
  said = [[], [R1, sf.EOR_ID], [], [], [], [], [], []]
  decisions = [SILENT, SPEAK] + [SILENT] * 6
  moved = reply_delay.delay_replies(_example(said, decisions, [1, 6]), FixedDraws(2),
                                    max_delay_chunks=2, guard_chunks=2)
  assert reply_delay.chunk_replies(moved)[3] == [R1, sf.EOR_ID]
  kept = reply_delay.delay_replies(_example(said, decisions, [1, 5]), FixedDraws(2),
                                   max_delay_chunks=2, guard_chunks=2)
  assert reply_delay.chunk_replies(kept)[1] == [R1, sf.EOR_ID]


def test_reply_spans_split_after_each_eor():
  spans = reply_delay.reply_spans([[], [R1], [R2, sf.EOR_ID, R3], [sf.EOR_ID], [R1], []])
  # A reply starting in the chunk another ended in is not a layout the corpus makes;
  # what matters is that <eor> closes a span and a chunk with no tokens cuts one.
  assert spans == [reply_delay.ReplySpan(1, 3, True), reply_delay.ReplySpan(4, 4, False)]


@pytest.fixture(scope="module")
def corpus_examples(speech, sounds):
  tokenizer = ByteTokenizer()
  config = tasks.TaskConfig(split="train")
  names = ("chat_single", "chat_multi_turn", "follow_count", "alert_door", "asr_clean",
           "control_barge_in", "offline_asr", "env_scene_question")
  return [dict(serialize(tasks.build(name, seed, speech, sounds, config), tokenizer,
                         slots_per_chunk=2, tokens_per_chunk=4),
               example_index=np.int32(i), ability="x")
          for i, (name, seed) in enumerate((n, s) for n in names for s in range(3))]


def test_laying_out_the_replies_where_they_are_rebuilds_the_corpus_example(corpus_examples):
  for example in corpus_examples:
    if example["tokens"][1] != sf.ONLINE_ID:
      continue
    decide = np.flatnonzero(example["tokens"] == sf.DECIDE_ID)
    rebuilt = reply_delay.lay_out(example, reply_delay.chunk_replies(example),
                                  example["decision_targets"][decide])
    _assert_same(rebuilt, example)


def test_held_replies_read_back_as_the_same_replies_later(corpus_examples):
  tokenizer, moved = ByteTokenizer(), 0
  for seed, example in enumerate(corpus_examples):
    fields = select_fields(example)
    after = reply_delay.delay_replies(fields, np.random.default_rng(seed), max_delay_chunks=4,
                                      probability=1.0)
    if example["tokens"][1] != sf.ONLINE_ID:
      _assert_same(after, fields)
      continue
    for name in ("audio", "transcript", "transcript_chunks", "sound_events"):
      np.testing.assert_array_equal(after[name], fields[name])
    assert sorted(after["tokens"].tolist()) == sorted(fields["tokens"].tolist())
    view = lambda e: decode_example({**example, **e}, tokenizer)
    old, new = view(fields).replies, view(after).replies
    assert [(r.text, r.completed) for r in new] == [(r.text, r.completed) for r in old]
    for o, n in zip(old, new):
      delay = n.first_chunk - o.first_chunk
      assert 0 <= delay <= 4 and n.last_chunk - n.first_chunk == o.last_chunk - o.first_chunk
      assert delay == 0 or o.completed
      moved += delay > 0
      # every chunk from where the reply was ready to its new end is SPEAK
      decisions = [c.decision for c in view(after).chunks[o.first_chunk:n.last_chunk + 1]]
      assert set(decisions) == {sf.Decision.SPEAK}
  assert moved >= 5  # the rule is not so strict that nothing ever moves


def _pipeline(records, **overrides) -> PipelineConfig:
  values = dict(batch_size=2, max_len=1400, max_chunks=160, chunk_samples=2560,
                slots_per_chunk=2, prefetch_batches=0, read_threads=1, max_transcript=400,
                num_epochs=None, seed=3)
  values.update(overrides)
  return PipelineConfig(**values)


def _batches(records, count: int, **overrides) -> list[dict]:
  iterator = iter(make_dataset(records, _pipeline(records, **overrides), shard_index=0,
                               shard_count=1))
  return [next(iterator) for _ in range(count)]


def test_the_pipeline_holds_replies_anew_each_epoch_and_the_same_on_a_rerun(corpus_examples):
  online = [e for e in corpus_examples if e["tokens"][1] == sf.ONLINE_ID]
  epoch = len(online) // 2
  plain = _batches(online, 2 * epoch)
  held = _batches(online, 2 * epoch, reply_delay_chunks=4, reply_delay_probability=1.0)
  again = _batches(online, 2 * epoch, reply_delay_chunks=4, reply_delay_probability=1.0)
  for a, b in zip(held, again):
    _assert_same(a, b)
  by_epoch: list[dict[int, np.ndarray]] = [{}, {}]
  changed = 0
  for index, (p, h) in enumerate(zip(plain, held)):
    np.testing.assert_array_equal(p["audio"], h["audio"])
    changed += not np.array_equal(p["tokens"], h["tokens"])
    for row in range(2):
      by_epoch[index // epoch][int(h["segment_example_index"][row, 0])] = h["tokens"][row]
  assert changed >= epoch // 2
  assert any(not np.array_equal(by_epoch[0][i], by_epoch[1][i]) for i in by_epoch[0])


def test_a_resumed_iterator_holds_the_same_replies(corpus_examples):
  online = [e for e in corpus_examples if e["tokens"][1] == sf.ONLINE_ID]
  config = _pipeline(online, reply_delay_chunks=4, reply_delay_probability=1.0)
  whole = iter(make_dataset(online, config, shard_index=0, shard_count=1))
  expected = [next(whole) for _ in range(6)]
  first = iter(make_dataset(online, config, shard_index=0, shard_count=1))
  for _ in range(3):
    next(first)
  state = first.get_state()
  resumed = iter(make_dataset(online, config, shard_index=0, shard_count=1))
  resumed.set_state(state)
  for want in expected[3:]:
    _assert_same(next(resumed), want)


def test_bad_delay_settings_are_refused():
  with pytest.raises(ValueError, match="reply_delay"):
    PipelineConfig(batch_size=1, max_len=8, max_chunks=1, chunk_samples=1, slots_per_chunk=1,
                   reply_delay_chunks=-1)
  with pytest.raises(ValueError, match="reply_delay"):
    PipelineConfig(batch_size=1, max_len=8, max_chunks=1, chunk_samples=1, slots_per_chunk=1,
                   reply_delay_probability=1.5)


def test_the_config_turns_it_on_for_training_batches_only(monkeypatch):
  from audio_interaction import config_lib
  from audio_interaction.train import loop
  config = config_lib.load_config("experiments/tiny.py", ["data.reply_delay_chunks=5"])
  assert PipelineConfig.from_config(config).reply_delay_chunks == 5
  assert config_lib.base_config().data.reply_delay_chunks == 0
  with pytest.raises(ValueError, match="reply_delay_probability"):
    config_lib.load_config("experiments/tiny.py", ["data.reply_delay_probability=2"])
  # The loop's held-out batches are read as stored.
  seen = []
  monkeypatch.setattr(loop.pipeline_lib, "load_dataset",
                      lambda _dir, _split, pipeline, **_: seen.append(pipeline) or [])
  loop.make_iterator(config, "eval", None, training=False)
  loop.make_iterator(config, "train", None)
  assert [p.reply_delay_chunks for p in seen] == [0, 5]
