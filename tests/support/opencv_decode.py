"""What OpenCV makes of encoded bytes, for tests that check that the codec's faster decoders
(pipeline/codec.py) give the same."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.codec import CodecError, decode_image


def cv2_decode(data: bytes) -> np.ndarray | None:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def assert_decodes_as_opencv(data: bytes) -> None:
    """decode_image gives exactly OpenCV's pixels, or a CodecError where OpenCV gives nothing."""
    expected = cv2_decode(data)
    if expected is None:
        with pytest.raises(CodecError):
            decode_image(data)
    else:
        assert np.array_equal(decode_image(data), expected)
