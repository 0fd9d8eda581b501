"""Shared fixtures: the real embedded broker, isolated topic names, a viewer server, screenshots.

Fixtures only; helpers live in ``tests/support``. Tests under ``integration/`` and ``browser/``
are marked as such here, so ``-m "not integration"`` runs the fast unit tests alone.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from pipeline.local.broker import EmbeddedBroker
from pipeline.settings import Settings
from tests.support.server import ServerThread
from tests.support.topics import isolated_settings

# Fuzz suites: a short profile in the normal suite, a long one under `make faults`. No example
# database: generated inputs are not written into the repository.
hypothesis_settings.register_profile("default", max_examples=150, deadline=10_000, database=None,
                                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
hypothesis_settings.register_profile("long", max_examples=3000, deadline=10_000, database=None,
                                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

HERE = os.path.dirname(os.path.abspath(__file__))
FOLDER_MARKS = {"integration": ("integration",), "browser": ("browser", "integration")}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        folder = os.path.relpath(str(item.path), HERE).split(os.sep)[0]
        for mark in FOLDER_MARKS.get(folder, ()):
            item.add_marker(mark)


@pytest.fixture(scope="session")
def broker():
    with EmbeddedBroker() as b:
        yield b


@pytest.fixture
def settings(broker) -> Settings:
    return isolated_settings(broker)


@pytest.fixture(scope="module")
def module_settings(broker) -> Settings:
    return isolated_settings(broker)


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
