"""Still-image uploads: check the image, split it into halo'd tiles, publish them to the raw
topic as one job for the processor group, and report the job's progress.

Tiles go through the same processor code path as video frames (``pipeline.tiling`` contract);
the job collector (``viewer.stills.collector``) reassembles them and ``viewer.stills.store``
keeps the state. The HTTP side is ``viewer.routes.stills``.
"""
from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Iterable, Iterator

import cv2
import numpy as np

from pipeline.codec import CodecError, decode_image, encode_image
from pipeline.kafka import make_producer
from pipeline.settings import Settings
from pipeline.tiling import split
from pipeline.transforms import Chain
from pipeline.wire import Frame, to_record
from viewer.errors import ApiError
from viewer.stills.collector import JobCollector
from viewer.stills.imageheader import CorruptImage, ImageHeader, UnsupportedImage, read_header
from viewer.stills.offload import off_hub
from viewer.stills.store import JobStatus, JobStore

UPLOAD_STREAM = "upload"
TILE_JPEG_QUALITY = 95  # tiles are re-encoded once more by the processor (PNG ignores it)


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
        """Close the producer; the collector is stopped with the viewer's other readers."""
        if self._producer is not None:
            self._producer.close(timeout=5)


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


def decode_upload(data: bytes, header: ImageHeader) -> np.ndarray:
    """The pixels, on a native thread; ApiError 400 when they do not match the header."""
    try:
        image = off_hub(decode_image, data)
    except (CodecError, cv2.error) as exc:
        raise ApiError(400, f"corrupt {header.format}: {exc}") from None
    if image.shape[:2] != (header.height, header.width):
        raise ApiError(400, f"corrupt {header.format}: decodes to {image.shape[1]}x{image.shape[0]},"
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


