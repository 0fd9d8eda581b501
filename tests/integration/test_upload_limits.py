"""Upload admission on the real broker, with no processors (every admitted job stays in
progress): the active-job limit holds under concurrent uploads, one client gets 429 with
Retry-After past its own limit, and a full memory budget answers 503 before decoding."""

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


def make_client(settings, tmp_path, **config):
    settings = dataclasses.replace(settings, max_bodies_in_progress=100)  # all 50 bodies at once
    app = create_app({"SETTINGS": settings, "JOBS_DB": str(tmp_path / "jobs.db"), **config})
    assert viewer_of(app).uploads.collector.wait_ready(30)
    return app


def post(client, data: bytes, remote_addr: str = "127.0.0.1", forwarded_for: str | None = None):
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    return client.post("/upload", data={"image": (io.BytesIO(data), "photo.png"), "tile": "128"},
                       content_type="multipart/form-data", environ_base={"REMOTE_ADDR": remote_addr}, headers=headers)


def test_the_active_job_limit_holds_under_50_concurrent_uploads(settings, tmp_path):
    app = make_client(settings, tmp_path, MAX_ACTIVE_JOBS=8, MAX_JOBS_PER_CLIENT=1000)
    data = photo_bytes("astronaut.png")  # a decode of some milliseconds: the old check raced it
    statuses: Counter = Counter()
    lock = threading.Lock()
    start = threading.Barrier(50)

    def upload(i: int) -> None:
        client = app.test_client()
        start.wait()
        status = post(client, data, remote_addr=f"10.0.0.{i}").status_code
        with lock:
            statuses[status] += 1

    try:
        threads = [threading.Thread(target=upload, args=(i,)) for i in range(50)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert statuses == {202: 8, 429: 42}, statuses
        assert viewer_of(app).uploads.store.active_count() == 8
    finally:
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
            assert uploads.store.active_count() == 0  # the refused job is not left queued
        assert post(client, data).status_code == 202  # and once they are done, it fits
        assert uploads.memory.used == 0
    finally:
        uploads.close()
