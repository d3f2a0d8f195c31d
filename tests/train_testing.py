"""A small training config and fixed batches shared by the training tests."""

from __future__ import annotations


import model_testing
from audio_interaction.corpus import worlds
from audio_interaction.data.pipeline import PipelineConfig, batch_spec, make_dataset
from synthetic_examples import SyntheticExamples


def train_config(**overrides):
  settings = {"model.encoder.num_layers": 1, "model.decoder.num_layers": 1,
              "data.batch_size": 4, "data.max_len": 96, "data.max_chunks": 8,
              "data.prefetch_batches": 0, "train.learning_rate": 3e-3,
              "train.warmup_steps": 5, "train.steps": 60,
              # Room for the byte tokenizer the loop falls back to (268 ids).
              "model.decoder.vocab_size": 272,
              # Synthetic examples are read uniformly, in one stage.
              "data.mixture": None, "train.stages": (),
              # Every training test runs the sound-event head too (its chunk targets
              # are random, as the rest of a synthetic example).
              "model.sound_event_classes": len(worlds.SOUND_EVENT_LABELS),
              "train.sound_event_loss_weight": 0.5}
  settings.update(overrides)
  return model_testing.small_config(**settings)


def synthetic_examples(config) -> SyntheticExamples:
  return SyntheticExamples(chunk_samples=config.audio.sample_rate * config.audio.chunk_ms // 1000,
                           max_chunks=config.data.max_chunks,
                           vocab_size=config.model.decoder.vocab_size,
                           slots_per_chunk=config.model.slots_per_chunk,
                           tokens_per_chunk=config.model.tokens_per_chunk)


def fixed_batches(config, count: int, seed: int = 0):
  """`count` pipeline batches of synthetic stream-format examples, and their shapes."""
  pipeline = PipelineConfig.from_config(config)
  make = synthetic_examples(config)
  source = [dict(make(i, seed), example_index=i) for i in range(count * pipeline.batch_size)]
  iterator = iter(make_dataset(source, pipeline, shard_index=0, shard_count=1))
  return [next(iterator) for _ in range(count)], batch_spec(pipeline)


def loop_config(data_dir, *, batch: int = 4, steps: int = 6):
  """The config tests/scripts/train_run.py trains with."""
  return train_config(**{
      "data.dir": str(data_dir), "data.batch_size": batch, "train.steps": steps,
      "train.checkpoint_every": 2, "train.eval_every": 1000, "train.eval_batches": 1,
      "train.log_every": 2, "train.peak_flops_per_device": 1e11})
