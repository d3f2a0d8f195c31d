"""`audio-interaction listen`: a model listens to a file, a microphone or stdin, live."""

from __future__ import annotations

import asyncio
import collections
import os
import pathlib
from collections.abc import AsyncIterable
from typing import Any

import numpy as np
import soundfile
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from audio_interaction.apps.live_view import LiveView, SpokenReplies
from audio_interaction.export.portable import load_model
from audio_interaction.infer.engine import Engine
from audio_interaction.infer.live import DEFAULT_INSTRUCTION, LiveSession
from audio_interaction.viz.timeline import write_timeline


# -------------------------------------------------------------------- listen
def listen(source: AsyncIterable[np.ndarray], *, bundle: str | os.PathLike[str] | None = None,
           instruction: str = DEFAULT_INSTRUCTION, threshold: float = 0.5,
           out_dir: str | os.PathLike[str] = "runs/listen", speak: bool = False,
           stall_timeout: float = 2.0, console: Console | None = None,
           every_chunk: bool = False) -> dict[str, Any]:
  """`audio-interaction listen`: a model bundle (default: the embedded tiny model)
  listens to `source` with the live view; writes events.jsonl, timeline.png and,
  with `speak`, replies.wav into `out_dir`.

  Returns:
    A summary dict (paths, counts, replies, compute). On an error the log and the
    timeline of what came before are written, then the error is raised.
  """
  console = console or Console()
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  model, params, tokenizer, note = load_model(None, bundle)
  console.print(f"[bold]model[/]: {note}; [bold]source[/]: "
                f"{getattr(source, 'name', type(source).__name__)}; threshold {threshold}; "
                f"instruction: {instruction!r}", highlight=False)
  speaker = SpokenReplies(out / "replies.wav") if speak else None
  session = LiveSession(Engine(model), params, tokenizer, instruction=instruction,
                        threshold=threshold, log_path=out / "events.jsonl",
                        stall_timeout=stall_timeout, speaker=speaker,
                        view=LiveView(console, every_chunk=every_chunk))
  try:
    result = asyncio.run(session.run(source))
  except KeyboardInterrupt:  # Ctrl-C ends a microphone session: a normal end
    result = session.result()
  finally:
    picture = write_timeline(session.result(), out / "timeline.png", threshold=threshold,
                             decode=tokenizer.decode, frontend=model.frontend,
                             title=f"listen: {getattr(source, 'name', '')}")
  summary = {"events_jsonl": str(session.log_path), "timeline_png": str(picture),
             "replies_wav": str(speaker.path) if speaker else None,
             "replies": [(round(start, 2), text, how) for start, text, how in result.replies],
             **session._summary(result)}
  console.print(f"[bold]done[/]: {summary['chunks']} chunks of {result.stream_seconds:.1f} s, "
                f"{summary['replies']} replies, dropped {summary['dropped']}, max lag "
                f"{summary['max_lag_seconds']:.2f} s, median compute "
                f"{summary['median_compute_ms']:.1f} ms per chunk; log: {session.log_path}; "
                f"timeline: {picture}" + (f"; speech: {speaker.path}" if speaker else ""),
                highlight=False)
  return summary
