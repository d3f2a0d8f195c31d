"""Sound events and signal helpers: every class samples, determinism, splits, SNR mixing,
degradation without the optional Debian sound packages."""

from __future__ import annotations

import logging
import math
import os

import numpy as np
import pytest

from audio_interaction.corpus import effects, sounds
from audio_interaction.stream_format import SAMPLE_RATE


@pytest.fixture(scope="module")
def procedural() -> sounds.SoundBank:
  return sounds.SoundBank(use_recordings=False)


@pytest.fixture(scope="module")
def bank() -> sounds.SoundBank:
  return sounds.SoundBank(p_recorded=0.5)


def _check_clip(clip, label: str) -> None:
  assert clip.label == label
  assert clip.audio.dtype == np.float32 and clip.audio.ndim == 1
  assert np.all(np.isfinite(clip.audio))
  assert 0.1 <= clip.duration <= 15.0, (label, clip.duration)
  assert 0.0 <= clip.recognisable_after <= clip.duration
  assert np.max(np.abs(clip.audio)) <= 1.0
  assert effects.rms_db(clip.audio) > -60.0, label  # not silent


def test_class_sets():
  assert set(sounds.ALERT_CLASSES) <= set(sounds.EVENT_CLASSES)
  for c in ("smoke_alarm", "siren", "alarm_clock", "doorbell", "knock", "glass_break", "crash",
            "baby_cry", "dog_bark", "phone_ring"):
    assert c in sounds.ALERT_CLASSES
  for c in ("rain", "keyboard", "music", "clock_tick", "water", "bird", "cat", "car", "footsteps"):
    assert c in sounds.EVENT_CLASSES and c not in sounds.ALERT_CLASSES
  assert len(set(sounds.EVENT_CLASSES)) == len(sounds.EVENT_CLASSES)
  assert set(sounds.TUXPAINT_CLASSES.values()) | set(sounds.FREEDESKTOP_CLASSES.values()) <= (
      set(sounds.EVENT_CLASSES) | set(sounds.RECORDED_ONLY_CLASSES))


@pytest.mark.parametrize("label", sounds.EVENT_CLASSES)
def test_every_class_procedural(procedural, label):
  clips = [procedural.sample(label, np.random.default_rng(s)) for s in range(3)]
  for clip in clips:
    _check_clip(clip, label)
    assert clip.source == f"procedural:{label}"
  # Same seed -> same bytes; different seeds -> different sounds.
  again = procedural.sample(label, np.random.default_rng(0))
  assert again.audio.tobytes() == clips[0].audio.tobytes()
  assert again.recognisable_after == clips[0].recognisable_after
  assert len({c.audio.tobytes() for c in clips}) == 3


def test_every_label_with_recordings(bank):
  for label in bank.labels():
    for seed in range(4):
      clip = bank.sample(label, np.random.default_rng(seed))
      _check_clip(clip, label)
      again = bank.sample(label, np.random.default_rng(seed))
      assert clip.audio.tobytes() == again.audio.tobytes() and clip.source == again.source


def test_smoke_alarm_recognisable_at_second_beep(procedural):
  clip = procedural.sample("smoke_alarm", np.random.default_rng(3))
  # Beeps are loud 3 kHz tones; count rising edges of the envelope up to recognisable_after.
  frame = 160
  env = np.abs(clip.audio[:len(clip.audio) // frame * frame]).reshape(-1, frame).max(1)
  on = env > 0.3 * env.max()
  onsets = np.nonzero(on[1:] & ~on[:-1])[0] + 1
  onsets = np.concatenate([[0] if on[0] else [], onsets]).astype(int)
  r_frame = int(clip.recognisable_after * SAMPLE_RATE / frame)
  assert np.sum(onsets < r_frame) == 2          # two beeps heard...
  assert not on[min(r_frame + 2, len(on) - 1)]   # ...and the second has just ended


def test_unknown_label(procedural):
  with pytest.raises(ValueError, match="unknown"):
    procedural.sample("unicorn", np.random.default_rng(0))


def test_missing_packages_degrade(monkeypatch, caplog, tmp_path):
  monkeypatch.setattr(sounds, "_warned", set())
  missing = {name: (str(tmp_path / "nope" / name), table)
             for name, (_, table) in sounds.SOUND_PACKAGES.items()}
  with caplog.at_level(logging.WARNING, logger=sounds.__name__):
    b = sounds.SoundBank(packages=missing)
  assert "tuxpaint-stamps-default" in caplog.text and "sound-theme-freedesktop" in caplog.text
  assert b.labels() == sounds.EVENT_CLASSES and not b.recordings()
  for label in ("dog_bark", "siren", "cat"):
    clip = b.sample(label, np.random.default_rng(1))
    assert clip.source == f"procedural:{label}"


def test_file_table_and_unknown_files_skipped(tmp_path):
  root = tmp_path / "stamps"
  (root / "animals/mammals/dogs").mkdir(parents=True)
  rng = np.random.default_rng(0)
  import soundfile as sf
  bark = (0.3 * rng.standard_normal(8000)).astype(np.float32)
  sf.write(root / "animals/mammals/dogs/dog.ogg", bark, 16000)
  sf.write(root / "animals/mammals/dogs/unknown_thing.ogg", bark, 16000)
  b = sounds.SoundBank(packages={"tuxpaint-stamps-default": (str(root), sounds.TUXPAINT_CLASSES)})
  recs = b.recordings()
  assert [r.label for r in recs] == ["dog_bark"]
  assert recs[0].relpath == "tuxpaint-stamps-default/animals/mammals/dogs/dog.ogg"
  if recs[0].split == "train":
    # dog_bark is fallback-only: with a recording it is always the recording.
    clip = sounds.SoundBank(split="train", packages={"tuxpaint-stamps-default": (
        str(root), sounds.TUXPAINT_CLASSES)}).sample("dog_bark", np.random.default_rng(0))
    assert clip.source.endswith("dog.ogg")


def test_installed_tables_point_at_real_files():
  for pkg, (root, table) in sounds.SOUND_PACKAGES.items():
    if not os.path.isdir(root):
      continue
    found, _ = sounds.find_recordings({pkg: (root, table)})
    assert len(found) == len(table), f"{pkg}: missing {set(table) - {r.relpath.split('/', 1)[1] for r in found}}"


def test_recording_split_deterministic_and_disjoint():
  paths = [f"pkg/file_{i}.ogg" for i in range(1000)]
  splits = [sounds.recording_split(p) for p in paths]
  assert splits == [sounds.recording_split(p) for p in paths]
  assert 0.15 < splits.count("heldout") / len(splits) < 0.25
  train, held = sounds.SoundBank(split="train"), sounds.SoundBank(split="heldout")
  assert not ({r.relpath for r in train.recordings()} & {r.relpath for r in held.recordings()})
  assert all(r.split == "train" for r in train.recordings())


# ----------------------------------------------------------------------------- effects


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 10.0, 27.5])
def test_mix_at_snr_by_hand(snr_db):
  rng = np.random.default_rng(0)
  sig = (0.1 * np.sin(np.arange(16000) * 0.05)).astype(np.float32)
  noise = rng.standard_normal(16000).astype(np.float32) * 3.0
  mix = effects.mix_at_snr(sig, noise, snr_db)
  added = mix.astype(np.float64) - sig.astype(np.float64)
  p_sig = sum(float(v) ** 2 for v in sig) / len(sig)
  p_noise = sum(float(v) ** 2 for v in added) / len(added)
  assert abs(10 * math.log10(p_sig / p_noise) - snr_db) < 0.01
  # The added part is the given noise, scaled (correlation 1).
  assert np.corrcoef(added, noise)[0, 1] > 0.9999


def test_mix_at_snr_tiles_short_noise_and_handles_silence():
  sig = np.ones(1000, np.float32)
  mix = effects.mix_at_snr(sig, np.array([1.0, -1.0], np.float32), 20.0)
  assert mix.shape == (1000,)
  added = mix - sig
  assert abs(10 * math.log10(1.0 / np.mean(added.astype(np.float64) ** 2)) - 20.0) < 0.01
  assert np.array_equal(effects.mix_at_snr(sig, np.zeros(10, np.float32), 0.0), sig)


def test_place():
  clip = np.arange(1, 6, dtype=np.float32)
  assert effects.place(8, clip, 2).tolist() == [0, 0, 1, 2, 3, 4, 5, 0]
  assert effects.place(4, clip, -2).tolist() == [3, 4, 5, 0]
  assert effects.place(4, clip, 2).tolist() == [0, 0, 1, 2]
  assert effects.place(4, clip, 9).tolist() == [0, 0, 0, 0]


def test_random_channel_keeps_onset_and_length():
  x = np.zeros(16000, np.float32)
  x[8000:9600] = np.sin(np.arange(1600) * 0.3).astype(np.float32) * 0.3
  for seed in range(5):
    y = effects.random_channel(x, np.random.default_rng(seed), p_noise=0.0)
    assert y.shape == x.shape
    # Nothing audible before the onset (zero-phase filters may pre-ring a few ms).
    assert effects.rms_db(y[:7900]) < effects.rms_db(y[8000:9600]) - 40
    assert abs(effects.active_rms_db(y[8000:9600]) - effects.active_rms_db(x[8000:9600])) < 6
  a = effects.random_channel(x, np.random.default_rng(3))
  assert a.tobytes() == effects.random_channel(x, np.random.default_rng(3)).tobytes()


def test_resample_and_noise():
  x = np.sin(2 * np.pi * 440 * np.arange(22050) / 22050).astype(np.float32)
  y = effects.resample(x, 22050, 16000)
  assert abs(len(y) - 16000) <= 1
  spec = np.abs(np.fft.rfft(y))
  assert abs(np.argmax(spec) * 16000 / len(y) - 440) < 2
  pink = effects.colored_noise(np.random.default_rng(0), 32000, 1.0)
  assert abs(effects.rms_db(pink)) < 0.1
  s = np.abs(np.fft.rfft(pink)) ** 2
  f = np.fft.rfftfreq(len(pink), 1 / 16000)
  assert s[(f > 100) & (f < 200)].mean() > 5 * s[(f > 4000) & (f < 8000)].mean()


def _click_file(path, freq: float, seconds: float) -> str:
  import soundfile as sf
  t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
  sf.write(path, (0.5 * np.sin(2 * np.pi * freq * t) * np.exp(-t / 0.01)).astype(np.float32),
           SAMPLE_RATE)
  return str(path)


def test_single_impacts_are_laid_as_a_run_from_one_package(tmp_path):
  # Two keyboards of single key clicks (different pitches) and one long typing file:
  # a click drawn becomes a run of clicks of the same keyboard only; the long file
  # stays itself.
  recs = [sounds.Recording(_click_file(tmp_path / f"{pkg}{i}.wav", freq, 0.06), "keyboard",
                           f"{pkg}/key{i}.wav", "train")
          for pkg, freq in (("kbd_a", 3000.0), ("kbd_b", 500.0)) for i in range(3)]
  typing = sounds.Recording(_click_file(tmp_path / "typing.wav", 1500.0, 2.0), "keyboard",
                            "kbd_c/typing.wav", "train")
  bank = sounds.SoundBank(split="train", p_recorded=1.0, use_recordings=False,
                          extra_recordings=recs + [typing])
  pattern = sounds.STROKE_PATTERNS["keyboard"]
  seen_runs = 0
  for seed in range(30):
    clip = bank.sample("keyboard", np.random.default_rng(seed))
    again = bank.sample("keyboard", np.random.default_rng(seed))
    np.testing.assert_array_equal(clip.audio, again.audio)
    if clip.source.startswith("kbd_c"):
      assert clip.duration > 1.9
      continue
    seen_runs += 1
    levels = effects.frame_rms_db(clip.audio, 160, 160)
    onsets = np.flatnonzero((levels[1:] > levels.max() - 20) & (levels[:-1] <= levels.max() - 20))
    # At least the pattern's fewest strokes, spread over more than one stroke's length.
    assert len(onsets) + 1 >= pattern.count[0] - 1, (seed, len(onsets))
    assert clip.duration >= (pattern.count[0] - 1) * pattern.interval[0] * 0.9 * 16 / 17
    # The run's strokes come from the drawn click's keyboard: its pitch only.
    spectrum = np.abs(np.fft.rfft(clip.audio))
    freqs = np.fft.rfftfreq(len(clip.audio), 1 / SAMPLE_RATE)
    peak = freqs[np.argmax(spectrum)]
    expected = 3000.0 if clip.source.startswith("kbd_a") else 500.0
    assert abs(peak - expected) < 0.1 * expected, (seed, peak, clip.source)
    # Recognisable at the pattern's stroke, not after the whole run.
    assert 0.0 < clip.recognisable_after < clip.duration / 2
  assert seen_runs >= 10


def test_a_long_recording_gives_an_excerpt_from_a_random_offset(tmp_path):
  import soundfile as sf
  # 20 s of a tone whose frequency rises with time: where an excerpt came from shows.
  t = np.arange(20 * SAMPLE_RATE) / SAMPLE_RATE
  path = tmp_path / "ringtone.wav"
  sf.write(path, (0.5 * np.sin(2 * np.pi * (200 + 20 * t) * t)).astype(np.float32), SAMPLE_RATE)
  bank = sounds.SoundBank(split="train", p_recorded=1.0, use_recordings=False,
                          extra_recordings=[sounds.Recording(str(path), "phone_ring",
                                                             "pkg/ringtone.wav", "train")])
  clips = [bank.sample("phone_ring", np.random.default_rng(seed)) for seed in range(6)]
  for clip in clips:
    assert clip.duration <= sounds.RECORDING_MAX_S * 17 / 16 + 1e-6  # at most the cap, warped
    assert clip.duration >= sounds.RECORDING_MAX_S * 16 / 17 - 1e-6
  again = bank.sample("phone_ring", np.random.default_rng(0))
  np.testing.assert_array_equal(again.audio, clips[0].audio)
  # Different draws hear different parts of the recording: the tone's frequency where an
  # excerpt begins (200 + 40 t Hz at t s, within the +-6 % speed warp) says where it began.
  def starting_hz(clip):
    head = clip.audio[:SAMPLE_RATE // 5]
    return np.fft.rfftfreq(len(head), 1 / SAMPLE_RATE)[np.argmax(np.abs(np.fft.rfft(head)))]
  starts = [starting_hz(c) for c in clips]
  assert max(starts) - min(starts) > 100, starts  # > 2.5 s apart in the recording
