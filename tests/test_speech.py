"""TTS speech sources: determinism, exact word timings, voices and splits, degradation.

espeak-ng is a required test dependency (Debian `espeak-ng`); flite, festival and piper
checks run only where those engines are installed.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from audio_interaction.corpus import effects, speech
from audio_interaction.stream_format import SAMPLE_RATE

TEXT = "please turn on the kitchen lights, then tell me the time?"
DRY = speech.RenderConfig(effects=False)


@pytest.fixture(scope="module")
def espeak() -> speech.MultiVoiceSpeech:
  return speech.MultiVoiceSpeech(engines=("espeak",))


@pytest.fixture(scope="module")
def espeak_dry() -> speech.MultiVoiceSpeech:
  return speech.MultiVoiceSpeech(engines=("espeak",), config=DRY)


def _word_mask(clip) -> np.ndarray:
  mask = np.zeros(len(clip.audio), bool)
  for w in clip.words:
    mask[int(round(w.start * SAMPLE_RATE)):int(round(w.end * SAMPLE_RATE))] = True
  return mask


def _check_timings(clip, text: str, dry: bool) -> None:
  """Words in order, non-overlapping, inside the clip, loud inside and quiet between."""
  assert " ".join(w.text for w in clip.words) == " ".join(text.split())
  prev_end = 0.0
  for w in clip.words:
    assert prev_end <= w.start < w.end <= clip.duration
    prev_end = w.end
    seg = clip.audio[int(round(w.start * SAMPLE_RATE)):int(round(w.end * SAMPLE_RATE))]
    # Trimmed at -40 dB below the word's peak frame: the word's level is near its peak.
    assert effects.rms_db(seg) > effects.rms_db(clip.audio) - 15.0, w
  mask = _word_mask(clip)
  if dry:
    # Without room/mic effects everything outside the words is digital silence.
    assert not np.any(clip.audio[~mask])
    for w in clip.words:
      i, j = int(round(w.start * SAMPLE_RATE)), int(round(w.end * SAMPLE_RATE))
      # The first and last 10 ms of each word carry sound (trimmed tightly).
      assert np.max(np.abs(clip.audio[i:i + 160])) > 0 and np.max(np.abs(clip.audio[j - 160:j])) > 0
  else:
    # Reverberation tails and a noise floor live in the gaps, well below the words.
    assert effects.rms_db(clip.audio[mask]) - effects.rms_db(clip.audio[~mask]) > 6.0


def test_same_seed_same_bytes_even_with_cold_cache(espeak):
  a = espeak.say(TEXT, np.random.default_rng(11))
  b = espeak.say(TEXT, np.random.default_rng(11))  # warm cache
  c = speech.MultiVoiceSpeech(engines=("espeak",)).say(TEXT, np.random.default_rng(11))  # cold
  for other in (b, c):
    assert a.audio.tobytes() == other.audio.tobytes()
    assert a.words == other.words and a.voice == other.voice
  assert a.audio.dtype == np.float32 and a.audio.ndim == 1


def test_different_seeds_differ(espeak):
  clips = [espeak.say(TEXT, np.random.default_rng(s)) for s in range(4)]
  assert len({c.audio.tobytes() for c in clips}) == 4
  assert len({tuple(w.start for w in c.words) for c in clips}) == 4


@pytest.mark.parametrize("seed", range(3))
def test_word_timings_exact_dry(espeak_dry, seed):
  clip = espeak_dry.say(TEXT, np.random.default_rng(seed))
  _check_timings(clip, TEXT, dry=True)


@pytest.mark.parametrize("seed", range(3))
def test_word_timings_with_effects(espeak, seed):
  _check_timings(espeak.say(TEXT, np.random.default_rng(seed)), TEXT, dry=False)


def test_word_timings_match_a_word_alone(espeak_dry):
  """Each placed word is exactly the audio of that word rendered alone (same voice,
  rate and pitch), so the span is the word and nothing else."""
  rng_state = np.random.default_rng(5)
  clip = espeak_dry.say("seven apples", rng_state, voice="espeak:en-us+m3")
  peak = np.max(np.abs(clip.audio))
  for w in clip.words:
    seg = clip.audio[int(round(w.start * SAMPLE_RATE)):int(round(w.end * SAMPLE_RATE))]
    # Energy centre of the word lies well inside its span.
    e = seg.astype(np.float64) ** 2
    centre = float((np.arange(len(e)) * e).sum() / e.sum()) / len(e)
    assert 0.15 < centre < 0.85
    assert np.max(np.abs(seg)) > 0.1 * peak


def test_pauses_follow_punctuation(espeak_dry):
  clip = espeak_dry.say("one two, three. four", np.random.default_rng(0), voice="espeak:en-us+f2")
  w = clip.words
  gaps = [w[i + 1].start - w[i].end for i in range(3)]
  cfg = speech.RenderConfig()
  assert cfg.gap_word[0] - 1e-3 <= gaps[0] <= cfg.gap_word[1] + 1e-3
  assert cfg.gap_comma[0] - 1e-3 <= gaps[1] <= cfg.gap_comma[1] + 1e-3
  assert cfg.gap_sentence[0] - 1e-3 <= gaps[2] <= cfg.gap_sentence[1] + 1e-3


def test_split_words_and_spoken_form():
  assert speech.split_words("-- hi,  there ! ok") == ["-- hi,", "there !", "ok"]
  assert [speech.spoken_form(t) for t in speech.split_words("what's 2+3 ?")] == ["what's", "2+3?"]
  assert speech.spoken_form("(hello),") == "hello"


def test_explicit_voice_and_errors(espeak):
  clip = espeak.say("hello there", np.random.default_rng(0), voice="espeak:en+f2")
  assert clip.voice == "espeak:en+f2"
  with pytest.raises(ValueError, match="engine:name"):
    espeak.say("hi", np.random.default_rng(0), voice="en-us")
  with pytest.raises(ValueError, match="not available"):
    espeak.say("hi", np.random.default_rng(0), voice="nosuch:voice")
  with pytest.raises(ValueError, match="nothing to say"):
    espeak.say(" ... ", np.random.default_rng(0))


def test_cache_is_used(espeak):
  espeak.cache.clear()
  espeak.say("red green blue", np.random.default_rng(1), voice="espeak:en-us+m1")
  misses = espeak.cache.misses
  espeak.say("red green blue", np.random.default_rng(1), voice="espeak:en-us+m1")
  assert espeak.cache.misses == misses and espeak.cache.hits >= 3


def test_cache_bounded_by_bytes():
  cache = speech.WordCache(max_bytes=4000)
  for i in range(10):
    cache.put(("k", i), np.zeros(250, np.float32))  # 1000 bytes each
  assert len(cache) == 4 and cache.get(("k", 0)) is None and cache.get(("k", 9)) is not None


def test_voice_split():
  assert speech.voice_split("espeak:en-us+m3") == "train"
  assert speech.voice_split("espeak:en-029+m3") == "heldout"
  assert speech.voice_split("espeak:en-us+f4") == "heldout"
  assert speech.voice_split("flite:rms") == "heldout"
  assert speech.voice_split("flite:slt") == "train"
  assert speech.voice_split("festival:ked") == "heldout"
  assert speech.voice_split("piper:joe") == "train"
  voices = speech.EspeakEngine().voices()
  splits = [speech.voice_split(f"espeak:{v}") for v in voices]
  assert 0.1 < splits.count("heldout") / len(splits) < 0.5


def test_split_restricts_drawn_voices():
  held = speech.MultiVoiceSpeech(engines=("espeak",), split="heldout", config=DRY)
  assert held.voices() and all(speech.voice_split(v) == "heldout" for v in held.voices())
  drawn = {held.say("yes", np.random.default_rng(s)).voice for s in range(8)}
  assert all(speech.voice_split(v) == "heldout" for v in drawn)


def test_missing_engines_warn_and_continue(monkeypatch, caplog):
  monkeypatch.setattr(speech, "_warned", set())
  for cls in (speech.FliteEngine, speech.FestivalEngine, speech.PiperEngine):
    monkeypatch.setattr(cls, "is_available", classmethod(lambda cls: False))
  with caplog.at_level(logging.WARNING, logger=speech.__name__):
    src = speech.MultiVoiceSpeech(config=DRY)
  assert src.engines() == ("espeak",)
  text = caplog.text
  assert "flite" in text and "festival" in text and "piper" in text
  assert src.say("still talking", np.random.default_rng(0)).voice.startswith("espeak:")


def test_no_engine_is_a_clear_error(monkeypatch):
  monkeypatch.setattr(speech, "_warned", set())
  for cls in speech.ENGINE_TYPES.values():
    monkeypatch.setattr(cls, "is_available", classmethod(lambda cls: False))
  with pytest.raises(RuntimeError, match="espeak-ng") as err:
    speech.MultiVoiceSpeech()
  assert "piper-tts" in str(err.value) and "flite" in str(err.value)


def test_engine_weights(espeak):
  with pytest.raises(ValueError):
    speech.MultiVoiceSpeech(engines=("espeak",), engine_weights={"espeak": 0.0})


@pytest.mark.parametrize("engine", ["flite", "festival", "piper"])
def test_optional_engine(engine):
  if engine not in speech.available_speech_engines((engine,)):
    pytest.skip(f"{engine} not installed")
  src = speech.MultiVoiceSpeech(engines=(engine,), config=DRY)
  voice = src.voices()[0]
  text = "open the door"
  a = src.say(text, np.random.default_rng(3), voice=voice)
  b = speech.MultiVoiceSpeech(engines=(engine,), config=DRY).say(text, np.random.default_rng(3), voice=voice)
  assert a.audio.tobytes() == b.audio.tobytes()
  _check_timings(a, text, dry=True)


def test_recorded_speech():
  rec = speech.RecordedSpeech()
  if not rec.voices():
    pytest.skip("klettres-data / ktuberling-data not installed")
  voice = rec.voices()[0]
  words = sorted(rec.vocabulary(voice))[:3]
  clip = rec.say(" ".join(words), np.random.default_rng(0), voice=voice)
  _check_timings(clip, " ".join(words), dry=True)
  again = rec.say(" ".join(words), np.random.default_rng(0), voice=voice)
  assert clip.audio.tobytes() == again.audio.tobytes()
  with pytest.raises(KeyError):
    rec.say("xylophonist", np.random.default_rng(0))
