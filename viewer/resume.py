"""Resumable stream reads: one consumer group per viewer id, committing what was delivered."""

from __future__ import annotations

import logging
import re

from kafka import OffsetAndMetadata, TopicPartition

from pipeline.kafka import make_consumer
from pipeline.offsets import OffsetTool
from pipeline.settings import Settings
from pipeline.wire import WireError, decode_record
from viewer.metrics import ViewerMetrics
from viewer.mjpeg import FrameTicks
from viewer.readers import watch_resets
from viewer.served import served_or_tile
from viewer.tiles import TileReassembler

log = logging.getLogger(__name__)

VIEWER_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def viewer_group(viewer_id: str) -> str:
    return f"viewer-{viewer_id}"


def resumed_frames(
    settings: Settings, topic: str, stream: str, viewer_id: str, metrics: ViewerMetrics, idle_s: float = 0.25
) -> FrameTicks:
    """Frames of `stream` from the viewer's committed offsets (a new viewer starts at the newest
    frame), or None after each idle poll. A frame's offset is committed when the caller asks
    for the next item, that is once the part has been handed to the client's socket: a closed
    tab or a restarted server resumes right after the last frame written.

    Tiled frames are reassembled per viewer; the commit after a reassembled frame may pass
    early tiles of the next frame, so a resume can lose that one frame.
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
        while True:
            batch = consumer.poll(timeout_ms=int(idle_s * 1000))
            delivered = False
            stale: set[TopicPartition] = set()  # partitions an offset reset moved during this batch
            for tp, records in batch.items():
                for record in records:
                    if tp in stale:
                        break
                    try:
                        frame = decode_record(record)
                    except WireError:
                        continue
                    if frame.stream != stream or frame.job is not None:
                        continue
                    served = served_or_tile(frame, tiles)
                    if served is None:
                        continue
                    yield served
                    delivered = True
                    stale |= resets.commit_or_follow(consumer, {tp: OffsetAndMetadata(record.offset + 1, "", -1)})
            resets.commit_or_follow(consumer, {})  # a reset while no frame of the stream arrives
            if not delivered:
                yield None
    finally:
        resets.close()
        consumer.close()
        metrics.resume_consumers.dec()
