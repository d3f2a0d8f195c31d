"""audio_interaction: streaming audio language models that listen, decide when to speak, and answer."""

__version__ = "0.1.0"
