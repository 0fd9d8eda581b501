"""Viewer ids: one open resumed stream per id, a bounded number at once, and the consumer
groups of ids gone idle forgotten.

A `?viewer=<id>` stream reads and commits as consumer group `viewer-<id>`, so an id is the key
to a resume point, and every new id is a new group on the broker.

- One stream per id, across every worker and replica: a second connection with the same id
  takes over and the first one's response ends, so two clients never move one resume point
  back and forth (a reloaded page gets its stream at once instead of waiting for the old
  connection to be noticed gone). In one process this is immediate; every new stream also
  claims its id in the control topic (viewer/live/broadcast.py), and a process holding an
  older connection of that id ends it when its follower reads the claim (within a poll).
- At most `max_open` resumed streams at once per process (each is a Kafka consumer of that
  process: a bound on its own resources, not shared); the next is refused.
- An id whose last stream closed more than `ttl_s` ago has its group deleted, and beyond
  `max_groups` ids the least recently used idle ones go first. Each process decides from what
  it knows: its own streams, the groups found on the broker at start (idle from then on), and
  the claims of other processes (an id claimed elsewhere counts as used at that moment). So
  with several processes the cap holds per process, and a stream that another process has kept
  open for longer than `ttl_s` can have its group deleted here; that stream's next commit
  makes the group again, with its position. Deleting a group also writes tombstones for the
  id's control records.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.kafka import make_admin
from pipeline.settings import Settings
from pipeline.viewer_groups import GROUP_PREFIX, viewer_group
from viewer.background import BackgroundLoop

log = logging.getLogger(__name__)

SWEEP_EVERY_S = 5.0
# Own claims remembered until read back (a follower that starts after one was written never reads it).
OWN_CLAIMS_KEPT = 1024


class TooManyViewers(Exception):
    """`max_open` resumed streams are open already."""


@dataclass
class Lease:
    """One open resumed stream of an id; `superseded` is set when a newer one takes over."""

    viewer_id: str
    superseded: threading.Event = field(default_factory=threading.Event)
    token: str = field(default_factory=lambda: uuid.uuid4().hex)  # names it in the control topic
    record: int | None = None  # the control-topic offset of its claim, once written
    started: bool = False  # its stream began reading (and so frees the id itself, after its last commit)


class ViewerIds(BackgroundLoop):
    name = "viewer-ids"

    def __init__(self, settings: Settings, max_open: int, max_groups: int, ttl_s: float,
                 clock: Callable[[], float] = time.monotonic, sweep_every_s: float = SWEEP_EVERY_S) -> None:
        super().__init__()
        self.settings = settings
        self.max_open, self.max_groups, self.ttl_s = max_open, max_groups, ttl_s
        self.clock = clock
        self.sweep_every_s = sweep_every_s
        self._open: dict[str, Lease] = {}
        self._idle: OrderedDict[str, float] = OrderedDict()  # id -> when its last stream closed, oldest first
        # id -> control-topic offset of the newest claim read from the topic, for open ids only
        self._claims: dict[str, tuple[int, str]] = {}
        # Tokens of this process's claims not read back yet: reading one back is no use elsewhere.
        self._own: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()
        # Called with the ids whose groups were deleted (ControlBroadcast writes their tombstones).
        self.on_expired: Callable[[list[str]], None] = lambda viewer_ids: None

    def open(self, viewer_id: str) -> Lease:
        """A lease for a new stream of `viewer_id` (an open one is superseded); TooManyViewers
        when `max_open` other ids are streaming."""
        with self._lock:
            old = self._open.get(viewer_id)
            if old is None and len(self._open) >= self.max_open:
                raise TooManyViewers(f"{self.max_open} resumed viewers are open already (MAX_RESUME_VIEWERS)")
            if old is not None:
                log.info("viewer group=%s: a new connection takes over from the open one", viewer_group(viewer_id))
                old.superseded.set()
            lease = self._open[viewer_id] = Lease(viewer_id)
            self._idle.pop(viewer_id, None)
        return lease

    def close_unstarted(self, lease: Lease) -> None:
        """The lease's stream was dropped before it began: it never commits, so the id is idle now."""
        if not lease.started:
            self.close(lease)

    def close(self, lease: Lease) -> None:
        """The lease's stream ended, its last commit made (a superseded lease leaves its
        successor alone). Idle from now: a commit after this could make a deleted group again."""
        with self._lock:
            if self._open.get(lease.viewer_id) is lease:
                del self._open[lease.viewer_id]
                self._claims.pop(lease.viewer_id, None)
                self._idle[lease.viewer_id] = self.clock()

    def claimed(self, lease: Lease, record: int) -> None:
        """The lease's claim was written at control-topic offset `record`; a newer claim from
        elsewhere, read meanwhile, supersedes it at once."""
        with self._lock:
            lease.record = record
            self._own[lease.token] = None
            while len(self._own) > OWN_CLAIMS_KEPT:
                self._own.popitem(last=False)
            newer = self._claims.get(lease.viewer_id)
            if newer is not None and newer[0] > record and newer[1] != lease.token:
                self._supersede(lease)

    def claim_seen(self, viewer_id: str, token: str, record: int) -> None:
        """A claim of `viewer_id` read from the control topic (any process's, ours included): an
        open lease of it here with an older claim ends."""
        with self._lock:
            if token in self._own:
                del self._own[token]
                return
            lease = self._open.get(viewer_id)
            if lease is None:  # used elsewhere just now: idle here from now on
                self._idle[viewer_id] = self.clock()
                self._idle.move_to_end(viewer_id)
                return
            self._claims[viewer_id] = (record, token)
            if token != lease.token and lease.record is not None and record > lease.record:
                self._supersede(lease)

    def _supersede(self, lease: Lease) -> None:
        log.info("viewer group=%s: a connection elsewhere took over from the one open here", viewer_group(lease.viewer_id))
        lease.superseded.set()
        if self._open.get(lease.viewer_id) is lease:
            del self._open[lease.viewer_id]
            self._claims.pop(lease.viewer_id, None)
            self._idle[lease.viewer_id] = self.clock()

    def adopt(self, viewer_ids: list[str]) -> None:
        """Ids whose groups exist already (from an earlier run): idle from now on."""
        with self._lock:
            for viewer_id in viewer_ids:
                if viewer_id not in self._open and viewer_id not in self._idle:
                    self._idle[viewer_id] = self.clock()

    def expired(self) -> list[str]:
        """Take out and return the idle ids whose groups should go: past the TTL, then the
        least recently used beyond `max_groups`."""
        now = self.clock()
        with self._lock:
            gone = [viewer_id for viewer_id, since in self._idle.items() if now - since > self.ttl_s]
            for viewer_id in gone:
                del self._idle[viewer_id]
            while self._idle and len(self._idle) + len(self._open) > self.max_groups:
                gone.append(self._idle.popitem(last=False)[0])
        return gone

    def run_once(self) -> None:
        admin = make_admin(self.settings)
        try:
            groups = [g["group_id"] for g in admin.list_groups()]
            self.adopt([g[len(GROUP_PREFIX):] for g in groups if g.startswith(GROUP_PREFIX)])
            while not self.stopping.wait(self.sweep_every_s):
                gone = self.expired()
                if gone:
                    admin.delete_groups([viewer_group(viewer_id) for viewer_id in gone])
                    log.info("deleted %d idle viewer group(s), e.g. %s", len(gone), viewer_group(gone[0]))
                    self.on_expired(gone)
        finally:
            admin.close()
