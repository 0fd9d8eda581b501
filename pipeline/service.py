"""What every stage's CLI shares: logging set-up, SIGTERM/Ctrl-C to a stop event, one-line errors."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import NoReturn

# How long a service's stop may take in all (finish the current work, flush, commit, leave):
# `docker stop` kills after 10 s and `pipeline up` after 15 s. With the broker up a stop takes
# well under a second; with the broker gone this is what a stop costs.
STOP_BUDGET_S = 5.0


def setup_logging(quiet: bool = False) -> None:
    level = logging.WARNING if quiet else getattr(logging, os.environ.get("LOG_LEVEL", "INFO").upper(), logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # kafka-python logs every reconnect attempt at WARNING/ERROR; our own lines say what matters.
    logging.getLogger("kafka").setLevel(max(level, logging.CRITICAL if quiet else logging.ERROR))
    # Its connection and coordinator layers log each retry (several lines a second while the
    # broker is away, one per 100 ms commit retry after it restarts): the stages log the state
    # changes instead (commits failing / working again, deliveries stalled).
    for noisy in ("kafka.net", "kafka.conn", "kafka.cluster", "kafka.coordinator"):
        logging.getLogger(noisy).setLevel(max(level, logging.CRITICAL))


def stop_on_signals() -> StopEvent:
    """An event set by SIGTERM or SIGINT, so loops finish their current frame and clean up."""
    stop = StopEvent()

    def handler(signum, _frame) -> None:
        logging.getLogger(__name__).info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


class StopEvent(threading.Event):
    """A stop event that remembers when it was first set: a stop's budget counts from the
    signal, not from whenever the loop gets round to noticing it."""

    set_at: float | None = None

    def set(self) -> None:
        if self.set_at is None:
            self.set_at = time.monotonic()
        super().set()


class StopDeadline:
    """Time left for work that must end soon after a stop: unlimited while `stop` is clear,
    then `budget_s` counted from when it was set (a StopEvent) or first seen set."""

    def __init__(self, stop: threading.Event, budget_s: float = STOP_BUDGET_S) -> None:
        self.stop, self.budget_s = stop, budget_s
        self._at: float | None = None

    def left(self) -> float:
        if not self.stop.is_set():
            return math.inf
        if self._at is None:
            self._at = (getattr(self.stop, "set_at", None) or time.monotonic()) + self.budget_s
        return max(0.0, self._at - time.monotonic())


_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the kernel send `sig` to the child when its parent dies, even
    by SIGKILL (Linux; None elsewhere). Children in sessions of their own would otherwise
    outlive a killed parent and keep its ports. The signal comes when the *thread* that started
    the child ends, so start children from the main thread."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    parent = os.getpid()

    def arm() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, sig)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os.kill(os.getpid(), sig)

    return arm


def fail(message: str, code: int = 2) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)
