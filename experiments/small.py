r"""Small streaming audio-interaction model: ~21 M parameters, the next size up from tiny.

The same corpus, stream format and recipe as `experiments/tiny.py:randomize` (domain
randomisation, real TRAIN-package sounds and beds, on-the-fly augmentation), with a
wider and deeper encoder and decoder. Sized to be compared with tiny at equal CPU
wall-clock on the real dev set (docs/real_audio_log.md, "`small` against `tiny` at equal CPU time":
at 7.7 min each from scratch, tiny learns more of everything); it shares tiny's randomised
corpus and tokenizer::

  audio-interaction fetch-train-audio
  audio-interaction build-data --config experiments/small.py --split train --num-examples 2560 --workers 2
  audio-interaction build-data --config experiments/small.py --split eval --num-examples 112
  audio-interaction train --config experiments/small.py --workdir runs/small
"""

import ml_collections

from audio_interaction import config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the small config; `arg` is a comma-separated list of variant names."""
  variants = config_lib.parse_variants(arg, allowed=("conformer",))
  config = config_lib.load_config(str(config_lib.experiments_dir() / "tiny.py:randomize"))

  encoder = config.model.encoder
  encoder.d_model = 256
  encoder.num_layers = 6
  encoder.num_heads = 4
  encoder.mlp_dim = 1024
  encoder.conv_channels = 128
  encoder.block = "conformer" if "conformer" in variants else "transformer"

  decoder = config.model.decoder
  decoder.d_model = 384
  decoder.num_layers = 6
  decoder.num_heads = 6
  decoder.num_kv_heads = 2
  decoder.head_dim = 64
  decoder.mlp_dim = 1536

  config.train.learning_rate = 1e-3
  return config
