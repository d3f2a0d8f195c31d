"""Questions about a clip's sounds answered by the sound-event head: the parse of every
question the corpus asks, the answers by hand, and eval answering with it (`ask`:
tests/test_ask.py)."""

import json

import ml_collections
import numpy as np
import pytest

import model_testing
from audio_interaction import stream_format as sf
from audio_interaction.corpus import tasks, worlds
from audio_interaction.infer.clip_questions import (COUNT, NAME, ORDER, PRESENCE, ClipAnswers,
                                                    ClipQuestion, clip_answers,
                                                    parse_clip_question)

LABELS = worlds.SOUND_EVENT_LABELS
DOG, DOORBELL, RAIN = LABELS.index("dog_bark"), LABELS.index("doorbell"), LABELS.index("rain")
STEPS = LABELS.index("footsteps")


def _logits(rows: list[dict[int, float]]) -> np.ndarray:
  """[chunks, K] logits whose softmax is each row's {class: probability}, the rest of
  the mass on "none"."""
  out = np.full((len(rows), len(LABELS)), 1e-6)
  for i, row in enumerate(rows):
    for class_id, p in row.items():
      out[i, class_id] = p
    out[i, sf.NO_SOUND_EVENT] = max(1e-6, 1.0 - sum(row.values()))
  return np.log(out)


@pytest.mark.parametrize("subtask", ["offline_sound_label", "offline_count_events",
                                     "offline_clip_qa"])
def test_every_question_the_corpus_asks_parses_to_what_it_asks(subtask):
  for seed in range(16):
    timeline = tasks.build(subtask, seed, tasks._TextOnlySpeech(), tasks._TextOnlySounds())
    question = parse_clip_question(timeline.instruction)
    assert question is not None, timeline.instruction
    assert question.kind in {"offline_sound_label": {NAME}, "offline_count_events": {COUNT},
                             "offline_clip_qa": {ORDER, PRESENCE}}[subtask], question
    answer = timeline.replies[0].text
    played = [e.label for e in timeline.sounds]
    if question.kind == PRESENCE:
      assert worlds.sound_name(question.label) in timeline.instruction
      assert ("yes" if question.label in played else "no") == answer
    if question.kind == COUNT:
      plays = [e.label for e in timeline.sounds if e.role == "target"]
      assert {question.label} == set(plays) and worlds.number_to_words(len(plays)) == answer
    if question.kind == ORDER:
      assert worlds.sound_name(played[0 if question.which == "first" else -1]) == answer
    if question.kind == NAME:
      assert worlds.sound_name(played[0]) == answer


def test_no_other_instruction_of_the_corpus_is_taken_for_one():
  sound_questions = {"offline_sound_label", "offline_count_events", "offline_clip_qa"}
  for subtask in tasks.SUBTASKS:
    for seed in range(4):
      timeline = tasks.build(subtask, seed, tasks._TextOnlySpeech(), tasks._TextOnlySounds())
      parsed = parse_clip_question(timeline.instruction) is not None
      assert parsed == (subtask in sound_questions), (subtask, timeline.instruction)


def test_what_is_not_a_question_about_the_clip_sounds_parses_to_nothing():
  assert parse_clip_question("Transcribe the audio.") is None
  assert parse_clip_question("How many dogs or cats are in the clip?") is None  # two
  assert parse_clip_question("Is there a trumpet in the clip?") is None  # not ours
  assert parse_clip_question("What is five plus four?") is None
  assert parse_clip_question("Name the sound.") == ClipQuestion(NAME)
  assert parse_clip_question("Do you hear the doorbell?") == ClipQuestion(PRESENCE, "doorbell")
  assert parse_clip_question("How many crashes did you hear?") == ClipQuestion(COUNT, "crash")
  assert parse_clip_question("Which sound comes last?") == ClipQuestion(ORDER, which="last")
  # How people ask, beside the corpus's templates.
  for question in ("What's that noise?", "What was that?", "What can you hear?"):
    assert parse_clip_question(question) == ClipQuestion(NAME), question
  for question, asked in (("How many times did the doorbell ring?", (COUNT, "doorbell")),
                          ("How many times did the dog bark?", (COUNT, "dog_bark")),
                          ("Did the dog bark?", (PRESENCE, "dog_bark")),
                          ("Is the phone ringing?", (PRESENCE, "phone_ring")),
                          ("Was there a crash?", (PRESENCE, "crash")),
                          ("Did you hear footsteps?", (PRESENCE, "footsteps"))):
    assert parse_clip_question(question) == ClipQuestion(*asked), question
  for question in ("Is it raining in London?", "Is five plus four nine?",
                   "Is there speech in the clip?", "How many people are speaking?",
                   "What sound is this? Then transcribe it."):
    assert parse_clip_question(question) is None, question


def test_answers_from_the_head_name_count_and_order_its_sounds():
  answers = ClipAnswers(threshold=0.5, chunks=2, gap_chunks=1)
  ring, bark = {DOORBELL: 0.9}, {DOG: 0.8}
  # A ring, a bark, a one-chunk ring (too short to begin a sound), a ring, a faint dog.
  logits = _logits([ring, ring, {}, bark, bark, bark, {}, ring, {}, ring, ring, {DOG: 0.4}])
  assert answers.answer(ClipQuestion(NAME), logits) == "a doorbell"  # the highest mean
  assert answers.answer(ClipQuestion(COUNT, "doorbell"), logits) == "two"
  assert answers.answer(ClipQuestion(COUNT, "dog_bark"), logits) == "one"
  assert answers.answer(ClipQuestion(COUNT, "rain"), logits) == "zero"
  assert answers.answer(ClipQuestion(PRESENCE, "dog_bark"), logits) == "yes"
  assert answers.answer(ClipQuestion(PRESENCE, "rain"), logits) == "no"
  assert answers.answer(ClipQuestion(ORDER, which="first"), logits) == "a doorbell"
  assert answers.answer(ClipQuestion(ORDER, which="last"), logits) == "a doorbell"
  assert answers.answer(ClipQuestion(ORDER, which="last"), logits[:7]) == "a dog barking"
  # Footsteps heard step by step are in the clip, never a sound lasting two chunks.
  steps = _logits([{STEPS: 0.9}, {}, {STEPS: 0.9}, {}])
  assert answers.answer(ClipQuestion(PRESENCE, "footsteps"), steps) == "yes"
  assert answers.answer(ClipQuestion(COUNT, "footsteps"), steps) == "zero"
  # Rings 1 chunk apart are one sound when a sound lasts through 2 chunks unheard.
  rings = _logits([ring, ring, {}, ring, ring])
  assert answers.answer(ClipQuestion(COUNT, "doorbell"), rings) == "two"
  assert ClipAnswers(0.5, 2, 2).answer(ClipQuestion(COUNT, "doorbell"), rings) == "one"
  # No sound lasts: the clip's likeliest class is the best guess of the first.
  assert answers.answer(ClipQuestion(ORDER, which="first"), _logits([{RAIN: 0.6}, {}])) == "rain"


def test_settings_are_checked_and_the_config_block_builds_them():
  with pytest.raises(ValueError, match="threshold"):
    ClipAnswers(threshold=0.0, chunks=2, gap_chunks=1)
  with pytest.raises(ValueError, match="chunks"):
    ClipAnswers(threshold=0.5, chunks=0, gap_chunks=1)
  infer = ml_collections.ConfigDict({"sound_questions": True, "sound_watch_threshold": 0.3,
                                     "sound_watch_chunks": 3, "sound_watch_gap_seconds": 0.3})
  assert clip_answers(infer, chunk_seconds=0.16, sound_event_classes=27) == ClipAnswers(
      0.3, 3, 2)
  with pytest.raises(ValueError, match="has none"):
    clip_answers(infer, chunk_seconds=0.16, sound_event_classes=0)
  infer.sound_watch_threshold = 0.0
  with pytest.raises(ValueError, match="sound_watch_threshold"):
    clip_answers(infer, chunk_seconds=0.16, sound_event_classes=27)
  infer.sound_questions = False
  assert clip_answers(infer, chunk_seconds=0.16, sound_event_classes=27) is None
  assert clip_answers(ml_collections.ConfigDict({}), chunk_seconds=0.16,
                      sound_event_classes=27) is None  # a bundle saved before the key


def test_eval_names_a_recorded_sound_with_the_head_when_the_setting_is_on(tmp_path, capsys,
                                                                         monkeypatch):
  from audio_interaction.apps import cli
  from audio_interaction.infer.sound_naming import SoundNamer
  encoded = []  # the clips the head's encoder read
  logits = SoundNamer.logits
  monkeypatch.setattr(SoundNamer, "logits", lambda self, audio: encoded.append(len(audio))
                      or logits(self, audio))
  bundle = model_testing.hearing_bundle(tmp_path / "bundle", DOORBELL,
                                        **{"infer.max_answer_tokens": 6})[0]
  audio = 0.2 * np.random.default_rng(0).normal(size=sf.SAMPLE_RATE)
  manifest = model_testing.event_manifest(tmp_path, audio, "doorbell")
  answers, passes = {}, []
  for setting in ((), ("--config.infer.sound_questions=True",
                       "--config.infer.sound_watch_threshold=0.5")):
    out = tmp_path / f"eval{len(setting)}"
    assert cli.main(["eval", "--checkpoint", str(bundle), "--manifest", str(manifest),
                     "--suites", "B3", "--sweep", "", "--out", str(out), *setting]) == 0, (
                         capsys.readouterr().err)
    case = json.loads((out / "cases.jsonl").read_text().splitlines()[0])
    assert case["expected"][0]["text"] == "a doorbell"
    answers[setting] = case["systems"]["model"]["answer"]
    # The head's own name of the clip is reported beside it either way (B3's row), from
    # the same encoder pass as the head's answer.
    assert case["systems"]["sound_head"]["answer"] == "a doorbell"
    passes.append(len(encoded))
    encoded.clear()
  # The random decoder says something else; the head's name is the answer when asked for.
  assert answers[()] != "a doorbell" and list(answers.values())[1] == "a doorbell"
  assert passes == [1, 1]
  capsys.readouterr()
  assert cli.main(["eval", "--checkpoint", str(bundle), "--manifest", str(manifest),
                   "--suites", "B3", "--config.infer.sound_questions=True",
                   "--out", str(tmp_path / "bad")]) == 2
  assert "sound_watch_threshold" in capsys.readouterr().err
