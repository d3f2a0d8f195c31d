"""Child process for test_sharding: the forward on a (data 2, fsdp 2, tensor 2) mesh of 8
simulated CPU devices vs the same forward on one device. Prints a JSON report."""

import os

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import json  # noqa: E402
import sys  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import model_testing  # noqa: E402
from audio_interaction.model.model import AudioInteractionModel  # noqa: E402
from audio_interaction.train import sharding  # noqa: E402


def main(block: str) -> None:
  config = model_testing.small_config(block)
  model = AudioInteractionModel(config)
  params = model.init(jax.random.key(0))
  rules = config.sharding.logical_axis_rules
  mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  param_shardings = sharding.logical_to_sharding(model.logical_axes(), mesh, rules)
  sharded_params = jax.device_put(params, param_shardings)

  rng = np.random.default_rng(0)
  rows = [model_testing.online_sequence(rng, 4, config.model.slots_per_chunk,
                                        config.model.tokens_per_chunk, 64) for _ in range(4)]
  length = max(len(r[0]) for r in rows)
  tokens = np.zeros((4, length), np.int32)
  slots = np.full((4, length), -1, np.int32)
  for i, (t, s, _, _) in enumerate(rows):
    tokens[i, :len(t)], slots[i, :len(s)] = t, s
  audio = (0.1 * rng.normal(size=(4, 4 * 2560))).astype(np.float32)

  single = jax.jit(model.forward)(params, tokens, audio, slots)
  with sharding.activate(mesh, rules):
    put = lambda x: jax.device_put(x, sharding.batch_sharding(mesh, rules, x.ndim))
    sharded = jax.jit(model.forward)(sharded_params, put(tokens), put(audio), put(slots))

  def max_diff(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max())

  full_bytes = sum(x.nbytes for x in jax.tree_util.tree_leaves(params))
  print(json.dumps({
      "devices": jax.device_count(),
      "lm_logits": max_diff(sharded.lm_logits, single.lm_logits),
      "decision_logits": max_diff(sharded.decision_logits, single.decision_logits),
      "ctc_logits": max_diff(sharded.ctc_logits, single.ctc_logits),
      "output_spec": str(sharded.lm_logits.sharding.spec),
      "param_bytes_full": full_bytes,
      "param_bytes_device0": sharding.device_memory_per_shard(sharded_params),
      "param_specs": sharding.describe(param_shardings),
  }))


if __name__ == "__main__":
  main(sys.argv[1])
