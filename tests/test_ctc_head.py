"""Fitting the CTC head alone: labels, voice split and batches by hand, the fit on frames
a linear head can read, the frames equal to the model's own CTC input, and a bundle in,
a bundle out with only the CTC head changed."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audio_interaction import stream_format as sf
from audio_interaction.apps import cli
from audio_interaction.corpus import real_speech
from audio_interaction.data.tokenizer import ByteTokenizer
from audio_interaction.export import portable
from audio_interaction.model.model import AudioInteractionModel
from audio_interaction.train import ctc_head
from audio_interaction.model import clip_encoder
from audio_interaction.model.clip_encoder import ClipEncoder, FrameEncoder
import model_testing


@dataclasses.dataclass(frozen=True)
class _Ref:
  relpath: str


@dataclasses.dataclass(frozen=True)
class _Line:
  """What `encode_lines` reads of a `real_speech.RecordedLine`."""

  ref: _Ref
  text: str
  voice: str
  samples: np.ndarray = dataclasses.field(repr=False, compare=False)

  def audio(self) -> np.ndarray:
    return self.samples


def _lines(count: int, voices: int, seconds: float = 1.0) -> list[_Line]:
  rng = np.random.default_rng(0)
  words = ["ab", "ba", "abc", "cab"]
  return [_Line(_Ref(f"line{i}.wav"), " ".join(rng.choice(words, size=2)), f"v{i % voices}",
                (0.1 * rng.normal(size=int(seconds * 16000))).astype(np.float32))
          for i in range(count)]


def test_labels_are_the_tokenizers_pieces_or_its_spelling():
  tokenizer = ByteTokenizer()
  assert ctc_head.ctc_labels(tokenizer, "ab ba").tolist() == tokenizer.encode("ab ba")
  spelled = ctc_head.ctc_labels(tokenizer, "ab ba", "characters")
  assert tokenizer.decode(spelled.tolist()) == "ab ba"
  with pytest.raises(ValueError, match="CTC targets 'words'"):
    ctc_head.ctc_labels(tokenizer, "ab", "words")


def test_split_holds_out_whole_voices():
  lines = _lines(40, voices=10)
  train, held = ctc_head.split_voices(lines, 0.2, seed=3)
  assert len(train) + len(held) == 40
  held_voices = {l.voice for l in held}
  assert len(held_voices) == 2 and not held_voices & {l.voice for l in train}
  assert ctc_head.split_voices(lines, 0.2, seed=3) == (train, held)  # deterministic
  # A small share still holds out one voice; never all of them.
  assert len({l.voice for l in ctc_head.split_voices(lines, 0.01, 0)[1]}) == 1
  assert ctc_head.split_voices(lines[:2], 0.9, 0)[0]
  assert ctc_head.split_voices(lines, 0.0, 0)[1] == []


def test_seeded_subset_keeps_order_and_is_the_same_for_a_seed():
  lines = _lines(40, voices=10)
  subset = ctc_head.seeded_subset(lines, 7, seed=1)
  assert len(subset) == 7 and len(set(map(id, subset))) == 7
  positions = [lines.index(line) for line in subset]
  assert positions == sorted(positions)  # in the lines' order, not the draw's
  assert ctc_head.seeded_subset(lines, 7, seed=1) == subset
  assert ctc_head.seeded_subset(lines, 7, seed=2) != subset
  assert ctc_head.seeded_subset(lines, None, 0) == lines
  assert ctc_head.seeded_subset(lines, 40, 0) == lines


def _frames(lengths, label_lengths, width=4):
  return ctc_head.TranscribedFrames(
      [np.full((n, width), i, np.float16) for i, n in enumerate(lengths)],
      [""] * len(lengths), ["v"] * len(lengths),
      [np.arange(1, m + 1, dtype=np.int32) + sf.NUM_SPECIAL_TOKENS for m in label_lengths])


def test_epoch_batches_cover_every_clip_once_with_its_padding():
  lengths = [100, 120, 130, 250, 256, 300, 90, 129]
  clips = _frames(lengths, [3, 5, 2, 7, 1, 4, 6, 2])
  seen = []
  for batch in ctc_head.epoch_batches(clips, frames_per_batch=512, seed=0, epoch=0):
    frames = batch.features.shape[1]
    assert frames % ctc_head.FRAME_BUCKET == 0
    assert batch.features.shape[0] <= max(1, 512 // frames)
    for row in range(batch.features.shape[0]):
      clip = int(batch.features[row, 0, 0])
      seen.append(clip)
      valid = int((batch.frame_padding[row] == 0).sum())
      assert valid == lengths[clip] and ctc_head._bucket(valid) == frames
      np.testing.assert_array_equal(batch.frame_padding[row, :valid], 0)
      labels = batch.labels[row][batch.label_padding[row] == 0]
      np.testing.assert_array_equal(labels, clips.labels[clip])
      assert (batch.labels[row][batch.label_padding[row] == 1] == sf.PAD_ID).all()
  assert sorted(seen) == list(range(len(lengths)))

  def order(epoch):
    return [b.features[:, 0, 0].tolist()
            for b in ctc_head.epoch_batches(clips, 512, seed=0, epoch=epoch)]
  assert order(1) == order(1)
  assert order(1) != order(2)  # another epoch, another order


def _readable_clips(texts, tokenizer, seed, width=24):
  """Frames a linear head can read: each label a few frames of its own random
  direction, blank frames (another direction) between and around them, plus noise."""
  rng = np.random.default_rng(100)
  directions = rng.normal(size=(tokenizer.vocab_size, width))
  noise = np.random.default_rng(seed)
  clips = ctc_head.TranscribedFrames([], [], [])
  for text in texts:
    labels = ctc_head.ctc_labels(tokenizer, text)
    rows = [directions[sf.PAD_ID]] * 3
    for label in labels:
      rows += [directions[label]] * int(noise.integers(2, 4)) + [directions[sf.PAD_ID]]
    rows += [directions[sf.PAD_ID]] * 3
    frames = np.asarray(rows) + 0.3 * noise.normal(size=(len(rows), width))
    clips.features.append(frames.astype(np.float16))
    clips.labels.append(labels)
    clips.texts.append(text)
    clips.voices.append("v")
  return clips


def test_fit_learns_to_write_held_out_word_orders():
  tokenizer = ByteTokenizer()
  words = ["ab", "bad", "cab", "dab"]
  rng = np.random.default_rng(0)
  pairs = [f"{a} {b}" for a in words for b in words if a != b]
  rng.shuffle(pairs)
  train = _readable_clips(pairs[:8] * 4, tokenizer, seed=1)
  held = _readable_clips(pairs[8:], tokenizer, seed=2)
  untrained = np.zeros((24, tokenizer.vocab_size), np.float32)
  assert ctc_head.held_out_wer(untrained, np.zeros(tokenizer.vocab_size, np.float32), held,
                               tokenizer) == 1.0
  fit = ctc_head.fit_head(train, held, tokenizer, tokenizer.vocab_size, steps=240,
                          learning_rate=0.05, frames_per_batch=512, eval_every=60,
                          progress=False, monitor=held)
  assert [r["step"] for r in fit.history] == [60, 120, 180, 240]
  assert fit.history[-1]["loss"] < fit.history[0]["loss"]
  best = min(fit.history, key=lambda r: r["held_out_wer"])
  assert fit.best_step == best["step"] and best["held_out_wer"] == 0.0
  assert all(r["monitor_wer"] == r["held_out_wer"] for r in fit.history)
  assert ctc_head.greedy_transcripts(fit.kernel, fit.bias, held, tokenizer) == held.texts


def _model(tmp_path):
  tokenizer = ByteTokenizer()
  config = model_testing.small_config(**{"model.decoder.vocab_size": tokenizer.vocab_size})
  model = AudioInteractionModel(config)
  params = model.init(jax.random.key(0))
  directory = tmp_path / "bundle"
  portable.save_bundle(directory, params, tokenizer, config, metadata={"trained": "for a test"})
  return model, params, directory


def test_frames_are_what_the_ctc_head_reads_in_the_model(tmp_path):
  model, params, _ = _model(tmp_path)
  cfg = model.config
  rng = np.random.default_rng(0)
  num_chunks = 5
  tokens, slot_index, _, _ = model_testing.online_sequence(
      rng, num_chunks, cfg.slots_per_chunk, cfg.tokens_per_chunk, cfg.decoder.vocab_size)
  audio = (0.1 * rng.normal(size=num_chunks * cfg.chunk_samples - 300)).astype(np.float32)
  padded = np.pad(audio, (0, 300))
  full = model.forward(params, jnp.asarray(tokens[None]), jnp.asarray(padded[None]),
                       jnp.asarray(slot_index[None]))
  frames = FrameEncoder(model, params)(audio)
  assert frames.shape == (num_chunks * cfg.encoder_frames_per_chunk, cfg.encoder.d_model)
  head = params["params"]["ctc_head"]
  logits = frames @ np.asarray(head["kernel"]) + np.asarray(head["bias"])
  np.testing.assert_allclose(logits, full.ctc_logits[0], atol=2e-4, rtol=0)
  # The head's own logits over the clip, as the eval's LM beam search reads them.
  np.testing.assert_allclose(ClipEncoder(model, params, output="ctc_logits")(audio),
                             full.ctc_logits[0], atol=2e-4, rtol=0)


def test_a_long_clip_is_encoded_chunk_by_chunk_to_the_same_frames(tmp_path, monkeypatch):
  model, params, _ = _model(tmp_path)
  cfg = model.config
  audio = (0.1 * np.random.default_rng(1).normal(size=5 * cfg.chunk_samples - 300)
           ).astype(np.float32)
  # (the sound-event head's logits, of a model with one: tests/test_sound_naming.py)
  whole = {o: clip_encoder.ClipEncoder(model, params, output=o)(audio)
           for o in clip_encoder.OUTPUTS if o != "sound_event_logits"}
  monkeypatch.setattr(clip_encoder, "MAX_FULL_PASS_CHUNKS", 2)  # 5 chunks: streamed
  for output, expected in whole.items():
    streamed = clip_encoder.ClipEncoder(model, params, output=output)(audio)
    assert streamed.shape == expected.shape
    np.testing.assert_allclose(streamed, expected, atol=2e-4, rtol=0)


def test_labelled_drops_clips_whose_labels_cannot_fit():
  tokenizer = ByteTokenizer()
  assert len(tokenizer.encode("ab ba")) == 5 and len(tokenizer.encode("aa")) == 2
  clips = ctc_head.TranscribedFrames(
      [np.zeros((n, 2), np.float16) for n in (5, 4, 30, 3, 2)],
      ["ab ba", "ab ba", "", "aa", "aa"], ["a", "b", "c", "d", "e"])
  out = ctc_head.labelled(clips, tokenizer)
  # 5 labels need 5 frames; "aa" needs 3 (a blank between the two a's); no text, no clip.
  assert out.voices == ["a", "d"]
  assert [l.tolist() for l in out.labels] == [tokenizer.encode("ab ba"), tokenizer.encode("aa")]


def test_encoded_clips_round_trip_under_their_key(tmp_path):
  clips = ctc_head.TranscribedFrames(
      [np.arange(6, dtype=np.float16).reshape(3, 2), np.ones((1, 2), np.float16)],
      ["one two", "three"], ["v1", "v2"])
  path = tmp_path / "cache" / "train.npz"
  clips.save(path, key="made so")
  back = ctc_head.TranscribedFrames.load(path, key="made so")
  assert back.texts == clips.texts and back.voices == clips.voices
  for a, b in zip(back.features, clips.features):
    np.testing.assert_array_equal(a, b)
  assert ctc_head.TranscribedFrames.load(path, key="made otherwise") is None
  assert ctc_head.TranscribedFrames.load(tmp_path / "none.npz", key="made so") is None


def test_fit_bundle_changes_the_ctc_head_only(tmp_path, monkeypatch):
  _, _, source = _model(tmp_path)
  lines = _lines(12, voices=4)
  asked = []

  def fake_lines(root, sources):
    asked.append((root, sources))
    return tuple(lines)
  monkeypatch.setattr(real_speech, "recorded_lines", fake_lines)
  out = tmp_path / "fitted"
  summary = ctc_head.fit_bundle_ctc_head(source, out, train_audio_root="somewhere",
                                         sources=("hedgewars-en",), held_out_share=0.25,
                                         copies=1, steps=6, eval_every=3, progress=False)
  assert asked == [("somewhere", ("hedgewars-en",))]
  assert summary["lines"] == 9 and summary["held_out_lines"] == 3
  assert summary["train_clips"] == 18  # each line as recorded and through the effects
  assert [r["step"] for r in summary["history"]] == [3, 6]
  assert "held_out_wer" in summary["before"]
  _, before, _ = portable.load_bundle(source)
  _, after, _ = portable.load_bundle(out)
  flat_after = dict(jax.tree_util.tree_leaves_with_path(after))
  changed = [jax.tree_util.keystr(path) for path, value in
             jax.tree_util.tree_leaves_with_path(before)
             if not np.array_equal(value, flat_after[path])]
  assert changed and all("ctc_head" in name for name in changed)
  metadata = json.loads((out / "metadata.json").read_text())
  assert metadata["trained"] == "for a test"
  assert metadata["ctc_head_fit"]["best_step"] in (3, 6)


def test_a_second_fit_reads_the_encoded_lines_from_the_cache(tmp_path, monkeypatch):
  _, _, source = _model(tmp_path)
  lines = _lines(8, voices=4)
  monkeypatch.setattr(real_speech, "recorded_lines", lambda root, sources: tuple(lines))
  encoded = []
  real_encode = ctc_head.encode_lines

  def counting(encode, lines, **kwargs):
    encoded.append(len(lines))
    return real_encode(encode, lines, **kwargs)
  monkeypatch.setattr(ctc_head, "encode_lines", counting)
  common = dict(train_audio_root="r", held_out_share=0.25, steps=2, eval_every=2,
                progress=False, features_cache=tmp_path / "cache")
  first = ctc_head.fit_bundle_ctc_head(source, tmp_path / "a", copies=1, **common)
  assert encoded == [6, 2]
  again = ctc_head.fit_bundle_ctc_head(source, tmp_path / "b", copies=1,
                                       targets="characters", **common)
  assert encoded == [6, 2]  # nothing encoded again
  assert again["train_clips"] == first["train_clips"] and again["targets"] == "characters"
  # Each bundle says how its head spells (the eval's LM beam search spells words so).
  assert portable.load_bundle(tmp_path / "b")[0].data.ctc_targets == "characters"
  assert portable.load_bundle(tmp_path / "a")[0].data.ctc_targets == "tokens"
  ctc_head.fit_bundle_ctc_head(source, tmp_path / "c", copies=0, **common)
  assert encoded == [6, 2, 6]  # other copies: the training lines again, not the held-out


def test_with_ctc_head_refuses_another_shape(tmp_path):
  _, params, _ = _model(tmp_path)
  kernel = np.zeros((3, 3), np.float32)
  with pytest.raises(ValueError, match="ctc_head/kernel"):
    ctc_head.with_ctc_head(params, kernel, np.zeros(3, np.float32))


def test_fit_ctc_head_cli_names_what_is_wrong(tmp_path, capsys):
  _, _, source = _model(tmp_path)
  out = tmp_path / "x"
  base = ["fit-ctc-head", "--bundle", str(source), "--out", str(out)]
  assert cli.main(base + ["--train-audio", str(tmp_path / "nowhere")]) != 0
  assert "fetch-train-audio" in capsys.readouterr().err
  assert cli.main(base + ["--train-audio", str(tmp_path), "--sources", "klingon"]) != 0
  assert "--sources klingon" in capsys.readouterr().err
  assert cli.main(base + ["--train-audio", str(tmp_path), "--copies", "-1"]) != 0
  assert "--copies -1" in capsys.readouterr().err
  assert not out.exists()  # nothing written
