"""Reply matching of the held-out evaluation, on hand-made cases."""

from audio_interaction.eval.heldout import Match, match_replies


def test_on_time_exact_reply():
  assert match_replies([(10, "Twelve.")], [(10, "twelve")], 6) == Match(1, 1, 0, (0,))


def test_late_within_window_wrong_text():
  assert match_replies([(10, "twelve")], [(13, "eleven")], 6) == Match(1, 0, 0, (3,))


def test_a_reply_before_the_question_ended_is_a_false_trigger():
  # It spoke at chunk 8, before the question was complete at chunk 10, and never again.
  assert match_replies([(10, "twelve")], [(8, "twelve")], 6) == Match(0, 0, 1, ())


def test_too_late_and_extra_replies():
  got = match_replies([(10, "a"), (30, "b")], [(17, "a"), (31, "b"), (40, "c")], 6)
  assert got == Match(hits=1, exact=1, false_triggers=2, latency_chunks=(1,))


def test_one_model_reply_answers_one_expected_reply_only():
  got = match_replies([(10, "a"), (11, "a")], [(12, "a")], 6)
  assert got == Match(1, 1, 0, (2,))


def test_nothing_expected_nothing_said():
  assert match_replies([], [], 6) == Match(0, 0, 0, ())


def test_each_expected_reply_keeps_the_reply_that_answered_it():
  got = match_replies([(30, "b"), (10, "a")], [(12, "x y"), (40, "late")], 6)
  assert got.answered == (("a", "x y"), ("b", ""))
