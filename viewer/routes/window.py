"""GET /api/streams/<stream>/window: the span of a stream the log retains, and where a viewer is in it."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

from flask import Blueprint, jsonify, request
from kafka import TopicPartition
from kafka.errors import KafkaError

from pipeline.generations import stream_windows
from pipeline.offsets import OffsetsError, OffsetTool, Window
from pipeline.viewer_groups import VIEWER_ID, VIEWER_ID_RULE, viewer_group
from viewer.errors import ApiError
from viewer.extension import current_viewer
from viewer.routes.live import FIRST_FRAME_WAIT_S
from viewer.shared_offsets import SharedTool

bp = Blueprint("window", __name__)

# Every open page asks for its stream's window each second: one broker lookup per stream
# serves them all for this long.
SPAN_TTL_S = 0.5
CACHE_SIZE = 1024


class Tool:
    """A request's lease on the shared tool, taken on first use: most answers need no broker
    request at all."""

    def __init__(self, shared: SharedTool) -> None:
        self.shared = shared
        self._tool: OffsetTool | None = None

    def __call__(self) -> OffsetTool:
        if self._tool is None:
            self._tool = self.shared.acquire()
        return self._tool

    def close(self, broken: bool = False) -> None:
        if self._tool is not None:
            self._tool = None
            self.shared.release(broken)


class Lookups:
    """Record times by (partition, offset), which never change, and stream spans for
    SPAN_TTL_S; both bounded (any name may be asked for)."""

    def __init__(self) -> None:
        self._times: OrderedDict[tuple[TopicPartition, int], int] = OrderedDict()
        self._spans: OrderedDict[tuple[str, str], tuple[float, list[Window]]] = OrderedDict()
        self._lock = threading.Lock()

    def time_at(self, tool: Tool, tp: TopicPartition, offset: int) -> int | None:
        with self._lock:
            if (tp, offset) in self._times:
                return self._times[(tp, offset)]
        ms = tool().time_at(tp, offset)
        if ms is not None:
            self._keep(self._times, (tp, offset), ms)
        return ms

    def spans(self, tool: Tool, topic: str, stream: str) -> list[Window]:
        """What each generation of `topic` retains of the stream's partition, oldest first
        (pipeline/generations.py; one generation on a broker with real retention)."""
        now = time.monotonic()
        with self._lock:
            cached = self._spans.get((topic, stream))
        if cached is not None and cached[0] > now:
            return cached[1]
        spans = stream_windows(tool(), topic, stream)
        self._keep(self._spans, (topic, stream), (now + SPAN_TTL_S, spans))
        return spans

    def _keep(self, table: OrderedDict, key, value) -> None:
        with self._lock:
            table[key] = value
            table.move_to_end(key)
            while len(table) > CACHE_SIZE:
                table.popitem(last=False)


_lookups = Lookups()


@bp.get("/api/streams/<stream>/window")
def window(stream: str):
    """{"stream", "topic", "partition", "oldest": {offset, ts_ms}, "newest": {offset, ts_ms},
    "viewer": {"id", "offset", "ts_ms"}} (viewer only with ?viewer=). `newest` is the last
    record (the log's true end - 1); a viewer's offset is its committed one (the next record it
    gets) and ts_ms the time of the frame before it, the last one it was sent (null if none)."""
    viewer_id = request.args.get("viewer")
    if viewer_id is not None and not VIEWER_ID.match(viewer_id):
        raise ApiError(400, VIEWER_ID_RULE)
    raw = request.args.get("raw") in ("1", "true", "yes")
    viewer = current_viewer()
    settings = viewer.settings.shared
    hub = viewer.hub(raw)
    # Any name hashes to some partition, which holds other streams' frames: answer only for a
    # stream the live reader has seen (waiting for it only while the reader is just starting).
    if not hub.wait_for_stream(stream, 0 if hub.slots else FIRST_FRAME_WAIT_S):
        raise ApiError(404, f"unknown stream {stream!r}")
    topic = settings.raw_topic if raw else settings.processed_topic
    tool = Tool(viewer.offsets_tool)
    broken = False
    try:
        spans = _lookups.spans(tool, topic, stream)
        if not spans:
            raise ApiError(404, f"stream {stream!r} has no retained frames")
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
        raise ApiError(404, str(exc)) from None
    except KafkaError as exc:
        broken = True
        raise ApiError(503, f"broker: {exc}") from None
    finally:
        tool.close(broken)
    return jsonify(answer)


def _generation_position(tool: Tool, group: str, spans: list[Window]) -> dict:
    """Where the group is across generations: a reader finishes an older one before the next
    (pipeline/generations.OldestFirst), so it is in the first one it has not read to the end."""
    for span in spans[:-1]:
        position = _position(tool, group, span)
        if position["offset"] is not None and position["offset"] < span.end:
            return {"topic": span.tp.topic, **position}
    return {"topic": spans[-1].tp.topic, **_position(tool, group, spans[-1])}


def _position(tool: Tool, group: str, span: Window) -> dict:
    """The group's committed offset on the span's partition and the time of the frame before
    it: from this process's reader while one streams, else from Kafka."""
    known = current_viewer().resets.delivered(group, span.tp)
    if known is not None:
        return {"offset": known[0], "ts_ms": known[1]}
    offset = tool().committed(group).get(span.tp)
    if offset is None:
        return {"offset": None, "ts_ms": None}
    return {"offset": offset, "ts_ms": _lookups.time_at(tool, span.tp, offset - 1) if offset > span.earliest else None}
