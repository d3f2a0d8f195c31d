"""Real recorded utterances with their text, from TRAIN packages, as speech for a stream.

Every TTS engine, however randomised, is a machine voice; the models trained on them
cut into 82-92 % of real mid-turn pauses and transcribe no real speech (issue 13). The
TRAIN side's one large body of transcribed human speech is the Czech dub of Fish
Fillets (`fillets-ng-data-cs`: 1,702 lines, 106 min, 26 speaker labels; the texts are in
`fillets-ng-data`'s scripts, which the Dutch DEV dub shares as text only). Two
sub-tasks use it, each with `TaskConfig.recorded_speech_probability`:

* offline transcription (`offline_asr`): the clip is one recorded line and the
  transcript is its text folded to ASCII (`ascii_fold`: "myslíš" -> "myslis"), which
  the tokenizer spells. Czech spelling is close to its sound, so the encoder's CTC head
  learns real voices, rooms and microphones from it;
* a question with a pause inside (`chat_mid_pause`): one single-sentence line is cut
  at its inner quiet dip (`real_audio.split_at_inner_gap`, as the DEV split turns are,
  with a shallower dip: `SPLIT_QUIET_DB`) and the pause goes there. What comes before the pause is unfinished in meaning and in
  the speaker's own prosody, so the decision head learns to wait from a human voice.
  The model does not understand Czech; its reply says so (`NOT_UNDERSTOOD`), at the
  end of the turn.

The TRAIN side's English human voices are game characters: hedgewars-data's nine
English voice packs (531 clips, `real_audio.hedgewars_english_voices`), whose file
names say what a line is for, not what is said, and the 6,745 spoken lines of Flight of
the Amazon Queen (~4.5 h of professional voice acting, `real_audio.amazon_queen_voices`),
stored without text. Whisper tiny.en read each one over its whole window
(`audio-interaction label-train-speech --source NAME`, `train/pseudo_label.py`; the rows
ship as `hedgewars_en.jsonl` and `amazon_queen_en.jsonl`), and the confident transcripts
that are words (`usable_label`) become offline transcription clips, sources
"hedgewars-en" and "amazon-queen-en" (`recorded_lines(root, sources)`;
`data.randomize.recorded_speech_sources`). A single-sentence dialogue line of the game
(`DIALOGUE_SOURCES`) can also be a user's turn with a pause cut into it, as the Czech
lines are; it is no question of the assistant's worlds, so the reply at its end is
`OUT_OF_SCOPE`. The hedgewars exclamations never are.

Word times inside a recorded line are not known: words are spread over the voiced
part in proportion to their length. Only the order of the words matters to the CTC
loss and the offline reply, and the pause lies between words, so nothing trained
depends on those estimates except `transcript_chunks`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import pathlib
import re
import unicodedata
from typing import Callable, Final

import numpy as np

from audio_interaction import config_lib
from audio_interaction.audio import io as audio_io
from audio_interaction.corpus import effects, real_audio
from audio_interaction.corpus.clips import Word
from audio_interaction.corpus.timeline import Span, Speech
from audio_interaction.data.tokenizer import normalize_text
from audio_interaction.stream_format import SAMPLE_RATE

log = logging.getLogger(__name__)

RECORDED_PACKAGE: Final[str] = "fillets-ng-data-cs"
# What `recorded_lines` can read: the Czech dub, and English voices with Whisper's
# transcripts (`ENGLISH_LABELS`).
SOURCES: Final[tuple[str, ...]] = config_lib.RECORDED_SPEECH_SOURCES
# The English sources' clips, and their rows written by `audio-interaction
# label-train-speech --source NAME` (train/pseudo_label.py), shipped.
ENGLISH_VOICES: Final[dict[str, Callable[[str | os.PathLike[str]],
                                         list[tuple[real_audio.AudioRef, str]]]]] = {
    "hedgewars-en": real_audio.hedgewars_english_voices,
    "amazon-queen-en": real_audio.amazon_queen_voices,
}
ENGLISH_LABELS: Final[dict[str, pathlib.Path]] = {
    "hedgewars-en": pathlib.Path(__file__).with_name("hedgewars_en.jsonl"),
    "amazon-queen-en": pathlib.Path(__file__).with_name("amazon_queen_en.jsonl"),
}
assert set(ENGLISH_VOICES) == set(ENGLISH_LABELS) == set(config_lib.ENGLISH_SPEECH_SOURCES)
assert RECORDED_PACKAGE in real_audio.TRAIN_SPEECH_PACKAGES
RECORDED_LANGUAGE: Final[str] = "cs"
# What an English-only assistant says at the end of a turn it cannot understand.
NOT_UNDERSTOOD: Final[str] = "sorry, i only understand english"
# ... and at the end of an English turn from outside its worlds (a game's dialogue line).
OUT_OF_SCOPE: Final[str] = "sorry, i cannot help with that"
# English sources whose lines are dialogue, so one sentence of them can be a user's
# paused turn; hedgewars' are exclamations ("Take that!").
DIALOGUE_SOURCES: Final[tuple[str, ...]] = ("amazon-queen-en",)
MAX_SECONDS: Final[float] = 7.0  # longer lines would crowd a 10 s training stream
MAX_WORDS: Final[int] = 14  # ~60 characters: the transcript fits max_transcript tokens
# A dip where a training pause may go: 25 dB under the line's peak, not the DEV split
# turns' 35. Only 61 of the 1,622 lines (6 of 26 voices) have a 35 dB dip, since the
# dub's actors run their words together; 243 lines (13 voices) have a 25 dB one.
SPLIT_QUIET_DB: Final[float] = -25.0
# The least mean token log-probability of a Whisper transcript `usable_label` keeps.
MIN_LABEL_SCORE: Final[float] = -0.6


class MissingRecordedSpeech(FileNotFoundError):
  """The extracted-packages folder lacks the recorded dub or its scripts."""


def ascii_fold(text: str) -> str:
  """`normalize_text`, then accents dropped ("Myslíš, že?" -> "myslis ze"); letters
  without an ASCII base (none in Czech) are dropped too."""
  decomposed = unicodedata.normalize("NFKD", normalize_text(text))
  ascii_only = decomposed.encode("ascii", "ignore").decode("ascii")
  return " ".join(ascii_only.split())


@dataclasses.dataclass(frozen=True)
class RecordedLine:
  """One recorded line: where its audio is, its folded text, who says it, where a
  pause may go (`pause_cut`: a sample of the trimmed audio at its inner quiet dip;
  None for a line of several sentences, of one word, over `MAX_SECONDS`, without such
  a dip, or from a source that is not dialogue), and what the assistant answers when
  the line is a user's turn (`reply`)."""

  ref: real_audio.AudioRef
  text: str
  voice: str
  pause_cut: int | None
  reply: str = NOT_UNDERSTOOD

  def audio(self) -> np.ndarray:
    """float32 [n] at 16 kHz, trimmed to its voiced frames."""
    return _trimmed_audio(self.ref)


def _pause_cut(audio: np.ndarray, original_text: str, words: int) -> int | None:
  if (real_audio.SENTENCE_END.search(original_text.strip()) or words < 2
      or len(audio) > MAX_SECONDS * SAMPLE_RATE):
    return None
  parts = real_audio.split_at_inner_gap(audio, SPLIT_QUIET_DB)
  return None if parts is None else len(parts[0])


@functools.lru_cache(maxsize=4)
def recorded_lines(root: str | os.PathLike[str],
                   sources: tuple[str, ...] = config_lib.DEFAULT_RECORDED_SPEECH_SOURCES
                   ) -> tuple[RecordedLine, ...]:
  """The recorded lines of `sources` (of `SOURCES`) under `root`, each source in its order.

  "fillets-cs": the lines of `RECORDED_PACKAGE`, in script order. Lines longer than
  `MAX_WORDS` words or with no letters left after folding are left out, and so are
  recordings that cannot be decoded (one warning lists them). Reads every line's audio
  once (~5 s for the real dub) to find its `pause_cut`. The English sources:
  `english_lines`.
  Raises MissingRecordedSpeech (naming `fetch-train-audio`) when a source has none,
  ValueError for a source not in `SOURCES`.
  """
  unknown = [s for s in sources if s not in SOURCES]
  if unknown or not sources:
    raise ValueError(f"recorded speech sources {sources!r}: choose from {SOURCES}")
  root = pathlib.Path(os.path.expanduser(str(root)))
  real_audio.check_root(root)
  lines: list[RecordedLine] = []
  for source in sources:
    lines += _czech_lines(root) if source == "fillets-cs" else english_lines(root, source)
  return tuple(lines)


def _czech_lines(root: pathlib.Path) -> list[RecordedLine]:
  lines, skipped = [], []
  for item in real_audio.fillets_speech(root, RECORDED_LANGUAGE):
    text = ascii_fold(item.text)
    words = len(text.split())
    if item.exact and text and words <= MAX_WORDS:
      try:
        audio = _trimmed_audio(item.ref)
      except real_audio.UNDECODABLE as error:  # one broken file must not stop a build
        skipped.append(real_audio.skip_note(item.ref, error))
        continue
      lines.append(RecordedLine(item.ref, text, item.speaker,
                                _pause_cut(audio, item.text, words)))
  if skipped:
    log.warning("%s: skipped %d undecodable recordings, e.g. %s", RECORDED_PACKAGE,
                len(skipped), "; ".join(skipped[:3]))
  if not lines:
    raise MissingRecordedSpeech(
        f"{root}: no recorded lines of {RECORDED_PACKAGE} (its sound/*/cs/*.ogg with the "
        f"dialogs_cs.lua scripts of fillets-ng-data); run `audio-interaction "
        f"fetch-train-audio` and point data.randomize.train_audio_root at its folder")
  return lines


# A letter three times running is a shout ("noooo", "aaahh"), not a word to spell.
_SHOUT = re.compile(r"([a-z])\1\1")
# Whisper's known failure: one word over and over ("no, no, no, no, no, ...").
_LOOP = re.compile(r"\b(\w+)(?: \1\b){3,}")
# Whisper writes sounds it cannot spell as "[Music]", "(laughs)" or "*grunts*".
_NOT_WORDS = re.compile(r"[\[\]()*♪]")


def usable_label(text: str, score: float) -> str | None:
  """The folded text of a pseudo-label worth training on, or None: Whisper must be sure
  of it (mean token log-prob >= `MIN_LABEL_SCORE`) and it must be words, not a
  described sound, a shout or a word looping four times, of at most `MAX_WORDS`."""
  if score < MIN_LABEL_SCORE or _NOT_WORDS.search(text):
    return None
  folded = ascii_fold(text)
  words = folded.split()
  if (not words or len(words) > MAX_WORDS or any(_SHOUT.search(w) for w in words)
      or _LOOP.search(folded)):
    return None
  return folded


def english_lines(root: str | os.PathLike[str], source: str = "hedgewars-en",
                  labels: str | os.PathLike[str] | None = None) -> list[RecordedLine]:
  """The clips of English source `source` (of `ENGLISH_VOICES`) under `root` whose
  Whisper transcript in `labels` (rows of `pseudo_label.label_voices`; default
  `ENGLISH_LABELS[source]`) is `usable_label`.

  Lines of `DIALOGUE_SOURCES` get a `pause_cut` as the Czech lines do (a single
  sentence by Whisper's punctuation, with a quiet dip; reads each line's audio once)
  and answer a paused turn with `OUT_OF_SCOPE`; the exclamations of the others never
  make a paused turn. Raises MissingRecordedSpeech when none of the labelled clips is
  under `root` (or the source's labels were never written), ValueError for a source
  that is not English.
  """
  if source not in ENGLISH_VOICES:
    raise ValueError(f"{source!r} is not an English source: {tuple(ENGLISH_VOICES)}")
  labels = pathlib.Path(labels or ENGLISH_LABELS[source])
  if not labels.is_file():
    raise MissingRecordedSpeech(
        f"{labels}: no transcripts of {source}; write them with `audio-interaction "
        f"label-train-speech --source {source}`")
  by_path = {ref.relpath: (ref, speaker) for ref, speaker in ENGLISH_VOICES[source](root)}
  dialogue = source in DIALOGUE_SOURCES
  lines, skipped = [], []
  for row in (json.loads(line) for line in labels.read_text("utf-8").splitlines()
              if line.strip()):
    text = usable_label(row["text"], row["score"])
    if text is None or row["audio"] not in by_path:
      continue
    ref, speaker = by_path[row["audio"]]
    cut = None
    if dialogue:
      try:
        cut = _pause_cut(_trimmed_audio(ref), row["text"], len(text.split()))
      except real_audio.UNDECODABLE as error:
        skipped.append(real_audio.skip_note(ref, error))
        continue
    lines.append(RecordedLine(ref, text, speaker, cut, OUT_OF_SCOPE))
  if skipped:
    log.warning("%s: skipped %d undecodable recordings, e.g. %s", source, len(skipped),
                "; ".join(skipped[:3]))
  if not lines:
    raise MissingRecordedSpeech(
        f"{root}: none of the {labels} clips ({source}); run `audio-interaction "
        f"fetch-train-audio` and point data.randomize.train_audio_root at its folder")
  return lines


@functools.lru_cache(maxsize=256)
def _trimmed_audio(ref: real_audio.AudioRef) -> np.ndarray:
  audio = ref.load()
  if not np.any(audio):
    # mpg123 conceals a corrupt MP3 (a broken archive member) as digital silence; a
    # line of silence with a transcript would teach the CTC head to write on silence.
    raise audio_io.AudioError(f"{ref.relpath}: decodes to digital silence")
  lo, hi = effects.trim_silence(audio, real_audio.TURN_TRIM_DB)
  return np.ascontiguousarray(audio[lo:hi] if hi > lo else audio, dtype=np.float32)


def _spread_words(tokens: list[str], start: float, end: float) -> list[Word]:
  """Consecutive word spans over [start, end) s, each as long as its letters (+1)."""
  weights = np.array([len(t) + 1 for t in tokens], dtype=np.float64)
  edges = start + (end - start) * np.concatenate([[0.0], np.cumsum(weights) / weights.sum()])
  return [Word(t, float(a), float(b)) for t, a, b in zip(tokens, edges[:-1], edges[1:])]


def recorded_speech(line: RecordedLine, *, speaker: str = "user",
                    pause_s: float | None = None,
                    randomization: effects.Randomization | None = None,
                    rng: np.random.Generator | None = None) -> Speech | None:
  """`line` as `Speech` for `Composer.place`, or None if it cannot be used as asked.

  Args:
    line: the recorded line.
    speaker: the stream's speaker name.
    pause_s: None for the whole line; otherwise the line is cut at its `pause_cut`
      and `pause_s` seconds of silence put there, as one "pause" hold span. Returns
      None for a line without a `pause_cut`, and for lines over `MAX_SECONDS`.
    randomization: the per-utterance effects the TTS voices get (`effects.randomize`),
      applied to the whole line, pause included (a room's tail and the noise fill it);
      word and pause times scale with its speed change. None: the line as recorded.
    rng: the effects' generator (required with `randomization`).
  """
  audio = line.audio()
  if len(audio) > MAX_SECONDS * SAMPLE_RATE:
    return None
  tokens = line.text.split()
  if pause_s is None:
    words = _spread_words(tokens, 0.0, len(audio) / SAMPLE_RATE)
    holds: tuple[Span, ...] = ()
  else:
    if line.pause_cut is None:
      return None
    first, second = audio[:line.pause_cut], audio[line.pause_cut:]
    # Words before the cut in proportion to the time before it, at least one each side.
    before = int(np.clip(round(len(tokens) * len(first) / len(audio)), 1, len(tokens) - 1))
    first_end = len(first) / SAMPLE_RATE
    second_start = first_end + pause_s
    words = (_spread_words(tokens[:before], 0.0, first_end)
             + _spread_words(tokens[before:], second_start,
                             second_start + len(second) / SAMPLE_RATE))
    audio = np.concatenate([first, np.zeros(int(round(pause_s * SAMPLE_RATE)), np.float32),
                            second])
    holds = (Span(first_end, second_start, "pause"),)
  if randomization is not None:
    if rng is None:
      raise ValueError("recorded_speech: randomization needs an rng")
    audio, rate, _ = effects.randomize(audio, rng, randomization)
    words = [Word(w.text, w.start / rate, w.end / rate) for w in words]
    holds = tuple(Span(h.start / rate, h.end / rate, h.kind) for h in holds)
  # Rounding to samples must not let a word pass the audio's end.
  seconds = len(audio) / SAMPLE_RATE
  words[-1] = Word(words[-1].text, words[-1].start, min(words[-1].end, seconds))
  return Speech(audio=audio, words=tuple(words), fillers=(False,) * len(words), holds=holds,
                speaker=speaker, voice=line.voice)
