"""viewer/stills/recent.py: the results a viewer process assembled last stay in memory within
their budget, and a download is served from there before the host's cache has stored them."""

from __future__ import annotations

import time

from pipeline.settings import Settings
from viewer.stills.jobstate import Entry, JobRecord, Limits
from viewer.stills.recent import RecentResults
from viewer.stills.store import JobStore
from viewer.stills.upload import JobLimits, Uploads


def test_the_oldest_results_go_first_beyond_the_budget():
    recent = RecentResults(memory_bytes=10)
    recent.put("a", b"aaaa")
    recent.put("b", b"bbbb")
    recent.put("a", b"AAAA")  # stored again: counted once, and now the newest
    assert recent.get("a") == b"AAAA" and recent.get("b") == b"bbbb"
    recent.put("c", b"cccc")
    assert recent.get("b") is None and recent.get("a") == b"AAAA" and recent.get("c") == b"cccc"
    recent.put("big", b"x" * 11)  # over the budget alone: not held, and nothing evicted for it
    assert recent.get("big") is None and recent.get("a") == b"AAAA" and recent.get("c") == b"cccc"


class AssembledHere:
    """A ready collector that has just assembled the job: its result is in memory, not cached yet."""

    def __init__(self, result: bytes) -> None:
        self.results = RecentResults()
        self.results.put("j", result)

    def wait_ready(self, timeout_s: float) -> bool:
        return True

    def assemble(self, job_id: str) -> None:
        raise AssertionError("the result was assembled already")

    def collect_again(self, entry: Entry, deadline: float) -> bool:
        raise AssertionError("the result was assembled already")


def test_a_result_is_served_from_memory_before_the_cache_has_it(tmp_path):
    store = JobStore(str(tmp_path / "jobs.db"))
    uploads = Uploads(Settings(), store, JobLimits())  # nothing connects until a reader starts
    uploads.collector = AssembledHere(b"result")
    record = JobRecord(job="j", state="done", format="png", transform="invert", width=8, height=8,
                       created_ms=int(time.time() * 1000), client="c", limits=Limits(8, 2, 600), tiles_total=1)
    assert store.result("j") is None
    assert uploads.result(Entry(record, admitted=True, offset=0), wait_s=1) == b"result"
