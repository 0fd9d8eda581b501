"""Stopping a child process of a test as its users would: SIGTERM, and a failure if it ignores it."""

from __future__ import annotations

import signal
import subprocess


def stop_on_sigterm(proc: subprocess.Popen, name: str, timeout_s: float = 15.0) -> None:
    """SIGTERM and wait; past `timeout_s` the process is killed and the test fails."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        raise AssertionError(f"{name} did not stop on SIGTERM") from None
