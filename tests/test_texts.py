"""General English dictation from TRAIN-side dialogue scripts (corpus/texts.py)."""

import numpy as np
import pytest

from audio_interaction.corpus import build, real_audio, tasks, texts
from audio_interaction.data.tokenizer import normalize_text

DIALOG = '''
local Npc = FDrpg.get_tux()
return {
  FirstTime = function() Npc:says(_"Welcome to the town, stranger. Don't touch the bots!") end,
  {
    id = "node0",
    text = _"Who are you and what do you want from me?",
    code = function()
      Tux:says(_"I need %d circuits.", 3)
      Npc:says(_"BOTNET: UNIT TOO DAMAGED TO BROADCAST.")
      Npc:says(_"Welcome to [b]%s[/b]!")
      Npc:says(_"cd repair&settings/")
      Npc:says(_"Yes.")
      Npc:says(_"Who are you and what do you want from me?")
    end,
  },
}
'''


@pytest.fixture
def text_root(tmp_path):
  scripts = tmp_path / "freedroidrpg-data/usr/share/freedroidrpg/dialogs"
  scripts.mkdir(parents=True)
  (scripts / "Town.lua").write_text(DIALOG, encoding="utf-8")
  texts.dialogue_sentences.cache_clear()
  return tmp_path


def test_lines_become_normalized_sentences_and_non_speech_is_dropped():
  assert texts.sentences_of_line("Welcome to the town, stranger. Don't touch the bots!") == [
      "welcome to the town stranger", "don't touch the bots"]
  for not_speech in ("I need %d circuits.", "Welcome to [b]%s[/b]!", "cd repair&settings/",
                     "BOTNET: UNIT TOO DAMAGED TO BROADCAST.", "ALL CAPS LINES ARE SHOUTED MENUS"):
    assert texts.sentences_of_line(not_speech) == [], not_speech
  assert texts.sentences_of_line("Yes.") == []  # under three words
  assert texts.sentences_of_line(" ".join(["word"] * 17)) == []  # over sixteen


def test_dialogue_sentences_read_the_package_scripts(text_root):
  got = texts.dialogue_sentences(text_root)
  assert got == ("don't touch the bots", "welcome to the town stranger",
                 "who are you and what do you want from me")
  assert all(normalize_text(s) == s for s in got)


def test_a_missing_package_or_a_reserved_one_is_named(tmp_path, text_root):
  texts.dialogue_sentences.cache_clear()
  with pytest.raises(texts.MissingTextPackage, match="fetch-train-audio"):
    texts.dialogue_sentences(_empty(tmp_path))
  (text_root / "gcompris-data").mkdir()
  with pytest.raises(real_audio.ReservedPackageError, match="gcompris"):
    texts.dialogue_sentences(text_root)


def _empty(tmp_path):
  folder = tmp_path / "empty_root"
  folder.mkdir()
  return folder


GENERAL = ("the quick brown fox jumps over the lazy dog",
           "a journey of a thousand miles begins with a single step")


def test_dictation_says_general_sentences_when_asked(speech, sounds):
  config = tasks.TaskConfig(general_sentences=GENERAL, general_text_probability=1.0)
  for seed in range(3):
    timeline = tasks.build("offline_asr", seed, speech, sounds, config)
    (reply,) = timeline.replies
    assert reply.text in GENERAL
    streamed = tasks.build("asr_clean", seed, speech, sounds, config)
    words = [r.text for r in streamed.replies if r.kind == "transcript"]
    assert words and set(words) <= set(" ".join(GENERAL).split()), words


def test_probability_zero_leaves_timelines_unchanged(speech, sounds):
  plain = tasks.TaskConfig()
  off = tasks.TaskConfig(general_sentences=GENERAL, general_text_probability=0.0)
  for seed in range(3):
    a = tasks.build("offline_asr", seed, speech, sounds, plain)
    b = tasks.build("offline_asr", seed, speech, sounds, off)
    assert a.replies == b.replies
    assert [u.words for u in a.utterances] == [u.words for u in b.utterances]
    assert all(np.array_equal(x.audio, y.audio) for x, y in zip(a.utterances, b.utterances))


def test_only_the_train_split_gets_general_text(text_root):
  randomize = {"enabled": True, "train_audio_root": str(text_root), "p_general_text": 0.5}
  got = build.general_text_settings(randomize, "train")
  assert got["general_text_probability"] == 0.5 and len(got["general_sentences"]) == 3
  assert build.general_text_settings(randomize, "eval") == {}
  assert build.general_text_settings({**randomize, "p_general_text": 0.0}, "train") == {}
  assert build.general_text_settings({**randomize, "train_audio_root": ""}, "train") == {}
