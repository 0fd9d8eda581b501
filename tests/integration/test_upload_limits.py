"""Upload admission on the real broker, with no processors (every admitted job stays in
progress): the active-job limit holds under concurrent uploads, on one replica and across two
that share only the broker, one client gets 429 with Retry-After past its own limit (on
whichever replica it lands), and a full memory budget answers 503 before decoding."""

from __future__ import annotations

import dataclasses
import io
import threading
from collections import Counter

import pytest

from tests.support.photos import photo_bytes
from viewer import create_app
from viewer.extension import viewer_of

pytestmark = pytest.mark.integration


def make_client(settings, tmp_path, name: str = "jobs.db", **config):
    """A viewer app with a job cache of its own (``name``): a replica sharing only the broker."""
    settings = dataclasses.replace(settings, max_bodies_in_progress=100)  # all 50 bodies at once
    app = create_app({"SETTINGS": settings, "JOBS_DB": str(tmp_path / name), **config})
    assert viewer_of(app).uploads.ready(30)
    return app


def in_progress(app) -> int:
    """Jobs in progress as the job-state topic has them, read to its end."""
    jobs = viewer_of(app).uploads.jobs
    assert jobs.sync()
    return len(jobs.in_progress())


def post(client, data: bytes, remote_addr: str = "127.0.0.1", forwarded_for: str | None = None):
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    return client.post("/upload", data={"image": (io.BytesIO(data), "photo.png"), "tile": "128"},
                       content_type="multipart/form-data", environ_base={"REMOTE_ADDR": remote_addr}, headers=headers)


def concurrent_uploads(apps: list, count: int, data: bytes) -> Counter:
    """``count`` uploads at once from distinct clients, spread over ``apps`` in turn."""
    statuses: Counter = Counter()
    lock = threading.Lock()
    start = threading.Barrier(count)

    def upload(i: int) -> None:
        client = apps[i % len(apps)].test_client()
        start.wait()
        status = post(client, data, remote_addr=f"10.0.0.{i}").status_code
        with lock:
            statuses[status] += 1

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return statuses


def test_the_active_job_limit_holds_under_50_concurrent_uploads(settings, tmp_path):
    app = make_client(settings, tmp_path, MAX_ACTIVE_JOBS=8, MAX_JOBS_PER_CLIENT=1000)
    try:
        # A decode of some milliseconds: the old check raced it.
        statuses = concurrent_uploads([app], 50, photo_bytes("astronaut.png"))
        assert statuses == {202: 8, 429: 42}, statuses
        assert in_progress(app) == 8
    finally:
        viewer_of(app).shutdown()


def test_the_active_job_limit_holds_across_two_replicas(settings, tmp_path):
    """Two replicas with caches of their own: the job-state topic's order admits 8 in all, not 8 each."""
    apps = [make_client(settings, tmp_path, f"jobs-{i}.db", MAX_ACTIVE_JOBS=8, MAX_JOBS_PER_CLIENT=1000)
            for i in range(2)]
    try:
        statuses = concurrent_uploads(apps, 40, photo_bytes("astronaut.png"))
        assert statuses == {202: 8, 429: 32}, statuses
        assert [in_progress(app) for app in apps] == [8, 8]
    finally:
        for app in apps:
            viewer_of(app).shutdown()


def test_one_client_is_held_to_its_limit_on_every_replica(settings, tmp_path):
    first, second = (make_client(settings, tmp_path, f"jobs-{i}.db", MAX_JOBS_PER_CLIENT=2) for i in range(2))
    data = photo_bytes("astronaut.png")
    try:
        assert [post(first.test_client(), data).status_code, post(second.test_client(), data).status_code] == [202, 202]
        refused = post(first.test_client(), data)
        assert refused.status_code == 429 and "MAX_JOBS_PER_CLIENT" in refused.get_json()["error"]
        assert post(second.test_client(), data).status_code == 429
        assert post(second.test_client(), data, remote_addr="10.1.2.3").status_code == 202
    finally:
        for app in (first, second):
            viewer_of(app).shutdown()


def test_one_client_past_its_limit_gets_429_with_retry_after(settings, tmp_path):
    app = make_client(settings, tmp_path, MAX_JOBS_PER_CLIENT=2)
    client = app.test_client()
    data = photo_bytes("astronaut.png")
    try:
        assert [post(client, data).status_code for _ in range(2)] == [202, 202]
        refused = post(client, data)
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
        assert "MAX_JOBS_PER_CLIENT" in refused.get_json()["error"]
        assert post(client, data, remote_addr="10.1.2.3").status_code == 202  # another client is not held up
    finally:
        viewer_of(app).shutdown()


# Every request comes from the proxy's address, 127.0.0.1; each carries the forwarded address shown.
FORWARDED = ["198.51.100.1", "198.51.100.1", "198.51.100.2", "198.51.100.3, 198.51.100.1"]


@pytest.mark.parametrize("trusted, statuses", [
    # One trusted proxy: each client is the address it appended (the last); an entry the client
    # wrote itself (198.51.100.3) changes nothing.
    (1, [202, 429, 202, 429]),
    # By default anyone could claim any address: the header is ignored, every upload is one client's.
    (0, [202, 429, 429, 429]),
])
def test_per_client_limit_behind_a_proxy(settings, tmp_path, trusted, statuses):
    app = make_client(dataclasses.replace(settings, trusted_proxies=trusted), tmp_path, MAX_JOBS_PER_CLIENT=1)
    client = app.test_client()
    data = photo_bytes("astronaut.png")
    try:
        assert [post(client, data, forwarded_for=address).status_code for address in FORWARDED] == statuses
    finally:
        viewer_of(app).shutdown()


def test_a_full_memory_budget_answers_503_and_admits_nothing(settings, tmp_path):
    app = make_client(settings, tmp_path, UPLOAD_MEMORY_BYTES=10_000_000)
    uploads = viewer_of(app).uploads
    client = app.test_client()
    data = photo_bytes("astronaut.png")  # 512x512: 786 kB decoded
    try:
        with uploads.memory.reservation() as others:
            others.grow(9_500_000, timeout_s=0)  # other uploads in flight
            refused = post(client, data)
            assert refused.status_code == 503 and int(refused.headers["Retry-After"]) > 0
            assert "UPLOAD_MEMORY_BYTES" in refused.get_json()["error"]
            assert in_progress(app) == 0  # the refused job is not left queued
        assert post(client, data).status_code == 202  # and once they are done, it fits
        assert uploads.memory.used == 0
    finally:
        viewer_of(app).shutdown()
