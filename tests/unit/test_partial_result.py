"""viewer/stills/partial.py: a tiled PNG job's result built while its tiles arrive is byte for
byte the PNG built from all of them at the end, whatever order and duplicates they come in, and
most of its bands are compressed before the last tile."""

from __future__ import annotations

import random

import numpy as np
import pytest

from pipeline import png
from pipeline.codec import encode_image
from pipeline.tiling import split
from tests.support.photos import photo
from viewer.stills.collector import encode_result
from viewer.stills.partial import PartialResult, PartialResults

MAX_PIXELS = 50_000_000


def tiles_of(image: np.ndarray, size: int) -> list:
    """(info, lz4 data) of each core tile, as the collector gets processed tiles (output coordinates)."""
    return [(info, encode_image(np.ascontiguousarray(view), "lz4")) for info, view in split(image, size, 0)]


def test_built_as_tiles_come_it_is_the_png_of_the_whole_image(monkeypatch):
    monkeypatch.setattr(png, "BAND_BYTES", 30_000)  # ~20 rows a band: many bands, several per tile row
    image = photo("astronaut.png")  # 512 x 512
    tiles = tiles_of(image, 128)  # a 4 x 4 grid
    arrivals = tiles + tiles[:5]  # redelivered tiles are ignored
    random.Random(3).shuffle(arrivals)
    partial = PartialResult(512, 512, 4, 4)
    for info, data in arrivals[:-1]:
        partial.add_all([(info, data)], MAX_PIXELS)
    if not partial.complete:
        with pytest.raises(RuntimeError):
            partial.result()
    partial.add_all([arrivals[-1]], MAX_PIXELS)
    # The PNG the collector writes at the end from the cached tiles.
    assert partial.complete and partial.result() == encode_result(image, "png")


def test_in_tile_row_order_every_band_but_the_last_rows_is_started_before_the_last_tile(monkeypatch):
    monkeypatch.setattr(png, "BAND_BYTES", 30_000)
    image = photo("astronaut.png")
    tiles = tiles_of(image, 128)
    partial = PartialResult(512, 512, 4, 4)
    for info, data in tiles[:-1]:
        partial.add_all([(info, data)], MAX_PIXELS)
    waiting = [rows for number, rows in enumerate(partial.bands) if number not in partial.started]
    assert waiting and all(stop > 384 for _, stop, _ in waiting)  # only bands that reach the last tile row
    partial.add_all([tiles[-1]], MAX_PIXELS)
    assert partial.result() == png.encode_png(image)


def test_a_tile_that_does_not_fit_is_refused():
    partial = PartialResult(512, 512, 4, 4)
    info, data = tiles_of(photo("astronaut.png"), 128)[0]
    with pytest.raises(ValueError):
        partial.add_all([(info, encode_image(np.zeros((100, 128, 3), np.uint8), "lz4"))], MAX_PIXELS)
    partial.add_all([(info, data)], MAX_PIXELS)
    assert partial.assembler.done == 1


def test_the_memory_budget_bounds_how_many_jobs_are_built_at_once():
    results = PartialResults(memory_bytes=2 * 512 * 512 * 3)
    assert results.start("a", 512, 512, 4, 4) is not None
    assert results.start("b", 512, 512, 4, 4) is not None
    assert results.start("c", 512, 512, 4, 4) is None  # over the budget: assembled from the cache
    assert results.start("a", 512, 512, 4, 4) is results.jobs["a"]
    results.pop("a")
    assert results.start("c", 512, 512, 4, 4) is not None


def test_under_gevent_tiles_decoded_on_several_threads_give_the_same_png():
    """add_all decodes DECODE_AHEAD tiles at once on native threads (as under gunicorn's gevent
    worker) and places them one at a time: the PNG is still that of the whole image."""
    import subprocess
    import sys
    import textwrap

    from tests.support.paths import ROOT

    script = textwrap.dedent("""
        from gevent import monkey
        monkey.patch_all()
        import random
        import numpy as np
        from pipeline import png
        from pipeline.codec import encode_image
        from pipeline.tiling import split
        from tests.support.photos import photo
        from viewer.stills.collector import encode_result
        from viewer.stills.partial import PartialResult

        png.BAND_BYTES = 30_000
        image = photo("astronaut.png")
        tiles = [(info, encode_image(np.ascontiguousarray(view), "zstd")) for info, view in split(image, 64, 0)]
        arrivals = tiles + tiles[:9]
        random.Random(5).shuffle(arrivals)
        partial = PartialResult(512, 512, 8, 8)
        for start in range(0, len(arrivals), 23):  # polls of up to 23 tiles, as from two processors
            partial.add_all(arrivals[start:start + 23], 50_000_000)
        assert partial.complete and partial.result() == encode_result(image, "png")
        print("ok")
    """)
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr
