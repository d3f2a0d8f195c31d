r"""Base model, ~200M parameters: the size to train on a small accelerator slice.

  audio-interaction smoke --config experiments/base.py
"""

import ml_collections

from audio_interaction import config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the base config; `arg` is a comma-separated list of variant names."""
  variants = config_lib.parse_variants(arg, allowed=("conformer",))
  config = config_lib.base_config()

  encoder = config.model.encoder
  encoder.d_model = 512
  encoder.num_layers = 12
  encoder.num_heads = 8
  encoder.mlp_dim = 2048
  encoder.conv_channels = 256
  encoder.left_chunks = 16
  encoder.block = "conformer" if "conformer" in variants else "transformer"

  decoder = config.model.decoder
  decoder.vocab_size = 16384
  decoder.d_model = 1024
  decoder.num_layers = 12
  decoder.num_heads = 16
  decoder.num_kv_heads = 4
  decoder.head_dim = 64
  decoder.mlp_dim = 4096
  decoder.window = 2048

  config.model.slots_per_chunk = 4
  config.model.tokens_per_chunk = 6
  return config
