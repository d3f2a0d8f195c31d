"""The engine's streaming steps serialized with `jax.export` (StableHLO), for a fixed batch.

`export_stablehlo` writes a directory that runs a stream without this library's model
code (`export/stablehlo_runner.py` reads it with jax, numpy and the tokenizer):

* `init.jax_exported`, `feed.jax_exported`, `perceive.jax_exported`,
  `speak.jax_exported`: `Engine.empty_state`, `Engine.feed`, `Engine.perceive` and
  `Engine.speak` (n = `tokens_per_chunk`) as serialized `jax.export.Exported`s, each
  lowered for every platform asked for (one file runs on any of them). The audio
  front end (streaming log-mel) is inside `perceive`: its input is raw samples.
* `model.safetensors`: the float32 params (dotted names, `export/tensors.py`); each
  function takes them as its first argument, a list in the manifest's order, so
  the weights are stored once.
* `manifest.json`: batch, platforms, stream geometry, the operating point, and every
  function's inputs and outputs (shapes, dtypes); the state layout (`state`: one
  entry per array of the flattened `EngineState`, the PRNG key as raw key data).
* `tokenizer/` and `config.json` (the config is for people; the runner does not read it).

Signatures (B = batch, W = prompt_width, S = chunk_samples, n = tokens_per_chunk):
  init(seed int32[]) -> state
  feed(params, state, tokens int32[B, W], valid bool[B, W]) -> state
  perceive(params, state, chunk float32[B, S]) -> (state, probs float32[B, NUM_DECISIONS])
  speak(params, state, active bool[B], limit int32[B]) -> (state, tokens int32[B, n],
                                                           count int32[B])
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np

from audio_interaction import stream_format as sf
from audio_interaction.data.tokenizer import Tokenizer
from audio_interaction.export import portable, tensors
from audio_interaction.export.stablehlo_runner import (FORMAT, FORMAT_VERSION, FUNCTION_SUFFIX,
                                                       FUNCTIONS, MANIFEST_FILE)
from audio_interaction.infer import engine as engine_lib
from audio_interaction.model import layers
from audio_interaction.model.model import AudioInteractionModel, Params

PLATFORMS = ("cpu", "cuda", "rocm", "tpu")  # what `jax.export` lowers for
# The outputs each function returns after the state.
_OUTPUT_NAMES = {"init": (), "feed": (), "perceive": ("probs",), "speak": ("tokens", "count")}


def state_layout(engine: engine_lib.Engine, batch: int
                 ) -> tuple[list[dict], jax.tree_util.PyTreeDef]:
  """The flattened `EngineState` of `batch` rows: [{name, shape, dtype}] and its treedef."""
  abstract = jax.eval_shape(lambda: _raw_key(engine.empty_state(batch)))
  leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract)
  return [{"name": jax.tree_util.keystr(path).lstrip("."), "shape": list(x.shape),
           "dtype": str(x.dtype)} for path, x in leaves], treedef


def _raw_key(state: engine_lib.EngineState) -> engine_lib.EngineState:
  # Typed PRNG keys are not a serializable array type: the files carry the key's data.
  return state.replace(rng=jax.random.key_data(state.rng))


def _typed_key(state: engine_lib.EngineState) -> engine_lib.EngineState:
  return state.replace(rng=jax.random.wrap_key_data(state.rng))


def _spec(entries: Sequence[dict]) -> list[jax.ShapeDtypeStruct]:
  return [jax.ShapeDtypeStruct(tuple(e["shape"]), np.dtype(e["dtype"])) for e in entries]


def _entry(name: str, shape: Sequence[int], dtype) -> dict:
  return {"name": name, "shape": [int(d) for d in shape], "dtype": str(np.dtype(dtype))}


def parse_platforms(text: str | Sequence[str]) -> tuple[str, ...]:
  """"cpu,cuda" -> ("cpu", "cuda"); unknown or repeated names are an error."""
  names = [p.strip() for p in text.split(",")] if isinstance(text, str) else list(text)
  bad = [p for p in names if p not in PLATFORMS]
  if not names or bad or len(set(names)) != len(names):
    raise ValueError(f"platforms {text!r}: give distinct names among {', '.join(PLATFORMS)}")
  return tuple(names)


def export_stablehlo(directory: str | pathlib.Path, model: AudioInteractionModel, params: Params,
                     tokenizer: Tokenizer, config: ml_collections.ConfigDict, *, batch: int = 1,
                     platforms: Sequence[str] = ("cpu",),
                     prompt_width: int = engine_lib.PROMPT_BUCKET,
                     metadata: dict | None = None) -> pathlib.Path:
  """Writes the streaming steps of `model` for `batch` rows (see the module docstring).

  Args:
    params: float32 or int8 (`engine.quantize_params`) params; stored as float32.
    config: the model's full config; its `infer` block gives the sampling (baked into
      `speak`) and the threshold recorded in the manifest.
    platforms: any of `PLATFORMS`; the files run on each (lowering needs no device).
    prompt_width: W, the width `feed` takes (longer prompts are fed in pieces).
  Returns:
    `directory`.
  """
  if batch < 1 or prompt_width < 1:
    raise ValueError(f"batch={batch}, prompt_width={prompt_width}: both must be >= 1")
  platforms = parse_platforms(platforms)
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  params = jax.device_get(engine_lib.params_for(params, "float32"))
  engine = engine_lib.Engine.from_infer(model, config.infer, tokenizer)
  cfg = model.config
  n = cfg.tokens_per_chunk

  names_and_params = tensors.dotted_leaves(params)
  param_entries = [_entry(name, np.shape(x), np.asarray(x).dtype) for name, x in names_and_params]
  state_entries, treedef = state_layout(engine, batch)
  unflat = lambda leaves: _typed_key(jax.tree_util.tree_unflatten(treedef, leaves))
  flat = lambda state: jax.tree_util.tree_leaves(_raw_key(state))
  tree = lambda leaves: tensors.nested_params(dict(zip((e["name"] for e in param_entries),
                                                       leaves)))

  def init(seed):
    return flat(engine.empty_state(batch, seed))

  def feed(params, state, tokens, valid):
    return flat(engine.feed(tree(params), unflat(state), tokens, valid))

  def perceive(params, state, chunk):
    state, probs = engine.perceive(tree(params), unflat(state), chunk)
    return flat(state), probs

  def speak(params, state, active, limit):
    state, tokens, count = engine.speak(tree(params), unflat(state), active, n, limit)
    return flat(state), tokens, count

  inputs = {
      "init": [_entry("seed", (), np.int32)],
      "feed": [_entry("tokens", (batch, prompt_width), np.int32),
               _entry("valid", (batch, prompt_width), bool)],
      "perceive": [_entry("chunk", (batch, cfg.chunk_samples), np.float32)],
      "speak": [_entry("active", (batch,), bool), _entry("limit", (batch,), np.int32)],
  }
  functions = {"init": init, "feed": feed, "perceive": perceive, "speak": speak}
  manifest_functions = {}
  for name in FUNCTIONS:
    fn = functions[name]
    leading = [] if name == "init" else [_spec(param_entries), _spec(state_entries)]
    exported = jax.export.export(jax.jit(fn), platforms=platforms)(
        *leading, *_spec(inputs[name]))
    (directory / (name + FUNCTION_SUFFIX)).write_bytes(exported.serialize())
    extra = exported.out_avals[len(state_entries):]
    manifest_functions[name] = {
        "file": name + FUNCTION_SUFFIX,
        "arguments": ([] if name == "init" else ["params", "state"])
                     + [e["name"] for e in inputs[name]],
        "inputs": inputs[name],
        "outputs": ["state"] + [_entry(o, a.shape, a.dtype) for o, a in
                                zip(_OUTPUT_NAMES[name], extra)],
    }

  tensors.save_tensors(directory / portable.SAFETENSORS_FILE, params)
  tokenizer.save(directory / portable.TOKENIZER_DIR)
  (directory / portable.CONFIG_FILE).write_text(
      config.to_json_best_effort(sort_keys=True, indent=1))
  pinned = cfg.decoder.pinned_prefix
  decoder_slots = {e["name"]: layers.RING_AXIS[e["name"].rsplit("'", 2)[-2]]
                   for e in state_entries if e["name"].startswith("stream.decoder[")}
  manifest = {
      # The decoder cache entries' slot axes, for re-pinning a changed instruction
      # (`ExportedModel.change_instruction`; `Engine.repin_rows`).
      "pinned": {"prefix": pinned, "slot_axes": decoder_slots} if pinned else None,
      "format": FORMAT, "version": FORMAT_VERSION, "jax_version": jax.__version__,
      "batch": batch, "platforms": list(platforms), "prompt_width": prompt_width,
      "chunk_samples": cfg.chunk_samples, "sample_rate": cfg.sample_rate,
      "tokens_per_chunk": n, "vocab_size": cfg.decoder.vocab_size,
      "decisions": [d.name for d in sf.Decision],
      "threshold": float(config.infer.threshold),
      "sampling": {"temperature": engine.sampling.temperature, "top_p": engine.sampling.top_p,
                   "sound_name_bias": engine.sampling.name_bias},
      "weights": portable.SAFETENSORS_FILE, "tokenizer": portable.TOKENIZER_DIR,
      "params": param_entries, "state": state_entries, "functions": manifest_functions,
      "metadata": metadata or {},
  }
  (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))
  return directory

