"""The processor's jobs loop (processor/jobs.py) outlives any error: the live loop never depends on it."""

from __future__ import annotations

import threading

from kafka.errors import KafkaError

from pipeline.settings import Settings
from processor import jobs
from processor.heartbeat import ProcessorStats
from processor.jobs import JobWorker, LiveGate


def test_the_jobs_loop_starts_again_after_any_error(monkeypatch):
    monkeypatch.setattr(jobs, "RETRY_S", 0.01)
    stop = threading.Event()
    worker = JobWorker(Settings(), "g", "grayscale", None, 1, producer=None, out_partitions=1, gate=LiveGate(),
                       stop=stop, stats=ProcessorStats())
    sessions = []

    def session() -> None:
        sessions.append(len(sessions))
        if len(sessions) == 1:
            raise RuntimeError("a bug")
        if len(sessions) == 2:
            raise KafkaError("broker away")
        stop.set()

    monkeypatch.setattr(worker, "_session", session)
    worker.start()
    worker.close(10)
    assert sessions == [0, 1, 2]
    assert worker.group == "g.jobs"
