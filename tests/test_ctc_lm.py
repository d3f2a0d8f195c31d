"""CTC beam search with the English word LM (infer/ctc_lm.py)."""

import numpy as np
import pytest

from audio_interaction import stream_format as sf
from audio_interaction.data.tokenizer import Tokenizer
from audio_interaction.infer import ctc_lm

VOCAB = 512  # the CTC head's outputs: more than the tokenizer's 451 pieces


@pytest.fixture(scope="module")
def tokenizer():
  return Tokenizer.load("audio_interaction/assets/tiny/tokenizer")


def emissions(tokenizer, frames: list[dict[str, float]]) -> np.ndarray:
  """log-probs [T, VOCAB]: each frame's given pieces ("" = blank) with their
  probabilities, the rest of the mass spread over every other output."""
  out = np.full((len(frames), VOCAB), 1e-6, np.float64)
  for t, frame in enumerate(frames):
    for piece, p in frame.items():
      index = sf.PAD_ID if piece == "" else tokenizer.encode(piece)[0]
      out[t, index] = p
  out /= out.sum(axis=1, keepdims=True)
  return np.log(out).astype(np.float32)


def spoken(tokenizer, words: list[str], ambiguous: dict[str, float] | None = None):
  """A frame per word (a CTC head's peaks) then two blanks; the word "?" is the
  `ambiguous` frame."""
  frames = []
  for word in words:
    frames += [ambiguous if word == "?" else {word: 0.999}, {"": 0.999}, {"": 0.999}]
  return emissions(tokenizer, frames)


def test_english_words_is_a_trigram_model_over_dictionary_words():
  words = ctc_lm.english_words()
  assert words.order == 3
  assert len(words.words) > 50_000
  assert {"the", "kitchen", "a", "i"} <= set(words.words)
  assert not {"b", "x"} & set(words.words)  # single letters would spell anything
  # ln P(word | what is): "the" is far likelier than "five" (ln scale: -1.9 vs -8.8)
  assert words.log_prob("the", ["what", "is"]) > words.log_prob("five", ["what", "is"]) + 3
  assert words.log_prob("the", ["what", "is"]) == words.log_prob("the", ["so", "what", "is"])


def test_the_language_model_settles_what_the_acoustics_leave_open(tokenizer):
  log_probs = spoken(tokenizer, ["what", "is", "?"], ambiguous={"five": 0.55, "the": 0.45})
  by_sound = ctc_lm.CtcLmDecoder(tokenizer, VOCAB, ctc_lm.BeamSettings(lm_weight=0.0))
  with_lm = ctc_lm.CtcLmDecoder(tokenizer, VOCAB, ctc_lm.BeamSettings(lm_weight=1.0))
  assert by_sound.decode(log_probs) == "what is five"
  assert with_lm.decode(log_probs) == "what is the"
  # The history counts, not only how common a word is: "it" is the commoner word,
  # "radio" the likelier after "turn on the".
  log_probs = spoken(tokenizer, ["turn", "on", "the", "?"], ambiguous={"it": 0.55, "radio": 0.45})
  assert by_sound.decode(log_probs) == "turn on the it"
  assert with_lm.decode(log_probs) == "turn on the radio"


def test_writes_lexicon_words_only_and_never_a_non_piece_output(tokenizer):
  frames = [{"turn": 0.9}, {"": 0.9}, {"on": 0.9}, {"": 0.9}]
  log_probs = emissions(tokenizer, frames)
  # An output past the tokenizer and a special token, each the frame's likeliest.
  log_probs[1, 470] = log_probs[3, sf.EOR_ID] = 0.0
  # Outputs that are no word piece, likelier than "on" in its frame and more of them
  # than the search tries per frame (beam_size_token): they must not crowd "on" out.
  log_probs[2, 460:460 + 20] = 0.0
  decoder = ctc_lm.CtcLmDecoder(tokenizer, VOCAB)
  assert decoder.decode(log_probs) == "turn on"


def test_streaming_ends_with_the_whole_clip_words(tokenizer):
  log_probs = spoken(tokenizer, ["turn", "on", "the", "kitchen", "light"])
  decoder = ctc_lm.CtcLmDecoder(tokenizer, VOCAB)
  whole = decoder.decode(log_probs)
  assert whole == "turn on the kitchen light"
  stream = decoder.stream()
  partials = [stream.step(log_probs[i:i + 4]) for i in range(0, len(log_probs), 4)]
  with pytest.raises(RuntimeError, match="still open"):  # one search at a time
    decoder.stream()
  with pytest.raises(RuntimeError, match="still open"):
    decoder.decode(log_probs)
  assert stream.end() == whole
  assert partials[0] == "" or whole.startswith(partials[0].split()[0])
  assert len(partials[-1].split()) >= 3  # the words heard so far, as the chunks came
  with pytest.raises(RuntimeError, match="has ended"):
    stream.step(log_probs[:1])
  assert decoder.stream().end() == ""  # no frames: no words


def test_bad_input_is_named(tokenizer):
  decoder = ctc_lm.CtcLmDecoder(tokenizer, VOCAB)
  assert decoder.decode(np.zeros((0, VOCAB), np.float32)) == ""
  with pytest.raises(ValueError, match=r"\[frames, 512\]"):
    decoder.decode(np.zeros((5, 451), np.float32))
  broken = spoken(tokenizer, ["turn"])
  broken[1, 40] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    decoder.decode(broken)
  with pytest.raises(ValueError, match="NaN"):
    decoder.timed_words(broken, 2, 0.16)
  assert decoder.decode(spoken(tokenizer, ["turn"])) == "turn"  # still usable
  with pytest.raises(ValueError, match="smaller than the tokenizer"):
    ctc_lm.CtcLmDecoder(tokenizer, 100)
  with pytest.raises(ValueError, match="beam_size"):
    ctc_lm.BeamSettings(beam_size=0)
  with pytest.raises(FileNotFoundError, match="does not exist"):
    ctc_lm.NGramWords("/nonexistent/en-us.lm.bin", "/nonexistent/dict")


def test_a_character_head_spells_lexicon_words_letter_by_letter(tokenizer):
  ids = [i for word in tokenizer.spell(["kitchen", "light"]) for i in word]
  log_probs = np.full((2 * len(ids), VOCAB), np.log(1e-6), np.float32)
  log_probs[:, sf.PAD_ID] = np.log(0.001)
  for t, i in enumerate(ids):
    log_probs[2 * t, i], log_probs[2 * t + 1, sf.PAD_ID] = np.log(0.999), np.log(0.999)
  spelled = ctc_lm.CtcLmDecoder(tokenizer, VOCAB, spelling="characters")
  assert spelled.decode(log_probs) == "kitchen light"
  # A head taught word pieces spells "kitchen" as one piece: letters make no such word.
  assert ctc_lm.CtcLmDecoder(tokenizer, VOCAB).decode(log_probs) != "kitchen light"
  with pytest.raises(ValueError, match="spelling 'bytes'"):
    ctc_lm.CtcLmDecoder(tokenizer, VOCAB, spelling="bytes")
