"""Portable model bundles: params + tokenizer + config in a plain directory.

A bundle needs no Orbax, no mesh and no training state: `params.msgpack` (Flax
serialization of the parameter pytree), `tokenizer/` and `config.json`. It is what the
repository ships as its embedded default model and what `load_bundle` reads for the
demo and the live loop, on any device count.
"""

from __future__ import annotations

import json
import pathlib

import flax.serialization
import jax
import ml_collections
import numpy as np

from audio_interaction import config_lib
from audio_interaction.data.tokenizer import ByteTokenizer, Tokenizer
from audio_interaction.model.model import AudioInteractionModel, Params

PARAMS_FILE = "params.msgpack"
CONFIG_FILE = "config.json"
TOKENIZER_DIR = "tokenizer"


def save_bundle(directory: str | pathlib.Path, params: Params, tokenizer: Tokenizer,
                config: ml_collections.ConfigDict, metadata: dict | None = None) -> pathlib.Path:
  """Writes the bundle (params as float32 numpy on the host)."""
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  host = jax.tree_util.tree_map(lambda x: np.asarray(jax.device_get(x)), params)
  (directory / PARAMS_FILE).write_bytes(flax.serialization.msgpack_serialize(host))
  (directory / CONFIG_FILE).write_text(config.to_json_best_effort(sort_keys=True, indent=1))
  tokenizer.save(directory / TOKENIZER_DIR)
  if metadata is not None:
    (directory / "metadata.json").write_text(json.dumps(metadata, indent=1, sort_keys=True))
  return directory


def load_bundle(directory: str | pathlib.Path
                ) -> tuple[ml_collections.ConfigDict, Params, Tokenizer]:
  """Reads a bundle; the params are checked against the shapes its config implies."""
  directory = pathlib.Path(directory)
  for name in (PARAMS_FILE, CONFIG_FILE, TOKENIZER_DIR):
    if not (directory / name).exists():
      raise FileNotFoundError(f"{directory} is not a model bundle: {name} is missing")
  config = config_lib.from_dict(json.loads((directory / CONFIG_FILE).read_text()))
  expected = jax.eval_shape(AudioInteractionModel(config).init, jax.random.key(0))
  params = flax.serialization.msgpack_restore((directory / PARAMS_FILE).read_bytes())
  want = {jax.tree_util.keystr(p): s.shape for p, s in
          jax.tree_util.tree_flatten_with_path(expected)[0]}
  got = {jax.tree_util.keystr(p): np.shape(v) for p, v in
         jax.tree_util.tree_flatten_with_path(params)[0]}
  problems = [f"{k}: bundle {got.get(k)}, config {v}" for k, v in want.items() if got.get(k) != v]
  problems += [f"{k}: in the bundle only" for k in got.keys() - want.keys()]
  if problems:
    raise ValueError(f"bundle {directory} does not match its config:\n  " + "\n  ".join(problems))
  return config, params, Tokenizer.load(directory / TOKENIZER_DIR)


# The embedded default model: trained by the command in the README, shipped in the repo.
EMBEDDED_BUNDLE = pathlib.Path(__file__).resolve().parent.parent / "assets" / "tiny"


def load_model(config: ml_collections.ConfigDict | None, bundle: str | pathlib.Path | None = None,
               seed: int = 0) -> tuple[AudioInteractionModel, Params, Tokenizer, str]:
  """The model to demo and a note on where its weights came from.

  A bundle (default: the embedded one) brings its own config; without one, `config`'s
  model is randomly initialised, and the note says so.
  """
  bundle = pathlib.Path(bundle) if bundle is not None else EMBEDDED_BUNDLE
  if (bundle / PARAMS_FILE).exists():
    config, params, tokenizer = load_bundle(bundle)
    return AudioInteractionModel(config), params, tokenizer, f"trained weights from {bundle}"
  if config is None:
    raise FileNotFoundError(f"no model bundle at {bundle} and no config to initialise one")
  model = AudioInteractionModel(config)
  params = model.init(jax.random.key(seed))
  return model, params, ByteTokenizer(), "randomly initialised (untrained) weights"
