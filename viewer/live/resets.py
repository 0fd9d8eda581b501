"""Offset resets for viewer groups that are streaming right now.

A resumable reader uses assign() + commit(), so its group has no members in Kafka's sense and
an admin reset succeeds while it streams, only to be undone by the reader's next commit. So
readers register here per group; a reset holds the group's lock while it commits the new
offsets and hands them to the readers, which seek there instead of committing their old
position. Readers live in this process: behind `gunicorn -w N` a reset reaches the readers of
the worker that served it (`pipeline up` runs one worker).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition


@dataclass
class GroupResets:
    """The shared state of one group's open readers."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    generation: int = 0
    positions: dict[TopicPartition, int] = field(default_factory=dict)
    readers: int = 0
    # What the group's readers last committed: tp -> (offset, time of the frame before it).
    delivered: dict[TopicPartition, tuple[int, int]] = field(default_factory=dict)


class ResetWatch:
    """One reader's view: has the group been reset since this reader last looked?"""

    def __init__(self, group: GroupResets) -> None:
        self.group = group
        self.seen = group.generation
        self._open = True

    def close(self) -> None:
        with self.group.lock:
            if self._open:
                self._open = False
                self.group.readers -= 1

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


_groups: dict[str, GroupResets] = {}
_registry_lock = threading.Lock()


def _slot(group: str) -> GroupResets:
    with _registry_lock:
        return _groups.setdefault(group, GroupResets())


def watch_resets(group: str) -> ResetWatch:
    """Register an open reader of `group` (before it reads its committed offsets); close() it."""
    slot = _slot(group)
    with slot.lock:
        slot.readers += 1
        return ResetWatch(slot)


@contextmanager
def resetting(group: str) -> Iterator[GroupResets]:
    """Hold off the group's readers' commits while a reset is planned and committed."""
    slot = _slot(group)
    with slot.lock:
        yield slot


def announce(slot: GroupResets, positions: dict[TopicPartition, int]) -> int:
    """Tell the open readers (call inside `resetting`) to seek to `positions`; returns how many."""
    slot.positions = dict(positions)
    slot.generation += 1
    for tp in positions:
        slot.delivered.pop(tp, None)
    return slot.readers


def delivered(group: str, tp: TopicPartition) -> tuple[int, int] | None:
    """(committed offset, time of the frame before it) as this process's open readers of
    `group` last committed them on `tp`; None when none is open or none committed since the
    last reset (then Kafka knows best)."""
    with _registry_lock:
        slot = _groups.get(group)
    if slot is None:
        return None
    with slot.lock:
        return slot.delivered.get(tp) if slot.readers else None
