"""Alerts from the sound-event head: the rule by hand, and the stepper writing them into
the stream exactly as the full forward reads it back."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from audio_interaction import stream_format as sf
from audio_interaction.corpus import worlds
from audio_interaction.infer import run_stream as run_stream_lib
from audio_interaction.infer.engine import Engine
from audio_interaction.infer.policies import ThresholdPolicy
from audio_interaction.infer.sound_alerts import SoundAlertRule, sound_alert_rule
import model_testing

LABELS = worlds.SOUND_EVENT_LABELS
SIREN, KNOCK = LABELS.index("siren"), LABELS.index("knock")


def _run_rule(rule: SoundAlertRule, chunks: list[dict[int, float]], free=None) -> list:
  """The alerts of one row over its chunks' probabilities (row free unless told)."""
  rule.start(1)
  fired = []
  for index, probabilities in enumerate(chunks):
    is_free = np.array([True if free is None else free[index]])
    out = rule.fire(model_testing.class_probabilities([probabilities]), [0], np.array([index]), is_free)
    fired.append(out.get(0))
  return fired


def test_a_class_alerts_once_per_presence_after_enough_chunks():
  rule = SoundAlertRule(threshold=0.6, chunks=2, hold_chunks=3,
                        replies={SIREN: [5, sf.EOR_ID], KNOCK: [6, sf.EOR_ID]})
  siren = {SIREN: 0.9}
  quiet = {SIREN: 0.1}
  chunks = [siren, quiet, siren, siren, siren, siren,  # one chunk is not enough; 2 are
            quiet, quiet, siren, siren,  # unheard for 2 < 3 chunks: still the same siren
            quiet, quiet, quiet, siren, siren]  # unheard for 3: a new siren, a new alert
  assert _run_rule(rule, chunks) == [None, None, None, SIREN, None, None,
                                     None, None, None, None, None, None, None, None, SIREN]


def test_the_most_probable_due_class_alerts_and_a_busy_row_waits():
  rule = SoundAlertRule(threshold=0.3, chunks=1, hold_chunks=1,
                        replies={SIREN: [5, sf.EOR_ID], KNOCK: [6, sf.EOR_ID]})
  both = {SIREN: 0.4, KNOCK: 0.5}
  assert _run_rule(rule, [both, both]) == [KNOCK, SIREN]  # knock first, then the siren
  # Busy (saying an alert) at chunk 0: the knock waits for the free chunk 1.
  assert _run_rule(rule, [{KNOCK: 0.9}, {KNOCK: 0.9}], free=[False, True]) == [None, KNOCK]
  # Classes without a reply (benign ones) never alert.
  assert _run_rule(rule, [{LABELS.index("rain"): 1.0}]) == [None]


def test_once_per_sound_sums_the_alerting_classes_and_names_the_sound_by_its_evidence():
  replies = {SIREN: [5, sf.EOR_ID], KNOCK: [6, sf.EOR_ID]}
  once = SoundAlertRule(threshold=0.6, chunks=2, hold_chunks=3, replies=replies,
                        once_per_sound=True)
  per_class = SoundAlertRule(threshold=0.6, chunks=2, hold_chunks=3, replies=replies)
  siren, quiet = {SIREN: 0.9}, {}
  # 0.7 each; the second chunk alone says siren, the two together knock (0.9 > 0.5).
  chunks = [{SIREN: 0.1, KNOCK: 0.6}, {SIREN: 0.4, KNOCK: 0.3},
            siren, siren,              # the same sound goes on: no second alert
            quiet, quiet, siren, siren,  # unheard 2 < 3 chunks: still that sound
            quiet, quiet, quiet, siren, siren]  # unheard 3: a new sound, named afresh
  assert _run_rule(once, chunks) == [None, KNOCK] + [None] * 10 + [SIREN]
  # Class by class, neither class reaches 0.6 in the first two chunks; the siren alerts.
  assert _run_rule(per_class, chunks) == [None, None, None, SIREN] + [None] * 8 + [SIREN]
  # A busy row waits for a free chunk while the sound goes on.
  assert _run_rule(once, [siren, siren, siren], free=[True, False, True]) == [None, None, SIREN]


@pytest.mark.parametrize("once_per_sound", [False, True])
def test_a_vetoed_alert_is_raised_again_at_the_next_chunk_heard(once_per_sound):
  """`rearm` takes an alert back (a second stage said no): the rule asks again at the next
  chunk the sound is still heard, not after the sound has gone for `hold_chunks`."""
  replies = {SIREN: [5, sf.EOR_ID], KNOCK: [6, sf.EOR_ID]}
  rule = SoundAlertRule(threshold=0.6, chunks=2, hold_chunks=3, replies=replies,
                        once_per_sound=once_per_sound)
  siren = model_testing.class_probabilities([{SIREN: 0.9}])
  rule.start(1)
  fired = [rule.fire(siren, [0], np.array([i]), np.ones(1, bool)).get(0) for i in range(2)]
  assert fired == [None, SIREN]
  rule.rearm(0, SIREN)
  assert rule.fire(siren, [0], np.array([2]), np.ones(1, bool)) == {0: SIREN}
  # Not taken back: the same siren goes on without a second alert.
  assert rule.fire(siren, [0], np.array([3]), np.ones(1, bool)) == {}
  with pytest.raises(ValueError, match="does not alert"):
    rule.rearm(0, LABELS.index("rain"))


def test_rule_validation_and_the_config_block():
  with pytest.raises(ValueError, match="threshold"):
    SoundAlertRule(threshold=0.0, chunks=1, hold_chunks=0, replies={})
  with pytest.raises(ValueError, match="<eor>"):
    SoundAlertRule(threshold=0.5, chunks=1, hold_chunks=0, replies={SIREN: [5]})
  infer = ml_collections.ConfigDict({"sound_alert_threshold": 0.0, "sound_alert_chunks": 2,
                                     "sound_alert_hold_seconds": 3.2})
  encode = lambda text: [len(word) for word in text.split()]
  assert sound_alert_rule(infer, encode, chunk_seconds=0.32, sound_event_classes=27) is None
  infer.sound_alert_threshold = 0.7
  with pytest.raises(ValueError, match="has none"):
    sound_alert_rule(infer, encode, chunk_seconds=0.32, sound_event_classes=0)
  rule = sound_alert_rule(infer, encode, chunk_seconds=0.32, sound_event_classes=27)
  assert (rule.threshold, rule.chunks, rule.hold_chunks) == (0.7, 2, 10)
  assert not rule.once_per_sound
  infer.sound_alert_once_per_sound = True
  assert sound_alert_rule(infer, encode, chunk_seconds=0.32,
                          sound_event_classes=27).once_per_sound
  assert sorted(rule.replies) == sorted(LABELS.index(c) for c in worlds.ALERT_LABELS)
  assert rule.replies[SIREN] == encode(worlds.alert_message("siren")) + [sf.EOR_ID]


def test_an_alert_is_written_into_the_stream_and_the_full_forward_agrees():
  model, params = model_testing.sound_head_model(3)
  cfg = model.config
  params = model_testing.hearing(params, SIREN)
  reply = [30, 31, 32, 33, 34, 35, sf.EOR_ID]  # longer than tokens_per_chunk
  rule = SoundAlertRule(threshold=0.5, chunks=2, hold_chunks=1, replies={SIREN: reply})
  audio = (0.1 * np.random.default_rng(0).normal(size=8 * cfg.chunk_samples)).astype(np.float32)
  instruction = [20, 21]
  trace = run_stream_lib.run_stream(Engine(model), params, audio, instruction,
                                    ThresholdPolicy(2.0), sound_alerts=rule)  # the model is mute
  per_chunk = cfg.tokens_per_chunk
  assert [c.sound_alert for c in trace.chunks] == [None, "siren"] + [None] * 6
  written = [t for c in trace.chunks for t in c.reply_tokens]
  assert written == reply  # once: the siren is heard throughout, it does not alert again
  assert trace.chunks[1].reply_tokens == reply[:per_chunk]
  assert run_stream_lib.REPLY_START in trace.chunks[1].events
  end = 1 + (len(reply) - 1) // per_chunk
  assert run_stream_lib.REPLY_END in trace.chunks[end].events
  assert all(c.spoke for c in trace.chunks[1:end + 1]) and not trace.chunks[0].spoke

  # The stream as the model heard it: its full forward gives the same decisions.
  tokens, slots, decide_at, _ = run_stream_lib.stream_sequence(trace, instruction,
                                                               cfg.slots_per_chunk)
  full = model.forward(params, jnp.asarray([tokens]), jnp.asarray(audio[None]),
                       jnp.asarray([slots]))
  probs = np.asarray(jax.nn.softmax(full.decision_logits[0], -1))[decide_at, sf.Decision.SPEAK]
  np.testing.assert_allclose([c.speak_probability for c in trace.chunks], probs, atol=2e-5)


def test_an_alert_cuts_the_models_own_reply_and_skips_rows_not_listening():
  model, params = model_testing.sound_head_model(3)
  cfg = model.config
  reply = [40, 41, sf.EOR_ID]
  rule = SoundAlertRule(threshold=0.5, chunks=1, hold_chunks=1, replies={KNOCK: reply})
  rng = np.random.default_rng(1)
  chunks = (0.1 * rng.normal(size=(5, cfg.chunk_samples))).astype(np.float32)
  engine = Engine(model)
  # Row 0 listens for alerts, row 1 does not; both models speak at every chunk.
  stepper = run_stream_lib.StreamStepper(engine, model_testing.hearing(params, sf.NO_SOUND_EVENT), [[20]] * 2,
                                         [ThresholdPolicy(0.0), ThresholdPolicy(0.0)],
                                         sound_alerts=rule, sound_alert_rows=[0])
  first = stepper.step_batch(np.stack([chunks[0]] * 2))
  assert all(r.spoke and r.sound_alert is None for r in first)
  assert stepper.replying[0]  # its reply runs on when the knock comes
  stepper.params = jax.device_put(model_testing.hearing(params, KNOCK))  # a knock from chunk 1 on
  second = stepper.step_batch(np.stack([chunks[1]] * 2))
  assert second[0].sound_alert == "knock" and second[0].reply_tokens == reply
  # The model's reply ends there (a yield), the alert starts, in that order.
  assert second[0].events[:2] == [run_stream_lib.YIELD, run_stream_lib.REPLY_START]
  assert second[1].sound_alert is None and second[1].reply_tokens != reply


def test_eval_once_per_sound_flag_hears_a_sound_no_single_class_reaches(tmp_path, capsys):
  import json
  import soundfile
  from audio_interaction.apps import cli
  from audio_interaction.data.tokenizer import ByteTokenizer
  from audio_interaction.export import portable
  from audio_interaction.model.model import AudioInteractionModel
  config = model_testing.small_config(**{"model.decoder.vocab_size": 288, "infer.vad": "energy",
                                         "model.sound_event_classes": len(LABELS)})
  model = AudioInteractionModel(config)
  params = model.init(jax.random.key(4))
  # Siren and knock at p = 0.45 each in every chunk: neither alone reaches 0.5, the two
  # together (0.9) do.
  bias = np.zeros(len(LABELS), np.float32)
  bias[[SIREN, KNOCK]] = np.log(0.45 * (len(LABELS) - 2) / 0.1)
  bundle = portable.save_bundle(tmp_path / "bundle", model_testing.with_sound_head(
      params, bias=bias), ByteTokenizer(), config)
  t = np.arange(int(2.0 * sf.SAMPLE_RATE)) / sf.SAMPLE_RATE
  soundfile.write(tmp_path / "siren.wav", (0.3 * np.sin(2 * np.pi * 900 * t)).astype(np.float32),
                  sf.SAMPLE_RATE)
  manifest = tmp_path / "events.jsonl"
  manifest.write_text(json.dumps({"audio": "siren.wav", "events": [
      {"onset": 0.0, "offset": 2.0, "class": "siren", "role": "alert"}]}) + "\n")
  recalls = {}
  for flags in ((), ("--sound-alert-once-per-sound",)):
    out = tmp_path / f"eval{len(flags)}"
    assert cli.main(["eval", "--checkpoint", str(bundle), "--manifest", str(manifest),
                     "--suites", "B6", "--sweep", "", "--sound-alert", "0.5",
                     "--policy", "model", "--threshold", "1.0", "--out", str(out),
                     *flags]) == 0, capsys.readouterr().err
    result = json.loads((out / "results.json").read_text())
    recalls[flags] = result["suites"]["B6"]["model"]["recall"]
    assert "--sound-alert-once-per-sound" in (out / "report.md").read_text() or not flags
  assert recalls == {(): 0.0, ("--sound-alert-once-per-sound",): 1.0}
