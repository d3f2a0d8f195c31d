"""`audio-interaction listen`: a model listens to a file, a microphone or stdin, live."""

from __future__ import annotations

import asyncio
import os
import pathlib
from collections.abc import AsyncIterable
from typing import Any

import ml_collections
import numpy as np
from rich.console import Console

from audio_interaction.apps.live_view import LiveView, SpokenReplies
from audio_interaction.export.portable import bundle_infer_config, load_model
from audio_interaction.infer.engine import Engine, params_for
from audio_interaction.infer.live import DEFAULT_INSTRUCTION, JsonlLog, LiveConfig, LiveSession
from audio_interaction.viz.timeline import TimelinePicture


# Finished replies left on screen at the end (the live view's transcript).
TRANSCRIPT_LINES = 6


class _ListenView(LiveView):
  """The live view without its error line: `listen` raises the error to its caller, which
  reports it (the CLI: one line on stderr), so it is printed once."""

  def __call__(self, event: dict[str, Any]) -> None:
    if event["event"] != "error":
      super().__call__(event)


# -------------------------------------------------------------------- listen
def listen(source: AsyncIterable[np.ndarray], *, bundle: str | os.PathLike[str] | None = None,
           instruction: str = DEFAULT_INSTRUCTION, threshold: float | None = None,
           out_dir: str | os.PathLike[str] = "runs/listen", speak: bool = False,
           stall_timeout: float = 2.0, console: Console | None = None,
           every_chunk: bool = False, infer: ml_collections.ConfigDict | None = None
           ) -> dict[str, Any]:
  """`audio-interaction listen`: a model bundle (default: the embedded tiny model)
  listens to `source` with the live view; writes events.jsonl, timeline.png and,
  with `speak`, replies.wav into `out_dir`. The operating point (policy, sampling,
  reply length) is `infer` (default: the bundle's `config.infer`); `threshold` None:
  its threshold. The terminal lines are never hard-wrapped (a piped log keeps one
  line per event).

  Returns:
    A summary dict (paths, counts, replies, compute). On an error the log and the
    timeline of what came before are written, then the error is raised.
  """
  # soft_wrap: rich would cut lines at 80 columns when stdout is not a terminal.
  console = console or Console(soft_wrap=True)
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  model, params, tokenizer, note = load_model(None, bundle)
  infer = infer if infer is not None else bundle_infer_config(bundle)
  params = params_for(params, infer.weights)  # e.g. --config.infer.weights=int8
  config = LiveConfig.from_infer(infer, chunk_seconds=model.config.chunk_seconds,
                                 threshold=threshold, instruction=instruction,
                                 stall_timeout=stall_timeout)
  console.print(f"[bold]model[/]: {note}; [bold]source[/]: "
                f"{getattr(source, 'name', type(source).__name__)}; policy {infer.policy}, threshold {config.threshold}; "
                f"instruction: {instruction!r}", highlight=False)
  speaker = SpokenReplies(out / "replies.wav") if speak else None
  timeline = TimelinePicture(out / "timeline.png", threshold=config.threshold,
                             decode=tokenizer.decode, frontend=model.frontend,
                             title=f"listen: {getattr(source, 'name', '')}")
  sinks = [JsonlLog(out / "events.jsonl"),
           _ListenView(console, every_chunk=every_chunk, transcript_lines=TRANSCRIPT_LINES),
           *([speaker] if speaker else []), timeline]
  session = LiveSession(Engine.from_infer(model, infer, tokenizer), params, tokenizer,
                        config, sinks)
  try:
    result = asyncio.run(session.run(source))
  except KeyboardInterrupt:  # Ctrl-C ends a microphone session: a normal end
    result = session.result()
  picture = timeline.written
  summary = {"events_jsonl": str(session.log_path), "timeline_png": str(picture),
             "replies_wav": str(speaker.path) if speaker else None,
             **session.summary(result),  # "replies": how many
             "last_replies": [(round(start, 2), text, how)
                              for start, text, how in result.replies]}
  listed = min(TRANSCRIPT_LINES, len(result.replies))
  console.print(f"[bold]done[/]: {summary['chunks']} chunks of {result.stream_seconds:.1f} s, "
                f"{summary['replies']} replies"
                + (f" (the last {listed} listed above)" if listed else "")
                + f", dropped {summary['dropped']}, max lag "
                f"{summary['max_lag_seconds']:.2f} s, median compute "
                f"{summary['median_compute_ms']:.1f} ms per chunk; log: {session.log_path}; "
                f"timeline: {picture}" + (f"; speech: {speaker.path}" if speaker else ""),
                highlight=False)
  return summary
