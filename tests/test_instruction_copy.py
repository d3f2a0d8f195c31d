"""The copy head: which tokens it copies from, and that streaming copies as the full forward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audio_interaction import stream_format as sf
from audio_interaction.model import instruction_copy
from audio_interaction.model.model import AudioInteractionModel
import model_testing

ATOL = 2e-5
S, E = sf.SYS_ID, sf.END_SYS_ID
A, D = sf.AUDIO_ID, sf.DECIDE_ID
W = sf.NUM_SPECIAL_TOKENS  # the first plain text token


def _layout(tokens, memory=None, memory_size=3, valid=None):
  tokens = jnp.asarray([tokens], jnp.int32)
  valid = jnp.ones(tokens.shape, bool) if valid is None else jnp.asarray([valid])
  return instruction_copy.source_layout(tokens, valid, memory, memory_size)


def test_sources_are_the_first_tokens_of_the_latest_instruction():
  #          <sys>  a    b    c    d   </sys> <audio> <decide> r  <sys>  e   </sys>
  tokens = [S, W, W + 1, W + 2, W + 3, E, A, D, W + 4, S, W + 5, E]
  layout = _layout(tokens, memory_size=3)
  np.testing.assert_array_equal(layout.is_source[0],
                                [0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 0])  # d: past 3
  np.testing.assert_array_equal(layout.block[0], [1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2])
  np.testing.assert_array_equal(np.asarray(layout.slot[0])[[1, 2, 3, 10]], [0, 1, 2, 0])
  assert int(layout.count[0]) == 1 and not bool(layout.in_instruction[0])


def test_a_run_continues_the_block_the_memory_holds():
  memory = instruction_copy.CopyMemory(keys=jnp.zeros((1, 3, 2)), tokens=jnp.zeros((1, 3), jnp.int32),
                                       count=jnp.asarray([1]), in_instruction=jnp.asarray([True]))
  layout = _layout([W, W + 1, E, W + 2], memory=memory, memory_size=3)
  np.testing.assert_array_equal(layout.is_source[0], [1, 1, 0, 0])  # after </sys>: not
  np.testing.assert_array_equal(np.asarray(layout.slot[0])[:2], [1, 2])
  np.testing.assert_array_equal(layout.block[0], [0, 0, 0, 0])
  assert int(layout.count[0]) == 3 and not bool(layout.in_instruction[0])
  # Invalid positions are neither markers nor sources.
  layout = _layout([S, W, W + 1], valid=[False, True, True])
  np.testing.assert_array_equal(layout.is_source[0], [0, 0, 0])


def _copy_model(memory=4, gate_bias=1.0, seed=0):
  model = AudioInteractionModel(model_testing.small_config(**{
      "model.decoder.copy_instruction": True, "model.decoder.copy_memory": memory}))
  params = model_testing.perturbed(model.init(jax.random.key(seed)), seed)
  return model, model_testing.with_copy_gate(params, gate_bias)


def _stream_with_changed_instruction(rng, cfg):
  """(tokens, slot index, runs): an online stream whose instruction changes after chunk 5;
  `runs` lists (kind, length) in the order a live loop feeds them, text fed in pieces."""
  vocab = cfg.decoder.vocab_size
  tokens = list(sf.online_prompt(rng.integers(W, vocab, 7)))
  slots = [sf.NO_INDEX] * len(tokens)
  runs = [("text", n) for n in model_testing.random_splits(rng, len(tokens), 4)]
  for chunk in range(10):
    tokens += [A] + [sf.AUDIO_SLOT_ID] * cfg.slots_per_chunk + [D]
    slots += [sf.NO_INDEX] + [chunk * cfg.slots_per_chunk + j for j in range(cfg.slots_per_chunk)]
    slots += [sf.NO_INDEX]
    runs.append(("chunk", chunk))
    text = list(rng.integers(W, vocab, rng.integers(0, cfg.tokens_per_chunk + 1)))
    if chunk == 5:  # a changed instruction, longer than the memory
      text += sf.instruction_tokens(rng.integers(W, vocab, 6))
    tokens += text
    slots += [sf.NO_INDEX] * len(text)
    runs += [("text", n) for n in model_testing.random_splits(rng, len(text), 3)]
  return np.asarray(tokens, np.int32), np.asarray(slots, np.int32), runs


@pytest.mark.parametrize("seed", [0, 1])
def test_streaming_steps_copy_as_the_full_forward(seed):
  model, params = _copy_model(seed=seed)
  cfg = model.config
  rng = np.random.default_rng(seed)
  tokens, slot_index, runs = _stream_with_changed_instruction(rng, cfg)
  audio = (0.1 * rng.normal(size=10 * cfg.chunk_samples)).astype(np.float32)
  full = model.forward(params, jnp.asarray(tokens[None]), jnp.asarray(audio[None]),
                       jnp.asarray(slot_index[None]))
  prefill, perceive = jax.jit(model.prefill), jax.jit(model.perceive)
  state, position, checked = model.init_state(1), 0, 0
  for kind, value in runs:
    if kind == "text":
      state, lm = prefill(params, state, jnp.asarray(tokens[None, position:position + value]))
      position += value
      np.testing.assert_allclose(lm[0], full.lm_logits[0, position - value:position],
                                 atol=ATOL, rtol=0, err_msg=f"text run ending at {position}")
    else:
      chunk = audio[None, value * cfg.chunk_samples:(value + 1) * cfg.chunk_samples]
      state, decision, lm, _ = perceive(params, state, jnp.asarray(chunk))
      position += sf.chunk_prefix_length(cfg.slots_per_chunk)
      np.testing.assert_allclose(lm[0], full.lm_logits[0, position - 1], atol=ATOL, rtol=0)
      np.testing.assert_allclose(decision[0], full.decision_logits[0, position - 1], atol=ATOL,
                                 rtol=0)
    checked += 1
  assert position == len(tokens) and checked == len(runs)
  assert int(state.copy.count[0]) == cfg.decoder.copy_memory  # the changed one, cut at 4


def test_copies_come_from_the_current_instruction_only():
  model, params = _copy_model(memory=8, gate_bias=30.0)  # the copy path alone
  first, second = [W, W + 1, W + 2], [W + 10, W + 11]
  tokens = np.asarray([*sf.online_prompt(first), A, D, *sf.instruction_tokens(second), A, D,
                       W + 20], np.int32)
  silence = np.zeros(model.config.chunk_samples, np.float32)
  full = model.forward(params, jnp.asarray(tokens[None]), jnp.asarray(silence[None]),
                       jnp.zeros((1, len(tokens)), jnp.int32))
  probs = np.exp(np.asarray(full.lm_logits[0], np.float64))
  np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
  first_decide, last = np.flatnonzero(tokens == D)[0], len(tokens) - 1
  assert probs[first_decide, first].sum() > 0.999
  assert probs[last, second].sum() > 0.999 and probs[last, first].sum() < 1e-6


def test_without_an_instruction_the_lm_head_is_unchanged():
  with_copy, params = _copy_model(gate_bias=30.0)
  plain = AudioInteractionModel(model_testing.small_config())
  plain_params = {"params": {**params["params"], "decoder": {
      k: v for k, v in params["params"]["decoder"].items() if k != "copy"}}}
  tokens = jnp.asarray([[sf.BOS_ID, sf.ONLINE_ID, A, D, W + 3, W + 4]], jnp.int32)
  audio = jnp.zeros((1, with_copy.config.chunk_samples), jnp.float32)
  index = jnp.zeros(tokens.shape, jnp.int32)
  copied = with_copy.forward(params, tokens, audio, index).lm_logits
  reference = plain.forward(plain_params, tokens, audio, index).lm_logits
  np.testing.assert_allclose(copied, jax.nn.log_softmax(reference, axis=-1), atol=1e-5)


def test_one_run_with_two_instructions_keeps_the_second():
  model, params = _copy_model(memory=4)
  state = model.init_state(1)
  run = [*sf.online_prompt([W, W + 1, W + 2]), *sf.instruction_tokens([W + 7])]
  state, _ = model.prefill(params, state, jnp.asarray([run], jnp.int32))
  assert int(state.copy.count[0]) == 1 and int(state.copy.tokens[0, 0]) == W + 7
  full = instruction_copy.source_layout(jnp.asarray([run]), jnp.ones((1, len(run)), bool),
                                        None, 4)
  assert int(full.count[0]) == 1


def test_copyable_targets_are_next_tokens_found_in_the_current_instruction():
  #    0      1  2    3    4  5   6      7      8  9      10 11 12     13
  # <bos> <sys>  a    b </sys> <decide> b  c  <sys>  c  </sys> <decide> a  c
  tokens = [sf.BOS_ID, S, W, W + 1, E, D, W + 1, W + 2, S, W + 2, E, D, W, W + 2]
  targets = tokens[1:] + [sf.PAD_ID]
  found = instruction_copy.copyable_targets(jnp.asarray([tokens]), jnp.asarray([targets]))
  # 5: b is in view (a, b); 2: b is not yet (a only); 6: c is in no instruction so far;
  # 11: a was replaced by the changed instruction (c only); 12: c is in it.
  assert set(np.flatnonzero(np.asarray(found[0]))) == {5, 12}
