"""A manifest's recordings played later in a stream: `audio-interaction lead-in`.

An eval or a tune scores every recording from its first sample, so a model whose
encoder adds absolute positions (Whisper's table restarts every 30 s) is only ever
asked about the start of its position window; a live stream meets the same sound
anywhere in it. The copy written here puts a lead-in of quiet room noise (coloured
noise at `LEAD_IN_LEVEL_DB`, no event) before each recording and shifts every time
annotation by the same amount, so the same sounds and turns are scored later in the
stream. The lead is fixed (`Lead(seconds=5)`) or drawn per recording
(`Lead(up_to=30)`: seeded, uniform in [0, 30) s, to spread a tuning set over the
window). Each row says its lead in "lead_in": the eval hears it (an alert there is a
false alarm) but does not count its quiet as benign time, which would flatter the
false alarms per hour.

With a `channel` each played recording (its lead-in too) also goes through a channel of
the corpus's domain randomisation (`effects.CHANNELS`: a telephone line, a room, a
microphone; each keeps a recording's length and level, so every annotation holds),
seeded per row, timings unchanged: the same DEV turns and sounds, heard as over the phone
or across a room, ask how far a model's figures carry to audio recorded otherwise.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
from typing import Any

import numpy as np
import soundfile
from tqdm import tqdm

from audio_interaction import atomic_file
from audio_interaction.audio import io as audio_io
from audio_interaction.corpus import effects
from audio_interaction.corpus.manifest import AUDIO_KEYS, read_rows

RATE = 16000
LEAD_IN_LEVEL_DB = -50.0  # a quiet room: far below speech (-20 to -30 dBFS)
# The row keys that hold a time in seconds from the recording's start.
_TIME_KEYS = ("recognisable_after", "reply_time")


@dataclasses.dataclass(frozen=True)
class Lead:
  """How long before each recording: `seconds` for all, or with `up_to` a seeded uniform
  draw in [0, up_to) per recording (rounded to 10 ms)."""

  seconds: float = 0.0
  up_to: float | None = None

  @classmethod
  def parse(cls, text: str) -> "Lead":
    """"5" -> 5 s for every recording; "random:30" -> a draw in [0, 30) s per recording.
    ValueError naming the text otherwise."""
    match = re.fullmatch(r"\s*(random:)?\s*([0-9]*\.?[0-9]+)\s*", text)
    if not match:
      raise ValueError(f"lead {text!r}: give seconds (5) or random:MAX (random:30)")
    value = float(match.group(2))
    if match.group(1):
      if value <= 0:
        raise ValueError(f"lead {text!r}: MAX must be > 0")
      return cls(up_to=value)
    return cls(seconds=value)

  def draw(self, rng: np.random.Generator) -> float:
    if self.up_to is None:
      return self.seconds
    return round(float(rng.uniform(0.0, self.up_to)), 2)

  def __str__(self) -> str:
    return f"random:{self.up_to:g}" if self.up_to is not None else f"{self.seconds:g}"


def shifted_row(row: dict[str, Any], lead: float) -> dict[str, Any]:
  """A manifest row (dict) whose time annotations (events, turns, words,
  `recognisable_after`, `reply_time`, `duration`) are `lead` seconds later. A whole-clip
  `label` (a row of `duration` s without events) becomes an event from `lead` to the
  end, since the lead-in is not that sound."""
  row = dict(row)
  if lead and "label" in row and not row.get("events") and "duration" in row:
    row["events"] = [{"onset": 0.0, "offset": row["duration"], "class": row.pop("label")}]
    row.pop("recognisable_after", None)  # an event's delay comes from its class
  for key, fields in (("events", ("onset", "offset")), ("turns", ("start", "end"))):
    if isinstance(row.get(key), list):
      row[key] = [dict(item, **{f: item[f] + lead for f in fields if f in item})
                  if isinstance(item, dict) else item for item in row[key]]
  if isinstance(row.get("words"), list):  # [word, start, end]
    row["words"] = [[w[0], w[1] + lead, w[2] + lead] if isinstance(w, (list, tuple))
                    and len(w) == 3 else w for w in row["words"]]
  for key in _TIME_KEYS + ("duration",):
    if isinstance(row.get(key), (int, float)):
      row[key] = row[key] + lead
  return row


def unaddressed_speech(row: dict[str, Any]) -> dict[str, Any]:
  """A speech row as a B6 case of unaddressed speech: one benign "speech" event from
  its `lead_in` to its `duration` (what it already had there is replaced)."""
  if not isinstance(row.get("duration"), (int, float)):
    raise ValueError(f"row {row.get('id', '?')}: unaddressed speech needs a duration")
  return {**row, "events": [{"onset": float(row.get("lead_in", 0.0)),
                             "offset": float(row["duration"]), "class": "speech",
                             "role": "benign"}]}


def write_lead_in_manifest(manifest: str | os.PathLike, lead: Lead, out: str | os.PathLike,
                           *, seed: int = 0, progress: bool = True, unaddressed: bool = False,
                           max_rows: int | None = None, channel: str | None = None
                           ) -> dict[str, Any]:
  """Writes OUT/<manifest's name> and OUT/audio/NNNN.wav: each row's recording (the
  segment it names, at 16 kHz mono) after a lead-in of quiet noise, its annotations
  shifted (`shifted_row`) and its lead in "lead_in" (added to the row's own); OUT/lead_in.json
  says from what, how, and each row's lead.

  `unaddressed`: each row's recording becomes one benign "speech" event from the end of
  its lead to its end (`unaddressed_speech`), so that the eval scores it as B6 audio
  where any reply is a false alarm: speech nobody addressed to the model, under the
  row's (or the eval's monitoring) instruction. `max_rows`: the first rows only.
  `channel`: a name of `effects.CHANNELS` each played recording goes through (drawn from its own
  seed per row, so a row's channel does not depend on the rows before it).

  Raises:
    ManifestError (a ValueError): a line that is not a JSON object (`read_rows`).
    ValueError: a row without an audio path, an output manifest that would overwrite
      the input, or an unknown channel.
    FileNotFoundError: the manifest or a recording is missing.
  Returns:
    {"rows", "lead", "leads_s": [min, median, max], "manifest": the written path}.
  """
  source = pathlib.Path(manifest)
  out = pathlib.Path(out)
  target = out / source.name
  if target.resolve() == source.resolve():
    raise ValueError(f"--out {out}: would overwrite the manifest {source}")
  if channel is not None and channel not in effects.CHANNELS:
    raise ValueError(f"channel {channel!r}: choose from {sorted(effects.CHANNELS)}")
  rows = read_rows(source)
  if max_rows is not None:
    if max_rows < 1:
      raise ValueError(f"max_rows={max_rows}: must be >= 1")
    rows = rows[:max_rows]
  rng = np.random.default_rng(seed)
  (out / "audio").mkdir(parents=True, exist_ok=True)
  leads = []
  written = []
  for index, row in enumerate(tqdm(rows, desc=f"lead-in {lead}", disable=not progress)):
    audio_key = next((k for k in AUDIO_KEYS if k in row), None)
    if audio_key is None:
      raise ValueError(f"{source} row {index + 1}: no audio path ({' / '.join(AUDIO_KEYS)})")
    audio = audio_io.load_audio(source.parent / row[audio_key], RATE, resample=True)
    start = int(round(float(row.get("offset", 0.0)) * RATE))
    stop = (start + int(round(float(row["duration"]) * RATE))
            if isinstance(row.get("duration"), (int, float)) else audio.size)
    audio = audio[start:stop]
    seconds = lead.draw(rng)
    noise = np.zeros(int(round(seconds * RATE)), np.float32)
    if noise.size:
      noise = effects.set_level(effects.colored_noise(rng, noise.size, 1.0), LEAD_IN_LEVEL_DB,
                                active_only=False)
    played = np.concatenate([noise, audio]).astype(np.float32)
    if channel is not None:
      played = effects.CHANNELS[channel](played, np.random.default_rng([seed, index]))
      played = played.astype(np.float32)
    name = f"audio/{index:04d}.wav"
    soundfile.write(out / name, played, RATE)
    new = shifted_row({**{k: v for k, v in row.items() if k not in ("offset", *AUDIO_KEYS)},
                       "duration": audio.size / RATE}, seconds)
    new.update(audio=name, lead_in=seconds + float(row.get("lead_in", 0.0)))
    new["duration"] = played.size / RATE
    if unaddressed:
      new = unaddressed_speech(new)
    written.append(json.dumps(new))
    leads.append(seconds)
  # The manifest last and whole: an interrupted run leaves no manifest naming missing audio.
  atomic_file.write_text(out / "lead_in.json", json.dumps(
      {"manifest": str(source), "lead": str(lead), "seed": seed, "level_db": LEAD_IN_LEVEL_DB,
       "unaddressed": unaddressed, "max_rows": max_rows, "channel": channel,
       "leads_s": leads}, indent=1))
  atomic_file.write_text(target, "".join(line + "\n" for line in written))
  return {"rows": len(rows), "lead": str(lead), "channel": channel,
          "leads_s": [float(np.min(leads)), float(np.median(leads)), float(np.max(leads))]
          if leads else [], "manifest": str(target)}
