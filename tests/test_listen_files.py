"""`listen` on users' own recordings: any length, rate, channel count and format, through
the real CLI entry; and what it prints when its output is piped."""

from __future__ import annotations

import contextlib
import io
import json
import pathlib
import re
import tempfile

import jax
import numpy as np
import pytest
import soundfile
from hypothesis import HealthCheck, Phase, example, given, settings, strategies as st

from audio_interaction.apps import cli
from audio_interaction.data.tokenizer import ByteTokenizer
from audio_interaction.export import portable
from audio_interaction.model.model import AudioInteractionModel
import model_testing

RATES = (8000, 16000, 22050, 44100, 48000)
# soundfile writes all four here (libsndfile >= 1.1 has MPEG); else the mp3 case is skipped.
FORMATS = {"wav": dict(format="WAV", subtype="PCM_16"),
           "flac": dict(format="FLAC", subtype="PCM_16"),
           "ogg": dict(format="OGG", subtype="VORBIS"),
           "mp3": dict(format="MP3", subtype="MPEG_LAYER_III")}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
  """A tiny randomly initialised model bundle (the shape of the embedded one, fewer layers)."""
  tokenizer = ByteTokenizer()
  config = model_testing.small_config(**{"model.decoder.vocab_size": tokenizer.vocab_size})
  model = AudioInteractionModel(config)
  return portable.save_bundle(tmp_path_factory.mktemp("bundle"), model.init(jax.random.key(1)),
                              tokenizer, config)


def recording(seconds: float, rate: int, channels: int, seed: int = 0) -> np.ndarray:
  """[frames, channels]: a voice-like tone with noise, an odd number of frames."""
  rng = np.random.default_rng(seed)
  n = int(seconds * rate) | 1
  t = np.arange(n) / rate
  tone = 0.3 * np.sin(2 * np.pi * 220 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t))
  return np.stack([tone + 0.02 * rng.standard_normal(n) for _ in range(channels)], 1
                  ).astype(np.float32)


def run_listen(bundle, path: pathlib.Path, out: pathlib.Path, *extra: str) -> tuple[int, str]:
  printed = io.StringIO()
  with contextlib.redirect_stdout(printed):
    code = cli.main(["listen", str(path), "--checkpoint", str(bundle), "--speed", "inf",
                     "--out", str(out), *extra])
  return code, printed.getvalue()


# Few examples, no shrinking (a failure shows its example as drawn), no database files.
@settings(max_examples=6, deadline=None, derandomize=True, database=None,
          phases=(Phase.explicit, Phase.generate), suppress_health_check=[HealthCheck.too_slow])
@given(seconds=st.floats(0.3, 30.0), rate=st.sampled_from(RATES), channels=st.sampled_from((1, 2)),
       ext=st.sampled_from(sorted(FORMATS)))
@example(seconds=29.7, rate=44100, channels=2, ext="mp3")  # always: the README's case
@example(seconds=0.3, rate=48000, channels=2, ext="ogg")
@example(seconds=7.77, rate=48000, channels=1, ext="wav")
def test_listen_works_on_any_recording(bundle, seconds, rate, channels, ext):
  if FORMATS[ext]["format"] not in soundfile.available_formats():
    pytest.skip(f"this libsndfile cannot write {ext}")
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    path = tmp / f"recording.{ext}"
    soundfile.write(path, recording(seconds, rate, channels), rate, **FORMATS[ext])
    code, printed = run_listen(bundle, path, tmp / "out")
    assert code == 0, printed
    assert (tmp / "out" / "timeline.png").stat().st_size > 10_000
    assert json.loads((tmp / "out" / "events.jsonl").read_text().splitlines()[-1])["event"] == "end"
    done = [line for line in printed.splitlines() if line.startswith("done: ")]
    assert len(done) == 1 and "timeline: " in done[0], printed
    # The whole file was heard: its length at 16 kHz, within a chunk.
    heard = float(re.search(r"chunks of ([\d.]+) s", done[0]).group(1))
    assert abs(heard - len(recording(seconds, rate, 1)) / rate) < 0.2


def test_piped_output_is_not_wrapped_and_the_summary_counts_the_replies(bundle, tmp_path):
  path = tmp_path / "a rather long file name for a recording, to make a long line.wav"
  soundfile.write(path, recording(1.3, 44100, 2), 44100)
  code, printed = run_listen(bundle, path, tmp_path / "out" / ("deep" * 10), "--threshold", "0")
  assert code == 0
  done = [line for line in printed.splitlines() if line.startswith("done: ")]
  assert len(done) == 1 and len(done[0]) > 120, printed  # one line, not cut at 80 columns
  assert done[0].rstrip().endswith("timeline.png"), done[0]
  assert re.search(r"(\d+) replies \(the last (\d+) listed above\)", done[0]), done[0]
