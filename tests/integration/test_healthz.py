"""/healthz on a real broker of its own, in the threaded dev server and under gunicorn's gevent
worker: a burst of probes shares one admin client, a stopped broker is a 503, and a restarted
one (a new, empty broker) is reported with its new cluster id."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from kafka import KafkaAdminClient

from pipeline.local.broker import EmbeddedBroker
from tests.support.gunicorn_server import Gunicorn
from tests.support.topics import isolated_settings
from viewer import create_app
from viewer.extension import viewer_of

pytestmark = pytest.mark.integration

PROBES = 50


@pytest.fixture
def own_broker():
    with EmbeddedBroker() as b:
        yield b


@pytest.fixture
def admin_clients(monkeypatch) -> list[dict]:
    """The configs of every Kafka admin client made from here on, however it is made."""
    made: list[dict] = []
    real_init = KafkaAdminClient.__init__

    def counting_init(self, **configs):
        made.append(configs)
        real_init(self, **configs)

    monkeypatch.setattr(KafkaAdminClient, "__init__", counting_init)
    return made


def health(url: str) -> requests.Response:
    # The probe's own bound is about a second; this only keeps a hung one from hanging the test.
    return requests.get(f"{url}/healthz", timeout=15)


def wait_for(condition, what: str, timeout_s: float = 30.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def burst(url: str) -> list[requests.Response]:
    with ThreadPoolExecutor(PROBES) as pool:
        return list(pool.map(lambda _: health(url), range(PROBES)))


def stop_and_restart(url: str, broker: EmbeddedBroker) -> None:
    """/healthz says 503 while the broker is stopped, then reports the restarted one's new id."""
    first_id = broker.cluster_id
    broker.stop()
    down = wait_for(lambda: (r := health(url)).status_code == 503 and r.json(), "/healthz 503 with the broker stopped")
    assert down == {"status": "broker unreachable"}
    broker.start()
    assert broker.cluster_id != first_id
    back = wait_for(lambda: (r := health(url)).status_code == 200 and r.json(), "/healthz 200 after the restart")
    assert back["cluster_id"] == broker.cluster_id and back["broker_restarted_at"] is not None


def test_probes_share_one_admin_client_and_see_a_broker_stop_and_restart(own_broker, admin_clients, serve):
    app = create_app({"SETTINGS": isolated_settings(own_broker)})
    try:
        url = serve(app)
        before = len(admin_clients)  # isolated_settings made one to create the topics
        answers = burst(url)
        assert [a.status_code for a in answers] == [200] * PROBES
        assert {a.json()["cluster_id"] for a in answers} == {own_broker.cluster_id}
        for _ in range(10):  # later probes, past the answer's max age, use the same client
            assert health(url).status_code == 200
            time.sleep(0.2)
        assert len(admin_clients) - before <= 2, f"{len(admin_clients) - before} admin clients for {PROBES + 10} probes"
        stop_and_restart(url, own_broker)
    finally:
        viewer_of(app).shutdown()


def test_probes_under_gevent_share_the_check_and_see_a_broker_stop_and_restart(own_broker):
    server = Gunicorn(isolated_settings(own_broker))
    try:
        answers = burst(server.url)
        assert [a.status_code for a in answers] == [200] * PROBES
        assert {a.json()["cluster_id"] for a in answers} == {own_broker.cluster_id}
        stop_and_restart(server.url, own_broker)
    finally:
        server.stop()
