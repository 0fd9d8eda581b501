"""JobStore (the host's job cache): job life cycle, duplicate tiles, pruning bounds and expiry."""

from __future__ import annotations

import time

import pytest

from viewer.stills.store import JobStore


@pytest.fixture
def store(tmp_path) -> JobStore:
    return JobStore(str(tmp_path / "jobs.db"), keep=2, max_result_bytes=100)


def test_tiles_count_once_and_finish_the_job(store):
    store.ensure("a", "png", "grayscale", 64, 32, 2, time.time())
    assert store.get("a").state == "queued"
    assert store.add_tile("a", 0, "h0", b"t0", 32, 64).tiles_done == 1
    assert store.add_tile("a", 0, "h0", b"t0", 32, 64).tiles_done == 1  # redelivered: no double count
    status = store.add_tile("a", 1, "h1", b"t1", 32, 64)
    assert (status.state, status.tiles_done, status.tiles_total) == ("running", 2, 2)
    assert store.tiles("a") == [("h0", b"t0"), ("h1", b"t1")]
    assert store.claim_assembly("a") and not store.claim_assembly("a")  # one worker assembles
    store.finish("a", b"result")
    status = store.get("a")
    assert (status.state, status.out_width, status.out_height, status.result_bytes) == ("done", 32, 64, 6)
    assert store.result("a") == b"result"
    assert store.add_tile("a", 1, "h1", b"t1", 32, 64) is None  # a late duplicate of a finished job
    # Its tiles go once the job's end is published (deleting tens of MB must not delay it).
    assert len(store.tiles("a")) == 2
    store.drop_tiles("a")
    assert store.tiles("a") == []


def test_tiles_are_dropped_only_for_finished_jobs_and_on_reopening_for_those_left_behind(store):
    store.ensure("a", "png", "grayscale", 1, 1, 2, time.time())
    store.add_tile("a", 0, None, b"t", 1, 1)
    store.drop_tiles("a")
    assert store.tiles("a") == [(None, b"t")]  # still in progress
    store.ensure("b", "png", "grayscale", 1, 1, 1, time.time())
    store.add_tile("b", 0, None, b"t", 1, 1)
    store.finish("b", b"r")  # and the viewer stopped before drop_tiles
    again = JobStore(store.path)
    assert again.tiles("b") == [] and again.tiles("a") == [(None, b"t")]


def test_a_dead_claim_expires_and_restarts_find_unassembled_jobs(store):
    store.ensure("a", "png", "grayscale", 1, 1, 1, time.time())
    assert store.complete_unassembled() == [] and not store.claim_assembly("a")  # tiles missing
    store.add_tile("a", 0, None, b"t", 1, 1)
    assert store.complete_unassembled() == ["a"]
    assert store.claim_assembly("a", lease_s=60)
    assert not store.claim_assembly("a", lease_s=60)
    time.sleep(0.05)
    assert store.claim_assembly("a", lease_s=0.01)  # the first claimer died mid-way
    store.finish("a", b"r")
    assert store.complete_unassembled() == []


def test_unknown_job(store):
    assert store.get("nope") is None and store.result("nope") is None
    assert store.add_tile("nope", 0, None, b"x", 32, 64) is None


def test_failure_keeps_the_reason_and_drops_tiles(store):
    store.ensure("a", "jpeg", "blur", 10, 10, 3, time.time())
    store.add_tile("a", 0, "h", b"t", 32, 64)
    store.fail("a", "processor: boom")
    status = store.get("a")
    assert (status.state, status.error) == ("failed", "processor: boom")
    assert store.tiles("a") == [] and store.result("a") is None


def test_only_the_newest_finished_jobs_are_kept(store):
    for name in "abc":
        store.ensure(name, "png", "grayscale", 1, 1, 1, time.time())
        store.finish(name, b"r")
        time.sleep(0.01)
    assert store.get("a") is None and store.get("b") and store.get("c")


def test_results_are_bounded_in_bytes(store):
    store.ensure("big", "png", "grayscale", 1, 1, 1, time.time())
    store.finish("big", b"x" * 80)
    time.sleep(0.01)
    store.ensure("next", "png", "grayscale", 1, 1, 1, time.time())
    store.finish("next", b"y" * 80)
    assert store.get("big") is None and store.result("next") == b"y" * 80


def test_unfinished_jobs_are_evicted(store):
    store.ensure("old", "png", "grayscale", 1, 1, 2, time.time())
    store.add_tile("old", 0, "h", b"t", 1, 1)
    store.expire(60)
    assert store.get("old").state == "running"
    time.sleep(0.05)
    store.expire(0.01)
    assert store.get("old") is None and store.tiles("old") == []


def test_state_survives_reopening_and_ensure_keeps_what_is_cached(store):
    store.ensure("a", "png", "grayscale", 1, 1, 2, time.time())
    store.add_tile("a", 0, "h", b"t", 32, 64)
    again = JobStore(store.path)
    again.ensure("a", "png", "grayscale", 1, 1, 2, time.time())  # another worker learns of it too
    assert again.get("a").tiles_done == 1


def test_a_store_from_another_schema_version_is_recreated(tmp_path):
    import sqlite3

    path = str(tmp_path / "old.db")
    old = sqlite3.connect(path)
    # An earlier layout without the `claimed` column, as a previous release left it on disk.
    old.executescript("CREATE TABLE jobs (id TEXT PRIMARY KEY, state TEXT NOT NULL); INSERT INTO jobs VALUES ('x', 'queued');")
    old.commit()
    old.close()
    store = JobStore(path)
    assert store.get("x") is None
    store.ensure("j", "png", "grayscale", 10, 10, 1, time.time())
    assert store.get("j").state == "queued"
    assert JobStore(path).get("j") is not None, "the current version's data is kept on reopen"


def test_workers_opening_a_new_store_at_once_all_start(tmp_path):
    """Gunicorn workers (and replicas sharing JOBS_DB) create the file together. Connections
    switching it to WAL at the same moment get "database is locked" at once, without waiting;
    without the retry, about one round in twenty lost a worker (it exits, failing to boot)."""
    import threading

    for round_ in range(60):
        path = str(tmp_path / f"new-{round_}.db")
        start = threading.Barrier(6)
        errors: list[BaseException] = []

        def open_store(path=path, start=start, errors=errors):
            start.wait()
            try:
                JobStore(path).ensure("j", "png", "grayscale", 1, 1, 1, time.time())
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        workers = [threading.Thread(target=open_store) for _ in range(6)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert not errors, f"round {round_}: {errors[0]!r}"
        assert JobStore(path).get("j").state == "queued"
