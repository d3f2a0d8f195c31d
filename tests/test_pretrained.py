"""Importing `transformers` checkpoints: numbers equal the reference models, mismatches are named.

The reference models are built locally from small configs with random weights (no
download), saved with `save_pretrained` (safetensors), imported, and compared in fp32.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audio_interaction import config_lib
from audio_interaction import stream_format as sf
from audio_interaction.model import pretrained
from audio_interaction.model.model import AudioInteractionModel, AudioInteractionNetwork
import model_testing

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# fp32 on both sides; the two sum the same terms in a different order, and our rotary
# angles are exact where torch's are float32 products (~1e-6 rad at these positions).
ATOL = RTOL = 1e-4
N_MELS = 80  # the tiny config's front end


def _randomize(module, seed: int) -> None:
  """Noise on every parameter: zero-initialised biases and unit norms must be imported too."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in module.parameters():
      p.add_(0.05 * torch.randn(p.shape, generator=gen))


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory):
  config = model_testing.small_whisper_config(transformers, N_MELS)
  torch.manual_seed(0)
  model = transformers.WhisperModel(config).eval()  # tensors "encoder.*": a prefix to find
  _randomize(model, seed=0)
  directory = tmp_path_factory.mktemp("whisper")
  model.save_pretrained(directory, safe_serialization=True)
  return directory, model.encoder


def _encoder_model(whisper_directory, **overrides):
  # One 320 ms chunk covers the clip: 32 mel frames, 16 encoder frames, full attention.
  config = config_lib.load_config(model_testing.TINY, ["audio.chunk_ms=320"] + [
      f"{k}={v}" for k, v in overrides.items()])
  return AudioInteractionModel(pretrained.configure(config, encoder_checkpoint=str(
      whisper_directory)))


def test_whisper_encoder_hidden_states_match(whisper_dir):
  directory, reference = whisper_dir
  model = _encoder_model(directory)
  params = pretrained.init_from_pretrained(model, jax.random.key(0),
                                           encoder_checkpoint=str(directory))
  frames = model.config.frames_per_chunk
  rng = np.random.default_rng(0)
  mel = rng.normal(size=(2, frames, N_MELS)).astype(np.float32)
  # Our stem is Whisper's delayed by one frame (it may not look ahead): on clips whose
  # last frame is zero, ours(x) == Whisper([0, x[:-1]]) exactly.
  mel[:, -1] = 0.0
  delayed = np.concatenate([np.zeros_like(mel[:, :1]), mel[:, :-1]], axis=1)
  _, encoded, _, _ = model.network.apply(params, jnp.asarray(mel), None,
                                      method=lambda net, m, s: net.encoder(m, s))
  with torch.no_grad():
    want = reference(torch.from_numpy(delayed).transpose(1, 2)).last_hidden_state.numpy()
  assert encoded.shape == want.shape == (2, frames // 2, 64)
  np.testing.assert_allclose(np.asarray(encoded), want, atol=ATOL, rtol=RTOL)


def test_whisper_import_leaves_adapter_and_ctc_head_fresh(whisper_dir):
  directory, _ = whisper_dir
  model = _encoder_model(directory)
  fresh = model.init(jax.random.key(3))
  imported = pretrained.init_from_pretrained(model, jax.random.key(3),
                                             encoder_checkpoint=str(directory))
  for path in (("encoder", "adapter_in", "kernel"), ("ctc_head", "kernel"),
               ("decoder", "embed", "embedding")):
    a, b = fresh["params"], imported["params"]
    for key in path:
      a, b = a[key], b[key]
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(fresh["params"]["encoder"]["final_norm"]["bias"],
                            imported["params"]["encoder"]["final_norm"]["bias"])


def test_saved_encoder_is_read_by_transformers(whisper_dir, tmp_path):
  """save_whisper_encoder's directory is a real transformers checkpoint: Whisper loads
  every encoder tensor from it and computes the reference encoder's output."""
  directory, reference = whisper_dir
  model = _encoder_model(directory)
  params = pretrained.init_from_pretrained(model, jax.random.key(0),
                                           encoder_checkpoint=str(directory))
  saved = tmp_path / "saved"
  pretrained.save_whisper_encoder(saved, params, model.config,
                                  pretrained.read_checkpoint_config(directory))
  loaded, info = transformers.WhisperModel.from_pretrained(saved, output_loading_info=True)
  assert not [k for k in info["missing_keys"] if k.startswith("encoder.")]
  assert not info["unexpected_keys"]
  mel = torch.from_numpy(np.random.default_rng(1).normal(size=(2, N_MELS, 32)).astype(np.float32))
  with torch.no_grad():
    want = reference(mel).last_hidden_state.numpy()
    got = loaded.eval().encoder(mel).last_hidden_state.numpy()
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_an_interrupted_encoder_save_leaves_the_previous_file(whisper_dir, tmp_path,
                                                              monkeypatch):
  directory, _ = whisper_dir
  model = _encoder_model(directory)
  params = pretrained.init_from_pretrained(model, jax.random.key(0),
                                           encoder_checkpoint=str(directory))
  hf_config = pretrained.read_checkpoint_config(directory)
  pretrained.save_whisper_encoder(tmp_path, params, model.config, hf_config)
  before = (tmp_path / "model.safetensors").read_bytes()

  def killed_midway(tensors, name):
    with open(name, "wb") as f:
      f.write(b"half a file")
    raise KeyboardInterrupt

  monkeypatch.setattr(pretrained.safetensors.numpy, "save_file", killed_midway)
  changed = jax.tree_util.tree_map(np.array, params)
  changed["params"]["encoder"]["final_norm"]["bias"] += 1.0
  with pytest.raises(KeyboardInterrupt):
    pretrained.save_whisper_encoder(tmp_path, changed, model.config, hf_config)
  assert (tmp_path / "model.safetensors").read_bytes() == before
  assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


def _decoder_reference(kind: str, tied: bool, directory):
  common = dict(vocab_size=100, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                rms_norm_eps=1e-6, tie_word_embeddings=tied)
  if kind == "qwen2":
    config, cls = transformers.Qwen2Config(**common), transformers.Qwen2ForCausalLM
  else:
    config, cls = transformers.LlamaConfig(**common), transformers.LlamaForCausalLM
  torch.manual_seed(1)
  model = cls(config).eval()
  _randomize(model, seed=1)
  model.save_pretrained(directory, safe_serialization=True)
  return model


@pytest.mark.parametrize("kind,tied", [("qwen2", True), ("qwen2", False), ("llama", False)])
def test_decoder_logits_match(tmp_path, kind, tied):
  reference = _decoder_reference(kind, tied, tmp_path)
  config = pretrained.configure(
      config_lib.load_config(model_testing.TINY, ["model.decoder.window=64"]),
      decoder_checkpoint=str(tmp_path))
  assert config.model.decoder.vocab_size == 128  # 100 + 12 specials, rounded up
  assert config.model.decoder.tie_embeddings == tied
  model = AudioInteractionModel(config)
  params = pretrained.init_from_pretrained(model, jax.random.key(0),
                                           decoder_checkpoint=str(tmp_path))
  rng = np.random.default_rng(1)
  theirs = rng.integers(0, 100, size=(2, 20))
  ours = theirs + pretrained.checkpoint_token_offset()
  positions = jnp.broadcast_to(jnp.arange(20, dtype=jnp.int32), ours.shape)
  logits, *_ = model.network.apply(
      params, jnp.asarray(ours, jnp.int32), None, positions, jnp.ones(ours.shape, bool), None,
      False, method=AudioInteractionNetwork.decode_step)
  with torch.no_grad():
    want = reference(torch.from_numpy(theirs)).logits.numpy()
  offset = sf.NUM_SPECIAL_TOKENS
  np.testing.assert_allclose(np.asarray(logits[..., offset:offset + 100]), want,
                             atol=ATOL, rtol=RTOL)
  # The special tokens' new rows sit near the pretrained ones, not at our init's scale.
  embedding = np.asarray(params["params"]["decoder"]["embed"]["embedding"])
  pretrained_rows = embedding[offset:offset + 100]
  assert np.abs(embedding[:offset].mean(0) - pretrained_rows.mean(0)).max() < (
      3 * pretrained_rows.std(0).max())


def test_mismatched_checkpoint_names_first_differing_tensor(tmp_path):
  _decoder_reference("qwen2", False, tmp_path)
  config = pretrained.configure(config_lib.load_config(model_testing.TINY),
                                decoder_checkpoint=str(tmp_path))
  config.model.decoder.mlp_dim = 80  # theirs is 96
  model = AudioInteractionModel(config)
  with pytest.raises(pretrained.CheckpointMismatch,
                     match=r"'model\.layers\.0\.mlp\.gate_proj\.weight': expected shape "
                           r"\(80, 64\), got \(96, 64\)"):
    pretrained.init_from_pretrained(model, jax.random.key(0), decoder_checkpoint=str(tmp_path))


def test_non_whisper_encoder_config_is_refused(whisper_dir):
  directory, _ = whisper_dir
  model = AudioInteractionModel(config_lib.load_config(model_testing.TINY))
  with pytest.raises(pretrained.CheckpointMismatch, match="not Whisper-shaped"):
    pretrained.init_from_pretrained(model, jax.random.key(0), encoder_checkpoint=str(directory))


def test_unsupported_decoder_configs_are_named():
  with pytest.raises(pretrained.CheckpointMismatch, match="model_type='gpt2'"):
    pretrained.decoder_overrides({"model_type": "gpt2"})
  with pytest.raises(pretrained.CheckpointMismatch, match="rope_type='llama3'"):
    pretrained.decoder_overrides({
        "model_type": "llama", "hidden_size": 64, "num_attention_heads": 4,
        "vocab_size": 10, "num_hidden_layers": 1, "intermediate_size": 8,
        "rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5}})


def test_trainer_starts_from_the_configured_checkpoint(tmp_path):
  import train_testing  # pylint: disable=import-outside-toplevel
  from audio_interaction.train.trainer import Trainer  # pylint: disable=import-outside-toplevel
  reference = _decoder_reference("qwen2", True, tmp_path)
  config = pretrained.configure(train_testing.train_config(), decoder_checkpoint=str(tmp_path))
  config.init.decoder_checkpoint = str(tmp_path)
  state = Trainer(config).init_state(0)
  np.testing.assert_array_equal(
      np.asarray(state.params["params"]["decoder"]["block1"]["mlp_norm"]["scale"]),
      reference.model.layers[1].post_attention_layernorm.weight.detach().numpy())
  assert int(state.step) == 0
