"""Hypothesis profiles for the fuzz suites: `short` in the normal run, `long` under `make faults`
(HYPOTHESIS_PROFILE=long). Imported by each fuzz module, so they share one choice."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# Examples hit a real server over HTTP: no per-example deadline (the suites bound each request
# with a 10 s timeout instead), and module fixtures are meant to be shared by examples.
_COMMON = {"deadline": None, "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
           "derandomize": False, "print_blob": True}
settings.register_profile("short", max_examples=40, **_COMMON)
settings.register_profile("long", max_examples=600, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "short"))


def examples(short: int) -> int:
    """`short` examples in the short profile, scaled up as the loaded profile is."""
    return short * settings().max_examples // settings.get_profile("short").max_examples
