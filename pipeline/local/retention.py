"""Retention for the embedded broker: a replay window that slides, within a memory budget.

Tansu's memory engine ignores retention.ms/retention.bytes and cannot delete records; only
DeleteTopics frees memory, and at once. So in embedded mode each pipeline topic has two slots
(pipeline/generations.py): the current generation and the previous one. Every second `pipeline
up` checks, and rotates when the current generation's first record is `window` old (so the
previous one, kept for replay, spans at least the window), or earlier when the broker's
resident memory passes the budget (the window is then shorter, and the log says so). A rotation
deletes and recreates the previous slot's topics with their partition count, freeing the oldest
generation, and announces that empty slot as current. Consumers of a recreated topic move into it by
themselves (pipeline/recreated.py); Tansu drops the groups' committed offsets on it.
Apache Kafka has real retention: none of this runs there.

At-least-once across a rotation: recycling a raw (or jobs) slot deletes the records the
processors have not yet committed there. So a rotation first waits until every processor group
(every group with offsets on the raw or jobs topic) has committed up to the end of the slot
about to be recycled, for as long as they keep making progress, checks again with the producers
paused, and only then pauses the processors too and recycles the slot. If the broker passes the
budget by a quarter while it waits, the producers are paused from then on (back-pressure: the
live video waits for the processors rather than the memory growing). A group behind makes
progress while its commits move or while a processor of it still sends heartbeats: one busy on
a single long record (a heavy still tile, a slow chain) commits nothing meanwhile, but its
heartbeat thread goes on. Groups that show neither for `CATCH_UP_STALL_S` (dead processors, a
group left from an earlier run), and a wait past `CATCH_UP_MAX_S` (a processor hung with its
heartbeats going on), do not hold the memory budget hostage: the rotation goes ahead and says,
in a warning, how many raw records each group never processed. (A single large record used to
trigger the very rotation that deleted it before any processor had read it.) The previous
generation has normally been processed long before it is recycled, so this rarely waits.
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

from kafka.admin import NewTopic
from kafka.errors import KafkaError

from pipeline.generations import (
    SECOND_SLOT,
    announce,
    first_records,
    generational_bases,
    generations,
    mirrored,
    slot_names,
    slot_topic,
)
from pipeline.heartbeat import Heartbeat, HeartbeatError, decode_heartbeat, live_workers
from pipeline.kafka import assign_at, from_end, make_consumer, make_producer, partitions_of, topic_specs
from pipeline.offsets import OffsetsError, OffsetTool
from pipeline.processor_groups import job_group
from pipeline.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_BUDGET_MB = 256
# The replay window: the demo (the sample at 25 fps, grayscale) grows the broker by ~1.8 MB/s
# (measured), so two generations of 45 s peak at ~175 MB with the idle broker, under the
# default budget with room for bigger frames (a minute peaked at ~235 MB).
DEFAULT_WINDOW_S = 45.0
# Tansu idles at ~35-50 MB resident; a budget below this would rotate without freeing anything.
MIN_BUDGET_MB = 64
# After a rotation, rotate again only once the broker has grown by this much: if something
# other than the topics holds the memory, recreating them again would not free it.
MIN_GROWTH_BYTES = 16 << 20
# A rotation waits for the processors to finish the slot it recycles while they make progress
# (their commits move, or a processor of a group behind sends heartbeats, at least every
# CATCH_UP_STALL_S), but never longer than CATCH_UP_MAX_S.
CATCH_UP_STALL_S = 10.0
CATCH_UP_MAX_S = 60.0
CATCH_UP_POLL_S = 0.2
# While a rotation waits for the processors the producers go on, filling the current generation;
# once the broker passes the budget by this share they are frozen for the rest of the wait, so a
# slow processor holds the live video instead of letting the broker grow (at 150 fps on a loaded
# machine it reached 2.5x the budget in a 12 s wait).
FREEZE_PRODUCERS_OVER = 0.25
# Heartbeats read back when a wait starts: enough for every live processor's newest.
HEARTBEAT_RECORDS = 500


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
    reason: str  # "window" or "memory"
    rss_before: int  # when the rotation was decided
    # Just before the recycling: the rotation may first wait for processors while the current
    # generation grows, so what the recycling freed is rss_recycling - rss_after.
    rss_recycling: int
    rss_after: int
    # How far back the previous generation, now the oldest kept, reaches (s).
    kept_s: float | None


def generation_specs(settings: Settings) -> list[NewTopic]:
    """Every topic, a second slot for the generational ones (raw, processed, dead letters), and
    the topic that names the current slot."""
    specs = topic_specs(settings)
    generational = generational_bases(settings)
    return specs + [
        NewTopic(spec.name + SECOND_SLOT, spec.num_partitions, spec.replication_factor, topic_configs=spec.topic_configs)
        for spec in specs if spec.name in generational
    ] + [NewTopic(slot_topic(settings), 1, settings.replication_factor)]


class LiveGroups:
    """The processor groups with a running member, from the processors' heartbeats (a live
    group and its jobs group, pipeline/processor_groups.py). Reads on from where it was; call
    ``restart`` before the heartbeat topic is recreated."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.heartbeat_topic
        self.consumer = make_consumer(settings, "retention-heartbeats", group_id=None)
        self.newest: dict[str, Heartbeat] = {}
        self.following = False

    def read(self) -> set[str]:
        if not self.following:
            tps = partitions_of(self.consumer, self.topic)
            if not tps:
                return set()
            assign_at(self.consumer, from_end(self.consumer, tps, HEARTBEAT_RECORDS))
            self.following = True
        beats = list(self.newest.values())
        for records in self.consumer.poll(timeout_ms=0).values():
            for record in records:
                with contextlib.suppress(HeartbeatError):  # anyone can write to the topic
                    beats.append(decode_heartbeat(record.value))
        live = live_workers(beats, int(time.time() * 1000))  # the newest of each, not stopped or stale
        self.newest = {beat.id: beat for beat in live}
        return {group for beat in live for group in (beat.group, job_group(beat.group))}

    def restart(self) -> None:
        """Forget the topic: nothing of this consumer asks for it while it is deleted."""
        self.consumer.unsubscribe()
        self.newest, self.following = {}, False

    def close(self) -> None:
        self.consumer.close()


class TopicRotator:
    """Finds the generations and recycles the previous one: deletes and recreates its topics
    (and the heartbeat topic, which has no history worth keeping) with their partition counts."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.specs = {spec.name: spec for spec in generation_specs(settings)}
        self.bases = generational_bases(settings)
        # Only the generational topics and the heartbeats are ever recycled: the chain control
        # topic is kept (recreating it would send every stream back to the default chain).
        self.offsets = OffsetTool(settings)
        self.admin = self.offsets.admin
        self.consumer = make_consumer(settings, "retention", group_id=None)
        self.producer = make_producer(settings, "retention")
        self.live_groups = LiveGroups(settings)
        # `pipeline up` starts with fresh topics and writers start in the first slot.
        self.current = settings.raw_topic

    def close(self) -> None:
        self.producer.close(timeout=5)
        self.live_groups.close()
        self.consumer.close()
        self.offsets.close()

    def previous(self) -> str:
        """The raw slot the next rotation recycles (the only one, without generations)."""
        existing = set(self.consumer.topics())
        return next((name for name in slot_names(self.settings.raw_topic) if name != self.current and name in existing),
                    self.current)

    def unprocessed(self) -> dict[str, int]:
        """Records of the input slots about to be recycled (raw frames and still-job tiles)
        that each processor group has not committed yet, for the groups behind; a group counts
        for the topics it has offsets on (processors read frames and jobs in groups of their
        own). True ends, right on Tansu too."""
        slot = self.previous()
        inputs = {}
        for base in (self.settings.raw_topic, self.settings.jobs_topic):
            try:
                inputs[base] = self.offsets.partitions(mirrored(slot, self.settings.raw_topic, base))
            except OffsetsError:
                continue  # no such topic (yet): nothing to lose
        if not inputs:
            return {}
        earliest, ends = self.offsets.ends([tp for tps in inputs.values() for tp in tps])
        behind = {}
        for group in self.offsets.groups():
            committed = self.offsets.committed(group)
            records = sum(max(0, ends[tp] - committed.get(tp, earliest[tp]))
                          for base, tps in inputs.items()
                          if any(c.topic in slot_names(base) for c in committed) for tp in tps)
            if records:
                behind[group] = records
        return behind

    def busy(self, groups: set[str]) -> bool:
        """Whether any of these groups has a processor sending heartbeats."""
        return bool(self.live_groups.read() & groups)

    def current_age_s(self) -> float | None:
        """Age of the current generation: since the newer of its raw and processed slots'
        first records (None while either is empty)."""
        topics = [mirrored(self.current, self.settings.raw_topic, base) for base in self.bases[:2]]
        firsts = [slot.first_ms for slot in first_records(self.consumer, topics)]
        if None in firsts:
            return None
        return time.time() - max(firsts) / 1000

    def oldest_kept_s(self) -> float | None:
        """How far back the processed topic reaches now (None: empty)."""
        firsts = [slot.first_ms for slot in generations(self.consumer, self.settings.processed_topic) if slot.first_ms]
        return time.time() - min(firsts) / 1000 if firsts else None

    def rotate(self) -> None:
        """Recycle the previous generation's slot and announce it as current. Without a second
        slot (a rotator for topics made by `ensure_topics` alone) the only slot is recycled."""
        raw = self.settings.raw_topic
        previous = self.previous()
        names = [mirrored(previous, raw, base) for base in self.bases] + [self.settings.heartbeat_topic]
        specs = [self.specs[name] for name in names]
        self.live_groups.restart()
        # One request each, back to back: a client asking for a missing topic in between would
        # auto-create it with the broker's default partition count (4 on Tansu), not ours.
        self.admin.delete_topics([spec.name for spec in specs], raise_errors=False)
        self.admin.create_topics(specs, raise_errors=False)
        self._repair_partition_counts(specs)
        if slot_topic(self.settings) in self.consumer.topics():
            announce(self.producer, self.settings, previous)
        self.current = previous

    def _repair_partition_counts(self, specs: list[NewTopic]) -> None:
        wanted = {spec.name: spec for spec in specs}
        for topic in self.admin.describe_topics(list(wanted)):
            spec = wanted[topic["name"]]
            if len(topic["partitions"]) != spec.num_partitions:
                log.warning("topic %s was auto-created with %d partitions: recreating it with %d",
                            spec.name, len(topic["partitions"]), spec.num_partitions)
                self.admin.delete_topics([spec.name], raise_errors=False)
                self.admin.create_topics([spec], raise_errors=False)


class EmbeddedRetention:
    """Background thread: every `interval_s`, rotates the generations when the current one is
    `window_s` old or the broker's resident memory passes `budget_bytes`: inside
    `producers_paused()` it waits for the processors to finish the slot it recycles, then inside
    `processors_paused()` as well (so nothing is produced into the gap between delete and
    create) it recycles it."""

    def __init__(
        self,
        settings: Settings,
        broker_pid: int,
        budget_bytes: int,
        producers_paused: Callable[[], AbstractContextManager] = contextlib.nullcontext,
        processors_paused: Callable[[], AbstractContextManager] = contextlib.nullcontext,
        interval_s: float = 1.0,
        window_s: float = DEFAULT_WINDOW_S,
    ) -> None:
        self.settings = settings
        self.broker_pid = broker_pid
        self.budget_bytes = budget_bytes
        self.ceiling_bytes = int(budget_bytes * (1 + FREEZE_PRODUCERS_OVER))
        self.producers_paused = producers_paused
        self.processors_paused = processors_paused
        self.interval_s = interval_s
        self.window_s = window_s
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
                except Exception as exc:  # a bug must not end retention: memory would grow without bound
                    log.error("embedded retention check failed, retrying: %s: %s", type(exc).__name__, exc)
        finally:
            rotator.close()

    def check(self, rotator: TopicRotator) -> Rotation | None:
        before = process_rss_bytes(self.broker_pid)
        age_s = rotator.current_age_s() if self.window_s > 0 else None
        by_window = age_s is not None and age_s >= self.window_s
        # After a rotation, rotate for memory again only once the broker has grown: if something
        # other than the topics holds the memory, recycling more would not free it.
        by_memory = before > self.budget_bytes and not (
            self.rotations and before < self.rotations[-1].rss_after + MIN_GROWTH_BYTES
        )
        if not (by_window or by_memory):
            return None
        started = time.monotonic()
        # Writers follow the current slot, so the one to recycle takes no new records: the
        # processors finish it while everything runs, and producers are frozen only for a last
        # check and the recycling (waiting frozen, a backlog of still-job tiles stopped the live
        # video for as long as the processors took), or once the broker is well over the budget.
        with contextlib.ExitStack() as frozen:
            held: list[bool] = []

            def hold_producers_over_ceiling() -> None:
                if not held and process_rss_bytes(self.broker_pid) > self.ceiling_bytes:
                    frozen.enter_context(self.producers_paused())
                    held.append(True)
                    log.info("embedded broker past %d MB while processors catch up: producers paused until the "
                             "rotation", self.ceiling_bytes >> 20)

            caught_up = self._await_processors(rotator, hold_producers_over_ceiling)
            if self._stop.is_set():
                return None  # stopping with the broker: recycling would only delete what is unprocessed
            if not held:
                frozen.enter_context(self.producers_paused())
                if caught_up:
                    self._await_processors(rotator)
            with self.processors_paused():
                recycling = process_rss_bytes(self.broker_pid)
                rotator.rotate()
        kept_s = rotator.oldest_kept_s()
        rotation = Rotation(len(self.rotations) + 1, "window" if by_window else "memory", before, recycling,
                            process_rss_bytes(self.broker_pid), kept_s)
        self.rotations.append(rotation)
        log.info(
            "embedded broker at %d MB (budget %d MB), %s: previous generation recycled at %d MB in %.0f ms, replay "
            "reaches back %s s, now %d MB (rotation %d)",
            before >> 20, self.budget_bytes >> 20,
            f"generation {age_s:.0f} s old" if by_window else "over budget", recycling >> 20,
            (time.monotonic() - started) * 1000,
            "-" if kept_s is None else f"{kept_s:.0f}", rotation.rss_after >> 20, rotation.number,
        )
        if not by_window and self.window_s > 0:
            log.warning("replay window capped by memory: %s s kept, %.0f s wanted; raise --embedded-retention-mb or "
                        "lower --retention", "-" if kept_s is None else f"{kept_s:.0f}", self.window_s)
        return rotation

    def _await_processors(self, rotator: TopicRotator, each_wait: Callable[[], None] = lambda: None) -> bool:
        """Until no processor group is behind on the slot to recycle, while they make progress
        (commit, or are busy: see the module's docstring); False when it gave up waiting.
        `each_wait` runs before every wait."""
        started = progressed = time.monotonic()
        behind = rotator.unprocessed()
        while behind:
            each_wait()
            if self._stop.is_set():
                return False
            now = time.monotonic()
            if now - progressed > CATCH_UP_STALL_S or now - started > CATCH_UP_MAX_S:
                log.warning("recycling a generation although processors have not caught up: raw records never "
                            "processed, by group: %s", behind)
                return False
            self._stop.wait(CATCH_UP_POLL_S)
            newer = rotator.unprocessed()
            if sum(newer.values()) < sum(behind.values()) or (newer and rotator.busy(set(newer))):
                progressed = time.monotonic()
            behind = newer
        if time.monotonic() - started > CATCH_UP_POLL_S:
            log.info("processors caught up with the raw slot in %.1f s: recycling it", time.monotonic() - started)
        return True
