"""MJPEG fan-out through nginx (deploy/nginx.conf) against the same viewer directly, in one run.

    .venv/bin/python -m bench.proxy_fanout [--clients 200] [--size 1280x720] [--seconds 8]

One viewer (`gunicorn -k gevent -w 1`) on the real broker serves one 25 fps stream of the
sample video (grayscale JPEG q80); nginx runs deploy/nginx.conf in front of it, as the tests
start it (tests/support/nginx.py). Two rounds on the same stream:

1. direct: --clients MJPEG clients of the viewer (bench/mjpeg_load.py, a process of their own);
2. through nginx: as many clients of nginx, while three latency clients read the stream at
   the same moment: one through nginx and two directly. Each frame carries its send time after
   the JPEG's end marker (bench/naive_baseline.py's feed and reader), so a client's latency is
   arrival minus send. The extra latency is taken per frame, on the frames both received:
   arrival through nginx minus arrival at the first direct reader (a stall both paths share
   cancels out); its p99 is the figure. Its same-run baseline is the second direct reader
   taken the same way: what two clients of one path already differ by (their places in the
   viewer's write loop, the readers' own scheduling). The difference of the paths' own p99s
   is printed too.

The fps baseline is what the viewer's hub received in the round (viewer_fanout.measure). On 2
cores the clients, nginx and the viewer share the machine: absolute figures are a floor.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import threading
import time

import numpy as np

from bench.naive_baseline import StampedFeed, arrivals
from bench.report import Row as ReportRow
from bench.report import ratio, write_json
from bench.viewer_fanout import STREAM, Row, bench_settings, cpu_seconds, measure, sample_frames
from pipeline.local.broker import EmbeddedBroker
from producer.__main__ import size_arg
from tests.support.gunicorn_server import Gunicorn
from tests.support.nginx import Nginx
from tests.support.waiting import wait_for_snapshot

EXTRA_P99_GOAL_MS = 10.0


READERS = ("direct", "direct-2", "nginx")


@dataclasses.dataclass
class Result:
    direct: Row
    proxied: Row
    # Reader name -> (send ms, arrival ms) of each frame it got during the proxied round.
    arrivals: dict[str, list[tuple[int, float]]]
    nginx_cores: float  # nginx workers' CPU during the proxied round

    def latency_ms(self, reader: str) -> np.ndarray:
        return np.array([arrived - sent for sent, arrived in self.arrivals[reader]])

    def later_than_direct_ms(self, reader: str) -> np.ndarray:
        """Per frame it and the first direct reader both got: its arrival minus the direct one's."""
        direct = dict(self.arrivals["direct"])
        return np.array([arrived - direct[sent] for sent, arrived in self.arrivals[reader] if sent in direct])


def nginx_workers(nginx: Nginx) -> list[int]:
    with open(f"/proc/{nginx.proc.pid}/task/{nginx.proc.pid}/children") as f:
        return [int(pid) for pid in f.read().split()]


def proxied_round(server: Gunicorn, nginx: Nginx, clients: int, seconds: float
                  ) -> tuple[Row, dict[str, list[tuple[int, float]]], float]:
    """`clients` through nginx, with latency readers on both paths at the same time."""
    path = f"/stream/{STREAM}.mjpg"
    warmup = 2.0 + clients / 500  # as measure() waits for its clients to connect
    got: dict[str, list[tuple[int, float]]] = {}
    ports = {"direct": server.port, "direct-2": server.port, "nginx": nginx.port}

    def reader(name: str) -> None:
        got[name] = arrivals(ports[name], path, seconds, warmup)

    threads = [threading.Thread(target=reader, args=(name,), daemon=True) for name in READERS]
    workers = nginx_workers(nginx)
    cpu0, t0 = sum(cpu_seconds(pid) for pid in workers), time.monotonic()
    for thread in threads:
        thread.start()
    row = measure(server, clients, seconds, port=nginx.port)
    for thread in threads:
        thread.join(warmup + seconds + 30)
    cores = (sum(cpu_seconds(pid) for pid in workers) - cpu0) / (time.monotonic() - t0)
    if not all(got.get(name) for name in READERS):
        raise RuntimeError(f"a latency reader got no frame: {({k: len(v) for k, v in got.items()})}")
    return row, got, cores


def run(clients: int, size: tuple[int, int], seconds: float) -> Result:
    frames = sample_frames(size)
    with EmbeddedBroker() as broker:
        settings = bench_settings(broker, "proxy")
        feed = StampedFeed(settings, frames, size)
        feed.start()
        server = Gunicorn(settings)
        try:
            wait_for_snapshot(server.url, STREAM)
            with Nginx([server.port]) as nginx:
                direct = measure(server, clients, seconds)
                proxied, got, cores = proxied_round(server, nginx, clients, seconds)
            return Result(direct, proxied, got, cores)
        finally:
            server.stop()
            feed.stop.set()
            feed.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=200, help="MJPEG clients per round (default 200)")
    parser.add_argument("--size", type=size_arg, default=(1280, 720), help="frame size WxH (default 1280x720)")
    parser.add_argument("--seconds", type=float, default=8.0, help="measuring time per round")
    parser.add_argument("--json", metavar="FILE", help="also write the rows there (bench/report.py)")
    args = parser.parse_args()
    if args.clients < 1 or args.seconds <= 0:
        parser.exit(2, "proxy_fanout: --clients must be >= 1 and --seconds > 0\n")
    size = f"{args.size[0]}x{args.size[1]}"
    print(f"load {os.getloadavg()[0]:.2f}; stream {size} gray JPEG q80, 25 fps; {args.clients} clients; "
          f"gunicorn -k gevent -w 1 alone, then behind nginx; {args.seconds:.0f} s per round", flush=True)
    r = run(args.clients, args.size, args.seconds)
    print(f"{'round':<8} {'hub fps':>8} {'p5 fps':>7} {'median':>7} {'min':>6} {'viewer cores':>13}")
    for name, row in (("direct", r.direct), ("nginx", r.proxied)):
        print(f"{name:<8} {row.hub_fps:>8.1f} {row.p5_fps:>7.1f} {row.median_fps:>7.1f} {row.min_fps:>6.1f} "
              f"{row.cpu_cores:>13.2f}")
    print(f"nginx workers: {r.nginx_cores:.2f} cores during the nginx round")
    for name in READERS:
        ms = r.latency_ms(name)
        print(f"latency {name:<8} p50 {np.percentile(ms, 50):6.1f} ms  p99 {np.percentile(ms, 99):6.1f} ms "
              f"({len(ms)} frames)")
    extra, noise = r.later_than_direct_ms("nginx"), r.later_than_direct_ms("direct-2")
    direct_p99, proxied_p99 = float(np.percentile(r.latency_ms("direct"), 99)), float(np.percentile(r.latency_ms("nginx"), 99))
    extra_p99, noise_p99 = float(np.percentile(extra, 99)), float(np.percentile(noise, 99))
    for name, ms in (("nginx", extra), ("direct-2", noise)):
        print(f"later than the first direct reader, per frame: {name:<8} p50 {np.percentile(ms, 50):+6.1f} ms  "
              f"p99 {np.percentile(ms, 99):+6.1f} ms ({len(ms)} frames)")
    print(f"extra p99 through nginx: {extra_p99:+.1f} ms per frame (goal < {EXTRA_P99_GOAL_MS:g} ms; a second direct "
          f"reader: {noise_p99:+.1f} ms); p99 through nginx minus p99 direct: {proxied_p99 - direct_p99:+.1f} ms")
    print(f"load {os.getloadavg()[0]:.2f} at the end")
    n = args.clients
    write_json(args.json, [
        ReportRow(f"through nginx: {n} MJPEG clients, 5th-percentile client ({size})", round(r.proxied.p5_fps, 1),
                  "fps", round(r.proxied.hub_fps, 1), "frames the viewer received", ratio(r.proxied.p5_fps, r.proxied.hub_fps),
                  "≥ 0.9×"),
        ReportRow(f"through nginx vs direct: {n} clients, 5th-percentile client ({size})", round(r.proxied.p5_fps, 1),
                  "fps", round(r.direct.p5_fps, 1), "the same clients of the viewer directly",
                  ratio(r.proxied.p5_fps, r.direct.p5_fps), "≥ 0.9×"),
        ReportRow(f"latency p99 through nginx, {n} clients on nginx ({size})", round(proxied_p99, 1), "ms",
                  round(direct_p99, 1), "a direct reader, same frames, same moment", ratio(proxied_p99, direct_p99),
                  f"extra < {EXTRA_P99_GOAL_MS:g} ms"),
        ReportRow(f"extra latency through nginx per frame, p99, {n} clients ({size})", round(extra_p99, 1), "ms",
                  round(noise_p99, 1), "a second direct reader, the same way", ratio(extra_p99, noise_p99),
                  f"< {EXTRA_P99_GOAL_MS:g} ms"),
    ])


if __name__ == "__main__":
    main()
