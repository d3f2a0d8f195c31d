"""Domain-randomisation effects (corpus/effects.py): measured band limits, SNRs, pitch,
formants, onsets, and determinism."""

import numpy as np
import pytest

from audio_interaction.corpus import effects

SR = 16000


def _tone(freq, seconds=1.0, amplitude=0.1):
  t = np.arange(int(seconds * SR)) / SR
  return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(x):
  spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
  return float(np.fft.rfftfreq(len(x), 1 / SR)[np.argmax(spectrum)])


def _band_db(x, lo, hi):
  spectrum = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
  f = np.fft.rfftfreq(len(x), 1 / SR)
  return 10 * np.log10(spectrum[(f >= lo) & (f < hi)].mean() + 1e-30)


def _vowel(f0=120.0, formants=(700.0, 1200.0, 2600.0), seconds=1.0):
  """An impulse train at f0 through resonators at the formants: a crude vowel."""
  from scipy import signal
  n = int(seconds * SR)
  x = np.zeros(n)
  x[::int(SR / f0)] = 1.0
  for fc in formants:
    r = np.exp(-np.pi * 80.0 / SR)
    x = signal.lfilter([1.0], [1.0, -2 * r * np.cos(2 * np.pi * fc / SR), r * r], x)
  return (0.1 * x / np.abs(x).max()).astype(np.float32)


def _f0(x):
  x = x - x.mean()
  ac = np.correlate(x, x, "full")[len(x) - 1:]
  lo, hi = SR // 400, SR // 60
  return SR / (lo + np.argmax(ac[lo:hi]))


def _centroid(x):
  spectrum = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
  f = np.fft.rfftfreq(len(x), 1 / SR)
  keep = f < 4000
  return float((f[keep] * spectrum[keep]).sum() / spectrum[keep].sum())


SPEECHLIKE = _vowel(seconds=1.5)


@pytest.mark.parametrize("effect", [
    lambda x, r: effects.change_speed(x, r)[0],
    effects.pitch_shift,
    effects.formant_shift,
    effects.telephone,
    effects.simulated_room,
    effects.mic_colouration,
    lambda x, r: effects.background_noise(x, r)[0],
    lambda x, r: effects.randomize(x, r)[0],
], ids=["speed", "pitch", "formant", "telephone", "room", "mic", "noise", "randomize"])
def test_effects_are_deterministic_float32_and_seed_dependent(effect):
  a = effect(SPEECHLIKE, np.random.default_rng(3))
  b = effect(SPEECHLIKE, np.random.default_rng(3))
  c = effect(SPEECHLIKE, np.random.default_rng(4))
  assert a.dtype == np.float32 and np.isfinite(a).all()
  np.testing.assert_array_equal(a, b)
  assert len(a) != len(c) or not np.allclose(a, c)


def test_speed_changes_length_and_timing_not_pitch():
  x = np.zeros(SR * 2, np.float32)
  x[8000:8000 + 8000] = _tone(300, 0.5)
  y, rate = effects.change_speed(x, np.random.default_rng(0), (1.25, 1.25))
  assert rate == 1.25 and len(y) == round(len(x) / 1.25)
  assert abs(_peak_hz(y) - 300) < 5
  loud = np.flatnonzero(np.abs(y) > 0.05)
  # The tone spanned 0.5-1.0 s; it spans 0.4-0.8 s now (within a 32 ms STFT frame).
  assert abs(loud[0] / SR - 0.4) < 0.035 and abs(loud[-1] / SR - 0.8) < 0.035


def test_pitch_shift_moves_a_tone_by_the_drawn_semitones():
  y = effects.pitch_shift(_tone(440, 1.0), np.random.default_rng(0), (3.0, 3.0))
  assert len(y) == SR
  assert abs(_peak_hz(y) - 440 * 2 ** (3 / 12)) < 6


@pytest.mark.parametrize("factor", [0.85, 1.18])
def test_formant_shift_moves_the_envelope_and_keeps_the_pitch(factor):
  y = effects.formant_shift(SPEECHLIKE, np.random.default_rng(0), (factor, factor))
  assert len(y) == len(SPEECHLIKE)
  assert abs(_f0(y) / _f0(SPEECHLIKE) - 1) < 0.03
  ratio = _centroid(y) / _centroid(SPEECHLIKE)
  assert (ratio > 1.08) if factor > 1 else (ratio < 0.93), ratio
  assert abs(effects.active_rms_db(y) - effects.active_rms_db(SPEECHLIKE)) < 0.1


def test_mu_law_round_trip_is_8_bit_accurate():
  x = _tone(500, 0.5, amplitude=0.5)
  y = effects.mu_law(x)
  snr = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean((x - y) ** 2.0))
  assert 30 < snr < 50  # 8 bits: good, not perfect


def test_telephone_keeps_300_to_3400_hz_only():
  x = effects.colored_noise(np.random.default_rng(0), SR * 2) * 0.05
  y = effects.telephone(x, np.random.default_rng(1))
  assert len(y) == len(x)
  in_band = _band_db(y, 600, 3000)
  assert _band_db(y, 4000, 8000) < in_band - 40
  assert _band_db(y, 0, 120) < in_band - 25
  # Flat inside the band; the level is kept, so the band carries what the edges lost.
  assert abs(_band_db(y, 600, 1200) - _band_db(y, 1500, 3000)) < 2
  assert abs(effects.rms_db(y) - effects.rms_db(x)) < 0.2
  # A tone inside the band passes at its level (the codec adds little noise).
  tone = effects.telephone(_tone(1000, 1.0), np.random.default_rng(2))
  assert abs(effects.rms_db(tone[2000:-2000]) - effects.rms_db(_tone(1000, 1.0))) < 1.0


def test_room_impulse_response_starts_at_lag_0_and_decays_at_its_rt60():
  rng = np.random.default_rng(0)
  rir = effects.room_impulse_response(rng, (0.5, 0.5))
  assert rir[0] == 1.0 and np.argmax(np.abs(rir)) == 0
  energy = np.cumsum((rir.astype(np.float64) ** 2)[::-1])[::-1]  # Schroeder integral
  decay_db = 10 * np.log10(energy / energy[0])
  t5, t25 = np.argmax(decay_db < -5), np.argmax(decay_db < -25)
  rt60 = 3 * (t25 - t5) / SR  # T20 extrapolated to 60 dB
  assert 0.25 < rt60 < 0.8, rt60
  # Convolution keeps an onset where it was.
  x = np.zeros(SR, np.float32)
  x[5000:5400] = _tone(800, 0.025)
  y = effects.simulated_room(x, np.random.default_rng(1))
  assert np.flatnonzero(np.abs(y) > 1e-4)[0] >= 4990
  assert np.abs(y[6000:]).max() > 1e-3  # a reverberant tail after the sound


def test_mic_colouration_is_a_bounded_eq():
  x = effects.colored_noise(np.random.default_rng(0), SR * 2) * 0.05
  y = effects.mic_colouration(x, np.random.default_rng(5))
  assert len(y) == len(x)
  bands = [(200 * 2 ** i, 200 * 2 ** (i + 1)) for i in range(4)]
  changes = [_band_db(y, lo, hi) - _band_db(x, lo, hi) for lo, hi in bands]
  assert max(changes) - min(changes) > 1.5  # coloured, not flat
  assert max(abs(c) for c in changes) < 20
  assert abs(effects.rms_db(y) - effects.rms_db(x)) < 0.1


@pytest.mark.parametrize("snr", [0.0, 12.0, 30.0])
def test_background_noise_is_mixed_at_the_drawn_snr(snr):
  x = np.zeros(SR * 2, np.float32)
  x[4000:20000] = SPEECHLIKE[:16000]  # sparse: pauses must not count
  recording = effects.colored_noise(np.random.default_rng(9), 5000, 1.0)
  for noise in (None, recording):
    y, drawn = effects.background_noise(x, np.random.default_rng(1), noise, (snr, snr))
    assert drawn == snr
    active = np.abs(x) > 1e-4
    measured = 10 * np.log10(effects.power(x[active]) / effects.power((y - x)[active]))
    assert abs(measured - snr) < 0.01


def test_randomize_applies_every_stage_and_reports_the_rate():
  x = SPEECHLIKE
  on = effects.Randomization(p_speed=1, p_pitch=1, p_formant=1, p_telephone=1, p_room=1,
                             p_mic=1, p_noise=1)
  y, rate, applied = effects.randomize(x, np.random.default_rng(0), on)
  assert applied == ("speed", "pitch", "formant", "mic", "room", "telephone", "noise")
  assert len(y) == round(len(x) / rate) and rate != 1.0
  off = effects.Randomization(0, 0, 0, 0, 0, 0, 0)
  y, rate, applied = effects.randomize(x, np.random.default_rng(0), off)
  np.testing.assert_array_equal(y, x)
  assert rate == 1.0 and applied == ()


@pytest.mark.parametrize("signal", ["tone", "chirp", "two_tones"])
def test_formant_shift_never_blows_a_frame_up(signal):
  # Moved poles close together can give a frame a gain of 1e30 or more (seen in corpus
  # builds as overflowing utterances); every frame must keep roughly its input energy.
  t = np.arange(16000) / 16000  # 1 s at the corpus rate
  x = {"tone": 0.3 * np.sin(2 * np.pi * 440 * t),
       "chirp": 0.3 * np.sin(2 * np.pi * (100 + 3000 * t) * t),
       "two_tones": 0.2 * np.sin(2 * np.pi * 300 * t) + 0.2 * np.sin(2 * np.pi * 2300 * t),
       }[signal].astype(np.float32)
  for seed in range(4):
    y = effects.formant_shift(x, np.random.default_rng(seed))
    assert np.isfinite(y).all()
    frames_in = effects.frame_rms_db(x, 512, 256)
    frames_out = effects.frame_rms_db(y, 512, 256)
    assert np.max(frames_out - frames_in) < 6.0, seed
    assert np.max(np.abs(y)) < 4 * np.max(np.abs(x)), seed
