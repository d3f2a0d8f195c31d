"""The generated corpus: sub-task streams → serialized examples, one per index.

`CorpusExamples(config, split)` is the `make_example(index, seed)` that
`storage.build_split` calls (in worker processes, so it is picklable and opens its
TTS engines and sound bank lazily), or the Beam workers of
`beam_storage.build_split_beam` (`build_corpus_split(runner=...)`). The audio depends
on which engines and sound packages are installed, so a Beam build pins the ones the
driver has (`CorpusAssets`) and every worker checks it has them before writing. Example i of a split is sub-task
`subtasks[i % len(subtasks)]` built from seed `(seed, i)`, so every split covers
the sub-tasks evenly and any example can be rebuilt from its index alone.
Held-out splits use held-out voices, recordings and world items.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import socket
import zlib
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np

from audio_interaction import config_lib
from audio_interaction import stream_format as sf
from audio_interaction.corpus import serialize as serialize_lib
from audio_interaction.data import beam_storage, storage
from audio_interaction.corpus import (
    effects, real_audio, real_speech, sounds, speech, tasks, texts, worlds)
from audio_interaction.corpus.timeline import Timeline
from audio_interaction.data.tokenizer import Tokenizer, train_sentencepiece

TOKENIZER_DIR = "tokenizer"
# Corpus split name -> the voices/recordings/world items it draws from.
SOURCE_SPLIT = {"train": worlds.TRAIN, "eval": worlds.HELDOUT, "test": worlds.HELDOUT}


def tokenizer_path(config: ml_collections.ConfigDict) -> pathlib.Path:
  return pathlib.Path(config.data.dir) / TOKENIZER_DIR


def build_tokenizer(config: ml_collections.ConfigDict, examples_per_task: int = 40
                    ) -> Tokenizer:
  """Trains the corpus SentencePiece model (vocab ≤ the decoder's) next to the data.

  Reuses the saved one when it exists, so rebuilding a split never changes ids.
  """
  directory = tokenizer_path(config)
  if directory.exists():
    return Tokenizer.load(directory)
  texts = tasks.training_texts(examples_per_task)
  return train_sentencepiece(texts, config.model.decoder.vocab_size, directory)


class MissingAssets(RuntimeError):
  """A machine lacks a speech engine, voice or sound package the corpus is built from."""


@dataclasses.dataclass(frozen=True)
class CorpusAssets:
  """What a split's audio is drawn from: without all of it a worker writes other audio.

  Attributes:
    engines: speech engine names (`speech.ENGINE_TYPES` order).
    voices: qualified voices of the split's speech source ("espeak:en-us+m3", ...).
    sound_packages: `sounds.SOUND_PACKAGES` names whose recordings are used.
  """

  engines: tuple[str, ...]
  voices: tuple[str, ...]
  sound_packages: tuple[str, ...]

  @classmethod
  def installed(cls, split: str, randomize: dict | None = None) -> "CorpusAssets":
    """The assets this machine has for corpus split `split` (what a local build uses)."""
    engines = speech.available_speech_engines()
    _, missing = sounds.find_recordings()
    return cls(engines=engines,
               voices=speech_source(SOURCE_SPLIT[split], randomize, engines).voices(),
               sound_packages=tuple(p for p in sounds.SOUND_PACKAGES if p not in missing))


@dataclasses.dataclass
class CorpusExamples:
  """make_example(index, seed) -> stream-format example + metadata (see module doc)."""

  chunk_ms: int
  slots_per_chunk: int
  tokens_per_chunk: int
  tokenizer_dir: str
  split: str
  subtasks: Sequence[str] = tuple(tasks.SUBTASKS)
  # `config.data.randomize` as a plain dict (None or enabled=False: off).
  randomize: dict | None = None
  # None: whatever is installed here; else exactly these (`check_assets`).
  assets: CorpusAssets | None = None

  def __post_init__(self):
    unknown = [s for s in self.subtasks if s not in tasks.SUBTASKS]
    if unknown:
      raise KeyError(f"unknown sub-tasks {unknown}; known: {list(tasks.SUBTASKS)}")
    if self.split not in SOURCE_SPLIT:
      raise ValueError(f"split must be one of {list(SOURCE_SPLIT)}, got {self.split!r}")
    self._sources = None

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict, split: str,
                  subtasks: Sequence[str] | None = None) -> "CorpusExamples":
    return cls(chunk_ms=config.audio.chunk_ms, slots_per_chunk=config.model.slots_per_chunk,
               tokens_per_chunk=config.model.tokens_per_chunk,
               tokenizer_dir=str(tokenizer_path(config)), split=split,
               subtasks=tuple(subtasks or tasks.SUBTASKS),
               randomize=config.data.randomize.to_dict())

  def __getstate__(self) -> dict[str, Any]:
    state = dict(self.__dict__)
    state["_sources"] = None  # engines and caches are rebuilt in each worker
    return state

  def _open(self):
    if self._sources is None:
      source_split = SOURCE_SPLIT[self.split]
      engines, packages = None, None
      if self.assets is not None:
        engines = self.assets.engines
        packages = {p: sounds.SOUND_PACKAGES[p] for p in self.assets.sound_packages}
      self._sources = (speech_source(source_split, self.randomize, engines),
                       sound_source(source_split, self.randomize, packages),
                       Tokenizer.load(self.tokenizer_dir))
    return self._sources

  def check_assets(self) -> None:
    """Raises `MissingAssets` naming what this machine lacks of `assets` (None: no check).

    Run on every Beam worker before it writes (`DoFn.setup`): a worker without an
    engine or sound package would silently draw other voices and sounds.
    """
    if self.assets is None:
      return
    problems = []
    here = CorpusAssets.installed(self.split, self.randomize)
    if missing := [e for e in self.assets.engines if e not in here.engines]:
      hints = "; ".join(f"{e}: {speech.ENGINE_TYPES[e].install}" for e in missing)
      problems.append(f"speech engines {missing} ({hints})")
    if missing := [p for p in self.assets.sound_packages if p not in here.sound_packages]:
      problems.append(f"sound packages {missing} (apt-get install {' '.join(missing)})")
    if not problems and (missing := sorted(set(self.assets.voices) - set(here.voices))):
      problems.append(f"voices {missing[:8]}{' ...' if len(missing) > 8 else ''} "
                      f"({len(missing)} of {len(self.assets.voices)}: another engine version?)")
    if problems:
      raise MissingAssets(
          f"worker {socket.gethostname()} cannot build split {self.split!r} as the driver "
          f"would: it lacks {'; '.join(problems)}. Run the workers in a container built with "
          f"install.sh, or install these on them (docs/beam.md)")

  @property
  def tokenizer(self) -> Tokenizer:
    return self._open()[2]

  def build(self, name: str, example_seed: int) -> Timeline:
    """Sub-task `name` built from `example_seed` with this split's sources."""
    speech, sounds, _ = self._open()
    config = tasks.TaskConfig(split=SOURCE_SPLIT[self.split], chunk_ms=self.chunk_ms,
                              **ambience_settings(self.randomize),
                              **lead_in_settings(self.randomize),
                              **general_text_settings(self.randomize, self.split),
                              **recorded_speech_settings(self.randomize, self.split))
    return tasks.build(name, example_seed, speech, sounds, config)

  def timeline(self, index: int, seed: int) -> Timeline:
    """The timeline of example `index` (for looking at it, or rendering it again)."""
    name = self.subtasks[index % len(self.subtasks)]
    # A 31-bit seed from (seed, index, split), stable across Python versions.
    example_seed = zlib.crc32(f"{seed}/{index}/{self.split}".encode()) & 0x7FFFFFFF
    return self.build(name, example_seed)

  def example(self, timeline: Timeline) -> dict[str, Any]:
    """The stream-format example of `timeline`, with its metadata strings."""
    example = serialize_lib.serialize(
        timeline, self.tokenizer, chunk_ms=self.chunk_ms, slots_per_chunk=self.slots_per_chunk,
        tokens_per_chunk=self.tokens_per_chunk)
    meta = serialize_lib.metadata(timeline)
    example.update({name: meta[name] for name in storage.METADATA_FIELDS})
    # For the dataset card (`storage.CARD_FIELDS`): counted at build time, not stored.
    example["voices"] = tuple(u.voice for u in timeline.utterances)
    example["sounds"] = tuple(e.label for e in (*timeline.sounds, *timeline.backgrounds))
    return example

  def __call__(self, index: int, seed: int) -> dict[str, Any]:
    return self.example(self.timeline(index, seed))


def randomization(randomize: dict) -> effects.Randomization:
  """The per-utterance effects of `config.data.randomize` (enabled)."""
  return effects.Randomization(**{k: float(randomize[k]) for k in (
      "p_speed", "p_pitch", "p_formant", "p_telephone", "p_room", "p_mic", "p_noise")})


def speech_source(source_split: str, randomize: dict | None = None,
                  engines: Sequence[str] | None = None) -> speech.MultiVoiceSpeech:
  """The TTS source of a split; with `randomize` (config.data.randomize) enabled, every
  utterance goes through `effects.randomize` and the voices may widen (see config_lib).
  `engines`: the engines to draw from (default: all installed)."""
  if not randomize or not randomize["enabled"]:
    return speech.MultiVoiceSpeech(engines=engines, split=source_split)
  settings = randomization(randomize)
  wide = bool(randomize["wide_voices"])
  return speech.MultiVoiceSpeech(
      engines=engines, split=source_split,
      config=speech.RenderConfig(randomize=settings,
                                 p_connected=float(randomize.get("p_connected", 0.0))),
      wide_voices=wide,
      engine_weights=speech.HUMAN_ENGINE_WEIGHTS if wide else None)


def _train_audio_root(randomize: dict | None) -> str:
  if not randomize or not randomize["enabled"]:
    return ""
  return os.path.expanduser(str(randomize.get("train_audio_root", "")))


def sound_source(source_split: str, randomize: dict | None = None,
                 packages: dict | None = None) -> sounds.SoundBank:
  """The sound bank of a split. With randomisation on and `train_audio_root` set, the
  TRAIN split's bank also draws the labelled recordings of the TRAIN Debian packages
  (classes of the project only; the DEV packages are never read here) and has their
  music and ambience loops as beds. `packages`: the `SOUND_PACKAGES` to read (None: all)."""
  root = _train_audio_root(randomize)
  if not root or source_split != worlds.TRAIN:
    return sounds.SoundBank(split=source_split, packages=packages)
  if not os.path.isdir(root):
    raise FileNotFoundError(
        f"data.randomize.train_audio_root={root!r}: no such folder; fetch the TRAIN "
        f"packages with `audio-interaction fetch-train-audio --cache DIR` (it prints the folder)")

  def recordings(clips: Sequence[real_audio.LabelledClip]) -> list[sounds.Recording]:
    # Zip members (openarena's pk3) are left out: the bank reads plain files.
    return [sounds.Recording(c.ref.path, c.label, c.ref.relpath, worlds.TRAIN)
            for c in clips if c.ref.member is None]

  events = [c for c in real_audio.train_sound_clips(root) if c.mapped]
  return sounds.SoundBank(split=source_split, packages=packages,
                          extra_recordings=recordings(events),
                          beds=recordings(real_audio.train_noise_files(root)))


def lead_in_settings(randomize: dict | None) -> dict[str, Any]:
  """`tasks.TaskConfig.lead_in` from `randomize.lead_in_seconds` (randomised corpora
  only; both splits: it is how live streams start, not a TRAIN-only source)."""
  if not randomize or not randomize["enabled"] or "lead_in_seconds" not in randomize:
    return {}
  return {"lead_in": tuple(float(v) for v in randomize["lead_in_seconds"])}


def ambience_settings(randomize: dict | None) -> dict[str, Any]:
  """`tasks.TaskConfig` fields for real room beds (none unless TRAIN audio is used)."""
  if not _train_audio_root(randomize):
    return {}
  return {"ambience_probability": float(randomize["p_ambience"]),
          "ambience_snr_db": tuple(float(v) for v in randomize["ambience_snr_db"])}


def _train_only_probability(randomize: dict | None, split: str, key: str) -> float:
  """`randomize[key]` for the TRAIN split when TRAIN audio is used, else 0."""
  if split != "train" or not _train_audio_root(randomize):
    return 0.0
  return float(randomize.get(key, 0.0))


def general_text_settings(randomize: dict | None, split: str) -> dict[str, Any]:
  """`tasks.TaskConfig` fields for dictation of general English (TRAIN split only, and
  only with TRAIN audio and a nonzero `p_general_text`)."""
  p = _train_only_probability(randomize, split, "p_general_text")
  if p <= 0:
    return {}
  return {"general_sentences": texts.dialogue_sentences(_train_audio_root(randomize)),
          "general_text_probability": p}


def recorded_speech_settings(randomize: dict | None, split: str) -> dict[str, Any]:
  """`tasks.TaskConfig` fields for real recorded lines (`real_speech`; TRAIN split only,
  and only with TRAIN audio and a nonzero `p_recorded_speech`)."""
  p = _train_only_probability(randomize, split, "p_recorded_speech")
  if p <= 0:
    return {}
  sources = tuple(randomize.get("recorded_speech_sources",
                                config_lib.DEFAULT_RECORDED_SPEECH_SOURCES))
  return {"recorded_lines": real_speech.recorded_lines(_train_audio_root(randomize), sources),
          "recorded_speech_probability": p,
          "recorded_randomization": (randomization(randomize)
                                     if randomize.get("recorded_effects") else None)}


def split_seed(config: ml_collections.ConfigDict, split: str, seed: int | None = None) -> int:
  """The seed `build_corpus_split` passes to every example of `split` (`seed`: config.seed)."""
  base = config.seed if seed is None else seed
  # Held-out streams never share a seed with training ones.
  return base if split == "train" else base + 1000


# Examples per shard: the unit of parallel work, of retries and of resumption.
SHARD_SIZE = 64


def build_corpus_split(config: ml_collections.ConfigDict, split: str, num_examples: int, *,
                       num_workers: int = 1, seed: int | None = None,
                       subtasks: Sequence[str] | None = None, progress: bool = True,
                       runner: str = "local", beam_options: Sequence[str] = (),
                       shard_size: int = SHARD_SIZE) -> storage.SplitSummary:
  """Builds (or resumes building) one split of the generated corpus in `config.data.dir`.

  `runner`: "local" writes with `num_workers` processes of this machine
  (`storage.build_split`); anything else is a Beam runner (`beam_storage.RUNNERS`
  key or class name) given the pipeline flags `beam_options`, with the engines,
  voices and sound packages of this machine pinned and checked on every worker.
  Both write the same bytes for the same seed.
  """
  if "://" in str(config.data.dir):
    # The shards could go there (storage writes through etils.epath), but the tokenizer
    # is trained into and loaded from data.dir with local file calls.
    raise ValueError(
        f"config.data.dir={config.data.dir!r}: build-data keeps the tokenizer in data.dir "
        "and reads it with local file calls, so data.dir must be a directory the driver "
        "and every worker mount; the storage layer alone can write to an object store "
        "(storage.build_split / beam_storage.build_split_beam, docs/beam.md)")
  if runner != "local" and num_workers != 1:
    raise ValueError(f"num_workers={num_workers} is for runner 'local'; a Beam runner's "
                     "parallelism is a pipeline option (e.g. num_workers, direct_num_workers)")
  tokenizer = build_tokenizer(config)
  if tokenizer.vocab_size > config.model.decoder.vocab_size:
    raise ValueError(f"tokenizer has {tokenizer.vocab_size} ids, more than "
                     f"model.decoder.vocab_size={config.model.decoder.vocab_size}")
  make = CorpusExamples.from_config(config, split, subtasks)
  common = dict(seed=split_seed(config, split, seed), shard_size=shard_size,
                chunk_samples=sf.config_chunk_samples(config))
  if runner == "local":
    return storage.build_split(config.data.dir, split, num_examples, make,
                               num_workers=num_workers, progress=progress, **common)
  make = dataclasses.replace(make, assets=CorpusAssets.installed(split, make.randomize))
  return beam_storage.build_split_beam(config.data.dir, split, num_examples, make,
                                       runner=runner, options=beam_options,
                                       check_worker=make.check_assets, **common)


def example_lengths(example: dict[str, np.ndarray]) -> tuple[int, int]:
  """(positions, chunks) of an example: what decides whether it fits a row."""
  return len(example["tokens"]), int(example["num_chunks"])


def heldout_sources() -> tuple[speech.MultiVoiceSpeech, sounds.SoundBank]:
  """Held-out speech and sound sources installed on this machine (TTS engines, sound banks)."""
  return speech.MultiVoiceSpeech(split=worlds.HELDOUT), sounds.SoundBank(split=worlds.HELDOUT)
