"""The client factory applies the settings to the consumers it builds (on the real broker)."""

from __future__ import annotations

import uuid

from kafka import OffsetAndMetadata, TopicPartition
from kafka.admin import NewTopic

from pipeline.kafka import committed_offsets, make_admin, make_consumer
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


def test_committed_offsets_are_asked_in_one_request_and_match_committed(broker):
    """committed_offsets answers as KafkaConsumer.committed does per partition (None where the
    group committed nothing), over two topics, in one OffsetFetch request."""
    s = Settings.from_env({"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap})
    names = [f"committed-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    admin = make_admin(s)
    admin.create_topics([NewTopic(name, 3, 1) for name in names])
    group = f"g-{uuid.uuid4().hex[:8]}"
    consumer = make_consumer(s, "test", group_id=group)
    try:
        tps = [TopicPartition(name, p) for name in names for p in range(3)]
        consumer.commit({tps[0]: OffsetAndMetadata(5, "", -1), tps[4]: OffsetAndMetadata(9, "", -1)})
        sent = []
        send = consumer._coordinator._manager.send
        consumer._coordinator._manager.send = lambda request, **kw: (sent.append(type(request).__name__), send(request, **kw))[1]
        found = committed_offsets(consumer, tps)
        assert found == {tp: {0: 5, 4: 9}.get(i) for i, tp in enumerate(tps)}
        assert [name for name in sent if name.startswith("OffsetFetch")] == ["OffsetFetchRequest"]
        consumer._coordinator._manager.send = send
        assert found == {tp: consumer.committed(tp) for tp in tps}
    finally:
        consumer.close()
        admin.close()
