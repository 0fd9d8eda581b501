"""`pipeline up --retention W` on the embedded broker: across several rotations the replayable
window of the processed stream never drops below W, and it slides (old history goes)."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import requests
from kafka.errors import KafkaError

from pipeline.generations import stream_windows
from pipeline.local.broker import free_port
from pipeline.offsets import OffsetsError, OffsetTool
from pipeline.settings import Settings
from tests.support.compose_file import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.serial]

WINDOW_S = 8
ROTATIONS = 3  # the first only adds a generation; the next two each recycle one
ROTATION_LINE = re.compile(r"replay reaches back (\S+) s, now \d+ MB \(rotation (\d+)\)")


def rotations(log_path) -> int:
    with open(log_path, errors="replace") as f:
        return len(ROTATION_LINE.findall(f.read()))


def oldest_frame_ms(settings: Settings) -> int | None:
    """The oldest frame of stream `sample` any reader can replay (every generation)."""
    try:
        with OffsetTool(settings) as tool:
            windows = stream_windows(tool, settings.processed_topic, "sample")
    except (KafkaError, OffsetsError):
        return None  # a generation being recycled just now
    return windows[0].first_ms if windows else None


def live_stalled(url: str) -> bool | None:
    """Whether the viewer says stream `sample` stalled (no new frame for 2 s); None if unknown."""
    try:
        streams = requests.get(f"{url}/streams", timeout=5).json()["streams"]
    except (requests.RequestException, ValueError):
        return None
    return next((s["stalled"] for s in streams if s["stream"] == "sample"), None)


def test_replay_window_never_drops_below_the_promise_across_rotations(tmp_path):
    port, broker_port = free_port(), free_port()
    settings = dataclasses.replace(Settings(), bootstrap_servers=f"127.0.0.1:{broker_port}")
    log_path = tmp_path / "up.log"
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    cmd = [
        sys.executable, "-m", "pipeline", "up", "--fps", "25", "--port", str(port), "--broker-port", str(broker_port),
        "--retention", f"{WINDOW_S}s",
    ]
    with open(log_path, "wb") as log:
        up = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        first = None
        deadline = time.monotonic() + 60
        while first is None:
            assert time.monotonic() < deadline and up.poll() is None, log_path.read_text()[-2000:]
            first = oldest_frame_ms(settings)
            time.sleep(0.3)
        reach, stalls = [], []
        deadline = time.monotonic() + 40 + ROTATIONS * WINDOW_S * 2
        while rotations(log_path) < ROTATIONS:
            assert time.monotonic() < deadline and up.poll() is None, f"only {rotations(log_path)} rotations"
            oldest = oldest_frame_ms(settings)
            now_ms = time.time() * 1000
            if oldest is not None and now_ms - first >= WINDOW_S * 1000:
                reach.append((now_ms - oldest) / 1000)
            stalls.append(live_stalled(f"http://127.0.0.1:{port}"))
            time.sleep(0.3)
        print(f"{len(reach)} samples over {ROTATIONS} rotations: replay reached back {min(reach):.1f}-{max(reach):.1f} s")
        assert len(reach) > 20
        assert min(reach) >= WINDOW_S
        # The live view goes on through every rotation (readers of both generations notice a
        # recreated one while still busy with the other).
        assert stalls.count(True) == 0, stalls
        # It slides: the oldest generation went, the history did not just grow from the start.
        assert oldest_frame_ms(settings) > first + WINDOW_S * 1000
        # The oldest kept frames really replay: a clip from the start of the window.
        response = requests.get(f"http://127.0.0.1:{port}/clip/sample.mp4", params={"from": f"-PT{WINDOW_S}S"}, timeout=120)
        assert response.status_code == 200, response.text
        assert int(response.headers["X-Clip-Frames"]) > WINDOW_S * 20
    finally:
        up.send_signal(signal.SIGTERM)
        code = up.wait(30)
    assert code == 0, log_path.read_text()[-3000:]
