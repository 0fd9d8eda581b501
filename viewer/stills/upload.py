"""Still-image uploads: validate, split into halo'd tiles, publish them to the raw topic as one
job for the processor group, and serve the job's progress and result.

Tiles go through the same processor code path as video frames (``pipeline.tiling`` contract);
the job collector (``viewer.stills.collector``) reassembles them and ``viewer.stills.store`` keeps the state.
"""
from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
import uuid
from collections.abc import Iterable, Iterator

import cv2
import numpy as np
from flask import Blueprint, Flask, Response, current_app, jsonify, request, url_for
from kafka.errors import KafkaError
from werkzeug.exceptions import HTTPException

from pipeline.codec import CodecError, decode_image, encode_image
from pipeline.kafka import make_producer
from pipeline.settings import Settings
from pipeline.tiling import split
from pipeline.transforms import REGISTRY, Chain, TransformError, parse_spec
from pipeline.wire import Frame, to_record
from viewer.stills.collector import JobCollector
from viewer.stills.imageheader import CorruptImage, ImageHeader, UnsupportedImage, read_header
from viewer.stills.offload import off_hub
from viewer.stills.store import DEFAULT_DB, JobStatus, JobStore

bp = Blueprint("upload", __name__)

UPLOAD_STREAM = "upload"
DEFAULT_TRANSFORM = "grayscale"  # the processor's own default
DEFAULT_TILE = 512
TILE_RANGE = (64, 8192)
# Multipart boundaries and the small form fields around the file.
FORM_OVERHEAD_BYTES = 64 * 1024
TILE_JPEG_QUALITY = 95  # tiles are re-encoded once more by the processor (PNG ignores it)
RECORD_OVERHEAD_BYTES = 4096  # headers and framing of one Kafka record, generously
READY_WAIT_S = 15.0
EVENTS_POLL_S = 0.25
EVENTS_MAX_S = 15 * 60
MIMETYPES = {"png": "image/png", "jpeg": "image/jpeg"}
EXTENSIONS = {"png": "png", "jpeg": "jpg"}


def _config(app: Flask, name: str, default: str | int) -> str | int:
    """App config, else the environment, else ``default``; converted to the default's type."""
    value = app.config.get(name) or os.environ.get(name) or default
    try:
        return type(default)(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


class Uploads:
    """Per-app upload machinery: the job store, the collector and one shared producer."""

    def __init__(self, settings: Settings, store: JobStore, max_active: int, timeout_s: int) -> None:
        self.settings = settings
        self.store = store
        self.collector = JobCollector(settings, store)
        self.max_active = max_active
        self.timeout_s = timeout_s
        self._producer = None
        self._producer_lock = threading.Lock()

    def producer(self):
        with self._producer_lock:
            if self._producer is None:
                self._producer = make_producer(self.settings, "viewer-upload")
            return self._producer

    def status(self, job_id: str) -> JobStatus | None:
        # A restarted viewer finishes its predecessor's jobs once anyone asks about a job.
        self.collector.ensure_started()
        self.store.expire(self.timeout_s)
        return self.store.get(job_id)

    def active_count(self) -> int:
        self.store.expire(self.timeout_s)
        return self.store.active_count()

    def publish(self, frames: Iterable[Frame]) -> None:
        """Send every tile, spread round-robin over the raw topic's partitions, so the whole
        processor group works on one large image; raises KafkaError if any send fails."""
        producer = self.producer()
        partitions = sorted(producer.partitions_for(self.settings.raw_topic))
        start = uuid.uuid4().int  # jobs start on different partitions
        futures = []
        for i, frame in enumerate(frames):
            key, value, headers = to_record(frame)
            partition = partitions[(start + i) % len(partitions)]
            futures.append(producer.send(self.settings.raw_topic, key=key, value=value, headers=headers,
                                         partition=partition))
        producer.flush(timeout=60)
        for future in futures:
            future.get(timeout=60)

    def close(self) -> None:
        self.collector.stop()
        if self._producer is not None:
            self._producer.close(timeout=5)


def init_app(app: Flask, settings: Settings) -> None:
    """Register the upload routes and their state on ``app`` (config or env: JOBS_DB, JOBS_KEEP,
    MAX_ACTIVE_JOBS, JOB_TIMEOUT_S)."""
    store = JobStore(_config(app, "JOBS_DB", DEFAULT_DB), keep=_config(app, "JOBS_KEEP", 50))
    app.extensions["uploads"] = Uploads(settings, store, _config(app, "MAX_ACTIVE_JOBS", 8),
                                        _config(app, "JOB_TIMEOUT_S", 600))
    app.register_blueprint(bp)


def uploads() -> Uploads:
    return current_app.extensions["uploads"]


class BadUpload(Exception):
    def __init__(self, status: int, message: str, **extra) -> None:
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


@bp.errorhandler(BadUpload)
def bad_upload(exc: BadUpload):
    return jsonify({"error": exc.message, **exc.extra}), exc.status


@bp.errorhandler(HTTPException)
def http_error(exc: HTTPException):
    # Werkzeug's own refusals (e.g. a malformed multipart body) answer JSON like ours.
    return jsonify({"error": exc.description}), exc.code


def _read_image_field(max_bytes: int) -> bytes:
    if request.content_length is not None and request.content_length > max_bytes + FORM_OVERHEAD_BYTES:
        raise BadUpload(413, f"upload larger than MAX_UPLOAD_BYTES={max_bytes}")
    file = request.files.get("image")
    if file is None:
        hint = " (it must be a file part)" if "image" in request.form else ""
        raise BadUpload(400, f"missing multipart field 'image'{hint}")
    data = file.stream.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise BadUpload(413, f"image larger than MAX_UPLOAD_BYTES={max_bytes}")
    if not data:
        raise BadUpload(400, "field 'image' is empty")
    return data


def _chain() -> Chain:
    spec = request.form.get("transform") or DEFAULT_TRANSFORM
    try:
        return parse_spec(spec)
    except TransformError as exc:
        raise BadUpload(400, str(exc), valid=sorted(REGISTRY)) from None


def _tile_size() -> int:
    raw = request.form.get("tile") or str(DEFAULT_TILE)
    low, high = TILE_RANGE
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise BadUpload(400, f"tile must be an integer from {low} to {high}, got {raw!r}")
    return int(raw)


def _header(data: bytes, max_pixels: int) -> ImageHeader:
    try:
        header = read_header(data)
    except UnsupportedImage as exc:
        raise BadUpload(415, str(exc)) from None
    except CorruptImage as exc:
        raise BadUpload(400, str(exc)) from None
    if header.pixels > max_pixels:
        raise BadUpload(413, f"image is {header.width}x{header.height} = {header.pixels} pixels,"
                             f" more than MAX_UPLOAD_PIXELS={max_pixels}")
    return header


def _decode(data: bytes, header: ImageHeader) -> np.ndarray:
    try:
        image = off_hub(decode_image, data)
    except (CodecError, cv2.error) as exc:
        raise BadUpload(400, f"corrupt {header.format}: {exc}") from None
    if image.shape[:2] != (header.height, header.width):
        raise BadUpload(400, f"corrupt {header.format}: decodes to {image.shape[1]}x{image.shape[0]},"
                             f" header says {header.width}x{header.height}")
    return image


def _encode_tile(pixels: np.ndarray, fmt: str) -> bytes:
    return encode_image(np.ascontiguousarray(pixels), fmt, TILE_JPEG_QUALITY)


def job_frames(job_id: str, data: bytes, image: np.ndarray, header: ImageHeader, chain: Chain, tile: int
               ) -> tuple[int, Iterator[Frame]]:
    """(record count, the job's records): halo'd tiles when the chain can be tiled and the
    image is larger than a tile, else the untouched upload as one whole frame (no tile header).

    Tiles are encoded lazily, so the first ones are being processed while later ones encode.
    """
    base = Frame(stream=UPLOAD_STREAM, seq=0, ts_ms=int(time.time() * 1000), encoding=header.format,
                 width=header.width, height=header.height, data=data, job=job_id, transform=chain.spec)
    if not chain.tileable or (header.width <= tile and header.height <= tile):
        return 1, iter([base])
    tiles = split(image, tile, chain.halo, align=chain.align)  # views: nothing copied yet
    # One tile per hop to the native thread: between tiles the hub gets the GIL back at once
    # (one long call over every tile starves it: measured 0.5-1 s stalls of the live streams).
    frames = (
        dataclasses.replace(base, seq=info.index, tile=info.to_header(),
                            data=off_hub(_encode_tile, pixels, header.format))
        for info, pixels in tiles
    )
    return len(tiles), frames


def _job_urls(job_id: str) -> dict:
    return {
        "status_url": url_for("upload.job_status", job_id=job_id),
        "result_url": url_for("upload.job_result", job_id=job_id),
        "events_url": url_for("upload.job_events", job_id=job_id),
    }


@bp.post("/upload")
def upload():
    up = uploads()
    settings = up.settings
    data = _read_image_field(settings.max_upload_bytes)
    chain = _chain()
    tile = _tile_size()
    header = _header(data, settings.max_upload_pixels)
    # Decoding proves the file is whole (a valid header can front corrupt pixel data); only
    # now, with the size checked, is the allocation bounded.
    image = _decode(data, header)
    if up.active_count() >= up.max_active:
        raise BadUpload(429, f"{up.max_active} jobs already in progress (MAX_ACTIVE_JOBS); try again shortly")
    job_id = uuid.uuid4().hex
    total, frames = job_frames(job_id, data, image, header, chain, tile)
    # A whole-image record must fit one Kafka message; tiles always do.
    if total == 1 and len(data) > settings.max_message_bytes - RECORD_OVERHEAD_BYTES:
        raise BadUpload(413, f"transform {chain.spec!r} needs the whole image in one message, and this one is"
                             f" larger than MAX_MESSAGE_BYTES={settings.max_message_bytes}")
    if not up.collector.wait_ready(READY_WAIT_S):
        return jsonify({"error": f"broker unreachable: {up.collector.error or 'job collector not ready'}"}), 503
    up.store.create(job_id, header.format, chain.spec, header.width, header.height, total)
    try:
        up.publish(frames)
    except KafkaError as exc:
        up.store.fail(job_id, f"publishing failed: {exc}")
        return jsonify({"error": f"broker unreachable: {exc}", "job": job_id}), 503
    body = {"job": job_id, "state": "queued", "tiles_total": total, "transform": chain.spec, **_job_urls(job_id)}
    return jsonify(body), 202, {"Location": body["status_url"]}


def _known(job_id: str) -> JobStatus:
    status = uploads().status(job_id)
    if status is None:
        raise BadUpload(404, f"unknown job {job_id!r}")
    return status


@bp.get("/jobs/<job_id>")
def job_status(job_id: str):
    return jsonify(_known(job_id).to_json() | _job_urls(job_id))


@bp.get("/jobs/<job_id>/result")
def job_result(job_id: str):
    status = _known(job_id)
    if status.state != "done":
        message = f"job failed: {status.error}" if status.state == "failed" else f"job is {status.state}"
        raise BadUpload(409, message, state=status.state, tiles_done=status.tiles_done, tiles_total=status.tiles_total)
    result = uploads().store.result(job_id)
    if result is None:  # pruned between the two reads
        raise BadUpload(404, f"unknown job {job_id!r}")
    disposition = "attachment" if request.args.get("download") in ("1", "true", "yes") else "inline"
    filename = f"{job_id}.{EXTENSIONS[status.format]}"
    return Response(result, mimetype=MIMETYPES[status.format],
                    headers={"Content-Disposition": f'{disposition}; filename="{filename}"'})


@bp.get("/jobs/<job_id>/events")
def job_events(job_id: str):
    """Server-sent events: the job's status JSON each time it changes, until done or failed."""
    first = _known(job_id)
    up = uploads()

    def events(status: JobStatus | None) -> Iterator[str]:
        deadline = time.monotonic() + EVENTS_MAX_S
        last = None
        while status is not None and time.monotonic() < deadline:
            current = (status.state, status.tiles_done)
            if current != last:
                last = current
                yield f"event: status\ndata: {json.dumps(status.to_json())}\n\n"
            if status.state in ("done", "failed"):
                return
            time.sleep(EVENTS_POLL_S)
            status = up.status(job_id)

    return Response(events(first), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
