"""`audio-interaction ask`: the decoder's offline answer about each file, as the engine gives it."""

import json

import jax
import model_testing
import numpy as np
import pytest
import soundfile

from audio_interaction.apps import ask, cli
from audio_interaction.audio.io import AudioError
from audio_interaction.corpus import worlds
from audio_interaction.data.tokenizer import ByteTokenizer
from audio_interaction.export import portable
from audio_interaction.infer.engine import Engine
from audio_interaction.model.model import AudioInteractionModel


def _bundle(directory, **infer):
  """A small random model with a sound-event head, saved with `infer` settings."""
  tokenizer = ByteTokenizer()
  config = model_testing.small_config(**{
      "model.decoder.vocab_size": tokenizer.vocab_size,
      "model.sound_event_classes": len(worlds.SOUND_EVENT_LABELS),
      "infer.max_answer_tokens": 8, **{f"infer.{k}": v for k, v in infer.items()}})
  model = AudioInteractionModel(config)
  params = model_testing.perturbed(model.init(jax.random.key(3)), 7, scale=0.3)
  return portable.save_bundle(directory, params, tokenizer, config), model, params, config


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
  path = tmp_path_factory.mktemp("clips") / "noise.wav"
  audio = (0.2 * np.random.default_rng(0).normal(size=8000)).astype(np.float32)
  soundfile.write(path, audio, 16000)
  return path, audio


def test_an_answer_is_the_engines_with_the_bundles_own_infer_block(clip, tmp_path):
  path, audio = clip
  biased, model, params, config = _bundle(tmp_path / "biased", sound_name_bias=200.0,
                                          sound_name_gate=0.0, sound_name_whole=True)
  plain = _bundle(tmp_path / "plain")[0]
  question = "What sound is this?"
  [result] = ask.ask_files([path], question, biased)
  tokenizer = ByteTokenizer()
  expected = Engine.from_infer(model, config.infer, tokenizer).answer(
      params, audio, tokenizer.encode(question), max_tokens=8)
  assert result == {"file": str(path), "seconds": 0.5, "question": question,
                    "answer": tokenizer.decode(expected)}
  # The same weights without the bundle's name bias answer otherwise: the bundle's
  # `infer` block is what the answer follows.
  assert ask.ask_files([path], question, plain)[0]["answer"] != result["answer"]


def test_the_cli_prints_each_answer_and_writes_json_lines(clip, tmp_path, capsys):
  path, _ = clip
  bundle = _bundle(tmp_path / "b")[0]
  out = tmp_path / "answers.jsonl"
  assert cli.main(["ask", str(path), str(path), "--checkpoint", str(bundle), "--question",
                   "How many times did it ring?", "--json", str(out)]) == 0
  rows = [json.loads(line) for line in out.read_text().splitlines()]
  assert [r["question"] for r in rows] == ["How many times did it ring?"] * 2
  assert rows[0]["answer"] == rows[1]["answer"]  # one file twice: the same answer
  printed = capsys.readouterr().out.splitlines()
  assert printed[-2] == f"{path} (0.5 s): {rows[0]['answer']}"


def test_bad_input_is_named_before_any_model_work(clip, tmp_path, capsys):
  path, _ = clip
  with pytest.raises(AudioError, match="missing.wav: audio file not found"):
    ask.ask_files([path, tmp_path / "missing.wav"], bundle=tmp_path / "no bundle here")
  assert cli.main(["ask", str(path), "--question", "  "]) == 2
  assert "the question is empty" in capsys.readouterr().err


def test_a_question_about_the_clips_sounds_is_answered_by_the_head_when_asked_to(clip, tmp_path):
  path, audio = clip
  tokenizer = ByteTokenizer()
  bundle, model, params, config = model_testing.hearing_bundle(
      tmp_path / "head", worlds.SOUND_EVENT_LABELS.index("doorbell"), seed=3, **{
          "infer.max_answer_tokens": 8, "infer.sound_questions": True,
          "infer.sound_watch_threshold": 0.5, "infer.sound_watch_chunks": 2})
  answers = {q: ask.ask_files([path], q, bundle)[0]["answer"] for q in (
      "What sound is this?", "How many doorbell rings are in the clip?",
      "Is there a dog barking in the clip? Answer yes or no.", "Transcribe the audio.")}
  # Heard in all of the clip's chunks: one doorbell sound, no dog.
  assert answers["What sound is this?"] == "a doorbell"
  assert answers["How many doorbell rings are in the clip?"] == "one"
  assert answers["Is there a dog barking in the clip? Answer yes or no."] == "no"
  # Any other question is the decoder's, as without the setting.
  decoder = Engine.from_infer(model, config.infer, tokenizer).answer(
      params, audio, tokenizer.encode("Transcribe the audio."), max_tokens=8)
  assert answers["Transcribe the audio."] == tokenizer.decode(decoder)
