"""The Grain input pipeline: stored examples -> static-shape batches -> global `jax.Array`s.

Shape of the pipeline (per JAX process)::

  per ability a (or once, without a mixture):
    MapDataset.source(examples of a) -> shuffle(seed_a) -> repeat(num_epochs)
      -> shard by process: [process_index::process_count]
  MapDataset.mix(abilities, weights)            (only with a mixture)
  -> map(select fields)  -> [random_map(hold replies back), `reply_delay_chunks` > 0]
  -> to_iter_dataset(read threads)
  -> fit (truncate online streams at a chunk boundary, else drop; counted)
  -> pad one example per row  |  first-fit pack several examples per row
  -> batch(batch_size, drop_remainder=True)
  -> [mp_prefetch(num_workers) if num_workers > 0] -> thread prefetch

Sharding comes before mixing on purpose: `MapDataset.mix` interleaves its inputs in
a fixed periodic pattern, so slicing the mixture by process would hand whole
abilities to single processes (weights 1:1 -> process 0 gets only ability A).
Sharding each ability stream keeps every process at the configured weights, and
the processes' elements stay disjoint.

Every stage is a Grain dataset whose iterator state is a small JSON-able dict, so
``it.get_state()`` / ``it.set_state(state)`` resume exactly (tested with two
simulated processes). Save it with Orbax through Grain's handler::

  ocp.args.Composite(..., data=grain.checkpoint.CheckpointSave(it))      # save
  ocp.args.Composite(..., data=grain.checkpoint.CheckpointRestore(it))   # restore

(`grain.checkpoint.CheckpointHandler` writes ``process_{i}-of-{n}.json`` per process.)

Rows (`BATCH_FIELDS`): every row has the static shapes of `PipelineConfig`:
L = `max_len` positions, S = `max_chunks * chunk_samples` audio samples,
C = `max_chunks` chunks and G segments (1 when padding, `max_segments` when
packing). Padding values: tokens/lm_targets PAD_ID, audio_slot_index and
decision_targets NO_INDEX, lm_weights 0, audio 0, segment ids 0.

Too long examples (more than L positions or C chunks): an *online* stream is cut at
the last chunk boundary that fits — labels are causal, so a prefix of a stream is a
valid stream and its loss equals the original's loss on the kept positions (a reply
running past the cut simply has no ``<eor>`` in the row). Offline examples (audio,
then instruction, then answer) cannot be cut and are dropped, as is anything with
`overflow="drop"`. `PipelineCounters` counts both.

Packing (`packing=True`): Grain's first-fit packer places each example into the
first row with room for its positions, audio samples and a free segment slot.
Per row, segment s (1-based, in placement order) is marked by ``segment_ids == s``
over positions and ``chunk_segment_ids == s`` over chunks; ``positions`` restart at
0 in every segment (use them for RoPE); audio is concatenated in segment order, so
``audio_slot_index`` of segment s is offset by ``slots_per_chunk`` times the chunks of
segments 1..s-1 (it still indexes the row's audio slots, chunk-major), and the
transcripts likewise (``transcript_segment_ids == s``). Nothing may cross segments:
`AudioInteractionModel.forward(segment_ids=, chunk_segment_ids=)` and the per-segment
CTC of `train.losses` give each example exactly what a row of its own gives it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import grain
import jax
import numpy as np

from audio_interaction.data import reply_delay, storage
from audio_interaction.data.tokenizer import Tokenizer
from audio_interaction import stream_format as sf

# Per-position fields of `EXAMPLE_FIELDS` and the value that pads them.
_POSITION_FIELDS: dict[str, int | float] = {
    "tokens": sf.PAD_ID,
    "audio_slot_index": sf.NO_INDEX,
    "lm_targets": sf.PAD_ID,
    "lm_weights": 0.0,
    "decision_targets": sf.NO_INDEX,
}

# What one row of a batch holds (a batch adds a leading B). Dims: L = max_len,
# S = max_chunks * chunk_samples, C = max_chunks, G = segments per row.
BATCH_FIELDS: dict[str, tuple[str, str]] = {
    "tokens": ("int32[L]", "token ids, PAD_ID after the last segment"),
    "audio_slot_index": ("int32[L]", "audio slot (row chunk * k + j) or NO_INDEX"),
    "lm_targets": ("int32[L]", "next-token target (PAD_ID where none)"),
    "lm_weights": ("float32[L]", "LM loss weight, 0 on padding"),
    "decision_targets": ("int32[L]", "Decision at <decide> positions, else NO_INDEX"),
    "segment_ids": ("int32[L]", "1.. for the example a position belongs to, 0 = padding"),
    "positions": ("int32[L]", "position within its segment (0 on padding)"),
    "audio": ("float32[S]", "16 kHz audio of the row's segments, concatenated, 0-padded"),
    "chunk_segment_ids": ("int32[C]", "segment of each audio chunk, 0 = padding chunk"),
    "segment_num_chunks": ("int32[G]", "chunks of each segment (0 for unused segments)"),
    "segment_example_index": ("int32[G]", "example index in the split, -1 if unused"),
    "transcript": ("int32[N]", "tokens heard in the row's audio, in order, PAD_ID after"),
    "transcript_segment_ids": ("int32[N]", "segment of each transcript token, 0 = padding"),
    "sound_events": ("int32[C]", "sound event of each chunk (NO_SOUND_EVENT, 1.. a class), "
                     "NO_INDEX on padding chunks"),
}


CTC_TARGETS = ("tokens", "characters")


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
  """Everything that shapes the batches. Shapes are static, so nothing recompiles.

  Attributes:
    batch_size: rows per batch *per process*.
    max_len: L, positions per row.
    max_chunks: C, audio chunks per row (S = C * chunk_samples samples).
    max_transcript: N, transcript tokens per row (targets of the CTC loss); an
      online stream whose transcript is longer is cut at an earlier chunk.
    ctc_targets: "tokens" (the transcript as stored) or "characters" (respelled one
      character per id, `Tokenizer.spell`; `make_dataset` then needs the tokenizer).
    chunk_samples: audio samples per chunk (sample_rate * chunk_ms / 1000).
    slots_per_chunk: k, audio slots per chunk (offsets packed slot indices).
    seed: shuffle seed (each ability stream derives its own).
    num_epochs: passes over the data; None repeats forever. With a mixture, each
      ability repeats this often and the mixture ends with the first one used up.
    mixture: {"ability": weight}; None reads all examples uniformly. Abilities of
      the split missing from the mixture are not read.
    packing: first-fit pack several examples per row instead of one padded example.
    max_segments: G when packing, most examples in one row.
    packing_bins: rows the packer fills at once (default batch_size); more bins
      pack tighter but mix examples from further apart.
    overflow: "truncate" (cut online streams at a chunk boundary, drop offline
      ones) or "drop" (drop every example that does not fit).
    read_threads: threads reading and decoding records.
    read_buffer: decoded examples buffered ahead by the read threads.
    prefetch_batches: batches a background thread prepares ahead (0 = none).
    num_workers: Grain worker processes (0 = none; they can exhaust /dev/shm).
    reply_delay_chunks: hold completed replies back up to this many chunks, drawn
      anew each epoch (`data/reply_delay.py`: the context a timer-driven policy gives
      the model); 0 = never (evaluation batches).
    reply_delay_probability: chance that a reply that can be held is held.
  """

  batch_size: int
  max_len: int
  max_chunks: int
  chunk_samples: int
  slots_per_chunk: int
  max_transcript: int = 64
  ctc_targets: str = "tokens"
  seed: int = 0
  num_epochs: int | None = None
  mixture: Mapping[str, float] | None = None
  packing: bool = False
  max_segments: int = 8
  packing_bins: int | None = None
  overflow: str = "truncate"
  read_threads: int = 2
  read_buffer: int = 32
  prefetch_batches: int = 2
  num_workers: int = 0
  reply_delay_chunks: int = 0
  reply_delay_probability: float = 0.5

  def __post_init__(self):
    if self.overflow not in ("truncate", "drop"):
      raise ValueError(f"overflow must be 'truncate' or 'drop', got {self.overflow!r}")
    if self.ctc_targets not in CTC_TARGETS:
      raise ValueError(f"ctc_targets must be one of {CTC_TARGETS}, got {self.ctc_targets!r}")
    for name in ("batch_size", "max_len", "max_chunks", "chunk_samples", "slots_per_chunk",
                 "max_segments", "max_transcript"):
      if getattr(self, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
    if self.reply_delay_chunks < 0 or not 0 <= self.reply_delay_probability <= 1:
      raise ValueError(f"reply_delay_chunks must be >= 0 and reply_delay_probability in "
                       f"[0, 1], got {self.reply_delay_chunks}, {self.reply_delay_probability}")
    if self.mixture is not None:
      if any(w < 0 for w in self.mixture.values()) or not any(
          w > 0 for w in self.mixture.values()):
        raise ValueError(f"mixture weights must be >= 0, one of them > 0: {self.mixture}")

  @property
  def num_segments(self) -> int:
    """G: segments per row."""
    return self.max_segments if self.packing else 1

  @property
  def max_samples(self) -> int:
    """S: audio samples per row."""
    return self.max_chunks * self.chunk_samples

  @classmethod
  def from_config(cls, config, **overrides) -> PipelineConfig:
    """Reads an experiment config: audio/model fields, then `config.data` if present.

    `chunk_samples` comes from ``config.audio`` and `slots_per_chunk` from
    ``config.model``; any field of this class may be set in a ``config.data``
    block (e.g. ``config.data.batch_size``), and `overrides` win over both.
    """
    values: dict[str, Any] = {
        "chunk_samples": sf.config_chunk_samples(config),
        "slots_per_chunk": config.model.slots_per_chunk,
        "seed": config.seed,
    }
    names = {f.name for f in dataclasses.fields(cls)}
    if "data" in config:
      for key, value in config.data.items():
        if key in names:
          values[key] = dict(value) if key == "mixture" and value is not None else value
    values.update(overrides)
    return cls(**values)


@dataclasses.dataclass
class PipelineCounters:
  """Examples processed by the fit stage so far (including those prefetched).

  Not part of the iterator state: counts restart with a restored iterator, and
  stay in the worker processes when `num_workers > 0`.
  """

  examples: int = 0
  truncated: int = 0
  dropped: int = 0


# ----------------------------------------------------------------------------
# Per-example transformations (plain functions of NumPy dicts; tested directly).


def select_fields(record: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Keeps what batches need from a stored record (drops the metadata strings)."""
  example = {name: np.asarray(record[name]) for name in _POSITION_FIELDS}
  example["audio"] = np.asarray(record["audio"])
  example["num_chunks"] = np.asarray(record["num_chunks"], np.int32)
  example["transcript"] = np.asarray(record["transcript"], np.int32)
  example["transcript_chunks"] = np.asarray(record["transcript_chunks"], np.int32)
  example["sound_events"] = np.asarray(record["sound_events"], np.int32)
  example["example_index"] = np.asarray(record[storage.INDEX_FIELD], np.int32)
  return example


def spell_transcript(example: Mapping[str, np.ndarray], tokenizer: Tokenizer
                     ) -> dict[str, np.ndarray]:
  """The example with its transcript respelled one character per id (`Tokenizer.spell`).

  Every token of a word carries the chunk the word ends in, so each word's characters
  get that chunk too, and `fit_example` cuts a stream between whole words as before.

  Args:
    example: from `select_fields`; transcript int32[N], transcript_chunks int32[N].
  Returns:
    A copy with transcript int32[N'] and transcript_chunks int32[N'] (N' >= N).
  """
  tokens, chunks = example["transcript"], example["transcript_chunks"]
  words, word_chunks = [], []
  # A run of equal chunks holds whole words (a word's tokens all carry its chunk): one
  # decode per run, not one per token.
  runs = np.flatnonzero(np.diff(chunks)) + 1
  for run_tokens, run_chunks in zip(np.split(tokens, runs), np.split(chunks, runs)):
    run_words = tokenizer.decode(run_tokens).split()  # none for an empty transcript
    words += run_words
    word_chunks += [int(c) for c in run_chunks[:1]] * len(run_words)
  spelled = tokenizer.spell(words)
  out = dict(example)
  out["transcript"] = np.asarray([i for ids in spelled for i in ids], np.int32)
  out["transcript_chunks"] = np.asarray(
      [c for ids, c in zip(spelled, word_chunks) for _ in ids], np.int32)
  return out


def fit_example(example: Mapping[str, np.ndarray], config: PipelineConfig,
                counters: PipelineCounters | None = None) -> dict[str, np.ndarray] | None:
  """Returns the example if it fits a row, its longest fitting prefix, or None.

  Args:
    example: from `select_fields`: per-position int32/float32[L_ex], audio
      float32[num_chunks * chunk_samples], num_chunks and example_index int32[].
    config: gives max_len, max_chunks, chunk_samples and the overflow policy.
    counters: incremented (examples, truncated, dropped) if given.

  Returns:
    The example unchanged if L_ex <= max_len, num_chunks <= max_chunks and its
    transcript <= max_transcript; else, for an online stream with
    `overflow="truncate"`, the prefix holding the most whole chunks (with their
    replies and the words that ended in them) that fits; else None.
  """
  tokens = example["tokens"]
  length, num_chunks = len(tokens), int(example["num_chunks"])
  if len(example["audio"]) != num_chunks * config.chunk_samples:
    raise ValueError(
        f"example {int(example['example_index'])}: {len(example['audio'])} audio samples "
        f"for {num_chunks} chunks of {config.chunk_samples}; is chunk_samples right?")
  if counters is not None:
    counters.examples += 1
  heard_chunks = example["transcript_chunks"]
  if (length <= config.max_len and num_chunks <= config.max_chunks
      and len(heard_chunks) <= config.max_transcript):
    return dict(example)
  online = length > 1 and tokens[1] == sf.ONLINE_ID
  keep = 0
  if config.overflow == "truncate" and online:
    starts = np.flatnonzero(tokens == sf.AUDIO_ID)
    if len(starts) != num_chunks:
      raise ValueError(
          f"example {int(example['example_index'])}: online stream with {len(starts)} "
          f"<audio> tokens but num_chunks={num_chunks}")
    # ends[c] = positions taken by the prefix holding chunks 0..c-1 and their replies.
    ends = np.append(starts, length)
    # heard[c] = transcript tokens of words that ended within chunks 0..c-1.
    heard = np.searchsorted(heard_chunks, np.arange(num_chunks + 1), side="left")
    fits = [c for c in range(1, min(num_chunks, config.max_chunks) + 1)
            if ends[c] <= config.max_len and heard[c] <= config.max_transcript]
    keep = fits[-1] if fits else 0
  if not keep:
    if counters is not None:
      counters.dropped += 1
    return None
  if counters is not None:
    counters.truncated += 1
  cut = int(np.append(np.flatnonzero(tokens == sf.AUDIO_ID), length)[keep])
  out = {name: example[name][:cut] for name in _POSITION_FIELDS}
  out["audio"] = example["audio"][:keep * config.chunk_samples]
  out["sound_events"] = example["sound_events"][:keep]
  out["num_chunks"] = np.asarray(keep, np.int32)
  heard = heard_chunks < keep
  out["transcript"] = example["transcript"][heard]
  out["transcript_chunks"] = heard_chunks[heard]
  out["example_index"] = example["example_index"]
  return out


def pad_example(example: Mapping[str, np.ndarray],
                config: PipelineConfig) -> dict[str, np.ndarray]:
  """One fitted example -> one row of `BATCH_FIELDS` with G = 1."""
  length, num_chunks = len(example["tokens"]), int(example["num_chunks"])
  row = {}
  for name, pad in _POSITION_FIELDS.items():
    value = example[name]
    row[name] = np.full(config.max_len, pad, value.dtype)
    row[name][:length] = value
  row["segment_ids"] = (np.arange(config.max_len) < length).astype(np.int32)
  row["positions"] = np.where(row["segment_ids"] > 0, np.arange(config.max_len), 0).astype(np.int32)
  row["audio"] = np.zeros(config.max_samples, np.float32)
  row["audio"][:len(example["audio"])] = example["audio"]
  row["chunk_segment_ids"] = (np.arange(config.max_chunks) < num_chunks).astype(np.int32)
  row["sound_events"] = np.full(config.max_chunks, sf.NO_INDEX, np.int32)
  row["sound_events"][:num_chunks] = example["sound_events"]
  row["segment_num_chunks"] = np.asarray([num_chunks], np.int32)
  row["segment_example_index"] = np.asarray([example["example_index"]], np.int32)
  row["transcript"] = np.full(config.max_transcript, sf.PAD_ID, np.int32)
  row["transcript"][:len(example["transcript"])] = example["transcript"]
  row["transcript_segment_ids"] = (row["transcript"] != sf.PAD_ID).astype(np.int32)
  return row


def _packable(example: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  # The packer concatenates along axis 0, so per-example scalars become length-1
  # arrays and end up as one entry per segment.
  out = {name: example[name] for name in (*_POSITION_FIELDS, "audio", "transcript",
                                          "sound_events")}
  out["num_chunks"] = np.reshape(example["num_chunks"], (1,)).astype(np.int32)
  out["example_index"] = np.reshape(example["example_index"], (1,)).astype(np.int32)
  return out


def _packing_structs(config: PipelineConfig) -> tuple[dict[str, int], dict[str, Any]]:
  lengths = {name: config.max_len for name in _POSITION_FIELDS}
  lengths.update(audio=config.max_samples, num_chunks=config.max_segments,
                 example_index=config.max_segments, transcript=config.max_transcript,
                 sound_events=config.max_chunks)
  padding = dict(_POSITION_FIELDS, audio=0.0, num_chunks=0, example_index=-1,
                 transcript=sf.PAD_ID, sound_events=sf.NO_INDEX)
  return lengths, padding


def finish_packed_row(packed: Mapping[str, np.ndarray],
                      config: PipelineConfig) -> dict[str, np.ndarray]:
  """Output of Grain's packer (values + `{field}_segment_ids/_positions`) -> a row."""
  segment_ids = packed["tokens_segment_ids"]
  num_chunks = packed["num_chunks"]
  # Chunks before segment s (1-based) = sum of num_chunks[:s-1].
  chunk_offset = np.concatenate([[0], np.cumsum(num_chunks)]).astype(np.int32)
  slot = packed["audio_slot_index"]
  has_slot = (slot != sf.NO_INDEX) & (segment_ids > 0)
  offset = chunk_offset[np.maximum(segment_ids - 1, 0)] * config.slots_per_chunk
  row = {name: packed[name] for name in _POSITION_FIELDS}
  row["audio_slot_index"] = np.where(has_slot, slot + offset, sf.NO_INDEX).astype(np.int32)
  row["segment_ids"] = segment_ids.astype(np.int32)
  row["positions"] = packed["tokens_positions"].astype(np.int32)
  row["audio"] = packed["audio"]
  # Audio of every segment is whole chunks, so each chunk lies in one segment.
  row["chunk_segment_ids"] = packed["audio_segment_ids"][::config.chunk_samples].astype(np.int32)
  row["segment_num_chunks"] = num_chunks.astype(np.int32)
  row["sound_events"] = packed["sound_events"].astype(np.int32)
  row["segment_example_index"] = packed["example_index"].astype(np.int32)
  # Segments' transcripts follow each other like their audio does; each segment is
  # its own CTC target (`train.losses.ctc_loss`).
  row["transcript"] = packed["transcript"].astype(np.int32)
  row["transcript_segment_ids"] = packed["transcript_segment_ids"].astype(np.int32)
  return row


# ----------------------------------------------------------------------------
# The dataset.


class _Subset(Sequence):
  """The examples `indices` of a random-access source, as a random-access source."""

  def __init__(self, source: Sequence[Any], indices: np.ndarray):
    self._source = source
    self._indices = np.asarray(indices, np.int64)

  def __len__(self) -> int:
    return len(self._indices)

  def __getitem__(self, index: int) -> Any:
    return self._source[int(self._indices[index])]

  def __getitems__(self, indices: Sequence[int]) -> Sequence[Any]:
    keys = [int(self._indices[i]) for i in indices]
    if hasattr(self._source, "__getitems__"):
      return self._source.__getitems__(keys)
    return [self._source[k] for k in keys]


def _abilities_of_records(source: Sequence[Mapping[str, Any]]) -> list[str] | None:
  """The `ability` of every record of an in-memory source (list or tuple), else None.

  Records in memory (e.g. ``make_example(i, seed)`` dicts) carry their ability;
  reading it is free. A stored split is not read here (that would decode every
  record): its abilities come from `storage.read_split_metadata`.
  """
  if not isinstance(source, (list, tuple)):
    return None
  if not all(isinstance(r, Mapping) and "ability" in r for r in source):
    return None
  return [r["ability"].decode() if isinstance(r["ability"], bytes) else str(r["ability"])
          for r in source]


# `_derive_seed` stream of the reply delays (the ability streams use 0, 1, 2, ...).
REPLY_DELAY_STREAM = 1_000_003


def _derive_seed(seed: int, stream: int) -> int:
  return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


def _epochs_and_shard(ds: grain.MapDataset, config: PipelineConfig, shard_index: int,
                      shard_count: int) -> grain.MapDataset:
  ds = ds.repeat(config.num_epochs)
  if config.num_epochs is not None:
    # Equal length on every process, so no process runs out of batches first
    # (drops at most shard_count - 1 elements).
    ds = ds[:len(ds) // shard_count * shard_count]
  return ds[shard_index::shard_count]


def make_dataset(
    source: Sequence[Mapping[str, Any]],
    config: PipelineConfig,
    *,
    abilities: Sequence[str] | np.ndarray | None = None,
    shard_index: int | None = None,
    shard_count: int | None = None,
    counters: PipelineCounters | None = None,
    tokenizer: Tokenizer | None = None,
) -> grain.IterDataset:
  """Builds the per-process pipeline over a random-access source of stored examples.

  Args:
    source: e.g. `storage.load_split(out_dir, split)`: ``source[i]`` is a stored
      record (EXAMPLE_FIELDS + `example_index`).
    config: shapes, seed, epochs, mixture, packing, prefetching.
    abilities: ability of every example (``len(source)`` strings), needed with
      a mixture (`storage.read_split_metadata(...).abilities`); by default, for a
      list or tuple of records, their own ``ability`` fields.
    shard_index: this process's shard; default `jax.process_index()`.
    shard_count: number of shards; default `jax.process_count()`.
    counters: filled by the fit stage (truncated / dropped examples).
    tokenizer: the data's tokenizer; needed with `config.ctc_targets="characters"`.

  Returns:
    An `IterDataset` of batches: dicts of `BATCH_FIELDS` with a leading
    `config.batch_size` dim. Its iterator's ``get_state()`` is JSON-able.
  """
  if config.ctc_targets == "characters" and tokenizer is None:
    raise ValueError("ctc_targets='characters' respells transcripts: pass the data's tokenizer")
  shard_index = jax.process_index() if shard_index is None else shard_index
  shard_count = jax.process_count() if shard_count is None else shard_count
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index={shard_index} not in [0, shard_count={shard_count})")

  if config.mixture is None:
    ds = grain.MapDataset.source(source).shuffle(_derive_seed(config.seed, 0))
    ds = _epochs_and_shard(ds, config, shard_index, shard_count)
  else:
    if abilities is None:
      abilities = _abilities_of_records(source)
    if abilities is None or len(abilities) != len(source):
      raise ValueError(
          f"a mixture ({dict(config.mixture)}) needs the ability of every example: pass "
          f"`abilities` ({'none' if abilities is None else len(abilities)} given for "
          f"{len(source)} examples; `storage.read_split_metadata(out_dir, split).abilities`, "
          "or use `load_dataset`), give in-memory records an `ability` field, or read "
          "uniformly with `mixture=None` (config.data.mixture=None)")
    abilities = np.asarray(abilities)
    streams, weights = [], []
    for stream, (ability, weight) in enumerate(sorted(config.mixture.items())):
      if weight == 0:
        continue
      indices = np.flatnonzero(abilities == ability)
      if not len(indices):
        raise ValueError(
            f"mixture ability {ability!r} has no examples; the split has "
            f"{sorted(set(abilities.tolist()))}")
      ds = grain.MapDataset.source(_Subset(source, indices))
      ds = ds.shuffle(_derive_seed(config.seed, stream + 1))
      streams.append(_epochs_and_shard(ds, config, shard_index, shard_count))
      weights.append(float(weight))
    ds = grain.MapDataset.mix(streams, weights) if len(streams) > 1 else streams[0]

  ds = ds.map(select_fields)
  if config.reply_delay_chunks > 0:
    ds = ds.random_map(
        lambda example, rng: reply_delay.delay_replies(
            example, rng, max_delay_chunks=config.reply_delay_chunks,
            probability=config.reply_delay_probability),
        seed=_derive_seed(config.seed, REPLY_DELAY_STREAM))
  if config.ctc_targets == "characters":
    ds = ds.map(lambda example: spell_transcript(example, tokenizer))
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=config.read_threads,
                                            prefetch_buffer_size=config.read_buffer))
  ds = ds.map(lambda example: fit_example(example, config, counters))
  ds = ds.filter(lambda example: example is not None)
  if config.packing:
    lengths, padding = _packing_structs(config)
    ds = ds.map(_packable)
    ds = grain.experimental.FirstFitPackIterDataset(
        ds, length_struct=lengths, padding_struct=padding,
        num_packing_bins=config.packing_bins or config.batch_size,
        max_sequences_per_bin=config.max_segments,
        # Input is already shuffled; keeping bin order keeps the output easy to audit.
        shuffle_bins=False)
    ds = ds.map(lambda packed: finish_packed_row(packed, config))
  else:
    ds = ds.map(lambda example: pad_example(example, config))
  ds = ds.batch(config.batch_size, drop_remainder=True)
  if config.num_workers > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=config.num_workers))
  if config.prefetch_batches > 0:
    ds = grain.experimental.ThreadPrefetchIterDataset(
        ds, prefetch_buffer_size=config.prefetch_batches)
  return ds


def load_dataset(out_dir: str | os.PathLike, split: str, config: PipelineConfig,
                 **kwargs) -> grain.IterDataset:
  """`make_dataset` over a split written by `storage.build_split`."""
  source = storage.load_split(out_dir, split)
  if config.mixture is not None and "abilities" not in kwargs:
    kwargs["abilities"] = storage.read_split_metadata(out_dir, split).abilities
  return make_dataset(source, config, **kwargs)


def batch_spec(config: PipelineConfig, num_processes: int = 1) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes and dtypes of a batch: per process, or global for `num_processes` processes."""
  dims = {"L": config.max_len, "S": config.max_samples, "C": config.max_chunks,
          "G": config.num_segments, "N": config.max_transcript}
  spec = {}
  for name, (field, _) in BATCH_FIELDS.items():
    dtype, _, dim = field.partition("[")
    spec[name] = jax.ShapeDtypeStruct(
        (config.batch_size * num_processes, dims[dim.rstrip("]")]), np.dtype(dtype))
  return spec


def make_global_batch(local_batch: Mapping[str, np.ndarray], mesh: jax.sharding.Mesh,
                      pspec: jax.sharding.PartitionSpec | Mapping[str, Any],
                      ) -> dict[str, jax.Array]:
  """Assembles every process's local batch into global `jax.Array`s.

  Args:
    local_batch: this process's batch, leaves [B_local, ...].
    mesh: the device mesh.
    pspec: one `PartitionSpec` for every leaf (e.g. ``P(("data", "fsdp"))`` shards
      the batch dim), or a dict of specs with the keys of `local_batch`.

  Returns:
    Leaves of global shape [B_local * process_count, ...] (for a batch-sharded
    spec), sharded by ``NamedSharding(mesh, spec)``.
  """
  def put(name: str, value: np.ndarray) -> jax.Array:
    spec = pspec if isinstance(pspec, jax.sharding.PartitionSpec) else pspec[name]
    sharding = jax.sharding.NamedSharding(mesh, spec)
    return jax.make_array_from_process_local_data(sharding, value)

  return {name: put(name, value) for name, value in local_batch.items()}
