"""The consumer groups a processor reads in: live frames in its group (the one its heartbeats
name), still-job tiles in a group of its own beside it (processor/jobs.py says why)."""

from __future__ import annotations

JOBS_SUFFIX = ".jobs"


def job_group(group: str) -> str:
    """The still-jobs group of the processors in ``group``."""
    return group + JOBS_SUFFIX
