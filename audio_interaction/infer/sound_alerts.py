"""Alerts from the sound-event head: speak up when the stream holds a sound that needs it.

The decoder's own decision learns alerts from its training streams; on real recordings
it raised 3 % of the DEV alerts at 262 false alarms per hour, while the sound-event head
of a fitted bundle (`train/sound_head.py`) tells a real alarm, knock or ring from a
benign sound far better. `SoundAlertRule` reads the head chunk by chunk: when a class
that needs attention (`corpus.worlds.ALERT_LABELS`, or the classes given) has
probability >= `threshold` for `chunks` chunks running, the row says the class's alert
(`worlds.alert_message`, e.g. "the smoke alarm is going off") as its reply, once: the
class alerts again only after it has gone unheard for `hold_seconds` (a phone that
rings for half a minute is one alert, not three). The
stepper writes it into the stream like any reply, `tokens_per_chunk` tokens per
chunk, so the decoder hears what it said, and the stream stays in the stream format
(`run_stream.stream_sequence` lays it out for the full forward).

An alert cuts short a reply of the model's own that is running in its row (an alarm
matters more than the end of a sentence); a row already saying an alert finishes it,
and an alert due meanwhile waits until the row is free and the class still heard.

With `once_per_sound` (`infer.sound_alert_once_per_sound`) the rule asks first whether
anything needs attention, then what: the alerting classes' probabilities are summed,
so a ringtone the head calls a phone in one chunk and a doorbell in the next is still
one sound heard; after `chunks` such chunks the row alerts once, naming the class with
the most probability summed over those chunks, and nothing alerts again in that row
until no alerting class has been heard for `hold_seconds`. On the real DEV ringtones
the per-class rule said "phone", "doorbell" and "dog" over one ringtone, two of them
false alarms.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import ml_collections
import numpy as np

from audio_interaction import stream_format as sf
from audio_interaction.corpus import worlds

# The `infer` keys of the rule (`sound_alert_rule` reads them; the eval, the live loop
# and the server pass them on together).
SOUND_ALERT_KEYS = ("sound_alert_threshold", "sound_alert_chunks", "sound_alert_hold_seconds",
                    "sound_alert_once_per_sound")


@dataclasses.dataclass
class SoundAlertRule:
  """When the sound-event head raises an alert, per row of a batch of streams.

  Attributes:
    threshold: a class's probability that counts as heard.
    chunks: consecutive chunks it must be heard for.
    hold_chunks: chunks a class must go unheard after its alert before it alerts again.
    replies: {class id: the alert's reply token ids, `<eor>` last}; the classes that
      alert (ids of `worlds.SOUND_EVENT_LABELS`).
    once_per_sound: one alert per sound, of any alerting class (module docstring), not
      one per class.
  """

  threshold: float
  chunks: int
  hold_chunks: int
  replies: dict[int, list[int]]
  once_per_sound: bool = False

  def __post_init__(self):
    if not 0.0 < self.threshold <= 1.0:
      raise ValueError(f"sound alert threshold must be in (0, 1], got {self.threshold}")
    if self.chunks < 1 or self.hold_chunks < 0:
      raise ValueError(f"sound alerts need chunks >= 1 and hold_chunks >= 0, got "
                       f"{self.chunks} and {self.hold_chunks}")
    for class_id, ids in self.replies.items():
      if not ids or ids[-1] != sf.EOR_ID:
        raise ValueError(f"the alert reply of class {class_id} must end with <eor>")
    self._classes = np.asarray(sorted(self.replies), np.int64)
    self.start(0)

  def start(self, rows: int) -> None:
    """Forgets every row's history (a batch of `rows` new streams)."""
    self._streak = np.zeros((rows, len(self._classes)), np.int64)  # chunks heard running
    self._unheard = np.zeros((rows, len(self._classes)), np.int64)  # chunks unheard running
    self._armed = np.ones((rows, len(self._classes)), bool)  # may alert
    # once_per_sound: probability summed per class over the chunks of the sound running.
    self._evidence = np.zeros((rows, len(self._classes)))

  def reset_row(self, row: int) -> None:
    """Forgets one row's history (a new stream in that row)."""
    self._streak[row] = self._unheard[row] = 0
    self._armed[row] = True
    self._evidence[row] = 0.0

  def rearm(self, row: int, class_id: int) -> None:
    """Takes back the alert of `class_id` that `fire` just raised in `row` (a second
    stage vetoed it): the rule may raise it again at the next chunk the sound is heard,
    instead of holding until the sound has gone."""
    if class_id not in self._classes:
      raise ValueError(f"class {class_id} does not alert under this rule")
    column = 0 if self.once_per_sound else int(np.searchsorted(self._classes, class_id))
    self._armed[row, column] = True

  def fire(self, probabilities: np.ndarray, rows: Sequence[int], indices: np.ndarray,
           free: np.ndarray) -> dict[int, int]:
    """Updates the given rows with this chunk's head probabilities; the alerts to say.

    Args:
      probabilities: [B, K] the head's class probabilities of each row's chunk.
      rows: the rows that perceived a chunk now (the others keep their history).
      indices: [B] each row's chunk index (unused: the rule counts the chunks it sees).
      free: [B] bool, the row may start an alert now (it is not saying one).
    Returns:
      {row: class id} of the rows that alert now (the most probable of the classes due).
    """
    if probabilities.shape[1] == 0:
      raise ValueError("sound alerts need a model with a sound-event head "
                       "(model.sound_event_classes > 0)")
    del indices
    rows = np.asarray(rows, np.int64)
    heard = probabilities[rows][:, self._classes]  # [R, alerting classes]
    if self.once_per_sound:
      return self._fire_once_per_sound(rows, heard, free)
    above = heard >= self.threshold
    self._streak[rows] = np.where(above, self._streak[rows] + 1, 0)
    self._unheard[rows] = np.where(above, 0, self._unheard[rows] + 1)
    self._armed[rows] |= self._unheard[rows] >= max(self.hold_chunks, 1)
    due = self._armed[rows] & (self._streak[rows] >= self.chunks) & free[rows, None]
    firing = due.any(axis=1)
    best = np.argmax(np.where(due, heard, -1.0), axis=1)[firing]
    self._armed[rows[firing], best] = False
    return dict(zip(rows[firing].tolist(), self._classes[best].tolist()))

  def _fire_once_per_sound(self, rows: np.ndarray, heard: np.ndarray, free: np.ndarray
                           ) -> dict[int, int]:
    """`fire` with `once_per_sound`: the state's first column counts for the sound
    (any alerting class), `_evidence` names it."""
    above = heard.sum(axis=1) >= self.threshold  # [R]
    streak, unheard = self._streak[rows, 0], self._unheard[rows, 0]
    self._streak[rows, 0] = streak = np.where(above, streak + 1, 0)
    self._unheard[rows, 0] = unheard = np.where(above, 0, unheard + 1)
    self._evidence[rows] = np.where(above[:, None], self._evidence[rows] + heard, 0.0)
    armed = self._armed[rows, 0] | (unheard >= max(self.hold_chunks, 1))
    firing = armed & (streak >= self.chunks) & free[rows]
    self._armed[rows, 0] = armed & ~firing
    best = np.argmax(self._evidence[rows[firing]], axis=1)
    return dict(zip(rows[firing].tolist(), self._classes[best].tolist()))


def sound_alert_rule(infer: ml_collections.ConfigDict, encode: Callable[[str], list[int]], *,
                     chunk_seconds: float, sound_event_classes: int,
                     classes: Sequence[str] | None = None) -> SoundAlertRule | None:
  """The rule a config's `infer` block asks for (`infer.sound_alert_threshold` > 0), None
  when it is off.

  Args:
    encode: the tokenizer's text -> ids (the alert replies).
    sound_event_classes: the model's head size (0: no head; an error when alerts are on).
    classes: the classes that alert (default `worlds.ALERT_LABELS`); each must have an
      alert message.
  """
  if not infer.sound_alert_threshold:
    return None
  if not sound_event_classes:
    raise ValueError(f"infer.sound_alert_threshold={infer.sound_alert_threshold} reads the "
                     f"sound-event head, and this model has none (model.sound_event_classes=0)")
  replies = {worlds.SOUND_EVENT_LABELS.index(label):
             list(encode(worlds.alert_message(label))) + [sf.EOR_ID]
             for label in (classes or worlds.ALERT_LABELS)}
  return SoundAlertRule(threshold=float(infer.sound_alert_threshold),
                        chunks=int(infer.sound_alert_chunks),
                        hold_chunks=int(round(infer.sound_alert_hold_seconds / chunk_seconds)),
                        replies=replies,
                        once_per_sound=bool(infer.get("sound_alert_once_per_sound", False)))
