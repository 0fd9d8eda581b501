"""Live video routes: the page, MJPEG streams (live or resumed), snapshots, and the stream list."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Iterator

from flask import Blueprint, Response, jsonify, render_template, request
from kafka.errors import KafkaError

from pipeline.viewer_groups import VIEWER_ID, VIEWER_ID_RULE
from viewer.errors import ApiError
from viewer.extension import Viewer, current_viewer
from viewer.live.delivery import SentBytes, response_socket
from viewer.live.direct import stream_directly
from viewer.live.hub import LiveHub
from viewer.live.mjpeg import MIMETYPE, FrameTicks, mjpeg
from viewer.live.pacing import parse_speed
from viewer.live.resume import resumed_frames
from viewer.live.viewer_ids import TooManyViewers
from viewer.metrics import ClientTally

bp = Blueprint("viewer", __name__)
log = logging.getLogger(__name__)

# How long a request for a stream that has no frame yet waits before answering 404.
FIRST_FRAME_WAIT_S = 3.0


def live_frames(hub: LiveHub, stream: str) -> FrameTicks:
    """The stream's newest frames as they arrive (skipping any this client was too slow for),
    None on each of the hub's idle ticks."""
    version = 0
    while True:
        got = hub.next_frame(stream, version)
        if got is None:
            yield None
        else:
            version, frame = got
            yield frame


def tracked(body: Iterator[bytes], st: Viewer, mode: str, viewer_id: str | None, tally: ClientTally) -> Iterator[bytes]:
    """Counts the open response in the metrics (and its viewer id for lag) while it is iterated;
    the client's tally is flushed when it ends."""
    st.metrics.clients.labels(mode).inc()
    if viewer_id is not None:
        st.lag.viewer_connected(viewer_id, +1)
    try:
        yield from body
    finally:
        body.close()
        tally.flush()
        st.metrics.clients.labels(mode).dec()
        if viewer_id is not None:
            st.lag.viewer_connected(viewer_id, -1)


@bp.get("/")
def index():
    hub = current_viewer().processed
    hub.ensure_started()
    return render_template("index.html", streams=[name for name, _ in hub.stream_slots()])


@bp.get("/stream/<stream>.mjpg")
def stream_mjpeg(stream: str):
    raw = request.args.get("raw") in ("1", "true", "yes")
    viewer_id = request.args.get("viewer")
    if viewer_id is not None and not VIEWER_ID.match(viewer_id):
        raise ApiError(400, VIEWER_ID_RULE)
    try:
        speed = parse_speed(request.args.get("speed"))
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    st = current_viewer()
    hub = st.hub(raw)
    if not hub.wait_for_stream(stream, FIRST_FRAME_WAIT_S):
        raise ApiError(404, f"unknown stream {stream!r}")
    lease = None
    # What an idle response shows before its first frame: the live frame, unless the client
    # resumes behind the live end (its next frame is on the way; a live frame would flash in).
    live_end = threading.Event()
    if viewer_id is None:
        live_end.set()
        mode, ticks = "live", live_frames(hub, stream)
    else:
        mode = "resume"
        st.viewer_ids.ensure_started()
        st.broadcast.ensure_started()
        try:
            lease = st.viewer_ids.open(viewer_id)
        except TooManyViewers as exc:
            raise ApiError(503, f"{exc}; try again shortly", headers={"Retry-After": "5"}) from None
        # A resuming stream commits what the client acknowledged, so it watches its socket.
        sent = SentBytes(response_socket(request.environ))
        ticks = resumed_frames(st.settings.shared, hub.topic, stream, viewer_id, st.metrics, sent, st.resets, speed,
                               idle_s=st.settings.tick_s, lease=lease, release=st.viewer_ids.close,
                               at_live_end=live_end)
        # A stream dropped unstarted (a client that left before the first byte; the response's
        # close hooks do not run for a passthrough body) never runs its end, which frees the id.
        weakref.finalize(ticks, st.viewer_ids.close_unstarted, lease)
        try:
            st.broadcast.claim(lease)  # a connection with this id in another process ends
        except KafkaError as exc:
            log.warning("viewer group=viewer-%s: claim not written, other processes keep their connection: %s",
                        viewer_id, exc)
    tally = ClientTally(st.metrics, stream, mode)
    body = mjpeg(ticks, st.settings.keepalive_s, fallback=lambda: hub.latest(stream) if live_end.is_set() else None,
                 on_frame=tally, no_signal=lambda: hub.no_signal(stream))
    if mode == "resume":
        body = sent.count(body)
    else:
        # Live parts are the same bytes for every client: written straight to the socket where
        # the server allows it (viewer/live/direct.py).
        stream_directly(request.environ)
    # direct_passthrough: gunicorn iterates the body itself, without werkzeug's re-encoding
    # and closing wrappers around every part.
    response = Response(tracked(body, st, mode, viewer_id, tally), mimetype=MIMETYPE, direct_passthrough=True)
    response.headers["Cache-Control"] = "no-store"
    # nginx (and proxies that follow it) pass each part on at once instead of buffering it.
    response.headers["X-Accel-Buffering"] = "no"
    return response


@bp.get("/snapshot/<stream>.jpg")
def snapshot(stream: str):
    hub = current_viewer().processed
    if not hub.wait_for_stream(stream, FIRST_FRAME_WAIT_S):
        raise ApiError(404, f"unknown stream {stream!r}")
    frame = hub.latest(stream)
    headers = {"X-Frame-Seq": str(frame.seq), "X-Frame-Ts": str(frame.ts_ms), "Cache-Control": "no-store"}
    if frame.transform:
        headers["X-Frame-Transform"] = frame.transform
    return Response(frame.jpeg, mimetype="image/jpeg", headers=headers)


@bp.get("/streams")
def streams():
    st = current_viewer()
    st.processed.ensure_started()
    st.lag.ensure_started()
    now_ms = time.time() * 1000
    now = time.monotonic()
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
                # The chain the newest frame was processed with: what is applied, not what was asked.
                "transform": frame.transform if frame else None,
                "age_ms": round(now_ms - frame.ts_ms) if frame else None,
                # No new frame for a while: clients are shown the no-signal card.
                "stalled": slot.stalled(now),
                "partition": slot.partition,
                "lag": st.lag.lag.get(name, {}),
            }
        )
    return jsonify({"streams": out})
