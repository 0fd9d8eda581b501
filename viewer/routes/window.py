"""GET /api/streams/<stream>/window: the span of a stream the log retains, and where a viewer is in it."""

from __future__ import annotations

import threading
from collections import OrderedDict

from flask import Blueprint, jsonify, request
from kafka import TopicPartition
from kafka.errors import KafkaError

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
            tp = tool.stream_partition(topic, stream)
            span = tool.window(tp)
            if span.end <= span.earliest:
                return json_error(404, f"stream {stream!r} has no retained frames")
            oldest_ms = _times.get(tool, tp, span.earliest)
            answer = {
                "stream": stream,
                "topic": topic,
                "partition": tp.partition,
                "oldest": {"offset": span.earliest, "ts_ms": oldest_ms},
                "newest": {"offset": span.end - 1, "ts_ms": span.last_ms},
            }
            if viewer_id is not None:
                answer["viewer"] = {"id": viewer_id, **_position(tool, viewer_group(viewer_id), tp, span.earliest)}
    except OffsetsError as exc:
        return json_error(404, str(exc))
    except KafkaError as exc:
        return json_error(503, f"broker: {exc}")
    return jsonify(answer)


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
