"""The client factory applies the settings to the consumers it builds (on the real broker)."""

from __future__ import annotations

from pipeline.kafka import make_consumer
from pipeline.settings import Settings


def test_consumers_get_the_fetch_wait_and_size_limits(broker):
    s = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "KAFKA_FETCH_MAX_WAIT_MS": "250"})
    consumer = make_consumer(s, "test")
    try:
        assert consumer.config["fetch_max_wait_ms"] == 250
        assert consumer.config["max_partition_fetch_bytes"] == s.max_message_bytes
        assert consumer.config["enable_auto_commit"] is False
    finally:
        consumer.close()
