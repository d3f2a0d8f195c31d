"""Domain randomisation wired into the corpus: speech.say with `randomize`, wide voices,
config.data.randomize -> build.speech_source, the tiny:randomize variant."""

import numpy as np
import pytest

from audio_interaction import config_lib
from audio_interaction.corpus import build, effects, speech

TEXT = "please turn on the kitchen light, then tell me the time."
ALL = effects.Randomization(p_speed=1, p_pitch=1, p_formant=1, p_telephone=1, p_room=1,
                            p_mic=1, p_noise=1)
NONE = effects.Randomization(0, 0, 0, 0, 0, 0, 0)


def _source(randomize, effects_on=False):
  return speech.MultiVoiceSpeech(engines=("espeak",), split="train",
                                 config=speech.RenderConfig(effects=effects_on,
                                                            randomize=randomize))


def test_randomize_off_renders_exactly_as_before():
  """The randomisation seed is drawn last: all-zero probabilities == no randomisation."""
  for seed in range(3):
    plain = _source(None, effects_on=True).say(TEXT, np.random.default_rng(seed))
    zero = _source(NONE, effects_on=True).say(TEXT, np.random.default_rng(seed))
    np.testing.assert_array_equal(plain.audio, zero.audio)
    assert plain.words == zero.words and plain.voice == zero.voice


@pytest.mark.parametrize("seed", range(3))
def test_randomized_speech_is_deterministic_and_timings_follow_the_speed(seed):
  source = _source(effects.Randomization(p_speed=1, p_pitch=0, p_formant=0, p_telephone=0,
                                         p_room=0, p_mic=0, p_noise=0,
                                         speed_range=(0.8, 1.25)))
  clip = source.say(TEXT, np.random.default_rng(seed))
  again = source.say(TEXT, np.random.default_rng(seed))
  np.testing.assert_array_equal(clip.audio, again.audio)
  dry = _source(None).say(TEXT, np.random.default_rng(seed))
  rate = dry.words[-1].end / clip.words[-1].end
  assert 0.8 - 0.01 < rate < 1.25 + 0.01
  assert abs(len(clip.audio) - len(dry.audio) / rate) <= 2
  # Every word span holds sound, and the gaps between words are much quieter.
  audio = np.abs(clip.audio)
  inside = np.zeros(len(audio), bool)
  for word in clip.words:
    lo, hi = int(word.start * 16000), int(word.end * 16000)
    assert audio[lo:hi].max() > 0.02, word
    inside[lo:hi] = True
  assert np.sqrt(np.mean(clip.audio[~inside] ** 2)) < 0.2 * np.sqrt(np.mean(clip.audio[inside] ** 2))
  starts = [w.start for w in clip.words]
  assert starts == sorted(starts) and clip.words[-1].end <= len(clip.audio) / 16000


def test_every_effect_on_an_utterance():
  clip = _source(ALL).say(TEXT, np.random.default_rng(0))
  assert np.isfinite(clip.audio).all() and np.abs(clip.audio).max() <= 0.99
  assert len(clip.words) == len(speech.split_words(TEXT))


def test_wide_voices_add_variants_and_keep_the_split():
  grid = speech.EspeakEngine(wide=False).voices()
  wide = speech.EspeakEngine(wide=True).voices()
  assert set(grid) < set(wide) and len(wide) >= 4 * len(grid)
  variants = {v.split("+")[1] for v in wide}
  assert not variants & {"whisper", "Demonic", "robosoft", "croak"}
  # The fixed grid keeps its split; about one in five new variants is held out.
  for voice in grid:
    assert speech.voice_split(f"espeak:{voice}") == speech.voice_split(f"espeak:{voice}")
  new = sorted(variants - set(speech.EspeakEngine.VARIANTS))
  held = [v for v in new if speech.voice_split(f"espeak:en-us+{v}") == "heldout"]
  assert 0.1 < len(held) / len(new) < 0.35
  train = speech.MultiVoiceSpeech(engines=("espeak",), split="train", wide_voices=True)
  heldout = speech.MultiVoiceSpeech(engines=("espeak",), split="heldout", wide_voices=True)
  assert not set(train.voices()) & set(heldout.voices())
  assert len(train.voices()) > len(speech.MultiVoiceSpeech(engines=("espeak",),
                                                           split="train").voices())


def test_config_knob_reaches_the_speech_source():
  config = config_lib.load_config(str(config_lib.experiments_dir() / "tiny.py"))
  assert not config.data.randomize.enabled and not config.train.augment.enabled
  plain = build.CorpusExamples.from_config(config, "train")
  assert plain.randomize["enabled"] is False
  assert build.speech_source("train", plain.randomize).config.randomize is None
  randomized = config_lib.load_config(str(config_lib.experiments_dir() / "tiny.py") + ":randomize",
                                      ["data.randomize.p_room=0.0"])
  assert randomized.data.randomize.enabled and randomized.train.augment.enabled
  assert randomized.data.dir != config.data.dir
  make = build.CorpusExamples.from_config(randomized, "train")
  source = build.speech_source("train", make.randomize)
  assert source.config.randomize.p_room == 0.0 and source.config.randomize.p_speed == 0.5
  weights = dict(zip(source.engines(), source._engine_p))
  if "flite" in weights and "espeak" in weights:
    assert weights["flite"] > weights["espeak"]
  with pytest.raises(config_lib.ConfigError, match="data.randomize.p_noise"):
    config_lib.load_config(str(config_lib.experiments_dir() / "tiny.py"),
                           ["data.randomize.p_noise=2.0"])
