r"""Tiny streaming audio-interaction model: a few M parameters, trains on one CPU.

Build the corpus, train, and run the demo on the result::

  audio-interaction build-data --config experiments/tiny.py --split train --num-examples 2400 --workers 2
  audio-interaction build-data --config experiments/tiny.py --split eval --num-examples 112
  audio-interaction train --config experiments/tiny.py --workdir runs/tiny
  audio-interaction demo

Variants are picked by one string after the file name, big_vision style, e.g.
``--config experiments/tiny.py:conformer`` swaps the encoder blocks for conformer
blocks, and ``experiments/tiny.py:randomize`` builds the corpus with domain
randomisation (speed, pitch, formants, mic, room, telephone, noise; wide voices;
connected speech) and
trains with on-the-fly augmentation (gain, noise, SpecAugment) and replies held back
up to 5 chunks (as a timer-driven policy starts them), in its own data directory
(data/tiny_randomized), and ``experiments/tiny.py:whole_streams`` trains on whole
streams (rows of 30.7 s, packed) with the instruction pinned in the decoder's view,
as the live loop runs it; ``experiments/tiny.py:whole_streams,copy`` adds the copy head
(replies copy the instruction's keyword or sound class, `model/instruction_copy.py`), and
``:sound_events`` puts the sound-event head on the encoder and trains it with the rest
(per chunk: which of the corpus's sound classes is heard, or none), and
``:sound_events,sound_feed`` also adds what that head hears to the decoder's audio slots,
``:sound_events,sound_names`` adds it as the words of each heard class's name.
Any field can be overridden: ``--config.model.decoder.num_layers=2``.
"""

import ml_collections

from audio_interaction import config_lib
from audio_interaction.corpus import worlds


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the tiny config; `arg` is a comma-separated list of variant names."""
  variants = config_lib.parse_variants(arg, allowed=("conformer", "randomize", "whole_streams", "copy",
                                                        "sound_events", "sound_feed",
                                                        "sound_names"))
  config = config_lib.base_config()

  encoder = config.model.encoder
  encoder.d_model = 128
  encoder.num_layers = 3
  encoder.num_heads = 4
  encoder.mlp_dim = 384
  encoder.conv_channels = 64
  encoder.left_chunks = 8
  encoder.block = "conformer" if "conformer" in variants else "transformer"

  decoder = config.model.decoder
  decoder.vocab_size = 512  # the corpus SentencePiece model has ~450 pieces
  decoder.d_model = 192
  decoder.num_layers = 4
  decoder.num_heads = 4
  decoder.num_kv_heads = 2
  decoder.head_dim = 48
  decoder.mlp_dim = 512
  decoder.window = 512

  config.model.slots_per_chunk = 2
  config.model.tokens_per_chunk = 4

  config.data.dir = "data/tiny"
  config.data.batch_size = 4
  config.data.max_chunks = 64  # 10.2 s: longer online streams are cut at a chunk boundary
  config.data.max_len = 320
  config.data.max_transcript = 96

  config.train.steps = 3600
  config.train.learning_rate = 2e-3
  config.train.warmup_steps = 100
  config.train.eval_every = 400
  config.train.checkpoint_every = 400
  config.train.eval_batches = 16
  # Comprehension first: transcribing and naming what is heard (offline clips and
  # real-time ASR), then every ability, with the ones the first tiny model (2,000
  # uniform steps) never learned -- alerts, instruction following, environment
  # answers -- read more often.
  config.train.stages = (
      (400, {"offline_understanding": 1.0, "realtime_asr": 1.0}),
  )
  config.data.mixture = {
      "offline_understanding": 0.7, "realtime_asr": 0.8, "instruction_following": 1.5,
      "voice_chat": 1.0, "proactive_help": 1.5, "environment_answers": 1.5,
      "interaction_control": 1.0,
  }
  if "randomize" in variants:
    # Not measured on a full tiny training yet: the default stays off.
    config.data.dir = "data/tiny_randomized"
    config.data.randomize.enabled = True
    # Real TRAIN-package sounds and room beds (`audio-interaction fetch-train-audio`).
    config.data.randomize.train_audio_root = "~/.cache/audio_interaction/debs/extracted"
    config.train.augment.enabled = True
    # On real audio `tune` picks the hybrid policy or the timer, which start replies
    # up to ~5 chunks after the model would: train on replies held back that much
    # (data/reply_delay.py; README, "A reply started late is still the answer").
    config.data.reply_delay_chunks = 5
  if "whole_streams" in variants:
    # Rows of 30.7 s hold 99 % of the corpus's streams whole; at 10.2 s, half of its
    # online streams lose what comes after (most of the late replies of instruction
    # following, counting, a changed instruction, a chat's later turns). The decoder
    # attends as it will live: its last 256 positions and the first 64 pinned (the
    # instruction), so a row of any length trains the layout the live loop sees. Short
    # examples share rows (first-fit packing), two rows a step.
    config.model.decoder.window = 320
    config.model.decoder.pinned_prefix = 64
    config.data.max_chunks = 192
    config.data.max_len = 960
    config.data.packing = True
    config.data.batch_size = 2
  if "copy" in variants:
    # A pointer over the instruction's tokens mixed into the LM head's distribution: the
    # tiny decoder answered late replies at the right time with another stream's keyword
    # or sound class (docs/real_audio_log.md, "Whole streams (session 32)"). New weights only, so
    # the embedded bundle starts it (train.init_from).
    config.model.decoder.copy_instruction = True
  if "sound_events" in variants:
    # The encoder is trained by CTC on speech; a sound's class reached it only through a
    # few answer tokens, and the streams' sound replies (alerts, a class to follow, a
    # count, a summary) were the ones it missed (docs/real_audio_log.md, "Sounds the encoder is
    # taught"). New weights only, so the embedded bundle starts it.
    config.model.sound_event_classes = len(worlds.SOUND_EVENT_LABELS)
    config.train.sound_event_loss_weight = 1.0
  if "sound_feed" in variants:
    # The head named the held-out sounds its decoder did not: give the decoder what the
    # head hears, each chunk's class probabilities embedded into its audio slots
    # (`model.sound_event_feed`, zero at the start).
    if "sound_events" not in variants:
      raise ValueError("tiny.py:sound_feed feeds the sound-event head: add sound_events")
    config.model.sound_event_feed = True
  if "sound_names" in variants:
    # The learned feed's class embeddings are learned from the few streams that name
    # each class (~3 per class in 2,400): feed each class as its name's words instead,
    # so what the decoder learns from one sound's streams reaches the others
    # (`model.sound_event_feed_names`; the ids come from the data's tokenizer).
    if "sound_events" not in variants:
      raise ValueError("tiny.py:sound_names feeds the sound-event head: add sound_events")
    config.model.sound_event_feed_names = True
  return config
