"""The token ids of each sound-event class's name, for `model.sound_event_feed_names`.

A model that feeds the decoder each heard class as the words of its name needs those
words as ids of its own tokenizer. The config names the switch; the ids come from the
tokenizer the run trains with (the data's), so the train loop and the export fill them
in here, and the bundle's config keeps them for whoever loads it.
"""

from __future__ import annotations

import ml_collections

from audio_interaction.corpus import worlds
from audio_interaction.data.tokenizer import Tokenizer


def with_sound_name_tokens(config: ml_collections.ConfigDict, tokenizer: Tokenizer
                           ) -> ml_collections.ConfigDict:
  """`config` with `model.sound_event_name_tokens` filled from `tokenizer` when the model
  feeds the names (`model.sound_event_feed_names`); `config` itself otherwise.

  Raises:
    ValueError: the config already holds other ids (a config of another tokenizer), or
      its head has another number of classes than the corpus's sound-event labels.
  """
  model = config.model
  if not model.sound_event_feed_names:
    return config
  if model.sound_event_classes != len(worlds.SOUND_EVENT_LABELS):
    raise ValueError(
        f"model.sound_event_feed_names names the {len(worlds.SOUND_EVENT_LABELS)} classes of "
        f"the corpus's sound events; model.sound_event_classes={model.sound_event_classes}")
  tokens = worlds.sound_name_tokens(tokenizer)
  held = tuple(tuple(name) for name in model.sound_event_name_tokens)
  if held and held != tokens:
    raise ValueError(
        "model.sound_event_name_tokens holds other ids than this tokenizer gives the "
        "sound classes' names (a config of another tokenizer?); clear it to refill")
  filled = ml_collections.ConfigDict(config.to_dict())
  filled.model.sound_event_name_tokens = tokens
  return filled
