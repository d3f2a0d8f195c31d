"""experiments/whisper_qwen.py: the pretrained-sized config shapes, shards and lowers."""

import json
import pathlib
import subprocess
import sys

from audio_interaction import config_lib
from audio_interaction.model.model import count_params
from audio_interaction.train.trainer import Trainer

SCRIPT = pathlib.Path(__file__).parent / "scripts" / "whisper_qwen_lower.py"
CONFIG = str(config_lib.experiments_dir() / "whisper_qwen.py")


def test_lowers_on_8_devices_and_state_fits_the_reported_bytes(tmp_path):
  out = tmp_path / "result.json"
  subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], check=True, timeout=900)
  result = json.loads(out.read_text())
  assert result["devices"] == 8 and result["mesh"] == {"data": 1, "fsdp": 4, "tensor": 2}
  # Whisper base's encoder (~20.6 M) + adapter; Qwen2.5-0.5B (~494 M) + 128 new rows,
  # the decision head and the CTC head over the 152k vocabulary.
  assert 20e6 < result["encoder_params"] < 26e6
  assert 5.5e8 < result["params"] < 6.5e8
  per_device = result["bytes_per_device"]
  # fp32 params split 8 ways (fsdp x tensor); Adam keeps two moments of each.
  even = 4 * result["params"] / 8
  assert even <= per_device["params"] < 1.02 * even
  assert 2 * even <= per_device["opt_state"] < 2.04 * even


def test_freezing_the_encoder_drops_its_optimizer_state():
  sizes = {}
  for variant in ("", ":freeze_encoder"):
    config = config_lib.load_config(CONFIG + variant, ['sharding.mesh={"data": -1}'])
    state = Trainer(config).abstract_state()
    sizes[variant] = count_params(state.opt_state), state
  full, frozen = sizes[""][0], sizes[":freeze_encoder"][0]
  encoder = sizes[""][1].params["params"]["encoder"]
  trainable_encoder = count_params(encoder["adapter_in"]) + count_params(encoder["adapter_out"])
  assert full - frozen == 2 * (count_params(encoder) - trainable_encoder)
