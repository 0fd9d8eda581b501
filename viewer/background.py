"""BackgroundLoop: a daemon reader that starts lazily and survives any error.

Lazily, because a pre-forking server (gunicorn) must start readers in each worker, after the
fork; under gunicorn's gevent worker the threads are greenlets (threading is monkey-patched).

Records come from anyone who can write to a topic, so no error may end a reader: an error
from one record skips that record (retrying it would fail the same way forever), any other
error restarts the loop after `retry_s`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError

log = logging.getLogger(__name__)

T = TypeVar("T")


class BackgroundLoop:
    """Subclasses implement `run_once()`, which returns when `stopping` is set or raises."""

    name = "background"
    retry_s = 1.0
    # Errors a record's handler raises that are not the record's fault: they end the run (which
    # starts again after retry_s) instead of skipping the record.
    not_the_record: tuple[type[Exception], ...] = ()

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.error: str | None = None
        self.skipped = 0  # records whose handling raised
        self.restarts = 0  # runs ended by an error other than a Kafka or OS one
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
            except Exception as exc:  # a bug or hostile input: the reader must outlive it
                self.restarts += 1
                self.error = f"{type(exc).__name__}: {exc}"
                log.error("%s failed, restarting in %.0f s: %s", self.name, self.retry_s, self.error[:500])
                self.stopping.wait(self.retry_s)

    def skip_bad_record(self, handle: Callable[[ConsumerRecord], T], record: ConsumerRecord) -> T | None:
        """``handle(record)``; if it raises, the record is logged, counted and skipped (None)."""
        try:
            return handle(record)
        except self.not_the_record:
            raise
        except Exception as exc:
            self.skipped += 1
            log.error("%s: topic=%s partition=%d offset=%d skipped: %s: %s", self.name, record.topic,
                      record.partition, record.offset, type(exc).__name__, str(exc)[:500])
            return None

    def run_once(self) -> None:
        raise NotImplementedError
