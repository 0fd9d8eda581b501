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
