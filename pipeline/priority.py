"""Lower CPU priority for background image work (still-image jobs), so that on a busy machine
the kernel runs the live video path first."""

from __future__ import annotations

import logging
import os
import sys
import threading

log = logging.getLogger(__name__)

# Niceness of background work (0 normal, 19 lowest): at 5 a contended core gives it about a third
# of what a normal thread gets (CFS weights 335 and 1024), plenty for the live path to keep its
# rate (bench/live_priority.py); at 10 (weight 110) jobs all but stopped on a machine at load 20.
BACKGROUND_NICENESS = 5


def lower_priority(niceness: int = BACKGROUND_NICENESS) -> None:
    """Lower the calling thread's CPU priority; threads it starts later inherit it. Linux only:
    there niceness is per thread, elsewhere it would lower the whole process."""
    if not sys.platform.startswith("linux"):
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except OSError as exc:
        log.warning("background work runs at normal priority: %s", exc)
