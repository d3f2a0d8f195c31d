"""The corpus built on Apache Beam: the local build's bytes, retries, options, worker assets.

Runners: "FnApiRunner" is the in-process engine Beam's DirectRunner falls back to (the
DirectRunner first tries Prism, a Go binary it downloads: impossible offline);
"BundleBasedDirectRunner" is the local runner that retries a failed bundle.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import pathlib
import shutil

import numpy as np
import pytest

pytest.importorskip("apache_beam")

from audio_interaction import config_lib
from audio_interaction.apps import cli
from audio_interaction.corpus import build as corpus
from audio_interaction.corpus import sounds, speech
from audio_interaction.data import beam_storage, storage
import memory_epath
from synthetic_examples import SyntheticExamples

GENERATOR = SyntheticExamples(chunk_samples=160, max_chunks=8)
SEED = 7
TINY = str(config_lib.experiments_dir() / "tiny.py")
SUBTASKS = ("chat_single", "alert_alarm", "offline_asr")


def _shard_bytes(summary: storage.SplitSummary) -> list[bytes]:
  return [p.read_bytes() for p in sorted(pathlib.Path(summary.out_dir).glob("*.array_record-*"))]


def _assert_same_split(a: pathlib.Path, b: pathlib.Path, split: str) -> None:
  """Shards byte for byte; metadata and build records equal (npz zips carry a time)."""
  shards = sorted(p.name for p in a.glob(f"*-{split}.array_record-*"))
  assert shards and shards == sorted(p.name for p in b.glob(f"*-{split}.array_record-*"))
  for name in shards:
    assert (a / name).read_bytes() == (b / name).read_bytes(), name
  for name in ("dataset_info.json", "features.json", f"{split}.build.json"):
    assert (a / name).read_text() == (b / name).read_text(), name
  meta_a, meta_b = storage.read_split_metadata(a, split), storage.read_split_metadata(b, split)
  for field in dataclasses.fields(meta_a):
    np.testing.assert_array_equal(getattr(meta_a, field.name), getattr(meta_b, field.name))
  assert not (b / "_build").exists()


@pytest.fixture
def memory_store(tmp_path, monkeypatch):
  """An empty `memory://` object store; the working directory is an empty folder, so a
  POSIX call on a memory:// name (which would create ``memory:/...`` there) shows."""
  memory_epath.clear()
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  monkeypatch.chdir(cwd)
  yield "memory://bucket/data/1.0.0"
  assert not list(cwd.iterdir())
  memory_epath.clear()


def _copy_back(root: str, local: pathlib.Path) -> pathlib.Path:
  """The objects under `root` as files of `local` (no temporary or work objects left)."""
  objects = memory_epath.objects(root)
  assert objects and not [n for n in objects if ".tmp-" in n or n.startswith("_build")]
  for name, data in objects.items():
    (local / name).parent.mkdir(parents=True, exist_ok=True)
    (local / name).write_bytes(data)
  return local


@dataclasses.dataclass(frozen=True)
class _FailsOnce:
  """GENERATOR, but the first call for `index` raises (a worker dying mid-shard).

  `flag` (a file) remembers the failure across attempts and processes.
  """

  index: int
  flag: str

  def __call__(self, index: int, seed: int) -> dict:
    if index == self.index and not pathlib.Path(self.flag).exists():
      pathlib.Path(self.flag).touch()
      raise RuntimeError("injected worker failure")
    return GENERATOR(index, seed)


def test_beam_build_writes_the_local_build_byte_for_byte(tmp_path):
  local = storage.build_split(tmp_path / "local" / "1.0.0", "train", 6, GENERATOR, SEED,
                              shard_size=4, chunk_samples=160, progress=False)
  beam = beam_storage.build_split_beam(tmp_path / "beam" / "1.0.0", "train", 6, GENERATOR,
                                       SEED, shard_size=4, chunk_samples=160,
                                       runner="FnApiRunner")
  assert (beam.num_examples, beam.num_shards) == (6, 2)
  assert beam.ability_counts == local.ability_counts
  _assert_same_split(local.out_dir, beam.out_dir, "train")
  source = storage.load_split(beam.out_dir, "train")
  assert [int(source[i][storage.INDEX_FIELD]) for i in range(len(source))] == list(range(6))


def test_beam_and_local_builds_to_an_object_store_write_the_local_bytes(tmp_path,
                                                                        memory_store):
  local = storage.build_split(tmp_path / "local" / "1.0.0", "train", 6, GENERATOR, SEED,
                              shard_size=4, chunk_samples=160, progress=False)
  for build in ("beam", "pool"):
    if build == "beam":
      summary = beam_storage.build_split_beam(memory_store, "train", 6, GENERATOR, SEED,
                                              shard_size=4, chunk_samples=160,
                                              runner="FnApiRunner")
    else:
      summary = storage.build_split(memory_store, "train", 6, GENERATOR, SEED, shard_size=4,
                                    chunk_samples=160, progress=False)
    assert os.fspath(summary.out_dir) == memory_store
    assert (summary.num_examples, summary.num_bytes) == (6, local.num_bytes)
    _assert_same_split(local.out_dir, _copy_back(memory_store, tmp_path / build), "train")
    memory_epath.clear()


@pytest.mark.parametrize("where", ["local", "object_store"])
def test_failed_bundle_is_retried_without_duplicate_or_partial_examples(
    where, tmp_path, request, monkeypatch):
  clean = storage.build_split(tmp_path / "clean" / "1.0.0", "train", 6, GENERATOR, SEED,
                              shard_size=4, progress=False)
  out = tmp_path / "retried" / "1.0.0"
  if where == "object_store":
    out = request.getfixturevalue("memory_store")
    # Every object that ever takes a shard's name must be the whole shard; and the
    # first attempt of shard 0 dies after uploading its temporary object.
    published, failed_upload = [], []
    replace = memory_epath._MemoryBackend.replace

    def recording_replace(self, path, dst):
      if str(dst).endswith(".array_record"):
        if "shard-00000" in str(dst) and not failed_upload:
          failed_upload.append(path)
          raise OSError("injected failure after the upload")
        published.append((str(dst).rsplit("/", 1)[1], self.fs(path).cat_file(path)))
      return replace(self, path, dst)

    monkeypatch.setattr(memory_epath._MemoryBackend, "replace", recording_replace)
  flag = tmp_path / "failed-once"
  # Index 5 is the second of shard 1: example 4 is already in the attempt's file.
  flaky = _FailsOnce(index=5, flag=str(flag))
  retried = beam_storage.build_split_beam(out, "train", 6, flaky, SEED, shard_size=4,
                                          runner="BundleBasedDirectRunner")
  assert flag.exists()  # The failure did happen; the runner retried the bundle.
  if where == "object_store":
    assert failed_upload and ".array_record.tmp-" in str(failed_upload[0])
    final = {f"shard-{i:05d}.array_record": data for i, data in enumerate(_shard_bytes(clean))}
    # A retried bundle may publish a shard again, but always whole and the same bytes.
    assert {name for name, _ in published} == set(final)
    assert all(data == final[name] for name, data in published)
    retried = dataclasses.replace(retried, out_dir=_copy_back(out, tmp_path / "copied"))
  _assert_same_split(clean.out_dir, retried.out_dir, "train")
  source = storage.load_split(retried.out_dir, "train")
  assert len(source) == 6
  assert [int(source[i][storage.INDEX_FIELD]) for i in range(6)] == list(range(6))


def test_beam_build_resumes_a_local_build(tmp_path):
  out = tmp_path / "resumed" / "1.0.0"
  with pytest.raises(RuntimeError, match="injected worker failure"):
    storage.build_split(out, "train", 10, _FailsOnce(index=9, flag=str(tmp_path / "flag")),
                        SEED, shard_size=4, progress=False)
  assert sorted(p.name for p in (out / "_build" / "train").glob("shard-*.json")) == [
      "shard-00000.json", "shard-00001.json"]
  beam_storage.build_split_beam(out, "train", 10, GENERATOR, SEED, shard_size=4,
                                runner="FnApiRunner")
  clean = storage.build_split(tmp_path / "clean" / "1.0.0", "train", 10, GENERATOR, SEED,
                              shard_size=4, progress=False)
  _assert_same_split(clean.out_dir, out, "train")


def test_pipeline_options_pass_through_and_bad_ones_are_errors(tmp_path):
  flags = beam_storage.option_flags(["num_workers=8", "--temp_location=/tmp/x"],
                                    "--project p --region europe-west4")
  assert flags == ["--num_workers=8", "--temp_location=/tmp/x", "--project", "p",
                   "--region", "europe-west4"]
  options = beam_storage.pipeline_options("dataflow", flags).get_all_options()
  assert (options["runner"], options["num_workers"], options["project"]) == (
      "DataflowRunner", 8, "p")
  with pytest.raises(ValueError, match="KEY=VALUE"):
    beam_storage.option_flags(["num_workers"])
  with pytest.raises(ValueError, match="unknown Beam pipeline option.*--num_wokers"):
    beam_storage.pipeline_options("direct", ["--num_wokers=8"])
  with pytest.raises(ValueError, match="chosen with --runner"):
    beam_storage.pipeline_options("direct", ["--runner=FlinkRunner"])
  if importlib.util.find_spec("tensorflow") or not importlib.util.find_spec("s3fs"):
    with pytest.raises(ValueError, match="no installed filesystem handles s3://.*s3fs"):
      beam_storage.build_split_beam("s3://bucket/data/1.0.0", "train", 6, GENERATOR, SEED,
                                    runner="FnApiRunner")


@pytest.fixture(scope="module")
def config(tmp_path_factory):
  directory = tmp_path_factory.mktemp("corpus")
  config = config_lib.load_config(TINY, [f"data.dir={directory}"])
  corpus.build_tokenizer(config, examples_per_task=2)
  return config


def test_worker_without_assets_fails_naming_what_is_missing(config, tmp_path, monkeypatch):
  make = corpus.CorpusExamples.from_config(config, "train", SUBTASKS)
  make = dataclasses.replace(make, assets=corpus.CorpusAssets.installed("train"))
  make.check_assets()  # The driver itself has everything it pinned.
  assert "espeak" in make.assets.engines
  # A worker without espeak-ng and without the freedesktop sounds.
  monkeypatch.setattr(speech.EspeakEngine, "is_available", classmethod(lambda cls: False))
  packages = dict(sounds.SOUND_PACKAGES)
  pinned = make.assets.sound_packages
  missing_package = pinned[0] if pinned else "sound-theme-freedesktop"
  packages[missing_package] = (str(tmp_path / "absent"), packages[missing_package][1])
  monkeypatch.setattr(sounds, "SOUND_PACKAGES", packages)
  if not pinned:  # A machine without sound packages: pin one it lacks.
    make = dataclasses.replace(make, assets=dataclasses.replace(
        make.assets, sound_packages=(missing_package,)))
  with pytest.raises(corpus.MissingAssets, match=rf"speech engines \['espeak'\].*espeak-ng"
                     rf".*sound packages \['{missing_package}'\]"):
    make.check_assets()
  # The same error stops the Beam build in the worker's DoFn.setup, before any shard.
  out = tmp_path / "beam" / "1.0.0"
  with pytest.raises(Exception, match="cannot build split 'train'"):
    beam_storage.build_split_beam(out, "train", 2, make, SEED, shard_size=1,
                                  runner="FnApiRunner", check_worker=make.check_assets)
  assert not list((out / "_build" / "train").glob("shard-*.array_record"))


def test_corpus_build_to_an_object_store_is_a_clear_error(config):
  remote = config.copy_and_resolve_references()
  remote.data.dir = "gs://bucket/corpus"
  with pytest.raises(ValueError, match="keeps the tokenizer in data.dir"):
    corpus.build_corpus_split(remote, "eval", 3, runner="FnApiRunner")


def test_build_data_cli_on_beam_equals_the_local_build(config, tmp_path):
  local_dir, beam_dir = tmp_path / "local", tmp_path / "beam"
  for directory in (local_dir, beam_dir):  # One tokenizer, so the token ids agree.
    shutil.copytree(corpus.tokenizer_path(config), directory / corpus.TOKENIZER_DIR)
  common = ["build-data", "--config", TINY, "--split", "eval", "--num-examples", "3",
            "--subtasks", ",".join(SUBTASKS)]
  assert cli.main([*common, f"--config.data.dir={local_dir}"]) == 0
  assert cli.main([*common, f"--config.data.dir={beam_dir}", "--runner", "direct",
                   "--beam-option", "direct_num_workers=1"]) == 0
  _assert_same_split(local_dir, beam_dir, "eval")
  assert cli.main([*common, f"--config.data.dir={tmp_path / 'x'}", "--runner", "direct",
                   "--workers", "2"]) == 2
  assert cli.main([*common, f"--config.data.dir={tmp_path / 'x'}", "--runner", "direct",
                   "--beam-option", "num_wokers=2"]) == 2
