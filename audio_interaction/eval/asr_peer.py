"""The streaming recogniser people run on CPUs today, as a peer for B1/B2: PocketSphinx.

`pocketsphinx` (its PyPI wheel carries the en-US acoustic model, dictionary and
language model) is fed the *same* audio in the *same* 160 ms chunks as our model. After
every chunk its partial hypothesis is read; a word counts as emitted at the end of
the first chunk from which the partial hypothesis keeps it for good (the prefix up to
and including that word never changes again), so rewrites of an early guess are not
credited. The streaming transcript is the last partial hypothesis, what a live
caption would show; no end-of-utterance rescoring pass is run (that would need the
whole stream). For B1 (a finished clip), `transcribe_clip` decodes it as one
utterance with that final pass, as PocketSphinx's offline use does.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from audio_interaction.stream_format import SAMPLE_RATE
from audio_interaction.audio.io import to_pcm16, validate_samples
from audio_interaction.infer.transcript import stable_emissions



@dataclasses.dataclass(frozen=True)
class StreamingTranscript:
  """A streaming recogniser's output over one stream.

  words: (word, emission time s) in order; text: the words joined;
  compute_seconds: time spent decoding (this machine), for its real-time factor.
  """

  words: tuple[tuple[str, float], ...]
  compute_seconds: float

  @property
  def text(self) -> str:
    return " ".join(w for w, _ in self.words)


class Pocketsphinx:
  """PocketSphinx's default en-US recogniser (acoustic model, dictionary, 3-gram LM)."""

  def __init__(self):
    from pocketsphinx import Decoder  # pylint: disable=import-outside-toplevel
    self._decoder = Decoder(loglevel="FATAL")

  def _check(self, audio: np.ndarray) -> np.ndarray:
    return validate_samples(np.asarray(audio, np.float32), expected_ndim=(1,),
                            where="pocketsphinx")

  def transcribe_stream(self, audio: np.ndarray, chunk_samples: int = 2560
                        ) -> StreamingTranscript:
    """Feeds float32[S] 16 kHz audio chunk by chunk; words with their emission times."""
    audio = self._check(audio)
    partials: list[list[str]] = []
    began = time.perf_counter()
    self._decoder.start_utt()
    for start in range(0, len(audio), chunk_samples):
      self._decoder.process_raw(to_pcm16(audio[start:start + chunk_samples]), False, False)
      hypothesis = self._decoder.hyp()
      partials.append(hypothesis.hypstr.split() if hypothesis is not None else [])
    self._decoder.end_utt()
    elapsed = time.perf_counter() - began
    return StreamingTranscript(stable_emissions(partials, chunk_samples / SAMPLE_RATE), elapsed)

  def transcribe_clip(self, audio: np.ndarray) -> str:
    """The transcript of a whole clip float32[S] at 16 kHz (one utterance, final pass)."""
    audio = self._check(audio)
    self._decoder.start_utt()
    self._decoder.process_raw(to_pcm16(audio), False, True)
    self._decoder.end_utt()
    hypothesis = self._decoder.hyp()
    return hypothesis.hypstr if hypothesis is not None else ""
