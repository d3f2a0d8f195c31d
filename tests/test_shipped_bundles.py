"""The shipped model bundles: reached by name wherever a bundle is asked for, loadable,
and what the README says they are."""

import json
import math
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from audio_interaction import stream_format as sf
from audio_interaction.corpus import tasks
from audio_interaction.data import tokenizer as tokenizer_lib
from audio_interaction.eval import tune
from audio_interaction.export import portable


def test_names_resolve_to_the_package_assets_and_paths_pass_through(tmp_path):
  assert portable.resolve_bundle(None) == portable.EMBEDDED_BUNDLE
  assert portable.resolve_bundle("embedded") == portable.EMBEDDED_BUNDLE
  assert portable.resolve_bundle("real-audio") == portable.REAL_AUDIO_BUNDLE
  assert portable.REAL_AUDIO_BUNDLE != portable.EMBEDDED_BUNDLE
  # A directory that happens to share a name is reached as a path.
  assert portable.resolve_bundle("./real-audio") == pathlib.Path("real-audio")
  assert portable.resolve_bundle(pathlib.Path("real-audio")) == pathlib.Path("real-audio")
  assert portable.resolve_bundle(str(tmp_path)) == tmp_path


@pytest.mark.parametrize("name", sorted(portable.SHIPPED_BUNDLES))
def test_every_shipped_bundle_loads_by_name(name):
  model, params, tokenizer, note = portable.load_model(None, name)
  directory = portable.SHIPPED_BUNDLES[name]
  assert note == f"trained weights from the embedded bundle assets/{directory.name}"
  assert portable.bundle_config(name).to_dict() == portable.load_bundle(name)[0].to_dict()
  # The bundle's files are what setup.py's package_data ships (assets/*/...).
  for path in directory.rglob("*"):
    if path.is_file():
      relative = path.relative_to(directory)
      assert len(relative.parts) == 1 or relative.parts[0] == portable.TOKENIZER_DIR, relative
  assert tokenizer.vocab_size <= model.config.decoder.vocab_size


def test_the_embedded_bundle_watches_the_words_its_instruction_names():
  # It has no sound-event head: words and cues only ("Instructions the heads answer").
  config = portable.bundle_config("embedded")
  assert config.infer.word_watch and not config.infer.sound_watch_threshold
  assert not config.model.sound_event_classes
  metadata = json.loads((portable.EMBEDDED_BUNDLE / portable.METADATA_FILE).read_text())
  assert metadata["word_watch"]["on"] is True


def test_the_real_audio_bundle_has_its_heads_and_its_dev_set_operating_point():
  config = portable.bundle_config("real-audio")
  assert config.model.turn_end_head and config.model.sound_event_classes
  infer = config.infer
  assert infer.sound_alert_threshold > 0  # alerts from the sound-event head are on
  # Chosen on the real DEV set (its split turns, and its events each played at a random
  # lead into the stream) by `tune --write-bundle`, and the block it wrote is the point
  # it names.
  metadata = json.loads((portable.REAL_AUDIO_BUNDLE / portable.METADATA_FILE).read_text())
  manifests = [m.split(" ")[0] for m in metadata["operating_point"]["manifests"]]
  assert manifests == ["data/real_dev/streams_split.jsonl",
                       "data/real_dev_random30/events.jsonl"]
  # The alerts were tuned with the policy kept, the policy chosen before on the turns and
  # the unaddressed speech: the hybrid whose early reply reads the prosody model (when),
  # gated by the refitted decision head (whether), the 1.5 s timer as backstop.
  policy_tune = metadata["operating_point"]["policy_chosen_by"]
  assert [m.split(" ")[0] for m in policy_tune["manifests"]] == [
      "data/real_dev/streams.jsonl", "data/real_dev/streams_split.jsonl",
      "data/real_dev_streams_random30/streams.jsonl",
      "data/real_dev_split_random30/streams_split.jsonl",
      "data/real_dev_speech_random30/speech_benign.jsonl"]
  assert (infer.policy, infer.hybrid_signal) == ("hybrid", "prosody")
  assert 0 < infer.hybrid_gate < infer.threshold and infer.prosody_turn_end
  assert metadata["prosody_turn_end_fit"]["sources"] == ["amazon-queen-en", "fillets-cs"]
  assert metadata["prosody_turn_end_fit"]["hybrid_gate"] == infer.hybrid_gate
  assert policy_tune["chosen"] == tune.Candidate.from_infer(infer).name
  assert config.model.decoder.decision_bias
  assert metadata["decision_head_fit"]["sources"] == ["amazon-queen-en", "fillets-cs"]
  assert metadata["decision_head_fit"]["max_lead_seconds"] == 30.0
  # The instruction stays in view: a window no longer than the rows the decoder was
  # trained on, with the prompt pinned (and every built-in instruction fits the pin).
  decoder = config.model.decoder
  assert (decoder.window, decoder.pinned_prefix) == (config.data.max_len, 64) == (320, 64)
  assert metadata["decoder_window"]["pinned_prefix"] == decoder.pinned_prefix
  tokenizer = tokenizer_lib.Tokenizer.load(portable.REAL_AUDIO_BUNDLE / "tokenizer")
  assert max(len(sf.online_prompt(tokenizer.encode(text))) for text in
             tasks.CHAT_INSTRUCTIONS + tasks.MONITOR_INSTRUCTIONS) <= decoder.pinned_prefix
  chosen = metadata["operating_point"]["chosen"]
  assert chosen.startswith(tune.Candidate.from_infer(infer).name + ", ")
  assert f"sound alerts {infer.sound_alert_threshold:g} (" in chosen
  assert f"{infer.sound_alert_chunks} chunks" in chosen
  # Both heads were fitted on clips from anywhere in Whisper's 30 s position window.
  for fit in ("turn_end_head_fit", "sound_event_head_fit"):
    assert metadata[fit]["first_positions"] == "random"
  # The sound-event head reads every lower encoder block beside the final frames, as it
  # was fitted (`fit-sound-head --read-blocks`), after a quiet lead before each clip.
  fit = metadata["sound_event_head_fit"]
  assert tuple(config.model.sound_event_blocks) == tuple(fit["read_blocks"]) == (0, 1, 2)
  assert fit["lead_seconds"] == 2.0
  # Replies name what the sound-event head heard, whole names, at the strength chosen on
  # synthetic streams (docs/real_audio_log.md, "Whole names").
  assert (infer.sound_name_bias, infer.sound_name_whole) == (8.0, True)
  assert metadata["sound_name_bias"]["strength"] == infer.sound_name_bias
  # "Tell me when you hear ..." is answered from the head (docs/real_audio_log.md, "Instructions the
  # heads answer"): at the alerts' threshold, for the chunks chosen on DEV half A; the
  # transcript is not read (its CTC does not hear real speech).
  watch = metadata["instruction_watch"]
  assert infer.sound_watch_threshold == infer.sound_alert_threshold == watch[
      "sound_watch_threshold"]
  assert infer.sound_watch_chunks == watch["sound_watch_chunks"] == 2
  assert not infer.word_watch and watch["word_watch"] is False
  # Questions about a clip's sounds are the head's too (docs/real_audio_log.md, "Words answered once
  # said, and questions the head answers"), a sound being the watch's.
  assert infer.sound_questions and metadata["sound_questions"]["on"] is True


def _tone(path: pathlib.Path, seconds: float) -> pathlib.Path:
  import soundfile
  rate = 16000
  t = np.arange(int(seconds * rate)) / rate
  soundfile.write(path, (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate)
  return path


def test_listen_cli_runs_the_real_audio_bundle_by_name(tmp_path):
  _tone(tmp_path / "tone.wav", 2.0)
  done = subprocess.run([sys.executable, "-m", "audio_interaction", "listen",
                         str(tmp_path / "tone.wav"), "--checkpoint", "real-audio", "--speed", "inf",
                         "--out", str(tmp_path / "run")], capture_output=True, text=True,
                        timeout=600)
  assert done.returncode == 0, done.stderr[-2000:]
  events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
  start = events[0]
  config = portable.bundle_config("real-audio")
  policy = {"model": "ThresholdPolicy", "hybrid": "HybridPolicy", "gated_timer": "GatedTimerPolicy",
            "silence_timer": "SilenceTimerPolicy"}[config.infer.policy]
  assert start["event"] == "start" and start["policy"] == policy
  assert start["chunk_seconds"] == config.audio.chunk_ms / 1000
  chunks = [e for e in events if e["event"] == "chunk"]
  assert len(chunks) == math.ceil(2.0 / start["chunk_seconds"])  # the last one padded
  assert all(0.0 <= e["speak_probability"] <= 1.0 for e in chunks)


def test_transcribe_cli_reads_a_shipped_bundle_by_name(tmp_path):
  _tone(tmp_path / "tone.wav", 1.0)
  out = tmp_path / "out.json"
  done = subprocess.run([sys.executable, "-m", "audio_interaction", "transcribe",
                         str(tmp_path / "tone.wav"), "--checkpoint", "real-audio",
                         "--json", str(out)], capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-2000:]
  rows = [json.loads(line) for line in out.read_text().splitlines()]
  assert [pathlib.Path(row["file"]).name for row in rows] == ["tone.wav"]
  assert rows[0]["seconds"] == 1.0


def test_record_in_metadata_keeps_the_other_keys_and_refuses_what_is_not_a_bundle(tmp_path):
  bundle = tmp_path / "bundle"
  shutil.copytree(portable.EMBEDDED_BUNDLE, bundle)
  before = json.loads((bundle / portable.METADATA_FILE).read_text())
  portable.record_in_metadata(bundle, "operating_point", {"chosen": "timer 0.7s"})
  after = json.loads((bundle / portable.METADATA_FILE).read_text())
  assert after == dict(before, operating_point={"chosen": "timer 0.7s"})
  (bundle / portable.METADATA_FILE).unlink()  # a bundle without one gets one
  portable.record_in_metadata(bundle, "k", 1)
  assert json.loads((bundle / portable.METADATA_FILE).read_text()) == {"k": 1}
  (bundle / portable.METADATA_FILE).write_text("[1, 2]")
  with pytest.raises(portable.BundleError, match="metadata.json: not a JSON object"):
    portable.record_in_metadata(bundle, "k", 2)
  assert (bundle / portable.METADATA_FILE).read_text() == "[1, 2]"
  with pytest.raises(FileNotFoundError, match="config.json is missing"):
    portable.record_in_metadata(tmp_path, "k", 1)


def test_eval_loads_a_shipped_bundle_by_name():
  from audio_interaction.apps import eval_run
  *_, note = eval_run.load_checkpoint("real-audio")
  assert note == "trained weights from the embedded bundle assets/real_audio"


def test_pin_instruction_copies_a_bundle_with_its_prompt_pinned(tmp_path, capsys):
  from audio_interaction.apps import cli
  assert cli.main(["pin-instruction", "--bundle", "embedded", "--out", str(tmp_path / "pinned"),
                   "--pinned-prefix", "48", "--window", "320"]) == 0
  assert "model.decoder.pinned_prefix=48, model.decoder.window=320" in capsys.readouterr().out
  before = portable.bundle_config("embedded")
  after = portable.bundle_config(tmp_path / "pinned")
  assert (after.model.decoder.pinned_prefix, after.model.decoder.window) == (48, 320)
  after.model.decoder.pinned_prefix, after.model.decoder.window = 0, before.model.decoder.window
  assert after.to_dict() == before.to_dict()  # nothing else changed
  metadata = json.loads((tmp_path / "pinned" / portable.METADATA_FILE).read_text())
  assert metadata["decoder_window"] == {"pinned_prefix": 48, "window": 320, "was": {
      "pinned_prefix": 0, "window": before.model.decoder.window}}
  assert (tmp_path / "pinned" / "params.msgpack").read_bytes() == (
      portable.EMBEDDED_BUNDLE / "params.msgpack").read_bytes()
  portable.load_bundle(tmp_path / "pinned")  # the weights fit the new config
  # A prefix that leaves no chunk of the window is refused, and nothing is left behind;
  # an existing folder is not overwritten.
  assert cli.main(["pin-instruction", "--bundle", "embedded", "--out", str(tmp_path / "bad"),
                   "--pinned-prefix", "510"]) == 2
  assert "model.decoder.pinned_prefix=510: must leave" in capsys.readouterr().err
  assert sorted(p.name for p in tmp_path.iterdir()) == ["pinned"]
  assert cli.main(["pin-instruction", "--bundle", "embedded", "--out", str(tmp_path / "pinned"),
                   "--pinned-prefix", "8"]) == 2
  assert "exists and is not an empty folder" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["embedded", "real-audio"])
def test_every_readme_pointer_in_a_bundles_metadata_names_a_heading_of_the_docs(name):
  # A pointer names a heading of the README or of the real-audio log the README links to.
  import re
  repo = pathlib.Path(__file__).resolve().parent.parent
  text = "\n".join((repo / page).read_text() for page in ("README.md", "docs/real_audio_log.md"))
  headings = re.findall(r"^#+ (.+)$", text, re.MULTILINE)
  directory = portable.resolve_bundle(name)
  metadata = json.loads((directory / portable.METADATA_FILE).read_text())
  pointers = [entry["readme"] for entry in metadata.values()
              if isinstance(entry, dict) and "readme" in entry]
  assert pointers
  for pointer in pointers:
    assert any(pointer in heading for heading in headings), pointer
