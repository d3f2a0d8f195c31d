"""TFDS speech and sound data sets as evaluation sources: `eval --tfds NAME:SPLIT`.

`NAME:SPLIT` is read with `tfds.load` (TFDS split syntax works: `test_clean[:200]`) and
its examples become manifest rows through `corpus.manifest.from_tfds_examples`, then
cases:

| data set | features read | rows | suites |
|---|---|---|---|
| a set with a text feature (`text`, `transcript`, `sentence`), e.g. librispeech | audio, text, `speaker_id` | transcribed | B1, B2 (and the rest as the rows allow: `suites.cases_from_manifest`) |
| a keyword set (`KEYWORD_SETS`: speech_commands) | audio, `label` (`_silence_`, `_unknown_` left out) | keyword transcripts | B3-like: the keyword as the answer to `suites.KEYWORD_INSTRUCTION` (`suites.cases_from_keywords`) |
| another set with a class label | audio, `label` | sound labels (known classes or declared alert classes; others are `unknown_label` skips) | B3, B6 |

The audio feature is the set's `tfds.features.Audio` (`audio` in most, `speech` in
librispeech), at the rate its info gives (16 kHz when it gives none). Examples are held
in memory: take a slice of a large split. Nothing is downloaded here that `tfds.load`
would not download itself; tests use `tfds.testing.mock_data`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from typing import Final

import tensorflow_datasets as tfds

from audio_interaction import stream_format as sf
from audio_interaction.corpus.manifest import ManifestReport, from_tfds_examples
from audio_interaction.eval import suites as suites_lib

KEYWORD_SETS: Final[frozenset[str]] = frozenset({"speech_commands"})
TEXT_FEATURES: Final[tuple[str, ...]] = ("text", "transcript", "sentence")
DEFAULT_RATE: Final[int] = 16000


@dataclasses.dataclass(frozen=True)
class TfdsSource:
  """What `load_tfds` read: the spec, its rows and whether they are keywords."""

  spec: str
  report: ManifestReport
  keywords: bool


def parse_spec(spec: str) -> tuple[str, str]:
  """"librispeech:test_clean" -> ("librispeech", "test_clean"); a missing part is a ValueError."""
  name, _, split = spec.partition(":")
  if not name.strip() or not split.strip():
    raise ValueError(f"--tfds wants NAME:SPLIT (e.g. librispeech:test_clean), got {spec!r}")
  return name.strip(), split.strip()


def load_tfds(spec: str, *, alert_classes: Collection[str] = (), data_dir: str | None = None
              ) -> TfdsSource:
  """Reads a TFDS split into manifest rows (see the module docstring)."""
  name, split = parse_spec(spec)
  builder = tfds.builder(name, data_dir=data_dir)
  features = builder.info.features
  keys = list(features.keys())
  audio_keys = [k for k in keys if isinstance(features[k], tfds.features.Audio)]
  if not audio_keys:
    raise ValueError(f"TFDS data set {name} has no audio feature (features: {keys})")
  audio_key = audio_keys[0]
  rate = getattr(features[audio_key], "sample_rate", None) or DEFAULT_RATE
  text_key = next((k for k in TEXT_FEATURES if k in keys), None)
  label_names = None
  if "label" in keys and isinstance(features["label"], tfds.features.ClassLabel):
    label_names = list(features["label"].names)
  examples = tfds.as_numpy(tfds.load(name, split=split, data_dir=data_dir))
  keywords = name in KEYWORD_SETS and label_names is not None
  common = dict(sample_rate=int(rate), audio_key=audio_key, name=f"tfds {spec}",
                alert_classes=tuple(alert_classes))
  if keywords:
    report = from_tfds_examples(
        examples, text_key="", label_names=label_names, label_as_transcript=True,
        label_map={n: n.replace("_", " ") for n in label_names if not n.startswith("_")},
        **common)
  elif text_key is not None:
    report = from_tfds_examples(
        examples, text_key=text_key, label_key="",
        speaker_key="speaker_id" if "speaker_id" in keys else None, **common)
  elif label_names is not None or "label" in keys:
    report = from_tfds_examples(examples, text_key="", label_names=label_names, **common)
  else:
    raise ValueError(f"TFDS data set {name} has neither a text feature {TEXT_FEATURES} nor a "
                     f"class label (features: {keys})")
  return TfdsSource(spec, report, keywords)


def cases_from_tfds(source: TfdsSource, suites: Sequence[str], *,
                    chunk_ms: int = sf.DEFAULT_CHUNK_MS) -> list[suites_lib.Case]:
  """Cases of a TFDS source: keyword sets B3-like, the others as manifest rows."""
  if source.keywords:
    return suites_lib.cases_from_keywords(source.report, suites)
  return suites_lib.cases_from_manifest(source.report, suites, chunk_ms=chunk_ms)
