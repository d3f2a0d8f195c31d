"""CTC beam search with an English word language model.

Greedy CTC decoding (`infer.transcript`) writes what the head hears frame by frame; on
real voices that is mostly sounds, not words ("fro right" for "front right"). A beam
search over the head's log-probabilities that may only spell words of a lexicon, scored
by a word n-gram model, turns near-misses into words. Both parts come from maintained
libraries:

* the search is flashlight-text's `LexiconDecoder` (CTC criterion, a trie of the
  lexicon's spellings in the tokenizer's pieces, LM-score smearing over the trie);
* the language model is PocketSphinx's own US English 3-gram model and its
  pronunciation dictionary's words (both inside the `pocketsphinx` package that the
  streaming-ASR baseline already uses), so CTC and PocketSphinx are scored with the
  same knowledge of English.

`CtcLmDecoder.decode` decodes a whole clip; `CtcLmDecoder.stream` decodes chunk by
chunk (flashlight's incremental `decode_step`) and gives the best partial hypothesis
after each chunk, the same words the whole-clip decode ends with.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence

import numpy as np

from audio_interaction import stream_format as sf
from audio_interaction.data.tokenizer import Tokenizer
from audio_interaction.infer.transcript import stable_emissions

try:
  from flashlight.lib.text import decoder as _flashlight
except ImportError:  # pragma: no cover - a core dependency; the error says what to install
  _flashlight = None

# PocketSphinx scores in integer log base 1.0001 (its LogMath default).
_LOGMATH_TO_LN = float(np.log(1.0001))
# What PocketSphinx gives a word it does not know (log base 1.0001).
_UNKNOWN_WORD = -536870912
# How a CTC head writes a word (`data.ctc_targets`, as `train/ctc_head.ctc_labels`).
SPELLINGS = ("tokens", "characters")


def _require_flashlight():
  if _flashlight is None:
    raise ImportError("CTC beam search with a language model needs flashlight-text: "
                      "pip install 'flashlight-text>=0.0.7'")
  return _flashlight


@dataclasses.dataclass(frozen=True)
class BeamSettings:
  """The search's knobs (flashlight's names).

  Attributes:
    lm_weight: weight of the word LM's natural-log probability against the acoustic one.
    word_score: added per word (a larger value writes more, shorter words).
    beam_size: hypotheses kept per frame.
    beam_size_token: tokens tried per frame and hypothesis.
    beam_threshold: hypotheses further than this (log) below the best are dropped.
  """

  lm_weight: float = 0.5
  word_score: float = 1.0
  beam_size: int = 32
  beam_size_token: int = 16
  beam_threshold: float = 50.0

  def __post_init__(self):
    if self.beam_size < 1 or self.beam_size_token < 1:
      raise ValueError(f"beam_size and beam_size_token must be >= 1, got {self.beam_size} "
                       f"and {self.beam_size_token}")
    if self.lm_weight < 0 or self.beam_threshold <= 0:
      raise ValueError(f"lm_weight must be >= 0 and beam_threshold > 0, got "
                       f"{self.lm_weight} and {self.beam_threshold}")


class NGramWords:
  """A word n-gram model: `log_prob(word, history)` in natural log, over `words`.

  Reads PocketSphinx's binary or ARPA models (`pocketsphinx.NGramModel`); `words` is the
  vocabulary the decoder may write: alphabetic words (apostrophes allowed) of
  `dictionary` (one word per line, first field; "word(2)" variants folded) that the
  model knows, without the single letters other than "a" and "i" (a lexicon of letters
  lets the search spell anything as letters).
  """

  def __init__(self, model_path: str | os.PathLike, dictionary: str | os.PathLike):
    import pocketsphinx  # pylint: disable=import-outside-toplevel
    for path in (model_path, dictionary):
      if not os.path.isfile(path):
        raise FileNotFoundError(f"language model file {path} does not exist")
    self._model = pocketsphinx.NGramModel.readfile(str(model_path))
    self.order = int(self._model.size())
    with open(dictionary, encoding="utf-8") as f:
      candidates = sorted({line.split()[0].split("(")[0] for line in f if line.strip()})
    self.words = [w for w in candidates
                  if w.replace("'", "").isalpha() and (len(w) > 1 or w in ("a", "i"))
                  and self._model.prob([w]) > _UNKNOWN_WORD]
    if not self.words:
      raise ValueError(f"{dictionary}: no word of it is in the language model {model_path}")

  def log_prob(self, word: str, history: Sequence[str]) -> float:
    """ln P(word | history), history oldest first ("<s>" starts a sentence, "</s>" is
    its end as a word)."""
    context = list(history)[-(self.order - 1):] if self.order > 1 else []
    return self._model.prob([word] + context[::-1]) * _LOGMATH_TO_LN


@functools.cache
def english_words() -> NGramWords:
  """PocketSphinx's US English 3-gram model over its dictionary's words (~72,000),
  loaded once per process."""
  import pocketsphinx  # pylint: disable=import-outside-toplevel
  root = os.path.join(pocketsphinx.get_model_path(), "en-us")
  return NGramWords(os.path.join(root, "en-us.lm.bin"), os.path.join(root, "cmudict-en-us.dict"))


def _flashlight_lm(words: NGramWords):
  """`words` as a flashlight `LM`: each state is a word history (its last order - 1
  words), kept in a table flashlight's state tree indexes."""
  fl = _require_flashlight()

  class WordHistoryLM(fl.LM):

    def __init__(self):
      fl.LM.__init__(self)
      self.histories = {}

    def start(self, start_with_nothing):
      del start_with_nothing
      self.histories = {}  # a new search: the old states are gone
      state = fl.LMState()
      self.histories[state] = ("<s>",)
      return state

    def score(self, state, word_index):
      history = self.histories[state]
      word = words.words[word_index]
      child = state.child(word_index)
      if child not in self.histories:
        self.histories[child] = (history + (word,))[-max(words.order - 1, 1):]
      return child, words.log_prob(word, history)

    def finish(self, state):
      return state, words.log_prob("</s>", self.histories[state])

  return WordHistoryLM()


class CtcLmDecoder:
  """Beam search over CTC log-probabilities [T, V] that writes lexicon words only.

  Example::

    decoder = CtcLmDecoder(tokenizer, vocab_size=512)        # the CTC head's outputs
    text = decoder.decode(log_probs)                         # [T, 512] one clip
    stream = decoder.stream()
    for chunk_log_probs in chunks:                           # [F_c, 512] per chunk
      partial = stream.step(chunk_log_probs)
    text = stream.end()

  The blank is `<pad>` (the streaming decoder's); outputs that are not word pieces
  (special tokens, ids past the tokenizer's vocabulary) are never chosen. Each word is
  spelled as the head was taught to write (`spelling`, the bundle's `data.ctc_targets`):
  "tokens" as `tokenizer.encode(word)`, "characters" as `tokenizer.spell([word])`.
  """

  def __init__(self, tokenizer: Tokenizer, vocab_size: int,
               settings: BeamSettings | None = None, words: NGramWords | None = None,
               spelling: str = "tokens"):
    fl = _require_flashlight()
    if spelling not in SPELLINGS:
      raise ValueError(f"spelling {spelling!r}: choose from {SPELLINGS}")
    if vocab_size < tokenizer.vocab_size:
      raise ValueError(f"vocab_size {vocab_size} is smaller than the tokenizer's "
                       f"{tokenizer.vocab_size}")
    self.settings = settings or BeamSettings()
    self.words = words or english_words()
    self.vocab_size = vocab_size
    self._lm = _flashlight_lm(self.words)
    self._not_pieces = np.zeros(vocab_size, bool)
    self._not_pieces[tokenizer.vocab_size:] = True
    self._not_pieces[:sf.NUM_SPECIAL_TOKENS] = True
    self._not_pieces[sf.PAD_ID] = False  # the blank
    trie = fl.Trie(vocab_size, sf.PAD_ID)
    root = self._lm.start(False)
    for index, word in enumerate(self.words.words):
      pieces = tokenizer.encode(word) if spelling == "tokens" else tokenizer.spell([word])[0]
      if pieces and not self._not_pieces[pieces].any():
        trie.insert(pieces, index, self._lm.score(root, index)[1])
    trie.smear(fl.SmearingMode.MAX)
    s = self.settings
    options = fl.LexiconDecoderOptions(
        beam_size=s.beam_size, beam_size_token=s.beam_size_token,
        beam_threshold=s.beam_threshold, lm_weight=s.lm_weight, word_score=s.word_score,
        unk_score=float("-inf"), sil_score=0.0, log_add=False,
        criterion_type=fl.CriterionType.CTC)
    # The blank doubles as flashlight's "silence" (what a hypothesis between words
    # emits): the pieces carry their own word boundary, so there is no separator token.
    self._decoder = fl.LexiconDecoder(options, trie, self._lm, sf.PAD_ID, sf.PAD_ID, -1, [],
                                      False)
    # The search keeps its hypotheses inside: one stream (or decode) at a time.
    self._open_stream: CtcLmStream | None = None

  def _check_free(self) -> None:
    if self._open_stream is not None:
      raise RuntimeError("a stream of this decoder is still open: end() it first (the "
                         "search keeps one stream's hypotheses)")

  def _emissions(self, log_probs: np.ndarray) -> np.ndarray:
    log_probs = np.asarray(log_probs, np.float32)
    if log_probs.ndim != 2 or log_probs.shape[1] != self.vocab_size:
      raise ValueError(f"CTC log-probabilities must be [frames, {self.vocab_size}], got "
                       f"{log_probs.shape}")
    if not np.isfinite(log_probs[:, ~self._not_pieces]).all():
      raise ValueError("CTC log-probabilities hold NaN or infinite values")
    # Logits need no log-softmax: every path emits one output per frame, so a frame's
    # normalizer adds the same to every hypothesis and ranks nothing differently.
    out = np.where(self._not_pieces, np.float32(-1e9), log_probs)
    return np.ascontiguousarray(out, np.float32)

  def _text(self, result) -> str:
    return " ".join(self.words.words[i] for i in result.words if i >= 0)

  def decode(self, log_probs: np.ndarray) -> str:
    """log_probs [T, V] (the CTC head's logits or their log-softmax) -> the best word
    sequence, words joined by spaces ("" for no frames)."""
    self._check_free()
    emissions = self._emissions(log_probs)
    if not len(emissions):
      return ""
    results = self._decoder.decode(emissions.ctypes.data, *emissions.shape)
    return self._text(results[0]) if results else ""

  def timed_words(self, log_probs: np.ndarray, frames_per_chunk: int, chunk_seconds: float
                  ) -> tuple[tuple[str, float], ...]:
    """The words of a streaming search over log_probs [T, V], fed `frames_per_chunk`
    frames at a time, each with its emission time (stream seconds): the end of the
    chunk from which the partial hypotheses keep it (`transcript.stable_emissions`, as
    the greedy transcript's words are timed); the final words are the search's end."""
    stream = self.stream()
    try:
      partials = [stream.step(log_probs[start:start + frames_per_chunk]).split()
                  for start in range(0, len(log_probs), frames_per_chunk)]
    finally:  # bad input ends the search too, so the decoder stays usable
      final = stream.end().split()
    if not partials:
      return ()
    partials[-1] = final
    return stable_emissions(partials, chunk_seconds)

  def stream(self) -> "CtcLmStream":
    """A chunk-by-chunk search (one open at a time per decoder)."""
    self._check_free()
    self._open_stream = CtcLmStream(self)
    return self._open_stream


class CtcLmStream:
  """`CtcLmDecoder`'s incremental search: `step` per chunk gives the best partial
  hypothesis so far; `end` gives the final words (the whole-clip decode's)."""

  def __init__(self, decoder: CtcLmDecoder):
    self._owner = decoder
    self._decoder = decoder._decoder
    self._decoder.decode_begin()
    self.frames = 0
    self._ended = False

  def step(self, log_probs: np.ndarray) -> str:
    """log_probs [F, V] of the chunk's frames -> the best hypothesis so far."""
    if self._ended:
      raise RuntimeError("this stream has ended; start another with decoder.stream()")
    emissions = self._owner._emissions(log_probs)
    if len(emissions):
      self._decoder.decode_step(emissions.ctypes.data, *emissions.shape)
      self.frames += len(emissions)
    if not self.frames:
      return ""
    return self._owner._text(self._decoder.get_best_hypothesis())

  def end(self) -> str:
    """Ends the search (the LM's sentence end scored) -> the final words."""
    self._ended = True
    self._owner._open_stream = None
    if not self.frames:
      return ""
    self._decoder.decode_end()
    results = self._decoder.get_all_final_hypothesis()
    return self._owner._text(results[0]) if results else ""
