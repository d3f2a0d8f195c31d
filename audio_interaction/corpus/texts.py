"""General English sentences for the transcription tasks, from TRAIN-side packages.

The closed worlds (`worlds.py`) say 345 word types in all; real speakers use thousands
(`docs/vocabulary_coverage.py`). The dialogue scripts of FreedroidRPG
(`freedroidrpg-data`, a TRAIN package of `real_audio`, GPL-2+) hold about 5,800 lines
of conversational English. `dialogue_sentences` turns them into normalized sentences
of 3-16 words; `corpus/build.py` gives them to the TRAIN split's dictation tasks
(`tasks.TaskConfig.general_sentences`, drawn with `general_text_probability`), never to
held-out splits. The existing tokenizer spells any lowercase word, so a fine-tune from
the embedded model can use them.
"""

from __future__ import annotations

import functools
import os
import pathlib
import re
from typing import Final

from audio_interaction.corpus import real_audio
from audio_interaction.data.tokenizer import normalize_text

TEXT_PACKAGES: Final[tuple[str, ...]] = ("freedroidrpg-data",)
assert set(TEXT_PACKAGES) <= set(real_audio.TRAIN_PACKAGES), "texts come from TRAIN packages"

WORDS_PER_SENTENCE: Final[tuple[int, int]] = (3, 16)
_TRANSLATABLE = re.compile(r'_"((?:[^"\\]|\\.)*)"')
# Format strings, markup, paths and terminal commands are not speech.
_NOT_SPEECH = re.compile(r"[%\[\]{}<>/\\@#_=|~*:;]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_SPOKEN = re.compile(r"^[a-z']+( [a-z']+)*$")


class MissingTextPackage(FileNotFoundError):
  """The extracted TRAIN packages lack the text package; the message says how to get it."""


def sentences_of_line(line: str) -> list[str]:
  """Normalized sentences of one dialogue line; none for a line that is not speech."""
  if _NOT_SPEECH.search(line) or sum(c.isupper() for c in line) > 0.5 * sum(
      c.isalpha() for c in line):
    return []
  out = []
  for sentence in _SENTENCE_END.split(line.strip()):
    text = normalize_text(sentence)
    if _SPOKEN.match(text) and WORDS_PER_SENTENCE[0] <= len(text.split()) <= WORDS_PER_SENTENCE[1]:
      out.append(text)
  return out


@functools.lru_cache(maxsize=4)
def dialogue_sentences(root: str | os.PathLike[str]) -> tuple[str, ...]:
  """Sorted, distinct normalized sentences of FreedroidRPG's dialogue scripts.

  Args:
    root: folder of extracted packages (`audio-interaction fetch-train-audio`).

  Raises:
    MissingTextPackage: `root` has no `freedroidrpg-data` dialogue scripts.
  """
  root = pathlib.Path(os.path.expanduser(str(root)))
  real_audio.check_root(root)
  scripts = sorted((root / TEXT_PACKAGES[0]).glob("**/dialogs/*.lua"))
  if not scripts:
    raise MissingTextPackage(
        f"{root}: no {TEXT_PACKAGES[0]} dialogue scripts (usr/share/freedroidrpg/dialogs/"
        f"*.lua); run `audio-interaction fetch-train-audio` and point "
        f"data.randomize.train_audio_root at its extracted folder")
  sentences = set()
  for script in scripts:
    for match in _TRANSLATABLE.finditer(script.read_text(encoding="utf-8", errors="replace")):
      sentences.update(sentences_of_line(match.group(1).replace('\\"', '"')))
  return tuple(sorted(sentences))
