"""A model's encoder over whole clips: encoder frames, chunk means, sound-event or CTC
logits.

The heads fitted on their own (`train/sound_head.py`, `train/ctc_head.py`,
`train/turn_head.py`) encode thousands of clips of every length, and the eval's CTC
beam search reads the CTC head over each clip; all go through one jitted
full-sequence pass. The encoder is chunk-causal, so that pass gives, chunk by chunk,
what streaming would give (tested in tests/test_streaming.py).

Where a clip sits in a stream matters to an encoder with absolute positions (a Whisper
table restarts every 30 s): a head fitted only on clips encoded from position 0 learns
features of the window's start and fails later in a stream (the real-audio model's
alerts fell from 80 % recall at 0 s to 0 % at 15 s). `first_positions="random"` encodes
each clip from a random chunk boundary of the position window instead.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from audio_interaction.model.encoder import init_encoder_state
from audio_interaction.model.model import AudioInteractionModel, Params

# What a ClipEncoder returns per clip.
OUTPUTS = ("frames", "chunk_means", "sound_event_features", "sound_event_logits", "ctc_logits")
# Where each clip starts in the encoder's position window: "start" (0, as an offline
# clip) or "random" (a seeded random chunk boundary, as anywhere in a live stream).
FIRST_POSITIONS = ("start", "random")
# Longer clips are encoded chunk by chunk with the streaming state (a scan): the full
# pass's attention over all frames at once would need memory quadratic in the length
# (a 3-minute file asked for 26 GB).
MAX_FULL_PASS_CHUNKS = 256
# Such clips are padded to whole buckets of this many chunks: one compiled scan per
# bucket, not one per length (recordings of every length once compiled a scan each).
STREAM_BUCKET_CHUNKS = 64


def padded_to_power_of_two(audio: np.ndarray, chunk_samples: int) -> np.ndarray:
  """audio [n] -> float32 [1, 2^k * chunk_samples], the clip then zeros, 2^k the fewest
  whole chunks (a power of two) that hold it: a full pass over it compiles for few
  shapes, and since the padding comes after the clip and the encoder is causal, it
  changes none of the clip's chunks."""
  chunks = max(1, -(-audio.size // chunk_samples))
  padded = np.zeros((1, (1 << int(np.ceil(np.log2(chunks)))) * chunk_samples), np.float32)
  padded[0, :audio.size] = audio
  return padded


class ClipEncoder:
  """audio float32 [n] (16 kHz) -> per chunk of the clip (ceil(n / chunk) chunks):
  `output` "frames": the encoder's frames [chunks * F_c, D] (F_c encoder frames per
  chunk); "chunk_means": each chunk's mean frame [chunks, D] (what the turn-end head
  reads); "sound_event_features": what the sound-event head reads [chunks, D * (1 +
  len(model.sound_event_blocks))]; "sound_event_logits": the sound-event head's logits
  [chunks, K]; "ctc_logits": the CTC head's logits [chunks * F_c, V]."""

  def __init__(self, model: AudioInteractionModel, params: Params, *, output: str,
               first_positions: str = "start", seed: int = 0):
    if output not in OUTPUTS:
      raise ValueError(f"output {output!r}: choose from {OUTPUTS}")
    if first_positions not in FIRST_POSITIONS:
      raise ValueError(f"first_positions {first_positions!r}: choose from {FIRST_POSITIONS}")
    config = model.config
    self.chunk_samples = config.chunk_samples
    self._encoder_frames_per_chunk = config.encoder_frames_per_chunk
    if output == "sound_event_logits" and not config.sound_event_classes:
      raise ValueError("output 'sound_event_logits': the model has no sound-event head "
                       "(model.sound_event_classes is 0)")
    per_chunk_outputs = ("chunk_means", "sound_event_features", "sound_event_logits")
    self.frames_per_chunk = 1 if output in per_chunk_outputs else config.encoder_frames_per_chunk
    # Rotary positions are relative: where a clip starts changes nothing.
    self.position_period = (None if config.encoder.positions == "rope"
                            else config.encoder.positions_restart_every)
    self.first_positions = first_positions
    self._rng = np.random.default_rng(seed)

    def read(net, encoded, taps):
      if output == "chunk_means":
        return net.chunk_means(encoded)
      if output == "sound_event_features":
        return net.sound_event_features(encoded, taps)
      if output == "sound_event_logits":
        return net.sound_event_logits(encoded, taps)
      return net.ctc_logits(encoded) if output == "ctc_logits" else encoded

    def encode(net, mel, state=None, first_position=None):
      _, encoded, state, taps = net.encoder(mel, state, first_position=first_position)
      return read(net, encoded, taps), state

    self._encode = jax.jit(lambda p, audio, first: model.network.apply(
        p, model.features(audio), None, first, method=encode)[0])

    def stream(p, chunks, first):  # chunks [C, 1, chunk_samples]: one streaming step each
      def step(carry, chunk):
        mel_state, encoder_state = carry
        mel_state, mel = model.streaming_frontend.step(mel_state, chunk)
        out, encoder_state = model.network.apply(p, mel, encoder_state, method=encode)
        return (mel_state, encoder_state), out[0]
      encoder_state = init_encoder_state(config, 1, config.compute_dtype)
      encoder_state = dict(encoder_state, next_frame=jnp.full((1,), first, jnp.int32))
      start = (model.streaming_frontend.init_state(1, jnp.float32), encoder_state)
      return jax.lax.scan(step, start, chunks)[1]

    self._stream = jax.jit(stream)
    self._params = params

  def next_first_position(self) -> int:
    """The encoder frame the next clip starts at: 0, or with `first_positions="random"`
    a chunk boundary drawn uniformly from the position window."""
    if self.first_positions == "start" or self.position_period is None:
      return 0
    per_chunk = self._encoder_frames_per_chunk
    return int(self._rng.integers(0, -(-self.position_period // per_chunk))) * per_chunk

  def __call__(self, audio: np.ndarray, first_position: int | None = None) -> np.ndarray:
    """audio [n] -> the output per chunk (see the class); `first_position`: the encoder
    frame the clip starts at (None: `next_first_position()`)."""
    first = self.next_first_position() if first_position is None else int(first_position)
    chunks = max(1, -(-audio.size // self.chunk_samples))
    if chunks > MAX_FULL_PASS_CHUNKS:
      # The padding comes after the clip and the encoder is causal: the clip's chunks
      # are the same.
      bucketed = -(-chunks // STREAM_BUCKET_CHUNKS) * STREAM_BUCKET_CHUNKS
      padded = np.zeros(bucketed * self.chunk_samples, np.float32)
      padded[:audio.size] = audio
      out = self._stream(self._params, jnp.asarray(padded.reshape(bucketed, 1, -1)), first)
      return np.asarray(out)[:chunks].reshape(chunks * self.frames_per_chunk, -1)
    padded = padded_to_power_of_two(audio, self.chunk_samples)
    out = np.asarray(self._encode(self._params, jnp.asarray(padded),
                                  jnp.full((1,), first, jnp.int32)))[0]
    return out[:chunks * self.frames_per_chunk]


class ChunkEncoder(ClipEncoder):
  """The turn-end head's inputs: audio [n] -> [chunks, D] mean frames."""

  def __init__(self, model: AudioInteractionModel, params: Params, **options):
    """`options`: `ClipEncoder`'s first_positions and seed."""
    super().__init__(model, params, output="chunk_means", **options)


class SoundEventEncoder(ClipEncoder):
  """The sound-event head's inputs: audio [n] -> [chunks, D * (1 + len(model.
  sound_event_blocks))] (`AudioInteractionNetwork.sound_event_features`)."""

  def __init__(self, model: AudioInteractionModel, params: Params, **options):
    """`options`: `ClipEncoder`'s first_positions and seed."""
    super().__init__(model, params, output="sound_event_features", **options)


class FrameEncoder(ClipEncoder):
  """The CTC head's inputs: audio [n] -> [chunks * F_c, D] encoder frames."""

  def __init__(self, model: AudioInteractionModel, params: Params, **options):
    """`options`: `ClipEncoder`'s first_positions and seed."""
    super().__init__(model, params, output="frames", **options)
