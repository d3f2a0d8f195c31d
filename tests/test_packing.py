"""Packed training is exact: a row packing several examples gives each of them the
features, encoder frames, losses and gradients a row of its own gives it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audio_interaction.audio.features import LogMelConfig, log_mel, segmented_log_mel
from audio_interaction.data import pipeline
from audio_interaction.model.model import AudioInteractionModel
from audio_interaction.train import losses
from audio_interaction.train.trainer import Trainer
from audio_interaction import stream_format as sf
import train_testing

# fp32: the packed and the separate rows sum the same terms, in other shapes.
ATOL = 2e-5
RTOL = 2e-4


def _packed_and_separate(config, num_examples: int = 12):
  """The first packed batch of synthetic examples, and the same examples one per row."""
  settings = pipeline.PipelineConfig.from_config(config, num_epochs=1)
  make = train_testing.synthetic_examples(config)
  source = [dict(make(i, 0), example_index=i) for i in range(num_examples)]
  packed = next(iter(pipeline.make_dataset(source, settings, shard_index=0, shard_count=1)))
  order = [int(i) for i in packed["segment_example_index"].reshape(-1) if i >= 0]
  single = pipeline.PipelineConfig.from_config(config, packing=False)
  rows = [pipeline.pad_example(pipeline.fit_example(pipeline.select_fields(source[i]), single),
                               single) for i in order]
  separate = {name: np.stack([row[name] for row in rows]) for name in rows[0]}
  return packed, separate


# The decoder as `experiments/tiny.py:whole_streams` trains it: a window shorter than
# the examples, with each example's first positions pinned in view.
PINNED_WINDOW = {"model.decoder.window": 20, "model.decoder.pinned_prefix": 6}
VARIANTS = {"pinned_window": PINNED_WINDOW,
            "copy_instruction": {"model.decoder.copy_instruction": True}}


@pytest.fixture(scope="module",
                params=["transformer", "conformer", "pinned_window", "copy_instruction"])
def packed_setup(request):
  config = train_testing.train_config(**{
      "model.encoder.block": "conformer" if request.param == "conformer" else "transformer",
      "model.encoder.num_layers": 2,
      "data.packing": True, "data.max_segments": 4, "data.batch_size": 2,
      "data.max_len": 96, "data.max_chunks": 8, "train.ctc_loss_weight": 0.5,
      **VARIANTS.get(request.param, {})})
  packed, separate = _packed_and_separate(config)
  # The case under test: rows that hold more than one example.
  assert (packed["segment_num_chunks"] > 0).sum(axis=1).max() > 1
  if request.param == "pinned_window":  # examples long enough to leave the window
    assert int(separate["segment_ids"].sum(axis=1).max()) > config.model.decoder.window
  return config, packed, separate


def test_segmented_log_mel_gives_each_segment_its_own_features():
  config = LogMelConfig(n_mels=16)
  chunk, rng = 320, np.random.default_rng(0)
  audio = rng.normal(size=(1, 6 * chunk)).astype(np.float32)
  ids = np.array([[1, 1, 2, 2, 2, 0]], np.int32)  # two segments, a padding chunk
  got = np.asarray(segmented_log_mel(audio, ids, config))
  frames = chunk // config.hop_length
  first = np.asarray(log_mel(audio[:, :2 * chunk], config))
  second = np.asarray(log_mel(audio[:, 2 * chunk:5 * chunk], config))
  np.testing.assert_allclose(got[:, :2 * frames], first, atol=1e-5)
  np.testing.assert_allclose(got[:, 2 * frames:5 * frames], second, atol=1e-5)
  # The whole row as one signal differs exactly where the second segment starts.
  whole = np.asarray(log_mel(audio, config))
  assert np.abs(whole[:, 2 * frames] - got[:, 2 * frames]).max() > 1e-3
  # One segment per row: the plain front end.
  np.testing.assert_allclose(segmented_log_mel(audio, np.ones((1, 6), np.int32), config),
                             whole, atol=1e-5)


def test_ctc_of_a_packed_row_is_the_sum_of_its_segments():
  rng = np.random.default_rng(1)
  logits = jnp.asarray(rng.normal(size=(1, 10, 6)), jnp.float32)  # 5 chunks of 2 frames
  chunk_ids = jnp.asarray([[1, 1, 2, 2, 2]])
  transcript = jnp.asarray([[3, 4, 4, 5, sf.PAD_ID]])
  transcript_ids = jnp.asarray([[1, 1, 2, 2, 0]])
  packed, heard = losses.ctc_loss(logits, transcript, chunk_ids, transcript_ids, num_segments=3)
  first, _ = losses.ctc_loss(logits[:, :4], transcript[:, :2], chunk_ids[:, :2])
  second, _ = losses.ctc_loss(logits[:, 4:], transcript[:, 2:4], chunk_ids[:, 2:] * 0 + 1)
  np.testing.assert_allclose(packed, first + second, rtol=1e-5)
  np.testing.assert_array_equal(heard, [4.0])
  # One CTC over the concatenation lets alignments cross the boundary: not the same.
  joined, _ = losses.ctc_loss(logits, transcript, chunk_ids)
  assert abs(float(joined[0] - packed[0])) > 1e-3


def test_packed_encoder_frames_equal_each_example_alone(packed_setup):
  config, packed, separate = packed_setup
  model = AudioInteractionModel(config)
  params = model.init(jax.random.key(2))
  encode = jax.jit(lambda p, audio, ids: model.network.apply(
      p, model.features(audio, chunk_segment_ids=ids), None, ids,
      method=lambda module, mel, state, ids: module.encoder(mel, state, ids)))
  plain = jax.jit(lambda p, audio: model.network.apply(
      p, model.features(audio), method=lambda module, mel: module.encoder(mel)))
  slots, frames, _, _ = encode(params, packed["audio"], packed["chunk_segment_ids"])
  slots_alone, frames_alone, _, _ = plain(params, separate["audio"])
  unmasked_slots = plain(params, packed["audio"])[0]
  per_frame = frames.shape[1] // packed["chunk_segment_ids"].shape[1]
  per_slot = config.model.slots_per_chunk
  example, leaked = 0, 0.0
  for row, counts in enumerate(packed["segment_num_chunks"]):
    start = 0
    for count in counts[counts > 0]:
      got = slice(start * per_frame, (start + count) * per_frame)
      np.testing.assert_allclose(frames[row, got], frames_alone[example, :count * per_frame],
                                 atol=ATOL, rtol=RTOL)
      got_slots = slice(start * per_slot, (start + count) * per_slot)
      np.testing.assert_allclose(slots[row, got_slots], slots_alone[example, :count * per_slot],
                                 atol=ATOL, rtol=RTOL)
      if start:
        leaked = max(leaked, float(np.abs(unmasked_slots[row, got_slots]
                                          - slots_alone[example, :count * per_slot]).max()))
      start, example = start + count, example + 1
  assert leaked > 1e-3  # without segment ids the later examples see the earlier ones


def test_packed_losses_and_gradients_equal_separate_rows(packed_setup):
  config, packed, separate = packed_setup
  trainer = Trainer(config)
  params = trainer.init_state(0).params
  step = jax.jit(trainer.loss_and_grads)
  fields = lambda batch: {k: jnp.asarray(batch[k]) for k in
                          ("tokens", "audio", "audio_slot_index", "positions", "segment_ids",
                           "lm_targets", "lm_weights", "decision_targets", "transcript",
                           "chunk_segment_ids", "transcript_segment_ids", "sound_events")}
  loss, metrics, grads = step(params, fields(packed))
  # The separate rows take the padded path (no segment ids, one CTC per row).
  padded_config = config.copy_and_resolve_references()
  padded_config.data.packing = False
  loss_alone, metrics_alone, grads_alone = jax.jit(Trainer(padded_config).loss_and_grads)(
      params, fields(separate))
  assert float(metrics["ctc_tokens"]) > 0 and float(metrics["reply_tokens"]) > 0
  assert float(metrics["sound_event_chunks"]) > 0  # the sound-event head is in the sums too
  np.testing.assert_allclose(loss, loss_alone, rtol=RTOL)
  for name in metrics:
    np.testing.assert_allclose(metrics[name], metrics_alone[name], rtol=RTOL, atol=ATOL,
                               err_msg=name)
  flat, flat_alone = jax.tree_util.tree_leaves_with_path(grads), jax.tree_util.tree_leaves(grads_alone)
  for (path, got), want in zip(flat, flat_alone):
    scale = float(np.abs(want).max()) + 1e-12
    np.testing.assert_allclose(np.asarray(got) / scale, np.asarray(want) / scale, atol=1e-4,
                               err_msg=jax.tree_util.keystr(path))
