"""Real recorded lines in training streams (corpus/real_speech.py) on a fake package tree."""

import dataclasses
import json

import numpy as np
import pytest
import soundfile as sf
from fake_recordings import speechlike

from audio_interaction.corpus import build, real_audio, real_speech, tasks
from audio_interaction.corpus import timeline as timeline_lib
from audio_interaction.stream_format import SAMPLE_RATE

FILLETS = "usr/share/games/fillets-ng"
RATE = 22050

SCRIPT = '''
dialogId("let-m-divna", "font_small", "What kind of strange ship is that?")
dialogStr("Co je to za divnou loď?")

dialogId("let-v-dve", "font_big", "Two sentences.")
dialogStr("Tohle je první věta. A tohle druhá věta.")

dialogId("let-m-kratka", "font_small", "Short.")
dialogStr("Ano.")

dialogId("let-v-chybi", "font_big", "No audio for this one.")
dialogStr("Tahle nahrávka chybí.")
'''


@pytest.fixture
def dub_root(tmp_path):
  script = tmp_path / "fillets-ng-data" / FILLETS / "script/airplane/dialogs_cs.lua"
  script.parent.mkdir(parents=True)
  script.write_text(SCRIPT, encoding="utf-8")
  dub = tmp_path / "fillets-ng-data-cs" / FILLETS / "sound/airplane/cs"
  dub.mkdir(parents=True)
  for i, (name, seconds) in enumerate((("let-m-divna", 2.0), ("let-v-dve", 2.5),
                                       ("let-m-kratka", 0.4))):
    sf.write(str(dub / f"{name}.ogg"), speechlike(i, RATE, seconds), RATE, format="OGG")
  real_speech.recorded_lines.cache_clear()
  return tmp_path


def test_ascii_fold_keeps_letters_and_drops_accents():
  assert real_speech.ascii_fold("Myslíš, že tu někdo bydlí?") == "myslis ze tu nekdo bydli"
  assert real_speech.ascii_fold("Příliš žluťoučký kůň úpěl ďábelské ódy") == (
      "prilis zlutoucky kun upel dabelske ody")
  assert real_speech.ascii_fold("Je 12 hodin.") == "je twelve hodin"
  assert real_speech.ascii_fold("...") == ""


def test_recorded_lines_pair_the_dub_with_its_script(dub_root):
  lines = real_speech.recorded_lines(dub_root)
  assert [line.text for line in lines] == [
      "co je to za divnou lod", "tohle je prvni veta a tohle druha veta", "ano"]
  # Only a single sentence with a dip and enough speech on both sides takes a pause.
  assert [line.pause_cut is not None for line in lines] == [True, False, False]
  assert lines[0].voice == "fillets-ng-data-cs:font_small"
  assert lines[0].ref.package == real_speech.RECORDED_PACKAGE
  audio = lines[0].audio()
  assert audio.dtype == np.float32 and 1.8 < len(audio) / SAMPLE_RATE < 2.3  # trimmed


def test_wordy_lines_are_left_out_and_long_ones_never_used(dub_root):
  script = dub_root / "fillets-ng-data" / FILLETS / "script/airplane/dialogs_cs.lua"
  wordy = " ".join(["slovo"] * (real_speech.MAX_WORDS + 1))
  script.write_text(script.read_text(encoding="utf-8")
                    + f'\ndialogId("let-m-dlouha", "font_small", "Long.")\n'
                      f'dialogStr("Tohle je velmi dlouha veta bez konce.")\n'
                      f'dialogId("let-m-slova", "font_small", "Wordy.")\n'
                      f'dialogStr("{wordy}.")\n', encoding="utf-8")
  dub = dub_root / "fillets-ng-data-cs" / FILLETS / "sound/airplane/cs"
  seconds = real_speech.MAX_SECONDS + 1.0
  sf.write(str(dub / "let-m-dlouha.ogg"), speechlike(7, RATE, seconds), RATE, format="OGG")
  sf.write(str(dub / "let-m-slova.ogg"), speechlike(8, RATE, 3.0), RATE, format="OGG")
  real_speech.recorded_lines.cache_clear()
  lines = real_speech.recorded_lines(dub_root)
  assert [line.text for line in lines][-1] == "tohle je velmi dlouha veta bez konce"
  long_line = lines[-1]
  assert len(long_line.audio()) > real_speech.MAX_SECONDS * SAMPLE_RATE
  assert long_line.pause_cut is None
  assert real_speech.recorded_speech(long_line) is None
  assert real_speech.recorded_speech(long_line, pause_s=0.8) is None


def test_an_undecodable_recording_is_skipped_and_named(dub_root, caplog):
  dub = dub_root / "fillets-ng-data-cs" / FILLETS / "sound/airplane/cs"
  (dub / "let-v-dve.ogg").write_bytes(b"")  # the real Dutch dub ships an empty file too
  real_speech.recorded_lines.cache_clear()
  with caplog.at_level("WARNING"):
    lines = real_speech.recorded_lines(dub_root)
  assert [line.text for line in lines] == ["co je to za divnou lod", "ano"]
  assert "skipped 1 undecodable" in caplog.text and "let-v-dve" in caplog.text


def test_missing_dub_or_reserved_package_is_named(tmp_path, dub_root):
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(real_speech.MissingRecordedSpeech, match="fetch-train-audio"):
    real_speech.recorded_lines(empty)
  (dub_root / "gcompris-data").mkdir()
  real_speech.recorded_lines.cache_clear()
  with pytest.raises(real_audio.ReservedPackageError, match="gcompris"):
    real_speech.recorded_lines(dub_root)


def test_whole_line_words_are_ordered_and_cover_the_clip(dub_root):
  line = real_speech.recorded_lines(dub_root)[0]
  speech = real_speech.recorded_speech(line)
  words = speech.words
  assert [w.text for w in words] == line.text.split()
  assert words[0].start == 0.0 and words[-1].end == pytest.approx(speech.duration)
  assert all(a.end == b.start and a.start < a.end for a, b in zip(words, words[1:]))
  # Longer words get longer spans: "divnou" (6 letters) vs "je" (2).
  span = {w.text: w.end - w.start for w in words}
  assert span["divnou"] == pytest.approx(span["je"] * 7 / 3)
  assert speech.holds == () and not any(speech.fillers)


def test_a_pause_goes_into_the_lines_own_dip(dub_root):
  line = real_speech.recorded_lines(dub_root)[0]
  whole = line.audio()
  speech = real_speech.recorded_speech(line, pause_s=0.8)
  (hold,) = speech.holds
  assert hold.kind == "pause" and hold.end - hold.start == pytest.approx(0.8)
  assert len(speech.audio) == len(whole) + round(0.8 * SAMPLE_RATE)
  assert not speech.audio[round(hold.start * SAMPLE_RATE):round(hold.end * SAMPLE_RATE)].any()
  first, second = real_audio.split_at_inner_gap(whole, real_speech.SPLIT_QUIET_DB)
  np.testing.assert_array_equal(speech.audio[:len(first)], first)
  np.testing.assert_array_equal(speech.audio[-len(second):], second)
  before = [w for w in speech.words if w.end <= hold.start]
  after = [w for w in speech.words if w.start >= hold.end]
  assert before and after and len(before) + len(after) == len(speech.words)
  assert speech.speech_end <= speech.duration
  # Two sentences, or a line too short for a dip, never take a pause.
  lines = real_speech.recorded_lines(dub_root)
  assert real_speech.recorded_speech(lines[1], pause_s=0.8) is None
  assert real_speech.recorded_speech(lines[2], pause_s=0.8) is None


def _config(root, p):
  return tasks.TaskConfig(recorded_lines=real_speech.recorded_lines(root),
                          recorded_speech_probability=p)


def test_offline_transcription_of_a_recorded_line(dub_root, speech, sounds):
  config = _config(dub_root, 1.0)
  texts = {line.text for line in config.recorded_lines}
  for seed in range(4):
    timeline = tasks.build("offline_asr", seed, speech, sounds, config)
    timeline.validate()
    (utterance,) = timeline.utterances
    (reply,) = timeline.replies
    assert utterance.voice.startswith("fillets-ng-data-cs:")
    assert reply.text in texts and reply.text == utterance.text


def test_a_recorded_question_with_a_pause_is_answered_at_its_end(dub_root, speech, sounds):
  config = _config(dub_root, 1.0)
  for seed in range(4):
    timeline = tasks.build("chat_mid_pause", seed, speech, sounds, config)
    timeline.validate()
    (utterance,) = timeline.utterances
    (hold,) = utterance.holds
    (reply,) = timeline.replies
    assert utterance.voice == "fillets-ng-data-cs:font_small"
    assert reply.text == real_speech.NOT_UNDERSTOOD
    assert reply.ready_time == utterance.speech_end > hold.end
    assert any(q.start == hold.start and q.end == hold.end for q in timeline.quiet)
    # The stream format says SILENT through the pause and SPEAK after the turn.
    chunk = 2560
    schedule = timeline_lib.schedule(timeline, [3], chunk_samples=chunk, tokens_per_chunk=4)
    (plan,) = schedule.plans
    first_speak = plan.chunks[0]
    assert (first_speak + 1) * chunk >= utterance.speech_end * SAMPLE_RATE > first_speak * chunk
    pause_chunks = range(int(hold.start * SAMPLE_RATE) // chunk + 1, int(hold.end * SAMPLE_RATE) // chunk)
    assert pause_chunks and all(schedule.decisions[i] == 0 for i in pause_chunks)


def test_probability_zero_or_no_lines_leave_timelines_unchanged(dub_root, speech, sounds):
  plain = tasks.TaskConfig()
  for config in (_config(dub_root, 0.0), tasks.TaskConfig(recorded_speech_probability=1.0)):
    for name in ("offline_asr", "chat_mid_pause"):
      for seed in range(2):
        a = tasks.build(name, seed, speech, sounds, plain)
        b = tasks.build(name, seed, speech, sounds, config)
        assert a.replies == b.replies
        assert [u.words for u in a.utterances] == [u.words for u in b.utterances]


def test_only_the_train_split_gets_recorded_speech(dub_root):
  from audio_interaction import config_lib
  randomize = {**config_lib.base_config().data.randomize.to_dict(), "enabled": True,
               "train_audio_root": str(dub_root), "p_recorded_speech": 0.3}
  got = build.recorded_speech_settings(randomize, "train")
  assert got["recorded_speech_probability"] == 0.3
  assert len(got["recorded_lines"]) == 3
  # The lines get the effects the TTS voices get when asked (off by default).
  assert got["recorded_randomization"] is None
  effects_on = build.recorded_speech_settings({**randomize, "recorded_effects": True}, "train")
  assert effects_on["recorded_randomization"] == build.randomization(randomize)
  assert effects_on["recorded_randomization"].p_telephone == randomize["p_telephone"] > 0
  assert build.recorded_speech_settings(randomize, "eval") == {}
  assert build.recorded_speech_settings({**randomize, "p_recorded_speech": 0.0}, "train") == {}
  assert build.recorded_speech_settings({**randomize, "enabled": False}, "train") == {}


# ------------------------------------------------------------------ English game voices

HEDGEWARS_VOICES = "hedgewars-data/usr/share/games/hedgewars/Data/Sounds/voices"


@pytest.fixture
def game_voices(dub_root):
  """Two English packs and a Spanish one; labels as `label-train-speech` writes them."""
  for i, (pack, name) in enumerate((("Pirate", "Traitor"), ("Pirate", "Ow1"),
                                    ("British", "Hello"), ("British", "Laugh"),
                                    ("British", "Unsure"), ("Default_es", "Hello"))):
    folder = dub_root / HEDGEWARS_VOICES / pack
    folder.mkdir(parents=True, exist_ok=True)
    sf.write(str(folder / f"{name}.ogg"), speechlike(10 + i, RATE, 1.0), RATE, format="OGG")
  rows = [("Pirate/Traitor", "You traitorous dog!", -0.29),
          ("Pirate/Ow1", "Aaaah!", -0.2),                 # a shout
          ("British/Hello", "Hello there, old chap.", -0.31),
          ("British/Laugh", "(laughs)", -0.1),            # a described sound
          ("British/Unsure", "Mister grubby jam.", -1.3),  # Whisper unsure
          ("Gone/Missing", "Not under the root.", -0.1)]   # a clip not fetched
  labels = dub_root / "labels.jsonl"
  labels.write_text("\n".join(json.dumps({
      "audio": f"hedgewars-data/hedgewars/Data/Sounds/voices/{clip}.ogg",
      "speaker": f"hedgewars-data:{clip.split('/')[0]}", "language": "en", "text": text,
      "score": score}) for clip, text, score in rows) + "\n")
  return dub_root, labels


def test_only_the_english_packs_are_listed(game_voices):
  root, _ = game_voices
  voices = real_audio.hedgewars_english_voices(root)
  assert [(ref.relpath.rsplit("/", 2)[-2:], speaker) for ref, speaker in voices] == [
      (["British", "Hello.ogg"], "hedgewars-data:British"),
      (["British", "Laugh.ogg"], "hedgewars-data:British"),
      (["British", "Unsure.ogg"], "hedgewars-data:British"),
      (["Pirate", "Ow1.ogg"], "hedgewars-data:Pirate"),
      (["Pirate", "Traitor.ogg"], "hedgewars-data:Pirate")]


def test_usable_label_keeps_confident_words_only():
  assert real_speech.usable_label("You traitorous dog!", -0.3) == "you traitorous dog"
  assert real_speech.usable_label("You traitorous dog!", real_speech.MIN_LABEL_SCORE) == (
      "you traitorous dog")
  assert real_speech.usable_label("You traitorous dog!", real_speech.MIN_LABEL_SCORE - 0.01) is None
  assert real_speech.usable_label("No, no, no way.", 0.0) == "no no no way"
  for text in ("Noooo!", "AAAHH", "[Music]", "(laughs)", "*grunts*", "...", "♪",
               "No, no, no, no!", "well no no no no"):
    assert real_speech.usable_label(text, 0.0) is None, text
  assert real_speech.usable_label(" ".join(["word"] * (real_speech.MAX_WORDS + 1)), 0.0) is None


def test_english_lines_pair_confident_labels_with_their_clips(game_voices):
  root, labels = game_voices
  lines = real_speech.english_lines(root, "hedgewars-en", labels)
  assert [(line.text, line.voice) for line in lines] == [
      ("you traitorous dog", "hedgewars-data:Pirate"),
      ("hello there old chap", "hedgewars-data:British")]
  assert all(line.pause_cut is None for line in lines)  # never a question with a pause
  assert lines[0].audio().dtype == np.float32 and lines[0].audio().size > 0
  with pytest.raises(real_speech.MissingRecordedSpeech, match="fetch-train-audio"):
    real_speech.english_lines(root / "empty", "hedgewars-en", labels)
  with pytest.raises(ValueError, match="not an English source"):
    real_speech.english_lines(root, "fillets-cs", labels)


def test_sources_choose_which_lines(game_voices, monkeypatch):
  root, labels = game_voices
  monkeypatch.setitem(real_speech.ENGLISH_LABELS, "hedgewars-en", labels)
  english = real_speech.recorded_lines(root, ("hedgewars-en",))
  both = real_speech.recorded_lines(root, ("fillets-cs", "hedgewars-en"))
  czech = real_speech.recorded_lines(root)
  assert [line.text for line in both] == [line.text for line in czech + english]
  assert len(english) == 2 and len(czech) == 3
  with pytest.raises(ValueError, match="fillets-cs"):
    real_speech.recorded_lines(root, ("klingon",))


def test_english_lines_are_offline_transcriptions_only(game_voices, monkeypatch, speech, sounds):
  root, labels = game_voices
  monkeypatch.setitem(real_speech.ENGLISH_LABELS, "hedgewars-en", labels)
  config = tasks.TaskConfig(recorded_lines=real_speech.recorded_lines(root, ("hedgewars-en",)),
                            recorded_speech_probability=1.0)
  for seed in range(3):
    timeline = tasks.build("offline_asr", seed, speech, sounds, config)
    (utterance,) = timeline.utterances
    assert utterance.voice.startswith("hedgewars-data:")
    assert timeline.replies[0].text == utterance.text
    # No English line can be the question of a paused turn: it is TTS as without them.
    paused = tasks.build("chat_mid_pause", seed, speech, sounds, config)
    assert real_speech.NOT_UNDERSTOOD not in [r.text for r in paused.replies]


def test_the_shipped_labels_are_rows_of_the_english_packs():
  rows = [json.loads(line)
          for line in real_speech.ENGLISH_LABELS["hedgewars-en"].read_text().splitlines()]
  packs = {row["speaker"].split(":")[1] for row in rows}
  assert packs == set(real_audio.HEDGEWARS_ENGLISH_PACKS)
  assert all(row["language"] == "en" and row["score"] <= 0 for row in rows)
  kept = [real_speech.usable_label(row["text"], row["score"]) for row in rows]
  assert 100 < sum(k is not None for k in kept) < len(rows)


@pytest.fixture
def queen_lines(tmp_path):
  """Three lines of the game in its archive, and their labels: one sentence with an
  inner dip, two sentences, and one Whisper was unsure of."""
  from fake_recordings import mp3_bytes, queen_archive_file
  from audio_interaction.corpus import queen_archive
  root = tmp_path / "extracted"
  rate = 11025
  names = ("020006J1.SB", "020006P1.SB", "020007J1.SB")
  queen_archive_file(root / queen_archive.PACKAGE / queen_archive.DATA_FILE,
                     [(name, mp3_bytes(speechlike(20 + i, rate, 2.5), rate))
                      for i, name in enumerate(names)])
  labels = tmp_path / "amazon_queen_en.jsonl"
  prefix = "flight-of-the-amazon-queen/scummvm/flight-of-the-amazon-queen/queen.1c/"
  rows = (("Where did you put the map of the jungle?", -0.2),
          ("I lost it. It was here.", -0.2),
          ("Blah blah jungle.", -1.5))
  labels.write_text("\n".join(json.dumps({
      "audio": prefix + name, "speaker": "amazon-queen:joe", "language": "en", "text": text,
      "score": score}) for name, (text, score) in zip(names, rows)) + "\n")
  return root, labels


def test_game_dialogue_lines_are_paused_turns_out_of_scope(queen_lines, monkeypatch, speech,
                                                           sounds):
  root, labels = queen_lines
  lines = real_speech.english_lines(root, "amazon-queen-en", labels)
  assert [line.text for line in lines] == ["where did you put the map of the jungle",
                                           "i lost it it was here"]
  one_sentence, two_sentences = lines
  assert one_sentence.pause_cut is not None and two_sentences.pause_cut is None
  assert one_sentence.reply == two_sentences.reply == real_speech.OUT_OF_SCOPE
  monkeypatch.setitem(real_speech.ENGLISH_LABELS, "amazon-queen-en", labels)
  config = tasks.TaskConfig(recorded_lines=real_speech.recorded_lines(root, ("amazon-queen-en",)),
                            recorded_speech_probability=1.0)
  timeline = tasks.build("chat_mid_pause", 0, speech, sounds, config)
  timeline.validate()
  (utterance,) = timeline.utterances
  assert utterance.voice == "amazon-queen:joe" and utterance.text == one_sentence.text
  (hold,) = utterance.holds
  (reply,) = timeline.replies
  assert reply.text == real_speech.OUT_OF_SCOPE
  assert reply.ready_time == utterance.speech_end > hold.end
  assert any(q.start == hold.start and q.end == hold.end for q in timeline.quiet)


def test_an_unlabelled_source_names_the_command(queen_lines, tmp_path):
  root, _ = queen_lines
  with pytest.raises(real_speech.MissingRecordedSpeech,
                     match="label-train-speech --source amazon-queen-en"):
    real_speech.english_lines(root, "amazon-queen-en", tmp_path / "missing.jsonl")


def test_the_shipped_game_labels_cover_every_line_of_the_archive():
  rows = [json.loads(line)
          for line in real_speech.ENGLISH_LABELS["amazon-queen-en"].read_text().splitlines()]
  assert len(rows) == 6745 and len({row["audio"] for row in rows}) == 6745
  assert all(row["audio"].startswith("flight-of-the-amazon-queen/scummvm/") and
             row["audio"].endswith(".SB") and row["speaker"].startswith("amazon-queen:")
             for row in rows)
  kept = [real_speech.usable_label(row["text"], row["score"]) for row in rows]
  assert 4000 < sum(k is not None for k in kept) < len(rows)


def test_recorded_lines_get_the_tts_voices_effects(dub_root):
  from audio_interaction.corpus import effects
  line = real_speech.recorded_lines(dub_root)[0]
  plain = real_speech.recorded_speech(line, pause_s=0.8)
  # All effects off: the line as recorded, whatever the rng.
  off = effects.Randomization(**{f"p_{k}": 0.0 for k in (
      "speed", "pitch", "formant", "telephone", "room", "mic", "noise")})
  same = real_speech.recorded_speech(line, pause_s=0.8, randomization=off,
                                     rng=np.random.default_rng(1))
  np.testing.assert_array_equal(same.audio, plain.audio)
  # Only a speed change: every time scales by 1 / rate, the length with it.
  speed = dataclasses.replace(off, p_speed=1.0)
  fast = real_speech.recorded_speech(line, pause_s=0.8, randomization=speed,
                                     rng=np.random.default_rng(3))
  rate = len(plain.audio) / len(fast.audio)
  assert rate != pytest.approx(1.0, abs=0.01)
  (hold,), (fast_hold,) = plain.holds, fast.holds
  assert fast_hold.start == pytest.approx(hold.start / rate, rel=0.01)
  assert fast_hold.end == pytest.approx(hold.end / rate, rel=0.01)
  assert [w.text for w in fast.words] == [w.text for w in plain.words]
  assert fast.words[0].end == pytest.approx(plain.words[0].end / rate, rel=0.01)
  assert fast.words[-1].end <= len(fast.audio) / SAMPLE_RATE
  # Everything on: different audio, same for the same seed, the pause no longer digital
  # silence (the room's tail or the noise reaches into it).
  full = effects.Randomization(**{f"p_{k}": 1.0 for k in (
      "speed", "pitch", "formant", "telephone", "room", "mic", "noise")})
  a, b = (real_speech.recorded_speech(line, pause_s=0.8, randomization=full,
                                      rng=np.random.default_rng(5)) for _ in range(2))
  np.testing.assert_array_equal(a.audio, b.audio)
  (h,) = a.holds
  assert a.audio[round(h.start * SAMPLE_RATE) + 10:round(h.end * SAMPLE_RATE) - 10].any()
  with pytest.raises(ValueError, match="needs an rng"):
    real_speech.recorded_speech(line, randomization=full)


def test_an_undecodable_game_line_is_skipped_by_name(tmp_path, caplog):
  # One line's MP3 is broken in the archive: that line is left out and named, the
  # others are kept.
  import logging
  from fake_recordings import mp3_bytes, queen_archive_file
  from audio_interaction.corpus import queen_archive
  root = tmp_path / "extracted"
  queen_archive_file(root / queen_archive.PACKAGE / queen_archive.DATA_FILE,
                     [("020006J1.SB", mp3_bytes(speechlike(30, 11025, 2.5), 11025)),
                      ("020006P1.SB", b"\xff\xe3 not an mp3 frame at all" * 20)])
  prefix = "flight-of-the-amazon-queen/scummvm/flight-of-the-amazon-queen/queen.1c/"
  labels = tmp_path / "labels.jsonl"
  labels.write_text("".join(json.dumps({
      "audio": prefix + name, "speaker": "amazon-queen:joe", "language": "en",
      "text": "Where did you put the map of the jungle?", "score": -0.1}) + "\n"
      for name in ("020006J1.SB", "020006P1.SB")))
  with caplog.at_level(logging.WARNING, logger=real_speech.__name__):
    lines = real_speech.english_lines(root, "amazon-queen-en", labels)
  assert [line.ref.member for line in lines] == ["020006J1.SB"]
  assert "skipped 1 undecodable" in caplog.text and "020006P1.SB" in caplog.text
