"""Consumer lag per stream, sampled in the background every few seconds.

Lag = records between a group's committed offset and the true end of the partition holding
the stream (`pipeline.kafka.end_offsets`, right on Tansu too). Groups shown: every group
with offsets on the raw topic (processors), and on the processed topic the `viewer-<id>`
groups of viewers connected to this process (old viewer ids are never cleaned up by Kafka,
so asking about all of them would grow without bound).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable

from kafka import TopicPartition
from kafka.partitioner.default import murmur2

from pipeline.kafka import end_offsets, make_admin, make_consumer
from pipeline.settings import Settings
from viewer.background import BackgroundLoop
from viewer.metrics import ViewerMetrics

log = logging.getLogger(__name__)

INTERVAL_S = 2.0


def partition_of(stream: str, partitions: int) -> int:
    """Where the default (murmur2, Java-compatible) partitioner puts records keyed by `stream`."""
    return (murmur2(stream.encode()) & 0x7FFFFFFF) % partitions


class LagSampler(BackgroundLoop):
    name = "lag"

    def __init__(self, settings: Settings, metrics: ViewerMetrics, streams: Callable[[], list[str]]) -> None:
        super().__init__()
        self.settings = settings
        self.metrics = metrics
        self.streams = streams
        self.viewer_ids: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.lag: dict[str, dict[str, int]] = {}  # stream -> group -> records

    def viewer_connected(self, viewer_id: str, delta: int) -> None:
        with self._lock:
            self.viewer_ids[viewer_id] += delta
            if self.viewer_ids[viewer_id] <= 0:
                del self.viewer_ids[viewer_id]

    def run_once(self) -> None:
        admin = make_admin(self.settings)
        consumer = make_consumer(self.settings, "viewer-lag", group_id=None)
        try:
            self.error = None
            while not self.stopping.is_set():
                self.lag = self.sample(admin, consumer)
                self.stopping.wait(INTERVAL_S)
        finally:
            consumer.close()
            admin.close()

    def _groups(self, admin) -> list[str]:
        with self._lock:
            watched = {f"viewer-{i}" for i in self.viewer_ids}
        names = [g["group_id"] if isinstance(g, dict) else g[0] for g in admin.list_groups()]
        return [g for g in names if not g.startswith("viewer-") or g in watched]

    def sample(self, admin, consumer) -> dict[str, dict[str, int]]:
        raw, processed = self.settings.raw_topic, self.settings.processed_topic
        committed: dict[str, dict[TopicPartition, int]] = {}
        for group in self._groups(admin):
            offsets = admin.list_group_offsets(group).get(group, {})
            mine = {tp: meta.offset for tp, meta in offsets.items() if tp.topic in (raw, processed) and meta.offset >= 0}
            if mine:
                committed[group] = mine
        counts = {t: len(consumer.partitions_for_topic(t) or ()) for t in (raw, processed)}
        streams = self.streams()
        wanted = {TopicPartition(t, partition_of(s, n)) for s in streams for t, n in counts.items() if n}
        ends = end_offsets(consumer, sorted(wanted)) if wanted else {}
        lag: dict[str, dict[str, int]] = {}
        self.metrics.consumer_lag.clear()  # groups that went away must not linger
        for stream in streams:
            per_group = lag.setdefault(stream, {})
            for group, offsets in committed.items():
                for tp, offset in offsets.items():
                    if tp in ends and tp.partition == partition_of(stream, counts[tp.topic]):
                        per_group[group] = max(0, ends[tp] - offset)
                        self.metrics.consumer_lag.labels(stream, tp.topic, group).set(per_group[group])
        return lag
