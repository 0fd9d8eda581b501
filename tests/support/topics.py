"""Settings on a test broker with topics of their own, and the environment that passes them on."""

from __future__ import annotations

import dataclasses
import os
import uuid

from pipeline.kafka import ensure_topics, make_admin
from pipeline.local.broker import EmbeddedBroker
from pipeline.settings import Settings
from tests.support.paths import ROOT


def isolated_settings(broker: EmbeddedBroker) -> Settings:
    """Settings on the session broker with topics of their own, so tests never see each other's frames."""
    tag = uuid.uuid4().hex[:8]
    s = dataclasses.replace(
        Settings(bootstrap_servers=broker.bootstrap),
        raw_topic=f"raw-{tag}",
        jobs_topic=f"jobs-{tag}",
        processed_topic=f"processed-{tag}",
        job_results_topic=f"jobresults-{tag}",
        heartbeat_topic=f"heartbeat-{tag}",
        dead_letter_topic=f"dlq-{tag}",
        control_topic=f"control-{tag}",
        job_state_topic=f"jobstate-{tag}",
    )
    ensure_topics(s)
    return s


def settings_env(s: Settings) -> dict[str, str]:
    """The environment that makes a child process see the same Settings."""
    return dict(os.environ) | s.topic_env() | {"PYTHONPATH": ROOT}


def delete_topics(settings: Settings, *topics: str) -> None:
    """Delete `topics`: the embedded broker keeps every record in memory until then."""
    admin = make_admin(settings)
    try:
        admin.delete_topics(list(topics))
    finally:
        admin.close()
