"""Which broker the viewer talks to: a restarted embedded broker is a new, empty one."""

from __future__ import annotations

import time
from collections.abc import Callable


class BrokerIdentity:
    """Remembers the broker's cluster id and when it changed: the embedded broker takes a new id
    at each start and keeps records in memory only, so a change means every frame from before
    is gone. Apache Kafka keeps its id (and its data) across restarts."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.cluster_id: str | None = None
        self.restarted_at_ms: int | None = None

    def seen(self, cluster_id: str) -> dict:
        """Note the id the broker reports now; what /healthz says about it."""
        if self.cluster_id is not None and cluster_id != self.cluster_id:
            self.restarted_at_ms = int(self.clock() * 1000)
        self.cluster_id = cluster_id
        return {"cluster_id": cluster_id, "broker_restarted_at": self.restarted_at_ms}
