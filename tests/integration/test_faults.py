"""The fault suite: kill and stop real service processes on the real embedded broker the way an
operator meets it, and check that the pipeline loses nothing and comes back by itself.

Each test reports its figure (takeover seconds, recovery seconds, stop seconds, MB/min) in the
run's summary. `make faults` runs the long forms (FAULTS_LONG=1); `make test` the short ones.

R1  kill -9 one of two processors mid-stream            0 seqs missing, duplicates counted
R2  viewer SIGTERM / SIGKILL with ?viewer= clients      resume with no gap
R3  broker away 10 s, back on the same port             everything recovers by itself
R3b SIGTERM to every service while the broker is down   each exits, saying what it lost
R7  soak at --fps max with clients coming and going     memory flat, descriptors back
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time

import pytest
import requests

from pipeline.kafka import ensure_topics
from pipeline.local.broker import free_port
from pipeline.settings import Settings
from tests.support.faults import (
    LONG,
    LOST_LINE,
    BrokerProcess,
    Service,
    TopicWatcher,
    ViewerProbe,
    alive,
    children_of,
    open_fds,
    processor_args,
    producer_args,
    report,
    rss_mb,
    serving,
    stop_all,
    viewer_args,
    wait_until,
)
from tests.support.frame_feed import SMALL, FrameFeed, images
from tests.support.gunicorn_server import Gunicorn
from tests.support.mjpeg_client import iter_parts, read_parts
from tests.support.paths import ROOT
from tests.support.topics import isolated_settings, settings_env

pytestmark = [pytest.mark.integration, pytest.mark.faults]

ASSIGNED = re.compile(r"assigned partitions \[([\d, ]*)\]")


def assigned(service: Service) -> set[int] | None:
    """The partitions the processor's log says it owns now (None before its first assignment)."""
    found = ASSIGNED.findall(service.log())
    return {int(p) for p in found[-1].split(",") if p.strip()} if found else None


def split_between(processors: list[Service], partitions: int) -> bool:
    owned = [assigned(p) for p in processors]
    if not all(owned):
        return False
    return sum(len(o) for o in owned) == partitions and set().union(*owned) == set(range(partitions))


# ---- R1 -------------------------------------------------------------------------------------

def test_r1_kill_9_of_the_working_processor_loses_nothing(broker, tmp_path, record_property):
    settings = isolated_settings(broker)
    env = settings_env(settings)
    producer = Service("producer", producer_args(fps="25"), env, tmp_path)
    raw, processed = TopicWatcher(settings, settings.raw_topic), TopicWatcher(settings, settings.processed_topic)
    processors = [Service(f"p{i}", processor_args(f"p{i}"), env, tmp_path) for i in range(2)]
    takeovers = []
    try:
        stream_partition = wait_until(raw.snapshot, "raw frames")[0].partition
        for round_ in range(3 if LONG else 1):
            wait_until(lambda: split_between(processors, settings.partitions), "two processors splitting the partitions")
            victim = next(p for p in processors if stream_partition in assigned(p))
            before = len(processed.snapshot())
            wait_until(lambda before=before: len(processed.snapshot()) > before + 25, "the victim processing the stream")
            killed_ms = time.time() * 1000
            victim.proc.kill()
            victim.proc.wait()
            first = wait_until(lambda k=killed_ms: [a for a in processed.snapshot() if a.timestamp_ms > k],
                               "output after the kill", 120)
            takeovers.append((first[0].timestamp_ms - killed_ms) / 1000)
            processors.remove(victim)
            processors.append(Service(f"p{round_ + 2}", processor_args(f"p{round_ + 2}"), env, tmp_path))
        producer.signal_and_time(signal.SIGTERM)
        wait_until(lambda: len(raw.snapshot()) and set(raw.seqs()) <= set(processed.seqs()),
                   "every raw frame processed", 120, every_s=0.5)
    finally:
        stop_all([producer, *processors])
        raw.close()
        processed.close()
    sent, done = set(raw.seqs()), processed.seqs()
    missing = sent - set(done)
    duplicates = len(done) - len(set(done))
    report(record_property, f"R1 kill -9 x{len(takeovers)}: takeover {', '.join(f'{t:.1f}' for t in takeovers)} s "
                            f"(target <= 3 s); {len(sent)} seqs, {len(missing)} missing, {duplicates} duplicated")
    assert not missing


# ---- R2 -------------------------------------------------------------------------------------

class ResumingClient(threading.Thread):
    """Reads /stream/cam.mjpg?viewer=ID from one server after another, keeping every seq."""

    def __init__(self, viewer_id: str) -> None:
        super().__init__(daemon=True)
        self.viewer_id = viewer_id
        self.seqs: list[int] = []
        self.sessions: list[tuple[int, int]] = []  # (index of the first seq, of the last + 1) per server
        self.url: str | None = None
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            url = self.url
            if url is None:
                time.sleep(0.05)
                continue
            start = len(self.seqs)
            try:
                with requests.get(f"{url}/stream/cam.mjpg?viewer={self.viewer_id}", stream=True, timeout=10) as response:
                    if response.status_code == 200:
                        for part in iter_parts(response.raw):
                            if not self.seqs or part.seq != self.seqs[-1]:  # keep-alive repeats collapsed
                                self.seqs.append(part.seq)
            except Exception:  # noqa: BLE001 (a killed server ends the response any way it can: urllib3, requests, OSError)
                pass
            if len(self.seqs) > start:
                self.sessions.append((start, len(self.seqs)))
            if self.url == url:
                time.sleep(0.1)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_r2_viewer_restart_resumes_viewer_clients_without_a_gap(broker, tmp_path, record_property, sig):
    settings = isolated_settings(broker)
    client = ResumingClient(f"r2-{sig.name.lower()}")
    jobs = {"JOBS_DB": str(tmp_path / "jobs.sqlite3")}
    with FrameFeed(settings, settings.processed_topic, {"cam": (SMALL, images(SMALL, False))}):
        first = Gunicorn(settings, jobs)
        second = None
        try:
            client.start()
            client.url = first.url
            wait_until(lambda: len(client.seqs) >= 30, "the client reading from the first server")
            if sig == signal.SIGKILL:
                worker = first.worker_pid()
                os.kill(first.proc.pid, signal.SIGKILL)
                os.kill(worker, signal.SIGKILL)
                first.proc.wait(10)
            else:
                first.stop()
            seen_before = len(client.seqs)
            second = Gunicorn(settings, jobs)
            client.url = second.url
            wait_until(lambda: len(client.seqs) >= seen_before + 30, "the client reading from the second server")
        finally:
            client.done.set()
            client.url = None
            for server in (first, second):
                if server is not None and server.proc.poll() is None:
                    server.stop()
            client.join(15)
    (_, a_end), (b_start, _) = client.sessions[0], client.sessions[1]
    last_before, first_after = client.seqs[a_end - 1], client.seqs[b_start]
    gap = max(0, first_after - last_before - 1)
    repeated = max(0, last_before - first_after + 1)
    report(record_property, f"R2 viewer {sig.name}: last seq {last_before} before, first {first_after} after: "
                            f"gap {gap}, repeated {repeated}")
    assert gap == 0
    assert client.seqs[b_start:] == list(range(first_after, first_after + len(client.seqs) - b_start))


# ---- R3 / R3b: the broker goes away -----------------------------------------------------------

class StandaloneStack:
    """Broker (`python -m pipeline broker`), producer, processor and viewer, each its own process."""

    def __init__(self, tmp_path, fps: str = "25") -> None:
        self.broker = BrokerProcess(tmp_path).start()
        self.settings = Settings(bootstrap_servers=self.broker.bootstrap)
        ensure_topics(self.settings)
        env = settings_env(self.settings) | {"JOBS_DB": str(tmp_path / "jobs.sqlite3")}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.services = {
            "producer": Service("producer", producer_args(fps=fps), env, tmp_path),
            "processor": Service("processor", processor_args("r3"), env, tmp_path),
            "viewer": Service("viewer", viewer_args(self.port), env, tmp_path),
        }
        self.probe = ViewerProbe(self.url)

    def wait_for_frames(self, timeout_s: float = 60.0) -> int:
        wait_until(lambda: serving(self.url), "the viewer to serve", timeout_s)
        return wait_until(self.probe.newest_seq, "frames at the viewer", timeout_s)

    def close(self) -> None:
        stop_all(list(self.services.values()))
        self.broker.stop()


def outage_and_return(probe: ViewerProbe, stop_broker, start_broker, outage_s: float) -> tuple[float, float, bool]:
    """Stop the broker, keep it away `outage_s`, bring it back; (seconds from its return to a new
    frame at the viewer, seconds to /healthz 200, whether /healthz said 503 meanwhile)."""
    wait_until(probe.newest_seq, "a frame before the outage")
    stop_broker()
    said_503 = False
    away_until = time.monotonic() + max(outage_s, 1.0)  # at least long enough for frames in transit to land
    while time.monotonic() < away_until:
        said_503 |= probe.health() == 503
        time.sleep(0.5)
    before = probe.newest_seq() or -1
    start_broker()
    back = time.monotonic()
    healthy = frames = None
    deadline = back + 60
    while (healthy is None or frames is None) and time.monotonic() < deadline:
        now = time.monotonic()
        if frames is None and (probe.newest_seq() or -1) > before:
            frames = now - back
        if healthy is None and probe.health() == 200:
            healthy = now - back
        time.sleep(0.1)
    assert frames is not None, "no new frame reached the viewer within 60 s of the broker's return"
    assert healthy is not None, "/healthz never answered 200 again"
    return frames, healthy, said_503


def test_r3_standalone_services_recover_from_a_broker_outage(tmp_path, record_property):
    stack = StandaloneStack(tmp_path)
    results = []
    try:
        stack.wait_for_frames()
        for _ in range(3 if LONG else 1):
            results.append(outage_and_return(stack.probe, stack.broker.stop, stack.broker.start, 10.0))
            assert all(s.proc.poll() is None for s in stack.services.values()), "a service died in the outage"
    finally:
        stack.close()
    report(record_property, "R3 standalone, broker away 10 s: frames "
           + ", ".join(f"{f:.1f}" for f, _, _ in results) + " s after its return (target <= 5 s); /healthz 200 after "
           + ", ".join(f"{h:.1f}" for _, h, _ in results) + " s")
    assert all(said_503 for _, _, said_503 in results)


def test_r3b_every_service_stops_within_10_s_with_the_broker_down(tmp_path, record_property):
    stack = StandaloneStack(tmp_path)
    took = {}
    try:
        stack.wait_for_frames()
        stack.broker.stop()
        time.sleep(2)  # let every client notice
        for service in stack.services.values():
            service.proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        while len(took) < len(stack.services) and time.monotonic() - started < 60:
            for name, service in stack.services.items():
                if name not in took and service.proc.poll() is not None:
                    took[name] = time.monotonic() - started
            time.sleep(0.05)
        took |= {name: float("inf") for name in stack.services if name not in took}
    finally:
        stack.close()
    lines = {name: LOST_LINE.findall(s.log()) for name, s in stack.services.items() if name != "viewer"}
    report(record_property, "R3b SIGTERM with the broker down: " + ", ".join(f"{n} {t:.1f} s" for n, t in took.items())
           + " (target <= 10 s)")
    assert all(t <= 10 for t in took.values()), took
    assert all(len(found) == 1 for found in lines.values()), lines


# ---- R3 under `pipeline up` ------------------------------------------------------------------

class UpStack:
    def __init__(self, tmp_path, *extra: str) -> None:
        self.port, self.broker_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"} | {"PYTHONPATH": ROOT}
        self.up = Service("up", ["-m", "pipeline", "up", "--port", str(self.port), "--broker-port",
                                 str(self.broker_port), *extra], env, tmp_path)
        self.probe = ViewerProbe(self.url, "sample")  # the producer names the stream after the file

    def broker_pid(self) -> int:
        return int(re.findall(r"embedded broker listening on \S+ \(pid (\d+)\)", self.up.log())[-1])

    def pids(self) -> list[int]:
        return [self.up.pid, *children_of(self.up.pid), *(c for p in children_of(self.up.pid) for c in children_of(p))]

    def close(self) -> None:
        pids = self.pids()
        self.up.stop()
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_r3_pipeline_up_restarts_a_killed_broker(tmp_path, record_property):
    stack = UpStack(tmp_path)
    try:
        wait_until(lambda: serving(stack.url), "the viewer to serve")
        wait_until(stack.probe.newest_seq, "frames at the viewer")
        killed = []

        def kill_broker() -> None:
            killed.append(stack.broker_pid())
            os.kill(killed[-1], signal.SIGKILL)

        def wait_for_restart() -> None:
            wait_until(lambda: stack.broker_pid() != killed[-1], "pipeline up to restart the broker", 60)

        frames, healthy, said_503 = outage_and_return(stack.probe, kill_broker, wait_for_restart, 0.0)
        health = requests.get(f"{stack.url}/healthz", timeout=10).json()
        log = stack.up.log()
    finally:
        stack.close()
    report(record_property, f"R3 pipeline up, broker SIGKILL: frames {frames:.1f} s after the restart "
                            f"(target <= 5 s), /healthz 200 after {healthy:.1f} s")
    assert re.search(r"embedded broker exited with code -9; restarting it", log), log[-3000:]
    assert "embedded broker restarted on" in log
    assert health["broker_restarted_at"] is not None  # the page's banner says the history is gone


# ---- R7 --------------------------------------------------------------------------------------

class ChurningClient(threading.Thread):
    """Connects to the stream, reads a few frames, leaves, and again, until stopped; every
    fifth client resumes as ?viewer=<its name>."""

    def __init__(self, url: str, index: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.url = f"{url}?viewer=soak-{index}" if index % 5 == 0 else url
        self.index, self.stop = index, stop
        self.visits = 0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                with requests.get(self.url, stream=True, timeout=10) as response:
                    for n, _ in enumerate(iter_parts(response.raw)):
                        if n >= 1 + (self.visits + self.index) % 20 or self.stop.is_set():
                            break
                self.visits += 1
            except Exception:  # noqa: BLE001 (counted by visits not growing; the fds check below is the judge)
                time.sleep(0.2)


def slope_mb_per_min(samples: list[tuple[float, float]]) -> float:
    import numpy as np

    t, mb = np.array(samples).T
    return float(np.polyfit(t / 60.0, mb, 1)[0])


@pytest.mark.serial  # measures memory and descriptors of the whole stack
def test_r7_soak_at_max_fps_with_clients_coming_and_going(tmp_path, record_property):
    duration_s = 180 if LONG else 20
    stack = UpStack(tmp_path, "--fps", "max")
    stop = threading.Event()
    clients: list[ChurningClient] = []
    try:
        wait_until(lambda: serving(stack.url), "the viewer to serve")
        wait_until(stack.probe.newest_seq, "frames at the viewer")
        started = dict(re.findall(r"started (\S+) \(pid (\d+)\)", stack.up.log()))
        pids = {name: int(pid) for name, pid in started.items()} | {"broker": stack.broker_pid()}
        pids["viewer-worker"] = wait_until(lambda: children_of(pids["viewer"]), "the gunicorn worker")[0]
        # Warm-up: caches, connections, the first rotations of the broker's topics, and what a
        # process opens once for all on its first streams of each kind (the control topic's reader
        # and writer, the metrics files of every worker, part buffers). The first rotation is waited
        # for: readers open connections to a new generation once, and on a loaded machine the
        # first rotations came only during the soak (descriptors +5 in the viewer, +6 in the broker).
        for url in (f"{stack.url}/stream/sample.mjpg", f"{stack.url}/stream/sample.mjpg?viewer=soak-warm-up"):
            read_parts(url, count=3)
        wait_until(lambda: "(rotation " in stack.up.log(), "the broker's first rotation", 120, every_s=0.5)
        time.sleep(3)
        fds_before = {name: open_fds(pid) for name, pid in pids.items()}
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in pids}
        clients = [ChurningClient(f"{stack.url}/stream/sample.mjpg", i, stop) for i in range(50)]
        for client in clients:
            client.start()
        began = time.monotonic()
        while (now := time.monotonic()) - began < duration_s:
            for name, pid in pids.items():
                samples[name].append((now - began, rss_mb(pid)))
            time.sleep(1.0)
        stop.set()
        for client in clients:
            client.join(15)
        visits = sum(c.visits for c in clients)
        try:
            wait_until(lambda: all(open_fds(pid) <= fds_before[name] + 5 for name, pid in pids.items()),
                       "every process's descriptors back to where they were", 60, every_s=0.5)
        except AssertionError as exc:
            now_open = {name: open_fds(pid) for name, pid in pids.items()}
            raise AssertionError(f"{exc}: before {fds_before}, now {now_open}") from None
        fds_after = {name: open_fds(pid) for name, pid in pids.items()}
        restarts = "restarting" in stack.up.log()
    finally:
        stop.set()
        stack.close()
    # The first third is the clients' ramp (buffers, greenlets, connections): the slope is of the rest.
    slopes = {name: slope_mb_per_min([x for x in s if x[0] >= duration_s / 3]) for name, s in samples.items()}
    peaks = {name: max(mb for _, mb in s) for name, s in samples.items()}
    report(record_property, f"R7 soak {duration_s} s at --fps max, 50 clients, {visits} visits: RSS slope MB/min "
           + ", ".join(f"{n} {slopes[n]:+.1f} (peak {peaks[n]:.0f} MB)" for n in pids)
           + "; fds " + ", ".join(f"{n} {fds_before[n]}->{fds_after[n]}" for n in pids))
    assert visits > 50 and not restarts


def test_pipeline_up_restarts_a_killed_processor_and_exit_on_failure_stops_instead(tmp_path):
    supervised = UpStack(tmp_path)
    try:
        wait_until(supervised.probe.newest_seq, "frames at the viewer")
        first = int(re.search(r"started processor-1 \(pid (\d+)\)", supervised.up.log())[1])
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: len(re.findall(r"started processor-1 \(pid \d+\)", supervised.up.log())) == 2,
                   "pipeline up to start the processor again")
        before = wait_until(supervised.probe.newest_seq, "a frame")
        wait_until(lambda: (supervised.probe.newest_seq() or -1) > before, "frames after the restart")
        log = supervised.up.log()
        assert supervised.up.proc.poll() is None
    finally:
        supervised.close()
    assert re.search(r"processor-1 exited with code -9; restarting it in 1 s", log), log[-3000:]

    strict = UpStack(tmp_path, "--exit-on-failure")
    try:
        wait_until(strict.probe.newest_seq, "frames at the viewer")
        os.kill(strict.broker_pid(), signal.SIGKILL)
        code = strict.up.proc.wait(60)
        log = strict.up.log()
    finally:
        strict.close()
    assert code == 1 and "embedded broker exited with code -9; stopping the stack" in log, log[-3000:]
