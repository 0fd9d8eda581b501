"""Still-image uploads: check the image and the work it asks for, split it into halo'd tiles,
publish them to the jobs topic as one job for the processor group, and report the job's progress.

Tiles go through the same processor code path as video frames (``pipeline.tiling`` contract);
the job-state topic (``viewer.stills.joblog``) holds every job's state for all replicas, the job
collector (``viewer.stills.collector``) reassembles results and ``viewer.stills.store`` caches
them on this host. The HTTP side is ``viewer.routes.stills``.
"""
from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.codec import CodecError, decode_image, encode_image
from pipeline.generations import CurrentSlot
from pipeline.imageheader import CorruptImage, ImageHeader, UnsupportedImage, read_header
from pipeline.kafka import make_producer
from pipeline.settings import Settings
from pipeline.tiling import split
from pipeline.transforms import Chain
from pipeline.wire import OUT_RESULTS, Frame, to_record
from viewer.errors import ApiError
from viewer.stills.budget import Busy, MemoryBudget, Reservation
from viewer.stills.collector import JobCollector
from viewer.stills.joblog import JobLog
from viewer.stills.jobstate import Entry, JobRecord, Limits
from viewer.stills.offload import off_hub, off_hub_ahead, off_hub_start
from viewer.stills.store import JobStatus, JobStore

UPLOAD_STREAM = "upload"
# Inside the pipeline, images travel as zstd pixels (pipeline/pixels.py): lossless, ~50x faster
# to encode than PNG, and a third of the raw size for a photograph. The upload's own format is
# used again only for the result.
INTERNAL_ENCODING = "zstd"
# Tiles encoded at once on native threads while the hub publishes the ones before: one at a
# time left the hub waiting ~3 ms per tile of a 4096² job and a second core idle.
ENCODE_AHEAD = 2
MEMORY_WAIT_S = 2.0  # how long an upload waits for others' memory before a 503
RETRY_AFTER_S = 5  # what a refused upload is told to wait
# Status requests evict the cache's unfinished jobs older than JOB_TIMEOUT_S at most this often.
# Every request did, a write transaction each: a client polling every 20 ms (bench/stills.py)
# made 500 of them during one 4096² job, on the viewer's CPU while the processors needed it
# (500 status requests: 1.2-1.8 s of viewer CPU before, 1.0-1.2 s after).
EXPIRE_EVERY_S = 10.0
# How long a result request waits for this replica to assemble a job another replica finished
# (reading its tiles again from the job results topic if it did not cache them).
RESULT_WAIT_S = 30.0


@dataclass(frozen=True)
class JobLimits:
    """What one upload may ask for, and how many may be in progress."""

    max_active: int = 8  # MAX_ACTIVE_JOBS: jobs in progress, all clients
    max_per_client: int = 2  # MAX_JOBS_PER_CLIENT: jobs in progress from one client address
    max_work_s: float = 20.0  # MAX_JOB_WORK_S: estimated seconds of one core per job
    timeout_s: int = 600  # JOB_TIMEOUT_S: a job not done by then has failed
    memory_bytes: int = 512 * 1024 * 1024  # UPLOAD_MEMORY_BYTES: upload bytes + pixels in flight, per process

    def for_record(self) -> Limits:
        """The limits a job request carries, which admission then applies (viewer.stills.jobstate)."""
        return Limits(self.max_active, self.max_per_client, self.timeout_s)


class ResultGone(Exception):
    """A finished job whose result this replica cannot build: it has not cached the tiles, and
    they are no longer in the log (the job results topic's retention, or rotation on the
    embedded broker, dropped them)."""


class Uploads:
    """Per-app upload machinery: the job-state topic, the host's job cache, the collector, one
    shared producer, the limits and the process's upload memory budget."""

    def __init__(self, settings: Settings, store: JobStore, limits: JobLimits, keep: int = 50) -> None:
        self.settings = settings
        self.store = store
        self.jobs = JobLog(settings, keep)
        self.collector = JobCollector(settings, store, self.jobs, limits.timeout_s)
        self.limits = limits
        self.memory = MemoryBudget(limits.memory_bytes)
        self._producer = None
        self._slot: CurrentSlot | None = None
        self._producer_lock = threading.Lock()
        self._clock = time.monotonic
        self._expired_at = float("-inf")

    def producer(self):
        with self._producer_lock:
            if self._producer is None:
                self._producer = make_producer(self.settings, "viewer-upload")
                # Not the raw topic: processors take job tiles only while no live frame waits
                # (processor/jobs.py). Its current generation on the embedded broker (pipeline/generations.py).
                self._slot = CurrentSlot(self.settings, self.settings.jobs_topic)
            return self._producer

    def ready(self, timeout_s: float) -> bool:
        """The job-state topic read through and the collector positioned (both start on first use)."""
        return self.jobs.wait_ready(timeout_s) and self.collector.wait_ready(timeout_s)

    def entry(self, job_id: str) -> Entry | None:
        """The job as the job-state topic has it; None when unknown or refused."""
        # Any request about a job starts this replica's collector: it finishes the job if the
        # replica that took the upload is gone.
        self.collector.ensure_started()
        entry = self.jobs.entry(job_id)
        return entry if entry is not None and entry.admitted else None

    def status(self, job_id: str) -> JobStatus | None:
        entry = self.entry(job_id)
        if entry is None:
            return None
        now = self._clock()
        if now - self._expired_at >= EXPIRE_EVERY_S:
            self._expired_at = now
            self.store.expire(self.limits.timeout_s)  # the cache drops tiles of jobs that never finished
        return job_status(entry, self.store.get(job_id), int(time.time() * 1000))

    def result(self, entry: Entry, wait_s: float = RESULT_WAIT_S) -> bytes | None:
        """A done job's result from this host's cache, assembled here first if need be (from
        tiles this replica collected, or reads again now); None if that takes over ``wait_s``;
        ResultGone if the tiles are no longer in the log."""
        job_id = entry.record.job
        deadline = time.monotonic() + wait_s
        if not self.collector.wait_ready(wait_s):
            return None
        read_again = gone = False
        while True:
            data = self.collector.results.get(job_id) or self.store.result(job_id)
            if data is not None:
                return data
            cached = self.store.get(job_id)
            if cached is not None and cached.state == "running" and cached.tiles_done >= cached.tiles_total:
                self.collector.assemble(job_id)  # now, unless another worker of this host is
            elif gone:
                raise ResultGone(job_id)
            elif not read_again:
                read_again = True
                # Not all found may also mean the collector finished the job meanwhile (its tiles
                # then no longer count): the cache is looked at once more before giving up.
                gone = not self.collector.collect_again(entry, deadline) and time.monotonic() < deadline
                continue
            if time.monotonic() > deadline:
                return None
            time.sleep(0.2)

    def publish(self, frames: Iterable[Frame]) -> None:
        """Send every tile, spread round-robin over the jobs topic's partitions, so the whole
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
        """Close the producers; the readers are stopped with the viewer's other readers."""
        if self._producer is not None:
            self._producer.close(timeout=5)
            self._slot.close()
        self.jobs.close()


def new_job(job_id: str, header: ImageHeader, chain: Chain, client: str, limits: JobLimits) -> JobRecord:
    """The request a new upload publishes to the job-state topic."""
    return JobRecord(job=job_id, state="requested", format=header.format, transform=chain.spec,
                     width=header.width, height=header.height, created_ms=int(time.time() * 1000),
                     client=client, limits=limits.for_record())


def job_status(entry: Entry, cached: JobStatus | None, now_ms: int) -> JobStatus:
    """What a status request answers: the job from the job-state topic, with this host's progress
    (tiles collected so far) while it runs."""
    job = entry.record
    state = entry.state_at(now_ms)
    tiles_done = cached.tiles_done if cached is not None else 0
    if state == "requested":
        state = "queued"  # admitted, tiles not published yet
    elif state == "queued" and tiles_done:
        state = "running"
    elif state == "done":
        tiles_done = job.tiles_total
    finished = job.finished_ms / 1000 if job.finished_ms is not None else None
    if finished is None and state == "failed":
        finished = job.deadline_ms / 1000
    return JobStatus(
        id=job.job, state=state, format=job.format, transform=job.transform, width=job.width,
        height=job.height, tiles_total=job.tiles_total, tiles_done=min(tiles_done, job.tiles_total),
        created=job.created_ms / 1000, finished=finished, error=entry.error_at(now_ms),
        out_width=job.out_width or (cached.out_width if cached else None),
        out_height=job.out_height or (cached.out_height if cached else None),
        result_bytes=cached.result_bytes if cached is not None else 0,
    )


def reserve(memory: Reservation, nbytes: int) -> None:
    """Grow the upload's memory reservation; ApiError 503 (Retry-After) while others hold the budget."""
    try:
        memory.grow(nbytes, MEMORY_WAIT_S)
    except Busy as exc:
        raise ApiError(503, f"busy with other uploads: {exc} (UPLOAD_MEMORY_BYTES); try again shortly",
                       headers=retry_after()) from None


def check_header(data: bytes, max_pixels: int) -> ImageHeader:
    """The upload's format and size from its header, before any decoding; ApiError 415/400/413."""
    try:
        header = read_header(data)
    except UnsupportedImage as exc:
        raise ApiError(415, str(exc)) from None
    except CorruptImage as exc:
        raise ApiError(400, str(exc)) from None
    if header.pixels > max_pixels:
        raise ApiError(413, f"image is {header.width}x{header.height} = {header.pixels} pixels,"
                             f" more than MAX_UPLOAD_PIXELS={max_pixels}")
    return header


def check_work(chain: Chain, header: ImageHeader, max_pixels: int, max_work_s: float) -> None:
    """Refuse, before anything runs, a chain whose output or intermediate images exceed the
    pixel limit, or whose estimated work exceeds the job limit."""
    height, width = header.height, header.width
    out_h, out_w = chain.output_size(height, width)
    if out_h * out_w > max_pixels:
        raise ApiError(413, f"transform {chain.spec!r} makes a {out_w}x{out_h} image from this one, more than"
                             f" MAX_UPLOAD_PIXELS={max_pixels}")
    if chain.peak_pixels(height, width) > max_pixels:
        raise ApiError(413, f"transform {chain.spec!r} makes an intermediate image of {chain.peak_pixels(height, width)}"
                             f" pixels from this one, more than MAX_UPLOAD_PIXELS={max_pixels}")
    work_s = chain.work_s(height, width)
    if work_s > max_work_s:
        raise ApiError(422, f"transform {chain.spec!r} on {width}x{height} is estimated at {work_s:.0f} s of"
                             f" processing, more than MAX_JOB_WORK_S={max_work_s:g}; use a smaller image or"
                             " a lighter chain")


def start_decode(data: bytes, header: ImageHeader) -> Callable[[], np.ndarray]:
    """Start decoding on a native thread; the returned wait gives the pixels, or raises ApiError
    400 when they do not match the header."""
    pending = off_hub_start(decode_image, data)

    def pixels() -> np.ndarray:
        try:
            image = pending()
        except (CodecError, cv2.error) as exc:
            raise ApiError(400, f"corrupt {header.format}: {exc}") from None
        if image.shape[:2] != (header.height, header.width):
            raise ApiError(400, f"corrupt {header.format}: decodes to {image.shape[1]}x{image.shape[0]},"
                                 f" header says {header.width}x{header.height}")
        return image

    return pixels


def sends_upload_as_is(header: ImageHeader, whole: bool, max_record_bytes: int) -> bool:
    """A whole-image job whose pixels would not fit one record uncompressed goes as the upload
    itself: compression may not shrink an image enough (a 4096² photograph as lz4 did not fit 32 MiB), and trying
    costs the decode and a full compression before anything is sent. The processor decodes it
    instead, while the viewer's own decode only checks the file."""
    return whole and header.pixels * 3 > max_record_bytes


def _encode_pixels(pixels: np.ndarray) -> bytes:
    return encode_image(pixels, INTERNAL_ENCODING)


def job_frames(job_id: str, data: bytes, image: np.ndarray | None, header: ImageHeader, chain: Chain, tile: int,
               max_record_bytes: int) -> tuple[int, Iterator[Frame]]:
    """(record count, the job's records): halo'd tiles when the chain can be tiled and the
    image is larger than a tile, else one whole frame (no tile header).

    Records carry the decoded pixels (zstd), so no stage decodes the upload again; only a whole
    image whose pixels exceed one record (``sends_upload_as_is``: ``image`` may be None then)
    goes as the untouched upload.
    Tiles are encoded lazily, so the first ones are being processed while later ones encode.
    """
    # Outputs to the job results topic (not the processed one, which the live hub reads).
    base = Frame(stream=UPLOAD_STREAM, seq=0, ts_ms=int(time.time() * 1000), encoding=INTERNAL_ENCODING,
                 width=header.width, height=header.height, data=b"", job=job_id, transform=chain.spec,
                 out=OUT_RESULTS)
    if not chain.tileable or (header.width <= tile and header.height <= tile):
        as_is = image is None or sends_upload_as_is(header, True, max_record_bytes)
        pixels = None if as_is else off_hub(_encode_pixels, image)
        if pixels is not None and len(pixels) <= max_record_bytes:
            return 1, iter([dataclasses.replace(base, data=pixels)])
        return 1, iter([dataclasses.replace(base, data=data, encoding=header.format)])
    tiles = split(image, tile, chain.halo, align=chain.align)  # views: nothing copied yet
    # One tile per hop to a native thread: between tiles the hub gets the GIL back at once
    # (one long call over every tile starves it: measured 0.5-1 s stalls of the live streams).
    # ENCODE_AHEAD of them at once, so the next tiles encode while the hub sends one.
    encoded = off_hub_ahead(_encode_pixels, (pixels for _, pixels in tiles), ENCODE_AHEAD)
    frames = (
        dataclasses.replace(base, seq=info.index, tile=info.to_header(), data=data)
        for (info, _), data in zip(tiles, encoded, strict=True)
    )
    return len(tiles), frames


def retry_after() -> dict[str, str]:
    """The header telling a refused client when to try again."""
    return {"Retry-After": str(RETRY_AFTER_S)}
