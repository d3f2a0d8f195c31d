"""What an instruction asks to be told, watched by the heads: the instruction's parse,
the watches by hand, and the stepper answering in the stream."""

import ml_collections
import numpy as np
import pytest

from audio_interaction import stream_format as sf
from audio_interaction.corpus import tasks, worlds
from audio_interaction.data.tokenizer import ByteTokenizer
from audio_interaction.infer import run_stream as run_stream_lib
from audio_interaction.infer.engine import Engine
from audio_interaction.infer.policies import ThresholdPolicy
from audio_interaction.infer.sound_alerts import SoundAlertRule
from audio_interaction.infer.instruction_watch import (COUNT, SOUND, SUMMARY, WORD,
                                                       InstructionWatches, WatchRequest,
                                                       instruction_watches, parse_watch)
import model_testing

LABELS = worlds.SOUND_EVENT_LABELS
DOG, CRASH, SIREN = LABELS.index("dog_bark"), LABELS.index("crash"), LABELS.index("siren")
TOKENIZER = ByteTokenizer()


@pytest.mark.parametrize("subtask", ["follow_sound_class", "follow_count", "follow_keyword",
                                     "control_instruction_change"])
def test_the_corpus_instructions_parse_to_the_sound_they_ask_for(subtask):
  for seed in range(12):
    timeline = tasks.build(subtask, seed, tasks._TextOnlySpeech(), tasks._TextOnlySounds())
    request = parse_watch(timeline.instruction)
    first = timeline.replies[0].text  # "i hear a dog barking", "that is three crashes", ...
    assert request is not None and request.reply == first, (timeline.instruction, first)


def test_every_class_and_count_parses_and_what_does_not():
  for label in worlds.SOUNDS:
    assert parse_watch(f"Tell me when you hear {worlds.sound_name(label)}.") == (
        WatchRequest(SOUND, label))
    if worlds.countable(label):
      assert parse_watch(f"Let me know once you have heard "
                         f"{worlds.count_phrase(4, label)}") == WatchRequest(COUNT, label, 4)
  assert parse_watch("tell me if you hear the doorbell") == WatchRequest(SOUND, "doorbell")
  assert parse_watch("Tell me when you have heard 2 crashes!") == WatchRequest(COUNT, "crash", 2)
  # "alarm" inside "smoke alarm" is not a second class.
  assert parse_watch("Tell me when you hear the smoke alarm") == WatchRequest(SOUND, "smoke_alarm")
  assert parse_watch("Tell me when you hear an alarm clock") == WatchRequest(SOUND, "alarm_clock")
  assert parse_watch("ok, i will listen for rain") == WatchRequest(SOUND, "rain")
  # What sounds, as a user says it; a word two labels share names neither.
  assert parse_watch("Let me know if you hear the phone.") == WatchRequest(SOUND, "phone_ring")
  assert parse_watch("tell me when you hear the baby") == WatchRequest(SOUND, "baby_cry")
  assert parse_watch("tell me when you hear the alarm") is None  # a clock or smoke?
  assert parse_watch("tell me when you hear the clock") is None
  # A word, not a dog.
  assert parse_watch('Whenever you hear the word "dog", say "heard dog".') == WatchRequest(
      WORD, word="dog", say="heard dog")
  assert parse_watch("whenever you hear the word seven") == WatchRequest(WORD, word="seven")
  assert parse_watch('When I say "recap", list the sounds you heard, in order.') == (
      WatchRequest(SUMMARY, word="recap"))
  for instruction in ("Let me know if anything needs my attention.",  # no class named
                      "tell me when you hear rain or music",  # two classes
                      "Tell me when you have heard three knocks.",  # knocks are not counted
                      "Tell me when you hear a trumpet."):
    assert parse_watch(instruction) is None, instruction
  assert WatchRequest(COUNT, "crash", 3).reply == "that is three crashes"
  assert WatchRequest(SOUND, "dog_bark").reply == "i hear a dog barking"
  assert WatchRequest(WORD, word="seven").reply == "heard seven"


def _watches(**settings) -> InstructionWatches:
  return InstructionWatches(**{"threshold": 0.5, "chunks": 2, "gap_chunks": 2,
                               "hold_chunks": 4, "words": False, **settings},
                            encode=TOKENIZER.encode, decode=TOKENIZER.decode)


def _fire(watches: InstructionWatches, probabilities: dict[int, float], words: str = "",
          free: bool = True) -> dict:
  """One row's chunk: the head's probabilities and the transcript's new words."""
  return watches.fire(model_testing.class_probabilities([probabilities]), [TOKENIZER.encode(words)], [0],
                      np.array([free]))


def _run(watches: InstructionWatches, instruction: str, chunks: list[dict[int, float]],
         free=None) -> list[int]:
  """The chunks at which one row, under `instruction`, answers."""
  watches.start(1)
  watches.set_instruction(0, TOKENIZER.encode(instruction))
  return [index for index, probabilities in enumerate(chunks)
          if _fire(watches, probabilities, free=True if free is None else free[index])]


def test_tell_me_when_answers_each_sound_once_and_again_only_after_the_hold():
  watches = _watches()
  dog, quiet, siren = {DOG: 0.9}, {DOG: 0.1}, {SIREN: 0.99}
  chunks = [siren, siren, dog, quiet, dog, dog, dog, dog,  # one chunk of dog is not enough
            quiet, quiet, quiet, dog, dog,  # unheard 3 < hold 4: the same dog
            quiet, quiet, quiet, quiet, dog, dog]  # unheard 4: answered again
  assert _run(watches, "Tell me when you hear a dog barking.", chunks) == [5, 18]
  watches.start(1)
  watches.set_instruction(0, TOKENIZER.encode("Tell me when you hear a dog barking."))
  assert _fire(watches, dog) == {}
  assert _fire(watches, dog) == {
      0: ("dog_bark", TOKENIZER.encode("i hear a dog barking") + [sf.EOR_ID])}
  # A busy row answers at its first free chunk; no instruction asking for a sound: never.
  assert _run(watches, "Tell me when you hear a dog barking.", [dog] * 4,
              free=[True, False, False, True]) == [3]
  assert _run(watches, "Answer my questions.", [dog] * 6) == []
  assert not watches.watching(0)


def test_counting_answers_at_the_nth_sound_and_a_short_dip_is_not_a_new_one():
  watches = _watches(chunks=1, gap_chunks=2)
  crash, quiet = {CRASH: 0.8}, {}
  chunks = [crash, quiet, crash,  # a one-chunk dip: still the first crash
            quiet, quiet, crash, crash,  # unheard 2 chunks: the second
            quiet, quiet, {SIREN: 0.9}, quiet, crash,  # the third: answered
            quiet, quiet, crash]  # a fourth: counted, not answered
  assert _run(watches, "Tell me when you have heard three crashes.", chunks) == [11]
  # A new instruction starts the count afresh; the crash running when it came is the
  # first.
  watches.set_instruction(0, TOKENIZER.encode("Tell me when you have heard two crashes."))
  for probabilities in (crash, quiet, quiet):
    assert _fire(watches, probabilities) == {}
  assert _fire(watches, crash)[0][1] == TOKENIZER.encode("that is two crashes") + [sf.EOR_ID]


def test_settings_are_checked_and_the_config_block_builds_them():
  with pytest.raises(ValueError, match="threshold"):
    _watches(threshold=1.5)
  with pytest.raises(ValueError, match="gap_chunks"):
    _watches(gap_chunks=0)
  infer = ml_collections.ConfigDict({"sound_watch_threshold": 0.0, "sound_watch_chunks": 3,
                                     "sound_watch_gap_seconds": 0.3,
                                     "sound_watch_hold_seconds": 3.2, "word_watch": False})
  build = lambda classes: instruction_watches(infer, TOKENIZER.encode, TOKENIZER.decode,
                                              chunk_seconds=0.16, sound_event_classes=classes)
  assert build(27) is None
  assert instruction_watches(ml_collections.ConfigDict({}), TOKENIZER.encode, TOKENIZER.decode,
                             chunk_seconds=0.16, sound_event_classes=27) is None  # an old bundle
  infer.word_watch = True
  words_only = build(0)  # words need no sound-event head; sounds are then not watched
  assert words_only.serves(WatchRequest(WORD, word="seven"))
  assert not words_only.serves(WatchRequest(SOUND, "rain"))
  assert not words_only.serves(WatchRequest(SUMMARY, word="recap"))
  infer.sound_watch_threshold, infer.word_watch = 0.4, False
  with pytest.raises(ValueError, match="has none"):
    build(0)
  watches = build(27)
  assert (watches.threshold, watches.chunks, watches.gap_chunks, watches.hold_chunks,
          watches.words, watches.pause_chunks) == (0.4, 3, 2, 20, False, 3)  # key absent
  assert not watches.serves(WatchRequest(WORD, word="seven"))
  infer.word_watch_pause_seconds = 0.48
  assert build(27).pause_chunks == 3
  with pytest.raises(ValueError, match="pause_chunks"):
    _watches(pause_chunks=0)


def test_a_watched_row_answers_in_the_stream_and_says_no_other_alerts():
  model, params = model_testing.sound_head_model(3, vocab_size=TOKENIZER.vocab_size)
  cfg = model.config
  alert = [40, 41, sf.EOR_ID]
  rule = SoundAlertRule(threshold=0.5, chunks=1, hold_chunks=1, replies={SIREN: alert})
  watches = _watches(chunks=2)
  instructions = [TOKENIZER.encode("Tell me when you hear a dog barking."),
                  TOKENIZER.encode("Tell me when you hear a siren."),
                  TOKENIZER.encode("Tell me if something needs my attention.")]
  chunks = (0.1 * np.random.default_rng(1).normal(size=(6, cfg.chunk_samples))
            ).astype(np.float32)
  stepper = run_stream_lib.StreamStepper(Engine(model), model_testing.hearing(params, SIREN),
                                         instructions, [ThresholdPolicy(2.0)] * 3,
                                         sound_alerts=rule, watches=watches)
  steps = [stepper.step_batch(chunk) for chunk in chunks]
  said = [[t for step in steps for t in step[row].reply_tokens] for row in range(3)]
  # The siren: the dog's watcher keeps quiet, the siren's says what it was asked to
  # (after 2 chunks), the unwatched row says the alert (after 1).
  assert said[0] == []
  assert TOKENIZER.decode(said[1]) == "i hear a siren"
  assert [s[1].sound_alert for s in steps][:2] == [None, "siren"]
  assert said[2] == alert and steps[0][2].sound_alert == "siren"
  # A typed instruction change re-targets the row; a new stream in a row starts afresh.
  stepper.change_instruction(TOKENIZER.encode("Tell me when you hear a siren."), rows=[0])
  assert watches.requests[0] == WatchRequest(SOUND, "siren")
  stepper.reset_rows({1: (TOKENIZER.encode("Answer me."), ThresholdPolicy(2.0))})
  assert watches.requests[1] is None
  later = [stepper.step_batch(chunk) for chunk in chunks[:3]]
  assert [s[0].sound_alert for s in later] == ["siren", None, None]  # heard all along
  # Row 1 watches nothing now: the alert rule speaks in it again.
  assert [t for s in later for t in s[1].reply_tokens] == alert


def test_the_request_manifest_asks_for_each_sound_and_for_another_and_eval_scores_it(tmp_path):
  import json
  import soundfile
  from audio_interaction.eval import suites
  from repo_scripts import load_script
  requests = load_script("docs/watch_requests.py")
  (tmp_path / "clips").mkdir()
  rows = []
  for name, label, role in (("ring", "phone_ring", "alert"), ("steps", "footsteps", "benign"),
                            ("door", "door", "benign")):
    soundfile.write(tmp_path / "clips" / f"{name}.wav", np.zeros(8000, np.float32), 16000)
    rows.append({"id": name, "audio": f"clips/{name}.wav", "events": [
        {"onset": 0.1, "offset": 0.4, "class": label, "role": role}]})
  (tmp_path / "events.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  out = tmp_path / "asked" / "watch.jsonl"
  assert requests.main([str(tmp_path / "events.jsonl"), str(out)]) == 0
  written = {row["id"]: row for row in map(json.loads, out.read_text().splitlines())}
  assert sorted(written) == ["door#other", "ring#asked", "ring#other", "steps#asked",
                             "steps#other"]  # no class of ours: asked for another only
  ring = written["ring#asked"]
  assert ring["instruction"] == "Tell me when you hear a phone ringing."
  assert ring["events"][0]["role"] == "alert" and ring["audio"] == "../clips/ring.wav"
  for name in ("ring#other", "steps#other", "door#other"):
    other = parse_watch(written[name]["instruction"])
    assert other.label in ("phone_ring", "footsteps") and written[name]["events"][0]["role"] == (
        "benign")
    assert other.label != written[name]["events"][0]["class"]
  # eval: the asked sound expects what the instruction asked to be told (not the alert);
  # a sound not asked for expects nothing.
  asked = [c for c in suites.cases_from_manifest(str(out), ["B7"]) if "ring#asked" in c.name]
  assert [r.text for r in asked[0].timeline.replies] == ["i hear a phone ringing"]
  others = [c for c in suites.cases_from_manifest(str(out), ["B6"]) if "#other" in c.name]
  assert len(others) == 3 and all(not c.timeline.replies for c in others)
  assert suites.alert_text("phone_ring") == worlds.alert_message("phone_ring")
  assert suites.alert_text("phone_ring", "Tell me when you have heard two phone calls.") == (
      worlds.alert_message("phone_ring"))  # a count is answered at the n-th, not each


def test_a_reply_saying_what_the_model_will_listen_for_moves_the_watch():
  model, params = model_testing.sound_head_model(3, vocab_size=TOKENIZER.vocab_size)
  cfg = model.config
  # Any reply that ends in the stream counts: here the alert rule's, whose words are the
  # acknowledgement of a spoken instruction change.
  said = TOKENIZER.encode("ok, i will listen for a dog barking") + [sf.EOR_ID]
  chunk = np.zeros(cfg.chunk_samples, np.float32)
  chunks_to_say = -(-len(said) // cfg.tokens_per_chunk)
  for words in (True, False):
    rule = SoundAlertRule(threshold=0.5, chunks=1, hold_chunks=100, replies={SIREN: said})
    watches = _watches(words=words)
    stepper = run_stream_lib.StreamStepper(
        Engine(model), model_testing.hearing(params, SIREN),
        [TOKENIZER.encode("Answer my questions.")], [ThresholdPolicy(2.0)],
        sound_alerts=rule, watches=watches)
    for _ in range(chunks_to_say):
      assert watches.requests[0] is None  # not before the reply has ended
      record = stepper.step(chunk)
    assert run_stream_lib.REPLY_END in record.events
    # Only with the spoken words watched: a decoder's unasked "i will listen for" must
    # not move a watch the user set.
    assert watches.requests[0] == (WatchRequest(SOUND, "dog_bark") if words else None)
  assert parse_watch("i hear a dog barking") is None  # a watch's own answer moves nothing


def test_a_word_the_instruction_names_is_answered_each_time_the_transcript_says_it():
  watches = _watches(words=True)
  watches.start(1)
  request = watches.set_instruction(
      0, TOKENIZER.encode('Whenever you hear the word "seven", say "heard seven".'))
  assert request == WatchRequest(WORD, word="seven", say="heard seven")
  heard = TOKENIZER.encode("heard seven") + [sf.EOR_ID]
  assert _fire(watches, {}, "what is ") == {}
  assert _fire(watches, {}, "eleven plus sev") == {}  # "eleven" is not "seven"
  assert _fire(watches, {}, "en") == {}  # "seven" now, whole or not yet
  assert _fire(watches, {}, " times") == {0: ("seven", heard)}  # whole: another word follows
  assert _fire(watches, {}, " two") == {}  # not again for the same word
  assert _fire(watches, {}, " sevent") == {}
  assert _fire(watches, {}, "y") == {} and _fire(watches, {}) == {}  # "seventy" is no "seven"
  assert _fire(watches, {}, " seven") == {}
  assert _fire(watches, {}, free=False) == {}  # the pause makes it whole; busy: it waits
  assert _fire(watches, {}) == {0: ("seven", heard)}
  # Without the transcript watched, the instruction asks for nothing these watches hear.
  plain = _watches()
  plain.start(1)
  assert plain.set_instruction(0, TOKENIZER.encode("Whenever you hear the word seven.")) is None
  assert not plain.watching(0)


def test_a_word_waits_for_the_pause_that_ends_it_unless_another_word_follows():
  watches = _watches(words=True, pause_chunks=3)
  watches.start(1)
  watches.set_instruction(0, TOKENIZER.encode('Whenever you hear the word "seven".'))
  heard = TOKENIZER.encode("heard seven") + [sf.EOR_ID]
  assert _fire(watches, {}, "one seven") == {}
  assert _fire(watches, {}) == {} and _fire(watches, {}) == {}  # still saying it, maybe
  assert _fire(watches, {}) == {0: ("seven", heard)}  # three chunks of nothing: it is over
  assert _fire(watches, {}, " seven") == {}
  assert _fire(watches, {}, " times") == {0: ("seven", heard)}  # another word: over at once
  cue = _watches(words=True, pause_chunks=2)
  cue.start(1)
  cue.set_instruction(0, TOKENIZER.encode('When I say "recap", list the sounds you heard.'))
  for _ in range(2):
    assert _fire(cue, {DOG: 0.9}) == {}
  assert _fire(cue, {}, "recap") == {} and _fire(cue, {}) == {}  # "recap please" may follow
  assert _fire(cue, {}) == {0: ("recap", TOKENIZER.encode("a dog barking") + [sf.EOR_ID])}


def test_a_cue_lists_the_sounds_heard_since_the_start_in_order_each_once():
  watches = _watches(words=True, chunks=2)
  watches.start(1)
  watches.set_instruction(0, TOKENIZER.encode(
      'When I say "recap", list the sounds you heard, in order.'))
  dog, crash, step = {DOG: 0.9}, {CRASH: 0.9}, {LABELS.index("footsteps"): 0.9}
  # Footsteps are heard step by step, not in chunks running: two chunks list them; one
  # chunk of siren does not.
  for probabilities in (dog, dog, {}, {}, crash, crash, {SIREN: 0.9}, step, {}, {}, step,
                        dog, dog):
    assert _fire(watches, probabilities) == {}
  assert _fire(watches, {}, "okay ") == {}
  assert _fire(watches, {}, "recap") == {} and _fire(watches, {}, " please") == {}
  assert _fire(watches, {}) == {  # the request has ended
      0: ("recap", TOKENIZER.encode("a dog barking, then a crash, then footsteps") + [sf.EOR_ID])}
  assert _fire(watches, {}, " recap") == {} and _fire(watches, {}) == {}  # nothing new heard


def test_a_spoken_request_in_the_transcript_moves_the_watch():
  watches = _watches(words=True)
  watches.start(1)
  assert watches.set_instruction(0, TOKENIZER.encode("Answer my questions.")) is None
  assert _fire(watches, {}, "from now on tell me when you hear ") == {}
  assert _fire(watches, {}, "rain instead") == {}
  assert watches.requests[0] == WatchRequest(SOUND, "rain")
  rain = {LABELS.index("rain"): 0.9}
  assert _fire(watches, rain) == {}
  assert _fire(watches, rain)[0][1] == TOKENIZER.encode("i hear rain") + [sf.EOR_ID]
  # The transcript is not read without `words`.
  plain = _watches()
  plain.start(1)
  plain.set_instruction(0, TOKENIZER.encode("Answer my questions."))
  _fire(plain, {}, "tell me when you hear rain")
  assert plain.requests[0] is None


def test_eval_answers_a_recorded_request_with_the_watch_set_on_the_command_line(tmp_path, capsys):
  import json
  from audio_interaction.apps import cli
  bundle = model_testing.hearing_bundle(tmp_path / "bundle", SIREN,  # a siren throughout
                                        **{"infer.vad": "energy"})[0]
  t = np.arange(int(3.0 * sf.SAMPLE_RATE)) / sf.SAMPLE_RATE
  manifest = model_testing.event_manifest(tmp_path, 0.3 * np.sin(2 * np.pi * 900 * t), "siren",
                                          "Tell me when you hear a siren.")
  accuracy = {}
  for watch in ((), ("--config.infer.sound_watch_threshold=0.5",
                     "--config.infer.sound_watch_chunks=8")):
    out = tmp_path / f"eval{len(watch)}"
    assert cli.main(["eval", "--checkpoint", str(bundle), "--manifest", str(manifest),
                     "--suites", "B7", "--sweep", "", "--policy", "model", "--threshold", "1.0",
                     "--out", str(out), *watch]) == 0, capsys.readouterr().err
    result = json.loads((out / "results.json").read_text())
    accuracy[watch] = result["suites"]["B7"]["model"]["accuracy"]
    case = json.loads((out / "cases.jsonl").read_text().splitlines()[0])
    assert case["expected"][0]["text"] == "i hear a siren"
    assert case["systems"]["model"]["in_time_exact"] == (1 if watch else 0)
    assert all(flag in (out / "report.md").read_text() for flag in watch)
  # The mute model says nothing; the watch answers once it has heard the siren for 8
  # chunks (1.28 s: in time, the siren being recognisable 1.2 s in).
  assert accuracy == {(): 0.0, watch: 1.0}
  assert [r["text"] for r in case["systems"]["model"]["replies"]] == ["i hear a siren"]
  capsys.readouterr()
  assert cli.main(["eval", "--checkpoint", str(bundle), "--manifest", str(manifest),
                   "--config.infer.sound_watch_chunks=0", "--out", str(tmp_path / "bad")]) == 2
  assert "infer.sound_watch_chunks=0: must be an int >= 1" in capsys.readouterr().err
  # A bundle brings its own model: a model override is refused, not ignored; an infer
  # override is checked against the bundle's model (this one has a sound-event head).
  assert cli.main(["eval", "--checkpoint", str(bundle), "--manifest", str(manifest),
                   "--config.model.sound_event_classes=0", "--out", str(tmp_path / "bad")]) == 2
  assert "runs a model bundle" in capsys.readouterr().err
  assert cli.main(["eval", "--checkpoint", str(bundle), "--manifest", str(manifest),
                   "--suites", "B7", "--sweep", "", "--config.infer.sound_name_bias=8",
                   "--out", str(tmp_path / "biased")]) == 0, capsys.readouterr().err


def test_a_served_stream_joins_watching_and_an_instruction_change_moves_its_watch():
  from audio_interaction.infer.slots import SlotBatcher
  model, params = model_testing.sound_head_model(3, vocab_size=TOKENIZER.vocab_size)
  params = model_testing.hearing(params, SIREN)  # a siren in every chunk
  watches = _watches(chunks=2)
  batcher = SlotBatcher(Engine(model), params, slots=2, watches=watches)
  chunk = np.zeros(model.config.chunk_samples, np.float32)
  row, sid = batcher.join(TOKENIZER.encode("Tell me when you hear a dog barking."),
                          ThresholdPolicy(2.0))
  other = batcher.join(TOKENIZER.encode("Tell me when you hear a siren."), ThresholdPolicy(2.0))

  def step() -> dict[int, list[int]]:
    batcher.push(row, sid, chunk)
    batcher.push(*other, chunk)
    return {s.row: s.record.reply_tokens for s in batcher.tick()}

  said = [step() for _ in range(8)]
  assert all(s[row] == [] for s in said)  # a dog is asked for: the siren is not
  assert TOKENIZER.decode([t for s in said for t in s[other[0]]]) == "i hear a siren"
  batcher.change_instruction(row, sid, TOKENIZER.encode("Tell me when you hear a siren."))
  said = [step() for _ in range(8)]  # the siren heard all along: answered after the change
  assert watches.requests[row] == WatchRequest(SOUND, "siren")
  assert "i hear a siren" in TOKENIZER.decode([t for s in said for t in s[row]])
