"""Job collector: one background reader per viewer process gathers still-image tiles from the
processed topic (and failures from the dead-letter topic) into the JobStore, and assembles a
job's result when its last tile arrives.

It reads without a consumer group and keeps its own position in the JobStore, saved after the
tiles it stored, so a restarted viewer resumes where the last one stopped (re-reading a few
records at worst: storing a tile twice is a no-op).
"""
from __future__ import annotations

import logging
import threading
import time

import numpy as np
from kafka import TopicPartition

from pipeline.codec import CodecError, decode_image, encode_image
from pipeline.generations import slot_names, slots
from pipeline.kafka import BACKGROUND_FETCH, make_consumer
from pipeline.pixels import is_pixels
from pipeline.settings import Settings
from pipeline.tiling import Assembler, TileInfo
from pipeline.wire import WireError, decode_record
from viewer.background import BackgroundLoop
from viewer.stills.offload import off_hub
from viewer.stills.store import JobStore

log = logging.getLogger(__name__)

# JPEG results are re-encoded once after reassembly: keep that generation nearly lossless.
RESULT_JPEG_QUALITY = 95
# Live video moves the position all the time; saving it at most this often is plenty.
CURSOR_SAVE_INTERVAL_S = 1.0


class JobCollector(BackgroundLoop):
    name = "job-collector"

    def __init__(self, settings: Settings, store: JobStore) -> None:
        super().__init__()
        self.settings = settings
        self.store = store
        self.topics = [settings.processed_topic, settings.dead_letter_topic]
        self.ready = threading.Event()

    def wait_ready(self, timeout_s: float) -> bool:
        """True once the reader is positioned: a job published after this is never missed."""
        self.ensure_started()
        return self.ready.wait(timeout_s)

    def run_once(self) -> None:
        # Out of range (the embedded broker restarted and forgot everything): start over.
        consumer = make_consumer(self.settings, "viewer-jobs", group_id=None, auto_offset_reset="earliest", **BACKGROUND_FETCH)
        try:
            # Every generation of both topics on the embedded broker (pipeline/generations.py):
            # a job's tiles come out in the slot its upload went to.
            existing = consumer.topics()
            self.topics = [*slots(self.settings.processed_topic, existing), *slots(self.settings.dead_letter_topic, existing)]
            tps = []
            for topic in self.topics:
                partitions = consumer.partitions_for_topic(topic)
                if not partitions:
                    self.stopping.wait(0.5)
                    return
                tps += [TopicPartition(topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            for topic in self.topics:
                saved = self.store.cursor(topic)
                for tp in tps:
                    if tp.topic != topic:
                        continue
                    if tp.partition in saved:
                        consumer.seek(tp, saved[tp.partition])
                    else:
                        # Tansu reports the end short by up to a batch: we re-read a few records, harmless.
                        consumer.seek_to_end(tp)
            positions = {tp: consumer.position(tp) for tp in tps}
            self._save(positions)
            self.error = None
            self.ready.set()
            for job_id in self.store.complete_unassembled():
                self._assemble(job_id)
            saved_at = time.monotonic()
            while not self.stopping.is_set():
                batch = consumer.poll(timeout_ms=200)
                job_seen = False
                for tp, records in batch.items():
                    for record in records:
                        job_seen |= bool(self.skip_bad_record(self._handle, record))
                    positions[tp] = records[-1].offset + 1
                if batch and (job_seen or time.monotonic() - saved_at > CURSOR_SAVE_INTERVAL_S):
                    self._save(positions)
                    saved_at = time.monotonic()
        finally:
            consumer.close()

    def _save(self, positions: dict[TopicPartition, int]) -> None:
        for topic in self.topics:
            self.store.save_cursor(topic, {tp.partition: off for tp, off in positions.items() if tp.topic == topic})

    def _handle(self, record) -> bool:
        """Store a job's tile or failure; True when the record belonged to a job."""
        if record.topic in slot_names(self.settings.dead_letter_topic):
            # Only the headers: a dead letter may come without the original's bytes.
            headers = dict(record.headers or [])
            job = headers.get("job")
            if job is None:
                return False
            job_id = job.decode(errors="replace")
            reason = headers.get("error", b"unknown error").decode(errors="replace")
            log.warning("job=%s failed in the processor: %s", job_id, reason)
            self.store.fail(job_id, f"processor: {reason}")
            return True
        try:
            frame = decode_record(record)
        except WireError:
            return False
        if frame.job is None:
            return False
        index = 0
        if frame.tile is not None:
            try:
                index = TileInfo.from_header(frame.tile).index
            except ValueError as exc:
                self.store.fail(frame.job, str(exc))
                return True
        status = self.store.add_tile(frame.job, index, frame.tile, frame.data, frame.width, frame.height)
        if status is not None and status.tiles_done >= status.tiles_total:
            self._assemble(status.id)
        return True

    def _assemble(self, job_id: str) -> None:
        """Build the result from the stored tiles, unless another viewer worker already is."""
        if not self.store.claim_assembly(job_id):
            return
        status = self.store.get(job_id)
        started = time.monotonic()
        try:
            tiles = self.store.tiles(job_id)
            if len(tiles) == 1 and tiles[0][0] is None and not is_pixels(tiles[0][1]):
                result = tiles[0][1]  # a whole upload sent as is: the processor answered in its format
            elif len(tiles) == 1 and tiles[0][0] is None:
                result = off_hub(_transcode, tiles[0][1], status.format)
            else:
                image = self._reassemble(tiles, status.out_height, status.out_width, self.settings.max_frame_pixels)
                result = off_hub(encode_image, image, status.format, RESULT_JPEG_QUALITY)
        except (CodecError, ValueError, RuntimeError) as exc:
            log.warning("job=%s cannot be assembled: %s", job_id, exc)
            self.store.fail(job_id, f"assembly: {exc}")
            return
        self.store.finish(job_id, result)
        log.info("job=%s done: %d tiles, %dx%d, %d bytes, assembled in %.2f s", job_id, len(tiles),
                 status.out_width, status.out_height, len(result), time.monotonic() - started)

    @staticmethod
    def _reassemble(tiles: list[tuple[str | None, bytes]], height: int, width: int, max_pixels: int) -> np.ndarray:
        """Every processed tile is in output coordinates, so reassembly is identity geometry.
        Decoding and placing go to a native thread one tile at a time (see viewer.stills.offload)."""
        infos = [TileInfo.from_header(header) for header, _ in tiles]
        assembler = Assembler(height, width, infos[0].rows, infos[0].cols)
        for info, (_, data) in zip(infos, tiles, strict=True):
            off_hub(lambda info=info, data=data: assembler.add(info, decode_image(data, max_pixels)))
        return assembler.image()


def _transcode(data: bytes, fmt: str) -> bytes:
    """An internal (lz4) result in the upload's format."""
    return encode_image(decode_image(data), fmt, RESULT_JPEG_QUALITY)
