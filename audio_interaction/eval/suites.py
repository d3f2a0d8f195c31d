"""The eight benchmark suites (DESIGN.md, B1-B8) over held-out streams or a user manifest.

Data. Generated cases are the 28 sub-tasks built with `TaskConfig(split="heldout")`
from held-out sources (`corpus.build.heldout_sources()`): voices, sound recordings and
world items (questions, facts, sentences) that training never used (`worlds.py`,
`speech.voice_split`, `sounds.py`), with stream seeds from `EvalConfig.seed` on
(training corpora use other seeds; the split, not the seed, keeps them apart).
Manifest cases come from a JSONL manifest (`data/manifest.py`): each row's recording
becomes one case per suite its annotations allow (`cases_from_manifest`).

Which sub-tasks feed which suite (`SUITE_SUBTASKS`; every one of the 28 is in at least
one, chat sub-tasks are in both B4 for *what* and B5 for *when*):

| suite | sub-tasks | model | beside it |
|---|---|---|---|
| B1 offline ASR | offline_asr | offline answer (`offline.py`) | PocketSphinx, whole clip |
| B2 streaming ASR | asr_* (4) | one reply per word; the encoder's CTC transcript | PocketSphinx, same 160 ms chunks |
| B3 sound events | offline_sound_label/count_events/clip_qa, env_what_sound, env_speech_and_event | | |
| B4 spoken QA / chat | chat_single/multi_turn/fillers, env_scene_question, env_time_since | | |
| B5 turn-taking | chat_single/multi_turn/mid_pause/fillers | threshold sweep | silence timer + same model |
| B6 proactive sound | alert_* (4) | threshold sweep | |
| B7 instruction following | follow_* (4), control_instruction_change | | |
| B8 interaction control | control_barge_in/not_addressed/backchannel | | silence timer + same model |

Runs. Each case's stream is run once as a batch (`silence_timer.drive`): one row at the
operating threshold, one row per sweep threshold (B5/B6 cases), one row driven by the
silence timer (B5/B8 cases). The reply trajectory depends on the threshold (a reply
written changes the state), so the sweep is *exact*: every threshold is its own run
of the model, not a re-thresholding of one run's P(SPEAK). The timer's silence-length
sweep needs no model: its firing times come from the VAD scores alone (`drive`
uses the same firings), so it is exact too; only its timing is swept, not its text.

Timing matches (see `metrics.py`): a reply answers a turn / an alert an event when it
starts within `answer_window_s` after the turn ended / the event's onset became
recognisable; reply *accuracy* (B3/B4/B7, per-sub-task bars) uses the held-out
matching of `heldout.score_trace` (a reply within `window_chunks` of its ready chunk,
exact normalized text).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import ml_collections
import numpy as np
from tqdm.auto import tqdm

from audio_interaction import config_lib
from audio_interaction.corpus import tasks, worlds
from audio_interaction.corpus.manifest import (
    DEFAULT_RECOGNISABLE_AFTER_S, RECOGNISABLE_AFTER_S, Event, ManifestReport, ManifestRow,
    loud_span, read_manifest, spread_words)
from audio_interaction import stream_format as sf
from audio_interaction.stream_format import SAMPLE_RATE
from audio_interaction.corpus.timeline import (
    OFFLINE, ONLINE, Reply, SoundEvent, Span, Timeline, Utterance, estimated_reply_end, render)
from audio_interaction.data.tokenizer import Tokenizer, normalize_text
from audio_interaction.eval import bootstrap, metrics
from audio_interaction.eval.asr_peer import Pocketsphinx, StreamingTranscript
from audio_interaction.eval.heldout import score_trace
from audio_interaction.audio.vad import ReplayDetector
from audio_interaction.infer.endpointing import (
    SilenceTimer, fire_chunks_from_scores, voice_chunks_from_scores)
from audio_interaction.infer.ctc_lm import BeamSettings, CtcLmDecoder
from audio_interaction.infer.engine import Engine, SamplingConfig, dequantize_params
from audio_interaction.infer.policies import (
    ScheduledTimerPolicy, ThresholdPolicy, policy_from_config)
from audio_interaction.infer.run_stream import StreamTrace, run_policies
from audio_interaction.infer.sound_alerts import SOUND_ALERT_KEYS, sound_alert_rule
from audio_interaction.infer.clip_questions import (CLIP_QUESTION_KEYS, answer_clip,
                                                    clip_answers)
from audio_interaction.infer.instruction_watch import (SOUND, WATCH_KEYS,
                                                       instruction_watches, parse_watch)
from audio_interaction.infer.sound_naming import SoundNamer, rank_sounds
from audio_interaction.model.clip_encoder import ClipEncoder
from audio_interaction.model.model import AudioInteractionModel, Params

# The default operating point (`config.infer`): one owner for threshold, VAD, lengths.
_INFER = config_lib.base_config().infer
# The `infer` fields of the operating point's decision policy (`policies.policy_from_config`):
# `EvalConfig` carries each under the same name, read by `from_infer`, given back by
# `policy_block`.
POLICY_KEYS: Final[tuple[str, ...]] = (
    "policy", "threshold", "vad", "silence_seconds", "min_silence_seconds", "hybrid_signal",
    "prosody_turn_end", "hybrid_gate")

SUITE_NAMES: Final[dict[str, str]] = {
    "B1": "offline ASR", "B2": "streaming ASR", "B3": "sound events",
    "B4": "spoken QA / voice chat", "B5": "turn-taking", "B6": "proactive sound",
    "B7": "streaming instruction following", "B8": "interaction control",
}
SUITE_SUBTASKS: Final[dict[str, tuple[str, ...]]] = {
    "B1": ("offline_asr",),
    "B2": ("asr_clean", "asr_noisy", "asr_long_pauses", "asr_two_speakers"),
    "B3": ("offline_sound_label", "offline_count_events", "offline_clip_qa", "env_what_sound",
           "env_speech_and_event"),
    "B4": ("chat_single", "chat_multi_turn", "chat_fillers", "env_scene_question",
           "env_time_since"),
    "B5": ("chat_single", "chat_multi_turn", "chat_mid_pause", "chat_fillers"),
    "B6": ("alert_alarm", "alert_door", "alert_breakage", "alert_baby_dog"),
    "B7": ("follow_keyword", "follow_sound_class", "follow_count", "follow_summary_cue",
           "control_instruction_change"),
    "B8": ("control_barge_in", "control_not_addressed", "control_backchannel"),
}
SWEEP_SUITES: Final[frozenset[str]] = frozenset({"B5", "B6"})
TIMER_SUITES: Final[frozenset[str]] = frozenset({"B5", "B8"})
# The baseline every model row stands beside: the 700 ms silence timer.
REFERENCE_SILENCE_SECONDS: Final[float] = 0.7

# Instructions for manifest cases: phrasings the training corpus uses (`tasks.py`).
MANIFEST_INSTRUCTIONS: Final[dict[str, str]] = {
    "B1": "Transcribe the audio.",
    "B2": "Transcribe the speech as you hear it.",
    "B3": "What sound is this?",
    "B4": "You are a helpful voice assistant. Answer briefly.",
    "B5": "You are a helpful voice assistant. Answer briefly.",
    "B6": "Let me know if anything needs my attention.",
    "B7": "Let me know if anything needs my attention.",
    "B8": "You are a helpful voice assistant. Answer briefly.",
}
KEYWORD_INSTRUCTION: Final[str] = "Transcribe the audio."  # keyword sets (speech_commands)
MANIFEST_TAIL_S: Final[float] = 2.0  # silence after a manifest clip, time to answer
_ABILITY: Final[dict[str, int]] = {"B1": 1, "B2": 2, "B3": 1, "B4": 4, "B5": 4, "B6": 5,
                                   "B7": 3, "B8": 7}

# The headline metrics of the summary table: (suite, label, path into a system block,
# format). A path starting with a system name of ours (e.g. "model_ctc") reads that
# system instead of "model". Every one gets a bootstrap interval (`evaluate`).
HEADLINES: Final[tuple[tuple[str, str, tuple[str, ...], str], ...]] = (
    ("B1", "WER", ("wer",), "%"),
    ("B2", "WER", ("wer",), "%"),
    ("B2", "CER", ("cer",), "%"),
    ("B2", "emission delay, median", ("emission_delay_s", "median"), "s"),
    ("B2", "emission delay, p90", ("emission_delay_s", "p90"), "s"),
    ("B2", "WER of the encoder's CTC transcript", ("model_ctc", "wer"), "%"),
    ("B2", "CER of the encoder's CTC transcript", ("model_ctc", "cer"), "%"),
    ("B2", "CTC emission delay, median", ("model_ctc", "emission_delay_s", "median"), "s"),
    ("B2", "WER of the CTC transcript, LM beam search", ("model_ctc_lm", "wer"), "%"),
    ("B2", "CER of the CTC transcript, LM beam search", ("model_ctc_lm", "cer"), "%"),
    ("B2", "LM beam search emission delay, median",
     ("model_ctc_lm", "emission_delay_s", "median"), "s"),
    ("B3", "accuracy", ("accuracy",), "%"),
    ("B3", "name-the-sound cases: the sound-event head's class", ("sound_head", "accuracy"), "%"),
    ("B4", "exact-match accuracy", ("accuracy",), "%"),
    ("B5", "response latency, median", ("response_latency_s", "median"), "s"),
    ("B5", "response latency, p90", ("response_latency_s", "p90"), "s"),
    ("B5", "false cut-in rate", ("false_cut_in_rate",), "%"),
    ("B5", "miss rate", ("miss_rate",), "%"),
    ("B6", "alert precision", ("precision",), "%"),
    ("B6", "alert recall", ("recall",), "%"),
    ("B6", "alert F1", ("f1",), "f"),
    ("B6", "latency from onset, median", ("onset_latency_s", "median"), "s"),
    ("B6", "false alarms per hour", ("false_alarms_per_hour",), "f"),
    ("B6", "false alarms per hour, late alerts of alert sounds left out",
     ("benign_false_alarms_per_hour",), "f"),
    ("B6", "detected alerts naming their class", ("naming", "rate"), "%"),
    ("B7", "accuracy of triggered replies", ("accuracy",), "%"),
    ("B7", "triggered in time (recall)", ("recall",), "%"),
    ("B7", "latency from ready, median", ("latency_from_ready_s", "median"), "s"),
    ("B7", "replies with the right words, at any time", ("words_right",), "%"),
    ("B8", "barge-ins heard while speaking", ("barge_ins_while_speaking", "barge_ins"), "k/n"),
    ("B8", "barge-in yield rate", ("barge_in_yield_rate",), "%"),
    ("B8", "yield latency, median", ("yield_latency_s", "median"), "s"),
    ("B8", "backchannels heard while speaking", ("backchannels_while_speaking", "backchannels"),
     "k/n"),
    ("B8", "backchannel yield rate (lower is better)", ("backchannel_yield_rate",), "%"),
    ("B8", "false reply rate, speech not addressed", ("false_reply_rate",), "%"),
)
OUR_SYSTEMS: Final[frozenset[str]] = frozenset({"model", "model_ctc", "model_ctc_lm",
                                                 "sound_head"})
# B3 cases whose answer is the sound's name ("what sound is this?"), which the sound-event
# head can give beside the decoder (`infer.sound_naming`); not counts or questions.
def manifest_subtask(suite: str) -> str:
  """The sub-task name of a manifest row's case of `suite` ("manifest_B3")."""
  return f"manifest_{suite}"


NAMING_SUBTASKS: Final[frozenset[str]] = frozenset({"offline_sound_label",
                                                   manifest_subtask("B3")})
BASELINES: Final[tuple[str, ...]] = ("silence_timer", "pocketsphinx")  # "beside it"


def _plain_dict(value) -> dict:
  """A ConfigDict (or mapping) as a plain dict."""
  return value.to_dict() if isinstance(value, ml_collections.ConfigDict) else dict(value)


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  """Knobs of a benchmark run (times in seconds).

  streams_per_subtask: generated streams per sub-task; seed: first stream seed.
  threshold: the model's operating decision threshold.
  policy, min_silence_seconds, hybrid_signal, prosody_turn_end, hybrid_gate: the
    operating point's decision policy (`infer.policy`: "model", "hybrid", "gated_timer"
    or "silence_timer", as `policies.policy_from_config`; the hybrid's probability,
    `infer.hybrid_signal`, its prosody model and P(SPEAK) gate);
    the "our model" figures use it, the sweep always runs the bare thresholds.
  sweep_thresholds: thresholds run for the B5/B6 sweep (each a full run).
  silence_seconds: the operating point's silence (the timer policy's wait, the hybrid's
    backstop, the gated timer's wait).
  baseline_silence_seconds, vad: the baseline silence timer beside the model (the issue's
    700 ms reference, whatever the operating point's own silence); sweep_silences: its
    swept silence lengths.
  answer_window_s: a reply starting within this after a turn end / alert onset answers it.
  window_chunks: accuracy matching window (as `heldout.evaluate_heldout`).
  yield_within_s: a barge-in is yielded to if speech stops within this after its onset.
  unaddressed_grace_s: a reply this long after unaddressed speech still answers it.
  max_reply_tokens / max_answer_tokens: the longest online reply / offline answer.
  min_turns, min_alert_events: on generated streams, B5's sub-tasks get more streams
    (next seeds, round-robin, at most `max_streams_per_subtask` each) until B5 has this
    many turns, and B6's until it has this many alert events; the report says when
    fewer were reached.
  bootstrap_resamples, bootstrap_seed: the percentile bootstrap over cases behind every
    headline interval (`bootstrap.py`).
  sound_alert_threshold, sound_alert_chunks, sound_alert_hold_seconds,
    sound_alert_once_per_sound: alerts from the
    sound-event head (`infer/sound_alerts.py`; threshold 0: off) in every model row,
    the sweep's included; never in the silence timer's.
  sound_watch_threshold, sound_watch_chunks, sound_watch_gap_seconds,
    sound_watch_hold_seconds, word_watch, word_watch_pause_seconds: what an instruction
    asks to be told ("tell me when you hear ...", "whenever you hear the word ...")
    watched by the heads (`infer/instruction_watch.py`; threshold 0 and word_watch
    off: off), in the same rows as the alerts.
  sound_questions: offline questions about a clip's sounds answered by the sound-event
    head, a sound being the watch's (`infer/clip_questions.py`; off: the decoder).
  sound_name_bias, sound_name_decay, sound_name_gate, sound_name_once,
    sound_name_whole: replies and
    answers biased towards the names of the sounds the head heard
    (`infer.sound_name_bias`; `evaluation_engine` builds the engine with them).
  ctc_lm, ctc_lm_weight, ctc_lm_word_score, ctc_lm_spelling: B2 also writes the CTC
    head's transcript by beam search with the English word LM (`infer/ctc_lm.py`; its
    LM weight, word score, and how the head spells words: `data.ctc_targets`), as
    system "model_ctc_lm".
  """

  streams_per_subtask: int = 2
  seed: int = 9000
  threshold: float = _INFER.threshold
  policy: str = _INFER.policy
  min_silence_seconds: float = _INFER.min_silence_seconds
  hybrid_signal: str = _INFER.hybrid_signal
  prosody_turn_end: dict = dataclasses.field(default_factory=dict)
  hybrid_gate: float = _INFER.hybrid_gate
  sweep_thresholds: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
  silence_seconds: float = _INFER.silence_seconds
  baseline_silence_seconds: float = REFERENCE_SILENCE_SECONDS
  vad: str = _INFER.vad
  sweep_silences: tuple[float, ...] = (0.3, 0.5, 0.7, 1.0, 1.5)
  answer_window_s: float = 2.0
  window_chunks: int = 6
  yield_within_s: float = 0.5
  unaddressed_grace_s: float = 0.8
  max_reply_tokens: int = _INFER.max_reply_tokens
  max_answer_tokens: int = _INFER.max_answer_tokens
  min_turns: int = 100
  min_alert_events: int = 50
  max_streams_per_subtask: int = 60
  bootstrap_resamples: int = 1000
  bootstrap_seed: int = 0
  sound_alert_threshold: float = _INFER.sound_alert_threshold
  sound_alert_chunks: int = _INFER.sound_alert_chunks
  sound_alert_hold_seconds: float = _INFER.sound_alert_hold_seconds
  sound_alert_once_per_sound: bool = _INFER.sound_alert_once_per_sound
  sound_watch_threshold: float = _INFER.sound_watch_threshold
  sound_watch_chunks: int = _INFER.sound_watch_chunks
  sound_watch_gap_seconds: float = _INFER.sound_watch_gap_seconds
  sound_watch_hold_seconds: float = _INFER.sound_watch_hold_seconds
  word_watch: bool = _INFER.word_watch
  word_watch_pause_seconds: float = _INFER.word_watch_pause_seconds
  sound_questions: bool = _INFER.sound_questions
  sound_name_bias: float = _INFER.sound_name_bias
  sound_name_decay: float = _INFER.sound_name_decay
  sound_name_gate: float = _INFER.sound_name_gate
  sound_name_once: bool = _INFER.sound_name_once
  sound_name_whole: bool = _INFER.sound_name_whole
  ctc_lm: bool = False
  ctc_lm_weight: float = BeamSettings.lm_weight
  ctc_lm_word_score: float = BeamSettings.word_score
  ctc_lm_spelling: str = "tokens"

  @classmethod
  def from_infer(cls, infer: ml_collections.ConfigDict, **overrides: Any) -> EvalConfig:
    """The operating point of a config's (or bundle's) `infer` block, with overrides."""
    # A bundle saved before a field existed lacks it: the default config's value.
    values = {key: infer.get(key, _INFER[key]) for key in POLICY_KEYS}
    values["prosody_turn_end"] = _plain_dict(values["prosody_turn_end"])
    values.update({"max_reply_tokens": infer.max_reply_tokens,
                   "max_answer_tokens": infer.max_answer_tokens,
                   **{key: infer[key] for key in SOUND_ALERT_KEYS},
                   **{key: infer.get(key, _INFER[key])
                      for key in (*WATCH_KEYS, *CLIP_QUESTION_KEYS, "sound_name_bias",
                                  "sound_name_decay",
                                  "sound_name_gate",
                                  "sound_name_once", "sound_name_whole")}})
    return cls(**{**values, **overrides})

  def policy_block(self) -> ml_collections.ConfigDict:
    """The operating point's decision policy as an `infer` block (`POLICY_KEYS`)."""
    return ml_collections.ConfigDict({key: getattr(self, key) for key in POLICY_KEYS})


@dataclasses.dataclass(frozen=True)
class Annotations:
  """What an annotated recording says should happen (s in the case's audio); it replaces
  what the suites would otherwise read from the synthetic timeline.

  turns: (start, end) of user turns that expect a reply (B5).
  alerts: (onset, recognisable) of events that warrant an alert (B6/B7): latency is
    measured from the onset, a detection must start by recognisable + the window.
  benign_seconds: the recording's time that warrants no alert (its length minus every
    alert's [onset, recognisable + window)), the denominator of false alarms per hour;
    None: the case's duration.
  alert_sounds: (onset, offset) of each sound that warrants an alert (an alert raised
    in one after its deadline is late, `metrics.late_alerts`).
  barge_ins: onsets of speech that should stop a reply (B8).
  unaddressed: (start, end) of speech that must not be answered (B8).
  """

  turns: tuple[tuple[float, float], ...] = ()
  alerts: tuple[tuple[float, float], ...] = ()
  benign_seconds: float | None = None
  alert_sounds: tuple[tuple[float, float], ...] = ()
  barge_ins: tuple[float, ...] = ()
  unaddressed: tuple[tuple[float, float], ...] = ()


@dataclasses.dataclass(eq=False)
class Case:
  """One stream or clip to evaluate: its timeline (what should happen), the audio
  (float32[S], 16 kHz, whole chunks for online cases) and the suites it feeds.

  `annotations`: for manifest cases, the annotated times the suites use instead of the
  timeline's. `approximate_timing`: the word times are spread over the voiced region
  (manifest rows without `words`), not from a synthesis timeline or an aligner.
  """

  name: str
  timeline: Timeline
  audio: np.ndarray
  suites: frozenset[str]
  annotations: Annotations | None = None
  approximate_timing: bool = False

  @property
  def subtask(self) -> str:
    return self.timeline.task

  @property
  def duration(self) -> float:
    return len(self.audio) / SAMPLE_RATE


@dataclasses.dataclass(eq=False)
class CaseRun:
  """What the systems did on one case.

  sweep: threshold -> the model's trace at that threshold (the operating one included).
  operating: the trace under the operating policy when it is not the bare threshold
    (hybrid or timer policies), else None (the sweep's operating threshold is it).
  timer: the silence-timer-driven trace (B5/B8 cases), or None.
  timer_fires: silence length -> the timer's firing times (s) (B5 cases).
  peer_stream / peer_clip: PocketSphinx's streaming (B2) / whole-clip (B1) output.
  ctc_lm_words: (word, emission time s) of the CTC head's LM beam search (B2, with
    `EvalConfig.ctc_lm`), or None.
  answer: the model's offline answer (offline cases).
  sound_head_answer: the sound-event head's name of the clip (`infer.sound_naming`; B3
    cases of `NAMING_SUBTASKS`, models with the head), or None.
  seconds: wall time spent on the case (all systems).
  """

  case: Case
  threshold: float
  sweep: dict[float, StreamTrace] = dataclasses.field(default_factory=dict)
  operating: StreamTrace | None = None
  timer: StreamTrace | None = None
  timer_fires: dict[float, list[float]] = dataclasses.field(default_factory=dict)
  peer_stream: StreamingTranscript | None = None
  peer_clip: str | None = None
  ctc_lm_words: tuple[tuple[str, float], ...] | None = None
  answer: str | None = None
  sound_head_answer: str | None = None
  seconds: float = 0.0
  memo: dict = dataclasses.field(default_factory=dict, repr=False)  # decoded texts, scores

  @property
  def model(self) -> StreamTrace | None:
    return self.operating if self.operating is not None else self.sweep.get(self.threshold)


# ------------------------------------------------------------------------------ cases

def parse_suites(text: str) -> list[str]:
  """ "all" or a comma list like "B1,B5" -> suite names, checked."""
  names = list(SUITE_NAMES) if text.strip().lower() == "all" else [
      s.strip().upper() for s in text.split(",") if s.strip()]
  unknown = [s for s in names if s not in SUITE_NAMES]
  if unknown or not names:
    raise ValueError(f"unknown suites {unknown or text!r}; known: {list(SUITE_NAMES)} or 'all'")
  return names


def case_units(case: Case, suite: str) -> int:
  """How many scored items a case gives a suite: B5 turns, B6 alert events."""
  if suite == "B5":
    return len(case_turns(case))
  if suite == "B6":
    return len(case_alert_events(case, 0.0))
  return 1


def generated_cases(suites: Sequence[str], speech, sounds, *, streams_per_subtask: int,
                    seed: int, chunk_ms: int = sf.DEFAULT_CHUNK_MS,
                    minimum: dict[str, int] | None = None,
                    max_streams_per_subtask: int = 60) -> list[Case]:
  """Held-out streams of every sub-task the suites use, `streams_per_subtask` each.

  `minimum`: suite -> scored items wanted (`case_units`: B5 turns, B6 alert events):
  that suite's sub-tasks get further streams (the next seeds, one per sub-task in turn)
  until it has them, at most `max_streams_per_subtask` streams per sub-task.
  """
  task_config = tasks.TaskConfig(split=worlds.HELDOUT, chunk_ms=chunk_ms)
  subtasks = [n for n in tasks.SUBTASKS if any(n in SUITE_SUBTASKS[s] for s in suites)]
  cases = []
  streams = collections.Counter()

  def add(name: str) -> Case:
    used = frozenset(s for s in suites if name in SUITE_SUBTASKS[s])
    k = streams[name]
    streams[name] += 1
    timeline = tasks.build(name, seed + k, speech, sounds, task_config)
    case = Case(f"{name}/{seed + k}", timeline, render(timeline, chunk_ms=chunk_ms), used)
    cases.append(case)
    return case

  for name in subtasks:
    for _ in range(streams_per_subtask):
      add(name)
  for suite, wanted in (minimum or {}).items():
    if suite not in suites:
      continue
    have = sum(case_units(c, suite) for c in cases if suite in c.suites)
    names = [n for n in subtasks if n in SUITE_SUBTASKS[suite]]
    while have < wanted and any(streams[n] < max_streams_per_subtask for n in names):
      for name in names:
        if have < wanted and streams[name] < max_streams_per_subtask:
          have += case_units(add(name), suite)
  return cases


def _manifest_timeline(suite: str, row: ManifestRow, audio: np.ndarray, mode: str,
                       replies: Sequence[Reply], *, words=None, sound: str | None = None,
                       quiet: Sequence[Span] = (), instruction: str | None = None
                       ) -> Timeline:
  """A timeline around one recording placed at 0 (its gain 1: the file as it is)."""
  utterances, sounds = (), ()
  if words is not None:
    utterances = (Utterance(start=0.0, audio=audio, words=tuple(words),
                            fillers=(False,) * len(words), holds=(), speaker=row.voice,
                            voice=row.voice, addressed=True, gain=1.0, level_db=0.0),)
  if sound is not None:
    lo, _ = loud_span(audio, row.lead_in)  # the sound's onset after any quiet lead-in
    onset = lo / SAMPLE_RATE
    after = row.recognisable_after
    if after is None:
      after = RECOGNISABLE_AFTER_S.get(sound, DEFAULT_RECOGNISABLE_AFTER_S)
    role = "alert" if sound in worlds.ALERT_LABELS or sound in row.alert_classes else "benign"
    sounds = (SoundEvent(start=onset, audio=audio[lo:], label=sound, source=row.source,
                         recognisable_at=min(onset + after, len(audio) / SAMPLE_RATE),
                         role=role, gain=1.0, level_db=0.0),)
  return Timeline(task=manifest_subtask(suite), ability=_ABILITY[suite], seed=0, split="manifest",
                  mode=mode, instruction=instruction or row.instruction or
                  MANIFEST_INSTRUCTIONS[suite],
                  duration=len(audio) / SAMPLE_RATE, speech_level_db=0.0,
                  utterances=utterances, sounds=sounds, backgrounds=(),
                  replies=tuple(replies), quiet=tuple(quiet))


def alert_text(label: str, instruction: str | None = None) -> str:
  """The reply a class warrants: under an instruction that asks for it ("tell me when
  you hear a dog barking", `instruction_watch.parse_watch`), what it asks to be told ("i
  hear a dog barking"); else its `worlds.alert_message`, else "i hear <class>"."""
  request = None if instruction is None else parse_watch(instruction)
  if request is not None and request.kind == SOUND and request.label == label:
    return request.reply
  info = worlds.SOUNDS.get(label)
  if info is not None and info.alert is not None:
    return info.alert
  return normalize_text(f"i hear {worlds.sound_name(label)}")


def recognisable_at(event: Event) -> float:
  """When an annotated event can be named: its onset + the class's delay, by its offset."""
  return min(event.onset + RECOGNISABLE_AFTER_S.get(event.label, DEFAULT_RECOGNISABLE_AFTER_S),
             event.offset)


def benign_seconds(duration: float, alerts: Sequence[tuple[float, float]], window: float
                   ) -> float:
  """`duration` minus the union of every alert's [onset, recognisable + window)."""
  spans = sorted((on, min(duration, ready + window)) for on, ready in alerts)
  covered, end = 0.0, 0.0
  for start, stop in spans:
    start = max(start, end)
    if stop > start:
      covered += stop - start
      end = stop
  return max(0.0, duration - covered)


def _annotated_cases(row: ManifestRow, clip: np.ndarray, streamed: np.ndarray,
                     add: Callable[..., None], window: float) -> None:
  """Cases of a row's `events` and `turns` (docs/manifests.md): B3 per sound event,
  B6 over the recording, B7 (alerts under the row's own instruction), B5 its turns, B8
  its barge-ins and speech not to answer."""
  length = len(clip) / SAMPLE_RATE
  # A lead-in is heard, and an alert in it is a false alarm, but it is no benign *sound*:
  # counting its quiet would flatter the false alarms per hour.
  benign = lambda alerts: max(0.0, benign_seconds(length, alerts, window) - row.lead_in)
  sound_events = [e for e in row.events if e.role in ("alert", "benign")]
  alert_events = [e for e in sound_events if e.role == "alert"]
  for k, event in enumerate(sound_events):
    piece = clip[int(event.onset * SAMPLE_RATE):int(event.offset * SAMPLE_RATE)]
    add("B3", piece, OFFLINE, [Reply(normalize_text(worlds.sound_name(event.label)),
                                     len(piece) / SAMPLE_RATE, "end of clip")],
        suffix=f"@{event.onset:g}s")
  alerts = tuple((e.onset, recognisable_at(e)) for e in alert_events)
  spans = tuple((e.onset, e.offset) for e in alert_events)
  alert_replies = [Reply(alert_text(e.label, row.instruction), ready, f"{e.label} recognisable",
                         kind="alert") for e, (_, ready) in zip(alert_events, alerts)]
  if sound_events:
    add("B6", streamed, ONLINE, alert_replies,
        quiet=[Span(e.onset, e.offset, "benign") for e in sound_events if e.role == "benign"],
        annotations=Annotations(alerts=alerts, benign_seconds=benign(alerts),
                                alert_sounds=spans))
  expected_turns = [(t.start, t.end) for t in row.turns if t.reply_expected]
  # Addressed speech is a turn too, unless a declared turn already covers it (a row may
  # annotate the same utterance both ways: it is one turn, not two).
  expected_turns += [(e.onset, e.offset) for e in row.events if e.role == "addressed_speech"
                     and not any(s < e.offset and e.onset < end for s, end in expected_turns)]
  expected_turns.sort()
  if row.instruction is not None and alert_events:
    add("B7", streamed, ONLINE, alert_replies,
        annotations=Annotations(alerts=alerts, benign_seconds=benign(alerts),
                                alert_sounds=spans))
  if expected_turns:
    add("B5", streamed, ONLINE, [Reply("", end, "turn ended") for _, end in expected_turns],
        annotations=Annotations(turns=tuple(expected_turns)))
  barge_ins = tuple(e.onset for e in row.events if e.role == "barge_in")
  unaddressed = tuple(sorted([(e.onset, e.offset) for e in row.events
                              if e.role == "unaddressed_speech"] +
                             [(t.start, t.end) for t in row.turns if not t.reply_expected]))
  if barge_ins or unaddressed:
    add("B8", streamed, ONLINE, [], annotations=Annotations(
        turns=tuple(expected_turns), barge_ins=barge_ins, unaddressed=unaddressed))


def cases_from_manifest(path: str | ManifestReport, suites: Sequence[str], *,
                        chunk_ms: int = sf.DEFAULT_CHUNK_MS, strict: bool = False,
                        answer_window_s: float = 2.0) -> list[Case]:
  """Cases from a JSONL manifest (audio path + reference fields, see `corpus/manifest.py`
  and docs/manifests.md).

  `path` is the manifest, or the `ManifestReport` of one already read (`read_manifest`:
  bad lines, unknown labels and missing audio are counted skips there, with a warning
  naming the file and the first line of each reason; a directory or a missing file is
  a `ManifestError`).

  Per row, as its fields allow:
    transcript (+ optional exact `words`): B1 (the clip, offline) and B2 (streamed;
      emission delays use `words` if given, else approximate times from
      `manifest.spread_words`: the case's `approximate_timing`, "~" in its name);
    label: B3 (offline "what sound is this?", answer `worlds.sound_name`) and B6
      (streamed: an alert class (known, or declared in `alert_classes`) warrants an
      alert once recognisable (`recognisable_after`), any other class must stay silent);
    reply (+ `reply_time`, default the end of the last word): B4 (its text) and B5
      (its timing: the turn is the clip's speech);
    events / turns (annotated long recordings, `_annotated_cases`): B3 per sound event,
      B6 (alerts and benign events; latency from the annotated onset, false alarms per
      hour over the benign time), B7 (alerts, when the row has its own `instruction`),
      B5 (turns expecting a reply, addressed speech), B8 (barge-ins, unaddressed speech,
      turns expecting none).
  A row's `instruction` replaces the suite's default (`MANIFEST_INSTRUCTIONS`). Online
  cases get `MANIFEST_TAIL_S` of silence after the clip, to answer in.
  """
  report = path if isinstance(path, ManifestReport) else read_manifest(path, strict=strict)
  chunk = sf.samples_per_chunk(SAMPLE_RATE, chunk_ms)
  cases = []
  for index, row in enumerate(report.rows):
    clip = np.asarray(row.load(), np.float32)
    total = -(-(len(clip) + int(MANIFEST_TAIL_S * SAMPLE_RATE)) // chunk) * chunk
    streamed = np.zeros(total, np.float32)
    streamed[:len(clip)] = clip
    words = row.words
    exact = words is not None
    if row.transcript is not None and words is None:
      words = spread_words(row.transcript, clip, lead_in=row.lead_in)
    name = f"{row.id or _file_name(row.source)}#{index}{'' if exact else '~'}"

    def add(suite, audio, mode, replies, *, suffix="", annotations=None, **kw):
      if suite in suites:
        cases.append(Case(f"{suite}:{name}{suffix}", _manifest_timeline(
            suite, row, audio, mode, replies, **kw), audio, frozenset({suite}),
            annotations=annotations, approximate_timing=not exact and words is not None))

    if row.transcript is not None:
      add("B1", clip, OFFLINE, [Reply(normalize_text(row.transcript), len(clip) / SAMPLE_RATE,
                                      "end of clip", kind="transcript")], words=words)
      per_word = [Reply(normalize_text(w.text), w.end, "word ended", kind="transcript")
                  for w in words if normalize_text(w.text)]
      add("B2", streamed, ONLINE, per_word, words=words)
    if row.label is not None:
      add("B3", clip, OFFLINE, [Reply(normalize_text(worlds.sound_name(row.label)),
                                      len(clip) / SAMPLE_RATE, "end of clip")], sound=row.label)
      timeline = _manifest_timeline("B6", row, streamed, ONLINE, [], sound=row.label)
      event = timeline.sounds[0]
      length = len(clip) / SAMPLE_RATE
      if event.role == "alert":
        replies = [Reply(alert_text(row.label, row.instruction), event.recognisable_at,
                         "alert recognisable", kind="alert")]
        alerts = ((event.start, event.recognisable_at),)
        add("B6", streamed, ONLINE, replies, sound=row.label, annotations=Annotations(
            alerts=alerts, benign_seconds=benign_seconds(length, alerts, answer_window_s),
            alert_sounds=((event.start, length),)))  # the clip's end, not the tail's
      else:
        add("B6", streamed, ONLINE, [], sound=row.label,
            quiet=[Span(0.0, length, "benign")],
            annotations=Annotations(benign_seconds=length))
    if row.reply is not None and words is not None:
      ready = row.reply_time if row.reply_time is not None else words[-1].end
      for suite in ("B4", "B5"):
        add(suite, streamed, ONLINE, [Reply(row.reply, ready, "turn ended")], words=words)
    if row.events or row.turns:
      _annotated_cases(row, clip, streamed, add, answer_window_s)
  return cases


def cases_from_keywords(report: ManifestReport, suites: Sequence[str]) -> list[Case]:
  """B3-like cases of a keyword set (speech_commands): each clip offline under
  `KEYWORD_INSTRUCTION`, its keyword (the row's transcript) the expected answer."""
  if "B3" not in suites:
    return []
  cases = []
  for index, row in enumerate(report.rows):
    if row.transcript is None:
      continue
    clip = np.asarray(row.load(), np.float32)
    timeline = Timeline(task="keyword", ability=1, seed=0, split="manifest", mode=OFFLINE,
                        instruction=KEYWORD_INSTRUCTION, duration=len(clip) / SAMPLE_RATE,
                        speech_level_db=0.0, utterances=(), sounds=(), backgrounds=(),
                        replies=(Reply(normalize_text(row.transcript), len(clip) / SAMPLE_RATE,
                                       "end of clip", kind="transcript"),), quiet=())
    cases.append(Case(f"B3:{row.name}#{index}", timeline, clip, frozenset({"B3"})))
  return cases


def _file_name(source: str) -> str:
  """The file name of a row's source path (or the in-memory name)."""
  return source.replace("\\", "/").rsplit("/", 1)[-1]


# ------------------------------------------------------------------------------- runs

class Runner:
  """Runs the model and the baselines/peers over cases (see the module docstring)."""

  def __init__(self, engine: Engine, params: Params, tokenizer: Tokenizer,
               config: EvalConfig = EvalConfig()):
    self.engine, self.params, self.tokenizer, self.config = engine, params, tokenizer, config
    model_config = engine.model.config
    self.chunk_seconds = model_config.chunk_seconds
    self.timer = SilenceTimer(config.baseline_silence_seconds, vad=config.vad,
                              chunk_seconds=self.chunk_seconds)
    self._peer: Pocketsphinx | None = None
    self._ctc_lm: tuple[ClipEncoder, CtcLmDecoder] | None = None
    self._sound_namer: SoundNamer | None = None
    self.sound_alerts = sound_alert_rule(
        ml_collections.ConfigDict({key: getattr(config, key)
                                   for key in SOUND_ALERT_KEYS}),
        tokenizer.encode, chunk_seconds=self.chunk_seconds,
        sound_event_classes=model_config.sound_event_classes)
    self.watches = instruction_watches(
        ml_collections.ConfigDict({key: getattr(config, key) for key in WATCH_KEYS}),
        tokenizer.encode, tokenizer.decode, chunk_seconds=self.chunk_seconds,
        sound_event_classes=model_config.sound_event_classes)
    self.clip_answers = clip_answers(
        ml_collections.ConfigDict({key: getattr(config, key)
                                   for key in (*CLIP_QUESTION_KEYS, *WATCH_KEYS)}),
        chunk_seconds=self.chunk_seconds, sound_event_classes=model_config.sound_event_classes)

  @property
  def peer(self) -> Pocketsphinx:
    if self._peer is None:  # loads its model only when B1/B2 run
      self._peer = Pocketsphinx()
    return self._peer

  @property
  def sound_namer(self) -> SoundNamer | None:
    """The sound-event head's clip namer, or None for a model without the head."""
    if self._sound_namer is None and self.engine.model.config.sound_event_classes:
      self._sound_namer = SoundNamer(self.engine.model, dequantize_params(self.params))
    return self._sound_namer

  def ctc_lm_words(self, audio: np.ndarray) -> tuple[tuple[str, float], ...]:
    """The CTC head's transcript of `audio` by LM beam search, fed chunk by chunk, with
    each word's emission time (`CtcLmDecoder.timed_words`); the head's logits come from
    one full pass of the chunk-causal encoder (what streaming computes)."""
    if self._ctc_lm is None:  # builds the lexicon only when asked for
      model = self.engine.model
      settings = BeamSettings(lm_weight=self.config.ctc_lm_weight,
                              word_score=self.config.ctc_lm_word_score)
      self._ctc_lm = (ClipEncoder(model, dequantize_params(self.params), output="ctc_logits"),
                      CtcLmDecoder(self.tokenizer, model.config.decoder.vocab_size,
                                   settings, spelling=self.config.ctc_lm_spelling))
    encode, decoder = self._ctc_lm
    logits = encode(np.asarray(audio, np.float32))
    return decoder.timed_words(logits, self.engine.model.config.encoder_frames_per_chunk,
                               self.chunk_seconds)

  def run(self, case: Case) -> CaseRun:
    """Runs every system the case's suites need; one model batch per online case."""
    began = time.perf_counter()
    cfg = self.config
    result = CaseRun(case, cfg.threshold)
    timeline = case.timeline
    if timeline.mode == OFFLINE:
      # One encoder pass for the head's answer and its name of the clip.
      head_logits = self.sound_namer and functools.cache(
          functools.partial(self.sound_namer.logits, case.audio))
      result.answer = answer_clip(self.engine, self.params, self.tokenizer, case.audio,
                                  timeline.instruction, max_tokens=cfg.max_answer_tokens,
                                  answers=self.clip_answers, head_logits=head_logits)
      if "B1" in case.suites:
        result.peer_clip = self.peer.transcribe_clip(case.audio)
      if "B3" in case.suites and case.subtask in NAMING_SUBTASKS and head_logits:
        result.sound_head_answer = normalize_text(rank_sounds(head_logits(), top=1)[0].name)
      result.seconds = time.perf_counter() - began
      return result
    thresholds = [cfg.threshold]
    if case.suites & SWEEP_SUITES:
      thresholds += [t for t in cfg.sweep_thresholds if t != cfg.threshold]
    policies: list = [ThresholdPolicy(t) for t in thresholds]
    timer = self.timer
    # One VAD pass per case: the timer baseline and a timer-driven operating policy
    # replay the same scores, over the audio as the stepper pads it (whole chunks).
    chunk = self.engine.model.config.chunk_samples
    scores = (timer.speech_probabilities(np.pad(case.audio, (0, -len(case.audio) % chunk)))
              if case.suites & TIMER_SUITES or cfg.policy != "model" else None)
    operating = None if cfg.policy == "model" else policy_from_config(
        cfg.policy_block(), chunk_seconds=self.chunk_seconds,
        detector=ReplayDetector(scores, timer.frame_samples))
    if operating is not None:
      policies.append(operating)
    if case.suites & TIMER_SUITES:
      fires = fire_chunks_from_scores(scores, timer.frame_seconds, self.chunk_seconds,
                                      timer.silence_seconds, timer.threshold,
                                      timer.min_speech_seconds)
      voiced = voice_chunks_from_scores(scores, timer.frame_seconds, self.chunk_seconds,
                                        timer.threshold)
      policies.append(ScheduledTimerPolicy(frozenset(fires), voiced))
      for seconds in cfg.sweep_silences:
        fires = fire_chunks_from_scores(scores, timer.frame_seconds, self.chunk_seconds,
                                        seconds, timer.threshold, timer.min_speech_seconds)
        result.timer_fires[seconds] = [(c + 1) * self.chunk_seconds for c in fires]
    model_rows = len(thresholds) + (operating is not None)
    traces = run_policies(self.engine, self.params, case.audio,
                          self.tokenizer.encode(timeline.instruction), policies,
                          max_reply_tokens=cfg.max_reply_tokens,
                          sound_alerts=self.sound_alerts,
                          sound_alert_rows=range(model_rows),
                          watches=self.watches)
    result.sweep = dict(zip(thresholds, traces))
    if operating is not None:
      result.operating = traces[len(thresholds)]
    if case.suites & TIMER_SUITES:
      result.timer = traces[-1]
    if "B2" in case.suites:
      result.peer_stream = self.peer.transcribe_stream(
          case.audio, int(round(self.chunk_seconds * SAMPLE_RATE)))
      if cfg.ctc_lm:
        result.ctc_lm_words = self.ctc_lm_words(case.audio)
    result.seconds = time.perf_counter() - began
    return result


# ------------------------------------------------------------- what a timeline warrants

def turns(timeline: Timeline) -> list[tuple[float, float]]:
  """User turns that warrant a reply: (first word start, end of last content word)."""
  readies = {round(r.ready_time, 6) for r in timeline.replies}
  return [(u.speech_start, u.speech_end) for u in timeline.utterances
          if u.addressed and round(u.speech_end, 6) in readies]


def reference_words(timeline: Timeline) -> list[tuple[str, float, float]]:
  """(word, start s, end s) of every word to transcribe (the transcript replies, each
  ready at its word's end; the start comes from the utterance's word ending there)."""
  starts = {round(w.end, 6): w.start for u in timeline.utterances for w in u.content_words}
  return [(word, starts.get(round(r.ready_time, 6), r.ready_time), r.ready_time)
          for r in timeline.replies if r.kind == "transcript"
          for word in normalize_text(r.text).split()]


def alert_events(timeline: Timeline, window: float) -> list[tuple[float, float]]:
  """(onset, deadline) s of each event that warrants an alert; deadline = recognisable + window."""
  return [(onset, deadline) for onset, deadline, _ in named_alert_events(timeline, window)]


def named_alert_events(timeline: Timeline, window: float) -> list[tuple[float, float, str]]:
  """(onset, deadline, the alert's text) of each event that warrants an alert."""
  out = []
  for reply in timeline.replies:
    if reply.kind != "alert":
      continue
    event = min((e for e in timeline.sounds if e.role == "alert"),
                key=lambda e: abs(e.recognisable_at - reply.ready_time))
    out.append((event.start, reply.ready_time + window, reply.text))
  return out


def barge_in_onsets(timeline: Timeline) -> list[float]:
  """Onsets (s) of user speech talking over a reply to stop it."""
  return [r.interrupted_at for r in timeline.replies if r.interrupted_at is not None]


def backchannel_onsets(timeline: Timeline) -> list[float]:
  """Onsets (s) of user speech during an uninterrupted reply ("uh-huh": not a barge-in)."""
  spans = [(r.ready_time, estimated_reply_end(r)) for r in timeline.replies
           if r.interrupted_at is None]
  return [u.speech_start for u in timeline.utterances
          if any(start < u.speech_start < end for start, end in spans)]


def unaddressed_spans(timeline: Timeline, grace: float) -> list[tuple[float, float]]:
  """[start, end + grace) of each utterance not addressed to the assistant."""
  return [(u.start, u.end + grace) for u in timeline.utterances if not u.addressed]


def case_turns(case: Case) -> list[tuple[float, float]]:
  """The case's turns expecting a reply: annotated, else from its timeline (`turns`)."""
  if case.annotations is not None:
    return list(case.annotations.turns)
  return turns(case.timeline)


def case_alert_events(case: Case, window: float) -> list[tuple[float, float]]:
  """(onset, deadline) s of the case's alert events: annotated, else `alert_events`."""
  if case.annotations is not None:
    return [(onset, ready + window) for onset, ready in case.annotations.alerts]
  return alert_events(case.timeline, window)


def case_named_alert_events(case: Case, window: float) -> list[tuple[float, float, str]]:
  """`case_alert_events` with each event's alert text (the timeline's alert reply ready
  when the annotated event is recognisable)."""
  if case.annotations is None:
    return named_alert_events(case.timeline, window)
  texts = {round(r.ready_time, 6): r.text for r in case.timeline.replies if r.kind == "alert"}
  return [(onset, ready + window, texts.get(round(ready, 6), ""))
          for onset, ready in case.annotations.alerts]


def alert_naming(runs: Sequence[CaseRun], tokenizer: Tokenizer, cfg: EvalConfig) -> dict:
  """Of the alert events the operating point's alerts detected (`metrics.match_alerts`,
  the recall's own matching), the share whose detecting reply says the event's alert
  text (after `normalize_text`): whether the alert names the right class. Unlike
  `_accuracy`, a reply before the class's nominal recognisable time counts, as it does
  for the recall."""
  detected = named = 0
  for run in runs:
    events = sorted(case_named_alert_events(run.case, cfg.answer_window_s))
    replies = _memo(run, "model_reply_texts",
                    lambda run=run: run.model.reply_texts(tokenizer.decode))
    match = metrics.match_alerts([(onset, deadline) for onset, deadline, _ in events],
                                 [start for start, _ in replies])
    for (_, _, text), index in zip(events, match.detectors):
      if index is not None:
        detected += 1
        named += metrics.exact_match(text, replies[index][1])
  return {"named": named, "detected": detected, "rate": metrics.rate(named, detected)}


def listened_seconds(case: Case) -> float:
  """The denominator of false alarms per hour: the annotated benign time, else the
  case's duration."""
  if case.annotations is not None and case.annotations.benign_seconds is not None:
    return case.annotations.benign_seconds
  return case.duration


def reply_starts(trace: StreamTrace) -> list[float]:
  return [start for start, _ in trace.replies]


def _memo(run: CaseRun, key: Any, compute: Callable[[], Any]) -> Any:
  """`compute()` once per run (bootstrap resamples score the same runs many times)."""
  if key not in run.memo:
    run.memo[key] = compute()
  return run.memo[key]


def _score(run: CaseRun, tokenizer: Tokenizer, window_chunks: int):
  return _memo(run, ("score", window_chunks), lambda: score_trace(
      run.case.timeline, run.model, tokenizer, window_chunks=window_chunks))


def speaking(trace: StreamTrace) -> list[tuple[float, float]]:
  """The trace's speaking segments (`metrics.speaking_segments`)."""
  return metrics.speaking_segments([(c.start, c.end) for c in trace.chunks
                                    if c.spoke and c.reply_tokens])


# ------------------------------------------------------------------------- the suites

def _runs(runs: Sequence[CaseRun], suite: str) -> list[CaseRun]:
  return [r for r in runs if suite in r.case.suites]


def _accuracy(runs: Sequence[CaseRun], tokenizer: Tokenizer, window_chunks: int) -> dict:
  """Exact-match accuracy per sub-task and overall: offline answers and online replies."""
  per: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
  for run in runs:
    counts = per[run.case.subtask]
    if run.answer is not None:
      counts[0] += metrics.exact_match(run.case.timeline.replies[0].text, run.answer)
      counts[1] += 1
    else:
      score = _score(run, tokenizer, window_chunks)
      counts[0] += score.exact
      counts[1] += score.expected
  overall = [sum(c[0] for c in per.values()), sum(c[1] for c in per.values())]
  return {"accuracy": metrics.rate(*overall), "correct": overall[0], "expected": overall[1],
          "per_subtask": {k: {"accuracy": metrics.rate(*v), "correct": v[0], "expected": v[1]}
                          for k, v in sorted(per.items())}}


def _wer_block(references: list[str], hypotheses: list[str]) -> dict:
  return {**metrics.word_error_rate(references, hypotheses).to_dict(),
          "cer": metrics.character_error_rate(references, hypotheses)}


def suite_b1(runs: Sequence[CaseRun], tokenizer: Tokenizer, cfg: EvalConfig) -> dict:
  """B1 offline ASR: WER of the model's offline transcript and of PocketSphinx's."""
  del tokenizer, cfg
  refs = [r.case.timeline.replies[0].text for r in runs]
  return {"cases": len(runs), "model": _wer_block(refs, [r.answer or "" for r in runs]),
          "pocketsphinx": _wer_block(refs, [r.peer_clip or "" for r in runs])}


def suite_b2(runs: Sequence[CaseRun], tokenizer: Tokenizer, cfg: EvalConfig) -> dict:
  """B2 streaming ASR: WER and emission delay (median, p90) of ours (replies of the real-time
  ASR sub-tasks, the encoder's CTC transcript and, when the runs have it, its LM beam
  search) and PocketSphinx's."""
  del cfg
  out = {"cases": len(runs)}
  systems: dict[str, Callable[[CaseRun], list[tuple[str, float]]]] = {
      "model": lambda r: _memo(r, "reply_words", lambda: [
          (w, start) for start, text in r.model.reply_texts(tokenizer.decode)
          for w in normalize_text(text).split()]),
      "pocketsphinx": lambda r: list(r.peer_stream.words) if r.peer_stream else [],
      # The encoder's CTC head, read at every chunk of the same run (no extra pass).
      "model_ctc": lambda r: _memo(r, "heard_words", lambda: [
          (normalize_text(w), t) for w, t in r.model.heard_words(tokenizer.decode)
          if normalize_text(w)]),
  }
  if any(r.ctc_lm_words is not None for r in runs):
    systems["model_ctc_lm"] = lambda r: [(normalize_text(w), t) for w, t in r.ctc_lm_words or ()
                                         if normalize_text(w)]
  for name, emitted_of in systems.items():
    refs, hyps, delays = [], [], []
    for run in runs:
      reference = reference_words(run.case.timeline)
      emitted = emitted_of(run)
      refs.append(" ".join(w for w, _, _ in reference))
      hyps.append(" ".join(w for w, _ in emitted))
      delays += metrics.emission_delays(reference, emitted)
    out[name] = {**_wer_block(refs, hyps), "emission_delay_s": metrics.summarize(delays),
                 "delays": delays}
  peer_compute = sum(r.peer_stream.compute_seconds for r in runs if r.peer_stream)
  out["pocketsphinx"]["real_time_factor"] = metrics.rate(
      peer_compute, sum(r.case.duration for r in runs))
  approximate = sum(r.case.approximate_timing for r in runs)
  out["word_times"] = ("synthesis timeline" if not approximate else
                       f"approximate (spread over the voiced region) in {approximate} of "
                       f"{len(runs)} cases")
  return out


def suite_b3(runs: Sequence[CaseRun], tokenizer: Tokenizer, cfg: EvalConfig) -> dict:
  """B3 sound events: exact-match accuracy of sound answers (offline clips and online);
  "sound_head": of the sound-event head's names, on the cases it named."""
  out = {"cases": len(runs), "model": _accuracy(runs, tokenizer, cfg.window_chunks)}
  named = [r for r in runs if r.sound_head_answer is not None]
  if named:
    out["sound_head"] = _accuracy(
        [dataclasses.replace(r, answer=r.sound_head_answer) for r in named], tokenizer,
        cfg.window_chunks)
    out["sound_head"]["per_sound"] = naming_counts(
        [(r.case.timeline.replies[0].text, r.sound_head_answer) for r in named])
  return out


def naming_counts(pairs: Sequence[tuple[str, str]]) -> dict[str, dict[str, Any]]:
  """(expected name, answer) pairs -> per expected name {"correct", "expected",
  "answers": {wrong answer: count}} (names normalised as `metrics.exact_match` does)."""
  out: dict[str, dict[str, Any]] = {}
  for expected, answer in pairs:
    expected, answer = normalize_text(expected), normalize_text(answer)
    row = out.setdefault(expected, {"correct": 0, "expected": 0, "answers": {}})
    row["expected"] += 1
    if answer == expected:
      row["correct"] += 1
    else:
      row["answers"][answer] = row["answers"].get(answer, 0) + 1
  return dict(sorted(out.items()))


def suite_b4(runs: Sequence[CaseRun], tokenizer: Tokenizer, cfg: EvalConfig) -> dict:
  """B4 spoken QA / chat: exact-match accuracy of normalized answers given in time."""
  return {"cases": len(runs), "model": _accuracy(runs, tokenizer, cfg.window_chunks)}


def turn_taking(runs: Sequence[CaseRun], starts_of: Callable[[CaseRun], list[float]],
                cfg: EvalConfig) -> dict:
  """Response latency (median, p90), false cut-in rate and miss rate over the runs' turns."""
  latencies: list[float | None] = []
  cut_ins: list[bool] = []
  for run in runs:
    user_turns = case_turns(run.case)
    starts = starts_of(run)
    latencies += metrics.response_latencies([end for _, end in user_turns], starts,
                                            cfg.answer_window_s)
    cut_ins += metrics.spans_with_reply(user_turns, starts)
  return {"turns": len(latencies), "response_latency_s": metrics.summarize(latencies),
          "false_cut_in_rate": metrics.rate(sum(cut_ins), len(cut_ins)),
          "miss_rate": metrics.miss_rate(latencies),
          "latencies": [v for v in latencies if v is not None]}


def suite_b5(runs: Sequence[CaseRun], tokenizer: Tokenizer, cfg: EvalConfig) -> dict:
  """B5 turn-taking: the model at its threshold vs the silence timer driving the same model;
  sweeps: the model's threshold, the timer's silence length."""
  del tokenizer
  return {
      "cases": len(runs),
      "model": turn_taking(runs, lambda r: reply_starts(r.model), cfg),
      "silence_timer": {**turn_taking(runs, lambda r: reply_starts(r.timer), cfg),
                        "silence_s": cfg.baseline_silence_seconds, "vad": cfg.vad},
      "sweep_model": {str(t): _strip(turn_taking(runs, lambda r, t=t: reply_starts(r.sweep[t]),
                                                 cfg))
                      for t in _sweep_keys(runs)},
      "sweep_silence_timer": {str(s): _strip(turn_taking(runs, lambda r, s=s: r.timer_fires[s],
                                                         cfg))
                              for s in cfg.sweep_silences},
  }


def alert_sounds(case: Case) -> list[tuple[float, float]]:
  """(start, end) s of the case's sounds that warrant an alert: annotated, else its
  timeline's."""
  if case.annotations is not None:
    return list(case.annotations.alert_sounds)
  return [(e.start, e.end) for e in case.timeline.sounds if e.role == "alert"]


def alerts(runs: Sequence[CaseRun], starts_of: Callable[[CaseRun], list[float]],
           cfg: EvalConfig) -> dict:
  """Alert precision/recall/F1, onset latency and false alarms per hour over the runs;
  "late_alerts": the false alarms raised during an alert sound after its deadline
  (`metrics.late_alerts`), and the false alarms per hour without them."""
  starts = [starts_of(r) for r in runs]
  matches = [metrics.match_alerts(case_alert_events(r.case, cfg.answer_window_s), s)
             for r, s in zip(runs, starts)]
  late = sum(metrics.late_alerts(m, s, alert_sounds(r.case), cfg.answer_window_s)
             for r, s, m in zip(runs, starts, matches))
  latencies = [v for m in matches for v in m.onset_latencies]
  seconds = sum(listened_seconds(r.case) for r in runs)
  false_alarms = sum(m.false_alarms for m in matches)
  return {**metrics.alert_scores(matches), "onset_latency_s": metrics.summarize(latencies),
          "false_alarms_per_hour": metrics.false_alarms_per_hour(false_alarms, seconds),
          "late_alerts": late,
          "benign_false_alarms_per_hour": metrics.false_alarms_per_hour(
              false_alarms - late, seconds),
          "hours": seconds / 3600, "latencies": [v for v in latencies if v is not None]}


def suite_b6(runs: Sequence[CaseRun], tokenizer: Tokenizer, cfg: EvalConfig) -> dict:
  """B6 proactive sound: alerts at the operating threshold, alert text accuracy, sweep."""
  return {"cases": len(runs),
          "model": {**alerts(runs, lambda r: reply_starts(r.model), cfg),
                    "text": _accuracy(runs, tokenizer, cfg.window_chunks),
                    "naming": alert_naming(runs, tokenizer, cfg)},
          "sweep_model": {str(t): _strip(alerts(runs, lambda r, t=t: reply_starts(r.sweep[t]),
                                                cfg))
                          for t in _sweep_keys(runs)}}


def suite_b7(runs: Sequence[CaseRun], tokenizer: Tokenizer, cfg: EvalConfig) -> dict:
  """B7 instruction following: accuracy of triggered replies, recall in time, latency,
  and the share of expected replies whose words the model said at any time (what to
  say, apart from when: `metrics.matching_answers`)."""
  scores = [_score(r, tokenizer, cfg.window_chunks) for r in runs]
  latencies = [v for s in scores for v in s.latencies]
  expected = sum(s.expected for s in scores)
  words_right = sum(metrics.matching_answers(
      [reply.text for reply in r.case.timeline.replies],
      [text for _, text in r.model.reply_texts(tokenizer.decode)]) for r in runs)
  return {"cases": len(runs), "model": {
      **_accuracy(runs, tokenizer, cfg.window_chunks),
      "recall": metrics.rate(sum(s.hits for s in scores), expected),
      "words_right": metrics.rate(words_right, expected),
      "false_triggers_per_stream": metrics.rate(sum(s.false_triggers for s in scores),
                                                len(scores)),
      "latency_from_ready_s": metrics.summarize(latencies)}}


def interaction_control(runs: Sequence[CaseRun], trace_of: Callable[[CaseRun], StreamTrace],
                        cfg: EvalConfig) -> dict:
  """Barge-in yield rate/latency, backchannel yield rate, false reply rate (unaddressed)."""
  barge, backchannel, unaddressed = [], [], []
  for run in runs:
    trace, timeline, notes = trace_of(run), run.case.timeline, run.case.annotations
    segments = speaking(trace)
    if notes is not None:
      onsets, backchannels = list(notes.barge_ins), []
      spans = [(start, end + cfg.unaddressed_grace_s) for start, end in notes.unaddressed]
    else:
      onsets, backchannels = barge_in_onsets(timeline), backchannel_onsets(timeline)
      spans = unaddressed_spans(timeline, cfg.unaddressed_grace_s)
    barge += metrics.yield_latencies(onsets, segments)
    backchannel += metrics.yield_latencies(backchannels, segments)
    unaddressed += metrics.spans_with_reply(spans, reply_starts(trace))
  return {
      "barge_ins_while_speaking": sum(v is not None for v in barge),
      "barge_ins": len(barge),
      "barge_in_yield_rate": metrics.yield_rate(barge, cfg.yield_within_s),
      "yield_latency_s": metrics.summarize(barge),
      "backchannels": len(backchannel),
      "backchannels_while_speaking": sum(v is not None for v in backchannel),
      "backchannel_yield_rate": metrics.yield_rate(backchannel, cfg.yield_within_s),
      "unaddressed_utterances": len(unaddressed),
      "false_reply_rate": metrics.rate(sum(unaddressed), len(unaddressed)),
  }


def suite_b8(runs: Sequence[CaseRun], tokenizer: Tokenizer, cfg: EvalConfig) -> dict:
  """B8 interaction control: the model vs the silence timer (VAD barge-in) on the same streams."""
  del tokenizer
  return {"cases": len(runs),
          "model": interaction_control(runs, lambda r: r.model, cfg),
          "silence_timer": interaction_control(runs, lambda r: r.timer, cfg)}


SUITES: Final[dict[str, Callable[[Sequence[CaseRun], Tokenizer, EvalConfig], dict]]] = {
    "B1": suite_b1, "B2": suite_b2, "B3": suite_b3, "B4": suite_b4,
    "B5": suite_b5, "B6": suite_b6, "B7": suite_b7, "B8": suite_b8,
}


def _sweep_keys(runs: Sequence[CaseRun]) -> list[float]:
  keys = set.intersection(*(set(r.sweep) for r in runs)) if runs else set()
  return sorted(keys)


def _strip(result: dict) -> dict:
  """A sweep point without its raw latency list."""
  return {k: v for k, v in result.items() if k != "latencies"}


# ---------------------------------------------------------------------------- the whole run

def evaluation_engine(model: AudioInteractionModel, tokenizer: Tokenizer, config: EvalConfig
                      ) -> Engine:
  """The engine the suites run: greedy, with the operating point's sound-name bias."""
  sampling = SamplingConfig(name_bias=config.sound_name_bias, name_decay=config.sound_name_decay,
                            name_gate=config.sound_name_gate, name_once=config.sound_name_once,
                            name_whole=config.sound_name_whole)
  return Engine(model, sampling, sampling.name_tokens(tokenizer))


def evaluate(engine: Engine, params: Params, tokenizer: Tokenizer, cases: Sequence[Case],
             suites: Sequence[str], config: EvalConfig = EvalConfig(), *,
             progress: bool = True) -> dict[str, Any]:
  """Runs the systems over `cases` and scores the `suites`.

  Returns a JSON-able dict: {"config", "suites": {name: result, with "intervals":
  {"system:metric": {"low", "high", "resamples"}} for every headline}, "case_counts":
  {suite: cases}, "suites_without_cases": [...], "per_case": [`case_record`...],
  "per_subtask": {sub-task: accuracy}, "timing": {...}}. NaN marks undefined rates.
  """
  runner = Runner(engine, params, tokenizer, config)
  runs = [runner.run(case) for case in tqdm(cases, desc="eval streams", disable=not progress)]
  return score_runs(runs, tokenizer, suites, config)


def headline_values(result: dict) -> dict[str, float]:
  """"system:path" -> value of every headline (`HEADLINES`) a suite result has, for
  our systems and the baseline/peer beside them ("k/n" rows give k / n)."""
  out = {}
  for suite, _, path, kind in HEADLINES:
    if result.get("suite") != suite:
      continue
    ours = path[0] if path[0] in OUR_SYSTEMS else "model"
    inner = path[1:] if path[0] in OUR_SYSTEMS else path
    systems = [ours] + ([b for b in BASELINES if b in result] if ours == "model" else [])
    for system in systems:
      block = result.get(system)
      if kind == "k/n":
        value = (metrics.rate(block[inner[0]], block[inner[1]])
                 if isinstance(block, dict) and inner[1] in block else None)
      else:
        value = block
        for key in inner:
          value = value.get(key) if isinstance(value, dict) else None
      if isinstance(value, (int, float)) and not isinstance(value, bool):
        out[f"{system}:{'.'.join(inner)}"] = float(value)
  return out


def headline_intervals(suite: str, runs: Sequence[CaseRun], tokenizer: Tokenizer,
                       config: EvalConfig) -> dict[str, dict]:
  """95 % percentile-bootstrap intervals over the suite's cases of every headline value
  (`headline_values`): cases are drawn with replacement and the suite is scored again
  (without its sweeps), `config.bootstrap_resamples` times from `config.bootstrap_seed`."""
  light_config = dataclasses.replace(config, sweep_silences=())
  light = [dataclasses.replace(r, sweep={r.threshold: r.model} if r.model else {}) for r in runs]

  def statistic(indices: np.ndarray) -> dict[str, float]:
    chosen = [light[i] for i in indices]
    return headline_values({"suite": suite, **SUITES[suite](chosen, tokenizer, light_config)})

  return bootstrap.bootstrap_intervals(len(runs), statistic,
                                       resamples=config.bootstrap_resamples,
                                       seed=config.bootstrap_seed)


def case_record(run: CaseRun, tokenizer: Tokenizer, window_chunks: int = EvalConfig.window_chunks
                ) -> dict[str, Any]:
  """One line of cases.jsonl: the case, what should happen, and per system what it said
  and when (stream seconds); for the model online, how many expected replies it
  answered in time (`in_time`) and of those with the exact words (`in_time_exact`), as
  the accuracy of B4/B7 counts them, so a subset of cases can be scored from the file."""
  case, timeline = run.case, run.case.timeline
  systems: dict[str, Any] = {}
  if run.answer is not None:
    systems["model"] = {"answer": run.answer}
  for name, trace in (("model", run.model), ("silence_timer", run.timer)):
    if trace is not None:
      systems[name] = {"threshold": run.threshold} if name == "model" else {}
      systems[name]["replies"] = [{"start_s": start, "text": text}
                                  for start, text in trace.reply_texts(tokenizer.decode)]
      if name == "model":
        score = _score(run, tokenizer, window_chunks)
        systems[name].update(in_time=score.hits, in_time_exact=score.exact)
      if name == "model" and "B2" in case.suites:
        systems["model_ctc"] = {"words": [[w, t] for w, t in trace.heard_words(tokenizer.decode)]}
  if run.ctc_lm_words is not None:
    systems["model_ctc_lm"] = {"words": [[w, t] for w, t in run.ctc_lm_words]}
  if run.sound_head_answer is not None:
    systems["sound_head"] = {"answer": run.sound_head_answer}
  if run.peer_clip is not None:
    systems["pocketsphinx"] = {"answer": run.peer_clip}
  if run.peer_stream is not None:
    systems["pocketsphinx"] = {"words": [[w, t] for w, t in run.peer_stream.words]}
  notes = dataclasses.asdict(case.annotations) if case.annotations is not None else None
  return {"case": case.name, "subtask": case.subtask, "suites": sorted(case.suites),
          "mode": timeline.mode, "instruction": timeline.instruction,
          "duration_s": case.duration, "approximate_word_times": case.approximate_timing,
          "expected": [{"text": r.text, "ready_s": r.ready_time, "kind": r.kind}
                       for r in timeline.replies],
          "annotations": notes, "systems": systems}


def score_runs(runs: Sequence[CaseRun], tokenizer: Tokenizer, suites: Sequence[str],
               config: EvalConfig = EvalConfig()) -> dict[str, Any]:
  """Scores runs (`Runner.run`) on the suites: see `evaluate`."""
  results: dict[str, Any] = {"config": dataclasses.asdict(config), "suites": {}}
  for suite in suites:
    chosen = _runs(runs, suite)
    result = {"name": SUITE_NAMES[suite], **(
        SUITES[suite](chosen, tokenizer, config) if chosen else {"cases": 0})}
    if chosen:
      result["intervals"] = headline_intervals(suite, chosen, tokenizer, config)
    if suite == "B5":
      result["target_turns"] = config.min_turns
    if suite == "B6":
      result["target_alert_events"] = config.min_alert_events
    results["suites"][suite] = result
  results["case_counts"] = {s: results["suites"][s]["cases"] for s in suites}
  results["suites_without_cases"] = [s for s in suites if not results["suites"][s]["cases"]]
  results["per_case"] = [case_record(r, tokenizer, config.window_chunks) for r in runs]
  results["per_subtask"] = _accuracy(runs, tokenizer, config.window_chunks)["per_subtask"]
  online = [r for r in runs if r.model is not None]
  chunks = sum(len(r.model.chunks) for r in online)
  results["timing"] = {
      "cases": len(runs), "stream_seconds": sum(r.case.duration for r in runs),
      "wall_seconds": sum(r.seconds for r in runs),
      "wall_seconds_per_case": metrics.summarize([r.seconds for r in runs]),
      "model_compute_ms_per_chunk_per_row": metrics.rate(
          1000 * sum(c.compute_seconds for r in online for c in r.model.chunks), chunks),
  }
  return results


def json_safe(value: Any) -> Any:
  """Replaces NaN/inf by None (strict JSON) and numpy scalars by Python ones, recursively."""
  if isinstance(value, dict):
    return {str(k): json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_safe(v) for v in value]
  if isinstance(value, (np.floating, float)):
    return None if not math.isfinite(float(value)) else float(value)
  if isinstance(value, np.integer):
    return int(value)
  return value

