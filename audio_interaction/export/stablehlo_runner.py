"""Runs streams from the files `export/stablehlo.py` writes, without the model code.

It needs jax (to deserialize and call the `jax.export` functions), numpy,
`safetensors` (the weights) and this library's tokenizer and stream-format ids; it
imports nothing of `audio_interaction.model`, `.infer`, `.audio` or flax (the audio
front end is inside the exported `perceive`), so it runs where only the exported
directory and those packages are (tests/test_export_formats.py checks it in a
process that cannot import them).

Example::

  exported = ExportedModel.load("exported/")
  state = exported.start([tokenizer.encode("answer when asked")] * exported.batch)
  state, probs = exported.perceive(state, chunk)           # chunk [B, chunk_samples]
  state, tokens, count = exported.speak(state, probs[:, SPEAK] >= exported.threshold)
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from audio_interaction import stream_format as sf
from audio_interaction.data.tokenizer import Tokenizer
from audio_interaction.export import tensors

MANIFEST_FILE = "manifest.json"  # the names `export/stablehlo.py` writes (it imports this)
FORMAT = "audio_interaction.stablehlo"
FORMAT_VERSION = 1
FUNCTION_SUFFIX = ".jax_exported"
FUNCTIONS = ("init", "feed", "perceive", "speak")

State = list  # the flattened engine state: arrays in the manifest's `state` order


class ExportError(ValueError):
  """An exported directory cannot be run; the message names the file and the fault."""


def _platforms_here() -> tuple[str, ...]:
  """`jax.export` platform names this process's default backend can run."""
  backend = jax.default_backend()
  return ("cuda", "rocm") if backend == "gpu" else (backend,)


@dataclasses.dataclass
class ExportedModel:
  """The exported steps of one model for `batch` rows, ready to call.

  Attributes:
    manifest: the parsed manifest.json.
    params: the weights, a list of device arrays in the manifest's `params` order.
    functions: name -> jitted `Exported.call` (state donated).
    tokenizer: the model's tokenizer.
  """

  directory: pathlib.Path
  manifest: dict[str, Any]
  params: list[jax.Array]
  functions: dict[str, Callable]
  tokenizer: Tokenizer

  @classmethod
  def load(cls, directory: str | pathlib.Path) -> ExportedModel:
    """Reads an exported directory; the weights are checked against the manifest.

    Raises:
      FileNotFoundError: a file is missing (named).
      ExportError: the manifest is not this format, the weights do not fit it (the
        first tensor that differs is named), or the files were not lowered for this
        machine's platform.
    """
    directory = pathlib.Path(directory)
    path = directory / MANIFEST_FILE
    if not path.is_file():
      raise FileNotFoundError(f"{directory} is not an exported model: {MANIFEST_FILE} is missing")
    try:
      manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise ExportError(f"{path}: not JSON ({e})") from None
    if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
      raise ExportError(f"{path}: format {manifest.get('format')!r} version "
                        f"{manifest.get('version')!r}, expected {FORMAT!r} {FORMAT_VERSION}")
    here = _platforms_here()
    if not set(here) & set(manifest["platforms"]):
      raise ExportError(f"{directory} was exported for {', '.join(manifest['platforms'])}; "
                        f"this machine runs {here[0]}: export again with --platforms "
                        f"including {here[0]}")
    try:
      weights, _ = tensors.read_tensors(directory / manifest["weights"])
    except tensors.TensorFileError as e:
      raise ExportError(f"{directory}: {e}") from None
    params = []
    for entry in manifest["params"]:
      name, want = entry["name"], (tuple(entry["shape"]), np.dtype(entry["dtype"]))
      if name not in weights:
        raise ExportError(f"{directory}: {manifest['weights']}: tensor {name!r} is missing")
      got = (weights[name].shape, weights[name].dtype)
      if got != want:
        raise ExportError(f"{directory}: {manifest['weights']}: tensor {name!r} is "
                          f"{got[1]}{list(got[0])}, the functions take {want[1]}{list(want[0])}")
      params.append(jax.device_put(weights[name]))
    functions = {}
    for name in FUNCTIONS:
      file = directory / manifest["functions"][name]["file"]
      if not file.is_file():
        raise FileNotFoundError(f"{directory}: {file.name} is missing")
      try:
        exported = jax.export.deserialize(bytearray(file.read_bytes()))
      except Exception as e:  # pylint: disable=broad-exception-caught  (any flatbuffer fault)
        raise ExportError(f"{directory}: {file.name}: not a serialized jax.export function "
                          f"({type(e).__name__}: {e})") from None
      functions[name] = jax.jit(exported.call, donate_argnums=() if name == "init" else (1,))
    tokenizer = Tokenizer.load(directory / manifest["tokenizer"])
    return cls(directory, manifest, params, functions, tokenizer)

  # ------------------------------------------------------------------ geometry
  @property
  def batch(self) -> int:
    return int(self.manifest["batch"])

  @property
  def chunk_samples(self) -> int:
    return int(self.manifest["chunk_samples"])

  @property
  def tokens_per_chunk(self) -> int:
    return int(self.manifest["tokens_per_chunk"])

  @property
  def threshold(self) -> float:
    """The decision threshold the model was exported with (its `config.infer.threshold`)."""
    return float(self.manifest["threshold"])

  def state_index(self, name: str) -> int:
    """Where the state entry `name` (e.g. "heard", "next_logits") is in the state list."""
    names = [e["name"] for e in self.manifest["state"]]
    if name not in names:
      raise KeyError(f"no state entry {name!r}; the state holds {names}")
    return names.index(name)

  # --------------------------------------------------------------------- steps
  def start(self, instructions: Sequence[Sequence[int]], seed: int = 0) -> State:
    """B fresh streams, each prefilled with `<bos> <online> <sys> instruction </sys>`."""
    state = list(self.functions["init"](np.int32(seed)))
    return self.feed(state, [sf.online_prompt(list(ids)) for ids in instructions])

  def feed(self, state: State, tokens_per_row: Sequence[Sequence[int]]) -> State:
    """Feeds each row its text tokens (ragged; an empty list leaves the row), in pieces of
    the exported prompt width."""
    self._check_rows(len(tokens_per_row), "token lists")
    width = int(self.manifest["prompt_width"])
    longest = max((len(t) for t in tokens_per_row), default=0)
    for begin in range(0, longest, width):
      tokens = np.zeros((self.batch, width), np.int32)
      valid = np.zeros((self.batch, width), bool)
      for row, ids in enumerate(tokens_per_row):
        piece = list(ids)[begin:begin + width]
        tokens[row, :len(piece)], valid[row, :len(piece)] = piece, True
      state = list(self.functions["feed"](self.params, state, tokens, valid))
    return state

  def change_instruction(self, state: State, instructions: Sequence[Sequence[int] | None]
                         ) -> State:
    """Changes the instruction of the rows given one (None: the row keeps its own):
    `<sys> new </sys>` is fed and, for a model with a pinned prefix, the row's pinned
    decoder slots become those of a stream started with the new instruction, as
    `Engine.repin_rows` does."""
    self._check_rows(len(instructions), "instructions")
    changed = np.asarray([ids is not None for ids in instructions])
    state = self.feed(state, [[] if ids is None else sf.instruction_tokens(list(ids))
                              for ids in instructions])
    pinned = self.manifest.get("pinned")
    if not pinned or not changed.any():
      return state
    fresh = self.start([[] if ids is None else list(ids) for ids in instructions])
    for name, axis in pinned["slot_axes"].items():
      index = self.state_index(name)
      slots = [slice(None)] * len(self.manifest["state"][index]["shape"])
      slots[0], slots[axis] = changed, slice(0, int(pinned["prefix"]))
      merged = np.array(state[index])
      merged[tuple(slots)] = np.asarray(fresh[index])[tuple(slots)]
      state[index] = jax.device_put(merged)
    return state

  def perceive(self, state: State, chunk: np.ndarray) -> tuple[State, np.ndarray]:
    """chunk: float32 [B, chunk_samples] -> (state, decision probabilities [B, 2])."""
    chunk = np.asarray(chunk, np.float32)
    if chunk.shape != (self.batch, self.chunk_samples):
      raise ValueError(f"chunk has shape {chunk.shape}, the export takes "
                       f"{(self.batch, self.chunk_samples)}")
    state, probs = self.functions["perceive"](self.params, state, chunk)
    return list(state), np.asarray(probs)

  def speak(self, state: State, active: np.ndarray, limit: np.ndarray | None = None
            ) -> tuple[State, np.ndarray, np.ndarray]:
    """Writes up to `tokens_per_chunk` reply tokens in the `active` [B] rows (at most
    `limit` [B] each), stopping at `<eor>` -> (state, tokens [B, n], count [B])."""
    active = np.asarray(active, bool)
    self._check_rows(active.shape[0], "active flags")
    limit = (np.full(self.batch, self.tokens_per_chunk, np.int32) if limit is None
             else np.asarray(limit, np.int32))
    state, tokens, count = self.functions["speak"](self.params, state, active, limit)
    return list(state), np.asarray(tokens), np.asarray(count)

  def heard(self, state: State) -> np.ndarray:
    """[B, F_c] int32 CTC argmax labels of the last chunk's encoder frames."""
    return np.asarray(state[self.state_index("heard")])

  def _check_rows(self, rows: int, what: str) -> None:
    if rows != self.batch:
      raise ValueError(f"{rows} {what} for an export of batch {self.batch}")


@dataclasses.dataclass
class ChunkResult:
  """One row's outcome at one chunk (the fields of `infer.run_stream.ChunkRecord` that
  the model decides)."""

  speak_probability: float
  spoke: bool
  reply_tokens: list[int]
  heard_labels: list[int]  # raw CTC argmax per encoder frame (not yet collapsed)


def run_streams(exported: ExportedModel, audio: Sequence[np.ndarray],
                instructions: Sequence[Sequence[int]], *, threshold: float | None = None,
                seed: int = 0) -> list[list[ChunkResult]]:
  """Runs B streams chunk by chunk: speak iff P(SPEAK) >= threshold, up to
  `tokens_per_chunk` tokens after each chunk (the stream format's layout).

  Args:
    audio: B float32 [S] arrays of 16 kHz samples; each is zero-padded to the longest,
      in whole chunks.
    instructions: B instruction token id lists.
    threshold: default the exported operating point.
  Returns:
    Per row, one `ChunkResult` per chunk.
  """
  threshold = exported.threshold if threshold is None else threshold
  size = exported.chunk_samples
  length = max(len(a) for a in audio)
  padded = np.zeros((len(audio), -(-length // size) * size), np.float32)
  for row, samples in enumerate(audio):
    padded[row, :len(samples)] = samples
  state = exported.start(instructions, seed)
  results: list[list[ChunkResult]] = [[] for _ in audio]
  speak = sf.Decision.SPEAK
  for begin in range(0, padded.shape[1], size):
    state, probs = exported.perceive(state, padded[:, begin:begin + size])
    heard = exported.heard(state)
    active = probs[:, speak].astype(np.float64) >= threshold  # the stepper's float64 test
    tokens = np.zeros((len(audio), 0), np.int32)
    count = np.zeros(len(audio), np.int32)
    if active.any():  # as the engine's stepper: no call (no PRNG split) when all are silent
      state, tokens, count = exported.speak(state, active)
    for row in range(len(audio)):
      results[row].append(ChunkResult(
          float(probs[row, speak]), bool(active[row]),
          [int(t) for t in tokens[row, :count[row]]] if active[row] else [],
          [int(t) for t in heard[row]]))
  return results
