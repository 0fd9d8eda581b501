"""CLI: `python -m pipeline transform show [STREAM] | set STREAM SPEC`, the streams' live chains."""

from __future__ import annotations

import argparse
from datetime import datetime

from kafka.errors import KafkaError

from pipeline.control import REFERENCE_SIZE, ChainControl, ChainEntry, ControlError, check_stream, live_chain
from pipeline.service import fail
from pipeline.settings import Settings


def add_parser(sub) -> None:
    transform = sub.add_parser(
        "transform",
        help="show or set a stream's live transform chain (the control topic)",
        description="Processors follow the control topic: a chain set here applies from the next frame "
        "they read, without a restart. Streams without an entry use the processors' --transform.",
    )
    actions = transform.add_subparsers(dest="action", required=True)
    show = actions.add_parser("show", help="the chain of STREAM, or of every stream that has one")
    show.add_argument("stream", nargs="?", help="stream name (default: every stream with an entry)")
    put = actions.add_parser("set", help="set STREAM's chain, e.g. set sample 'blur:ksize=15,edges'")
    put.add_argument("stream", help="stream name")
    put.add_argument("spec", help="transform chain (python -m processor --list shows every transform); its "
                     "estimated work is checked at 1280x720, as the stream's own size is not known here")


def _line(entry: ChainEntry) -> str:
    changed = datetime.fromtimestamp(entry.changed_ms / 1000).astimezone().isoformat(timespec="seconds")
    return f"{entry.stream}  {entry.spec}  (version {entry.version}, changed {changed})"


def run(args: argparse.Namespace) -> int:
    try:
        # Bad input is refused before connecting.
        check_stream(args.stream) if args.stream is not None else None
        if args.action == "set":
            live_chain(args.spec, REFERENCE_SIZE)
    except ControlError as exc:
        fail(str(exc))
    try:
        control = ChainControl(Settings.from_env(), "transform-cli")
    except KafkaError as exc:
        fail(f"broker: {exc}", code=1)
    try:
        if args.action == "set":
            print(_line(control.set(args.stream, args.spec)))
            return 0
        if not control.synced:
            fail(f"control topic {control.topic} could not be read (missing? run: python -m pipeline topics create)",
                 code=1)
        if args.stream is None:
            entries = control.entries()
            print("\n".join(map(_line, entries)) if entries else "no stream has a chain of its own")
        else:
            entry = control.get(args.stream)
            print(_line(entry) if entry else f"{args.stream}  (no entry: processors use their --transform)")
        return 0
    except ControlError as exc:
        fail(str(exc))
    except KafkaError as exc:
        fail(f"broker: {exc}", code=1)
    finally:
        control.close()
