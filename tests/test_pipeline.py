"""Tests of `audio_interaction.data.pipeline`: shapes, masks, packing, resumption, mixtures."""

from __future__ import annotations

import collections
import dataclasses
import json
import pathlib

import grain
import jax
import numpy as np
import pytest

from audio_interaction import config_lib
from audio_interaction.data import pipeline
from audio_interaction.data import storage
from audio_interaction import stream_format as sf
from synthetic_examples import SyntheticExamples

CHUNK = 160
K = 2
NUM_EXAMPLES = 96
SEED = 3
GENERATOR = SyntheticExamples(chunk_samples=CHUNK, slots_per_chunk=K, max_chunks=10)
# Small enough that some online examples get truncated and some offline ones dropped.
BASE = pipeline.PipelineConfig(batch_size=4, max_len=40, max_chunks=8, chunk_samples=CHUNK,
                               slots_per_chunk=K, seed=11, num_epochs=1, read_threads=2,
                               prefetch_batches=2)


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory):
  out = storage.dataset_dir(tmp_path_factory.mktemp("data"))
  storage.build_split(out, "train", NUM_EXAMPLES, GENERATOR, SEED, shard_size=16,
                      chunk_samples=CHUNK, progress=False)
  return out


@pytest.fixture(scope="module")
def source(split_dir):
  return storage.load_split(split_dir, "train")


def _fitted(index: int, config: pipeline.PipelineConfig):
  record = dict(GENERATOR(index, SEED), example_index=index)
  return pipeline.fit_example(pipeline.select_fields(record), config)


def _take(iterator, n: int | None = None) -> list[dict]:
  out = []
  for batch in iterator:
    out.append(batch)
    if n is not None and len(out) == n:
      break
  return out


def _ids(batches: list[dict]) -> list[int]:
  ids = np.concatenate([b["segment_example_index"].reshape(-1) for b in batches])
  return [int(i) for i in ids if i >= 0]


def _too_long_online_and_offline(config: pipeline.PipelineConfig) -> tuple[int, int]:
  """Indices of an online and an offline example that do not fit a row."""
  found = {}
  for i in range(NUM_EXAMPLES):
    example = GENERATOR(i, SEED)
    too_long = (len(example["tokens"]) > config.max_len or
                int(example["num_chunks"]) > config.max_chunks)
    if too_long:
      found.setdefault(int(example["tokens"][1]), i)
  return found[sf.ONLINE_ID], found[sf.OFFLINE_ID]


def test_fit_truncates_online_at_a_chunk_boundary_and_drops_offline():
  online, offline = _too_long_online_and_offline(BASE)
  counters = pipeline.PipelineCounters()
  original = pipeline.select_fields(dict(GENERATOR(online, SEED), example_index=online))
  cut = pipeline.fit_example(original, BASE, counters)
  n = len(cut["tokens"])
  assert n <= BASE.max_len and 1 <= int(cut["num_chunks"]) <= BASE.max_chunks
  # The cut is exactly where a later chunk's <audio> starts: a prefix of the stream.
  assert original["tokens"][n] == sf.AUDIO_ID
  for name in ("tokens", "audio_slot_index", "lm_targets", "lm_weights", "decision_targets"):
    np.testing.assert_array_equal(cut[name], original[name][:n])
  np.testing.assert_array_equal(cut["audio"], original["audio"][:int(cut["num_chunks"]) * CHUNK])
  np.testing.assert_array_equal(cut["sound_events"],
                                original["sound_events"][:int(cut["num_chunks"])])
  assert (cut["tokens"] == sf.AUDIO_ID).sum() == int(cut["num_chunks"])
  assert cut["audio_slot_index"].max() == int(cut["num_chunks"]) * K - 1
  # It is the longest such prefix: one more chunk (with its reply) would not fit.
  c = int(cut["num_chunks"])
  ends = np.append(np.flatnonzero(original["tokens"] == sf.AUDIO_ID), len(original["tokens"]))
  assert c == BASE.max_chunks or ends[c + 1] > BASE.max_len

  offline_example = pipeline.select_fields(dict(GENERATOR(offline, SEED), example_index=offline))
  assert pipeline.fit_example(offline_example, BASE, counters) is None
  drop = dataclasses.replace(BASE, overflow="drop")
  assert pipeline.fit_example(original, drop, counters) is None
  assert (counters.examples, counters.truncated, counters.dropped) == (3, 1, 2)


def test_padding_gives_static_shapes_and_correct_masks(split_dir):
  counters = pipeline.PipelineCounters()
  dataset = pipeline.load_dataset(split_dir, "train", BASE, shard_index=0, shard_count=1,
                                  counters=counters)
  iterator = iter(dataset)
  batches = _take(iterator)
  iterator.close()
  spec = pipeline.batch_spec(BASE)
  seen = []
  for batch in batches:
    assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
        k: (s.shape, s.dtype) for k, s in spec.items()}
    for row in range(BASE.batch_size):
      index = int(batch["segment_example_index"][row, 0])
      seen.append(index)
      example = _fitted(index, BASE)
      n, c = len(example["tokens"]), int(example["num_chunks"])
      np.testing.assert_array_equal(batch["segment_ids"][row], np.arange(BASE.max_len) < n)
      np.testing.assert_array_equal(batch["positions"][row][:n], np.arange(n))
      assert not batch["positions"][row][n:].any()
      for name, pad in (("tokens", sf.PAD_ID), ("audio_slot_index", sf.NO_INDEX),
                        ("lm_targets", sf.PAD_ID), ("lm_weights", 0),
                        ("decision_targets", sf.NO_INDEX)):
        np.testing.assert_array_equal(batch[name][row][:n], example[name])
        assert (batch[name][row][n:] == pad).all(), name
      np.testing.assert_array_equal(batch["audio"][row][:c * CHUNK], example["audio"])
      assert not batch["audio"][row][c * CHUNK:].any()
      np.testing.assert_array_equal(batch["chunk_segment_ids"][row], np.arange(BASE.max_chunks) < c)
      np.testing.assert_array_equal(batch["sound_events"][row][:c], example["sound_events"])
      assert (batch["sound_events"][row][c:] == sf.NO_INDEX).all()
      assert int(batch["segment_num_chunks"][row, 0]) == c
  # Every example is either in a batch, dropped, or in the final partial batch.
  assert counters.examples == NUM_EXAMPLES and counters.truncated > 0 and counters.dropped > 0
  assert len(seen) == len(set(seen)) == (NUM_EXAMPLES - counters.dropped) // 4 * 4


def test_packing_keeps_every_segment_intact(split_dir):
  config = dataclasses.replace(BASE, packing=True, max_len=64, max_segments=4)
  iterator = iter(pipeline.load_dataset(split_dir, "train", config, shard_index=0,
                                        shard_count=1))
  batches = _take(iterator)
  iterator.close()
  spec = pipeline.batch_spec(config)
  segments_per_row = []
  for batch in batches:
    assert {k: v.shape for k, v in batch.items()} == {k: s.shape for k, s in spec.items()}
    for row in range(config.batch_size):
      chunks_before = 0
      used = [int(i) for i in batch["segment_example_index"][row] if i >= 0]
      segments_per_row.append(len(used))
      for s, index in enumerate(used, start=1):
        example = _fitted(index, config)
        n, c = len(example["tokens"]), int(example["num_chunks"])
        where = batch["segment_ids"][row] == s
        assert where.sum() == n
        np.testing.assert_array_equal(batch["positions"][row][where], np.arange(n))
        for name in ("tokens", "lm_targets", "lm_weights", "decision_targets"):
          np.testing.assert_array_equal(batch[name][row][where], example[name])
        slots = batch["audio_slot_index"][row][where]
        has = example["audio_slot_index"] != sf.NO_INDEX
        # Slot indices are offset to the row's chunks, and point at this example's audio.
        np.testing.assert_array_equal(
            slots[has], example["audio_slot_index"][has] + chunks_before * K)
        assert (slots[~has] == sf.NO_INDEX).all()
        row_chunks = slots[has] // K
        row_audio = batch["audio"][row].reshape(config.max_chunks, CHUNK)[row_chunks]
        own_audio = example["audio"].reshape(c, CHUNK)[example["audio_slot_index"][has] // K]
        np.testing.assert_array_equal(row_audio, own_audio)
        assert (batch["chunk_segment_ids"][row][chunks_before:chunks_before + c] == s).all()
        np.testing.assert_array_equal(
            batch["sound_events"][row][chunks_before:chunks_before + c], example["sound_events"])
        assert int(batch["segment_num_chunks"][row, s - 1]) == c
        chunks_before += c
      assert not batch["chunk_segment_ids"][row][chunks_before:].any()
      assert (batch["sound_events"][row][chunks_before:] == sf.NO_INDEX).all()
      assert not (batch["segment_ids"][row] > len(used)).any()
  assert max(segments_per_row) > 1  # Packing actually packed.
  ids = _ids(batches)
  assert len(ids) == len(set(ids))


@pytest.mark.parametrize("packing,mixture", [(False, None), (True, None),
                                             (False, {"voice_chat": 2, "realtime_asr": 1})],
                         ids=["padded", "packed", "mixture"])
def test_resumed_iterators_of_two_processes_yield_exactly_the_rest(split_dir, packing, mixture):
  config = dataclasses.replace(BASE, packing=packing, max_len=64 if packing else 80,
                               max_chunks=10, max_segments=3, mixture=mixture)
  per_process = []
  for process in range(2):
    make = lambda: pipeline.load_dataset(split_dir, "train", config, shard_index=process,
                                         shard_count=2)
    reference_iterator = iter(make())
    reference = _take(reference_iterator)
    reference_iterator.close()
    assert len(reference) >= 3

    first = iter(make())
    stop = len(reference) // 2
    head = _take(first, stop)
    state = json.loads(json.dumps(first.get_state()))  # Must survive JSON.
    _take(first, 1)  # Running on past the save point must not matter.
    first.close()

    resumed = iter(make())
    resumed.set_state(state)
    tail = _take(resumed)
    resumed.close()
    got = head + tail
    assert len(got) == len(reference)
    for a, b in zip(got, reference):
      for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    per_process.append(_ids(reference))

  ids0, ids1 = per_process
  assert len(ids0) == len(set(ids0)) and len(ids1) == len(set(ids1))
  assert not set(ids0) & set(ids1)
  if mixture:  # One epoch of the mixture ends with its first exhausted ability.
    return
  if not packing:  # Everything fits and 48 examples per process fill 12 whole batches.
    assert sorted(ids0 + ids1) == list(range(NUM_EXAMPLES))
  else:  # Only the last partial batch of packed rows may be left out.
    assert len(set(ids0) | set(ids1)) >= NUM_EXAMPLES - 2 * config.batch_size * config.max_segments


def test_iterator_state_saves_and_restores_through_orbax(split_dir, tmp_path):
  ocp = pytest.importorskip("orbax.checkpoint")
  config = dataclasses.replace(BASE, num_epochs=None)
  make = lambda: iter(pipeline.load_dataset(split_dir, "train", config))
  reference = make()
  expected = [_ids(_take(reference, 1)) for _ in range(6)]
  reference.close()

  iterator = make()
  _take(iterator, 3)
  with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
    manager.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(iterator)))
    manager.wait_until_finished()
    iterator.close()
    # Grain's handler writes one JSON file per process.
    assert (tmp_path / "ckpt" / "3" / "data" / "process_0-of-1.json").exists()
    restored = manager.restore(
        3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(make())))["data"]
  assert [_ids(_take(restored, 1)) for _ in range(3)] == expected[3:]
  restored.close()


def test_mixture_weights_are_respected_on_every_process(split_dir):
  weights = {"voice_chat": 3.0, "realtime_asr": 1.0, "proactive_help": 0.0}
  config = dataclasses.replace(BASE, mixture=weights, num_epochs=None, max_len=80,
                               max_chunks=10)
  abilities = storage.read_split_metadata(split_dir, "train").abilities
  total = collections.Counter()
  for process in range(2):
    iterator = iter(pipeline.load_dataset(split_dir, "train", config, shard_index=process,
                                          shard_count=2))
    ids = _ids(_take(iterator, 50))  # 200 examples, i.e. many epochs of each small stream.
    iterator.close()
    counts = collections.Counter(abilities[i] for i in ids)
    assert set(counts) == {"voice_chat", "realtime_asr"}
    # Grain mixes deterministically, so the share is exact up to rounding; 2% slack.
    assert abs(counts["voice_chat"] / len(ids) - 0.75) <= 0.02, counts
    total += counts
  assert abs(total["voice_chat"] / sum(total.values()) - 0.75) <= 0.02, total


def test_make_global_batch_and_config(split_dir):
  config = pipeline.PipelineConfig.from_config(
      config_lib.load_config(str(config_lib.experiments_dir() / "tiny.py")),
      batch_size=len(jax.devices()) * 2, max_len=80, max_chunks=4, num_epochs=1)
  assert (config.chunk_samples, config.slots_per_chunk) == (2560, 2)
  local = {name: np.zeros(s.shape, s.dtype) for name, s in pipeline.batch_spec(config).items()}
  mesh = jax.make_mesh((len(jax.devices()),), ("data",))
  batch = pipeline.make_global_batch(local, mesh, jax.P("data"))
  for name, value in batch.items():
    assert isinstance(value, jax.Array) and value.shape == local[name].shape
    assert value.sharding.spec == jax.P("data")

  with pytest.raises(ValueError, match="overflow"):
    dataclasses.replace(config, overflow="wrap")
  with pytest.raises(ValueError, match="mixture ability"):
    pipeline.load_dataset(split_dir, "train", dataclasses.replace(
        BASE, mixture={"no_such_ability": 1.0}))


# ------------------------------------------------------- character-level CTC targets
def _tiny_tokenizer():
  import audio_interaction
  from audio_interaction.data.tokenizer import Tokenizer
  package = pathlib.Path(audio_interaction.__file__).parent
  return Tokenizer.load(package / "assets" / "tiny" / "tokenizer")


def _worded_example(tokenizer, words_and_chunks):
  """select_fields' output for a transcript of (word, chunk it ends in) pairs."""
  tokens, chunks = [], []
  for i, (word, chunk) in enumerate(words_and_chunks):
    ids = tokenizer.encode(f" {word}" if i else word)
    tokens += ids
    chunks += [chunk] * len(ids)
  return {"transcript": np.asarray(tokens, np.int32),
          "transcript_chunks": np.asarray(chunks, np.int32)}


@pytest.mark.parametrize("kind", ["sentencepiece", "bytes"])
def test_spelled_transcripts_say_the_same_words_one_character_per_id(kind):
  from audio_interaction.data.tokenizer import ByteTokenizer
  tokenizer = _tiny_tokenizer() if kind == "sentencepiece" else ByteTokenizer()
  words = [("reinforcements", 2), ("in", 3), ("transit", 3), ("don't", 5), ("turn", 7)]
  example = _worded_example(tokenizer, words)
  spelled = pipeline.spell_transcript(example, tokenizer)
  assert tokenizer.decode(spelled["transcript"]) == "reinforcements in transit don't turn"
  pieces = [tokenizer.decode([i]) for i in spelled["transcript"]]
  assert all(len(p) <= 1 for p in pieces), pieces  # a character, or the word-start mark
  # Bytes are characters already; the SentencePiece transcript grows.
  assert (len(spelled["transcript"]) > len(example["transcript"])) == (kind == "sentencepiece")
  # Each word's characters carry the chunk the word ends in.
  expected = []
  for i, (word, chunk) in enumerate(words):
    expected += [chunk] * len(tokenizer.spell([word] if not i else ["x", word])[-1])
  np.testing.assert_array_equal(spelled["transcript_chunks"], expected)
  empty = pipeline.spell_transcript(_worded_example(tokenizer, []), tokenizer)
  assert len(empty["transcript"]) == 0 and empty["transcript"].dtype == np.int32


def test_character_targets_flow_through_the_pipeline(split_dir):
  tokenizer = _tiny_tokenizer()
  source = storage.load_split(split_dir, "train")
  texts = ["turn on the garage fan", "what time is it", "", "please open the bathroom door"]
  records = []
  for i in range(8):
    record = dict(source[i])
    example = _worded_example(tokenizer, [(w, 1) for w in texts[i % 4].split()])
    record.update(example, ability="realtime_asr")
    records.append(record)
  config = dataclasses.replace(BASE, max_len=400, max_chunks=10, max_transcript=48,
                               ctc_targets="characters")
  with pytest.raises(ValueError, match="pass the data's tokenizer"):
    pipeline.make_dataset(records, config, shard_index=0, shard_count=1)
  rows = _take(pipeline.make_dataset(records, config, shard_index=0, shard_count=1,
                                     tokenizer=tokenizer))
  said = sorted(tokenizer.decode(row) for b in rows for row in b["transcript"])
  assert said == sorted(t for t in texts for _ in range(2))
  longest = sum(len(ids) for ids in tokenizer.spell(texts[3].split()))
  assert max(int((row != sf.PAD_ID).sum()) for b in rows for row in b["transcript"]) == longest
