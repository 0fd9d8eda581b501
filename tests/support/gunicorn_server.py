"""The viewer as production runs it: a real `gunicorn -k gevent -w 1 'viewer:create_app()'` process."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import requests

from pipeline.local.broker import free_port
from pipeline.settings import Settings
from tests.support.paths import ROOT
from tests.support.processes import stop_all_on_sigterm, stop_on_sigterm
from tests.support.topics import settings_env


class Gunicorn:
    def __init__(self, settings: Settings, env: dict[str, str] | None = None, workers: int = 1,
                 wait: bool = True) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [
            sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", str(workers), "-b", f"127.0.0.1:{self.port}",
            "--graceful-timeout", "3", "--log-level", "warning", "viewer:create_app()",
        ]
        self.proc = subprocess.Popen(cmd, env=settings_env(settings) | (env or {}), cwd=ROOT)
        if wait:
            self.wait_until_serving()

    def wait_until_serving(self, timeout_s: float = 60.0) -> None:
        """Until /healthz answers; a gunicorn that does not serve by then is killed."""
        try:
            self._wait_until_serving(timeout_s)
        except BaseException:
            self.proc.kill()
            self.proc.wait(5)
            raise

    def _wait_until_serving(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            assert self.proc.poll() is None, f"gunicorn exited with {self.proc.returncode}"
            try:
                requests.get(f"{self.url}/healthz", timeout=10)
                return
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def worker_pids(self) -> list[int]:
        with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
            return [int(pid) for pid in f.read().split()]

    def worker_pid(self) -> int:
        (pid,) = self.worker_pids()
        return pid

    def socket_fds(self, pid: int) -> int:
        """Sockets open in worker `pid`: growing as clients connect tells which worker took them."""
        folder = f"/proc/{pid}/fd"
        count = 0
        for fd in os.listdir(folder):
            try:
                count += os.readlink(f"{folder}/{fd}").startswith("socket:")
            except OSError:
                pass  # closed meanwhile
        return count

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.worker_pid()}/fd"))

    def stop(self) -> None:
        stop_on_sigterm(self.proc, "gunicorn")


def start_together(settings: Settings, *configs: tuple[dict[str, str] | None, int]) -> list[Gunicorn]:
    """One gunicorn per (env, workers), all booting at once (each spends seconds importing and
    forking before it serves); returned when every one serves. On a failure none is left running."""
    servers = [Gunicorn(settings, env, workers, wait=False) for env, workers in configs]
    try:
        for server in servers:
            server.wait_until_serving()
    except BaseException:
        for server in servers:
            server.proc.kill()
            server.proc.wait(5)
        raise
    return servers


def stop_together(servers: list[Gunicorn]) -> None:
    """Gunicorn.stop for several at once: their graceful stops overlap."""
    stop_all_on_sigterm([server.proc for server in servers], "gunicorn")
