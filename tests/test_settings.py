"""Settings from the environment, and that the client factory applies them."""

from __future__ import annotations

import pytest

from pipeline.kafka import make_consumer
from pipeline.settings import Settings


def test_defaults_and_overrides():
    assert Settings.from_env({}).fetch_max_wait_ms == 10
    s = Settings.from_env({"KAFKA_FETCH_MAX_WAIT_MS": "500", "TOPIC_PARTITIONS": "12", "RAW_TOPIC": "r"})
    assert (s.fetch_max_wait_ms, s.partitions, s.raw_topic) == (500, 12, "r")


def test_non_integer_is_a_clear_error():
    with pytest.raises(ValueError, match="KAFKA_FETCH_MAX_WAIT_MS must be an integer"):
        Settings.from_env({"KAFKA_FETCH_MAX_WAIT_MS": "soon"})


def test_consumers_get_the_fetch_wait_and_size_limits(broker):
    s = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "KAFKA_FETCH_MAX_WAIT_MS": "250"})
    consumer = make_consumer(s, "test")
    try:
        assert consumer.config["fetch_max_wait_ms"] == 250
        assert consumer.config["max_partition_fetch_bytes"] == s.max_message_bytes
        assert consumer.config["enable_auto_commit"] is False
    finally:
        consumer.close()
