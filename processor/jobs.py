"""Still-image jobs without starving live video: the processor's second loop.

Job tiles (``viewer/stills/upload.py``) come on a topic of their own (``JOBS_TOPIC``), read by
a consumer of their own in a group of their own (``<group>.jobs``), on a thread of their own:
- **Live first.** The jobs loop polls only while the live loop waits for frames (``LiveGate``),
  and takes at most ``RECORDS_PER_POLL`` tiles per poll. When tiles shared the raw topic's
  partitions with frames, a processor worked through a job's tiles while live frames queued
  behind them (live fps fell to 0.65x during a heavy job).
- **Never behind a job.** A tile started while the live loop was idle may still be running
  when the next frame comes; it runs on a thread of lower CPU priority (``lower_priority``),
  so on a busy machine the kernel runs the live loop, and the viewer and producer, first. A
  single record can hold up to MAX_JOB_WORK_S of work (a small image under a long chain).
- **Not evicted.** A consumer that does not poll within ``max.poll.interval.ms`` leaves its
  group; the gate opens after ``MAX_WAIT_S`` even while live frames keep coming, so jobs
  progress (slowly) on a saturated processor too. A group of its own also means that a
  rebalance of the jobs consumers never pauses the live ones.
- **At-least-once** as for frames: a poll's outputs are sent, acknowledged, then committed
  (per topic-partition, by the same code as the live loop, and pipelined the same way: a poll's
  acknowledgements are awaited once the next poll's tiles are sent); a failure rewinds and
  redoes them.

Outputs go to the job results topic (``JOB_RESULTS_TOPIC``), which the live hub does not read,
for records whose ``out`` header asks for it (pipeline.wire); others (older viewers) still get
theirs on the processed topic. Job tiles still written to the raw topic (an older viewer,
records from before) are processed by the live loop as before.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from kafka import KafkaProducer, OffsetAndMetadata
from kafka.errors import KafkaError

from pipeline.generations import CurrentSlot, mirrored, slots
from pipeline.kafka import BurstFetch, make_consumer
from pipeline.priority import lower_priority
from pipeline.processor_groups import job_group
from pipeline.service import StopDeadline
from pipeline.settings import Settings
from pipeline.wire import OUT_RESULTS, header_of
from processor.frames import FrameProcessor
from processor.heartbeat import ProcessorStats
from processor.pool import OrderedPool

log = logging.getLogger(__name__)

# Tiles per poll (per worker thread): bounds the work between two polls, so the consumer keeps
# its group membership, and how long a stop waits for the poll in hand.
RECORDS_PER_POLL = 2
# The longest the jobs loop waits for the live loop to be idle before it polls anyway.
MAX_WAIT_S = 2.0
# After an error, the jobs loop starts again after this long.
RETRY_S = 1.0
# While idle, the jobs loop commits its positions this often: the embedded broker's rotation
# holds back for the tiles of groups that have offsets on the jobs topic, and a group without
# any (before its first job, or once both jobs slots were recycled since its last one, which
# takes their offsets along) would not be waited for.
MARK_EVERY_S = 5.0


class LiveGate:
    """Open while the live loop waits for frames with nothing in hand."""

    def __init__(self) -> None:
        self._idle = threading.Event()

    def live_idle(self) -> None:
        self._idle.set()

    def live_busy(self) -> None:
        self._idle.clear()

    def wait(self, timeout_s: float) -> bool:
        return self._idle.wait(timeout_s)


class JobWorker:
    """The jobs loop on its own thread: start(), then close() after ``stop`` is set."""

    def __init__(self, settings: Settings, group: str, default_spec: str, tile: int | None, concurrency: int,
                 producer: KafkaProducer, out_partitions: int, gate: LiveGate, stop: threading.Event,
                 stats: ProcessorStats) -> None:
        self.settings, self.group, self.producer = settings, job_group(group), producer
        self.out_partitions, self.gate, self.stop = out_partitions, gate, stop
        self.concurrency = concurrency
        # Every job tile carries its own chain; the default is for records that do not.
        # The heavy work runs on `_niced` (and on pool threads it starts, which inherit that).
        self._niced = ThreadPoolExecutor(1, "job-work", initializer=lower_priority)
        self.frames = FrameProcessor(default_spec, tile, OrderedPool(concurrency), max_pixels=settings.max_frame_pixels)
        # Frames and dead letters count with the live loop's (heartbeats, the stop summary); the
        # partitions held and commits are the jobs consumer's own.
        self.stats, self.own = stats, ProcessorStats()
        self._thread = threading.Thread(target=self._run, name="jobs", daemon=True)

    def start(self) -> JobWorker:
        self._thread.start()
        return self

    def close(self, timeout_s: float) -> None:
        """Wait (up to ``timeout_s``) for the loop to finish its poll, commit and leave."""
        self._thread.join(timeout_s)
        self._niced.shutdown(wait=False)
        self.frames.pool.close()

    def _route(self, input_topic: str, target_base: str) -> str:
        """Outputs go to the newest generation of `target_base`, not the input's: a tile taken
        from a jobs slot just before that slot is recycled would otherwise land in a processed
        slot recycled with it, before the viewer's collector reads it (the job never finished)."""
        return mirrored(self._slot.topic, self.settings.raw_topic, target_base)

    def _results_route(self, input_topic: str, target_base: str) -> str:
        """`_route`, with outputs to the job results topic instead of the processed one."""
        if target_base == self.settings.processed_topic:
            target_base = self.settings.job_results_topic
        return self._route(input_topic, target_base)

    def _run(self) -> None:
        """Sessions until the stop: an error ends a session, never the jobs loop (the live
        loop goes on either way)."""
        while not self.stop.is_set():
            try:
                self._session()
            except KafkaError as exc:
                log.warning("jobs loop: Kafka error, retrying in %.0f s: %s", RETRY_S, exc)
                self.stop.wait(RETRY_S)
            except Exception:
                log.exception("jobs loop failed, restarting in %.0f s", RETRY_S)
                self.stop.wait(RETRY_S)

    def _session(self) -> None:
        from processor.run import COMMIT_EVERY_S, OffsetKeeper  # processor.run starts this worker

        # A longer fetch wait spares the idle polling, and a short one while a job's tiles come
        # (BurstFetch: a long one stalled them); it sets the wait before the first fetch.
        consumer = make_consumer(self.settings, "processor-jobs", group_id=self.group)
        burst = BurstFetch(consumer)
        # Commits at most every COMMIT_EVERY_S, as the live loop's: a blocking commit after every
        # poll of two tiles left the processor idle for a third of a blur job's tiles.
        offsets = OffsetKeeper(consumer, self.own, every_s=COMMIT_EVERY_S)
        # The poll whose outputs are sent but not yet acknowledged: settled after the next poll's
        # tiles are processed and sent, as in the live loop (waiting for the acks before the next
        # poll left the processor idle while they came).
        in_flight = None
        try:
            # The raw topic's current generation (pipeline/generations.py; always the raw topic
            # itself on a broker with real retention).
            self._slot = CurrentSlot(self.settings, self.settings.raw_topic)
            self._results_partitions = len(self.producer.partitions_for(self.settings.job_results_topic) or ()) or 1
            try:
                consumer.subscribe(slots(self.settings.jobs_topic, consumer.topics()), listener=offsets)
                log.info("jobs: reading %s in group %s", self.settings.jobs_topic, self.group)
                marked = 0.0
                while not self.stop.is_set():
                    if in_flight is not None and not self.gate.wait(0):
                        self._settle(in_flight, consumer, offsets)  # live frames first
                        in_flight = None
                        continue
                    if in_flight is None:
                        self.gate.wait(MAX_WAIT_S)
                        if self.stop.is_set():
                            break
                    batch = consumer.poll(timeout_ms=0 if in_flight else 100,
                                          max_records=RECORDS_PER_POLL * self.concurrency)
                    burst.polled(bool(batch))
                    if not batch:
                        if in_flight is not None:
                            self._settle(in_flight, consumer, offsets)
                            in_flight = None
                        elif time.monotonic() - marked >= MARK_EVERY_S:
                            marked = time.monotonic()
                            _mark_positions(consumer, offsets)
                        offsets.commit()  # also retries a commit deferred by a rebalance or a failure
                        continue
                    current = self._send(batch)
                    if in_flight is not None and not self._settle(in_flight, consumer, offsets, current):
                        in_flight = None
                        continue
                    in_flight = current
            finally:
                self._slot.close()
        finally:
            try:
                if in_flight is not None:
                    self._settle(in_flight, consumer, offsets)
                offsets.commit(StopDeadline(self.stop).left(), last=True)
            finally:
                consumer.close(timeout_ms=int(min(StopDeadline(self.stop).left(), 5.0) * 1000))

    def _send(self, batch: dict):
        """Process one poll's tiles (on the low-priority thread) and send their outputs: to the
        job results topic for records that ask for it (``out`` header), else (records of older
        viewers, whose collectors read only that) to the processed topic."""
        from processor.run import _Batch, _process_batch

        sends = []
        for results in (True, False):
            part = {tp: kept for tp, records in batch.items()
                    if (kept := [r for r in records if wants_results(r) == results])}
            if part:
                route, partitions = ((self._results_route, self._results_partitions) if results
                                     else (self._route, self.out_partitions))
                behind = [None] * sum(len(records) for records in part.values())
                sends += self._niced.submit(_process_batch, part, self.frames, self.producer, self.settings,
                                            self.stats, partitions, behind, route).result()
        return _Batch(batch, sends)

    def _settle(self, done, consumer, offsets, after=None) -> bool:
        """Wait for a poll's outputs to be acknowledged and commit it. If they were not delivered,
        rewind to redo it (and ``after``, the poll sent after it), pause, and say False."""
        from processor.run import _complete, _redo

        if _complete(done, consumer, offsets, self.producer, self.settings, self.stats, StopDeadline(self.stop),
                     self._route):
            return True
        _redo(consumer, *(b for b in (after, done) if b is not None))
        self.stop.wait(1.0)
        return False


def wants_results(record) -> bool:
    """A job record whose output goes to the job results topic (``out`` header, pipeline.wire)."""
    return header_of(record, "out") == OUT_RESULTS.encode()


def _mark_positions(consumer, offsets) -> None:
    """Make every owned partition's position pending for commit (where nothing else is): called
    only with no poll in flight, when every tile before a position is done."""
    for tp in consumer.assignment():
        if tp not in offsets.pending:
            try:
                offsets.pending[tp] = OffsetAndMetadata(consumer.position(tp), "", -1)
            except KafkaError as exc:
                log.debug("jobs: no position for %s yet: %s", tp, exc)
