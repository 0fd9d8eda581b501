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
from dataclasses import dataclass

import cv2
import numpy as np
from flask import Blueprint, Flask, Response, current_app, jsonify, request, url_for
from kafka.errors import KafkaError
from werkzeug.exceptions import HTTPException

from pipeline.codec import CodecError, decode_image, encode_image
from pipeline.generations import CurrentSlot
from pipeline.imageheader import CorruptImage, ImageHeader, UnsupportedImage, read_header
from pipeline.kafka import make_producer
from pipeline.settings import Settings
from pipeline.tiling import split
from pipeline.transforms import REGISTRY, Chain, TransformError, parse_spec
from pipeline.wire import Frame, to_record
from viewer.stills.budget import Busy, MemoryBudget, Reservation
from viewer.stills.collector import JobCollector
from viewer.stills.offload import off_hub
from viewer.stills.store import DEFAULT_DB, JobLimit, JobStatus, JobStore

bp = Blueprint("upload", __name__)

UPLOAD_STREAM = "upload"
DEFAULT_TRANSFORM = "grayscale"  # the processor's own default
DEFAULT_TILE = 512
TILE_RANGE = (64, 8192)
# Multipart boundaries and the small form fields around the file.
FORM_OVERHEAD_BYTES = 64 * 1024
# Inside the pipeline, images travel as lz4 pixels (pipeline/pixels.py): lossless, and ~100x
# faster to encode than PNG. The upload's own format is used again only for the result.
INTERNAL_ENCODING = "lz4"
RECORD_OVERHEAD_BYTES = 4096  # headers and framing of one Kafka record, generously
READY_WAIT_S = 15.0
EVENTS_POLL_S = 0.25
MEMORY_WAIT_S = 2.0  # how long an upload waits for others' memory before a 503
RETRY_AFTER_S = 5  # what a refused upload is told to wait
EVENTS_MAX_S = 15 * 60
MIMETYPES = {"png": "image/png", "jpeg": "image/jpeg"}
EXTENSIONS = {"png": "png", "jpeg": "jpg"}


def _config(app: Flask, name: str, default: str | int | float) -> str | int | float:
    """App config, else the environment, else ``default``; converted to the default's type."""
    value = app.config.get(name) or os.environ.get(name) or default
    try:
        return type(default)(value)
    except ValueError:
        raise ValueError(f"{name} must be {'a number' if isinstance(default, float) else 'an integer'},"
                         f" got {value!r}") from None


@dataclass(frozen=True)
class JobLimits:
    """What one upload may ask for, and how many may be in progress."""

    max_active: int = 8  # MAX_ACTIVE_JOBS: jobs in progress, all clients
    max_per_client: int = 2  # MAX_JOBS_PER_CLIENT: jobs in progress from one client address
    max_work_s: float = 20.0  # MAX_JOB_WORK_S: estimated seconds of one core per job
    timeout_s: int = 600  # JOB_TIMEOUT_S: a job not done by then has failed
    memory_bytes: int = 512 * 1024 * 1024  # UPLOAD_MEMORY_BYTES: upload bytes + pixels in flight, per process


class Uploads:
    """Per-app upload machinery: the job store, the collector, one shared producer, the limits
    and the process's upload memory budget."""

    def __init__(self, settings: Settings, store: JobStore, limits: JobLimits) -> None:
        self.settings = settings
        self.store = store
        self.collector = JobCollector(settings, store)
        self.limits = limits
        self.memory = MemoryBudget(limits.memory_bytes)
        self._producer = None
        self._slot: CurrentSlot | None = None
        self._producer_lock = threading.Lock()

    def producer(self):
        with self._producer_lock:
            if self._producer is None:
                self._producer = make_producer(self.settings, "viewer-upload")
                # The raw topic's current generation on the embedded broker (pipeline/generations.py).
                self._slot = CurrentSlot(self.settings, self.settings.raw_topic)
            return self._producer

    def status(self, job_id: str) -> JobStatus | None:
        # A restarted viewer finishes its predecessor's jobs once anyone asks about a job.
        self.collector.ensure_started()
        self.store.expire(self.limits.timeout_s)
        return self.store.get(job_id)

    def publish(self, frames: Iterable[Frame]) -> None:
        """Send every tile, spread round-robin over the raw topic's partitions, so the whole
        processor group works on one large image; raises KafkaError if any send fails."""
        producer = self.producer()
        topic = self._slot.topic
        partitions = sorted(producer.partitions_for(topic))
        start = uuid.uuid4().int  # jobs start on different partitions
        futures = []
        for i, frame in enumerate(frames):
            key, value, headers = to_record(frame)
            partition = partitions[(start + i) % len(partitions)]
            futures.append(producer.send(topic, key=key, value=value, headers=headers,
                                         partition=partition))
        producer.flush(timeout=60)
        for future in futures:
            future.get(timeout=60)

    def close(self) -> None:
        self.collector.stop()
        if self._producer is not None:
            self._producer.close(timeout=5)
            self._slot.close()


def init_app(app: Flask, settings: Settings) -> None:
    """Register the upload routes and their state on ``app`` (config or env: JOBS_DB, JOBS_KEEP,
    MAX_ACTIVE_JOBS, MAX_JOBS_PER_CLIENT, MAX_JOB_WORK_S, JOB_TIMEOUT_S, UPLOAD_MEMORY_BYTES)."""
    store = JobStore(_config(app, "JOBS_DB", DEFAULT_DB), keep=_config(app, "JOBS_KEEP", 50))
    default = JobLimits()
    limits = JobLimits(
        max_active=_config(app, "MAX_ACTIVE_JOBS", default.max_active),
        max_per_client=_config(app, "MAX_JOBS_PER_CLIENT", default.max_per_client),
        max_work_s=_config(app, "MAX_JOB_WORK_S", default.max_work_s),
        timeout_s=_config(app, "JOB_TIMEOUT_S", default.timeout_s),
        memory_bytes=_config(app, "UPLOAD_MEMORY_BYTES", default.memory_bytes),
    )
    app.extensions["uploads"] = Uploads(settings, store, limits)
    app.register_blueprint(bp)


def uploads() -> Uploads:
    return current_app.extensions["uploads"]


class BadUpload(Exception):
    def __init__(self, status: int, message: str, retry_after: int | None = None, **extra) -> None:
        super().__init__(message)
        self.status, self.message, self.retry_after, self.extra = status, message, retry_after, extra


@bp.errorhandler(BadUpload)
def bad_upload(exc: BadUpload):
    headers = {} if exc.retry_after is None else {"Retry-After": str(exc.retry_after)}
    return jsonify({"error": exc.message, **exc.extra}), exc.status, headers


@bp.errorhandler(HTTPException)
def http_error(exc: HTTPException):
    # Werkzeug's own refusals (e.g. a malformed multipart body) answer JSON like ours.
    return jsonify({"error": exc.description}), exc.code


def _reserve(memory: Reservation, nbytes: int) -> None:
    try:
        memory.grow(nbytes, MEMORY_WAIT_S)
    except Busy as exc:
        raise BadUpload(503, f"busy with other uploads: {exc} (UPLOAD_MEMORY_BYTES); try again shortly",
                        retry_after=RETRY_AFTER_S) from None


def _read_image_field(max_bytes: int, memory: Reservation) -> bytes:
    if request.content_length is not None and request.content_length > max_bytes + FORM_OVERHEAD_BYTES:
        raise BadUpload(413, f"upload larger than MAX_UPLOAD_BYTES={max_bytes}")
    _reserve(memory, request.content_length or max_bytes)  # the image's bytes, held until published
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
    # isdecimal() alone accepts other scripts' digits, isdigit() superscripts: ASCII only.
    if not (raw.isascii() and raw.isdecimal()) or not low <= int(raw) <= high:
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


def _check_work(chain: Chain, header: ImageHeader, max_pixels: int, max_work_s: float) -> None:
    """Refuse, before anything runs, a chain whose output or intermediate images exceed the
    pixel limit, or whose estimated work exceeds the job limit."""
    height, width = header.height, header.width
    out_h, out_w = chain.output_size(height, width)
    if out_h * out_w > max_pixels:
        raise BadUpload(413, f"transform {chain.spec!r} makes a {out_w}x{out_h} image from this one, more than"
                             f" MAX_UPLOAD_PIXELS={max_pixels}")
    if chain.peak_pixels(height, width) > max_pixels:
        raise BadUpload(413, f"transform {chain.spec!r} makes an intermediate image of {chain.peak_pixels(height, width)}"
                             f" pixels from this one, more than MAX_UPLOAD_PIXELS={max_pixels}")
    work_s = chain.work_s(height, width)
    if work_s > max_work_s:
        raise BadUpload(422, f"transform {chain.spec!r} on {width}x{height} is estimated at {work_s:.0f} s of"
                             f" processing, more than MAX_JOB_WORK_S={max_work_s:g}; use a smaller image or"
                             " a lighter chain")


def _decode(data: bytes, header: ImageHeader) -> np.ndarray:
    try:
        image = off_hub(decode_image, data)
    except (CodecError, cv2.error) as exc:
        raise BadUpload(400, f"corrupt {header.format}: {exc}") from None
    if image.shape[:2] != (header.height, header.width):
        raise BadUpload(400, f"corrupt {header.format}: decodes to {image.shape[1]}x{image.shape[0]},"
                             f" header says {header.width}x{header.height}")
    return image


def _encode_pixels(pixels: np.ndarray) -> bytes:
    return encode_image(pixels, INTERNAL_ENCODING)


def job_frames(job_id: str, data: bytes, image: np.ndarray, header: ImageHeader, chain: Chain, tile: int,
               max_record_bytes: int) -> tuple[int, Iterator[Frame]]:
    """(record count, the job's records): halo'd tiles when the chain can be tiled and the
    image is larger than a tile, else one whole frame (no tile header).

    Records carry the decoded pixels (lz4), so no stage decodes the upload again; only a whole
    image whose pixels exceed one record goes as the untouched upload.
    Tiles are encoded lazily, so the first ones are being processed while later ones encode.
    """
    base = Frame(stream=UPLOAD_STREAM, seq=0, ts_ms=int(time.time() * 1000), encoding=INTERNAL_ENCODING,
                 width=header.width, height=header.height, data=b"", job=job_id, transform=chain.spec)
    if not chain.tileable or (header.width <= tile and header.height <= tile):
        # Pixels that would have to compress better than 2:1 to fit are not worth trying.
        pixels = off_hub(_encode_pixels, image) if image.nbytes <= 2 * max_record_bytes else None
        if pixels is not None and len(pixels) <= max_record_bytes:
            return 1, iter([dataclasses.replace(base, data=pixels)])
        return 1, iter([dataclasses.replace(base, data=data, encoding=header.format)])
    tiles = split(image, tile, chain.halo, align=chain.align)  # views: nothing copied yet
    # One tile per hop to the native thread: between tiles the hub gets the GIL back at once
    # (one long call over every tile starves it: measured 0.5-1 s stalls of the live streams).
    frames = (
        dataclasses.replace(base, seq=info.index, tile=info.to_header(), data=off_hub(_encode_pixels, pixels))
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
    settings, limits = up.settings, up.limits
    with up.memory.reservation() as memory:
        data = _read_image_field(settings.max_upload_bytes, memory)
        chain = _chain()
        tile = _tile_size()
        header = _header(data, settings.max_upload_pixels)
        _check_work(chain, header, settings.max_upload_pixels, limits.max_work_s)
        whole = not chain.tileable or (header.width <= tile and header.height <= tile)
        # A whole-image record must fit one Kafka message; tiles always do.
        if whole and len(data) > settings.max_message_bytes - RECORD_OVERHEAD_BYTES:
            raise BadUpload(413, f"transform {chain.spec!r} needs the whole image in one message, and this one is"
                                 f" larger than MAX_MESSAGE_BYTES={settings.max_message_bytes}")
        if not up.collector.wait_ready(READY_WAIT_S):
            return jsonify({"error": f"broker unreachable: {up.collector.error or 'job collector not ready'}"}), 503
        job_id = uuid.uuid4().hex
        # Admitted before the decode, in one transaction with the count: the limits hold
        # however many uploads arrive together.
        up.store.expire(limits.timeout_s)  # jobs no processor finished no longer count
        try:
            up.store.create(job_id, header.format, chain.spec, header.width, header.height, 0,
                            client=request.remote_addr, max_active=limits.max_active,
                            max_per_client=limits.max_per_client)
        except JobLimit as exc:
            raise BadUpload(429, f"{exc}; try again shortly", retry_after=RETRY_AFTER_S) from None
        try:
            # The decoded BGR image (and, for a whole-image job, its lz4 copy).
            _reserve(memory, header.pixels * 3 * (2 if whole else 1))
            # Decoding proves the file is whole (a valid header can front corrupt pixel data);
            # only now, with the size checked and the memory reserved, is the allocation bounded.
            image = _decode(data, header)
            total, frames = job_frames(job_id, data, image, header, chain, tile,
                                       settings.max_message_bytes - RECORD_OVERHEAD_BYTES)
            up.store.set_total(job_id, total)
            up.publish(frames)
        except KafkaError as exc:
            up.store.fail(job_id, f"publishing failed: {exc}")
            return jsonify({"error": f"broker unreachable: {exc}", "job": job_id}), 503
        except BaseException:
            up.store.discard(job_id)
            raise
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
