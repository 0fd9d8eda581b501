"""python -m processor: --list, and bad input answered with exit 2 and one line."""

from __future__ import annotations

import pytest

from pipeline.transforms import REGISTRY
from processor.__main__ import main


def test_list_prints_every_transform_and_its_parameters(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in REGISTRY:
        assert f"\n{name}  [" in out
    assert "ksize" in out and "whole image only" in out


@pytest.mark.parametrize("argv, message", [
    (["--transform", "grayscale,blurr"], "unknown transform 'blurr'; valid: bgremove"),
    (["--transform", "blur:ksize=4"], "blur: ksize must be odd"),
    (["--transform", "blur:size=5"], "unknown parameter 'size'; valid: ksize, sigma"),
    (["--concurrency", "0"], "expected a positive integer"),
    (["--tile", "x"], "expected a positive integer"),
])
def test_bad_input_exits_2_with_one_line(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1]
    if "--transform" in argv:
        assert len(err) == 1
