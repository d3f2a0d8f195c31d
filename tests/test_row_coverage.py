"""What a training row keeps: the counts of `data.row_coverage` against hand-computed ones."""

import numpy as np
import pytest

from audio_interaction import stream_format as sf
from audio_interaction.data import pipeline, row_coverage
from synthetic_examples import SyntheticExamples

CHUNK_SAMPLES = 160


def _settings(max_chunks: int, max_len: int = 10_000) -> pipeline.PipelineConfig:
  return pipeline.PipelineConfig(batch_size=1, max_len=max_len, max_chunks=max_chunks,
                                 max_transcript=10_000, chunk_samples=CHUNK_SAMPLES,
                                 slots_per_chunk=2)


def _records(count: int = 40):
  make = SyntheticExamples(chunk_samples=CHUNK_SAMPLES, min_chunks=4, max_chunks=16,
                           speak_probability=0.4, offline_fraction=0.25)
  return [dict(make(i, 0), example_index=i) for i in range(count)]


def _by_hand(record, max_chunks: int):
  """(cut, dropped, replies, replies kept, speaks, speaks kept) of one record, counted
  from its tokens: an online stream keeps the positions before its chunk `max_chunks`'s
  <audio>; an offline example with more chunks than a row is dropped."""
  tokens = record["tokens"]
  replies = record["lm_weights"] > 0
  speaks = record["decision_targets"] == int(sf.Decision.SPEAK)
  chunks = int(record["num_chunks"])
  if chunks <= max_chunks:
    return 0, 0, replies.sum(), replies.sum(), speaks.sum(), speaks.sum()
  if tokens[1] == sf.OFFLINE_ID:
    return 0, 1, replies.sum(), 0, speaks.sum(), 0
  end = np.flatnonzero(tokens == sf.AUDIO_ID)[max_chunks]
  return 1, 0, replies.sum(), replies[:end].sum(), speaks.sum(), speaks[:end].sum()


def test_coverage_counts_what_the_cut_keeps_per_ability_and_in_all():
  records, max_chunks = _records(), 8
  abilities = [r["ability"] for r in records]
  got = row_coverage.row_coverage(records, abilities, _settings(max_chunks), progress=False)
  assert list(got) == sorted(set(abilities)) + ["all"]
  want = {}
  for record in records:
    counts = np.asarray(_by_hand(record, max_chunks))
    want[record["ability"]] = want.get(record["ability"], 0) + counts
  for ability, counts in want.items():
    c = got[ability]
    assert (c.cut, c.dropped, c.reply_tokens, c.reply_tokens_kept, c.speak_targets,
            c.speak_targets_kept) == tuple(int(x) for x in counts), ability
  everything = sum(want.values())
  assert got["all"].examples == len(records)
  assert (got["all"].cut, got["all"].dropped, got["all"].reply_tokens_kept) == (
      everything[0], everything[1], everything[3])
  # The case under test: streams cut, offline examples dropped, targets lost.
  assert got["all"].cut and got["all"].dropped
  assert got["all"].reply_tokens_kept < got["all"].reply_tokens
  assert got["all"].speak_targets_kept < got["all"].speak_targets


def test_rows_long_enough_keep_everything_and_the_table_says_so():
  records = _records(12)
  got = row_coverage.row_coverage(records, [r["ability"] for r in records], _settings(16),
                                  progress=False)
  assert got["all"].cut == got["all"].dropped == 0
  assert got["all"].reply_tokens_fraction == got["all"].speak_targets_fraction == 1.0
  table = row_coverage.markdown(got, _settings(16), chunk_ms=10)
  assert "16 chunks = 0.2 s" in table and "| **all** | 12 | 0 | 0 | 100% of" in table


def test_a_position_limit_cuts_too():
  record = next(r for r in _records() if r["tokens"][1] == sf.ONLINE_ID
                and r["num_chunks"] >= 6 and (r["lm_weights"] > 0).any())
  starts = np.flatnonzero(record["tokens"] == sf.AUDIO_ID)
  # Room for the positions of the first 3 chunks only, whatever max_chunks allows.
  c = row_coverage.example_coverage(record, _settings(64, max_len=int(starts[3])))
  assert c.cut == 1 and c.reply_tokens_kept == int((record["lm_weights"][:starts[3]] > 0).sum())


def test_abilities_must_match_the_records():
  with pytest.raises(ValueError, match="3 abilities for 2 records"):
    row_coverage.row_coverage(_records(2), ["a", "b", "c"], _settings(8), progress=False)
