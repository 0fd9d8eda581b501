"""What every stage's CLI shares: logging set-up, SIGTERM/Ctrl-C to a stop event, one-line errors."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from typing import NoReturn


def setup_logging(quiet: bool = False) -> None:
    level = logging.WARNING if quiet else getattr(logging, os.environ.get("LOG_LEVEL", "INFO").upper(), logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # kafka-python logs every reconnect attempt at WARNING/ERROR; our own lines say what matters.
    logging.getLogger("kafka").setLevel(max(level, logging.CRITICAL if quiet else logging.ERROR))


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, so loops finish their current frame and clean up."""
    stop = threading.Event()

    def handler(signum, _frame) -> None:
        logging.getLogger(__name__).info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def fail(message: str, code: int = 2) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)
