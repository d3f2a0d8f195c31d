"""Parameters as a safetensors file with dotted names (the Hugging Face world's layout).

`{"params": {"encoder": {"layers_0": {"attention": {"query": {"kernel": x}}}}}}` is
stored as the tensor `encoder.layers_0.attention.query.kernel` (the Flax collection
`params` is implied). The file's metadata carries a CRC-32 of every tensor's bytes,
so a damaged file names the tensor that differs; files written elsewhere (without
the checksums) load too.

This module needs only numpy, jax's tree utilities and `safetensors`: the StableHLO
runner (`export/stablehlo_runner.py`) reads its weights through it without the
model code.
"""

from __future__ import annotations

import json
import pathlib
import struct
import zlib
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import safetensors
import safetensors.numpy

COLLECTION = "params"  # the Flax collection the dotted names live in
CHECKSUMS_KEY = "audio_interaction.crc32"  # metadata: JSON {tensor name: crc32 of its bytes}


class TensorFileError(ValueError):
  """A safetensors file cannot be read as parameters; the message names file and tensor."""


def _key_name(key: Any) -> str:
  name = str(getattr(key, "key", getattr(key, "idx", key)))
  if "." in name or not name:
    raise ValueError(f"parameter key {name!r} cannot be a dotted-name component")
  return name


def dotted_leaves(tree: Mapping[str, Any]) -> list[tuple[str, Any]]:
  """(dotted name, leaf) of a {"params": ...} tree of arrays or shape structs, in tree order."""
  if set(tree) != {COLLECTION}:
    raise ValueError(f"expected a tree {{'{COLLECTION}': ...}}, got keys {sorted(tree)}")
  return [(".".join(_key_name(k) for k in path), leaf)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree[COLLECTION])[0]]


def dotted_tensors(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """{"params": nested dict} -> {"a.b.kernel": host numpy array}, in tree order.

  Raises:
    ValueError: `params` is not a `{"params": ...}` tree, or a key holds a dot.
  """
  return {name: np.asarray(jax.device_get(value)) for name, value in dotted_leaves(params)}


def nested_params(tensors: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """The inverse of `dotted_tensors`: {"a.b.kernel": x} -> {"params": {"a": {"b": {...}}}}."""
  tree: dict[str, Any] = {}
  for name, value in tensors.items():
    *parents, leaf = name.split(".")
    node = tree
    for part in parents:
      node = node.setdefault(part, {})
      if not isinstance(node, dict):
        raise ValueError(f"tensor {name!r}: {part!r} is both a tensor and a prefix")
    node[leaf] = value
  return {COLLECTION: tree}


def _crc(array: np.ndarray) -> int:
  return zlib.crc32(np.ascontiguousarray(array).tobytes())


def save_tensors(path: str | pathlib.Path, params: Mapping[str, Any],
                 metadata: Mapping[str, str] | None = None) -> pathlib.Path:
  """Writes `params` ({"params": ...}) as one safetensors file with per-tensor CRC-32s."""
  path = pathlib.Path(path)
  tensors = dotted_tensors(params)
  meta = {**(metadata or {}),
          CHECKSUMS_KEY: json.dumps({name: _crc(x) for name, x in tensors.items()})}
  path.parent.mkdir(parents=True, exist_ok=True)
  safetensors.numpy.save_file(tensors, path, metadata=meta)
  return path


def _header(path: pathlib.Path) -> dict[str, Any]:
  """The file's JSON header ({name: {dtype, shape, data_offsets}}, "__metadata__")."""
  total = path.stat().st_size
  with path.open("rb") as f:
    head = f.read(8)
    if len(head) < 8:
      raise TensorFileError(f"{path.name}: {total} bytes, not a safetensors file")
    (size,) = struct.unpack("<Q", head)
    raw = f.read(size) if 8 + size <= total else b""
  try:
    header = json.loads(raw) if raw else None
  except (json.JSONDecodeError, UnicodeDecodeError):
    header = None
  if not isinstance(header, dict):
    raise TensorFileError(f"{path.name}: the header is damaged or truncated "
                          "(not a safetensors file?)")
  header["__data_bytes__"] = total - 8 - size
  return header


def _diagnose(path: pathlib.Path, error: Exception) -> TensorFileError:
  """A safetensors read error restated with the first tensor at fault, when one is."""
  header = _header(path)
  data_bytes = header.pop("__data_bytes__")
  header.pop("__metadata__", None)
  for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
    begin, end = info["data_offsets"]
    if end > data_bytes:
      return TensorFileError(
          f"{path.name}: tensor {name!r} needs bytes {begin}..{end} but the file holds "
          f"{data_bytes} data bytes (truncated)")
  return TensorFileError(f"{path.name}: unreadable ({type(error).__name__}: {error})")


def read_tensors(path: str | pathlib.Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """All tensors of a safetensors file and its metadata, checksums verified if present.

  Raises:
    FileNotFoundError: no file at `path`.
    TensorFileError: the file is truncated or damaged; names the first tensor at fault.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"{path} is missing")
  try:
    with safetensors.safe_open(path, framework="numpy") as handle:
      metadata = dict(handle.metadata() or {})
      tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
  except (safetensors.SafetensorError, OSError, ValueError) as e:
    raise _diagnose(path, e) from None
  if CHECKSUMS_KEY in metadata:
    try:
      expected = json.loads(metadata[CHECKSUMS_KEY])
    except json.JSONDecodeError:
      raise TensorFileError(f"{path.name}: metadata {CHECKSUMS_KEY} is not JSON") from None
    # Header order (the file's), so the first damaged tensor is the one named.
    for name in _header(path):
      if name in tensors and name in expected and _crc(tensors[name]) != expected[name]:
        raise TensorFileError(f"{path.name}: tensor {name!r} is damaged (its bytes do not "
                              "match the checksum written with it)")
  return tensors, metadata


def load_params(path: str | pathlib.Path, expected: Any) -> dict[str, Any]:
  """Reads params written by `save_tensors` (or by any tool, same names) and checks them.

  Args:
    expected: the tree the params must fit ({"params": ...} of arrays or
      `jax.ShapeDtypeStruct`s, e.g. `jax.eval_shape(model.init, key)`).
  Returns:
    {"params": nested dict of numpy arrays}, exactly as saved.
  Raises:
    TensorFileError: a tensor is missing, extra, or of another shape or dtype; the
      message names the first one and counts the others.
  """
  path = pathlib.Path(path)
  tensors, _ = read_tensors(path)
  want = {name: (tuple(x.shape), np.dtype(x.dtype)) for name, x in dotted_leaves(expected)}
  problems = []
  for name, (shape, dtype) in want.items():
    if name not in tensors:
      problems.append(f"tensor {name!r} is missing (expected {dtype}{list(shape)})")
    elif (tensors[name].shape, tensors[name].dtype) != (shape, dtype):
      problems.append(f"tensor {name!r} is {tensors[name].dtype}{list(tensors[name].shape)}, "
                      f"expected {dtype}{list(shape)}")
  problems += [f"tensor {name!r} is not a parameter of this config"
               for name in tensors if name not in want]
  if problems:
    raise TensorFileError(f"{path.name} does not fit its config: {problems[0]} "
                          f"({len(problems)} tensor(s) differ)\n  " + "\n  ".join(problems[:20]))
  return nested_params({name: tensors[name] for name in want})
