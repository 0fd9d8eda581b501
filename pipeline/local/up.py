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

from kafka.errors import KafkaError

from pipeline.kafka import ensure_topics
from pipeline.local.broker import BrokerError, EmbeddedBroker
from pipeline.local.retention import DEFAULT_BUDGET_MB, DEFAULT_WINDOW_S, EmbeddedRetention, generation_specs
from pipeline.service import die_with_parent
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
    # Stop the whole stack when any part of it dies (CI), instead of restarting that part.
    exit_on_failure: bool = False


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
    stack = Stack(opts, env, broker)
    try:
        stack.settings = Settings.from_env(env)
        stack.ensure_topics()
        for name in service_commands(opts):
            stack.start(name)
        stack.start_retention()
        print(f"viewer: http://{opts.host}:{opts.port}/  (Ctrl-C to stop)", flush=True)
        return stack.supervise(stop)
    finally:
        stack.stop_retention()
        _stop_all(stack.children)
        if stack.broker is not None:
            stack.broker.stop()
        if job_dir is not None:
            job_dir.cleanup()


class Backoff:
    """Restart delays of one service: 1 s, doubling up to 30 s; back to 1 s once a run lasted
    a minute (a service that keeps dying is retried ever more slowly, a rare death at once)."""

    FIRST_S, MAX_S, STABLE_S = 1.0, 30.0, 60.0

    def __init__(self) -> None:
        self.delay_s = self.FIRST_S
        self.restarts = 0
        self.started = time.monotonic()
        self.due: float | None = None

    def died(self) -> float:
        """Note a death; the delay before the restart."""
        if time.monotonic() - self.started >= self.STABLE_S:
            self.delay_s = self.FIRST_S
        delay, self.delay_s = self.delay_s, min(self.MAX_S, self.delay_s * 2)
        self.due = time.monotonic() + delay
        return delay

    def ready(self) -> bool:
        return self.due is not None and time.monotonic() >= self.due

    def restarted(self) -> None:
        self.due, self.started = None, time.monotonic()
        self.restarts += 1


class Stack:
    """The running services (and the embedded broker): starts them, and restarts whatever dies."""

    def __init__(self, opts: UpOptions, env: dict[str, str], broker: EmbeddedBroker | None) -> None:
        self.opts, self.env, self.broker = opts, env, broker
        self.commands = service_commands(opts)
        self.children: dict[str, subprocess.Popen] = {}
        self.backoff: dict[str, Backoff] = {}
        self.settings: Settings | None = None
        self.retention: EmbeddedRetention | None = None

    def start(self, name: str) -> None:
        # Sessions of their own: a terminal's Ctrl-C reaches only this supervisor, which
        # stops each service once, in order, while the broker is still up (a second signal
        # mid-shutdown makes gunicorn's gevent worker die with a traceback). A SIGKILLed
        # supervisor takes them down with it (the parent-death signal).
        self.children[name] = subprocess.Popen(self.commands[name], env=self.env, cwd=ROOT, start_new_session=True,
                                               preexec_fn=die_with_parent(signal.SIGTERM))
        self.backoff.setdefault(name, Backoff())
        log.info("started %s (pid %d)", name, self.children[name].pid)

    @property
    def generational(self) -> bool:
        """Topics in two slots, for the embedded broker's sliding replay window (pipeline/generations.py)."""
        return self.broker is not None and self.opts.embedded_retention_mb > 0

    def ensure_topics(self) -> None:
        ensure_topics(self.settings, generation_specs(self.settings) if self.generational else None)

    def start_retention(self) -> None:
        if self.generational:
            budget = self.opts.embedded_retention_mb << 20
            self.retention = EmbeddedRetention(self.settings, self.broker.process.pid, budget,
                                               producers_paused=lambda: _paused(self.children, "producer"),
                                               processors_paused=lambda: _paused(self.children, "processor"),
                                               window_s=self.opts.retention_s).start()

    def stop_retention(self) -> None:
        if self.retention is not None:
            self.retention.stop()
            self.retention = None

    def supervise(self, stop: threading.Event) -> int:
        broker_backoff = Backoff()
        while not stop.wait(0.5):
            if self.broker is not None and self.broker.process.poll() is not None:
                code = self.broker.process.returncode
                if self.opts.exit_on_failure:
                    log.error("embedded broker exited with code %s; stopping the stack", code)
                    return 1
                if broker_backoff.due is None:
                    log.error("embedded broker exited with code %s; restarting it in %.0f s (its topics and "
                              "every record in them are lost)", code, broker_backoff.died())
                if broker_backoff.ready():
                    self._restart_broker(broker_backoff)
            for name, child in self.children.items():
                code = child.poll()
                if code is None or (name == "producer" and code == 0):
                    continue
                if self.opts.exit_on_failure:
                    log.error("%s exited with code %s; stopping the stack", name, code)
                    return 1
                backoff = self.backoff[name]
                if backoff.due is None:
                    log.error("%s exited with code %s; restarting it in %.0f s", name, code, backoff.died())
                if backoff.ready():
                    backoff.restarted()
                    self.start(name)
        return 0

    def _restart_broker(self, backoff: Backoff) -> None:
        """The same port, a fresh (empty) broker, the topics at their partition counts before any
        writer can ask for them (a client asking first would auto-create them with 4)."""
        self.stop_retention()
        try:
            with _paused(self.children, "producer"), _paused(self.children, "processor"):
                self.broker.start()
                self.ensure_topics()
        except (BrokerError, KafkaError) as exc:
            log.error("embedded broker restart failed (%s); retrying in %.0f s", exc, backoff.died())
            return
        backoff.restarted()
        log.info("embedded broker restarted on %s (restart %d); topics recreated empty", self.broker.bootstrap,
                 backoff.restarts)
        self.start_retention()


@contextmanager
def _paused(children: dict[str, subprocess.Popen], role: str) -> Iterator[None]:
    """Freeze the children whose name starts with `role` (SIGSTOP) while the embedded broker's
    topics are rotated: a record sent into the gap between delete and create would fail, or
    auto-create the topic with the wrong partition count. Producers stay frozen while the
    processors catch up; the processors' group session (1 s) easily outlasts the milliseconds they are."""
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
