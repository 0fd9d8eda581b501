# Read by gunicorn from the directory it starts in (`pipeline up`, the Docker image, tests):
# the viewer's production settings, so `gunicorn -k gevent 'viewer:create_app()'` gets them too.

import glob
import os
import shutil
import tempfile

# Every open MJPEG client holds one connection for as long as it watches, so the gevent
# worker's default of 1,000 is a viewer limit, not only a defence: 4,000 per worker, of which
# request bodies may hold only MAX_BODIES_IN_PROGRESS (viewer/bodies.py). Each connection is a
# file descriptor: the process needs `ulimit -n` above this.
worker_connections = 4000

# Seconds an idle keep-alive connection stays open: above deploy/nginx.conf's upstream
# keepalive_timeout (4 s), so nginx always closes an idle connection first and never reuses one
# the viewer is closing.
keepalive = 5

# Metrics across workers: each worker writes its metrics to files in PROMETHEUS_MULTIPROC_DIR
# and /metrics in any worker adds up every worker's (prometheus_client's multiprocess mode,
# viewer/metrics.py). The client picks its storage when it is first imported, so the directory
# is set up here, as the master reads this file: before it forks, and before it imports the app
# under --preload. A directory given in the environment is emptied (files of an earlier run would
# be added to this one's totals); without one, a private temporary directory is made and removed
# at exit. A reload (SIGHUP) reads this file again: the marker keeps it from emptying the
# directory the running workers write to.
_PREPARED = "VIEWER_METRICS_DIR_PREPARED"
_OWN = "VIEWER_METRICS_DIR_OWN"


def _prepare_metrics_dir() -> str:
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path and os.environ.get(_PREPARED) == f"{os.getpid()}:{path}":
        return path
    if path and os.environ.get(_OWN) == path:
        # Another gunicorn's private directory, inherited with its environment (a process that
        # read this file and then started this one): that gunicorn empties and removes it.
        path = None
    if path:
        os.makedirs(path, exist_ok=True)
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.remove(stale)
    else:
        path = os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.environ[_OWN] = tempfile.mkdtemp(prefix="viewer-metrics-")
    os.environ[_PREPARED] = f"{os.getpid()}:{path}"  # this master's, so a reload keeps it
    return path


_metrics_dir = _prepare_metrics_dir()


def child_exit(server, worker) -> None:
    # A dead worker's gauges (open clients, resume consumers) stop counting; its counters stay
    # in the totals, which count what it served.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, _metrics_dir)


def on_exit(server) -> None:
    if os.environ.get(_OWN) == _metrics_dir:
        shutil.rmtree(_metrics_dir, ignore_errors=True)
