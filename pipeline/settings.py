"""Settings read from the environment: the one place every stage learns broker and topic names."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


def int_env(env: Mapping[str, str], name: str, default: int) -> int:
    """The integer ``env[name]``, ``default`` when unset or empty; ValueError naming it otherwise."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


def _count_env(env: Mapping[str, str], name: str) -> int:
    value = int_env(env, name, 0)
    if value < 0:
        raise ValueError(f"{name} must be 0 or more, got {value}")
    return value


ACKS = ("0", "1", "all")


def _acks_env(env: Mapping[str, str]) -> str:
    raw = env.get("KAFKA_PRODUCER_ACKS") or "1"
    if raw not in ACKS:
        raise ValueError(f"KAFKA_PRODUCER_ACKS must be one of {', '.join(ACKS)}, got {raw!r}")
    return raw


@dataclass(frozen=True)
class Settings:
    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: str | None = None
    raw_topic: str = "frames.raw"
    # Still-image job tiles: a topic of their own, so processors take them only when no live
    # frame is waiting (processor/jobs.py).
    jobs_topic: str = "frames.jobs"
    processed_topic: str = "frames.processed"
    # Processed job tiles: a topic of their own too, so the live hub never fetches megabytes of
    # job output only to skip it (tiles from older viewers still come out on the processed topic).
    job_results_topic: str = "frames.jobs.results"
    heartbeat_topic: str = "processors.heartbeat"
    dead_letter_topic: str = "frames.dlq"
    # Compacted, keyed by stream: each stream's live transform chain (pipeline/control.py).
    control_topic: str = "streams.control"
    # Compacted, one partition, keyed by job id: every still-image job's state, shared by all
    # viewer replicas (viewer/stills/jobstate.py).
    job_state_topic: str = "jobs.state"
    partitions: int = 4
    replication_factor: int = 1
    # Loss-free on Apache Kafka takes all three: replication 3, min.insync.replicas 2 and
    # acks "all" for every producer (docs/operations.md, "Failure behaviour"). None: the broker's default.
    min_insync_replicas: int | None = None
    producer_acks: str = "1"
    # Frames above 1 MiB (PNG, 4K JPEG) need every Kafka size limit raised together.
    max_message_bytes: int = 16 * 1024 * 1024
    # How long a fetch waits for data. Tansu holds a fetch for this long even when records
    # arrive, so the default keeps a hop at ~12 ms p99; each idle consumer then polls ~100
    # times/s (~0.13 core measured). Apache Kafka answers as soon as data arrives: set 500 there.
    fetch_max_wait_ms: int = 10
    admin_token: str | None = None
    # Without a token, admin routes answer loopback clients only when this is on; `pipeline up`
    # turns it on for its viewer (VIEWER_LOOPBACK_ADMIN=1), nothing else does.
    loopback_admin: bool = False
    max_upload_bytes: int = 25 * 1000 * 1000
    max_upload_pixels: int = 50 * 1000 * 1000
    # GET /clip limits: longest range, largest MP4, most frames (a range at --fps max).
    clip_max_seconds: int = 300
    clip_max_bytes: int = 200 * 1000 * 1000
    clip_max_frames: int = 15000
    # Video frames (and the whole images tiles belong to) are checked against this from their
    # headers before decoding; uploads travel as frames too, so it is not below the upload limit.
    max_frame_pixels: int = 50 * 1000 * 1000
    # Request bodies (uploads) being received at once per viewer process, and the longest a
    # client may go without sending a byte of one: slow clients cannot hold every connection.
    max_bodies_in_progress: int = 32
    body_idle_timeout_s: int = 10
    # `?viewer=<id>` streams per viewer process at once, viewer groups it keeps, and how long an
    # idle one's resume point is kept (viewer/live/viewer_ids.py).
    max_resume_viewers: int = 64
    max_viewer_groups: int = 256
    viewer_group_ttl_s: int = 24 * 3600
    # Reverse proxies in front of the viewer that each append the client's address to
    # X-Forwarded-For (1 behind docker-compose.yml's nginx). Only then is the client taken from
    # that header, as the proxies wrote it; 0 ignores forwarding headers, which anyone can send.
    trusted_proxies: int = 0

    @classmethod
    def from_env(cls, env: dict | None = None) -> Settings:
        env = os.environ if env is None else env
        get = env.get
        return cls(
            bootstrap_servers=get("KAFKA_BOOTSTRAP_SERVERS") or "127.0.0.1:9092",
            security_protocol=get("KAFKA_SECURITY_PROTOCOL") or "PLAINTEXT",
            sasl_mechanism=get("KAFKA_SASL_MECHANISM") or None,
            sasl_username=get("KAFKA_SASL_USERNAME") or None,
            sasl_password=get("KAFKA_SASL_PASSWORD") or None,
            ssl_cafile=get("KAFKA_SSL_CAFILE") or None,
            raw_topic=get("RAW_TOPIC") or "frames.raw",
            jobs_topic=get("JOBS_TOPIC") or "frames.jobs",
            processed_topic=get("PROCESSED_TOPIC") or "frames.processed",
            job_results_topic=get("JOB_RESULTS_TOPIC") or "frames.jobs.results",
            heartbeat_topic=get("HEARTBEAT_TOPIC") or "processors.heartbeat",
            dead_letter_topic=get("DEAD_LETTER_TOPIC") or "frames.dlq",
            control_topic=get("CONTROL_TOPIC") or "streams.control",
            job_state_topic=get("JOB_STATE_TOPIC") or "jobs.state",
            partitions=int_env(env, "TOPIC_PARTITIONS", 4),
            replication_factor=int_env(env, "TOPIC_REPLICATION_FACTOR", 1),
            min_insync_replicas=int_env(env, "TOPIC_MIN_INSYNC_REPLICAS", 0) or None,
            producer_acks=_acks_env(env),
            max_message_bytes=int_env(env, "MAX_MESSAGE_BYTES", 16 * 1024 * 1024),
            fetch_max_wait_ms=int_env(env, "KAFKA_FETCH_MAX_WAIT_MS", 10),
            admin_token=get("VIEWER_ADMIN_TOKEN") or None,
            loopback_admin=(get("VIEWER_LOOPBACK_ADMIN") or "").lower() in ("1", "true", "yes"),
            max_upload_bytes=int_env(env, "MAX_UPLOAD_BYTES", 25 * 1000 * 1000),
            max_upload_pixels=int_env(env, "MAX_UPLOAD_PIXELS", 50 * 1000 * 1000),
            clip_max_seconds=int_env(env, "CLIP_MAX_SECONDS", 300),
            clip_max_bytes=int_env(env, "CLIP_MAX_BYTES", 200 * 1000 * 1000),
            clip_max_frames=int_env(env, "CLIP_MAX_FRAMES", 15000),
            max_frame_pixels=int_env(env, "MAX_FRAME_PIXELS", 50 * 1000 * 1000),
            max_bodies_in_progress=int_env(env, "MAX_BODIES_IN_PROGRESS", 32),
            body_idle_timeout_s=int_env(env, "BODY_IDLE_TIMEOUT_S", 10),
            max_resume_viewers=int_env(env, "MAX_RESUME_VIEWERS", 64),
            max_viewer_groups=int_env(env, "MAX_VIEWER_GROUPS", 256),
            viewer_group_ttl_s=int_env(env, "VIEWER_GROUP_TTL_S", 24 * 3600),
            trusted_proxies=_count_env(env, "VIEWER_TRUSTED_PROXIES"),
        )

    def topic_env(self) -> dict[str, str]:
        """The environment variables that make a child process's ``from_env`` see this broker
        and these topics (the inverse of :meth:`from_env` for them)."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "RAW_TOPIC": self.raw_topic,
            "JOBS_TOPIC": self.jobs_topic,
            "PROCESSED_TOPIC": self.processed_topic,
            "JOB_RESULTS_TOPIC": self.job_results_topic,
            "HEARTBEAT_TOPIC": self.heartbeat_topic,
            "DEAD_LETTER_TOPIC": self.dead_letter_topic,
            "CONTROL_TOPIC": self.control_topic,
            "JOB_STATE_TOPIC": self.job_state_topic,
        }
