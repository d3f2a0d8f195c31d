"""Connected speech: word spans carried over by DTW, and the renderer that uses them."""

import shutil
import subprocess

import librosa
import numpy as np
import pytest

from audio_interaction.corpus import alignment, effects, speech
from audio_interaction.stream_format import SAMPLE_RATE

SR = SAMPLE_RATE


def _word(kind: int, seconds: float, rng: np.random.Generator) -> np.ndarray:
  """A distinct 'word': a harmonic tone with its own pitch glide and noise colour."""
  t = np.arange(int(seconds * SR)) / SR
  f0 = 110.0 + 60.0 * kind
  phase = 2 * np.pi * np.cumsum(f0 * (1.0 + 0.3 * (kind % 3) * t / seconds)) / SR
  tone = sum(np.sin(k * phase) / k for k in range(1, 6))
  noise = np.convolve(rng.standard_normal(len(t)), np.ones(kind + 2) / (kind + 2), "same")
  return (0.3 * tone + 0.05 * noise * (kind % 2)).astype(np.float32)


def test_transfer_recovers_known_spans_across_stretches_and_a_pause():
  rng = np.random.default_rng(0)
  words = [_word(k, 0.25 + 0.05 * k, rng) for k in range(5)]
  gap = np.zeros(int(0.05 * SR), np.float32)
  reference = np.concatenate([np.concatenate([w, gap]) for w in words])
  reference_spans, pos = [], 0
  for w in words:
    reference_spans.append((pos, pos + len(w)))
    pos += len(w) + len(gap)
  # The connected clip: every word at its own tempo, no gaps, and a 0.3 s pause after
  # the second word (where a comma would put one).
  rates = (0.8, 1.25, 1.0, 0.9, 1.15)
  pieces, truth, pos = [], [], int(0.1 * SR)
  pieces.append(np.zeros(pos, np.float32))
  for k, (w, rate) in enumerate(zip(words, rates)):
    stretched = librosa.effects.time_stretch(w, rate=rate).astype(np.float32)
    truth.append((pos, pos + len(stretched)))
    pieces.append(stretched)
    pos += len(stretched)
    if k == 1:
      pause = np.zeros(int(0.3 * SR), np.float32)
      pieces.append(pause)
      pos += len(pause)
  connected = np.concatenate(pieces + [np.zeros(int(0.1 * SR), np.float32)])

  got = alignment.transfer_word_spans(reference, reference_spans, connected)

  assert len(got) == len(words)
  errors = np.abs(np.array(got) - np.array(truth)) / SR
  assert errors.max() < 0.05 and np.median(errors) < 0.01, errors
  # The pause lies between the second and third words, inside neither.
  pause_start, pause_end = truth[1][1], truth[2][0]
  assert got[1][1] <= pause_start + int(0.03 * SR) and got[2][0] >= pause_end - int(0.03 * SR)


def test_transfer_gives_ordered_spans_inside_the_clip_even_for_tiny_inputs():
  rng = np.random.default_rng(1)
  reference = _word(1, 0.3, rng)
  connected = _word(1, 0.1, rng)
  spans = [(0, 1000), (1000, 2000), (2000, 4800)]
  got = alignment.transfer_word_spans(reference, spans, connected)
  assert len(got) == 3
  flat = [t for span in got for t in span]
  assert flat == sorted(flat) and flat[0] >= 0 and flat[-1] <= len(connected)
  assert all(end > start for start, end in got)
  assert alignment.transfer_word_spans(reference, [], connected) == []
  with pytest.raises(ValueError, match="too short for 11 words"):
    alignment.transfer_word_spans(reference, [(i, i + 1) for i in range(11)], connected)


def test_spans_stay_ordered_and_inside_on_random_inputs():
  """Noise clips down to one frame per word: the spans keep their promise."""
  rng = np.random.default_rng(2)
  for _ in range(60):
    words = int(rng.integers(1, 8))
    length = int(rng.integers(words * alignment.FRAME_HOP, 3000))
    connected = (rng.standard_normal(length) * (rng.random(length) > 0.3)).astype(np.float32)
    reference = rng.standard_normal(4000).astype(np.float32)
    cuts = np.sort(rng.choice(np.arange(1, 4000), 2 * words, replace=False))
    spans = [(int(cuts[2 * i]), int(cuts[2 * i + 1])) for i in range(words)]
    got = alignment.transfer_word_spans(reference, spans, connected)
    flat = [t for span in got for t in span]
    assert len(got) == words and flat == sorted(flat), got
    assert flat[0] >= 0 and flat[-1] <= length and all(e > s for s, e in got), (length, got)


def _festival_word_times(text: str, tmp_path) -> tuple[np.ndarray, list[tuple[float, float]]]:
  """Festival's own connected rendering and its word start/end times (seconds)."""
  wav, script = tmp_path / "utt.wav", tmp_path / "utt.scm"
  script.write_text(
      "(voice_kal_diphone)\n"
      f'(set! utt (utt.synth (Utterance Text "{text}")))\n'
      f'(utt.save.wave utt "{wav}" \'riff)\n'
      "(mapcar (lambda (w) (format t \"%f %f\\n\" "
      "(item.feat w \"R:SylStructure.daughter1.daughter1.segment_start\") "
      "(item.feat w \"R:SylStructure.daughtern.daughtern.segment_end\"))) "
      "(utt.relation.items utt 'Word))\n")
  out = subprocess.run(["festival", "-b", str(script)], capture_output=True, text=True,
                       check=True).stdout
  times = [tuple(float(x) for x in line.split()) for line in out.splitlines() if line.strip()]
  return speech._read_wav_file(str(wav)), times


@pytest.mark.skipif(not speech.FestivalEngine.is_available()
                    or "kal" not in speech.FestivalEngine().voices(),
                    reason="needs festival with festvox-kallpc16k")
def test_transferred_word_ends_match_festivals_own_timings(tmp_path):
  """Festival knows where each word of its connected utterance ends: the spans carried
  over from its word-by-word rendering land within tens of ms of those times."""
  engine = speech.FestivalEngine()
  errors = []
  for text in ("Turn on the kitchen light, then tell me: what is seven plus five?",
               "Please close the garage door, it is getting cold.",
               "How many legs does a spider have?"):
    connected, times = _festival_word_times(text, tmp_path)
    tokens = speech.split_words(text)
    clips = engine.synthesize("kal", [speech.spoken_form(t) for t in tokens], 1.0, 0)
    pieces, spans, pos = [], [], 0
    for clip in clips:
      lo, hi = effects.trim_silence(clip, -40.0)
      spans.append((pos, pos + hi - lo))
      pieces += [clip[lo:hi], np.zeros(800, np.float32)]
      pos += hi - lo + 800
    got = alignment.transfer_word_spans(np.concatenate(pieces), spans, connected)
    assert len(got) == len(times) == len(tokens)
    errors += [abs(end / SR - true_end) for (_, end), (_, true_end) in zip(got, times)]
  assert np.median(errors) < 0.04 and np.percentile(errors, 90) < 0.08, errors


def test_connected_text_keeps_the_marks_that_shape_prosody():
  tokens = speech.split_words("turn on the light , then tell me: what is 7?")
  assert speech.connected_text(tokens) == "turn on the light, then tell me: what is 7?"
  assert speech.connected_text(speech.split_words("stop!")) == "stop!"


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
def test_connected_rendering_has_ordered_voiced_word_spans():
  text = "turn on the kitchen light, then tell me what is seven plus five?"
  settings = effects.Randomization(p_speed=1.0, p_pitch=0.0, p_formant=0.0, p_telephone=0.0,
                                   p_room=0.0, p_mic=0.0, p_noise=0.0)
  connected = speech.MultiVoiceSpeech(engines=["espeak"], config=speech.RenderConfig(
      effects=False, p_connected=1.0, randomize=settings))
  word_by_word = speech.MultiVoiceSpeech(engines=["espeak"], config=speech.RenderConfig(
      effects=False, randomize=settings))
  for seed in range(4):
    clip = connected.say(text, np.random.default_rng(seed), voice="espeak:en-us")
    times = [t for w in clip.words for t in (w.start, w.end)]
    assert times == sorted(times) and times[0] >= 0 and times[-1] <= len(clip.audio) / SR
    assert [w.text for w in clip.words] == speech.split_words(text)
    loudest = np.max(np.abs(clip.audio))
    for w in clip.words:
      segment = clip.audio[int(w.start * SR):int(w.end * SR)]
      assert np.max(np.abs(segment)) > 0.05 * loudest, w
    # Connected speech has no pause between most words: shorter than word by word.
    apart = word_by_word.say(text, np.random.default_rng(seed), voice="espeak:en-us")
    assert len(clip.audio) < len(apart.audio)
