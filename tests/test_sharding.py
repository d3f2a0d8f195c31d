"""Sharding: mesh construction, and the sharded forward equals the single-device forward."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from audio_interaction.train import sharding

SCRIPT = pathlib.Path(__file__).parent / "scripts" / "sharded_forward.py"
ATOL = 1e-5  # the sharded program sums partial products in another order


@pytest.mark.parametrize("block", ["transformer", "conformer"])
def test_forward_on_8_devices_equals_single_device(block):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  result = subprocess.run([sys.executable, str(SCRIPT), block], env=env, capture_output=True,
                          text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report["devices"] == 8
  for output in ("lm_logits", "decision_logits", "ctc_logits"):
    assert report[output] <= ATOL, (output, report[output])
  # The batch really is split over (data, fsdp) and the vocab over tensor ...
  assert report["output_spec"] == "P(('data', 'fsdp'), None, 'tensor')"
  # ... and parameters really are split: device 0 holds well under all of them.
  assert report["param_bytes_device0"] < 0.5 * report["param_bytes_full"]
  specs = report["param_specs"]
  assert specs["['params']['decoder']['block0']['attention']['query']"] == \
      "P('fsdp', 'tensor', None)"


def test_mesh_shape_resolution():
  assert sharding.resolve_mesh_shape({"data": -1, "tensor": 2}, 8) == {
      "data": 4, "fsdp": 1, "tensor": 2}
  with pytest.raises(ValueError, match="only one mesh axis may be -1"):
    sharding.resolve_mesh_shape({"data": -1, "fsdp": -1}, 8)
  with pytest.raises(ValueError, match="needs 6 devices, 8 are available"):
    sharding.resolve_mesh_shape({"data": 3, "fsdp": 2}, 8)
  with pytest.raises(ValueError, match="unknown mesh axes"):
    sharding.resolve_mesh_shape({"model": 2}, 8)
