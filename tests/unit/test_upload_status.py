"""Status requests (viewer/stills/upload.py): the host's job cache is swept for stale jobs now
and then, not on every request (a client polling a job's status pays no write each time)."""

from __future__ import annotations

import time

from pipeline.settings import Settings
from viewer.stills import upload
from viewer.stills.jobstate import Entry, JobRecord, Limits
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
