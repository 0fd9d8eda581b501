"""CLI: python -m processor [--transform SPEC] [--tile N] [--group NAME] [--concurrency N] | --list"""

from __future__ import annotations

import argparse

from pipeline.allocator import keep_freed_buffers
from pipeline.service import fail, setup_logging, stop_on_signals
from pipeline.settings import Settings
from pipeline.transforms import TransformError, describe, parse_spec
from processor.run import DEFAULT_GROUP, run


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m processor",
        description="Transform frames from Kafka as a member of a consumer group (at-least-once).",
    )
    p.add_argument("--transform", default="grayscale",
                   help="transform chain, e.g. 'grayscale,blur:ksize=9,edges' (see --list); "
                        "a frame's own 'transform' header overrides it")
    p.add_argument("--group", default=DEFAULT_GROUP, help=f"consumer group (default {DEFAULT_GROUP})")
    p.add_argument("--concurrency", type=_positive, default=1, metavar="N",
                   help="worker threads: frames of a batch (or tiles, with --tile) in parallel (default 1)")
    p.add_argument("--tile", type=_positive, default=None, metavar="N",
                   help="split each whole frame into N px tiles (with the chain's halo) and process them "
                        "in parallel on the --concurrency workers; output is pixel-identical")
    p.add_argument("--id", dest="processor_id", default=None, help="processor id in heartbeats (default random)")
    p.add_argument("--list", action="store_true", help="print every transform with its parameters and exit")
    p.add_argument("--quiet", action="store_true", help="log warnings only")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        print(describe())
        return 0
    try:
        parse_spec(args.transform)
    except TransformError as exc:
        fail(f"{exc} (python -m processor --list shows every transform)")
    setup_logging(args.quiet)
    keep_freed_buffers()  # the same frame buffers again each frame (pipeline/allocator.py)
    run(Settings.from_env(), transform=args.transform, group=args.group, stop=stop_on_signals(),
        concurrency=args.concurrency, tile=args.tile, processor_id=args.processor_id)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
