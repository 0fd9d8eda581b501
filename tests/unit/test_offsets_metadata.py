"""OffsetTool on a partition whose leader the client does not know yet (a topic just recreated):
a retriable Kafka error and a metadata refresh, not a KeyError that ended the embedded
retention's thread (and with it every rotation: the broker's memory grew without bound)."""

from __future__ import annotations

import pytest
from kafka import TopicPartition
from kafka.errors import KafkaError

from pipeline.offsets import MetadataNotReady, OffsetTool


class Unsure:
    """kafka-python 3.0.12's consumer right after a topic was deleted and created again."""

    def __init__(self) -> None:
        self.refreshed = 0

    def beginning_offsets(self, tps):
        return dict.fromkeys(tps, 0)

    def end_offsets(self, tps):
        raise KeyError(tps[0])

    def refresh_metadata(self) -> None:
        self.refreshed += 1


def test_an_unknown_leader_is_a_retriable_kafka_error_and_asks_for_metadata():
    tool = object.__new__(OffsetTool)  # no broker: only its consumer is used
    tool.consumer = Unsure()
    with pytest.raises(MetadataNotReady) as raised:
        tool.ends([TopicPartition("frames.jobs.b", 0)])
    assert isinstance(raised.value, KafkaError) and raised.value.retriable
    assert tool.consumer.refreshed == 1
