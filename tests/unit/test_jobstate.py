"""The job-state topic's fold (viewer.stills.jobstate): admission by log order, expiry by record time,
first terminal record wins, compaction, hostile records; and the status a replica answers."""

from __future__ import annotations

import json

import pytest

from viewer.stills.jobstate import JobBook, JobRecord, JobRecordError, Limits
from viewer.stills.store import JobStatus
from viewer.stills.upload import job_status

T0 = 1_700_000_000_000
LIMITS = Limits(2, 1, 60)


def record(job: str, state: str = "requested", client: str = "10.0.0.1", created_ms: int = T0,
           limits: Limits = LIMITS, **more) -> JobRecord:
    return JobRecord(job=job, state=state, format="png", transform="grayscale", width=64, height=48,
                     created_ms=created_ms, client=client, limits=limits, **more)


class Log:
    """A job-state topic partition: records in order, each applied to a book as a replica would."""

    def __init__(self, keep: int = 50) -> None:
        self.book = JobBook(keep)
        self.offset = 0

    def write(self, rec: JobRecord | None, at_ms: int = T0, job: str | None = None):
        key = (rec.job if rec else job).encode()
        entry = self.book.apply(self.offset, at_ms, key, rec.to_value() if rec else None)
        self.offset += 1
        return entry


def test_requests_are_admitted_in_log_order_until_the_active_limit():
    log = Log()
    verdicts = [log.write(record(f"j{i}", client=f"c{i}")).admitted for i in range(3)]
    assert verdicts == [True, True, False]
    assert "MAX_ACTIVE_JOBS" in log.book.get("j2").refusal
    log.write(record("j0", "done", client="c0"))  # one finishes: room again
    assert log.write(record("j3", client="c3")).admitted


def test_one_client_is_held_to_its_own_limit():
    log = Log()
    assert log.write(record("a", client="same")).admitted
    refused = log.write(record("b", client="same"))
    assert not refused.admitted and "MAX_JOBS_PER_CLIENT" in refused.refusal
    assert log.write(record("c", client="other")).admitted


def test_the_limits_are_the_requests_own():
    """Replicas configured differently still agree: each request carries what it asks under."""
    log = Log()
    log.write(record("a", client="x"))
    log.write(record("b", client="y"))
    assert log.write(record("c", client="z", limits=Limits(3, 1, 60))).admitted


def test_every_replica_reaches_the_same_verdicts():
    records = [record(f"j{i}", client=f"c{i % 3}") for i in range(6)]
    books = [Log(), Log()]
    verdicts = [[log.write(r).admitted for r in records] for log in books]
    assert verdicts[0] == verdicts[1] == [True, True, False, False, False, False]


def test_expiry_is_measured_by_record_time():
    log = Log()
    log.write(record("old", client="a", limits=Limits(1, 1, 10)))
    assert not log.write(record("early", client="b", limits=Limits(1, 1, 10)), at_ms=T0 + 9_000).admitted
    late = log.write(record("late", client="b", limits=Limits(1, 1, 10)), at_ms=T0 + 10_001)
    assert late.admitted, "the first job passed its deadline: it no longer counts"
    entry = log.book.get("old")
    assert entry.state_at(T0 + 5_000) == "requested" and entry.state_at(T0 + 10_001) == "failed"
    assert "timed out after 10 s" in entry.error_at(T0 + 10_001)


def test_the_first_terminal_record_wins():
    log = Log()
    log.write(record("j"))
    log.write(record("j", "queued", tiles_total=4))
    log.write(record("j", "done", tiles_total=4, out_width=64, out_height=48))
    after = log.write(record("j", "failed", error="assembly: late duplicate"))
    assert after.record.state == "done" and after.record.error is None


def test_a_request_is_decided_once():
    log = Log()
    first = log.write(record("j"))
    again = log.write(record("j"))
    assert again is first


def test_a_refused_job_stays_refused_and_a_tombstone_forgets_it():
    log = Log()
    log.write(record("a", client="x"))
    log.write(record("b", client="x"))
    assert not log.write(record("b", "queued", client="x", tiles_total=1)).admitted
    log.write(None, job="b")
    assert log.book.get("b") is None


def test_a_compacted_log_keeps_the_outcome():
    """Compaction leaves each job's newest record; a job seen first as queued was admitted."""
    log = Log()
    entry = log.write(record("j", "queued", tiles_total=3, tiles_from={"processed:0": 17}))
    assert entry.admitted and entry.record.tiles_from == {"processed:0": 17}
    assert [e.record.job for e in log.book.in_progress(T0)] == ["j"]


def test_only_the_newest_finished_jobs_are_kept():
    log = Log(keep=2)
    for name in "abc":
        log.write(record(name, client=name))
        log.write(record(name, "done", client=name))
    assert sorted(log.book.jobs) == ["b", "c"] and log.book.pruned == ["a"]


def test_a_record_round_trips():
    rec = record("j", "done", tiles_total=2, tiles_from={"p:0": 1, "p.b:3": 9}, out_width=5, out_height=6,
                 finished_ms=T0 + 1)
    assert Log().write(rec).record == rec


VALID = json.loads(record("j").to_value())


@pytest.mark.parametrize("key, value, reason", [
    (b"j", b"not json", "not JSON"),
    (b"j", b"[1]", "not a JSON object"),
    (b"other", json.dumps(VALID).encode(), "key is not its job id"),
    (None, json.dumps(VALID).encode(), "key is not its job id"),
    (b"j", json.dumps(VALID | {"state": "paused"}).encode(), "unknown state"),
    (b"j", json.dumps(VALID | {"format": "gif"}).encode(), "unknown format"),
    (b"j", json.dumps(VALID | {"width": -1}).encode(), "width"),
    (b"j", json.dumps(VALID | {"width": True}).encode(), "width"),
    (b"j", json.dumps(VALID | {"limits": {"max_active": 0}}).encode(), "max_active"),
    (b"j", json.dumps(VALID | {"tiles_from": {"p:0": -5}}).encode(), "tiles_from"),
    (b"j", json.dumps(VALID | {"tiles_from": [1]}).encode(), "tiles_from"),
    (b"j", json.dumps(VALID | {"transform": "x" * 5000}).encode(), "transform"),
    (b"j", b" " * 70_000, "not a job document"),
])
def test_a_record_that_is_not_a_job_changes_nothing(key, value, reason):
    log = Log()
    with pytest.raises(JobRecordError, match=reason):
        log.book.apply(0, T0, key, value)
    assert log.book.jobs == {}


def cached(tiles_done: int, state: str = "running") -> JobStatus:
    return JobStatus("j", state, "png", "grayscale", 64, 48, 4, tiles_done, T0 / 1000, None, None, 64, 48, 0)


def test_status_combines_the_topic_with_this_hosts_progress():
    log = Log()
    entry = log.write(record("j"))
    assert job_status(entry, None, T0).state == "queued"
    entry = log.write(record("j", "queued", tiles_total=4))
    assert (job_status(entry, None, T0).state, job_status(entry, None, T0).tiles_done) == ("queued", 0)
    running = job_status(entry, cached(3), T0)
    assert (running.state, running.tiles_done, running.tiles_total) == ("running", 3, 4)
    entry = log.write(record("j", "done", tiles_total=4, out_width=64, out_height=48, finished_ms=T0 + 2500))
    done = job_status(entry, None, T0 + 9000)  # another replica finished it; nothing cached here
    assert (done.state, done.tiles_done, done.elapsed_s) == ("done", 4, 2.5)


def test_status_of_a_job_past_its_deadline_is_failed():
    entry = Log().write(record("j", "queued", tiles_total=4, limits=Limits(2, 1, 10)))
    status = job_status(entry, cached(1), T0 + 11_000)
    assert status.state == "failed" and "timed out" in status.error and status.elapsed_s == 10.0
