"""The producer loop: read frames, pace them, encode off the pacing thread, publish in order."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from kafka import KafkaProducer
from kafka.errors import KafkaError
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from pipeline.codec import CodecError
from pipeline.generations import CurrentSlot
from pipeline.service import StopDeadline
from pipeline.settings import Settings
from pipeline.wire import Frame, check_stream_name
from producer.delivery import BrokerUnavailable, ConnectPolicy, Delivery, connect
from producer.encode import DEFAULT_HALO, EncodeOptions, encode_frame
from producer.pacing import Pacer
from producer.source import DEFAULT_OPEN_TIMEOUT_S, open_source

log = logging.getLogger(__name__)


@dataclass
class ProducerOptions:
    """Everything `run` accepts besides the source and stream; the CLI flags map one to one.

    fps: a number, "native" (a file's own rate; live sources such as cameras pace
    themselves, stills go unthrottled) or "max"/None (unthrottled). on_late: see producer.pacing.Pacer.
    window: records awaiting broker acknowledgement at most. encoders: encoding threads.
    """

    fps: float | str | None = "native"
    fmt: str = "jpeg"
    quality: int = 80
    loop: bool = False
    max_frames: int | None = None
    start: float = 0.0
    on_late: str = "drop"
    resize: tuple[int, int] | None = None
    max_width: int | None = None
    tile: int | None = None
    halo: int = DEFAULT_HALO
    acks: str | None = None  # None: KAFKA_PRODUCER_ACKS (default 1)
    window: int = 64
    encoders: int = 2
    progress: bool = False
    connect: ConnectPolicy = field(default_factory=ConnectPolicy)
    open_timeout_s: float = DEFAULT_OPEN_TIMEOUT_S
    flush_timeout_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    # None: wait on the stop event, so a stop ends even a long wait between slow frames.
    sleep: Callable[[float], object] | None = None

    def rate(self, native_fps: float | None) -> float | None:
        if self.fps == "native":
            return native_fps
        return None if self.fps in (None, "max") else float(self.fps)


@dataclass
class ProducerStats:
    frames_sent: int = 0
    records_sent: int = 0
    bytes_sent: int = 0
    dropped: int = 0
    late_frames: int = 0
    delivery_errors: int = 0
    seconds: float = 0.0

    @property
    def mean_fps(self) -> float:
        return self.frames_sent / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        tiles = f" ({self.records_sent} tile records)" if self.records_sent != self.frames_sent else ""
        return (
            f"frames sent {self.frames_sent}{tiles}, bytes {self.bytes_sent}, mean fps {self.mean_fps:.1f}, "
            f"dropped {self.dropped}, late {self.late_frames}, errors {self.delivery_errors}"
        )


def run(settings: Settings, source: str, stream: str, stop: threading.Event | None = None,
        options: ProducerOptions | None = None, **overrides) -> ProducerStats:
    """Publish `source` as `stream` until it ends, `max_frames` are sent, or `stop` is set.

    ``options`` (defaults: ProducerOptions()) with keyword ``overrides`` of its fields, e.g.
    ``run(s, "clip.mp4", "clip", fps=25, loop=True)``. Raises SourceError (bad source, found
    before connecting), BrokerUnavailable, or ValueError (bad options).
    """
    opts = dataclasses.replace(options or ProducerOptions(), **overrides)
    stop = stop or threading.Event()
    check_stream_name(stream)
    if opts.max_frames is not None and opts.max_frames < 1:
        raise ValueError("max_frames must be at least 1")
    encoding = EncodeOptions(opts.fmt, opts.quality, opts.resize, opts.max_width, opts.tile, opts.halo)
    explicit_fps = None if opts.fps in ("native", "max", None) else float(opts.fps)
    video = open_source(source, opts.start, explicit_fps, opts.open_timeout_s)
    slot = None
    try:
        # A live source delivers at its own rate; pacing it again at its nominal fps would
        # only drop frames whenever its clock runs a little slower than ours.
        rate = opts.rate(video.native_fps if video.frame_count else None)
        pacer = Pacer(rate, clock=opts.clock, sleep=opts.sleep or stop.wait, on_late=opts.on_late)
        producer = _connected(settings, opts, stop)
        # On the embedded broker the raw topic has two generations; frames go to the current one.
        slot = CurrentSlot(settings, settings.raw_topic)
        delivery = Delivery(producer, slot, opts.window, stop)
        log.info("stream=%s source=%s topic=%s fps=%s format=%s tile=%s", stream, source, settings.raw_topic,
                 f"{rate:g}" if rate else "unthrottled", opts.fmt, opts.tile)
        total = None if opts.loop else video.frame_count
        if opts.max_frames is not None:
            total = min(total, opts.max_frames) if total else opts.max_frames
        bar = tqdm(total=total, unit="frame", desc=stream, disable=not (opts.progress and video.is_file),
                   dynamic_ncols=True)
        redirect = logging_redirect_tqdm() if not bar.disable else contextlib.nullcontext()
        with bar, redirect:
            stats = _publish(video.frames(loop=opts.loop), stream, encoding, opts, pacer, delivery, stop, bar)
    finally:
        video.close()
        if slot is not None:
            slot.close()
    return stats


def _connected(settings: Settings, opts: ProducerOptions, stop: threading.Event) -> KafkaProducer:
    producer = connect(settings, opts.acks, opts.connect, stop)
    try:
        # Fetch the topic's metadata now: the first send would otherwise block on it and the
        # pacer would count the first frames late.
        producer.partitions_for(settings.raw_topic)
    except KafkaError as exc:
        producer.close(timeout=1)
        raise BrokerUnavailable(f"no metadata for topic {settings.raw_topic} from {settings.bootstrap_servers}: {exc}") from None
    return producer


def _publish(frames, stream: str, encoding: EncodeOptions, opts: ProducerOptions, pacer: Pacer,
             delivery: Delivery, stop: threading.Event, bar: tqdm) -> ProducerStats:
    # Encoding runs on a pool so the pacing thread only decodes and waits for deadlines. A
    # sender thread takes the encodings in frame order (one stream = one partition = ordered)
    # and sends each the moment it is ready: sending from the pacing thread would hold every
    # frame until the next frame's deadline, a whole frame period of added latency.
    encoded: queue.Queue[Future[list[Frame]] | None] = queue.Queue(maxsize=2 * opts.encoders)

    def send_in_order() -> None:
        while (future := encoded.get()) is not None:
            try:
                _send(future, delivery)
            except Exception as exc:  # the sender must keep draining, or the pacing thread blocks
                log.exception("stream=%s frame not sent", stream)
                delivery.not_sent(f"unexpected error: {exc}")

    sender = threading.Thread(target=send_in_order, name="send", daemon=True)
    admitted = 0
    started = opts.clock()
    with ThreadPoolExecutor(opts.encoders, thread_name_prefix="encode") as pool:
        sender.start()
        try:
            for seq, image in enumerate(frames):
                send = pacer.admit()
                if stop.is_set():
                    break
                if not bar.disable:  # tqdm formats the postfix even when disabled: ~13 us a frame
                    bar.set_postfix(dropped=pacer.dropped, errors=delivery.errors, refresh=False)
                bar.update(1)
                if not send:
                    continue
                admitted += 1
                ts_ms = int(time.time() * 1000)
                # Blocks while the sender is 2 x encoders behind: the bound on frames in memory.
                encoded.put(pool.submit(encode_frame, image, stream, seq, ts_ms, encoding))
                if admitted == opts.max_frames:
                    break
        finally:
            # Frames already encoding are still sent, also when the source failed mid-way.
            encoded.put(None)
            sender.join()
            seconds = opts.clock() - started
            # A stop (SIGTERM, Ctrl-C) must end within the service's stop budget, broker or not.
            delivery.close(min(opts.flush_timeout_s, StopDeadline(stop).left()))
    return ProducerStats(
        frames_sent=delivery.frames_sent,
        records_sent=delivery.records_sent,
        bytes_sent=delivery.bytes_sent,
        dropped=pacer.dropped,
        late_frames=pacer.late_frames,
        delivery_errors=delivery.errors,
        seconds=seconds,
    )


def _send(encoded: Future[list[Frame]], delivery: Delivery) -> None:
    try:
        records = encoded.result()
    except CodecError as exc:
        delivery.not_sent(str(exc))
        return
    delivery.send(records)
