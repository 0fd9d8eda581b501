"""Commit only what is acknowledged: how a batch's sends settle when the broker refuses some."""

from __future__ import annotations

import logging

from kafka import OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError, RebalanceInProgressError
from kafka.future import Future
from kafka.producer.future import FutureProduceResult, FutureRecordMetadata

from pipeline.settings import Settings
from processor import run
from processor.dead_letters import MAX_REASON_CHARS
from processor.heartbeat import ProcessorStats
from processor.run import OffsetKeeper, _Batch, _complete, _dead_letter, _redo, _Send, _settle


class Record:
    def __init__(self, offset: int) -> None:
        self.topic, self.partition, self.offset = "raw", 0, offset
        self.key, self.value, self.headers = b"cam", b"jpeg bytes", [("seq", str(offset).encode())]


class Broker:
    """Stands in for KafkaProducer: answers every send with ``verdicts`` in turn (None = ack)."""

    def __init__(self, *verdicts, delivery_timeout_ms: int = 120_000) -> None:
        self.config = {"delivery_timeout_ms": delivery_timeout_ms}
        self.verdicts = list(verdicts)
        self.sent: list[tuple[str, list]] = []
        self.values: list[bytes | None] = []

    def send(self, topic, key=None, value=None, headers=None, partition=None) -> Future:
        self.sent.append((topic, headers))
        self.values.append(value)
        return settled(self.verdicts.pop(0) if self.verdicts else None)

    def flush(self) -> None:
        pass


def settled(error: Exception | None) -> Future:
    future = Future()
    return future.failure(error) if error else future.success("ack")


def test_all_acknowledged_settles():
    sends = [_Send(Record(i), settled(None), True) for i in range(3)]
    assert _settle(sends, Broker(), Settings(), ProcessorStats())


def test_output_refused_for_good_becomes_a_dead_letter():
    broker, stats = Broker(), ProcessorStats(frames=2)
    sends = [_Send(Record(0), settled(None), True), _Send(Record(1), settled(MessageSizeTooLargeError("big")), True)]
    assert _settle(sends, broker, Settings(dead_letter_topic="dlq"), stats)
    (topic, headers), = broker.sent
    assert topic == "dlq" and b"refused the processed frame" in dict(headers)["error"]
    assert (stats.frames, stats.dead_letters) == (1, 1)


def test_retriable_failure_or_lost_dead_letter_means_redo():
    assert not _settle([_Send(Record(0), settled(KafkaTimeoutError("away")), True)], Broker(), Settings(),
                       ProcessorStats())
    assert not _settle([_Send(Record(0), settled(KafkaTimeoutError("away")), False)], Broker(), Settings(),
                       ProcessorStats())
    # The dead letter for a refused output is itself not delivered: redo as well.
    refused = [_Send(Record(0), settled(MessageSizeTooLargeError("big")), True)]
    assert not _settle(refused, Broker(KafkaTimeoutError("away")), Settings(), ProcessorStats())


def test_a_send_never_answered_is_not_delivered(monkeypatch):
    monkeypatch.setattr(run, "ACK_WAIT_MARGIN_S", 0.05)
    pending = FutureRecordMetadata(FutureProduceResult(TopicPartition("processed", 0)), 0, 0, None, 3, 10, 0)
    assert not _settle([_Send(Record(0), pending, True)], Broker(delivery_timeout_ms=0), Settings(), ProcessorStats())


def test_a_dead_letter_that_cannot_fit_describes_the_original_instead_of_copying_it():
    big = Record(7)
    big.value = b"x" * 5000
    big.headers = [("stream", b"cam"), ("transform", b"t" * 100_000)]
    broker = Broker()
    _dead_letter(broker, Settings(max_message_bytes=4096), big, ValueError("cannot decode " + "y" * 10_000))
    (_, headers), = broker.sent
    fields = dict(headers)
    assert broker.values == [None]
    assert fields["source"] == b"raw/0/7" and fields["size"] == b"5000" and b"5000 bytes" in fields["omitted"]
    assert fields["stream"] == b"cam" and "transform" not in fields  # a header too long to be a frame's is left out
    assert len(fields["error"]) <= MAX_REASON_CHARS
    small = Record(8)
    _dead_letter(broker, Settings(), small, ValueError("bad"))
    assert broker.values[-1] == b"jpeg bytes" and "omitted" not in dict(broker.sent[-1][1])


class Consumer:
    """Stands in for KafkaConsumer: an assignment, and the seeks and commits made on it."""

    def __init__(self, *owned) -> None:
        self.owned = set(owned)
        self.seeks: list[tuple] = []
        self.commits: list[dict] = []

    def assignment(self):
        return self.owned

    def seek(self, tp, offset) -> None:
        self.seeks.append((tp, offset))

    def commit(self, offsets, timeout_ms=None) -> None:
        self.commits.append(offsets)


def batch_of(*offsets_by_partition: tuple[int, list[int]], verdict: Exception | None = None) -> _Batch:
    records = {TopicPartition("raw", p): [Record(o) for o in offsets] for p, offsets in offsets_by_partition}
    sends = [_Send(r, settled(verdict), True) for rs in records.values() for r in rs]
    return _Batch(records, sends)


def test_a_completed_batch_commits_past_its_last_record_on_partitions_still_owned():
    p0 = TopicPartition("raw", 0)
    consumer = Consumer(p0)  # partition 1 moved to another member while the batch was in flight
    offsets = OffsetKeeper(consumer, ProcessorStats())
    assert _complete(batch_of((0, [5, 6, 7]), (1, [3])), consumer, offsets, Broker(), Settings(), ProcessorStats())
    assert [{tp: o.offset for tp, o in c.items()} for c in consumer.commits] == [{p0: 8}]


def test_an_undelivered_batch_is_not_committed_and_both_batches_are_redone_from_the_oldest():
    p0, p1 = TopicPartition("raw", 0), TopicPartition("raw", 1)
    consumer = Consumer(p0, p1)
    offsets = OffsetKeeper(consumer, ProcessorStats())
    older = batch_of((0, [5, 6]), verdict=KafkaTimeoutError("away"))
    newer = batch_of((0, [7, 8]), (1, [3, 4]))
    assert not _complete(older, consumer, offsets, Broker(), Settings(), ProcessorStats())
    assert consumer.commits == []
    _redo(consumer, newer, older)
    final = dict(consumer.seeks)  # the last seek per partition wins
    assert final == {p0: 5, p1: 3}


class FlakyConsumer(Consumer):
    """A consumer whose first ``failures`` commits time out (the broker away)."""

    def __init__(self, failures: int) -> None:
        super().__init__(TopicPartition("raw", 0))
        self.failures, self.attempts = failures, 0

    def commit(self, offsets, timeout_ms=None) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise KafkaTimeoutError("coordinator away")
        super().commit(offsets, timeout_ms)


def test_failing_commits_back_off_and_are_logged_once_per_state_change(caplog):
    now = [0.0]
    consumer = FlakyConsumer(failures=2)
    offsets = OffsetKeeper(consumer, ProcessorStats(), clock=lambda: now[0])
    offsets.pending[TopicPartition("raw", 0)] = OffsetAndMetadata(5, "", -1)
    caplog.set_level(logging.INFO, logger="processor.run")
    results = []
    for t in [x / 10 for x in range(40)]:  # the processing loop retries every 100 ms for 4 s
        now[0] = t
        results.append(offsets.commit())
    assert consumer.attempts == 3  # at 0 s, after 0.5 s, after 1 s more: not 40 times
    assert results.index(True) == 15 and offsets.pending == {}
    lines = [r.getMessage() for r in caplog.records]
    assert len([line for line in lines if "commits failing" in line]) == 1
    assert len([line for line in lines if "commits work again" in line]) == 1


class RebalancingConsumer(Consumer):
    """A consumer whose commits are refused while a rebalance is in progress (``rebalancing``)."""

    def __init__(self) -> None:
        super().__init__(TopicPartition("raw", 0))
        self.rebalancing, self.attempts = False, 0

    def commit(self, offsets, timeout_ms=None) -> None:
        self.attempts += 1
        if self.rebalancing:
            raise RebalanceInProgressError("rebalancing")
        super().commit(offsets, timeout_ms)


def test_commits_deferred_by_a_rebalance_are_logged_once_per_rebalance(caplog):
    """The loop retries a deferred commit at every poll, ~10 a second while a rebalance lasts: a
    line per attempt (~330 bytes each) filled a processor's log with ~10 KB per rebalance."""
    consumer = RebalancingConsumer()
    offsets = OffsetKeeper(consumer, ProcessorStats(), clock=lambda: 0.0)
    caplog.set_level(logging.INFO, logger="processor.run")
    for _ in range(2):  # two rebalances, each deferring commits for a while
        consumer.rebalancing = True
        offsets.pending[TopicPartition("raw", 0)] = OffsetAndMetadata(5, "", -1)
        assert not any(offsets.commit() for _ in range(30))
        consumer.rebalancing = False
        assert offsets.commit() and offsets.pending == {}
    assert consumer.attempts == 62  # retried at every call: the rebalance may end any moment
    deferred = [r.getMessage() for r in caplog.records if "deferred" in r.getMessage()]
    assert len(deferred) == 2, deferred


def test_the_last_commit_at_a_stop_is_tried_even_while_backing_off():
    consumer = FlakyConsumer(failures=1)
    offsets = OffsetKeeper(consumer, ProcessorStats(), clock=lambda: 0.0)
    offsets.pending[TopicPartition("raw", 0)] = OffsetAndMetadata(5, "", -1)
    assert not offsets.commit()
    assert not offsets.commit()  # backing off: not tried
    assert offsets.commit(timeout_s=1.0, last=True)
    assert consumer.attempts == 2


def test_commits_are_made_at_most_every_interval_and_the_last_one_regardless():
    now = [0.0]
    consumer = Consumer(TopicPartition("raw", 0))
    offsets = OffsetKeeper(consumer, ProcessorStats(), clock=lambda: now[0], every_s=0.5)
    for t, offset in [(0.0, 3), (0.1, 5), (0.4, 7), (0.5, 9), (0.6, 11)]:  # a batch acknowledged at each t
        now[0] = t
        offsets.pending[TopicPartition("raw", 0)] = OffsetAndMetadata(offset, "", -1)
        offsets.commit()
    assert [c[TopicPartition("raw", 0)].offset for c in consumer.commits] == [3, 9]
    assert offsets.pending  # 11 waits for the interval...
    assert offsets.commit(last=True)  # ...unless the processor is stopping
    assert [c[TopicPartition("raw", 0)].offset for c in consumer.commits] == [3, 9, 11]
