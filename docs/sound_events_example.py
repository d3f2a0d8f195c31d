"""Writes sound_events.wav: real DEV sound events one after another, for `listen`.

A smartphone ringtone, someone typing, footsteps, a notification and a glass break
from the real-audio DEV set (`build-real-dev`), 1.5 s of room-level noise between
them, so a model with a sound-event head shows on its timeline what it heard where::

  python -m audio_interaction build-real-dev --out data/real_dev
  python docs/sound_events_example.py --dev data/real_dev/events.jsonl
  python -m audio_interaction listen sound_events.wav --speed inf --checkpoint BUNDLE --out runs/sounds

`--pick CLASS[:PACKAGE],...` chooses other events (the first of each class, from that
DEV package when one is named; or an event's manifest id). `--turn MANIFEST:ID` puts a
DEV turn stream, whole, after the first `--turn-after` of them (default 0: first; the
real-audio model's picture in the README)::

  python docs/sound_events_example.py --turn data/real_dev/streams_split.jsonl:split_002 \\
      --pick lomiri-sounds/sounds/lomiri/ringtones/Celestial,fillets-ng-data/keyboard-run0 --out real_audio.wav
"""

import argparse
import json
import pathlib

import numpy as np
import soundfile

from audio_interaction.audio import io as audio_io
from audio_interaction.corpus import effects

# One event of each of these classes, the first of its class in the manifest.
CLASSES = ("phone_ring", "keyboard", "footsteps", "notification", "glass_break")
MAX_SECONDS = 6.0


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--dev", type=pathlib.Path, default=pathlib.Path("data/real_dev/events.jsonl"))
  parser.add_argument("--out", default="sound_events.wav")
  parser.add_argument("--pick", default=",".join(CLASSES),
                      help="comma list of CLASS, CLASS:PACKAGE or an event's id, in stream order")
  parser.add_argument("--level", default="-20", metavar="DB",
                      help="each event's active RMS in dBFS, or 'source' for the recording's own")
  parser.add_argument("--turn", default=None, metavar="MANIFEST:ID",
                      help="a DEV turn stream to play whole")
  parser.add_argument("--turn-after", type=int, default=0,
                      help="the turn stream goes after this many of the picked events")
  args = parser.parse_args()
  rows = _rows(args.dev)
  rng = np.random.default_rng(0)
  gap = lambda: 0.003 * effects.colored_noise(rng, int(1.5 * 16000), 1.0)
  pieces, placed = [gap()], []
  turn_audio = _turn(args.turn) if args.turn else None
  for number, pick in enumerate(args.pick.split(",")):
    if turn_audio is not None and number == args.turn_after:
      pieces, placed = _place_turn(pieces, placed, turn_audio, gap)
    label, _, package = pick.strip().partition(":")
    row = next((r for r in rows if r["id"] == pick.strip()
                or (r["events"][0]["class"] == label
                    and (not package or r.get("source_package") == package))), None)
    if row is None:
      raise SystemExit(f"--pick {pick}: no such event in {args.dev}")
    event = row["events"][0]
    audio = audio_io.load_audio(args.dev.parent / row["audio"])
    audio = audio[int(16000 * event["onset"]):int(16000 * event["offset"])][:int(16000 * MAX_SECONDS)]
    placed.append(f"{row['events'][0]['class']} at {sum(len(p) for p in pieces) / 16000:.1f} s"
                  f" ({row['id']})")
    audio = audio.astype(np.float32)
    if args.level != "source":
      audio = effects.set_level(audio, float(args.level))
    pieces += [audio, gap()]
  if turn_audio is not None and args.turn_after >= len(args.pick.split(",")):
    pieces, placed = _place_turn(pieces, placed, turn_audio, gap)
  soundfile.write(args.out, np.concatenate(pieces).astype(np.float32), 16000)
  print("\n".join(placed))


def _turn(spec: str) -> tuple[np.ndarray, dict, str]:
  """(audio, its turn, id) of the stream MANIFEST:ID."""
  manifest, _, stream_id = spec.rpartition(":")
  stream = next((r for r in _rows(pathlib.Path(manifest)) if r["id"] == stream_id), None)
  if stream is None:
    raise SystemExit(f"--turn {spec}: no stream {stream_id!r} in {manifest}")
  audio = audio_io.load_audio(pathlib.Path(manifest).parent / stream["audio"])
  return audio.astype(np.float32), stream["turns"][0], stream_id


def _place_turn(pieces: list, placed: list, turn_audio: tuple, gap) -> tuple[list, list]:
  audio, turn, stream_id = turn_audio
  at = sum(len(p) for p in pieces) / 16000
  placed.append(f"turn {turn['start'] + at:.1f}-{turn['end'] + at:.1f} s ({stream_id})")
  return pieces + [audio, gap()], placed


def _rows(manifest: pathlib.Path) -> list[dict]:
  return [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]


if __name__ == "__main__":
  main()
