"""`audio-interaction show-example`: one corpus example as a picture, a sound and text.

`show_example` rebuilds example `index` of a corpus split exactly as `build-data`
wrote it (same sub-task order, same split seed, `corpus.split_seed`), or builds one
sub-task from an explicit seed, and writes into `out_dir`:

* `example.png`: waveform, log-mel, words (fillers and mid-utterance holds marked),
  sound events, expected replies, and the targets the model trains on: SILENT/SPEAK
  per chunk and the reply tokens written after each chunk (`timeline_plot.plot_labels`);
* `example.wav`: the rendered 16 kHz stream, whole chunks (16-bit PCM);
* `example.txt`: the sub-task and seed, then `serialize.describe` of the example.

Everything shown is read back from the serialized example (`serialize.decode_example`),
so the picture shows what training sees, not what the builder meant.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Sequence
from typing import Any

import ml_collections
import numpy as np
import soundfile

from audio_interaction.audio.features import LogMelConfig, log_mel
from audio_interaction.corpus import build as corpus, serialize
from audio_interaction import stream_format as sf
from audio_interaction.stream_format import SAMPLE_RATE
from audio_interaction.corpus.timeline import OFFLINE, Timeline
from audio_interaction.data.tokenizer import Tokenizer
from audio_interaction.viz import timeline as timeline_plot


@dataclasses.dataclass(frozen=True)
class ShownExample:
  """What `show_example` wrote, and the example it showed."""

  png: pathlib.Path
  wav: pathlib.Path
  txt: pathlib.Path
  timeline: Timeline
  example: dict[str, Any]
  played: str  # what happened to `play` ("" if not asked)


def play_audio(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> str:
  """Plays float32 `audio` on the default output through `sounddevice` if it is
  installed and there is an output device; returns what happened, for the user."""
  try:
    import sounddevice  # pylint: disable=g-import-not-at-top  (optional dependency)
  except (ImportError, OSError) as error:  # OSError: the PortAudio library is missing
    return f"not playing: sounddevice is not available ({error}); pip install sounddevice"
  try:
    sounddevice.query_devices(kind="output")
  except (sounddevice.PortAudioError, ValueError) as error:
    return f"not playing: no audio output device ({error})"
  sounddevice.play(audio, sample_rate)
  sounddevice.wait()
  return f"played {len(audio) / sample_rate:.1f} s"


def chunk_labels(view: serialize.ExampleView, tokenizer: Tokenizer
                 ) -> list[timeline_plot.ChunkLabel]:
  """Per-chunk targets of a decoded online example, reply tokens as text (`<eor>` shown)."""
  return [timeline_plot.ChunkLabel(
      c.start, c.end, c.decision == sf.Decision.SPEAK,
      tokenizer.decode(c.tokens, keep_special=True) if c.tokens else "") for c in view.chunks]


def show_example(config: ml_collections.ConfigDict, split: str = "train", index: int = 0,
                 out_dir: str | pathlib.Path = "runs/show", *, subtask: str | None = None,
                 seed: int | None = None, subtasks: Sequence[str] | None = None,
                 play: bool = False) -> ShownExample:
  """Writes example.png / .wav / .txt of one example into `out_dir` (module docstring).

  Args:
    config: the corpus config (`data.dir` holds the tokenizer; it is trained there
      first if missing, as `build-data` would).
    split: "train", "eval" or "test": which voices, recordings and world items.
    index: the example's index in the split (ignored with `subtask`).
    subtask: build this sub-task directly from `seed` (default 0) instead.
    seed: with `subtask`, the example's seed; without, the split seed (default: the
      one `build-data` used, `corpus.split_seed(config, split)`).
    subtasks: the sub-tasks `build-data --subtasks` was given (default: all 28), so
      that `index` names the same example.
    play: also play the audio (`play_audio`).
  """
  corpus.build_tokenizer(config)
  make = corpus.CorpusExamples.from_config(config, split, subtasks)
  if subtask is None:
    seed = corpus.split_seed(config, split) if seed is None else seed
    timeline = make.timeline(index, seed)
    heading = f"# example {index} of split {split!r} (split seed {seed}): sub-task {timeline.task}"
  else:
    timeline = make.build(subtask, 0 if seed is None else seed)
    heading = f"# sub-task {subtask}, seed {timeline.seed}, split {split!r}"
  example = make.example(timeline)
  tokenizer = make.tokenizer
  view = serialize.decode_example(example, tokenizer)
  audio = np.asarray(example["audio"], np.float32)

  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  wav = out / "example.wav"
  soundfile.write(wav, audio, SAMPLE_RATE, subtype="PCM_16")
  txt = out / "example.txt"
  txt.write_text(f"{heading}\n{serialize.describe(example, tokenizer)}\n")
  mel = np.asarray(log_mel(audio[None], LogMelConfig.from_config(config.audio)))[0]
  note = ""
  if view.mode == OFFLINE:
    note = f"offline: answer after the clip: {view.replies[0].text!r}"
  png = timeline_plot.plot_labels(
      out / "example.png", audio, SAMPLE_RATE, chunk_labels(view, tokenizer), log_mel=mel,
      reference=timeline_plot.timeline_spans(timeline), note=note,
      title=f"{timeline.task} (seed {timeline.seed}): {timeline.instruction}")
  played = play_audio(audio) if play else ""
  return ShownExample(png=png, wav=wav, txt=txt, timeline=timeline, example=example,
                      played=played)
