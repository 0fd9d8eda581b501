"""Consumer lag per stream, sampled in the background every few seconds.

Lag = records between a group's committed offset and the true end of the partition holding
the stream (`OffsetTool.ends`, right on Tansu too). Groups shown: every group with offsets on
the raw topic (processors), and on the processed topic the `viewer-<id>` groups of viewers
connected to this process (old viewer ids are never cleaned up by Kafka, so asking about all
of them would grow without bound). Under gunicorn /metrics shows the answering worker's sample.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable

from kafka import TopicPartition
from prometheus_client.core import GaugeMetricFamily

from pipeline.offsets import OffsetsError, OffsetTool
from pipeline.settings import Settings
from pipeline.viewer_groups import GROUP_PREFIX
from viewer.background import BackgroundLoop
from viewer.metrics import ViewerMetrics

log = logging.getLogger(__name__)

INTERVAL_S = 2.0


class LagSampler(BackgroundLoop):
    name = "lag"

    def __init__(self, settings: Settings, metrics: ViewerMetrics, streams: Callable[[], list[str]]) -> None:
        super().__init__()
        self.settings = settings
        self.streams = streams
        self.viewer_ids: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.lag: dict[str, dict[str, int]] = {}  # stream -> group -> records
        self._samples: list[tuple[str, str, str, int]] = []  # (stream, topic, group, records)
        metrics.add_computed(self)

    def collect(self):
        """The newest sample as `viewer_consumer_lag` (prometheus_client's collector interface)."""
        family = GaugeMetricFamily(
            "viewer_consumer_lag", "Records between a group's committed offset and the end of the stream's partition",
            labels=["stream", "topic", "group"],
        )
        for stream, topic, group, records in self._samples:
            family.add_metric([stream, topic, group], records)
        yield family

    def viewer_connected(self, viewer_id: str, delta: int) -> None:
        with self._lock:
            self.viewer_ids[viewer_id] += delta
            if self.viewer_ids[viewer_id] <= 0:
                del self.viewer_ids[viewer_id]

    def run_once(self) -> None:
        with OffsetTool(self.settings) as tool:
            self.error = None
            while not self.stopping.is_set():
                self.lag = self.sample(tool)
                self.stopping.wait(INTERVAL_S)

    def _groups(self, tool: OffsetTool) -> list[str]:
        with self._lock:
            watched = {f"viewer-{i}" for i in self.viewer_ids}
        return [g for g in tool.groups() if not g.startswith(GROUP_PREFIX) or g in watched]

    def sample(self, tool: OffsetTool) -> dict[str, dict[str, int]]:
        topics = (self.settings.raw_topic, self.settings.processed_topic)
        committed = {g: {tp: o for tp, o in tool.committed(g).items() if tp.topic in topics} for g in self._groups(tool)}
        where: dict[tuple[str, str], TopicPartition] = {}  # (stream, topic) -> partition
        for stream in self.streams():
            for topic in topics:
                try:
                    where[stream, topic] = tool.stream_partition(topic, stream)
                except OffsetsError:
                    pass  # the topic does not exist (yet)
        ends = tool.ends(sorted(set(where.values())))[1] if where else {}
        lag: dict[str, dict[str, int]] = {}
        samples = []  # replaced whole: groups that went away must not linger
        for (stream, topic), tp in where.items():
            for group, offsets in committed.items():
                if tp in offsets:
                    records = lag.setdefault(stream, {})[group] = max(0, ends[tp] - offsets[tp])
                    samples.append((stream, topic, group, records))
        self._samples = samples
        return lag
