"""Child process: `loop.train` on a small synthetic dataset; writes final params to --out.

Multi-process runs are driven by the JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
JAX_PROCESS_ID environment variables, as a real launcher would set them.
"""

import argparse
import json
import os
import sys

parser = argparse.ArgumentParser()
parser.add_argument("--data", required=True)
parser.add_argument("--workdir", required=True)
parser.add_argument("--steps", type=int, default=6)
parser.add_argument("--batch", type=int, default=4, help="rows per process")
parser.add_argument("--out", default="")
parser.add_argument("--augment", action="store_true",
                    help="train with config.train.augment on (noise on every row)")
parser.add_argument("--max-seconds", type=float, default=0.0, help="config.train.max_seconds")
args = parser.parse_args()

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import train_testing  # noqa: E402
from audio_interaction import config_lib  # noqa: E402
from audio_interaction.train import loop  # noqa: E402

config = train_testing.loop_config(args.data, batch=args.batch, steps=args.steps)
if args.augment:
  config_lib.apply_overrides(config, ["train.augment.enabled=True",
                                      "train.augment.noise_probability=1.0"])
  config_lib.validate(config)
config.train.max_seconds = args.max_seconds
result = loop.train(config, args.workdir, progress=False)
if args.out:
  # Every process restores (a collective) and gathers the params; process 0 writes them.
  from jax.experimental import multihost_utils
  from audio_interaction.train import checkpoint as checkpoint_lib
  from audio_interaction.train.trainer import Trainer
  restored = checkpoint_lib.Checkpointer(os.path.join(args.workdir, "checkpoints")).restore_latest(
      Trainer(config).abstract_state())
  params = multihost_utils.process_allgather(restored.state.params, tiled=True)
  if jax.process_index() == 0:
    flat = {jax.tree_util.keystr(p): np.asarray(v) for p, v in
            jax.tree_util.tree_flatten_with_path(params)[0]}
    np.savez(args.out, **flat)
print(json.dumps({"step": result["step"], "stopped_by": result["stopped_by"],
                  "processes": jax.process_count()}))
