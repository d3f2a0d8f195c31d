"""The CLI checks what it is given before any model loads, and reports each problem once,
as one line with exit code 2: input files, numeric options, `--config.*` overrides."""

from __future__ import annotations

import io
import json
import types

import jax
import numpy as np
import pytest
import soundfile

from audio_interaction.apps import cli
from audio_interaction.apps import listen as listen_app
from audio_interaction.data.tokenizer import ByteTokenizer
from audio_interaction.export import portable
from audio_interaction.model.model import AudioInteractionModel
import model_testing

RATE = 16000


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
  tokenizer = ByteTokenizer()
  config = model_testing.small_config(**{"model.decoder.vocab_size": tokenizer.vocab_size})
  model = AudioInteractionModel(config)
  return portable.save_bundle(tmp_path_factory.mktemp("bundle"), model.init(jax.random.key(2)),
                              tokenizer, config)


@pytest.fixture
def no_model(monkeypatch):
  """Any attempt to load a model fails the test: the error must come first."""
  def refuse(*args, **kwargs):
    raise AssertionError("the model was loaded before the arguments were checked")
  monkeypatch.setattr(listen_app, "load_model", refuse)
  monkeypatch.setattr(portable, "load_model", refuse)
  monkeypatch.setattr(portable, "load_bundle", refuse)


def one_error_line(capsys, verb: str = "listen") -> str:
  captured = capsys.readouterr()
  lines = [line for line in captured.err.splitlines() if line.strip()]
  assert len(lines) == 1, captured.err
  assert lines[0].startswith(f"audio-interaction {verb}: error: "), lines[0]
  assert "Traceback" not in captured.err and "error" not in captured.out.lower(), captured
  return lines[0]


def wav(tmp_path, seconds: float = 1.0, name: str = "talk.wav"):
  path = tmp_path / name
  soundfile.write(path, 0.1 * np.sin(np.arange(int(seconds * RATE)) / 7).astype(np.float32), RATE)
  return path


# --------------------------------------------------------------- the input file
@pytest.mark.parametrize("kind, message", [
    ("missing", "audio file not found"),
    ("empty", "file is empty (0 bytes)"),
    ("corrupt", "could not decode audio"),
    ("directory", "not a regular file"),
    ("zero_length", "zero-length audio"),
])
def test_a_bad_input_file_is_one_line_before_the_model_loads(kind, message, tmp_path, capsys,
                                                              no_model):
  path = tmp_path / "input.wav"
  if kind == "empty":
    path.write_bytes(b"")
  elif kind == "corrupt":
    path.write_bytes(b"RIFF this is not a wave file at all" * 20)
  elif kind == "directory":
    path.mkdir()
  elif kind == "zero_length":
    soundfile.write(path, np.zeros(0, np.float32), RATE)
  assert cli.main(["listen", str(path), "--out", str(tmp_path / "out")]) == 2
  line = one_error_line(capsys)
  assert str(path) in line and message in line


# ---------------------------------------------------------------- numeric options
@pytest.mark.parametrize("option, value, message", [
    ("--threshold", "1.5", "must be in [0, 1]"),
    ("--threshold", "-0.1", "must be in [0, 1]"),
    ("--threshold", "nan", "not a number"),
    ("--threshold", "half", "not a number"),
    ("--stall-timeout", "0", "must be > 0"),
    ("--stall-timeout", "-2", "must be > 0"),
    ("--speed", "0", "must be > 0"),
    ("--speed", "-1", "must be > 0"),
])
def test_numeric_options_are_checked_first(option, value, message, tmp_path, capsys, no_model):
  path = wav(tmp_path)
  assert cli.main(["listen", str(path), option, value]) == 2
  line = one_error_line(capsys)
  assert option in line and message in line


def test_demo_threshold_is_checked_first(capsys, no_model):
  assert cli.main(["demo", "--threshold", "2"]) == 2
  assert "must be in [0, 1]" in one_error_line(capsys, "demo")


# ------------------------------------------------------------- --config overrides
@pytest.mark.parametrize("verb", ["listen", "demo"])
def test_model_config_overrides_are_refused_on_a_bundle(verb, tmp_path, capsys, no_model):
  argv = [verb, str(wav(tmp_path))] if verb == "listen" else [verb]
  assert cli.main(argv + ["--config.model.decoder.num_layers=1"]) == 2
  line = one_error_line(capsys, verb)
  assert "--config.model.decoder.num_layers" in line and "--config.infer." in line
  assert "threshold" in line  # the fields that can be set are named


@pytest.mark.parametrize("override, message", [
    ("--config.infer.threshhold=0.3", "threshhold"),
    ("--config.infer.threshold=abc", "threshold"),
    ("--config.infer.threshold=3.0", "infer.threshold=3.0: must be a number in [0, 1]"),
])
def test_bad_infer_overrides_are_one_line(override, message, tmp_path, capsys, no_model):
  assert cli.main(["listen", str(wav(tmp_path)), override]) == 2
  assert message in one_error_line(capsys)


def test_infer_threshold_override_is_used_and_the_flag_wins(bundle, tmp_path):
  path = wav(tmp_path, 0.5)
  for extra, expected in ((["--config.infer.threshold=0.9"], 0.9),
                          (["--config.infer.threshold=0.9", "--threshold", "0.2"], 0.2),
                          ([], 0.5)):  # the bundle's own infer.threshold (the default)
    out = tmp_path / f"out{expected}"
    assert cli.main(["listen", str(path), "--checkpoint", str(bundle), "--speed", "inf",
                     "--out", str(out), *extra]) == 0
    start = json.loads((out / "events.jsonl").read_text().splitlines()[0])
    assert start["event"] == "start" and start["threshold"] == expected


def test_infer_overrides_reach_the_run_policy_weights_and_reply_cap(bundle, tmp_path,
                                                                   monkeypatch):
  formats = []
  real_params_for = listen_app.params_for
  monkeypatch.setattr(listen_app, "params_for",
                      lambda params, weights: formats.append(weights) or real_params_for(
                          params, weights))
  path = wav(tmp_path, 1.0)
  runs = {}
  for policy in ("model", "hybrid"):
    out = tmp_path / policy
    assert cli.main(["listen", str(path), "--checkpoint", str(bundle), "--speed", "inf",
                     "--out", str(out), "--config.infer.weights=int8",
                     f"--config.infer.policy={policy}", "--config.infer.vad=energy",
                     "--config.infer.threshold=0.0", "--config.infer.max_reply_tokens=2"]) == 0
    runs[policy] = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
  assert formats == ["int8", "int8"]
  assert runs["model"][0]["policy"] == "ThresholdPolicy"
  assert runs["hybrid"][0]["policy"] == "HybridPolicy"
  # Threshold 0 speaks from the first chunk, and the cap cuts every reply at 2 tokens.
  ends = [e for e in runs["model"] if e["event"] == "reply_end"]
  assert ends and all(len(e["tokens"]) <= 2 for e in ends)
  assert any(e["reason"] == "max_tokens" for e in ends)


# ----------------------------------------------------------- errors while running
def test_an_error_during_the_run_is_printed_once(bundle, tmp_path, monkeypatch, capsys):
  monkeypatch.setattr("sys.stdin", types.SimpleNamespace(buffer=io.BytesIO(b"\0" * 3200)))
  assert cli.main(["listen", "--stdin", "--rate", "8000", "--checkpoint", str(bundle),
                   "--out", str(tmp_path / "out")]) == 2
  captured = capsys.readouterr()
  everything = captured.out + captured.err
  assert everything.count("8000 Hz") == 1, everything
  assert one_error_line(types.SimpleNamespace(readouterr=lambda: captured))


def test_known_errors_of_other_verbs_are_one_line(tmp_path, capsys):
  assert cli.main(["inspect", "--config", str(tmp_path / "nope.py")]) == 2
  assert "nope.py" in one_error_line(capsys, "inspect")
  # A config's TypeError (a bool field given a number) is a one-line error too.
  assert cli.main(["inspect", "--config.data.packing=3"]) == 2
  assert "data.packing" in one_error_line(capsys, "inspect")
  # No bundle there: the error names the directory.
  assert cli.main(["listen", str(wav(tmp_path)), "--checkpoint", str(tmp_path / "none")]) == 2
  assert "none" in one_error_line(capsys)
