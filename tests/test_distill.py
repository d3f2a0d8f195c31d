"""train/distill.py: the chunk-causal student learns the whole-window teacher's features.

A small random Whisper-shaped encoder is written as a transformers checkpoint
(`pretrained.save_whisper_encoder`), then distilled on synthetic clips: the loss is the
hand-computed relative error, it falls, a resumed run equals an uninterrupted one, and
the student comes back through `init.encoder_checkpoint`.
"""

import json

import jax
import numpy as np
import pytest

from audio_interaction import config_lib
from audio_interaction.apps import cli
from audio_interaction.data import storage
from audio_interaction.model import pretrained
from audio_interaction.model.model import AudioInteractionModel
from audio_interaction.train import distill
import model_testing
import synthetic_examples

WINDOW_MS = 1280  # four 320 ms student chunks; the teacher reads them as one


def _config(checkpoint="", **distill_fields):
  overrides = dict(model_testing.WHISPER_ENCODER)
  overrides.update({"audio.chunk_ms": 320, "model.encoder.num_layers": 2,
                    "model.encoder.left_chunks": 1, "model.encoder.max_positions": 64,
                    "model.decoder.num_layers": 1, "model.decoder.vocab_size": 64,
                    "distill.window_ms": WINDOW_MS, "distill.batch_size": 2,
                    "distill.learning_rate": 3e-4, "distill.warmup_steps": 1,
                    "distill.log_every": 1, "distill.checkpoint_every": 2,
                    "distill.steps": 4, "init.encoder_checkpoint": repr(str(checkpoint))})
  overrides.update({f"distill.{k}": v for k, v in distill_fields.items()})
  return config_lib.load_config(model_testing.TINY, [f"{k}={v}" for k, v in overrides.items()])


def _hf_config(config):
  enc = config.model.encoder
  return {"model_type": "whisper", "num_mel_bins": config.audio.n_mels, "d_model": enc.d_model,
          "encoder_layers": enc.num_layers, "encoder_attention_heads": enc.num_heads,
          "encoder_ffn_dim": enc.mlp_dim, "max_source_positions": enc.max_positions,
          "activation_function": "gelu"}


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
  """A random Whisper-shaped encoder saved as a transformers checkpoint."""
  config = _config()
  model = AudioInteractionModel(config)
  params = model_testing.perturbed(jax.tree_util.tree_map(np.asarray, model.init(
      jax.random.key(3))), seed=4)
  for i in range(config.model.encoder.num_layers):  # Whisper has no key bias
    bias = params["params"]["encoder"][f"block{i}"]["attention"]["key_bias"]
    params["params"]["encoder"][f"block{i}"]["attention"]["key_bias"] = np.zeros_like(bias)
  directory = tmp_path_factory.mktemp("teacher")
  pretrained.save_whisper_encoder(directory, params, model.config, _hf_config(config))
  return directory, params


def _clips():
  """Chirps and noise bursts: audio whose features vary over the window."""
  rng = np.random.default_rng(0)
  clips = []
  for i in range(6):
    t = np.arange(int(16000 * rng.uniform(0.3, 1.5))) / 16000
    chirp = np.sin(2 * np.pi * (200 + 400 * i) * t * (1 + t))
    clips.append((chirp + 0.3 * rng.standard_normal(t.size)).astype(np.float32))
  return distill.DistillAudio([("synthetic clips", len(clips), lambda i: clips[i])])


def test_export_then_import_gives_back_the_encoder(teacher_dir):
  directory, params = teacher_dir
  config = pretrained.configure(_config(), encoder_checkpoint=str(directory))
  model = AudioInteractionModel(config)
  imported = pretrained.init_from_pretrained(model, jax.random.key(9),
                                             encoder_checkpoint=str(directory))
  want = jax.tree_util.tree_leaves_with_path(params["params"]["encoder"])
  got = dict(jax.tree_util.tree_leaves_with_path(imported["params"]["encoder"]))
  compared = 0
  for path, value in want:
    if "adapter" in jax.tree_util.keystr(path):
      continue  # not part of a Whisper checkpoint: fresh on import
    np.testing.assert_array_equal(got[path], value, err_msg=jax.tree_util.keystr(path))
    compared += 1
  assert compared >= 2 * 14  # stem, positions, norms and 2 blocks' tensors
  assert json.loads((directory / "config.json").read_text()) == _hf_config(_config())


def test_export_refuses_a_trained_key_bias(teacher_dir):
  _, params = teacher_dir
  config = _config()
  broken = jax.tree_util.tree_map(np.copy, params)
  broken["params"]["encoder"]["block1"]["attention"]["key_bias"] += 0.5
  with pytest.raises(pretrained.CheckpointMismatch, match="block1 has a non-zero key bias"):
    pretrained.export_encoder(broken, AudioInteractionModel(config).config)


def test_relative_error_by_hand():
  teacher = np.array([[[1.0, -1.0], [2.0, 0.0]]], np.float32)  # mean square 1.5
  student = np.array([[[1.0, 0.0], [0.0, 0.0]]], np.float32)  # errors 0, 1, 4, 0
  assert float(distill.relative_error(student, teacher)) == pytest.approx(1.25 / 1.5)
  assert float(distill.relative_error(teacher, teacher)) == 0.0


def test_windows_depend_on_seed_and_step_only():
  audio, samples = _clips(), 16000 * 3
  first = distill.window_batch(audio, 0, 5, 3, samples, p_padded=0.5)
  np.testing.assert_array_equal(first, distill.window_batch(audio, 0, 5, 3, samples, 0.5))
  assert not np.array_equal(first, distill.window_batch(audio, 0, 6, 3, samples, 0.5))
  assert first.shape == (3, samples) and first.dtype == np.float32
  padded = distill.window_batch(audio, 1, 0, 8, samples, p_padded=1.0)
  assert all(np.all(row[-16000:] == 0) for row in padded)  # one clip <= 1.5 s, then silence
  packed = distill.window_batch(audio, 1, 0, 8, samples, p_padded=0.0)
  assert all(np.abs(row[-24000:]).max() > 0 for row in packed)  # to the end, gaps <= 1 s


def test_the_teacher_reads_the_window_as_one_chunk():
  config = _config()
  models = distill.DistillModels.from_config(config)
  assert models.teacher.config.chunk_samples == models.window_samples == 16 * WINDOW_MS
  assert models.student_frames == 4 * models.student.config.frames_per_chunk


def test_distillation_lowers_the_loss_and_resumes_exactly(teacher_dir, tmp_path):
  directory, _ = teacher_dir
  config = _config(directory)
  whole = distill.distill_encoder(config, tmp_path / "whole", audio=_clips(), progress=False)
  assert 0 < whole["final_eval_loss"] < whole["first_eval_loss"]

  halfway = _config(directory, steps=2)
  distill.distill_encoder(halfway, tmp_path / "resumed", audio=_clips(), progress=False)
  resumed = distill.distill_encoder(config, tmp_path / "resumed", audio=_clips(),
                                    progress=False)
  assert resumed["final_eval_loss"] == pytest.approx(whole["final_eval_loss"], rel=1e-5)
  a = pretrained.TensorSource(tmp_path / "whole" / distill.ENCODER_DIR)
  b = pretrained.TensorSource(tmp_path / "resumed" / distill.ENCODER_DIR)
  assert sorted(a) == sorted(b)
  for name in a:
    np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6, err_msg=name)
  teacher = pretrained.TensorSource(directory)
  assert any(not np.allclose(a[name], teacher[name]) for name in a)  # it did learn

  # The student comes back through the config field a user sets.
  student = _config(tmp_path / "whole" / distill.ENCODER_DIR)
  model = AudioInteractionModel(student)
  params = pretrained.init_from_pretrained(model, jax.random.key(0),
                                           encoder_checkpoint=student.init.encoder_checkpoint)
  np.testing.assert_array_equal(params["params"]["encoder"]["final_norm"]["scale"],
                                a["model.encoder.layer_norm.weight"])


def test_a_student_continues_from_another_run_under_the_same_teacher(teacher_dir, tmp_path):
  directory, _ = teacher_dir
  run = lambda config, name: distill.distill_encoder(config, tmp_path / name, audio=_clips(),
                                                     progress=False)
  first = run(_config(directory, steps=2), "first")
  student = repr(first["encoder_dir"])
  # Continued at the same chunk length, the student starts where the first run ended.
  same = run(_config(directory, steps=2, init_student=student), "same")
  assert same["first_eval_loss"] == pytest.approx(first["final_eval_loss"], rel=1e-5)

  # ... and at another chunk length (the frozen adapter's shape depends on it).
  def at_160(config):
    config.audio.chunk_ms, config.model.encoder.left_chunks = 160, 2
    return config
  continued = run(at_160(_config(directory, steps=2, init_student=student)), "continued")
  fresh = run(at_160(_config(directory, steps=2)), "fresh")
  assert continued["first_eval_loss"] != pytest.approx(fresh["first_eval_loss"], rel=1e-3)
  start = pretrained.TensorSource(first["encoder_dir"])
  ended = pretrained.TensorSource(continued["encoder_dir"])
  assert any(not np.allclose(start[name], ended[name]) for name in start)  # it trained on

  narrow = _config(directory)
  narrow.model.encoder.mlp_dim //= 2
  model = AudioInteractionModel(narrow)
  pretrained.save_whisper_encoder(tmp_path / "narrow", model.init(jax.random.key(0)),
                                  model.config, _hf_config(narrow))
  with pytest.raises(pretrained.CheckpointMismatch):
    run(_config(directory, init_student=repr(str(tmp_path / "narrow"))), "mismatch")


def test_no_audio_is_named(tmp_path):
  config = _config(tmp_path)
  with config.unlocked():
    config.data.dir = str(tmp_path / "no_corpus")
    config.data.randomize.train_audio_root = str(tmp_path / "no_packages")
  with pytest.raises(distill.NoDistillAudio, match="build-data.*fetch-train-audio"):
    distill.distill_audio(config)
  off = _config(tmp_path, corpus_streams=False, recorded_speech=False)
  with pytest.raises(distill.NoDistillAudio, match="both off"):
    distill.distill_audio(off)
  with pytest.raises(ValueError, match="needs init.encoder_checkpoint"):
    distill.distill_encoder(_config(""), tmp_path / "w", audio=_clips(), progress=False)


def test_the_corpus_source_reads_the_built_train_split(tmp_path):
  generator = synthetic_examples.SyntheticExamples(chunk_samples=5120)
  storage.build_split(tmp_path / "corpus", "train", 3, generator, 7, shard_size=2,
                      chunk_samples=5120, progress=False)
  config = _config(tmp_path, recorded_speech=False)
  with config.unlocked():
    config.data.dir = str(tmp_path / "corpus")
  audio = distill.distill_audio(config)
  assert audio.describe() == "3 corpus streams"
  source = storage.load_split(tmp_path / "corpus", "train")
  np.testing.assert_array_equal(audio.clip(2), source[2]["audio"])


def test_the_recorded_speech_source_reads_the_configured_sources(tmp_path, monkeypatch):
  from audio_interaction.corpus import real_speech
  asked = []

  class Line:
    def __init__(self, value):
      self.value = value

    def audio(self):
      return np.full(160, self.value, np.float32)

  def recorded_lines(root, sources):
    asked.append((root, sources))
    return (Line(1.0), Line(2.0))

  monkeypatch.setattr(real_speech, "recorded_lines", recorded_lines)
  config = _config(tmp_path, corpus_streams=False)
  with config.unlocked():
    config.data.randomize.train_audio_root = str(tmp_path / "packages")
    config.data.randomize.recorded_speech_sources = ("amazon-queen-en", "hedgewars-en")
  audio = distill.distill_audio(config)
  assert asked == [(str(tmp_path / "packages"), ("amazon-queen-en", "hedgewars-en"))]
  assert audio.describe() == "2 recorded speech lines"
  np.testing.assert_array_equal(audio.clip(1), np.full(160, 2.0, np.float32))


def test_the_cli_names_missing_audio_in_one_line(tmp_path, capsys):
  code = cli.main(["distill-encoder", "--config", model_testing.TINY, "--workdir",
                   str(tmp_path / "w"), f"--config.init.encoder_checkpoint='{tmp_path}'",
                   f"--config.data.dir='{tmp_path / 'none'}'",
                   "--config.distill.recorded_speech=False"])
  err = capsys.readouterr().err
  assert code == 2
  assert err.startswith("audio-interaction distill-encoder: error: no audio to distill on")
  assert "build-data" in err and len(err.strip().splitlines()) == 1
