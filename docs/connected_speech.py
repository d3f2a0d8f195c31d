"""Same sentences, same voices, said word by word vs as one utterance: two manifests.

The corpus used to render every utterance word by word (each word synthesized alone,
laid down with a gap); real speech is connected. This writes 20 sentences x every
installed flite, piper and festival voice both ways, with no channel effects, so the
only difference is connectedness, then scores a model's encoder CTC on each::

  python docs/connected_speech.py --out /tmp/connected_study
  python -m audio_interaction eval --suites B2 --manifest /tmp/connected_study/word_by_word/manifest.jsonl --out /tmp/connected_study/eval_word_by_word
  python -m audio_interaction eval --suites B2 --manifest /tmp/connected_study/connected/manifest.jsonl --out /tmp/connected_study/eval_connected

(add `--checkpoint BUNDLE` to both for a model other than the embedded one; the row
"WER of the encoder's CTC transcript" is the figure quoted in the README).
"""

import argparse
import json
import pathlib

import numpy as np
import soundfile

from audio_interaction.corpus import speech
from audio_interaction.stream_format import SAMPLE_RATE

SENTENCES = (
    "turn on the kitchen light", "what is seven plus five", "what color is a banana",
    "please switch off the bedroom fan", "what is the capital of france",
    "how many legs does a spider have", "turn off the living room radio",
    "what is twelve minus four", "what sound does a cow make", "open the garage door please",
    "what is three times six", "close the bathroom window", "what is the capital of japan",
    "turn up the hallway heater", "what is nine plus eight", "what color is the sky",
    "stop the music", "dim the office lamp", "what is twenty minus seven",
    "what animal says moo")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("--out", required=True, help="folder for the two manifests")
  out = pathlib.Path(parser.parse_args().out)
  sources = {
      kind: speech.MultiVoiceSpeech(engines=["flite", "piper", "festival"],
                                    config=speech.RenderConfig(effects=False, p_connected=p))
      for kind, p in (("word_by_word", 0.0), ("connected", 1.0))}
  for kind, source in sources.items():
    folder = out / kind
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    rng = np.random.default_rng(0)
    for i, text in enumerate(SENTENCES):
      for voice in source.voices():
        clip = source.say(text, rng, voice=voice)
        name = f"{i:02d}_{voice.replace(':', '_')}.wav"
        soundfile.write(folder / name, clip.audio, SAMPLE_RATE)
        rows.append({"id": f"{kind}/{name}", "audio": name, "text": text,
                     "duration": round(len(clip.audio) / SAMPLE_RATE, 3),
                     "events": [], "turns": []})
    with open(folder / "manifest.jsonl", "w", encoding="utf-8") as f:
      f.writelines(json.dumps(row) + "\n" for row in rows)
    print(f"{kind}: {len(rows)} clips in {folder}")


if __name__ == "__main__":
  main()
