"""The 28 sub-tasks: decision labels where the *event times* put them, correct replies.

Expected ready times are re-derived here from the timeline's events (word ends, sound
onsets + recognition delays, ...), and expected chunks from those times with integer
sample arithmetic, independently of `timeline.schedule`; then they are compared with
the serialized example's arrays.
"""

import json
import math
import pathlib
import re

import numpy as np
import pytest

from audio_interaction import stream_format as sf
from audio_interaction.corpus import tasks, worlds
from audio_interaction.corpus.serialize import serialize
from audio_interaction.stream_format import SAMPLE_RATE
from audio_interaction.corpus.effects import active_rms_db
from audio_interaction.corpus.timeline import BARGE_IN_AUDIBLE_S, render
from audio_interaction.data.tokenizer import ByteTokenizer, normalize_text

SEEDS = range(4)
TOKENIZER = ByteTokenizer()
# (chunk_ms, slots_per_chunk, tokens_per_chunk): the default and a coarse, paper-like one.
LAYOUTS = [(160, 2, 4), (400, 5, 8)]
ANSWERED_CHAT = ("chat_single", "chat_multi_turn", "chat_mid_pause", "chat_fillers")


def test_registry_has_28_subtasks_4_per_ability():
  assert len(tasks.SUBTASKS) == 28
  for ability in range(1, 8):
    assert len(tasks.subtasks_of(ability)) == 4, ability
  assert {s.mode for s in tasks.subtasks_of(1)} == {"offline"}
  assert all(s.mode == "online" for s in tasks.SUBTASKS.values() if s.ability > 1)


# ---------------------------------------------------------------- the oracle

def expected_ready_times(tl) -> list[float]:
  """When each reply becomes warranted, from the events alone."""
  name, utts, sounds = tl.task, tl.utterances, tl.sounds
  targets = [e for e in sounds if e.role in ("target", "alert")]
  if tl.mode == "offline":
    return [tl.duration]
  if name.startswith("asr_"):
    return [w.end for u in utts for w in u.content_words]
  if name in ANSWERED_CHAT or name == "control_not_addressed":
    return [u.speech_end for u in utts if u.addressed]
  if name == "follow_keyword":
    keyword = re.search(r'the word "(\w+)"', tl.instruction).group(1)
    return [w.end for u in utts for w in u.content_words if normalize_text(w.text) == keyword]
  if name in ("follow_sound_class",) or name.startswith("alert_"):
    return [e.recognisable_at for e in targets]
  if name == "follow_count":
    return [targets[-1].recognisable_at]  # the N-th counted event
  if name in ("follow_summary_cue", "env_what_sound", "env_scene_question",
              "env_time_since"):
    return [utts[-1].speech_end]
  if name == "env_speech_and_event":
    return [max(utts[0].speech_end, sounds[0].recognisable_at)]
  if name == "control_barge_in":
    question, interruption = utts
    new_question = interruption.text.startswith("actually")
    return [question.speech_end] + ([interruption.speech_end] if new_question else [])
  if name == "control_backchannel":
    return [utts[0].speech_end]
  if name == "control_instruction_change":
    change = utts[0]
    return sorted([targets[0].recognisable_at, change.speech_end, targets[1].recognisable_at])
  raise AssertionError(f"no oracle for {name}")


def first_chunk(t: float, chunk_samples: int) -> int:
  """The first chunk whose end (in samples) is >= t: ceil(t / chunk) - 1."""
  return max(0, math.ceil(round(t * SAMPLE_RATE) / chunk_samples) - 1)


def read_chunks(example):
  """Per chunk: decision and reply tokens, straight from the arrays."""
  tokens, decisions = example["tokens"], example["decision_targets"]
  decide_at = np.flatnonzero(tokens == sf.DECIDE_ID)
  audio_at = list(np.flatnonzero(tokens == sf.AUDIO_ID)) + [len(tokens)]
  return ([int(decisions[i]) for i in decide_at],
          [list(tokens[i + 1:audio_at[c + 1]]) for c, i in enumerate(decide_at)])


def read_replies(chunk_decisions, chunk_tokens):
  """(first chunk, last chunk, tokens without <eor>, completed) per reply."""
  replies, current = [], None
  for c, (decision, ids) in enumerate(zip(chunk_decisions, chunk_tokens)):
    if decision == sf.Decision.SILENT:
      assert not ids
      if current:
        replies.append((*current, False))
        current = None
      continue
    assert ids, "SPEAK chunk without tokens"
    for token in ids:
      if current is None:
        current = (c, c, [])
      current = (current[0], c, current[2] + ([] if token == sf.EOR_ID else [token]))
      if token == sf.EOR_ID:
        replies.append((*current, True))
        current = None
  assert current is None, "a reply runs past the end of the stream"
  return replies


# ------------------------------------------------------------- timing checks

@pytest.fixture(scope="module")
def timelines(speech, sounds):
  """(name, seed) -> timeline, composed for 160 ms chunks (and (name, seed, ms) for others)."""
  built = {}
  for chunk_ms in {layout[0] for layout in LAYOUTS}:
    # chunk_ms only tells barge-in builders when the reply is audible.
    cfg = tasks.TaskConfig(chunk_ms=chunk_ms)
    for name in tasks.SUBTASKS:
      for seed in SEEDS:
        built[name, seed, chunk_ms] = tasks.build(name, seed, speech, sounds, cfg)
        if chunk_ms == 160:
          built[name, seed] = built[name, seed, chunk_ms]
  return built


@pytest.mark.parametrize("name", list(tasks.SUBTASKS))
@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda l: f"{l[0]}ms")
def test_decisions_fall_where_event_times_put_them(timelines, name, layout):
  answered = [check_labels(timelines[name, seed, layout[0]], *layout) for seed in SEEDS]
  assert any(answered), f"{name}: no seed produced a reply"


def check_labels(tl, chunk_ms: int, slots: int, budget: int) -> bool:
  """Checks the serialized labels of `tl` against its event times; True if it has replies."""
  chunk = SAMPLE_RATE * chunk_ms // 1000
  ready = expected_ready_times(tl)
  np.testing.assert_allclose(ready, [r.ready_time for r in tl.replies], atol=1e-9)
  example = serialize(tl, TOKENIZER, chunk_ms=chunk_ms, slots_per_chunk=slots,
                      tokens_per_chunk=budget)
  assert set(example) == set(sf.EXAMPLE_FIELDS)
  assert len(example["audio"]) == int(example["num_chunks"]) * chunk
  if tl.mode == "offline":
    assert not (example["decision_targets"] != sf.NO_INDEX).any()
    return True
  decisions, chunk_tokens = read_chunks(example)
  assert len(decisions) == int(example["num_chunks"]) >= math.ceil(tl.num_samples / chunk)
  replies = read_replies(decisions, chunk_tokens)
  assert len(replies) == len(tl.replies)
  # Nothing is said before the first reply is warranted.
  speak = [c for c, d in enumerate(decisions) if d == sf.Decision.SPEAK]
  if ready:
    assert speak[0] == first_chunk(ready[0], chunk)
  else:
    assert not speak
  previous_end = -1
  for (first, last, ids, completed), reply, t in zip(replies, tl.replies, ready):
    # Starts at the first chunk ending at/after the ready time, or right after the
    # previous reply if that was still going (one reply at a time).
    assert first == max(first_chunk(t, chunk), previous_end + 1), (tl.task, tl.seed, reply)
    assert (first + 1) * chunk >= round(t * SAMPLE_RATE)
    full = TOKENIZER.encode(reply.text)
    if reply.interrupted_at is None:
      assert completed and ids == full
      assert last - first + 1 == math.ceil((len(full) + 1) / budget)
    else:
      stop = first_chunk(reply.interrupted_at + BARGE_IN_AUDIBLE_S, chunk)
      assert not completed and last == stop - 1 and decisions[stop] == sf.Decision.SILENT
      assert ids == full[:len(ids)] and 0 < len(ids) < len(full)
    assert all(len(chunk_tokens[c]) <= budget for c in range(first, last + 1))
    previous_end = last
  # Quiet spans (pauses, fillers, benign sounds, others' speech...) stay SILENT.
  for span in tl.quiet:
    for c, decision in enumerate(decisions):
      if round(span.start * SAMPLE_RATE) <= (c + 1) * chunk < round(span.end * SAMPLE_RATE):
        assert decision == sf.Decision.SILENT, (tl.task, tl.seed, span, c)
  return bool(replies)


@pytest.mark.parametrize("name", ["chat_mid_pause", "chat_fillers"])
def test_pauses_and_fillers_inside_questions_stay_silent(timelines, name):
  chunk = SAMPLE_RATE * 160 // 1000
  for seed in SEEDS:
    tl = timelines[name, seed]
    (question,) = tl.utterances
    assert question.holds, "the question has no pause"
    if name == "chat_fillers":
      fillers = [w.text for w, f in zip(question.words, question.fillers) if f]
      assert fillers and set(fillers) <= set(worlds.FILLERS)
    else:
      assert max(h.end - h.start for h in question.holds) >= 0.6
    decisions, _ = read_chunks(serialize(tl, TOKENIZER, chunk_ms=160, slots_per_chunk=2,
                                         tokens_per_chunk=4))
    for hold in question.holds:
      inside = [c for c in range(len(decisions))
                if hold.start <= (c + 1) * chunk / SAMPLE_RATE < hold.end]
      assert inside or hold.end - hold.start < 0.16
      assert all(decisions[c] == sf.Decision.SILENT for c in inside)
      assert hold.end < question.speech_end


def test_barge_in_stops_reply_without_eor_and_backchannel_does_not(timelines):
  for seed in SEEDS:
    cut = timelines["control_barge_in", seed].replies[0]
    assert cut.interrupted_at is not None
    kept = timelines["control_backchannel", seed]
    assert [r.interrupted_at for r in kept.replies] == [None]
    assert len(kept.utterances) >= 2  # backchannels were said during the reply
    ex = serialize(kept, TOKENIZER, chunk_ms=160, slots_per_chunk=2, tokens_per_chunk=4)
    decisions, chunk_tokens = read_chunks(ex)
    (reply,) = read_replies(decisions, chunk_tokens)
    assert reply[3]  # completed with <eor>
    backchannel_chunks = [first_chunk(u.speech_start, 2560) for u in kept.utterances[1:]]
    assert any(reply[0] <= c <= reply[1] for c in backchannel_chunks)


# ---------------------------------------------------------- determinism

@pytest.mark.parametrize("name", list(tasks.SUBTASKS))
def test_same_seed_same_bytes_different_seed_differs(speech, sounds, name):
  def example(seed):
    return serialize(tasks.build(name, seed, speech, sounds), TOKENIZER, chunk_ms=160,
                     slots_per_chunk=2, tokens_per_chunk=4)
  a, b, c = example(7), example(7), example(8)
  for field in sf.EXAMPLE_FIELDS:
    assert a[field].dtype == b[field].dtype and a[field].tobytes() == b[field].tobytes(), field
  assert any(a[f].shape != c[f].shape or a[f].tobytes() != c[f].tobytes()
             for f in sf.EXAMPLE_FIELDS)


# ------------------------------------------------------- replies from the worlds

_NUMBERS = {worlds.number_to_words(n): n for n in range(0, 1001)}
_FACTS = json.loads((pathlib.Path(worlds.__file__).with_name("facts.json")).read_text())


def _number(words: str) -> int:
  return _NUMBERS[words]


def check_answer(question: str, answer: str, previous: int | None) -> int | None:
  """Independent oracle of the closed worlds; returns the arithmetic result, if any."""
  question = re.sub(r"^(computer|assistant) ", "", question)
  m = re.fullmatch(r"what is (.+) (plus|minus|times) (.+)", question)
  if m:
    a, b = _number(m.group(1)), _number(m.group(3))
    value = {"plus": a + b, "minus": a - b, "times": a * b}[m.group(2)]
    assert answer == worlds.number_to_words(value), (question, answer)
    return value
  m = re.fullmatch(r"now (add|subtract|multiply by) (.+)", question)
  if m:
    b = _number(m.group(2))
    value = {"add": previous + b, "subtract": previous - b, "multiply by": previous * b}[m.group(1)]
    assert answer == worlds.number_to_words(value), (question, answer)
    return value
  m = re.fullmatch(r"(?:please )?(?:turn|switch) (on|off)? ?the (.+?) ?(on|off)?( too)?", question)
  if m and re.search(r"\b(light|fan|heater|radio)$", m.group(2)):
    assert answer == f"ok, {m.group(2)} {m.group(1) or m.group(3)}", (question, answer)
    return None
  m = re.fullmatch(r"and the (.+) too", question)
  if m:
    assert answer.startswith(f"ok, {m.group(1)} "), (question, answer)
    return None
  for fact in _FACTS["facts"]:
    rel = _FACTS["relations"][fact["relation"]]
    if question in (rel["question"].format(subject=fact["subject"]),
                    rel["followup"].format(subject=fact["subject"])):
      assert answer == fact["answer"], (question, answer)
      return None
  raise AssertionError(f"question from no world: {question!r}")


def test_chat_answers_are_correct(timelines):
  checked = 0
  for name in ANSWERED_CHAT + ("control_not_addressed",):
    for seed in SEEDS:
      tl = timelines[name, seed]
      previous = None
      asked = [u for u in tl.utterances if u.addressed]
      for question, reply in zip(asked, tl.replies):
        previous = check_answer(question.text, reply.text, previous)
        checked += 1
  assert checked >= 20


def test_sound_and_count_answers(timelines):
  for seed in SEEDS:
    tl = timelines["offline_count_events", seed]
    targets = [e for e in tl.sounds if e.role == "target"]
    assert tl.replies[0].text == worlds.number_to_words(len(targets))
    assert len({e.label for e in targets}) == 1
    tl = timelines["follow_count", seed]
    targets = [e for e in tl.sounds if e.role == "target"]
    assert tl.replies[0].text == f"that is {worlds.count_phrase(len(targets), targets[0].label)}"
    tl = timelines["env_what_sound", seed]
    assert tl.replies[0].text == worlds.sound_name(tl.sounds[0].label)
    assert tl.sounds[0].end < tl.utterances[0].start  # answered from history
    tl = timelines["env_time_since", seed]
    elapsed = tl.replies[0].ready_time - tl.sounds[0].start
    assert tl.replies[0].text == worlds.seconds_ago(round(elapsed))
    assert abs(elapsed - round(elapsed)) <= 0.25 + 1e-6
    tl = timelines["follow_summary_cue", seed]
    assert tl.replies[0].text == worlds.list_sounds([e.label for e in tl.sounds])
    for name in ("alert_alarm", "alert_door", "alert_breakage", "alert_baby_dog"):
      tl = timelines[name, seed]
      alerts = [e for e in tl.sounds if e.role == "alert"]
      assert [r.text for r in tl.replies] == [worlds.alert_message(e.label) for e in alerts]
      assert all(e.label in tasks.SUBTASKS[name].params["alerts"] for e in alerts)


def test_transcripts_are_the_spoken_words(timelines):
  for name in ("asr_clean", "asr_noisy", "asr_long_pauses", "asr_two_speakers"):
    for seed in SEEDS:
      tl = timelines[name, seed]
      spoken = " ".join(u.text for u in tl.utterances)
      assert " ".join(r.text for r in tl.replies) == spoken
  tl = timelines["asr_two_speakers", 0]
  if len(tl.utterances) > 1:
    assert tl.utterances[0].voice != tl.utterances[1].voice
  assert timelines["offline_asr", 0].replies[0].text == timelines["offline_asr", 0].utterances[0].text


def test_background_mixed_at_the_requested_snr(timelines):
  for seed in SEEDS:
    tl = timelines["asr_noisy", seed]
    (bed,) = tl.backgrounds
    speech = render(tl, parts=["speech"])
    noise = render(tl, parts=["background"])
    snr = active_rms_db(speech) - active_rms_db(noise)
    assert abs(snr - bed.snr_db) < 1.0, (snr, bed.snr_db)
    mix = render(tl)
    assert mix.dtype == np.float32 and np.max(np.abs(mix)) <= 0.98 + 1e-6


def test_heldout_split_uses_heldout_items(speech, sounds):
  cfg = tasks.TaskConfig(split=worlds.HELDOUT)
  heldout = {it.question for world in worlds.QUESTION_WORLDS
             for it in worlds.items(world, worlds.HELDOUT)}
  for seed in range(6):
    tl = tasks.build("chat_single", seed, speech, sounds, cfg)
    assert tl.split == worlds.HELDOUT and tl.utterances[0].text in heldout
  assert not set(worlds.items("arithmetic", worlds.TRAIN)) & set(
      worlds.items("arithmetic", worlds.HELDOUT))


def test_missing_sound_classes_are_reported(speech):
  from conftest import ToneSounds  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="needs a sound of one of"):
    tasks.build("alert_alarm", 0, speech, ToneSounds(labels=("rain", "music", "dog_bark")),
                tasks.TaskConfig(negative_rate=0.0))


# -------------------------------------------------- the real speech and sound sources

@pytest.fixture(scope="module")
def installed_sources(sounds):
  """TTS speech (espeak/flite) and the sound bank when installed; tones stand in for
  a missing sound bank."""
  speech_module = pytest.importorskip("audio_interaction.corpus.speech")
  try:
    speech = speech_module.MultiVoiceSpeech(engines=("espeak", "flite"))
  except RuntimeError as e:
    pytest.skip(f"no TTS engine: {e}")
  try:
    from audio_interaction.corpus import sounds as sounds_module  # pylint: disable=g-import-not-at-top
    bank = sounds_module.SoundBank()
  except ImportError:
    bank = sounds
  return speech, bank


def test_every_subtask_on_installed_sources(installed_sources):
  speech, bank = installed_sources
  for name in tasks.SUBTASKS:
    tl = tasks.build(name, 0, speech, bank)
    check_labels(tl, 160, 2, 4)
    if name in ANSWERED_CHAT:
      previous = None
      for question, reply in zip([u for u in tl.utterances if u.addressed], tl.replies):
        previous = check_answer(question.text, reply.text, previous)


def test_demo_tour_strings_a_paused_question_an_alarm_and_a_barge_in(speech, sounds):
  tokenizer = ByteTokenizer()
  for seed in SEEDS:
    timeline = tasks.build("demo_tour", seed, speech, sounds,
                           tasks.TaskConfig(split=worlds.HELDOUT))
    timeline.validate()
    kinds = [reply.kind for reply in timeline.replies]
    assert kinds[:2] == ["answer", "alert"]
    assert any(reply.interrupted_at is not None for reply in timeline.replies)
    assert {span.kind for span in timeline.quiet} >= {"pause", "yield"}
    # The interrupted reply is cut: it is serialized without <eor>.
    example = serialize(timeline, tokenizer, slots_per_chunk=2, tokens_per_chunk=4)
    assert example["tokens"].tolist().count(sf.EOR_ID) == len(timeline.replies) - 1
  assert "demo_tour" not in tasks.SUBTASKS  # never trained on


def test_lead_in_sets_the_quiet_before_the_first_sound(speech, sounds):
  from audio_interaction.corpus.build import lead_in_settings
  settings = lead_in_settings({"enabled": True, "lead_in_seconds": (2.0, 2.5)})
  assert settings == {"lead_in": (2.0, 2.5)}
  assert lead_in_settings({"enabled": False, "lead_in_seconds": (2.0, 2.5)}) == {}
  for seed in range(4):
    late = tasks.build("asr_clean", seed, speech, sounds, tasks.TaskConfig(**settings))
    default = tasks.build("asr_clean", seed, speech, sounds)
    first = lambda tl: min([u.start for u in tl.utterances] + [e.start for e in tl.sounds])
    assert 2.0 <= first(late) <= 2.5 + 1e-9
    assert 0.2 <= first(default) <= 1.0 + 1e-9
