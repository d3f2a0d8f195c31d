"""Small configs and stream-format sequences shared by the model tests."""

from __future__ import annotations

import numpy as np

from audio_interaction import config_lib
from audio_interaction import stream_format as sf

TINY = str(config_lib.experiments_dir() / "tiny.py")


def small_config(block: str = "transformer", **overrides):
  """The tiny config shrunk so equivalence tests compile fast; windows kept short on purpose."""
  settings = {
      "model.encoder.num_layers": 2,
      "model.encoder.left_chunks": 2,
      "model.encoder.block": block,
      "model.decoder.num_layers": 2,
      "model.decoder.window": 24,
      "model.decoder.vocab_size": 64,
  }
  settings.update(overrides)
  return config_lib.load_config(TINY, [f"{k}={v}" for k, v in settings.items()])


# Overrides of the architecture options that pretrained checkpoints need (Whisper's
# audio tower, Qwen2's decoder); `max_positions` is short so that streams outlive it.
WHISPER_ENCODER = {
    "model.encoder.stem": "'whisper'", "model.encoder.subsampling": 2,
    "model.encoder.norm": "'layer'", "model.encoder.mlp": "'gelu'",
    "model.encoder.bias": True, "model.encoder.positions": "'learned'",
    "model.encoder.max_positions": 20, "model.encoder.norm_eps": 1e-5,
}


def small_whisper_config(transformers, num_mel_bins: int = 80):
  """A `transformers.WhisperConfig` small enough to build and convert in a test (the
  module is passed in: transformers is an optional dependency)."""
  return transformers.WhisperConfig(
      num_mel_bins=num_mel_bins, d_model=64, encoder_layers=2, encoder_attention_heads=4,
      encoder_ffn_dim=96, decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=32,
      max_source_positions=16, vocab_size=64, max_target_positions=16, pad_token_id=0,
      bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)


QWEN2_DECODER = {"model.decoder.qkv_bias": True, "model.decoder.tie_embeddings": True}


def perturbed(params, seed: int, scale: float = 0.05):
  """`params` plus Gaussian noise on every leaf, so zero-initialised biases take part."""
  import jax  # pylint: disable=import-outside-toplevel
  leaves, treedef = jax.tree_util.tree_flatten(params)
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_unflatten(
      treedef, [x + scale * rng.standard_normal(x.shape).astype(x.dtype) for x in leaves])


def online_sequence(rng: np.random.Generator, num_chunks: int, slots_per_chunk: int,
                    tokens_per_chunk: int, vocab_size: int, prompt_length: int = 5):
  """A random sequence in the online layout.

  Returns:
    (tokens [L], audio_slot_index [L], prompt length incl. specials, per-chunk lists
    of reply tokens).
  """
  prompt = sf.online_prompt(rng.integers(sf.NUM_SPECIAL_TOKENS, vocab_size, prompt_length))
  tokens, slots = list(prompt), [sf.NO_INDEX] * len(prompt)
  replies = []
  for chunk in range(num_chunks):
    tokens += [sf.AUDIO_ID] + [sf.AUDIO_SLOT_ID] * slots_per_chunk + [sf.DECIDE_ID]
    slots += [sf.NO_INDEX] + [chunk * slots_per_chunk + j for j in range(slots_per_chunk)]
    slots += [sf.NO_INDEX]
    reply = list(rng.integers(sf.NUM_SPECIAL_TOKENS, vocab_size,
                              rng.integers(0, tokens_per_chunk + 1)))
    tokens += reply
    slots += [sf.NO_INDEX] * len(reply)
    replies.append(reply)
  return np.array(tokens, np.int32), np.array(slots, np.int32), len(prompt), replies


def random_splits(rng: np.random.Generator, total: int, max_piece: int) -> list[int]:
  """Random positive piece lengths summing to `total`."""
  pieces = []
  while total > 0:
    pieces.append(int(rng.integers(1, min(max_piece, total) + 1)))
    total -= pieces[-1]
  return pieces


def sound_head_model(seed: int, vocab_size: int = 64):
  """(model, params): `small_config` with a sound-event head over every class of
  `worlds.SOUND_EVENT_LABELS`."""
  import jax  # pylint: disable=import-outside-toplevel
  from audio_interaction.corpus import worlds  # pylint: disable=import-outside-toplevel
  from audio_interaction.model.model import AudioInteractionModel  # pylint: disable=import-outside-toplevel
  model = AudioInteractionModel(small_config(**{
      "model.decoder.vocab_size": vocab_size,
      "model.sound_event_classes": len(worlds.SOUND_EVENT_LABELS)}))
  return model, model.init(jax.random.key(seed))


def hearing_bundle(directory, class_id: int, seed: int = 4, **overrides):
  """(bundle path, model, params, config): `small_config` (byte tokenizer, a sound-event
  head over every class, `overrides`) whose head hears `class_id` in every chunk, saved
  as a bundle in `directory`."""
  # pylint: disable=import-outside-toplevel
  import jax
  from audio_interaction.corpus import worlds
  from audio_interaction.data.tokenizer import ByteTokenizer
  from audio_interaction.export import portable
  from audio_interaction.model.model import AudioInteractionModel
  tokenizer = ByteTokenizer()
  config = small_config(**{"model.decoder.vocab_size": tokenizer.vocab_size,
                           "model.sound_event_classes": len(worlds.SOUND_EVENT_LABELS),
                           **overrides})
  model = AudioInteractionModel(config)
  params = hearing(model.init(jax.random.key(seed)), class_id)
  return portable.save_bundle(directory, params, tokenizer, config), model, params, config


def event_manifest(directory, audio, label: str, instruction: str | None = None):
  """A one-row events manifest in `directory` (its audio written beside it as
  `<label>.wav`, 16 kHz): `label` over the whole clip, with `instruction` if given."""
  # pylint: disable=import-outside-toplevel
  import json
  import soundfile
  soundfile.write(directory / f"{label}.wav", np.asarray(audio, np.float32), sf.SAMPLE_RATE)
  row = {"audio": f"{label}.wav", "events": [
      {"onset": 0.0, "offset": len(audio) / sf.SAMPLE_RATE, "class": label, "role": "alert"}]}
  if instruction is not None:
    row["instruction"] = instruction
  path = directory / f"{label}.jsonl"
  path.write_text(json.dumps(row) + "\n")
  return path


def class_probabilities(rows: list[dict[int, float]]):
  """[len(rows), K] sound-event head probabilities over `worlds.SOUND_EVENT_LABELS`, zero
  but for each row's {class id: probability}."""
  from audio_interaction.corpus import worlds  # pylint: disable=import-outside-toplevel
  out = np.zeros((len(rows), len(worlds.SOUND_EVENT_LABELS)))
  for i, row in enumerate(rows):
    for class_id, p in row.items():
      out[i, class_id] = p
  return out


def with_sound_head(params, kernel=None, bias=None):
  """`params` with the sound-event head's kernel [D, K] and bias [K] replaced (None: 0)."""
  head = params["params"]["sound_event_head"]
  new = {"kernel": np.zeros(np.shape(head["kernel"]), np.float32) if kernel is None
         else np.asarray(kernel, np.float32),
         "bias": np.zeros(np.shape(head["bias"]), np.float32) if bias is None
         else np.asarray(bias, np.float32)}
  return {"params": dict(params["params"], sound_event_head=new)}


def hearing(params, class_id: int, logit: float = 30.0):
  """`params` whose sound-event head hears `class_id` in every chunk (its logit
  `logit`, every other 0)."""
  bias = np.zeros(np.shape(params["params"]["sound_event_head"]["bias"]), np.float32)
  bias[class_id] = logit
  return with_sound_head(params, bias=bias)


def added_parameters(before, after) -> list[str]:
  """The key paths of `after`'s parameters that `before` lacks, sorted; every parameter
  of `before` must be in `after`, unchanged (an AssertionError names the first that is not)."""
  import jax  # pylint: disable=import-outside-toplevel
  flat_after = dict(jax.tree_util.tree_leaves_with_path(after))
  for path, value in jax.tree_util.tree_leaves_with_path(before):
    assert path in flat_after, f"{jax.tree_util.keystr(path)} is gone"
    np.testing.assert_array_equal(value, flat_after.pop(path),
                                  err_msg=jax.tree_util.keystr(path))
  return sorted(jax.tree_util.keystr(p) for p in flat_after)


def with_copy_gate(params, bias: float):
  """`params` whose copy head's gate has bias `bias` (large: the replies are copies of
  the instruction's tokens)."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  decoder = params["params"]["decoder"]
  copy = dict(decoder["copy"], gate=dict(decoder["copy"]["gate"], bias=jnp.full((1,), bias)))
  return {"params": dict(params["params"], decoder=dict(decoder, copy=copy))}
