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

from pipeline.kafka import make_admin, topic_specs
from pipeline.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_BUDGET_MB = 256
# Tansu idles at ~35-50 MB resident; a budget below this would rotate without freeing anything.
MIN_BUDGET_MB = 64
# After a rotation, rotate again only once the broker has grown by this much: if something
# other than the topics holds the memory, recreating them again would not free it.
MIN_GROWTH_BYTES = 16 << 20


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
        self.admin = make_admin(settings)

    def close(self) -> None:
        self.admin.close()

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
    topics when it passes `budget_bytes`, inside `writers_paused()` (so no frame is produced
    into the gap between delete and create)."""

    def __init__(
        self,
        settings: Settings,
        broker_pid: int,
        budget_bytes: int,
        writers_paused: Callable[[], AbstractContextManager] = contextlib.nullcontext,
        interval_s: float = 1.0,
    ) -> None:
        self.settings = settings
        self.broker_pid = broker_pid
        self.budget_bytes = budget_bytes
        self.writers_paused = writers_paused
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
        with self.writers_paused():
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
