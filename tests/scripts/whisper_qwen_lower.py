"""Child process: experiments/whisper_qwen.py[:variant] on 8 simulated CPU devices:
parameter shapes by `jax.eval_shape`, the sharded train step and the streaming step
AOT-lowered on abstract inputs (nothing allocated); prints JSON with the parameter
count and the train state's bytes per device (for test_whisper_qwen)."""

import argparse
import json
import os

parser = argparse.ArgumentParser()
parser.add_argument("--variant", default="")
parser.add_argument("--out", required=True)
args = parser.parse_args()
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import jax  # noqa: E402

from audio_interaction import config_lib  # noqa: E402
from audio_interaction.data.pipeline import PipelineConfig, batch_spec  # noqa: E402
from audio_interaction.model.model import count_params  # noqa: E402
from audio_interaction.train.trainer import Trainer  # noqa: E402

spec = str(config_lib.experiments_dir() / "whisper_qwen.py")
if args.variant:
  spec += ":" + args.variant
# A short batch keeps the lowering quick; the state's size does not depend on it.
config = config_lib.load_config(spec, ["data.batch_size=8", "data.max_len=96",
                                       "data.max_chunks=8", "data.max_transcript=32"])
trainer = Trainer(config)
params = jax.eval_shape(trainer.model.init, jax.random.key(0))
trainer.lower_train_step(batch_spec(PipelineConfig.from_config(config)))
state = jax.eval_shape(lambda: trainer.model.init_state(1))
chunk = jax.ShapeDtypeStruct((1, trainer.model.config.chunk_samples), jax.numpy.float32)
jax.jit(trainer.model.perceive, donate_argnums=1).lower(params, state, chunk)
result = {"devices": jax.device_count(), "mesh": dict(trainer.mesh.shape),
          "params": count_params(params),
          "encoder_params": count_params(params["params"]["encoder"]),
          "bytes_per_device": trainer.state_bytes_per_device()}
with open(args.out, "w") as f:
  json.dump(result, f)
print(json.dumps(result))
