"""Offset resets for viewer groups that are streaming right now, in this process.

A resumable reader uses assign() + commit(), so its group has no members in Kafka's sense and
an admin reset succeeds while it streams, only to be undone by the reader's next commit. So
readers register here per group; a reset holds the group's lock while it commits the new
offsets and hands them to the readers, which seek there instead of committing their old
position. Readers in other workers and replicas get the same reset through the control topic
(viewer/live/broadcast.py), which hands it to their process's registry with `follow`.

One registry per app; a group's slot lives while a reader or a reset uses it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition

# How long a new reader waits for the control topic's follower to be reading (it starts with the
# process's first resumed stream): a reset written before the follower has found its start
# position would reach neither the follower nor, if the reader read its offsets just before the
# reset's commit, the reader.
FOLLOW_WAIT_S = 5.0
# How long after its last reader here closed a group is still "just closed": that reader's final
# commit may have landed after another process's reset of the group was committed, before the
# reset's record reached this process; the record's positions are then committed again.
LINGER_S = 5.0
MAX_LINGERING = 1024


@dataclass
class GroupResets:
    """The shared state of one group's open readers."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    generation: int = 0
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    readers: int = 0
    users: int = 0  # readers and resets in progress: the slot is dropped when none is left
    # The control-topic offset of the newest reset announced: each reset reaches the process that
    # wrote it twice, from the request and back from the topic.
    record: int = -1
    # What the group's readers last committed: tp -> (offset, time of the frame before it).
    delivered: dict[TopicPartition, tuple[int, int]] = field(default_factory=dict)


class ResetWatch:
    """One reader's view: has the group been reset since this reader last looked?"""

    def __init__(self, registry: Resets, group: str, slot: GroupResets) -> None:
        self.registry, self.group_id, self.group = registry, group, slot
        self.seen = slot.generation
        self._open = True

    def close(self) -> None:
        with self.group.lock:
            if not self._open:
                return
            self._open = False
            self.group.readers -= 1
        self.registry._release(self.group_id, self.group, reader=True)

    def commit_or_follow(
        self,
        consumer: KafkaConsumer,
        offsets: dict[TopicPartition, OffsetAndMetadata],
        times: dict[TopicPartition, int] | None = None,
    ) -> set[TopicPartition]:
        """Commit `offsets` (`times`: the time of each one's last delivered frame), unless a
        reset came in since this reader last looked: then seek `consumer` to the reset's
        positions instead (committing only the partitions it did not move) and return the
        partitions it moved."""
        with self.group.lock:
            moved: dict[TopicPartition, int] = {}
            if self.group.generation != self.seen:
                self.seen = self.group.generation
                mine = consumer.assignment()
                moved = {tp: p for tp, p in self.group.positions.items() if tp in mine}
            keep = {tp: om for tp, om in offsets.items() if tp not in moved}
            if keep:
                consumer.commit(keep)
                for tp, om in keep.items():
                    if times and tp in times:
                        self.group.delivered[tp] = (om.offset, times[tp])
            for tp, position in moved.items():
                consumer.seek(tp, position)
        return set(moved)


class Resets:
    """Every group with open readers in this process."""

    def __init__(self) -> None:
        self._groups: dict[str, GroupResets] = {}
        self._closed: OrderedDict[str, float] = OrderedDict()  # group -> when its last reader here closed
        self._lock = threading.Lock()
        # Set while the control topic's follower reads: resets from other processes arrive.
        self.following = threading.Event()

    def _acquire(self, group: str) -> GroupResets:
        with self._lock:
            slot = self._groups.setdefault(group, GroupResets())
            slot.users += 1
            return slot

    def _release(self, group: str, slot: GroupResets, reader: bool = False) -> None:
        with self._lock:
            slot.users -= 1
            if slot.users == 0 and self._groups.get(group) is slot:
                del self._groups[group]
            if reader and slot.readers == 0:
                self._closed[group] = time.monotonic()
                self._closed.move_to_end(group)
                while len(self._closed) > MAX_LINGERING:
                    self._closed.popitem(last=False)

    def just_closed(self, group: str) -> bool:
        """Did the group's last reader here close less than LINGER_S ago (and none is open)?"""
        with self._lock:
            slot = self._groups.get(group)
            if slot is not None and slot.readers:
                return False
            since = self._closed.get(group)
            return since is not None and time.monotonic() - since < LINGER_S

    def groups(self) -> int:
        """How many groups have a slot (open readers or a reset in progress)."""
        with self._lock:
            return len(self._groups)

    def watch(self, group: str) -> ResetWatch:
        """Register an open reader of `group` (before it reads its committed offsets); close() it.
        Waits up to FOLLOW_WAIT_S for the control topic's follower (see there)."""
        self.following.wait(FOLLOW_WAIT_S)
        slot = self._acquire(group)
        with slot.lock:
            slot.readers += 1
            return ResetWatch(self, group, slot)

    @contextmanager
    def resetting(self, group: str) -> Iterator[GroupResets]:
        """Hold off the group's readers' commits while a reset is planned and committed."""
        slot = self._acquire(group)
        try:
            with slot.lock:
                yield slot
        finally:
            self._release(group, slot)

    def follow(self, group: str, positions: dict[TopicPartition, int], record: int) -> int:
        """A reset written to the control topic at offset `record` (by any process): hand it to
        this process's open readers of `group`, unless they have it already; returns how many."""
        with self._lock:
            if group not in self._groups:
                return 0
        with self.resetting(group) as slot:
            return announce(slot, positions, record)

    def delivered(self, group: str, tp: TopicPartition) -> tuple[int, int] | None:
        """(committed offset, time of the frame before it) as this process's open readers of
        `group` last committed them on `tp`; None when none is open or none committed since the
        last reset (then Kafka knows best)."""
        with self._lock:
            slot = self._groups.get(group)
        if slot is None:
            return None
        with slot.lock:
            return slot.delivered.get(tp) if slot.readers else None


def announce(slot: GroupResets, positions: dict[TopicPartition, int], record: int | None = None) -> int:
    """Tell the open readers (call inside `resetting`) to seek to `positions`; returns how many.
    `record`: the reset's control-topic offset, so that it is announced once."""
    if record is not None:
        if record <= slot.record:
            return slot.readers
        slot.record = record
    slot.positions = dict(positions)
    slot.generation += 1
    for tp in positions:
        slot.delivered.pop(tp, None)
    return slot.readers
