"""The main job: the model listens to a generated stream, decides per chunk, and replies.

The stream is one of the 28 sub-tasks, rendered with real TTS speech and sounds, so
the timeline also knows what a correct listener would have done (the expected
replies and their ready times), and the picture shows both.
"""

from __future__ import annotations

import asyncio
import pathlib

import ml_collections
import numpy as np
from rich.console import Console

from audio_interaction.corpus import tasks, worlds
from audio_interaction.corpus.timeline import render
from audio_interaction.viz.timeline import TimelinePicture, timeline_spans
from audio_interaction.infer.engine import Engine, params_for
from audio_interaction.apps.live_view import LiveView
from audio_interaction.corpus.build import heldout_sources
from audio_interaction.export.portable import bundle_infer_config, load_model
from audio_interaction.infer.live import JsonlLog, LiveConfig, LiveSession
from audio_interaction.infer.sources import ArraySource


def run_demo(config: ml_collections.ConfigDict | None, out_dir: str | pathlib.Path = "runs/demo",
             threshold: float | None = None, seed: int = 0, subtask: str = "demo_tour",
             bundle: str | pathlib.Path | None = None,
             infer: ml_collections.ConfigDict | None = None) -> dict:
  """Builds the example stream, runs the model over it, writes the timeline and log.

  The operating point is `infer` (default: the bundle's `config.infer`); `threshold`
  None: its threshold.

  Returns:
    A summary dict (paths, decisions, replies, real-time factor).
  """
  console = Console()
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  model, params, tokenizer, weights_note = load_model(config, bundle, seed)
  cfg = model.config
  console.print(f"[bold]model[/]: {cfg.decoder.num_layers}-layer decoder, "
                f"{cfg.encoder.num_layers}-layer {cfg.encoder.block} encoder; {weights_note}")

  speech, sounds = heldout_sources()
  chunk_ms = cfg.chunk_ms
  # Held-out voices, sounds and world items: the demo never replays training data.
  task_config = tasks.TaskConfig(split=worlds.HELDOUT, chunk_ms=chunk_ms)
  timeline = tasks.build(subtask, seed, speech, sounds, task_config)
  audio = render(timeline, chunk_ms=chunk_ms)
  console.print(f"[bold]stream[/]: sub-task {subtask!r}, {len(audio) / 16000:.1f} s; "
                f"instruction: {timeline.instruction!r}")
  for utterance in timeline.utterances:
    words = " ".join(w.text for w in utterance.words)
    console.print(f"  user {utterance.words[0].start:5.2f}-{utterance.words[-1].end:5.2f} s: {words}")
  for reply in timeline.replies:
    console.print(f"  expected reply from {reply.ready_time:5.2f} s: {reply.text!r}")

  # The live loop over the stream read as fast as the model goes (an unpaced source
  # is never dropped from, so this is exactly `run_stream`'s run), with its view.
  log_path = out / "events.jsonl"
  infer = infer if infer is not None else bundle_infer_config(bundle)
  params = params_for(params, infer.weights)  # e.g. --config.infer.weights=int8
  live_config = LiveConfig.from_infer(infer, chunk_seconds=cfg.chunk_seconds, threshold=threshold,
                                      instruction=timeline.instruction,
                                      keep_seconds=len(audio) / cfg.sample_rate + 1)
  picture_sink = TimelinePicture(out / "timeline.png", threshold=live_config.threshold,
                                 decode=tokenizer.decode, frontend=model.frontend,
                                 reference=timeline_spans(timeline),
                                 title=f"{subtask}: {weights_note}")
  session = LiveSession(Engine.from_infer(model, infer, tokenizer), params, tokenizer,
                        live_config, [JsonlLog(log_path), LiveView(console, every_chunk=True),
                                      picture_sink])
  result = asyncio.run(session.run(ArraySource(audio, speed=float("inf"))))
  trace = result.trace
  picture = picture_sink.written
  replies = trace.reply_texts(tokenizer.decode)
  # The first chunk includes compilation; the steady state is what a live run sees.
  steady = [c.compute_seconds for c in trace.chunks[2:]] or [c.compute_seconds for c in trace.chunks]
  summary = {
      "timeline_png": str(picture), "events_jsonl": str(log_path),
      "chunks": len(trace.chunks), "speak_chunks": sum(c.spoke for c in trace.chunks),
      "replies": replies,
      "median_chunk_ms": 1000 * float(np.median(steady)),
      "real_time_factor": float(np.median(steady)) / trace.chunk_seconds,
  }
  console.print(f"[bold]done[/]: {summary['chunks']} chunks, spoke in {summary['speak_chunks']}; "
                f"median compute {summary['median_chunk_ms']:.1f} ms per "
                f"{1000 * trace.chunk_seconds:.0f} ms chunk (real-time factor "
                f"{summary['real_time_factor']:.3f}); timeline: {picture}; log: {log_path}")
  return summary
