"""Writes a manifest of "tell me when you hear ..." requests over an events manifest.

Each recording whose sound is of one of our classes is written twice: once under an
instruction asking for its own class ("Tell me when you hear a phone ringing."; the
event becomes the one to answer, role "alert": `eval` scores the reply "i hear a phone
ringing" in time, B7), and once under an instruction asking for another class of the
manifest (the event becomes benign: any reply is a false alarm, B6). Recordings of no
class of ours are written once, asking for a class of the manifest (benign)::

  python docs/watch_requests.py data/real_dev/events.jsonl data/real_dev/watch.jsonl
  python -m audio_interaction lead-in --manifest data/real_dev/watch.jsonl \\
      --lead random:30 --out data/real_dev/watch_random30
  python -m audio_interaction eval --checkpoint real-audio --suites B6,B7 \\
      --manifest data/real_dev/watch_random30/watch.jsonl --sweep "" --out runs/watch_dev

The other class is drawn with `--seed` among the manifest's classes of ours.
"""

import argparse
import json
import os
import pathlib
from collections.abc import Iterable

import numpy as np

from audio_interaction.corpus import worlds


def watch_rows(rows: Iterable[dict], seed: int = 0) -> list[dict]:
  """The request rows of an events manifest's rows (one event each; module docstring)."""
  rows = [row for row in rows if len(row.get("events", ())) == 1]
  ours = sorted({row["events"][0]["class"] for row in rows} & set(worlds.SOUNDS))
  if len(ours) < 2:
    raise ValueError(f"the manifest holds {len(ours)} classes of ours; asking for another "
                     f"class needs at least 2")
  rng = np.random.default_rng(seed)
  out = []
  for row in rows:
    event = row["events"][0]
    label = event["class"]
    if label in worlds.SOUNDS:
      out.append({**row, "id": f"{row['id']}#asked",
                  "instruction": worlds.listen_instruction(label),
                  "events": [{**event, "role": "alert"}]})
    other = str(rng.choice([c for c in ours if c != label]))
    out.append({**row, "id": f"{row['id']}#other",
                "instruction": worlds.listen_instruction(other),
                "events": [{**event, "role": "benign"}]})
  return out


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("events", type=pathlib.Path, help="an events manifest (JSONL)")
  parser.add_argument("out", type=pathlib.Path, help="the request manifest to write")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  rows = [json.loads(line) for line in args.events.read_text().splitlines() if line.strip()]
  out = watch_rows(rows, args.seed)
  # Audio paths are relative to their manifest: re-anchored at the new one's folder.
  for row in out:
    audio = pathlib.Path(row["audio"])
    if not audio.is_absolute():
      row["audio"] = os.path.relpath(args.events.parent / audio, args.out.parent)
  args.out.parent.mkdir(parents=True, exist_ok=True)
  args.out.write_text("".join(json.dumps(row) + "\n" for row in out))
  asked = sum(row["id"].endswith("#asked") for row in out)
  print(f"{args.out}: {asked} recordings asked for their own class, "
        f"{len(out) - asked} for another")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
