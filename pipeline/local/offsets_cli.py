"""CLI: `python -m pipeline offsets show|reset`, shaped after kafka-consumer-groups.sh."""

from __future__ import annotations

import argparse
import uuid

from kafka.errors import KafkaError

from pipeline.control import ControlWriter
from pipeline.offsets import GroupActiveError, Move, OffsetsError, OffsetTool, Target, format_ts, parse_datetime, parse_duration
from pipeline.service import fail
from pipeline.settings import Settings
from pipeline.viewer_groups import is_viewer_group, write_reset


def add_parser(sub) -> None:
    offsets = sub.add_parser("offsets", help="show or reset consumer-group offsets (replay)")
    actions = offsets.add_subparsers(dest="action", required=True)

    show = actions.add_parser("show", help="committed offset, log-end offset, lag and committed record time per partition")
    who = show.add_mutually_exclusive_group(required=True)
    who.add_argument("--group", help="consumer group id")
    who.add_argument("--all", action="store_true", help="list every consumer group")
    show.add_argument("--topic", help="only this topic (default: every topic the group committed offsets for)")

    reset = actions.add_parser(
        "reset",
        help="reset a group's offsets (dry run unless --execute)",
        description="Prints old -> new offset per partition. Dry run unless --execute. Refuses while the group "
        "has active members. Every new offset is clamped to the partition's [earliest, end]. "
        "A viewer's group (viewer-<id>) has no members while its streams are open (they read without "
        "joining), so --execute first writes the reset to the control topic: every viewer process moves its "
        "open streams of that id to the new offsets, as POST /api/replay does, and their next commits keep them.",
    )
    reset.add_argument("--group", required=True, help="consumer group id")
    reset.add_argument("--topic", help="only this topic (default: every topic the group committed offsets for)")
    to = reset.add_mutually_exclusive_group(required=True)
    to.add_argument("--to-earliest", action="store_true", help="the oldest record still kept")
    to.add_argument("--to-latest", action="store_true", help="the end of the log (skip everything)")
    to.add_argument("--to-offset", type=int, metavar="N", help="offset N in every partition")
    to.add_argument("--to-datetime", metavar="ISO8601", help="first record at/after this time (no zone: local time)")
    to.add_argument("--shift-by", type=int, metavar="N", help="move the committed offset by N (negative: back)")
    to.add_argument("--by-duration", metavar="DURATION", help="first record at/after now minus DURATION, e.g. PT30S")
    reset.add_argument("--execute", action="store_true", help="apply the plan (default: only print it)")


def target_of(args: argparse.Namespace) -> Target:
    if args.to_earliest:
        return Target("earliest")
    if args.to_latest:
        return Target("latest")
    if args.to_offset is not None:
        if args.to_offset < 0:
            raise OffsetsError("--to-offset must be 0 or more")
        return Target("offset", args.to_offset)
    if args.to_datetime is not None:
        return Target("datetime", parse_datetime(args.to_datetime))
    if args.shift_by is not None:
        return Target("shift", args.shift_by)
    ms = parse_duration(args.by_duration)
    if ms < 0:
        raise OffsetsError("--by-duration takes a positive duration, e.g. PT30S")
    return Target("duration", ms)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows])


def _show(tool: OffsetTool, args: argparse.Namespace) -> None:
    if args.all:
        print("\n".join(tool.groups()))
        return
    states = tool.describe(args.group, tool.group_partitions(args.group, args.topic))
    rows = [
        [args.group, s.tp.topic, s.tp.partition, "-" if s.committed is None else s.committed, s.end,
         "-" if s.lag is None else s.lag, format_ts(s.committed_ts)]
        for s in states
    ]
    print(_table(["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "COMMITTED-RECORD-TIME"], rows))


def plan_rows(group: str, moves: list[Move]) -> list[list[str]]:
    def text(offset: int | None) -> str:
        return "-" if offset is None else str(offset)

    return [[group, m.tp.topic, str(m.tp.partition), f"{text(m.old)} → {text(m.new if m.new is not None else m.old)}"]
            for m in moves]


def _tell_viewers(settings: Settings, group: str, moves: list[Move]) -> int | None:
    """Write a viewer group's reset to the control topic (before its commit: see
    viewer/live/broadcast.py), so that streams open on it follow instead of committing their old
    position over it; the record's offset (None: nothing moves)."""
    positions = {m.tp: m.new for m in moves if m.new is not None}
    if not positions:
        return None
    writer = ControlWriter(settings)
    try:
        return write_reset(writer, group, positions, origin=f"offsets-cli-{uuid.uuid4().hex}")
    finally:
        writer.close()


def _reset(tool: OffsetTool, args: argparse.Namespace, settings: Settings) -> None:
    target = target_of(args)
    tps = tool.group_partitions(args.group, args.topic)
    tool.ensure_inactive(args.group)
    moves = tool.plan_reset(args.group, tps, target)
    print(_table(["GROUP", "TOPIC", "PARTITION", "OFFSET (OLD → NEW)"], plan_rows(args.group, moves)))
    if args.execute:
        record = _tell_viewers(settings, args.group, moves) if is_viewer_group(args.group) else None
        tool.apply(args.group, moves)
        print(f"reset {sum(m.new is not None for m in moves)} partition(s) of group {args.group}")
        if record is not None:
            print(f"open viewer streams of {args.group} follow it (control record at offset {record})")
    else:
        print("dry run: nothing changed (add --execute to apply)")


def run(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env()
        with OffsetTool(settings) as tool:
            if args.action == "show":
                _show(tool, args)
            else:
                _reset(tool, args, settings)
    except (GroupActiveError, OffsetsError) as exc:
        fail(str(exc))
    except KafkaError as exc:
        fail(f"broker: {exc}", code=1)
    return 0
