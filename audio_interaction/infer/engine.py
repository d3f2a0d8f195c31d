"""Stepwise inference engine: jitted `perceive` and `speak` over a donated state pytree.

One `perceive` call per audio chunk gives the decision probabilities and the logits of
the first reply token (the fused head, one forward pass). When the decision is SPEAK,
`speak` writes up to `n` reply tokens, feeding each one back so the cache holds the
reply exactly as the stream format lays it out, and stops at `<eor>`. Several
independent streams run as one batch; streams that stay silent do not advance.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np

from audio_interaction import stream_format as sf
from audio_interaction.corpus import worlds
from audio_interaction.data.tokenizer import Tokenizer
from audio_interaction.infer.name_bias import NameBias
from audio_interaction.model import layers
from audio_interaction.model.layers import Array
from audio_interaction.model.model import (TURN_END_CLASSES, AudioInteractionModel, Params,
                                           StreamState)


@flax.struct.dataclass
class EngineState:
  """Model state plus what the engine needs between calls.

  Attributes:
    stream: the model's `StreamState`.
    next_logits: [B, V] float32 logits of the next token (from the last fed position).
    rng: PRNG key for sampling.
    heard: [B, F_c] int32 CTC argmax label of each encoder frame of the last chunk
      (the streaming transcript before merging; see `infer.transcript.collapse_ctc`).
    sound_events: [B, K] float32 probabilities of the sound-event head's classes at the
      last chunk (K = 0 for a model without the head).
    turn_end: [B, 2] float32 probabilities of the turn-end head at the last chunk
      (class `model.TURN_ENDED`: the turn has ended; [B, 0] without the head).
    heard_sounds: [B, K] float32 the sounds heard lately: per class, the largest of its
      probabilities over the chunks so far, each chunk's decayed by
      `SamplingConfig.name_decay` per chunk since ("no sound" held at 0); what
      `SamplingConfig.name_bias` biases replies towards.
    reply_said: [B, V] bool the tokens the current reply has said (cleared at `<eor>`):
      with `SamplingConfig.name_once` a name token is biased up once per reply (kept
      only then; all False otherwise).
    name_progress: [B, K] int32 how many tokens of each class's name the reply has just
      said (0: none; `name_bias.NameBias.advance`): with `SamplingConfig.name_whole` a
      started name is biased on to its end (kept only then; 0 otherwise).
  """

  stream: StreamState
  next_logits: Array
  rng: Array
  heard: Array
  sound_events: Array
  turn_end: Array
  heard_sounds: Array
  reply_said: Array
  name_progress: Array


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """temperature 0 means greedy; top_p < 1 keeps the smallest nucleus of that mass.

  name_bias > 0 adds, before sampling, name_bias x (the lately heard probability of each
  sound class, `EngineState.heard_sounds`) to the logits of the tokens of its name
  (`infer.sound_name_bias`): the sound-event head names held-out sounds its decoder
  answers with a few stock names, and this hands the reply the head's words.
  name_decay: per chunk, how much of a heard sound's probability stays in view.
  name_gate: the bias applies where the decoder gives the names' tokens (of any class)
  at least this probability.
  name_once: a name token the current reply has said is not biased again (the bias held
  on, a reply could run on through names: "i hear a sm smoke alarm sm smoke alarm ...").
  name_whole: names biased whole, not as bags of tokens: a name's first token where a
  name may start, then its next tokens until it is said (`infer/name_bias.py`).
  """

  temperature: float = 0.0
  top_p: float = 1.0
  name_bias: float = 0.0
  name_decay: float = 0.95
  name_gate: float = 0.1
  name_once: bool = False
  name_whole: bool = False

  @classmethod
  def from_infer(cls, infer) -> SamplingConfig:
    """The sampling of a config's (or bundle's) `infer` block."""
    return cls(float(infer.temperature), float(infer.top_p),
               float(infer.get("sound_name_bias", 0.0)),
               float(infer.get("sound_name_decay", 0.95)),
               float(infer.get("sound_name_gate", 0.1)),
               bool(infer.get("sound_name_once", False)),
               bool(infer.get("sound_name_whole", False)))

  def name_tokens(self, tokenizer: Tokenizer) -> tuple[tuple[int, ...], ...]:
    """Each sound-event class's name in `tokenizer`'s ids, as this sampling biases it
    (the whole name phrase, or its content words); () when names are not biased."""
    if self.name_bias <= 0:
      return ()
    return (worlds.sound_name_phrase_tokens(tokenizer) if self.name_whole
            else worlds.sound_name_tokens(tokenizer))


def sample_tokens(logits: Array, rng: Array, sampling: SamplingConfig) -> Array:
  """logits: [B, V] -> token ids [B] int32 (greedy, temperature, or nucleus sampling)."""
  if sampling.temperature <= 0.0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits / sampling.temperature
  if sampling.top_p < 1.0:
    sorted_logits = jnp.sort(logits, axis=-1)[:, ::-1]
    cumulative = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
    # The smallest logit still inside the nucleus; everything below it is cut.
    cutoff_index = jnp.sum(cumulative < sampling.top_p, axis=-1, keepdims=True)
    cutoff = jnp.take_along_axis(sorted_logits, cutoff_index, axis=-1)
    logits = jnp.where(logits < cutoff, -jnp.inf, logits)
  return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


# ------------------------------------------------------------ int8 weights (CPU path)
# `config.infer.weights = "int8"`: the dense kernels are quantized once at load
# (`quantize_params`, a pure function of the parameter tree) to int8 with one float32
# scale per output channel, and every jitted step dequantizes them inside the step
# (`dequantize_params`, the identity on a float tree), so the engine takes either tree.

# Kernels by leaf name -> how many leading axes are its inputs (reduced for the scale).
# Dense kernels ("kernel", [in, out] or conv [kh, kw, in, out]) have every axis but the
# last as inputs; the attention projections are [D, heads, Dh] and out [heads, Dh, D].
_ATTENTION_IN_AXES = {"query": 1, "key": 1, "value": 1, "out": 2}


@flax.struct.dataclass
class QuantizedKernel:
  """An int8 kernel and its per-output-channel scales: kernel ~= values * scale.

  Attributes:
    values: int8, the kernel's shape.
    scale: float32, the kernel's shape with the input axes kept as size 1.
  """

  values: Array
  scale: Array


def _input_axes(name: str, ndim: int) -> tuple[int, ...] | None:
  if name == "kernel" and ndim >= 2:
    return tuple(range(ndim - 1))
  if name in _ATTENTION_IN_AXES and ndim == 3:
    return tuple(range(_ATTENTION_IN_AXES[name]))
  return None


def quantize_kernel(kernel: Array, input_axes: tuple[int, ...]) -> QuantizedKernel:
  """Symmetric int8 with one scale per output channel: max |w| over the inputs -> 127."""
  kernel = jnp.asarray(kernel, jnp.float32)
  peak = jnp.max(jnp.abs(kernel), axis=input_axes, keepdims=True)
  scale = jnp.where(peak > 0, peak / 127.0, 1.0).astype(jnp.float32)
  values = jnp.clip(jnp.round(kernel / scale), -127, 127).astype(jnp.int8)
  return QuantizedKernel(values, scale)


def quantize_params(params: Params) -> Params:
  """The parameter tree with every dense kernel as a `QuantizedKernel` (embeddings,
  norms and biases stay float32)."""

  def leaf(path, value):
    name = getattr(path[-1], "key", None) if path else None
    axes = _input_axes(str(name), np.ndim(value))
    return value if axes is None else quantize_kernel(value, axes)

  return jax.tree_util.tree_map_with_path(leaf, params)


def is_quantized(params: Params) -> bool:
  """Whether a parameter tree holds `QuantizedKernel`s."""
  return any(isinstance(x, QuantizedKernel) for x in jax.tree_util.tree_leaves(
      params, is_leaf=lambda x: isinstance(x, QuantizedKernel)))


def dequantize_params(params: Params) -> Params:
  """float32 kernels back from `QuantizedKernel`s (inside a jitted step: fused per step);
  a float tree is returned as it is."""
  return jax.tree_util.tree_map(
      lambda x: x.values.astype(jnp.float32) * x.scale if isinstance(x, QuantizedKernel) else x,
      params, is_leaf=lambda x: isinstance(x, QuantizedKernel))


def params_for(params: Params, weights: str) -> Params:
  """Params in the engine's weight format `weights` ("float32" or "int8"; the value of
  `config.infer.weights`): quantized once here, at load."""
  if weights == "int8":
    return params if is_quantized(params) else quantize_params(params)
  if weights != "float32":
    raise ValueError(f"weights={weights!r}: must be 'float32' or 'int8'")
  return dequantize_params(params)


def param_bytes(params: Params) -> int:
  """Bytes a parameter tree holds (int8 values and their scales included)."""
  return sum(np.asarray(x).nbytes if not hasattr(x, "nbytes") else x.nbytes
             for x in jax.tree_util.tree_leaves(params))


class Engine:
  """Jitted streaming steps of one model (float32 or int8 params: `params_for`).

  Example::

    engine = Engine(model)
    state = engine.init_state(params, instruction_ids, batch=1)
    state, probs = engine.perceive(params, state, chunk)        # [1, 2]
    if probs[0, SPEAK] > threshold:
      state, tokens, count = engine.speak(params, state, active, n=4)
  """

  def __init__(self, model: AudioInteractionModel, sampling: SamplingConfig = SamplingConfig(),
               sound_name_tokens: Sequence[Sequence[int]] = ()):
    """`sound_name_tokens`: each sound-event class's name token ids
    (`worlds.sound_name_tokens` of the model's tokenizer), needed with
    `sampling.name_bias` > 0."""
    self.model = model
    self.sampling = sampling
    self._name_bias = None
    if sampling.name_bias > 0:
      self._name_bias = NameBias(sound_name_tokens, model.config.sound_event_classes,
                                 model.config.decoder.vocab_size, strength=sampling.name_bias,
                                 gate=sampling.name_gate, once=sampling.name_once,
                                 whole=sampling.name_whole)
    self._prefill = jax.jit(self._prefill_impl, donate_argnums=1)
    self._perceive = jax.jit(self._perceive_impl, donate_argnums=1)
    self._speak = jax.jit(self._speak_impl, donate_argnums=1, static_argnames="n")
    self._feed_audio = jax.jit(self._feed_audio_impl, donate_argnums=1)
    self._reset_rows = jax.jit(self._reset_rows_impl, donate_argnums=0)
    self._repin = jax.jit(self._repin_impl, donate_argnums=0)
    self._perceive_rows = jax.jit(self._perceive_rows_impl, donate_argnums=1)
    self._perceive_some = jax.jit(self._perceive_some_impl, donate_argnums=1)
    self._speak_some = jax.jit(self._speak_some_impl, donate_argnums=1, static_argnames="n")

  @classmethod
  def from_infer(cls, model: AudioInteractionModel, infer, tokenizer: Tokenizer) -> Engine:
    """The engine a config's (or bundle's) `infer` block asks for: its sampling, with
    the sound classes' names in `tokenizer`'s ids when replies are biased towards them."""
    sampling = SamplingConfig.from_infer(infer)
    return cls(model, sampling, sampling.name_tokens(tokenizer))

  @property
  def vocab_size(self) -> int:
    return self.model.config.decoder.vocab_size

  def init_state(self, params: Params, instruction_ids: np.ndarray | list[list[int]],
                 seed: int = 0) -> EngineState:
    """Starts `B` online streams with their instructions (`stream_format.online_prompt`).

    Args:
      instruction_ids: B lists of instruction token ids (ragged is fine).
    """
    return self._start(params, [sf.online_prompt(ids) for ids in instruction_ids], seed)

  def _check_pinned(self, prompts) -> None:
    """Warns when a prompt is longer than the decoder's pinned prefix: its end will
    leave the attention window like the rest of the stream."""
    decoder = self.model.config.decoder
    longest = max((len(p) for p in prompts), default=0)
    if decoder.pinned_prefix and longest > decoder.pinned_prefix:
      logging.getLogger(__name__).warning(
          "an online prompt of %d positions is longer than model.decoder.pinned_prefix=%d: "
          "its last %d positions leave the attention window after %d positions",
          longest, decoder.pinned_prefix, longest - decoder.pinned_prefix, decoder.window)

  def _start(self, params: Params, prompts: list[list[int]], seed: int) -> EngineState:
    self._check_pinned(prompts)
    batch, width = len(prompts), max(len(p) for p in prompts)
    tokens = np.zeros((batch, width), np.int32)
    valid = np.zeros((batch, width), bool)
    for row, prompt in enumerate(prompts):
      tokens[row, :len(prompt)], valid[row, :len(prompt)] = prompt, True
    return self._prefill(params, self.empty_state(batch, seed), jnp.asarray(tokens),
                         jnp.asarray(valid))

  def empty_state(self, batch: int, seed: int | Array = 0) -> EngineState:
    """`batch` streams with nothing fed yet (`feed` a prompt next); `seed` may be traced."""
    frames = self.model.config.encoder_frames_per_chunk
    return EngineState(self.model.init_state(batch),
                       jnp.zeros((batch, self.vocab_size), jnp.float32),
                       jax.random.key(seed), jnp.full((batch, frames), sf.PAD_ID, jnp.int32),
                       jnp.zeros((batch, self.model.config.sound_event_classes), jnp.float32),
                       jnp.zeros((batch, TURN_END_CLASSES if self.model.config.turn_end_head
                                  else 0), jnp.float32),
                       jnp.zeros((batch, self.model.config.sound_event_classes), jnp.float32),
                       jnp.zeros((batch, self.vocab_size), bool),
                       jnp.zeros((batch, self.model.config.sound_event_classes), jnp.int32))

  def feed(self, params: Params, state: EngineState, tokens: np.ndarray,
           valid: np.ndarray | None = None) -> EngineState:
    """Feeds text tokens [B, T] (e.g. a changed instruction) without writing a reply."""
    tokens = jnp.asarray(tokens, jnp.int32)
    valid = jnp.ones(tokens.shape, bool) if valid is None else jnp.asarray(valid, bool)
    return self._prefill(params, state, tokens, valid)

  def perceive(self, params: Params, state: EngineState, chunk: Array
               ) -> tuple[EngineState, Array]:
    """chunk: [B, chunk_samples] -> (state, decision probabilities [B, NUM_DECISIONS])."""
    return self._perceive(params, state, jnp.asarray(chunk, jnp.float32))

  def speak(self, params: Params, state: EngineState, active: Array, n: int,
            limit: Array | None = None) -> tuple[EngineState, Array, Array]:
    """Writes up to `n` reply tokens for the `active` [B] streams, stopping at `<eor>`.

    Args:
      limit: [B] int32, at most this many tokens in each row (e.g. what is left of a
        reply's budget); default `n`. A traced value: any limit, one compilation.
    Returns:
      (state, tokens [B, n] int32 (PAD after a stream stopped), count [B] int32).
    """
    active = jnp.asarray(active, bool)
    limit = (jnp.full(active.shape, n, jnp.int32) if limit is None
             else jnp.asarray(limit, jnp.int32))
    return self._speak(params, state, active, limit, n=n)

  def answer(self, params: Params, audio: np.ndarray, instruction_ids: list[int], *,
             max_tokens: int) -> list[int]:
    """An offline answer through the cache: `<bos> <offline> <audio>`, the clip's slots
    chunk by chunk (`feed_audio`), `<sys> instruction </sys>`, then up to `max_tokens`
    reply tokens; the layout of `stream_format.offline_prompt`.

    Args:
      audio: float32[S] 16 kHz samples (zero-padded to whole chunks; at least one chunk).
    Returns:
      The answer's token ids, `<eor>` excluded.
    """
    size = self.model.config.chunk_samples
    padded = np.zeros(max(1, -(-len(audio) // size)) * size, np.float32)
    padded[:len(audio)] = audio
    state = self._start(params, [sf.offline_prefix()], seed=0)
    for start in range(0, len(padded), size):
      state = self._feed_audio(params, state, jnp.asarray(padded[None, start:start + size]))
    state = self.feed(params, state, np.asarray([sf.instruction_tokens(instruction_ids)]))
    state, tokens, count = self.speak(params, state, np.ones(1, bool), n=max_tokens)
    answer = [int(t) for t in np.asarray(tokens[0, :int(count[0])])]
    return answer[:-1] if answer and answer[-1] == sf.EOR_ID else answer


  # ------------------------------------------------------ continuous batching
  # The rows of a batched state are independent streams, so a server keeps one
  # compiled batch of B slots and lets streams come and go: `reset_rows` starts a
  # fresh stream in some rows in place, `perceive_rows` advances only the rows that
  # have a chunk (the others keep their state bit for bit). Each compiles once per
  # batch size; prompts are padded to `prompt_width` buckets, so joining never compiles.

  def reset_rows(self, params: Params, state: EngineState, rows: dict[int, list[int]]
                 ) -> EngineState:
    """Starts fresh online streams in some rows of a batched state, in place.

    Each given row is set to the model's initial state (a jitted, donated select: no
    other row changes), then prefilled with `stream_format.online_prompt(ids)`, masked
    to those rows and padded to a `prompt_width` bucket.

    Args:
      rows: {row: instruction token ids}.
    """
    batch = state.next_logits.shape[0]
    if not rows:
      return state
    bad = sorted(r for r in rows if not 0 <= r < batch)
    if bad:
      raise ValueError(f"rows {bad} outside the batch of {batch}")
    mask = np.zeros(batch, bool)
    mask[list(rows)] = True
    state = self._reset_rows(state, jnp.asarray(mask))
    prompts = {row: sf.online_prompt(list(ids)) for row, ids in rows.items()}
    self._check_pinned(prompts.values())
    return self.feed(params, state, *padded_rows(prompts, batch))

  def repin_rows(self, params: Params, state: EngineState, rows: dict[int, list[int]]
                 ) -> EngineState:
    """Puts a changed instruction into the pinned prefix of some rows (a no-op without
    `model.decoder.pinned_prefix`).

    The pinned slots of each given row's decoder cache become those of a stream that
    started with `stream_format.online_prompt(ids)`: a query past the window then reads
    the instruction in force, not the one the stream started with, and once the change
    has left the window the row is the stream that started with the new instruction.
    Feed the change itself into the stream too (`feed`), as training streams hold it.

    Args:
      rows: {row: the new instruction's token ids}.
    """
    if not self.model.config.decoder.pinned_prefix or not rows:
      return state
    batch = state.next_logits.shape[0]
    fresh = self.reset_rows(params, self.empty_state(batch), rows)
    mask = np.zeros(batch, bool)
    mask[list(rows)] = True
    return self._repin(state, fresh.stream.decoder, jnp.asarray(mask))

  def _repin_impl(self, state: EngineState, fresh_decoder, mask) -> EngineState:
    pinned = self.model.config.decoder.pinned_prefix

    def pinned_slots(name, old, new):
      head = [slice(None)] * old.ndim
      head[layers.RING_AXIS[name]] = slice(0, pinned)
      head = tuple(head)
      rows = mask.reshape((-1,) + (1,) * (old.ndim - 1))
      return old.at[head].set(jnp.where(rows, new[head], old[head]))

    decoder = tuple({name: pinned_slots(name, old[name], new[name]) for name in old}
                    for old, new in zip(state.stream.decoder, fresh_decoder))
    return state.replace(stream=state.stream.replace(decoder=decoder))

  def perceive_rows(self, params: Params, state: EngineState, chunk: Array,
                    advance: np.ndarray) -> tuple[EngineState, Array]:
    """`perceive` for the rows where `advance` [B] is True; the others keep their state
    bit for bit (their probabilities mean nothing).

    When the advancing rows fit a smaller `row_buckets` size, only that many rows are
    computed: they are gathered from the state, stepped and scattered back (the step's
    cost follows the rows that have a chunk, not the batch).

    Args:
      chunk: [B, chunk_samples] (rows not advancing are ignored).
      advance: [B] bool.
    Returns:
      (state, decision probabilities [B, NUM_DECISIONS]).
    """
    advance = np.asarray(advance, bool)
    rows = gathered_rows(advance)
    if rows is None:
      return self._perceive_rows(params, state, jnp.asarray(chunk, jnp.float32),
                                 jnp.asarray(advance))
    return self._perceive_some(params, state, jnp.asarray(rows),
                               jnp.asarray(np.asarray(chunk)[rows], jnp.float32),
                               jnp.asarray(advance[rows]))

  def speak_rows(self, params: Params, state: EngineState, active: np.ndarray, n: int,
                 limit: np.ndarray | None = None) -> tuple[EngineState, Array, Array]:
    """`speak`, computing only the `active` [B] rows (gathered into the smallest
    `row_buckets` size that holds them, as `perceive_rows` does).

    With `SamplingConfig.temperature` > 0 the random draws depend on the bucket, so
    sampled tokens differ from `speak`'s; greedy tokens are the same.
    """
    active = np.asarray(active, bool)
    rows = gathered_rows(active)
    if rows is None:
      return self.speak(params, state, active, n, limit)
    limit = np.full(active.shape, n, np.int32) if limit is None else np.asarray(limit, np.int32)
    return self._speak_some(params, state, jnp.asarray(rows), jnp.asarray(active[rows]),
                            jnp.asarray(limit[rows]), n=n)

  def compile_rows(self, params: Params, state: EngineState, n: int) -> EngineState:
    """Compiles `perceive_rows` and `speak_rows` (`n` tokens) for every `row_buckets`
    size of the state's batch, advancing no row: every row's state stays as it was
    (only the shared PRNG key moves, as at any `speak`)."""
    batch = state.next_logits.shape[0]
    for size in row_buckets(batch):
      held = jnp.zeros(size, bool)
      chunk = jnp.zeros((size, self.model.config.chunk_samples), jnp.float32)
      limit = jnp.full(size, n, jnp.int32)
      if size == batch:
        state, _ = self._perceive_rows(params, state, chunk, held)
        state, _, _ = self._speak(params, state, held, limit, n=n)
      else:
        rows = jnp.arange(size, dtype=jnp.int32)
        state, _ = self._perceive_some(params, state, rows, chunk, held)
        state, _, _ = self._speak_some(params, state, rows, held, limit, n=n)
    return state

  # ----------------------------------------------------------------- jitted
  def _prefill_impl(self, params, state: EngineState, tokens, valid) -> EngineState:
    params = dequantize_params(params)
    stream, logits = self.model.prefill(params, state.stream, tokens, valid)
    last = jnp.maximum(valid.sum(1) - 1, 0)
    last_logits = jnp.take_along_axis(logits, last[:, None, None], axis=1)[:, 0]
    fed = valid.any(1)[:, None]
    return state.replace(stream=stream, next_logits=jnp.where(fed, last_logits, state.next_logits))

  def _feed_audio_impl(self, params, state: EngineState, chunk) -> EngineState:
    params = dequantize_params(params)
    stream, sound_event_logits = self.model.feed_audio(params, state.stream, chunk)
    return state.replace(stream=stream, heard_sounds=self._heard_sounds(
        state.heard_sounds, sound_event_logits))

  def _heard_sounds(self, heard_sounds: Array, sound_event_logits: Array | None) -> Array:
    """`EngineState.heard_sounds` after a chunk whose head gave `sound_event_logits`."""
    if sound_event_logits is None:
      return heard_sounds
    probabilities = jax.nn.softmax(sound_event_logits, axis=-1).at[:, sf.NO_SOUND_EVENT].set(0.0)
    return jnp.maximum(self.sampling.name_decay * heard_sounds, probabilities)

  def _reply_logits(self, state: EngineState) -> tuple[Array, Array]:
    """The next token's logits [B, V], with the heard sounds' names biased up where the
    decoder is naming a sound (`name_bias.NameBias`), and whether a name may start [B]."""
    if self._name_bias is None:
      return state.next_logits, jnp.zeros(state.next_logits.shape[:1], bool)
    return self._name_bias.logits(state.next_logits, state.heard_sounds, state.reply_said,
                                  state.name_progress)

  def _perceive_impl(self, params, state: EngineState, chunk):
    params = dequantize_params(params)
    stream, outputs = self.model.perceive_all(params, state.stream, chunk)
    probs = jax.nn.softmax(outputs.decision_logits, axis=-1)
    heard = jnp.argmax(outputs.ctc_logits, axis=-1).astype(jnp.int32)
    return state.replace(stream=stream, next_logits=outputs.lm_logits, heard=heard,
                         sound_events=_head_probabilities(outputs.sound_event_logits,
                                                          state.sound_events),
                         turn_end=_head_probabilities(outputs.turn_end_logits,
                                                      state.turn_end),
                         heard_sounds=self._heard_sounds(state.heard_sounds,
                                                         outputs.sound_event_logits)), probs

  def _speak_impl(self, params, state: EngineState, active, limit, n: int):
    params = dequantize_params(params)
    batch = active.shape[0]

    def write_one(i, carry):
      state, tokens, done = carry
      rng, key = jax.random.split(state.rng)
      biased, naming = self._reply_logits(state)
      token = sample_tokens(biased, key, self.sampling)
      writing = active & ~done & (i < limit)
      token = jnp.where(writing, token, sf.PAD_ID)
      stream, logits = self.model.prefill(params, state.stream, token[:, None], writing[:, None])
      next_logits = jnp.where(writing[:, None], logits[:, 0], state.next_logits)
      said, progress = state.reply_said, state.name_progress
      if self._name_bias is not None and self._name_bias.once:  # only `once` reads it
        said = said | (jax.nn.one_hot(token, self.vocab_size, dtype=bool) & writing[:, None])
        said = jnp.where((writing & (token == sf.EOR_ID))[:, None], False, said)
      if self._name_bias is not None and self._name_bias.whole:  # only whole names read it
        advanced = self._name_bias.advance(progress, token, naming, state.next_logits)
        progress = jnp.where(writing[:, None], advanced, progress)
      tokens = tokens.at[:, i].set(token)
      done = done | (token == sf.EOR_ID) | ~active
      return state.replace(stream=stream, next_logits=next_logits, rng=rng,
                           reply_said=said, name_progress=progress), tokens, done

    tokens = jnp.zeros((batch, n), jnp.int32)
    state, tokens, _ = jax.lax.fori_loop(0, n, write_one, (state, tokens, ~active))
    count = jnp.sum(tokens != sf.PAD_ID, axis=1, dtype=jnp.int32)
    return state, tokens, count

  def _reset_rows_impl(self, state: EngineState, mask) -> EngineState:
    # Every per-row field back to a new stream's; the shared PRNG key goes on.
    fresh = self.empty_state(mask.shape[0]).replace(rng=None)
    return select_rows(mask, fresh, state.replace(rng=None)).replace(rng=state.rng)

  def _perceive_rows_impl(self, params, state: EngineState, chunk, advance):
    # `model.perceive` with rows held back, without copying the big caches: the
    # decoder's tokens are invalid in held rows (not cached, positions not advanced);
    # the encoder runs on every row, then each held row gets back the few ring slots
    # the step wrote and its small states (front end, conv contexts, frame counter).
    model = self.model
    old = state.stream
    written = self._encoder_slots(old)
    saved = _ring_map(lambda x, slots, axis: _take_slots(x, slots, axis), old.encoder, written)
    stream, slots, ctc_logits, sound_event_logits, turn_end_logits = model.encode_chunk(
        params, old, chunk)
    rings = _ring_map(lambda x, slots, axis, keep: _put_slots(x, slots, axis, keep, advance),
                      stream.encoder, written, saved)
    encoder = select_rows(advance, stream.encoder, old.encoder, skip_rings=True)
    encoder = _ring_replace(encoder, rings)
    stream = stream.replace(mel=select_rows(advance, stream.mel, old.mel), encoder=encoder)
    batch = chunk.shape[0]
    tokens = jnp.broadcast_to(jnp.asarray(sf.chunk_tokens(model.config.slots_per_chunk),
                                          jnp.int32), (batch, slots.shape[1] + 2))
    no_audio = jnp.zeros((batch, 1, slots.shape[-1]), slots.dtype)
    audio_embeddings = jnp.concatenate([no_audio, slots, no_audio], axis=1)
    valid = jnp.broadcast_to(advance[:, None], tokens.shape)
    stream, lm_logits, decision_logits = model.decode_positions(params, stream, tokens, audio_embeddings,
                                                       valid, heads_at_last=True)
    probs = jax.nn.softmax(decision_logits[:, 0], axis=-1)
    heard = jnp.argmax(ctc_logits, axis=-1).astype(jnp.int32)
    return state.replace(stream=stream,
                         next_logits=jnp.where(advance[:, None], lm_logits[:, 0],
                                               state.next_logits),
                         heard=jnp.where(advance[:, None], heard, state.heard),
                         sound_events=jnp.where(
                             advance[:, None],
                             _head_probabilities(sound_event_logits, state.sound_events),
                             state.sound_events),
                         turn_end=jnp.where(
                             advance[:, None],
                             _head_probabilities(turn_end_logits, state.turn_end),
                             state.turn_end),
                         heard_sounds=jnp.where(
                             advance[:, None],
                             self._heard_sounds(state.heard_sounds, sound_event_logits),
                             state.heard_sounds)), probs

  def _perceive_some_impl(self, params, state: EngineState, rows, chunk, advance):
    sub, probs = self._perceive_rows_impl(params, take_rows(state, rows), chunk, advance)
    batch = state.next_logits.shape[0]
    probs = jnp.zeros((batch,) + probs.shape[1:], probs.dtype).at[rows].set(probs)
    return put_rows(state, rows, sub), probs

  def _speak_some_impl(self, params, state: EngineState, rows, active, limit, n: int):
    sub, tokens, count = self._speak_impl(params, take_rows(state, rows), active, limit, n)
    batch = state.next_logits.shape[0]
    tokens = jnp.full((batch, n), sf.PAD_ID, tokens.dtype).at[rows].set(tokens)
    count = jnp.zeros((batch,), count.dtype).at[rows].set(count)
    return put_rows(state, rows, sub), tokens, count

  def _encoder_slots(self, stream) -> dict[int, Array]:
    """Per ring size: [B, F] ring slots the next encoder step writes (position % size)."""
    frames = self.model.config.encoder_frames_per_chunk
    positions = stream.encoder["next_frame"][:, None] + jnp.arange(frames, dtype=jnp.int32)
    return {ring["pos"].shape[1]: jnp.mod(positions, ring["pos"].shape[1])
            for ring in _rings(stream.encoder)}


def _head_probabilities(logits: Array | None, previous: Array) -> Array:
  """A chunk head's class probabilities [B, K]; `previous` ([B, 0]) without the head."""
  return previous if logits is None else jax.nn.softmax(logits, axis=-1)


def _rings(encoder) -> list[dict]:
  return [block["attention"] for block in encoder["blocks"]]


def _ring_map(fn, encoder, written, *others):
  """fn(leaf, slots [B, F], ring axis, *others' leaf) over every ring cache leaf."""
  out = []
  for i, ring in enumerate(_rings(encoder)):
    size = ring["pos"].shape[1]
    out.append({name: fn(leaf, written[size], layers.RING_AXIS[name],
                         *(other[i][name] for other in others))
                for name, leaf in ring.items()})
  return out


def _ring_replace(encoder, rings):
  blocks = tuple({**block, "attention": ring} for block, ring in zip(encoder["blocks"], rings))
  return {**encoder, "blocks": blocks}


def _take_slots(x: Array, slots: Array, axis: int) -> Array:
  return jax.vmap(lambda row, s: jnp.take(row, s, axis=axis - 1))(x, slots)


def _put_slots(x: Array, slots: Array, axis: int, saved: Array, advance: Array) -> Array:
  """Row by row: the step's values at `slots` where advanced, else the `saved` ones."""

  def put(row, s, old, keep):
    new = jnp.take(row, s, axis=axis - 1)
    value = jnp.where(keep, new, old)
    index = (slice(None),) * (axis - 1) + (s,)
    return row.at[index].set(value)

  return jax.vmap(put)(x, slots, saved, advance)


def row_buckets(batch: int) -> list[int]:
  """The sub-batch sizes `perceive_rows` / `speak_rows` compile for a batch of `batch`
  rows: B/8, B/4, B/2 and B (at least 1), so a step computes at most twice the rows that
  need it (or B/8) with four compilations per step."""
  return sorted({max(1, batch >> shift) for shift in (3, 2, 1, 0)})


def gathered_rows(mask: np.ndarray) -> np.ndarray | None:
  """The rows a gathered step computes for `mask` [B]: the masked rows, padded with
  unmasked ones (which the step leaves as they are) up to the smallest `row_buckets`
  size that holds them; None when that is the whole batch."""
  batch = mask.shape[0]
  rows = np.flatnonzero(mask)
  bucket = next(size for size in row_buckets(batch) if size >= len(rows))
  if bucket == batch:
    return None
  return np.concatenate([rows, np.flatnonzero(~mask)[:bucket - len(rows)]]).astype(np.int32)


def take_rows(state: EngineState, rows: Array) -> EngineState:
  """The sub-state of `rows` [R] (every leaf but the shared PRNG key has the batch first)."""
  sub = jax.tree_util.tree_map(lambda x: x[rows], state.replace(rng=None))
  return sub.replace(rng=state.rng)


def put_rows(state: EngineState, rows: Array, sub: EngineState) -> EngineState:
  """`state` with `rows` [R] replaced by the sub-state `sub` (and `sub`'s PRNG key)."""
  merged = jax.tree_util.tree_map(lambda x, y: x.at[rows].set(y), state.replace(rng=None),
                                  sub.replace(rng=None))
  return merged.replace(rng=sub.rng)


PROMPT_BUCKET = 32  # prompt widths are padded to a multiple of this (one compile each)


def prompt_width(length: int, bucket: int = PROMPT_BUCKET) -> int:
  """The padded width of `length` tokens: a multiple of `bucket`, at least `bucket`."""
  return max(bucket, -(-int(length) // bucket) * bucket)


def padded_rows(tokens_per_row: dict[int, list[int]], batch: int
                ) -> tuple[np.ndarray, np.ndarray]:
  """{row: tokens} -> (tokens [B, W], valid [B, W]), W a `prompt_width` bucket; rows not
  given are all invalid (they do not advance)."""
  width = prompt_width(max(len(t) for t in tokens_per_row.values()))
  tokens = np.zeros((batch, width), np.int32)
  valid = np.zeros((batch, width), bool)
  for row, ids in tokens_per_row.items():
    tokens[row, :len(ids)], valid[row, :len(ids)] = ids, True
  return tokens, valid


def select_rows(mask: Array, new, old, skip_rings: bool = False):
  """Per leaf of two pytrees with the batch on axis 0: row i of `new` where mask[i],
  else row i of `old` (`skip_rings`: leaves of ring caches are taken from `new`)."""

  def pick(a, b):
    return jnp.where(mask.reshape((-1,) + (1,) * (a.ndim - 1)), a, b)

  if skip_rings and isinstance(new, dict) and "blocks" in new:
    rest = {k: v for k, v in new.items() if k != "blocks"}
    picked = jax.tree_util.tree_map(pick, rest, {k: old[k] for k in rest})
    blocks = tuple({name: (value if name == "attention" else
                           jax.tree_util.tree_map(pick, value, old_block[name]))
                    for name, value in block.items()}
                   for block, old_block in zip(new["blocks"], old["blocks"]))
    return {**picked, "blocks": blocks}
  return jax.tree_util.tree_map(pick, new, old)
