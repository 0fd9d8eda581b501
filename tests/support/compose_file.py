"""Reading docker-compose.yml as Docker Compose would: YAML with merge keys, `${VAR:-default}`
interpolated with its defaults (tests must not depend on the caller's environment)."""

from __future__ import annotations

import os
import re

import yaml

from tests.support.paths import ROOT

COMPOSE_FILE = os.path.join(ROOT, "docker-compose.yml")
APP_SERVICES = ("topics", "producer", "processor", "viewer")

_VARIABLE = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def interpolate(value):
    """Compose's `${NAME:-default}` / `${NAME-default}` / `${NAME}` with every variable unset."""
    if isinstance(value, str):
        return _VARIABLE.sub(lambda m: m.group(2) or "", value)
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    return value


def load_compose() -> dict:
    with open(COMPOSE_FILE) as f:
        return interpolate(yaml.safe_load(f))


def service_env(compose: dict, service: str) -> dict[str, str]:
    env = compose["services"][service].get("environment") or {}
    return {k: "" if v is None else str(v) for k, v in env.items()}
