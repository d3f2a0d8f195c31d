"""docs/answers_by_half.py: answer accuracy per tuning half, against counts by hand."""

import json

import pytest

from repo_scripts import load_script


def _run(path, answers):
  """An eval run directory whose cases.jsonl holds {case: (expected, said)}."""
  path.mkdir()
  lines = [json.dumps({"case": name, "expected": [{"text": text, "kind": "answer"}],
                       "systems": {"model": {"answer": said}}})
           for name, (text, said) in answers.items()]
  (path / "cases.jsonl").write_text("\n".join(lines) + "\n")
  return path


def test_each_half_counts_its_own_cases_right_after_normalising(tmp_path):
  by_half = load_script("docs/answers_by_half.py")
  run = _run(tmp_path / "run", {
      "a1": ("a dog barking", "A dog, barking."),  # right: normalised equal
      "a2": ("rain", "a doorbell"),
      "b1": ("a siren", "a siren"),
      "b2": ("thunder", None),                      # no answer: wrong
      "b3": ("music", "music"),
      "b4": ("footsteps", "a phone ringing")})
  assert by_half.right_by_case(run) == {"a1": True, "a2": False, "b1": True, "b2": False,
                                        "b3": True, "b4": False}
  [row] = by_half.rows([("β 8", run)], {"A": ["a1", "a2"], "B": ["b1", "b2", "b3", "b4"]})
  label, half_a, half_b = [cell.strip() for cell in row.strip("|").split("|")]
  assert label == "β 8"
  assert half_a.startswith("1 of 2, 50% [") and half_b.startswith("2 of 4, 50% [")


def test_an_online_case_is_right_when_every_reply_was_said_in_time_exactly(tmp_path):
  by_half = load_script("docs/answers_by_half.py")
  (tmp_path / "run").mkdir()
  expected = [{"text": "i hear rain", "ready_s": 3.0, "kind": "alert"}]
  lines = [json.dumps({"case": name, "expected": expected * count,
                       "systems": {"model": {"replies": [], "in_time": hits,
                                             "in_time_exact": exact}}})
           for name, count, hits, exact in (("all", 1, 1, 1), ("late", 1, 0, 0),
                                           ("wrong words", 1, 1, 0), ("half", 2, 2, 1))]
  (tmp_path / "run" / "cases.jsonl").write_text("\n".join(lines) + "\n")
  assert by_half.right_by_case(tmp_path / "run") == {
      "all": True, "late": False, "wrong words": False, "half": False}
  (tmp_path / "old").mkdir()
  (tmp_path / "old" / "cases.jsonl").write_text(json.dumps(
      {"case": "c", "expected": expected, "systems": {"model": {"replies": []}}}) + "\n")
  with pytest.raises(ValueError, match="in_time_exact"):
    by_half.right_by_case(tmp_path / "old")
