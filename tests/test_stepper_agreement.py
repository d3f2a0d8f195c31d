"""Every caller of the stepper decides the same on the same stream.

`run_stream`, a row of `run_policies` (the evaluation sweeps' batch), a row of a
batch whose other rows hold other streams, and the live session all step through
`StreamStepper`: their P(SPEAK), decisions and reply tokens agree chunk by chunk.
"""

import asyncio

import jax
import numpy as np
import pytest

from audio_interaction.data.tokenizer import ByteTokenizer
from audio_interaction.infer import live, sources
from audio_interaction.infer.engine import Engine
from audio_interaction.infer.policies import ScheduledTimerPolicy, ThresholdPolicy
from audio_interaction.infer.run_stream import StreamStepper, run_policies, run_stream
from audio_interaction.model.model import AudioInteractionModel
import model_testing
from test_live import CHUNK, ScriptedEngine


@pytest.fixture(scope="module")
def setting():
  tokenizer = ByteTokenizer()
  config = model_testing.small_config(**{"model.decoder.vocab_size": tokenizer.vocab_size})
  model = AudioInteractionModel(config)
  params = model.init(jax.random.key(7))
  engine = Engine(model)
  rng = np.random.default_rng(3)
  audio = (0.1 * rng.normal(size=14 * model.config.chunk_samples)).astype(np.float32)
  instruction = tokenizer.encode("answer when asked")
  probe = run_stream(engine, params, audio, instruction, ThresholdPolicy(2.0))
  # A threshold inside the range of P(SPEAK) so that the run both speaks and stays silent.
  threshold = float(np.median([c.speak_probability for c in probe.chunks]))
  return engine, params, tokenizer, audio, instruction, threshold


def _summary(trace):
  return ([c.spoke for c in trace.chunks], [c.reply_tokens for c in trace.chunks],
          np.asarray([c.speak_probability for c in trace.chunks]), [c.events for c in trace.chunks])


def _assert_same(a, b):
  assert a[0] == b[0]
  assert a[1] == b[1]
  np.testing.assert_allclose(a[2], b[2], atol=2e-5)
  assert a[3] == b[3]


def test_every_caller_of_the_stepper_decides_the_same(setting, tmp_path):
  engine, params, tokenizer, audio, instruction, threshold = setting
  alone = _summary(run_stream(engine, params, audio, instruction, ThresholdPolicy(threshold)))
  assert any(alone[0]) and not all(alone[0])

  # The evaluation's batch: the same stream under a sweep of policies, one row each.
  timer = ScheduledTimerPolicy(frozenset({2, 9}), frozenset({5}))
  rows = run_policies(engine, params, audio, instruction,
                      [ThresholdPolicy(0.0), ThresholdPolicy(threshold), timer])
  _assert_same(_summary(rows[1]), alone)

  # A batch of different streams: row 1 holds ours, the others other audio and prompts.
  other = np.random.default_rng(9).normal(size=audio.shape).astype(np.float32) * 0.1
  stepper = StreamStepper(engine, params, [tokenizer.encode("other"), instruction, [40]],
                          [ThresholdPolicy(0.3), ThresholdPolicy(threshold), ThresholdPolicy(0.6)])
  size = stepper.chunk_samples
  records = [stepper.step_batch(np.stack([other[i:i + size], audio[i:i + size],
                                          other[::-1][i:i + size]]))[1]
             for i in range(0, len(audio), size)]
  _assert_same(_summary(type(rows[0])(records, stepper.chunk_seconds)), alone)

  # The live session over the same audio (unpaced: nothing dropped).
  session = live.LiveSession(engine, params, tokenizer, live.LiveConfig(
      instruction="answer when asked", policy=ThresholdPolicy(threshold), warm_up=False))
  result = asyncio.run(session.run(sources.ArraySource(audio, speed=float("inf"))))
  _assert_same(_summary(result.trace), alone)


def test_a_capped_reply_stops_and_waits_for_a_silent_chunk():
  # A reply that never ends, 3 tokens per chunk, capped at 6: it is cut after chunk 1,
  # stays cut while the model still says SPEAK (chunks 2-3), and a new reply may start
  # only after a SILENT chunk (4): at chunk 5.
  probs = [0.9, 0.9, 0.9, 0.9, 0.1, 0.9, 0.9]
  engine = ScriptedEngine(probs, [40, 41, 42, 43], tokens_per_chunk=3)
  trace = run_stream(engine, None, np.zeros(len(probs) * CHUNK, np.float32), [20],
                     ThresholdPolicy(0.5), max_reply_tokens=6)
  assert [len(c.reply_tokens) for c in trace.chunks] == [3, 3, 0, 0, 0, 3, 3]
  assert [c.events for c in trace.chunks] == [
      ["reply_start"], ["reply_capped"], [], [], [], ["reply_start"], ["reply_capped"]]
