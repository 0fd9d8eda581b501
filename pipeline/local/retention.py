"""Retention for the embedded broker: keeps Tansu's memory under a byte budget by recreating
the pipeline's topics whenever the broker process grows past it.

Why recreate: Tansu's memory engine ignores retention.ms/retention.bytes and drops the
connection on DeleteRecords; only DeleteTopics frees memory, and at once. So in embedded mode
(dev, demo) `pipeline up` watches the broker's resident memory and, past the budget, deletes
and recreates every pipeline topic with its intended partition count. Consumers move into the
new topics by themselves (pipeline/recreated.py). Tansu drops the groups' committed offsets on
the deleted topics, so a group that comes back later (a returning ?viewer=<id>, a restarted
processor) starts by its reset policy instead of at an offset the new topic has not reached.
Apache Kafka has real retention: none of this runs there.

At-least-once across a rotation: deleting the raw topic deletes the frames the processors have
not yet committed. So a rotation first pauses the producers and waits until every processor
group (every group with offsets on the raw topic) has committed up to the raw topic's end,
for as long as they keep making progress; only then are the processors paused too and the
topics recreated. Processors that are stuck (none committed anything for `CATCH_UP_STALL_S`)
do not hold the memory budget hostage: the rotation goes ahead and says, in a warning, how
many raw records each group never processed. A single large record used to trigger the very
rotation that deleted it before any processor had read it: lost without a trace.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from kafka.errors import KafkaError

from pipeline.kafka import topic_specs
from pipeline.offsets import OffsetsError, OffsetTool
from pipeline.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_BUDGET_MB = 256
# Tansu idles at ~35-50 MB resident; a budget below this would rotate without freeing anything.
MIN_BUDGET_MB = 64
# After a rotation, rotate again only once the broker has grown by this much: if something
# other than the topics holds the memory, recreating them again would not free it.
MIN_GROWTH_BYTES = 16 << 20
# A rotation waits for the processors to finish the raw topic while they make progress (their
# commits move at least every CATCH_UP_STALL_S), but never longer than CATCH_UP_MAX_S.
CATCH_UP_STALL_S = 10.0
CATCH_UP_MAX_S = 60.0
CATCH_UP_POLL_S = 0.2


def process_rss_bytes(pid: int) -> int:
    """Resident set size of a process: /proc on Linux, `ps` elsewhere (macOS)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except FileNotFoundError:
        pass
    out = subprocess.run(["ps", "-o", "rss=", "-p", str(pid)], capture_output=True, text=True, check=False).stdout
    if not out.strip():
        raise ProcessLookupError(f"no process {pid}")
    return int(out.split()[0]) * 1024


@dataclass
class Rotation:
    number: int
    rss_before: int
    rss_after: int


class TopicRotator:
    """Deletes and recreates the pipeline's topics with their configured partition counts."""

    def __init__(self, settings: Settings) -> None:
        # The control topic is kept: it is tiny, and recreating it would silently send every
        # stream back to the processors' default chain.
        self.specs = [spec for spec in topic_specs(settings) if spec.name != settings.control_topic]
        self.raw_topic = settings.raw_topic
        self.offsets = OffsetTool(settings)
        self.admin = self.offsets.admin

    def close(self) -> None:
        self.offsets.close()

    def unprocessed(self) -> dict[str, int]:
        """Raw records each processor group (a group with offsets on the raw topic) has not
        committed yet, for the groups behind; true ends, right on Tansu too."""
        try:
            raw = self.offsets.partitions(self.raw_topic)
        except OffsetsError:
            return {}  # no raw topic (yet): nothing to lose
        earliest, ends = self.offsets.ends(raw)
        behind = {}
        for group in self.offsets.groups():
            committed = self.offsets.committed(group)
            if not any(tp.topic == self.raw_topic for tp in committed):
                continue
            records = sum(max(0, ends[tp] - committed.get(tp, earliest[tp])) for tp in raw)
            if records:
                behind[group] = records
        return behind

    def rotate(self) -> None:
        names = [spec.name for spec in self.specs]
        # One request each, back to back: a client asking for a missing topic in between would
        # auto-create it with the broker's default partition count (4 on Tansu), not ours.
        self.admin.delete_topics(names, raise_errors=False)
        self.admin.create_topics(self.specs, raise_errors=False)
        self._repair_partition_counts()

    def _repair_partition_counts(self) -> None:
        wanted = {spec.name: spec for spec in self.specs}
        for topic in self.admin.describe_topics(list(wanted)):
            spec = wanted[topic["name"]]
            if len(topic["partitions"]) != spec.num_partitions:
                log.warning("topic %s was auto-created with %d partitions: recreating it with %d",
                            spec.name, len(topic["partitions"]), spec.num_partitions)
                self.admin.delete_topics([spec.name], raise_errors=False)
                self.admin.create_topics([spec], raise_errors=False)


class EmbeddedRetention:
    """Background thread: checks the broker's resident memory every `interval_s` and rotates the
    topics when it passes `budget_bytes`: inside `producers_paused()` it waits for the
    processors to catch up, then inside `processors_paused()` as well (so nothing is produced
    into the gap between delete and create) it recreates the topics."""

    def __init__(
        self,
        settings: Settings,
        broker_pid: int,
        budget_bytes: int,
        producers_paused: Callable[[], AbstractContextManager] = contextlib.nullcontext,
        processors_paused: Callable[[], AbstractContextManager] = contextlib.nullcontext,
        interval_s: float = 1.0,
    ) -> None:
        self.settings = settings
        self.broker_pid = broker_pid
        self.budget_bytes = budget_bytes
        self.producers_paused = producers_paused
        self.processors_paused = processors_paused
        self.interval_s = interval_s
        self.rotations: list[Rotation] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="embedded-retention", daemon=True)

    def start(self) -> EmbeddedRetention:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _watch(self) -> None:
        rotator = TopicRotator(self.settings)
        try:
            while not self._stop.wait(self.interval_s):
                try:
                    self.check(rotator)
                except ProcessLookupError:
                    return  # the broker is gone: `up` is stopping
                except KafkaError as exc:
                    log.warning("embedded retention check failed, retrying: %s", exc)
        finally:
            rotator.close()

    def check(self, rotator: TopicRotator) -> Rotation | None:
        before = process_rss_bytes(self.broker_pid)
        if before <= self.budget_bytes:
            return None
        if self.rotations and before < self.rotations[-1].rss_after + MIN_GROWTH_BYTES:
            return None
        started = time.monotonic()
        with self.producers_paused():
            self._await_processors(rotator)
            with self.processors_paused():
                rotator.rotate()
        rotation = Rotation(len(self.rotations) + 1, before, process_rss_bytes(self.broker_pid))
        self.rotations.append(rotation)
        log.info(
            "embedded broker at %d MB > budget %d MB: topics recreated in %.0f ms, now %d MB (rotation %d)",
            before >> 20, self.budget_bytes >> 20, (time.monotonic() - started) * 1000, rotation.rss_after >> 20, rotation.number,
        )
        if rotation.rss_after > self.budget_bytes:
            log.warning("embedded broker still at %d MB after recreating its topics: raise the budget", rotation.rss_after >> 20)
        return rotation

    def _await_processors(self, rotator: TopicRotator) -> None:
        """Until no processor group is behind on the raw topic, while they make progress."""
        started = progressed = time.monotonic()
        behind = rotator.unprocessed()
        while behind:
            now = time.monotonic()
            if now - progressed > CATCH_UP_STALL_S or now - started > CATCH_UP_MAX_S or self._stop.is_set():
                log.warning("recreating the topics although processors have not caught up: raw records never "
                            "processed, by group: %s", behind)
                return
            self._stop.wait(CATCH_UP_POLL_S)
            newer = rotator.unprocessed()
            if sum(newer.values()) < sum(behind.values()):
                progressed = time.monotonic()
            behind = newer
        if time.monotonic() - started > CATCH_UP_POLL_S:
            log.info("processors caught up with the raw topic in %.1f s: recreating the topics", time.monotonic() - started)
