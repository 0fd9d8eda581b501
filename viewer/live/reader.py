"""Records to live frames: decode, skip still-image jobs, reassemble tiles, put each stream in order.

The one path from consumed records to frames a browser is shown: the live hub keeps one for its
whole topic, each resuming viewer one for its own stream.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict

from kafka import TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from viewer.live.latewindow import LateWindow
from viewer.live.ordering import StreamOrder
from viewer.live.served import ServedFrame, accept_record
from viewer.live.tiles import TileReassembler
from viewer.metrics import ViewerMetrics

log = logging.getLogger(__name__)

# Runs ``accept(record)``, and logs, counts and skips a record it raises on (None).
Guard = Callable[[Callable[[ConsumerRecord], "ServedFrame | None"], ConsumerRecord], "ServedFrame | None"]

# A stream spread over partitions may hold frames for a gap: poll this often to release them.
SPREAD_POLL_MS = 50


class FrameReader:
    """Frames of `topic` (only `stream`'s when given), each with the record that completed it."""

    def __init__(self, topic: str, max_pixels: int, stream: str | None = None, metrics: ViewerMetrics | None = None,
                 late: LateWindow | None = None, guard: Guard | None = None) -> None:
        self.topic = topic
        self.max_pixels = max_pixels  # frames are checked against it from their headers, before decoding
        self.stream = stream
        self.metrics = metrics
        self.late = late  # skips frames a processor sent too far behind its input
        self.guard = guard
        self.tiles = TileReassembler(max_pixels=max_pixels)
        self.order: StreamOrder[tuple[ServedFrame, ConsumerRecord]] = StreamOrder()
        self._counted = {"tiles_dropped": 0} | asdict(self.order.reorderer.stats)

    def poll_ms(self, idle_ms: int) -> int:
        """How long the next poll may wait for records."""
        return SPREAD_POLL_MS if self.order.any_spread else idle_ms

    def read(self, batch: Mapping[TopicPartition, list[ConsumerRecord]], now: float) -> list[tuple[ServedFrame, ConsumerRecord]]:
        """The frames now due, in each stream's order; an empty batch still releases frames
        whose gap has waited long enough."""
        accept = self.accept if self.guard is None else (lambda record: self.guard(self.accept, record))
        arrivals = [(frame, record) for records in batch.values() for record in records
                    if (frame := accept(record)) is not None]
        # Note every partition of the batch first, so a batch holding a spread stream's
        # partitions one after the other is recognised as spread before any frame passes.
        for frame, record in arrivals:
            self.order.seen(frame.stream, record.partition)
        ready = [item for frame, record in arrivals
                 for item in self.order.push(frame.stream, frame.seq, record.partition, (frame, record), now)]
        ready += self.order.poll(now)
        self._count()
        return ready

    def restart_order(self) -> None:
        """Forget what was shown: the position moved (an offset reset), the stream goes on from there."""
        self.order.clear()

    def _count(self) -> None:
        """Add what the tile and order bookkeeping counted since last time to the metrics."""
        if self.metrics is None:
            return
        counts = {"tiles_dropped": self.tiles.dropped} | asdict(self.order.reorderer.stats)
        for event, total in counts.items():
            new = total - self._counted[event]
            if new and event == "tiles_dropped":
                self.metrics.tiled_frames_dropped.labels(self.topic).inc(new)
            elif new:
                self.metrics.order_events.labels(self.topic, event).inc(new)
        self._counted = counts

    def accept(self, record: ConsumerRecord) -> ServedFrame | None:
        """One record as a frame to show, or None (see ``served.accept_record``: still jobs,
        another stream, too far behind, a tile waiting for its siblings, or not a servable frame)."""
        return accept_record(record, self.tiles, self.max_pixels, self.metrics, self.stream, self.late)
