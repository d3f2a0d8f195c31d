"""benchmarks/ctc_head_reads.py reads what it says: its last block is the model's own
CTC head input, and its whole window is one chunk of Whisper's length."""

import numpy as np
from repo_scripts import load_script

from audio_interaction.export import portable
from audio_interaction.model.clip_encoder import FrameEncoder
from audio_interaction.model.model import AudioInteractionModel

ctc_head_reads = load_script("benchmarks/ctc_head_reads.py")


def test_last_block_read_is_the_frames_the_models_ctc_head_reads():
  config, params, _ = portable.load_bundle("real-audio")
  clip = np.random.default_rng(0).normal(0, 0.1, 16000 + 1234).astype(np.float32)
  blocks = ctc_head_reads.BlockFrames(config, params["params"]["encoder"], seed=0)
  every_block = blocks(clip, first_position=0)
  width = blocks.config.encoder.d_model
  assert every_block.shape[1] == width * blocks.blocks == width * 4
  frames = FrameEncoder(AudioInteractionModel(config), params)(clip, first_position=0)
  np.testing.assert_allclose(every_block[:, -width:], frames, atol=2e-4)
  # The lower blocks are other frames, not copies of the last.
  assert np.abs(every_block[:, :width] - frames).max() > 0.1


def test_whole_window_is_one_chunk_of_whisper_length_in_whole_slots():
  config, _, _ = portable.load_bundle("real-audio")
  window = AudioInteractionModel(ctc_head_reads.whole_window_config(config)).config
  assert window.chunk_seconds == 29.92
  assert window.encoder_frames_per_chunk == 1496 <= window.encoder.max_positions
  assert window.encoder_frames_per_chunk % window.slots_per_chunk == 0
  original = AudioInteractionModel(config).config
  assert (window.encoder_frames_per_chunk // window.slots_per_chunk
          == original.encoder_frames_per_chunk // original.slots_per_chunk)
