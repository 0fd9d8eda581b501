"""Still-image job state as a fold over the job-state topic: what every viewer replica agrees on.

Each record of the job-state topic (key = job id) carries the job's whole document, so the topic can
be compacted to one record per job. A replica applies the records in log order (the topic has
one partition), and every replica that has read up to the same offset holds the same
:class:`JobBook`. That order also decides admission: a ``requested`` record is admitted or
refused by counting the jobs in progress at its place in the log, with the limits the record
itself carries. Two uploads racing on two replicas are thereby ordered by the broker, and both
replicas reach the same verdict: the limits hold across replicas without a lock.

States: ``requested`` (admission asked), ``queued`` (admitted, tiles published), ``done``,
``failed``. A terminal record (done or failed) is final: later ones for the job are ignored,
so the first replica to publish one decides. A job still without one ``timeout_s`` after it
was created counts as failed (timed out): for admission by the requesting record's timestamp
(so every replica counts alike), for a status by the reader's clock.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass

STATES = ("requested", "queued", "done", "failed")
IN_PROGRESS = ("requested", "queued")
FORMATS = ("png", "jpeg")
MAX_RECORD_BYTES = 64 * 1024  # a job document is ~0.5 KB; anything much larger is not one
# "topic:partition" -> first offset where the job's output may sit. Bounded: two slots of the
# job results, processed and dead-letter topics, a partition count no deployment here gets near.
MAX_POSITIONS = 4096


class JobRecordError(ValueError):
    """A job-state-topic record that is not a job document (anyone who can write the topic can write it)."""


@dataclass(frozen=True)
class Limits:
    """What the requesting replica was configured with; admission applies these."""

    max_active: int
    max_per_client: int
    timeout_s: int


@dataclass(frozen=True)
class JobRecord:
    job: str
    state: str
    format: str
    transform: str
    width: int
    height: int
    created_ms: int
    client: str
    limits: Limits
    tiles_total: int = 0
    # Where the job's processed tiles and dead letters start: "topic:partition" -> offset, taken
    # before its first tile was published. A replica that did not see them go by reads from here.
    tiles_from: Mapping[str, int] = dataclasses.field(default_factory=dict)
    out_width: int | None = None
    out_height: int | None = None
    error: str | None = None
    finished_ms: int | None = None

    def to_value(self) -> bytes:
        body = dataclasses.asdict(self)
        body["tiles_from"] = dict(self.tiles_from)
        return json.dumps(body, separators=(",", ":")).encode()

    def but(self, **changes) -> JobRecord:
        return dataclasses.replace(self, **changes)

    @property
    def deadline_ms(self) -> int:
        return self.created_ms + self.limits.timeout_s * 1000


def _int(body: dict, name: str, low: int = 0, optional: bool = False) -> int | None:
    value = body.get(name)
    if value is None and optional:
        return None
    if type(value) is not int or value < low:
        raise JobRecordError(f"{name} must be an integer >= {low}, got {str(value)[:40]!r}")
    return value


def _text(body: dict, name: str, limit: int = 4096, optional: bool = False) -> str | None:
    value = body.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise JobRecordError(f"{name} must be text of at most {limit} characters")
    return value


def decode_record(key: bytes | None, value: bytes) -> JobRecord:
    """The job document of a job-state-topic record; JobRecordError if it is not one."""
    if len(value) > MAX_RECORD_BYTES:
        raise JobRecordError(f"record of {len(value)} bytes is not a job document")
    try:
        body = json.loads(value)
    except ValueError:
        raise JobRecordError("record is not JSON") from None
    if not isinstance(body, dict):
        raise JobRecordError("record is not a JSON object")
    job = _text(body, "job", 64)
    if key is None or key != job.encode():
        raise JobRecordError("record key is not its job id")
    state, fmt = body.get("state"), body.get("format")
    if state not in STATES:
        raise JobRecordError(f"unknown state {str(state)[:40]!r}")
    if fmt not in FORMATS:
        raise JobRecordError(f"unknown format {str(fmt)[:40]!r}")
    limits = body.get("limits")
    positions = body.get("tiles_from")
    if not isinstance(limits, dict) or not isinstance(positions, dict) or len(positions) > MAX_POSITIONS:
        raise JobRecordError("limits and tiles_from must be JSON objects")
    if not all(isinstance(k, str) and type(v) is int and v >= 0 for k, v in positions.items()):
        raise JobRecordError("tiles_from maps topic:partition to an offset")
    return JobRecord(
        job=job, state=state, format=fmt, transform=_text(body, "transform"),
        width=_int(body, "width", 1), height=_int(body, "height", 1), created_ms=_int(body, "created_ms"),
        client=_text(body, "client", 256),
        limits=Limits(_int(limits, "max_active", 1), _int(limits, "max_per_client", 1), _int(limits, "timeout_s", 1)),
        tiles_total=_int(body, "tiles_total"), tiles_from=positions,
        out_width=_int(body, "out_width", 1, optional=True), out_height=_int(body, "out_height", 1, optional=True),
        error=_text(body, "error", optional=True), finished_ms=_int(body, "finished_ms", optional=True),
    )


@dataclass(frozen=True)
class Entry:
    """A job as the fold holds it: its newest document, whether it was admitted, and the
    offset of the record that made it so."""

    record: JobRecord
    admitted: bool
    offset: int
    refusal: str | None = None

    def state_at(self, now_ms: int) -> str:
        if self.record.state in IN_PROGRESS and now_ms > self.record.deadline_ms:
            return "failed"
        return self.record.state

    def error_at(self, now_ms: int) -> str | None:
        if self.record.state in IN_PROGRESS and now_ms > self.record.deadline_ms:
            return (f"timed out after {self.record.limits.timeout_s} s: not every tile came back"
                    " (are processors running?)")
        return self.record.error


class JobBook:
    """The job-state topic folded: every job still known, by id. Not thread-safe: one reader applies
    records (JobLog serialises)."""

    def __init__(self, keep: int = 50) -> None:
        self.keep = keep
        self.jobs: dict[str, Entry] = {}
        self.pruned: list[str] = []  # finished jobs dropped to stay within `keep`, newest last

    def get(self, job: str) -> Entry | None:
        return self.jobs.get(job)

    def apply(self, offset: int, timestamp_ms: int, key: bytes | None, value: bytes | None) -> Entry | None:
        """Apply one record (``value`` None: a tombstone, the job is gone); the job's entry after
        it. JobRecordError for a record that is not a job document (nothing changes)."""
        if value is None:
            if key is not None:
                self.jobs.pop(key.decode(errors="replace"), None)
            return None
        record = decode_record(key, value)
        current = self.jobs.get(record.job)
        if current is not None and (not current.admitted or current.record.state in ("done", "failed")):
            return current  # refused, or already final: the first verdict stands
        if record.state == "requested":
            if current is not None:
                return current  # a request redelivered: decided once
            refusal = self._refusal(record, timestamp_ms)
            entry = Entry(record, admitted=refusal is None, offset=offset, refusal=refusal)
        else:
            # Admitted by its request, or its request was compacted away (then it was admitted,
            # since only an admitted job's replica writes more).
            entry = Entry(record, admitted=True, offset=offset)
        self.jobs[record.job] = entry
        if record.state in ("done", "failed"):
            self._prune()
        return entry

    def _refusal(self, record: JobRecord, now_ms: int) -> str | None:
        active = [e.record for e in self.jobs.values()
                  if e.admitted and e.record.state in IN_PROGRESS and now_ms <= e.record.deadline_ms]
        if len(active) >= record.limits.max_active:
            return f"{record.limits.max_active} jobs already in progress (MAX_ACTIVE_JOBS)"
        if sum(r.client == record.client for r in active) >= record.limits.max_per_client:
            return f"{record.limits.max_per_client} of your jobs already in progress (MAX_JOBS_PER_CLIENT)"
        return None

    def in_progress(self, now_ms: int) -> list[Entry]:
        return [e for e in self.jobs.values() if e.admitted and e.state_at(now_ms) in IN_PROGRESS]

    def _prune(self) -> None:
        finished = sorted((e for e in self.jobs.values() if e.record.state in ("done", "failed") or not e.admitted),
                          key=lambda e: e.offset, reverse=True)
        for entry in finished[self.keep:]:
            del self.jobs[entry.record.job]
            self.pruned.append(entry.record.job)
