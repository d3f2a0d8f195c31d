"""Tokenizers sharing the stream format's special tokens, and text normalization for scoring.

Every tokenizer here gives the special tokens of `stream_format.SPECIAL_TOKENS` the ids
0..NUM_SPECIAL_TOKENS-1, so a checkpoint's model and tokenizer agree on them without a
lookup table. Ordinary text never encodes to a special id (except `<unk>`): a user who
says "<eor>" gets the characters, not the control token.

Two implementations:

* `SentencePieceTokenizer`: trained on the corpus text by `train_sentencepiece`. The
  model is a single serialized proto (`model_bytes`), so it can be stored inside a
  checkpoint and rebuilt with `SentencePieceTokenizer(model_bytes)`.
* `ByteTokenizer`: id = NUM_SPECIAL_TOKENS + byte (vocab 12 + 256); no training, for
  tests and tiny configs.

`Tokenizer.load(directory)` rebuilds either kind from what `save` wrote.
"""

from __future__ import annotations

import abc
import io
import json
import pathlib
import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import ClassVar

from audio_interaction import stream_format

_META_FILE = "tokenizer.json"
_SP_MODEL_FILE = "tokenizer.model"


class UnsafePathError(ValueError):
  """A file name read from a checkpoint or bundle would leave its directory.

  Attributes:
    what: what the name is ("model_file", "tokenizer file name", ...).
    name: the refused name, as read.
    reason: why, e.g. "contains a '..' component".
  """

  def __init__(self, message: str, *, what: str, name: object, reason: str):
    super().__init__(message)
    self.what, self.name, self.reason = what, name, reason


def unsafe_name_reason(name: object) -> str | None:
  """Why `name` is not a plain relative file name (POSIX separators), or None if it is.

  Checks the name alone: not a non-empty string, a NUL, a backslash, a drive
  (``C:``), an absolute path or a ``..`` component are all refused.
  """
  if not isinstance(name, str):
    return f"is a {type(name).__name__}, not a file name"
  if not name:
    return "is empty"
  if "\x00" in name:
    return "contains a NUL character"
  if "\\" in name:
    return "contains a backslash"
  if name.startswith("/"):
    return "is an absolute path"
  if pathlib.PureWindowsPath(name).drive or (len(name) >= 2 and name[1] == ":"):
    return "names a drive"
  if ".." in pathlib.PurePosixPath(name).parts:
    return "contains a '..' component"
  return None


def safe_join(directory: str | pathlib.Path, name: object, *, what: str = "file name"
              ) -> pathlib.Path:
  """`directory / name`, for a `name` read from untrusted data (checkpoint, bundle).

  Raises `UnsafePathError` ("<what> <name> <reason>") if the name is not a plain
  relative name (see `unsafe_name_reason`) or if the joined path, symlinks
  resolved, is not inside `directory`.
  """
  reason = unsafe_name_reason(name)
  if reason is None:
    root = pathlib.Path(directory).resolve()
    path = root / name
    try:
      if path.resolve().relative_to(root) == pathlib.Path("."):
        reason = "names the directory itself"
    except ValueError:
      reason = "resolves outside the directory"
  if reason is not None:
    raise UnsafePathError(f"{what} {name!r} {reason}", what=what, name=name, reason=reason)
  return path


class Tokenizer(abc.ABC):
  """Text <-> ids with the special tokens at ids 0..NUM_SPECIAL_TOKENS-1."""

  kind: ClassVar[str]

  @property
  @abc.abstractmethod
  def vocab_size(self) -> int:
    """Number of ids (special tokens included); every id is < vocab_size."""

  @abc.abstractmethod
  def encode(self, text: str) -> list[int]:
    """Ids of `text`; never a special id other than UNK_ID."""

  @abc.abstractmethod
  def _decode_text(self, ids: Sequence[int]) -> str:
    """Decodes ids that contain no special tokens."""

  @abc.abstractmethod
  def _save_files(self, directory: pathlib.Path) -> dict[str, str]:
    """Writes the tokenizer's own files; returns extra metadata for `tokenizer.json`."""

  def spell(self, words: Sequence[str]) -> list[list[int]]:
    """Ids that spell each word one character at a time (a word's first id also marks
    where the word starts, as this vocabulary marks it). `decode` of all of them in
    order gives the words joined by single spaces.

    These are character-level CTC targets inside the token vocabulary
    (`data.ctc_targets = "characters"`): a CTC head that learned to spell has no
    reason to prefer the words its training text happened to make into one piece.
    """
    return [self.encode(f" {word}" if i else word) for i, word in enumerate(words)]

  def decode(self, ids: Iterable[int], *, keep_special: bool = False) -> str:
    """Text of `ids`. Special tokens are dropped, or written by name with `keep_special`.

    Text between special tokens is decoded as one run, so subword pieces join up.
    Ids beyond the vocabulary (a model's output layer may be wider than the
    tokenizer) decode as `<unk>`.
    """
    out: list[str] = []
    run: list[int] = []
    for token in ids:
      token = int(token)
      if token >= self.vocab_size:
        token = stream_format.UNK_ID
      if token < stream_format.NUM_SPECIAL_TOKENS and token != stream_format.UNK_ID:
        if run:
          out.append(self._decode_text(run))
          run = []
        if keep_special:
          out.append(stream_format.SPECIAL_TOKENS[token])
      else:
        run.append(token)
    if run:
      out.append(self._decode_text(run))
    return " ".join(piece for piece in out if piece)

  def save(self, directory: str | pathlib.Path) -> pathlib.Path:
    """Writes the tokenizer into `directory` (created if needed); returns the directory."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = {"kind": self.kind, "vocab_size": self.vocab_size,
            "special_tokens": list(stream_format.SPECIAL_TOKENS)}
    meta.update(self._save_files(directory))
    (directory / _META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return directory

  @staticmethod
  def load(directory: str | pathlib.Path) -> Tokenizer:
    """Rebuilds the tokenizer that `save` wrote into `directory`."""
    directory = pathlib.Path(directory)
    meta = json.loads((directory / _META_FILE).read_text())
    if tuple(meta["special_tokens"]) != stream_format.SPECIAL_TOKENS:
      raise ValueError(
          f"tokenizer in {directory} was saved with special tokens {meta['special_tokens']}, "
          f"this code uses {list(stream_format.SPECIAL_TOKENS)}")
    if meta["kind"] == ByteTokenizer.kind:
      return ByteTokenizer()
    if meta["kind"] == SentencePieceTokenizer.kind:
      try:
        model_file = safe_join(directory, meta.get("model_file"), what="model_file")
      except UnsafePathError as e:
        raise UnsafePathError(
            f"{directory / _META_FILE}: {e}; it must name a file inside {directory}",
            what=e.what, name=e.name, reason=e.reason) from None
      return SentencePieceTokenizer(model_file.read_bytes())
    raise ValueError(f"unknown tokenizer kind {meta['kind']!r} in {directory}")


class ByteTokenizer(Tokenizer):
  """UTF-8 bytes: id = NUM_SPECIAL_TOKENS + byte value."""

  kind = "bytes"

  @property
  def vocab_size(self) -> int:
    return stream_format.NUM_SPECIAL_TOKENS + 256

  def encode(self, text: str) -> list[int]:
    return [stream_format.NUM_SPECIAL_TOKENS + b for b in text.encode("utf-8")]

  def _decode_text(self, ids: Sequence[int]) -> str:
    # <unk> cannot come out of `encode`, but a model may still write it.
    data = bytes(i - stream_format.NUM_SPECIAL_TOKENS for i in ids
                 if stream_format.NUM_SPECIAL_TOKENS <= i < self.vocab_size)
    return data.decode("utf-8", errors="replace")

  def _save_files(self, directory: pathlib.Path) -> dict[str, str]:
    del directory
    return {}


_WORD_START = "\u2581"  # SentencePiece's mark of a word's first piece


class SentencePieceTokenizer(Tokenizer):
  """A SentencePiece model whose first pieces are the stream format's special tokens."""

  kind = "sentencepiece"

  def __init__(self, model_bytes: bytes):
    """`model_bytes`: a serialized SentencePiece ModelProto (see `train_sentencepiece`)."""
    import sentencepiece  # pylint: disable=g-import-not-at-top  (optional dependency)

    self._model_bytes = bytes(model_bytes)
    self._sp = sentencepiece.SentencePieceProcessor(model_proto=self._model_bytes)
    pieces = tuple(self._sp.id_to_piece(i) for i in range(stream_format.NUM_SPECIAL_TOKENS))
    if pieces != stream_format.SPECIAL_TOKENS:
      raise ValueError(
          f"SentencePiece model's first pieces are {pieces}, expected the stream format's "
          f"special tokens {stream_format.SPECIAL_TOKENS}; train it with train_sentencepiece")

  @property
  def model_bytes(self) -> bytes:
    """The serialized model: store this in a checkpoint to rebuild the tokenizer."""
    return self._model_bytes

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  def __reduce__(self):
    # Picklable (Grain worker processes) by its serialized model.
    return (SentencePieceTokenizer, (self._model_bytes,))

  def encode(self, text: str) -> list[int]:
    return list(self._sp.encode(text))

  def spell(self, words: Sequence[str]) -> list[list[int]]:
    """The word-start piece ("▁") then one piece per character; a character that has no
    piece of its own is spelled as SentencePiece encodes it alone."""
    boundary = self._sp.piece_to_id(_WORD_START)
    if self._sp.is_unknown(boundary):
      return super().spell(words)
    spelled = []
    for word in words:
      ids = [boundary]
      for char in word:
        piece = self._sp.piece_to_id(char)
        if self._sp.is_unknown(piece):
          ids += [i for i in self._sp.encode(char) if i != boundary]
        else:
          ids.append(piece)
      spelled.append(ids)
    return spelled

  def _decode_text(self, ids: Sequence[int]) -> str:
    return self._sp.decode(list(ids))

  def _save_files(self, directory: pathlib.Path) -> dict[str, str]:
    (directory / _SP_MODEL_FILE).write_bytes(self._model_bytes)
    return {"model_file": _SP_MODEL_FILE}


def train_sentencepiece(texts: Iterable[str], vocab_size: int,
                        out_dir: str | pathlib.Path | None = None, *,
                        model_type: str = "unigram",
                        byte_fallback: bool = False) -> SentencePieceTokenizer:
  """Trains a SentencePiece model on `texts` with the special tokens at their fixed ids.

  `<pad> <bos> <eos> <unk>` are SentencePiece's own meta pieces, placed at ids 0..3;
  the other special tokens are *control* symbols, which SentencePiece never produces
  from input text. `vocab_size` is an upper bound: on a small corpus the model may be
  smaller (`hard_vocab_limit=False`), so read `tokenizer.vocab_size` afterwards.
  `byte_fallback` spells unseen characters as bytes instead of `<unk>` (needs
  vocab_size > 256 + NUM_SPECIAL_TOKENS). If `out_dir` is given, the tokenizer is saved
  there.
  """
  import sentencepiece  # pylint: disable=g-import-not-at-top  (optional dependency)

  special = stream_format.SPECIAL_TOKENS
  if special[:4] != ("<pad>", "<bos>", "<eos>", "<unk>"):
    raise AssertionError("train_sentencepiece assumes <pad> <bos> <eos> <unk> come first")
  model = io.BytesIO()
  sentencepiece.SentencePieceTrainer.train(
      sentence_iterator=iter([t for t in texts if t.strip()]),
      model_writer=model,
      vocab_size=vocab_size,
      model_type=model_type,
      pad_id=0, bos_id=1, eos_id=2, unk_id=3,
      pad_piece=special[0], bos_piece=special[1], eos_piece=special[2], unk_piece=special[3],
      control_symbols=list(special[4:]),
      character_coverage=1.0,
      byte_fallback=byte_fallback,
      hard_vocab_limit=False,
      # One thread keeps training reproducible; the corpora here are small.
      num_threads=1,
      minloglevel=2,
  )
  tokenizer = SentencePieceTokenizer(model.getvalue())
  if out_dir is not None:
    tokenizer.save(out_dir)
  return tokenizer


# ----------------------------------------------------------------------------- text

_ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
         "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
         "seventeen", "eighteen", "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))


def number_to_words(n: int) -> str:
  """Spoken English for an integer, without "and" or hyphens: 1042 -> "one thousand forty two"."""
  if n < 0:
    return "minus " + number_to_words(-n)
  if n < 20:
    return _ONES[n]
  if n < 100:
    tens, ones = divmod(n, 10)
    return _TENS[tens] + (" " + _ONES[ones] if ones else "")
  if n < 1000:
    hundreds, rest = divmod(n, 100)
    return _ONES[hundreds] + " hundred" + (" " + number_to_words(rest) if rest else "")
  for scale, name in _SCALES:
    if n >= scale:
      high, rest = divmod(n, scale)
      return number_to_words(high) + " " + name + (" " + number_to_words(rest) if rest else "")
  raise AssertionError(n)


_NUMBER = re.compile(r"(?<![\w.])(-?)(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(?![\w])")
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'"})


def _spell_number(match: re.Match[str]) -> str:
  sign, whole, frac = match.groups()
  words = number_to_words(int(whole.replace(",", "")))
  if frac:
    words += " point " + " ".join(_ONES[int(d)] for d in frac)
  return (" minus " if sign else " ") + words + " "


# Non-word tags of transcripts and recogniser outputs: <s>, </s>, <unk>, <sil>, [noise],
# [laughter], [NOISE]... Dropped whole, so "<s>" never becomes the word "s".
_TAG = re.compile(r"</?[A-Za-z_][\w\-]*>|\[[^\[\]\n]*\]")


def normalize_text(text: str) -> str:
  """The one English normalization used for scoring (WER, exact match), reference
  transcripts of manifests and reply text.

  Tags are dropped whole (`<s>`, `</s>`, `<unk>`, `<sil>`, `[noise]`, `[laughter]`:
  anything in square brackets, and `<word>` / `</word>`); lowercase; digits become
  words ("12" -> "twelve", "3.5" -> "three point five", so "12" and "twelve" score
  equal); hyphens and other punctuation become spaces, except apostrophes inside words
  ("don't"); whitespace collapsed. Idempotent.
  """
  text = _TAG.sub(" ", unicodedata.normalize("NFKC", text))
  text = text.translate(_APOSTROPHES).lower()
  text = _NUMBER.sub(_spell_number, text)
  # Keep letters, digits and apostrophes; everything else separates words.
  text = re.sub(r"[^\w']+|_", " ", text)
  text = re.sub(r"(?<!\w)'|'(?!\w)", " ", text)
  return " ".join(text.split())
