"""Tokenizers keep the stream format's special ids; text normalization for scoring."""

import pytest

from audio_interaction import stream_format as sf
from audio_interaction.corpus import tasks, worlds
from audio_interaction.data.tokenizer import (
    ByteTokenizer, SentencePieceTokenizer, Tokenizer, normalize_text, number_to_words,
    train_sentencepiece)

pytest.importorskip("sentencepiece")


@pytest.fixture(scope="module")
def sp_tokenizer(tmp_path_factory) -> SentencePieceTokenizer:
  texts = worlds.all_texts() + tasks.training_texts(examples_per_task=3)
  return train_sentencepiece(texts, 400, tmp_path_factory.mktemp("sp"))


def test_byte_tokenizer_layout_and_round_trip():
  tok = ByteTokenizer()
  assert tok.vocab_size == sf.NUM_SPECIAL_TOKENS + 256 == 268
  text = "what is seven plus five? ünïcode ✓"
  ids = tok.encode(text)
  assert ids[0] == sf.NUM_SPECIAL_TOKENS + ord("w")
  assert min(ids) >= sf.NUM_SPECIAL_TOKENS and max(ids) < tok.vocab_size
  assert tok.decode(ids) == text


def test_special_tokens_never_come_from_text(sp_tokenizer):
  for tok in (ByteTokenizer(), sp_tokenizer):
    ids = tok.encode("say <eor> and <decide> then <a>")
    assert all(i >= sf.NUM_SPECIAL_TOKENS or i == sf.UNK_ID for i in ids)


def test_decode_keeps_or_drops_specials(sp_tokenizer):
  for tok in (ByteTokenizer(), sp_tokenizer):
    ids = [sf.DECIDE_ID] + tok.encode("twelve") + [sf.EOR_ID]
    assert tok.decode(ids) == "twelve"
    assert tok.decode(ids, keep_special=True) == "<decide> twelve <eor>"


def test_sentencepiece_special_ids_and_round_trip(sp_tokenizer):
  tok = sp_tokenizer
  assert tok.vocab_size <= 400
  for i, name in enumerate(sf.SPECIAL_TOKENS):
    assert tok._sp.id_to_piece(i) == name  # pylint: disable=protected-access
  for text in ("what is seven plus five", "ok, kitchen light on", "i hear a dog barking"):
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert sf.UNK_ID not in ids


def test_sentencepiece_save_load_and_model_bytes(sp_tokenizer, tmp_path):
  sp_tokenizer.save(tmp_path / "tok")
  loaded = Tokenizer.load(tmp_path / "tok")
  rebuilt = SentencePieceTokenizer(sp_tokenizer.model_bytes)
  text = "turn off the bedroom fan"
  assert loaded.encode(text) == rebuilt.encode(text) == sp_tokenizer.encode(text)
  assert loaded.vocab_size == sp_tokenizer.vocab_size
  ByteTokenizer().save(tmp_path / "bytes")
  assert isinstance(Tokenizer.load(tmp_path / "bytes"), ByteTokenizer)


def test_training_is_deterministic(sp_tokenizer):
  texts = worlds.all_texts() + tasks.training_texts(examples_per_task=3)
  again = train_sentencepiece(texts, 400)
  assert again.model_bytes == sp_tokenizer.model_bytes


def test_rejects_models_without_our_special_tokens():
  import io  # pylint: disable=g-import-not-at-top
  import sentencepiece  # pylint: disable=g-import-not-at-top
  model = io.BytesIO()
  sentencepiece.SentencePieceTrainer.train(
      sentence_iterator=iter(worlds.all_texts()), model_writer=model, vocab_size=100,
      hard_vocab_limit=False, minloglevel=2)
  with pytest.raises(ValueError, match="special tokens"):
    SentencePieceTokenizer(model.getvalue())


@pytest.mark.parametrize("n, words", [
    (0, "zero"), (7, "seven"), (12, "twelve"), (40, "forty"), (42, "forty two"),
    (100, "one hundred"), (115, "one hundred fifteen"), (1042, "one thousand forty two"),
    (2_000_001, "two million one"), (-3, "minus three")])
def test_number_to_words(n, words):
  assert number_to_words(n) == words


@pytest.mark.parametrize("text, normalized", [
    ("OK, Kitchen light ON.", "ok kitchen light on"),
    ("What is 7 plus 5?", "what is seven plus five"),
    ("It's 12 o’clock!", "it's twelve o'clock"),
    ("twenty-one", "twenty one"),
    ("3.5 and 1,000", "three point five and one thousand"),
    ("  'quoted'   words_here ", "quoted words here"),
    ("", ""),
])
def test_normalize_text(text, normalized):
  assert normalize_text(text) == normalized
  assert normalize_text(normalized) == normalized  # idempotent


def test_digits_and_words_score_equal():
  assert normalize_text("the answer is 12") == normalize_text("The answer is twelve.")
