"""Naming a clip's sound from the sound-event head: the ranking by hand, the head over
a whole clip against streaming, `name-sound`, and B3's "sound_head" system."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import soundfile

from audio_interaction.apps import cli, name_sound
from audio_interaction.corpus import worlds
from audio_interaction.data.tokenizer import ByteTokenizer, normalize_text
from audio_interaction.eval import report, suites
from audio_interaction.export import portable
from audio_interaction.infer import sound_naming
from audio_interaction.infer.engine import Engine
from audio_interaction.model import clip_encoder
from audio_interaction.model.clip_encoder import ClipEncoder
from audio_interaction.model.model import AudioInteractionModel
import model_testing

LABELS = worlds.SOUND_EVENT_LABELS
K = len(LABELS)


def _logits(rows: list[dict[str, float]]) -> np.ndarray:
  """Per chunk {label or None: probability} (the rest spread evenly) -> log-probabilities."""
  out = []
  for row in rows:
    rest = (1.0 - sum(row.values())) / (K - len(row))
    probs = np.full(K, rest)
    for label, p in row.items():
      probs[LABELS.index(label)] = p
    out.append(np.log(probs))
  return np.asarray(out)


def test_the_clip_is_named_by_mean_probability_over_its_chunks_never_none():
  # A dog in one chunk at 0.9; a siren through three at 0.5; "none" most of all.
  logits = _logits([{None: 0.05, "dog_bark": 0.9, "siren": 0.02},
                    {None: 0.45, "siren": 0.5, "dog_bark": 0.01},
                    {None: 0.45, "siren": 0.5, "dog_bark": 0.01},
                    {None: 0.45, "siren": 0.5, "dog_bark": 0.01}])
  means = sound_naming.clip_class_probabilities(logits)
  assert means.sum() == pytest.approx(1.0)
  assert means[LABELS.index("siren")] == pytest.approx((0.02 + 3 * 0.5) / 4)
  assert means[LABELS.index("dog_bark")] == pytest.approx((0.9 + 3 * 0.01) / 4)
  ranked = sound_naming.rank_sounds(logits, top=2)
  assert [(h.label, round(h.probability, 4)) for h in ranked] == [
      ("siren", 0.38), ("dog_bark", 0.2325)]  # the mean, not the peak; "none" (0.35) skipped
  assert ranked[0].name == worlds.sound_name("siren")
  assert len(sound_naming.rank_sounds(logits, top=K + 5)) == K - 1


def test_segments_are_runs_of_one_class_above_the_threshold():
  quiet = {None: 0.9}
  logits = _logits([quiet,
                    {"phone_ring": 0.8}, {"phone_ring": 0.6}, {"phone_ring": 0.7},  # 3 chunks
                    {"phone_ring": 0.3, None: 0.5},  # below the threshold: a gap
                    {"dog_bark": 0.9},  # one chunk: too short
                    quiet,
                    {"siren": 0.55, None: 0.2}, {"siren": 0.65, "dog_bark": 0.1}])  # to the end
  segments = sound_naming.sound_segments(logits, chunk_seconds=0.16, threshold=0.5,
                                         min_chunks=2, by="class")
  assert [(round(s.start_s, 2), round(s.end_s, 2), s.label, round(s.probability, 4))
          for s in segments] == [(0.16, 0.64, "phone_ring", 0.7), (1.12, 1.44, "siren", 0.6)]
  assert segments[1].name == worlds.sound_name("siren")
  one = sound_naming.sound_segments(logits, 0.16, threshold=0.5, min_chunks=1, by="class")
  assert [s.label for s in one] == ["phone_ring", "dog_bark", "siren"]
  # "none" is never a segment, however sure the head is of it.
  for by in sound_naming.SEGMENT_BY:
    assert sound_naming.sound_segments(_logits([quiet] * 4), 0.16, min_chunks=1, by=by) == []
  for threshold, chunks, by in ((0.0, 2, "sound"), (1.5, 2, "sound"), (0.5, 0, "sound"),
                                (0.5, 2, "loudness")):
    with pytest.raises(ValueError, match="segments"):
      sound_naming.sound_segments(logits, 0.16, threshold, chunks, by)


def test_segments_by_sound_keep_a_sound_the_head_calls_by_kindred_names_whole():
  # A ringtone the head hears as a phone, an alarm clock and a notification in turn,
  # with a one-chunk pause between rings; three quiet chunks, then a dog. By class, the
  # ring falls apart into runs of one chunk.
  quiet = {None: 0.9}
  ring = [{"phone_ring": 0.5, "alarm_clock": 0.3, None: 0.1},
          {"alarm_clock": 0.5, "phone_ring": 0.35, None: 0.05},
          quiet,
          {"notification": 0.45, "phone_ring": 0.4, None: 0.1},
          {"phone_ring": 0.6, "notification": 0.2, None: 0.1}]
  logits = _logits([quiet] + ring + [quiet] * 3 + [{"dog_bark": 0.8}, {"dog_bark": 0.7}])
  assert [s.label for s in sound_naming.sound_segments(logits, 0.16, 0.5, 2, by="class")
          ] == ["dog_bark"]
  segments = sound_naming.sound_segments(logits, 0.16, 0.5, 2, by="sound")
  # One ring of 5 chunks, its pause bridged, named by the mean of the 4 that hear it:
  # phone (0.5 + 0.35 + 0.4 + 0.6) / 4.
  assert [(round(s.start_s, 2), round(s.end_s, 2), s.label, round(s.probability, 4))
          for s in segments] == [(0.16, 0.96, "phone_ring", 0.4625),
                                 (1.44, 1.76, "dog_bark", 0.75)]
  # No bridging: the pause splits the ring in two (each named by its own chunks).
  assert [(round(s.start_s, 2), s.label) for s in sound_naming.sound_segments(
      logits, 0.16, 0.5, 2, by="sound", max_gap=0)] == [
          (0.16, "phone_ring"), (0.64, "phone_ring"), (1.44, "dog_bark")]
  # Three quiet chunks are bridged at max_gap 3: ring and dog become one stretch.
  assert len(sound_naming.sound_segments(logits, 0.16, 0.5, 2, by="sound", max_gap=3)) == 1
  # The threshold is on P(some sound) = 1 - P(none): at 0.92 the ring's chunks at 0.9
  # drop out, and what is left of it is bridged into runs too short or split.
  assert [s.label for s in sound_naming.sound_segments(logits, 0.16, 0.92, 2, by="sound",
                                                       max_gap=0)] == ["dog_bark"]
  with pytest.raises(ValueError, match="max_gap"):
    sound_naming.sound_segments(logits, 0.16, max_gap=-1)


@pytest.mark.parametrize("bad", [np.zeros((0, K)), np.zeros(K), np.zeros((2, K - 1))])
def test_logits_of_the_wrong_shape_are_refused(bad):
  with pytest.raises(ValueError):
    sound_naming.clip_class_probabilities(bad)


def test_top_must_be_positive():
  with pytest.raises(ValueError, match="top"):
    sound_naming.rank_sounds(_logits([{"bird": 0.5}]), top=0)


@pytest.fixture(scope="module")
def headed():
  """A random small model with a sound-event head reading block 0 beside the final frames."""
  config = model_testing.small_config(**{"model.sound_event_classes": K,
                                         "model.sound_event_blocks": (0,),
                                         "model.decoder.vocab_size": 288})
  model = AudioInteractionModel(config)
  params = model.init(jax.random.key(1))
  audio = (0.2 * np.random.default_rng(0).normal(size=5 * model.config.chunk_samples + 900)
           ).astype(np.float32)
  return config, model, params, audio


def test_the_whole_clip_pass_gives_the_streamed_head_chunk_by_chunk(headed, monkeypatch):
  config, model, params, audio = headed
  whole = ClipEncoder(model, params, output="sound_event_logits")(audio)
  monkeypatch.setattr(clip_encoder, "MAX_FULL_PASS_CHUNKS", 2)  # a long clip: scanned
  scanned = ClipEncoder(model, params, output="sound_event_logits")(audio)
  np.testing.assert_allclose(scanned, whole, atol=2e-4)
  size = model.config.chunk_samples
  padded = np.zeros(-(-audio.size // size) * size, np.float32)
  padded[:audio.size] = audio
  state, streamed = model.init_state(1), []
  for chunk in padded.reshape(-1, size):
    state, _, _, chunk_logits, _ = model.encode_chunk(params, state, jnp.asarray(chunk[None]))
    streamed.append(np.asarray(chunk_logits).reshape(K))
  np.testing.assert_allclose(whole, np.stack(streamed), atol=1e-4)
  assert whole.shape == (padded.size // size, K)


def test_a_model_without_the_head_is_refused_by_name():
  model = AudioInteractionModel(model_testing.small_config())
  with pytest.raises(ValueError, match="no sound-event head"):
    ClipEncoder(model, model.init(jax.random.key(0)), output="sound_event_logits")


def test_cli_names_files(headed, tmp_path, capsys):
  config, model, params, audio = headed
  bundle = portable.save_bundle(tmp_path / "bundle", params, ByteTokenizer(), config)
  wav = tmp_path / "clip.wav"
  soundfile.write(wav, np.repeat(audio[:, None], 2, axis=1), 16000)  # stereo
  out = tmp_path / "sounds.jsonl"
  assert cli.main(["name-sound", str(wav), "--checkpoint", str(bundle), "--top", "2",
                   "--json", str(out)]) == 0
  (result,) = [json.loads(line) for line in out.read_text().splitlines()]
  expected = sound_naming.SoundNamer(model, params)(audio, top=2)
  assert [s["label"] for s in result["sounds"]] == [h.label for h in expected]
  assert [s["probability"] for s in result["sounds"]] == pytest.approx(
      [h.probability for h in expected], abs=1e-4)
  printed = capsys.readouterr().out
  assert printed.startswith(f"{wav} ({audio.size / 16000:.1f} s): {expected[0].name} (")
  plain = portable.save_bundle(tmp_path / "plain", AudioInteractionModel(
      model_testing.small_config()).init(jax.random.key(0)), ByteTokenizer(),
      model_testing.small_config())
  assert cli.main(["name-sound", str(wav), "--checkpoint", str(plain)]) == 2
  assert "no sound-event head" in capsys.readouterr().err
  assert cli.main(["name-sound", str(wav), "--checkpoint", str(bundle), "--top", "0"]) == 2
  # Segments: what `sound_segments` finds in the head's logits, printed and written.
  assert cli.main(["name-sound", str(wav), "--checkpoint", str(bundle), "--segments",
                   "--segment-threshold", "0.05", "--segment-min-chunks", "1",
                   "--json", str(out)]) == 0
  (result,) = [json.loads(line) for line in out.read_text().splitlines()]
  namer = sound_naming.SoundNamer(model, params)
  found = sound_naming.sound_segments(namer.logits(audio), model.config.chunk_seconds, 0.05, 1)
  assert found and [(s["start_s"], s["label"]) for s in result["segments"]] == [
      (round(s.start_s, 3), s.label) for s in found]
  assert f"{found[0].start_s:7.2f}-{found[0].end_s:.2f} s  {found[0].name}" in (
      capsys.readouterr().out)
  assert cli.main(["name-sound", str(wav), "--checkpoint", str(bundle), "--segments",
                   "--segment-min-chunks", "0"]) == 2
  assert "min_chunks" in capsys.readouterr().err
  assert cli.main(["name-sound", str(tmp_path / "missing.wav"), "--checkpoint",
                   str(bundle)]) == 2
  assert "missing.wav" in capsys.readouterr().err
  with pytest.raises(ValueError, match="top"):
    name_sound.name_sound_files([wav], bundle, top=0)


def test_b3_scores_the_head_beside_the_decoder_on_naming_cases_only(headed, tmp_path):
  config, model, params, audio = headed
  namer = sound_naming.SoundNamer(model, params)
  # Two clips labelled with what the head calls them, one with something else.
  clips = [audio, audio[::-1].copy(), 0.5 * audio]
  named = [namer(clip, top=1)[0].label for clip in clips]
  wrong = next(label for label in worlds.SOUNDS if label not in named)
  rows = []
  for index, (clip, label) in enumerate(zip(clips, [named[0], named[1], wrong])):
    soundfile.write(tmp_path / f"c{index}.wav", clip, 16000)
    rows.append({"audio": f"c{index}.wav", "label": label})
  manifest = tmp_path / "sounds.jsonl"
  manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
  cases = suites.cases_from_manifest(str(manifest), ["B3"])
  tokenizer = ByteTokenizer()
  config_eval = suites.EvalConfig(vad="energy", sweep_thresholds=(), sweep_silences=(),
                                  bootstrap_resamples=20)
  runner = suites.Runner(Engine(model), params, tokenizer, config_eval)
  runs = [runner.run(case) for case in cases]
  assert [r.sound_head_answer for r in runs] == [
      normalize_text(worlds.sound_name(label)) for label in named]
  b3 = suites.suite_b3(runs, tokenizer, config_eval)
  assert (b3["sound_head"]["correct"], b3["sound_head"]["expected"]) == (2, 3)
  wrong_name = normalize_text(worlds.sound_name(wrong))
  assert b3["sound_head"]["per_sound"][wrong_name] == {
      "correct": 0, "expected": 1, "answers": {runs[2].sound_head_answer: 1}}
  assert b3["model"]["expected"] == 3
  record = suites.case_record(runs[0], tokenizer)
  assert record["systems"]["sound_head"] == {"answer": runs[0].sound_head_answer}
  results = suites.json_safe(suites.score_runs(runs, tokenizer, ["B3"], config_eval))
  assert "the sound-event head's class | 67%" in report.summary_table(results)
  # A question about a clip (how many, what happened) is not the head's to answer.
  counting = suites.Case(cases[0].name, dataclasses.replace(
      cases[0].timeline, task="offline_count_events"), cases[0].audio, cases[0].suites)
  assert runner.run(counting).sound_head_answer is None
  plain_model = AudioInteractionModel(model_testing.small_config(
      **{"model.decoder.vocab_size": 288}))
  plain = suites.Runner(Engine(plain_model), plain_model.init(jax.random.key(0)), tokenizer,
                        config_eval)
  headless = plain.run(cases[0])
  assert headless.sound_head_answer is None  # no head: no such system
  assert "sound_head" not in suites.suite_b3([headless], tokenizer, config_eval)


def test_naming_counts_by_hand():
  counts = suites.naming_counts([("a dog barking", "a dog barking"), ("rain", "water"),
                                 ("rain", "Rain."), ("rain", "water")])
  assert counts == {"a dog barking": {"correct": 1, "expected": 1, "answers": {}},
                    "rain": {"correct": 1, "expected": 3, "answers": {"water": 2}}}
