"""Stopping a child process of a test as its users would: SIGTERM, and a failure if it ignores it."""

from __future__ import annotations

import signal
import subprocess
import time


def stop_on_sigterm(proc: subprocess.Popen, name: str, timeout_s: float = 15.0) -> None:
    """SIGTERM and wait; past `timeout_s` the process is killed and the test fails."""
    stop_all_on_sigterm([proc], name, timeout_s)


def stop_all_on_sigterm(procs: list[subprocess.Popen], name: str, timeout_s: float = 15.0) -> None:
    """stop_on_sigterm for several processes at once: each gets its SIGTERM before any is waited
    for, so their graceful stops overlap. Every one is stopped, even when one fails."""
    running = [proc for proc in procs if proc.poll() is None]
    for proc in running:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    stuck = 0
    for proc in running:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            stuck += 1
    if stuck:
        raise AssertionError(f"{stuck} {name} process(es) did not stop on SIGTERM")
