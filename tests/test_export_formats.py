"""Export formats: safetensors bundles and the engine's steps as serialized StableHLO.

A safetensors bundle loads back bit-identical (params and engine outputs), and a
damaged or mismatched file names the tensor at fault. The StableHLO export, run by
`export/stablehlo_runner.py` in a process that cannot import the model code (nor
flax, the engine or the audio front end), decides, scores and replies as the engine
does on generated streams.
"""

import json
import os
import subprocess
import sys

import jax
import model_testing
import numpy as np
import pytest
import safetensors.numpy

from audio_interaction import stream_format as sf
from audio_interaction.apps import cli
from audio_interaction.corpus import tasks, worlds
from audio_interaction.corpus.timeline import render
from audio_interaction.data.tokenizer import ByteTokenizer
from audio_interaction.export import portable, stablehlo, stablehlo_runner, tensors
from audio_interaction.infer.engine import Engine
from audio_interaction.infer.policies import ThresholdPolicy
from audio_interaction.infer.run_stream import StreamStepper
from audio_interaction.model.model import AudioInteractionModel

CHUNKS = 10


@pytest.fixture(scope="module")
def small(request):
  """(model, params, tokenizer, config); `request.param` "copy" adds the copy head,
  "names" a sound-event head whose heard classes' names bias every reply token (whole
  names, gate 0: the bias's tables and state go through the export too)."""
  tokenizer = ByteTokenizer()
  variant = getattr(request, "param", "plain")
  names = {"model.sound_event_classes": len(worlds.SOUND_EVENT_LABELS),
           "infer.sound_name_bias": 200.0, "infer.sound_name_gate": 0.0,
           "infer.sound_name_whole": True} if variant == "names" else {}
  config = model_testing.small_config(**{
      "model.decoder.vocab_size": tokenizer.vocab_size,
      "model.decoder.copy_instruction": variant == "copy", **names})
  model = AudioInteractionModel(config)
  params = model.init(jax.random.key(5))
  if config.model.decoder.copy_instruction:  # copies win: the replies to reproduce are copies
    params = model_testing.with_copy_gate(params, 3.0)
  return model, params, tokenizer, config


@pytest.fixture(scope="module")
def streams(speech, sounds):
  """Two generated streams (corpus sub-tasks rendered at the model's 160 ms chunks)."""
  timelines = [tasks.build(name, seed, speech, sounds, tasks.TaskConfig(chunk_ms=160))
               for name, seed in (("chat_single", 3), ("alert_alarm", 4))]
  return ([render(t, chunk_ms=160, num_chunks=CHUNKS) for t in timelines],
          [t.instruction for t in timelines])


def _engine_run(engine, params, audio, instructions, threshold):
  """The engine's stepper over the streams as one batch: per row (P(SPEAK), spoke, reply,
  raw CTC labels) per chunk."""
  stepper = StreamStepper(engine, params, instructions,
                          [ThresholdPolicy(threshold) for _ in instructions])
  size = stepper.chunk_samples
  rows = [[] for _ in instructions]
  for begin in range(0, len(audio[0]), size):
    records = stepper.step_batch(np.stack([a[begin:begin + size] for a in audio]))
    labels = np.asarray(stepper.state.heard)
    for row, record in enumerate(records):
      rows[row].append((record.speak_probability, record.spoke, record.reply_tokens,
                        labels[row].tolist()))
  return rows


# ------------------------------------------------------------------ safetensors
def test_safetensors_bundle_loads_back_bit_identical(small, streams, tmp_path):
  model, params, tokenizer, config = small
  bundle = portable.save_bundle(tmp_path / "b", params, tokenizer, config,
                                weights_format="safetensors")
  assert not (bundle / portable.PARAMS_FILE).exists()
  stored = safetensors.numpy.load_file(bundle / portable.SAFETENSORS_FILE)
  # Dotted names of the Flax tree, without the "params" collection.
  assert stored["decoder.block0.attention.query"].shape == (
      config.model.decoder.d_model, config.model.decoder.num_heads, config.model.decoder.head_dim)
  assert "ctc_head.kernel" in stored and len(stored) == len(jax.tree_util.tree_leaves(params))

  loaded_config, loaded, loaded_tokenizer = portable.load_bundle(bundle)
  assert loaded_config.to_dict() == config.to_dict()
  assert loaded_tokenizer.vocab_size == tokenizer.vocab_size
  assert jax.tree_util.tree_structure(loaded) == jax.tree_util.tree_structure(params)
  for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(loaded)):
    assert np.asarray(a).dtype == b.dtype
    np.testing.assert_array_equal(np.asarray(a), b)

  # `load_model` takes the safetensors bundle like any other.
  _, from_model, _, note = portable.load_model(None, bundle)
  assert "trained weights from bundle b" == note
  audio, instructions = streams
  ids = [tokenizer.encode(i) for i in instructions]
  engine = Engine(model)
  source = _engine_run(engine, params, audio, ids, 0.5)
  again = _engine_run(engine, from_model, audio, ids, 0.5)
  assert source == again  # probabilities, decisions, replies and labels, exactly


@pytest.mark.parametrize("weights_format", ["msgpack", "safetensors"])
def test_an_interrupted_export_leaves_the_previous_bundle_loadable(small, tmp_path,
                                                                 monkeypatch, weights_format):
  _, params, tokenizer, config = small
  bundle = portable.save_bundle(tmp_path / "b", params, tokenizer, config,
                                weights_format=weights_format)
  before = {p.name: p.read_bytes() for p in bundle.iterdir() if p.is_file()}
  newer = jax.tree_util.tree_map(lambda x: np.asarray(x) + 1, params)
  real_save = safetensors.numpy.save_file

  def killed_halfway(tensors_by_name, filename, metadata=None):
    real_save(dict(list(tensors_by_name.items())[:1]), filename, metadata)  # a part written
    raise KeyboardInterrupt

  def killed_serializing(_):
    raise KeyboardInterrupt
  monkeypatch.setattr(safetensors.numpy, "save_file", killed_halfway)
  monkeypatch.setattr(portable.flax.serialization, "msgpack_serialize", killed_serializing)
  with pytest.raises(KeyboardInterrupt):
    portable.save_bundle(bundle, newer, tokenizer, config, weights_format=weights_format)
  monkeypatch.undo()
  assert {p.name: p.read_bytes() for p in bundle.iterdir() if p.is_file()} == before
  _, loaded, _ = portable.load_bundle(bundle)
  for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(loaded)):
    np.testing.assert_array_equal(np.asarray(a), b)


def test_safetensors_faults_name_the_tensor(small, tmp_path):
  _, params, tokenizer, config = small
  bundle = portable.save_bundle(tmp_path / "b", params, tokenizer, config,
                                weights_format="safetensors")
  path = bundle / portable.SAFETENSORS_FILE
  good = path.read_bytes()
  header_size = int.from_bytes(good[:8], "little")
  header = json.loads(good[8:8 + header_size])
  names = sorted((k for k in header if k != "__metadata__"),
                 key=lambda k: header[k]["data_offsets"][0])

  # A flipped byte inside a tensor: the checksum written with it names that tensor.
  victim = names[len(names) // 2]
  at = 8 + header_size + header[victim]["data_offsets"][0] + 1
  path.write_bytes(good[:at] + bytes([good[at] ^ 0xFF]) + good[at + 1:])
  with pytest.raises(portable.BundleError, match=f"tensor '{victim}' is damaged"):
    portable.load_bundle(bundle)

  # Truncated: the first tensor whose bytes run past the end.
  cut = 8 + header_size + header[victim]["data_offsets"][0] + 3
  path.write_bytes(good[:cut])
  with pytest.raises(portable.BundleError, match=f"tensor '{victim}' needs bytes .*truncated"):
    portable.load_bundle(bundle)
  path.write_bytes(good[:5])
  with pytest.raises(portable.BundleError, match="not a safetensors file"):
    portable.load_bundle(bundle)

  # Another dtype or shape than the config implies (a file written by another tool).
  path.write_bytes(good)
  stored = safetensors.numpy.load_file(bundle / portable.SAFETENSORS_FILE)
  stored["ctc_head.bias"] = stored["ctc_head.bias"].astype(np.float16)
  safetensors.numpy.save_file(stored, path)
  with pytest.raises(portable.BundleError,
                     match=r"tensor 'ctc_head.bias' is float16\[\d+\], expected float32"):
    portable.load_bundle(bundle)
  path.write_bytes(good)
  text = (bundle / "config.json").read_text()
  (bundle / "config.json").write_text(text.replace('"num_layers": 2', '"num_layers": 1', 1))
  with pytest.raises(portable.BundleError, match=r"tensor '\w+\.\w+1\.[\w.]+' is not a parameter"):
    portable.load_bundle(bundle)

  # One bundle, one params file.
  (bundle / portable.PARAMS_FILE).write_bytes(b"")
  with pytest.raises(portable.BundleError, match="holds both"):
    portable.load_bundle(bundle)


def test_dotted_names_round_trip_and_refuse_dots():
  tree = {"params": {"a": {"b_0": {"kernel": np.ones((2, 3), np.float32)}}, "c": np.zeros(4)}}
  flat = tensors.dotted_tensors(tree)
  assert list(flat) == ["a.b_0.kernel", "c"]
  back = tensors.nested_params(flat)
  assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(tree)
  with pytest.raises(ValueError, match="'x.y' cannot be a dotted-name component"):
    tensors.dotted_tensors({"params": {"x.y": np.ones(1)}})


# ------------------------------------------------------------------- stablehlo
# Run in a fresh interpreter where the model code, the engine, the audio front end,
# the config module and flax cannot be imported.
_RUNNER = r"""
import importlib.abc, json, sys
BLOCKED = ("audio_interaction.model", "audio_interaction.infer", "audio_interaction.audio",
           "audio_interaction.config_lib", "audio_interaction.export.stablehlo",
           "audio_interaction.export.portable", "flax")

class Block(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if any(name == b or name.startswith(b + ".") for b in BLOCKED):
      raise ImportError(f"{name} is blocked in this process")
    return None

sys.meta_path.insert(0, Block())
import numpy as np
from audio_interaction.export import stablehlo_runner
directory, audio_file, threshold = sys.argv[1], sys.argv[2], float(sys.argv[3])
exported = stablehlo_runner.ExportedModel.load(directory)
data = np.load(audio_file)
instructions = [exported.tokenizer.encode(t) for t in json.loads(str(data["instructions"]))]
rows = stablehlo_runner.run_streams(exported, list(data["audio"]), instructions,
                                    threshold=threshold)
assert not [m for m in sys.modules if any(m == b or m.startswith(b + ".") for b in BLOCKED)]
print(json.dumps({"platforms": exported.manifest["platforms"],
                  "rows": [[[c.speak_probability, c.spoke, c.reply_tokens, c.heard_labels]
                            for c in row] for row in rows]}))
"""


@pytest.mark.parametrize("small", ["plain", "copy", "names"], indirect=True)
def test_stablehlo_export_runs_without_the_model_code_as_the_engine(small, streams, tmp_path):
  model, params, tokenizer, config = small
  audio, instructions = streams
  ids = [tokenizer.encode(i) for i in instructions]
  engine = Engine.from_infer(model, config.infer, tokenizer)
  probe = _engine_run(engine, params, audio, ids, 2.0)
  # A threshold inside the range of P(SPEAK), so the run both speaks and stays silent.
  threshold = float(np.median([c[0] for row in probe for c in row]))
  expected = _engine_run(engine, params, audio, ids, threshold)
  spoke = [c[1] for row in expected for c in row]
  assert any(spoke) and not all(spoke)
  if config.infer.sound_name_bias:  # the names change what is said, so the export must carry them
    unbiased = _engine_run(Engine(model), params, audio, ids, threshold)
    assert [c[2] for row in unbiased for c in row] != [c[2] for row in expected for c in row]

  out = cli.main(["export", "--bundle", str(portable.save_bundle(tmp_path / "b", params,
                                                                  tokenizer, config)),
                  "--format", "stablehlo", "--batch", "2", "--platforms", "cpu,cuda,tpu",
                  "--out", str(tmp_path / "hlo")])
  assert out == 0
  manifest = json.loads((tmp_path / "hlo" / stablehlo_runner.MANIFEST_FILE).read_text())
  assert manifest["batch"] == 2 and manifest["platforms"] == ["cpu", "cuda", "tpu"]
  assert manifest["functions"]["perceive"]["outputs"][1] == {
      "name": "probs", "shape": [2, sf.NUM_DECISIONS], "dtype": "float32"}
  assert [e["name"] for e in manifest["state"]][-8:] == ["next_logits", "rng", "heard",
                                                          "sound_events", "turn_end",
                                                          "heard_sounds", "reply_said",
                                                          "name_progress"]

  np.savez(tmp_path / "streams.npz", audio=np.stack(audio), instructions=json.dumps(instructions))
  done = subprocess.run([sys.executable, "-c", _RUNNER, str(tmp_path / "hlo"),
                         str(tmp_path / "streams.npz"), repr(threshold)],
                        capture_output=True, text=True, env=os.environ, timeout=300, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  result = json.loads(done.stdout.strip().splitlines()[-1])
  assert result["platforms"] == ["cpu", "cuda", "tpu"]
  for got_row, want_row in zip(result["rows"], expected, strict=True):
    assert [c[1] for c in got_row] == [c[1] for c in want_row]      # decisions
    assert [c[2] for c in got_row] == [c[2] for c in want_row]      # reply tokens
    assert [c[3] for c in got_row] == [c[3] for c in want_row]      # CTC labels
    np.testing.assert_allclose([c[0] for c in got_row], [c[0] for c in want_row],
                               rtol=0, atol=1e-6)                    # P(SPEAK)


def test_stablehlo_runner_refuses_other_platforms_and_weights(small, tmp_path):
  model, params, tokenizer, config = small
  directory = stablehlo.export_stablehlo(tmp_path / "hlo", model, params, tokenizer, config)
  manifest_path = directory / stablehlo_runner.MANIFEST_FILE
  manifest = json.loads(manifest_path.read_text())
  exported = stablehlo_runner.ExportedModel.load(directory)
  with pytest.raises(ValueError, match=r"chunk has shape \(2, 5\), the export takes \(1, \d+\)"):
    exported.perceive(exported.start([[1]]), np.zeros((2, 5), np.float32))

  manifest_path.write_text(json.dumps({**manifest, "platforms": ["tpu"]}))
  with pytest.raises(stablehlo_runner.ExportError,
                     match="exported for tpu; this machine runs cpu: export again"):
    stablehlo_runner.ExportedModel.load(directory)
  manifest_path.write_text(json.dumps(manifest))

  stored = safetensors.numpy.load_file(directory / portable.SAFETENSORS_FILE)
  stored["ctc_head.kernel"] = stored["ctc_head.kernel"][:-1]
  safetensors.numpy.save_file(stored, directory / portable.SAFETENSORS_FILE)
  with pytest.raises(stablehlo_runner.ExportError,
                     match=r"tensor 'ctc_head.kernel' is float32\[\d+, \d+\], the functions take"):
    stablehlo_runner.ExportedModel.load(directory)

  with pytest.raises(ValueError, match="platforms 'cpu,gpu'"):
    stablehlo.parse_platforms("cpu,gpu")


def test_stablehlo_runner_pins_a_changed_instruction_as_the_engine(small, tmp_path):
  """A model with a pinned prefix: row 1's instruction changes mid-stream; the exported
  runner's P(SPEAK) afterwards, far past the window, equals the engine's."""
  _, _, tokenizer, config = small
  config = model_testing.small_config(**{"model.decoder.vocab_size": tokenizer.vocab_size,
                                         "model.decoder.pinned_prefix": 8})
  model = AudioInteractionModel(config)
  params = model.init(jax.random.key(6))
  first, second = tokenizer.encode("say hi"), tokenizer.encode("be quiet")
  rng = np.random.default_rng(3)
  chunks = (0.1 * rng.normal(size=(30, 2, model.config.chunk_samples))).astype(np.float32)
  stepper = StreamStepper(Engine(model), params, [first, first],
                          [ThresholdPolicy(2.0), ThresholdPolicy(2.0)])
  cli.main(["export", "--bundle", str(portable.save_bundle(tmp_path / "b", params, tokenizer,
                                                           config)),
            "--format", "stablehlo", "--batch", "2", "--platforms", "cpu",
            "--out", str(tmp_path / "hlo")])
  exported = stablehlo_runner.ExportedModel.load(tmp_path / "hlo")
  state = exported.start([first, first])
  want, got = [], []
  for index, chunk in enumerate(chunks):
    if index == 4:
      stepper.change_instruction(second, rows=[1])
      state = exported.change_instruction(state, [None, second])
    want.append([r.speak_probability for r in stepper.step_batch(chunk)])
    state, probs = exported.perceive(state, chunk)
    got.append(probs[:, sf.Decision.SPEAK])
  np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
  # Row 0 kept its instruction, row 1 reads the new one.
  assert np.abs(np.asarray(want)[-5:, 0] - np.asarray(want)[-5:, 1]).max() > 1e-4
