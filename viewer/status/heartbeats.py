"""Live processors, from their heartbeats (`pipeline/heartbeat.py`): a small reader of the
heartbeat topic keeping the newest record per processor id. A processor that said it stopped,
or has been silent for `STALE_AFTER_S`, is not listed."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict

from kafka import TopicPartition

from pipeline.heartbeat import STALE_AFTER_S, Heartbeat, HeartbeatError, decode_heartbeat, live_workers
from pipeline.kafka import BACKGROUND_FETCH, make_consumer
from pipeline.settings import Settings
from viewer.background import BackgroundLoop

log = logging.getLogger(__name__)

# How far back to look on start: enough for every live processor's newest heartbeat.
REPLAY_RECORDS = 2000


class WorkerRegistry(BackgroundLoop):
    name = "heartbeats"

    def __init__(self, settings: Settings, stale_after_s: float = STALE_AFTER_S) -> None:
        super().__init__()
        self.settings = settings
        self.stale_after_s = stale_after_s
        self._newest: dict[str, Heartbeat] = {}
        self._lock = threading.Lock()

    def run_once(self) -> None:
        topic = self.settings.heartbeat_topic
        consumer = make_consumer(self.settings, "viewer-heartbeats", group_id=None, **BACKGROUND_FETCH)
        try:
            tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
            if not tps:
                self.stopping.wait(1.0)
                return
            consumer.assign(tps)
            for tp, end in consumer.end_offsets(tps).items():
                consumer.seek(tp, max(end - REPLAY_RECORDS, 0))
            self.error = None
            while not self.stopping.is_set():
                for records in consumer.poll(timeout_ms=500).values():
                    for record in records:
                        self.skip_bad_record(lambda r: self.accept(r.value), record)
        finally:
            consumer.close()

    def accept(self, value: bytes | None) -> None:
        try:
            beat = decode_heartbeat(value)
        except HeartbeatError as exc:
            log.debug("heartbeat topic: skipped a record: %s", exc)
            return
        with self._lock:
            known = self._newest.get(beat.id)
            if known is None or beat.ts >= known.ts:
                self._newest[beat.id] = beat

    def live(self, now_ms: int | None = None) -> list[dict]:
        """Running processors heard from within `stale_after_s`, by id, each with `age_s`."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        with self._lock:
            beats = live_workers(self._newest.values(), now_ms, self.stale_after_s)
            self._newest = {b.id: b for b in beats}  # forget the stopped and the stale
        return [asdict(b) | {"age_s": round((now_ms - b.ts) / 1000, 2)} for b in beats]
