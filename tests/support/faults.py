"""The fault suite's tools: real service processes with their logs, a broker that can be stopped
and brought back on the same port, a reader that timestamps what reaches a topic, the viewer's
view of a stream, and the figures each fault test reports."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests
from kafka import TopicPartition

from pipeline.kafka import make_consumer
from pipeline.local.broker import free_port
from pipeline.settings import Settings
from pipeline.wire import decode_record
from tests.support.paths import ROOT, SAMPLE_VIDEO

# `make faults` runs the long forms (3 kills, a 3-minute soak); `make test` the short ones.
LONG = os.environ.get("FAULTS_LONG", "").lower() in ("1", "true", "yes")


def report(record_property, text: str) -> None:
    """One figure of a fault test: printed, and kept for the run's summary (conftest)."""
    record_property("figure", text)
    print(f"FIGURE {text}", flush=True)


def wait_until(condition: Callable[[], object], what: str, timeout_s: float = 60.0, every_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(every_s)
    return value


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise ProcessLookupError(pid)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def children_of(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


class Service:
    """A service as its own process (`python -m ...`), its output in a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}-{time.monotonic_ns()}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, *args], env=env, cwd=ROOT, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal_and_time(self, sig: int, timeout_s: float = 120.0) -> float:
        """Send `sig` and wait for the exit; the seconds it took."""
        started = time.monotonic()
        self.proc.send_signal(sig)
        self.proc.wait(timeout_s)
        return time.monotonic() - started

    def stop(self) -> None:
        """Whatever state it is in: SIGTERM, then SIGKILL the whole session after 20 s."""
        stop_all([self])


def stop_all(services: list[Service]) -> None:
    """Service.stop for several at once: every one gets its SIGTERM before any is waited for,
    so their graceful stops overlap (20 s for all of them, then SIGKILL)."""
    for service in services:
        if service.proc.poll() is None:
            service.proc.terminate()
    deadline = time.monotonic() + 20
    for service in services:
        try:
            service.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(service.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        service.proc.wait()


def producer_args(stream: str = "cam", fps: str = "25") -> list[str]:
    return ["-m", "producer", "--source", SAMPLE_VIDEO, "--stream", stream, "--fps", fps, "--loop", "--quiet"]


def processor_args(name: str, transform: str = "grayscale") -> list[str]:
    return ["-m", "processor", "--transform", transform, "--id", name]


def viewer_args(port: int) -> list[str]:
    return ["-m", "gunicorn", "-k", "gevent", "-w", "1", "-b", f"127.0.0.1:{port}", "--graceful-timeout", "5",
            "--log-level", "warning", "viewer:create_app()"]


class BrokerProcess:
    """`python -m pipeline broker --port P`: stopped and started again on the same port."""

    def __init__(self, log_dir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.log_dir = log_dir
        self.service: Service | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> BrokerProcess:
        self.service = Service("broker", ["-m", "pipeline", "broker", "--port", str(self.port)], dict(os.environ),
                               self.log_dir)
        wait_until(lambda: "broker: " in self.service.log() or self.service.proc.poll() is not None,
                   "the broker to listen", 30)
        assert self.service.proc.poll() is None, self.service.log()
        return self

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()


@dataclass
class Arrival:
    seq: int
    partition: int
    timestamp_ms: int  # the record's CreateTime: when its producer sent it
    seen: float  # time.monotonic() when read


@dataclass
class TopicWatcher:
    """Reads every partition of a topic from the start in a thread, keeping each frame's
    arrival; follows the topic when the broker restarts (a recreated topic)."""

    settings: Settings
    topic: str
    stream: str = "cam"
    arrivals: list[Arrival] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        consumer = make_consumer(self.settings, "fault-watcher")
        try:
            parts = wait_until(lambda: consumer.partitions_for_topic(self.topic), f"topic {self.topic}", 60)
            consumer.assign([TopicPartition(self.topic, p) for p in sorted(parts)])
            while not self._stop.is_set():
                for records in consumer.poll(timeout_ms=100).values():
                    now = time.monotonic()
                    got = [Arrival(f.seq, r.partition, r.timestamp, now)
                           for r, f in ((r, decode_record(r)) for r in records) if f.stream == self.stream]
                    with self._lock:
                        self.arrivals.extend(got)
        finally:
            consumer.close()

    def snapshot(self) -> list[Arrival]:
        with self._lock:
            return list(self.arrivals)

    def seqs(self) -> list[int]:
        return [a.seq for a in self.snapshot()]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(30)


class ViewerProbe:
    """The viewer as a client sees it: /healthz and the newest frame of a stream."""

    def __init__(self, url: str, stream: str = "cam") -> None:
        self.url, self.stream = url, stream

    def health(self) -> int:
        try:
            return requests.get(f"{self.url}/healthz", timeout=3).status_code
        except requests.RequestException:
            return 0

    def newest_seq(self) -> int | None:
        try:
            response = requests.get(f"{self.url}/snapshot/{self.stream}.jpg", timeout=5)
        except requests.RequestException:
            return None
        return int(response.headers["X-Frame-Seq"]) if response.status_code == 200 else None


def serving(url: str) -> bool:
    try:
        requests.get(f"{url}/healthz", timeout=3)
        return True
    except requests.RequestException:
        return False


# The one line each service logs at a stop that could not deliver or commit everything.
LOST_LINE = re.compile(r"^.*\bat exit\b.*$", re.M)
