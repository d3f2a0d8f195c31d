"""AudioInteractionModel: front end + chunked encoder + decoder with fused heads.

Two ways to run the same parameters:

* `forward`: the full-sequence pass over the stream format (training, evaluation).
* the streaming steps, each a pure function of (params, state, input) with every
  piece of state in one explicit pytree (`StreamState`):
    - `prefill`: feed text tokens (the instruction, or reply tokens as they are
      written), T at a time, with a validity mask for ragged batches;
    - `perceive`: one audio chunk -> `<audio> <a>×k <decide>` -> decision logits and
      the first reply token's logits from the same forward pass, and the chunk's
      CTC logits (what the encoder hears, as tokens: a streaming transcript).
  Shapes are static per config, so jitted steps compile once for the whole stream.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from audio_interaction.audio.features import (LogMelConfig, StreamingLogMel, log_mel,
                                              segmented_log_mel)
from audio_interaction import stream_format as sf
from audio_interaction.model import augment as augment_lib
from audio_interaction.model.decoder import (Decoder, DecoderCache, init_copy_memory,
                                             init_decoder_cache)
from audio_interaction.model.instruction_copy import CopyMemory
from audio_interaction.model.encoder import AudioEncoder, EncoderState, init_encoder_state
from audio_interaction.model import layers
from audio_interaction.model.layers import Array
from audio_interaction.model.model_config import ModelConfig

# The turn-end head's classes: the user's turn goes on / has ended.
TURN_ENDED = 1
TURN_END_CLASSES = 2

Params = Any


@flax.struct.dataclass
class StreamState:
  """Everything a stream carries between steps (a pytree; donate it to the jitted steps).

  Attributes:
    mel: [B, n_fft - hop] last samples of the front end.
    encoder: encoder conv contexts and ring KV caches (see `init_encoder_state`).
    decoder: per-layer ring KV caches of `window` slots.
    next_position: [B] int32 decoder position of the next token.
    copy: the copy head's instruction memory (`instruction_copy.CopyMemory`), or None
      when the decoder has no copy head.
  """

  mel: Array
  encoder: EncoderState
  decoder: DecoderCache
  next_position: Array
  copy: CopyMemory | None = None


@flax.struct.dataclass
class ForwardOutputs:
  """Outputs of the full-sequence forward.

  Attributes:
    lm_logits: [B, L, V] float32, next-token logits at every position.
    decision_logits: [B, L, NUM_DECISIONS] float32 (meaningful at `<decide>`).
    ctc_logits: [B, F', V] float32 per encoder frame (F' = F / subsampling); class
      `PAD_ID` is the CTC blank.
    sound_event_logits: [B, C, K] float32 per audio chunk (K =
      `sound_event_classes`; class `NO_SOUND_EVENT` = no labelled sound), or None
      when the model has no sound-event head.
    turn_end_logits: [B, C, 2] float32 per audio chunk (class 1: the user's turn has
      ended), or None when the model has no turn-end head.
  """

  lm_logits: Array
  decision_logits: Array
  ctc_logits: Array
  sound_event_logits: Array | None = None
  turn_end_logits: Array | None = None


@flax.struct.dataclass
class PerceiveOutputs:
  """What one streaming chunk gives (`AudioInteractionModel.perceive_all`).

  Attributes:
    decision_logits: [B, NUM_DECISIONS] at the chunk's `<decide>`.
    lm_logits: [B, V] of the first reply token, from the same position.
    ctc_logits: [B, F_c, V] of the chunk's encoder frames.
    sound_event_logits: [B, K] of the chunk (class `NO_SOUND_EVENT` = none), or None
      when the model has no sound-event head.
    turn_end_logits: [B, 2] of the chunk (class 1: the turn has ended), or None when
      the model has no turn-end head.
  """

  decision_logits: Array
  lm_logits: Array
  ctc_logits: Array
  sound_event_logits: Array | None = None
  turn_end_logits: Array | None = None


class AudioInteractionNetwork(nn.Module):
  """The Linen module: encoder + decoder. Inputs are log-mel frames and token ids."""

  config: ModelConfig

  def setup(self):
    cfg = self.config
    self.encoder = AudioEncoder(cfg)
    self.decoder = Decoder(cfg)
    # The auxiliary CTC head: encoder frames -> the decoder's vocabulary, <pad> = blank.
    self.ctc_head = nn.DenseGeneral(
        cfg.decoder.vocab_size, kernel_init=layers.dense_init(("embed", "vocab")),
        dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype, name="ctc_head")
    # The sound-event head: what labelled sound each chunk holds, from its frames.
    if cfg.sound_event_classes:
      self.sound_event_head = nn.DenseGeneral(
          cfg.sound_event_classes, kernel_init=layers.dense_init(("embed", "sound_events")),
          dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype, name="sound_event_head")
    if cfg.sound_event_feed:
      # Zero at the start: a trained model given the feed answers as it did.
      self.sound_event_feed = nn.DenseGeneral(
          cfg.decoder.d_model, use_bias=False,
          kernel_init=nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                   ("sound_events", "embed")),
          dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype, name="sound_event_feed")
    if cfg.sound_event_feed_names:
      # Both zero at the start, as the learned feed: a trained model answers as it did.
      self.sound_event_name_gain = self.param(
          "sound_event_name_gain", nn.with_logical_partitioning(nn.initializers.zeros_init(), ()),
          (), cfg.weight_dtype)
      self.sound_event_name_projection = nn.DenseGeneral(
          cfg.decoder.d_model, use_bias=False,
          kernel_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("mlp", "embed")),
          dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype,
          name="sound_event_name_projection")
    # The turn-end head: whether the user's turn has ended at each chunk, from the same
    # per-chunk features (fitted alone over a frozen encoder, `train/turn_head.py`).
    if cfg.turn_end_head:
      self.turn_end_head = nn.DenseGeneral(
          TURN_END_CLASSES, kernel_init=layers.dense_init(("embed", "turn_end")),
          dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype, name="turn_end_head")

  def ctc_logits(self, encoded: Array) -> Array:
    """encoded [B, F', D] -> the CTC head's logits [B, F', V] float32."""
    return self.ctc_head(encoded).astype(jnp.float32)

  def sound_event_logits(self, encoded: Array, taps: Sequence[Array] = ()) -> Array | None:
    """encoded [B, F', D] (whole chunks), taps (`EncoderOutput.taps`) -> [B, F' / frames
    per chunk, K]: the head over `sound_event_features`, so a chunk's answer depends on
    it and its past only; None when the model has no sound-event head."""
    if not self.config.sound_event_classes:
      return None
    return self.sound_event_head(self.sound_event_features(encoded, taps)).astype(jnp.float32)

  def heard_slots(self, slots: Array, sound_event_logits: Array | None) -> Array:
    """slots [B, C*k, D_dec], sound_event_logits [B, C, K] or None -> slots [B, C*k, D_dec]
    with each chunk's class probabilities added to its k slots: through a learned
    embedding (`model.sound_event_feed`) and as its classes' name words
    (`model.sound_event_feed_names`); the slots as they are without either feed."""
    cfg = self.config
    if not (cfg.sound_event_feed or cfg.sound_event_feed_names):
      return slots
    probabilities = jax.nn.softmax(sound_event_logits, axis=-1)
    heard = jnp.zeros(probabilities.shape[:-1] + (cfg.decoder.d_model,), jnp.float32)
    if cfg.sound_event_feed:
      heard += self.sound_event_feed(probabilities)
    if cfg.sound_event_feed_names:
      words = probabilities @ self.sound_name_embeddings()
      heard += (self.sound_event_name_gain * words
                + self.sound_event_name_projection(words.astype(cfg.compute_dtype)))
    return slots + jnp.repeat(heard.astype(slots.dtype), cfg.slots_per_chunk, axis=1)

  def sound_name_embeddings(self) -> Array:
    """[K, D_dec] float32: each sound-event class's name as the mean of its tokens'
    embeddings in the decoder's table (`model.sound_event_name_tokens`; zeros for a
    class without a name, e.g. "no sound"). The table is read, not trained, through
    here: a name keeps the meaning the decoder's text gives its words."""
    cfg = self.config
    if self.is_initializing() and "decoder" not in self.variables.get("params", {}):
      # The decoder's table is made when it first runs; the shapes are what init needs.
      return jnp.zeros((cfg.sound_event_classes, cfg.decoder.d_model), jnp.float32)
    if len(cfg.sound_event_name_tokens) != cfg.sound_event_classes:
      raise ValueError(
          f"model.sound_event_feed_names needs the {cfg.sound_event_classes} classes' name "
          f"tokens, model.sound_event_name_tokens has {len(cfg.sound_event_name_tokens)} "
          "(the train loop and the export fill them from the tokenizer)")
    counts = name_token_counts(cfg.sound_event_name_tokens, cfg.decoder.vocab_size)
    averaging = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)
    table = self.decoder.variables["params"]["embed"]["embedding"]
    return jnp.asarray(averaging) @ jax.lax.stop_gradient(table).astype(jnp.float32)

  def turn_end_logits(self, encoded: Array) -> Array | None:
    """encoded [B, F', D] (whole chunks) -> [B, F' / frames per chunk, 2] (class
    `TURN_ENDED`: the user's turn has ended), over the mean of each chunk's frames;
    None when the model has no turn-end head."""
    if not self.config.turn_end_head:
      return None
    return self.turn_end_head(self.chunk_means(encoded)).astype(jnp.float32)

  def chunk_means(self, frames: Array) -> Array:
    """frames [B, F', D] (whole chunks) -> [B, F' / frames per chunk, D]: the mean of each
    chunk's frames (what the turn-end head reads)."""
    batch, length, width = frames.shape
    per_chunk = self.config.encoder_frames_per_chunk
    return frames.reshape(batch, length // per_chunk, per_chunk, width).mean(axis=2)

  def sound_event_features(self, encoded: Array, taps: Sequence[Array] = ()) -> Array:
    """encoded [B, F', D] (whole chunks), taps: `sound_event_blocks`' frames, each
    [B, F', D] -> [B, F' / frames per chunk, D * (len(taps) + 1)]: each chunk's mean
    frame of every tap, in block order, then of the final frames (no taps: the final
    mean alone), what the sound-event head reads."""
    if len(taps) != len(self.config.sound_event_blocks):
      raise ValueError(f"{len(taps)} encoder taps for model.sound_event_blocks="
                       f"{self.config.sound_event_blocks}")
    return jnp.concatenate([self.chunk_means(frames) for frames in (*taps, encoded)], axis=-1)

  def __call__(self, tokens: Array, mel: Array, audio_slot_index: Array,
               positions: Array, valid: Array, segment_ids: Array | None = None,
               chunk_segment_ids: Array | None = None):
    """Full forward. tokens/audio_slot_index/positions/valid/segment_ids: [B, L];
    mel: [B, F, n_mels]; chunk_segment_ids: [B, C] (packed rows)."""
    slots, encoded, _, taps = self.encoder(mel, chunk_segment_ids=chunk_segment_ids)
    sound_event_logits = self.sound_event_logits(encoded, taps)
    slots = self.heard_slots(slots, sound_event_logits)
    index = jnp.clip(audio_slot_index, 0, slots.shape[1] - 1)
    audio_embeddings = jnp.take_along_axis(slots, index[..., None], axis=1)
    lm_logits, decision_logits, *_ = self.decoder(
        tokens, audio_embeddings, positions, valid=valid, segment_ids=segment_ids)
    return (lm_logits, decision_logits, self.ctc_logits(encoded),
            sound_event_logits, self.turn_end_logits(encoded))

  def encode_step(self, mel: Array, state: EncoderState):
    slots, encoded, state, taps = self.encoder(mel, state)
    sound_event_logits = self.sound_event_logits(encoded, taps)
    return (self.heard_slots(slots, sound_event_logits), self.ctc_logits(encoded),
            sound_event_logits, self.turn_end_logits(encoded), state)

  def decode_step(self, tokens: Array, audio_embeddings: Array | None, positions: Array,
                  valid: Array, cache: DecoderCache, heads_at_last: bool,
                  copy_memory: CopyMemory | None = None):
    return self.decoder(tokens, audio_embeddings, positions, valid=valid, cache=cache,
                        heads_at_last=heads_at_last, copy_memory=copy_memory)


class AudioInteractionModel:
  """The model as pure functions over explicit params and state.

  Example::

    model = AudioInteractionModel(config_lib.load_config("experiments/tiny.py"))
    params = model.init(jax.random.key(0))
    state = model.init_state(batch=1)
    state, _ = model.prefill(params, state, instruction_ids)       # [1, P]
    state, decision_logits, lm_logits, ctc_logits = model.perceive(params, state, chunk)
  """

  def __init__(self, config: ml_collections.ConfigDict | ModelConfig,
               frontend: LogMelConfig | None = None):
    if isinstance(config, ModelConfig):
      self.config = config
      self.frontend = frontend or LogMelConfig()
    else:
      self.config = ModelConfig.from_config(config)
      self.frontend = frontend or LogMelConfig.from_config(config.audio)
    if (self.frontend.hop_length, self.frontend.n_mels, self.frontend.sample_rate) != (
        self.config.hop_length, self.config.n_mels, self.config.sample_rate):
      raise ValueError("front-end settings disagree with the model config")
    self.network = AudioInteractionNetwork(self.config)
    self.streaming_frontend = StreamingLogMel(self.frontend)

  # ---------------------------------------------------------------- parameters
  def init_boxed(self, rng: Array) -> Params:
    """Parameters with their logical axis names (`nn.LogicallyPartitioned` leaves)."""
    cfg = self.config
    length = sf.chunk_prefix_length(cfg.slots_per_chunk)
    tokens = jnp.full((1, length), sf.AUDIO_SLOT_ID, jnp.int32)
    mel = jnp.zeros((1, cfg.frames_per_chunk, cfg.n_mels), jnp.float32)
    index = jnp.zeros((1, length), jnp.int32)
    positions = jnp.arange(length, dtype=jnp.int32)[None]
    return self.network.init(rng, tokens, mel, index, positions, jnp.ones((1, length), bool))

  def init(self, rng: Array) -> Params:
    """Plain parameter pytree {"params": ...} (logical names stripped)."""
    return nn.unbox(self.init_boxed(rng))

  def logical_axes(self) -> Params:
    """Pytree of `PartitionSpec`s of logical axis names, matching `init`'s structure."""
    boxed = jax.eval_shape(self.init_boxed, jax.random.key(0))
    return nn.get_partition_spec(boxed)

  # ------------------------------------------------------------- full forward
  def features(self, audio: Array, augment: augment_lib.Augmentation | None = None,
               chunk_segment_ids: Array | None = None) -> Array:
    """audio: [B, S] float samples (S a multiple of the chunk) -> log-mel [B, S/hop, n_mels].

    `augment` (training only; see `model/augment.py`): random gain and noise on the
    waveform, SpecAugment masks on the log-mel. None (the default) or a disabled
    config computes exactly the plain features. `chunk_segment_ids` ([B, C], packed
    rows): no frame sees the audio of the segment before its own
    (`features.segmented_log_mel`).
    """
    if audio.shape[-1] % self.config.chunk_samples:
      raise ValueError(f"audio has {audio.shape[-1]} samples, not a whole number of "
                       f"{self.config.chunk_samples}-sample chunks")
    audio = audio.astype(jnp.float32)
    if chunk_segment_ids is None:
      front_end = lambda samples: log_mel(samples, self.frontend)
    else:
      front_end = lambda samples: segmented_log_mel(samples, chunk_segment_ids, self.frontend)
    if augment is None or not augment.config.enabled:
      return front_end(audio)
    mel = front_end(augment_lib.augment_waveform(augment, audio))
    return augment_lib.spec_augment(augment, mel)

  def forward(self, params: Params, tokens: Array, audio: Array, audio_slot_index: Array,
              *, positions: Array | None = None, segment_ids: Array | None = None,
              chunk_segment_ids: Array | None = None,
              augment: augment_lib.Augmentation | None = None) -> ForwardOutputs:
    """Full-sequence forward over the stream format.

    Args:
      params: from `init`.
      tokens: [B, L] int32, `<pad>` (id 0) marks padding.
      audio: [B, S] float32 16 kHz samples, whole chunks.
      audio_slot_index: [B, L] int32 slot index (chunk*k + j) at `<a>` positions.
      positions: [B, L] int32; defaults to 0..L-1 (one example per row).
      segment_ids: [B, L] int32 for rows that pack several examples (`data/pipeline.py`):
        decoder attention stays inside a segment; pass `positions` restarting at 0
        in each segment and `chunk_segment_ids` with it.
      chunk_segment_ids: [B, C] int32 segment of each audio chunk, given with
        `segment_ids`: the front end and the encoder do not cross segments. A packed
        row then gives every example the outputs it gets in a row of its own.
      augment: training augmentation of the audio (`features`); None: none.
    Returns:
      `ForwardOutputs`.
    """
    if positions is None:
      positions = jnp.broadcast_to(jnp.arange(tokens.shape[1], dtype=jnp.int32), tokens.shape)
    if (segment_ids is None) != (chunk_segment_ids is None):
      raise ValueError("packed rows need both segment_ids (positions) and chunk_segment_ids "
                       "(audio chunks), or neither")
    valid = tokens != sf.PAD_ID
    return ForwardOutputs(*self.network.apply(
        params, tokens, self.features(audio, augment, chunk_segment_ids), audio_slot_index,
        positions, valid, segment_ids, chunk_segment_ids))

  # ---------------------------------------------------------------- streaming
  def init_state(self, batch: int) -> StreamState:
    """State at the start of `batch` independent streams."""
    dtype = self.config.compute_dtype
    return StreamState(
        mel=self.streaming_frontend.init_state(batch, jnp.float32),
        encoder=init_encoder_state(self.config, batch, dtype),
        decoder=init_decoder_cache(self.config, batch, dtype),
        next_position=jnp.zeros((batch,), jnp.int32),
        copy=init_copy_memory(self.config, batch, dtype),
    )

  def decode_positions(self, params: Params, state: StreamState, tokens: Array,
                       audio_embeddings: Array | None, valid: Array, heads_at_last: bool):
    """Feeds positions [B, T] (tokens, with `audio_embeddings` [B, T, D] at audio slots or
    None) through the decoder cache; `valid` [B, T] rows that do not advance are False.

    Returns:
      (state, lm logits, decision logits): at every position, or [B, 1, ...] at the last
      when `heads_at_last`.
    """
    positions = state.next_position[:, None] + jnp.cumsum(valid, axis=1, dtype=jnp.int32) - 1
    lm_logits, decision_logits, cache, copy_memory = self.network.apply(
        params, tokens, audio_embeddings, positions, valid, state.decoder, heads_at_last,
        state.copy, method=AudioInteractionNetwork.decode_step)
    state = state.replace(decoder=cache, copy=copy_memory,
                          next_position=state.next_position + valid.sum(1, dtype=jnp.int32))
    return state, lm_logits, decision_logits

  def prefill(self, params: Params, state: StreamState, tokens: Array,
              valid: Array | None = None) -> tuple[StreamState, Array]:
    """Feeds text tokens (instruction, or reply tokens as they are written).

    Args:
      tokens: [B, T] int32.
      valid: [B, T] bool; streams with False entries do not advance there (ragged
        batches: right-pad and mark padding False).
    Returns:
      (state, lm logits [B, T, V] for the token after each position).
    """
    if valid is None:
      valid = jnp.ones(tokens.shape, bool)
    state, lm_logits, _ = self.decode_positions(params, state, tokens, None, valid, heads_at_last=False)
    return state, lm_logits

  def perceive(self, params: Params, state: StreamState, chunk: Array
               ) -> tuple[StreamState, Array, Array, Array]:
    """Perceives one audio chunk and decides.

    Args:
      chunk: [B, chunk_samples] float32 samples.
    Returns:
      (state, decision logits [B, NUM_DECISIONS], lm logits [B, V] of the first reply
      token, CTC logits [B, F_c, V] of the chunk's F_c encoder frames); the first two
      are read at the chunk's `<decide>` position in one forward pass.
    """
    state, outputs = self.perceive_all(params, state, chunk)
    return state, outputs.decision_logits, outputs.lm_logits, outputs.ctc_logits

  def perceive_all(self, params: Params, state: StreamState, chunk: Array
                   ) -> tuple[StreamState, PerceiveOutputs]:
    """`perceive`, with every head's output of the chunk (`PerceiveOutputs`), the
    sound-event head's too when the model has one."""
    state, slots, ctc_logits, sound_event_logits, turn_end_logits = self.encode_chunk(
        params, state, chunk)
    batch = chunk.shape[0]
    tokens = jnp.broadcast_to(jnp.asarray(sf.chunk_tokens(self.config.slots_per_chunk),
                                          jnp.int32), (batch, slots.shape[1] + 2))
    no_audio = jnp.zeros((batch, 1, slots.shape[-1]), slots.dtype)
    audio_embeddings = jnp.concatenate([no_audio, slots, no_audio], axis=1)
    state, lm_logits, decision_logits = self.decode_positions(
        params, state, tokens, audio_embeddings, jnp.ones(tokens.shape, bool),
        heads_at_last=True)
    return state, PerceiveOutputs(decision_logits[:, 0], lm_logits[:, 0], ctc_logits,
                                  sound_event_logits, turn_end_logits)

  def feed_audio(self, params: Params, state: StreamState, chunk: Array
                 ) -> tuple[StreamState, Array | None]:
    """Feeds one chunk's k audio slots with no `<audio>`/`<decide>` around them: the
    offline layout, where a clip's slots follow one `<audio>` (`stream_format.offline_prompt`).

    Args:
      chunk: [B, chunk_samples] float32 samples.
    Returns:
      (state, the chunk's sound-event logits [B, K], None without the head).
    """
    state, slots, _, sound_event_logits, _ = self.encode_chunk(params, state, chunk)
    batch, k = slots.shape[:2]
    tokens = jnp.full((batch, k), sf.AUDIO_SLOT_ID, jnp.int32)
    state, _, _ = self.decode_positions(params, state, tokens, slots, jnp.ones(tokens.shape, bool),
                               heads_at_last=True)
    return state, sound_event_logits

  def encode_chunk(self, params: Params, state: StreamState, chunk: Array
                   ) -> tuple[StreamState, Array, Array, Array | None, Array | None]:
    """chunk [B, chunk_samples] -> (state, adapter slots [B, k, D], CTC logits [B, F_c, V],
    sound-event logits [B, K] and turn-end logits [B, 2], each None without its head)."""
    cfg = self.config
    if chunk.shape[-1] != cfg.chunk_samples:
      raise ValueError(f"chunk has {chunk.shape[-1]} samples, expected {cfg.chunk_samples} "
                       f"({cfg.chunk_ms} ms at "
                       f"{cfg.sample_rate} Hz)")
    mel_state, frames = self.streaming_frontend.step(state.mel, chunk.astype(jnp.float32))
    slots, ctc_logits, sound_event_logits, turn_end_logits, encoder_state = self.network.apply(
        params, frames, state.encoder, method=AudioInteractionNetwork.encode_step)
    one_chunk = lambda logits: None if logits is None else logits[:, 0]
    return (state.replace(mel=mel_state, encoder=encoder_state), slots, ctc_logits,
            one_chunk(sound_event_logits), one_chunk(turn_end_logits))


def name_token_counts(name_tokens: Sequence[Sequence[int]], vocab: int) -> np.ndarray:
  """[K, V] float32: how often token v occurs in class k's name (one name per class,
  `worlds.sound_name_tokens`), the matrix the name feed and the name bias read."""
  counts = np.zeros((len(name_tokens), vocab), np.float32)
  for label, name in enumerate(name_tokens):
    np.add.at(counts[label], list(name), 1.0)
  return counts


def param_mismatches(expected: Params, params: Params, *, given: str = "given",
                     extra: str = "not in the config") -> list[str]:
  """Where `params` does not fit `expected` (a tree of arrays or ShapeDtypeStructs):
  "path: {given} shape, config shape" per differing or missing leaf, then
  "path: {extra}" per leaf `expected` lacks. Empty when the trees fit."""
  want = {jax.tree_util.keystr(p): tuple(s.shape)
          for p, s in jax.tree_util.tree_flatten_with_path(expected)[0]}
  got = {jax.tree_util.keystr(p): tuple(jnp.shape(v))
         for p, v in jax.tree_util.tree_flatten_with_path(params)[0]}
  problems = [f"{k}: {given} {got.get(k)}, config {v}" for k, v in want.items()
              if got.get(k) != v]
  return problems + [f"{k}: {extra}" for k in sorted(got.keys() - want.keys())]


def count_params(params: Params) -> int:
  """Number of scalars in a parameter pytree (boxed or not)."""
  return sum(x.size for x in jax.tree_util.tree_leaves(nn.unbox(params)))
