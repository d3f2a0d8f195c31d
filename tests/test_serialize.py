"""Serializer: the stream-format layouts, and describe() reads back what the timeline says."""

import math
import re

import numpy as np
import pytest

from audio_interaction import stream_format as sf
from audio_interaction.corpus import tasks
from audio_interaction.corpus.serialize import decode_example, describe, metadata, serialize
from audio_interaction.stream_format import SAMPLE_RATE
from audio_interaction.corpus.timeline import render
from audio_interaction.data.tokenizer import ByteTokenizer, train_sentencepiece

K, BUDGET = 2, 4
DTYPES = {"tokens": np.int32, "audio_slot_index": np.int32, "lm_targets": np.int32,
          "lm_weights": np.float32, "decision_targets": np.int32, "audio": np.float32,
          "num_chunks": np.int32}
# One online sub-task per ability, the barge-in (cut reply) and an offline one.
ROUND_TRIP = ("offline_asr", "offline_clip_qa", "asr_long_pauses", "follow_count",
              "chat_multi_turn", "alert_door", "env_speech_and_event", "control_barge_in",
              "control_instruction_change")


@pytest.fixture(scope="module", params=["bytes", "sentencepiece"])
def tokenizer(request):
  if request.param == "bytes":
    return ByteTokenizer()
  pytest.importorskip("sentencepiece")
  return train_sentencepiece(tasks.training_texts(examples_per_task=5), 600)


def _parse(text: str):
  """describe() text -> (decisions per chunk, [(text, completed)])."""
  decisions, replies = [], []
  for line in text.splitlines():
    m = re.fullmatch(r"chunk +(\d+) \(([\d.]+)-([\d.]+) s\) (SILENT|SPEAK)( '.*')?", line)
    if m:
      assert int(m.group(1)) == len(decisions)
      decisions.append(sf.Decision[m.group(4)])
      continue
    m = re.fullmatch(r"reply \d+: chunks \d+-\d+ (complete|cut) '(.*)'", line)
    if m:
      replies.append((m.group(2), m.group(1) == "complete"))
  return decisions, replies


@pytest.mark.parametrize("name", ROUND_TRIP)
def test_describe_reads_back_the_timeline(tokenizer, speech, sounds, name):
  for seed in range(2):
    tl = tasks.build(name, seed, speech, sounds)
    example = serialize(tl, tokenizer, chunk_ms=160, slots_per_chunk=K, tokens_per_chunk=BUDGET)
    text = describe(example, tokenizer)
    assert f"instruction: {tl.instruction!r}" in text
    decisions, replies = _parse(text)
    assert len(replies) == len(tl.replies)
    for (said, completed), reply in zip(replies, tl.replies):
      expected = tokenizer.decode(tokenizer.encode(reply.text))
      if reply.interrupted_at is None or tl.mode == "offline":
        assert completed and said == expected
      else:
        assert not completed and said and expected.startswith(said)
    if tl.mode == "online":
      assert decisions == [sf.Decision(d) for d in example["decision_targets"]
                           if d != sf.NO_INDEX]
      view = decode_example(example, tokenizer)
      first = [c.index for c in view.chunks if c.decision == sf.Decision.SPEAK][:1]
      assert first == [view.replies[0].first_chunk] if tl.replies else not first
    else:
      assert tl.mode == "offline" and not decisions and "offline example" in text


def test_chunk_line_format(speech, sounds):
  tok = ByteTokenizer()
  tl = tasks.build("chat_single", 0, speech, sounds)
  text = describe(serialize(tl, tok, slots_per_chunk=K, tokens_per_chunk=64), tok)
  chunk = math.ceil(round(tl.replies[0].ready_time * SAMPLE_RATE) / 2560) - 1
  line = f"chunk {chunk:3d} ({chunk * 0.16:.2f}-{(chunk + 1) * 0.16:.2f} s) SPEAK '{tl.replies[0].text} <eor>'"
  assert line in text.splitlines()


def _check_common(example, tokenizer, chunk_samples):
  assert set(example) == set(sf.EXAMPLE_FIELDS)
  for field, dtype in DTYPES.items():
    assert example[field].dtype == dtype, field
  n = int(example["num_chunks"])
  assert example["num_chunks"].shape == ()
  length = len(example["tokens"])
  for field in ("audio_slot_index", "lm_targets", "lm_weights", "decision_targets"):
    assert example[field].shape == (length,), field
  assert example["audio"].shape == (n * chunk_samples,)
  slot_positions = example["tokens"] == sf.AUDIO_SLOT_ID
  np.testing.assert_array_equal(example["audio_slot_index"][slot_positions], np.arange(n * K))
  assert (example["audio_slot_index"][~slot_positions] == sf.NO_INDEX).all()
  np.testing.assert_array_equal(example["lm_targets"][:-1], example["tokens"][1:])
  assert example["lm_targets"][-1] == sf.PAD_ID and example["lm_weights"][-1] == 0
  assert example["tokens"].max() < tokenizer.vocab_size
  return n


def test_online_layout(speech, sounds):
  tok = ByteTokenizer()
  tl = tasks.build("control_barge_in", 0, speech, sounds)
  ex = serialize(tl, tok, chunk_ms=160, slots_per_chunk=K, tokens_per_chunk=BUDGET)
  n = _check_common(ex, tok, 2560)
  tokens, weights, targets = ex["tokens"], ex["lm_weights"], ex["lm_targets"]
  instruction = tok.encode(tl.instruction)
  head = [sf.BOS_ID, sf.ONLINE_ID, sf.SYS_ID] + instruction + [sf.END_SYS_ID]
  np.testing.assert_array_equal(tokens[:len(head)], head)
  assert (weights[:len(head)] == 0).all()
  decide_at = np.flatnonzero(tokens == sf.DECIDE_ID)
  assert len(decide_at) == n == int((tokens == sf.AUDIO_ID).sum())
  for position in decide_at:
    # <audio> <a>*K <decide> at every chunk.
    assert tokens[position - K - 1] == sf.AUDIO_ID
    assert (tokens[position - K:position] == sf.AUDIO_SLOT_ID).all()
    decision = ex["decision_targets"][position]
    nxt = tokens[position + 1] if position + 1 < len(tokens) else sf.PAD_ID
    if decision == sf.Decision.SPEAK:
      # The first reply token is predicted at <decide>, in the same forward pass.
      assert weights[position] == 1 and targets[position] == nxt >= sf.NUM_SPECIAL_TOKENS
    else:
      assert decision == sf.Decision.SILENT and weights[position] == 0
  assert ((ex["decision_targets"] != sf.NO_INDEX) == (tokens == sf.DECIDE_ID)).all()
  # Trained LM targets are exactly the reply tokens (incl. <eor>), never audio markers.
  trained = targets[weights == 1]
  assert sf.AUDIO_ID not in trained and sf.AUDIO_SLOT_ID not in trained
  reply_tokens = sum(len(tok.encode(r.text)) + 1 for r in tl.replies)
  cut = [r for r in tl.replies if r.interrupted_at is not None]
  assert cut and int(weights.sum()) < reply_tokens  # the cut reply lost its tail
  assert int((trained == sf.EOR_ID).sum()) == len(tl.replies) - len(cut)
  np.testing.assert_array_equal(ex["audio"], render(tl, chunk_ms=160, num_chunks=n))


def test_offline_layout(speech, sounds):
  tok = ByteTokenizer()
  tl = tasks.build("offline_sound_label", 3, speech, sounds)
  ex = serialize(tl, tok, chunk_ms=160, slots_per_chunk=K, tokens_per_chunk=BUDGET)
  n = _check_common(ex, tok, 2560)
  assert n == math.ceil(tl.num_samples / 2560)
  answer = tok.encode(tl.replies[0].text) + [sf.EOR_ID]
  expected = ([sf.BOS_ID, sf.OFFLINE_ID, sf.AUDIO_ID] + [sf.AUDIO_SLOT_ID] * (K * n)
              + [sf.SYS_ID] + tok.encode(tl.instruction) + [sf.END_SYS_ID] + answer)
  np.testing.assert_array_equal(ex["tokens"], expected)
  # Loss on `answer <eor>` only: the positions from </sys> to the last answer token.
  weights = np.zeros(len(expected), np.float32)
  weights[len(expected) - len(answer) - 1:-1] = 1
  np.testing.assert_array_equal(ex["lm_weights"], weights)
  assert (ex["decision_targets"] == sf.NO_INDEX).all()


def test_budget_and_chunk_size_are_respected(speech, sounds):
  tok = ByteTokenizer()
  tl = tasks.build("control_backchannel", 1, speech, sounds)
  for chunk_ms, budget in ((160, 1), (160, 4), (400, 16), (80, 3)):
    ex = serialize(tl, tok, chunk_ms=chunk_ms, slots_per_chunk=K, tokens_per_chunk=budget)
    view = decode_example(ex, tok)
    assert view.chunk_ms == pytest.approx(chunk_ms)
    assert max(len(c.tokens) for c in view.chunks) == budget
    (reply,) = view.replies
    assert reply.completed and reply.text == tl.replies[0].text
    assert reply.last_chunk - reply.first_chunk + 1 == math.ceil(
        (len(tok.encode(tl.replies[0].text)) + 1) / budget)


def test_metadata_and_bad_arguments(speech, sounds):
  tl = tasks.build("alert_door", 5, speech, sounds)
  assert metadata(tl) == {"ability": "proactive_help", "subtask": "alert_door", "seed": "5",
                          "split": "train", "mode": "online"}
  with pytest.raises(ValueError, match="16000 Hz"):
    serialize(tl, ByteTokenizer(), sample_rate=22050, slots_per_chunk=K, tokens_per_chunk=4)
  with pytest.raises(ValueError, match="whole number"):
    serialize(tl, ByteTokenizer(), chunk_ms=160.03, slots_per_chunk=K, tokens_per_chunk=4)


def _sound(label: str, start: float, audio: np.ndarray, gain: float = 1.0):
  from audio_interaction.corpus.timeline import SoundEvent
  return SoundEvent(start=start, audio=audio.astype(np.float32), label=label, source="test",
                    recognisable_at=start, role="benign", gain=gain, level_db=-20.0)


def _bed(label: str, seconds: float, gain: float):
  from audio_interaction.corpus.timeline import Background
  return Background(start=0.0, audio=np.full(int(seconds * SAMPLE_RATE), 0.1, np.float32),
                    label=label, snr_db=10.0, gain=gain)


def test_sound_event_targets_label_the_chunks_where_each_sound_is_heard():
  import dataclasses
  from audio_interaction.corpus import worlds
  from audio_interaction.corpus.serialize import sound_event_targets
  chunk = 2560  # 160 ms
  ids = {label: i for i, label in enumerate(worlds.SOUND_EVENT_LABELS)}
  assert worlds.SOUND_EVENT_LABELS[sf.NO_SOUND_EVENT] is None  # id 0 is "no sound"
  # A ring: 2 chunks of tone, 2 chunks silent (its rest), 1 chunk of tone, from chunk 1.
  tone = lambda chunks: 0.5 * np.sin(np.arange(chunks * chunk) * 0.2)
  ring = np.concatenate([tone(2), np.zeros(2 * chunk), tone(1)])
  # A dog over chunks 4-6, louder than the ring where they meet (chunk 5 = ring's tail).
  dog = 0.9 * np.sign(np.sin(np.arange(3 * chunk) * 0.05))
  timeline = _timeline_with(sounds=(_sound("phone_ring", 1 * chunk / SAMPLE_RATE, ring),
                                    _sound("dog_bark", 4 * chunk / SAMPLE_RATE, dog)),
                            backgrounds=(_bed("rain", 8 * chunk / SAMPLE_RATE, 0.01),
                                         _bed("not_a_class", 8 * chunk / SAMPLE_RATE, 1.0)),
                            seconds=8 * chunk / SAMPLE_RATE)
  got = sound_event_targets(timeline, chunk, 8)
  none, ring_id, dog_id = sf.NO_SOUND_EVENT, ids["phone_ring"], ids["dog_bark"]
  # Chunk 0: only the beds (scenery, not events); 1-2 the ring; 3 the ring's rest; 4
  # the dog starts; 5: ring tail and dog, the dog louder; 6 the dog; 7 nothing again.
  np.testing.assert_array_equal(got, [none, ring_id, ring_id, none, dog_id, dog_id, dog_id, none])
  # Order does not decide an overlap, loudness does.
  swapped = dataclasses.replace(timeline, sounds=timeline.sounds[::-1])
  np.testing.assert_array_equal(sound_event_targets(swapped, chunk, 8), got)
  # Nothing labelled: all NO_SOUND_EVENT; a sound past the end is ignored.
  empty = dataclasses.replace(timeline, sounds=(_sound("dog_bark", 9.0, dog),), backgrounds=())
  np.testing.assert_array_equal(sound_event_targets(empty, chunk, 8),
                                np.full(8, sf.NO_SOUND_EVENT))


def _timeline_with(*, sounds, backgrounds, seconds):
  from audio_interaction.corpus.timeline import ONLINE, Timeline
  return Timeline(task="t", ability=0, seed=0, split="train", mode=ONLINE, instruction="",
                  duration=seconds, speech_level_db=-20.0, utterances=(), sounds=sounds,
                  backgrounds=backgrounds, replies=(), quiet=())


def test_serialized_sound_events_follow_the_timeline(speech, sounds):
  from audio_interaction.corpus import worlds
  from audio_interaction.corpus.serialize import sound_event_targets
  tl = tasks.build("alert_door", 0, speech, sounds)
  ex = serialize(tl, ByteTokenizer(), chunk_ms=160, slots_per_chunk=K, tokens_per_chunk=BUDGET)
  events = ex["sound_events"]
  assert events.dtype == np.int32 and len(events) == int(ex["num_chunks"])
  np.testing.assert_array_equal(events, sound_event_targets(tl, 2560, int(ex["num_chunks"])))
  # The alert's chunks carry its class, from about where it is placed.
  alert = next(s for s in tl.sounds if s.role == "alert")
  first = int(alert.start * SAMPLE_RATE) // 2560
  assert worlds.SOUND_EVENT_LABELS[int(events[first:first + 3].max())] == alert.label
