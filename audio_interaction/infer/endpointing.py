"""The silence-timer endpointer: the baseline that decides *when* to speak without listening.

What most voice assistants do today: a voice activity detector (VAD) marks frames as
speech or not, and the system answers once the user has been silent for a fixed time
(700 ms by default) after speaking. It cannot tell a pause inside a question from the
end of it, a backchannel from a barge-in, or speech addressed to it from speech that
is not; our model decides from what it hears. It is also half of the hybrid
policy (`infer/policies.py`). B5 (turn-taking) and B8 (interaction control) run the
timer and the model on the same streams through one stepper (`infer/run_stream.py`):
the timer decides when and the *same* model writes the reply, so only the timing
policy differs.

The VADs (`audio/vad.py`): Silero, WebRTC, or frame energy, all causal.

Endpointing rule (`Endpointer`), evaluated causally at every chunk end t: the timer
is *armed* once at least `min_speech_seconds` of voiced frames have been heard since
it last fired; an armed timer fires at the first chunk end t with
t - (end of the last voiced frame) >= `silence_seconds`, then disarms. Voiced frames
that stay below `min_speech_seconds` (a click) are forgotten after `silence_seconds`
of silence. The firing time is a chunk end because the system acts once per chunk.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from audio_interaction.stream_format import SAMPLE_RATE
from audio_interaction.audio.io import validate_samples
from audio_interaction.audio.vad import VADS, ReplayDetector, VoiceDetector, make_detector
from audio_interaction.corpus import effects


@dataclasses.dataclass
class Endpointer:
  """The streaming silence timer over one stream: `push` each chunk, it says whether to fire.

  Attributes:
    detector: the frame VAD (reset by `SilenceTimer.stream`).
    silence_seconds, threshold, min_speech_seconds: see `SilenceTimer`.
    samples: 16 kHz samples pushed so far (`time` is their duration).
    voiced: per-frame voiced flags of the last pushed chunk (for barge-in detection).
  """

  detector: VoiceDetector
  silence_seconds: float
  threshold: float
  min_speech_seconds: float
  samples: int = 0
  voiced: tuple[bool, ...] = ()
  _pending: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.float32))
  _voiced_seconds: float = 0.0
  _last_voice_end: float | None = None
  _frames_done: int = 0

  @property
  def frame_seconds(self) -> float:
    return self.detector.frame_samples / SAMPLE_RATE

  @property
  def time(self) -> float:
    """Stream time (s) of the end of the audio pushed so far."""
    return self.samples / SAMPLE_RATE

  @property
  def last_voice_end(self) -> float | None:
    """Stream time (s) at which the last voiced frame ended; None before any voice."""
    return self._last_voice_end

  def push(self, chunk: np.ndarray) -> bool:
    """Adds a chunk float32[n] of 16 kHz audio; True if the timer fires at its end.

    Frames are scored as soon as they are complete; samples of an incomplete frame
    wait for the next chunk (chunks of 160 ms hold whole frames of every VAD here).
    """
    chunk = np.asarray(chunk, np.float32)
    samples = np.concatenate([self._pending, chunk])
    size = self.detector.frame_samples
    whole = len(samples) // size * size
    flags = []
    for start in range(0, whole, size):
      voiced = self.detector.score(samples[start:start + size]) >= self.threshold
      self._frames_done += 1
      frame_end = self._frames_done * self.frame_seconds
      if voiced:
        self._voiced_seconds += self.frame_seconds
        self._last_voice_end = frame_end
      elif (self._last_voice_end is not None
            and frame_end - self._last_voice_end >= self.silence_seconds
            and self._voiced_seconds < self.min_speech_seconds - 1e-9):
        self._voiced_seconds = 0.0  # a click long ago, not an utterance
      flags.append(voiced)
    self._pending = samples[whole:]
    self.samples += len(chunk)
    self.voiced = tuple(flags)
    # Tolerances so that e.g. 5 frames of 20 ms count as 0.1 s despite float sums.
    armed = self._voiced_seconds >= self.min_speech_seconds - 1e-9 and self._voiced_seconds > 0
    if armed and self.time - self._last_voice_end >= self.silence_seconds - 1e-9:
      self._voiced_seconds = 0.0
      return True
    return False


class SilenceTimer:
  """A VAD plus a fixed silence: the endpointer baseline.

  Example::

    timer = SilenceTimer(silence_seconds=0.7, vad="silero")
    timer.response_times(audio)            # [1.76, 5.12]: s at which it would answer
    endpointer = timer.stream()             # live: push 160 ms chunks as they come
    fire = endpointer.push(chunk)
  """

  def __init__(self, silence_seconds: float = 0.7, vad: str = "silero",
               chunk_seconds: float = 0.16, threshold: float = 0.5,
               min_speech_seconds: float = 0.1, detector: VoiceDetector | None = None):
    """Args:
      silence_seconds: silence after voice before it fires (s).
      vad: one of `VADS`.
      chunk_seconds: how often it decides (s); the firing times are chunk ends.
      threshold: a frame is voiced when its VAD score is >= this.
      min_speech_seconds: voiced time (s) needed before a silence counts as an end of turn.
      detector: the frame VAD to use instead of a new `vad` one (e.g. a `ReplayDetector`
        of `vad`'s scores, so that many timers over one recording share one VAD pass).
    """
    if silence_seconds <= 0:
      raise ValueError(f"silence_seconds must be > 0, got {silence_seconds}")
    if vad not in VADS:
      raise ValueError(f"unknown VAD {vad!r}; known: {VADS}")
    self.silence_seconds = float(silence_seconds)
    self.vad = vad
    self.chunk_seconds = float(chunk_seconds)
    self.threshold = float(threshold)
    self.min_speech_seconds = float(min_speech_seconds)
    self._detector = make_detector(vad) if detector is None else detector
    self.chunk_samples = int(round(self.chunk_seconds * SAMPLE_RATE))

  @property
  def frame_samples(self) -> int:
    """16 kHz samples per VAD frame (what `speech_probabilities` scores one by one)."""
    return self._detector.frame_samples

  @property
  def frame_seconds(self) -> float:
    """Length (s) of one VAD frame: 0.032 (silero) or 0.02 (webrtc, energy)."""
    return self._detector.frame_samples / SAMPLE_RATE

  def stream(self) -> Endpointer:
    """A fresh streaming endpointer (the VAD's state is reset; one stream at a time)."""
    self._detector.reset()
    return Endpointer(self._detector, self.silence_seconds, self.threshold,
                      self.min_speech_seconds)

  def _prepare(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
    audio = validate_samples(np.asarray(audio), expected_ndim=(1,), where="SilenceTimer")
    return effects.resample(np.asarray(audio, np.float32), sample_rate, SAMPLE_RATE)

  def speech_probabilities(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE
                           ) -> np.ndarray:
    """VAD scores per frame.

    Args:
      audio: float[S] mono samples in [-1, 1] at `sample_rate` Hz (resampled to 16 kHz).
    Returns:
      float32[S16 // frame_samples]: frame i covers [i, i + 1) * `frame_seconds` s.
    """
    audio = self._prepare(audio, sample_rate)
    self._detector.reset()
    size = self._detector.frame_samples
    return np.asarray([self._detector.score(audio[i:i + size])
                       for i in range(0, len(audio) - size + 1, size)], np.float32)

  def response_times(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> list[float]:
    """Stream times (s, chunk ends) at which the endpointer fires, fed chunk by chunk.

    Args:
      audio: float[S] mono samples at `sample_rate` Hz; a partial last chunk is
        zero-padded, so the timer can also fire after the audio ends.
    """
    return [(c + 1) * self.chunk_seconds for c in self.fire_chunks(audio, sample_rate)]

  def fire_chunks(self, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> list[int]:
    """Indices of the chunks at whose end the endpointer fires (see `response_times`)."""
    audio = self._prepare(audio, sample_rate)
    size = self.chunk_samples
    audio = np.pad(audio, (0, -len(audio) % size))
    endpointer = self.stream()
    return [c for c in range(len(audio) // size) if endpointer.push(audio[c * size:(c + 1) * size])]


def fire_chunks_from_scores(scores: np.ndarray, frame_seconds: float, chunk_seconds: float,
                            silence_seconds: float, threshold: float = 0.5,
                            min_speech_seconds: float = 0.1) -> list[int]:
  """The endpointer's firing chunks from precomputed VAD scores (for a silence-length sweep).

  Same rule as `Endpointer` (its frame-by-frame state machine), so sweeping
  `silence_seconds` runs the VAD once. scores: float[F] per frame of `frame_seconds`.
  """
  frames_per_chunk = chunk_seconds / frame_seconds
  if abs(frames_per_chunk - round(frames_per_chunk)) > 1e-6:
    raise ValueError(f"a {chunk_seconds} s chunk is not a whole number of "
                     f"{frame_seconds} s VAD frames")
  per_chunk = int(round(frames_per_chunk))

  frame_samples = int(round(frame_seconds * SAMPLE_RATE))
  endpointer = Endpointer(ReplayDetector(scores, frame_samples), silence_seconds, threshold,
                         min_speech_seconds)
  frame = np.zeros(frame_samples * per_chunk, np.float32)
  return [c for c in range(len(scores) // per_chunk) if endpointer.push(frame)]


def voice_chunks_from_scores(scores: np.ndarray, frame_seconds: float, chunk_seconds: float,
                             threshold: float = 0.5, barge_in_seconds: float = 0.1
                             ) -> frozenset[int]:
  """Chunks holding >= `barge_in_seconds` of voiced frames (score >= `threshold`).

  scores: float[F] VAD scores per frame of `frame_seconds` (`speech_probabilities`).
  """
  per_chunk = int(round(chunk_seconds / frame_seconds))
  voiced = (np.asarray(scores)[:len(scores) // per_chunk * per_chunk] >= threshold).reshape(
      -1, per_chunk).sum(1) * frame_seconds
  return frozenset(int(c) for c in np.nonzero(voiced >= barge_in_seconds - 1e-9)[0])


def voice_chunks(timer: SilenceTimer, audio: np.ndarray, barge_in_seconds: float = 0.1
                 ) -> frozenset[int]:
  """Chunks of `audio` (16 kHz float32[S]) holding >= `barge_in_seconds` of voice."""
  return voice_chunks_from_scores(timer.speech_probabilities(audio), timer.frame_seconds,
                                  timer.chunk_seconds, timer.threshold, barge_in_seconds)
