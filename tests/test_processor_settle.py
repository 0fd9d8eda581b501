"""Commit only what is acknowledged: how a batch's sends settle when the broker refuses some."""

from __future__ import annotations

from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from kafka.future import Future

from pipeline.settings import Settings
from processor.heartbeat import ProcessorStats
from processor.run import _Send, _settle


class Record:
    def __init__(self, offset: int) -> None:
        self.topic, self.partition, self.offset = "raw", 0, offset
        self.key, self.value, self.headers = b"cam", b"jpeg bytes", [("seq", str(offset).encode())]


class Broker:
    """Stands in for KafkaProducer: answers every send with ``verdicts`` in turn (None = ack)."""

    def __init__(self, *verdicts) -> None:
        self.verdicts = list(verdicts)
        self.sent: list[tuple[str, list]] = []

    def send(self, topic, key=None, value=None, headers=None, partition=None) -> Future:
        self.sent.append((topic, headers))
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
