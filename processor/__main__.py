"""CLI: python -m processor [--transform SPEC] [--group NAME] | --list"""

from __future__ import annotations

import argparse

from pipeline.service import fail, setup_logging, stop_on_signals
from pipeline.settings import Settings
from processor.run import DEFAULT_GROUP, run
from processor.transforms import TransformError, describe, parse_spec


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m processor", description="Transform frames from Kafka as a consumer-group member.")
    p.add_argument("--transform", default="grayscale", help="transform chain, e.g. 'grayscale,blur:ksize=9' (see --list)")
    p.add_argument("--group", default=DEFAULT_GROUP, help=f"consumer group (default {DEFAULT_GROUP})")
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
        fail(str(exc))
    setup_logging(args.quiet)
    run(Settings.from_env(), transform=args.transform, group=args.group, stop=stop_on_signals())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
