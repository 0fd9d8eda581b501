"""GET /api/streams/<stream>/window: the span of a stream the log retains, and where a viewer is in it."""

from __future__ import annotations

import threading
from collections import OrderedDict

from flask import Blueprint, jsonify, request
from kafka import TopicPartition
from kafka.errors import KafkaError

from pipeline.generations import stream_windows
from pipeline.offsets import OffsetsError, OffsetTool
from viewer.errors import json_error
from viewer.live.resets import delivered
from viewer.live.resume import VIEWER_ID, VIEWER_ID_RULE, viewer_group
from viewer.state import state

bp = Blueprint("window", __name__)


class RecordTimes:
    """Times of records by (partition, offset): a record never changes, and the page asks for
    the same oldest record and the same paused position every second."""

    def __init__(self, size: int = 1024) -> None:
        self._times: OrderedDict[tuple[TopicPartition, int], int] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, tool: OffsetTool, tp: TopicPartition, offset: int) -> int | None:
        key = (tp, offset)
        with self._lock:
            if key in self._times:
                self._times.move_to_end(key)
                return self._times[key]
        ms = tool.time_at(tp, offset)
        if ms is not None:
            with self._lock:
                self._times[key] = ms
                while len(self._times) > self._size:
                    self._times.popitem(last=False)
        return ms


_times = RecordTimes()


@bp.get("/api/streams/<stream>/window")
def window(stream: str):
    """{"stream", "topic", "partition", "oldest": {offset, ts_ms}, "newest": {offset, ts_ms},
    "viewer": {"id", "offset", "ts_ms"}} (viewer only with ?viewer=). `newest` is the last
    record (the log's true end - 1); a viewer's offset is its committed one (the next record it
    gets) and ts_ms the time of the frame before it, the last one it was sent (null if none)."""
    viewer_id = request.args.get("viewer")
    if viewer_id is not None and not VIEWER_ID.match(viewer_id):
        return json_error(400, VIEWER_ID_RULE)
    raw = request.args.get("raw") in ("1", "true", "yes")
    st = state()
    topic = st.settings.raw_topic if raw else st.settings.processed_topic
    try:
        with OffsetTool(st.settings) as tool:
            # Every generation of the topic on the embedded broker, oldest first (pipeline/generations.py).
            spans = stream_windows(tool, topic, stream)
            if not spans:
                return json_error(404, f"stream {stream!r} has no retained frames")
            first, last = spans[0], spans[-1]
            answer = {
                "stream": stream,
                "topic": topic,
                "partition": first.tp.partition,
                "oldest": {"topic": first.tp.topic, "offset": first.earliest, "ts_ms": first.first_ms},
                "newest": {"topic": last.tp.topic, "offset": last.end - 1, "ts_ms": last.last_ms},
            }
            if viewer_id is not None:
                answer["viewer"] = {"id": viewer_id, **_generation_position(tool, viewer_group(viewer_id), spans)}
    except OffsetsError as exc:
        return json_error(404, str(exc))
    except KafkaError as exc:
        return json_error(503, f"broker: {exc}")
    return jsonify(answer)


def _generation_position(tool: OffsetTool, group: str, spans: list) -> dict:
    """Where the group is across generations: a reader finishes an older one before the next
    (pipeline/generations.OldestFirst), so it is in the first one it has not read to the end."""
    for span in spans[:-1]:
        position = _position(tool, group, span.tp, span.earliest)
        if position["offset"] is not None and position["offset"] < span.end:
            return {"topic": span.tp.topic, **position}
    return {"topic": spans[-1].tp.topic, **_position(tool, group, spans[-1].tp, spans[-1].earliest)}


def _position(tool: OffsetTool, group: str, tp: TopicPartition, earliest: int) -> dict:
    """The group's committed offset on `tp` and the time of the frame before it: from this
    process's reader while one streams, else from Kafka."""
    known = delivered(group, tp)
    if known is not None:
        return {"offset": known[0], "ts_ms": known[1]}
    offset = tool.committed(group).get(tp)
    if offset is None:
        return {"offset": None, "ts_ms": None}
    return {"offset": offset, "ts_ms": _times.get(tool, tp, offset - 1) if offset > earliest else None}
