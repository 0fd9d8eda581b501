"""The client factory applies the settings to the consumers it builds (on the real broker)."""

from __future__ import annotations

import uuid

from kafka.admin import NewTopic

from pipeline.kafka import make_admin, make_consumer
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


def test_topics_asks_the_broker_even_right_after_the_bootstrap(broker):
    """The factory's consumers answer topics() at once instead of waiting out kafka-python's
    refresh backoff after their bootstrap; the answer must still come from the broker: a topic
    made after the consumer's bootstrap listing is in it."""
    s = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap})
    consumer, admin = make_consumer(s, "test"), make_admin(s)
    name = f"made-after-{uuid.uuid4().hex[:8]}"
    try:
        assert name not in consumer.topics()
        admin.create_topics([NewTopic(name, 1, 1)])
        assert name in consumer.topics()
        assert consumer.config["retry_backoff_ms"] == consumer._client.cluster.config["retry_backoff_ms"] == 100
    finally:
        consumer.close()
        admin.close()
