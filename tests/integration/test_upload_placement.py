"""Work-aware tile placement on the real broker (viewer/stills/placement.py): with one of two
processors stopped (SIGSTOP), a tiled job's tiles go to the one that works, the stopped one gets
only a window per partition, and the job still completes with the right result once it resumes
(or once the group hands its partitions over)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import cv2
import numpy as np
import pytest
from kafka import TopicPartition

from pipeline.kafka import make_consumer
from pipeline.transforms import parse_spec
from pipeline.wire import header_of
from tests.support.paths import ROOT
from tests.support.photos import large_photo
from tests.support.processes import stop_all_on_sigterm
from tests.support.tile_trace import read_trace
from tests.support.topics import isolated_settings, settings_env
from tests.support.uploads import JOB_WAIT_S, result_image, submit, wait_done
from viewer import create_app
from viewer.extension import viewer_of
from viewer.stills.placement import WINDOW

pytestmark = pytest.mark.integration

SPEC = "blur:ksize=5"
TILE = 128
SIDE = 1024  # 64 tiles of 128 px
TILES = (SIDE // TILE) ** 2


def traced_processor(settings, group: str, trace: str) -> subprocess.Popen:
    """``python -m processor`` in the group, logging each job tile it does to ``trace``."""
    return subprocess.Popen([sys.executable, "-m", "tests.support.tile_trace", trace, "--quiet", "--group", group],
                            env=settings_env(settings), cwd=ROOT)


def partitions_of(trace: str, job: str) -> set[int]:
    return {partition for _, _, partition in read_trace(trace, job)}


def jobs_topic_tiles(settings, job: str) -> list:
    """Every tile record of ``job`` in the jobs topic."""
    consumer = make_consumer(settings, "test-reader")
    try:
        tps = [TopicPartition(settings.jobs_topic, p) for p in sorted(consumer.partitions_for_topic(settings.jobs_topic))]
        consumer.assign(tps)
        consumer.seek_to_beginning()
        records = []
        while batches := consumer.poll(timeout_ms=1000):
            records += [r for batch in batches.values() for r in batch if header_of(r, "job") == job.encode()]
        return records
    finally:
        consumer.close()


def test_a_stopped_processor_gets_few_tiles_and_the_job_still_completes(broker, tmp_path):
    settings = isolated_settings(broker)
    group = f"placement-{uuid.uuid4().hex[:8]}"
    traces = [str(tmp_path / f"tiles-{i}.txt") for i in range(2)]
    members = [traced_processor(settings, group, trace) for trace in traces]
    app = create_app({"SETTINGS": settings, "JOBS_DB": str(tmp_path / "jobs.db")})
    client = app.test_client()
    image = large_photo(SIDE)
    data = cv2.imencode(".png", image)[1].tobytes()
    stopped = False
    try:
        # Until both members hold two of the four jobs partitions: each did tiles of one job,
        # from partitions of its own.
        deadline = time.monotonic() + JOB_WAIT_S
        while True:
            warm_up = submit(client, data, transform=SPEC, tile=str(TILE))["job"]
            wait_done(client, warm_up)
            time.sleep(0.5)  # the traces are written once a tile's output is sent, maybe after its collection
            working, resting = (partitions_of(trace, warm_up) for trace in traces)
            if len(working) == len(resting) == 2 and not working & resting:
                break
            assert time.monotonic() < deadline, f"the group did not split the partitions: {working}, {resting}"

        os.kill(members[1].pid, signal.SIGSTOP)
        stopped = True
        job = submit(client, data, transform=SPEC, tile=str(TILE))
        os.kill(members[1].pid, signal.SIGCONT)
        stopped = False
        wait_done(client, job["job"])
        assert np.array_equal(result_image(client, job["job"], "image/png"), parse_spec(SPEC)(image))

        # Tiles sent to the stopped member's partitions before anyone could process them: the
        # working member took them over if the group dropped the stopped one (its session ended).
        time.sleep(0.5)
        work = read_trace(traces[0], job["job"])
        taken_over = min((t for t, _, partition in work if partition in resting), default=float("inf"))
        held = [r for r in jobs_topic_tiles(settings, job["job"])
                if r.partition in resting and r.timestamp / 1000 < taken_over]
        assert len(held) <= len(resting) * WINDOW, f"{len(held)} of {TILES} tiles went to the stopped processor"
        assert len({index for _, index, _ in work}) >= TILES - len(resting) * WINDOW
    finally:
        if stopped:
            os.kill(members[1].pid, signal.SIGCONT)
        viewer_of(app).shutdown()
        stop_all_on_sigterm(members, "processor")
