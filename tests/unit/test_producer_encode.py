"""Producer encoding and delivery accounting, without a broker."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from kafka.errors import KafkaTimeoutError
from kafka.future import Future

from pipeline.codec import decode_image
from pipeline.tiling import Assembler, TileInfo, crop_halo
from producer.delivery import Delivery
from producer.encode import EncodeOptions, encode_frame
from tests.support.producer_media import noisy_image


def test_png_round_trip_is_lossless():
    image = noisy_image(1, 97, 131)
    [frame] = encode_frame(image, "s", 7, 123, EncodeOptions(fmt="png"))
    assert (frame.encoding, frame.width, frame.height, frame.seq, frame.tile) == ("png", 131, 97, 7, None)
    assert np.array_equal(decode_image(frame.data), image)


def test_jpeg_is_lossy_but_close():
    image = np.full((64, 64, 3), 120, np.uint8)
    [frame] = encode_frame(image, "s", 0, 0, EncodeOptions(fmt="jpeg", quality=90))
    assert frame.data[:2] == b"\xff\xd8"
    assert np.abs(decode_image(frame.data).astype(int) - 120).max() <= 2


def test_resize_and_max_width():
    image = noisy_image(2, 90, 160)
    [exact] = encode_frame(image, "s", 0, 0, EncodeOptions(resize=(64, 48)))
    assert (exact.width, exact.height) == (64, 48) == decode_image(exact.data).shape[1::-1]
    [capped] = encode_frame(image, "s", 0, 0, EncodeOptions(max_width=80))
    assert (capped.width, capped.height) == (80, 45)
    [untouched] = encode_frame(image, "s", 0, 0, EncodeOptions(max_width=400))
    assert (untouched.width, untouched.height) == (160, 90)


def test_tiles_share_seq_carry_full_size_and_reassemble_exactly():
    image = noisy_image(3, 100, 150)
    frames = encode_frame(image, "s", 42, 9, EncodeOptions(fmt="png", tile=64, halo=8))
    assert len(frames) == 2 * 3
    assert {(f.seq, f.width, f.height, f.ts_ms) for f in frames} == {(42, 150, 100, 9)}
    infos = [TileInfo.from_header(f.tile) for f in frames]
    assert sorted(i.index for i in infos) == list(range(6))
    assembler = Assembler(100, 150, infos[0].rows, infos[0].cols)
    for info, frame in zip(infos, frames, strict=True):
        padded = decode_image(frame.data)
        assert padded.shape[:2] == info.padded[2:], "each tile carries its halo"
        assembler.add(info, crop_halo(padded, info))
    assert np.array_equal(assembler.image(), image)


@pytest.mark.parametrize("bad", [dict(fmt="gif"), dict(quality=0), dict(tile=0), dict(halo=-1),
                                 dict(resize=(0, 10)), dict(resize=(10, 10), max_width=5)])
def test_bad_encode_options_are_refused(bad):
    with pytest.raises(ValueError):
        EncodeOptions(**bad)


class FakeProducer:
    """Records sends and hands back futures the test resolves, like kafka-python's."""

    def __init__(self) -> None:
        self.futures: list[Future] = []
        self.closed = False

    def send(self, topic, key=None, value=None, headers=None) -> Future:
        self.futures.append(Future())
        return self.futures[-1]

    def flush(self, timeout=None) -> None:
        pass

    def close(self, timeout=None) -> None:
        self.closed = True


def frames_of(seq: int, tiles: int = 1):
    image = noisy_image(seq, 32, 32 * tiles)
    return encode_frame(image, "s", seq, 0, EncodeOptions(tile=32 if tiles > 1 else None, halo=0))


def test_delivery_counts_frames_only_when_every_record_is_acknowledged(caplog):
    producer = FakeProducer()
    delivery = Delivery(producer, "t", window=16, stop=threading.Event())
    delivery.send(frames_of(0, tiles=3))
    delivery.send(frames_of(1, tiles=3))
    futures = producer.futures
    for f in futures[:5]:
        f.success(None)
    futures[5].failure(KafkaTimeoutError("broker gone"))
    assert (delivery.frames_sent, delivery.records_sent, delivery.errors) == (1, 5, 1)
    assert "seq=1 delivery failed" in caplog.text and "broker gone" in caplog.text
    delivery.close(0)
    assert producer.closed


def test_unacknowledged_records_at_exit_are_errors_not_silence():
    producer = FakeProducer()
    delivery = Delivery(producer, "t", window=16, stop=threading.Event())
    for seq in range(4):
        delivery.send(frames_of(seq))
    producer.futures[0].success(None)
    delivery.close(0)
    assert (delivery.frames_sent, delivery.errors) == (1, 3)
    producer.futures[1].success(None)  # a late answer after close changes nothing
    assert (delivery.frames_sent, delivery.errors) == (1, 3)


def test_in_flight_window_blocks_until_an_acknowledgement():
    producer = FakeProducer()
    stop = threading.Event()
    delivery = Delivery(producer, "t", window=2, stop=stop)
    delivery.send(frames_of(0))
    delivery.send(frames_of(1))
    third = threading.Thread(target=delivery.send, args=(frames_of(2),))
    third.start()
    third.join(0.5)
    assert third.is_alive() and len(producer.futures) == 2, "a third record must wait for the window"
    producer.futures[0].success(None)
    third.join(10)
    assert not third.is_alive() and len(producer.futures) == 3


def test_stop_while_the_window_is_full_counts_the_unsent_frame():
    producer = FakeProducer()
    stop = threading.Event()
    delivery = Delivery(producer, "t", window=1, stop=stop)
    delivery.send(frames_of(0))
    stop.set()
    assert delivery.send(frames_of(1)) is False
    assert delivery.errors == 1 and len(producer.futures) == 1
