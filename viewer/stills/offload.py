"""Blocking work (CPU-heavy image work, SQLite) off the gevent hub.

Under gunicorn's gevent worker every request and background reader is a greenlet on one OS
thread: a 1-2 s decode, tile encode or reassembly of a large still, or a SQLite commit that
checkpoints megabytes of results, would freeze every live MJPEG stream of that worker for as
long (measured: uploads of 2048² and 4096² PNGs stalled the live stream for 0.4-1.1 s, and
its rate fell from 25 to 15 fps). OpenCV, numpy and sqlite3 release the GIL, so running that
work on gevent's native thread pool keeps the hub serving frames meanwhile.

Hand over small pieces (one tile at a time): a native thread that keeps the GIL busy for a
second starves the hub just the same (measured: one call encoding every tile gave 0.5-1 s
stalls; one call per tile, ~0.2 s at worst).

Without gevent (threaded servers, tests), or when already off the hub, the call runs in place.
"""

from __future__ import annotations

import functools
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
A = TypeVar("A")


def gevent_patched() -> bool:
    """True when threading is gevent's (monkey-patched), i.e. under the gevent worker."""
    if "gevent" not in sys.modules:
        return False
    from gevent import monkey

    return bool(monkey.is_module_patched("threading"))


@functools.cache
def _native_local():
    """Per OS thread (gevent's patched threading.local is per greenlet)."""
    from gevent import monkey

    return monkey.get_original("threading", "local")()


def native_lock():
    """A lock of the OS, also under gevent: for state that only off_hub's native threads touch.
    (gevent's patched Lock, taken by two pool threads at once, can leave both waiting for ever.)"""
    if gevent_patched():
        from gevent import monkey

        return monkey.get_original("threading", "Lock")()
    return threading.Lock()


def _in_place() -> bool:
    return not gevent_patched() or getattr(_native_local(), "off_hub", False)


def _native_call(fn: Callable[..., T], args: tuple, kwargs: dict) -> tuple[bool, T | BaseException]:
    _native_local().off_hub = True
    try:
        return True, fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - handed back to the caller, raised there
        # Returned, not raised: gevent's pool prints a full traceback for every exception
        # raised in it, although the caller handles it (a corrupt upload is a plain 400).
        return False, exc
    finally:
        _native_local().off_hub = False


def _outcome(ok: bool, result: T | BaseException) -> T:
    if not ok:
        raise result
    return result


def off_hub(fn: Callable[..., T], *args, **kwargs) -> T:
    """fn(*args, **kwargs), on a native thread unless already on one of the pool's threads;
    exceptions propagate."""
    if _in_place():
        return fn(*args, **kwargs)
    import gevent

    return _outcome(*gevent.get_hub().threadpool.apply(_native_call, (fn, args, kwargs)))


def off_hub_start(fn: Callable[..., T], *args, **kwargs) -> Callable[[], T]:
    """Start fn(*args, **kwargs) on a native thread and return the wait for its result (which
    raises its exception), so the caller's greenlet works on meanwhile. Where ``off_hub`` would
    run in place, it runs now and the wait only hands over the outcome."""
    if _in_place():
        try:
            outcome = (True, fn(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - raised by the wait, as on the pool
            outcome = (False, exc)
        return lambda: _outcome(*outcome)
    import gevent

    pending = gevent.get_hub().threadpool.spawn(_native_call, fn, args, kwargs)
    return lambda: _outcome(*pending.get())


def off_hub_map(fn: Callable[[A], T], items: Iterable[A]) -> list[T]:
    """[fn(item) for item in items], every call started at once on the pool's native threads (so
    they share the cores), in order in place where ``off_hub`` would run in place. Each call is
    waited for; then the first exception, if any, is raised."""
    waits = [off_hub_start(fn, item) for item in items]
    outcomes = []
    for wait in waits:
        try:
            outcomes.append((True, wait()))
        except Exception as exc:  # noqa: BLE001 - raised once every call is over
            outcomes.append((False, exc))
    return [_outcome(*outcome) for outcome in outcomes]


def off_hub_ahead(fn: Callable[[A], T], items: Iterable[A], ahead: int) -> Iterator[T]:
    """fn(item) for each item, in order, lazily: up to ``ahead`` calls run on native threads
    while the caller uses the results before them (in place, one by one, where ``off_hub``
    would run in place). The first exception is raised where its result would have come."""
    if _in_place():
        yield from map(fn, items)
        return
    started: deque[Callable[[], T]] = deque()
    for item in items:
        started.append(off_hub_start(fn, item))
        if len(started) >= ahead:
            yield started.popleft()()
    while started:
        yield started.popleft()()


def off_hub_method(method: Callable[..., T]) -> Callable[..., T]:
    """Decorator: every call of ``method`` goes through ``off_hub``."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        return off_hub(method, *args, **kwargs)

    return wrapper
