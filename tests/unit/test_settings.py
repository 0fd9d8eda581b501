"""Settings from the environment."""

from __future__ import annotations

import pytest

from pipeline.settings import Settings


def test_defaults_and_overrides():
    assert Settings.from_env({}).fetch_max_wait_ms == 10
    s = Settings.from_env({"KAFKA_FETCH_MAX_WAIT_MS": "500", "TOPIC_PARTITIONS": "12", "RAW_TOPIC": "r"})
    assert (s.fetch_max_wait_ms, s.partitions, s.raw_topic) == (500, 12, "r")


def test_non_integer_is_a_clear_error():
    with pytest.raises(ValueError, match="KAFKA_FETCH_MAX_WAIT_MS must be an integer"):
        Settings.from_env({"KAFKA_FETCH_MAX_WAIT_MS": "soon"})


def test_forwarding_headers_are_untrusted_unless_proxies_are_configured():
    assert Settings.from_env({}).trusted_proxies == 0
    assert Settings.from_env({"VIEWER_TRUSTED_PROXIES": "2"}).trusted_proxies == 2
    with pytest.raises(ValueError, match="VIEWER_TRUSTED_PROXIES must be 0 or more"):
        Settings.from_env({"VIEWER_TRUSTED_PROXIES": "-1"})
