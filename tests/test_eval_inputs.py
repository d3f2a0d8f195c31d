"""`eval` on what a user hands it: a manifest with hostile lines, a directory as the
manifest, an --out that already holds a run."""

import json

import jax
import numpy as np
import pytest
import soundfile

from audio_interaction.apps import cli
from audio_interaction.data.tokenizer import ByteTokenizer
from audio_interaction.export import portable
from audio_interaction.model.model import AudioInteractionModel
import model_testing

FAST = ["--vad", "energy", "--sweep", "0.5"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
  config = model_testing.small_config(**{"model.decoder.vocab_size": 288})
  model = AudioInteractionModel(config)
  return portable.save_bundle(tmp_path_factory.mktemp("eval_inputs") / "bundle",
                              model.init(jax.random.key(0)), ByteTokenizer(), config)


def _sounds(tmp_path):
  t = np.arange(16000) / 16000
  soundfile.write(tmp_path / "alarm.wav", (0.3 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32),
                  16000)
  soundfile.write(tmp_path / "rain.wav", (0.05 * np.random.default_rng(1).normal(size=16000)
                                          ).astype(np.float32), 16000)
  return [json.dumps({"audio": "alarm.wav", "label": "smoke_alarm", "recognisable_after": 0.5}
                     ).encode(),
          json.dumps({"audio": "rain.wav", "label": "rain"}).encode()]


def test_cli_eval_manifest_with_hostile_lines_and_a_directory(bundle, tmp_path, capsys):
  """Bad lines in a manifest are counted skips (in the results and the report too); a
  directory or a missing manifest is a one-line error, never a traceback."""
  alarm, rain = _sounds(tmp_path)
  path = tmp_path / "manifest.jsonl"
  path.write_bytes(b"\n".join([
      alarm,
      b'{"audio": "rain.wav", "label": "r\xe9in"}',  # not UTF-8
      b"[" * 100_000 + b"]" * 100_000,  # nested too deeply
      b"[1, 2]",  # not an object
      b'{"audio": "rain.wav", "label": "toaster"}',  # no such class
      rain]) + b"\n")
  out = tmp_path / "report"
  code = cli.main(["eval", "--checkpoint", str(bundle), "--suites", "B3", "--manifest", str(path),
                   "--out", str(out), *FAST])
  captured = capsys.readouterr()
  assert code == 0, captured.err
  results = json.loads((out / "results.json").read_text())
  assert results["suites"]["B3"]["cases"] == 2  # the alarm and the rain
  assert results["manifest"] == {
      "path": str(path), "rows": 2,
      "skipped": {"bad_encoding": 1, "malformed_json": 2, "unknown_label": 1}}
  assert "4 rows skipped" in (out / "report.md").read_text()
  for bad in (tmp_path, tmp_path / "nope.jsonl"):
    code = cli.main(["eval", "--checkpoint", str(bundle), "--suites", "B3", "--manifest", str(bad),
                     "--out", str(tmp_path / "other"), *FAST])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert err.count("\n") == 1 and str(bad) in err


def test_cli_eval_refuses_an_existing_run_unless_overwrite(bundle, tmp_path, capsys):
  alarm, _ = _sounds(tmp_path)
  path = tmp_path / "manifest.jsonl"
  path.write_bytes(alarm + b"\n")
  out = tmp_path / "run"
  for name in ("results.json", "report.md"):
    out.mkdir(exist_ok=True)
    (out / name).write_text("an earlier run")
    # Refused before the model loads (this checkpoint does not even exist).
    code = cli.main(["eval", "--checkpoint", str(tmp_path / "no_bundle"), "--suites", "B3",
                     "--manifest", str(path), "--out", str(out), *FAST])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert f"--out {out} already holds a run ({name})" in err and "--overwrite" in err
    assert (out / name).read_text() == "an earlier run"
    (out / name).unlink()
  (out / "results.json").write_text("an earlier run")
  (tmp_path / "a_file").write_text("")
  assert cli.main(["eval", "--suites", "B3", "--manifest", str(path),
                   "--out", str(tmp_path / "a_file"), *FAST]) == 2
  assert "is a file" in capsys.readouterr().err
  code = cli.main(["eval", "--checkpoint", str(bundle), "--suites", "B3", "--manifest", str(path),
                   "--out", str(out), "--overwrite", *FAST])
  assert code == 0, capsys.readouterr().err
  assert json.loads((out / "results.json").read_text())["suites"]["B3"]["cases"] == 1
