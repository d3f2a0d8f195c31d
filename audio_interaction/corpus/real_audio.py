"""A real-audio DEV set from recordings in Debian packages, and the TRAIN side's list.

Real human speech and real recorded sounds ship inside Debian packages (games, sound
themes, test tools). This module fetches those packages (`fetch_packages`: `apt-get
download` + `dpkg-deb -x`, resumable), reads their extracted folders and writes a DEV
set the project owns (`build_dev_set`): 16 kHz mono wavs and JSONL manifests.

Whole packages are held out: a package is either DEV (`DEV_PACKAGES`: used only for
model selection, never for training or tuning a training recipe's data) or TRAIN
(`TRAIN_PACKAGES`), never both. Provenance, licences and sizes: docs/real_audio.md.

Reserved packages (`RESERVED_PREFIXES`: asterisk-core-sounds-*, gcompris-*,
pocketsphinx-testdata, pyannote's sample audio) are kept for independent evaluation:
every function here refuses them (`ReservedPackageError`), including an extracted
folder that merely sits in the root a builder reads.

Manifests (one JSON object per line; `audio` relative to the manifest's folder)::

    {"id", "audio", "text" (optional), "duration",
     "events": [{"onset", "offset", "class", "role"}],
     "turns": [{"start", "end", "reply_expected"}],
     "instruction" (optional), "source_package", "speaker" (optional)}

`role` is "alert" | "benign" | "addressed_speech" | "unaddressed_speech" | "barge_in".
Two flags beyond that schema, present only when true: a row's `"text_approximate":
true` (the text is a template or a config comment, not a transcript) and an event's
`"class_unmapped": true` (no class of `worlds.SOUNDS` fits, the package's own name is
kept).

* `speech_en.jsonl`: English clips, exact-text ones first, then approximate ones;
  `events` and `turns` empty (these rows are for ASR).
* `speech_other.jsonl`: non-English exact-text clips (for the encoder, not English WER).
* `events.jsonl`: one recorded sound per row; one event from its first to its last
  frame within 40 dB of its peak; `role` "alert" for `worlds.ALERT_LABELS`.
* `streams_split.jsonl`: turn-taking streams like `streams.jsonl`, but the turn is one
  single-sentence utterance cut at an inner word gap with the 0.5-0.9 s pause put
  there: its first part is unfinished in meaning and prosody, as in a real mid-turn
  pause (in `streams.jsonl` the first utterance is complete, so nothing a listener
  hears tells the pause from the turn's end).
* `streams_single.jsonl`: turn-taking streams like `streams.jsonl` whose turn is one
  whole utterance with no pause: nothing to cut into, only how long a reply waits
  after a turn of one short sentence.
* `streams.jsonl`: turn-taking streams. Two real utterances of one speaker with a
  0.5-0.9 s pause between them form one turn (`reply_expected` at its end; a reply
  inside the pause is a cut-in); half the streams have a real DEV sound event (class
  drawn uniformly, then a recording) before the turn, half a real DEV noise bed (music
  or ambience) under the whole stream, 20-35 dB below the speech. Deterministic for a
  seed.

A turn ends where its last word ends (`TURN_ENDS` "speech", the default): the end of
the last frame Silero VAD calls voiced in the clean last utterance, before any bed is
mixed in. The utterance's audio runs on to its -35 dB trim, which in some recordings
holds up to 0.6 s of a reverberant decay after the last word; up to session
29 the turn ended there ("recording", kept to reproduce those figures), which scored a
reply in that decay as a cut-in and a miss.

Labels and texts come from file names, game scripts and config comments (tables
below); nobody listened to every file. Reasons for each choice: docs/real_audio.md.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import json
import os
import pathlib
import re
import shutil
import subprocess
import zipfile
from collections.abc import Iterable, Sequence
from typing import Final

import numpy as np
import soundfile as sf

from audio_interaction.audio import io as audio_io
from audio_interaction.audio import vad as vad_lib
from audio_interaction.corpus import effects, queen_archive, sounds, worlds
from audio_interaction.data.tokenizer import number_to_words
from audio_interaction.stream_format import SAMPLE_RATE

# ------------------------------------------------------------------ reserved packages

RESERVED_PREFIXES: Final[tuple[str, ...]] = (
    "asterisk-core-sounds", "gcompris", "pocketsphinx-testdata", "pyannote")


class ReservedPackageError(ValueError):
  """A package reserved for independent evaluation was asked for (or found)."""


class FetchError(RuntimeError):
  """A package could not be downloaded or extracted; the message names it."""


def is_reserved(package: str) -> bool:
  name = package.lower()
  return any(name.startswith(prefix) for prefix in RESERVED_PREFIXES)


def check_not_reserved(packages: Iterable[str]) -> None:
  """Raises `ReservedPackageError` naming the first reserved package in `packages`."""
  for package in packages:
    if is_reserved(package):
      raise ReservedPackageError(
          f"{package} is reserved for independent evaluation: it must not be used for "
          f"training, tuning or the dev set (reserved: "
          f"{', '.join(p + '*' for p in RESERVED_PREFIXES)})")


def check_root(root: str | os.PathLike[str]) -> None:
  """Refuses an extracted-packages folder that holds a reserved package."""
  root = pathlib.Path(root)
  if not root.is_dir():
    raise FileNotFoundError(f"{root}: no such folder of extracted packages")
  check_not_reserved(sorted(p.name for p in root.iterdir()))


# ------------------------------------------------------------------ the split by package

DEV: Final[str] = "dev"
TRAIN: Final[str] = "train"

DEV_SPEECH_PACKAGES: Final[tuple[str, ...]] = (
    "alsa-utils", "warzone2100-data", "kajongg", "fillets-ng-data-nl")
# fillets-ng-data holds the dialogue scripts (text) of both dubs and the keyboard clicks.
DEV_EVENT_PACKAGES: Final[tuple[str, ...]] = (
    "minetest-data", "flare-game", "frozen-bubble-data", "xboard", "lomiri-sounds", "bomber",
    "fillets-ng-data")
DEV_NOISE_PACKAGES: Final[tuple[str, ...]] = ("flare-game", "xmoto-data")
DEV_PACKAGES: Final[tuple[str, ...]] = tuple(sorted(set(
    DEV_SPEECH_PACKAGES + DEV_EVENT_PACKAGES + DEV_NOISE_PACKAGES)))

TRAIN_SPEECH_PACKAGES: Final[tuple[str, ...]] = (
    "fillets-ng-data-cs", "hedgewars-data", "flight-of-the-amazon-queen")
TRAIN_EVENT_PACKAGES: Final[tuple[str, ...]] = (
    "wesnoth-1.16-data", "freeciv-data", "lincity-ng-data", "openarena-data", "hedgewars-data",
    "heroes-sound-effects", "tuxmath-data", "tuxtype-data", "freedroidrpg-data", "ksirk",
    "ri-li-data", "oxygen-sounds", "yaru-theme-sound", "deepin-sound-theme", "psi-plus-sounds",
    "pidgin-data", "bucklespring-data", "linphone-common", "twinkle-common", "baresip-core",
    "gajim", "scorched3d-data", "jami-daemon", "sound-icons", "eiskaltdcpp-sounds",
    "workrave-data", "warmux-data")
TRAIN_NOISE_PACKAGES: Final[tuple[str, ...]] = (
    "colobot-common-sounds", "extremetuxracer-data", "lincity-ng-data", "openclonk-data",
    "marsshooter-data", "wesnoth-1.16-data", "sonic-pi-samples", "freeciv-data")
TRAIN_PACKAGES: Final[tuple[str, ...]] = tuple(sorted(set(
    TRAIN_SPEECH_PACKAGES + TRAIN_EVENT_PACKAGES + TRAIN_NOISE_PACKAGES)))
# The Czech dub's texts are in fillets-ng-data's scripts: a TRAIN reader of that speech
# reads text (never audio) from this DEV package.
TRAIN_TEXT_FROM_DEV: Final[tuple[str, ...]] = ("fillets-ng-data",)

assert not set(DEV_PACKAGES) & set(TRAIN_PACKAGES), "a package is DEV or TRAIN, never both"
check_not_reserved(DEV_PACKAGES + TRAIN_PACKAGES)


def split_of_package(package: str) -> str | None:
  """DEV, TRAIN or None (a package this module does not use)."""
  return DEV if package in DEV_PACKAGES else TRAIN if package in TRAIN_PACKAGES else None


# ------------------------------------------------------------------ fetching


def _find_deb(cache: pathlib.Path, package: str) -> pathlib.Path | None:
  """The newest-named `PACKAGE_*.deb` in `cache` (names cannot hold '_')."""
  debs = sorted(cache.glob(f"{package}_*.deb"))
  return debs[-1] if debs else None


def _run(command: Sequence[str], package: str, what: str, cwd: str | None = None) -> None:
  try:
    done = subprocess.run(list(command), cwd=cwd, capture_output=True, text=True, check=False)
  except FileNotFoundError as error:
    raise FetchError(f"{package}: {what} failed: {command[0]} is not installed") from error
  if done.returncode != 0:
    detail = " ".join((done.stderr or done.stdout or "").split())[-400:]
    raise FetchError(f"{package}: {what} failed (exit {done.returncode}): "
                     f"{detail or 'no output'}")


def fetch_packages(packages: Sequence[str], cache: str | os.PathLike[str],
                   extract_root: str | os.PathLike[str] | None = None,
                   log=print) -> pathlib.Path:
  """Downloads (`apt-get download`) and extracts (`dpkg-deb -x`) `packages`.

  Resumable: a `.deb` already in `cache` is not downloaded again and a package already
  extracted (its folder is complete: extraction goes to a temporary folder renamed at
  the end) is skipped. Downloads run in a temporary folder too, so an interrupted one
  leaves no half `.deb` behind.

  Args:
    packages: Debian package names; reserved ones are refused before anything runs.
    cache: where the `.deb` files are kept.
    extract_root: where `<package>/` folders are extracted (default `cache/extracted`).
    log: called with one line per package fetched or extracted.

  Returns:
    The extract root.

  Raises:
    ReservedPackageError: a reserved package was asked for.
    FetchError: a download or an extraction failed (the message names the package).
  """
  check_not_reserved(packages)
  cache = pathlib.Path(cache)
  root = pathlib.Path(extract_root) if extract_root is not None else cache / "extracted"
  cache.mkdir(parents=True, exist_ok=True)
  root.mkdir(parents=True, exist_ok=True)
  for package in packages:
    target = root / package
    if target.is_dir():
      continue
    deb = _find_deb(cache, package)
    if deb is None:
      partial = cache / f".download-{package}"
      shutil.rmtree(partial, ignore_errors=True)
      partial.mkdir()
      try:
        _run(["apt-get", "download", package], package, "apt-get download", cwd=str(partial))
        got = _find_deb(partial, package)
        if got is None:
          raise FetchError(f"{package}: apt-get download left no {package}_*.deb")
        deb = cache / got.name
        got.replace(deb)
      finally:
        shutil.rmtree(partial, ignore_errors=True)
      log(f"downloaded {deb.name}")
    partial = root / f".extract-{package}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
      _run(["dpkg-deb", "-x", str(deb), str(partial)], package, f"dpkg-deb -x {deb.name}")
      partial.replace(target)
    finally:
      shutil.rmtree(partial, ignore_errors=True)
    log(f"extracted {package}")
  return root


# ------------------------------------------------------------------ audio references


@dataclasses.dataclass(frozen=True)
class AudioRef:
  """A recording inside an extracted package: a file, or a member of a zip archive."""

  package: str
  path: str  # a file in the extracted package
  inside: str  # `path` relative to the package's folder (POSIX separators)
  member: str | None = None  # a member of the archive at `path` (zip, or queen.1c)

  @property
  def relpath(self) -> str:
    """Package-relative name, e.g. 'alsa-utils/sounds/alsa/Front_Left.wav'."""
    inside = re.sub(r"^usr/share/(games/)?", "", self.inside)
    return f"{self.package}/{inside}" + (f"/{self.member}" if self.member else "")

  @property
  def id(self) -> str:
    """`relpath` without the extension, in characters safe for a file name."""
    stem = re.sub(r"\.(wav|ogg|oga|flac)$", "", self.relpath, flags=re.IGNORECASE)
    return re.sub(r"[^A-Za-z0-9._/-]+", "_", stem)

  def load(self) -> np.ndarray:
    """float32 mono samples at 16 kHz."""
    if self.member is None:
      return audio_io.load_audio(self.path, SAMPLE_RATE)
    data, rate = sf.read(io.BytesIO(_member_bytes(self.path, self.member)), dtype="float32",
                         always_2d=True)
    samples = data.mean(axis=1, dtype=np.float32)
    audio_io.validate_samples(samples, where=self.relpath)
    return audio_io.resample(samples, int(rate), SAMPLE_RATE)


def _member_bytes(path: str, member: str) -> bytes:
  if path.endswith(".1c"):
    return queen_archive.read_member(path, member)
  with zipfile.ZipFile(path) as archive:
    return archive.read(member)


def _package_root(root: pathlib.Path, package: str) -> pathlib.Path:
  return root / package


def _ref(root: pathlib.Path, package: str, path: pathlib.Path, member: str | None = None
         ) -> AudioRef:
  inside = path.relative_to(_package_root(root, package)).as_posix()
  return AudioRef(package, str(path), inside, member)


def _glob(root: pathlib.Path, package: str, pattern: str) -> list[AudioRef]:
  """Files of `package` matching `pattern`; 'ARCHIVE::MEMBER_GLOB' looks inside zips."""
  base = _package_root(root, package)
  if not base.is_dir():
    return []
  if "::" in pattern:
    archive_glob, member_glob = pattern.split("::", 1)
    member_re = re.compile("^" + re.escape(member_glob).replace(r"\*", "[^/]*") + "$")
    refs = []
    for archive in sorted(base.glob(archive_glob)):
      with zipfile.ZipFile(archive) as zf:
        refs += [_ref(root, package, archive, name) for name in sorted(zf.namelist())
                 if member_re.match(name) and name.lower().endswith((".wav", ".ogg"))]
    return refs
  return [_ref(root, package, p) for p in sorted(base.glob(pattern)) if p.is_file()]


# ------------------------------------------------------------------ speech sources


@dataclasses.dataclass(frozen=True)
class SpeechItem:
  """A transcribed recording: text, speaker, language, exact or approximate text."""

  ref: AudioRef
  text: str
  speaker: str
  language: str
  exact: bool


def _alsa_speech(root: pathlib.Path) -> list[SpeechItem]:
  # "Front_Left.wav" says "Front Left"; Noise.wav is synthetic pink noise.
  return [SpeechItem(ref, pathlib.Path(ref.path).stem.replace("_", " "), "alsa-utils:voice",
                     "en", True)
          for ref in _glob(root, "alsa-utils", "usr/share/sounds/alsa/*.wav")
          if pathlib.Path(ref.path).stem != "Noise"]


_TUTORIAL_LINE = re.compile(
    r'"audio":\s*"(tut\d+\.ogg)"[^}]*?"message":\s*_\("((?:[^"\\]|\\.)*)"\)')
_VOICE_LINE = re.compile(r'audio\s+"((?:pcv|com)\d+\w*\.ogg)"[^\n]*?/\*\s*([^*]+?)\s*\*/')


def _warzone_speech(root: pathlib.Path) -> list[SpeechItem]:
  """Tutorial lines (exact text from script/tutorial.js) and voice lines (approximate
  text: the comment after the file in audio/audio.cfg), from the base.wz zip."""
  items: list[SpeechItem] = []
  for archive in sorted(_package_root(root, "warzone2100-data").glob("**/base.wz")):
    with zipfile.ZipFile(archive) as zf:
      names = {pathlib.PurePosixPath(n).name: n for n in zf.namelist()
               if n.startswith("audio/") and n.endswith(".ogg")}
      tutorial = zf.read("script/tutorial.js").decode("utf-8", "replace")
      config = zf.read("audio/audio.cfg").decode("latin-1")
    for name, message in _TUTORIAL_LINE.findall(tutorial):
      if name in names:
        items.append(SpeechItem(_ref(root, "warzone2100-data", archive, names[name]),
                                message.replace('\\"', '"'), "warzone2100-data:tutorial",
                                "en", True))
    seen = set()
    for name, comment in _VOICE_LINE.findall(config):
      member = names.get(name)
      if (member is None or name in seen or not re.search(r"[A-Za-z]{3}", comment)
          or not member.startswith(("audio/memressp/", "audio/countdown/"))):
        continue
      seen.add(name)
      items.append(SpeechItem(_ref(root, "warzone2100-data", archive, member), comment,
                              "warzone2100-data:voice", "en", False))
  return items


_KAJONGG_WORDS: Final[dict[str, str]] = {
    "we": "east", "wn": "north", "ws": "south", "ww": "west", "db": "blue dragon",
    "dg": "green dragon", "dr": "red dragon", "chow": "chow", "pung": "pung", "kong": "kong",
    "mahjongg": "mah jongg", "originalcall": "original call", "nochoice": "no choice",
    "dangerousgame": "dangerous game", "violatesoriginalcall": "violates original call"}
_KAJONGG_SUITS: Final[dict[str, str]] = {"b": "bamboo", "c": "character", "s": "circle"}


def _kajongg_speech(root: pathlib.Path) -> list[SpeechItem]:
  """English tile calls of the four voices (text from the file name: a template, so
  approximate). The German voices (voices/de/) are held out with the package, unused."""
  items = []
  voices = _package_root(root, "kajongg") / "usr/share/kajongg/voices"
  for voice in sorted(voices.glob("*male*")):
    for ref in _glob(root, "kajongg", f"usr/share/kajongg/voices/{voice.name}/*.ogg"):
      stem = pathlib.Path(ref.path).stem
      if re.fullmatch(r"[bcs]\d", stem):
        text = f"{_KAJONGG_SUITS[stem[0]]} {number_to_words(int(stem[1]))}"
      else:
        text = _KAJONGG_WORDS.get(stem)
      if text:
        items.append(SpeechItem(ref, text, f"kajongg:{voice.name}", "en", False))
  return items


_FILLETS = "usr/share/games/fillets-ng"
_DIALOG = re.compile(r'dialogId\("([^"]+)",\s*"([^"]+)",\s*"(?:[^"\\]|\\.)*"\)\s*'
                     r'dialogStr\("((?:[^"\\]|\\.)*)"\)')


def fillets_speech(root: str | os.PathLike[str], language: str) -> list[SpeechItem]:
  """Fish Fillets dub lines: `script/<level>/dialogs_<lang>.lua` (in fillets-ng-data)
  pairs `dialogId(id, font, english)` with `dialogStr(text)`; the audio is
  `sound/<level>/<lang>/<id>.ogg` in fillets-ng-data-<lang>. The speaker is the font
  (font_small = the small fish, font_big = the big one)."""
  root = pathlib.Path(root)
  package = f"fillets-ng-data-{language}"
  scripts = _package_root(root, "fillets-ng-data") / _FILLETS / "script"
  sounds = _package_root(root, package) / _FILLETS / "sound"
  items = []
  for lua in sorted(scripts.glob(f"*/dialogs_{language}.lua")):
    level = lua.parent.name
    for dialog, font, text in _DIALOG.findall(lua.read_text("utf-8", errors="replace")):
      audio = sounds / level / language / f"{dialog}.ogg"
      text = text.replace('\\"', '"').strip()
      if text and audio.is_file():
        items.append(SpeechItem(_ref(root, package, audio), text, f"{package}:{font}",
                                language, True))
  return items


_HEDGEWARS_VOICES = "usr/share/games/hedgewars/Data/Sounds/voices"
# The voice packs spoken in English; the others (Default_es, _pl, _ru, _uk, Russian,
# Russian_pl) speak their own language.
HEDGEWARS_ENGLISH_PACKS: Final[tuple[str, ...]] = (
    "British", "Classic", "Default", "HillBilly", "Mobster", "Pirate", "Robot", "Singer",
    "Surfer")


def hedgewars_english_voices(root: str | os.PathLike[str]) -> list[tuple[AudioRef, str]]:
  """(recording, speaker) of every clip of hedgewars-data's English voice packs, sorted.

  A file is named after what its line is for ("Youllregretthat.ogg"), not what is
  said, and about a fifth are shouts and groans (Ow1, Laugh); `train/pseudo_label.py`
  writes what they say. The speaker is "hedgewars-data:<pack>"."""
  root = pathlib.Path(root)
  base = _package_root(root, "hedgewars-data") / _HEDGEWARS_VOICES
  return [(_ref(root, "hedgewars-data", path), f"hedgewars-data:{pack}")
          for pack in HEDGEWARS_ENGLISH_PACKS
          for path in sorted((base / pack).glob("*.ogg"))]


def amazon_queen_voices(root: str | os.PathLike[str]) -> list[tuple[AudioRef, str]]:
  """(recording, speaker) of every spoken line of Flight of the Amazon Queen under
  `root` (`queen_archive`: 6,745 lines, ~4.5 h, inside one ScummVM file), sorted by
  name; [] when the package is not there. The speaker is "amazon-queen:<voice>"
  (`queen_archive.speaker_of`). Raises queen_archive.QueenArchiveError for a data file
  this reader does not know."""
  root = pathlib.Path(root)
  path = _package_root(root, queen_archive.PACKAGE) / queen_archive.DATA_FILE
  if not path.is_file():
    return []
  return [(_ref(root, queen_archive.PACKAGE, path, entry.name),
           f"amazon-queen:{queen_archive.speaker_of(entry.name)}")
          for entry in queen_archive.speech_entries(path)]


def dev_speech_items(root: str | os.PathLike[str]) -> list[SpeechItem]:
  """Every transcribed DEV recording found under `root` (packages not there are skipped)."""
  root = pathlib.Path(root)
  return (_alsa_speech(root) + _warzone_speech(root) + _kajongg_speech(root)
          + fillets_speech(root, "nl"))


# ------------------------------------------------------------------ sound tables


@dataclasses.dataclass(frozen=True)
class Rule:
  """Files of `package` matching `pattern` (a glob under the package root, or
  'ARCHIVE_GLOB::MEMBER_GLOB') are recordings of class `label`."""

  package: str
  pattern: str
  label: str


# Project classes (worlds.SOUNDS) where one fits; otherwise the package's own name
# (door, fire, applause, ...), flagged `class_unmapped` in manifests. The first rule
# that matches a file wins.
EVENT_RULES: Final[tuple[Rule, ...]] = (
    # ---- DEV
    Rule("minetest-data", "**/default_break_glass.*.ogg", "glass_break"),
    Rule("minetest-data", "**/default_*_footstep*.ogg", "footsteps"),
    Rule("minetest-data", "**/doors_*door_open.ogg", "door"),
    Rule("minetest-data", "**/doors_*door_close.ogg", "door"),
    Rule("minetest-data", "**/env_sounds_water.*.ogg", "water"),
    Rule("minetest-data", "**/fire_fire.*.ogg", "fire"),
    Rule("minetest-data", "**/fire_large.ogg", "fire"),
    Rule("minetest-data", "**/tnt_explode.ogg", "explosion"),
    Rule("flare-game", "**/environment/rain.ogg", "rain"),
    Rule("flare-game", "**/environment/bird_twitter_loop.ogg", "bird"),
    Rule("flare-game", "**/environment/forest_owl_loop.ogg", "bird"),
    Rule("flare-game", "**/environment/raven_loop.ogg", "bird"),
    Rule("flare-game", "**/environment/river_loop.ogg", "water"),
    Rule("flare-game", "**/environment/cave_droplets_loop.ogg", "water"),
    Rule("flare-game", "**/environment/open_fire*.ogg", "fire"),
    Rule("flare-game", "**/soundfx/door_open.ogg", "door"),
    Rule("flare-game", "**/soundfx/wood_open.ogg", "door"),
    Rule("flare-game", "**/soundfx/steps/step_*.ogg", "footsteps"),
    Rule("flare-game", "**/environment/stairs.ogg", "footsteps"),
    Rule("flare-game", "**/soundfx/heartbeat.ogg", "heartbeat"),
    Rule("frozen-bubble-data", "**/snd/applause.ogg", "applause"),
    Rule("frozen-bubble-data", "**/snd/typewriter.ogg", "keyboard"),
    Rule("frozen-bubble-data", "**/snd/snore.ogg", "snore"),
    Rule("xboard", "**/sounds/phone.wav", "phone_ring"),
    Rule("xboard", "**/sounds/gong.wav", "gong"),
    Rule("xboard", "**/sounds/honkhonk.wav", "car_horn"),
    Rule("xboard", "**/sounds/woodthunk.wav", "knock"),  # a knock-like thunk; review
    Rule("lomiri-sounds", "**/ringtones/Alarm clock.ogg", "alarm_clock"),
    Rule("lomiri-sounds", "**/ringtones/*.ogg", "phone_ring"),
    Rule("lomiri-sounds", "**/notifications/*.ogg", "notification"),
    Rule("bomber", "**/sounds/crash.ogg", "crash"),
    Rule("fillets-ng-data", "**/sound/linux/en/key*.ogg", "keyboard"),
    Rule("fillets-ng-data", "**/sound/linux/en/space*.ogg", "keyboard"),
    Rule("fillets-ng-data", "**/sound/linux/en/enter*.ogg", "keyboard"),
    # ---- TRAIN
    Rule("wesnoth-1.16-data", "**/ambient/birds*.ogg", "bird"),
    Rule("wesnoth-1.16-data", "**/sounds/horse-canter.wav", "farm_animal"),
    Rule("wesnoth-1.16-data", "**/sounds/wolf-growl-*.ogg", "dog_bark"),  # a growl; review
    Rule("wesnoth-1.16-data", "**/sounds/*laugh*.wav", "laugh"),
    Rule("wesnoth-1.16-data", "**/sounds/bell.wav", "doorbell"),  # one bell strike; review
    Rule("wesnoth-1.16-data", "**/ambient/campfire.ogg", "fire"),
    Rule("wesnoth-1.16-data", "**/sounds/explosion.ogg", "explosion"),
    Rule("freeciv-data", "**/stdsounds/Splash.ogg", "water"),
    Rule("freeciv-data", "**/stdsounds/foot3.ogg", "footsteps"),
    Rule("freeciv-data", "**/stdsounds/metbrk.ogg", "crash"),
    Rule("freeciv-data", "**/stdsounds/woodbrk.ogg", "crash"),
    Rule("freeciv-data", "**/stdsounds/Tread.ogg", "engine"),
    Rule("freeciv-data", "**/stdsounds/*Expl.ogg", "explosion"),
    Rule("lincity-ng-data", "**/sounds/Water*.wav", "water"),
    Rule("lincity-ng-data", "**/sounds/Fire?.wav", "fire"),
    Rule("lincity-ng-data", "**/sounds/RailTrain*.wav", "train"),
    Rule("lincity-ng-data", "**/sounds/Farm*.wav", "farm_animal"),  # farm ambience; review
    Rule("openarena-data", "**/pak0.pk3::sound/player/footsteps/*", "footsteps"),
    Rule("openarena-data", "**/pak0.pk3::sound/movers/doors/*", "door"),
    Rule("hedgewars-data", "**/Sounds/steps.ogg", "footsteps"),
    Rule("hedgewars-data", "**/Sounds/splash.ogg", "water"),
    Rule("hedgewars-data", "**/Sounds/Droplet*.ogg", "water"),
    Rule("hedgewars-data", "**/Sounds/explosion.ogg", "explosion"),
    Rule("hedgewars-data", "**/Sounds/bee.ogg", "insect"),
    Rule("hedgewars-data", "**/Sounds/hammer.ogg", "hammer"),
    Rule("hedgewars-data", "**/Sounds/whipcrack.ogg", "crash"),
    Rule("heroes-sound-effects", "**/sfx/claxon.wav", "car_horn"),
    Rule("heroes-sound-effects", "**/sfx/clock0?.wav", "clock_tick"),
    Rule("heroes-sound-effects", "**/sfx/foule?.wav", "applause"),  # a crowd
    Rule("heroes-sound-effects", "**/sfx/explo01.wav", "explosion"),
    Rule("tuxmath-data", "**/sounds/alarm.wav", "siren"),  # an alarm klaxon; review
    Rule("tuxmath-data", "**/sounds/cheer.wav", "applause"),
    Rule("tuxmath-data", "**/sounds/towerclock.wav", "clock_tick"),
    Rule("tuxmath-data", "**/sounds/engine.wav", "engine"),
    Rule("tuxmath-data", "**/sounds/explosion.wav", "explosion"),
    Rule("tuxtype-data", "**/sounds/alarm.wav", "siren"),
    Rule("tuxtype-data", "**/sounds/cheer.wav", "applause"),
    Rule("tuxtype-data", "**/sounds/tock.wav", "clock_tick"),
    Rule("freedroidrpg-data", "**/effects/Glass_Break.ogg", "glass_break"),
    Rule("freedroidrpg-data", "**/effects/tux_footstep.ogg", "footsteps"),
    Rule("ksirk", "**/Sounds/crash.wav", "crash"),
    Rule("ri-li-data", "**/Sounds/crash.wav", "crash"),
    Rule("oxygen-sounds", "**/Oxygen-Im-Phone-Ring.ogg", "phone_ring"),
    Rule("oxygen-sounds", "**/Oxygen-Im-*.ogg", "notification"),
    Rule("yaru-theme-sound", "**/stereo/*.oga", "notification"),
    Rule("deepin-sound-theme", "**/stereo/*.wav", "notification"),
    Rule("psi-plus-sounds", "**/sound/*.wav", "notification"),
    Rule("pidgin-data", "**/purple/*.wav", "notification"),
    # An IBM Model M, one press and one release per key: laid as typing by the bank
    # (`sounds.STROKE_PATTERNS`).
    Rule("bucklespring-data", "**/buckle/wav/*.wav", "keyboard"),
    # Telephony apps' own rings (not their ring-back, busy or DTMF tones).
    Rule("linphone-common", "**/rings/oldphone-mono.wav", "phone_ring"),
    Rule("twinkle-common", "**/twinkle/ringtone.wav", "phone_ring"),
    Rule("baresip-core", "**/baresip/ring.wav", "phone_ring"),
    Rule("gajim", "**/sounds/call_incoming.wav", "phone_ring"),
    # Ten smartphone ringtones (guitar, afrobeat, electro...; `default.opus` repeats the
    # first): the melodic kind of ring the old telephony apps above do not have.
    Rule("jami-daemon", "**/jami/ringtones/[0-9]*.opus", "phone_ring"),
    Rule("gajim", "**/sounds/*message?.wav", "notification"),
    Rule("gajim", "**/sounds/attention.wav", "notification"),
    Rule("scorched3d-data", "**/misc/dog*.wav", "dog_bark"),
    Rule("scorched3d-data", "**/misc/policecar.wav", "siren"),
    Rule("scorched3d-data", "**/misc/thunder*.wav", "thunder"),
    # More short UI chimes, a class the real DEV notifications (marimba, xylophone, bells)
    # were taken for a phone or a doorbell from: a screen reader's sound icons (notes of
    # harpsichord, piano, guitar, trumpet, xylophone; not the animals, the glass or the
    # bare percussion), a file-sharing client's, and a break reminder's three themes.
    *(Rule("sound-icons", f"**/sound-icons/{name}.wav", "notification") for name in (
        "cembalo-*", "chord-*", "cymbaly-*", "electric-piano-*", "guitar-*", "klavichord-*",
        "piano-*", "trumpet-*", "violoncello-*", "xylofon", "pisk-*", "prompt", "pipe")),
    Rule("eiskaltdcpp-sounds", "**/sounds/*.wav", "notification"),
    Rule("workrave-data", "**/workrave/*/*.wav", "notification"),
    # Explosions and fire, no class of ours: more of what the head must call "none".
    Rule("warmux-data", "**/weapons/explosion?.ogg", "explosion"),
    Rule("warmux-data", "**/weapons/*_exp.ogg", "explosion"),
    Rule("warmux-data", "**/weapons/flame.ogg", "fire"),
    Rule("warmux-data", "**/weapons/embers?.ogg", "fire"),
    Rule("warmux-data", "**/weapons/blowtorch.ogg", "fire"),
)

# Background noise: music and ambience loops. `label` is the project class the bed
# is annotated with in a stream ("ambience" is not one: flagged unmapped).
NOISE_RULES: Final[tuple[Rule, ...]] = (
    # ---- DEV
    Rule("flare-game", "**/music/*.ogg", "music"),
    Rule("flare-game", "**/environment/rain.ogg", "rain"),
    Rule("flare-game", "**/environment/river_loop.ogg", "water"),
    Rule("flare-game", "**/environment/cave_droplets_loop.ogg", "water"),
    Rule("flare-game", "**/environment/*bird*_loop.ogg", "bird"),
    Rule("flare-game", "**/environment/*owl*_loop.ogg", "bird"),
    Rule("flare-game", "**/environment/raven_loop.ogg", "bird"),
    Rule("flare-game", "**/environment/*_loop.ogg", "ambience"),
    Rule("xmoto-data", "**/Musics/*.ogg", "music"),
    # ---- TRAIN
    Rule("colobot-common-sounds", "**/music/*.ogg", "music"),
    Rule("extremetuxracer-data", "**/music/*.ogg", "music"),
    Rule("lincity-ng-data", "**/music/**/*.ogg", "music"),
    Rule("lincity-ng-data", "**/sounds/Industry*.wav", "ambience"),
    Rule("lincity-ng-data", "**/sounds/Market*.wav", "ambience"),
    Rule("openclonk-data", "**/*.ogg", "music"),
    Rule("marsshooter-data", "**/music/*.ogg", "music"),
    Rule("wesnoth-1.16-data", "**/ambient/*.ogg", "ambience"),
    Rule("sonic-pi-samples", "**/samples/ambi_*.flac", "ambience"),
    Rule("freeciv-data", "**/stdmusic/*.ogg", "music"),
)

assert all(split_of_package(r.package) for r in EVENT_RULES + NOISE_RULES), "unsplit package"


def is_project_class(label: str) -> bool:
  return label in worlds.SOUNDS


def role_of(label: str) -> str:
  """"alert" for the classes that need attention (`worlds.ALERT_LABELS`), else "benign"."""
  return "alert" if label in worlds.ALERT_LABELS else "benign"


@dataclasses.dataclass(frozen=True)
class LabelledClip:
  """A recording of one sound class from a package of the DEV or TRAIN side."""

  ref: AudioRef
  label: str
  split: str

  @property
  def mapped(self) -> bool:
    """Whether `label` is a class of the project (`worlds.SOUNDS`)."""
    return is_project_class(self.label)

  @property
  def role(self) -> str:
    return role_of(self.label)


def _labelled(root: str | os.PathLike[str], rules: Sequence[Rule], split: str
              ) -> list[LabelledClip]:
  root = pathlib.Path(root)
  check_root(root)
  clips, seen = [], set()
  for rule in rules:
    if split_of_package(rule.package) != split:
      continue
    for ref in _glob(root, rule.package, rule.pattern):
      if ref not in seen:
        seen.add(ref)
        clips.append(LabelledClip(ref, rule.label, split))
  return clips


def sound_clips(root: str | os.PathLike[str], split: str) -> list[LabelledClip]:
  """The labelled sound recordings of `split`'s packages found under `root`."""
  return _labelled(root, EVENT_RULES, split)


def noise_files(root: str | os.PathLike[str], split: str) -> list[LabelledClip]:
  """The background-noise files (music, ambience) of `split`'s packages under `root`."""
  return _labelled(root, NOISE_RULES, split)


def train_sound_clips(root: str | os.PathLike[str]) -> list[LabelledClip]:
  """TRAIN packages' labelled sounds, for the TRAIN sound bank (`corpus/build.py`
  `sound_source`). `clip.mapped` is False for classes the project
  does not have (door, fire, ...), `clip.role` says alert or benign."""
  return sound_clips(root, TRAIN)


def train_noise_files(root: str | os.PathLike[str]) -> list[LabelledClip]:
  """TRAIN packages' music and ambience files, for background noise in the corpus."""
  return noise_files(root, TRAIN)


# ------------------------------------------------------------------ writing the DEV set

EVENT_TRIM_DB: Final[float] = -40.0  # an event spans its frames within 40 dB of its peak
TURN_TRIM_DB: Final[float] = -35.0  # an utterance in a stream: its frames within 35 dB
MAX_GAP_IN_UTTERANCE_S: Final[float] = 0.35  # longer inner gaps would be a second pause
UTTERANCE_SECONDS: Final[tuple[float, float]] = (0.4, 6.0)
PAUSE_SECONDS: Final[tuple[float, float]] = (0.5, 0.9)
SPEECH_DBFS: Final[float] = -20.0
EVENT_DBFS: Final[tuple[float, float]] = (-28.0, -18.0)
NOISE_SNR_DB: Final[tuple[float, float]] = (20.0, 35.0)
MAX_EVENT_IN_STREAM_S: Final[float] = 2.5


# What `AudioRef.load` raises for a file it cannot decode (empty, truncated, not audio).
UNDECODABLE: Final[tuple[type[Exception], ...]] = (
    audio_io.AudioError, sf.SoundFileError, RuntimeError)


def skip_note(ref: AudioRef, error: Exception) -> str:
  """One line for a skipped-files list: the recording and why it was skipped."""
  return f"{ref.relpath}: {str(error).split(': ', 1)[-1]}"


def _load_or_skip(ref: AudioRef, skipped: list[str] | None) -> np.ndarray | None:
  try:
    return ref.load()
  except UNDECODABLE as error:
    if skipped is None:
      raise
    skipped.append(skip_note(ref, error))
    return None


def _r3(value: float) -> float:
  return round(float(value), 3)


def _write_wav(out: pathlib.Path, rel: str, samples: np.ndarray) -> None:
  path = out / rel
  path.parent.mkdir(parents=True, exist_ok=True)
  sf.write(str(path), np.clip(samples, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16")


def _write_jsonl(path: pathlib.Path, rows: Sequence[dict]) -> None:
  ids = [r["id"] for r in rows]
  duplicate = next((i for i, n in collections.Counter(ids).items() if n > 1), None)
  if duplicate is not None:
    raise ValueError(f"{path.name}: id {duplicate!r} is not unique")
  with open(path, "w", encoding="utf-8") as file:
    for row in rows:
      file.write(json.dumps(row, ensure_ascii=False) + "\n")


@dataclasses.dataclass(frozen=True)
class SpeechRow:
  """A written speech row with what the stream builder needs besides the manifest."""

  row: dict
  language: str
  exact: bool


def build_dev_speech(root: str | os.PathLike[str], out: str | os.PathLike[str],
                     skipped: list[str] | None = None) -> list[SpeechRow]:
  """Writes `speech/<id>.wav`, `speech_en.jsonl` (English: exact text first, then
  approximate) and `speech_other.jsonl` (other languages, exact text only).

  A file that cannot be decoded is an error, or, given a `skipped` list, noted there.
  """
  root, out = pathlib.Path(root), pathlib.Path(out)
  check_root(root)
  items = dev_speech_items(root)
  check_not_reserved({item.ref.package for item in items})
  # English exact, English approximate, then the other languages (exact only).
  order = {(True, True): 0, (True, False): 1, (False, True): 2}
  items = [it for it in items if (it.language == "en", it.exact) in order]
  items.sort(key=lambda it: order[(it.language == "en", it.exact)])
  written = []
  for item in items:
    samples = _load_or_skip(item.ref, skipped)
    if samples is None:
      continue
    rel = f"speech/{item.ref.id}.wav"
    _write_wav(out, rel, samples)
    row = {"id": item.ref.id, "audio": rel, "text": item.text,
           "duration": _r3(len(samples) / SAMPLE_RATE), "events": [], "turns": [],
           "source_package": item.ref.package, "speaker": item.speaker}
    if not item.exact:
      row["text_approximate"] = True
    written.append(SpeechRow(row, item.language, item.exact))
  _write_jsonl(out / "speech_en.jsonl", [s.row for s in written if s.language == "en"])
  _write_jsonl(out / "speech_other.jsonl", [s.row for s in written if s.language != "en"])
  return written


def _event(onset: float, offset: float, label: str, role: str | None = None) -> dict:
  event = {"onset": _r3(onset), "offset": _r3(offset), "class": label,
           "role": role or role_of(label)}
  if role is None and not is_project_class(label):
    event["class_unmapped"] = True
  return event


def build_dev_events(root: str | os.PathLike[str], out: str | os.PathLike[str],
                     skipped: list[str] | None = None, seed: int = 1234
                     ) -> tuple[list[dict], list[dict]]:
  """Writes `events/<id>.wav` and `events.jsonl`: one labelled sound per row
  (undecodable files: as in `build_dev_speech`).

  A recording of one impact of a class that happens as a run (one key click of a
  keyboard, one footstep: `sounds.is_single_impact`) is not what anyone would call
  "someone typing"; such impacts of a package are laid as runs by the same rule the
  TRAIN bank uses (`sounds.stroke_run`), one run per pattern's average count of
  impacts, each row `<package>/<class>-run<i>`.

  Returns:
    (the rows of `events.jsonl`; one row per recording, the single impacts too, each
    with its wav: what `build_turn_streams` draws sounds from, as it did before runs
    existed, so the turn-taking streams, and every figure measured on them, stay).
  """
  root, out = pathlib.Path(root), pathlib.Path(out)
  rows, recordings = [], []
  impacts: dict[tuple[str, str], list[np.ndarray]] = collections.defaultdict(list)

  def write(ident: str, samples: np.ndarray, lo: int, hi: int, label: str, package: str
            ) -> dict:
    rel = f"events/{ident}.wav"
    _write_wav(out, rel, samples)
    return {"id": ident, "audio": rel, "duration": _r3(len(samples) / SAMPLE_RATE),
            "events": [_event(lo / SAMPLE_RATE, hi / SAMPLE_RATE, label)],
            "turns": [], "source_package": package}

  for clip in sound_clips(root, DEV):
    samples = _load_or_skip(clip.ref, skipped)
    if samples is None:
      continue
    lo, hi = effects.trim_silence(samples, threshold_db=EVENT_TRIM_DB)
    if hi <= lo:
      continue  # digital silence
    recordings.append(write(clip.ref.id, samples, lo, hi, clip.label, clip.ref.package))
    if sounds.is_single_impact(clip.label, hi - lo):
      impacts[(clip.label, clip.ref.package)].append(samples[lo:hi])
    else:
      rows.append(recordings[-1])
  for (label, package), strokes in sorted(impacts.items()):
    pattern = sounds.STROKE_PATTERNS[label]
    runs = max(1, round(len(strokes) / (sum(pattern.count) / 2)))
    rng = np.random.default_rng([seed, *f"{label}/{package}".encode()])
    for i in range(runs):
      run, _ = sounds.stroke_run(strokes, pattern, rng)
      lo, hi = effects.trim_silence(run, threshold_db=EVENT_TRIM_DB)
      rows.append(write(f"{package}/{label}-run{i}", run, lo, hi, label, package))
  _write_jsonl(out / "events.jsonl", rows)
  return rows, recordings


def _utterance(samples: np.ndarray) -> np.ndarray | None:
  """The clip's voiced span at `SPEECH_DBFS`, or None if it holds an inner pause of
  `MAX_GAP_IN_UTTERANCE_S` or more or is too short or long for a stream."""
  hop = 160
  levels = effects.frame_rms_db(samples, hop, hop)
  loud = np.nonzero(levels > max(float(levels.max()) + TURN_TRIM_DB, -60.0))[0]
  if loud.size == 0:
    return None
  longest_gap = (float(np.diff(loud).max() - 1) * hop / SAMPLE_RATE) if loud.size > 1 else 0.0
  lo, hi = int(loud[0]) * hop, (int(loud[-1]) + 1) * hop
  seconds = (hi - lo) / SAMPLE_RATE
  if longest_gap >= MAX_GAP_IN_UTTERANCE_S or not (
      UTTERANCE_SECONDS[0] <= seconds <= UTTERANCE_SECONDS[1]):
    return None
  return effects.set_level(samples[lo:hi], SPEECH_DBFS, active_only=False)


def _noise_segment(clip: LabelledClip, seconds: float, rng: np.random.Generator
                   ) -> np.ndarray:
  """`seconds` of `clip` from a random offset (looped if the file is shorter)."""
  samples = clip.ref.load()
  need = int(np.ceil(seconds * SAMPLE_RATE))
  if len(samples) < need:
    samples = np.tile(samples, need // len(samples) + 1)
  start = int(rng.integers(0, len(samples) - need + 1))
  return samples[start:start + need]


TURN_ENDS: Final[tuple[str, ...]] = ("speech", "recording")
# What a DEV turn is made of, and the manifest and stream names it is written under.
TURN_KINDS: Final[dict[str, tuple[str, str]]] = {
    "pair": ("streams.jsonl", "turns"), "split": ("streams_split.jsonl", "split"),
    "single": ("streams_single.jsonl", "single")}


def check_turn_end(turn_end: str) -> None:
  """Raises ValueError unless `turn_end` is one of `TURN_ENDS`."""
  if turn_end not in TURN_ENDS:
    raise ValueError(f"turn_end must be one of {TURN_ENDS}, got {turn_end!r}")


def turn_end_in(utterance: np.ndarray, turn_end: str) -> float:
  """Where a turn ending with `utterance` (float32[n], 16 kHz, clean) ends, in s from the
  utterance's start: its last voiced frame's end ("speech"), or its last sample
  ("recording", and "speech" when the VAD hears no voice in it)."""
  check_turn_end(turn_end)
  recording = len(utterance) / SAMPLE_RATE
  if turn_end == "recording":
    return recording
  voice_end = vad_lib.last_voice_end(utterance)
  return recording if voice_end is None else voice_end


SENTENCE_END = re.compile(r"[.!?]\s+\S")
SPLIT_MIN_GAP_S: Final[float] = 0.04  # an inner dip this long is a word boundary
SPLIT_MIN_PART_S: Final[float] = 0.6  # each half of a split utterance lasts at least this


def split_at_inner_gap(utterance: np.ndarray, quiet_db: float = TURN_TRIM_DB
                       ) -> tuple[np.ndarray, np.ndarray] | None:
  """Cuts a voiced utterance at the inner quiet dip nearest its middle.

  A dip is a run of at least `SPLIT_MIN_GAP_S` of 10 ms frames quieter than `quiet_db`
  below the utterance's loudest frame, with `SPLIT_MIN_PART_S` of speech on either
  side; the cut is in the dip's middle. Returns (first part, second part) float32
  arrays, or None when the utterance has no such dip.
  """
  hop = 160
  levels = effects.frame_rms_db(utterance, hop, hop)
  loud = np.flatnonzero(levels >= float(levels.max()) + quiet_db)
  # Quiet runs [start, end) lie between loud frames, and before the first / after the last.
  bounds = np.concatenate([[-1], loud, [len(levels)]])
  starts, ends = bounds[:-1] + 1, bounds[1:]
  long_enough = (ends - starts) * hop >= SPLIT_MIN_GAP_S * SAMPLE_RATE
  middles = (starts[long_enough] + ends[long_enough]) // 2 * hop
  min_part = int(SPLIT_MIN_PART_S * SAMPLE_RATE)
  cuts = [int(c) for c in middles if min_part <= c <= len(utterance) - min_part]
  if not cuts:
    return None
  cut = min(cuts, key=lambda c: abs(c - len(utterance) / 2))
  return utterance[:cut], utterance[cut:]


def build_turn_streams(root: str | os.PathLike[str], out: str | os.PathLike[str],
                       speech: Sequence[SpeechRow], events: Sequence[dict],
                       num_streams: int, seed: int, *, kind: str = "pair",
                       turn_end: str = "speech") -> list[dict]:
  """Writes turn-taking streams (see the module docstring) and their manifest.

  `kind` (one of `TURN_KINDS`) "pair": `streams/turns_NNN.wav` and `streams.jsonl`; the
  turn is two whole utterances of one speaker with a pause between. "single":
  `streams/single_NNN.wav` and `streams_single.jsonl`; the turn is one whole utterance,
  no pause (how long a reply waits after a short turn). "split":
  `streams/split_NNN.wav` and `streams_split.jsonl`; the turn is one single-sentence
  utterance cut at an inner word gap (`split_at_inner_gap`) with the pause put there,
  so the first part is unfinished in meaning and prosody, as a real mid-turn pause is.
  `turn_end`: where the turn ends, one of `TURN_ENDS` (`turn_end_in`); the audio is the
  same for both.

  Even-numbered streams are English when English clips allow it, odd ones another
  language (and the other way round when one side runs out). Each clip is used in at
  most two streams; fewer than `num_streams` rows come back when clips run out.
  """
  check_turn_end(turn_end)
  if kind not in TURN_KINDS:
    raise ValueError(f"kind must be one of {tuple(TURN_KINDS)}, got {kind!r}")
  split = kind == "split"
  manifest_name, stream_prefix = TURN_KINDS[kind]
  root, out = pathlib.Path(root), pathlib.Path(out)
  rng = np.random.default_rng(seed)
  pools: dict[tuple[bool, str], list[SpeechRow]] = collections.defaultdict(list)
  for s in speech:
    if s.exact and s.row["duration"] <= 8.0 and not (
        split and SENTENCE_END.search(s.row["text"].strip())):
      pools[(s.language == "en", s.row["speaker"])].append(s)
  needed = 2 if kind == "pair" else 1
  english = sorted(k for k in pools if k[0] and len(pools[k]) >= needed)
  other = sorted(k for k in pools if not k[0] and len(pools[k]) >= needed)
  # Sounds before the turn: a class drawn uniformly, then one of its recordings (the
  # many keyboard clicks and footsteps would otherwise crowd out the rare alerts).
  before: dict[str, list[dict]] = collections.defaultdict(list)
  for e in events:
    if e["events"][0]["class"] != "notification":
      before[e["events"][0]["class"]].append(e)
  before_classes = sorted(before)
  beds = noise_files(root, DEV)
  uses: collections.Counter = collections.Counter()
  prepared: dict[str, np.ndarray | None] = {}

  def prepare(s: SpeechRow) -> np.ndarray | None:
    if s.row["id"] not in prepared:
      samples, _ = sf.read(str(out / s.row["audio"]), dtype="float32")
      prepared[s.row["id"]] = _utterance(samples)
    return prepared[s.row["id"]]

  def pick(keys: list) -> tuple[list[SpeechRow], np.ndarray, np.ndarray] | None:
    for _ in range(200):
      pool = pools[keys[int(rng.integers(len(keys)))]]
      chosen = [pool[int(i)] for i in rng.choice(len(pool), needed, replace=False)]
      if any(uses[c.row["id"]] >= 2 for c in chosen):
        continue
      clips = [prepare(c) for c in chosen]
      if any(c is None for c in clips):
        continue
      if kind == "pair":
        return chosen, clips[0], clips[1]
      if kind == "single":
        return chosen, clips[0], None
      halves = split_at_inner_gap(clips[0])
      if halves is not None:
        return chosen, halves[0], halves[1]
    return None

  rows = []
  (out / "streams").mkdir(parents=True, exist_ok=True)
  for index in range(num_streams):
    chosen = None
    for keys in ([english, other] if index % 2 == 0 else [other, english]):
      chosen = pick(keys) if keys else None
      if chosen is not None:
        break
    if chosen is None:
      break
    used, xa, xb = chosen
    uses.update(c.row["id"] for c in used)
    parts, labels = [], []
    start = float(rng.uniform(0.5, 1.2))
    if before_classes and rng.random() < 0.5:  # a real sound before the user speaks
      pool = before[before_classes[int(rng.integers(len(before_classes)))]]
      event_row = pool[int(rng.integers(len(pool)))]
      label = event_row["events"][0]
      samples, _ = sf.read(str(out / event_row["audio"]), dtype="float32")
      piece = samples[int(label["onset"] * SAMPLE_RATE):int(label["offset"] * SAMPLE_RATE)]
      piece = piece[:int(MAX_EVENT_IN_STREAM_S * SAMPLE_RATE)]
      if len(piece) > 0.1 * SAMPLE_RATE:
        piece = effects.set_level(piece, float(rng.uniform(*EVENT_DBFS)), active_only=False)
        parts.append((0.3, piece))
        labels.append(_event(0.3, 0.3 + len(piece) / SAMPLE_RATE, label["class"]))
        start = 0.3 + len(piece) / SAMPLE_RATE + float(rng.uniform(0.5, 1.0))
    if xb is None:  # a single utterance: it is the turn's last one
      last_start, xb, turn_parts = start, xa, [(start, xa)]
    else:
      last_start = start + len(xa) / SAMPLE_RATE + float(rng.uniform(*PAUSE_SECONDS))
      turn_parts = [(start, xa), (last_start, xb)]
    end = last_start + len(xb) / SAMPLE_RATE
    total = end + float(rng.uniform(2.0, 3.0))
    mix = np.zeros(int(np.ceil(total * SAMPLE_RATE)), np.float32)
    for at, piece in parts + turn_parts:
      k = int(round(at * SAMPLE_RATE))
      mix[k:k + len(piece)] += piece[:len(mix) - k]
    if beds and rng.random() < 0.5:  # a real noise bed under the whole stream
      bed = beds[int(rng.integers(len(beds)))]
      snr = float(rng.uniform(*NOISE_SNR_DB))
      noise = _noise_segment(bed, len(mix) / SAMPLE_RATE, rng)[:len(mix)]
      mix += effects.set_level(noise, SPEECH_DBFS - snr, active_only=False)
      labels.append(_event(0.0, len(mix) / SAMPLE_RATE, bed.label))
    # The audio runs to `end` whatever `turn_end` says, so both annotations share it.
    speech_end = last_start + turn_end_in(xb, turn_end)
    labels.append(_event(start, speech_end, "speech", role="addressed_speech"))
    stream_id = f"{stream_prefix}_{index:03d}"
    rel = f"streams/{stream_id}.wav"
    _write_wav(out, rel, mix)
    rows.append({"id": stream_id, "audio": rel, "text": " ".join(c.row["text"] for c in used),
                 "duration": _r3(len(mix) / SAMPLE_RATE),
                 "events": sorted(labels, key=lambda e: (e["onset"], e["offset"])),
                 "turns": [{"start": _r3(start), "end": _r3(speech_end), "reply_expected": True}],
                 "source_package": used[0].row["source_package"],
                 "speaker": used[0].row["speaker"]})
  _write_jsonl(out / manifest_name, rows)
  return rows


# ------------------------------------------------------------------ the whole build


@dataclasses.dataclass(frozen=True)
class ManifestCount:
  name: str
  rows: int
  minutes: float
  detail: str


@dataclasses.dataclass(frozen=True)
class DevSetSummary:
  """What `build_dev_set` wrote: one count per manifest; `str` is a readable table."""

  out: str
  manifests: tuple[ManifestCount, ...]
  skipped: tuple[str, ...] = ()

  def describe(self) -> str:
    lines = [f"real-audio DEV set in {self.out} (used only for model selection)"]
    for m in self.manifests:
      lines.append(f"  {m.name:<20} {m.rows:>5} rows {m.minutes:7.1f} min   {m.detail}")
    if self.skipped:
      lines.append(f"  skipped {len(self.skipped)} undecodable files (listed in skipped.txt)")
    return "\n".join(lines)

  def __str__(self) -> str:
    return self.describe()


def _counts(values: Iterable[str]) -> str:
  return ", ".join(f"{k} {v}" for k, v in sorted(collections.Counter(values).items()))


def summarize(out: str | os.PathLike[str]) -> DevSetSummary:
  """Counts per manifest of a built DEV set, read back from its JSONL files."""
  out = pathlib.Path(out)

  def read(name: str) -> list[dict]:
    path = out / name
    if not path.exists():
      return []
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]

  counts = []
  for name in ("speech_en.jsonl", "speech_other.jsonl"):
    rows = read(name)
    approximate = sum(bool(r.get("text_approximate")) for r in rows)
    counts.append(ManifestCount(
        name, len(rows), sum(r["duration"] for r in rows) / 60,
        f"exact text {len(rows) - approximate}, approximate {approximate}; packages: "
        + _counts(r["source_package"] for r in rows)))
  rows = read("events.jsonl")
  labels = [e for r in rows for e in r["events"]]
  unmapped = sorted({e["class"] for e in labels if e.get("class_unmapped")})
  counts.append(ManifestCount(
      "events.jsonl", len(rows), sum(r["duration"] for r in rows) / 60,
      f"alert {sum(e['role'] == 'alert' for e in labels)}, benign "
      f"{sum(e['role'] == 'benign' for e in labels)}; classes: "
      + _counts(e["class"] for e in labels)
      + (f"; not project classes: {', '.join(unmapped)}" if unmapped else "")))
  english_speakers = {r.get("speaker") for r in read("speech_en.jsonl")}
  for name, _ in TURN_KINDS.values():
    rows = read(name)
    english = sum(r.get("speaker") in english_speakers for r in rows)
    with_event = sum(any(e["role"] in ("alert", "benign") and e["onset"] > 0
                         for e in r["events"]) for r in rows)
    with_alert = sum(any(e["role"] == "alert" for e in r["events"]) for r in rows)
    with_bed = sum(any(e["onset"] == 0 and e["offset"] == r["duration"] for e in r["events"])
                   for r in rows)
    counts.append(ManifestCount(
        name, len(rows), sum(r["duration"] for r in rows) / 60,
        f"turns {sum(len(r['turns']) for r in rows)} (English {english}, other "
        f"{len(rows) - english}); sound before the turn {with_event} (alert {with_alert}); "
        f"noise bed {with_bed}"))
  skipped = out / "skipped.txt"
  return DevSetSummary(str(out), tuple(counts), tuple(
      skipped.read_text("utf-8").splitlines() if skipped.exists() else ()))


def build_dev_set(root: str | os.PathLike[str], out: str | os.PathLike[str], *,
                  streams: int = 40, seed: int = 1234, turn_end: str = "speech"
                  ) -> DevSetSummary:
  """Builds the whole DEV set from extracted packages in `root` into `out` (`turn_end`:
  as `build_turn_streams`).

  Raises:
    ReservedPackageError: `root` holds a reserved package.
    FileNotFoundError: `root` is not a folder.
  """
  check_turn_end(turn_end)
  root, out = pathlib.Path(root), pathlib.Path(out)
  check_root(root)
  out.mkdir(parents=True, exist_ok=True)
  skipped: list[str] = []
  speech = build_dev_speech(root, out, skipped)
  _, recordings = build_dev_events(root, out, skipped)
  (out / "skipped.txt").write_text("".join(line + "\n" for line in skipped), encoding="utf-8")
  for offset, kind in enumerate(TURN_KINDS):  # seed, seed + 1, seed + 2
    build_turn_streams(root, out, speech, recordings, streams, seed + offset, kind=kind,
                       turn_end=turn_end)
  summary = summarize(out)
  (out / "summary.txt").write_text(summary.describe() + "\n", encoding="utf-8")
  return summary


def default_cache() -> pathlib.Path:
  """`$XDG_CACHE_HOME/audio_interaction/debs` (or ~/.cache/...)."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return pathlib.Path(base) / "audio_interaction" / "debs"


def fetch_and_build(out: str | os.PathLike[str], cache: str | os.PathLike[str] | None = None,
                    *, streams: int = 40, seed: int = 1234, turn_end: str = "speech",
                    log=print) -> DevSetSummary:
  """Fetches the DEV packages (or reuses `cache`), extracts them to `cache/extracted`
  and builds the DEV set in `out` (`turn_end`: as `build_turn_streams`)."""
  cache = pathlib.Path(cache) if cache is not None else default_cache()
  root = fetch_packages(DEV_PACKAGES, cache, log=log)
  return build_dev_set(root, out, streams=streams, seed=seed, turn_end=turn_end)
