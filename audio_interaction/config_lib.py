"""Configs: defaults shared by every experiment, loading ``experiments/*.py`` files, overrides.

Configs are `ml_collections.ConfigDict`s, locked after loading so that a typo in a
field name (in a file or an override) is an error instead of a silent new field.
"""

from __future__ import annotations

import ast
import importlib.util
import pathlib
from collections.abc import Iterable, Sequence

import ml_collections

# Logical axis -> mesh axis. Activations and parameters name logical axes
# (see `audio_interaction.model.layers`); only this table knows about the mesh.
DEFAULT_LOGICAL_AXIS_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("frames", None),
    ("embed", "fsdp"),
    ("act_embed", None),
    ("mlp", "tensor"),
    ("act_mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("act_heads", "tensor"),
    ("head_dim", None),
    ("vocab", "tensor"),
    ("act_vocab", "tensor"),
    ("mel", None),
    ("conv_in", None),
    ("conv_out", "tensor"),
    ("conv_kernel", None),
    ("decisions", None),
    ("cache", None),
)


def base_config() -> ml_collections.ConfigDict:
  """Every field an experiment may set, with defaults. Experiments change values only."""
  config = ml_collections.ConfigDict()

  config.audio = ml_collections.ConfigDict()
  config.audio.sample_rate = 16000
  config.audio.n_mels = 80
  config.audio.n_fft = 400
  config.audio.hop_length = 160
  config.audio.fmin = 0.0
  config.audio.fmax = 8000.0
  # "whisper": log10, clamp to (max - 8), (x + 4) / 4 — with a causal (left-padded)
  # frame alignment so that it can stream. "natural": log(mel + 1e-6).
  config.audio.log_style = "whisper"
  # Whisper clamps relative to the max over the whole clip, which a stream cannot
  # know; streaming uses this fixed floor in log10 units instead.
  config.audio.log_floor = -8.0
  config.audio.chunk_ms = 160

  config.model = ml_collections.ConfigDict()
  encoder = config.model.encoder = ml_collections.ConfigDict()
  encoder.d_model = 128
  encoder.num_layers = 2
  encoder.num_heads = 4
  encoder.mlp_dim = 256
  encoder.conv_channels = 64
  encoder.conv_kernel = 3
  encoder.subsampling = 4  # two stride-2 causal convolutions
  encoder.left_chunks = 4  # chunks of left context each frame attends to
  encoder.block = "transformer"  # or "conformer"
  encoder.conformer_kernel = 7

  decoder = config.model.decoder = ml_collections.ConfigDict()
  decoder.vocab_size = 512
  decoder.d_model = 128
  decoder.num_layers = 2
  decoder.num_heads = 4
  decoder.num_kv_heads = 2
  decoder.head_dim = 32
  decoder.mlp_dim = 256
  decoder.window = 256  # attention window = ring KV-cache size, in positions
  decoder.rope_theta = 10000.0

  config.model.slots_per_chunk = 2
  config.model.tokens_per_chunk = 4
  config.model.dtype = "float32"
  config.model.param_dtype = "float32"
  config.model.norm_eps = 1e-6

  config.sharding = ml_collections.ConfigDict()
  # Mesh axis sizes; -1 takes the remaining devices.
  config.sharding.mesh = {"data": -1, "fsdp": 1, "tensor": 1}
  config.sharding.logical_axis_rules = DEFAULT_LOGICAL_AXIS_RULES

  config.data = ml_collections.ConfigDict()
  config.data.dir = "data/tiny"  # built by `audio-interaction build-data`
  config.data.train_split = "train"
  config.data.eval_split = "eval"
  config.data.batch_size = 8  # rows per batch per process
  config.data.max_len = 384  # positions per row
  config.data.max_chunks = 48  # 160 ms chunks per row (7.7 s)
  config.data.max_transcript = 128  # transcript tokens per row (CTC targets)
  # {ability name: weight}; None reads the split uniformly. Curriculum stages may
  # override it (train.stages).
  config.data.mixture = ml_collections.config_dict.placeholder(dict)
  config.data.packing = False  # the encoder does not mask across packed examples yet
  config.data.overflow = "truncate"
  config.data.read_threads = 2
  config.data.prefetch_batches = 2
  config.data.num_workers = 0

  config.train = ml_collections.ConfigDict()
  config.train.steps = 2000
  config.train.learning_rate = 1e-3
  config.train.warmup_steps = 100
  config.train.end_learning_rate_fraction = 0.05
  config.train.weight_decay = 0.01
  config.train.clip_norm = 1.0
  config.train.grad_accum_steps = 1
  config.train.reply_loss_weight = 1.0
  config.train.decision_loss_weight = 1.0
  # Auxiliary CTC loss of the encoder's frames against the transcript of what is
  # heard: it teaches the encoder words before the decoder needs them. 0 turns it off.
  config.train.ctc_loss_weight = 0.3
  # SPEAK is rare; its cross-entropy term is weighted up by this factor.
  config.train.speak_class_weight = 4.0
  config.train.log_every = 20
  config.train.eval_every = 200
  config.train.eval_batches = 8
  config.train.checkpoint_every = 200
  config.train.keep_checkpoints = 3
  # Curriculum: ((until_step, {ability: weight}), ...); empty = config.data.mixture
  # throughout.
  config.train.stages = ()
  # Peak FLOP/s per device for MFU; 0 measures a matmul at start-up.
  config.train.peak_flops_per_device = 0.0

  # The operating point of inference: saved in bundles and used by default by demo,
  # listen, heldout and eval (each may override it on its command line).
  config.infer = ml_collections.ConfigDict()
  # Who decides when to speak: "model" (P(SPEAK) >= threshold), "silence_timer"
  # (voice activity + `silence_seconds` of silence), or "hybrid" (the model once
  # `min_silence_seconds` of silence have passed, or the timer at `silence_seconds`).
  config.infer.policy = "model"
  config.infer.threshold = 0.5
  config.infer.vad = "silero"  # "silero", "webrtc" or "energy"
  config.infer.silence_seconds = 0.7
  config.infer.min_silence_seconds = 0.2
  # Sampling of reply tokens: temperature 0 is greedy; top_p < 1 is nucleus sampling.
  config.infer.temperature = 0.0
  config.infer.top_p = 1.0
  # The longest reply (tokens, <eor> included) and the longest offline answer.
  config.infer.max_reply_tokens = 64
  config.infer.max_answer_tokens = 96

  config.seed = 0
  return config


def parse_variants(arg: str | None, allowed: Iterable[str]) -> set[str]:
  """Parses the ``file.py:variant1,variant2`` suffix; unknown variants are errors."""
  allowed = set(allowed)
  variants = {part.strip() for part in (arg or "").split(",") if part.strip()}
  unknown = variants - allowed
  if unknown:
    raise ValueError(
        f"unknown config variant(s) {sorted(unknown)}; this config knows {sorted(allowed)}"
    )
  return variants


def _parse_value(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text  # bare strings: --config.model.encoder.block=conformer


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> None:
  """Applies ``"a.b.c=value"`` overrides in place; an unknown field is an error."""
  for override in overrides:
    override = override.removeprefix("--").removeprefix("config.")
    if "=" not in override:
      raise ValueError(f"override {override!r} is not of the form field.path=value")
    path, text = override.split("=", 1)
    *parents, leaf = path.split(".")
    node = config
    for i, name in enumerate(parents):
      if name not in node:
        raise KeyError(f"config has no field {'.'.join(parents[:i + 1])!r} (override {override!r})")
      node = node[name]
    if leaf not in node:
      raise KeyError(
          f"config has no field {path!r} (override {override!r}); "
          f"fields here: {sorted(node.keys())}"
      )
    old = node[leaf]
    value = _parse_value(text)
    if isinstance(old, bool) and not isinstance(value, bool):
      raise TypeError(f"{path} is a bool; got {text!r}")
    if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
      value = float(value)
    if isinstance(old, tuple) and isinstance(value, list):
      value = tuple(value)
    node[leaf] = value


def _check_against_defaults(config: ml_collections.ConfigDict,
                            defaults: ml_collections.ConfigDict, path: str = "") -> None:
  for key in config.keys():
    where = f"{path}{key}"
    if key not in defaults:
      raise KeyError(
          f"config field {where!r} is not a known field (a typo?); "
          f"known here: {sorted(defaults.keys())}"
      )
    if isinstance(config[key], ml_collections.ConfigDict) and isinstance(
        defaults[key], ml_collections.ConfigDict):
      _check_against_defaults(config[key], defaults[key], where + ".")


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks the relations between fields that the model relies on."""
  _check_against_defaults(config, base_config())
  audio, model = config.audio, config.model
  chunk_samples = audio.sample_rate * audio.chunk_ms // 1000
  if audio.sample_rate * audio.chunk_ms % 1000 or chunk_samples % audio.hop_length:
    raise ValueError(
        f"audio.chunk_ms={audio.chunk_ms} must be a whole number of hops "
        f"({audio.hop_length} samples at {audio.sample_rate} Hz)"
    )
  frames = chunk_samples // audio.hop_length
  if frames % model.encoder.subsampling:
    raise ValueError(
        f"a chunk has {frames} frames, not divisible by encoder.subsampling="
        f"{model.encoder.subsampling}"
    )
  encoder_frames = frames // model.encoder.subsampling
  if encoder_frames % model.slots_per_chunk:
    raise ValueError(
        f"a chunk has {encoder_frames} encoder frames, not divisible by "
        f"model.slots_per_chunk={model.slots_per_chunk}"
    )
  if model.encoder.subsampling not in (1, 2, 4, 8):
    raise ValueError(f"encoder.subsampling must be 1, 2, 4 or 8, got {model.encoder.subsampling}")
  if model.encoder.block not in ("transformer", "conformer"):
    raise ValueError(f"encoder.block must be 'transformer' or 'conformer', got {model.encoder.block!r}")
  decoder = model.decoder
  if decoder.num_heads % decoder.num_kv_heads:
    raise ValueError(
        f"decoder.num_heads={decoder.num_heads} must be a multiple of "
        f"decoder.num_kv_heads={decoder.num_kv_heads}"
    )
  if model.encoder.d_model % model.encoder.num_heads:
    raise ValueError("encoder.d_model must be a multiple of encoder.num_heads")
  if audio.log_style not in ("whisper", "natural"):
    raise ValueError(f"audio.log_style must be 'whisper' or 'natural', got {audio.log_style!r}")


def load_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """Loads ``path/to/config.py[:variants]``, applies overrides, validates and locks it."""
  path, _, arg = spec.partition(":")
  file = pathlib.Path(path)
  if not file.is_file():
    raise FileNotFoundError(f"config file {path!r} not found")
  module_spec = importlib.util.spec_from_file_location(f"_config_{file.stem}", file)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  config = module.get_config(arg or None)
  config.lock()
  apply_overrides(config, overrides)
  validate(config)
  return config


def experiments_dir() -> pathlib.Path:
  """The repository's ``experiments/`` folder (configs ship beside the package)."""
  return pathlib.Path(__file__).resolve().parent.parent / "experiments"


def _as_tuples(value):
  """JSON lists back to the nested tuples configs use (e.g. the axis rules)."""
  return tuple(_as_tuples(v) for v in value) if isinstance(value, list) else value


def _assign(node: ml_collections.ConfigDict, values: dict, path: str) -> None:
  for key, value in values.items():
    where = f"{path}{key}"
    if key not in node:
      raise KeyError(f"saved config has field {where!r}, unknown to this version")
    if isinstance(node[key], ml_collections.ConfigDict) and isinstance(value, dict):
      _assign(node[key], value, where + ".")
    else:
      if isinstance(node[key], tuple) and isinstance(value, list):
        value = _as_tuples(value)
      node[key] = value


def from_dict(values: dict) -> ml_collections.ConfigDict:
  """Rebuilds a full config from its JSON dict (as saved in checkpoints and exports)."""
  config = base_config()
  config.lock()
  _assign(config, values, "")
  validate(config)
  return config
