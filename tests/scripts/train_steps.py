"""Child process: N train steps of a small config on `--devices` simulated CPU devices with
the given mesh; prints the final params' fingerprint as JSON (for test_trainer)."""

import argparse
import json
import os
import sys

parser = argparse.ArgumentParser()
parser.add_argument("--devices", type=int, default=1)
parser.add_argument("--mesh", default='{"data": 1, "fsdp": 1, "tensor": 1}')
parser.add_argument("--steps", type=int, default=3)
parser.add_argument("--out", required=True)
args = parser.parse_args()
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import train_testing  # noqa: E402
from audio_interaction.train.trainer import Trainer  # noqa: E402

config = train_testing.train_config()
config.unlock()
config.sharding.mesh = json.loads(args.mesh)
trainer = Trainer(config)
state = trainer.init_state(0)
batches, spec = train_testing.fixed_batches(config, count=args.steps)
step = trainer.compile_train_step(spec)
losses = []
for batch in batches:
  state, metrics = step.fn(state, trainer.device_batch(batch))
  losses.append(float(metrics["loss"]))
flat = {jax.tree_util.keystr(p): np.asarray(v) for p, v in
        jax.tree_util.tree_flatten_with_path(jax.device_get(state.params))[0]}
np.savez(args.out, **flat)
print(json.dumps({"devices": jax.device_count(), "losses": losses,
                  "step": int(state.step)}))
