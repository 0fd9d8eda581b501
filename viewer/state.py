"""Per-process viewer state: settings, metrics, the live hubs (one per topic), the heartbeat
reader, the lag sampler and the control topic's reader. Every one starts on first use."""

from __future__ import annotations

import threading
import time

from flask import current_app

from pipeline.control import ChainControl
from pipeline.settings import Settings
from viewer.live.hub import LiveHub
from viewer.live.viewer_ids import ViewerIds
from viewer.metrics import ViewerMetrics
from viewer.status.broker_identity import BrokerIdentity
from viewer.status.heartbeats import WorkerRegistry
from viewer.status.lag import LagSampler


class ViewerState:
    def __init__(self, settings: Settings, keepalive_s: float) -> None:
        self.settings = settings
        self.keepalive_s = keepalive_s
        # How often a response waiting on an idle stream wakes to check its keep-alive.
        # Half a second at most: a stalled stream's no-signal card then shows within 2.5 s.
        self.tick_s = min(0.5, max(0.05, keepalive_s))
        self.metrics = ViewerMetrics()
        self.processed = LiveHub(settings, settings.processed_topic, self.metrics, self.tick_s)
        self.raw = LiveHub(settings, settings.raw_topic, self.metrics, self.tick_s)
        self.workers = WorkerRegistry(settings)
        self.broker = BrokerIdentity()
        self.lag = LagSampler(settings, self.metrics, lambda: [name for name, _ in self.processed.stream_slots()])
        self.viewer_ids = ViewerIds(settings, settings.max_resume_viewers, settings.max_viewer_groups,
                                    settings.viewer_group_ttl_s)
        self._chains: ChainControl | None = None
        self._chains_lock = threading.Lock()

    def hub(self, raw: bool) -> LiveHub:
        return self.raw if raw else self.processed

    def chains(self) -> ChainControl:
        """The streams' live chains (the control topic), connected on first use."""
        with self._chains_lock:
            if self._chains is None:
                self._chains = ChainControl(self.settings, "viewer-control")
            return self._chains

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop every reader within one shared deadline: readers stuck connecting to a dead
        broker would otherwise be waited for one after another."""
        loops = (self.processed, self.raw, self.workers, self.lag, self.viewer_ids)
        for loop in loops:
            loop.stopping.set()
        deadline = time.monotonic() + timeout_s
        for loop in loops:
            loop.stop(max(0.0, deadline - time.monotonic()))
        if self._chains is not None:
            self._chains.close()


def state() -> ViewerState:
    return current_app.extensions["viewer"]
