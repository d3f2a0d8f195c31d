"""The real-audio DEV set builder on a fake extracted-package tree (no network, no
real package): manifests' schema, ids, times, determinism, the reserved-package
refusal, the TRAIN-side reader, and fetching with stub `apt-get` / `dpkg-deb`."""

from __future__ import annotations

import io
import json
import os
import pathlib
import shutil
import stat
import zipfile

import numpy as np
import pytest
import soundfile as sf
from fake_recordings import speechlike as _speechlike

from audio_interaction import config_lib
from audio_interaction.apps import cli
from audio_interaction.corpus import build, sounds, tasks
from audio_interaction.corpus import timeline as timeline_lib
from audio_interaction.audio import io as audio_io
from audio_interaction.corpus import effects, real_audio, worlds

ROW_KEYS = {"id", "audio", "text", "duration", "events", "turns", "instruction",
            "source_package", "speaker", "text_approximate"}
REQUIRED = {"id", "audio", "duration", "events", "turns", "source_package"}
EVENT_KEYS = {"onset", "offset", "class", "role", "class_unmapped"}
ROLES = {"alert", "benign", "addressed_speech", "unaddressed_speech", "barge_in"}
FILLETS = "usr/share/games/fillets-ng"


def _event_sound(seed: int, rate: int, seconds: float = 0.6) -> np.ndarray:
  rng = np.random.default_rng(seed)
  x = np.zeros(int((seconds + 0.4) * rate), np.float32)
  burst = rng.normal(0, 0.2, int(seconds * rate)) * np.hanning(int(seconds * rate))
  x[int(0.2 * rate):int(0.2 * rate) + len(burst)] = burst
  return x


def _write(path: pathlib.Path, x: np.ndarray, rate: int) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  sf.write(str(path), x, rate)


def _ogg_bytes(x: np.ndarray, rate: int) -> bytes:
  buffer = io.BytesIO()
  sf.write(buffer, x, rate, format="OGG")
  return buffer.getvalue()


def _make_dev_tree(root: pathlib.Path) -> None:
  """alsa-utils, warzone2100-data (zip), kajongg, fillets (script + nl dub + clicks),
  xboard, flare-game (music) with the real packages' file layout."""
  alsa = root / "alsa-utils/usr/share/sounds/alsa"
  for i, name in enumerate(("Front_Left", "Front_Right", "Rear_Center")):
    _write(alsa / f"{name}.wav", _speechlike(i, 48000), 48000)
  _write(alsa / "Noise.wav", np.random.default_rng(9).normal(0, 0.1, 48000), 48000)

  base = root / "warzone2100-data/usr/share/games/warzone2100/base.wz"
  base.parent.mkdir(parents=True)
  with zipfile.ZipFile(base, "w") as zf:
    zf.writestr("script/tutorial.js", 'consoleVar = [\n'
                '{"audio": "tut1.ogg", "clear": false, "message": _("Oil resources are key"), '
                '"state": 0},\n'
                '{"audio": "tut2.ogg", "clear": false, "message": _("Select a \\"truck\\""), '
                '"state": 0},\n];')
    zf.writestr("audio/audio.cfg", '/*x*/\n\taudio\t"pcv331.ogg"\toneshot\t100 1800  '
                '/*Turret Selected*/\n\taudio\t"beep1.ogg"\toneshot 30 1800\t/*Close Window*/\n')
    zf.writestr("audio/tutorial/tut1.ogg", _ogg_bytes(_speechlike(11, 11025), 11025))
    zf.writestr("audio/tutorial/tut2.ogg", _ogg_bytes(_speechlike(12, 11025), 11025))
    zf.writestr("audio/memressp/pcv331.ogg", _ogg_bytes(_speechlike(13, 11025), 11025))
    zf.writestr("audio/beep1.ogg", _ogg_bytes(_event_sound(14, 11025), 11025))

  voices = root / "kajongg/usr/share/kajongg/voices"
  _write(voices / "male1/b3.ogg", _speechlike(21, 44100, 0.6, 2), 44100)
  _write(voices / "male1/dr.ogg", _speechlike(22, 44100, 0.6, 2), 44100)
  _write(voices / "de/male1/b3.ogg", _speechlike(23, 44100, 0.6), 44100)  # German: unused

  script = root / "fillets-ng-data" / FILLETS / "script/airplane/dialogs_nl.lua"
  script.parent.mkdir(parents=True)
  script.write_text(
      'dialogId("let-m-divna", "font_small", "What kind of strange ship is that?")\n'
      'dialogStr("Wat is dit voor raar schip?")\n\n'
      'dialogId("let-m-oko", "font_small", "An eye.")\ndialogStr("Een oog.")\n\n'
      'dialogId("let-m-leeg", "font_small", "Empty.")\ndialogStr("Leeg.")\n\n'
      'dialogId("let-v-vrak0", "font_big", "This is the wreck.")\n'
      'dialogStr("Dat is het wrak.")\n', encoding="utf-8")
  dub = root / "fillets-ng-data-nl" / FILLETS / "sound/airplane/nl"
  for i, name in enumerate(("let-m-divna", "let-m-oko", "let-v-vrak0")):
    _write(dub / f"{name}.ogg", _speechlike(30 + i, 22050, 1.0, 2), 22050)
  (dub / "let-m-leeg.ogg").write_bytes(b"")  # an empty file, as one in the real dub
  clicks = root / "fillets-ng-data" / FILLETS / "sound/linux/en"
  for i in range(48):  # single key clicks, as the real package has them
    _write(clicks / f"key{i}.ogg", _event_sound(40 + i, 44100, 0.05), 44100)

  sounds = root / "xboard/usr/share/games/xboard/sounds"
  _write(sounds / "phone.wav", _event_sound(50, 8000, 1.0), 8000)
  _write(sounds / "gong.wav", _event_sound(51, 8000, 1.5), 8000)
  _write(sounds / "cymbal.wav", _event_sound(52, 8000), 8000)  # in no table

  music = root / "flare-game/usr/share/games/flare/mods/fantasycore/music"
  t = np.arange(44100 * 3) / 44100
  _write(music / "town_theme.ogg", (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 44100)


def _make_train_tree(root: pathlib.Path) -> None:
  _write(root / "hedgewars-data/usr/share/games/hedgewars/Data/Sounds/steps.ogg",
         _event_sound(60, 44100), 44100)
  _write(root / "tuxmath-data/usr/share/tuxmath/sounds/alarm.wav", _event_sound(61, 22050),
         22050)
  _write(root / "wesnoth-1.16-data/usr/share/games/wesnoth/1.16/data/core/sounds/ambient/"
                "birds1.ogg", _event_sound(62, 44100), 44100)
  _write(root / "freeciv-data/usr/share/freeciv/stdsounds/Tread.ogg", _event_sound(63, 22050),
         22050)
  pak = root / "openarena-data/usr/share/games/openarena/baseoa/pak0.pk3"
  pak.parent.mkdir(parents=True)
  with zipfile.ZipFile(pak, "w") as zf:
    buffer = io.BytesIO()
    sf.write(buffer, _event_sound(64, 22050), 22050, format="WAV")
    zf.writestr("sound/player/footsteps/step1.wav", buffer.getvalue())
    zf.writestr("sound/player/pain.wav", buffer.getvalue())
  _write(root / "xmoto-data/usr/share/games/xmoto/Textures/Musics/ride.ogg",
         _event_sound(65, 44100, 2.0), 44100)  # DEV noise: not on the TRAIN side


@pytest.fixture(scope="module")
def dev_tree(tmp_path_factory):
  root = tmp_path_factory.mktemp("extracted")
  _make_dev_tree(root)
  return root


@pytest.fixture(scope="module")
def built(dev_tree, tmp_path_factory):
  out = tmp_path_factory.mktemp("dev_set")
  summary = real_audio.build_dev_set(dev_tree, out, streams=6, seed=7)
  return out, summary


def _rows(path: pathlib.Path) -> list[dict]:
  return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def _check_rows(out: pathlib.Path, name: str) -> list[dict]:
  rows = _rows(out / name)
  ids = [r["id"] for r in rows]
  assert len(ids) == len(set(ids)), f"{name}: ids not unique"
  for row in rows:
    assert REQUIRED <= set(row) <= ROW_KEYS, row
    assert row.get("text_approximate", True) is True  # present only when true
    info = sf.info(str(out / row["audio"]))
    assert (info.samplerate, info.channels) == (16000, 1)
    assert row["duration"] == pytest.approx(info.frames / 16000, abs=1e-3)
    assert not row["source_package"].startswith(real_audio.RESERVED_PREFIXES)
    for event in row["events"]:
      assert set(event) <= EVENT_KEYS and {"onset", "offset", "class", "role"} <= set(event)
      assert 0 <= event["onset"] < event["offset"] <= row["duration"], (row["id"], event)
      assert event["role"] in ROLES
      assert event.get("class_unmapped", True) is True
    for turn in row["turns"]:
      assert set(turn) == {"start", "end", "reply_expected"}
      assert 0 <= turn["start"] < turn["end"] <= row["duration"]
      assert isinstance(turn["reply_expected"], bool)
  return rows


def test_speech_manifests(built):
  out, _ = built
  english = _check_rows(out, "speech_en.jsonl")
  other = _check_rows(out, "speech_other.jsonl")
  texts = {r["id"]: r for r in english}
  assert texts["alsa-utils/sounds/alsa/Front_Left"]["text"] == "Front Left"
  assert not any("Noise" in r["id"] for r in english)
  tutorial = texts["warzone2100-data/warzone2100/base.wz/audio/tutorial/tut2"]
  assert tutorial["text"] == 'Select a "truck"' and "text_approximate" not in tutorial
  voice = texts["warzone2100-data/warzone2100/base.wz/audio/memressp/pcv331"]
  assert voice["text"] == "Turret Selected" and voice["text_approximate"] is True
  assert texts["kajongg/kajongg/voices/male1/b3"]["text"] == "bamboo three"
  assert texts["kajongg/kajongg/voices/male1/dr"]["text_approximate"] is True
  assert not any("/de/" in r["id"] for r in english + other)
  # Exact text first, then approximate.
  flags = [bool(r.get("text_approximate")) for r in english]
  assert flags == sorted(flags) and flags.count(True) == 3 and flags.count(False) == 5
  assert all(not r["events"] and not r["turns"] for r in english + other)
  # The Dutch dub: exact text, speaker = the fish; the empty file is skipped.
  assert {r["text"] for r in other} == {"Wat is dit voor raar schip?", "Een oog.",
                                        "Dat is het wrak."}
  assert {r["speaker"] for r in other} == {"fillets-ng-data-nl:font_small",
                                           "fillets-ng-data-nl:font_big"}
  assert all("text_approximate" not in r for r in other)
  assert any("let-m-leeg" in line for line in (out / "skipped.txt").read_text().splitlines())


def test_event_manifest(built):
  out, _ = built
  rows = _check_rows(out, "events.jsonl")
  by_name = {pathlib.PurePosixPath(r["id"]).name: r["events"][0] for r in rows}
  # cymbal is in no table; 48 single key clicks are two runs of typing.
  assert set(by_name) == {"phone", "gong", "keyboard-run0", "keyboard-run1"}
  assert by_name["phone"] == {**by_name["phone"], "class": "phone_ring", "role": "alert"}
  assert "class_unmapped" not in by_name["phone"]
  assert by_name["gong"]["class_unmapped"] is True and by_name["gong"]["role"] == "benign"
  pattern = sounds.STROKE_PATTERNS["keyboard"]
  for name in ("keyboard-run0", "keyboard-run1"):
    event = by_name[name]
    assert event["class"] == "keyboard" and event["role"] == "benign"
    row = next(r for r in rows if r["id"] == f"fillets-ng-data/{name}")
    run = audio_io.load_audio(out / row["audio"])
    levels = effects.frame_rms_db(run, 160, 160)
    rising = np.flatnonzero((levels[1:] > levels.max() - 20) & (levels[:-1] <= levels.max() - 20))
    assert len(rising) + 1 >= pattern.count[0] - 1, name  # a run of clicks, not one
    assert event["offset"] - event["onset"] >= (pattern.count[0] - 1) * pattern.interval[0] * 0.9
  # The onset is where the burst starts (0.2 s of silence before it).
  assert by_name["phone"]["onset"] == pytest.approx(0.2, abs=0.05)
  assert by_name["phone"]["offset"] == pytest.approx(1.2, abs=0.05)
  for row in rows:
    assert len(row["events"]) == 1 and row["turns"] == []


def test_turn_streams_draw_from_the_recordings_not_the_runs(dev_tree, tmp_path, monkeypatch):
  # The turn-taking streams take their sounds from one row per recording, as before
  # single impacts became runs, so the streams (and figures measured on them) stay.
  rows, recordings = real_audio.build_dev_events(dev_tree, tmp_path)
  names = lambda rs: {pathlib.PurePosixPath(r["id"]).name for r in rs}
  assert names(recordings) == {"phone", "gong", *(f"key{i}" for i in range(48))}
  assert names(rows) == {"phone", "gong", "keyboard-run0", "keyboard-run1"}
  assert all((tmp_path / r["audio"]).exists() for r in recordings)
  given = []
  monkeypatch.setattr(real_audio, "build_turn_streams",
                      lambda root, out, speech, events, *a, **k: given.append(events) or [])
  real_audio.build_dev_set(dev_tree, tmp_path / "set", streams=2, seed=7)
  assert len(given) == 3 and all(names(g) == names(recordings) for g in given)


@pytest.mark.parametrize("manifest", ["streams.jsonl", "streams_split.jsonl",
                                      "streams_single.jsonl"])
def test_turn_taking_streams(built, manifest):
  out, summary = built
  rows = _check_rows(out, manifest)
  assert len(rows) == 6
  texts = {r["text"] for r in _rows(out / "speech_en.jsonl")} | {
      r["text"] for r in _rows(out / "speech_other.jsonl")}
  for row in rows:
    # A split turn is one clip cut in two, a single turn one clip; a pair turn is two clips.
    assert (row["text"] in texts) == (manifest != "streams.jsonl"), row["text"]
  english_speakers = {r["speaker"] for r in _rows(out / "speech_en.jsonl")}
  assert any(r["speaker"] in english_speakers for r in rows)
  # The fake Dutch clips (1 s) are too short to split into two 0.6 s parts.
  dutch = any(r["speaker"] not in english_speakers for r in rows)
  assert dutch == (manifest != "streams_split.jsonl")
  for row in rows:
    (turn,) = row["turns"]
    assert turn["reply_expected"] is True
    speech = [e for e in row["events"] if e["role"] == "addressed_speech"]
    assert [(e["onset"], e["offset"]) for e in speech] == [(turn["start"], turn["end"])]
    for event in row["events"]:
      if event["role"] in ("alert", "benign") and event["onset"] > 0:
        assert event["offset"] < turn["start"]  # the sound comes before the user speaks
    # Inside the turn, exactly one pause of 0.5-0.9 s, none in a single utterance (the fake
    # syllables' gaps are under 0.1 s; a noise bed lies 20 dB or more below the speech).
    x, _ = sf.read(str(out / row["audio"]), dtype="float32")
    levels = effects.frame_rms_db(x, 160, 160)
    quiet = levels[int(turn["start"] * 100):int(turn["end"] * 100)] < -35.0
    runs, run = [], 0
    for q in list(quiet) + [False]:
      if q:
        run += 1
      elif run:
        runs.append(run / 100)
        run = 0
    long_runs = [r for r in runs if r >= 0.3]
    # A split turn's pause also holds the word gap it was cut in (under 0.1 s here).
    longest = 0.95 if manifest == "streams.jsonl" else 1.05
    if manifest == "streams_single.jsonl":
      assert long_runs == [], (row["id"], runs)
    else:
      assert len(long_runs) == 1 and 0.45 <= long_runs[0] <= longest, (row["id"], runs)
  assert manifest in summary.describe()


def test_streams_are_deterministic_for_a_seed(dev_tree, built, tmp_path):
  out, _ = built
  again = tmp_path / "again"
  real_audio.build_dev_set(dev_tree, again, streams=6, seed=7)
  turn_manifests = [name for name, _ in real_audio.TURN_KINDS.values()]
  for name in ["speech_en.jsonl", "speech_other.jsonl", "events.jsonl"] + turn_manifests:
    assert (again / name).read_bytes() == (out / name).read_bytes(), name
  for row in [r for name in turn_manifests for r in _rows(out / name)]:
    assert (again / row["audio"]).read_bytes() == (out / row["audio"]).read_bytes()
  other = tmp_path / "other_seed"
  real_audio.build_dev_set(dev_tree, other, streams=6, seed=8)
  assert (other / "streams.jsonl").read_bytes() != (out / "streams.jsonl").read_bytes()


def test_turn_ends_at_the_last_word_over_the_same_audio(dev_tree, tmp_path, monkeypatch):
  # A VAD that hears the last word end 0.3 s before the utterance's trim.
  monkeypatch.setattr(real_audio.vad_lib, "last_voice_end",
                      lambda utterance: len(utterance) / 16000 - 0.3)
  by_speech, by_recording = tmp_path / "speech", tmp_path / "recording"
  real_audio.build_dev_set(dev_tree, by_speech, streams=4, seed=7)
  real_audio.build_dev_set(dev_tree, by_recording, streams=4, seed=7, turn_end="recording")
  for name, _ in real_audio.TURN_KINDS.values():
    for speech, recording in zip(_rows(by_speech / name), _rows(by_recording / name),
                                 strict=True):
      assert (by_speech / speech["audio"]).read_bytes() == (
          by_recording / recording["audio"]).read_bytes()
      (turn,), (whole,) = speech["turns"], recording["turns"]
      assert turn["start"] == whole["start"]
      assert turn["end"] == pytest.approx(whole["end"] - 0.3, abs=2e-3)
      # The addressed speech event ends with the turn in both.
      for row, end in ((speech, turn["end"]), (recording, whole["end"])):
        (event,) = [e for e in row["events"] if e["role"] == "addressed_speech"]
        assert event["offset"] == end
  with pytest.raises(ValueError, match="turn_end"):
    real_audio.build_dev_set(dev_tree, tmp_path / "bad", streams=1, seed=7, turn_end="file")


def test_summary_counts(built):
  out, summary = built
  counts = {m.name: m for m in summary.manifests}
  assert counts["speech_en.jsonl"].rows == 8
  assert counts["speech_other.jsonl"].rows == 3
  assert counts["events.jsonl"].rows == 4
  assert counts["streams.jsonl"].rows == 6
  assert counts["streams_split.jsonl"].rows == 6
  assert counts["streams_single.jsonl"].rows == 6
  assert "gong" in counts["events.jsonl"].detail and "not project classes" in str(summary)
  assert summary == real_audio.summarize(out)
  assert (out / "summary.txt").read_text().strip() == summary.describe()


@pytest.mark.parametrize("name", ["gcompris-data", "asterisk-core-sounds-en-gsm",
                                  "pocketsphinx-testdata", "pyannote-audio"])
def test_reserved_packages_are_refused(dev_tree, tmp_path, name):
  root = tmp_path / "root"
  root.mkdir()
  (root / "alsa-utils").symlink_to(dev_tree / "alsa-utils")
  (root / name).mkdir()
  with pytest.raises(real_audio.ReservedPackageError, match=name):
    real_audio.build_dev_set(root, tmp_path / "out", streams=1, seed=0)
  assert not (tmp_path / "out").exists()
  with pytest.raises(real_audio.ReservedPackageError, match=name):
    real_audio.train_sound_clips(root)
  with pytest.raises(real_audio.ReservedPackageError, match=name):
    real_audio.fetch_packages(["alsa-utils", name], tmp_path / "cache")
  assert not (tmp_path / "cache").exists()  # refused before anything ran


def test_the_split_holds_out_whole_packages():
  dev, train = set(real_audio.DEV_PACKAGES), set(real_audio.TRAIN_PACKAGES)
  assert dev and train and not dev & train
  assert not any(real_audio.is_reserved(p) for p in dev | train)
  for rule in real_audio.EVENT_RULES + real_audio.NOISE_RULES:
    assert real_audio.split_of_package(rule.package) in (real_audio.DEV, real_audio.TRAIN)
  # Every alert class of the project is an "alert" role, everything else benign.
  assert all(real_audio.role_of(c) == "alert" for c in worlds.ALERT_LABELS)
  assert real_audio.role_of("rain") == real_audio.role_of("door") == "benign"


def test_train_reader_lists_only_train_packages(dev_tree, tmp_path):
  root = tmp_path / "extracted"
  _make_train_tree(root)
  for package in ("xboard", "flare-game"):
    (root / package).symlink_to(dev_tree / package)
  clips = real_audio.train_sound_clips(root)
  got = {(c.ref.package, c.label) for c in clips}
  assert got == {("hedgewars-data", "footsteps"), ("tuxmath-data", "siren"),
                 ("wesnoth-1.16-data", "bird"), ("freeciv-data", "engine"),
                 ("openarena-data", "footsteps")}
  assert all(c.split == real_audio.TRAIN for c in clips)
  by_label = {c.label: c for c in clips}
  assert by_label["siren"].role == "alert" and by_label["siren"].mapped
  assert not by_label["engine"].mapped and by_label["engine"].role == "benign"
  step = next(c for c in clips if c.ref.package == "openarena-data")
  assert step.ref.member == "sound/player/footsteps/step1.wav"
  samples = step.ref.load()
  assert samples.dtype == np.float32 and len(samples) == pytest.approx(1.0 * 16000, abs=2)
  noise = real_audio.train_noise_files(root)
  assert [(n.ref.package, n.label) for n in noise] == [("wesnoth-1.16-data", "ambience")]
  assert {n.ref.package for n in real_audio.noise_files(root, real_audio.DEV)} == {
      "flare-game", "xmoto-data"}



def test_the_earcons_are_notifications_but_not_the_animals_or_bare_percussion(tmp_path):
  icons = tmp_path / "sound-icons" / "usr/share/sounds/sound-icons"
  bells = tmp_path / "workrave-data" / "usr/share/sounds/workrave/subtle"
  for folder, names in ((icons, ("cembalo-1", "xylofon", "pisk-up", "prompt", "percussion-10",
                                 "canary-long", "gummy-cat-2", "glass-water-1")),
                        (bells, ("daily-limit",))):
    folder.mkdir(parents=True)
    for name in names:
      sf.write(folder / f"{name}.wav", np.zeros(1600, np.float32), 16000)
  got = {(c.ref.relpath.rsplit("/", 1)[-1], c.label)
         for c in real_audio.train_sound_clips(tmp_path)}
  assert got == {("cembalo-1.wav", "notification"), ("xylofon.wav", "notification"),
                 ("pisk-up.wav", "notification"), ("prompt.wav", "notification"),
                 ("daily-limit.wav", "notification")}

# ------------------------------------------------------------------ fetching

APT_GET = """#!/bin/sh
# stub: apt-get download PKG -> PKG_1.0_all.deb in the current folder
echo "$@" >> "$FAKE_LOG.apt"
[ "$1" = download ] || exit 64
case " $FAKE_FAIL " in *" $2 "*)
  echo "E: Unable to locate package $2" >&2; exit 100;;
esac
echo "deb of $2" > "$2_1.0_all.deb"
"""
DPKG_DEB = """#!/bin/sh
# stub: dpkg-deb -x DEB DIR copies FAKE_TREE/<package of DEB>/ into DIR
echo "$@" >> "$FAKE_LOG.dpkg"
[ "$1" = -x ] || exit 64
pkg=$(basename "$2" | cut -d_ -f1)
mkdir -p "$3"
if [ -d "$FAKE_TREE/$pkg" ]; then cp -R "$FAKE_TREE/$pkg/." "$3/"; fi
"""


@pytest.fixture
def stubs(tmp_path, dev_tree, monkeypatch):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  for name, text in (("apt-get", APT_GET), ("dpkg-deb", DPKG_DEB)):
    path = bin_dir / name
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
  log = tmp_path / "calls"
  monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
  monkeypatch.setenv("FAKE_TREE", str(dev_tree))
  monkeypatch.setenv("FAKE_LOG", str(log))
  monkeypatch.setenv("FAKE_FAIL", "")

  def calls(kind: str) -> list[str]:
    path = pathlib.Path(f"{log}.{kind}")
    return path.read_text().splitlines() if path.exists() else []
  return calls


def test_fetch_downloads_extracts_and_resumes(tmp_path, stubs):
  cache = tmp_path / "cache"
  lines = []
  root = real_audio.fetch_packages(["alsa-utils", "xboard"], cache, log=lines.append)
  assert root == cache / "extracted"
  assert (root / "alsa-utils/usr/share/sounds/alsa/Front_Left.wav").is_file()
  assert (root / "xboard/usr/share/games/xboard/sounds/phone.wav").is_file()
  assert sorted(p.name for p in cache.glob("*.deb")) == ["alsa-utils_1.0_all.deb",
                                                          "xboard_1.0_all.deb"]
  assert stubs("apt") == ["download alsa-utils", "download xboard"]
  assert len(stubs("dpkg")) == 2 and len(lines) == 4
  assert sorted(p.name for p in cache.iterdir()) == ["alsa-utils_1.0_all.deb", "extracted",
                                                      "xboard_1.0_all.deb"]
  # Again: nothing to do. Without the extracted folder: extracted from the cached .deb.
  real_audio.fetch_packages(["alsa-utils", "xboard"], cache, log=lines.append)
  assert len(stubs("apt")) == 2 and len(stubs("dpkg")) == 2
  shutil.rmtree(root / "xboard")
  real_audio.fetch_packages(["alsa-utils", "xboard"], cache, log=lines.append)
  assert len(stubs("apt")) == 2 and len(stubs("dpkg")) == 3
  assert (root / "xboard/usr/share/games/xboard/sounds/phone.wav").is_file()


def test_a_failing_download_names_the_package(tmp_path, stubs, monkeypatch):
  monkeypatch.setenv("FAKE_FAIL", "kajongg")
  cache = tmp_path / "cache"
  with pytest.raises(real_audio.FetchError, match="kajongg.*Unable to locate package kajongg"):
    real_audio.fetch_packages(["alsa-utils", "kajongg", "xboard"], cache, log=lambda _: None)
  assert (cache / "extracted/alsa-utils").is_dir()  # done before the failure: kept
  assert not (cache / "extracted/kajongg").exists()
  assert not list(cache.glob("kajongg*")) and not list(cache.glob(".download-*"))
  # Resumed once the package can be downloaded: only what is missing is fetched.
  monkeypatch.setenv("FAKE_FAIL", "")
  real_audio.fetch_packages(["alsa-utils", "kajongg", "xboard"], cache, log=lambda _: None)
  assert stubs("apt") == ["download alsa-utils", "download kajongg", "download kajongg",
                          "download xboard"]


def test_a_missing_apt_get_is_a_fetch_error(tmp_path, monkeypatch):
  monkeypatch.setenv("PATH", str(tmp_path / "empty"))
  with pytest.raises(real_audio.FetchError, match="alsa-utils.*apt-get is not installed"):
    real_audio.fetch_packages(["alsa-utils"], tmp_path / "cache", log=lambda _: None)


def test_cli_build_real_dev(tmp_path, stubs, capsys, monkeypatch):
  out = tmp_path / "dev"
  code = cli.main(["build-real-dev", "--out", str(out), "--cache", str(tmp_path / "cache"),
                   "--streams", "2", "--seed", "3"])
  printed = capsys.readouterr().out
  assert code == 0, printed
  assert sorted(c.split()[1] for c in stubs("apt")) == sorted(real_audio.DEV_PACKAGES)
  assert "speech_en.jsonl" in printed and "events.jsonl" in printed and "min" in printed
  assert len(_rows(out / "streams.jsonl")) == 2
  monkeypatch.setenv("FAKE_FAIL", "lomiri-sounds")
  code = cli.main(["build-real-dev", "--out", str(tmp_path / "dev2"),
                   "--cache", str(tmp_path / "cache2")])
  assert code == 1
  assert "lomiri-sounds" in capsys.readouterr().err


# ------------------------------------------------------------------ TRAIN audio in the corpus


def _randomize(root) -> dict:
  config = config_lib.base_config()
  config.data.randomize.enabled = True
  config.data.randomize.train_audio_root = str(root)
  config.data.randomize.p_ambience = 1.0
  return config.data.randomize.to_dict()


def test_train_audio_joins_the_train_sound_bank_only(tmp_path):
  root = tmp_path / "extracted"
  _make_train_tree(root)
  bank = build.sound_source(worlds.TRAIN, _randomize(root))
  # Mapped classes only (freeciv's tank tread is "engine": not a class of ours), plain
  # files only (openarena's pk3 members are left out).
  assert {(r.label, r.relpath.split("/")[0]) for r in bank.recordings()
          if r.relpath.split("/")[0] in real_audio.TRAIN_PACKAGES} == {
              ("footsteps", "hedgewars-data"), ("siren", "tuxmath-data"),
              ("bird", "wesnoth-1.16-data")}
  assert [(b.label, b.relpath.split("/")[0]) for b in bank.beds] == [
      ("ambience", "wesnoth-1.16-data")]
  heldout = build.sound_source(worlds.HELDOUT, _randomize(root))
  assert not heldout.beds
  assert not any(r.relpath.split("/")[0] in real_audio.TRAIN_PACKAGES
                 for r in heldout.recordings())
  siren = bank.recordings("siren")
  clip = bank.sample("siren", np.random.default_rng(0))
  assert clip.label == "siren" and len(clip.audio) > 0
  assert any(r.relpath.startswith("tuxmath-data/") for r in siren)


def test_a_missing_train_audio_root_names_the_fetch_command(tmp_path):
  with pytest.raises(FileNotFoundError, match="fetch-train-audio"):
    build.sound_source(worlds.TRAIN, _randomize(tmp_path / "nowhere"))
  # Randomisation off: the root is not read at all.
  off = _randomize(tmp_path / "nowhere")
  off["enabled"] = False
  assert not build.sound_source(worlds.TRAIN, off).beds


def test_sample_bed_reads_a_window_of_a_bed(tmp_path):
  long_bed = tmp_path / "music.ogg"
  _write(long_bed, _event_sound(70, 44100, seconds=6.0), 44100)
  bank = sounds.SoundBank(split="train", use_recordings=False,
                          beds=[sounds.Recording(str(long_bed), "music", "pkg/music.ogg",
                                                 "train")])
  a = bank.sample_bed(np.random.default_rng(3), seconds=2.0)
  b = bank.sample_bed(np.random.default_rng(3), seconds=2.0)
  np.testing.assert_array_equal(a.audio, b.audio)
  assert a.label == "music" and a.source == "pkg/music.ogg"
  assert len(a.audio) == pytest.approx(2.0 * 16000, abs=2)
  capped = bank.sample_bed(np.random.default_rng(3), seconds=60.0, max_seconds=1.0)
  assert len(capped.audio) == pytest.approx(1.0 * 16000, abs=2)
  assert sounds.SoundBank(use_recordings=False).sample_bed(np.random.default_rng(0), 1.0) is None


def test_ambience_lies_under_whole_streams_but_never_under_scene_questions(tmp_path):
  from conftest import ToneSpeech
  bed = tmp_path / "bed.wav"
  _write(bed, 0.1 * np.random.default_rng(1).standard_normal(16000 * 3).astype(np.float32),
         16000)
  bank = sounds.SoundBank(split="train", use_recordings=False,
                          beds=[sounds.Recording(str(bed), "ambience", "pkg/bed.wav", "train")])
  speech = ToneSpeech()
  with_bed = tasks.TaskConfig(ambience_probability=1.0, ambience_snr_db=(20.0, 20.0))
  plain = tasks.TaskConfig()
  for name, spec in tasks.SUBTASKS.items():
    timeline = tasks.build(name, 5, speech, bank, with_bed)
    beds = [b for b in timeline.backgrounds if b.label == "ambience"]
    chosen_bed = bool(tasks.build(name, 5, speech, bank, plain).backgrounds)
    if spec.ability == tasks.ENVIRONMENT_ABILITY or chosen_bed:
      assert not beds, name
      continue
    assert len(beds) == 1, name
    assert beds[0].start == 0.0 and len(beds[0].audio) == timeline.num_samples
    assert beds[0].snr_db == 20.0
  # Probability 0 (the default) draws nothing: timelines are exactly as before.
  a = tasks.build("chat_single", 5, speech, bank, plain)
  b = tasks.build("chat_single", 5, speech, sounds.SoundBank(split="train",
                                                           use_recordings=False), plain)
  assert not a.backgrounds
  np.testing.assert_array_equal(timeline_lib.render(a), timeline_lib.render(b))


def test_split_at_inner_gap_cuts_at_the_dip_nearest_the_middle():
  def tone(seconds):
    return (0.3 * np.sin(2 * np.pi * 220 * np.arange(int(seconds * 16000)) / 16000)
            ).astype(np.float32)

  def gap(seconds):
    return np.zeros(int(seconds * 16000), np.float32)

  clip = np.concatenate([tone(1.0), gap(0.06), tone(0.3), gap(0.05), tone(1.0)])
  first, second = real_audio.split_at_inner_gap(clip)
  assert len(first) + len(second) == len(clip)
  assert abs(len(first) / 16000 - 1.03) < 0.02  # the first dip's middle, not the second's
  assert real_audio.split_at_inner_gap(tone(2.0)) is None  # no dip
  assert real_audio.split_at_inner_gap(tone(0.3)) is None  # too short to halve
  # A dip with under SPLIT_MIN_PART_S of speech on one side is not a turn's middle.
  assert real_audio.split_at_inner_gap(np.concatenate([tone(0.3), gap(0.1), tone(2.0)])) is None
  # A dip shorter than SPLIT_MIN_GAP_S (a stop closure, say) is not a word boundary.
  assert real_audio.split_at_inner_gap(np.concatenate([tone(1.0), gap(0.02), tone(1.0)])) is None
