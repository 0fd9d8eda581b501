"""The viewer as a Flask extension: one object per app owns the settings, the metrics, every
background reader (live hubs, heartbeats, lag, job collector, the control topic's readers), the
broker check and the job store, and stops them all with one `shutdown()`. Every reader starts
on first use."""

from __future__ import annotations

import threading
import time

from flask import Flask, current_app

from pipeline.control import ChainControl
from viewer.live.broadcast import ControlBroadcast
from viewer.live.hub import LiveHub
from viewer.live.resets import Resets
from viewer.live.viewer_ids import ViewerIds
from viewer.metrics import ViewerMetrics
from viewer.settings import ViewerSettings
from viewer.shared_offsets import SharedTool
from viewer.status.broker_health import BrokerHealth
from viewer.status.broker_identity import BrokerIdentity
from viewer.status.heartbeats import ProcessorHeartbeats
from viewer.status.lag import LagSampler
from viewer.stills.store import JobStore
from viewer.stills.upload import JobLimits, Uploads


class Viewer:
    def __init__(self, app: Flask | None = None) -> None:
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        self.settings = ViewerSettings.from_config(app.config)
        shared = self.settings.shared
        self.metrics = ViewerMetrics()
        self.processed = LiveHub(shared, shared.processed_topic, self.metrics, self.settings.tick_s)
        self.raw = LiveHub(shared, shared.raw_topic, self.metrics, self.settings.tick_s)
        self.heartbeats = ProcessorHeartbeats(shared)
        self.broker = BrokerIdentity()
        self.health = BrokerHealth(shared)
        self.viewer_ids = ViewerIds(shared, shared.max_resume_viewers, shared.max_viewer_groups, shared.viewer_group_ttl_s)
        self.resets = Resets()
        self.broadcast = ControlBroadcast(shared, self.resets, self.viewer_ids)
        self.lag = LagSampler(shared, self.metrics, lambda: [name for name, _ in self.processed.stream_slots()])
        own = self.settings
        store = JobStore(own.jobs_db, keep=own.jobs_keep)
        limits = JobLimits(max_active=own.max_active_jobs, max_per_client=own.max_jobs_per_client,
                           max_work_s=own.max_job_work_s, timeout_s=own.job_timeout_s,
                           memory_bytes=own.upload_memory_bytes)
        self.uploads = Uploads(shared, store, limits, keep=own.jobs_keep)
        self.offsets_tool = SharedTool(shared)
        self._chains: ChainControl | None = None
        self._chains_lock = threading.Lock()
        app.extensions["viewer"] = self

    def hub(self, raw: bool) -> LiveHub:
        return self.raw if raw else self.processed

    def chains(self) -> ChainControl:
        """The streams' live chains (the control topic), connected on first use."""
        with self._chains_lock:
            if self._chains is None:
                self._chains = ChainControl(self.settings.shared, "viewer-control")
            return self._chains

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Stop every reader within one shared deadline (readers stuck connecting to a dead
        broker would otherwise be waited for one after another), then close the producer."""
        loops = (self.processed, self.raw, self.heartbeats, self.lag, self.viewer_ids, self.broadcast,
                 self.uploads.collector, self.uploads.jobs)
        for loop in loops:
            loop.stopping.set()
        deadline = time.monotonic() + timeout_s
        for loop in loops:
            loop.stop(max(0.0, deadline - time.monotonic()))
        self.uploads.close()
        self.offsets_tool.close()
        self.health.close()
        if self._chains is not None:
            self._chains.close()


def viewer_of(app: Flask) -> Viewer:
    return app.extensions["viewer"]


def current_viewer() -> Viewer:
    """The viewer of the app handling this request."""
    return viewer_of(current_app)
