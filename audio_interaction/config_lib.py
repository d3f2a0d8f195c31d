"""Configs: defaults shared by every experiment, loading ``experiments/*.py`` files, overrides.

Configs are `ml_collections.ConfigDict`s, locked after loading so that a typo in a
field name (in a file or an override) is an error instead of a silent new field.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import math
import pathlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import ml_collections

from audio_interaction import stream_format as sf


class ConfigError(ValueError):
  """A config (file, override, saved JSON) names an unknown field or holds a bad value.

  The message is one line and names the field.
  """

# Logical axis -> mesh axis. Activations and parameters name logical axes
# (see `audio_interaction.model.layers`); only this table knows about the mesh.
DEFAULT_LOGICAL_AXIS_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("frames", None),
    ("embed", "fsdp"),
    ("act_embed", None),
    ("mlp", "tensor"),
    ("act_mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("act_heads", "tensor"),
    ("head_dim", None),
    ("vocab", "tensor"),
    ("act_vocab", "tensor"),
    ("mel", None),
    ("conv_in", None),
    ("conv_out", "tensor"),
    ("conv_kernel", None),
    ("decisions", None),
    ("cache", None),
)


# The real recorded lines `corpus/real_speech.recorded_lines` reads (its `SOURCES`).
ENGLISH_SPEECH_SOURCES: tuple[str, ...] = ("hedgewars-en", "amazon-queen-en")
RECORDED_SPEECH_SOURCES: tuple[str, ...] = ("fillets-cs",) + ENGLISH_SPEECH_SOURCES
DEFAULT_RECORDED_SPEECH_SOURCES: tuple[str, ...] = ("fillets-cs",)


def base_config() -> ml_collections.ConfigDict:
  """Every field an experiment may set, with defaults. Experiments change values only."""
  config = ml_collections.ConfigDict()

  config.audio = ml_collections.ConfigDict()
  config.audio.sample_rate = 16000
  config.audio.n_mels = 80
  config.audio.n_fft = 400
  config.audio.hop_length = 160
  config.audio.fmin = 0.0
  config.audio.fmax = 8000.0
  # "whisper": log10, clamp to (max - 8), (x + 4) / 4 — with a causal (left-padded)
  # frame alignment so that it can stream. "natural": log(mel + 1e-6).
  config.audio.log_style = "whisper"
  # Whisper clamps relative to the max over the whole clip, which a stream cannot
  # know; streaming uses this fixed floor in log10 units instead.
  config.audio.log_floor = -8.0
  config.audio.chunk_ms = sf.DEFAULT_CHUNK_MS

  config.model = ml_collections.ConfigDict()
  encoder = config.model.encoder = ml_collections.ConfigDict()
  encoder.d_model = 128
  encoder.num_layers = 2
  encoder.num_heads = 4
  encoder.mlp_dim = 256
  encoder.conv_channels = 64
  encoder.conv_kernel = 3
  encoder.subsampling = 4  # two stride-2 causal convolutions
  encoder.left_chunks = 4  # chunks of left context each frame attends to
  encoder.block = "transformer"  # or "conformer"
  encoder.conformer_kernel = 7
  # Options that pretrained audio towers need (Whisper, Qwen2-Audio, Qwen2.5-Omni); the
  # defaults are the original encoder. "whisper": Whisper's two 1-D convolutions (k=3,
  # strides 1 and 2, GELU; subsampling must be 2) made causal, d_model channels.
  encoder.stem = "conv2d"
  encoder.norm = "rms"  # or "layer": LayerNorm with bias
  encoder.mlp = "swiglu"  # or "gelu": fc1 -> GELU -> fc2, with biases
  encoder.bias = False  # biases in the attention projections
  # "rope" (rotary, in attention), or absolute "learned" / "sinusoidal" embeddings
  # added after the stem; these restart every `max_positions` encoder frames.
  encoder.max_positions = 1500  # Whisper's 30 s table
  # Restart them sooner, every `position_period` frames (0: every `max_positions`): a
  # stream then stays within the first rows of the table, where its heads and decoder
  # were trained (a Whisper table's later rows meet sounds the heads never heard there).
  encoder.position_period = 0
  encoder.positions = "rope"
  # The encoder's norm epsilon; None: model.norm_eps (Whisper's LayerNorm uses 1e-5).
  encoder.norm_eps = ml_collections.config_dict.placeholder(float)

  decoder = config.model.decoder = ml_collections.ConfigDict()
  decoder.vocab_size = 512
  decoder.d_model = 128
  decoder.num_layers = 2
  decoder.num_heads = 4
  decoder.num_kv_heads = 2
  decoder.head_dim = 32
  decoder.mlp_dim = 256
  decoder.window = 256  # attention window = ring KV-cache size, in positions
  decoder.rope_theta = 10000.0
  decoder.qkv_bias = False  # biases of the query/key/value projections (Qwen2)
  # The LM head reads the token table (Qwen2.5-0.5B) instead of its own kernel (Llama).
  decoder.tie_embeddings = False
  # A bias on the decision head (P(SPEAK) at `<decide>`): trained models have none; a
  # head refitted over the frozen decoder's hidden states has one (`fit-decision-head`).
  decoder.decision_bias = False
  # Positions at a stream's start (its instruction) that stay in every later query's
  # view, an attention sink: without it the instruction leaves the window after
  # `window` positions (the tiny decoder's 512: ~27 s of quiet listening).
  decoder.pinned_prefix = 0
  # A copy head (a pointer over the current instruction's first `copy_memory` text
  # tokens, mixed into the LM head's distribution by a learned gate): replies that name
  # the instruction's keyword or sound class copy it instead of recalling it.
  decoder.copy_instruction = False
  decoder.copy_memory = 64

  config.model.slots_per_chunk = 2
  config.model.tokens_per_chunk = 4
  config.model.dtype = "float32"
  config.model.param_dtype = "float32"
  config.model.norm_eps = 1e-6
  # Streaming steps write the ring KV caches "before" attending (in place, the default)
  # or "after" (the older order, which copies the caches; kept for the benchmark).
  config.model.cache_write = "before"
  # Outputs of the encoder's sound-event head (per chunk: no labelled sound, or one
  # of corpus.worlds.SOUNDS; the corpus's `sound_events`): 0 = no head. A head must
  # have len(worlds.SOUND_EVENT_LABELS) outputs (`train.trainer` checks it).
  config.model.sound_event_classes = 0
  # Lower encoder blocks whose per-chunk mean frames the sound-event head reads beside
  # the final frames' mean (increasing block indices; () = the final mean alone): Whisper's
  # top blocks are tuned to speech, lower ones keep more of a sound's acoustics (README,
  # "What the head reads"). Set by `fit-sound-head --read-blocks`.
  config.model.sound_event_blocks = ()
  # The decoder hears what the sound-event head heard: each chunk's class probabilities,
  # through a learned embedding (zero at the start, so a trained model is unchanged),
  # added to the chunk's audio slots. The tiny model's head named 16 of 20 held-out sounds
  # its decoder named 3 of (docs/real_audio_log.md, "Sounds the encoder is taught").
  config.model.sound_event_feed = False
  # The decoder hears each class as the words of its name: the head's class probabilities
  # over the mean token embeddings of each class's name ("a clock ticking"), through a
  # gain and a projection started at zero, added to the chunk's audio slots. Unlike the
  # learned feed above, nothing in it is one class's own, so what the decoder learns of
  # one name could carry to the others; measured, the tiny decoder ignores it (zeroing the
  # trained feed changes no figure: docs/real_audio_log.md, "Naming what the head heard"). What
  # moves the replies is the untrained `infer.sound_name_bias`.
  config.model.sound_event_feed_names = False
  # The token ids of each class's name (one tuple per class, () for "no sound"), filled
  # from the data's tokenizer by the train loop and the export when the names are fed
  # (`train/sound_names.py`); a bundle keeps them in its config.
  config.model.sound_event_name_tokens = ()
  # The encoder's turn-end head: per chunk, P(the user's turn has ended) from the mean
  # of its frames, fitted over a frozen encoder by `fit-turn-head`
  # (`train/turn_head.py`); what the hybrid policy reads with
  # `infer.hybrid_signal="turn_end"`.
  config.model.turn_end_head = False

  config.sharding = ml_collections.ConfigDict()
  # Mesh axis sizes; -1 takes the remaining devices.
  config.sharding.mesh = {"data": -1, "fsdp": 1, "tensor": 1}
  config.sharding.logical_axis_rules = DEFAULT_LOGICAL_AXIS_RULES

  config.data = ml_collections.ConfigDict()
  config.data.dir = "data/tiny"  # built by `audio-interaction build-data`
  config.data.train_split = "train"
  config.data.eval_split = "eval"
  config.data.batch_size = 8  # rows per batch per process
  config.data.max_len = 384  # positions per row
  config.data.max_chunks = 48  # 160 ms chunks per row (7.7 s)
  config.data.max_transcript = 128  # transcript tokens per row (CTC targets)
  # The CTC head's targets: the transcript's "tokens", or its "characters" (each word
  # spelled one character per id of the same vocabulary, `Tokenizer.spell`; about 4x
  # longer, so raise max_transcript). Inference is unchanged either way.
  config.data.ctc_targets = "tokens"
  # {ability name: weight}; None reads the split uniformly. Curriculum stages may
  # override it (train.stages).
  config.data.mixture = ml_collections.config_dict.placeholder(dict)
  # First-fit pack several examples per row (data/pipeline.py). Exact: the model and
  # the losses keep a row's examples apart (tests/test_packing.py). Off: on the tiny
  # corpus (streams ~10 s, cut to fit a row) a packed batch holds only ~3 % more
  # examples (97 % of packed rows hold one, none more than 2) and the masked step
  # costs 0-17 % more, so packed tokens/s measured 0.87-1.0x of padded
  # (benchmarks/train_step.py --sections packing). Worth it for shorter examples.
  config.data.packing = False
  # Most examples in one packed row; the per-segment CTC costs a little per slot.
  config.data.max_segments = 2
  config.data.overflow = "truncate"
  config.data.read_threads = 2
  config.data.prefetch_batches = 2
  config.data.num_workers = 0
  # Hold completed replies back up to this many chunks in training batches (drawn per
  # epoch, `data/reply_delay.py`), so a reply a timer or hybrid policy starts late is
  # still the answer; 0 = off. Evaluation batches are never delayed.
  config.data.reply_delay_chunks = 0
  config.data.reply_delay_probability = 0.5
  # Domain randomisation of the generated corpus (`build-data`; corpus/effects.py
  # `randomize`): each utterance gets each effect with its probability, and the
  # voices widen to every usable espeak-ng variant with engines weighted by how human
  # they sound (speech.HUMAN_ENGINE_WEIGHTS). Off: the corpus renders as before.
  randomize = config.data.randomize = ml_collections.ConfigDict()
  randomize.enabled = False
  randomize.wide_voices = True
  randomize.p_speed = 0.5  # tempo 0.85-1.2x, pitch kept
  randomize.p_pitch = 0.4  # -3..+3 semitones
  randomize.p_formant = 0.4  # vocal tract 0.88-1.14x, pitch kept
  randomize.p_telephone = 0.15  # 300-3400 Hz, 8 kHz, mu-law
  randomize.p_room = 0.35  # pyroomacoustics shoebox, RT60 0.15-0.8 s
  randomize.p_mic = 0.5  # random EQ
  randomize.p_noise = 0.3  # coloured noise at 10-35 dB SNR
  # Whole utterances said by the engine in one go (connected speech, sentence
  # intonation) rather than word by word; the embedded model heard only the latter and
  # its CTC WER on the same sentences and voices is 42 % word by word, 62 % connected
  # (docs/connected_speech.py); fine-tuned on connected speech: 47 % and 43 %.
  randomize.p_connected = 0.8
  # Real recordings of the TRAIN-side Debian packages (corpus/real_audio.py), extracted
  # by `audio-interaction fetch-train-audio`: their labelled sounds join the sound bank
  # and their music/ambience loops play as a bed under whole training streams. "" = off.
  randomize.train_audio_root = ""
  randomize.p_ambience = 0.5  # chance of a real music/ambience bed under a stream
  randomize.ambience_snr_db = (12.0, 35.0)  # speech level over the bed, dB
  # Chance that a TRAIN dictation says a general English sentence (FreedroidRPG's
  # dialogue, corpus/texts.py; needs train_audio_root) instead of a closed world's:
  # the worlds' 345 word types cover 47 % of the real dev transcripts' words. Not
  # trained with yet, so off.
  randomize.p_general_text = 0.0
  # Chance that an offline transcription clip, or a question with a pause inside, is a
  # real recorded line of the TRAIN packages' Czech dub (corpus/real_speech.py; needs
  # train_audio_root): the only human voices the TRAIN side has with their text. Off
  # until a run trained with it is better on the real dev set.
  randomize.p_recorded_speech = 0.0
  # Which recorded lines: "fillets-cs" (the Czech dub, 1,622 lines) and/or
  # "hedgewars-en" (the English game voices with Whisper's confident transcripts,
  # corpus/hedgewars_en.jsonl; exclamations) and/or "amazon-queen-en" (the spoken lines
  # of Flight of the Amazon Queen, the same way, corpus/amazon_queen_en.jsonl); the
  # English ones are offline transcription clips only.
  randomize.recorded_speech_sources = DEFAULT_RECORDED_SPEECH_SOURCES
  # Whether the recorded lines also go through the per-utterance effects above (speed,
  # pitch, formants, mic, room, telephone, noise). Off: in one 1,500-step fine-tune
  # (README, turns_aq3) they made the real paused turns harder to learn and helped
  # nothing on the DEV set.
  randomize.recorded_effects = False
  # Quiet before a stream's first sound (s), drawn uniformly. The first encoder frame of
  # a stream is unlike any other (no left context), and with speech always starting in
  # the first second a CTC head learns to emit the corpus's commonest first word there
  # ("what" first on 386 of 389 real dev clips, `whisper_tiny.py:chunk320`; README).
  randomize.lead_in_seconds = (0.2, 1.0)

  config.train = ml_collections.ConfigDict()
  config.train.steps = 2000
  config.train.learning_rate = 1e-3
  config.train.warmup_steps = 100
  config.train.end_learning_rate_fraction = 0.05
  config.train.weight_decay = 0.01
  config.train.clip_norm = 1.0
  config.train.grad_accum_steps = 1
  config.train.reply_loss_weight = 1.0
  config.train.decision_loss_weight = 1.0
  # Auxiliary CTC loss of the encoder's frames against the transcript of what is
  # heard: it teaches the encoder words before the decoder needs them. 0 turns it off.
  config.train.ctc_loss_weight = 0.3
  # Cross-entropy of the sound-event head per audio chunk (needs
  # model.sound_event_classes): it teaches the encoder what a sound is, where the
  # decoder's few answer tokens alone did not.
  config.train.sound_event_loss_weight = 0.0
  # Evens out the sound classes in that loss: class c's chunks weigh
  # (mean count / count_c) ** balance, counted over the train split (0: by the data's
  # counts, where long sounds outnumber a ring or a knock; 1: every class alike).
  # "None" keeps its share (`losses.balanced_sound_event_weights`).
  config.train.sound_event_balance = 0.0
  # SPEAK is rare; its cross-entropy term is weighted up by this factor.
  config.train.speak_class_weight = 4.0
  config.train.log_every = 20
  config.train.eval_every = 200
  config.train.eval_batches = 8
  config.train.checkpoint_every = 200
  config.train.keep_checkpoints = 3
  # Wall-clock budget of one `train` run's steps (s; 0 = none): the first step after it
  # is the run's last (final eval and checkpoint), stopped_by="max_seconds"; a new run
  # resumes from there with a new budget. For runs compared at equal CPU time.
  config.train.max_seconds = 0.0
  # Start a new run from a bundle's weights (a folder written by `export`, or "embedded"
  # for the shipped model) with a fresh optimizer; its model config and tokenizer must
  # equal this config's. Ignored once the workdir has a checkpoint. "" = random init.
  config.train.init_from = ""
  # Curriculum: ((until_step, {ability: weight}), ...); empty = config.data.mixture
  # throughout.
  config.train.stages = ()
  # Evaluators run during training (big_vision style): {name: {"type": "heldout",
  # "every": steps, "streams": per sub-task, "subtasks": (names,) or absent for all
  # online ones}}. "heldout" runs the model free (greedy, chunk by chunk, through the
  # stepper with `config.infer`'s policy) on new held-out streams and logs recall,
  # exact text, precision and false triggers. Empty: only the teacher-forced eval.
  config.train.evals = ml_collections.config_dict.placeholder(dict)
  # Peak FLOP/s per device for MFU; 0 measures a matmul at start-up.
  config.train.peak_flops_per_device = 0.0
  # Parameters that the optimizer leaves unchanged: glob patterns over parameter paths
  # ("encoder/*", "decoder/block*/attention/*"); matched parameters get no optimizer
  # state (optax.multi_transform). Empty: every parameter trains.
  config.train.freeze = ()
  # Parameters that train at `slow_lr_scale` times the learning rate (same patterns as
  # `freeze`, which wins where both match): pretrained layers fine-tuned under fresh
  # heads, which the full rate would pull towards the corpus's synthetic voices.
  config.train.slow = ()
  config.train.slow_lr_scale = 0.1
  # On-the-fly augmentation inside the jitted train step (model/augment.py), drawn
  # per row from (seed, step, row): new every epoch, identical after a resume.
  # Evaluation never augments. Off by default: the step is then exactly as before.
  augment = config.train.augment = ml_collections.ConfigDict()
  augment.enabled = False
  augment.probability = 1.0  # chance that a row is augmented at all
  augment.gain_db = (-6.0, 6.0)  # uniform random gain, dB
  augment.noise_probability = 0.5  # chance of coloured noise on an augmented row
  augment.noise_snr_db = (5.0, 30.0)  # uniform SNR of that noise over the row's real chunks
  augment.spec_time_masks = 2  # SpecAugment time masks per row ...
  augment.spec_time_mask_frames = 10  # ... each 0..this many 10 ms frames
  augment.spec_freq_masks = 2  # frequency masks per row ...
  augment.spec_freq_mask_bins = 8  # ... each 0..this many mel bins

  # The operating point of inference: saved in bundles and used by default by demo,
  # listen, heldout and eval (each may override it on its command line).
  config.infer = ml_collections.ConfigDict()
  # Who decides when to speak: "model" (P(SPEAK) >= threshold), "silence_timer"
  # (voice activity + `silence_seconds` of silence), "hybrid" (the model once
  # `min_silence_seconds` of silence have passed, or the timer at `silence_seconds`), or
  # "gated_timer" (after `silence_seconds` of silence, only if P(SPEAK) >= threshold:
  # the VAD says when, the model whether).
  config.infer.policy = "model"
  config.infer.threshold = 0.5
  config.infer.vad = "silero"  # "silero", "webrtc" or "energy"
  config.infer.silence_seconds = 0.7
  config.infer.min_silence_seconds = 0.2
  # What the hybrid policy's early reply reads: the decoder's P(SPEAK) ("decision"),
  # the encoder's turn-end head's P(turn ended) ("turn_end", model.turn_end_head), or
  # that probability from the prosody before the pause ("prosody": the logistic model
  # `prosody_turn_end`, {"kernel": 14 x 2, "bias": 2}, `fit-turn-head --features
  # prosody`), whose replies also need P(SPEAK) >= `hybrid_gate` (prosody says when,
  # the model whether).
  config.infer.hybrid_signal = "decision"
  config.infer.prosody_turn_end = {}
  config.infer.hybrid_gate = 0.0
  # Sampling of reply tokens: temperature 0 is greedy; top_p < 1 is nucleus sampling.
  config.infer.temperature = 0.0
  config.infer.top_p = 1.0
  # Replies biased towards the sounds the sound-event head heard: this many nats times
  # each class's lately heard probability (decayed by `sound_name_decay` per chunk) are
  # added to the logits of its name's tokens before sampling (`infer/engine.py`). The
  # tiny decoder answers held-out sounds with a few stock names where its head names
  # them (docs/real_audio_log.md, "Naming what the head heard"); 0 = off.
  config.infer.sound_name_bias = 0.0
  config.infer.sound_name_decay = 0.95
  # ... only where the decoder gives the names' tokens (of any class) at least this
  # probability: the decoder says when a sound is named, the head which.
  config.infer.sound_name_gate = 0.1
  # ... and each name token once per reply (held on, the bias could make a reply run on
  # through names).
  config.infer.sound_name_once = False
  # ... and each name whole: a name's first token where a name may start, then, once
  # the reply has started one, its next tokens until it is said ("sm" + "oke alarm", not
  # "sm" + "cat meowing"); otherwise every token of a name, in any order.
  config.infer.sound_name_whole = False
  # The longest reply (tokens, <eor> included) and the longest offline answer.
  config.infer.max_reply_tokens = 64
  config.infer.max_answer_tokens = 96
  # Weights of the inference engine: "float32", or "int8" (dense kernels quantized at
  # load, one scale per output channel, dequantized inside each jitted step).
  config.infer.weights = "float32"
  # Alerts from the sound-event head (`infer/sound_alerts.py`): a class that needs
  # attention heard with probability >= this for `sound_alert_chunks` chunks running
  # makes the row say that class's alert; 0 turns it off (the decoder alone decides).
  # A class does not alert again within `sound_alert_hold_seconds`.
  config.infer.sound_alert_threshold = 0.0
  config.infer.sound_alert_chunks = 1
  config.infer.sound_alert_hold_seconds = 10.0
  # One alert per sound: the alerting classes' probabilities summed against the
  # threshold, the class named by the most evidence, the row quiet until no alerting
  # class has been heard for the hold.
  config.infer.sound_alert_once_per_sound = False
  # What the instruction asks to be told, watched by the heads
  # (`infer/instruction_watch.py`): "tell me when you hear a dog barking" answered "i
  # hear a dog barking" when the sound-event head gives the class probability >= this
  # for `sound_watch_chunks` chunks running, "tell me when you have heard three crashes"
  # at the third; 0 turns it off (the decoder alone answers). A sound ends after
  # `sound_watch_gap_seconds` unheard (the corpus's counted sounds are >= 0.3 s apart);
  # a watched class is answered again only after `sound_watch_hold_seconds` unheard.
  # `word_watch`: words the instruction names ("whenever you hear the word seven", "when
  # I say report, list the sounds you heard") are heard in the CTC transcript, and a
  # spoken request ("tell me when you hear rain instead") in it, or the model's own "ok,
  # i will listen for rain", moves a sound watch. A word or cue is answered once the
  # transcript goes on with another word or adds nothing for `word_watch_pause_seconds`
  # (0.48: chosen on the synthetic `eval --seed 7000` streams; one chunk answered early).
  config.infer.sound_watch_threshold = 0.0
  config.infer.sound_watch_chunks = 1
  config.infer.sound_watch_gap_seconds = 0.3
  config.infer.sound_watch_hold_seconds = 10.0
  config.infer.word_watch = False
  config.infer.word_watch_pause_seconds = 0.48
  # Questions about a clip's sounds ("what sound is this?", "how many doorbell rings
  # ...?", "is there a dog barking ...?", "which sound comes first?") answered from the
  # sound-event head (`infer/clip_questions.py`), a sound being what the sound watch
  # hears (its threshold must be > 0). Off: the decoder answers every question.
  config.infer.sound_questions = False

  # Starting weights: local `transformers` checkpoint directories (config.json +
  # *.safetensors) imported when training starts (`model/pretrained.py`). Empty: random.
  config.init = ml_collections.ConfigDict()
  # WhisperEncoder weights (also Whisper, Qwen2-Audio's audio tower) -> the encoder:
  # a directory (safetensors, or a CTranslate2 Whisper model.bin), or
  # "installed:whisper-tiny.en" (the `whisper` extra's package).
  config.init.encoder_checkpoint = ""
  # Qwen2ForCausalLM / LlamaForCausalLM weights -> the decoder.
  config.init.decoder_checkpoint = ""

  # `audio-interaction distill-encoder` (train/distill.py): the chunk-causal encoder
  # learns, on unlabelled audio, the features of the same pretrained encoder run over
  # whole `window_ms` windows (init.encoder_checkpoint is the teacher, and the start
  # unless `init_student` names another).
  config.distill = ml_collections.ConfigDict()
  config.distill.steps = 400
  # The student's starting weights: a directory in the transformers layout (a former
  # run's `workdir/encoder`, e.g. distilled at another chunk length); "" = the teacher's.
  config.distill.init_student = ""
  config.distill.batch_size = 2
  config.distill.learning_rate = 1e-4
  config.distill.warmup_steps = 20
  # Whisper's window; a multiple of audio.chunk_ms is not needed (the student reads the
  # whole chunks inside it).
  config.distill.window_ms = 30000
  # Windows holding one clip and then silence (a short clip padded to the window, as
  # Whisper reads one); the others are filled with clips and short gaps.
  config.distill.p_padded = 0.5
  # Where the audio comes from: the corpus's train streams (data.dir) and/or the real
  # recorded speech of the TRAIN packages (data.randomize.train_audio_root).
  config.distill.corpus_streams = True
  config.distill.recorded_speech = True
  config.distill.log_every = 10
  config.distill.checkpoint_every = 50

  config.seed = 0
  return config


# ----------------------------------------------------------------------------- rules
# Every field of `base_config` has one rule (tests check that none is missing):
# its type and range, in the words the error message uses. Relations between
# fields are checked in `validate` after every field passed its own rule.


@dataclasses.dataclass(frozen=True)
class Rule:
  """What a field may hold: `accepts(value)`, described by `describe` ("an int >= 1")."""

  describe: str
  accepts: Callable[[Any], bool]


def _is_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


def _bounds(lo, hi, lo_open: bool, hi_open: bool) -> str:
  if lo is not None and hi is not None:
    return f" in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
  if lo is not None:
    return f" {'>' if lo_open else '>='} {lo}"
  if hi is not None:
    return f" {'<' if hi_open else '<='} {hi}"
  return ""


def _in_bounds(value, lo, hi, lo_open: bool, hi_open: bool) -> bool:
  return ((lo is None or (value > lo if lo_open else value >= lo)) and
          (hi is None or (value < hi if hi_open else value <= hi)))


def integer(lo: int | None = None, hi: int | None = None) -> Rule:
  """An int (not a bool, not a float) in [lo, hi]."""
  return Rule("an int" + _bounds(lo, hi, False, False),
              lambda v: _is_int(v) and _in_bounds(v, lo, hi, False, False))


def number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
           hi_open: bool = False) -> Rule:
  """A finite int or float (not a bool) within the bounds."""
  return Rule("a number" + _bounds(lo, hi, lo_open, hi_open),
              lambda v: _is_number(v) and _in_bounds(v, lo, hi, lo_open, hi_open))


def one_of(*options) -> Rule:
  return Rule("one of " + ", ".join(repr(o) for o in options),
              lambda v: type(v) in {type(o) for o in options} and v in options)


def text() -> Rule:
  return Rule("a non-empty string", lambda v: isinstance(v, str) and bool(v.strip()))


def optional_text() -> Rule:
  """A string; "" means "not set"."""
  return Rule("a string (\"\" for none)", lambda v: isinstance(v, str))


def flag() -> Rule:
  return Rule("True or False", lambda v: isinstance(v, bool))


def _is_mixture(value) -> bool:
  return (isinstance(value, Mapping) and bool(value)
          and all(k in sf.ABILITIES and _is_number(w) and w >= 0
                  for k, w in value.items())
          and any(w > 0 for w in value.values()))


_MIXTURE = (f"a mapping of abilities ({', '.join(sf.ABILITIES)}) to weights >= 0, "
            "one of them > 0")

_MESH_AXES = ("data", "fsdp", "tensor")


def _is_name_tokens(value) -> bool:
  return (isinstance(value, (tuple, list))
          and all(isinstance(name, (tuple, list)) and all(_is_int(t) and t >= 0 for t in name)
                  for name in value))


def _is_increasing_indices(value) -> bool:
  return (isinstance(value, tuple) and all(_is_int(v) and v >= 0 for v in value)
          and all(a < b for a, b in zip(value, value[1:])))


def _is_mesh(value) -> bool:
  return (isinstance(value, Mapping) and set(value) <= set(_MESH_AXES)
          and all(_is_int(v) and (v == -1 or v >= 1) for v in value.values())
          and sum(v == -1 for v in value.values()) <= 1)


# The prosody turn-end model's inputs (`audio.prosody.NUM_FEATURES`: a sibling layer, so
# named here too; tests/test_prosody.py holds the two equal).
PROSODY_FEATURES = 14


def _is_prosody_model(value) -> bool:
  if not isinstance(value, Mapping):
    return False
  if not value:
    return True
  if set(value) != {"kernel", "bias"}:
    return False
  kernel, bias = value["kernel"], value["bias"]
  rows_ok = (isinstance(kernel, (list, tuple)) and len(kernel) == PROSODY_FEATURES and all(
      isinstance(row, (list, tuple)) and len(row) == 2 and all(map(_is_number, row))
      for row in kernel))
  return rows_ok and isinstance(bias, (list, tuple)) and len(bias) == 2 and all(
      map(_is_number, bias))


def _is_axis_rules(value) -> bool:
  def mesh_axes(target):
    if target is None or isinstance(target, str):
      return True
    return isinstance(target, tuple) and all(isinstance(t, str) for t in target)
  return isinstance(value, tuple) and all(
      isinstance(rule, tuple) and len(rule) == 2 and isinstance(rule[0], str)
      and mesh_axes(rule[1]) for rule in value)


def glob_patterns(example: str) -> Rule:
  """A tuple of non-empty glob patterns over parameter paths."""
  return Rule(f"a tuple of non-empty glob patterns over parameter paths (e.g. {example})",
              lambda v: isinstance(v, tuple) and all(isinstance(p, str) and p.strip() for p in v))


def interval(lo: float | None = None, hi: float | None = None) -> Rule:
  """A (low, high) pair of numbers with low <= high, both within [lo, hi]."""
  return Rule("a (low, high) pair of numbers with low <= high" + _bounds(lo, hi, False, False),
              lambda v: (isinstance(v, tuple) and len(v) == 2 and all(_is_number(x) for x in v)
                         and v[0] <= v[1]
                         and all(_in_bounds(x, lo, hi, False, False) for x in v)))


def _is_stages(value) -> bool:
  if not isinstance(value, tuple):
    return False
  steps = []
  for stage in value:
    if not (isinstance(stage, tuple) and len(stage) == 2 and _is_int(stage[0])
            and stage[0] >= 1 and _is_mixture(stage[1])):
      return False
    steps.append(stage[0])
  return all(a < b for a, b in zip(steps, steps[1:]))


_SIZE = integer(1)
_DTYPE = one_of("float32", "bfloat16", "float16")

EVALUATOR_TYPES = ("heldout",)
_EVALUATOR_KEYS = {"type", "every", "streams", "subtasks"}


def _is_evals(value) -> bool:
  if value is None:
    return True
  if not isinstance(value, dict):
    return False
  for name, spec in value.items():
    if not isinstance(name, str) or not isinstance(spec, dict) or set(spec) - _EVALUATOR_KEYS:
      return False
    if spec.get("type") not in EVALUATOR_TYPES:
      return False
    every, streams = spec.get("every"), spec.get("streams", 1)
    if not (_is_int(every) and every >= 1 and _is_int(streams) and streams >= 1):
      return False
    subtasks = spec.get("subtasks", ())
    if not isinstance(subtasks, (tuple, list)) or not all(isinstance(s, str) for s in subtasks):
      return False
  return True


FIELD_RULES: dict[str, Rule] = {
    "audio.sample_rate": integer(1000),
    "audio.n_mels": _SIZE,
    "audio.n_fft": _SIZE,
    "audio.hop_length": _SIZE,
    "audio.fmin": number(0),
    "audio.fmax": number(0, lo_open=True),
    "audio.log_style": one_of("whisper", "natural"),
    "audio.log_floor": number(),
    "audio.chunk_ms": _SIZE,
    "model.encoder.d_model": _SIZE,
    "model.encoder.num_layers": _SIZE,
    "model.encoder.num_heads": _SIZE,
    "model.encoder.mlp_dim": _SIZE,
    "model.encoder.conv_channels": _SIZE,
    "model.encoder.conv_kernel": _SIZE,
    "model.encoder.subsampling": one_of(1, 2, 4, 8),
    "model.encoder.left_chunks": integer(0),
    "model.encoder.block": one_of("transformer", "conformer"),
    "model.encoder.conformer_kernel": _SIZE,
    "model.encoder.stem": one_of("conv2d", "whisper"),  # whisper: subsampling 2 (validate)
    "model.encoder.norm": one_of("rms", "layer"),
    "model.encoder.mlp": one_of("swiglu", "gelu"),
    "model.encoder.bias": flag(),
    "model.encoder.positions": one_of("rope", "learned", "sinusoidal"),
    "model.encoder.max_positions": _SIZE,
    "model.encoder.position_period": integer(0),  # and <= max_positions (validate)
    "model.encoder.norm_eps": Rule("None or a number > 0",
                                   lambda v: v is None or (_is_number(v) and v > 0)),
    "model.decoder.vocab_size": integer(sf.NUM_SPECIAL_TOKENS + 1),
    "model.decoder.d_model": _SIZE,
    "model.decoder.num_layers": _SIZE,
    "model.decoder.num_heads": _SIZE,
    "model.decoder.num_kv_heads": _SIZE,
    "model.decoder.head_dim": _SIZE,
    "model.decoder.mlp_dim": _SIZE,
    "model.decoder.window": _SIZE,  # and at least one chunk's positions (validate)
    "model.decoder.rope_theta": number(0, lo_open=True),
    "model.decoder.qkv_bias": flag(),
    "model.decoder.tie_embeddings": flag(),
    "model.decoder.decision_bias": flag(),
    "model.decoder.pinned_prefix": integer(0),  # and leaves a chunk of window (validate)
    "model.decoder.copy_instruction": flag(),
    "model.decoder.copy_memory": _SIZE,
    "model.slots_per_chunk": _SIZE,
    "model.tokens_per_chunk": _SIZE,
    "model.dtype": _DTYPE,
    "model.param_dtype": _DTYPE,
    "model.norm_eps": number(0, lo_open=True),
    "model.cache_write": one_of("before", "after"),
    "model.sound_event_classes": integer(0),
    "model.sound_event_blocks": Rule("a tuple of encoder block indices >= 0, increasing",
                                     _is_increasing_indices),
    "model.sound_event_feed": flag(),
    "model.sound_event_feed_names": flag(),
    "model.sound_event_name_tokens": Rule(
        "a tuple of tuples of token ids >= 0, one per sound-event class", _is_name_tokens),
    "model.turn_end_head": flag(),
    "sharding.mesh": Rule(
        f"a mapping of mesh axes ({', '.join(_MESH_AXES)}) to sizes >= 1, at most one -1",
        _is_mesh),
    "sharding.logical_axis_rules": Rule(
        "a tuple of (logical axis, mesh axis or tuple of mesh axes or None) pairs",
        _is_axis_rules),
    "data.dir": text(),
    "data.train_split": text(),
    "data.eval_split": text(),
    "data.batch_size": _SIZE,
    "data.max_len": _SIZE,
    "data.max_chunks": _SIZE,
    "data.max_transcript": _SIZE,
    "data.ctc_targets": one_of("tokens", "characters"),
    "data.mixture": Rule(f"None or {_MIXTURE}", lambda v: v is None or _is_mixture(v)),
    "data.packing": flag(),
    "data.max_segments": _SIZE,
    "data.overflow": one_of("truncate", "drop"),
    "data.read_threads": _SIZE,
    "data.prefetch_batches": integer(0),
    "data.num_workers": integer(0),
    "data.reply_delay_chunks": integer(0),
    "data.reply_delay_probability": number(0, 1),
    "data.randomize.enabled": flag(),
    "data.randomize.wide_voices": flag(),
    "data.randomize.p_speed": number(0, 1),
    "data.randomize.p_pitch": number(0, 1),
    "data.randomize.p_formant": number(0, 1),
    "data.randomize.p_telephone": number(0, 1),
    "data.randomize.p_room": number(0, 1),
    "data.randomize.p_mic": number(0, 1),
    "data.randomize.p_noise": number(0, 1),
    "data.randomize.p_connected": number(0, 1),
    "data.randomize.train_audio_root": optional_text(),
    "data.randomize.p_ambience": number(0, 1),
    "data.randomize.ambience_snr_db": interval(-20.0, 100.0),
    "data.randomize.p_general_text": number(0, 1),
    "data.randomize.p_recorded_speech": number(0, 1),
    "data.randomize.recorded_effects": flag(),
    "data.randomize.recorded_speech_sources": Rule(
        "a non-empty tuple of " + ", ".join(repr(s) for s in RECORDED_SPEECH_SOURCES),
        lambda v: (isinstance(v, tuple) and bool(v)
                   and all(x in RECORDED_SPEECH_SOURCES for x in v))),
    "data.randomize.lead_in_seconds": interval(0.0, 30.0),
    "train.steps": integer(0),
    "train.learning_rate": number(0, lo_open=True),
    "train.warmup_steps": integer(0),
    "train.end_learning_rate_fraction": number(0, 1),
    "train.weight_decay": number(0),
    "train.clip_norm": number(0, lo_open=True),
    "train.grad_accum_steps": _SIZE,
    "train.reply_loss_weight": number(0),
    "train.decision_loss_weight": number(0),
    "train.ctc_loss_weight": number(0),
    "train.sound_event_loss_weight": number(0),
    "train.sound_event_balance": number(0, 4),
    "infer.sound_alert_threshold": number(0, 1),
    "infer.sound_alert_chunks": _SIZE,
    "infer.sound_alert_hold_seconds": number(0),
    "infer.sound_alert_once_per_sound": flag(),
    "infer.sound_watch_threshold": number(0, 1),
    "infer.sound_watch_chunks": _SIZE,
    "infer.sound_watch_gap_seconds": number(0, lo_open=True),
    "infer.sound_watch_hold_seconds": number(0),
    "infer.word_watch": flag(),
    "infer.word_watch_pause_seconds": number(0, lo_open=True),
    "infer.sound_questions": flag(),
    "train.speak_class_weight": number(0, lo_open=True),
    "train.log_every": _SIZE,
    "train.eval_every": _SIZE,
    "train.eval_batches": _SIZE,
    "train.checkpoint_every": _SIZE,
    "train.keep_checkpoints": _SIZE,
    "train.max_seconds": number(0),
    "train.stages": Rule(
        f"a tuple of (until_step >= 1, mixture) pairs with increasing steps; a mixture is "
        f"{_MIXTURE}", _is_stages),
    "train.peak_flops_per_device": number(0),
    "train.evals": Rule(
        'None or {name: {"type": "heldout", "every": int >= 1, optional "streams": '
        'int >= 1, optional "subtasks": a tuple of sub-task names}}', _is_evals),
    "train.init_from": optional_text(),
    "train.freeze": glob_patterns("('encoder/*',)"),
    "train.slow": glob_patterns("('encoder/block3/*',)"),
    "train.slow_lr_scale": number(0, 1, lo_open=True),
    "train.augment.enabled": flag(),
    "train.augment.probability": number(0, 1),
    "train.augment.gain_db": interval(-40.0, 40.0),
    "train.augment.noise_probability": number(0, 1),
    "train.augment.noise_snr_db": interval(-20.0, 100.0),
    "train.augment.spec_time_masks": integer(0, 16),
    "train.augment.spec_time_mask_frames": integer(0),
    "train.augment.spec_freq_masks": integer(0, 16),
    "train.augment.spec_freq_mask_bins": integer(0),
    "infer.policy": one_of("model", "silence_timer", "hybrid", "gated_timer"),
    "infer.threshold": number(0, 1),
    "infer.vad": one_of("silero", "webrtc", "energy"),
    "infer.silence_seconds": number(0, lo_open=True),
    "infer.min_silence_seconds": number(0),  # and <= silence_seconds (validate)
    "infer.hybrid_signal": one_of("decision", "turn_end", "prosody"),
    "infer.prosody_turn_end": Rule(
        f"empty, or a mapping of 'kernel' ({PROSODY_FEATURES} rows of 2 numbers) and 'bias' "
        "(2 numbers)",
        _is_prosody_model),
    "infer.hybrid_gate": number(0, 1),
    "infer.temperature": number(0),
    "infer.top_p": number(0, 1, lo_open=True),
    "infer.sound_name_bias": number(0),
    "infer.sound_name_decay": number(0, 1),
    "infer.sound_name_gate": number(0, 1),
    "infer.sound_name_once": flag(),
    "infer.sound_name_whole": flag(),
    "infer.max_reply_tokens": _SIZE,
    "infer.max_answer_tokens": _SIZE,
    "infer.weights": one_of("float32", "int8"),
    "distill.steps": integer(0),
    "distill.init_student": optional_text(),
    "distill.batch_size": _SIZE,
    "distill.learning_rate": number(0, lo_open=True),
    "distill.warmup_steps": integer(0),
    "distill.window_ms": _SIZE,
    "distill.p_padded": number(0, 1),
    "distill.corpus_streams": flag(),
    "distill.recorded_speech": flag(),
    "distill.log_every": _SIZE,
    "distill.checkpoint_every": _SIZE,
    "init.encoder_checkpoint": Rule("a directory path, 'installed:NAME', or '' for none",
                                    lambda v: isinstance(v, str)),
    "init.decoder_checkpoint": Rule("a directory path, or '' for none",
                                    lambda v: isinstance(v, str)),
    "seed": integer(0),
}


def leaf_paths(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """Dotted paths of the fields of `config` (a field with a rule is a leaf, even a mapping)."""
  paths = []
  for key in config.keys():
    path = prefix + key
    value = config[key]
    if isinstance(value, ml_collections.ConfigDict) and path not in FIELD_RULES:
      paths += leaf_paths(value, path + ".")
    else:
      paths.append(path)
  return paths


def _get(config: ml_collections.ConfigDict, path: str):
  for name in path.split("."):
    config = config[name]
  return config


def _plain(value):
  """ConfigDicts (a mesh assigned as a dict becomes one) as dicts, for rules and messages."""
  return value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value


def _short_repr(value, limit: int = 120) -> str:
  text_ = repr(value)
  return text_ if len(text_) <= limit else text_[:limit - 3] + "..."


def field_error(path: str, value) -> str:
  """"path=value: must be ..." for a field whose value breaks its rule ('' if it holds)."""
  rule = FIELD_RULES.get(path)
  if rule is None:
    return f"{path}: field has no validation rule (add one to config_lib.FIELD_RULES)"
  value = _plain(value)
  if rule.accepts(value):
    return ""
  return f"{path}={_short_repr(value)}: must be {rule.describe}"


def _check_fields(config: ml_collections.ConfigDict) -> None:
  for path in leaf_paths(config):
    error = field_error(path, _get(config, path))
    if error:
      raise ConfigError(error)


def whisper_encoder(encoder: ml_collections.ConfigDict, *, d_model: int, num_layers: int,
                    num_heads: int, mlp_dim: int, left_chunks: int = 16) -> None:
  """Sets `encoder` (a config's `model.encoder`) to a Whisper audio tower of these sizes:
  its stem, LayerNorm, GELU, biases, 1500 learned positions; chunk-causal with
  `left_chunks` chunks of left context. The fields `pretrained.encoder_overrides` derives
  from a Whisper config.json, so a checkpoint of these sizes imports."""
  encoder.update(dict(d_model=d_model, num_layers=num_layers, num_heads=num_heads,
                      mlp_dim=mlp_dim, stem="whisper", subsampling=2, conv_kernel=3,
                      norm="layer", mlp="gelu", bias=True, positions="learned",
                      max_positions=1500, norm_eps=1e-5, left_chunks=left_chunks))


def parse_variants(arg: str | None, allowed: Iterable[str]) -> set[str]:
  """Parses the ``file.py:variant1,variant2`` suffix; unknown variants are errors."""
  allowed = set(allowed)
  variants = {part.strip() for part in (arg or "").split(",") if part.strip()}
  unknown = variants - allowed
  if unknown:
    raise ValueError(
        f"unknown config variant(s) {sorted(unknown)}; this config knows {sorted(allowed)}"
    )
  return variants


def _parse_value(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text  # bare strings: --config.model.encoder.block=conformer


def _assign_leaf(node: ml_collections.ConfigDict, leaf: str, value, path: str,
                 where: str) -> None:
  """`node[leaf] = value`; ConfigDict's type errors become ConfigErrors naming `path`."""
  try:
    node[leaf] = value
  except (TypeError, ValueError) as e:
    rule = FIELD_RULES.get(path)
    old = node[leaf]
    want = (rule.describe if rule is not None else
            "a group of fields" if isinstance(old, ml_collections.ConfigDict) else
            f"a {type(old).__name__}")
    raise ConfigError(f"{where}{path}={_short_repr(value)}: must be {want}") from e


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> None:
  """Applies ``"a.b.c=value"`` overrides in place.

  Raises:
    ConfigError: bad syntax, an unknown field or a value of the wrong type (ranges
      are checked by `validate`).
  """
  for override in overrides:
    override = override.removeprefix("--").removeprefix("config.")
    if "=" not in override:
      raise ConfigError(f"override {override!r} is not of the form field.path=value")
    path, text_ = override.split("=", 1)
    *parents, leaf = path.split(".")
    node = config
    for i, name in enumerate(parents):
      if not isinstance(node, ml_collections.ConfigDict) or name not in node:
        raise ConfigError(f"config has no field {'.'.join(parents[:i + 1])!r} "
                          f"(override {override!r})")
      node = node[name]
    if not isinstance(node, ml_collections.ConfigDict):
      raise ConfigError(f"config field {'.'.join(parents)!r} has no fields; "
                        f"override {override!r} cannot set {path!r}")
    if leaf not in node:
      raise ConfigError(
          f"config has no field {path!r} (override {override!r}); "
          f"fields here: {sorted(node.keys())}"
      )
    old = node[leaf]
    value = _parse_value(text_)
    if isinstance(old, bool) and not isinstance(value, bool):
      raise ConfigError(f"{path}={text_}: must be True or False")
    if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
      value = float(value)
    if isinstance(old, tuple) and isinstance(value, list):
      value = tuple(value)
    _assign_leaf(node, leaf, value, path, "")


def _check_against_defaults(config: ml_collections.ConfigDict,
                            defaults: ml_collections.ConfigDict, path: str = "") -> None:
  for key in config.keys():
    where = f"{path}{key}"
    if key not in defaults:
      raise ConfigError(
          f"config field {where!r} is not a known field (a typo?); "
          f"known here: {sorted(defaults.keys())}"
      )
    if isinstance(config[key], ml_collections.ConfigDict) and isinstance(
        defaults[key], ml_collections.ConfigDict) and where not in FIELD_RULES:
      _check_against_defaults(config[key], defaults[key], where + ".")


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks every field against its rule (`FIELD_RULES`), then the relations between them.

  Raises:
    ConfigError: naming the first bad field and what it must be.
  """
  _check_against_defaults(config, base_config())
  _check_fields(config)
  audio, model, infer = config.audio, config.model, config.infer
  chunk_samples = sf.config_chunk_samples(config)
  if audio.sample_rate * audio.chunk_ms % 1000 or chunk_samples % audio.hop_length:
    raise ConfigError(
        f"audio.chunk_ms={audio.chunk_ms} must be a whole number of hops "
        f"({audio.hop_length} samples at {audio.sample_rate} Hz)"
    )
  if audio.fmin >= audio.fmax or audio.fmax > audio.sample_rate / 2:
    raise ConfigError(
        f"audio.fmax={audio.fmax} must be above audio.fmin={audio.fmin} and at most half "
        f"of audio.sample_rate={audio.sample_rate}")
  frames = chunk_samples // audio.hop_length
  if frames % model.encoder.subsampling:
    raise ConfigError(
        f"a chunk has {frames} frames, not divisible by model.encoder.subsampling="
        f"{model.encoder.subsampling}"
    )
  encoder_frames = frames // model.encoder.subsampling
  if encoder_frames % model.slots_per_chunk:
    raise ConfigError(
        f"a chunk has {encoder_frames} encoder frames, not divisible by "
        f"model.slots_per_chunk={model.slots_per_chunk}"
    )
  if model.encoder.stem == "whisper" and model.encoder.subsampling != 2:
    raise ConfigError(
        f"model.encoder.subsampling={model.encoder.subsampling}: must be 2 with "
        "model.encoder.stem='whisper' (its convolutions have strides 1 and 2)")
  if model.encoder.positions == "sinusoidal" and (
      model.encoder.d_model % 2 or model.encoder.d_model < 4):
    raise ConfigError(f"model.encoder.d_model={model.encoder.d_model}: must be even and >= 4 "
                      "with model.encoder.positions='sinusoidal'")
  if model.encoder.position_period > model.encoder.max_positions:
    raise ConfigError(
        f"model.encoder.position_period={model.encoder.position_period}: must be at most "
        f"model.encoder.max_positions={model.encoder.max_positions} (0: that many)")
  decoder = model.decoder
  if decoder.num_heads % decoder.num_kv_heads:
    raise ConfigError(
        f"model.decoder.num_heads={decoder.num_heads} must be a multiple of "
        f"model.decoder.num_kv_heads={decoder.num_kv_heads}"
    )
  if model.encoder.d_model % model.encoder.num_heads:
    raise ConfigError(
        f"model.encoder.d_model={model.encoder.d_model} must be a multiple of "
        f"model.encoder.num_heads={model.encoder.num_heads}")
  chunk_positions = (sf.chunk_prefix_length(model.slots_per_chunk)
                     + model.tokens_per_chunk)
  if decoder.window < chunk_positions:
    raise ConfigError(
        f"model.decoder.window={decoder.window}: must hold at least one chunk's "
        f"{chunk_positions} positions (<audio>, {model.slots_per_chunk} slots, <decide> and "
        f"{model.tokens_per_chunk} reply tokens)")
  if decoder.window - decoder.pinned_prefix < chunk_positions:
    raise ConfigError(
        f"model.decoder.pinned_prefix={decoder.pinned_prefix}: must leave at least one "
        f"chunk's {chunk_positions} positions of model.decoder.window={decoder.window} "
        f"for the recent stream")
  if infer.min_silence_seconds > infer.silence_seconds:
    raise ConfigError(
        f"infer.min_silence_seconds={infer.min_silence_seconds}: must be at most "
        f"infer.silence_seconds={infer.silence_seconds}")
  if infer.hybrid_signal == "prosody" and not infer.prosody_turn_end:
    raise ConfigError(
        "infer.hybrid_signal='prosody' reads a prosody turn-end model infer.prosody_turn_end "
        "does not hold: fit one with `audio-interaction fit-turn-head --features prosody`")
  if infer.hybrid_signal == "turn_end" and not model.turn_end_head:
    raise ConfigError(
        "infer.hybrid_signal='turn_end' reads a turn-end head the model does not have: "
        "fit one with `audio-interaction fit-turn-head` (model.turn_end_head)")
  if config.train.sound_event_loss_weight and model.sound_event_classes == 0:
    raise ConfigError(
        f"train.sound_event_loss_weight={config.train.sound_event_loss_weight} trains a "
        f"sound-event head the model does not have: set model.sound_event_classes")
  if model.sound_event_blocks and model.sound_event_classes == 0:
    raise ConfigError(
        f"model.sound_event_blocks={model.sound_event_blocks} feeds a sound-event head the "
        f"model does not have: set model.sound_event_classes")
  if model.sound_event_feed and model.sound_event_classes == 0:
    raise ConfigError(
        "model.sound_event_feed=True feeds the decoder a sound-event head the model does "
        "not have: set model.sound_event_classes")
  if model.sound_event_feed_names and model.sound_event_classes == 0:
    raise ConfigError(
        "model.sound_event_feed_names=True feeds the decoder a sound-event head the model "
        "does not have: set model.sound_event_classes")
  if model.sound_event_name_tokens and len(model.sound_event_name_tokens) != model.sound_event_classes:
    raise ConfigError(
        f"model.sound_event_name_tokens has {len(model.sound_event_name_tokens)} names for "
        f"model.sound_event_classes={model.sound_event_classes} classes")
  if any(t >= model.decoder.vocab_size for name in model.sound_event_name_tokens for t in name):
    raise ConfigError(
        "model.sound_event_name_tokens holds ids >= model.decoder.vocab_size="
        f"{model.decoder.vocab_size}")
  if any(block >= model.encoder.num_layers for block in model.sound_event_blocks):
    raise ConfigError(
        f"model.sound_event_blocks={model.sound_event_blocks}: the encoder has blocks "
        f"0-{model.encoder.num_layers - 1} (model.encoder.num_layers="
        f"{model.encoder.num_layers})")
  if config.infer.sound_name_bias and model.sound_event_classes == 0:
    raise ConfigError(
        f"infer.sound_name_bias={config.infer.sound_name_bias} biases replies towards what a "
        "sound-event head heard, and the model has none: set model.sound_event_classes")
  if config.infer.sound_alert_threshold and model.sound_event_classes == 0:
    raise ConfigError(
        f"infer.sound_alert_threshold={config.infer.sound_alert_threshold} reads a "
        f"sound-event head the model does not have: set model.sound_event_classes")
  if config.train.sound_event_balance and not config.train.sound_event_loss_weight:
    raise ConfigError(
        f"train.sound_event_balance={config.train.sound_event_balance} balances a loss that "
        f"is off: set train.sound_event_loss_weight")


def load_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """Loads ``path/to/config.py[:variants]``, applies overrides, validates and locks it."""
  path, _, arg = spec.partition(":")
  file = pathlib.Path(path)
  if not file.is_file():
    raise FileNotFoundError(f"config file {path!r} not found")
  module_spec = importlib.util.spec_from_file_location(f"_config_{file.stem}", file)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  try:
    config = module.get_config(arg or None)
  except TypeError as e:  # ConfigDict's: a value of another type than the field's default
    if "Could not override field" not in str(e):
      raise
    raise ConfigError(f"{path}: {str(e).splitlines()[0]}") from e
  config.lock()
  apply_overrides(config, overrides)
  validate(config)
  return config


def experiments_dir() -> pathlib.Path:
  """The repository's ``experiments/`` folder (configs ship beside the package)."""
  return pathlib.Path(__file__).resolve().parent.parent / "experiments"


def _as_tuples(value):
  """JSON lists back to the nested tuples configs use (e.g. the axis rules)."""
  return tuple(_as_tuples(v) for v in value) if isinstance(value, list) else value


def _assign(node: ml_collections.ConfigDict, values: dict, path: str) -> None:
  if not isinstance(values, dict):
    raise ConfigError(f"saved config{' field ' + repr(path[:-1]) if path else ''} is a "
                      f"{type(values).__name__}, not a group of fields")
  for key, value in values.items():
    where = f"{path}{key}"
    if key not in node:
      raise ConfigError(f"saved config has field {where!r}, unknown to this version")
    if (isinstance(node[key], ml_collections.ConfigDict) and isinstance(value, dict)
        and where not in FIELD_RULES):
      _assign(node[key], value, where + ".")
    else:
      if isinstance(node[key], tuple) and isinstance(value, list):
        value = _as_tuples(value)
      if isinstance(node[key], float) and _is_int(value):
        value = float(value)
      _assign_leaf(node, key, value, where, "")


def from_dict(values: dict) -> ml_collections.ConfigDict:
  """Rebuilds a full config from its JSON dict (as saved in checkpoints and exports).

  Fields the dict lacks keep their defaults (e.g. the `infer` block of older bundles).

  Raises:
    ConfigError: an unknown field, or a value of the wrong type or out of range.
  """
  config = base_config()
  config.lock()
  _assign(config, values, "")
  validate(config)
  return config
