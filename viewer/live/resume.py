"""Resumable stream reads: one consumer group per viewer id, committing what was delivered."""

from __future__ import annotations

import logging
import re
import time

from kafka import OffsetAndMetadata, TopicPartition

from pipeline.kafka import make_consumer
from pipeline.offsets import OffsetTool
from pipeline.settings import Settings
from pipeline.wire import WireError, decode_record
from viewer.live.mjpeg import FrameTicks
from viewer.live.ordering import StreamOrder
from viewer.live.resets import watch_resets
from viewer.live.served import ServedFrame, served_or_tile
from viewer.live.tiles import TileReassembler
from viewer.metrics import ViewerMetrics

log = logging.getLogger(__name__)

VIEWER_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
VIEWER_ID_RULE = "viewer id must be 1-64 characters of A-Z a-z 0-9 _ . -"


def viewer_group(viewer_id: str) -> str:
    return f"viewer-{viewer_id}"


def resumed_frames(
    settings: Settings, topic: str, stream: str, viewer_id: str, metrics: ViewerMetrics, idle_s: float = 0.25
) -> FrameTicks:
    """Frames of `stream` from the viewer's committed offsets (a new viewer starts at the newest
    frame), or None after each idle poll. A frame's offset is committed when the caller asks
    for the next item, that is once the part has been handed to the client's socket: a closed
    tab or a restarted server resumes right after the last frame written.

    Tiled frames are reassembled and a stream spread over partitions is put back in order,
    per viewer. Each frame commits its own record's offset, so a resume can lose a frame held
    back at that moment (early tiles of the next frame, or a frame waiting for a gap).
    """
    group = viewer_group(viewer_id)
    consumer = make_consumer(settings, "viewer", group_id=group, auto_offset_reset="latest")
    resets = watch_resets(group)  # before reading committed offsets, so no reset slips in between
    tiles = TileReassembler()
    metrics.resume_consumers.inc()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        starts = {tp: consumer.committed(tp) for tp in tps}
        fresh = [tp for tp, offset in starts.items() if offset is None]
        if fresh:
            # Not seek_to_end: on Tansu it lands up to a batch early (OffsetTool.ends reads the true end).
            with OffsetTool(settings) as tool:
                starts.update(tool.ends(fresh)[1])
        consumer.assign(tps)
        for tp, offset in starts.items():
            consumer.seek(tp, offset)
        log.info("viewer group=%s stream=%s resuming on %d partition(s), %d new", group, stream, len(tps), len(fresh))
        order: StreamOrder[tuple[ServedFrame, TopicPartition, int]] = StreamOrder()
        while True:
            # A spread stream may hold frames for a gap: come back soon to release them.
            batch = consumer.poll(timeout_ms=50 if order.any_spread else int(idle_s * 1000))
            arrivals = []
            for tp, records in batch.items():
                for record in records:
                    try:
                        frame = decode_record(record)
                    except WireError:
                        continue
                    if frame.stream != stream or frame.job is not None:
                        continue
                    served = served_or_tile(frame, tiles)
                    if served is not None:
                        order.seen(stream, tp.partition)
                        arrivals.append((served, tp, record.offset))
            ready = [item for a in arrivals for item in order.push(stream, a[0].seq, a[1].partition, a, time.monotonic())]
            ready += order.poll(time.monotonic())
            delivered = False
            stale: set[TopicPartition] = set()  # partitions an offset reset moved meanwhile
            for served, tp, offset in ready:
                if tp in stale:
                    continue
                yield served
                delivered = True
                stale |= resets.commit_or_follow(consumer, {tp: OffsetAndMetadata(offset + 1, "", -1)})
            stale |= resets.commit_or_follow(consumer, {})  # a reset while no frame of the stream arrives
            if stale:
                order = StreamOrder()  # the stream goes on from the reset position: start over
            if not delivered:
                yield None
    finally:
        resets.close()
        consumer.close()
        metrics.resume_consumers.dec()
