"""Resumable stream reads: one consumer group per viewer id, played at the recorded pace,
committing what the client has received."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaError

from pipeline.generations import OldestFirst, generations
from pipeline.kafka import assign_at, committed_offsets, make_consumer, partitions_of
from pipeline.offsets import tails
from pipeline.settings import Settings
from pipeline.viewer_groups import viewer_group
from viewer.live.delivery import SentBytes
from viewer.live.mjpeg import FrameTicks
from viewer.live.pacing import Pacer
from viewer.live.reader import FrameReader
from viewer.live.resets import Resets, ResetWatch
from viewer.live.viewer_ids import Lease
from viewer.metrics import ViewerMetrics

log = logging.getLogger(__name__)

# Frames read ahead of the one being paced: bounds a paced reader's memory.
READ_AHEAD = 8
# What one fetch brings: the consumer's usual limits (up to 16 MB a partition) filled a
# reader behind the live end with ~5 MB of frames per fetch, which it held for minutes at the
# recorded pace, and a seek waited for that much to arrive and be parsed before its first
# frame. A fetch still brings at least one whole batch, however large.
FETCH_BYTES = 1024 * 1024
# Commits to Kafka at most this often (and once more when the stream closes).
COMMIT_EVERY_S = 0.04


class Receipts:
    """Frames written to the client, committed once the client has acknowledged them.

    A frame is committed (as its record's offset + 1) once the client's TCP stack has
    acknowledged every byte of its part (`SentBytes.acked`), never merely when written.
    """

    def __init__(self, consumer: KafkaConsumer, resets: ResetWatch, sent: SentBytes) -> None:
        self.consumer, self.resets, self.sent = consumer, resets, sent
        self._written: deque[tuple[TopicPartition, int, int, int]] = deque()  # (tp, offset, ts, end byte)
        self._received: dict[TopicPartition, OffsetAndMetadata] = {}
        self._times: dict[TopicPartition, int] = {}
        self._committed_at = 0.0

    def written(self, tp: TopicPartition, offset: int, ts_ms: int) -> None:
        """The part of the record at `offset` (a frame recorded at `ts_ms`) has just been written
        (and counted by `sent`)."""
        self._written.append((tp, offset, ts_ms, self.sent.written))

    def settle(self, final: bool = False) -> set[TopicPartition]:
        """Commit what the client received (throttled unless `final`); follow an offset reset
        that came in meanwhile. Returns the partitions a reset moved."""
        acked = self.sent.acked()
        while self._written and self._written[0][3] <= acked:
            tp, offset, ts_ms, _ = self._written.popleft()
            self._received[tp] = OffsetAndMetadata(offset + 1, "", -1)
            self._times[tp] = ts_ms
        now = time.monotonic()
        due = final or now - self._committed_at >= COMMIT_EVERY_S
        offsets = self._received if due else {}
        moved = self.resets.commit_or_follow(self.consumer, offsets, self._times)
        if offsets:
            self._received, self._committed_at = {}, now
        if moved:
            self._written = deque(w for w in self._written if w[0] not in moved)
            self._received = {tp: om for tp, om in self._received.items() if tp not in moved}
        return moved


def _at_end(consumer: KafkaConsumer, tp: TopicPartition) -> bool:
    """Has the reader caught up with the log on `tp`, as far as its last fetch knows?"""
    high = consumer.highwater(tp)
    return high is not None and consumer.position(tp) >= high


def resumed_frames(
    settings: Settings,
    topic: str,
    stream: str,
    viewer_id: str,
    metrics: ViewerMetrics,
    sent: SentBytes,
    resets: Resets,
    speed: float | None = 1.0,
    idle_s: float = 0.25,
    lease: Lease | None = None,
    release: Callable[[Lease], None] | None = None,
    at_live_end: threading.Event | None = None,
) -> FrameTicks:
    """Frames of `stream` from the viewer's committed offsets (a new viewer starts at the newest
    frame), or None after each idle wait. Behind the live end frames are sent `speed` times as
    fast as they were recorded (None: as fast as the client reads); at the live end, as they come.

    `sent` counts the response's bytes: a frame's offset is committed once the client has
    acknowledged its part, so a closed tab or a restarted server resumes right after the last
    frame that reached the client. When `lease` is superseded (a newer connection with the same
    id took over) the frames end at once, committing nothing more; `release(lease)` is called
    once the last commit is made. `at_live_end` is set when the viewer is new, so starts at the
    newest frame (the live frame is then the right one to show until more come). Tiled frames
    are reassembled and a stream spread over partitions is put back in order, per viewer; each
    frame commits its own record's offset, so a resume can lose a frame held back at that
    moment (early tiles of the next frame, or a frame waiting for a gap).
    """
    group = viewer_group(viewer_id)
    consumer = make_consumer(settings, "viewer", group_id=group, auto_offset_reset="latest",
                             fetch_max_bytes=FETCH_BYTES, max_partition_fetch_bytes=FETCH_BYTES)
    watch = resets.watch(group)  # before reading committed offsets, so no reset slips in between
    receipts = Receipts(consumer, watch, sent)
    reader = FrameReader(topic, settings.max_frame_pixels, stream, metrics)
    pacer = Pacer(speed)
    metrics.resume_consumers.inc()
    if lease is not None:
        lease.started = True  # from here on the finally below frees the id
    try:
        # Every generation of the topic, oldest first (pipeline/generations.py; one on Apache Kafka).
        topics = [slot.topic for slot in generations(consumer, topic)]
        tps = partitions_of(consumer, *topics)
        starts = committed_offsets(consumer, tps)
        fresh = [tp for tp, offset in starts.items() if offset is None]
        # True ends (pipeline/offsets.py tails: seek_to_end lands up to a batch early on Tansu):
        # where a new viewer starts, and how far an older generation is read before the next
        # one. Read with this consumer: a client of their own cost each stream open ~20 ms.
        wanted = tps if len(topics) > 1 else fresh
        ends = tails(consumer, wanted)[1] if wanted else {}
        starts.update({tp: ends[tp] for tp in fresh})
        if at_live_end is not None and len(fresh) == len(tps):
            at_live_end.set()
        assign_at(consumer, starts)
        generations_in_order = OldestFirst(consumer, tps, ends) if len(topics) > 1 else None
        log.info("viewer group=%s stream=%s resuming on %d partition(s), %d new, speed=%s",
                 group, stream, len(tps), len(fresh), speed or "max")
        superseded = lease.superseded if lease is not None else threading.Event()
        while not superseded.is_set():
            if generations_in_order is not None:
                generations_in_order.apply()
            batch = consumer.poll(timeout_ms=reader.poll_ms(int(idle_s * 1000)), max_records=READ_AHEAD)
            ready = reader.read(batch, time.monotonic())
            delivered = False
            stale: set[TopicPartition] = set()  # partitions an offset reset moved meanwhile
            for i, (served, record) in enumerate(ready):
                tp, offset = TopicPartition(record.topic, record.partition), record.offset
                if tp in stale:
                    continue
                live = i == len(ready) - 1 and _at_end(consumer, tp)
                due = pacer.due(served.ts_ms, time.monotonic(), live)
                while tp not in stale and (wait := due - time.monotonic()) > 0:
                    # Waiting out the recorded pace: keep-alives go on, a reset cuts the wait short.
                    time.sleep(min(wait, idle_s))
                    if wait > idle_s:
                        yield None
                    stale |= receipts.settle()
                if tp in stale:
                    continue
                if superseded.is_set():
                    return
                yield served
                delivered = True
                receipts.written(tp, offset, served.ts_ms)
                stale |= receipts.settle()
            stale |= receipts.settle()  # also a reset while no frame of the stream arrives
            if stale:
                reader.restart_order()  # the stream goes on from the reset position: start over
                pacer.restart()
            if not delivered:
                yield None
    finally:
        try:
            if not (lease is not None and lease.superseded.is_set()):  # the resume point is the newer one's now
                receipts.settle(final=True)
        except KafkaError as exc:
            log.warning("viewer group=%s stream=%s last commit failed: %s", group, stream, exc)
        watch.close()
        consumer.close()
        if lease is not None and release is not None:
            release(lease)
        metrics.resume_consumers.dec()
