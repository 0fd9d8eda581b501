"""Status requests (viewer/stills/upload.py): the host's job cache is swept for stale jobs now
and then, not on every request (a client polling a job's status pays no write each time)."""

from __future__ import annotations

import dataclasses
import time

import pytest

from pipeline.settings import Settings
from viewer.stills import upload
from viewer.stills.jobstate import Entry, JobRecord, Limits
from viewer.stills.recent import RecentResults
from viewer.stills.store import JobStore
from viewer.stills.upload import JobLimits, Uploads


class CountingStore(JobStore):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.sweeps = 0

    def expire(self, max_age_s: float) -> None:
        self.sweeps += 1
        super().expire(max_age_s)


def test_status_requests_sweep_the_cache_at_most_every_expire_interval(tmp_path):
    store = CountingStore(str(tmp_path / "jobs.db"))
    uploads = Uploads(Settings(), store, JobLimits())  # nothing connects until a reader starts
    record = JobRecord(job="j", state="queued", format="png", transform="invert", width=8, height=8,
                       created_ms=int(time.time() * 1000), client="c", limits=Limits(8, 2, 600), tiles_total=1)
    uploads.entry = lambda job_id: Entry(record, admitted=True, offset=0)
    now = [1000.0]
    uploads._clock = lambda: now[0]

    for _ in range(5):
        assert uploads.status("j").state == "queued"
    assert store.sweeps == 1
    now[0] += upload.EXPIRE_EVERY_S - 0.1
    uploads.status("j")
    assert store.sweeps == 1
    now[0] += 0.2
    uploads.status("j")
    assert store.sweeps == 2


class CollectorFinishingMeanwhile:
    """A reader that is ready, and whose live reading finishes the job while a read again
    looks for its tiles (which then no longer count as new)."""

    def __init__(self, store: JobStore, finishes: bool) -> None:
        self.store, self.finishes = store, finishes
        self.results = RecentResults()  # nothing assembled by this process

    def wait_ready(self, timeout_s: float) -> bool:
        return True

    def collect_again(self, entry: Entry, deadline: float) -> bool:
        if self.finishes:
            self.store.finish(entry.record.job, b"result")
        return False

    def assemble(self, job_id: str) -> None:
        raise AssertionError("no complete set of tiles was cached")


def test_a_result_finished_during_a_read_again_is_served_and_only_a_missing_one_is_gone(tmp_path):
    store = JobStore(str(tmp_path / "jobs.db"))
    uploads = Uploads(Settings(), store, JobLimits())
    record = JobRecord(job="j", state="done", format="png", transform="invert", width=8, height=8,
                       created_ms=int(time.time() * 1000), client="c", limits=Limits(8, 2, 600), tiles_total=2)
    entry = Entry(record, admitted=True, offset=0)
    store.ensure("j", "png", "invert", 8, 8, 2, time.time())
    store.add_tile("j", 0, "tile", b"t0", 8, 8)  # half the tiles when the request came

    uploads.collector = CollectorFinishingMeanwhile(store, finishes=True)
    assert uploads.result(entry, wait_s=5) == b"result"

    store.ensure("k", "png", "invert", 8, 8, 2, time.time())
    uploads.collector = CollectorFinishingMeanwhile(store, finishes=False)
    with pytest.raises(upload.ResultGone):
        uploads.result(Entry(dataclasses.replace(record, job="k"), admitted=True, offset=0), wait_s=5)
