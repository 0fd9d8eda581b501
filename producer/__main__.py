"""CLI: python -m producer --source PATH|URL|CAMERA_INDEX|DIR|GLOB ..."""

from __future__ import annotations

import argparse
import re
import sys
from typing import NoReturn

from pipeline.allocator import keep_freed_buffers
from pipeline.service import fail, setup_logging, stop_on_signals
from pipeline.settings import ACKS, Settings
from pipeline.wire import ENCODINGS, STREAM_NAME_RULE
from producer.delivery import BrokerUnavailable, ConnectPolicy
from producer.encode import DEFAULT_HALO
from producer.pacing import LATE_POLICIES
from producer.run import ProducerOptions, run
from producer.source import DEFAULT_OPEN_TIMEOUT_S, SourceError, default_stream_name

EPILOG = """\
sources:
  clip.mp4 / .avi / .mkv / ...   a video file (--loop restarts it, --start skips into it)
  http(s)://... rtsp://...       a stream OpenCV's FFmpeg can open (opening is bounded by --open-timeout)
  0, 1, ...                      a camera index
  frames/  or  'shots/*.png'     still images, in natural order (f2 before f10); quote globs

pacing:
  Frame n is due at start + n/fps, so the rate does not drift. A frame whose deadline passed
  by more than one period is late: --on-late drop skips it (the stream stays on the wall
  clock; default), --on-late burst sends it at once (every frame goes out, catching up).

tiling:
  --tile N cuts every frame into tiles of at most NxN pixels, each with --halo pixels of real
  neighbour context, so processors can work per tile. Each tile is one record: same seq for
  all tiles of a frame, header tile=TileInfo, w/h = the whole frame's size.

on exit: one line on stdout, "frames sent N, bytes B, mean fps F, dropped D, late L, errors E".
exit codes: 0 done, 1 broker unreachable or records not delivered, 2 bad input.

environment: KAFKA_BOOTSTRAP_SERVERS (default 127.0.0.1:9092), RAW_TOPIC (frames.raw),
  MAX_MESSAGE_BYTES, KAFKA_SECURITY_PROTOCOL and KAFKA_SASL_* / KAFKA_SSL_CAFILE, LOG_LEVEL.
"""


class OneLineParser(argparse.ArgumentParser):
    """argparse that answers bad input with one line (not the usage block) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message} (see python -m producer --help)")


def fps_arg(value: str) -> float | str:
    if value in ("native", "max"):
        return value
    try:
        fps = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--fps takes a number, 'native' or 'max', not {value!r}") from None
    if not fps > 0:
        raise argparse.ArgumentTypeError("--fps must be positive")
    return fps


def size_arg(value: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)[xX](\d+)", value.strip())
    if not match or 0 in (int(match[1]), int(match[2])):
        raise argparse.ArgumentTypeError(f"--resize takes WIDTHxHEIGHT such as 640x360, not {value!r}")
    return int(match[1]), int(match[2])


def _bounded(kind: type, low: float, name: str):
    def parse(value: str):
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} takes a number, not {value!r}") from None
        if number < low:
            raise argparse.ArgumentTypeError(f"{name} must be at least {low:g}")
        return number
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m producer", description="Decode a video (or stills) and publish its frames to Kafka.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_argument_group("source")
    src.add_argument("--source", required=True, help="video file, http(s)/rtsp URL, camera index, image directory or glob")
    src.add_argument("--stream", help=f"stream name, {STREAM_NAME_RULE} "
                                      "(default: the file's stem, the directory's name, or camera<N>)")
    src.add_argument("--loop", action="store_true", help="restart files and image sets at their end")
    src.add_argument("--start", type=_bounded(float, 0, "--start"), default=0.0, metavar="SECONDS",
                     help="skip this far into a video (for stills: SECONDS x --fps images)")
    src.add_argument("--max-frames", type=_bounded(int, 1, "--max-frames"), metavar="N", help="stop after sending N frames")
    src.add_argument("--open-timeout", type=_bounded(float, 0.1, "--open-timeout"), default=DEFAULT_OPEN_TIMEOUT_S,
                     metavar="SECONDS",
                     help=f"give up opening/reading a URL after this long (default {DEFAULT_OPEN_TIMEOUT_S:g})")
    pace = p.add_argument_group("pacing")
    pace.add_argument("--fps", type=fps_arg, default="native",
                      help="a number, 'native' (default: a file's own rate; cameras and live streams come at "
                           "their own pace, stills unthrottled) or 'max' (unthrottled)")
    pace.add_argument("--on-late", choices=LATE_POLICIES, default="drop",
                      help="a frame more than one period late: drop it (default) or burst to catch up")
    enc = p.add_argument_group("encoding")
    enc.add_argument("--format", choices=ENCODINGS, default="jpeg", help="frame encoding (default jpeg; png: lossless, slow)")
    enc.add_argument("--quality", type=_bounded(int, 1, "--quality"), default=80, help="JPEG quality 1-100 (default 80)")
    size = enc.add_mutually_exclusive_group()
    size.add_argument("--resize", type=size_arg, metavar="WxH", help="scale every frame to exactly W x H")
    size.add_argument("--max-width", type=_bounded(int, 1, "--max-width"), metavar="W",
                      help="shrink frames wider than W, keeping the aspect ratio")
    enc.add_argument("--tile", type=_bounded(int, 1, "--tile"), metavar="N", help="send NxN-pixel tiles instead of whole frames")
    enc.add_argument("--halo", type=_bounded(int, 0, "--halo"), default=DEFAULT_HALO, metavar="PX",
                     help=f"context pixels around each tile (default {DEFAULT_HALO}); at least the processor chain's halo")
    enc.add_argument("--encoders", type=_bounded(int, 1, "--encoders"), default=2, metavar="N",
                     help="encoding threads, off the pacing thread (default 2)")
    out = p.add_argument_group("delivery")
    out.add_argument("--acks", choices=ACKS, default=None,
                     help="broker acknowledgement: 0 (may lose frames), 1, all (default: KAFKA_PRODUCER_ACKS, else 1)")
    out.add_argument("--window", type=_bounded(int, 1, "--window"), default=64, metavar="N",
                     help="records in flight (sent, not yet acknowledged) at most (default 64)")
    out.add_argument("--connect-attempts", type=_bounded(int, 1, "--connect-attempts"), default=3, metavar="N",
                     help="tries to reach the broker before giving up (default 3)")
    out.add_argument("--connect-timeout", type=_bounded(float, 0.1, "--connect-timeout"), default=5.0, metavar="SECONDS",
                     help="each try's timeout (default 5)")
    out.add_argument("--flush-timeout", type=_bounded(float, 0, "--flush-timeout"), default=30.0, metavar="SECONDS",
                     help="at the end of the source, wait this long for acknowledgements; the rest count as errors "
                          "(default 30; a stop by SIGTERM/Ctrl-C waits at most 5)")
    p.add_argument("--quiet", action="store_true", help="no progress bar; log warnings only (for services)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quality > 100:
        fail("--quality must be between 1 and 100")
    setup_logging(args.quiet)
    keep_freed_buffers()  # the same frame buffers again each frame (pipeline/allocator.py)
    stop = stop_on_signals()
    try:
        stats = run(
            Settings.from_env(),
            args.source,
            args.stream or default_stream_name(args.source),
            stop=stop,
            options=ProducerOptions(
                fps=args.fps, fmt=args.format, quality=args.quality, loop=args.loop, max_frames=args.max_frames,
                start=args.start, on_late=args.on_late, resize=args.resize, max_width=args.max_width,
                tile=args.tile, halo=args.halo, acks=args.acks, window=args.window, encoders=args.encoders,
                progress=not args.quiet,
                connect=ConnectPolicy(args.connect_attempts, args.connect_timeout),
                open_timeout_s=args.open_timeout, flush_timeout_s=args.flush_timeout,
            ),
        )
    except (SourceError, ValueError) as exc:
        fail(str(exc))
    except BrokerUnavailable as exc:
        fail(str(exc), code=1)
    print(stats.summary(), file=sys.stdout, flush=True)
    return 1 if stats.delivery_errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
