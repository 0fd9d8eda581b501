"""BackgroundLoop: a daemon reader that starts lazily and retries on Kafka errors.

Lazily, because a pre-forking server (gunicorn) must start readers in each worker, after the
fork; under gunicorn's gevent worker the threads are greenlets (threading is monkey-patched).
"""

from __future__ import annotations

import logging
import threading

from kafka.errors import KafkaError

log = logging.getLogger(__name__)


class BackgroundLoop:
    """Subclasses implement `run_once()`, which returns when `stopping` is set or raises."""

    name = "background"
    retry_s = 1.0

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.error: str | None = None
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def ensure_started(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self.stopping.clear()
                self._thread = threading.Thread(target=self._forever, name=self.name, daemon=True)
                self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _forever(self) -> None:
        while not self.stopping.is_set():
            try:
                self.run_once()
            except (KafkaError, OSError) as exc:
                self.error = str(exc) or type(exc).__name__
                log.warning("%s error, retrying in %.0f s: %s", self.name, self.retry_s, self.error)
                self.stopping.wait(self.retry_s)

    def run_once(self) -> None:
        raise NotImplementedError
