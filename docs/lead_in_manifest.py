"""Writes a copy of a DEV manifest whose recordings start LEAD seconds into the stream.

Every DEV recording is scored from the first sample, so a model's absolute positions
(Whisper's encoder adds a 30 s position table) are always near 0 when its sound is
heard; a live stream meets the same sound anywhere in that window. This copy puts
LEAD seconds of quiet room noise (-50 dBFS coloured noise, no event) before each
recording and shifts its annotations (events, turns, recognisable_after, reply_time)
by LEAD, so `eval` scores the same sounds later in the stream::

  python docs/lead_in_manifest.py --manifest data/real_dev/events.jsonl --lead 5 --out data/real_dev_lead5
  python -m audio_interaction eval --checkpoint real-audio --manifest data/real_dev_lead5/events.jsonl \\
      --suites B6 --sweep "" --out runs/ra_events_lead5
"""

import argparse
import json
import pathlib

import numpy as np
import soundfile

from audio_interaction.audio import io as audio_io
from audio_interaction.corpus import effects

RATE = 16000


def _shift(row: dict, lead: float) -> dict:
  row = dict(row)
  row["events"] = [dict(e, onset=e["onset"] + lead, offset=e["offset"] + lead)
                   for e in row.get("events", [])]
  row["turns"] = [dict(t, start=t["start"] + lead, end=t["end"] + lead)
                  for t in row.get("turns", [])]
  for key in ("recognisable_after", "reply_time"):
    if row.get(key) is not None:
      row[key] = row[key] + lead
  if row.get("duration") is not None:
    row["duration"] = row["duration"] + lead
  return row


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--manifest", type=pathlib.Path, required=True)
  parser.add_argument("--lead", type=float, required=True, help="seconds before each recording")
  parser.add_argument("--out", type=pathlib.Path, required=True)
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  rows = [json.loads(line) for line in args.manifest.read_text().splitlines() if line.strip()]
  (args.out / "audio").mkdir(parents=True, exist_ok=True)
  with open(args.out / args.manifest.name, "w") as out:
    for index, row in enumerate(rows):
      audio = audio_io.load_audio(args.manifest.parent / row["audio"])
      noise = effects.set_level(effects.colored_noise(rng, int(args.lead * RATE), 1.0), -50.0,
                                active_only=False)
      name = f"audio/{index:04d}.wav"
      soundfile.write(args.out / name, np.concatenate([noise, audio]).astype(np.float32), RATE)
      out.write(json.dumps(dict(_shift(row, args.lead), audio=name)) + "\n")
  print(f"{len(rows)} recordings, {args.lead:g} s later: {args.out / args.manifest.name}")


if __name__ == "__main__":
  main()
