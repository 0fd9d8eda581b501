"""Frame work without Kafka: decode, apply the chain (whole, per tile, or split into tiles), encode.

Three kinds of input frame:
- a whole frame: the chain runs on it; with ``tile_size`` its tileable prefix runs on
  ``tile_size`` px tiles in parallel on the pool, the rest on the reassembled image;
- a tile (``Frame.tile`` set, halo included by the sender): checked against the chain's
  halo and block grid, processed, halo cropped, republished with its output placement
  (see ``pipeline.tiling.output_tile`` and the tile contract in ``pipeline.wire``);
- a poison record: anything that cannot become output raises a :data:`POISON` error, which
  the caller sends to the dead-letter topic.

Which chain: a frame's own ``transform`` header (still-image jobs) wins; else the stream's
live chain (the control topic, looked up through ``live_spec``); else the processor's default.
The chain is decided once per frame, before any work starts, and every tile of a frame gets
the chain its first tile got, even when the live chain changes in between. The processor's
catch-up of the live chains runs beside a batch's work (it is a broker round trip); when it
changed a chain, the batch's frames that the change reaches are redone with the new chain
before anything is sent (the old chain's instance has then seen them too: for a stateful
chain, a stream that switches back continues from that state).

Concurrency: frames of a batch run on the pool in parallel when their chain is tileable
(stateless, so each worker thread builds its own chain instance); a non-tileable chain may
hold state (MOG2 background model, cascades), so one stream's frames for it run in order
on one chain.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace

import cv2
import numpy as np

from pipeline.codec import decode_image, encode_image, image_header
from pipeline.imageheader import check_pixels
from pipeline.settings import Settings
from pipeline.tiling import TileInfo, apply_tiled, check_context, crop_halo, output_tile
from pipeline.transforms import Chain, TransformError, parse_spec
from pipeline.wire import Frame
from processor.pool import OrderedPool

log = logging.getLogger(__name__)

# Starts a catch-up of the live chains; the function it returns waits for it and says whether
# any chain changed (pipeline.control.ChainControl.start_sync).
CatchUp = Callable[[], Callable[[], bool]]

POISON = (ValueError, cv2.error)
"""Errors that mean "this record cannot be processed": wire, codec, transform, tile errors
(all ValueError) and OpenCV rejecting an image. The processor dead-letters them and goes on."""

_MAX_CHAINS = 64  # bounds memory when uploads carry many distinct specs
_MAX_PINS = 256  # tiled frames whose chain is remembered: far more than are ever in flight
_MAX_STREAMS = 1024  # streams whose last chain is remembered (for the log line of a change): names come from records


def process_frame(frame: Frame, chain: Chain, max_pixels: int = Settings.max_frame_pixels) -> Frame:
    """Apply ``chain`` to a whole frame, or to one halo'd tile (contract: ``pipeline.wire``).

    A tile is refused (TransformError) when the chain needs the whole image, and (ValueError)
    when its halo or block grid is short of what the chain needs: never wrong pixels. A frame
    (for a tile: the whole image) or its output over ``max_pixels`` is refused before decoding.
    """
    if frame.tile is None:
        image = chain(decode_frame(frame.data, chain, max_pixels))
        return _output(frame, chain, image, image.shape[1], image.shape[0])
    if not chain.tileable:
        raise TransformError(f"transform {chain.spec!r} is not tileable: it needs the whole image "
                             "and cannot run on a tile")
    info = TileInfo.from_header(frame.tile)
    size = (frame.height, frame.width)
    check_sizes(frame.width, frame.height, chain, max_pixels)
    check_context(info, size, chain.halo, chain.align)
    image = decode_image(frame.data, max_pixels)
    if image.shape[:2] != info.padded[2:]:
        raise ValueError(f"tile image is {image.shape[:2]}, header {frame.tile} says {info.padded[2:]}")
    core = crop_halo(chain(image), info, chain)
    out_info, (out_h, out_w) = output_tile(info, size, chain)
    return replace(_output(frame, chain, core, out_w, out_h), tile=out_info.to_header())


def check_sizes(width: int, height: int, chain: Chain, max_pixels: int) -> None:
    """TooManyPixels when an image of this size, or what ``chain`` makes of it, is over the limit."""
    check_pixels(width, height, max_pixels, "frame")
    out_height, out_width = chain.output_size(height, width)
    check_pixels(out_width, out_height, max_pixels, f"output of {chain.spec!r}")


def decode_frame(data: bytes, chain: Chain, max_pixels: int) -> np.ndarray:
    """A whole frame's pixels, once its image header shows it and its output within the limit."""
    header = image_header(data)
    check_sizes(header.width, header.height, chain, max_pixels)
    return decode_image(data)


def _output(frame: Frame, chain: Chain, image: np.ndarray, width: int, height: int) -> Frame:
    data = encode_image(image, frame.encoding, gray=chain.gray_output)
    return replace(frame.with_image(data, width, height), transform=chain.spec)


class ChainCache:
    """Chains by key, least recently used dropped past a bound."""

    def __init__(self) -> None:
        self._chains: OrderedDict[tuple, Chain] = OrderedDict()

    def get(self, key: tuple, spec: str) -> Chain:
        chain = self._chains.get(key)
        if chain is None:
            chain = self._chains[key] = parse_spec(spec)
            while len(self._chains) > _MAX_CHAINS:
                self._chains.popitem(last=False)
        self._chains.move_to_end(key)
        return chain


class FrameProcessor:
    """Turns input frames into output frames with each frame's own spec, the stream's live
    spec (``live_spec(stream)``, None when it has none) or ``default_spec``."""

    def __init__(self, default_spec: str, tile_size: int | None = None, pool: OrderedPool | None = None,
                 live_spec: Callable[[str], str | None] = lambda stream: None,
                 max_pixels: int = Settings.max_frame_pixels,
                 report_chain: Callable[[str, str], None] = lambda stream, spec: None) -> None:
        if tile_size is not None and tile_size < 1:
            raise ValueError(f"tile size must be >= 1, got {tile_size}")
        self.default_spec = parse_spec(default_spec).spec  # fails fast on a bad spec
        self.tile_size = tile_size
        self.max_pixels = max_pixels
        self.pool = pool or OrderedPool(1)
        self.live_spec = live_spec
        self.report_chain = report_chain  # told each stream's chosen chain (the heartbeat reports them)
        # Touched only by the batch's calling thread:
        self._per_stream = ChainCache()
        self._applied: OrderedDict[str, str] = OrderedDict()  # stream -> the live or default spec it last got
        # (stream, seq) -> spec of the newest tiled frames: a frame's tiles may span batches,
        # and a stream spread over partitions interleaves its frames' tiles.
        self._tile_pins: OrderedDict[tuple[str, int], str] = OrderedDict()
        self._local = threading.local()

    def process_batch(self, frames: list[Frame], catch_up: CatchUp | None = None) -> list[Frame | Exception]:
        """Output frame (or the POISON error) for each input frame, in input order.

        ``catch_up``: starts a catch-up of the live chains (``ChainControl.start_sync``) and
        returns the function that waits for it and says whether a chain changed. It is started
        once every frame's chain is decided and runs while they are processed; if it changed a
        chain, the frames it changes (all of a stream's, in order) are redone with the new one.
        """
        results: list[Frame | Exception | None] = [None] * len(frames)
        lanes: dict[object, list[int]] = {}
        chains: dict[int, Chain] = {}
        specs: list[str] = []
        new_pins: set[tuple[str, int]] = set()  # tiled frames whose chain this batch decided
        for i, frame in enumerate(frames):
            specs.append(self._spec(frame, new_pins))
            try:
                chains[i] = chain = self._per_stream.get((frame.stream, specs[i]), specs[i])
            except TransformError as exc:
                results[i] = exc
                continue
            # A stateless chain's frames are independent; a stateful one's must go in order.
            lane = i if chain.tileable else (frame.stream, chain.spec)
            lanes.setdefault(lane, []).append(i)
        caught_up = catch_up() if catch_up is not None else None

        def run_lane(indices: list[int]) -> list[Frame | Exception]:
            return [self._guarded(frames[i], chains[i]) for i in indices]

        lane_list = list(lanes.values())
        if self.tile_size is None:
            outputs = self.pool.map(run_lane, lane_list)
        else:
            # The pool is busy with tiles inside each frame; frames go one after another.
            outputs = [run_lane(lane) for lane in lane_list]
        for indices, outs in zip(lane_list, outputs, strict=True):
            for i, out in zip(indices, outs, strict=True):
                results[i] = out
        if caught_up is not None and caught_up():
            self._redo_changed(frames, specs, new_pins, results)
        return results  # type: ignore[return-value]

    def _redo_changed(self, frames: list[Frame], specs: list[str], new_pins: set[tuple[str, int]],
                      results: list[Frame | Exception | None]) -> None:
        """Redo, in order, the frames whose live chain changed after it was decided for them:
        not frames with their own spec, nor tiles of a frame whose chain an earlier batch pinned."""
        for i, frame in enumerate(frames):
            key = (frame.stream, frame.seq)
            if frame.transform or frame.tile is not None and key not in new_pins:
                continue
            spec = self._live_or_default(frame)
            if spec == specs[i]:
                continue
            if frame.tile is not None:
                self._tile_pins[key] = spec  # the frame's other tiles, here or later, get it too
            specs[i] = spec
            try:
                results[i] = self._guarded(frame, self._per_stream.get((frame.stream, spec), spec))
            except TransformError as exc:
                results[i] = exc

    def process(self, frame: Frame, chain: Chain | None = None) -> Frame:
        """One frame, with ``chain`` if decided already; raises a POISON error if it cannot be processed."""
        chain = chain or self._stream_chain(frame)
        if frame.tile is None and self.tile_size is not None:
            output = self._apply_split(chain, decode_frame(frame.data, chain, self.max_pixels))
            return _output(frame, chain, output, output.shape[1], output.shape[0])
        return process_frame(frame, self._worker_chain(chain) if chain.tileable else chain, self.max_pixels)

    def _guarded(self, frame: Frame, chain: Chain) -> Frame | Exception:
        try:
            return self.process(frame, chain)
        except POISON as exc:
            return exc

    def _spec(self, frame: Frame, new_pins: set[tuple[str, int]] | None = None) -> str:
        if frame.transform:
            return frame.transform
        key = (frame.stream, frame.seq)
        pinned = self._tile_pins.get(key) if frame.tile is not None else None
        if pinned is not None:
            return pinned
        spec = self._live_or_default(frame)
        if frame.tile is not None:
            self._tile_pins[key] = spec
            if new_pins is not None:
                new_pins.add(key)
            while len(self._tile_pins) > _MAX_PINS:
                self._tile_pins.popitem(last=False)
        return spec

    def _live_or_default(self, frame: Frame) -> str:
        """The stream's live chain (else the default), noted and reported as the one it now gets."""
        spec = self.live_spec(frame.stream) or self.default_spec
        if self._applied.get(frame.stream, spec) != spec:
            log.info("stream=%s seq=%d chain now %r (was %r)", frame.stream, frame.seq, spec, self._applied[frame.stream])
        self._applied[frame.stream] = spec
        self._applied.move_to_end(frame.stream)
        while len(self._applied) > _MAX_STREAMS:
            self._applied.popitem(last=False)
        self.report_chain(frame.stream, spec)
        return spec

    def _stream_chain(self, frame: Frame) -> Chain:
        """The stream's own chain instance: the one stateful chains must use."""
        spec = self._spec(frame)
        return self._per_stream.get((frame.stream, spec), spec)

    def _worker_chain(self, chain: Chain) -> Chain:
        """This thread's instance of a stateless chain (chains are not shared across threads)."""
        cache = getattr(self._local, "chains", None)
        if cache is None:
            cache = self._local.chains = ChainCache()
        return cache.get((chain.spec,), chain.spec)

    def _apply_split(self, chain: Chain, image: np.ndarray) -> np.ndarray:
        """The tileable prefix on tiles in parallel, the rest on the reassembled image."""
        prefix, rest = chain.split_tileable()
        if len(prefix):
            image = apply_tiled(image, prefix, self.tile_size,
                                process=lambda tile: self._worker_chain(prefix)(tile),
                                map_tiles=self.pool.map)
        return rest(image)
