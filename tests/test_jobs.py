"""JobStore: job life cycle, duplicate tiles, pruning bounds, expiry and the collector cursor."""

from __future__ import annotations

import time

import pytest

from viewer.stills.store import JobStore


@pytest.fixture
def store(tmp_path) -> JobStore:
    return JobStore(str(tmp_path / "jobs.db"), keep=2, max_result_bytes=100)


def test_tiles_count_once_and_finish_the_job(store):
    store.create("a", "png", "grayscale", 64, 32, 2)
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
    assert store.result("a") == b"result" and store.tiles("a") == []
    assert store.add_tile("a", 1, "h1", b"t1", 32, 64) is None  # a late duplicate of a finished job


def test_a_dead_claim_expires_and_restarts_find_unassembled_jobs(store):
    store.create("a", "png", "grayscale", 1, 1, 1)
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
    store.create("a", "jpeg", "blur", 10, 10, 3)
    store.add_tile("a", 0, "h", b"t", 32, 64)
    store.fail("a", "processor: boom")
    status = store.get("a")
    assert (status.state, status.error) == ("failed", "processor: boom")
    assert store.tiles("a") == [] and store.result("a") is None and store.active_count() == 0


def test_only_the_newest_finished_jobs_are_kept(store):
    for name in "abc":
        store.create(name, "png", "grayscale", 1, 1, 1)
        store.finish(name, b"r")
        time.sleep(0.01)
    assert store.get("a") is None and store.get("b") and store.get("c")


def test_results_are_bounded_in_bytes(store):
    store.create("big", "png", "grayscale", 1, 1, 1)
    store.finish("big", b"x" * 80)
    time.sleep(0.01)
    store.create("next", "png", "grayscale", 1, 1, 1)
    store.finish("next", b"y" * 80)
    assert store.get("big") is None and store.result("next") == b"y" * 80


def test_unfinished_jobs_expire(store):
    store.create("old", "png", "grayscale", 1, 1, 1)
    store.expire(60)
    assert store.get("old").state == "queued"
    time.sleep(0.05)
    store.expire(0.01)
    assert store.get("old").state == "failed" and "timed out" in store.get("old").error


def test_state_and_cursor_survive_reopening(store):
    store.create("a", "png", "grayscale", 1, 1, 2)
    store.add_tile("a", 0, "h", b"t", 32, 64)
    store.save_cursor("processed", {0: 5, 1: 7})
    store.save_cursor("processed", {1: 9})
    again = JobStore(store.path)
    assert again.get("a").tiles_done == 1
    assert again.cursor("processed") == {0: 5, 1: 9} and again.cursor("dlq") == {}


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
    store.create("j", "png", "grayscale", 10, 10, 1)
    assert store.get("j").state == "queued"
    assert JobStore(path).get("j") is not None, "the current version's data is kept on reopen"
