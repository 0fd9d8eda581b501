"""Job collector: one background reader per viewer process gathers the tiles of every job in
the job-state topic from the job results topic (and from the processed topic, where processors
put the output of records from older viewers), and failures from the dead-letter topic, into this
host's cache (viewer.stills.store), assembles a job's result when its last tile arrives, and
publishes the job's outcome to the job-state topic: the first replica to do so decides it for all.
A job some other replica already finished is assembled here only when its result is asked for.

It reads without a consumer group and keeps no position of its own: it starts where the
earliest job in progress says its output begins (``tiles_from`` in the job-state topic), else at
the end. So a replica that was restarted reads again what went by meanwhile (storing a tile
twice is a no-op). The tiles of a job finished before it started are read on demand
(:meth:`JobCollector.collect_again`), from the same place.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
from kafka import TopicPartition

from pipeline.codec import CodecError, decode_image, encode_image
from pipeline.generations import slot_names
from pipeline.kafka import BurstFetch, assign_at, make_consumer, partitions_of
from pipeline.pixels import is_pixels
from pipeline.settings import Settings
from pipeline.tiling import Assembler, TileInfo
from pipeline.wire import WireError, decode_record, header_of
from viewer.background import BackgroundLoop
from viewer.stills.joblog import JobLog, JobLogBehind, output_slots
from viewer.stills.jobstate import Entry
from viewer.stills.offload import off_hub, off_hub_map, off_hub_start
from viewer.stills.partial import PartialResults
from viewer.stills.recent import RecentResults
from viewer.stills.store import JobStatus, JobStore

log = logging.getLogger(__name__)

# JPEG results are re-encoded once after reassembly: keep that generation nearly lossless.
RESULT_JPEG_QUALITY = 95
# A finished job's tiles all sit before its done record; read that much past it, for clocks
# (the processors' and the replica's that wrote it) that disagree.
COLLECT_AGAIN_SLACK_MS = 60_000


class JobCollector(BackgroundLoop):
    name = "job-collector"
    # Output of a job this replica has not read yet is not skipped: the run ends and the next
    # one, once the job-state topic is read, starts again where that job's output begins.
    not_the_record = (JobLogBehind,)

    def __init__(self, settings: Settings, store: JobStore, jobs: JobLog, timeout_s: int) -> None:
        super().__init__()
        self.settings = settings
        self.store = store
        self.jobs = jobs
        self.timeout_s = timeout_s
        self.ready = threading.Event()
        self.partials = PartialResults()
        self.results = RecentResults()

    def wait_ready(self, timeout_s: float) -> bool:
        """True once the reader is positioned: a job published after this is never missed."""
        self.ensure_started()
        return self.ready.wait(timeout_s)

    def run_once(self) -> None:
        if not self.jobs.wait_ready(1.0):
            self.stopping.wait(0.5)
            return
        consumer = make_consumer(self.settings, "viewer-jobs", group_id=None, auto_offset_reset="earliest")
        burst = BurstFetch(consumer)  # its fetch wait, from the first fetch on
        try:
            # Every generation of these topics on the embedded broker (pipeline/generations.py):
            # a job's tiles come out in the slot its upload went to.
            tps = partitions_of(consumer, *output_slots(self.settings, consumer.topics()))
            if not tps:
                self.stopping.wait(0.5)
                return
            ends = consumer.end_offsets(tps)
            # Ends first, then the job-state topic read up to its end: a job missing from it now was
            # requested after these ends were taken, so its output sits past them.
            if not self.jobs.sync():
                self.stopping.wait(0.5)
                return
            assign_at(consumer, self._start_positions(ends))
            self.error = None
            self.ready.set()
            for job_id in self.store.complete_unassembled():
                self._assemble(job_id)
            # Short fetch waits while a job's tiles come, and while a job whose tiles are out
            # waits for them (from its queued record on: its first tiles are not waited for
            # behind an idle fetch, and the short waits end with the last job, not a linger
            # after it). Live frames on the same topic do not count (they would keep this reader
            # polling every 10 ms as long as video flows).
            while not self.stopping.is_set():
                batch = consumer.poll(timeout_ms=200)
                burst.polled(self._tiles_due()
                             or any(is_job_record(record) for records in batch.values() for record in records))
                self._handle_batch([record for records in batch.values() for record in records])
        finally:
            consumer.close()

    def _tiles_due(self) -> bool:
        """Some job's tiles are out (it is queued) and it is not finished yet."""
        return any(entry.record.state == "queued" for entry in self.jobs.in_progress())

    def _start_positions(self, ends: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """From the end of each partition, or earlier where a job in progress (created within
        the job timeout) says its output starts."""
        positions = dict(ends)
        for entry in self.jobs.in_progress():
            for tp, offset in output_positions(entry, ends).items():
                positions[tp] = min(positions[tp], offset)
        return positions

    def _handle_batch(self, records: list) -> None:
        """Store a poll's job tiles, one store call per job (a transaction per tile made the
        viewer fall behind two processors), and its failures."""
        self._drop_partials_of_finished_jobs()
        tiles: dict[str, tuple[Entry, list]] = {}
        for record in records:
            found = self.skip_bad_record(self._tile, record)
            if found is not None:
                entry, index, frame = found
                tiles.setdefault(frame.job, (entry, []))[1].append((index, frame))
        for job_id, (entry, frames) in tiles.items():
            # Cached on a native thread while the tiles are decoded into the partial result:
            # one after the other, the collector fell behind two processors.
            stored = off_hub_start(self._store, entry, frames)
            if self.jobs.entry(job_id).record.state == "done":
                self.partials.pop(job_id)  # another replica finished it
                stored()
                continue
            self._build(entry, frames)
            if stored():
                self._assemble(job_id)  # eagerly

    def _drop_partials_of_finished_jobs(self) -> None:
        """Jobs that failed or timed out elsewhere leave their partial results here otherwise."""
        now_ms = int(time.time() * 1000)
        for job_id in list(self.partials.jobs):
            entry = self.jobs.entry(job_id)
            if entry is None or entry.state_at(now_ms) in ("done", "failed"):
                self.partials.pop(job_id)

    def _build(self, entry: Entry, frames: list[tuple[int, object]]) -> None:
        """Add a tiled PNG job's tiles to its partial result (viewer.stills.partial)."""
        job, first = entry.record, frames[0][1]
        if job.format != "png" or first.tile is None:
            return
        try:
            grid = TileInfo.from_header(first.tile)
            partial = self.partials.start(job.job, first.height, first.width, grid.rows, grid.cols)
            if partial is not None:
                partial.add_all([(TileInfo.from_header(frame.tile), frame.data) for _, frame in frames],
                                self.settings.max_frame_pixels)
        except (CodecError, ValueError) as exc:
            # Assembled from the cache instead, which reports what is wrong with the job.
            log.debug("job=%s: no partial result: %s", job.job, exc)
            self.partials.pop(job.job)

    def _tile(self, record) -> tuple[Entry, int, object] | None:
        """(job entry, tile index, frame) of a job's processed tile; a job's failure is recorded
        on the way; None for anything else."""
        if record.topic in slot_names(self.settings.dead_letter_topic):
            # Only the headers: a dead letter may come without the original's bytes.
            headers = dict(record.headers or [])
            job = headers.get("job")
            if job is None:
                return None
            job_id = job.decode(errors="replace")
            if self.jobs.output_entry(job_id) is None:
                return None
            reason = headers.get("error", b"unknown error").decode(errors="replace")
            log.warning("job=%s failed in the processor: %s", job_id, reason)
            self._fail(job_id, f"processor: {reason}")
            return None
        try:
            frame = decode_record(record)
        except WireError:
            return None
        if frame.job is None:
            return None
        entry = self.jobs.output_entry(frame.job)
        if entry is None or not entry.admitted or entry.record.state in ("requested", "failed"):
            return None  # not a job of ours, or one that is over
        try:
            index = tile_index(frame)
        except ValueError as exc:
            self._fail(frame.job, str(exc))
            return None
        return entry, index, frame

    def _store(self, entry: Entry, frames: list[tuple[int, object]]) -> bool:
        """Cache some of the job's tiles, (index, frame) each; True once every tile is cached."""
        job = entry.record
        self.store.ensure(job.job, job.format, job.transform, job.width, job.height, job.tiles_total,
                          job.created_ms / 1000)
        last = frames[-1][1]
        status = self.store.add_tiles(job.job, [(index, frame.tile, frame.data) for index, frame in frames],
                                      last.width, last.height)
        return status is not None and status.tiles_done >= status.tiles_total

    def collect_again(self, entry: Entry, deadline: float) -> bool:
        """Read a finished job's tiles into the cache from where the job-state topic says they sit
        (this replica was not reading when they went by, or has evicted them); True once all
        are cached. Reads at most up to what was written a minute after the job finished."""
        job = entry.record
        stop_ms = (job.finished_ms or int(time.time() * 1000)) + COLLECT_AGAIN_SLACK_MS
        consumer = make_consumer(self.settings, "viewer-jobs-again", group_id=None, allow_auto_create_topics=False)
        try:
            tps = partitions_of(consumer, *output_slots(self.settings, consumer.topics(), failures=False))
            ends = consumer.end_offsets(tps) if tps else {}
            positions = output_positions(entry, ends)
            reading = {tp for tp, offset in positions.items() if offset < ends[tp]}
            if not reading:
                return False
            assign_at(consumer, positions)
            while reading and time.monotonic() < deadline:
                for tp, records in consumer.poll(timeout_ms=200).items():
                    for record in records:
                        if record.timestamp > stop_ms:
                            reading.discard(tp)
                            break
                        try:
                            frame = decode_record(record)
                            if frame.job == job.job and self._store(entry, [(tile_index(frame), frame)]):
                                return True
                        except (WireError, ValueError) as exc:
                            log.debug("job=%s: offset %d skipped: %s", job.job, record.offset, exc)
                    if tp not in reading or consumer.position(tp) >= ends[tp]:
                        reading.discard(tp)
                        consumer.pause(tp)
            return False
        finally:
            consumer.close()

    def _fail(self, job_id: str, error: str) -> None:
        self.partials.pop(job_id)
        self.store.fail(job_id, error)
        self.jobs.finish(job_id, state="failed", error=error)

    def assemble(self, job_id: str) -> None:
        """Build the result from the cached tiles now (if they are complete), unless another
        worker sharing the cache already is."""
        self._assemble(job_id)

    def _assemble(self, job_id: str) -> None:
        """Build the result (from its partial result if complete, else from the stored tiles),
        unless another viewer worker already is."""
        partial = self.partials.pop(job_id)
        if not self.store.claim_assembly(job_id):
            return
        status = self.store.get(job_id)
        started = time.monotonic()
        streamed = partial is not None and partial.complete
        try:
            result = partial.result() if streamed else self._from_cache(job_id, status)
        except (CodecError, ValueError, RuntimeError) as exc:
            log.warning("job=%s cannot be assembled: %s", job_id, exc)
            self._fail(job_id, f"assembly: {exc}")
            return
        # Served from memory by this process until the cache has it: the job's end is published
        # first, and the result stored (and the tiles dropped) after, off the job's path.
        self.results.put(job_id, result)
        self.jobs.finish(job_id, state="done", out_width=status.out_width, out_height=status.out_height)
        self.store.finish(job_id, result)
        self.store.drop_tiles(job_id)
        log.info("job=%s done: %d tiles, %dx%d, %d bytes, assembled in %.2f s%s", job_id, status.tiles_total,
                 status.out_width, status.out_height, len(result), time.monotonic() - started,
                 " (built while its tiles came)" if streamed else "")

    def _from_cache(self, job_id: str, status: JobStatus) -> bytes:
        """The result from the tiles stored in the cache."""
        tiles = self.store.tiles(job_id)
        if len(tiles) == 1 and tiles[0][0] is None and not is_pixels(tiles[0][1]):
            return tiles[0][1]  # a whole upload sent as is: the processor answered in its format
        if len(tiles) == 1 and tiles[0][0] is None:
            return off_hub(_transcode, tiles[0][1], status.format)
        image = self._reassemble(tiles, status.out_height, status.out_width, self.settings.max_frame_pixels)
        return encode_result(image, status.format)

    @staticmethod
    def _reassemble(tiles: list[tuple[str | None, bytes]], height: int, width: int, max_pixels: int) -> np.ndarray:
        """Every processed tile is in output coordinates, so reassembly is identity geometry.
        Decoding and placing go to a native thread one tile at a time (see viewer.stills.offload)."""
        infos = [TileInfo.from_header(header) for header, _ in tiles]
        assembler = Assembler(height, width, infos[0].rows, infos[0].cols)
        for info, (_, data) in zip(infos, tiles, strict=True):
            off_hub(lambda info=info, data=data: assembler.add(info, decode_image(data, max_pixels)))
        return assembler.image()


def is_job_record(record) -> bool:
    """A still job's processed tile or dead letter (both carry the job header), not live video."""
    return header_of(record, "job") is not None


def tile_index(frame) -> int:
    """Which of its job's records a processed frame is (0: a whole image); ValueError if its tile header is bad."""
    return 0 if frame.tile is None else TileInfo.from_header(frame.tile).index


def output_positions(entry: Entry, ends: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
    """Where the job's output starts in each of the partitions ``ends`` holds (their end
    offsets), from its ``tiles_from``. An offset past the end means the slot was deleted and
    made again since (the embedded broker's rotation): all of it is read."""
    by_name = {f"{tp.topic}:{tp.partition}": tp for tp in ends}
    found = {}
    for name, offset in entry.record.tiles_from.items():
        tp = by_name.get(name)
        if tp is not None:
            found[tp] = offset if offset <= ends[tp] else 0
    return found


def encode_result(image: np.ndarray, fmt: str) -> bytes:
    """The assembled image in the upload's format, off the hub; a PNG's bands are compressed on
    parallel native threads (the processors are done by now: the cores are the viewer's). The
    assembled image is 8-bit BGR (what decode_image gives), which the codec's PNG encoder takes,
    so a PNG's only heavy work is those bands."""
    if fmt == "png":
        return encode_image(image, fmt, png_bands=off_hub_map)
    return off_hub(encode_image, image, fmt, RESULT_JPEG_QUALITY)


def _transcode(data: bytes, fmt: str) -> bytes:
    """An internal (zstd or lz4 pixels) result in the upload's format."""
    return encode_image(decode_image(data), fmt, RESULT_JPEG_QUALITY)
