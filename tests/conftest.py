"""Shared fixtures: the real embedded broker, isolated topic names, a viewer server."""

from __future__ import annotations

import dataclasses
import os
import threading
import uuid

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from werkzeug.serving import make_server

from pipeline.kafka import ensure_topics
from pipeline.local.broker import EmbeddedBroker
from pipeline.settings import Settings

# Fuzz suites: a short profile in the normal suite, a long one under `make faults`. No example
# database: generated inputs are not written into the repository.
hypothesis_settings.register_profile("default", max_examples=150, deadline=10_000, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
hypothesis_settings.register_profile("long", max_examples=3000, deadline=10_000, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE_VIDEO = os.path.join(ROOT, "sample_media", "sample.mp4")
SAMPLE_PNG = os.path.join(ROOT, "sample_media", "sample.png")  # 1600x1200


@pytest.fixture(scope="session")
def broker():
    with EmbeddedBroker() as b:
        yield b


def isolated_settings(broker: EmbeddedBroker) -> Settings:
    """Settings on the session broker with topics of their own, so tests never see each other's frames."""
    tag = uuid.uuid4().hex[:8]
    s = dataclasses.replace(
        Settings(bootstrap_servers=broker.bootstrap),
        raw_topic=f"raw-{tag}",
        processed_topic=f"processed-{tag}",
        heartbeat_topic=f"heartbeat-{tag}",
        dead_letter_topic=f"dlq-{tag}",
        control_topic=f"control-{tag}",
    )
    ensure_topics(s)
    return s


@pytest.fixture
def settings(broker) -> Settings:
    return isolated_settings(broker)


@pytest.fixture(scope="module")
def module_settings(broker) -> Settings:
    return isolated_settings(broker)


def settings_env(s: Settings) -> dict[str, str]:
    """The environment that makes a child process see the same Settings."""
    return dict(os.environ) | s.topic_env() | {"PYTHONPATH": ROOT}


class ServerThread:
    def __init__(self, app) -> None:
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(5)


@pytest.fixture(scope="module")
def serve():
    """serve(app) -> base URL of a threaded dev server running app; stopped after the test."""
    servers: list[ServerThread] = []

    def start(app) -> str:
        servers.append(ServerThread(app))
        return servers[-1].url

    yield start
    for s in servers:
        s.close()


SCREENSHOTS = pytest.StashKey[str]()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory, pytestconfig):
    """Directory for browser screenshots; the run's summary lists what was saved there."""
    folder = tmp_path_factory.mktemp("screenshots")
    pytestconfig.stash[SCREENSHOTS] = str(folder)
    return folder


def pytest_terminal_summary(terminalreporter, config) -> None:
    # Figures the fault tests recorded (record_property("figure", ...)), passed or failed.
    figures = [value for reports in terminalreporter.stats.values() for r in reports
               for name, value in getattr(r, "user_properties", ()) if name == "figure" and r.when == "call"]
    if figures:
        terminalreporter.section("fault figures")
        for line in figures:
            terminalreporter.write_line(line)
    folder = config.stash.get(SCREENSHOTS, None)
    if folder and os.listdir(folder):
        terminalreporter.section("browser screenshots")
        for name in sorted(os.listdir(folder)):
            terminalreporter.write_line(os.path.join(folder, name))
