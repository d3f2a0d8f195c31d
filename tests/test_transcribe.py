"""`audio-interaction transcribe`: the CTC head's transcript of audio files."""

import json

import jax
import numpy as np
import pytest
import soundfile

from audio_interaction.apps import cli, transcribe
from audio_interaction.data.tokenizer import ByteTokenizer
from audio_interaction.export import portable
from audio_interaction.infer.engine import Engine
from audio_interaction.infer.policies import ThresholdPolicy
from audio_interaction.infer.run_stream import run_stream
from audio_interaction.model.clip_encoder import ClipEncoder
from audio_interaction.model.model import AudioInteractionModel
import model_testing


@pytest.fixture(scope="module")
def chatty():
  """A random tiny model whose CTC head writes something on most frames: its kernel
  scaled up, so the argmax follows the audio instead of the blank's bias."""
  tokenizer = ByteTokenizer()
  config = model_testing.small_config(**{"model.decoder.vocab_size": tokenizer.vocab_size})
  model = AudioInteractionModel(config)
  params = model.init(jax.random.key(0))
  head = params["params"]["ctc_head"]
  params["params"]["ctc_head"] = {"kernel": head["kernel"] * 40.0, "bias": head["bias"]}
  size = 3 * model.config.chunk_samples + 700
  noise = 0.1 * np.random.default_rng(0).normal(size=size)
  # A steady tone after the noise: the same label frame after frame, across chunk
  # boundaries, where the live transcript writes it once.
  tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(size) / 16000)
  return config, model, params, tokenizer, np.concatenate([noise, tone]).astype(np.float32)


def test_greedy_words_are_the_live_transcripts(chatty):
  _, model, params, tokenizer, audio = chatty
  logits = ClipEncoder(model, params, output="ctc_logits")(audio)
  words = transcribe.greedy_timed_words(logits, model.config.encoder_frames_per_chunk,
                                        model.config.chunk_seconds, tokenizer.decode)
  trace = run_stream(Engine(model), params, audio, [], ThresholdPolicy(1.1))
  live = trace.heard_words(tokenizer.decode)
  assert len("".join(w for w, _ in words)) >= 2  # the head wrote something to compare
  assert [w for w, _ in words] == [w for w, _ in live]
  assert [t for _, t in words] == pytest.approx([t for _, t in live])


def test_cli_transcribes_files_greedily_and_with_the_lm(chatty, tmp_path, capsys):
  config, _, params, tokenizer, audio = chatty
  bundle = portable.save_bundle(tmp_path / "bundle", params, tokenizer, config)
  wav = tmp_path / "clip.wav"
  soundfile.write(wav, np.repeat(audio[:, None], 2, axis=1), 16000)  # stereo
  out = tmp_path / "words.jsonl"
  assert cli.main(["transcribe", str(wav), "--checkpoint", str(bundle), "--words",
                   "--json", str(out)]) == 0
  printed = capsys.readouterr().out
  (result,) = [json.loads(line) for line in out.read_text().splitlines()]
  assert result["file"] == str(wav) and result["words"]
  assert result["seconds"] == pytest.approx(len(audio) / 16000, abs=1e-3)
  model = AudioInteractionModel(config)
  expected = transcribe.greedy_timed_words(
      ClipEncoder(model, params, output="ctc_logits")(audio),
      model.config.encoder_frames_per_chunk, model.config.chunk_seconds, tokenizer.decode)
  assert [w for w, _ in result["words"]] == [w for w, _ in expected]
  assert [t for _, t in result["words"]] == pytest.approx([t for _, t in expected], abs=1e-3)
  assert f"{wav} ({result['seconds']:.1f} s): {result['text']}" in printed
  assert f"{result['words'][0][1]:7.2f} s  {result['words'][0][0]}" in printed
  assert cli.main(["transcribe", str(wav), "--checkpoint", str(bundle), "--lm"]) == 0
  with_lm = capsys.readouterr().out
  assert with_lm.startswith(f"{wav} (")
  assert cli.main(["transcribe", str(tmp_path / "missing.wav")]) == 2
  assert "missing.wav" in capsys.readouterr().err
  assert cli.main(["transcribe", str(wav), "--config.model.dtype=float32"]) == 2
