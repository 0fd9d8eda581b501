"""`pipeline up`: the whole stack (broker, producer, processors, viewer) as child processes."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pipeline.kafka import ensure_topics
from pipeline.local.broker import EmbeddedBroker
from pipeline.local.retention import DEFAULT_BUDGET_MB, DEFAULT_WINDOW_S, EmbeddedRetention, generation_specs
from pipeline.settings import Settings

log = logging.getLogger(__name__)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo: pipeline/local/up.py
SAMPLE_VIDEO = os.path.join(ROOT, "sample_media", "sample.mp4")


@dataclass
class UpOptions:
    video: str = SAMPLE_VIDEO
    fps: str = "native"
    transform: str = "grayscale"
    processors: int = 1
    port: int = 8000
    host: str = "127.0.0.1"
    broker_port: int = 9092
    loop: bool = True
    # Embedded broker only: recreate the topics when Tansu's memory passes this (0: never).
    embedded_retention_mb: int = DEFAULT_BUDGET_MB
    # Embedded broker only: the replay window kept, in seconds (capped by the memory budget).
    retention_s: float = DEFAULT_WINDOW_S


def service_commands(opts: UpOptions, python: str = sys.executable) -> dict[str, list[str]]:
    """The exact command of every service; docker-compose.yml runs the same ones with
    python="python" (tests/test_compose.py holds the two together)."""
    py = python
    producer = [py, "-m", "producer", "--source", opts.video, "--fps", str(opts.fps), "--quiet"]
    if opts.loop:
        producer.append("--loop")
    commands = {"producer": producer}
    for i in range(opts.processors):
        commands[f"processor-{i + 1}"] = [py, "-m", "processor", "--transform", opts.transform]
    commands["viewer"] = [
        py, "-m", "gunicorn", "-k", "gevent", "-w", "1", "-b", f"{opts.host}:{opts.port}",
        "--graceful-timeout", "5", "--log-level", "warning", "viewer:create_app()",
    ]
    return commands


def run(opts: UpOptions, stop: threading.Event) -> int:
    env = dict(os.environ)
    broker = None
    job_dir = None
    if not env.get("KAFKA_BOOTSTRAP_SERVERS"):
        broker = EmbeddedBroker(opts.broker_port).start()
        env["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap
        # The embedded broker forgets every record when it stops, so job state (and the job
        # collector's saved offsets) from an earlier run would point at offsets that no longer
        # exist: each embedded run gets a job store of its own.
        if not env.get("JOBS_DB"):
            job_dir = tempfile.TemporaryDirectory(prefix="kafka-live-video-jobs-")
            env["JOBS_DB"] = os.path.join(job_dir.name, "jobs.sqlite3")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    # The page's replay controls work out of the box for a local user; see README "Admin routes".
    env.setdefault("VIEWER_LOOPBACK_ADMIN", "1")
    children: dict[str, subprocess.Popen] = {}
    retention = None
    try:
        settings = Settings.from_env(env)
        generational = broker is not None and opts.embedded_retention_mb > 0
        # Two slots per topic: the generations of the sliding replay window (pipeline/generations.py).
        ensure_topics(settings, generation_specs(settings) if generational else None)
        for name, cmd in service_commands(opts).items():
            # Sessions of their own: a terminal's Ctrl-C reaches only this supervisor, which
            # stops each service once, in order, while the broker is still up (a second signal
            # mid-shutdown makes gunicorn's gevent worker die with a traceback).
            children[name] = subprocess.Popen(cmd, env=env, cwd=ROOT, start_new_session=True)
            log.info("started %s (pid %d)", name, children[name].pid)
        if generational:
            budget = opts.embedded_retention_mb << 20
            retention = EmbeddedRetention(settings, broker.process.pid, budget,
                                          producers_paused=lambda: _paused(children, "producer"),
                                          processors_paused=lambda: _paused(children, "processor"),
                                          window_s=opts.retention_s).start()
        print(f"viewer: http://{opts.host}:{opts.port}/  (Ctrl-C to stop)", flush=True)
        return _supervise(children, stop)
    finally:
        if retention is not None:
            retention.stop()
        _stop_all(children)
        if broker is not None:
            broker.stop()
        if job_dir is not None:
            job_dir.cleanup()


@contextmanager
def _paused(children: dict[str, subprocess.Popen], role: str) -> Iterator[None]:
    """Freeze the children whose name starts with `role` (SIGSTOP) while the embedded broker's
    topics are rotated: a record sent into the gap between delete and create would fail, or
    auto-create the topic with the wrong partition count. Producers stay frozen while the
    processors catch up; group sessions (6 s) easily outlast the milliseconds processors are."""
    paused = [child for name, child in children.items() if name.startswith(role) and child.poll() is None]
    for child in paused:
        child.send_signal(signal.SIGSTOP)
    try:
        # Requests already on the wire land in the old topics before they are deleted.
        time.sleep(0.05)
        yield
    finally:
        for child in paused:
            child.send_signal(signal.SIGCONT)


def _supervise(children: dict[str, subprocess.Popen], stop: threading.Event) -> int:
    while not stop.wait(0.5):
        for name, child in children.items():
            code = child.poll()
            if code is None or (name == "producer" and code == 0):
                continue
            log.error("%s exited with code %s; stopping the stack", name, code)
            return 1
    return 0


def _stop_all(children: dict[str, subprocess.Popen], timeout_s: float = 15.0) -> None:
    """SIGTERM every child, then wait for all of them within one shared deadline (each one
    finishes its in-flight work and commits while the broker is still up); kill stragglers."""
    for child in children.values():
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + timeout_s
    for name, child in children.items():
        try:
            child.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0f s; killing it", name, timeout_s)
            child.kill()
            child.wait()
