"""Live frames keep flowing while a heavy still-image job runs (real broker, a processor process).

A feed sends a live stream to the raw topic at a steady rate; an upload through the viewer asks
for seconds of processing. The processor's live output during the job window is counted against
what the feed sent meanwhile. When job tiles shared the raw topic's partitions with live frames,
the processor worked through batches of tiles while live frames queued behind them, too long to
be shown live.
"""

from __future__ import annotations

import subprocess
import sys
import time

import cv2
import pytest

from pipeline.wire import decode_record
from tests.support.frame_feed import BIG, FrameFeed, images
from tests.support.photos import large_photo
from tests.support.processor_group import Topic
from tests.support.topics import settings_env
from tests.support.uploads import submit, wait_done
from viewer import create_app
from viewer.extension import viewer_of
from viewer.live.hub import LIVE_WINDOW_MS

# Serial: it counts frames processed in time, which the rest of the machine also decides.
pytestmark = [pytest.mark.integration, pytest.mark.serial]

FPS = 20
# Seconds of one core on the processor (well under MAX_JOB_WORK_S), in 64 tiles of 512 px.
HEAVY = ",".join(["blur:ksize=31"] * 5)
# Generous: a shared, loaded machine may cost the live stream some frames anyway.
LIVE_SHARE = 0.6


def live_outputs(records: list, start_ms: int, end_ms: int) -> int:
    """Live frames read from the source within [start_ms, end_ms] whose processed output was sent
    in time to be shown live (the viewer's live hub skips frames later than LIVE_WINDOW_MS)."""
    frames = [(decode_record(r), r.timestamp) for r in records]
    return sum(1 for frame, sent_ms in frames
               if frame.stream == "live" and start_ms <= frame.ts_ms <= end_ms and sent_ms - frame.ts_ms <= LIVE_WINDOW_MS)


def test_live_frames_keep_their_rate_while_a_heavy_job_runs(settings, tmp_path):
    photo = cv2.imencode(".png", large_photo(4096), [cv2.IMWRITE_PNG_COMPRESSION, 1])[1].tobytes()
    processor = subprocess.Popen([sys.executable, "-m", "processor", "--transform", "grayscale", "--group", "prio"],
                                 env=settings_env(settings), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    app = create_app({"SETTINGS": settings, "JOBS_DB": str(tmp_path / "jobs.sqlite3")})
    processed = Topic(settings, settings.processed_topic)
    try:
        with FrameFeed(settings, settings.raw_topic, {"live": (BIG, images(BIG, False))}, fps=FPS):
            processed.wait_for(lambda records: len(records) >= 2 * FPS, "the processor's first live frames")
            client = app.test_client()
            assert viewer_of(app).uploads.collector.wait_ready(30)
            started = time.time()
            job = submit(client, photo, transform=HEAVY, tile="512")["job"]
            wait_done(client, job)
            ended = time.time()
            processed.wait_for(lambda records: max(r.timestamp for r in records) > ended * 1000 + 1000,
                               "live frames after the job")
        window_s = ended - started
        got = live_outputs(processed.records, int(started * 1000), int(ended * 1000))
        assert window_s > 2, f"the job took {window_s:.1f} s: too light to show anything"
        assert got >= LIVE_SHARE * FPS * window_s, (
            f"{got} live frames processed in the {window_s:.1f} s job window, {FPS * window_s:.0f} sent")
    finally:
        viewer_of(app).shutdown()
        processed.consumer.close()
        processor.terminate()
        processor.wait(30)
