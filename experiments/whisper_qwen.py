r"""A Whisper-base-sized audio tower + a Qwen2.5-0.5B-sized decoder (~0.6B parameters).

The shapes are those of the public checkpoints (Whisper base: 6 layers of 512, 80 mel
bins, a 1500-frame position table; Qwen2.5-0.5B: 24 layers of 896, 14 query and 2
key/value heads of 64, QKV biases, tied embeddings, 151,936 tokens, plus our 12 special
tokens, rounded up to 152,064). To start from the real weights, point the `init`
fields at local `transformers` checkpoint directories (config.json + safetensors)::

  audio-interaction train --config experiments/whisper_qwen.py --workdir runs/wq \
    --config.init.encoder_checkpoint=/ckpt/whisper-base \
    --config.init.decoder_checkpoint=/ckpt/Qwen2.5-0.5B

A checkpoint whose shapes differ from these fields stops the import at the first
differing tensor (`model/pretrained.py`; `pretrained.configure` derives the fields
from a checkpoint's config.json). The encoder runs chunk-causally (160 ms chunks,
left context of 16 chunks = 2.6 s) so it streams; the adapter, decision and CTC heads
start fresh.

Variants: ``:freeze_encoder`` trains everything but the audio tower (the adapter
stays trainable); ``:freeze_lm`` trains the audio tower, the adapter and the heads,
with the language model's blocks frozen.
On this CPU it is only shape-checked and lowered::

  audio-interaction inspect --config experiments/whisper_qwen.py
"""

import ml_collections

from audio_interaction import config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the config; `arg` is a comma-separated list of variant names."""
  variants = config_lib.parse_variants(arg, allowed=("freeze_encoder", "freeze_lm"))
  config = config_lib.base_config()
  config.audio.n_mels = 80

  config_lib.whisper_encoder(config.model.encoder, d_model=512, num_layers=6, num_heads=8,
                             mlp_dim=2048)  # Whisper base

  decoder = config.model.decoder  # Qwen2.5-0.5B
  decoder.vocab_size = 152064
  decoder.d_model = 896
  decoder.num_layers = 24
  decoder.num_heads = 14
  decoder.num_kv_heads = 2
  decoder.head_dim = 64
  decoder.mlp_dim = 4864
  decoder.rope_theta = 1000000.0
  decoder.qkv_bias = True
  decoder.tie_embeddings = True
  decoder.window = 4096
  config.model.norm_eps = 1e-6

  config.model.slots_per_chunk = 2  # 8 encoder frames per chunk, 4 per slot
  config.model.tokens_per_chunk = 8
  config.model.dtype = "bfloat16"
  # 14 query heads split over 2 tensor shards; parameters and Adam state over fsdp.
  config.sharding.mesh = {"data": -1, "fsdp": 4, "tensor": 2}

  config.train.learning_rate = 1e-4
  if "freeze_encoder" in variants:
    config.train.freeze = ("encoder/block*", "encoder/subsampling/*",
                           "encoder/position_embedding", "encoder/final_norm/*")
  if "freeze_lm" in variants:
    config.train.freeze = ("decoder/block*", "decoder/final_norm/*")
  return config
