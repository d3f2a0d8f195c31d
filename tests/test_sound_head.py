"""Fitting the sound-event head alone: targets and weights by hand, the regression on
separable data, and a bundle in, a bundle out with only the head changed."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from audio_interaction import stream_format as sf
from audio_interaction.apps import cli
from audio_interaction.corpus import worlds
from audio_interaction.data.tokenizer import ByteTokenizer
from audio_interaction.export import portable
from audio_interaction.model import clip_encoder
from audio_interaction.model.model import AudioInteractionModel
from audio_interaction.train import sound_head
import model_testing

LABELS = worlds.SOUND_EVENT_LABELS


def test_clip_chunk_targets_follow_the_30_db_rule():
  chunk = 320  # two 10 ms frames
  rng = np.random.default_rng(0)
  audio = np.concatenate([rng.choice([-1.0, 1.0], chunk),          # 0 dB
                          0.1 * rng.choice([-1.0, 1.0], chunk),    # -20 dB: the sound
                          0.01 * rng.choice([-1.0, 1.0], chunk),   # -40 dB: its tail
                          np.zeros(100)]).astype(np.float32)      # a part chunk of silence
  targets = sound_head.clip_chunk_targets(audio, 7, chunk)
  np.testing.assert_array_equal(targets, [7, 7, sf.NO_SOUND_EVENT, sf.NO_SOUND_EVENT])


def test_quiet_lead_is_whole_quiet_chunks_and_seeded():
  chunk = 2560
  leads = [sound_head.quiet_lead(np.random.default_rng(seed), 2.0, chunk) for seed in range(40)]
  sizes = {lead.size for lead in leads}
  assert all(size % chunk == 0 and size <= 2.0 * 16000 for size in sizes)
  assert 0 in sizes and len(sizes) > 4  # the room may be absent, and its length varies
  for lead in leads:
    if lead.size:
      level = 10 * np.log10(np.mean(lead.astype(np.float64) ** 2))
      assert sound_head.QUIET_LEAD_DB[0] - 0.5 <= level <= sound_head.QUIET_LEAD_DB[1] + 0.5
  np.testing.assert_array_equal(sound_head.quiet_lead(np.random.default_rng(3), 2.0, chunk),
                                leads[3])
  assert sound_head.quiet_lead(np.random.default_rng(0), 0.0, chunk).size == 0


def test_bank_examples_put_a_none_lead_before_the_same_clips():
  from audio_interaction.corpus.sounds import SoundBank
  inputs = []

  def encode(audio):  # one feature per chunk: its RMS level
    inputs.append(audio)
    chunks = np.zeros(-(-audio.size // encode.chunk_samples) * encode.chunk_samples)
    chunks[:audio.size] = audio
    chunks = chunks.reshape(-1, encode.chunk_samples)
    return np.sqrt((chunks.astype(np.float64) ** 2).mean(1, keepdims=True)).astype(np.float32)

  encode.chunk_samples = 1600
  bank = SoundBank(use_recordings=False)
  label = "smoke_alarm"

  def examples(lead_seconds):
    inputs.clear()
    got = sound_head.bank_examples(encode, bank, 6, seed=0, labels=[label], progress=False,
                                   lead_seconds=lead_seconds)
    return got, list(inputs)

  plain, plain_inputs = examples(0.0)
  led, led_inputs = examples(1.0)
  none, sound = sf.NO_SOUND_EVENT, LABELS.index(label)
  clipped = [a[:int(sound_head.MAX_CLIP_SECONDS * 16000)] for a in plain_inputs]
  leads = [with_lead.size - clip.size for with_lead, clip in zip(led_inputs, clipped)]
  assert any(leads) and all(n % encode.chunk_samples == 0 for n in leads)
  targets = led.targets.tolist()
  at = 0
  for lead, clip, with_lead in zip(leads, clipped, led_inputs):
    np.testing.assert_array_equal(with_lead[lead:], clip)  # the same clip after its room
    own = sound_head.clip_chunk_targets(clip, sound, encode.chunk_samples).tolist()
    lead_chunks = lead // encode.chunk_samples
    assert targets[at:at + lead_chunks] == [none] * lead_chunks
    assert targets[at + lead_chunks:at + lead_chunks + len(own)] == own
    at += lead_chunks + len(own)
  assert at == len(targets) and sum(leads) // encode.chunk_samples == len(targets) - len(
      plain.targets)


def test_bank_examples_hear_a_share_of_the_same_clips_through_a_channel():
  from audio_interaction.corpus import effects
  from audio_interaction.corpus.sounds import SoundBank
  inputs = []

  def encode(audio):
    inputs.append(np.asarray(audio))
    chunks = -(-audio.size // encode.chunk_samples)
    return np.zeros((chunks, 1), np.float32)

  encode.chunk_samples = 1600
  bank = SoundBank(use_recordings=False)

  def examples(share):
    inputs.clear()
    got = sound_head.bank_examples(encode, bank, 8, seed=0, labels=["doorbell"],
                                   progress=False, lead_seconds=1.0, channel_share=share)
    return got, list(inputs)

  plain, plain_inputs = examples(0.0)
  heard, heard_inputs = examples(1.0)
  half, half_inputs = examples(0.5)
  # The same clips and leads, the same targets (those of the clip as recorded), whatever
  # the channel; only the sound differs.
  np.testing.assert_array_equal(heard.targets, plain.targets)
  np.testing.assert_array_equal(half.targets, plain.targets)
  assert [a.size for a in heard_inputs] == [a.size for a in plain_inputs]
  changed = [not np.allclose(a, b, atol=1e-6) for a, b in zip(heard_inputs, plain_inputs)]
  assert all(changed)
  half_changed = [not np.allclose(a, b, atol=1e-6) for a, b in zip(half_inputs, plain_inputs)]
  assert 0 < sum(half_changed) < len(half_changed)
  # Each heard clip is one of the room or microphone channels applied to the plain one.
  channel_rng = np.random.default_rng([0, 2])
  for plain_audio, heard_audio in zip(plain_inputs, heard_inputs):
    channel_rng.uniform()
    name = sound_head.HEARD_THROUGH[int(channel_rng.integers(len(sound_head.HEARD_THROUGH)))]
    expected = effects.CHANNELS[name](plain_audio, channel_rng)
    np.testing.assert_allclose(heard_audio, expected, atol=1e-6)
  with pytest.raises(ValueError, match="radio"):
    sound_head.bank_examples(encode, bank, 1, seed=0, labels=["doorbell"], progress=False,
                             channel_share=0.5, channels=("radio",))


def test_example_weights_by_hand():
  # none x4, a x2, b x1: class totals none 2 (= the 2 sound classes), a 1, b 1; so
  # per example none 1/2, a 1/2, b 1, then scaled to mean 1 (the mean was 4/7).
  weights = sound_head.example_weights(np.array([0, 0, 0, 0, 1, 1, 2]), classes=4)
  np.testing.assert_allclose(weights, [0.875] * 6 + [1.75], rtol=1e-6)


def test_fit_head_separates_clusters_in_raw_feature_units():
  rng = np.random.default_rng(1)
  centres = rng.normal(size=(4, 6)) * 3.0
  # Features far from standard (offset 50, scale 100): the fit standardises them and
  # folds that back, so the head reads raw features.
  def draw(n):
    targets = rng.integers(0, 4, n)
    return 50.0 + 100.0 * (centres[targets] + 0.3 * rng.normal(size=(n, 6))), targets
  x, y = draw(400)
  fit = sound_head.fit_head(sound_head.ChunkExamples(x.astype(np.float32), y.astype(np.int32)),
                            classes=5, steps=100)
  assert fit.kernel.shape == (6, 5) and fit.bias.shape == (5,)
  assert min(fit.recall.values()) == 1.0 and len(fit.recall) == 4  # class 4 has no examples
  fresh_x, fresh_y = draw(200)
  assert ((fresh_x @ fit.kernel + fit.bias).argmax(1) == fresh_y).mean() >= 0.97


def test_corpus_examples_drop_padding_chunks():
  calls = []

  def encode(audio):
    calls.append(audio.size)
    return np.arange(3 * 2, dtype=np.float32).reshape(3, 2) + audio[0]

  encode.chunk_samples = 4
  rows = [{"audio": np.full(12, 1.0, np.float32), "sound_events": np.array([0, 3, -1])},
          {"audio": np.full(12, 5.0, np.float32), "sound_events": np.array([2, -1, -1])}]
  examples = sound_head.corpus_examples(encode, rows, rows=2, seed=0, progress=False)
  assert sorted(examples.targets.tolist()) == [0, 2, 3]
  assert len(examples.features) == 3 and calls == [12, 12]
  quiet = sound_head.corpus_examples(encode, rows, rows=2, seed=0, progress=False,
                                     none_only=True)
  assert quiet.targets.tolist() == [0]
  np.testing.assert_array_equal(quiet.features, [[1.0, 2.0]])  # row 0's first chunk


def test_other_sounds_are_none_throughout_and_cut_to_the_clip_limit(tmp_path):
  import io
  import zipfile
  import soundfile
  from audio_interaction.corpus import real_audio
  lengths = []

  def encode(audio):
    lengths.append(audio.size)
    return np.ones((-(-audio.size // 4000), 3), np.float32)

  soundfile.write(tmp_path / "engine.wav", np.full(16000 * 10, 0.1, np.float32), 16000)
  door = io.BytesIO()
  soundfile.write(door, np.full(8000, 0.1, np.float32), 16000, format="WAV")
  with zipfile.ZipFile(tmp_path / "pak0.pk3", "w") as archive:
    archive.writestr("sound/movers/doors/door.wav", door.getvalue())
  refs = [real_audio.AudioRef("engines", str(tmp_path / "engine.wav"), "engine.wav"),
          real_audio.AudioRef("doors", str(tmp_path / "pak0.pk3"), "pak0.pk3",
                              "sound/movers/doors/door.wav")]
  examples = sound_head.other_sound_examples(encode, refs, progress=False)
  assert lengths == [int(sound_head.MAX_CLIP_SECONDS * 16000), 8000]  # the member read too
  assert examples.targets.tolist() == [sf.NO_SOUND_EVENT] * (32 + 2)
  empty = sound_head.other_sound_examples(encode, [], progress=False)
  joined = sound_head.ChunkExamples.concatenate([examples, empty])
  assert len(joined.targets) == 34  # an empty part of another width joins nothing


def test_other_sound_refs_are_the_unmapped_train_sounds_archive_members_too(tmp_path):
  import soundfile
  import zipfile
  sounds = tmp_path / "openarena-data" / "usr/share/games/openarena/baseoa"
  sounds.mkdir(parents=True)
  with zipfile.ZipFile(sounds / "pak0.pk3", "w") as archive:
    archive.writestr("sound/movers/doors/dr1_strt.wav", b"")
  warmux = tmp_path / "warmux-data" / "usr/share/games/warmux/sound/default/weapons"
  warmux.mkdir(parents=True)
  for name in ("explosion1.ogg", "flame.ogg", "m16.ogg"):
    soundfile.write(warmux / name, np.zeros(1600, np.float32), 16000)
  refs = sound_head.other_sound_refs(tmp_path)
  assert sorted(r.relpath.rsplit("/", 1)[-1] for r in refs) == [
      "dr1_strt.wav", "explosion1.ogg", "flame.ogg"]  # mapped or unruled sounds: not here


def _bundle(tmp_path, with_head: bool = True):
  tokenizer = ByteTokenizer()
  overrides = {"model.decoder.vocab_size": tokenizer.vocab_size}
  if with_head:
    overrides["model.sound_event_classes"] = len(LABELS)
  config = model_testing.small_config(**overrides)
  model = AudioInteractionModel(config)
  directory = tmp_path / ("head" if with_head else "plain")
  portable.save_bundle(directory, model.init(jax.random.key(0)), tokenizer, config,
                       metadata={"trained": "for a test"})
  return directory


def test_fit_bundle_head_changes_the_head_only(tmp_path):
  source = _bundle(tmp_path)
  out = tmp_path / "fitted"
  summary = sound_head.fit_bundle_head(source, out, train_audio_root=None, per_class=2,
                                       steps=20, progress=False)
  assert summary["chunks"]["none"] > 0 and summary["clips_per_class"] == 2
  assert summary["other_sound_recordings"] == 0  # generated sounds only: no recordings
  _, before, _ = portable.load_bundle(source)
  _, after, _ = portable.load_bundle(out)
  flat_before = jax.tree_util.tree_leaves_with_path(before)
  flat_after = dict(jax.tree_util.tree_leaves_with_path(after))
  changed = [jax.tree_util.keystr(path) for path, value in flat_before
             if not np.array_equal(value, flat_after[path])]
  assert changed and all("sound_event_head" in name for name in changed)
  metadata = json.loads((out / "metadata.json").read_text())
  assert metadata["trained"] == "for a test"
  assert metadata["sound_event_head_fit"]["train_recall"]


def test_a_bundle_without_a_head_gets_one_and_keeps_everything_else(tmp_path):
  plain = _bundle(tmp_path, with_head=False)
  out = tmp_path / "with_head"
  summary = sound_head.fit_bundle_head(plain, out, train_audio_root=None, per_class=2,
                                       steps=20, progress=False)
  assert summary["head_added"]
  config, after, _ = portable.load_bundle(out)
  assert config.model.sound_event_classes == len(worlds.SOUND_EVENT_LABELS)
  _, before, _ = portable.load_bundle(plain)
  assert model_testing.added_parameters(before, after) == [
      "['params']['sound_event_head']['bias']", "['params']['sound_event_head']['kernel']"]
  # What is written is the fit, not the fresh head it started from.
  plain_config, _, _ = portable.load_bundle(plain)
  _, fresh = sound_head.added_head(plain_config, before, seed=0)
  for name in ("kernel", "bias"):
    assert not np.allclose(after["params"]["sound_event_head"][name],
                           fresh["params"]["sound_event_head"][name])


def test_a_head_reading_lower_blocks_is_fitted_on_what_it_reads(tmp_path):
  """`read_blocks` widens the head's input to the chunk means of those blocks and the
  final frames; the written head gives, on a clip, the fit's own probabilities of the
  features it was fitted on."""
  source = _bundle(tmp_path)
  summary = sound_head.fit_bundle_head(source, tmp_path / "wide", train_audio_root=None,
                                       per_class=2, steps=20, progress=False,
                                       read_blocks=(0,))
  assert summary["read_blocks"] == [0] and not summary["head_added"]
  config, params, _ = portable.load_bundle(tmp_path / "wide")
  assert tuple(config.model.sound_event_blocks) == (0,)
  model = AudioInteractionModel(config)
  width = model.config.encoder.d_model
  assert params["params"]["sound_event_head"]["kernel"].shape == (2 * width, len(LABELS))
  features = clip_encoder.SoundEventEncoder(model, params)
  rng = np.random.default_rng(0)
  clip = (0.1 * rng.normal(size=3 * model.config.chunk_samples)).astype(np.float32)
  read = features(clip)
  assert read.shape == (3, 2 * width)
  # The second half is the final frames' chunk means (what a head without blocks reads);
  # the first is block 0's, which differs.
  final = clip_encoder.ChunkEncoder(model, params)(clip)
  np.testing.assert_allclose(read[:, width:], final, atol=1e-5)
  assert np.abs(read[:, :width] - final).max() > 1e-2
  # ... and it is block 0's output, chunk by chunk.
  _, captured = model.network.apply(
      params, model.features(jnp.asarray(clip[None])), None,
      method=lambda net, mel, state: net.encoder(mel, state),
      capture_intermediates=lambda module, _: type(module).__name__ == "EncoderBlock")
  block0 = np.asarray(captured["intermediates"]["encoder"]["block0"]["__call__"][0][0][0])
  np.testing.assert_allclose(read[:, :width], block0.reshape(3, -1, width).mean(1), atol=1e-5)
  head = params["params"]["sound_event_head"]
  logits = model.forward(params, jnp.zeros((1, 4), jnp.int32), jnp.asarray(clip[None]),
                         jnp.zeros((1, 4), jnp.int32)).sound_event_logits[0]
  np.testing.assert_allclose(logits, read @ np.asarray(head["kernel"]) + np.asarray(head["bias"]),
                             atol=1e-4)
  # Back to the final frames alone: the head is narrow again.
  sound_head.fit_bundle_head(tmp_path / "wide", tmp_path / "narrow", train_audio_root=None,
                             per_class=2, steps=20, progress=False, read_blocks=())
  config, params, _ = portable.load_bundle(tmp_path / "narrow")
  assert tuple(config.model.sound_event_blocks) == ()
  assert params["params"]["sound_event_head"]["kernel"].shape == (width, len(LABELS))


@pytest.mark.parametrize("positions, moved", [("rope", False), ("learned", True)])
def test_random_clip_positions_reach_the_fit_where_positions_are_absolute(
    tmp_path, positions, moved):
  """Clips encoded at random places of the position window give another head than clips
  from its start, for an absolute position table; rotary positions give the same."""
  tokenizer = ByteTokenizer()
  overrides = {"model.decoder.vocab_size": tokenizer.vocab_size,
               "model.sound_event_classes": len(LABELS)}
  if positions == "learned":
    overrides.update(model_testing.WHISPER_ENCODER)
  config = model_testing.small_config(**overrides)
  model = AudioInteractionModel(config)
  source = portable.save_bundle(tmp_path / "b", model_testing.perturbed(
      model.init(jax.random.key(0)), seed=1), tokenizer, config)
  heads = {}
  for where in ("start", "random"):
    summary = sound_head.fit_bundle_head(source, tmp_path / where, train_audio_root=None,
                                         per_class=2, steps=20, progress=False,
                                         first_positions=where)
    assert summary["first_positions"] == where
    heads[where] = portable.load_bundle(tmp_path / where)[1]["params"]["sound_event_head"]
  difference = np.abs(np.asarray(heads["start"]["kernel"], np.float32)
                      - np.asarray(heads["random"]["kernel"], np.float32)).max()
  assert (difference > 1e-3) == moved, difference


def test_fit_sound_head_cli_names_what_is_wrong(tmp_path, capsys):
  plain = _bundle(tmp_path, with_head=False)
  assert cli.main(["fit-sound-head", "--bundle", str(plain), "--out", str(tmp_path / "x"),
                   "--train-audio", str(tmp_path / "nowhere")]) != 0
  assert "fetch-train-audio" in capsys.readouterr().err
  assert not (tmp_path / "x").exists()  # nothing written


def test_fit_sound_head_cli_passes_where_clips_start(tmp_path, capsys):
  plain = _bundle(tmp_path, with_head=False)
  assert cli.main(["fit-sound-head", "--bundle", str(plain), "--out", str(tmp_path / "x"),
                   "--procedural-only", "--per-class", "1", "--steps", "5",
                   "--clip-positions", "start", "--quiet-lead", "0.5",
                   "--channel-share", "0.25"]) == 0, capsys.readouterr().err
  fit = json.loads((tmp_path / "x" / "metadata.json").read_text())["sound_event_head_fit"]
  assert fit["first_positions"] == "start" and fit["lead_seconds"] == 0.5
  assert fit["channel_share"] == 0.25 and fit["channels"] == ["room", "microphone"]
  assert cli.main(["fit-sound-head", "--bundle", str(plain), "--out", str(tmp_path / "y"),
                   "--procedural-only", "--quiet-lead", "-1"]) != 0
  assert "--quiet-lead -1" in capsys.readouterr().err and not (tmp_path / "y").exists()
  assert cli.main(["fit-sound-head", "--bundle", str(plain), "--out", str(tmp_path / "y"),
                   "--procedural-only", "--channel-share", "1.5"]) != 0
  assert "--channel-share 1.5" in capsys.readouterr().err and not (tmp_path / "y").exists()
  for blocks, error in (("0,x", "--read-blocks '0,x'"), ("5", "model.sound_event_blocks=(5,)"),
                        ("1,0", "model.sound_event_blocks=(1, 0): must be a tuple of encoder block")):
    assert cli.main(["fit-sound-head", "--bundle", str(plain), "--out", str(tmp_path / "z"),
                     "--procedural-only", "--per-class", "1", "--steps", "5",
                     "--read-blocks", blocks]) != 0
    assert error in capsys.readouterr().err and not (tmp_path / "z").exists()
  assert cli.main(["fit-sound-head", "--bundle", str(plain), "--out", str(tmp_path / "z"),
                   "--procedural-only", "--per-class", "1", "--steps", "5",
                   "--read-blocks", "1"]) == 0, capsys.readouterr().err
  fit = json.loads((tmp_path / "z" / "metadata.json").read_text())["sound_event_head_fit"]
  assert fit["read_blocks"] == [1] and fit["head_added"]
