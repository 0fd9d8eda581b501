"""gunicorn.conf.py's metrics directory: one per gunicorn master, never another's."""

from __future__ import annotations

import os
import runpy
from unittest import mock

from tests.support.paths import ROOT

CONF = os.path.join(ROOT, "gunicorn.conf.py")
DIR, OWN, PREPARED = "PROMETHEUS_MULTIPROC_DIR", "VIEWER_METRICS_DIR_OWN", "VIEWER_METRICS_DIR_PREPARED"


def read_conf() -> dict:
    return runpy.run_path(CONF)


def test_without_a_directory_a_private_one_is_made_and_removed_at_exit():
    with mock.patch.dict(os.environ, clear=False):
        os.environ.pop(DIR, None)
        conf = read_conf()
        path = conf["_metrics_dir"]
        assert os.path.isdir(path) and os.environ[DIR] == path
        conf["on_exit"](None)
        assert not os.path.exists(path)


def test_a_given_directory_is_emptied_and_kept(tmp_path):
    (tmp_path / "counter_1.db").write_bytes(b"old run")
    (tmp_path / "notes.txt").write_text("not ours")
    with mock.patch.dict(os.environ, {DIR: str(tmp_path)}):
        os.environ.pop(PREPARED, None)
        conf = read_conf()
        assert conf["_metrics_dir"] == str(tmp_path)
        assert sorted(os.listdir(tmp_path)) == ["notes.txt"]
        conf["on_exit"](None)
    assert tmp_path.is_dir()


def test_a_reload_of_the_same_master_keeps_the_workers_files(tmp_path):
    with mock.patch.dict(os.environ, {DIR: str(tmp_path)}):
        os.environ.pop(PREPARED, None)
        read_conf()
        (tmp_path / "counter_2.db").write_bytes(b"a running worker's")
        assert read_conf()["_metrics_dir"] == str(tmp_path)  # SIGHUP: the master reads the file again
        assert os.listdir(tmp_path) == ["counter_2.db"]


def test_another_masters_private_directory_inherited_through_the_environment_is_left_alone(tmp_path):
    # A process that read the file (and so holds its private directory in its environment)
    # starts another gunicorn: that one must neither write there, nor empty or remove it.
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "counter_3.db").write_bytes(b"their worker's")
    inherited = {DIR: str(theirs), OWN: str(theirs), PREPARED: f"{os.getpid() + 1}:{theirs}"}
    with mock.patch.dict(os.environ, inherited):
        conf = read_conf()
        mine = conf["_metrics_dir"]
        assert mine != str(theirs) and os.environ[DIR] == mine
        conf["on_exit"](None)
        assert not os.path.exists(mine)
    assert os.listdir(theirs) == ["counter_3.db"]
