"""Portable model bundles: params + tokenizer + config in a plain directory.

A bundle needs no Orbax, no mesh and no training state: the params, `tokenizer/` and
`config.json`. The params are either `params.msgpack` (Flax serialization of the
parameter pytree; the default) or `model.safetensors` (dotted tensor names such as
`encoder.layers_0.attention.query.kernel`, `export/tensors.py`), which tools outside
JAX read. It is what the repository ships as its embedded default model and what
`load_bundle` reads for the demo and the live loop, on any device count.
"""

from __future__ import annotations

import json
import pathlib
import shutil
from collections.abc import Callable
from typing import Any

import flax.serialization
import jax
import ml_collections
import numpy as np

from audio_interaction import atomic_file, config_lib
from audio_interaction.data.tokenizer import ByteTokenizer, Tokenizer, UnsafePathError
from audio_interaction.export import tensors
from audio_interaction.infer import engine
from audio_interaction.model.model import AudioInteractionModel, Params, param_mismatches

PARAMS_FILE = "params.msgpack"
SAFETENSORS_FILE = "model.safetensors"
# Bundle formats: where its params live.
PARAMS_FILES = {"msgpack": PARAMS_FILE, "safetensors": SAFETENSORS_FILE}
CONFIG_FILE = "config.json"
# What made the bundle: training step, fitted heads, where its operating point was chosen.
METADATA_FILE = "metadata.json"
TOKENIZER_DIR = "tokenizer"


def save_bundle(directory: str | pathlib.Path, params: Params, tokenizer: Tokenizer,
                config: ml_collections.ConfigDict, metadata: dict | None = None, *,
                weights_format: str = "msgpack") -> pathlib.Path:
  """Writes the bundle (params as numpy on the host, dtypes kept).

  Args:
    weights_format: "msgpack" (`params.msgpack`) or "safetensors" (`model.safetensors`
      with dotted names); `load_bundle` reads either.
  """
  if weights_format not in PARAMS_FILES:
    raise ValueError(f"weights_format={weights_format!r}: must be one of {sorted(PARAMS_FILES)}")
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  stale = directory / PARAMS_FILES["msgpack" if weights_format == "safetensors" else "safetensors"]
  if stale.exists():  # one bundle, one set of params
    stale.unlink()
  # Each file is replaced whole: an interrupted export leaves the previous params.
  if weights_format == "safetensors":
    with atomic_file.replacing(directory / SAFETENSORS_FILE) as tmp:
      tensors.save_tensors(tmp, params)
  else:
    host = jax.tree_util.tree_map(lambda x: np.asarray(jax.device_get(x)), params)
    atomic_file.write_bytes(directory / PARAMS_FILE, flax.serialization.msgpack_serialize(host))
  atomic_file.write_text(directory / CONFIG_FILE,
                         config.to_json_best_effort(sort_keys=True, indent=1))
  tokenizer.save(directory / TOKENIZER_DIR)
  if metadata is not None:
    atomic_file.write_text(directory / METADATA_FILE,
                           json.dumps(metadata, indent=1, sort_keys=True))
  return directory


class BundleError(ValueError):
  """A model bundle cannot be loaded; the message names the bundle, the file and the fault."""


def load_bundle(directory: str | pathlib.Path
                ) -> tuple[ml_collections.ConfigDict, Params, Tokenizer]:
  """Reads a bundle; the params are checked against the shapes its config implies.

  A config.json without the `infer` block (bundles saved before it existed) gets its
  defaults.

  Raises:
    FileNotFoundError: a file of the bundle is missing (named).
    BundleError: a file is damaged or does not fit the others (named, with the fault:
      "params.msgpack: truncated or not a msgpack file", "config.json: model.decoder.
      window=0: must be ...", the first parameter whose shape differs, ...).
  """
  directory = resolve_bundle(directory)
  params_file = bundle_params_file(directory)
  for name in (params_file.name if params_file else PARAMS_FILE, CONFIG_FILE, TOKENIZER_DIR):
    if not (directory / name).exists():
      raise FileNotFoundError(f"{directory} is not a model bundle: {name} is missing")
  try:
    values = json.loads((directory / CONFIG_FILE).read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise BundleError(f"bundle {directory}: {CONFIG_FILE}: not JSON ({e})") from None
  try:
    config = config_lib.from_dict(values)
  except config_lib.ConfigError as e:
    raise BundleError(f"bundle {directory}: {CONFIG_FILE}: {e}") from None
  expected = jax.eval_shape(AudioInteractionModel(config).init, jax.random.key(0))
  if params_file.name == SAFETENSORS_FILE:
    try:
      params = tensors.load_params(params_file, expected)
    except tensors.TensorFileError as e:
      raise BundleError(f"bundle {directory}: {e}") from None
    return config, params, _load_tokenizer(directory)
  try:
    params = flax.serialization.msgpack_restore((directory / PARAMS_FILE).read_bytes())
  except Exception as e:  # pylint: disable=broad-exception-caught  (any msgpack fault)
    raise BundleError(f"bundle {directory}: {PARAMS_FILE}: truncated or not a msgpack file "
                      f"({type(e).__name__}: {e})") from None
  if not isinstance(params, dict):
    raise BundleError(f"bundle {directory}: {PARAMS_FILE}: holds a {type(params).__name__}, "
                      "not a parameter tree")
  problems = param_mismatches(expected, params, given="bundle", extra="in the bundle only")
  if problems:
    raise BundleError(
        f"bundle {directory}: {PARAMS_FILE} does not match its {CONFIG_FILE}: first "
        f"{problems[0]} ({len(problems)} parameter(s) differ; a bundle of another config?)"
        "\n  " + "\n  ".join(problems[:20]))
  return config, params, _load_tokenizer(directory)


def bundle_params_file(directory: str | pathlib.Path) -> pathlib.Path | None:
  """The params file of the bundle in `directory` (either format), or None.

  Raises:
    BundleError: the directory holds both formats (which one is meant?).
  """
  directory = resolve_bundle(directory)
  found = [directory / name for name in PARAMS_FILES.values() if (directory / name).is_file()]
  if len(found) > 1:
    raise BundleError(f"bundle {directory}: holds both {PARAMS_FILE} and {SAFETENSORS_FILE}; "
                      "remove one")
  return found[0] if found else None


def _load_tokenizer(directory: pathlib.Path) -> Tokenizer:
  """The bundle's tokenizer; its faults name the file inside the bundle."""
  meta = pathlib.Path(TOKENIZER_DIR, "tokenizer.json")
  if not (directory / meta).is_file():
    raise FileNotFoundError(f"bundle {directory}: {meta.as_posix()} is missing")
  try:
    return Tokenizer.load(directory / TOKENIZER_DIR)
  except UnsafePathError as e:
    raise BundleError(f"bundle {directory}: {meta.as_posix()}: {e.what} {e.name!r} {e.reason}; "
                      f"it must name a file inside {TOKENIZER_DIR}/") from None
  except FileNotFoundError as e:
    missing = pathlib.Path(e.filename or "?")
    try:
      missing = missing.resolve().relative_to(directory.resolve())
    except ValueError:
      pass
    raise FileNotFoundError(f"bundle {directory}: {missing.as_posix()} is missing "
                            f"(named by {meta.as_posix()})") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise BundleError(f"bundle {directory}: {meta.as_posix()}: not JSON ({e})") from None
  except (KeyError, TypeError, ValueError) as e:
    detail = f"no field {e}" if isinstance(e, KeyError) else str(e)
    raise BundleError(f"bundle {directory}: {meta.as_posix()}: {detail}") from None


_ASSETS = pathlib.Path(__file__).resolve().parent.parent / "assets"
# The embedded default model: trained by the command in the README, shipped in the repo.
EMBEDDED_BUNDLE = _ASSETS / "tiny"
# The model for real recordings, also shipped (README, "The real-audio model"): Whisper
# tiny.en's encoder, every task's decoder, fitted turn-end and sound-event heads, and the
# operating point chosen on the real DEV set.
REAL_AUDIO_BUNDLE = _ASSETS / "real_audio"
# Names a user may give wherever a bundle directory is asked for.
SHIPPED_BUNDLES = {"embedded": EMBEDDED_BUNDLE, "real-audio": REAL_AUDIO_BUNDLE}


def resolve_bundle(bundle: str | pathlib.Path | None) -> pathlib.Path:
  """The directory of a bundle given by path or by a shipped model's name.

  None is the embedded model; "embedded" and "real-audio" are the shipped ones
  (`SHIPPED_BUNDLES`: a directory of that name is reached as "./real-audio").
  """
  if bundle is None:
    return EMBEDDED_BUNDLE
  if isinstance(bundle, str) and bundle in SHIPPED_BUNDLES:
    return SHIPPED_BUNDLES[bundle]
  return pathlib.Path(bundle)


def load_model(config: ml_collections.ConfigDict | None, bundle: str | pathlib.Path | None = None,
               seed: int = 0) -> tuple[AudioInteractionModel, Params, Tokenizer, str]:
  """The model to demo and a note on where its weights came from.

  A bundle (default: the embedded one) brings its own config; without one, `config`'s
  model is randomly initialised, and the note says so. With `config.infer.weights =
  "int8"` (the bundle's) the dense kernels come quantized (`infer.engine.quantize_params`),
  for the engine, which dequantizes them inside its jitted steps.
  """
  bundle = resolve_bundle(bundle)
  if bundle_params_file(bundle) is not None:
    config, params, tokenizer = load_bundle(bundle)
    # Named relative to the package, or by its directory's name: never a machine's path.
    package, where = EMBEDDED_BUNDLE.parent.parent, bundle.resolve()
    where = (f"the embedded bundle {where.relative_to(package).as_posix()}"
             if where.is_relative_to(package) else f"bundle {where.name}")
    note = f"trained weights from {where}"
    if config.infer.weights == "int8":
      params, note = engine.quantize_params(params), note + ", int8"
    return AudioInteractionModel(config), params, tokenizer, note
  if config is None:
    raise FileNotFoundError(f"no model bundle at {bundle} and no config to initialise one")
  model = AudioInteractionModel(config)
  params = model.init(jax.random.key(seed))
  note = "randomly initialised (untrained) weights"
  if config.infer.weights == "int8":
    params, note = engine.quantize_params(params), note + ", int8"
  return model, params, ByteTokenizer(), note


def bundle_config(bundle: str | pathlib.Path | None = None) -> ml_collections.ConfigDict:
  """The config a bundle was saved with (default: the embedded one), without loading its
  weights; the defaults for a directory with no bundle."""
  path = resolve_bundle(bundle) / CONFIG_FILE
  if not path.exists():
    return config_lib.base_config()
  return config_lib.from_dict(json.loads(path.read_text()))


def bundle_infer_config(bundle: str | pathlib.Path | None = None) -> ml_collections.ConfigDict:
  """The operating point (`config.infer`: policy, threshold, sampling, reply lengths) a
  bundle was saved with (default: the embedded one); the defaults for bundles saved
  before the block existed, or for a directory with no bundle."""
  return bundle_config(bundle).infer


def write_bundle_infer(bundle: str | pathlib.Path, infer: ml_collections.ConfigDict
                       ) -> pathlib.Path:
  """Stores an operating point (`config.infer`) in a bundle's config.json, atomically.

  Only the `infer` block changes: the other files are not touched, and the rest of
  config.json keeps its values (and, in the format `save_bundle` writes, every byte).
  The new file is written beside the old one and renamed over it, so a reader sees the
  old config or the new one, never half of one.

  Raises:
    FileNotFoundError: `bundle` has no config.json.
    BundleError: config.json is not JSON, or the new block does not validate
      (`config_lib.from_dict`: e.g. min_silence_seconds > silence_seconds).
  """
  return update_bundle_config(bundle, lambda values: values.update(infer=infer.to_dict()),
                              "the new infer block")


def update_bundle_config(bundle: str | pathlib.Path, update: Callable[[dict], Any],
                         what: str, name: str | pathlib.Path | None = None) -> pathlib.Path:
  """Applies `update` to a bundle's config.json values (a dict, changed in place) and
  writes them back atomically if they still validate; `what` names the change and
  `name` (default: `bundle`) the bundle in the error. The weights and other files are
  not touched.

  Raises:
    FileNotFoundError: `bundle` has no config.json.
    BundleError: config.json is not JSON, or the changed config does not validate.
  """
  path = pathlib.Path(bundle) / CONFIG_FILE
  if not path.is_file():
    raise FileNotFoundError(f"{bundle} is not a model bundle: {CONFIG_FILE} is missing")
  try:
    values = json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise BundleError(f"bundle {bundle}: {CONFIG_FILE}: not JSON ({e})") from None
  update(values)
  try:
    config_lib.from_dict(values)
  except config_lib.ConfigError as e:
    raise BundleError(f"bundle {name or bundle}: {what} does not validate: {e}") from None
  # `save_bundle`'s format (ConfigDict.to_json_best_effort(sort_keys=True, indent=1)).
  text = json.dumps(values, indent=1, sort_keys=True)
  return atomic_file.write_text(path, text)


def pin_instruction(bundle: str | pathlib.Path, out: str | pathlib.Path, *,
                    pinned_prefix: int, window: int | None = None) -> dict:
  """Copies a bundle to `out` with its decoder's first `pinned_prefix` positions (the
  instruction) pinned in view (`model.decoder.pinned_prefix`) and, when given, its
  attention window set to `window` (e.g. the length of the rows it was trained on,
  `data.max_len`, so that no query attends at a distance training never showed it).
  The weights are the same: rows no longer than the window never reach a position where
  the masks differ. Records `decoder_window` in the new bundle's metadata.

  Returns:
    The record: {"pinned_prefix", "window", "was": the old pair}.
  Raises:
    FileExistsError: `out` exists and is not empty.
    BundleError: the new decoder settings do not validate (e.g. a prefix that leaves
      the window less than one chunk).
  """
  source, out = resolve_bundle(bundle), pathlib.Path(out)
  if out.exists() and (not out.is_dir() or any(out.iterdir())):
    raise FileExistsError(f"{out} exists and is not an empty folder: give a new one")
  decoder = bundle_config(source).model.decoder
  record = {"pinned_prefix": int(pinned_prefix),
            "window": int(decoder.window if window is None else window),
            "was": {"pinned_prefix": int(decoder.get("pinned_prefix", 0)),
                    "window": int(decoder.window)}}

  def update(values: dict) -> None:
    values["model"]["decoder"].update(pinned_prefix=record["pinned_prefix"],
                                      window=record["window"])

  staging = atomic_file.temporary_name(out)  # a hidden folder beside `out`, then renamed on
  shutil.copytree(source, staging)
  try:
    update_bundle_config(staging, update, "the decoder with the pinned prefix", name=bundle)
    record_in_metadata(staging, "decoder_window", record)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  if out.exists():
    out.rmdir()
  staging.rename(out)
  return record


def record_in_metadata(bundle: str | pathlib.Path, key: str, value: Any) -> pathlib.Path:
  """Sets `metadata[key] = value` in a bundle's metadata.json (created if absent),
  atomically; what made the bundle (its training step, its fitted heads, where its
  operating point was chosen) stays beside it. The other keys are kept.

  Raises:
    FileNotFoundError: `bundle` is not a model bundle (no config.json).
    BundleError: metadata.json is not a JSON object.
  """
  directory = pathlib.Path(bundle)
  if not (directory / CONFIG_FILE).is_file():
    raise FileNotFoundError(f"{bundle} is not a model bundle: {CONFIG_FILE} is missing")
  path = directory / METADATA_FILE
  metadata: Any = {}
  if path.exists():
    try:
      metadata = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise BundleError(f"bundle {bundle}: {METADATA_FILE}: not JSON ({e})") from None
    if not isinstance(metadata, dict):
      raise BundleError(f"bundle {bundle}: {METADATA_FILE}: not a JSON object")
  metadata[key] = value
  return atomic_file.write_text(path, json.dumps(metadata, indent=1, sort_keys=True))

