"""CLI: python -m pipeline up | broker | topics create | offsets show|reset | transform show|set"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re

from kafka.errors import KafkaError

from pipeline.kafka import ensure_topics, topic_specs
from pipeline.local import offsets_cli, transform_cli
from pipeline.local.broker import BrokerError, EmbeddedBroker
from pipeline.local.retention import DEFAULT_BUDGET_MB, DEFAULT_WINDOW_S, MIN_BUDGET_MB
from pipeline.local.up import SAMPLE_VIDEO, UpOptions, run
from pipeline.offsets import OffsetsError, parse_duration
from pipeline.service import fail, setup_logging, stop_on_signals
from pipeline.settings import Settings


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline", description="Run and manage the live video pipeline.")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start broker (unless KAFKA_BOOTSTRAP_SERVERS is set), producer, processors and viewer")
    up.add_argument("--video", default=SAMPLE_VIDEO, help="video file, URL or camera index (default: the bundled sample)")
    up.add_argument("--fps", default="native", help="producer rate: a number, 'native' or 'max'")
    up.add_argument("--transform", default="grayscale", help="processor transform chain (see python -m processor --list)")
    up.add_argument("--processors", type=int, default=1, help="processor processes in the group (default 1)")
    up.add_argument("--port", type=int, default=8000, help="viewer port (default 8000)")
    up.add_argument("--host", default="127.0.0.1", help="viewer bind address (default 127.0.0.1)")
    up.add_argument("--broker-port", type=int, default=9092, help="embedded broker port (default 9092)")
    up.add_argument("--loop", action=argparse.BooleanOptionalAction, default=True, help="loop the video (default on)")
    up.add_argument(
        "--embedded-retention-mb", type=int, default=DEFAULT_BUDGET_MB, metavar="MB",
        help=f"embedded broker only: its memory budget; past it the oldest replay history is dropped early "
             f"(default {DEFAULT_BUDGET_MB}; 0: no bound, keep everything)",
    )
    up.add_argument(
        "--retention", type=window_arg, default=DEFAULT_WINDOW_S, metavar="DURATION",
        help=f"embedded broker only: keep at least this much replayable history, e.g. 90s, 5m, PT2M "
             f"(default {DEFAULT_WINDOW_S:.0f}s), as far as the memory budget allows",
    )

    up.add_argument(
        "--exit-on-failure", action="store_true",
        help="stop everything when any service or the embedded broker dies (default: restart it, with backoff)",
    )

    broker = sub.add_parser("broker", help="run the embedded Tansu broker alone, with the pipeline's topics")
    broker.add_argument("--port", type=int, default=9092, help="listen port (default 9092)")

    offsets_cli.add_parser(sub)
    transform_cli.add_parser(sub)

    topics = sub.add_parser("topics", help="manage the pipeline's topics")
    topics_sub = topics.add_subparsers(dest="topics_command", required=True)
    topics_sub.add_parser(
        "create",
        help="create the pipeline's topics per TOPIC_PARTITIONS, TOPIC_REPLICATION_FACTOR, MAX_MESSAGE_BYTES",
    )
    return p


def window_arg(text: str) -> float:
    """--retention: 90s, 5m, 1h, a number of seconds, or an ISO 8601 duration (PT5M)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text.lower())
    try:
        seconds = float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[match[2]] if match else parse_duration(text) / 1000
    except OffsetsError:
        raise argparse.ArgumentTypeError(f"--retention takes a duration such as 90s, 5m or PT5M, not {text!r}") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError("--retention must be positive")
    return seconds


def create_topics() -> int:
    try:
        settings = Settings.from_env()
        ensure_topics(settings)
    except (KafkaError, ValueError) as exc:
        fail(f"could not create topics: {exc}")
    for spec in topic_specs(settings):
        print(f"topic {spec.name}: {spec.num_partitions} partitions, replication {spec.replication_factor}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "offsets":
        setup_logging(quiet=True)
        return offsets_cli.run(args)
    if args.command == "transform":
        setup_logging(quiet=True)
        return transform_cli.run(args)
    setup_logging()
    if args.command == "topics":
        return create_topics()
    stop = stop_on_signals()
    if args.command == "broker":
        try:
            with EmbeddedBroker(args.port) as broker:
                # The pipeline's topics at their partition counts (TOPIC_* variables), at once: it
                # keeps them in memory only, so a restarted broker would otherwise get them from
                # the first client that asks, with its default of 4 partitions, and that
                # client's first records fail (the topic is not there yet).
                ensure_topics(dataclasses.replace(Settings.from_env(), bootstrap_servers=broker.bootstrap))
                print(f"broker: {broker.bootstrap}  (Ctrl-C to stop)", flush=True)
                stop.wait()
        except BrokerError as exc:
            fail(str(exc))
        except (KafkaError, ValueError) as exc:
            fail(f"could not create the topics: {exc}")
        return 0
    if args.processors < 1:
        fail("--processors must be at least 1")
    if args.embedded_retention_mb != 0 and args.embedded_retention_mb < MIN_BUDGET_MB:
        fail(f"--embedded-retention-mb must be 0 (off) or at least {MIN_BUDGET_MB}: the idle broker alone needs ~50 MB")
    if "://" not in args.video and not args.video.isdigit() and not os.path.isfile(args.video):
        fail(f"no such video file: {args.video}")
    opts = UpOptions(
        args.video, args.fps, args.transform, args.processors, args.port, args.host, args.broker_port, args.loop,
        args.embedded_retention_mb, args.retention, args.exit_on_failure,
    )
    try:
        return run(opts, stop)
    except BrokerError as exc:
        fail(str(exc))


if __name__ == "__main__":
    raise SystemExit(main())
