"""Still-job tiles travel on the jobs topic and their outputs on the job results topic, and
tiles an older viewer writes to the raw topic, or without the ``out`` header, still come back
as a finished job (mixed versions during an upgrade)."""

from __future__ import annotations

import dataclasses
import time

import cv2
import numpy as np
import pytest

from pipeline.transforms import parse_spec
from pipeline.wire import decode_record
from tests.support.photos import large_photo
from tests.support.processor_group import Topic
from tests.support.uploads import Processors, result_image, submit, wait_done
from viewer import create_app
from viewer.extension import viewer_of

pytestmark = pytest.mark.integration


def png(side: int) -> bytes:
    return cv2.imencode(".png", large_photo(side), [cv2.IMWRITE_PNG_COMPRESSION, 1])[1].tobytes()


def job_records(settings, topic: str, count: int) -> list:
    reader = Topic(settings, topic)
    try:
        records = reader.wait_for(lambda r: len(r) >= count, f"{count} records on {topic}")
        return [decode_record(r) for r in records]
    finally:
        reader.consumer.close()


def test_a_new_viewer_writes_job_tiles_to_the_jobs_topic_not_the_raw_one(settings, tmp_path):
    app = create_app({"SETTINGS": settings, "JOBS_DB": str(tmp_path / "jobs.sqlite3")})
    try:
        job = submit(app.test_client(), png(1024), transform="grayscale", tile="256")
    finally:
        viewer_of(app).shutdown()
    tiles = job_records(settings, settings.jobs_topic, job["tiles_total"])
    assert {t.job for t in tiles} == {job["job"]} and len(tiles) == job["tiles_total"] == 16
    raw = Topic(settings, settings.raw_topic)
    try:
        assert raw.consumer.poll(timeout_ms=2000) == {}
    finally:
        raw.consumer.close()


def test_job_tiles_an_older_viewer_writes_to_the_raw_topic_still_finish(settings, tmp_path):
    processors = Processors(settings, 1)
    # What a viewer from before the jobs topic did: its tiles on the raw topic.
    older = dataclasses.replace(settings, jobs_topic=settings.raw_topic)
    app = create_app({"SETTINGS": older, "JOBS_DB": str(tmp_path / "jobs.sqlite3")})
    data = png(1024)
    try:
        client = app.test_client()
        job = submit(client, data, transform="grayscale", tile="256")
        wait_done(client, job["job"])
        out = result_image(client, job["job"], "image/png")
    finally:
        viewer_of(app).shutdown()
        processors.stop()
    expected = parse_spec("grayscale")(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR))
    assert np.array_equal(out, expected)


def run_job(settings, tmp_path, data: bytes) -> np.ndarray:
    """Upload ``data`` (grayscale, 256 px tiles) with one processor running; the result's pixels."""
    processors = Processors(settings, 1)
    app = create_app({"SETTINGS": settings, "JOBS_DB": str(tmp_path / "jobs.sqlite3")})
    try:
        client = app.test_client()
        job = submit(client, data, transform="grayscale", tile="256")
        wait_done(client, job["job"])
        return result_image(client, job["job"], "image/png")
    finally:
        viewer_of(app).shutdown()
        processors.stop()


def grayscale_of(data: bytes) -> np.ndarray:
    return parse_spec("grayscale")(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR))


def held(settings, topic: str) -> list:
    """Every record ``topic`` holds now."""
    reader = Topic(settings, topic)
    try:
        return reader.drain()
    finally:
        reader.consumer.close()


def test_job_outputs_go_to_the_job_results_topic_which_the_live_hub_does_not_read(settings, tmp_path):
    data = png(1024)
    assert np.array_equal(run_job(settings, tmp_path, data), grayscale_of(data))
    results = [decode_record(r) for r in held(settings, settings.job_results_topic)]
    assert len(results) == 16 and all(r.job and r.tile for r in results)
    assert held(settings, settings.processed_topic) == []


def test_job_records_without_the_out_header_still_finish_through_the_processed_topic(settings, tmp_path, monkeypatch):
    from viewer.stills import upload

    monkeypatch.setattr(upload, "OUT_RESULTS", None)  # what a viewer from before the header wrote
    data = png(1024)
    assert np.array_equal(run_job(settings, tmp_path, data), grayscale_of(data))
    assert len(held(settings, settings.processed_topic)) == 16
    assert held(settings, settings.job_results_topic) == []


def test_an_idle_jobs_group_keeps_offsets_on_the_jobs_topic_so_rotations_wait_for_it(settings, monkeypatch):
    """Embedded retention waits for the groups with offsets on a slot it recycles; a jobs group
    that has processed nothing yet (or whose offsets went with recycled slots) commits its
    positions while idle, so the tiles of its next job are waited for too."""
    from pipeline.offsets import OffsetTool
    from processor import jobs

    monkeypatch.setattr(jobs, "MARK_EVERY_S", 0.5)
    processors = Processors(settings, 1)
    try:
        with OffsetTool(settings) as tool:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                # Its own jobs group: the broker also lists those of earlier tests' processors.
                group = jobs.job_group(processors.group)
                if group in tool.groups() and any(tp.topic == settings.jobs_topic for tp in tool.committed(group)):
                    break
                time.sleep(0.5)
            else:
                raise AssertionError("the idle jobs group never committed offsets on the jobs topic")
    finally:
        processors.stop()
