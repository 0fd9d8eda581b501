"""Waiting on a condition (never on a fixed time): a stream's first snapshot, or any predicate."""

from __future__ import annotations

import time

import requests


def wait_for_snapshot(url: str, stream: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if requests.get(f"{url}/snapshot/{stream}.jpg", timeout=10).status_code == 200:
            return
        time.sleep(0.2)
    raise AssertionError(f"stream {stream!r} never reached the viewer")


def wait_until(condition, what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)
