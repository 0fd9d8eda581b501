"""Consumer-group timing on the real embedded broker, per (session timeout, heartbeat interval):
how long a lone member needs to join, how long a second member's join stalls the group, and how
long after a member's `kill -9` the survivor owns every partition (the takeover).

On Tansu the join takes about half the session timeout and a dead member is noticed after about
the session timeout, so the takeover costs ~1.5x the session timeout: the choice is between a
fast takeover and tolerance of a member that cannot heartbeat for a while (a GC pause, a
starved CPU). Apache Kafka needs the broker's group.min.session.timeout.ms at or below the
chosen session timeout (its default is 6000).

The first setting is the baseline the others' takeover is compared with (the "2nd join" column
includes starting the second member's Python process).

Run: .venv/bin/python bench/group_takeover.py [--rounds N] [--settings 6000/1000,2000/500,...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from kafka.admin import NewTopic  # noqa: E402

from pipeline.kafka import make_admin, make_consumer  # noqa: E402
from pipeline.local.broker import EmbeddedBroker  # noqa: E402
from pipeline.settings import Settings  # noqa: E402

PARTITIONS = 4

# A group member in a process of its own, so it can be killed with SIGKILL.
MEMBER = """
import sys, time
sys.path.insert(0, {root!r})
from pipeline.kafka import make_consumer
from pipeline.settings import Settings
c = make_consumer(Settings(bootstrap_servers={bootstrap!r}), "bench-victim", group_id={group!r},
                  session_timeout_ms={session}, heartbeat_interval_ms={heartbeat})
c.subscribe([{topic!r}])
while True:
    c.poll(timeout_ms=200)
    if c.assignment():
        print("assigned", flush=True)
"""


class Survivor(threading.Thread):
    def __init__(self, settings: Settings, group: str, topic: str, session: int, heartbeat: int) -> None:
        super().__init__(daemon=True)
        self.consumer = make_consumer(settings, "bench-survivor", group_id=group, session_timeout_ms=session,
                                      heartbeat_interval_ms=heartbeat)
        self.topic = topic
        self.owned: set[int] = set()
        self.changes: list[tuple[float, set[int]]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        self.consumer.subscribe([self.topic])
        while not self.stop.is_set():
            self.consumer.poll(timeout_ms=50)
            owned = {tp.partition for tp in self.consumer.assignment()}
            if owned != self.owned:
                self.owned = owned
                self.changes.append((time.monotonic(), owned))
        self.consumer.close()

    def when(self, condition, after: float, timeout_s: float = 60.0) -> float:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for at, owned in list(self.changes):
                if at >= after and condition(owned):
                    return at - after
            time.sleep(0.01)
        raise TimeoutError("the group never reached the expected assignment")


def one_round(settings: Settings, session: int, heartbeat: int) -> tuple[float, float, float]:
    topic, group = f"takeover-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    admin = make_admin(settings)
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    admin.close()
    survivor = Survivor(settings, group, topic, session, heartbeat)
    started = time.monotonic()
    survivor.start()
    join = survivor.when(lambda owned: len(owned) == PARTITIONS, started)
    code = MEMBER.format(root=ROOT, bootstrap=settings.bootstrap_servers, group=group, topic=topic,
                         session=session, heartbeat=heartbeat)
    victim = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        second_join_from = time.monotonic()
        victim.stdout.readline()  # the victim owns partitions: the group is split
        rejoin = survivor.when(lambda owned: 0 < len(owned) < PARTITIONS, second_join_from)
        time.sleep(2 * heartbeat / 1000)  # a steady group, heartbeats flowing
        killed = time.monotonic()
        victim.kill()
        takeover = survivor.when(lambda owned: len(owned) == PARTITIONS, killed)
    finally:
        victim.kill()
        victim.wait()
        survivor.stop.set()
        survivor.join(30)
    return join, rejoin, takeover


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--settings", default="6000/1000,3000/1000,2000/500,1500/500,1000/250",
                   help="session_timeout_ms/heartbeat_interval_ms pairs, comma-separated")
    args = p.parse_args()
    pairs = [tuple(int(x) for x in pair.split("/")) for pair in args.settings.split(",")]
    with EmbeddedBroker() as broker:
        settings = Settings(bootstrap_servers=broker.bootstrap)
        print(f"{'session/heartbeat':>18}  {'join s':>7}  {'2nd join s':>10}  {'takeover s (median, worst)':>27}  "
              f"vs {pairs[0][0]}/{pairs[0][1]}")
        baseline = None
        for session, heartbeat in pairs:
            rounds = [one_round(settings, session, heartbeat) for _ in range(args.rounds)]
            joins, rejoins, takeovers = zip(*rounds, strict=True)
            median = statistics.median(takeovers)
            baseline = baseline or median
            print(f"{f'{session}/{heartbeat}':>18}  {statistics.median(joins):7.2f}  {statistics.median(rejoins):10.2f}  "
                  f"{median:16.2f} {max(takeovers):9.2f}  {median / baseline:.2f}x", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
