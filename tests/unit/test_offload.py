"""viewer.stills.offload: CPU-heavy work leaves the gevent hub free (checked in a monkey-patched
child process, as under gunicorn's gevent worker) and runs in place without gevent."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import pytest

from tests.support.paths import ROOT
from viewer.stills.offload import gevent_patched, off_hub, off_hub_map, off_hub_start


def under_gevent(script: str, timeout_s: float = 60) -> subprocess.CompletedProcess:
    """``script`` run in a child process (which monkey-patches itself first), checked to exit 0."""
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    assert run.returncode == 0, run.stderr
    return run


def under_gevent_ok(script: str) -> subprocess.CompletedProcess:
    """``under_gevent``, also checked to reach its closing "ok" with no traceback on its way."""
    run = under_gevent(script)
    assert run.stdout.strip().endswith("ok")
    assert "Traceback" not in run.stderr, run.stderr
    return run


UNDER_GEVENT = textwrap.dedent("""
    from gevent import monkey
    monkey.patch_all()
    import threading, gevent
    from gevent._threading import Lock  # native, whatever the patching
    from viewer.stills.offload import gevent_patched, off_hub

    assert gevent_patched()
    hub_thread = threading.get_native_id()
    greenlet_ran = Lock()
    greenlet_ran.acquire()

    def cpu_work():
        # Blocks its thread until a greenlet has run. On the hub's own thread this could never
        # happen (nothing else runs while it waits), so the wait would time out.
        return threading.get_native_id(), greenlet_ran.acquire(True, 10)

    gevent.spawn(greenlet_ran.release)
    worker_thread, hub_kept_running = off_hub(cpu_work)
    assert worker_thread != hub_thread, "ran on the hub's thread"
    assert hub_kept_running, "no greenlet ran while the work was in progress"
    try:
        off_hub(int, "not a number")
    except ValueError as exc:
        print("error propagated:", exc)
    print("ok")
""")


def test_under_gevent_the_work_runs_on_a_native_thread_while_greenlets_run():
    run = under_gevent_ok(UNDER_GEVENT)
    assert "error propagated: invalid literal" in run.stdout
    # The caller handles it (a corrupt upload is a 400): no report from gevent's pool either.
    assert "failed with" not in run.stderr, run.stderr


JOB_STORE_UNDER_GEVENT = textwrap.dedent("""
    from gevent import monkey
    monkey.patch_all()
    import os, sqlite3, sys, tempfile
    from gevent import monkey
    native_ident = monkey.get_original("threading", "get_ident")
    from viewer.stills import store as jobs

    hub = native_ident()
    opened_on = []
    real_connect = sqlite3.connect

    def spy(*args, **kwargs):
        opened_on.append(native_ident())
        return real_connect(*args, **kwargs)

    store = jobs.JobStore(os.path.join(tempfile.mkdtemp(), "jobs.db"))
    jobs.sqlite3.connect = spy
    store.ensure("j", "png", "grayscale", 4, 4, 1, 0.0)
    status = store.add_tile("j", 0, None, b"tile", 4, 4)  # calls get() inside: in place, no second hop
    assert status.tiles_done == 1, status
    store.finish("j", b"result")
    assert store.result("j") == b"result"
    assert opened_on and hub not in opened_on, (hub, opened_on)
    print("connections", len(opened_on), "threads", len(set(opened_on)))
""")


def test_under_gevent_the_job_store_never_touches_sqlite_on_the_hub():
    run = under_gevent(JOB_STORE_UNDER_GEVENT)
    assert run.stdout.startswith("connections "), run.stdout


CONCURRENT_WRITES_UNDER_GEVENT = textwrap.dedent("""
    from gevent import monkey
    monkey.patch_all()
    import os, tempfile, time, gevent
    from viewer.stills import store as jobs

    store = jobs.JobStore(os.path.join(tempfile.mkdtemp(), "jobs.db"))
    store.ensure("j", "png", "grayscale", 4, 4, 400, time.time())

    def writer(i):
        # What a busy viewer does at once: status requests expire jobs, the collector adds tiles.
        for k in range(10):
            store.expire(600)
            store.add_tile("j", i * 10 + k, None, b"tile", 4, 4)

    gevent.joinall([gevent.spawn(writer, i) for i in range(40)], raise_error=True)
    print("tiles", store.get("j").tiles_done)
""")


def test_under_gevent_concurrent_job_store_writes_never_deadlock():
    # The store's write lock is taken on the pool's native threads: a gevent lock there once
    # left two of them waiting for each other for ever (found with `gunicorn -k gevent -w 2`).
    run = under_gevent(CONCURRENT_WRITES_UNDER_GEVENT, 120)
    assert run.stdout.strip() == "tiles 400"


STARTED_UNDER_GEVENT = textwrap.dedent("""
    from gevent import monkey
    monkey.patch_all()
    import threading
    from gevent._threading import Lock  # native, whatever the patching
    from viewer.stills.offload import off_hub_map, off_hub_start

    caller_went_on = Lock()
    caller_went_on.acquire()

    def check_upload():
        # Finishes only once its caller has gone on with other work (publishing, in the viewer).
        return caller_went_on.acquire(True, 10)

    wait = off_hub_start(check_upload)
    caller_went_on.release()
    assert wait() is True, "the work did not run while its caller went on"
    failing = off_hub_start(int, "not a number")
    try:
        failing()
    except ValueError as exc:
        print("error raised by the wait:", exc)

    first_started, second_started = Lock(), Lock()
    first_started.acquire()
    second_started.acquire()

    def band(i):
        # Each call finishes only once the other has started: only calls running at the same
        # time on native threads can both finish.
        (first_started if i == 0 else second_started).release()
        return i, (second_started if i == 0 else first_started).acquire(True, 10)

    assert off_hub_map(band, [0, 1]) == [(0, True), (1, True)], "the mapped calls did not run at once"
    try:
        off_hub_map(int, ["1", "x", "2"])
    except ValueError as exc:
        print("error raised by the map:", exc)
    print("ok")
""")


def test_under_gevent_started_work_runs_while_its_caller_goes_on():
    """off_hub_start, and off_hub_map's calls, which all run at once."""
    run = under_gevent_ok(STARTED_UNDER_GEVENT)
    assert "error raised by the wait: invalid literal" in run.stdout
    assert "error raised by the map: invalid literal for int() with base 10: 'x'" in run.stdout


def test_without_gevent_the_work_runs_in_place():
    assert not gevent_patched()
    assert off_hub(threading.get_native_id) == threading.get_native_id()
    with pytest.raises(ValueError):
        off_hub(int, "x")
    # Started work runs at once, in place; its wait hands over the result or the error.
    assert off_hub_start(threading.get_native_id)() == threading.get_native_id()
    failing = off_hub_start(int, "x")
    with pytest.raises(ValueError):
        failing()



def test_without_gevent_mapped_calls_run_in_place_in_order():
    calls = []
    assert off_hub_map(lambda i: calls.append(i) or i * 2, [3, 1, 2]) == [6, 2, 4] and calls == [3, 1, 2]
    with pytest.raises(ValueError):
        off_hub_map(int, ["1", "x"])


AHEAD_UNDER_GEVENT = textwrap.dedent("""
    from gevent import monkey
    monkey.patch_all()
    from gevent._threading import Lock  # native, whatever the patching
    from viewer.stills.offload import off_hub_ahead

    started = [Lock() for _ in range(4)]
    for lock in started:
        lock.acquire()

    def encode(i):
        # Tile i finishes only once tile i + 1 has started: only calls that run ahead of the
        # caller, on native threads, can all finish.
        started[i].release()
        return i, i == 3 or started[i + 1].acquire(True, 10)

    assert list(off_hub_ahead(encode, range(4), 2)) == [(i, True) for i in range(4)], "did not run ahead"
    results = off_hub_ahead(int, ["1", "x", "2"], 2)
    assert next(results) == 1
    try:
        next(results)
    except ValueError as exc:
        print("error raised in order:", exc)
    print("ok")
""")


def test_under_gevent_calls_run_ahead_of_their_caller_and_come_back_in_order():
    run = under_gevent_ok(AHEAD_UNDER_GEVENT)
    assert "error raised in order: invalid literal for int() with base 10: 'x'" in run.stdout


def test_without_gevent_calls_ahead_run_in_place_one_by_one():
    from viewer.stills.offload import off_hub_ahead

    calls = []
    results = off_hub_ahead(lambda i: calls.append(i) or i * 2, [3, 1, 2], 2)
    assert calls == []  # lazily: nothing before the first result is asked for
    assert next(results) == 6 and calls == [3]
    assert list(results) == [2, 4] and calls == [3, 1, 2]
