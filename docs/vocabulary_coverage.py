"""How many words of a manifest's texts the generated corpus ever says.

The corpus's sentences come from closed worlds (corpus/worlds.py), so its vocabulary
is small; a word it never says is one the encoder's CTC head was never trained to
write. For the real-audio DEV set::

  python docs/vocabulary_coverage.py data/real_dev/speech_en.jsonl
"""

import argparse
import json

from audio_interaction.corpus import tasks
from audio_interaction.data.tokenizer import normalize_text


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
  parser.add_argument("manifest", help="JSONL manifest with `text` fields")
  parser.add_argument("--examples-per-task", type=int, default=40,
                      help="texts drawn per sub-task (as the corpus tokenizer is trained)")
  args = parser.parse_args()
  vocabulary = {w for t in tasks.training_texts(args.examples_per_task)
                for w in normalize_text(t).split()}
  print(f"corpus vocabulary: {len(vocabulary)} word types")
  with open(args.manifest, encoding="utf-8") as f:
    rows = [json.loads(line) for line in f if line.strip()]
  for name, keep in (("exact-text rows", lambda r: not r.get("text_approximate")),
                     ("all rows", lambda r: True)):
    words = [w for r in rows if keep(r) and r.get("text") for w in normalize_text(r["text"]).split()]
    if not words:
      continue
    known = sum(w in vocabulary for w in words)
    types = set(words)
    print(f"{name}: {len(words)} words ({len(types)} types); {100 * known / len(words):.0f} % "
          f"of the words and {100 * len(types & vocabulary) / len(types):.0f} % of the types "
          f"occur in the corpus")


if __name__ == "__main__":
  main()
