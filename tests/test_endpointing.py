"""The silence-timer endpointer: when it fires, causally, for each VAD."""

import numpy as np
import pytest

from audio_interaction.corpus import speech as speech_lib
from audio_interaction.infer.endpointing import (
    SilenceTimer, fire_chunks_from_scores, voice_chunks)

RATE = 16000


def tone(seconds: float, amplitude: float = 0.3) -> np.ndarray:
  t = np.arange(int(round(seconds * RATE))) / RATE
  return (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
  return np.zeros(int(round(seconds * RATE)), np.float32)


def spoken(text: str, seed: int = 3) -> np.ndarray:
  """espeak-ng speech (a required test dependency) at a peak of 0.3."""
  clip = speech_lib.MultiVoiceSpeech(engines=("espeak",)).say(text, np.random.default_rng(seed))
  return 0.3 * clip.audio / np.abs(clip.audio).max()


def test_energy_timer_fires_after_the_silence():
  # Voice [0.5, 1.5); silence from 1.5: it fires at the first chunk end >= 2.2 s.
  audio = np.concatenate([silence(0.5), tone(1.0), silence(2.0)])
  assert SilenceTimer(vad="energy").response_times(audio) == [pytest.approx(2.24)]
  assert SilenceTimer(0.3, vad="energy").response_times(audio) == [pytest.approx(1.92)]


def test_a_short_pause_does_not_fire_a_long_one_does():
  short = np.concatenate([tone(0.8), silence(0.5), tone(0.8), silence(1.5)])
  assert SilenceTimer(vad="energy").response_times(short) == [pytest.approx(2.88)]
  # A 1 s pause inside the "turn": the timer cannot know it is mid-turn and fires.
  long = np.concatenate([tone(0.8), silence(1.0), tone(0.8), silence(1.5)])
  assert SilenceTimer(vad="energy").response_times(long) == [pytest.approx(1.6),
                                                             pytest.approx(3.36)]


def test_clicks_shorter_than_min_speech_do_not_fire():
  audio = np.concatenate([silence(0.5), tone(0.04), silence(2.0)])
  assert SilenceTimer(vad="energy", min_speech_seconds=0.1).response_times(audio) == []
  assert len(SilenceTimer(vad="energy", min_speech_seconds=0.0).response_times(audio)) == 1


def test_silence_only():
  assert SilenceTimer(vad="energy").response_times(silence(3.0)) == []


@pytest.mark.parametrize("vad", ["energy", "webrtc", "silero"])
def test_causal_the_future_does_not_change_past_firings(vad):
  rng = np.random.default_rng(0)
  audio = np.concatenate([silence(0.3), spoken("turn on the light"), silence(0.9),
                          spoken("thank you"), silence(1.2)])
  audio += (1e-3 * rng.standard_normal(len(audio))).astype(np.float32)
  timer = SilenceTimer(vad=vad)
  full = timer.fire_chunks(audio)
  assert len(full) == 2
  chunk = timer.chunk_samples
  for k in range(1, len(audio) // chunk):
    assert timer.fire_chunks(audio[:k * chunk]) == [c for c in full if c < k], k


@pytest.mark.parametrize("vad", ["energy", "webrtc", "silero"])
def test_sweep_from_scores_equals_running_the_timer(vad):
  audio = np.concatenate([silence(0.3), tone(0.6), silence(0.5), tone(0.4), silence(1.5)])
  scores = SilenceTimer(vad=vad).speech_probabilities(audio)
  for seconds in (0.3, 0.5, 0.7, 1.0):
    timer = SilenceTimer(seconds, vad=vad)
    assert fire_chunks_from_scores(scores, timer.frame_seconds, 0.16, seconds) == (
        timer.fire_chunks(audio)), seconds


def test_speech_probabilities_shape_and_resampling():
  timer = SilenceTimer(vad="silero")
  assert timer.speech_probabilities(silence(1.0)).shape == (31,)  # 32 ms frames
  assert SilenceTimer(vad="webrtc").speech_probabilities(silence(1.0)).shape == (50,)
  at_8k = SilenceTimer(vad="energy").speech_probabilities(tone(1.0)[::2], sample_rate=8000)
  assert at_8k.shape == (50,) and at_8k.min() == 1.0


def test_bad_arguments():
  with pytest.raises(ValueError, match="unknown VAD"):
    SilenceTimer(vad="nope")
  with pytest.raises(ValueError, match="silence_seconds"):
    SilenceTimer(0.0)
  with pytest.raises(ValueError, match="NaN"):
    SilenceTimer(vad="energy").response_times(np.full(100, np.nan, np.float32))


@pytest.mark.parametrize("vad", ["webrtc", "silero"])
def test_real_vads_on_speech(vad):
  espeak = speech_lib.MultiVoiceSpeech(engines=("espeak",))
  clip = espeak.say("what is the weather like today", np.random.default_rng(3))
  lead = 0.5
  audio = np.concatenate([silence(lead), 0.3 * clip.audio / np.abs(clip.audio).max(),
                          silence(2.0)])
  end = lead + clip.words[-1].end
  timer = SilenceTimer(vad=vad)
  times = timer.response_times(audio)
  # One firing, ~0.7 s after the last word (the VAD's own hangover moves it a little).
  assert len(times) == 1
  assert end + 0.5 <= times[0] <= end + 0.7 + 0.16 + 0.3
  voiced = voice_chunks(timer, audio)
  assert min(voiced) * 0.16 <= lead + clip.words[0].end and max(voiced) * 0.16 < end + 0.3
