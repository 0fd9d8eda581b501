"""The processor loop: a consumer-group member that consumes raw frames, applies the transform
chain and produces processed frames.

Delivery: at-least-once. Offsets are committed manually, only after every output record of
the polled batch (and every dead letter) is acknowledged by the broker, and never inside a
tiled frame (``processor/frame_commits.py``); the acks are checked
(and the batch committed) once the next batch is processed and sent, or at once when no next
batch is waiting. A commit that fails
because the group is rebalancing is kept and retried in the rebalance listener's revoke
callback, which runs before the partitions move; a crash before the commit makes the next
owner redo those frames, never skip them. So a reader may see a frame twice, never miss one.

Order: each partition's records are processed and sent in offset order, and each output goes
to the same partition number of the processed topic, so the processed topic mirrors the raw
topic's partitioning: a stream keyed to one partition stays in order end to end; a stream
spread over partitions (for more parallelism) is put back in seq order by the reader with
``pipeline.reorder.Reorderer``. See docs/design.md, "Design notes".

Chains: a stream's live chain comes from the control topic (``pipeline.control``), read in
full before joining and caught up again for each batch (beside its processing: the frames a
change reaches are redone before anything is sent), so a change applies from the first batch
polled after it, with no restart and no rebalance; streams without an entry get ``--transform``.

Shutdown: when ``stop`` is set the current batch finishes (in-flight frames are not dropped),
its outputs are flushed and its offsets committed, then the consumer closes, which leaves
the group so the partitions move to the other members at once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace

from kafka import AsyncConsumerRebalanceListener, KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import (
    CommitFailedError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RebalanceInProgressError,
)
from kafka.producer.future import FutureRecordMetadata

from pipeline.control import ChainControl
from pipeline.generations import mirrored, slot_names, slots
from pipeline.kafka import TAKEOVER_TIMEOUTS, close_producer, live_fetch, make_consumer, make_producer
from pipeline.service import STOP_BUDGET_S, StopDeadline, StopEvent
from pipeline.settings import Settings
from pipeline.wire import Frame, decode_record, to_record
from processor.backlog import InputBacklog
from processor.dead_letters import dead_letter, short_reason
from processor.frame_commits import FrameCommits
from processor.frames import POISON, CatchUp, FrameProcessor
from processor.heartbeat import HeartbeatPublisher, Identity, ProcessorStats
from processor.pool import OrderedPool, limit_opencv_threads

log = logging.getLogger(__name__)

DEFAULT_GROUP = "processors"

# Records per poll, per worker thread: big enough to keep every worker busy and to amortise the
# batch's round trips (4 gave 0.55x the in-process loop at --fps max, 16 gave 0.74x:
# bench/e2e_latency.py; each poll and chain sync still waits on kafka-python's I/O thread, 15-25%
# of the loop at 16 under load, py-spy), small enough that a batch (the unit of graceful
# shutdown) finishes in well under a second (32 x 1280x720 grayscale: ~0.15 s).
RECORDS_PER_WORKER = 32

# A commit waits at most this long in the processing loop; after a failure the next attempt
# waits COMMIT_BACKOFF_S, doubling up to COMMIT_BACKOFF_MAX_S (kafka-python alone retried every
# 100 ms for 30 s, one error line each, after a broker restart).
COMMIT_TIMEOUT_S = 2.0
# The live loop commits at most this often: a commit is a blocking round trip, and one per batch
# cost the loop 17% of its time at full speed (py-spy, 640x360 grayscale). Offsets wait at most
# this long (and are committed at once on a stop or a revoke), so a crash redoes up to this much more.
COMMIT_EVERY_S = 0.5
COMMIT_BACKOFF_S = 0.5
COMMIT_BACKOFF_MAX_S = 8.0
# Waits for acknowledgements are cut in slices this long, so a stop is noticed in time.
SETTLE_SLICE_S = 0.25
# Seconds past the producer's own delivery timeout before an unanswered send counts as failed.
ACK_WAIT_MARGIN_S = 10.0


class OffsetKeeper(AsyncConsumerRebalanceListener):
    """Offsets whose outputs are acknowledged but not yet committed; committed on revoke.

    Async on purpose: kafka-python 3 runs listeners on its IO thread, where the blocking
    ``commit()`` raises RuntimeError; awaiting ``commit_async()`` there commits before the
    JoinGroup goes out, while this member still owns the partitions.

    A commit that fails (broker away, coordinator moving after a broker restart) stays pending
    and is retried with a growing pause; the log says once that commits fail and once that they
    work again, not once per attempt. A commit deferred by a rebalance is retried at every call
    (the rebalance may end any moment) and said once per rebalance.
    """

    def __init__(self, consumer: KafkaConsumer, stats: ProcessorStats, clock: Callable[[], float] = time.monotonic,
                 every_s: float = 0.0) -> None:
        self.consumer, self.stats, self.clock, self.every_s = consumer, stats, clock, every_s
        self.pending: dict[TopicPartition, OffsetAndMetadata] = {}
        self.failures = 0
        self._retry_at = 0.0  # no commit before this (unless it is the last): the interval, or a backoff
        self._deferred = False  # a rebalance refused a commit, and no commit has worked since
        # Where each partition's commit may go: never inside a tiled frame (poll thread only).
        self.frames = FrameCommits()

    def commit(self, timeout_s: float = COMMIT_TIMEOUT_S, last: bool = False) -> bool:
        """Commit what is pending (from the poll thread); False if it is still pending: deferred
        to a rebalance, failed, or not tried because ``every_s`` has not passed since the last
        commit or the pause after a failure is not over (``last``: the stop's attempt, made regardless)."""
        if not self.pending:
            return True
        if not last and self.clock() < self._retry_at:
            return False
        try:
            self.consumer.commit(dict(self.pending), timeout_ms=int(max(timeout_s, 0.001) * 1000))
        except (CommitFailedError, RebalanceInProgressError) as exc:
            if not self._deferred:
                self._deferred = True
                log.info("commit deferred to the rebalance (%s): %s", type(exc).__name__, exc)
            return False
        except KafkaError as exc:
            self.failures += 1
            pause = min(COMMIT_BACKOFF_MAX_S, COMMIT_BACKOFF_S * 2 ** (self.failures - 1))
            self._retry_at = self.clock() + pause
            if self.failures == 1:
                log.warning("commits failing (%s); retrying with backoff up to %g s, frames stay uncommitted meanwhile",
                            exc, COMMIT_BACKOFF_MAX_S)
            return False
        if self.failures:
            log.info("commits work again after %d failed attempt(s)", self.failures)
            self.failures = 0
        self._retry_at = self.clock() + self.every_s
        self._deferred = False
        self.pending.clear()
        self.stats.add(commits=1)
        return True

    async def on_partitions_revoked(self, revoked) -> None:
        if self.pending:
            offsets = {tp: off for tp, off in self.pending.items() if tp in revoked}
            try:
                await self.consumer.commit_async(offsets)
                self.stats.add(commits=1)
                log.info("committed %d partition(s) before revocation", len(offsets))
            except KafkaError as exc:
                log.warning("could not commit before losing %s; the next owner redoes those frames: %s",
                            sorted(tp.partition for tp in revoked), exc)
        for tp in revoked:
            self.pending.pop(tp, None)

    async def on_partitions_assigned(self, assigned) -> None:
        self._deferred = False  # the rebalance is over: the next one's deferral is news again
        partitions = sorted(tp.partition for tp in self.consumer.assignment())
        self.stats.assign(partitions)
        log.info("assigned partitions %s", partitions)

    async def on_partitions_lost(self, lost) -> None:
        # Kicked out of the group (e.g. session expired): another member owns them already.
        log.warning("lost partitions %s; uncommitted frames will be redone", sorted(tp.partition for tp in lost))
        self.pending.clear()
        self.stats.assign([])


def run(
    settings: Settings,
    transform: str = "grayscale",
    group: str = DEFAULT_GROUP,
    stop: threading.Event | None = None,
    concurrency: int = 1,
    tile: int | None = None,
    processor_id: str | None = None,
) -> ProcessorStats:
    """Process frames as a member of ``group`` until ``stop`` is set; returns the counters."""
    stop = stop or threading.Event()
    limit_opencv_threads()
    pool = OrderedPool(concurrency)
    # A bad spec fails before joining the group.
    frames = FrameProcessor(transform, tile, pool, max_pixels=settings.max_frame_pixels)
    # Every stream's live chain, read before joining, so the first frame already gets it.
    control = ChainControl(settings, "processor-control")
    frames.live_spec = _live_spec(control)
    stats = ProcessorStats()
    frames.report_chain = stats.applied
    # host-pid says where it runs; the suffix keeps ids unique for members sharing a process.
    default_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"
    who = Identity(processor_id or default_id, group, frames.default_spec,
                   settings.raw_topic, concurrency, tile)
    producer = make_producer(settings, "processor")
    consumer = make_consumer(settings, "processor", group_id=group, **TAKEOVER_TIMEOUTS)
    fetch = live_fetch(consumer, settings)  # a longer fetch wait while no frame comes
    offsets = OffsetKeeper(consumer, stats, every_s=COMMIT_EVERY_S)
    # Both generations of the raw topic on the embedded broker (pipeline/generations.py).
    consumer.subscribe(slots(settings.raw_topic, consumer.topics()), listener=offsets)
    heartbeat = HeartbeatPublisher(producer, settings.heartbeat_topic, who, stats).start()
    out_partitions = len(producer.partitions_for(settings.processed_topic) or ()) or 1
    # Still-image jobs on their own thread, only while this loop waits for frames (processor/jobs.py).
    from processor.jobs import JobWorker, LiveGate  # processor.jobs uses this module's batch plumbing

    gate, jobs_stop = LiveGate(), StopEvent()
    jobs = JobWorker(settings, group, frames.default_spec, tile, concurrency, producer, out_partitions, gate,
                     jobs_stop, stats).start()
    log.info("processor %s joining group %s: transform=%s concurrency=%d tile=%s",
             who.id, group, who.transform, concurrency, tile)
    # Pipelined by one batch: batch N's outputs are acknowledged while batch N+1 is processed,
    # and N is committed only then. Waiting for the acks right after sending left the processor
    # idle ~22% of the time (py-spy, grayscale at full speed).
    in_flight: _Batch | None = None
    backlog = InputBacklog()
    patience = StopDeadline(stop)
    try:
        while not stop.is_set():
            if in_flight is None:
                gate.live_idle()
            batch = consumer.poll(timeout_ms=0 if in_flight else 200, max_records=RECORDS_PER_WORKER * concurrency)
            fetch.polled(bool(batch))
            if batch:
                gate.live_busy()
            # Every chain change acknowledged before these frames were produced applies to them: the
            # catch-up (a broker round trip, 20 ms on average under load, py-spy) runs beside their
            # processing, and the frames a change reaches are redone before anything is sent.
            current = _Batch(batch, _process_batch(batch, frames, producer, settings, stats, out_partitions,
                                                   _behind(batch, consumer, backlog),
                                                   catch_up=control.start_sync)) if batch else None
            if in_flight is None and current is None:
                offsets.commit()  # retry a commit deferred by a rebalance or a failure
                continue
            if in_flight is not None and not _complete(in_flight, consumer, offsets, producer, settings, stats, patience):
                # Not acknowledged, so not committed: rewind and redo it (and the batch after it).
                _redo(consumer, *(b for b in (current, in_flight) if b is not None))
                in_flight = None
                stop.wait(1.0)
                continue
            in_flight = current
    except KafkaError as exc:
        log.error("processor stopped on Kafka error: %s", exc)
        raise
    finally:
        jobs_stop.set()
        gate.live_idle()  # let the jobs loop see the stop at once
        jobs.close(patience.left() if stop.is_set() else STOP_BUDGET_S)
        _stop(who, stats, heartbeat, in_flight, consumer, offsets, producer, settings, patience)
        pool.close()
        control.close()
    return stats


def _stop(who: Identity, stats: ProcessorStats, heartbeat: HeartbeatPublisher, in_flight: _Batch | None,
          consumer: KafkaConsumer, offsets: OffsetKeeper, producer: KafkaProducer, settings: Settings,
          patience: StopDeadline) -> None:
    """Finish the in-flight batch, commit, leave the group: all within the stop budget, and say
    in the one closing line what could not be delivered or committed (the broker was away)."""
    heartbeat.stop()
    unacked = 0
    if in_flight is not None and not _complete(in_flight, consumer, offsets, producer, settings, stats, patience):
        unacked = sum(not s.future.succeeded() for s in in_flight.sends)
        for tp in in_flight.records:  # its frames are redone by the partition's next owner
            offsets.pending.pop(tp, None)
        uncommitted = set(in_flight.records)
    else:
        uncommitted = set()
    if not offsets.commit(patience.left(), last=True):
        uncommitted |= set(offsets.pending)
        offsets.pending.clear()  # said below, once: the revoke on close need not try (and say) it again
    consumer.close(timeout_ms=int(patience.left() * 1000))  # leaves the group: partitions move at once
    if not close_producer(producer, patience.left()):
        unacked = max(unacked, 1)
    summary = f"processor {who.id} stopped: {stats.frames} frames, {stats.dead_letters} dead letters, {stats.commits} commits"
    if uncommitted:
        log.warning("%s; at exit the broker was unreachable: %d output(s) not delivered, partition(s) %s not committed "
                    "(their next owner redoes those frames)", summary, unacked, sorted(tp.partition for tp in uncommitted))
    elif unacked:
        log.warning("%s; at exit the broker was unreachable: heartbeats not delivered, every frame committed", summary)
    else:
        log.info(summary)


def _live_spec(control: ChainControl) -> Callable[[str], str | None]:
    def live_spec(stream: str) -> str | None:
        entry = control.get(stream)
        return entry.spec if entry is not None else None
    return live_spec


# Where the output (or dead letter) of a record from an input topic goes: (input topic, target base) -> topic.
Route = Callable[[str, str], str]


@dataclass
class _Send:
    record: ConsumerRecord
    future: FutureRecordMetadata
    is_output: bool


@dataclass
class _Batch:
    """A polled batch whose outputs (and dead letters) are sent, acks pending."""
    records: dict[TopicPartition, list[ConsumerRecord]]
    sends: list[_Send]


def _complete(batch: _Batch, consumer: KafkaConsumer, offsets: OffsetKeeper, producer: KafkaProducer,
              settings: Settings, stats: ProcessorStats, patience: StopDeadline | None = None,
              route: Route | None = None) -> bool:
    """Wait for the batch's acks and commit it; False if something was not delivered (or the
    stop's budget, ``patience``, ran out first)."""
    if not _settle(batch.sends, producer, settings, stats, patience, route):
        return False
    owned = consumer.assignment()
    for tp, records in batch.records.items():
        # A rebalance while the batch was in flight moved tp: its new owner redoes those frames.
        if tp in owned:
            offsets.pending[tp] = OffsetAndMetadata(offsets.frames.commit_offset(tp, records), "", -1)
        else:
            offsets.frames.forget(tp)
    offsets.commit()
    return True


def _redo(consumer: KafkaConsumer, *newest_first: _Batch) -> None:
    """Rewind every partition to the first record of these batches (oldest batch last)."""
    owned = consumer.assignment()
    for batch in newest_first:
        for tp, records in batch.records.items():
            if tp in owned:
                consumer.seek(tp, records[0].offset)


def _behind(batch: dict, consumer: KafkaConsumer, backlog: InputBacklog) -> list[int | None]:
    """Per record of the batch (in its order): input queued behind it, in ms (processor/backlog.py)."""
    return [behind for tp, records in batch.items() for behind in backlog.behind_ms(tp, records, consumer.highwater(tp))]


def _process_batch(batch: dict, frames: FrameProcessor, producer: KafkaProducer, settings: Settings,
                   stats: ProcessorStats, out_partitions: int, behind: list[int | None],
                   route: Route | None = None, catch_up: CatchUp | None = None) -> list[_Send]:
    """Process and send one polled batch; returns the sends, to settle once acknowledged.
    ``catch_up``: the live chains' catch-up, run beside the work (FrameProcessor.process_batch)."""
    route = route or _mirrored(settings)
    records = [record for tp_records in batch.values() for record in tp_records]
    decoded: list[Frame | Exception] = []
    for record in records:
        try:
            size = len(record.value or b"")
            if size > settings.max_message_bytes:
                # Written by a client with a larger limit: refused before it is copied or parsed.
                raise ValueError(f"record of {size} bytes is over MAX_MESSAGE_BYTES {settings.max_message_bytes}")
            decoded.append(decode_record(record))
        except POISON as exc:
            decoded.append(exc)
    good = [i for i, item in enumerate(decoded) if isinstance(item, Frame)]
    for i, out in zip(good, frames.process_batch([decoded[i] for i in good], catch_up), strict=True):
        decoded[i] = out
    sends = []
    for record, out, behind_ms in zip(records, decoded, behind, strict=True):
        if isinstance(out, Frame):
            key, value, headers = to_record(replace(out, behind_ms=behind_ms))
            try:
                # Same partition number (and generation) as the input: the processed topic mirrors
                # the raw one's order.
                topic = route(record.topic, settings.processed_topic)
                future = producer.send(topic, key=key, value=value, headers=headers,
                                       partition=record.partition % out_partitions)
                sends.append(_Send(record, future, True))
                continue
            except MessageSizeTooLargeError as exc:
                out = ValueError(f"processed frame of {len(value)} bytes is too large (MAX_MESSAGE_BYTES "
                                 f"{settings.max_message_bytes}): {exc}")
        sends.append(_Send(record, _dead_letter(producer, settings, record, out, route), False))
    stats.add(frames=sum(s.is_output for s in sends), dead_letters=sum(not s.is_output for s in sends))
    return sends


def _settle(sends: list[_Send], producer: KafkaProducer, settings: Settings, stats: ProcessorStats,
            patience: StopDeadline | None = None, route: Route | None = None) -> bool:
    """Wait for these sends (only: later batches may be in flight); True once every record's
    output or dead letter is acknowledged.

    An output the broker refused for good (not retriable, e.g. too large for the topic) makes
    its input a dead letter instead; a retriable failure (broker away) returns False, and so
    does a stop whose budget ran out while waiting.
    """
    patience = patience or StopDeadline(threading.Event())
    # The producer fails a record after delivery_timeout_ms at the latest; a margin over that.
    give_up = time.monotonic() + producer.config["delivery_timeout_ms"] / 1000 + ACK_WAIT_MARGIN_S
    for send in sends:
        while not send.future.is_done:
            wait_s = min(patience.left(), give_up - time.monotonic(), SETTLE_SLICE_S)
            if wait_s <= 0:
                return False
            try:
                send.future.get(timeout=wait_s)
            except KafkaError:
                pass  # looked at below
    retry = []
    for send in sends:
        if send.future.succeeded():
            continue
        # Still pending after the wait counts as not delivered, never as delivered.
        error = send.future.exception or KafkaTimeoutError(f"no acknowledgement within {wait_s:.0f} s")
        if send.is_output and not getattr(error, "retriable", False):
            refused = ValueError(f"the broker refused the processed frame: {error}")
            retry.append(_Send(send.record, _dead_letter(producer, settings, send.record, refused, route), False))
            stats.add(frames=-1, dead_letters=1)
        else:
            log.error("partition=%d offset=%d not delivered: %s", send.record.partition, send.record.offset, error)
            return False
    return _settle(retry, producer, settings, stats, patience, route) if retry else True


def _dead_letter(producer: KafkaProducer, settings: Settings, record, error: Exception,
                 route: Route | None = None) -> FutureRecordMetadata:
    reason = short_reason(error)
    log.warning("partition=%d offset=%d to dead-letter topic: %s", record.partition, record.offset, reason)
    key, value, headers = dead_letter(record, reason, settings.max_message_bytes)
    topic = (route or _mirrored(settings))(record.topic, settings.dead_letter_topic)
    return producer.send(topic, key=key, value=value, headers=headers)


def _mirrored(settings: Settings) -> Route:
    """Outputs and dead letters go to the slot of the same generation as their input."""
    def route(input_topic: str, target_base: str) -> str:
        source = settings.jobs_topic if input_topic in slot_names(settings.jobs_topic) else settings.raw_topic
        return mirrored(input_topic, source, target_base)
    return route
