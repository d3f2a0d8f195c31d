"""docs/pooled_turns.py: B5 pooled over eval runs, against counts worked out by hand."""

import json

import pytest
from repo_scripts import load_script


def _run(path, turns, cut_in, miss, latencies, timer_latencies):
  path.mkdir()
  b5 = {"model": {"turns": turns, "false_cut_in_rate": cut_in, "miss_rate": miss,
                  "latencies": latencies},
        "silence_timer": {"turns": turns, "false_cut_in_rate": 0.0, "miss_rate": 0.0,
                          "latencies": timer_latencies}}
  (path / "results.json").write_text(json.dumps({"suites": {"B5": b5}}))
  return path


def test_turns_are_pooled_as_counts_and_one_median(tmp_path, capsys, monkeypatch):
  pooled = load_script("docs/pooled_turns.py")
  a = _run(tmp_path / "a", 4, 0.5, 0.25, [0.1, 0.2, 0.9], [0.7, 0.7, 0.7, 0.7])
  b = _run(tmp_path / "b", 6, 1 / 3, 0.0, [0.3, 0.4, 0.5, 0.6, 0.8, 1.0], [0.8] * 6)
  # 2 + 2 cut-ins, 1 + 0 misses of 10 turns; the median of all 9 latencies is 0.5
  # (not the mean of the two runs' medians, 0.35).
  assert pooled.pooled([a, b], "model") == (10, 4, 1, pytest.approx(0.5))
  assert pooled.pooled([a, b], "silence_timer") == (10, 0, 0, pytest.approx(0.8))
  monkeypatch.setattr("sys.argv", ["pooled_turns.py", "--run", f"both={a},{b}"])
  pooled.main()
  out = capsys.readouterr().out
  assert "| both | 10 | 4 (40%) | 1 (10%) | 0.50 s |" in out
  assert "| 0.7 s silence timer (both's runs) | 10 | 0 (0%) | 0 (0%) | 0.80 s |" in out
