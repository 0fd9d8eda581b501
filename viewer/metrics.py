"""Prometheus metrics of the viewer: one registry per app, added up over every worker under gunicorn.

Under gunicorn (gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR before it forks) every worker
writes its counters, gauges and histograms to files of its own, and /metrics in any worker adds
up every worker's: prometheus_client's multiprocess mode. Open-count gauges add up the live
workers. Metrics that are not a worker's own count (consumer lag, read from Kafka) are
collectors computed when scraped, from the answering worker's state, because multiprocess files
cannot forget a label set.
"""

from __future__ import annotations

import os
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ViewerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.frames_served = Counter(
            "viewer_frames_served", "MJPEG parts written to clients (keep-alive repeats excluded)", ["stream", "mode"], registry=r
        )
        self.frames_received = Counter(
            "viewer_frames_received", "Frames published by a live hub", ["topic", "stream"], registry=r
        )
        self.frames_dropped = Counter(
            "viewer_frames_dropped", "Records a live reader could not serve (not a frame, over the pixel limit, bad tile...)",
            ["topic", "reason"], registry=r,
        )
        self.frames_behind = Counter(
            "viewer_frames_behind_skipped",
            "Frames a live hub did not show: newer input was already queued behind them (a processor catching up)",
            ["topic"], registry=r,
        )
        self.clients = Gauge("viewer_clients", "Open MJPEG responses", ["mode"], registry=r, multiprocess_mode="livesum")
        self.resume_consumers = Gauge("viewer_resume_consumers", "Open Kafka consumers of resuming viewers", registry=r,
                                      multiprocess_mode="livesum")
        self.order_events = Counter(
            "viewer_order_events",
            "Frame order in the live readers: frames released by reordering, late and duplicate frames dropped,"
            " seqs given up on (skipped), producer restarts",
            ["topic", "event"], registry=r,
        )
        self.tiled_frames_dropped = Counter(
            "viewer_tiled_frames_dropped", "Tiled frames dropped with tiles still missing", ["topic"], registry=r
        )
        self.latency = Histogram(
            "viewer_frame_latency_seconds",
            "Producer read time to the part being written to a client (one sample per client per second)",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=r,
        )

        self._computed: list[Collector] = []

    def add_computed(self, collector: Collector) -> None:
        """A collector computed at scrape time from this worker's state (not added up over workers)."""
        self._computed.append(collector)
        self.registry.register(collector)

    def render(self) -> bytes:
        path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if not path:
            return generate_latest(self.registry)
        every_worker = CollectorRegistry()
        MultiProcessCollector(every_worker, path)
        for collector in self._computed:
            every_worker.register(collector)
        return generate_latest(every_worker)


class ClientTally:
    """One MJPEG client's parts, added to the shared metrics about once a second and at
    close(): updating shared counters per client per frame cost ~3 % of a worker serving
    1,000 clients. The latency histogram gets one sample (the newest part) per flush."""

    def __init__(self, metrics: ViewerMetrics, stream: str, mode: str, every_s: float = 1.0) -> None:
        self.served = metrics.frames_served.labels(stream, mode)
        self.latency = metrics.latency
        self.every_s = every_s
        self.count = 0
        self.newest_ts_ms: int | None = None
        self.due = time.monotonic() + every_s

    def __call__(self, frame) -> None:
        self.count += 1
        self.newest_ts_ms = frame.ts_ms
        if time.monotonic() >= self.due:
            self.flush()

    def flush(self) -> None:
        if self.count:
            self.served.inc(self.count)
            self.count = 0
        if self.newest_ts_ms is not None:
            self.latency.observe(max(0.0, time.time() - self.newest_ts_ms / 1000))
            self.newest_ts_ms = None
        self.due = time.monotonic() + self.every_s
