"""What a person sees and hears of a live session: the rich terminal view and the spoken replies."""

from __future__ import annotations

import asyncio
import collections
import os
import pathlib
from typing import Any

import numpy as np
import soundfile
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from audio_interaction.corpus.effects import resample
from audio_interaction.corpus.speech import EspeakEngine
from audio_interaction.infer.live import LiveResult
from audio_interaction.infer.sources import SourceUnavailable
from audio_interaction.stream_format import SAMPLE_RATE


# ------------------------------------------------------------------- the view
class LiveView:
  """Rich terminal view: lines for chunks and events above a status panel (stream time,
  lag, drops, compute, P(SPEAK) of the last chunks, the reply being written and the
  transcript of the last replies).

  Args:
    every_chunk: a line for every chunk; otherwise only for chunks that spoke.
  """

  _BARS = " ▁▂▃▄▅▆▇█"

  def __init__(self, console: Console | None = None, *, every_chunk: bool = False,
               transcript_lines: int = 6):
    self.console = console or Console()
    self.every_chunk = every_chunk
    self._transcript: collections.deque[str] = collections.deque(maxlen=transcript_lines)
    self._probs: collections.deque[float] = collections.deque(maxlen=40)
    self._status: dict[str, Any] = {"time": 0.0, "lag_seconds": 0.0, "dropped": 0,
                                    "compute_ms": 0.0, "stalls": 0}
    self._current = ""
    self._heard = ""
    self._live: Live | None = None

  def start(self) -> None:
    """Shows the status panel (refreshed 4 times a second) until `stop`."""
    self._live = Live(get_renderable=self._render, console=self.console, refresh_per_second=4,
                      transient=True, redirect_stdout=False, redirect_stderr=False)
    self._live.start()

  async def finish(self, result: LiveResult) -> None:
    """The session ended: `stop`."""
    del result
    self.stop()

  def stop(self) -> None:
    """Removes the panel and leaves the transcript of the last replies on screen."""
    if self._live is not None:
      self._live.stop()
      self._live = None
      for line in self._transcript:  # the transcript stays on screen
        self.console.print(line, highlight=False)

  def _print(self, text: str) -> None:
    self.console.print(text, highlight=False)

  def _render(self) -> Group:
    s = self._status
    bars = "".join(self._BARS[min(8, int(p * 8.999))] for p in self._probs)
    head = Text.assemble(("listening ", "bold"),
                         f"stream {s['time']:7.2f} s | lag {s['lag_seconds']:5.2f} s | "
                         f"dropped {s['dropped']} | stalls {s['stalls']} | "
                         f"compute {s['compute_ms']:5.1f} ms | P(speak) ", (bars, "red"))
    lines = [head, Text(f"  heard: …{self._heard[-90:]}", style="cyan")]
    lines += [Text(line) for line in self._transcript]
    if self._current:
      lines.append(Text(f"  speaking: {self._current}", style="green"))
    return Group(*lines)

  def __call__(self, event: dict[str, Any]) -> None:
    """Updates the view with one session event."""
    kind, t = event["event"], event["time"]
    self._status["time"] = max(self._status["time"], t)
    if kind == "chunk":
      self._status.update(lag_seconds=event["lag_seconds"], dropped=event["dropped"],
                          compute_ms=event["compute_ms"])
      self._probs.append(event["speak_probability"])
      self._heard = event.get("transcript_tail", self._heard)
      if event["spoke"]:
        self._current = (self._current + " " + event["reply_text"]).strip()
      if event["spoke"] or self.every_chunk:
        marker = f"[green]SPEAK[/] {event['reply_text']!r}" if event["spoke"] else "silent"
        self._print(f"  {event['start']:6.2f}-{event['end']:5.2f} s  "
                    f"P(speak)={event['speak_probability']:4.2f} {marker}")
    elif kind in ("reply_end", "yield"):
      cut = {"eor": "", "yield": " [yielded]", "stream_end": " [stream ended]",
             "max_tokens": " [longest reply reached]",
             "instruction_changed": " [instruction changed]"}[event["reason"]]
      self._transcript.append(f"{event['reply_start']:7.2f} s  model: {event['text']}{cut}")
      self._current = ""
      if kind == "yield":
        self._print(f"  [yellow]yield[/] at {t:.2f} s (P(speak)={event['speak_probability']:.2f})")
    elif kind == "stall":
      self._status["stalls"] += 1
      self._print(f"  [red]stall[/]: no audio for {event['waited_seconds']:.1f} s at {t:.2f} s")
    elif kind == "resume":
      self._print(f"  audio back after {event['stalled_seconds']:.1f} s")
    elif kind == "drop" and event["dropped"] in (1, 10, 100, 1000):
      self._print(f"  [red]behind real time[/]: {event['dropped']} chunk(s) dropped, "
                  f"lag {event['lag_seconds']:.2f} s")
    elif kind == "instruction":
      self._print(f"  instruction at {t:.2f} s: {event['text']!r}")
    elif kind == "error":
      self._print(f"  [red]error[/]: {event['message']}")


# --------------------------------------------------------------- spoken replies
class SpokenReplies:
  """Speaks each finished reply with espeak-ng into a WAV aligned at stream time.

  A reply's speech starts at the stream time of its first token (or when the previous
  reply's speech ends, if later: one voice) and is cut where the model yielded. The
  file is written sequentially as replies finish, so its memory use is bounded.
  """

  # espeak-ng's own default speed; the corpus engine counts rates from its BASE_WPM.
  _DEFAULT_WPM = 175

  def __init__(self, path: str | os.PathLike[str], *, voice: str = "en-us",
               sample_rate: int = 16000):
    if not EspeakEngine.is_available():
      raise SourceUnavailable("spoken replies need espeak-ng (apt-get install espeak-ng)")
    self._engine = EspeakEngine()
    self.path, self.voice, self.sample_rate = pathlib.Path(path), voice, sample_rate
    self._queue: asyncio.Queue | None = None
    self._task: asyncio.Task | None = None
    self._file: soundfile.SoundFile | None = None
    self.written = 0  # samples
    self.spoken: list[tuple[float, float, str]] = []  # (start, end, text)

  def start(self) -> None:
    """Opens the WAV and starts the task that speaks replies in order (in a running loop)."""
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self._file = soundfile.SoundFile(self.path, "w", self.sample_rate, 1, "PCM_16")
    self._queue = asyncio.Queue()
    self._task = asyncio.create_task(self._work())

  def __call__(self, event: dict[str, Any]) -> None:
    """Queues a finished (or cut) reply for speaking."""
    if event["event"] in ("reply_end", "yield") and event["text"].strip() and self._queue:
      cut = event["time"] if event["reason"] != "eor" else None
      self._queue.put_nowait((event["reply_start"], event["text"], cut))

  async def synthesize(self, text: str) -> np.ndarray:
    """text -> [n] float32 speech at `sample_rate` (the corpus's espeak-ng engine, off the
    event loop)."""
    (audio,) = await asyncio.to_thread(
        self._engine.synthesize, self.voice, [text],
        self._DEFAULT_WPM / EspeakEngine.BASE_WPM, 0.0)
    return resample(audio, SAMPLE_RATE, self.sample_rate)

  async def _work(self) -> None:
    while (item := await self._queue.get()) is not None:
      start, text, cut = item
      audio = await self.synthesize(text)
      at = max(int(round(start * self.sample_rate)), self.written)
      if cut is not None:
        audio = audio[:max(0, int(round(cut * self.sample_rate)) - at)]
      self._pad_to(at)
      self._file.write(audio)
      self.written += len(audio)
      self.spoken.append((at / self.sample_rate, self.written / self.sample_rate, text))

  def _pad_to(self, samples: int) -> None:
    if samples > self.written:
      self._file.write(np.zeros(samples - self.written, np.float32))
      self.written = samples

  async def finish(self, result: LiveResult) -> None:
    """Speaks what is queued, pads the file to the stream's length and closes it."""
    stream_seconds = result.stream_seconds
    if self._task is None:
      return
    task, self._task = self._task, None
    self._queue.put_nowait(None)
    try:
      await task
    finally:
      self._pad_to(int(round(stream_seconds * self.sample_rate)))
      self._file.close()
