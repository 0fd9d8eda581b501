"""Per-stream reordering by frame seq: a bounded buffer that turns out-of-order, possibly
duplicated arrivals back into one increasing sequence.

Why it exists: when one stream's frames are spread over several partitions (so several
processors share its work), processed frames reach a reader interleaved across partitions,
and a rebalance can replay frames already delivered (at-least-once). A reader pushes each
frame as it arrives and gets back the frames that are now in order.

Bounded both ways: a missing seq is waited for at most ``max_wait_s`` (from the arrival of the
oldest frame held behind it) and at most ``max_pending`` frames are held; then the gap is
skipped. Frames older than the last released seq are dropped as duplicates or late, unless
:func:`restarted` says the source started over. A stream
first seen mid-way (not at seq 0) waits the same bounded time for lower seqs before it starts.
Pure: the caller passes the clock (``now``, seconds); nothing here blocks.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


def restarted(last: int, seq: int, restart_gap: int, in_order: bool) -> bool:
    """Whether ``seq``, at or behind the ``last`` seq let through, is a restarted source counting
    from 0 again rather than a late or repeated frame: when it is more than ``restart_gap``
    behind, or, where frames arrive in order (one partition), when it is 0. Interleaved
    partitions can deliver a replayed 0 late, so there only the gap counts.

    The one rule for every reader of frame seqs (``Reorderer`` and the viewer's pass-through order).
    """
    return last - seq > restart_gap or (in_order and seq == 0)


@dataclass
class ReorderStats:
    released: int = 0
    duplicates: int = 0
    late: int = 0
    skipped: int = 0
    """Seqs given up on (never arrived within the bounds)."""
    restarts: int = 0


@dataclass
class _Stream(Generic[T]):
    next_seq: int | None = None
    heap: list = field(default_factory=list)  # (seq, arrival order, arrived_at, item)
    held: set[int] = field(default_factory=set)


class Reorderer(Generic[T]):
    """Releases each stream's items in increasing seq order, waiting a bounded time for gaps."""

    def __init__(self, max_pending: int = 32, max_wait_s: float = 0.25, restart_gap: int = 1000) -> None:
        if max_pending < 1 or max_wait_s < 0 or restart_gap < 1:
            raise ValueError("need max_pending >= 1, max_wait_s >= 0, restart_gap >= 1")
        self.max_pending = max_pending
        self.max_wait_s = max_wait_s
        self.restart_gap = restart_gap
        self.stats = ReorderStats()
        self._streams: dict[Hashable, _Stream[T]] = {}
        self._order = itertools.count()

    def push(self, stream: Hashable, seq: int, item: T, now: float) -> list[tuple[int, T]]:
        """Add one arrival; returns the (seq, item) pairs of ``stream`` now releasable, in order."""
        state = self._streams.setdefault(stream, _Stream())
        if state.next_seq is not None and seq < state.next_seq:
            if not restarted(state.next_seq - 1, seq, self.restart_gap, in_order=False):
                self.stats.late += 1
                return []
            self.stats.restarts += 1
            state = self._streams[stream] = _Stream()
        if seq in state.held:
            self.stats.duplicates += 1
            return []
        heapq.heappush(state.heap, (seq, next(self._order), now, item))
        state.held.add(seq)
        return self._release(state, now)

    def poll(self, now: float) -> dict[Hashable, list[tuple[int, T]]]:
        """Releases held items whose gap waited too long; call it when no arrivals come."""
        out = {}
        for stream, state in self._streams.items():
            released = self._release(state, now)
            if released:
                out[stream] = released
        return out

    def clear(self) -> None:
        """Forget every stream's position and held items; the stats go on counting."""
        self._streams.clear()

    def pending(self, stream: Hashable) -> int:
        state = self._streams.get(stream)
        return len(state.heap) if state else 0

    def _release(self, state: _Stream[T], now: float) -> list[tuple[int, T]]:
        out: list[tuple[int, T]] = []
        while state.heap:
            seq = state.heap[0][0]
            # Seqs count from 0, so a stream seen from its very start has nothing to wait for.
            if seq == (0 if state.next_seq is None else state.next_seq):
                out.append(self._pop(state))
                continue
            oldest = min(arrived for _, _, arrived, _ in state.heap)
            if len(state.heap) <= self.max_pending and now - oldest < self.max_wait_s:
                break
            # Give up on the gap (or, for a new stream, on seqs lower than what we hold).
            if state.next_seq is not None:
                self.stats.skipped += seq - state.next_seq
            state.next_seq = seq
        return out

    def _pop(self, state: _Stream[T]) -> tuple[int, T]:
        seq, _, _, item = heapq.heappop(state.heap)
        state.held.discard(seq)
        state.next_seq = seq + 1
        self.stats.released += 1
        return seq, item
