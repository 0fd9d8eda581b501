"""Live fan-out: one background reader per topic keeps the newest frame of every stream, and
any number of HTTP clients wait on it (latest frame wins, so slow clients skip, never queue).

Records become frames through ``viewer.live.reader.FrameReader`` (decode, reassemble tiles,
order), then each is published.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

from pipeline.generations import slots
from pipeline.kafka import assign_at, from_end, live_fetch, make_consumer, partitions_of
from pipeline.settings import Settings
from viewer.background import BackgroundLoop
from viewer.live.latewindow import LateWindow
from viewer.live.nosignal import STALL_AFTER_S, NoSignalCards
from viewer.live.reader import FrameReader
from viewer.live.served import ServedFrame
from viewer.metrics import ViewerMetrics

# A live view shows only frames within this much source time of the newest input: frames a
# processor sends while draining a backlog (start-up, after a stall) stay in the log only; a
# processor behind for longer than the no-signal delay is shown late (viewer/live/latewindow.py).
LIVE_WINDOW_MS = 500


@dataclass
class StreamSlot:
    """A stream's newest frame. Clients wait on `fresh`, an event set once when a newer frame
    arrives and then replaced: one wake-up per client per frame, no lock shared by all
    waiters (a Condition with 1,000 waiters under gevent juggles 1,000 locks per frame)."""

    current: tuple[int, ServedFrame] | None = None  # (version, frame), swapped as one
    partition: int | None = None
    arrivals: deque = field(default_factory=lambda: deque(maxlen=50))
    fresh: threading.Event = field(default_factory=threading.Event)
    woken_at: float = field(default_factory=time.monotonic)

    @property
    def latest(self) -> ServedFrame | None:
        return self.current[1] if self.current is not None else None

    @property
    def version(self) -> int:
        return self.current[0] if self.current is not None else 0

    def advance(self, frame: ServedFrame) -> None:
        """Make `frame` the newest, then wake its waiters. In this order: a waiter that takes
        `fresh` before checking `current` either sees the new frame or is woken for it."""
        self.current = (self.version + 1, frame)
        self.wake()

    def wake(self) -> None:
        """Wake every waiter (with a new frame, or for an idle tick) and start a new round."""
        woken, self.fresh = self.fresh, threading.Event()
        self.woken_at = time.monotonic()
        woken.set()

    def stalled(self, now: float, after_s: float = STALL_AFTER_S) -> bool:
        """No new frame for `after_s` (monotonic `now`)."""
        return self.latest is not None and bool(self.arrivals) and now - self.arrivals[-1] >= after_s

    def fps(self) -> float:
        if len(self.arrivals) < 2:
            return 0.0
        span = self.arrivals[-1] - self.arrivals[0]
        return (len(self.arrivals) - 1) / span if span > 0 else 0.0


class IdleTicker(BackgroundLoop):
    """Wakes the waiters of every stream that had no frame for `tick_s`, so an idle response
    can send its keep-alive: one timer for the hub instead of a timeout per client per wait."""

    def __init__(self, hub: LiveHub, tick_s: float) -> None:
        super().__init__()
        self.name = f"{hub.name}-ticker"
        self.hub, self.tick_s = hub, tick_s

    def run_once(self) -> None:
        while not self.stopping.wait(self.tick_s / 2):
            due = time.monotonic() - self.tick_s
            for slot in list(self.hub.slots.values()):
                if slot.woken_at <= due:
                    slot.wake()


class LiveHub(BackgroundLoop):
    """Reads `topic` from its end with no consumer group (so one Kafka consumer per topic
    serves every live client of every stream) and publishes each stream's newest frame.
    A client waiting for a frame is also woken after `tick_s` without one (an idle tick)."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        metrics: ViewerMetrics | None = None,
        tick_s: float = 1.0,
    ) -> None:
        super().__init__()
        self.name = f"hub-{topic}"
        self.settings = settings
        self.topic = topic
        self.metrics = metrics
        self.reader = FrameReader(topic, settings.max_frame_pixels, metrics=metrics, guard=self.skip_bad_record,
                                  late=LateWindow(LIVE_WINDOW_MS, patience_s=STALL_AFTER_S))
        self.slots: dict[str, StreamSlot] = {}
        # Set (then replaced) whenever any stream gets a frame: what a request for a stream
        # not seen yet waits on.
        self.published = threading.Event()
        self.cards = NoSignalCards()
        self.ticker = IdleTicker(self, tick_s)

    def ensure_started(self) -> None:
        super().ensure_started()
        self.ticker.ensure_started()

    def stop(self, timeout_s: float = 5.0) -> None:
        self.ticker.stopping.set()
        deadline = time.monotonic() + timeout_s
        super().stop(timeout_s)
        self.ticker.stop(max(0.0, deadline - time.monotonic()))

    def run_once(self) -> None:
        consumer = make_consumer(self.settings, "viewer-live", group_id=None, auto_offset_reset="latest")
        try:
            # Both generations on the embedded broker (pipeline/generations.py): right after a
            # rotation, frames still come from the previous one for a moment.
            tps = partitions_of(consumer, *slots(self.topic, consumer.topics()))
            if not tps:
                self.stopping.wait(0.5)
                return
            # From the last record on: an idle stream still shows its newest frame.
            assign_at(consumer, from_end(consumer, tps, 1))
            fetch = live_fetch(consumer, self.settings)  # a longer fetch wait while no frame comes
            self.error = None
            while not self.stopping.is_set():
                batch = consumer.poll(timeout_ms=self.reader.poll_ms(200))
                fetch.polled(bool(batch))
                for frame, record in self.reader.read(batch, time.monotonic()):
                    self.publish([frame], record.partition)
                # Let the waiting clients take the newest frame now: under gevent nobody else
                # runs until this greenlet yields. Once per poll, not per frame: a poll holds
                # several frames of a stream only when this reader fell behind (a starved
                # process), and a turn of 1,000 clients per frame would keep it behind.
                time.sleep(0)
        finally:
            consumer.close()

    def publish(self, frames: list[ServedFrame], partition: int | None = None) -> None:
        """Make `frames` (in order) each stream's newest and wake the clients waiting for it."""
        if not frames:
            return
        for frame in frames:
            slot = self.slots.get(frame.stream)
            if slot is None:
                slot = self.slots[frame.stream] = StreamSlot()
            if partition is not None:
                slot.partition = partition
            slot.arrivals.append(time.monotonic())
            slot.advance(frame)
            if self.metrics is not None:
                self.metrics.frames_received.labels(self.topic, frame.stream).inc()
        woken, self.published = self.published, threading.Event()
        woken.set()

    def wait_for_stream(self, stream: str, timeout_s: float) -> bool:
        self.ensure_started()
        deadline = time.monotonic() + timeout_s
        while True:
            published = self.published
            if stream in self.slots:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            published.wait(remaining)

    def stream_slots(self) -> list[tuple[str, StreamSlot]]:
        """(name, slot) of every stream seen, by name; a snapshot, safe while the reader adds streams."""
        return sorted(list(self.slots.items()), key=lambda item: item[0])

    def latest(self, stream: str) -> ServedFrame | None:
        slot = self.slots.get(stream)
        return slot.latest if slot is not None else None

    def no_signal(self, stream: str) -> ServedFrame | None:
        """The no-signal card while `stream` is stalled, else None."""
        slot = self.slots.get(stream)
        if slot is None or not slot.stalled(time.monotonic()):
            return None
        return self.cards.card(slot.latest)

    def next_frame(self, stream: str, after_version: int) -> tuple[int, ServedFrame] | None:
        """The newest frame of `stream` newer than `after_version`; None on an idle tick."""
        slot = self.slots.get(stream)
        if slot is None:
            self.wait_for_stream(stream, self.ticker.tick_s)
            return None
        fresh = slot.fresh
        current = slot.current
        if current is None or current[0] <= after_version:
            fresh.wait()
            current = slot.current
        return current if current is not None and current[0] > after_version else None
