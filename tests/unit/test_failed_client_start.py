"""A Kafka client whose start fails (no broker answering) leaves nothing running: kafka-python 3.x
starts a client's I/O thread before it bootstraps, and a constructor that raises used to leave
that thread (with its sockets and metrics) running for the life of the process. Under load every
failed `?viewer=` visit leaked one that way."""

from __future__ import annotations

import threading

import pytest
from kafka.errors import KafkaTimeoutError

from pipeline.kafka import client_id, make_admin, make_consumer
from pipeline.local.broker import free_port
from pipeline.settings import Settings

CYCLES = 3


# Only this test's clients: other tests in the same process may still be closing their own.
OWN_THREADS = (f"kafka-io-{client_id('viewer')}", f"kafka-io-{client_id('admin')}")


def io_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(OWN_THREADS)]


@pytest.mark.parametrize("build", [
    lambda s: make_consumer(s, "viewer", group_id="viewer-gone", bootstrap_timeout_ms=300),
    lambda s: make_admin(s, bootstrap_timeout_ms=300),
], ids=["consumer", "admin"])
def test_a_client_that_cannot_bootstrap_leaves_no_io_thread_behind(build):
    settings = Settings(bootstrap_servers=f"127.0.0.1:{free_port()}")  # nothing listens there
    before = io_threads()
    for _ in range(CYCLES):
        with pytest.raises(KafkaTimeoutError):
            build(settings)
    assert io_threads() == before
