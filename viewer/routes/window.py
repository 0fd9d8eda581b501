"""GET /api/streams/<stream>/window: the span of a stream the log retains, and where a viewer is in it."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from flask import Blueprint, jsonify, request
from kafka import TopicPartition
from kafka.errors import KafkaError

from pipeline.offsets import OffsetsError, OffsetTool
from pipeline.settings import Settings
from viewer.errors import json_error
from viewer.live.resets import delivered
from viewer.live.resume import VIEWER_ID, VIEWER_ID_RULE, viewer_group
from viewer.state import state

bp = Blueprint("window", __name__)

# Every open page asks for its stream's window each second: one broker lookup per stream
# serves them all for this long.
SPAN_TTL_S = 0.5
CACHE_SIZE = 1024


@dataclass(frozen=True)
class Span:
    tp: TopicPartition
    earliest: int
    end: int
    oldest_ms: int | None
    newest_ms: int | None


class Tool:
    """An OffsetTool made on first use: most answers need no broker request at all."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._tool: OffsetTool | None = None

    def __call__(self) -> OffsetTool:
        if self._tool is None:
            self._tool = OffsetTool(self.settings)
        return self._tool

    def close(self) -> None:
        if self._tool is not None:
            self._tool.close()


class Lookups:
    """Record times by (partition, offset), which never change, and stream spans for
    SPAN_TTL_S; both bounded (any name may be asked for)."""

    def __init__(self) -> None:
        self._times: OrderedDict[tuple[TopicPartition, int], int] = OrderedDict()
        self._spans: OrderedDict[tuple[str, str], tuple[float, Span]] = OrderedDict()
        self._lock = threading.Lock()

    def time_at(self, tool: Tool, tp: TopicPartition, offset: int) -> int | None:
        with self._lock:
            if (tp, offset) in self._times:
                return self._times[(tp, offset)]
        ms = tool().time_at(tp, offset)
        if ms is not None:
            self._keep(self._times, (tp, offset), ms)
        return ms

    def span(self, tool: Tool, topic: str, stream: str) -> Span:
        now = time.monotonic()
        with self._lock:
            cached = self._spans.get((topic, stream))
        if cached is not None and cached[0] > now:
            return cached[1]
        tp = tool().stream_partition(topic, stream)
        window = tool().window(tp)
        oldest_ms = self.time_at(tool, tp, window.earliest) if window.end > window.earliest else None
        span = Span(tp, window.earliest, window.end, oldest_ms, window.last_ms)
        self._keep(self._spans, (topic, stream), (now + SPAN_TTL_S, span))
        return span

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
        return json_error(400, VIEWER_ID_RULE)
    raw = request.args.get("raw") in ("1", "true", "yes")
    st = state()
    topic = st.settings.raw_topic if raw else st.settings.processed_topic
    tool = Tool(st.settings)
    try:
        span = _lookups.span(tool, topic, stream)
        if span.end <= span.earliest:
            return json_error(404, f"stream {stream!r} has no retained frames")
        answer = {
            "stream": stream,
            "topic": topic,
            "partition": span.tp.partition,
            "oldest": {"offset": span.earliest, "ts_ms": span.oldest_ms},
            "newest": {"offset": span.end - 1, "ts_ms": span.newest_ms},
        }
        if viewer_id is not None:
            answer["viewer"] = {"id": viewer_id, **_position(tool, viewer_group(viewer_id), span)}
    except OffsetsError as exc:
        return json_error(404, str(exc))
    except KafkaError as exc:
        return json_error(503, f"broker: {exc}")
    finally:
        tool.close()
    return jsonify(answer)


def _position(tool: Tool, group: str, span: Span) -> dict:
    """The group's committed offset on the span's partition and the time of the frame before
    it: from this process's reader while one streams, else from Kafka."""
    known = delivered(group, span.tp)
    if known is not None:
        return {"offset": known[0], "ts_ms": known[1]}
    offset = tool().committed(group).get(span.tp)
    if offset is None:
        return {"offset": None, "ts_ms": None}
    return {"offset": offset, "ts_ms": _lookups.time_at(tool, span.tp, offset - 1) if offset > span.earliest else None}
