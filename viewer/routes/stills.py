"""Still-image routes: POST /upload, and each job's status, result and progress events."""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

from flask import Blueprint, Response, jsonify, request, url_for
from kafka.errors import KafkaError

from pipeline.transforms import REGISTRY, Chain, TransformError, parse_spec
from viewer.errors import ApiError
from viewer.extension import current_viewer
from viewer.stills.budget import Reservation
from viewer.stills.jobstate import Entry
from viewer.stills.store import JobStatus
from viewer.stills.upload import (
    ResultGone,
    check_header,
    check_work,
    job_frames,
    new_job,
    reserve,
    retry_after,
    sends_upload_as_is,
    start_decode,
)

bp = Blueprint("upload", __name__)

DEFAULT_TRANSFORM = "grayscale"  # the processor's own default
DEFAULT_TILE = 512
TILE_RANGE = (64, 8192)
# Multipart boundaries and the small form fields around the file.
FORM_OVERHEAD_BYTES = 64 * 1024
RECORD_OVERHEAD_BYTES = 4096  # headers and framing of one Kafka record, generously
READY_WAIT_S = 15.0
EVENTS_POLL_S = 0.25
EVENTS_MAX_S = 15 * 60
MIMETYPES = {"png": "image/png", "jpeg": "image/jpeg"}
EXTENSIONS = {"png": "png", "jpeg": "jpg"}


def _read_image_field(max_bytes: int, memory: Reservation) -> bytes:
    if request.content_length is not None and request.content_length > max_bytes + FORM_OVERHEAD_BYTES:
        raise ApiError(413, f"upload larger than MAX_UPLOAD_BYTES={max_bytes}")
    reserve(memory, request.content_length or max_bytes)  # the image's bytes, held until published
    file = request.files.get("image")
    if file is None:
        hint = " (it must be a file part)" if "image" in request.form else ""
        raise ApiError(400, f"missing multipart field 'image'{hint}")
    data = file.stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ApiError(413, f"image larger than MAX_UPLOAD_BYTES={max_bytes}")
    if not data:
        raise ApiError(400, "field 'image' is empty")
    return data


def _chain() -> Chain:
    spec = request.form.get("transform") or DEFAULT_TRANSFORM
    try:
        return parse_spec(spec)
    except TransformError as exc:
        raise ApiError(400, str(exc), valid=sorted(REGISTRY)) from None


def _tile_size() -> int:
    raw = request.form.get("tile") or str(DEFAULT_TILE)
    low, high = TILE_RANGE
    # isdecimal() alone accepts other scripts' digits, isdigit() superscripts: ASCII only. The
    # length first: int() refuses (ValueError) strings of over 4300 digits.
    if not (raw.isascii() and raw.isdecimal() and len(raw) <= len(str(high))) or not low <= int(raw) <= high:
        raise ApiError(400, f"tile must be an integer from {low} to {high}, got {raw[:32]!r}")
    return int(raw)


def _job_urls(job_id: str) -> dict:
    return {
        "status_url": url_for("upload.job_status", job_id=job_id),
        "result_url": url_for("upload.job_result", job_id=job_id),
        "events_url": url_for("upload.job_events", job_id=job_id),
    }


@bp.post("/upload")
def upload():
    up = current_viewer().uploads
    settings, limits = up.settings, up.limits
    with up.memory.reservation() as memory:
        data = _read_image_field(settings.max_upload_bytes, memory)
        chain = _chain()
        tile = _tile_size()
        header = check_header(data, settings.max_upload_pixels)
        check_work(chain, header, settings.max_upload_pixels, limits.max_work_s)
        whole = not chain.tileable or (header.width <= tile and header.height <= tile)
        # A whole-image record must fit one Kafka message; tiles always do.
        if whole and len(data) > settings.max_message_bytes - RECORD_OVERHEAD_BYTES:
            raise ApiError(413, f"transform {chain.spec!r} needs the whole image in one message, and this one is"
                                 f" larger than MAX_MESSAGE_BYTES={settings.max_message_bytes}")
        if not up.ready(READY_WAIT_S):
            error = up.jobs.error or up.collector.error or "job-state topic not read yet"
            raise ApiError(503, f"broker unreachable: {error}", headers=retry_after())
        record = new_job(uuid.uuid4().hex, header, chain, request.remote_addr or "", limits)
        job_id = record.job
        # Admitted before the decode, by the job's place in the job-state topic (viewer/stills/jobstate.py):
        # the limits hold however many uploads arrive together, on however many replicas.
        try:
            admission = up.jobs.request(record)
        except KafkaError as exc:
            raise ApiError(503, f"broker unreachable: {exc}", headers=retry_after()) from None
        if not admission.admitted:
            up.jobs.forget(job_id)
            raise ApiError(429, f"{admission.refusal}; try again shortly", headers=retry_after())
        max_record = settings.max_message_bytes - RECORD_OVERHEAD_BYTES
        as_is = sends_upload_as_is(header, whole, max_record)
        try:
            # The decoded BGR image (and, for a whole-image job sent as pixels, its compressed copy).
            reserve(memory, header.pixels * 3 * (2 if whole and not as_is else 1))
            # Decoding proves the file is whole (a valid header can front corrupt pixel data);
            # only now, with the size checked and the memory reserved, is the allocation bounded.
            # An upload that goes as it came is checked while it travels: its job is dropped
            # (and the answer is the same 400) if the check fails.
            decoded = start_decode(data, header)
            # Where its output will sit, taken before any tile goes out (a replica that did not
            # see the tiles go by reads them from there), while the decode runs.
            tiles_from = up.jobs.output_positions()
            image = None if as_is else decoded()
            total, frames = job_frames(job_id, data, image, header, chain, tile, max_record)
            up.jobs.publish(record.but(state="queued", tiles_total=total, tiles_from=tiles_from))
            up.publish(frames)
            if as_is:
                decoded()
        except KafkaError as exc:
            up.jobs.finish(job_id, state="failed", error=f"publishing failed: {exc}")
            raise ApiError(503, f"broker unreachable: {exc}", job=job_id) from None
        except BaseException:
            up.jobs.forget(job_id)
            raise
    body = {"job": job_id, "state": "queued", "tiles_total": total, "transform": chain.spec, **_job_urls(job_id)}
    return jsonify(body), 202, {"Location": body["status_url"]}


def _known(job_id: str) -> tuple[Entry, JobStatus]:
    up = current_viewer().uploads
    entry = up.entry(job_id)
    if entry is None:
        raise ApiError(404, f"unknown job {job_id!r}")
    return entry, up.status(job_id)


@bp.get("/jobs/<job_id>")
def job_status(job_id: str):
    return jsonify(_known(job_id)[1].to_json() | _job_urls(job_id))


@bp.get("/jobs/<job_id>/result")
def job_result(job_id: str):
    entry, status = _known(job_id)
    if status.state != "done":
        message = f"job failed: {status.error}" if status.state == "failed" else f"job is {status.state}"
        raise ApiError(409, message, state=status.state, tiles_done=status.tiles_done, tiles_total=status.tiles_total)
    try:
        result = current_viewer().uploads.result(entry)
    except ResultGone:
        raise ApiError(410, f"job {job_id!r} is done, but this server has no copy of its result and its tiles"
                            " are no longer in the log; try the server that took the upload") from None
    if result is None:
        raise ApiError(503, f"job {job_id!r} is done; this server is still assembling its result",
                       headers=retry_after())
    disposition = "attachment" if request.args.get("download") in ("1", "true", "yes") else "inline"
    filename = f"{job_id}.{EXTENSIONS[status.format]}"
    return Response(result, mimetype=MIMETYPES[status.format],
                    headers={"Content-Disposition": f'{disposition}; filename="{filename}"'})


@bp.get("/jobs/<job_id>/events")
def job_events(job_id: str):
    """Server-sent events: the job's status JSON each time it changes, until done or failed."""
    first = _known(job_id)[1]
    up = current_viewer().uploads

    def events(status: JobStatus | None) -> Iterator[str]:
        deadline = time.monotonic() + EVENTS_MAX_S
        last, seen = None, up.jobs.position
        while status is not None and time.monotonic() < deadline:
            current = (status.state, status.tiles_done)
            if current != last:
                last = current
                yield f"event: status\ndata: {json.dumps(status.to_json())}\n\n"
            if status.state in ("done", "failed"):
                return
            # Progress is polled; a job-state record (the job's end) wakes the stream at once: a
            # plain sleep told the page a job was done up to EVENTS_POLL_S late.
            seen = up.jobs.wait_past(seen, EVENTS_POLL_S)
            status = up.status(job_id)

    return Response(events(first), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
