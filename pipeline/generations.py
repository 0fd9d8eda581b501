"""Topic generations: a replay window that slides on a broker that cannot trim a log.

The embedded broker (Tansu 0.6) keeps every record in memory and cannot drop old ones: it
ignores retention.ms/bytes, and a DeleteRecords request makes it panic ("not yet implemented")
and drop the connection. Only deleting a topic frees memory. So, in embedded mode, each
pipeline topic T (raw, processed, dead letters) has two *slots*, T and T.b:
- one slot is **current**: the producer writes there, and processors write each output to the
  slot of the same letter as its input (`mirrored`), so raw and processed stay in step;
- the other holds the **previous generation**: history that replays and clips still read.
- A rotation (pipeline/local/retention.py) deletes and recreates the previous slot, which frees
  the oldest generation; that empty slot becomes current and the old current becomes history.

Which slot is current is read from the broker, so every process agrees without talking to the
others: an empty slot beside a non-empty one is current (it was just recycled); otherwise the
slot whose first record is newer; both empty: T. Writers check every second; what they write to
the previous slot meanwhile is still read as history.

Readers of history read the slots oldest first (`ordered`). A broker with real retention
(Apache Kafka) has no T.b: T is then the only slot and nothing here changes anything.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from kafka import KafkaConsumer, TopicPartition

from pipeline.kafka import BACKGROUND_FETCH, make_consumer
from pipeline.offsets import found_offset
from pipeline.settings import Settings

log = logging.getLogger(__name__)

SECOND_SLOT = ".b"
# How often a writer checks which slot is current.
CHECK_EVERY_S = 1.0


def slot_names(base: str) -> list[str]:
    """Both slots of topic `base`, whether they exist or not."""
    return [base, base + SECOND_SLOT]


def slots(base: str, existing: Iterable[str]) -> list[str]:
    """The slots of `base` that exist among the broker's topics `existing` ([base] without generations)."""
    existing = set(existing)
    return [base] + [name for name in slot_names(base)[1:] if name in existing]


def mirrored(topic: str, source_base: str, target_base: str) -> str:
    """The slot of `target_base` with the same letter as `topic`, a slot of `source_base`."""
    return target_base + SECOND_SLOT if topic == source_base + SECOND_SLOT else target_base


@dataclass(frozen=True)
class Slot:
    topic: str
    # Time (ms, as the broker stamped it) of the slot's first record; None when it is empty.
    first_ms: int | None


def ordered(found: list[Slot]) -> list[Slot]:
    """Oldest generation first, current last (see the module's rule)."""
    index = {slot.topic: i for i, slot in enumerate(found)}
    # Empty slots are newest; between two empty slots the first (T) counts as current.
    return sorted(found, key=lambda s: (s.first_ms is None, s.first_ms or 0, -index[s.topic]))


def first_records(consumer: KafkaConsumer, topics: list[str]) -> list[Slot]:
    """Each topic's first record time over all its partitions (None: empty)."""
    tps = [TopicPartition(t, p) for t in topics for p in sorted(consumer.partitions_for_topic(t) or ())]
    answers = consumer.offsets_for_times({tp: 0 for tp in tps}) if tps else {}
    firsts: dict[str, int | None] = dict.fromkeys(topics)
    for tp, answer in answers.items():
        if found_offset(answer) is not None:
            first = firsts[tp.topic]
            firsts[tp.topic] = answer.timestamp if first is None else min(first, answer.timestamp)
    return [Slot(t, firsts[t]) for t in topics]


def generations(consumer: KafkaConsumer, base: str) -> list[Slot]:
    """The existing slots of `base`, oldest generation first, current last. Lists the broker's
    topics rather than asking for T.b by name: asking for a missing topic auto-creates it."""
    return ordered(first_records(consumer, slots(base, consumer.topics())))


class CurrentSlot:
    """For a writer: `topic` is the current slot of `base`, checked every CHECK_EVERY_S on a
    thread of its own. Without a second slot at the start (a broker with real retention) it
    stays `base` and nothing runs."""

    def __init__(self, settings: Settings, base: str) -> None:
        self.base = base
        self.topic = base
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.consumer = make_consumer(settings, "slots", group_id=None, **BACKGROUND_FETCH)
        if base + SECOND_SLOT not in self.consumer.topics():
            self.consumer.close()
            return
        self.check()
        self._thread = threading.Thread(target=self._watch, name=f"slot-{base}", daemon=True)
        self._thread.start()

    def check(self) -> str:
        with self._lock:
            topic = generations(self.consumer, self.base)[-1].topic
        if topic != self.topic:
            log.info("topic %s: writing to slot %s from now on", self.base, topic)
            self.topic = topic
        return topic

    def _watch(self) -> None:
        while not self._stop.wait(CHECK_EVERY_S):
            try:
                self.check()
            except Exception as exc:  # noqa: BLE001 - a failed check keeps the last answer
                log.warning("topic %s: could not check the current slot: %s", self.base, exc)

    def close(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(5)
        with self._lock:
            self.consumer.close()
