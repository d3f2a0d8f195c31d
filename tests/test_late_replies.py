"""benchmarks/late_replies.py's per-stream sums, on a hand-made row."""

import numpy as np
from repo_scripts import load_script

from audio_interaction import stream_format as sf

late_replies = load_script("benchmarks/late_replies.py")


def test_sums_count_reply_tokens_naming_a_heard_sound_on_each_side_of_the_cut():
  vocab = sf.NUM_SPECIAL_TOKENS + 40
  text = sf.NUM_SPECIAL_TOKENS
  # Six positions; replies at 1-5 (targets below); the cut at position 3.
  tokens = np.array([sf.ONLINE_ID, text, text + 1, text + 2, text + 3, text + 4])
  targets = np.array([text, text + 10, text + 11, text + 10, text + 12, text + 20])
  weights = np.array([0, 1, 1, 1, 1, 1], np.float32)
  # The model's argmax: right at 1, 3 and 5, wrong at 2 and 4.
  guesses = np.array([text, text + 10, text + 30, text + 10, text + 30, text + 20])
  logits = np.full((6, vocab), -5.0, np.float32)
  logits[np.arange(6), guesses] = 5.0
  row = {"tokens": tokens, "lm_targets": targets, "lm_weights": weights,
         "decision_targets": np.full(6, sf.NO_INDEX), "sound_events": np.array([0, 2, -1])}
  # Class 2 is heard; its name is tokens text+10 and text+11. Class 1 (text+12) is not.
  names = ((), (text + 12,), (text + 10, text + 11))
  sums = late_replies.stream_scores(logits, np.zeros((6, 2), np.float32), row, 3, names)
  np.testing.assert_array_equal(sums["tokens"], [2, 3])
  np.testing.assert_array_equal(sums["correct"], [1, 2])
  # Naming the heard sound: positions 1, 2 (before the cut), 3 (after); right at 1 and 3.
  np.testing.assert_array_equal(sums["sound_name"], [2, 1])
  np.testing.assert_array_equal(sums["sound_name_correct"], [1, 1])
  rates = late_replies.pooled_rates(sums)
  assert rates["before/sound_name_accuracy"] == 0.5 and rates["after/sound_name_accuracy"] == 1.0
  # Without names nothing counts as naming a sound.
  plain = late_replies.stream_scores(logits, np.zeros((6, 2), np.float32), row, 3)
  np.testing.assert_array_equal(plain["sound_name"], [0, 0])


def test_zeroed_sets_only_the_named_modules_to_zero():
  params = {"params": {"sound_event_feed": {"kernel": np.ones((2, 3))},
                       "sound_event_head": {"kernel": np.ones((3, 2)), "bias": np.ones(2)},
                       "decoder": {"embed": {"embedding": np.ones((4, 3))}}}}
  out = late_replies.zeroed(params, "sound_event_feed")
  assert not out["params"]["sound_event_feed"]["kernel"].any()
  assert out["params"]["sound_event_head"]["kernel"].all() and out["params"]["decoder"]["embed"]["embedding"].all()
  assert params["params"]["sound_event_feed"]["kernel"].all()  # the bundle's own are left
  import pytest
  with pytest.raises(SystemExit, match="no such module"):
    late_replies.zeroed(params, "copy")
