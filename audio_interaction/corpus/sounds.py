"""Sound events: real recordings from Debian packages plus procedural generators.

`SoundBank` is the `SoundSource` the corpus builder uses. For each event class it
draws either a recording (when a package that has one is installed) or a procedural
sound with randomized parameters, so a class is never one fixed waveform.

Event classes (`EVENT_CLASSES`) all have a procedural generator, so every class can be
sampled on a machine with no optional package. `ALERT_CLASSES` are the ones the
proactive-help tasks (DESIGN.md ability 5) must speak up for; the rest are benign
sounds to stay silent on (and to name in environment questions, ability 6).
`RECORDED_ONLY_CLASSES` exist only as recordings and are offered by `labels()` only
when their package is installed.

Recordings (all optional, see `SOUND_PACKAGES`):
  - Debian `tuxpaint-stamps-default`: the stamps' sound effects (animals, household,
    fire truck, instruments, thunder...), /usr/share/tuxpaint/stamps/**.ogg;
  - Debian `sound-theme-freedesktop`: /usr/share/sounds/freedesktop/stereo/*.oga
    (alarm clock, phone ringing, notification sounds).
Files are labelled by the tables `TUXPAINT_CLASSES` / `FREEDESKTOP_CLASSES` (reasons in
the comments there); files not in a table are skipped.

Many packages record one impact of a sound that happens as a run (one key press of a
keyboard, one footstep, one knock). Such a recording (`STROKE_MAX_S` or shorter) of a
class with a `StrokePattern` is laid as a run of the package's single impacts of the
class, at the class's pace, so "keyboard" is someone typing and not one click.

`recognisable_after` (seconds from the clip start) is when a listener could name the
sound: procedural generators compute it from their own structure (e.g. the end of
the second beep of a smoke alarm); for recordings it is the first onset plus a
per-class delay (`RECORDING_DELAY_S`).

Train / held-out: a recording is held out when a hash of its package-relative path
falls in the last 20% (`recording_split`), a deterministic per-file split. Procedural
sounds are shared by both splits (their parameters are random per sample).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import math
import os
from typing import Callable, Mapping, Sequence

import numpy as np
import soundfile as sf

from audio_interaction.corpus import effects
from audio_interaction.stream_format import SAMPLE_RATE
from audio_interaction.corpus.clips import SoundClip

log = logging.getLogger(__name__)

SR = SAMPLE_RATE

ALERT_CLASSES: tuple[str, ...] = (
    "smoke_alarm", "siren", "alarm_clock", "doorbell", "knock", "glass_break", "crash",
    "baby_cry", "dog_bark", "phone_ring")
BENIGN_CLASSES: tuple[str, ...] = (
    "rain", "keyboard", "music", "clock_tick", "water", "bird", "cat", "car", "footsteps",
    "vacuum_cleaner", "thunder", "hammer", "notification")
EVENT_CLASSES: tuple[str, ...] = ALERT_CLASSES + BENIGN_CLASSES
RECORDED_ONLY_CLASSES: tuple[str, ...] = ("farm_animal", "insect", "fireworks")

# Classes whose synthetic version is only a rough approximation: use it only when
# no recording of the class is available (in the requested split).
FALLBACK_ONLY_CLASSES = frozenset({"dog_bark", "cat", "baby_cry"})

# ----------------------------------------------------------------------------- recordings

# Tux Paint stamp sounds (paths under /usr/share/tuxpaint/stamps). Chosen by file name
# and checked on spectrograms. Left out on purpose:
#  - household/dishes/glass.ogg and bottle.ogg: clinks, not breakage; calling them
#    glass_break would teach the model to raise alarms on a toast;
#  - household/kettle.ogg: boiling noise, not the whistle a listener would name;
#  - faces/*, symbols/*, *_desc*: human voices and speech (see speech.RecordedSpeech);
#  - town/roadsigns/*, seasonal/* (except fireworks and the cat), space/*, military/*,
#    scissors, saw, washing machine, wild/exotic animals: no class of ours, or unclear.
TUXPAINT_CLASSES: Mapping[str, str] = {
    "animals/mammals/dogs/dog.ogg": "dog_bark",              # two barks
    "seasonal/halloween/blackcat.ogg": "cat",                 # a meow
    "vehicles/emergency/firetruck.ogg": "siren",              # wail sweep, then horn
    "town/flags/checkeredflag.ogg": "car",                    # race cars passing by
    "household/vacuum_cleaner.ogg": "vacuum_cleaner",
    "household/toilet.ogg": "water",                          # a flush: running water
    "household/tools/hammer.ogg": "hammer",
    "household/tools/mallet_metal.ogg": "hammer",
    "naturalforces/lightningbolt.ogg": "thunder",             # crack and rumble
    "seasonal/newyears/fireworks.ogg": "fireworks",
    # Songbirds and common wild birds: what a listener calls "a bird".
    "animals/birds/blackbird.ogg": "bird",
    "animals/birds/crow.ogg": "bird",
    "animals/birds/cuckoo.ogg": "bird",
    "animals/birds/lark.ogg": "bird",
    "animals/birds/owl.ogg": "bird",
    "animals/birds/seagull.ogg": "bird",
    # Poultry and livestock: one "farm animal" class rather than twenty tiny ones.
    **{f"animals/{p}.ogg": "farm_animal" for p in (
        "birds/hen", "birds/rooster", "birds/duck", "birds/drake", "birds/gander",
        "birds/turkey", "mammals/bovines/cow", "mammals/bovines/cow_white",
        "mammals/bovines/bull", "mammals/bovines/goat", "mammals/bovines/ram",
        "mammals/bovines/sheep", "mammals/bovines/sheep_lamb", "mammals/pig",
        "mammals/pig_golden", "mammals/pig_golden2", "mammals/equines/horse",
        "mammals/equines/donkey")},
    **{f"animals/insects/{p}.ogg": "insect" for p in ("bee", "hornet", "mosquito", "grasshopper")},
    # Instruments: all "music".
    **{f"hobbies/music/{p}.ogg": "music" for p in (
        "string/cello", "string/violin", "wind/bassoon", "percussion/drumkit",
        "percussion/drum_tomtom_floor", "percussion/cymbal_crash")},
}

# freedesktop sound theme (file stems under /usr/share/sounds/freedesktop/stereo).
# The names follow the sound naming spec, so the meaning is explicit. Left out:
# audio-channel-* (spoken words), audio-test-signal (test noise), phone-outgoing-*
# (ring-back/busy tones a caller hears, not a phone ringing in the room), camera /
# screen-capture (shutter), power/service/network/suspend/trash (no class of ours).
FREEDESKTOP_CLASSES: Mapping[str, str] = {
    "alarm-clock-elapsed": "alarm_clock",
    "phone-incoming-call": "phone_ring",
    # Short UI sounds: a listener would say "a notification sound".
    **{k: "notification" for k in (
        "bell", "message", "message-new-instant", "complete", "dialog-information",
        "dialog-warning", "dialog-error", "window-attention", "window-question",
        "device-added", "device-removed")},
}

SOUND_PACKAGES: Mapping[str, tuple[str, Mapping[str, str]]] = {
    # name: (root directory, file table)
    "tuxpaint-stamps-default": ("/usr/share/tuxpaint/stamps", TUXPAINT_CLASSES),
    "sound-theme-freedesktop": ("/usr/share/sounds/freedesktop/stereo", FREEDESKTOP_CLASSES),
}

# Classes that happen as a run of short impacts. A recording of one impact (one key
# press, one step, one knock; shorter than `STROKE_MAX_S`) is not what a listener
# hears as typing or someone walking, so the bank lays a run of them: strokes drawn
# from the same package's single impacts of the class (one keyboard, one pair of
# shoes), `count` of them `interval` s apart (uniform ranges), jittered by 10 %.
# Recognisable after `recognisable_after_strokes` of them.
@dataclasses.dataclass(frozen=True)
class StrokePattern:
  count: tuple[int, int]
  interval: tuple[float, float]
  recognisable_after_strokes: int


STROKE_MAX_S = 0.35
# A longer recording (a 30 s smartphone ringtone) gives an excerpt of this length from
# a random offset: an event is a few seconds of a stream, and each draw hears another part.
RECORDING_MAX_S = 8.0
STROKE_PATTERNS: Mapping[str, StrokePattern] = {
    "keyboard": StrokePattern((8, 40), (0.08, 0.3), 4),
    "footsteps": StrokePattern((3, 10), (0.45, 0.65), 2),
    "knock": StrokePattern((2, 5), (0.13, 0.3), 2),
    "clock_tick": StrokePattern((4, 10), (0.5, 1.0), 3),
}

# Seconds after a recording's first onset at which its class is recognisable: about
# one "unit" of the sound (a bark, a meow, one sweep of a siren, a group of beeps).
RECORDING_DELAY_S: Mapping[str, float] = {
    "dog_bark": 0.35, "cat": 0.5, "siren": 1.2, "car": 1.5, "vacuum_cleaner": 0.8, "water": 1.0,
    "hammer": 0.15, "thunder": 1.0, "fireworks": 0.3, "bird": 0.4, "farm_animal": 0.6,
    "insect": 0.8, "music": 1.0, "alarm_clock": 1.2, "phone_ring": 1.0, "notification": 0.15,
}


def is_single_impact(label: str, num_samples: int) -> bool:
  """Whether a recording of `num_samples` (16 kHz, silence trimmed) of class `label` is
  one impact of a sound that happens as a run (one key press, one step): such a
  recording is laid as a run (`stroke_run`) wherever it is used."""
  return label in STROKE_PATTERNS and num_samples < STROKE_MAX_S * SR


def stroke_run(strokes: Sequence[np.ndarray], pattern: StrokePattern,
               rng: np.random.Generator) -> tuple[np.ndarray, float]:
  """A run of single impacts laid by `pattern` (how many, how far apart), each drawn
  from `strokes` (float32 [n_i] at 16 kHz) at a random gain.

  Returns:
    (float32 [n] at 16 kHz, when the `recognisable_after_strokes`-th stroke begins (s)).
  """
  count = int(rng.integers(pattern.count[0], pattern.count[1] + 1))
  interval = float(rng.uniform(*pattern.interval))
  gaps = interval * rng.uniform(0.9, 1.1, size=count)
  starts = np.concatenate([[0.0], np.cumsum(gaps[:-1])])
  picks = [strokes[int(i)] for i in rng.integers(len(strokes), size=count)]
  gains = rng.uniform(0.6, 1.0, size=count)
  buf = np.zeros(_n(starts[-1]) + max(len(p) for p in picks), np.float32)
  for start, pick, gain in zip(starts, picks, gains):
    _add(buf, pick * gain, float(start))
  which = min(pattern.recognisable_after_strokes, count) - 1
  return effects.fade(buf, _n(0.003), _n(0.02)), float(starts[which]) + 0.05


def recording_split(relpath: str) -> str:
  """'train' or 'heldout' for a recording, from a hash of its package-relative path
  (e.g. 'tuxpaint-stamps-default/animals/birds/owl.ogg'): 20% held out, stable across
  machines and Python versions."""
  h = int(hashlib.sha256(relpath.encode("utf-8")).hexdigest()[:8], 16)
  return "heldout" if h % 5 == 0 else "train"


@dataclasses.dataclass(frozen=True)
class Recording:
  """One labelled file: its path, class, package-relative id and split."""

  path: str
  label: str
  relpath: str
  split: str


def find_recordings(packages: Mapping[str, tuple[str, Mapping[str, str]]] | None = None
                    ) -> tuple[tuple[Recording, ...], tuple[str, ...]]:
  """Labelled recordings found on disk, and the names of the packages not found."""
  packages = SOUND_PACKAGES if packages is None else packages
  found: list[Recording] = []
  missing: list[str] = []
  for pkg, (root, table) in packages.items():
    if not os.path.isdir(root):
      missing.append(pkg)
      continue
    for rel, label in sorted(table.items()):
      path = os.path.join(root, rel)
      if not os.path.splitext(rel)[1]:  # freedesktop stems: .oga (or .ogg/.wav)
        path = next((path + e for e in (".oga", ".ogg", ".wav") if os.path.exists(path + e)), path)
      if os.path.exists(path):
        relpath = f"{pkg}/{rel}"
        found.append(Recording(path, label, relpath, recording_split(relpath)))
  return tuple(found), tuple(missing)


# ----------------------------------------------------------------------------- synthesis helpers


def _n(seconds: float) -> int:
  return max(int(round(seconds * SR)), 1)


def _osc(freq: np.ndarray | float, n: int, partials: tuple[float, ...] = (1.0,),
         phase: float = 0.0) -> np.ndarray:
  """Harmonic oscillator: sum_k a_k sin(k * phi(t)), phi from an (instantaneous)
  frequency in Hz (scalar or float[n]). Partials above Nyquist are dropped."""
  f = np.broadcast_to(np.asarray(freq, np.float64), (n,))
  phi = phase + 2.0 * np.pi * np.cumsum(f) / SR
  out = np.zeros(n)
  fmax = float(f.max()) if n else 0.0
  for k, a in enumerate(partials, start=1):
    if a and k * fmax < SR / 2:
      out += a * np.sin(k * phi)
  return out


def _mode(freq: float, decay_s: float, n: int, phase: float = 0.0) -> np.ndarray:
  """Exponentially damped sine (a resonance): amplitude 1 -> 1/e after `decay_s`."""
  t = np.arange(n) / SR
  return np.sin(2 * np.pi * freq * t + phase) * np.exp(-t / decay_s)


def _burst(rng: np.random.Generator, seconds: float, low: float, high: float, decay_s: float) -> np.ndarray:
  """Band-passed noise burst with an exponential decay (impacts, clicks, thumps)."""
  n = _n(seconds)
  x = effects.band_pass(rng.standard_normal(n).astype(np.float32), low, high)
  return x * np.exp(-np.arange(n) / SR / decay_s)


def _adsr(n: int, attack: float, release: float) -> np.ndarray:
  """Linear attack, sustain 1, linear release (seconds) envelope of n samples."""
  env = np.ones(n)
  a = min(_n(attack), n // 2)
  r = min(_n(release), n // 2)
  if a > 0:
    env[:a] = np.linspace(0, 1, a, endpoint=False)
  if r > 0:
    env[n - r:] = np.linspace(1, 0, r)
  return env


def _add(buf: np.ndarray, x: np.ndarray, at: float) -> None:
  """Add `x` into `buf` at time `at` (s), cropping at the end."""
  i = int(round(at * SR))
  if i >= len(buf):
    return
  m = min(len(x), len(buf) - i)
  buf[i:i + m] += x[:m]


def _formants(x: np.ndarray, centres: tuple[float, ...], widths: tuple[float, ...]) -> np.ndarray:
  """Sum of zero-phase band-passes: a crude vocal-tract filter."""
  return sum(effects.band_pass(x.astype(np.float32), c - w / 2, c + w / 2).astype(np.float64)
             for c, w in zip(centres, widths))


Generated = tuple[np.ndarray, float]  # (audio float[n], recognisable_after seconds)


# ----------------------------------------------------------------------------- generators


def gen_smoke_alarm(rng: np.random.Generator) -> Generated:
  """Temporal-three (T3) pattern: 3 beeps ~0.5 s on / 0.5 s off, 1.5 s pause; piezo
  tone ~3.1 kHz with odd harmonics. Recognisable at the end of the 2nd beep."""
  f0 = rng.uniform(2900, 3400)
  on = rng.uniform(0.42, 0.55)
  off = rng.uniform(0.42, 0.55)
  cycles = int(rng.integers(1, 3))
  period = 3 * (on + off) + rng.uniform(1.0, 1.5)
  buf = np.zeros(_n(cycles * period))
  beep_n = _n(on)
  beep = _osc(f0 * (1 + 0.002 * rng.standard_normal()), beep_n, (1.0, 0.0, 0.25, 0.0, 0.1)) * _adsr(beep_n, 0.005, 0.005)
  for c in range(cycles):
    for b in range(3):
      _add(buf, beep, c * period + b * (on + off))
  return buf, (on + off) + on


def gen_siren(rng: np.random.Generator) -> Generated:
  """Emergency siren: wail (slow sweep), yelp (fast sweep) or hi-lo (two tones)."""
  kind = rng.choice(["wail", "yelp", "hilo"])
  dur = rng.uniform(3.0, 6.0)
  n = _n(dur)
  t = np.arange(n) / SR
  lo, hi = rng.uniform(550, 750), rng.uniform(1200, 1600)
  if kind == "wail":
    period = rng.uniform(2.0, 4.0)
    f = lo + (hi - lo) * 0.5 * (1 - np.cos(2 * np.pi * t / period))
    recog = period / 2
  elif kind == "yelp":
    period = rng.uniform(0.18, 0.35)
    f = lo + (hi - lo) * 0.5 * (1 - np.cos(2 * np.pi * t / period))
    recog = 0.6
  else:
    period = rng.uniform(0.9, 1.4)
    f = np.where((t % period) < period / 2, hi * 0.7, lo * 1.1)
    recog = period
  partials = (1.0, 0.5, 0.33, 0.25, 0.2, 0.15)  # bright, horn-like
  x = _osc(f, n, partials)
  # Passing vehicle: loudness swells and fades a little.
  x *= 0.6 + 0.4 * np.sin(np.pi * t / dur) * rng.uniform(0.3, 1.0)
  return x * _adsr(n, 0.05, 0.3), recog


def gen_alarm_clock(rng: np.random.Generator) -> Generated:
  """Digital alarm clock (groups of 4 fast beeps every second) or a mechanical bell
  hammered ~20 times a second. Recognisable after the 2nd group / 0.6 s of ringing."""
  if rng.uniform() < 0.6:
    f0 = rng.uniform(2000, 4200)
    beep_s, gap_s = rng.uniform(0.05, 0.09), rng.uniform(0.04, 0.08)
    group = rng.uniform(0.9, 1.2)
    groups = int(rng.integers(3, 6))
    buf = np.zeros(_n(groups * group))
    beep_n = _n(beep_s)
    beep = _osc(f0, beep_n, (1.0, 0.0, 0.3)) * _adsr(beep_n, 0.003, 0.003)
    for g in range(groups):
      for b in range(4):
        _add(buf, beep, g * group + b * (beep_s + gap_s))
    return buf, group + 4 * (beep_s + gap_s)
  dur = rng.uniform(2.0, 4.0)
  n = _n(dur)
  t = np.arange(n) / SR
  f0 = rng.uniform(1800, 2600)
  bell = sum(a * np.sin(2 * np.pi * f0 * r * t) for r, a in ((1.0, 1.0), (2.32, 0.5), (4.1, 0.3)))
  hammer_hz = rng.uniform(16, 24)
  strikes = np.exp(-(t % (1 / hammer_hz)) / 0.02)  # each strike re-excites the bell
  return bell * strikes * _adsr(n, 0.01, 0.05), 0.6


def _bell_note(freq: float, seconds: float, decay: float, rng: np.random.Generator) -> np.ndarray:
  """Chime/bell: inharmonic partials with their own decays."""
  n = _n(seconds)
  out = np.zeros(n)
  for ratio, amp, dk in ((1.0, 1.0, 1.0), (2.0, 0.35, 0.6), (2.76, 0.25, 0.4), (5.4, 0.1, 0.2)):
    if freq * ratio < SR / 2:
      out += amp * _mode(freq * ratio, decay * dk, n, rng.uniform(0, 2 * np.pi))
  return out * _adsr(n, 0.002, 0.01)


def gen_doorbell(rng: np.random.Generator) -> Generated:
  """Chime doorbell: "ding-dong" (down a major third), a single ding, or a 4-note
  Westminster-like phrase. Recognisable just after the 2nd note starts (the single
  ding after 0.3 s)."""
  base = rng.uniform(520, 900)
  kind = rng.choice(["dingdong", "dingdong", "ding", "four"])
  decay = rng.uniform(0.4, 1.0)
  if kind == "ding":
    notes, step = [base], 0.0
  elif kind == "dingdong":
    notes, step = [base, base / 1.26], rng.uniform(0.45, 0.8)
  else:
    notes, step = [base * r for r in (1.26, 1.0, 1.12, 0.75)], rng.uniform(0.35, 0.55)
  buf = np.zeros(_n(step * (len(notes) - 1) + 2.5 * decay + 0.2))
  for i, f in enumerate(notes):
    _add(buf, _bell_note(f, 2.5 * decay, decay, rng), i * step)
  return buf, (step + 0.15) if len(notes) > 1 else 0.3


def gen_knock(rng: np.random.Generator) -> Generated:
  """Knocking on a door: 2-5 damped wooden impacts (noise burst + low body mode),
  sometimes repeated as a second group. Recognisable after the 2nd knock."""
  count = int(rng.integers(2, 6))
  spacing = rng.uniform(0.13, 0.3)
  body = rng.uniform(90, 250)
  groups = 1 if rng.uniform() < 0.6 else 2
  group_gap = rng.uniform(0.8, 1.5)
  times = [g * (count * spacing + group_gap) + i * spacing + rng.uniform(-0.015, 0.015)
           for g in range(groups) for i in range(count)]
  times = [max(0.0, t) for t in times]
  buf = np.zeros(_n(max(times) + 0.3))
  for t in times:
    knock = 0.6 * _burst(rng, 0.12, 150, rng.uniform(800, 2000), rng.uniform(0.01, 0.025))
    knock += _mode(body * rng.uniform(0.95, 1.05), rng.uniform(0.02, 0.05), len(knock)) * 0.2 * np.abs(knock).max()
    _add(buf, knock * rng.uniform(0.7, 1.0), t)
  return buf, times[1] + 0.05


def gen_glass_break(rng: np.random.Generator) -> Generated:
  """Glass shattering: broadband impact, then many short high resonances (shards)
  scattered over ~1 s and fading. Recognisable 0.3 s in."""
  dur = rng.uniform(1.0, 2.0)
  buf = np.zeros(_n(dur + 0.3))
  _add(buf, _burst(rng, 0.2, 1000, 7800, rng.uniform(0.02, 0.05)) * 1.5, 0.0)
  shards = int(rng.integers(30, 90))
  spread = rng.uniform(0.3, 0.8)
  for _ in range(shards):
    at = rng.exponential(spread * 0.4)
    if at < dur:
      f = rng.uniform(2500, 7500)
      tink = _mode(f, rng.uniform(0.01, 0.06), _n(0.2), rng.uniform(0, 2 * np.pi))
      _add(buf, tink * rng.uniform(0.1, 0.6) * math.exp(-at / spread), at)
  # Secondary bounces of bigger pieces.
  for _ in range(int(rng.integers(1, 4))):
    _add(buf, _burst(rng, 0.1, 1500, 7000, 0.015) * rng.uniform(0.2, 0.6), rng.uniform(0.15, 0.6))
  return buf, 0.3


def gen_crash(rng: np.random.Generator) -> Generated:
  """Something heavy falling: low thud, broadband crash decaying 0.3-0.8 s, then a
  few clattering debris impacts. Recognisable 0.3 s in."""
  dur = rng.uniform(1.0, 2.0)
  buf = np.zeros(_n(dur + 0.5))
  thud_f = rng.uniform(45, 110)
  _add(buf, _mode(thud_f, rng.uniform(0.06, 0.15), _n(0.6)) * 1.2, 0.0)
  _add(buf, _burst(rng, 1.2, 80, 6000, rng.uniform(0.12, 0.35)), 0.0)
  for _ in range(int(rng.integers(2, 7))):
    hit = _burst(rng, 0.2, rng.uniform(200, 800), rng.uniform(2500, 7000), rng.uniform(0.01, 0.04))
    _add(buf, hit * rng.uniform(0.2, 0.7), rng.uniform(0.1, dur))
  return buf, 0.3


def gen_baby_cry(rng: np.random.Generator) -> Generated:
  """Synthetic infant cry (an approximation, used only without recordings): voiced
  bursts at f0 ~350-550 Hz with a rise-fall contour, jitter and formant filtering,
  separated by short inhalations. Recognisable at the end of the first burst."""
  bursts = int(rng.integers(2, 5))
  f0 = rng.uniform(350, 550)
  t_at = 0.0
  pieces = []
  first_end = 0.0
  for b in range(bursts):
    dur = rng.uniform(0.6, 1.3)
    n = _n(dur)
    tt = np.linspace(0, 1, n)
    contour = f0 * (1 + 0.25 * np.sin(np.pi * tt) - 0.1 * tt) * (1 + 0.02 * np.sin(2 * np.pi * rng.uniform(5, 9) * tt * dur))
    contour *= 1 + 0.01 * np.cumsum(rng.standard_normal(n)) / np.sqrt(n)
    voiced = _osc(contour, n, tuple(1.0 / k for k in range(1, 12)))
    voiced = _formants(voiced, (1100, 3000, 4500), (600, 900, 1000)) + 0.05 * voiced
    pieces.append((t_at, voiced * _adsr(n, 0.05, 0.1)))
    if b == 0:
      first_end = dur
    t_at += dur + rng.uniform(0.25, 0.6)
  buf = np.zeros(_n(t_at + 0.1))
  for at, x in pieces:
    _add(buf, x, at)
  return buf, first_end


def gen_dog_bark(rng: np.random.Generator) -> Generated:
  """Synthetic bark (an approximation, used only without recordings): 2-5 short
  harsh bursts, f0 falling from ~500 Hz, noisy, formant-filtered. Recognisable at the
  end of the 2nd bark."""
  barks = int(rng.integers(2, 6))
  f0 = rng.uniform(250, 550)
  times, ends = [], []
  t_at = 0.0
  for _ in range(barks):
    times.append(t_at)
    dur = rng.uniform(0.1, 0.22)
    ends.append(t_at + dur)
    t_at += dur + rng.uniform(0.2, 0.55)
  buf = np.zeros(_n(t_at + 0.2))
  for at, end in zip(times, ends):
    n = _n(end - at)
    tt = np.linspace(0, 1, n)
    contour = f0 * (1.25 - 0.5 * tt)
    x = _osc(contour, n, tuple(1.0 / k for k in range(1, 14)))
    x = x + 0.6 * rng.standard_normal(n)
    x = _formants(x, (600, 1400, 2500), (400, 700, 900))
    env = np.minimum(1.0, tt * 15) * np.exp(-3 * tt)
    _add(buf, x * env, at)
  return buf, ends[1]


# Major-pentatonic steps (semitones): the scale most melodic ringtones are written in.
_PENTATONIC = (0, 2, 4, 7, 9, 12, 14, 16, 19)


def _melodic_ringtone(rng: np.random.Generator) -> Generated:
  """A smartphone ringtone: a short pentatonic phrase of plucked or struck notes
  (marimba, bell, plucked string), played two to four times with a rest between.
  The repetition is what tells it from music: recognisable when the phrase starts
  over."""
  root = rng.uniform(330.0, 880.0)
  steps = rng.choice(_PENTATONIC, size=int(rng.integers(4, 10)))
  note_s = rng.uniform(0.11, 0.26)
  timbre = int(rng.integers(3))
  decay = rng.uniform(0.15, 0.6)
  phrase = np.zeros(_n(note_s * len(steps) + 1.0))
  for i, step in enumerate(steps):
    freq = root * 2.0 ** (step / 12.0)
    n = _n(min(1.0, 4 * decay))
    if timbre == 0:  # marimba: the fundamental and a fourth-harmonic bar mode
      note = _mode(freq, decay, n) + 0.3 * _mode(4.0 * freq, decay / 4, n)
    elif timbre == 1:
      note = _bell_note(freq, n / SR, decay, rng)
    else:  # plucked string: harmonics that die faster the higher they are
      note = sum(_mode(k * freq, decay / k, n, rng.uniform(0, 2 * np.pi)) / k
                 for k in range(1, 6) if k * freq < SR / 2)
    _add(phrase, note * _adsr(n, 0.003, 0.02), i * note_s)
  phrase_s = note_s * len(steps)
  period = phrase_s + rng.uniform(0.3, 1.2)
  repeats = int(rng.integers(2, 5))
  buf = np.zeros(_n(period * (repeats - 1)) + len(phrase))
  for r in range(repeats):
    _add(buf, phrase, r * period)
  return buf[:_n(period * (repeats - 1) + phrase_s + 0.5)], min(period + 0.3, len(buf) / SR)


def gen_phone_ring(rng: np.random.Generator) -> Generated:
  """Ringing phone: a melodic smartphone ringtone (`_melodic_ringtone`) a third of
  the time; else an electronic trill (two tones alternating ~16 Hz) in a UK-style
  double ring or a long ring. Recognisable after ~1 s (the trill), or when the
  ringtone's phrase comes round again."""
  if rng.uniform() < 1 / 3:
    return _melodic_ringtone(rng)
  f1 = rng.uniform(700, 1200)
  f2 = f1 * rng.uniform(1.2, 1.35)
  trill = rng.uniform(12, 20)
  if rng.uniform() < 0.5:
    pattern = [(0.0, 0.4), (0.6, 0.4)]  # double ring
    cycle = 3.0
  else:
    pattern = [(0.0, rng.uniform(1.0, 2.0))]
    cycle = pattern[0][1] + rng.uniform(1.5, 2.5)
  cycles = int(rng.integers(1, 3))
  buf = np.zeros(_n(cycles * cycle))
  for c in range(cycles):
    for start, length in pattern:
      n = _n(length)
      t = np.arange(n) / SR
      f = np.where((t * trill) % 1.0 < 0.5, f1, f2)
      _add(buf, _osc(f, n, (1.0, 0.3, 0.15)) * _adsr(n, 0.01, 0.02), c * cycle + start)
  return buf, min(1.0, sum(length for _, length in pattern) + 0.2)


def gen_rain(rng: np.random.Generator) -> Generated:
  """Rain: band-passed pink noise with slow fluctuation plus random droplet ticks."""
  dur = rng.uniform(3.0, 8.0)
  n = _n(dur)
  x = effects.band_pass(effects.colored_noise(rng, n, 1.0), rng.uniform(300, 800), rng.uniform(5000, 7800))
  t = np.arange(n) / SR
  x = x * (1 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * t + rng.uniform(0, 6.28)))
  drops = int(dur * rng.uniform(10, 60))
  for _ in range(drops):
    _add(x, _mode(rng.uniform(1500, 6000), rng.uniform(0.002, 0.006), _n(0.02)) * rng.uniform(0.5, 2.0), rng.uniform(0, dur))
  return x * _adsr(n, 0.3, 0.3), 1.0


def gen_keyboard(rng: np.random.Generator) -> Generated:
  """Typing: short band-passed clicks at 4-9 keys/s with irregular timing, an
  occasional lower space-bar thunk. Recognisable after ~0.8 s."""
  dur = rng.uniform(2.0, 6.0)
  rate = rng.uniform(4, 9)
  buf = np.zeros(_n(dur + 0.1))
  t = rng.uniform(0, 0.1)
  while t < dur:
    if rng.uniform() < 0.15:
      click = _burst(rng, 0.05, 200, 2500, 0.012)
    else:
      click = _burst(rng, 0.03, 1000, rng.uniform(4000, 7500), rng.uniform(0.003, 0.008))
    _add(buf, click * rng.uniform(0.5, 1.0), t)
    t += rng.exponential(1.0 / rate) + 0.03
  return buf, 0.8


def gen_music(rng: np.random.Generator) -> Generated:
  """A random melody in a random key and tempo: harmonic notes with soft attacks,
  often over a bass line. Recognisable after ~1 s."""
  scale = [0, 2, 4, 5, 7, 9, 11] if rng.uniform() < 0.6 else [0, 2, 3, 5, 7, 8, 10]
  tonic = 220.0 * 2 ** (rng.integers(0, 12) / 12)
  beat = 60.0 / rng.uniform(80, 160)
  notes = int(rng.integers(8, 17))
  bright = rng.uniform(0.3, 0.8)
  partials = tuple(bright ** k for k in range(8))
  durs = rng.choice([0.5, 1.0, 1.0, 2.0], size=notes) * beat
  total = float(durs.sum())
  buf = np.zeros(_n(total + 0.5))
  t = 0.0
  degree = int(rng.integers(0, 7))
  for d in durs:
    degree = int(np.clip(degree + rng.integers(-2, 3), -3, 10))
    octave, step = divmod(degree, 7)
    f = tonic * 2 ** (octave + scale[step] / 12)
    n = _n(d * 1.1)
    note = _osc(f * (1 + 0.003 * np.sin(2 * np.pi * 5 * np.arange(n) / SR)), n, partials)
    _add(buf, note * _adsr(n, 0.02, d * 0.4) * np.exp(-np.arange(n) / SR / rng.uniform(0.5, 2.0)), t)
    t += d
  if rng.uniform() < 0.6:
    t = 0.0
    while t < total:
      n = _n(2 * beat)
      _add(buf, 0.5 * _osc(tonic / 2 * 2 ** (scale[int(rng.choice([0, 3, 4]))] / 12), n, (1.0, 0.3))
           * _adsr(n, 0.01, beat), t)
      t += 2 * beat
  return buf, min(1.0, total)


def gen_clock_tick(rng: np.random.Generator) -> Generated:
  """Clock: short high clicks once (or twice) a second, tick and tock slightly
  different. Recognisable after the 3rd tick."""
  period = 1.0 if rng.uniform() < 0.6 else 0.5
  ticks = int(rng.integers(4, 10))
  buf = np.zeros(_n(ticks * period + 0.1))
  fa, fb = rng.uniform(2000, 4000), rng.uniform(2000, 4000)
  for i in range(ticks):
    f = fa if i % 2 == 0 else fb
    click = _mode(f, 0.004, _n(0.03)) + 0.3 * _burst(rng, 0.03, 1500, 7000, 0.002)
    _add(buf, click, i * period)
  return buf, 2 * period + 0.05


def gen_water(rng: np.random.Generator) -> Generated:
  """Running tap or pouring: band-passed noise with many tiny rising bubble chirps."""
  dur = rng.uniform(2.0, 6.0)
  n = _n(dur)
  x = 0.5 * effects.band_pass(effects.colored_noise(rng, n, 1.0), rng.uniform(200, 500), rng.uniform(2500, 5000))
  bubbles = int(dur * rng.uniform(30, 90))
  for _ in range(bubbles):
    m = _n(rng.uniform(0.01, 0.04))
    f0 = rng.uniform(400, 1500)
    chirp = _osc(f0 * np.linspace(1.0, rng.uniform(1.2, 2.0), m), m) * np.hanning(m)
    _add(x, chirp * rng.uniform(0.3, 1.2), rng.uniform(0, dur))
  return x * _adsr(n, 0.15, 0.2), 0.8


def gen_bird(rng: np.random.Generator) -> Generated:
  """Bird song: phrases of fast frequency-swept chirps and trills at 2-7 kHz."""
  phrases = int(rng.integers(1, 4))
  buf_parts = []
  t = 0.0
  for _ in range(phrases):
    chirps = int(rng.integers(2, 8))
    f_lo, f_hi = rng.uniform(2000, 4000), rng.uniform(4000, 7000)
    for _ in range(chirps):
      d = rng.uniform(0.04, 0.15)
      m = _n(d)
      up = rng.uniform() < 0.5
      f = np.linspace(f_lo, f_hi, m) if up else np.linspace(f_hi, f_lo, m)
      f = f * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(30, 80) * np.arange(m) / SR))
      buf_parts.append((t, _osc(f, m, (1.0, 0.1)) * np.hanning(m)))
      t += d + rng.uniform(0.02, 0.1)
    t += rng.uniform(0.3, 0.9)
  buf = np.zeros(_n(t))
  for at, x in buf_parts:
    _add(buf, x, at)
  return buf, min(0.4, t)


def gen_cat(rng: np.random.Generator) -> Generated:
  """Synthetic meow (an approximation, used only without recordings): f0 rises then
  falls (~450 -> 750 -> 400 Hz) while the 'mouth' opens and closes (a moving first
  formant). Recognisable at 70% of the first meow."""
  meows = int(rng.integers(1, 3))
  t = 0.0
  parts = []
  first = 0.0
  for i in range(meows):
    d = rng.uniform(0.5, 1.0)
    m = _n(d)
    tt = np.linspace(0, 1, m)
    f0 = rng.uniform(400, 550) * (1 + 0.6 * np.sin(np.pi * tt ** 0.7)) * (1 - 0.15 * tt)
    x = _osc(f0, m, tuple(1.0 / k for k in range(1, 12)))
    opening = np.sin(np.pi * tt)  # mouth opens then closes
    bright = effects.band_pass(x.astype(np.float32), 900, 2500).astype(np.float64)
    dark = effects.band_pass(x.astype(np.float32), 300, 900).astype(np.float64)
    x = (opening * bright + (1 - opening) * dark) * _adsr(m, 0.04, 0.15)
    parts.append((t, x))
    if i == 0:
      first = 0.7 * d
    t += d + rng.uniform(0.3, 0.8)
  buf = np.zeros(_n(t))
  for at, x in parts:
    _add(buf, x, at)
  return buf, first


def gen_car(rng: np.random.Generator) -> Generated:
  """A car passing: engine harmonics and tyre noise swelling and fading, with a
  Doppler drop in pitch as it passes. Recognisable after ~1.5 s."""
  dur = rng.uniform(3.0, 6.0)
  n = _n(dur)
  t = np.arange(n) / SR
  t_pass = dur * rng.uniform(0.4, 0.6)
  speed = rng.uniform(10, 25)  # m/s
  doppler = 1 + (speed / 343.0) * -np.tanh((t - t_pass) * rng.uniform(1.0, 3.0))
  f_engine = rng.uniform(25, 60) * doppler
  engine = _osc(f_engine, n, tuple(1.0 / k for k in range(1, 30)))
  engine = effects.band_limit(engine.astype(np.float32), None, 1500).astype(np.float64)
  tyres = effects.band_limit(effects.colored_noise(rng, n, 1.0), 100, rng.uniform(1500, 4000)).astype(np.float64)
  closeness = 1.0 / (1.0 + ((t - t_pass) * speed / rng.uniform(3, 8)) ** 2)
  return (0.6 * engine + tyres) * closeness * _adsr(n, 0.05, 0.05), min(1.5, dur)


def gen_footsteps(rng: np.random.Generator) -> Generated:
  """Footsteps: 4-10 steps at ~1.6-2.2 per second, each a low heel thud followed by
  a softer toe/scuff. Recognisable after the 3rd step."""
  rate = rng.uniform(1.6, 2.2)
  steps = int(rng.integers(4, 11))
  hard = rng.uniform() < 0.5  # hard floor: brighter clicks
  buf = np.zeros(_n(steps / rate + 0.3))
  for i in range(steps):
    at = i / rate + rng.uniform(-0.02, 0.02)
    heel = _burst(rng, 0.08, 60, 2500 if hard else 600, rng.uniform(0.01, 0.025))
    toe = 0.4 * _burst(rng, 0.06, 100, 3500 if hard else 1000, 0.01)
    _add(buf, heel * rng.uniform(0.7, 1.0), max(0.0, at))
    _add(buf, toe, max(0.0, at) + rng.uniform(0.05, 0.1))
  return buf, 2 / rate + 0.1


def gen_vacuum_cleaner(rng: np.random.Generator) -> Generated:
  """Vacuum cleaner: motor whine (spinning up over ~0.5 s) and broadband airflow."""
  dur = rng.uniform(2.5, 6.0)
  n = _n(dur)
  t = np.arange(n) / SR
  spin = 1 - np.exp(-t / rng.uniform(0.2, 0.6))
  f = rng.uniform(150, 320) * (0.3 + 0.7 * spin)
  whine = _osc(f, n, (0.3, 0.3, 0.4, 0.6, 0.3, 0.2, 0.2, 0.15))
  air = effects.band_pass(effects.colored_noise(rng, n, 0.5), rng.uniform(300, 800), rng.uniform(5000, 7800)).astype(np.float64)
  return (0.5 * whine + air) * (0.2 + 0.8 * spin) * _adsr(n, 0.02, 0.3), 1.0


def gen_thunder(rng: np.random.Generator) -> Generated:
  """Thunder: a crack (close strikes) then a long brown-noise rumble with slow
  random swells. Recognisable after ~1 s."""
  dur = rng.uniform(3.0, 7.0)
  n = _n(dur)
  rumble = effects.band_limit(effects.colored_noise(rng, n, 2.0), 20, rng.uniform(200, 600)).astype(np.float64)
  swells = np.interp(np.arange(n), np.linspace(0, n, 12), rng.uniform(0.3, 1.0, 12))
  t = np.arange(n) / SR
  x = rumble * swells * np.exp(-t / (dur * 0.5)) * _adsr(n, rng.uniform(0.05, 0.4), 0.5)
  if rng.uniform() < 0.5:
    _add(x, _burst(rng, 0.4, 500, 7000, 0.05) * 1.5, 0.0)
  return x, 1.0


def gen_hammer(rng: np.random.Generator) -> Generated:
  """Hammering a nail: 2-6 strikes 0.4-0.8 s apart, each a click plus a ringing
  metal/wood mode. Recognisable after the 2nd strike."""
  strikes = int(rng.integers(2, 7))
  spacing = rng.uniform(0.4, 0.8)
  modes = rng.uniform(400, 3000, size=3)
  buf = np.zeros(_n(strikes * spacing + 0.4))
  for i in range(strikes):
    hit = _burst(rng, 0.3, 300, 7000, 0.006)
    for f in modes:
      hit += 0.3 * _mode(f * rng.uniform(0.99, 1.01), rng.uniform(0.02, 0.12), len(hit))
    _add(buf, hit * rng.uniform(0.7, 1.0), i * spacing + rng.uniform(0, 0.03))
  return buf, spacing + 0.1


def gen_notification(rng: np.random.Generator) -> Generated:
  """UI notification: 1-3 quick soft chime notes on a pleasant interval."""
  notes = int(rng.integers(1, 4))
  base = rng.uniform(600, 1500)
  ratios = rng.choice([1.0, 1.25, 1.335, 1.5, 2.0], size=notes)
  step = rng.uniform(0.08, 0.2)
  buf = np.zeros(_n(step * notes + 0.8))
  for i, r in enumerate(ratios):
    _add(buf, _bell_note(base * r, 0.7, rng.uniform(0.08, 0.25), rng) * 0.7, i * step)
  return buf, min(0.3, step * notes)


GENERATORS: Mapping[str, Callable[[np.random.Generator], Generated]] = {
    "smoke_alarm": gen_smoke_alarm, "siren": gen_siren, "alarm_clock": gen_alarm_clock,
    "doorbell": gen_doorbell, "knock": gen_knock, "glass_break": gen_glass_break,
    "crash": gen_crash, "baby_cry": gen_baby_cry, "dog_bark": gen_dog_bark,
    "phone_ring": gen_phone_ring, "rain": gen_rain, "keyboard": gen_keyboard,
    "music": gen_music, "clock_tick": gen_clock_tick, "water": gen_water, "bird": gen_bird,
    "cat": gen_cat, "car": gen_car, "footsteps": gen_footsteps,
    "vacuum_cleaner": gen_vacuum_cleaner, "thunder": gen_thunder, "hammer": gen_hammer,
    "notification": gen_notification,
}
assert set(GENERATORS) == set(EVENT_CLASSES), "every event class needs a generator"

_warned: set[str] = set()


# ----------------------------------------------------------------------------- bank


class SoundBank:
  """`SoundSource` over labelled recordings and procedural generators.

  Args:
    split: "train" / "heldout" keeps only recordings of that split (None: all).
    p_recorded: chance of using a recording when the class has one (the rest are
      procedural), except for `FALLBACK_ONLY_CLASSES`, which always use a recording
      when there is one.
    level_db: range of the clip's active RMS level, dBFS.
    use_recordings: False gives a purely procedural bank (fast, no files).
    packages: override of `SOUND_PACKAGES` (tests point it at empty directories).
    extra_recordings: more labelled recordings (e.g. the TRAIN packages of
      `real_audio.train_sound_clips`), kept when their split matches `split`.
    beds: music and ambience recordings for `sample_bed` (label: what the bed is).
  """

  def __init__(self, split: str | None = None, p_recorded: float = 0.5,
               level_db: tuple[float, float] = (-30.0, -16.0), use_recordings: bool = True,
               packages: Mapping[str, tuple[str, Mapping[str, str]]] | None = None,
               extra_recordings: Sequence[Recording] = (), beds: Sequence[Recording] = ()):
    if split not in (None, "train", "heldout"):
      raise ValueError(f"split must be 'train', 'heldout' or None, got {split!r}")
    self.split = split
    self.p_recorded = p_recorded
    self.level_db = level_db
    recs: tuple[Recording, ...] = ()
    if use_recordings:
      recs, missing = find_recordings(packages)
      for pkg in missing:
        if pkg not in _warned:
          _warned.add(pkg)
          log.warning("sound package %s not found (apt-get install %s); continuing with the "
                      "other recordings and procedural sounds", pkg, pkg)
    self._recordings: dict[str, tuple[Recording, ...]] = {}
    # (class, package) -> the package's single impacts of the class, found once.
    self._stroke_sets: dict[tuple[str, str], tuple[np.ndarray, ...]] = {}
    self.beds = tuple(beds)
    for r in (*recs, *extra_recordings):
      if split is None or r.split == split:
        self._recordings.setdefault(r.label, ())
        self._recordings[r.label] += (r,)

  def labels(self) -> tuple[str, ...]:
    """Classes this bank can sample: all `EVENT_CLASSES`, plus recorded-only classes
    whose recordings are installed."""
    return EVENT_CLASSES + tuple(c for c in RECORDED_ONLY_CLASSES if c in self._recordings)

  def recordings(self, label: str | None = None) -> tuple[Recording, ...]:
    """Recordings in this bank's split (of one class, or all)."""
    if label is not None:
      return self._recordings.get(label, ())
    return tuple(r for rs in self._recordings.values() for r in rs)

  @staticmethod
  @functools.lru_cache(maxsize=256)
  def _load(path: str) -> tuple[np.ndarray, float]:
    """A recording as float32 16 kHz mono with leading/trailing silence trimmed (a
    few ms kept), and its first onset (s). Cached: files are small and reused."""
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    x = effects.resample(audio.mean(axis=1), rate, SR)
    lo, hi = effects.trim_silence(x, threshold_db=-45.0)
    if hi > lo:
      lo = max(0, lo - _n(0.01))
      x = x[lo:min(len(x), hi + _n(0.05))]
    x = effects.fade(x, _n(0.003), _n(0.02))
    x.setflags(write=False)
    return x, 0.01 if hi > lo else 0.0

  def sample(self, label: str, rng: np.random.Generator) -> SoundClip:
    """A clip of class `label`, deterministic given `rng`.

    Returns SoundClip(audio float32[n] at 16 kHz, label, source, recognisable_after):
    source is "procedural:<label>" or "<package>/<path>".
    """
    if label not in self.labels():
      raise ValueError(f"unknown or unavailable sound class {label!r}; available: {self.labels()}")
    recs = self._recordings.get(label, ())
    # Fixed draw order: choice, recording index, level, warp, then the generator or
    # the stroke run.
    u = rng.uniform()
    idx = int(rng.integers(len(recs))) if recs else 0
    level = float(rng.uniform(*self.level_db))
    warp = (1, 1) if rng.uniform() < 0.5 else ((16, 17), (17, 16))[int(rng.integers(2))]
    use_rec = bool(recs) and (label not in GENERATORS or label in FALLBACK_ONLY_CLASSES
                              or u < self.p_recorded)
    if use_rec:
      rec = recs[idx]
      audio, onset = self._load(rec.path)
      delay = RECORDING_DELAY_S.get(label, 0.5)
      strokes = self._strokes(label, rec) if is_single_impact(label, len(audio)) else ()
      if strokes:  # the run says when its class is clear: no per-class delay on top
        audio, onset = stroke_run(strokes, STROKE_PATTERNS[label], rng)
        delay = 0.0
      elif len(audio) > RECORDING_MAX_S * SR:
        start = int(rng.integers(len(audio) - _n(RECORDING_MAX_S) + 1))
        audio, onset = effects.fade(audio[start:start + _n(RECORDING_MAX_S)], _n(0.01),
                                    _n(0.05)), 0.0
      # +-6% speed perturbation so one file is not always one waveform.
      if warp != (1, 1):
        audio = effects.resample(audio, warp[1], warp[0])
        onset *= warp[0] / warp[1]
      dur = len(audio) / SR
      recog = min(dur, onset + delay)
      source = rec.relpath
    else:
      audio, recog = GENERATORS[label](rng)
      audio = np.asarray(audio, np.float32)
      source = f"procedural:{label}"
    audio = effects.set_level(audio, level)
    peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
    if peak > 0.99:
      audio = (audio * (0.99 / peak)).astype(np.float32)
    recog = float(min(max(recog, 0.0), len(audio) / SR))
    return SoundClip(audio=audio.astype(np.float32), label=label, source=source, recognisable_after=recog)

  def _strokes(self, label: str, rec: Recording) -> tuple[np.ndarray, ...]:
    """The single impacts (trimmed audio) of `label` in `rec`'s package; () if `label`
    has no `StrokePattern`. Found on the first call for a (class, package) and kept, so
    a sample neither scans the class's recordings nor reloads the impacts."""
    package = rec.relpath.split("/", 1)[0]
    key = (label, package)
    if key not in self._stroke_sets:
      same_package = (self._load(r.path)[0] for r in self._recordings.get(label, ())
                      if r.relpath.split("/", 1)[0] == package)
      self._stroke_sets[key] = tuple(a for a in same_package if is_single_impact(label, len(a)))
    return self._stroke_sets[key]

  def sample_bed(self, rng: np.random.Generator, seconds: float,
                 max_seconds: float = 30.0) -> SoundClip | None:
    """A stretch of a random bed recording (music, ambience), None if there are no beds.

    Reads at most `max_seconds` from a random offset (beds are minutes long; reading
    whole files would hold hundreds of MB per worker); the caller loops it to the
    stream's length. Returns SoundClip(float32[n] at 16 kHz, label of the bed, its
    relpath, recognisable_after=0).
    """
    if not self.beds:
      return None
    bed = self.beds[int(rng.integers(len(self.beds)))]
    offset_u = float(rng.uniform())
    with sf.SoundFile(bed.path) as f:
      want = int(min(seconds, max_seconds) * f.samplerate) + 1
      start = int(offset_u * max(0, f.frames - want))
      f.seek(start)
      audio = f.read(want, dtype="float32", always_2d=True)
      rate = f.samplerate
    x = effects.resample(audio.mean(axis=1), rate, SR).astype(np.float32)
    return SoundClip(audio=x, label=bed.label, source=bed.relpath, recognisable_after=0.0)
