"""Topic generations: a replay window that slides on a broker that cannot trim a log.

The embedded broker (Tansu 0.6) keeps every record in memory and cannot drop old ones: it
ignores retention.ms/bytes, and a DeleteRecords request makes it panic ("not yet implemented")
and drop the connection. Only deleting a topic frees memory. So, in embedded mode, each
pipeline topic T (raw, processed, dead letters) has two *slots*, T and T.b:
- one slot is **current**: the producer (and the viewer, for still-job tiles) writes there, and
  processors write each output to the slot of the same letter as its input (`mirrored`), so
  inputs and processed stay in step;
- the other holds the **previous generation**: history that replays and clips still read.
- A rotation (pipeline/local/retention.py) deletes and recreates the previous slot, which frees
  the oldest generation, and announces that slot as current; the old current becomes history.

The announcement is a record in a one-partition topic of its own (`slot_topic`): the raw
topic's current slot name. Writers follow it (`CurrentSlot`, checked every second); what they
write to the previous slot meanwhile is still read as history. Readers need no announcement:
they read every slot, oldest generation first (`generations`: by each slot's first record).

A broker with real retention (Apache Kafka) has no slot topic and no T.b: T is then the
only slot and nothing here changes anything.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from pipeline.kafka import make_consumer
from pipeline.offsets import OffsetTool, Window, found_offset
from pipeline.settings import Settings

log = logging.getLogger(__name__)

SECOND_SLOT = ".b"
# How often a writer checks for a new current slot.
CHECK_EVERY_S = 1.0


def generational_bases(settings: Settings) -> tuple[str, ...]:
    """The topics that have two slots on the embedded broker: raw frames, processed frames, dead
    letters, still-job tiles and their results (the first two in this order: retention ages a
    generation by them)."""
    return (settings.raw_topic, settings.processed_topic, settings.dead_letter_topic, settings.jobs_topic,
            settings.job_results_topic)


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


def slot_topic(settings: Settings) -> str:
    """Where rotations announce the raw topic's current slot (exists only with generations)."""
    return settings.raw_topic + ".current"


def announce(producer: KafkaProducer, settings: Settings, raw_slot: str) -> None:
    """Make `raw_slot` (and its mirrors) current for every writer."""
    producer.send(slot_topic(settings), value=raw_slot.encode()).get(timeout=10)


@dataclass(frozen=True)
class Slot:
    topic: str
    # Time (ms, as the broker stamped it) of the slot's first record; None when it is empty.
    first_ms: int | None


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
    """The existing slots of `base`, oldest records first, empty ones last. Lists the broker's
    topics rather than asking for T.b by name: asking for a missing topic auto-creates it."""
    found = first_records(consumer, slots(base, consumer.topics()))
    return sorted(found, key=lambda s: (s.first_ms is None, s.first_ms or 0))


def stream_windows(tool: OffsetTool, base: str, stream: str) -> list[Window]:
    """What each generation of `base` retains of the stream's partition, oldest first; empty
    generations left out. Together they are the stream's replayable history."""
    windows = [tool.window(tool.stream_partition(topic, stream)) for topic in slots(base, tool.consumer.topics())]
    return sorted((w for w in windows if w.end > w.earliest), key=lambda w: w.first_ms or 0)


class OldestFirst:
    """For a reader of several generations: keeps each partition paused while the partition of
    the same number in an older generation still has records before its end, so a replay reads
    the previous generation through before the current one. `tps` oldest generation first;
    `ends` taken when reading starts (a previous generation no longer grows)."""

    def __init__(self, consumer: KafkaConsumer, tps: list[TopicPartition], ends: dict[TopicPartition, int]) -> None:
        self.consumer, self.tps, self.ends = consumer, tps, ends

    def apply(self) -> None:
        for i, tp in enumerate(self.tps):
            older = [o for o in self.tps[:i] if o.partition == tp.partition]
            if any(self.consumer.position(o) < self.ends[o] for o in older):
                self.consumer.pause(tp)
            else:
                self.consumer.resume(tp)


class CurrentSlot:
    """For a writer of `base`: `topic` is its current slot, following the slot topic on a
    thread of its own. Without a slot topic (no generations) it stays `base`, and nothing
    runs."""

    def __init__(self, settings: Settings, base: str) -> None:
        self.settings, self.base, self.topic = settings, base, base
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.consumer = make_consumer(settings, "slots", group_id=None)
        self._control = TopicPartition(slot_topic(settings), 0)
        if self._control.topic not in self.consumer.topics():
            self.consumer.close()
            return
        self.consumer.assign([self._control])
        # Only the newest announcement counts. The slot topic gets one record per produce
        # request, so its reported end is exact even on Tansu.
        end = self.consumer.end_offsets([self._control])[self._control]
        self.consumer.seek(self._control, max(end - 1, 0))
        self.check(timeout_ms=1000)
        self._thread = threading.Thread(target=self._watch, name=f"slot-{base}", daemon=True)
        self._thread.start()

    def check(self, timeout_ms: int = 0) -> str:
        records = self.consumer.poll(timeout_ms=timeout_ms).get(self._control, [])
        if records:
            topic = mirrored(records[-1].value.decode(), self.settings.raw_topic, self.base)
            if topic != self.topic:
                log.info("topic %s: writing to slot %s from now on", self.base, topic)
                self.topic = topic
        return self.topic

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
        self.consumer.close()
