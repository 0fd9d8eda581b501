"""Per-process viewer state: settings, metrics, the live hubs (one per topic), the heartbeat
reader and the lag sampler. Every background reader starts on first use."""

from __future__ import annotations

import time

from flask import current_app

from pipeline.settings import Settings
from viewer.live.hub import LiveHub
from viewer.metrics import ViewerMetrics
from viewer.status.broker_identity import BrokerIdentity
from viewer.status.heartbeats import WorkerRegistry
from viewer.status.lag import LagSampler


class ViewerState:
    def __init__(self, settings: Settings, keepalive_s: float) -> None:
        self.settings = settings
        self.keepalive_s = keepalive_s
        self.metrics = ViewerMetrics()
        self.processed = LiveHub(settings, settings.processed_topic, self.metrics)
        self.raw = LiveHub(settings, settings.raw_topic, self.metrics)
        self.workers = WorkerRegistry(settings)
        self.broker = BrokerIdentity()
        self.lag = LagSampler(settings, self.metrics, lambda: [name for name, _ in self.processed.stream_slots()])

    def hub(self, raw: bool) -> LiveHub:
        return self.raw if raw else self.processed

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop every reader within one shared deadline: readers stuck connecting to a dead
        broker would otherwise be waited for one after another."""
        loops = (self.processed, self.raw, self.workers, self.lag)
        for loop in loops:
            loop.stopping.set()
        deadline = time.monotonic() + timeout_s
        for loop in loops:
            loop.stop(max(0.0, deadline - time.monotonic()))


def state() -> ViewerState:
    return current_app.extensions["viewer"]
