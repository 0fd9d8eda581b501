"""`python -m producer` as users run it: --help, and one line + exit 2 for each bad input."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from producer.__main__ import main
from tests.conftest import ROOT
from tests.producer_media import write_unknown_codec_video, write_video

# Source cases run as real processes (FFmpeg/OpenCV write to fd 2 natively), all at once in a
# module fixture so the set costs about one start-up.
BAD_INPUTS = {
    "missing file": (["--source", "{tmp}/missing.mp4"], "no such file"),
    "corrupt video": (["--source", "{tmp}/corrupt.mp4"], "cannot open"),
    "zero-frame video": (["--source", "{tmp}/empty.avi"], "has no frames"),
    "unknown codec": (["--source", "{tmp}/codec.avi"], "codec"),
    "bad URL": (["--source", "http://127.0.0.1:1/x.mp4", "--open-timeout", "2"], "cannot open URL"),
    "camera absent": (["--source", "99"], "camera 99 is not available"),
    "start past end": (["--source", "{tmp}/clip.avi", "--start", "99"], "no frame at --start"),
    # One URL path segment in the viewer: 'a/b' would be listed but never served.
    "stream name with a slash": (["--source", "{tmp}/clip.avi", "--stream", "a/b"], "invalid stream name 'a/b'"),
}

# Option cases fail in argument parsing, before any I/O: checked in-process.
BAD_OPTIONS = {
    "unknown format": (["--format", "gif"], "invalid choice: 'gif'"),
    "bad fps": (["--fps", "fast"], "--fps takes a number"),
    "zero fps": (["--fps", "0"], "--fps must be positive"),
    "bad resize": (["--resize", "640"], "WIDTHxHEIGHT"),
    "resize and max-width": (["--resize", "64x48", "--max-width", "32"], "not allowed with argument"),
    "quality out of range": (["--quality", "101"], "between 1 and 100"),
    "unknown late policy": (["--on-late", "skip"], "invalid choice: 'skip'"),
    "no source": ([], "--source"),
}


def producer_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "producer", *args]


def child_env(**extra: str) -> dict[str, str]:
    # Nothing listens on port 1: a case that wrongly got past its input check would fail on
    # the broker with exit code 1, not pass.
    env = dict(os.environ, PYTHONPATH=ROOT, KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1")
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def bad_input_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    write_video(tmp / "clip.avi", 5)
    write_video(tmp / "empty.avi", 0)
    write_unknown_codec_video(tmp / "codec.avi")
    (tmp / "corrupt.mp4").write_bytes(os.urandom(4096))
    procs = {
        name: subprocess.Popen(producer_cmd(*(a.format(tmp=tmp) for a in args)), env=child_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, (args, _) in BAD_INPUTS.items()
    }
    return {name: (p.wait(60), *p.communicate()) for name, p in procs.items()}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_2(bad_input_results, case):
    code, out, err = bad_input_results[case]
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert BAD_INPUTS[case][1] in lines[0]
    assert out == ""


@pytest.mark.parametrize("case", sorted(BAD_OPTIONS))
def test_bad_option_is_one_line_and_exit_2(capsys, case):
    args, message = BAD_OPTIONS[case]
    argv = args if case == "no source" else ["--source", "clip.avi", *args]
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    assert info.value.code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and message in err, err
    assert out == ""


def test_broker_down_retries_then_exits_non_zero_without_traceback(tmp_path):
    video = write_video(tmp_path / "clip.avi", 3)
    result = subprocess.run(
        producer_cmd("--source", str(video), "--connect-attempts", "2", "--connect-timeout", "0.5"),
        env=child_env(), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    assert "not reachable (attempt 1/2" in lines[0] and "retrying" in lines[0]
    assert lines[1] == ("error: Kafka broker 127.0.0.1:1 not reachable after 2 attempt(s) of 0.5 s "
                        "(is it running? check KAFKA_BOOTSTRAP_SERVERS)")


def test_help_documents_every_option():
    result = subprocess.run(producer_cmd("--help"), env=child_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for option in ("--source", "--stream", "--loop", "--start", "--max-frames", "--fps", "native", "--on-late",
                   "drop", "burst", "--format", "jpeg", "png", "--quality", "--resize", "--max-width", "--tile",
                   "--halo", "--encoders", "--acks", "--window", "--connect-attempts", "--quiet", "rtsp://",
                   "camera index", "glob", "exit codes"):
        assert option in result.stdout, option
