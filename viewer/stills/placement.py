"""Which jobs-topic partition each tile of a still job goes to: the one with the fewest of the
job's tiles still out (sent, and not yet collected back by this process's job collector), and
none while every partition has ``window`` out.

Why: each partition of the jobs topic belongs to one processor of the group. Tiles sent
round-robin gave every processor the same share of a job, however fast it was, and the job
ended only with the slowest one's last tile (2 processors, one on a busy core: the job took
longer than with the other alone). Sent as the tiles come back, a fast processor gets more of
them and a slow or stopped one only ``window`` per partition it holds.

Without feedback (the collector falls behind, the job waits behind others, or no processor is
running) the publisher waits at most ``stall_s`` for a tile to come back, then sends the job's
remaining tiles round-robin, as before; and it paces a job for at most ``pace_s`` in all. The
upload's answer waits until every tile is sent (then the job is in the log, whatever happens to
this process), so these bound how much longer it takes than the tiles' encoding.

Where a tile goes never decides whether it is processed: a tile on a dead processor's partition
is processed by whoever takes the partition over.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# Tiles out per partition before the next one waits: enough that a processor has its next
# tiles at hand while the last one's result travels back (two hops through the broker and the
# viewer's hub: tens of ms, more on a loaded host, while a 512 px blur tile takes ~10 ms), few
# enough that a slow processor's share at the job's end stays small. With 2 per partition a
# lone processor (4 partitions) ran short of tiles: its 4096² jobs took longer.
WINDOW = 4
# With every partition full, how long the publisher waits for any tile to come back before it
# stops pacing the job: over the 2 s a processor busy with live video may leave between two
# polls of job tiles (processor/jobs.py), plus a tile's work.
STALL_S = 3.0
# How long one job is paced at most, so the upload's answer (which waits for the last tile to
# be sent) comes well within a proxy's read timeout (60 s by default in nginx).
PACE_S = 20.0


class Placement:
    """One job's tiles out, per partition; the publisher asks ``next_partition``, the collector
    reports ``collected``. Thread-safe (greenlet-safe under gevent's patched threading)."""

    def __init__(self, partitions: list[int], window: int = WINDOW, stall_s: float = STALL_S,
                 pace_s: float = PACE_S, clock: Callable[[], float] = time.monotonic,
                 start: int | None = None) -> None:
        if not partitions:
            raise ValueError("no partitions to place tiles on")
        self.partitions = list(partitions)
        self.window, self.stall_s = window, stall_s
        self._clock = clock
        self._pace_until = clock() + pace_s
        self.out: dict[int, set[int]] = {p: set() for p in self.partitions}  # partition -> tile indexes out
        self.placed: dict[int, int] = {}  # tile index -> partition
        self.paced = True  # False once the feedback stalled: round-robin from then on
        # Ties go round-robin from a random partition, so jobs start on different partitions.
        self._turn = random.randrange(len(self.partitions)) if start is None else start
        self._changed = threading.Condition()

    def next_partition(self, index: int) -> int:
        """The partition for tile ``index``: the one with the fewest tiles out, after waiting
        (up to ``stall_s``) while every partition has ``window`` out."""
        with self._changed:
            wait_s = min(self.stall_s, self._pace_until - self._clock())
            if self.paced and not (self.has_room() or wait_s > 0 and self._changed.wait_for(self.has_room, wait_s)):
                self.paced = False
            partition = self._fewest_out()
            self.out[partition].add(index)
            self.placed[index] = partition
            return partition

    def collected(self, indexes: list[int]) -> None:
        """Tiles came back (a duplicate, or one never placed here, changes nothing)."""
        with self._changed:
            for index in indexes:
                partition = self.placed.get(index)
                if partition is not None:
                    self.out[partition].discard(index)
            self._changed.notify_all()

    def has_room(self) -> bool:
        """Some partition has fewer than ``window`` tiles out: the next tile goes without waiting."""
        return min(len(out) for out in self.out.values()) < self.window

    def _fewest_out(self) -> int:
        """The partition with the fewest tiles out; among equals, the next one in turn."""
        n = len(self.partitions)
        order = [self.partitions[(self._turn + k) % n] for k in range(n)]
        partition = min(order, key=lambda p: len(self.out[p]))
        self._turn = (self.partitions.index(partition) + 1) % n
        return partition


class Placements:
    """The jobs this process is publishing, by id: the job collector reports their tiles here."""

    def __init__(self, window: int = WINDOW, stall_s: float = STALL_S, pace_s: float = PACE_S) -> None:
        self.window, self.stall_s, self.pace_s = window, stall_s, pace_s
        self._jobs: dict[str, Placement] = {}

    @contextmanager
    def publishing(self, job_id: str, partitions: list[int]) -> Iterator[Placement]:
        """The job's placement while its tiles are being sent."""
        placement = Placement(partitions, self.window, self.stall_s, self.pace_s)
        self._jobs[job_id] = placement
        try:
            yield placement
        finally:
            self._jobs.pop(job_id, None)

    def collected(self, job_id: str, indexes: list[int]) -> None:
        """The collector got these tiles of the job back (ignored for jobs not being published here)."""
        placement = self._jobs.get(job_id)
        if placement is not None:
            placement.collected(indexes)
