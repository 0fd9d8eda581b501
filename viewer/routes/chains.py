"""Live transform chains over HTTP: the transform registry, and each stream's chain read from
and written to the control topic (processors follow it; see pipeline/control.py).

GET /transforms                        every transform with typed parameters, for building forms
GET /api/streams/<stream>/transform    the stream's chain: its control entry, and what is applied
PUT /api/streams/<stream>/transform    {"spec": SPEC}, an admin route (auth as for replay)
"""

from __future__ import annotations

from flask import Blueprint, jsonify
from kafka.errors import KafkaError

from pipeline.control import REFERENCE_SIZE, ChainEntry, ControlError, check_stream
from pipeline.transforms import REGISTRY, catalog
from pipeline.transforms.chain import MAX_STEPS
from viewer.admin import admin_json
from viewer.errors import ApiError
from viewer.extension import current_viewer
from viewer.routes.live import FIRST_FRAME_WAIT_S

bp = Blueprint("chains", __name__)


@bp.get("/transforms")
def transforms():
    return jsonify({"transforms": catalog(), "max_steps": MAX_STEPS})


def _known(stream: str) -> bool:
    """A stream the viewer has frames of: processed, or raw only (its chain may be the reason
    nothing comes out, and must stay fixable)."""
    st = current_viewer()
    return st.processed.wait_for_stream(stream, FIRST_FRAME_WAIT_S) or st.raw.wait_for_stream(stream, 0.5)


def _frame_size(stream: str) -> tuple[int, int]:
    """(height, width) the chain will run on: the stream's raw frames if this viewer reads them
    already (no raw reader is started just for this), else its processed ones."""
    st = current_viewer()
    for hub in (st.raw, st.processed):
        frame = hub.latest(stream)
        if frame is not None:
            return frame.height, frame.width
    return REFERENCE_SIZE


def _answer(stream: str, entry: ChainEntry | None):
    latest = current_viewer().processed.latest(stream)
    body = {
        "stream": stream,
        # The control entry; null when the stream has none and its processors use their default.
        "spec": entry.spec if entry else None,
        "version": entry.version if entry else 0,
        "changed_ms": entry.changed_ms if entry else None,
        # What the newest processed frame says it was made with.
        "applied": latest.transform if latest else None,
    }
    return jsonify(body)


@bp.get("/api/streams/<stream>/transform")
def get_chain(stream: str):
    if not _known(stream):
        raise ApiError(404, f"unknown stream {stream!r}")
    chains = current_viewer().chains()
    if not chains.sync():
        raise ApiError(503, f"control topic {chains.topic} could not be read")
    return _answer(stream, chains.get(stream))


@bp.put("/api/streams/<stream>/transform")
def put_chain(stream: str):
    body = admin_json('{"spec": "blur:ksize=15,edges"}')
    try:
        check_stream(stream)
    except ControlError as exc:
        raise ApiError(400, str(exc)) from None
    if not _known(stream):
        raise ApiError(404, f"unknown stream {stream!r}")
    try:
        entry = current_viewer().chains().set(stream, body.get("spec"), _frame_size(stream))
    except ControlError as exc:
        raise ApiError(400, str(exc), valid=sorted(REGISTRY)) from None
    except KafkaError as exc:
        raise ApiError(503, f"broker: {exc}") from None
    return _answer(stream, entry)
