r"""Pod-scale model, ~1.5B parameters, for TPU/GPU pods.

On this CPU it is only shape-checked and lowered (``jax.eval_shape`` / AOT)::

  audio-interaction smoke --config experiments/pod.py --abstract
"""

import ml_collections

from audio_interaction import config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the pod config; `arg` is a comma-separated list of variant names."""
  variants = config_lib.parse_variants(arg, allowed=("conformer",))
  config = config_lib.base_config()

  encoder = config.model.encoder
  encoder.d_model = 1024
  encoder.num_layers = 24
  encoder.num_heads = 16
  encoder.mlp_dim = 4096
  encoder.conv_channels = 512
  encoder.left_chunks = 16
  encoder.block = "conformer" if "conformer" in variants else "transformer"

  decoder = config.model.decoder
  decoder.vocab_size = 32768
  decoder.d_model = 2048
  decoder.num_layers = 20
  decoder.num_heads = 16
  decoder.num_kv_heads = 8
  decoder.head_dim = 128
  decoder.mlp_dim = 8192
  decoder.window = 4096

  config.model.slots_per_chunk = 4
  config.model.tokens_per_chunk = 8
  config.model.dtype = "bfloat16"
  config.sharding.mesh = {"data": 1, "fsdp": -1, "tensor": 4}
  return config
