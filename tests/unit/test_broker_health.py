"""/healthz's broker check: one long-lived admin client, one check at a time, a fresh answer
reused, and a probe that waits no longer than its timeout."""

from __future__ import annotations

import threading

import pytest
from kafka.errors import KafkaConnectionError

from pipeline.settings import Settings
from viewer.status import broker_health
from viewer.status.broker_health import BrokerHealth


class FakeBroker:
    """Stands in for make_admin: every admin client it makes answers describe_cluster with the
    next of ``answers`` (an exception is raised), each held back while ``gate`` is clear."""

    def __init__(self) -> None:
        self.answers: list = []
        self.made: list[FakeAdmin] = []
        self.gate = threading.Event()
        self.gate.set()
        self.describing = threading.Event()

    def make_admin(self, settings: Settings, **overrides) -> FakeAdmin:
        self.made.append(FakeAdmin(self))
        return self.made[-1]


class FakeAdmin:
    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self.calls = 0
        self.closed = False

    def describe_cluster(self) -> dict:
        self.calls += 1
        self.broker.describing.set()
        self.broker.gate.wait(10)
        answer = self.broker.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return {"cluster_id": answer}

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def broker(monkeypatch) -> FakeBroker:
    fake = FakeBroker()
    monkeypatch.setattr(broker_health, "make_admin", fake.make_admin)
    return fake


def started_check(health: BrokerHealth, broker: FakeBroker) -> threading.Thread:
    """A probe whose check is in progress, held there until ``broker.gate`` is set."""
    broker.gate.clear()
    leader = threading.Thread(target=health.cluster_id)
    leader.start()
    assert broker.describing.wait(10)
    return leader


def test_concurrent_probes_share_one_check_on_one_client(broker):
    broker.answers += ["embedded-1"]
    health = BrokerHealth(Settings(), timeout_s=10)
    leader = started_check(health, broker)
    answers: list = []
    probes = [threading.Thread(target=lambda: answers.append(health.cluster_id())) for _ in range(20)]
    for probe in probes:
        probe.start()
    broker.gate.set()
    for probe in [leader, *probes]:
        probe.join(10)
    assert answers == ["embedded-1"] * 20
    assert len(broker.made) == 1 and broker.made[0].calls == 1


def test_a_fresh_answer_is_reused_and_an_old_one_checked_again_on_the_same_client(broker):
    broker.answers += ["embedded-1", "embedded-2"]
    now = [100.0]
    health = BrokerHealth(Settings(), max_age_s=1.0, clock=lambda: now[0])
    assert health.cluster_id() == "embedded-1"
    now[0] = 100.9
    assert health.cluster_id() == "embedded-1" and broker.made[0].calls == 1
    now[0] = 101.0  # a restarted broker is noticed once the answer is a max age old
    assert health.cluster_id() == "embedded-2"
    assert len(broker.made) == 1 and broker.made[0].calls == 2


def test_an_unreachable_broker_is_none_and_the_client_is_made_again(broker):
    broker.answers += [KafkaConnectionError("gone"), "embedded-2"]
    now = [100.0]
    health = BrokerHealth(Settings(), clock=lambda: now[0])
    assert health.cluster_id() is None
    assert broker.made[0].closed
    now[0] = 102.0
    assert health.cluster_id() == "embedded-2"
    assert len(broker.made) == 2 and not broker.made[1].closed
    health.close()
    assert broker.made[1].closed


def test_a_probe_waits_for_a_check_in_progress_no_longer_than_its_timeout(broker):
    broker.answers += ["embedded-1"]
    health = BrokerHealth(Settings(), timeout_s=0.05)
    leader = started_check(health, broker)
    assert health.cluster_id() is None  # the check in progress is stuck: a 503, not a hang
    broker.gate.set()
    leader.join(10)
    assert health.cluster_id() == "embedded-1" and broker.made[0].calls == 1


def test_close_during_a_check_closes_the_client_when_the_check_ends(broker):
    broker.answers += ["embedded-1"]
    health = BrokerHealth(Settings())
    leader = started_check(health, broker)
    health.close()
    assert not broker.made[0].closed  # the check still uses it
    broker.gate.set()
    leader.join(10)
    assert broker.made[0].closed
