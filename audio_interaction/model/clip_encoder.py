"""A model's encoder over whole clips: encoder frames, chunk means or CTC logits.

The heads fitted on their own (`train/sound_head.py`, `train/ctc_head.py`,
`train/turn_head.py`) encode thousands of clips of every length, and the eval's CTC
beam search reads the CTC head over each clip; all go through one jitted
full-sequence pass. The encoder is chunk-causal, so that pass gives, chunk by chunk,
what streaming would give (tested in tests/test_streaming.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from audio_interaction.model.encoder import init_encoder_state
from audio_interaction.model.model import AudioInteractionModel, Params

# What a ClipEncoder returns per clip.
OUTPUTS = ("frames", "chunk_means", "ctc_logits")
# Longer clips are encoded chunk by chunk with the streaming state (a scan): the full
# pass's attention over all frames at once would need memory quadratic in the length
# (a 3-minute file asked for 26 GB).
MAX_FULL_PASS_CHUNKS = 256


class ClipEncoder:
  """audio float32 [n] (16 kHz) -> per chunk of the clip (ceil(n / chunk) chunks):
  `output` "frames": the encoder's frames [chunks * F_c, D] (F_c encoder frames per
  chunk); "chunk_means": each chunk's mean frame [chunks, D] (what the sound-event and
  turn-end heads read); "ctc_logits": the CTC head's logits [chunks * F_c, V]."""

  def __init__(self, model: AudioInteractionModel, params: Params, *, output: str):
    if output not in OUTPUTS:
      raise ValueError(f"output {output!r}: choose from {OUTPUTS}")
    self.chunk_samples = model.config.chunk_samples
    self.frames_per_chunk = 1 if output == "chunk_means" else model.config.encoder_frames_per_chunk

    def read(net, encoded):
      if output == "chunk_means":
        return net.sound_event_features(encoded)
      return net.ctc_logits(encoded) if output == "ctc_logits" else encoded

    def encode(net, mel, state=None):
      _, encoded, state = net.encoder(mel, state)
      return read(net, encoded), state

    self._encode = jax.jit(
        lambda p, audio: model.network.apply(p, model.features(audio), method=encode)[0])

    def stream(p, chunks):  # chunks [C, 1, chunk_samples]: one streaming step each
      def step(carry, chunk):
        mel_state, encoder_state = carry
        mel_state, mel = model.streaming_frontend.step(mel_state, chunk)
        out, encoder_state = model.network.apply(p, mel, encoder_state, method=encode)
        return (mel_state, encoder_state), out[0]
      start = (model.streaming_frontend.init_state(1, jnp.float32),
               init_encoder_state(model.config, 1, model.config.compute_dtype))
      return jax.lax.scan(step, start, chunks)[1]

    self._stream = jax.jit(stream)
    self._params = params

  def __call__(self, audio: np.ndarray) -> np.ndarray:
    chunks = max(1, -(-audio.size // self.chunk_samples))
    if chunks > MAX_FULL_PASS_CHUNKS:
      padded = np.zeros(chunks * self.chunk_samples, np.float32)
      padded[:audio.size] = audio
      out = self._stream(self._params, jnp.asarray(padded.reshape(chunks, 1, -1)))
      return np.asarray(out).reshape(chunks * self.frames_per_chunk, -1)
    # Padded to a power of two of chunks, so a few shapes compile; padding comes after
    # the clip, and the encoder is causal, so it changes none of the clip's chunks.
    padded = np.zeros((1, (1 << int(np.ceil(np.log2(chunks)))) * self.chunk_samples),
                      np.float32)
    padded[0, :audio.size] = audio
    out = np.asarray(self._encode(self._params, jnp.asarray(padded)))[0]
    return out[:chunks * self.frames_per_chunk]


class ChunkEncoder(ClipEncoder):
  """The sound-event and turn-end heads' inputs: audio [n] -> [chunks, D] mean frames."""

  def __init__(self, model: AudioInteractionModel, params: Params):
    super().__init__(model, params, output="chunk_means")


class FrameEncoder(ClipEncoder):
  """The CTC head's inputs: audio [n] -> [chunks * F_c, D] encoder frames."""

  def __init__(self, model: AudioInteractionModel, params: Params):
    super().__init__(model, params, output="frames")
