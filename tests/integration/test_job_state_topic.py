"""The job-state topic's reader (viewer.stills.joblog) on the real broker: records written in one
batch (whose end the embedded broker reports short) do not make it start over, and a topic
deleted and made again is followed, its old jobs forgotten."""

from __future__ import annotations

import logging
import time
import uuid

import pytest
from kafka.admin import NewTopic

from pipeline.kafka import make_admin, make_producer
from tests.support.waiting import wait_until
from viewer.stills.joblog import JobLog
from viewer.stills.jobstate import JobRecord, Limits

pytestmark = pytest.mark.integration


def queued(job: str) -> JobRecord:
    return JobRecord(job=job, state="queued", format="png", transform="invert", width=8, height=8,
                     created_ms=int(time.time() * 1000), client="10.0.0.1", limits=Limits(8, 2, 600), tiles_total=1)


@pytest.fixture
def log(settings):
    jobs = JobLog(settings)
    assert jobs.wait_ready(30)
    yield jobs
    jobs.stop()
    jobs.close()


def test_a_batch_of_records_is_read_once(settings, log, caplog):
    producer = make_producer(settings, "test", linger_ms=200)  # one batch: Tansu reports its end short
    try:
        jobs = [uuid.uuid4().hex for _ in range(5)]
        for job in jobs:
            producer.send(settings.job_state_topic, key=job.encode(), value=queued(job).to_value(), partition=0)
        producer.flush()
    finally:
        producer.close()
    with caplog.at_level(logging.WARNING, logger="viewer.stills.joblog"):
        assert all(log.entry(job) is not None for job in jobs)
        time.sleep(2.5)  # idle: a reader comparing its position to the reported end would start over
        assert all(log.entry(job) is not None for job in jobs)
    assert "recreated" not in caplog.text


def test_a_recreated_topic_is_followed(settings, log):
    old = uuid.uuid4().hex
    log.publish(queued(old))
    assert log.entry(old) is not None
    admin = make_admin(settings)
    try:
        admin.delete_topics([settings.job_state_topic])
        wait_until(lambda: settings.job_state_topic not in admin.list_topics(), "the topic to go")
        admin.create_topics([NewTopic(settings.job_state_topic, 1, 1)])
    finally:
        admin.close()
    new = uuid.uuid4().hex
    log.publish(queued(new))
    wait_until(lambda: log.entry(new) is not None and log.book.get(old) is None, "the new topic read, the old jobs gone")


def tombstones(settings) -> list[bytes]:
    from tests.support.processor_group import Topic

    topic = Topic(settings, settings.job_state_topic)
    try:
        return [r.key for r in topic.drain() if r.value is None]
    finally:
        topic.close()


def test_jobs_dropped_past_keep_are_tombstoned_once(settings):
    """So a compacted topic stays bounded; a replica reading the history does not write them again."""
    first = JobLog(settings, keep=2)
    assert first.wait_ready(30)
    try:
        jobs = [uuid.uuid4().hex for _ in range(4)]
        for job in jobs:
            first.publish(queued(job).but(state="done"))
        wait_until(lambda: len(tombstones(settings)) == 2, "two tombstones")
        second = JobLog(settings, keep=2)
        try:
            assert second.wait_ready(30) and second.sync()
            assert sorted(e.record.job for e in second.entries()) == sorted(jobs[2:])
        finally:
            second.stop()
            second.close()
        time.sleep(1.0)  # anything the second would have written is in by now
        assert sorted(tombstones(settings)) == sorted(job.encode() for job in jobs[:2])
    finally:
        first.stop()
        first.close()
