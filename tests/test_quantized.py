"""int8 weight-only inference: quantization error bounds, and the engine on int8 params."""

import jax
import numpy as np
import pytest

from audio_interaction import config_lib
from audio_interaction.export import portable
from audio_interaction.infer import engine as engine_lib
from audio_interaction.model.model import AudioInteractionModel
import model_testing


@pytest.fixture(scope="module")
def small():
  model = AudioInteractionModel(model_testing.small_config())
  return model, model.init(jax.random.key(7))


def _kernels(params):
  """(path, float kernel, QuantizedKernel) for every quantized leaf."""
  quantized = engine_lib.quantize_params(params)
  flat = dict(jax.tree_util.tree_flatten_with_path(params)[0])
  out = []
  for path, leaf in jax.tree_util.tree_flatten_with_path(
      quantized, is_leaf=lambda x: isinstance(x, engine_lib.QuantizedKernel))[0]:
    if isinstance(leaf, engine_lib.QuantizedKernel):
      out.append((jax.tree_util.keystr(path), np.asarray(flat[path]), leaf))
  return quantized, out


def test_quantize_dequantize_error_is_half_a_step_per_output_channel(small):
  _, params = small
  quantized, kernels = _kernels(params)
  names = {name.split("]")[-2].strip("['") for name, _, _ in kernels}
  assert {"kernel", "query", "key", "value", "out"} <= names
  for name, kernel, q in kernels:
    values, scale = np.asarray(q.values), np.asarray(q.scale)
    assert values.dtype == np.int8 and values.shape == kernel.shape, name
    # One scale per output channel: the input axes are kept with size 1.
    # (attention: query/key/value [D, heads, Dh] have one input axis, out [heads, Dh, D] two)
    last = name.rsplit("[", 1)[-1]
    inputs = {"'out']": 2, "'query']": 1, "'key']": 1, "'value']": 1}.get(last, kernel.ndim - 1)
    assert scale.shape == (1,) * inputs + kernel.shape[inputs:], name
    np.testing.assert_allclose(scale, np.abs(kernel).max(axis=tuple(range(inputs)),
                                                         keepdims=True) / 127, rtol=1e-6)
    error = np.abs(values.astype(np.float32) * scale - kernel)
    assert np.all(error <= scale / 2 * (1 + 1e-5)), name  # rounding: at most half a step
    assert np.abs(values).max() == 127, name  # the channel's peak uses the full range
  restored = engine_lib.dequantize_params(quantized)
  assert jax.tree_util.tree_structure(restored) == jax.tree_util.tree_structure(params)
  # Embeddings, norms and biases are untouched.
  np.testing.assert_array_equal(restored["params"]["decoder"]["embed"]["embedding"],
                                params["params"]["decoder"]["embed"]["embedding"])
  assert engine_lib.param_bytes(quantized) < 0.4 * engine_lib.param_bytes(params)


def test_params_for_is_idempotent_and_checks_its_argument(small):
  _, params = small
  quantized = engine_lib.params_for(params, "int8")
  assert engine_lib.is_quantized(quantized) and not engine_lib.is_quantized(params)
  assert engine_lib.params_for(quantized, "int8") is quantized
  assert not engine_lib.is_quantized(engine_lib.params_for(quantized, "float32"))
  with pytest.raises(ValueError, match="int4"):
    engine_lib.params_for(params, "int4")


def test_engine_runs_on_int8_params_close_to_float32(small):
  model, params = small
  engine = engine_lib.Engine(model)
  quantized = engine_lib.params_for(params, "int8")
  rng = np.random.default_rng(0)
  chunks = rng.normal(0, 0.1, (6, 1, model.config.chunk_samples)).astype(np.float32)
  probs = {}
  for name, p in (("float32", params), ("int8", quantized)):
    state = engine.init_state(p, [[9, 10, 11]])
    rows = []
    for chunk in chunks:
      state, prob = engine.perceive(p, state, chunk)
      rows.append(np.asarray(prob[0]))
    state, tokens, count = engine.speak(p, state, np.ones(1, bool), n=3)
    assert tokens.shape == (1, 3) and 0 <= int(count[0]) <= 3
    probs[name] = np.stack(rows)
  assert np.all(np.isfinite(probs["int8"]))
  # int8 weights move P(SPEAK) a little, not a lot (random weights: no margin to keep).
  np.testing.assert_allclose(probs["int8"], probs["float32"], atol=0.05)
  assert np.abs(probs["int8"] - probs["float32"]).max() > 0  # it did run quantized


def test_config_selects_int8_at_load(tmp_path):
  config = config_lib.load_config(model_testing.TINY, [
      "model.encoder.num_layers=1", "model.decoder.num_layers=1", "infer.weights=int8"])
  model, params, _, note = portable.load_model(config, tmp_path / "no_bundle")
  assert engine_lib.is_quantized(params) and note.endswith("int8")
  with pytest.raises(config_lib.ConfigError, match="infer.weights"):
    config_lib.load_config(model_testing.TINY, ["infer.weights=int4"])
  # A bundle saved before the field existed loads with float32 weights.
  values = config_lib.base_config().to_dict()
  del values["infer"]["weights"]
  assert config_lib.from_dict(values).infer.weights == "float32"
  del model
