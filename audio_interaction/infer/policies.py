"""Decision policies: who says, at each chunk, whether the stream's row writes reply tokens.

The one stepper (`infer/run_stream.StreamStepper`) perceives every chunk with the
model and asks a row's policy whether to write after it. The policies differ only in
*when*; the reply itself is always the model's:

* `ThresholdPolicy`: the model decides (P(SPEAK) >= threshold), chunk by chunk; a
  chunk decided SILENT while a reply runs stops it (barge-in: the model yields).
* `SilenceTimerPolicy`: the baseline endpointer (VAD + a fixed silence): it starts
  a reply when the timer fires and keeps it until `<eor>`, stopping only when the
  VAD hears voice (it cannot tell "uh-huh" from "stop").
* `ScheduledTimerPolicy`: the same rule from firing and voiced chunks computed ahead
  from VAD scores, so a silence-length sweep runs the VAD once.
* `HybridPolicy`: what production turn detectors do, pairing a semantic model with
  a VAD: speak when the model is confident after a short silence
  (`min_silence_seconds`), or when the silence reaches `silence_seconds` whatever the
  model says; a running reply yields when the VAD hears voice the model does not
  want to talk over.
  Its early signal can also be the prosody of the speech before the pause
  (`infer.hybrid_signal="prosody"`: `ProsodyTurnEnd`, fitted by `fit-turn-head
  --features prosody`), with the model's P(SPEAK) as a gate (`infer.hybrid_gate`):
  prosody says *when*, the model *whether*.
* `GatedTimerPolicy` (`infer.policy="gated_timer"`): the silence timer, whose firing
  speaks only if the model agrees then (P(SPEAK) >= threshold at the firing chunk): the
  VAD says *when*, the model *whether*; an utterance nobody asked the assistant about,
  under an instruction to watch for sounds, is left unanswered where the timer answers
  every one.

`policy_from_config(config.infer)` builds the operating point stored in a bundle.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

import ml_collections
import numpy as np

from audio_interaction import config_lib
from audio_interaction.audio.prosody import NUM_FEATURES, ProsodyTracker
from audio_interaction.model.model import TURN_ENDED

from audio_interaction.audio.vad import VoiceDetector
from audio_interaction.infer.endpointing import Endpointer, SilenceTimer

POLICIES = ("model", "silence_timer", "hybrid", "gated_timer")
# What a hybrid policy's early reply reads: the decoder's P(SPEAK) at `<decide>`, the
# encoder's turn-end head's P(the user's turn has ended) (`model.turn_end_head`), or
# that probability from the prosody before the pause (`ProsodyTurnEnd`).
SIGNALS = ("decision", "turn_end", "prosody")
DEFAULT_THRESHOLD = config_lib.base_config().infer.threshold
# Voice (s) a chunk must hold for a VAD-driven reply to stop (the usual VAD barge-in).
BARGE_IN_SECONDS = 0.1


class DecisionPolicy(Protocol):
  """Decides per chunk whether a row writes reply tokens after it."""

  def start(self) -> None:
    """Forgets everything before a new stream."""

  def decide(self, index: int, chunk: np.ndarray, speak_probability: float,
             replying: bool) -> bool:
    """Whether to write reply tokens after chunk `index`.

    Args:
      index: the chunk's index in the stream.
      chunk: float32[chunk_samples] 16 kHz audio of the chunk.
      speak_probability: the model's P(SPEAK) at the chunk's `<decide>`.
      replying: a reply is running (the previous chunk wrote tokens, no `<eor>` yet).
    """


@dataclasses.dataclass
class ThresholdPolicy:
  """Speak iff P(SPEAK) >= `threshold` (may change between chunks: the latency ↔
  false-trigger knob)."""

  threshold: float = DEFAULT_THRESHOLD

  def start(self) -> None:
    pass

  def decide(self, index: int, chunk: np.ndarray, speak_probability: float,
             replying: bool) -> bool:
    del index, chunk, replying
    return speak_probability >= self.threshold


class _TimerReplyRule:
  """A timer-driven reply: starts at a firing, runs until `<eor>` (the stepper ends it),
  stops at a chunk after its first that holds voice, when `yield_on_voice`."""

  yield_on_voice: bool = True

  def _reset_rule(self) -> None:
    self._reply_started = -1

  def _rule(self, index: int, fires: bool, voiced: bool, replying: bool) -> bool:
    if replying:
      if self.yield_on_voice and index > self._reply_started and voiced:
        return False
      return True
    if fires:
      self._reply_started = index
      return True
    return False


class ScheduledTimerPolicy(_TimerReplyRule):
  """The silence timer's decisions computed ahead (`fire_chunks`, `voice_chunks` from VAD
  scores, see `endpointing.fire_chunks_from_scores` / `voice_chunks_from_scores`)."""

  def __init__(self, fire_chunks: frozenset[int], voice_chunks: frozenset[int], *,
               yield_on_voice: bool = True):
    self.fire_chunks, self.voice_chunks = frozenset(fire_chunks), frozenset(voice_chunks)
    self.yield_on_voice = yield_on_voice
    self._reset_rule()

  def start(self) -> None:
    self._reset_rule()

  def decide(self, index: int, chunk: np.ndarray, speak_probability: float,
             replying: bool) -> bool:
    del chunk, speak_probability
    return self._rule(index, index in self.fire_chunks, index in self.voice_chunks, replying)


def _voiced_seconds(endpointer: Endpointer) -> float:
  """Voice (s) in the frames the last pushed chunk completed."""
  return sum(endpointer.voiced) * endpointer.frame_seconds


class SilenceTimerPolicy(_TimerReplyRule):
  """The silence timer, live: each chunk is pushed to its VAD endpointer as it comes."""

  def __init__(self, timer: SilenceTimer, *, yield_on_voice: bool = True,
               barge_in_seconds: float = BARGE_IN_SECONDS):
    self.timer, self.yield_on_voice, self.barge_in_seconds = timer, yield_on_voice, barge_in_seconds
    self.start()

  def start(self) -> None:
    self._endpointer = self.timer.stream()
    self._reset_rule()

  def _agrees(self, speak_probability: float) -> bool:
    """Whether a firing may start a reply (the plain timer: always)."""
    del speak_probability
    return True

  def decide(self, index: int, chunk: np.ndarray, speak_probability: float,
             replying: bool) -> bool:
    fires = self._endpointer.push(chunk) and self._agrees(speak_probability)
    voiced = _voiced_seconds(self._endpointer) >= self.barge_in_seconds - 1e-9
    return self._rule(index, fires, voiced, replying)


class GatedTimerPolicy(SilenceTimerPolicy):
  """The silence timer, gated by the model: a firing starts a reply only if P(SPEAK) >=
  `threshold` at that chunk (a firing the model turns down is not answered later in the
  same silence: the model has decided). A running reply is the timer's (until `<eor>`,
  yielding to voice)."""

  def __init__(self, timer: SilenceTimer, *, threshold: float = DEFAULT_THRESHOLD,
               yield_on_voice: bool = True, barge_in_seconds: float = BARGE_IN_SECONDS):
    self.threshold = threshold
    super().__init__(timer, yield_on_voice=yield_on_voice, barge_in_seconds=barge_in_seconds)

  def _agrees(self, speak_probability: float) -> bool:
    return speak_probability >= self.threshold


class ProsodyTurnEnd:
  """P(the user's turn has ended) from the prosody of the speech before now: a logistic
  read (`kernel` [NUM_FEATURES, 2], `bias` [2]; column `TURN_ENDED`) of a
  `ProsodyTracker` fed the stream's chunks. A host-side model beside the network: it
  needs no encoder, and its 30 numbers live in the bundle's `infer.prosody_turn_end`."""

  def __init__(self, kernel, bias):
    self.kernel = np.asarray(kernel, np.float64)
    self.bias = np.asarray(bias, np.float64)
    if self.kernel.shape != (NUM_FEATURES, 2) or self.bias.shape != (2,):
      raise ValueError(f"a prosody turn-end model is a kernel [{NUM_FEATURES}, 2] and a bias "
                       f"[2], got {self.kernel.shape} and {self.bias.shape}")
    self._tracker = ProsodyTracker()

  @classmethod
  def from_block(cls, block: ml_collections.ConfigDict | dict) -> "ProsodyTurnEnd":
    """From `infer.prosody_turn_end` ({"kernel": [[..], ..], "bias": [..]})."""
    if not block or "kernel" not in block or "bias" not in block:
      raise ValueError("infer.hybrid_signal='prosody' needs infer.prosody_turn_end (a kernel "
                       "and a bias): fit one with `audio-interaction fit-turn-head "
                       "--features prosody`")
    return cls(block["kernel"], block["bias"])

  def to_block(self) -> dict:
    """The JSON-able `infer.prosody_turn_end` block."""
    return {"kernel": self.kernel.tolist(), "bias": self.bias.tolist()}

  def start(self) -> None:
    self._tracker.reset()

  def push(self, chunk: np.ndarray) -> float:
    """The stream's next chunk -> P(the turn has ended) after it."""
    logits = self._tracker.push(chunk) @ self.kernel + self.bias
    logits = logits - logits.max()
    return float(np.exp(logits[TURN_ENDED]) / np.exp(logits).sum())


class HybridPolicy:
  """The model once a short silence has passed, the timer as a backstop.

  Not replying: speak when P(SPEAK) >= `threshold` and the user has been silent for
  at least `min_silence_seconds` (the model's semantic end of turn, confirmed by a
  VAD so it never cuts into ongoing speech), or when the silence timer fires at
  `timer.silence_seconds` (a finished turn the model missed). Replying: go on unless
  the chunk holds voice and the model's P(SPEAK) is below `threshold` (a barge-in the
  model agrees with; a backchannel the model wants to talk over does not stop it).

  `signal="turn_end"`: the probability the stepper passes is the turn-end head's
  P(the turn has ended) instead of P(SPEAK) (`reads_turn_end`), and the policy answers
  a turn once: after a reply it speaks again only when voice has been heard since.
  The head goes on saying "ended" through the silence after its reply, and the
  backstop timer is still armed, so without this the reply's end starts another one
  each chunk. (With P(SPEAK) a second reply in one silence is the model's call: an
  alarm after an answer.)

  `signal="prosody"`: the same, with P(turn ended) from `prosody` (`ProsodyTurnEnd`, fed
  every chunk) and the stepper's probability, P(SPEAK), as a gate: a reply, early or
  the backstop's, also needs P(SPEAK) >= `gate` at some chunk since the voice ended (the
  gate stays open through the silence once the model has said yes: its P(SPEAK) peaks
  where its training put replies, ~0.7 s into a silence, and has fallen again by a
  1.5 s backstop). A turn the gate has not opened for by the backstop is left
  unanswered (as the gated timer leaves it): prosody says when a turn ends, the model
  whether it was spoken to. A running reply yields to voice (the model's P(SPEAK) is
  not a turn-end probability).
  """

  def __init__(self, timer: SilenceTimer, *, threshold: float = DEFAULT_THRESHOLD,
               min_silence_seconds: float = 0.2,
               barge_in_seconds: float = BARGE_IN_SECONDS, signal: str = "decision",
               prosody: ProsodyTurnEnd | None = None, gate: float = 0.0):
    if not 0 <= min_silence_seconds <= timer.silence_seconds:
      raise ValueError(f"min_silence_seconds must be in [0, silence_seconds="
                       f"{timer.silence_seconds}], got {min_silence_seconds}")
    if signal not in SIGNALS:
      raise ValueError(f"signal must be one of {SIGNALS}, got {signal!r}")
    if (signal == "prosody") != (prosody is not None):
      raise ValueError("a prosody model goes with signal='prosody', and only with it")
    self.signal, self.prosody, self.gate = signal, prosody, gate
    self.timer, self.threshold = timer, threshold
    self.min_silence_seconds, self.barge_in_seconds = min_silence_seconds, barge_in_seconds
    self.start()

  def start(self) -> None:
    self._endpointer = self.timer.stream()
    # turn_end, prosody: the voice end last answered (or, prosody, turned down at the
    # backstop by the gate).
    self._answered_voice_end: float | None = None
    self._gate_opened_for: float | None = None  # prosody: the voice end the gate opened after
    # The prosody model's P(turn ended) at the last chunk (None before one, or without
    # the model): the stepper's chunk records carry it.
    self.turn_end_probability: float | None = None
    if self.prosody is not None:
      self.prosody.start()

  def silence_seconds(self) -> float:
    """Silence since the last voiced frame (s); 0 before any voice."""
    last = self._endpointer.last_voice_end
    return 0.0 if last is None else self._endpointer.time - last

  def decide(self, index: int, chunk: np.ndarray, speak_probability: float,
             replying: bool) -> bool:
    del index
    fires = self._endpointer.push(chunk)
    gate_open = speak_probability >= self.gate
    if self.prosody is not None:
      speak_probability = self.turn_end_probability = self.prosody.push(chunk)
    confident = speak_probability >= self.threshold
    if replying:
      voiced = _voiced_seconds(self._endpointer) >= self.barge_in_seconds - 1e-9
      return not (voiced and (self.signal == "prosody" or not confident))
    voice_end = self._endpointer.last_voice_end
    settled = voice_end is not None and self.silence_seconds() >= self.min_silence_seconds - 1e-9
    if self.signal == "decision":
      return fires or (confident and settled)
    if gate_open and voice_end is not None:
      self._gate_opened_for = voice_end
    unanswered = voice_end != self._answered_voice_end
    due = unanswered and (fires or (confident and settled))
    speaks = due and (self.signal != "prosody" or self._gate_opened_for == voice_end)
    if speaks or (due and fires):  # answered, or turned down at the backstop
      self._answered_voice_end = voice_end
    return speaks


def policy_from_config(infer: ml_collections.ConfigDict, *, chunk_seconds: float,
                       threshold: float | None = None,
                       detector: VoiceDetector | None = None) -> DecisionPolicy:
  """The decision policy a config's `infer` block names (`threshold` overrides its own).

  `detector`: the frame VAD of a timer-driven policy instead of a new `infer.vad` one,
  e.g. an `audio.vad.ReplayDetector` of that VAD's scores over the recording (the
  tuning sweep runs the VAD once for all its policies).
  """
  threshold = infer.threshold if threshold is None else threshold
  if infer.policy == "model":
    return ThresholdPolicy(threshold)
  if infer.policy not in POLICIES:
    raise ValueError(f"infer.policy must be one of {POLICIES}, got {infer.policy!r}")
  timer = SilenceTimer(silence_seconds=infer.silence_seconds, vad=infer.vad,
                       chunk_seconds=chunk_seconds, detector=detector)
  if infer.policy == "silence_timer":
    return SilenceTimerPolicy(timer)
  if infer.policy == "gated_timer":
    return GatedTimerPolicy(timer, threshold=threshold)
  signal = infer.get("hybrid_signal", "decision")
  prosody = (ProsodyTurnEnd.from_block(infer.get("prosody_turn_end", None))
             if signal == "prosody" else None)
  return HybridPolicy(timer, threshold=threshold, min_silence_seconds=infer.min_silence_seconds,
                      signal=signal, prosody=prosody, gate=float(infer.get("hybrid_gate", 0.0)))


def reads_turn_end(policy: DecisionPolicy) -> bool:
  """Whether `policy` decides on the turn-end head's P(turn ended) rather than P(SPEAK)
  (its `signal`; policies without one read P(SPEAK))."""
  return getattr(policy, "signal", "decision") == "turn_end"
