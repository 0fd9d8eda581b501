"""The exact commands docker-compose.yml runs (topic init, producer, processor, viewer, the
viewer's healthcheck), run here as processes against the embedded broker: frames must flow."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time
import uuid

import pytest
import requests

from pipeline.kafka import make_admin, topic_specs
from pipeline.local.broker import free_port
from pipeline.settings import Settings
from tests.support.compose_file import load_compose, service_env
from tests.support.mjpeg_client import read_parts
from tests.support.nginx import Nginx
from tests.support.paths import ROOT
from tests.support.topics import settings_env

# Serial: its processor joins with a 1 s group session, and in the parallel run (once in five) it
# never got the sample to the viewer within a minute while the other worker loaded the machine.
pytestmark = [pytest.mark.integration, pytest.mark.serial]


def local_command(command: list[str], viewer_port: int) -> list[str]:
    """The container's command for this machine: this interpreter, and the viewer's port."""
    out = [sys.executable if arg == "python" else arg for arg in command]
    return [re.sub(r":8000\b", f":{viewer_port}", arg) if "8000" in arg else arg for arg in out]


def local_env(compose: dict, service: str, settings: Settings) -> dict[str, str]:
    """The service's environment minus values naming compose hosts, then this test's broker and
    isolated topic names."""
    hosts = set(compose["services"])
    env = {k: v for k, v in service_env(compose, service).items() if v.split(":")[0] not in hosts}
    return dict(os.environ) | env | settings_env(settings)


@pytest.fixture(scope="module")
def compose_stack(broker, tmp_path_factory):
    compose = load_compose()
    tag = uuid.uuid4().hex[:8]
    # Topics named but not created: the compose `topics` service must create them.
    settings = dataclasses.replace(
        Settings(bootstrap_servers=broker.bootstrap),
        raw_topic=f"c-raw-{tag}", processed_topic=f"c-processed-{tag}",
        heartbeat_topic=f"c-heartbeat-{tag}", dead_letter_topic=f"c-dlq-{tag}", control_topic=f"c-control-{tag}",
        job_state_topic=f"c-jobstate-{tag}",
    )
    port = free_port()
    logs = tmp_path_factory.mktemp("compose")
    log_files = []

    def start(service: str, command: list[str] | None = None, log_name: str | None = None) -> subprocess.Popen:
        cmd = local_command(command or compose["services"][service]["command"], port)
        log_files.append(open(logs / f"{log_name or service}.log", "wb"))
        log = log_files[-1]
        return subprocess.Popen(cmd, env=local_env(compose, service, settings), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    topics = start("topics")
    assert topics.wait(60) == 0, (logs / "topics.log").read_text()
    children = {name: start(name) for name in ("processor", "producer", "viewer")}
    yield compose, settings, f"http://127.0.0.1:{port}", children, start
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    codes = {name: child.wait(30) for name, child in children.items()}
    for log in log_files:
        log.close()
    assert codes == {name: 0 for name in children}, {n: (logs / f"{n}.log").read_text()[-2000:] for n in children}


def test_topics_service_creates_topics_as_configured(compose_stack):
    compose, settings, *_ = compose_stack
    wanted = Settings.from_env(service_env(compose, "topics"))
    admin = make_admin(settings)
    try:
        described = {t["name"]: len(t["partitions"]) for t in admin.describe_topics([s.name for s in topic_specs(settings)])}
    finally:
        admin.close()
    assert described[settings.raw_topic] == described[settings.processed_topic] == wanted.partitions
    assert described[settings.control_topic] == 1, "the control topic keeps every change in one order"
    assert described[settings.job_state_topic] == 1, "the job-state topic orders every admission"
    assert wanted.partitions != Settings().partitions, "the compose partition count must be the one applied"


def wait_for_sample(url: str, children: dict) -> None:
    """Until the producer's `sample` stream reached the viewer."""
    deadline = time.monotonic() + 60
    streams: list = []
    while time.monotonic() < deadline and "sample" not in streams:
        assert all(child.poll() is None for child in children.values()), "a compose service exited"
        try:
            streams = [s["stream"] for s in requests.get(f"{url}/streams", timeout=5).json()["streams"]]
        except (requests.ConnectionError, requests.Timeout):
            pass  # gunicorn still starting: its worker may take seconds to boot on a loaded machine
        time.sleep(0.3)
    assert "sample" in streams


def test_frames_flow_from_producer_to_viewer(compose_stack):
    _, _, url, children, _ = compose_stack
    wait_for_sample(url, children)
    parts = read_parts(f"{url}/stream/sample.mjpg", count=5)
    seqs = [p.seq for p in parts]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    assert parts[0].body[:2] == b"\xff\xd8", "a JPEG"


def test_frames_flow_through_the_compose_nginx(compose_stack):
    """deploy/nginx.conf as compose mounts it, with the viewer service's name and port replaced
    by this machine's viewer, and compose's trusted-proxy setting on the viewer."""
    compose, _, url, children, _ = compose_stack
    assert service_env(compose, "viewer")["VIEWER_TRUSTED_PROXIES"] == "1"
    wait_for_sample(url, children)
    with Nginx([int(url.rsplit(":", 1)[1])]) as nginx:
        parts = read_parts(f"{nginx.url}/stream/sample.mjpg", count=5)
        assert len({p.seq for p in parts}) == 5 and parts[0].body[:2] == b"\xff\xd8"
        assert nginx.upstreams(1) == [url.removeprefix("http://")]


def test_viewer_healthcheck_command_passes(compose_stack):
    compose, _, _, _, start = compose_stack
    check = start("viewer", compose["services"]["viewer"]["healthcheck"]["test"][1:], log_name="healthcheck")
    assert check.wait(30) == 0
