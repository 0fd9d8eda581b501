"""CLI: python -m producer --source PATH|URL|CAMERA_INDEX ..."""

from __future__ import annotations

import argparse

from pipeline.service import fail, setup_logging, stop_on_signals
from pipeline.settings import Settings
from producer.run import run
from producer.source import SourceError, default_stream_name


def fps_arg(value: str) -> float | str:
    if value in ("native", "max"):
        return value
    try:
        fps = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--fps takes a number, 'native' or 'max', not {value!r}") from None
    if fps <= 0:
        raise argparse.ArgumentTypeError("--fps must be positive")
    return fps


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m producer", description="Decode a video and publish its frames to Kafka.")
    p.add_argument("--source", required=True, help="video file path, http(s)/rtsp URL, or camera index (0, 1, ...)")
    p.add_argument("--stream", help="stream name (default: the source file's stem)")
    p.add_argument(
        "--fps", type=fps_arg, default="native",
        help="frames per second: a number, 'native' (the file's rate, default) or 'max' (unthrottled)",
    )
    p.add_argument("--format", choices=("jpeg", "png"), default="jpeg", help="frame encoding (default jpeg; png: lossless, slow)")
    p.add_argument("--quality", type=int, default=80, help="JPEG quality 1-100 (default 80)")
    p.add_argument("--loop", action="store_true", help="restart a file at its end")
    p.add_argument("--max-frames", type=int, help="stop after N frames")
    p.add_argument("--quiet", action="store_true", help="log warnings only")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 1 <= args.quality <= 100:
        fail("--quality must be between 1 and 100")
    if args.max_frames is not None and args.max_frames < 1:
        fail("--max-frames must be at least 1")
    setup_logging(args.quiet)
    stop = stop_on_signals()
    try:
        stats = run(
            Settings.from_env(),
            args.source,
            args.stream or default_stream_name(args.source),
            fps=args.fps,
            fmt=args.format,
            quality=args.quality,
            loop=args.loop,
            max_frames=args.max_frames,
            stop=stop,
        )
    except SourceError as exc:
        fail(str(exc))
    print(stats.summary())
    return 1 if stats.delivery_errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
