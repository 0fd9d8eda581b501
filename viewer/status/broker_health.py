"""The viewer's one broker check, shared by every /healthz probe."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from pipeline.kafka import cluster_id_of, make_admin
from pipeline.settings import Settings

log = logging.getLogger(__name__)

# How long one check may take (the admin client's connect and request timeouts, and how long a
# probe waits for a check in progress), and how long its answer stands for later probes: a
# restarted broker (a new cluster id) is noticed at most this long after the fact.
CHECK_TIMEOUT_S = 1.0
MAX_AGE_S = 1.0


class _Check:
    def __init__(self, started: float) -> None:
        self.started = started
        self.done = threading.Event()
        self.cluster_id: str | None = None


class BrokerHealth:
    """The broker's cluster id as /healthz reports it, through one long-lived admin client
    (made again after an error). A client per probe cost a connect, a version negotiation and a
    request each: under load one took up to 0.74 s of its 1 s budget, so a busy machine answered
    503 with the broker fine, and a flood of unauthenticated probes opened a connection each.
    Now at most one check runs at a time, concurrent probes wait for it (threads, or greenlets
    under gevent: the lock and events are patched there), and an answer younger than MAX_AGE_S
    is reused."""

    def __init__(self, settings: Settings, timeout_s: float = CHECK_TIMEOUT_S, max_age_s: float = MAX_AGE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.timeout_s, self.max_age_s = timeout_s, max_age_s
        self.clock = clock
        self._lock = threading.Lock()
        self._last: _Check | None = None
        self._running: _Check | None = None
        self._admin: KafkaAdminClient | None = None  # used only by the check in progress
        self._closed = False

    def cluster_id(self) -> str | None:
        """The id the broker reports, or None if it does not answer within the timeout."""
        with self._lock:
            last = self._last
            if last is not None and self.clock() - last.started < self.max_age_s:
                return last.cluster_id
            leading = self._running is None
            if leading:
                self._running = _Check(self.clock())
            check = self._running
        if leading:
            self._run(check)
        elif not check.done.wait(self.timeout_s):
            return None
        return check.cluster_id

    def close(self) -> None:
        with self._lock:
            self._closed = True
            admin = None if self._running is not None else self._take_admin()
        if admin is not None:
            admin.close()

    def _run(self, check: _Check) -> None:
        try:
            check.cluster_id = self._describe()
        finally:
            with self._lock:
                self._last, self._running = check, None
                stale = self._take_admin() if self._closed else None
            check.done.set()
            if stale is not None:
                stale.close()

    def _describe(self) -> str | None:
        try:
            if self._admin is None:
                ms = int(self.timeout_s * 1000)
                self._admin = make_admin(self.settings, request_timeout_ms=ms, bootstrap_timeout_ms=ms)
            return cluster_id_of(self._admin)
        except (KafkaError, OSError) as exc:
            log.debug("broker check failed: %s", exc)
            self._drop_admin()
            return None
        except BaseException:
            self._drop_admin()
            raise

    def _take_admin(self) -> KafkaAdminClient | None:
        admin, self._admin = self._admin, None
        return admin

    def _drop_admin(self) -> None:
        admin = self._take_admin()
        if admin is not None:
            admin.close()
