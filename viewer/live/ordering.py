"""Frame order per stream, for readers that see frames from every partition of a topic.

A stream keyed by name lives in one partition, so its frames arrive in order: they pass
straight through (only a late or duplicate older seq, e.g. redone after a processor crash,
is dropped), and a seq gap (a frame the producer dropped) costs no waiting. A stream spread
over partitions (`wire.spread_partition`) arrives interleaved: once a stream has been seen
on a second partition, its frames go through `pipeline.reorder.Reorderer`, which holds them
a bounded time for gaps.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

from pipeline.reorder import Reorderer

T = TypeVar("T")

# Live viewing: hold a gap for at most ~2 frames at 25 fps, then show what came.
MAX_WAIT_S = 0.08
MAX_PENDING = 16
# A seq this far behind the newest means the producer restarted (it counts from 0 again).
RESTART_GAP = 1000


class StreamOrder(Generic[T]):
    def __init__(self, max_wait_s: float = MAX_WAIT_S, max_pending: int = MAX_PENDING) -> None:
        self.max_wait_s = max_wait_s
        self.reorderer: Reorderer[T] = Reorderer(max_pending, max_wait_s, RESTART_GAP)
        self._partitions: dict[Hashable, set[int]] = {}
        self._newest: dict[Hashable, tuple[int, T]] = {}  # pass-through streams: last seq and item out

    def spread(self, stream: Hashable) -> bool:
        return len(self._partitions.get(stream, ())) > 1

    @property
    def any_spread(self) -> bool:
        return any(len(p) > 1 for p in self._partitions.values())

    def seen(self, stream: Hashable, partition: int) -> None:
        """Note where a frame comes from before pushing: call it for a whole polled batch
        first, so a batch that holds a spread stream's partitions one after the other is
        recognised as spread before any of its frames passes through."""
        self._partitions.setdefault(stream, set()).add(partition)

    def push(self, stream: Hashable, seq: int, partition: int, item: T, now: float) -> list[T]:
        """`item` (frame `seq` of `stream`, read from `partition`) arrived: the items now due, in order."""
        self.seen(stream, partition)
        if self.spread(stream):
            after = self._seed(stream, now)
            return [ready for out_seq, ready in self.reorderer.push(stream, seq, item, now) if out_seq > after]
        newest = self._newest.get(stream)
        if newest is not None and seq <= newest[0] and newest[0] - seq <= RESTART_GAP and seq != 0:
            return []  # late or duplicate; seq 0 is a restarted producer
        self._newest[stream] = (seq, item)
        return [item]

    def _seed(self, stream: Hashable, now: float) -> int:
        """When a stream has just become spread, the reorderer would first wait for seqs below
        the one that came, shown already or never coming. So the last frame shown goes in first,
        as if it had waited its full time: the reorderer continues right after it. Returns its
        seq: it and anything older were shown or are too late (-1 when not just spread)."""
        if stream not in self._newest:
            return -1
        seq, shown = self._newest.pop(stream)
        self.reorderer.push(stream, seq, shown, now - 2 * self.max_wait_s)
        return seq

    def poll(self, now: float) -> list[T]:
        """Items of spread streams whose gap has waited long enough; call it when nothing arrives."""
        return [ready for released in self.reorderer.poll(now).values() for _, ready in released]
