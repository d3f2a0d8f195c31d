"""inspect: XLA cost of the train and streaming steps, and the roofline projection."""

import math

import pytest

from audio_interaction.model import inspect_model
from audio_interaction.model.model import AudioInteractionModel
import model_testing


def test_roofline_on_a_hand_case():
  # 2 TFLOP at 1 PFLOP/s = 2 ms; 1 GB at 2 TB/s = 0.5 ms: compute bound.
  assert math.isclose(inspect_model.roofline_seconds(2e12, 1e9, 1e15, 2e12), 2e-3)
  # 1 GFLOP at 1 PFLOP/s = 1 us; 4 GB at 2 TB/s = 2 ms: memory bound.
  assert math.isclose(inspect_model.roofline_seconds(1e9, 4e9, 1e15, 2e12), 2e-3)
  device = inspect_model.Accelerator("x", peak_flops=1e15, bandwidth=2e12)
  assert math.isclose(inspect_model.StepCost(2e12, 1e9).projected_seconds(device), 2e-3)


def test_published_specs_table():
  names = {d.name for d in inspect_model.ACCELERATORS}
  assert {"TPU v5e", "TPU v5p", "H100 SXM", "A100 80GB", "L40S"} <= names
  h100 = next(d for d in inspect_model.ACCELERATORS if d.name == "H100 SXM")
  assert (h100.peak_flops, h100.bandwidth) == (989e12, 3350e9)


@pytest.fixture(scope="module")
def tiny_costs():
  model = AudioInteractionModel(model_testing.small_config())
  return model, inspect_model.step_costs(model, batch=2, length=64, chunks=8)


def test_step_costs_are_positive_and_train_costs_more(tiny_costs):
  model, costs = tiny_costs
  train, stream = costs["train"], costs["stream"]
  assert train.flops > 0 and train.bytes_accessed > 0
  assert stream.flops > 0 and stream.bytes_accessed > 0
  assert train.flops > 10 * stream.flops
  # Forward + backward is at least twice the forward's 2 FLOPs per parameter and position.
  params = inspect_model.summarize(model).total_params
  assert train.flops > 2 * 2 * params * 2 * 64 / 10  # loose: the embedding is a lookup


def test_describe_labels_the_projection(tiny_costs):
  _, costs = tiny_costs
  text = inspect_model.describe_costs(costs, 2, 64, 8, cpu_stream_seconds=0.0021)
  assert "PROJECTION" in text and "published" in text
  for device in inspect_model.ACCELERATORS:
    assert device.name in text
  assert "MEASURED on this CPU: streaming step 2.1 ms" in text
  assert "not measured" in inspect_model.describe_costs(costs, 2, 64, 8, None)
