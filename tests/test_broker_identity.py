"""The viewer tells a restarted (new, empty) embedded broker by its new cluster id."""

from viewer.status.broker_identity import BrokerIdentity


def test_a_new_cluster_id_is_a_restart_with_its_time_and_the_same_id_is_not():
    now = [100.0]
    identity = BrokerIdentity(clock=lambda: now[0])
    assert identity.seen("embedded-1") == {"cluster_id": "embedded-1", "broker_restarted_at": None}
    now[0] = 105.0
    assert identity.seen("embedded-1")["broker_restarted_at"] is None  # Apache Kafka keeps its id
    now[0] = 110.5
    assert identity.seen("embedded-2") == {"cluster_id": "embedded-2", "broker_restarted_at": 110500}
    now[0] = 120.0
    assert identity.seen("embedded-2")["broker_restarted_at"] == 110500  # said until the viewer restarts
