"""The viewer's settings: the shared pipeline settings plus the viewer's own, read in one place.

Each of the viewer's own comes from the Flask config (``create_app({...})``), else the
environment, else its default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.settings import Settings, int_env
from viewer.stills.store import DEFAULT_DB

# Seconds of silence on a stream before its last part is sent again (see viewer/live/mjpeg.py).
DEFAULT_KEEPALIVE_S = 2.0


@dataclass(frozen=True)
class ViewerSettings:
    shared: Settings
    keepalive_s: float = DEFAULT_KEEPALIVE_S
    jobs_db: str = DEFAULT_DB
    jobs_keep: int = 50
    max_active_jobs: int = 8
    max_jobs_per_client: int = 2
    max_job_work_s: float = 20.0
    job_timeout_s: int = 600
    upload_memory_bytes: int = 512 * 1024 * 1024
    # GET /clip: longest range, largest MP4, most frames; where clips are built (None: the system's temp).
    clip_max_seconds: int = 300
    clip_max_bytes: int = 200 * 1000 * 1000
    clip_max_frames: int = 15000
    clip_tmpdir: str | None = None

    @property
    def tick_s(self) -> float:
        """How often a response waiting on an idle stream wakes to check its keep-alive: half a
        second at most, so a stalled stream's no-signal card shows within 2.5 s."""
        return min(0.5, max(0.05, self.keepalive_s))

    @classmethod
    def from_config(cls, config: Mapping[str, Any], env: Mapping[str, str] | None = None) -> ViewerSettings:
        """``config`` may hold SETTINGS (a pipeline ``Settings``), KEEPALIVE_S and the names in
        ``_OWN`` (JOBS_DB, MAX_ACTIVE_JOBS, ...), which may also come from ``env``."""
        env = os.environ if env is None else env
        own = {name: str(config.get(name) or env.get(name) or "") for name in _OWN}
        shared = config.get("SETTINGS") or Settings.from_env(env)
        return cls(
            shared=shared,
            keepalive_s=float(config.get("KEEPALIVE_S", DEFAULT_KEEPALIVE_S)),
            jobs_db=own["JOBS_DB"] or DEFAULT_DB,
            jobs_keep=int_env(own, "JOBS_KEEP", 50),
            max_active_jobs=int_env(own, "MAX_ACTIVE_JOBS", 8),
            max_jobs_per_client=int_env(own, "MAX_JOBS_PER_CLIENT", 2),
            max_job_work_s=_float(own, "MAX_JOB_WORK_S", 20.0),
            job_timeout_s=int_env(own, "JOB_TIMEOUT_S", 600),
            upload_memory_bytes=int_env(own, "UPLOAD_MEMORY_BYTES", 512 * 1024 * 1024),
            # The clip limits are pipeline settings (environment); the app config may override them.
            clip_max_seconds=int(config.get("CLIP_MAX_SECONDS", shared.clip_max_seconds)),
            clip_max_bytes=int(config.get("CLIP_MAX_BYTES", shared.clip_max_bytes)),
            clip_max_frames=int(config.get("CLIP_MAX_FRAMES", shared.clip_max_frames)),
            clip_tmpdir=config.get("CLIP_TMPDIR"),
        )


_OWN = ("JOBS_DB", "JOBS_KEEP", "MAX_ACTIVE_JOBS", "MAX_JOBS_PER_CLIENT", "MAX_JOB_WORK_S", "JOB_TIMEOUT_S",
        "UPLOAD_MEMORY_BYTES")


def _float(values: Mapping[str, str], name: str, default: float) -> float:
    raw = values.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
