"""Resumable stream reads: one consumer group per viewer id, committing what was delivered."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

from kafka import OffsetAndMetadata, TopicPartition

from pipeline.kafka import make_consumer
from pipeline.settings import Settings
from pipeline.wire import WireError, decode_record
from viewer.hub import ServedFrame, to_served
from viewer.readers import watch_resets

log = logging.getLogger(__name__)

VIEWER_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def viewer_group(viewer_id: str) -> str:
    return f"viewer-{viewer_id}"


def resumed_frames(settings: Settings, topic: str, stream: str, viewer_id: str, idle_s: float = 0.2) -> Iterator[ServedFrame]:
    """Frames of `stream` from the viewer's committed offsets (a new viewer starts at the newest
    frame). Each frame's offset is committed once the caller asks for the next one, that is
    once the previous part has been handed to the client's socket."""
    group = viewer_group(viewer_id)
    consumer = make_consumer(settings, "viewer", group_id=group, auto_offset_reset="latest")
    resets = watch_resets(group)  # before reading committed offsets, so no reset slips in between
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        for tp in tps:
            committed = consumer.committed(tp)
            if committed is None:
                consumer.seek_to_end(tp)
            else:
                consumer.seek(tp, committed)
        while True:
            stale: set[TopicPartition] = set()  # partitions an offset reset moved during this batch
            for tp, records in consumer.poll(timeout_ms=int(idle_s * 1000)).items():
                for record in records:
                    if tp in stale:
                        break
                    try:
                        frame = decode_record(record)
                    except WireError:
                        continue
                    if frame.stream != stream or frame.tile is not None or frame.job is not None:
                        continue
                    yield to_served(frame)
                    stale |= resets.commit_or_follow(consumer, {tp: OffsetAndMetadata(record.offset + 1, "", -1)})
            resets.commit_or_follow(consumer, {})  # a reset while no frame of the stream arrives
    finally:
        resets.close()
        consumer.close()
