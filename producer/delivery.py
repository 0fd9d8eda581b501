"""Delivery to Kafka: connect with bounded retries, async sends under a bounded in-flight
window, per-frame acknowledgement accounting, and a flush that reports what never arrived."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from kafka import KafkaProducer
from kafka.errors import KafkaError

from pipeline.generations import CurrentSlot
from pipeline.kafka import close_producer, make_producer
from pipeline.settings import Settings
from pipeline.wire import Frame, to_record

log = logging.getLogger(__name__)

# Each failed record is logged up to this many times; after that only the count grows, so a
# dead broker does not flood the log with one line per buffered frame.
LOGGED_ERRORS = 10
STALL_WARNING_S = 5.0


class BrokerUnavailable(Exception):
    """No broker answered within the connect attempts; the message is one line for the user."""


@dataclass(frozen=True)
class ConnectPolicy:
    attempts: int = 3
    timeout_s: float = 5.0
    backoff_s: float = 1.0


def connect(settings: Settings, acks: str | None, policy: ConnectPolicy, stop: threading.Event) -> KafkaProducer:
    """A producer on a reachable broker, trying ``policy.attempts`` times; BrokerUnavailable if none.
    acks: "0", "1" or "all"; None: the settings' (KAFKA_PRODUCER_ACKS)."""
    ms = int(policy.timeout_s * 1000)
    acks = acks or settings.producer_acks
    acks_value: int | str = "all" if acks == "all" else int(acks)
    for attempt in range(1, policy.attempts + 1):
        try:
            with _kafka_logs_muted():
                return make_producer(settings, acks=acks_value, bootstrap_timeout_ms=ms)
        except (KafkaError, OSError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if attempt == policy.attempts or stop.is_set():
                break
            log.warning("broker %s not reachable (attempt %d/%d: %s); retrying in %g s",
                        settings.bootstrap_servers, attempt, policy.attempts, reason, policy.backoff_s)
            if stop.wait(policy.backoff_s):
                break
    raise BrokerUnavailable(
        f"Kafka broker {settings.bootstrap_servers} not reachable after {attempt} attempt(s) "
        f"of {policy.timeout_s:g} s (is it running? check KAFKA_BOOTSTRAP_SERVERS)"
    )


@contextlib.contextmanager
def _kafka_logs_muted() -> Iterator[None]:
    """kafka-python logs each refused connection at ERROR; while connecting, our retry line
    says it once. Left alone when the kafka logger is at DEBUG (someone is debugging)."""
    logger = logging.getLogger("kafka")
    level = logger.level
    if logger.getEffectiveLevel() > logging.DEBUG:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


class Delivery:
    """Sends frames asynchronously with at most ``window`` records awaiting acknowledgement.

    Counts come from the broker's answers (kafka-python callbacks on its I/O thread): a frame
    is *sent* once every record of it (one, or one per tile) is acknowledged; every failed or
    never-acknowledged record is an error, logged and counted, never silently dropped.
    """

    def __init__(self, producer: KafkaProducer, topic: str | CurrentSlot, window: int, stop: threading.Event) -> None:
        if window < 1:
            raise ValueError("in-flight window must be at least 1")
        self.producer = producer
        self._topic = topic
        self.stop = stop
        self._window = threading.BoundedSemaphore(window)
        self._lock = threading.Lock()
        self._remaining: dict[int, int] = {}  # seq -> records not yet acknowledged
        self._failed: set[int] = set()
        self.in_flight = 0
        self.frames_sent = 0
        self.records_sent = 0
        self.bytes_sent = 0
        self.errors = 0
        self.abandoned = 0
        self._failed_closing = 0
        self._closing = False
        self._closed = False

    @property
    def topic(self) -> str:
        """Where frames go now: a writer that follows generations changes slot at a rotation."""
        return self._topic if isinstance(self._topic, str) else self._topic.topic

    def send(self, records: list[Frame]) -> bool:
        """Queue one frame's records in order; False if stopped while waiting for the window."""
        seq = records[0].seq
        topic = self.topic  # all of a frame's records (tiles) go to one slot
        with self._lock:
            self._remaining[seq] = self._remaining.get(seq, 0) + len(records)
        for i, frame in enumerate(records):
            if not self._acquire():
                self._abandon(seq, len(records) - i)
                return False
            key, value, headers = to_record(frame)
            with self._lock:
                self.in_flight += 1
            try:
                future = self.producer.send(topic, key=key, value=value, headers=headers)
            except KafkaError as exc:
                self._settle(seq, len(value), exc, frame.stream)
                continue
            future.add_callback(self._acked, seq, len(value))
            future.add_errback(self._failed_send, frame.stream, seq, len(value))
        return True

    def _acquire(self) -> bool:
        # Poll so a stop request is honoured even while a dead broker holds the window full.
        waited = 0.0
        while not self._window.acquire(timeout=0.2):
            waited += 0.2
            if self.stop.is_set():
                return False
            if abs(waited - STALL_WARNING_S) < 0.1:
                log.warning("topic=%s %d record(s) unacknowledged for %g s: broker slow or down; "
                            "waiting (frames due meanwhile follow the late policy)", self.topic,
                            self.in_flight, STALL_WARNING_S)
        return True

    # kafka-python calls these as f(*bound_args, result): our arguments come first.
    def _acked(self, seq: int, size: int, _metadata) -> None:
        self._settle(seq, size, None)

    def _failed_send(self, stream: str, seq: int, size: int, exc: Exception) -> None:
        self._settle(seq, size, exc, stream)

    def _settle(self, seq: int, size: int, exc: Exception | None, stream: str = "") -> None:
        with self._lock:
            if self._closed:
                return  # already counted as unacknowledged by close()
            self.in_flight -= 1
            if exc is None:
                self.records_sent += 1
                self.bytes_sent += size
            elif self._closing:
                # Failed by the close (flush timed out, producer closed forcefully): close() says it once.
                self.errors += 1
                self._failed.add(seq)
                self._failed_closing += 1
            else:
                self.errors += 1
                self._failed.add(seq)
                if self.errors <= LOGGED_ERRORS:
                    log.error("topic=%s stream=%s seq=%d delivery failed: %s%s", self.topic, stream, seq, exc,
                              " (further errors are only counted)" if self.errors == LOGGED_ERRORS else "")
            self._finish_record(seq)
        self._window.release()

    def _abandon(self, seq: int, count: int) -> None:
        """Records of a frame the stop came before: counted, and said once by close()."""
        with self._lock:
            self.errors += count
            self.abandoned += count
            self._failed.add(seq)
            for _ in range(count):
                self._finish_record(seq)

    def not_sent(self, reason: str, frames: int = 1) -> None:
        """Count frames that never became records (e.g. they could not be encoded)."""
        with self._lock:
            self.errors += frames
        log.error("topic=%s frame not sent: %s", self.topic, reason)

    def _finish_record(self, seq: int) -> None:
        self._remaining[seq] -= 1
        if self._remaining[seq] == 0:
            del self._remaining[seq]
            if seq in self._failed:
                self._failed.discard(seq)
            else:
                self.frames_sent += 1

    def close(self, timeout_s: float) -> None:
        """Flush within ``timeout_s``; records still unacknowledged then count as errors, said
        in one line with those abandoned at the stop."""
        with self._lock:
            self._closing = True
        flushed = close_producer(self.producer, timeout_s)
        with self._lock:
            lost, self.in_flight = self.in_flight + self._failed_closing, 0
            self.errors += lost - self._failed_closing
            self._closed = True
            abandoned = self.abandoned
        if lost or abandoned:
            why = f"flush gave up after {timeout_s:g} s: broker slow or down" if not flushed else "stopped while waiting"
            log.error("topic=%s %d record(s) not delivered at exit (%d unacknowledged, %d never sent; %s), "
                      "counted as errors", self.topic, lost + abandoned, lost, abandoned, why)
