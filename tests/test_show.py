"""`audio-interaction show-example`: the picture, sound and text of one corpus example.

Runs on a tmp data dir holding the byte tokenizer; speech comes from the installed
TTS engines (espeak-ng at least), sounds from the sound bank.
"""

from __future__ import annotations

import re
import struct
import sys

import matplotlib.image
import numpy as np
import pytest
import soundfile

from audio_interaction import config_lib
from audio_interaction.apps import cli
from audio_interaction.corpus import build as corpus
from audio_interaction.viz import example as show
from audio_interaction.data import storage
from audio_interaction import stream_format as sf
from audio_interaction.corpus.timeline import chunk_samples_of, first_chunk_reaching, render
from audio_interaction.data.tokenizer import ByteTokenizer

TINY = str(config_lib.experiments_dir() / "tiny.py")


@pytest.fixture(scope="module")
def config(tmp_path_factory):
  directory = tmp_path_factory.mktemp("show_data")
  config = config_lib.load_config(TINY, [f"data.dir={directory}"])
  ByteTokenizer().save(corpus.tokenizer_path(config))
  return config


def _png_size(path) -> tuple[int, int]:
  """(width, height) from a PNG's header; fails unless the file is a PNG."""
  data = path.read_bytes()
  assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
  return struct.unpack(">II", data[16:24])


def _decisions(example) -> np.ndarray:
  """The example's label of every chunk: decision targets at the `<decide>` positions."""
  return example["decision_targets"][example["tokens"] == sf.DECIDE_ID]


def test_show_example_writes_picture_audio_and_labels(config, tmp_path, capsys):
  out = tmp_path / "show"
  code = cli.main(["show-example", "--config", TINY, f"--config.data.dir={config.data.dir}",
                   "--subtask", "chat_single", "--seed", "3", "--out", str(out)])
  assert code == 0
  assert "sub-task chat_single, seed 3" in capsys.readouterr().out

  width, height = _png_size(out / "example.png")
  assert 1000 <= width <= 5000 and 600 <= height <= 2000  # 4 rows, ~1 inch per second
  assert matplotlib.image.imread(out / "example.png").std() > 0.05  # not a blank canvas

  # The same example, rebuilt through the corpus code.
  make = corpus.CorpusExamples.from_config(config, "train")
  timeline = make.build("chat_single", 3)
  example = make.example(timeline)
  chunk = chunk_samples_of(config.audio.chunk_ms)
  num_chunks = int(example["num_chunks"])
  wav, rate = soundfile.read(out / "example.wav", dtype="float32")
  assert rate == 16000
  assert len(wav) == len(render(timeline, chunk_ms=config.audio.chunk_ms, num_chunks=num_chunks))
  assert len(wav) == num_chunks * chunk >= timeline.num_samples
  np.testing.assert_allclose(wav, example["audio"], atol=2e-4)  # 16-bit PCM

  # example.txt's decision lines are the example's labels, chunk by chunk...
  text = (out / "example.txt").read_text()
  lines = re.findall(r"^chunk +(\d+) \([\d.]+-[\d.]+ s\) (SILENT|SPEAK)", text, re.MULTILINE)
  labels = _decisions(example)
  assert [int(c) for c, _ in lines] == list(range(num_chunks)) and len(labels) == num_chunks
  assert [int(sf.Decision[name]) for _, name in lines] == labels.tolist()
  # ... and follow the timeline: SPEAK from the first chunk whose end reaches the
  # question's last word, SILENT before.
  (reply,) = timeline.replies
  first = first_chunk_reaching(reply.ready_time, chunk)
  assert labels[first] == sf.Decision.SPEAK and not labels[:first].any()
  assert f"'{reply.text}'" in text  # the reply read back from the tokens


def test_show_example_rebuilds_a_stored_example(config, tmp_path):
  """Index + split (held-out, so the split seed is offset) name what build-data wrote."""
  assert cli.main(["build-data", "--config", TINY, f"--config.data.dir={config.data.dir}",
                   "--split", "eval", "--num-examples", "2",
                   "--subtasks", "alert_alarm,chat_single"]) == 0
  stored = storage.load_split(config.data.dir, "eval")[1]
  shown = show.show_example(config, "eval", 1, tmp_path, subtasks=["alert_alarm", "chat_single"])
  assert shown.timeline.task == "chat_single" == stored["subtask"].decode()
  for field in ("tokens", "decision_targets", "audio"):
    np.testing.assert_array_equal(shown.example[field], stored[field])
  assert (tmp_path / "example.txt").read_text().startswith(
      f"# example 1 of split 'eval' (split seed {config.seed + 1000})")


def test_play_says_why_it_cannot(monkeypatch):
  monkeypatch.setitem(sys.modules, "sounddevice", None)  # import fails as if not installed
  assert show.play_audio(np.zeros(160, np.float32)).startswith(
      "not playing: sounddevice is not available")
