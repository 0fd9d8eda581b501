"""HTTP routes of the viewer: page, MJPEG streams, snapshots, stream list, health."""

from __future__ import annotations

import time
from collections.abc import Iterator

from flask import Blueprint, Response, jsonify, render_template, request

from pipeline.kafka import broker_reachable
from viewer.hub import LiveHub, ServedFrame
from viewer.mjpeg import MIMETYPE, mjpeg
from viewer.resume import VIEWER_ID, resumed_frames
from viewer.state import state

bp = Blueprint("viewer", __name__)

# How long a request for a stream that has no frame yet waits before answering 404.
FIRST_FRAME_WAIT_S = 3.0


def error(status: int, message: str) -> tuple[Response, int]:
    return jsonify({"error": message}), status


def live_frames(hub: LiveHub, stream: str) -> Iterator[ServedFrame]:
    version = 0
    while True:
        got = hub.next_frame(stream, version, timeout_s=5.0)
        if got is not None:
            version, frame = got
            yield frame


@bp.get("/")
def index():
    hub = state().processed
    hub.ensure_started()
    return render_template("index.html", streams=sorted(hub.slots))


@bp.get("/stream/<stream>.mjpg")
def stream_mjpeg(stream: str):
    raw = request.args.get("raw") in ("1", "true", "yes")
    viewer_id = request.args.get("viewer")
    if viewer_id is not None and not VIEWER_ID.match(viewer_id):
        return error(400, "viewer id must be 1-64 characters of A-Z a-z 0-9 _ . -")
    hub = state().hub(raw)
    if not hub.wait_for_stream(stream, FIRST_FRAME_WAIT_S):
        return error(404, f"unknown stream {stream!r}")
    if viewer_id is None:
        frames = live_frames(hub, stream)
    else:
        frames = resumed_frames(state().settings, hub.topic, stream, viewer_id)
    response = Response(mjpeg(frames), mimetype=MIMETYPE)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/snapshot/<stream>.jpg")
def snapshot(stream: str):
    hub = state().processed
    if not hub.wait_for_stream(stream, FIRST_FRAME_WAIT_S):
        return error(404, f"unknown stream {stream!r}")
    frame = hub.slots[stream].latest
    return Response(frame.jpeg, mimetype="image/jpeg", headers={"X-Frame-Seq": str(frame.seq), "Cache-Control": "no-store"})


@bp.get("/streams")
def streams():
    hub = state().processed
    hub.ensure_started()
    now_ms = time.time() * 1000
    out = []
    for name, slot in sorted(hub.slots.items()):
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
            }
        )
    return jsonify({"streams": out})


@bp.get("/healthz")
def healthz():
    if broker_reachable(state().settings, timeout_s=1.0):
        return jsonify({"status": "ok"})
    return jsonify({"status": "broker unreachable"}), 503
