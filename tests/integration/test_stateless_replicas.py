"""Still-image jobs on viewer replicas that share nothing but the broker: two `gunicorn -w 1`
processes on their own ports and one `gunicorn -w 2`, each host with a job cache of its own.
An upload on one is polled, followed (SSE) and downloaded on the others, byte for byte as one
replica serves it; a replica SIGKILLed mid-job does not stop the job, and once restarted it
serves the result too."""

from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pytest
import requests

from pipeline.transforms import parse_spec
from tests.support.gunicorn_server import Gunicorn, start_together, stop_together
from tests.support.photos import decode, photo, photo_bytes
from tests.support.topics import isolated_settings
from tests.support.uploads import JOB_WAIT_S, Processors

pytestmark = pytest.mark.integration

SPEC = "blur:ksize=9,sharpen"


def upload(url: str, data: bytes, transform: str = SPEC, tile: str = "128") -> dict:
    response = requests.post(f"{url}/upload", files={"image": ("photo.png", data)},
                             data={"transform": transform, "tile": tile}, timeout=60)
    assert response.status_code == 202, response.text
    return response.json()


def status(url: str, job: str) -> dict:
    response = requests.get(f"{url}/jobs/{job}", timeout=30)
    assert response.status_code == 200, (url, response.status_code, response.text)
    return response.json()


def wait_done(url: str, job: str, timeout_s: float = JOB_WAIT_S) -> dict:
    deadline = time.monotonic() + timeout_s
    while (current := status(url, job))["state"] not in ("done", "failed"):
        assert time.monotonic() < deadline, f"job {job} not done on {url}: {current}"
        time.sleep(0.2)
    assert current["state"] == "done", current
    return current


def result(url: str, job: str) -> bytes:
    response = requests.get(f"{url}/jobs/{job}/result", timeout=60)
    assert response.status_code == 200, (url, response.status_code, response.text)
    assert response.headers["Content-Type"] == "image/png"
    return response.content


def events(url: str, job: str) -> list[dict]:
    """The job's server-sent events from ``url`` until the stream ends (done or failed)."""
    with requests.get(f"{url}/jobs/{job}/events", stream=True, timeout=JOB_WAIT_S) as response:
        assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/event-stream")
        return [json.loads(line[len("data: "):]) for line in response.iter_lines(decode_unicode=True)
                if line.startswith("data: ")]


def kill_hard(server: Gunicorn) -> None:
    """SIGKILL the gunicorn master and its worker: nothing is shut down, nothing flushed."""
    worker = server.worker_pid()
    os.kill(server.proc.pid, signal.SIGKILL)
    os.kill(worker, signal.SIGKILL)
    server.proc.wait(10)


@pytest.fixture(scope="module")
def stack(broker, tmp_path_factory):
    """Processors, and three viewer deployments on one broker, each with a cache of its own."""
    settings = isolated_settings(broker)
    caches = tmp_path_factory.mktemp("caches")
    processors = Processors(settings, 2)
    servers = []
    try:
        servers = start_together(settings, *(({"JOBS_DB": str(caches / f"{name}.db")}, workers)
                                             for name, workers in (("a", 1), ("b", 1), ("g", 2))))
        yield settings, servers
    finally:
        stop_together(servers)
        processors.stop()


def test_upload_on_one_replica_is_followed_and_downloaded_on_the_others(stack):
    _, (a, b, g) = stack
    data = photo_bytes("astronaut.png")
    single = upload(a.url, data)
    wait_done(a.url, single["job"])
    baseline = result(a.url, single["job"])  # one replica, start to end
    assert np.array_equal(decode(baseline), parse_spec(SPEC)(photo("astronaut.png")))

    job = upload(a.url, data)["job"]
    # At once, on the other replicas: no 404 while their readers catch up with the job-state topic.
    assert status(b.url, job)["state"] in ("queued", "running", "done")
    assert status(g.url, job)["state"] in ("queued", "running", "done")
    progress = events(b.url, job)
    done = [event["tiles_done"] for event in progress]
    assert progress[-1]["state"] == "done" and done == sorted(done) and done[-1] == 16
    assert wait_done(g.url, job)["tiles_total"] == 16
    assert result(b.url, job) == baseline
    for _ in range(4):  # either worker of g may answer; each serves the same bytes
        assert result(g.url, job) == baseline

    job = upload(g.url, data)["job"]
    wait_done(a.url, job)
    assert result(a.url, job) == result(b.url, job) == baseline


def test_limits_hold_across_processes(broker, tmp_path):
    """MAX_JOBS_PER_CLIENT counted across two replicas: the third job of one client is refused
    wherever it lands (no processors run, so the first two stay in progress)."""
    settings = isolated_settings(broker)
    replicas = start_together(settings, *(({"JOBS_DB": str(tmp_path / f"{i}.db"), "MAX_JOBS_PER_CLIENT": "2"}, 1)
                                          for i in range(2)))
    try:
        data = photo_bytes("coffee.png")
        upload(replicas[0].url, data)
        upload(replicas[1].url, data)
        for replica in replicas:
            refused = requests.post(f"{replica.url}/upload", files={"image": ("photo.png", data)}, timeout=60)
            assert refused.status_code == 429 and "MAX_JOBS_PER_CLIENT" in refused.json()["error"], refused.text
            assert int(refused.headers["Retry-After"]) > 0
    finally:
        stop_together(replicas)


@pytest.mark.faults
def test_a_replica_killed_mid_job_does_not_lose_it(broker, tmp_path):
    """The job is admitted and its tiles published on A; A is SIGKILLed before any tile is
    processed. B finishes it and serves it; A, restarted on a fresh process, serves it too."""
    settings = isolated_settings(broker)
    cache_a = str(tmp_path / "a.db")
    a = Gunicorn(settings, {"JOBS_DB": cache_a})
    b = Gunicorn(settings, {"JOBS_DB": str(tmp_path / "b.db")})
    restarted = processors = None
    try:
        data = photo_bytes("coffee.png")
        job = upload(a.url, data, transform="invert")["job"]
        assert status(b.url, job)["state"] == "queued"
        kill_hard(a)
        processors = Processors(settings, 1)  # processing starts only now: A is gone
        wait_done(b.url, job)
        expected = 255 - photo("coffee.png")
        served = result(b.url, job)
        assert np.array_equal(decode(served), expected)
        restarted = Gunicorn(settings, {"JOBS_DB": cache_a})
        assert wait_done(restarted.url, job)["tiles_done"] == 20
        assert result(restarted.url, job) == served
    finally:
        for server in (a, b, restarted):
            if server is not None and server.proc.poll() is None:
                server.stop()
        if processors is not None:
            processors.stop()
