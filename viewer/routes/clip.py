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

from flask import Blueprint, request, send_file
from kafka.errors import KafkaError

from pipeline.offsets import OffsetsError
from pipeline.wire import STREAM_NAME, STREAM_NAME_RULE
from viewer.clips.export import ClipError, build, parse_range, range_frames
from viewer.clips.mp4 import ClipTooLarge
from viewer.errors import ApiError
from viewer.extension import current_viewer

log = logging.getLogger(__name__)

bp = Blueprint("clip", __name__)

# Clip builds at once per viewer process: each keeps about a core busy.
MAX_ACTIVE_CLIPS = 2
_active = threading.BoundedSemaphore(MAX_ACTIVE_CLIPS)


@bp.get("/clip/<stream>.mp4")
def clip(stream: str):
    if not STREAM_NAME.fullmatch(stream):
        raise ApiError(400, f"bad stream name: use {STREAM_NAME_RULE}")
    raw = request.args.get("raw") in ("1", "true", "yes")
    own = current_viewer().settings
    settings = own.shared
    max_seconds, max_bytes, max_frames = own.clip_max_seconds, own.clip_max_bytes, own.clip_max_frames
    topic = settings.raw_topic if raw else settings.processed_topic
    try:
        span = parse_range(request.args, int(time.time() * 1000), max_seconds)
    except ClipError as exc:
        raise _error(exc) from None
    if not _active.acquire(blocking=False):
        raise ApiError(429, f"{MAX_ACTIVE_CLIPS} clips are being built; try again shortly", headers={"Retry-After": "5"})
    out = tempfile.TemporaryFile(prefix="clip-", suffix=".mp4", dir=own.clip_tmpdir)
    try:
        started = time.monotonic()
        facts = build(range_frames(settings, topic, stream, span, max_frames), out, max_bytes)
        size = out.tell()
        out.seek(0)
    except ClipError as exc:
        out.close()
        raise _error(exc) from None
    except ClipTooLarge:
        out.close()
        raise ApiError(413, f"the clip passed {max_bytes} bytes (CLIP_MAX_BYTES); ask for a shorter range") from None
    except OffsetsError as exc:
        out.close()
        raise ApiError(404, str(exc)) from None
    except KafkaError as exc:
        out.close()
        raise ApiError(503, f"broker: {exc}") from None
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


def _error(exc: ClipError) -> ApiError:
    """The clip error as an answer, with the stream's retained window when it is known."""
    extra = {} if exc.window is None else {"window": exc.window}
    return ApiError(exc.status, str(exc), **extra)
