"""The benchmark metrics on hand-computed cases (times in seconds)."""

import math

import pytest

from audio_interaction.eval import metrics as m


# ------------------------------------------------------------------------------ WER

def test_wer_counts_over_the_corpus():
  # "a b c" -> "a x c": 1 substitution; "d e" -> "d e f": 1 insertion; 5 reference words.
  got = m.word_error_rate(["a b c", "d e"], ["a x c", "d e f"])
  assert got == m.WerResult(wer=2 / 5, substitutions=1, deletions=0, insertions=1,
                            reference_words=5)


def test_wer_normalizes_case_punctuation_and_digits():
  assert m.word_error_rate(["What is two plus 2?"], ["what is 2 plus two"]).wer == 0.0


def test_wer_empty_hypothesis_deletes_everything():
  got = m.word_error_rate(["one two three"], [""])
  assert (got.wer, got.deletions, got.reference_words) == (1.0, 3, 3)


def test_wer_empty_reference_counts_insertions():
  # Pair 2 has nothing to recognise, but two words were said: 2 insertions over 2 words.
  got = m.word_error_rate(["hello there", ""], ["hello there", "uh oh"])
  assert (got.wer, got.insertions, got.reference_words) == (1.0, 2, 2)


def test_wer_with_no_reference_words_at_all():
  assert m.word_error_rate([""], [""]).wer == 0.0
  assert m.word_error_rate([""], ["boo"]).wer == math.inf
  assert m.word_error_rate([], []).wer == 0.0


def test_cer_counts_character_edits_over_the_corpus():
  # "remaining" -> "remainin": 1 deletion; "two" -> "to": 1; "a b" -> "": 3 (the space
  # counts). Reference characters after normalization: 9 + 3 + 3 = 15.
  assert m.character_error_rate(["Remaining!", "two", "a b"], ["remainin", "to", ""]) == \
      pytest.approx(5 / 15)
  # The space counts: "ab" for "a b" is one deletion of three characters.
  assert m.character_error_rate(["a b"], ["ab"]) == pytest.approx(1 / 3)
  assert m.character_error_rate(["", "x"], ["hey", "x"]) == pytest.approx(3 / 1)
  assert m.character_error_rate([""], [""]) == 0.0
  assert m.character_error_rate([""], ["a"]) == math.inf
  with pytest.raises(ValueError):
    m.character_error_rate(["a"], [])


def test_wer_length_mismatch_is_an_error():
  with pytest.raises(ValueError, match="1 references for 2"):
    m.word_error_rate(["a"], ["a", "b"])


# ------------------------------------------------------------------- emission delay

def test_emission_delay_of_hits_only():
  reference = [("the", 0.3, 0.5), ("cat", 0.6, 0.9), ("sat", 1.1, 1.4)]
  emitted = [("the", 0.64), ("bat", 1.12), ("sat", 1.6)]  # "cat" misrecognised
  delays = m.emission_delays(reference, emitted)
  assert delays == pytest.approx([0.14, 0.2])


def test_emission_delay_with_insertions_and_deletions():
  reference = [("one", 0.5, 1.0), ("two", 1.5, 2.0), ("three", 2.5, 3.0)]
  emitted = [("uh", 0.5), ("one", 1.2), ("three", 3.5)]  # "uh" inserted, "two" deleted
  assert m.emission_delays(reference, emitted) == pytest.approx([0.2, 0.5])


def test_emission_delay_empty_sides():
  assert m.emission_delays([], [("a", 1.0)]) == []
  assert m.emission_delays([("a", 0.5, 1.0)], []) == []


def test_a_word_emitted_before_it_ended_has_a_negative_delay():
  assert m.emission_delays([("seven", 1.6, 2.0)], [("Seven", 1.92)]) == pytest.approx([-0.08])


def test_a_hit_emitted_before_the_word_started_is_not_a_recognition():
  # "the" emitted at 0.2 aligns by text with the "the" spoken over [3.0, 3.2].
  reference = [("see", 1.0, 1.3), ("the", 3.0, 3.2)]
  assert m.aligned_hits(["see", "the"], ["the"]) == [(1, 0)]
  assert m.emission_delays(reference, [("the", 0.2)]) == []
  assert m.emission_delays(reference, [("see", 1.4), ("the", 3.36)]) == pytest.approx(
      [0.1, 0.16])


def test_summarize():
  got = m.summarize([0.1, None, 0.3, 0.2])
  assert got["count"] == 3 and got["median"] == pytest.approx(0.2)
  assert got["p90"] == pytest.approx(0.28)  # numpy's linear interpolation
  assert math.isnan(m.summarize([None])["median"])


# --------------------------------------------------------------------- turn-taking

def test_response_latency_and_miss_rate():
  # Turn 1 ends at 2.0, answered at 2.16; turn 2 ends at 5.0, the reply at 9.0 is too late.
  latencies = m.response_latencies([2.0, 5.0], [2.16, 9.0], window=1.0)
  assert latencies == [pytest.approx(0.16), None]
  assert m.miss_rate(latencies) == 0.5


def test_a_reply_before_the_question_ended_cuts_in_and_does_not_answer():
  # The question spans [1.0, 3.0) with a pause inside; the model spoke at 2.24 (in the
  # pause) and never again: a cut-in, and the turn is missed.
  turns = [(1.0, 3.0)]
  replies = [2.24]
  assert m.false_cut_in_rate(turns, replies) == 1.0
  assert m.response_latencies([3.0], replies, window=1.0) == [None]
  assert m.miss_rate(m.response_latencies([3.0], replies, window=1.0)) == 1.0


def test_cut_in_then_answered():
  turns = [(1.0, 3.0), (5.0, 6.0)]
  replies = [2.24, 3.2, 6.08]
  assert m.false_cut_in_rate(turns, replies) == 0.5
  assert m.response_latencies([3.0, 6.0], replies, 1.0) == [pytest.approx(0.2),
                                                             pytest.approx(0.08)]


def test_a_reply_at_the_turn_end_is_on_time():
  assert m.false_cut_in_rate([(1.0, 3.0)], [3.0]) == 0.0
  assert m.response_latencies([3.0], [3.0], 1.0) == [0.0]


def test_one_reply_answers_one_turn():
  assert m.response_latencies([1.0, 1.1], [1.2], 1.0) == [pytest.approx(0.2), None]


def test_no_turns_gives_nan_rates():
  assert math.isnan(m.false_cut_in_rate([], [1.0]))
  assert math.isnan(m.miss_rate([]))


# ------------------------------------------------------------------------- alerts

def test_alerts_precision_recall_f1_and_onset_latency():
  # Event A [2, 4], B [10, 12]; alerts at 2.5 (A), 7.0 (false), nothing for B.
  match = m.match_alerts([(2.0, 4.0), (10.0, 12.0)], [2.5, 7.0])
  assert match.onset_latencies == (pytest.approx(0.5), None)
  assert match.false_alarms == 1 and match.alerts == 2
  scores = m.alert_scores([match])
  assert scores["precision"] == 0.5 and scores["recall"] == 0.5
  assert scores["f1"] == pytest.approx(0.5)


def test_overlapping_events_need_one_alert_each():
  # Two overlapping events (siren [1, 3], crash [1.5, 2.5]); one alert at 2.0 detects
  # only the first; a second alert at 2.2 detects the other.
  one = m.match_alerts([(1.0, 3.0), (1.5, 2.5)], [2.0])
  assert one.detected == 1 and one.false_alarms == 0
  two = m.match_alerts([(1.5, 2.5), (1.0, 3.0)], [2.2, 2.0])
  assert two.detected == 2 and two.onset_latencies == (pytest.approx(1.0), pytest.approx(0.7))
  # Events sorted by onset: [1, 3] takes the alert at 2.0 (index 1), [1.5, 2.5] the 2.2 one.
  assert two.detectors == (1, 0) and one.detectors == (0, None)


def test_late_alerts_are_the_false_alarms_raised_while_an_alert_sound_goes_on():
  # A ringtone sounds [2, 9] s, deadline 4 s; alerts at 2.5 (detects it), 6.0 and 10.5
  # (during it or within the 2 s window after it: late), 12.0 and 1.0 (benign time).
  times = [1.0, 2.5, 6.0, 10.5, 12.0]
  match = m.match_alerts([(2.0, 4.0)], times)
  assert match.detected == 1 and match.false_alarms == 4
  assert m.late_alerts(match, times, [(2.0, 9.0)], window=2.0) == 2
  assert m.late_alerts(match, times, [(2.0, 9.0)], window=1.0) == 1  # 10.5 now after it
  assert m.late_alerts(match, times, [], window=2.0) == 0
  # The detecting alert is never counted late, even inside the sound.
  missed = m.match_alerts([(2.0, 4.0)], [5.0])
  assert missed.false_alarms == 1 and m.late_alerts(missed, [5.0], [(2.0, 9.0)], 2.0) == 1


def test_an_alert_before_the_onset_is_false():
  match = m.match_alerts([(5.0, 6.0)], [4.9])
  assert match.detected == 0 and match.false_alarms == 1


def test_false_alarms_per_hour_and_empty_cases():
  assert m.false_alarms_per_hour(3, 1800.0) == 6.0
  assert math.isnan(m.false_alarms_per_hour(0, 0.0))
  benign_only = m.alert_scores([m.match_alerts([], [])])
  assert math.isnan(benign_only["precision"]) and math.isnan(benign_only["recall"])
  missed_all = m.alert_scores([m.match_alerts([(1.0, 2.0)], [5.0])])
  assert missed_all["f1"] == 0.0


# ------------------------------------------------------------- interaction control

def test_speaking_segments_merge_adjacent_chunks():
  chunks = [(1.0, 1.16), (1.16, 1.32), (2.0, 2.16)]
  assert m.speaking_segments(chunks) == [(1.0, 1.32), (2.0, 2.16)]


def test_barge_in_yield_rate_and_latency():
  speaking = [(3.0, 3.8), (6.0, 9.0)]
  # Onset 3.5: stops at 3.8 (0.3 s); onset 7.0: keeps talking to 9.0 (2 s); onset 5.0:
  # it was not speaking, nothing to yield.
  latencies = m.yield_latencies([3.5, 7.0, 5.0], speaking)
  assert latencies == [pytest.approx(0.3), pytest.approx(2.0), None]
  assert m.yield_rate(latencies, max_latency=0.5) == 0.5
  assert math.isnan(m.yield_rate([None], 0.5))


def test_false_reply_rate_to_unaddressed_speech():
  spans = [(1.0, 3.0), (5.0, 7.0), (8.0, 9.0)]
  assert m.false_reply_rate(spans, [2.5, 9.5]) == pytest.approx(1 / 3)
  assert math.isnan(m.false_reply_rate([], [1.0]))


def test_exact_match_normalizes():
  assert m.exact_match("Four.", "four")
  assert not m.exact_match("four", "for")


def test_matching_answers_counts_each_said_answer_once_whenever_said():
  expected = ["heard ten", "I hear rain.", "heard ten", "that is two crashes"]
  said = ["Heard ten", "i hear rain", "i hear music", "heard ten", "heard ten"]
  assert m.matching_answers(expected, said) == 3  # two "heard ten", one rain; no crashes
  assert m.matching_answers(expected, []) == 0
  assert m.matching_answers(["heard ten"], ["heard ten", "heard ten"]) == 1
