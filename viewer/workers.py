"""Live processors, from their heartbeats: a small reader of the heartbeat topic keeping the
newest record per processor id and forgetting those silent for longer than STALE_S.

A heartbeat is a JSON object: id, host, pid, group, transform, partitions, frames, fps,
errors, ts (epoch seconds or milliseconds). Parsing is tolerant: any JSON object with an
`id` counts; missing fields are shown as null, unknown ones are passed through.
"""

from __future__ import annotations

import json
import logging
import threading
import time

from kafka import TopicPartition

from pipeline.kafka import make_consumer
from pipeline.settings import Settings
from viewer.background import BackgroundLoop

log = logging.getLogger(__name__)

STALE_S = 15.0
# How far back to look on start: enough for every live processor's newest heartbeat.
REPLAY_RECORDS = 2000
FIELDS = ("id", "host", "pid", "group", "transform", "partitions", "frames", "fps", "errors")


def parse_heartbeat(value: bytes | None, record_ts_ms: int) -> dict | None:
    """The heartbeat as a dict with `last_heartbeat` (epoch s), or None if it is not one."""
    try:
        data = json.loads(value or b"")
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("id"), (str, int)):
        return None
    ts = data.get("ts")
    if isinstance(ts, (int, float)) and not isinstance(ts, bool) and ts > 0:
        seconds = ts / 1000 if ts > 1e11 else float(ts)  # ms or s since the epoch
    else:
        seconds = record_ts_ms / 1000
    out = {name: data.get(name) for name in FIELDS} | {k: v for k, v in data.items() if k not in FIELDS and k != "ts"}
    out["id"] = str(data["id"])
    out["last_heartbeat"] = seconds
    return out


class WorkerRegistry(BackgroundLoop):
    name = "heartbeats"

    def __init__(self, settings: Settings, stale_s: float = STALE_S) -> None:
        super().__init__()
        self.settings = settings
        self.stale_s = stale_s
        self._latest: dict[str, dict] = {}
        self._lock = threading.Lock()

    def run_once(self) -> None:
        topic = self.settings.heartbeat_topic
        consumer = make_consumer(self.settings, "viewer-heartbeats", group_id=None)
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
                        self.accept(record.value, record.timestamp)
        finally:
            consumer.close()

    def accept(self, value: bytes | None, record_ts_ms: int) -> None:
        beat = parse_heartbeat(value, record_ts_ms)
        if beat is None:
            log.debug("ignored a heartbeat record that is not a JSON object with an id")
            return
        with self._lock:
            known = self._latest.get(beat["id"])
            if known is None or beat["last_heartbeat"] >= known["last_heartbeat"]:
                self._latest[beat["id"]] = beat

    def live(self, now: float | None = None) -> list[dict]:
        """Processors heard from within `stale_s`, by id; forgets the others."""
        now = time.time() if now is None else now
        with self._lock:
            for worker_id in [i for i, b in self._latest.items() if now - b["last_heartbeat"] > self.stale_s]:
                del self._latest[worker_id]
            beats = sorted(self._latest.values(), key=lambda b: b["id"])
        return [b | {"age_s": round(now - b["last_heartbeat"], 2)} for b in beats]
