"""What a processor reports about itself: live counters and the thread that publishes them."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field

from kafka import KafkaProducer
from kafka.errors import KafkaError

from pipeline.heartbeat import HEARTBEAT_INTERVAL_S, MAX_CHAINS, Heartbeat, encode_heartbeat

log = logging.getLogger(__name__)


@dataclass
class ProcessorStats:
    """Counters the run loop updates and the heartbeat thread reads (under ``lock``)."""

    frames: int = 0
    dead_letters: int = 0
    commits: int = 0
    rebalances: int = 0
    partitions: list[int] = field(default_factory=list)
    # Stream -> chain applied, since the last heartbeat took them (at most MAX_CHAINS streams).
    chains: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, frames: int = 0, dead_letters: int = 0, commits: int = 0) -> None:
        with self.lock:
            self.frames += frames
            self.dead_letters += dead_letters
            self.commits += commits

    def applied(self, stream: str, spec: str) -> None:
        """A frame of `stream` got chain `spec` (the stream's live chain or the default)."""
        with self.lock:
            if stream in self.chains or len(self.chains) < MAX_CHAINS:
                self.chains[stream] = spec

    def assign(self, partitions: list[int]) -> None:
        with self.lock:
            self.partitions = sorted(partitions)
            self.rebalances += 1


@dataclass(frozen=True)
class Identity:
    """Who this processor is, as its heartbeats say."""

    id: str
    group: str
    transform: str
    topic: str
    concurrency: int = 1
    tile: int | None = None
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)


class HeartbeatPublisher:
    """Publishes a Heartbeat every ``interval_s`` from a daemon thread, and a last one on stop."""

    def __init__(self, producer: KafkaProducer, topic: str, who: Identity, stats: ProcessorStats,
                 interval_s: float = HEARTBEAT_INTERVAL_S) -> None:
        self.producer, self.topic, self.who, self.stats = producer, topic, who, stats
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="heartbeat", daemon=True)
        self._last = (time.monotonic(), 0)

    def start(self) -> HeartbeatPublisher:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops the thread and says ``state="stopped"`` so readers drop this worker at once."""
        self._stop.set()
        self._thread.join(self.interval_s + 5)
        self._publish("stopped")

    def beat(self, state: str = "running") -> Heartbeat:
        now = time.monotonic()
        with self.stats.lock:
            frames, errors, partitions = self.stats.frames, self.stats.dead_letters, list(self.stats.partitions)
            rebalances = self.stats.rebalances
            chains, self.stats.chains = self.stats.chains, {}  # each heartbeat names the streams of its interval
        then, frames_then = self._last
        self._last = (now, frames)
        fps = (frames - frames_then) / (now - then) if now > then else 0.0
        w = self.who
        return Heartbeat(id=w.id, host=w.host, pid=w.pid, group=w.group, transform=w.transform, topic=w.topic,
                         partitions=partitions, frames=frames, fps=round(fps, 2), errors=errors, rebalances=rebalances,
                         concurrency=w.concurrency, tile=w.tile, state=state, ts=int(time.time() * 1000),
                         chains=chains)

    def _publish(self, state: str = "running") -> None:
        key, value = encode_heartbeat(self.beat(state))
        try:
            self.producer.send(self.topic, key=key, value=value)
        except KafkaError as exc:
            # A missed heartbeat only makes the worker look stale for a moment: never fatal.
            log.warning("heartbeat not sent: %s", exc)

    def _loop(self) -> None:
        self._publish()
        while not self._stop.wait(self.interval_s):
            self._publish()
