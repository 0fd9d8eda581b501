"""GET /clip/<stream>.mp4?from=&to=: a recorded range of a stream as an MP4 (viewer/clips/).

The clip is built into an unnamed temporary file and sent once complete, so limits and errors
still answer JSON; the file is gone when the response closes (or the process dies).
"""

from __future__ import annotations

import logging
import re
import tempfile
import threading
import time
from datetime import datetime, timezone

from flask import Blueprint, current_app, jsonify, request, send_file
from kafka.errors import KafkaError

from pipeline.offsets import OffsetsError
from pipeline.wire import STREAM_NAME, STREAM_NAME_RULE
from viewer.clips.export import ClipError, build, parse_range, range_frames
from viewer.clips.mp4 import ClipTooLarge
from viewer.errors import json_error
from viewer.state import state

log = logging.getLogger(__name__)

bp = Blueprint("clip", __name__)

# Clip builds at once per viewer process: each keeps about a core busy.
MAX_ACTIVE_CLIPS = 2
_active = threading.BoundedSemaphore(MAX_ACTIVE_CLIPS)


@bp.get("/clip/<stream>.mp4")
def clip(stream: str):
    if not STREAM_NAME.fullmatch(stream):
        return json_error(400, f"bad stream name: use {STREAM_NAME_RULE}")
    raw = request.args.get("raw") in ("1", "true", "yes")
    st = state()
    settings = st.settings
    config = current_app.config
    max_seconds = int(config.get("CLIP_MAX_SECONDS", settings.clip_max_seconds))
    max_bytes = int(config.get("CLIP_MAX_BYTES", settings.clip_max_bytes))
    max_frames = int(config.get("CLIP_MAX_FRAMES", settings.clip_max_frames))
    topic = settings.raw_topic if raw else settings.processed_topic
    try:
        span = parse_range(request.args, int(time.time() * 1000), max_seconds)
    except ClipError as exc:
        return _error(exc)
    if not _active.acquire(blocking=False):
        response, status = json_error(429, f"{MAX_ACTIVE_CLIPS} clips are being built; try again shortly")
        response.headers["Retry-After"] = "5"
        return response, status
    out = tempfile.TemporaryFile(prefix="clip-", suffix=".mp4", dir=config.get("CLIP_TMPDIR"))
    try:
        started = time.monotonic()
        facts = build(range_frames(settings, topic, stream, span, max_frames), out, max_bytes)
        size = out.tell()
        out.seek(0)
    except ClipError as exc:
        out.close()
        return _error(exc)
    except ClipTooLarge:
        out.close()
        return json_error(413, f"the clip passed {max_bytes} bytes (CLIP_MAX_BYTES); ask for a shorter range")
    except OffsetsError as exc:
        out.close()
        return json_error(404, str(exc))
    except KafkaError as exc:
        out.close()
        return json_error(503, f"broker: {exc}")
    except BaseException:
        out.close()
        raise
    finally:
        _active.release()
    log.info("clip stream=%s frames=%d bytes=%d built in %.1f s", stream, facts["frames"], size, time.monotonic() - started)
    stamp = datetime.fromtimestamp(facts["first_ms"] / 1000, timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", stream)
    # send_file closes the file when the response ends, also when the client goes away.
    response = send_file(
        out, mimetype="video/mp4", download_name=f"{safe}-{stamp}.mp4", conditional=False, max_age=0,
        as_attachment=request.args.get("download") in ("1", "true", "yes"),
    )
    response.headers["Content-Length"] = str(size)
    response.headers["X-Clip-Frames"] = str(facts["frames"])
    response.headers["X-Clip-First-Ts"] = str(facts["first_ms"])
    response.headers["X-Clip-Last-Ts"] = str(facts["last_ms"])
    response.headers["X-Clip-Fps"] = f"{facts['fps']:.3f}"
    return response


def _error(exc: ClipError):
    body = {"error": str(exc)}
    if exc.window is not None:
        body["window"] = exc.window
    return jsonify(body), exc.status
