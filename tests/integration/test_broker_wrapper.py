"""`python -m pipeline broker`: the Tansu process dies with its wrapper, however the wrapper dies."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from pipeline.local.broker import free_port
from tests.support.faults import alive, children_of, wait_until
from tests.support.paths import ROOT

pytestmark = pytest.mark.integration


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_the_broker_dies_with_its_wrapper(sig):
    port = free_port()
    wrapper = subprocess.Popen([sys.executable, "-m", "pipeline", "broker", "--port", str(port)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tansu = None
    try:
        wait_until(lambda: listening(port), "the broker to listen", 30)
        (tansu,) = children_of(wrapper.pid)
        wrapper.send_signal(sig)
        wrapper.wait(15)
        wait_until(lambda: not alive(tansu), f"the broker process to die with its wrapper ({sig.name})", 10)
        wait_until(lambda: not listening(port), "the port to be free", 10)
        # The port is free again: a new broker starts on it.
        again = subprocess.Popen([sys.executable, "-m", "pipeline", "broker", "--port", str(port)], cwd=ROOT,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: listening(port), "a new broker on the same port", 30)
        finally:
            again.terminate()
            again.wait(15)
    finally:
        if wrapper.poll() is None:
            wrapper.kill()
            wrapper.wait()
        if tansu is not None and alive(tansu):
            os.kill(tansu, signal.SIGKILL)
            time.sleep(0.1)
