"""`pipeline up` stops cleanly on a terminal's Ctrl-C, which reaches its whole process group."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import requests

from pipeline.local.broker import free_port
from tests.support.faults import alive
from tests.support.paths import ROOT

STARTED = re.compile(r"(?:started \S+|embedded broker listening on \S+) \(pid (\d+)\)")


def test_ctrl_c_to_the_process_group_stops_every_service_cleanly(tmp_path):
    port = free_port()
    log_path = tmp_path / "up.log"
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    cmd = [sys.executable, "-m", "pipeline", "up", "--port", str(port), "--broker-port", str(free_port())]
    with open(log_path, "wb") as log:
        # A session of its own stands in for the terminal's foreground process group.
        up = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert up.poll() is None, log_path.read_text()[-3000:]
            try:
                if requests.get(f"http://127.0.0.1:{port}/streams", timeout=5).json()["streams"]:
                    break
            except (requests.ConnectionError, requests.Timeout):  # gunicorn accepts before its worker has imported the app
                pass
            time.sleep(0.3)
        else:
            raise AssertionError("no frame reached the viewer")
        pids = [int(p) for p in STARTED.findall(log_path.read_text())]
        assert len(pids) == 4, pids  # broker, producer, processor, viewer

        os.killpg(up.pid, signal.SIGINT)
        code = up.wait(60)
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
    text = log_path.read_text()
    assert code == 0, text[-3000:]
    assert "killing it" not in text, "a service had to be killed: " + text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert not [pid for pid in pids if alive(pid)], "a service outlived pipeline up"
