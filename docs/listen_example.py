"""Writes recording.flac: a field recording's shape for the README's `listen` example.

Two questions in held-out TTS voices (the corpus's own speech engines), at 44.1 kHz
stereo (the right channel later and quieter), with room noise and an odd length::

  python docs/listen_example.py && python -m audio_interaction listen recording.flac --speed inf
"""

import numpy as np
import soundfile

from audio_interaction.audio.io import resample
from audio_interaction.corpus import effects, tasks, worlds
from audio_interaction.corpus.build import heldout_sources
from audio_interaction.corpus.timeline import render

timeline = tasks.build("chat_multi_turn", 2, *heldout_sources(),
                       tasks.TaskConfig(split=worlds.HELDOUT, chunk_ms=160))
voice = resample(render(timeline, chunk_ms=160), 16000, 44100)
rng = np.random.default_rng(0)
left = voice + 0.004 * effects.colored_noise(rng, len(voice), 1.0)
right = 0.8 * np.roll(voice, 13) + 0.004 * effects.colored_noise(rng, len(voice), 1.0)
stereo = np.stack([left, right], 1)[:len(voice) // 2 * 2 - 1]
soundfile.write("recording.flac", stereo, 44100)
print(soundfile.info("recording.flac"))
