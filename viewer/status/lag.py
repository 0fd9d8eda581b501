"""Consumer lag per stream, sampled in the background every few seconds.

Lag = the records of the stream's partition a group still has to read, summed over every slot
of the topic (on the embedded broker each pipeline topic T has two generations, T and T.b, and
readers read both, oldest first: pipeline/generations.py). Per slot that is the true end
(`OffsetTool.ends`, right on Tansu too) minus where the group's reader is or would start:
- its committed offset (not below the slot's earliest: a reset would move it there);
- with no commit on that slot (a slot a rotation just recreated drops every group's offsets),
  where the group's readers start reading it: processors and every other consumer made by
  `make_consumer` start at the earliest offset, so the whole slot counts; viewer groups
  (`viewer-<id>`) start a slot they have no offset on at its end, so it counts nothing.
A group is shown for a stream once it has committed the stream's partition in some slot.

Groups shown: every group with offsets on the raw topic (processors), and on the processed topic
the `viewer-<id>` groups of viewers connected to this process (old viewer ids are never cleaned
up by Kafka, so asking about all of them would grow without bound). Each sample costs one topic
listing, one group listing, one offsets request per group shown and one `ends` for every
stream's partition in every slot together, however many streams and slots there are. Under
gunicorn /metrics shows the answering worker's sample.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable

from kafka import TopicPartition
from prometheus_client.core import GaugeMetricFamily

from pipeline.generations import slots
from pipeline.offsets import OffsetsError, OffsetTool
from pipeline.settings import Settings
from pipeline.viewer_groups import GROUP_PREFIX, viewer_group
from viewer.background import BackgroundLoop
from viewer.metrics import ViewerMetrics

log = logging.getLogger(__name__)

INTERVAL_S = 2.0


def to_read(group: str, tps: list[TopicPartition], committed: dict[TopicPartition, int],
            earliest: dict[TopicPartition, int], ends: dict[TopicPartition, int]) -> int:
    """Records of partitions `tps` (one per slot) that `group` has still to read: from its
    committed offset, or where its reader starts a partition it has no offset on (the module's
    docstring says why the whole slot for a processor, nothing for a viewer)."""
    starts_at_end = group.startswith(GROUP_PREFIX)
    records = 0
    for tp in tps:
        if tp in committed:
            records += max(0, ends[tp] - max(committed[tp], earliest[tp]))
        elif not starts_at_end:
            records += ends[tp] - earliest[tp]
    return records


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
            "viewer_consumer_lag", "Records of the stream's partition a group has still to read, over every slot of the topic",
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
            watched = {viewer_group(i) for i in self.viewer_ids}
        return [g for g in tool.groups() if not g.startswith(GROUP_PREFIX) or g in watched]

    def sample(self, tool: OffsetTool) -> dict[str, dict[str, int]]:
        existing = tool.consumer.topics()  # one listing; it also fills the partition metadata used below
        bases = (self.settings.raw_topic, self.settings.processed_topic)
        slots_of = {base: slots(base, existing) for base in bases}
        watched = {slot for names in slots_of.values() for slot in names}
        committed = {g: {tp: o for tp, o in tool.committed(g).items() if tp.topic in watched} for g in self._groups(tool)}
        where: dict[tuple[str, str], list[TopicPartition]] = {}  # (stream, base) -> its partition in each slot
        for stream in self.streams():
            for base, names in slots_of.items():
                tps = []
                for topic in (t for t in names if t in existing):  # asking for a missing topic would create it
                    try:
                        tps.append(tool.stream_partition(topic, stream))
                    except OffsetsError:
                        pass  # just recreated by a rotation, no partitions known yet: nothing to read in it
                if tps:
                    where[stream, base] = tps
        earliest, ends = tool.ends(sorted({tp for tps in where.values() for tp in tps})) if where else ({}, {})
        lag: dict[str, dict[str, int]] = {}
        samples = []  # replaced whole: groups that went away must not linger
        for (stream, base), tps in where.items():
            for group, offsets in committed.items():
                if not any(tp in offsets for tp in tps):
                    continue
                records = to_read(group, tps, offsets, earliest, ends)
                lag.setdefault(stream, {})[group] = records
                samples.append((stream, base, group, records))
        self._samples = samples
        return lag
