"""A consumer that notices when a topic it reads was deleted and created again, and moves its
positions into the new topic instead of waiting at offsets the new topic has not reached.

Why: the embedded broker bounds its memory by recreating topics (pipeline/local/retention.py). Apache
Kafka answers a fetch past the end with OFFSET_OUT_OF_RANGE and the client resets itself; Tansu
answers with an empty batch, so a consumer would sit at its old offset until the new topic grew
that far. A recreated topic has a new topic id in the metadata, which is the signal used here.
"""

from __future__ import annotations

import logging
import time
import uuid

from kafka import KafkaConsumer, TopicPartition

log = logging.getLogger(__name__)

# A consumer that has had no records for this long asks for fresh metadata (at most this often),
# so a recreated topic is noticed in about a second; kafka-python's own refresh comes every five
# minutes. A consumer that keeps receiving records from its only topic needs no check and sends
# nothing extra. One reading several topics (the generations of pipeline/generations.py) asks
# this often even while busy: it can keep receiving from one slot while the other, recreated,
# waits at an offset the new topic has not reached (measured: the live view stopped for a
# minute after a rotation).
IDLE_REFRESH_S = 1.0


class RecreationAwareConsumer(KafkaConsumer):
    """KafkaConsumer whose poll() first re-seeks partitions of recreated topics, by the
    consumer's own `auto_offset_reset` policy (earliest: every frame of the new topic; latest:
    live from its end)."""

    def __init__(self, *topics, **configs) -> None:
        super().__init__(*topics, **configs)
        self._seen_topic_ids: dict[str, uuid.UUID] = {}
        self._active_at = self._refreshed_at = time.monotonic()

    def poll(self, timeout_ms: int = 0, max_records: int | None = None, update_offsets: bool = True):
        self._reseek_recreated()
        records = super().poll(timeout_ms=timeout_ms, max_records=max_records, update_offsets=update_offsets)
        now = time.monotonic()
        if records:
            self._active_at = now
        several = len({tp.topic for tp in self.assignment()}) > 1
        since = self._refreshed_at if several else max(self._active_at, self._refreshed_at)
        if (several or not records) and now - since >= IDLE_REFRESH_S:
            self.refresh_metadata()
        return records

    def refresh_metadata(self) -> None:
        """Ask for fresh metadata (answered in the background): partitions added to a topic and
        topics created again show up in partitions_for_topic() once it is in."""
        self._refreshed_at = time.monotonic()
        self._client.cluster.request_update()

    def recreated_partitions(self) -> list[TopicPartition]:
        """Assigned partitions whose topic id changed since this consumer last looked."""
        cluster = self._client.cluster
        stale = []
        for tp in self.assignment():
            current = cluster.topic_id(tp.topic)
            if current is None:
                continue  # deleted and not yet created again, or a broker without topic ids
            if self._seen_topic_ids.setdefault(tp.topic, current) != current:
                stale.append(tp)
        for topic in {tp.topic for tp in stale}:
            self._seen_topic_ids[topic] = cluster.topic_id(topic)
        return stale

    def _reseek_recreated(self) -> None:
        stale = self.recreated_partitions()
        if not stale:
            return
        if self.config["auto_offset_reset"] == "latest":
            self.seek_to_end(*stale)
        else:
            self.seek_to_beginning(*stale)
        topics = sorted({tp.topic for tp in stale})
        log.info("topics %s were recreated: %d partitions moved to %s", topics, len(stale), self.config["auto_offset_reset"])
