"""HTTP routes of the viewer: page, MJPEG streams, snapshots, stream list, workers, health, metrics."""

from __future__ import annotations

import time
from collections.abc import Iterator

from flask import Blueprint, Response, jsonify, render_template, request

from pipeline.kafka import broker_cluster_id
from viewer.errors import json_error
from viewer.live.hub import LiveHub
from viewer.live.mjpeg import MIMETYPE, FrameTicks, mjpeg
from viewer.live.resume import VIEWER_ID, VIEWER_ID_RULE, resumed_frames
from viewer.live.served import ServedFrame
from viewer.metrics import CONTENT_TYPE
from viewer.state import ViewerState, state

bp = Blueprint("viewer", __name__)

# How long a request for a stream that has no frame yet waits before answering 404.
FIRST_FRAME_WAIT_S = 3.0


def live_frames(hub: LiveHub, stream: str, tick_s: float) -> FrameTicks:
    """The stream's newest frames as they arrive (skipping any this client was too slow for),
    None after each `tick_s` without one."""
    version = 0
    while True:
        got = hub.next_frame(stream, version, timeout_s=tick_s)
        if got is None:
            yield None
        else:
            version, frame = got
            yield frame


def tracked(body: Iterator[bytes], st: ViewerState, mode: str, viewer_id: str | None) -> Iterator[bytes]:
    """Counts the open response in the metrics (and its viewer id for lag) while it is iterated."""
    st.metrics.clients.labels(mode).inc()
    if viewer_id is not None:
        st.lag.viewer_connected(viewer_id, +1)
    try:
        yield from body
    finally:
        body.close()
        st.metrics.clients.labels(mode).dec()
        if viewer_id is not None:
            st.lag.viewer_connected(viewer_id, -1)


@bp.get("/")
def index():
    hub = state().processed
    hub.ensure_started()
    return render_template("index.html", streams=[name for name, _ in hub.stream_slots()])


@bp.get("/stream/<stream>.mjpg")
def stream_mjpeg(stream: str):
    raw = request.args.get("raw") in ("1", "true", "yes")
    viewer_id = request.args.get("viewer")
    if viewer_id is not None and not VIEWER_ID.match(viewer_id):
        return json_error(400, VIEWER_ID_RULE)
    st = state()
    hub = st.hub(raw)
    if not hub.wait_for_stream(stream, FIRST_FRAME_WAIT_S):
        return json_error(404, f"unknown stream {stream!r}")
    tick_s = min(1.0, st.keepalive_s)
    if viewer_id is None:
        mode, ticks = "live", live_frames(hub, stream, tick_s)
    else:
        mode, ticks = "resume", resumed_frames(st.settings, hub.topic, stream, viewer_id, st.metrics, idle_s=tick_s)
    served = st.metrics.frames_served.labels(stream, mode)

    def on_frame(frame: ServedFrame) -> None:
        served.inc()
        st.metrics.latency.observe(max(0.0, time.time() - frame.ts_ms / 1000))

    body = mjpeg(ticks, st.keepalive_s, fallback=lambda: hub.latest(stream), on_frame=on_frame)
    response = Response(tracked(body, st, mode, viewer_id), mimetype=MIMETYPE)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/snapshot/<stream>.jpg")
def snapshot(stream: str):
    hub = state().processed
    if not hub.wait_for_stream(stream, FIRST_FRAME_WAIT_S):
        return json_error(404, f"unknown stream {stream!r}")
    frame = hub.latest(stream)
    headers = {"X-Frame-Seq": str(frame.seq), "X-Frame-Ts": str(frame.ts_ms), "Cache-Control": "no-store"}
    return Response(frame.jpeg, mimetype="image/jpeg", headers=headers)


@bp.get("/streams")
def streams():
    st = state()
    st.processed.ensure_started()
    st.lag.ensure_started()
    now_ms = time.time() * 1000
    out = []
    for name, slot in st.processed.stream_slots():
        frame = slot.latest
        out.append(
            {
                "stream": name,
                "fps": round(slot.fps(), 2),
                "width": frame.width if frame else None,
                "height": frame.height if frame else None,
                "last_seq": frame.seq if frame else None,
                "last_frame_ts": frame.ts_ms if frame else None,
                "age_ms": round(now_ms - frame.ts_ms) if frame else None,
                "partition": slot.partition,
                "lag": st.lag.lag.get(name, {}),
            }
        )
    return jsonify({"streams": out})


@bp.get("/workers")
def workers():
    registry = state().workers
    registry.ensure_started()
    return jsonify({"workers": registry.live(), "error": registry.error})


@bp.get("/healthz")
def healthz():
    st = state()
    cluster_id = broker_cluster_id(st.settings, timeout_s=1.0)
    if cluster_id is None:
        return jsonify({"status": "broker unreachable"}), 503
    return jsonify({"status": "ok", **st.broker.seen(cluster_id)})


@bp.get("/metrics")
def metrics():
    return Response(state().metrics.render(), mimetype=CONTENT_TYPE)
