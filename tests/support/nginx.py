"""deploy/nginx.conf for tests and benchmarks: read as nginx reads it, and run as a process of its
own in front of local viewer replicas, on a free port, with every file in a temporary directory."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.local.broker import free_port
from tests.support.paths import ROOT
from tests.support.processes import stop_on_sigterm

NGINX_CONF = os.path.join(ROOT, "deploy", "nginx.conf")
# The two lines that name docker-compose's network: the viewer service and the published port.
COMPOSE_SERVER = re.compile(r"^(\s*)server viewer:8000 resolve;$", re.M)
COMPOSE_LISTEN = re.compile(r"^(\s*)listen 8000;$", re.M)
# Debian installs it in /usr/sbin, which a non-root PATH may lack.
CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx")

_TOKEN = re.compile(r"""#[^\n]*|'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[{};]|[^\s{};'"#]+""")


@dataclass
class Directive:
    name: str
    args: list[str]
    block: list[Directive] | None = None

    def find(self, name: str) -> list[Directive]:
        return [d for d in self.block or [] if d.name == name]

    def one(self, name: str, *args: str) -> Directive:
        """The one directive `name` in this block (whose first arguments are `args`)."""
        found = [d for d in self.find(name) if d.args[:len(args)] == list(args)]
        assert len(found) == 1, f"{len(found)} `{name} {' '.join(args)}` in `{self.name} {' '.join(self.args)}`"
        return found[0]

    def value(self, name: str) -> str:
        return " ".join(self.one(name).args)


@dataclass
class Config:
    main: Directive = field(default_factory=lambda: Directive("main", [], []))

    @property
    def http(self) -> Directive:
        return self.main.one("http")

    @property
    def server(self) -> Directive:
        return self.http.one("server")


def parse(text: str) -> Config:
    """nginx's configuration syntax: `name args;` and `name args { ... }`, comments, quotes."""
    stack = [Directive("main", [], [])]
    words: list[str] = []
    for token in _TOKEN.findall(text):
        if token.startswith("#"):
            continue
        if token == ";":
            stack[-1].block.append(Directive(words[0], words[1:]))
            words = []
        elif token == "{":
            block = Directive(words[0], words[1:], [])
            stack[-1].block.append(block)
            stack.append(block)
            words = []
        elif token == "}":
            assert not words and len(stack) > 1, "unbalanced }"
            stack.pop()
        else:
            words.append(token[1:-1] if token[0] in "'\"" else token)
    assert len(stack) == 1 and not words, "unterminated block or directive"
    return Config(stack[0])


def read_config() -> str:
    with open(NGINX_CONF) as f:
        return f.read()


def local_config(upstream_ports: list[int], port: int) -> str:
    """deploy/nginx.conf with the compose service replaced by loopback replicas, listening on `port`."""
    text = read_config()
    text, servers = COMPOSE_SERVER.subn(
        lambda m: "\n".join(f"{m.group(1)}server 127.0.0.1:{p};" for p in upstream_ports), text)
    text, listens = COMPOSE_LISTEN.subn(lambda m: f"{m.group(1)}listen 127.0.0.1:{port};", text)
    assert (servers, listens) == (1, 1), "deploy/nginx.conf no longer has its compose `server` and `listen` lines"
    return text


def nginx_binary() -> str:
    found = shutil.which("nginx") or next((p for p in CANDIDATES if os.access(p, os.X_OK)), None)
    if found is None:
        raise RuntimeError("nginx is not installed: `apt-get install nginx` (.ci/run installs it)")
    return found


class Nginx:
    """deploy/nginx.conf in front of `upstream_ports`; `url` is its address. A context manager.
    `edit` may change the configuration's text first (a variant to compare with)."""

    def __init__(self, upstream_ports: list[int], edit: Callable[[str], str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Not under pytest's private temp folder: run as root, nginx's workers drop to `nobody`
        # and must reach the temporary files below this prefix.
        self.prefix = tempfile.mkdtemp(prefix="nginx-")
        os.chmod(self.prefix, 0o755)
        conf = os.path.join(self.prefix, "nginx.conf")
        with open(conf, "w") as f:
            config = local_config(upstream_ports, self.port)
            f.write(edit(config) if edit else config)
        self.access_log = os.path.join(self.prefix, "access.log")
        self.error_log = os.path.join(self.prefix, "error.log")
        with open(self.access_log, "wb") as out, open(self.error_log, "wb") as err:
            self.proc = subprocess.Popen(
                [nginx_binary(), "-p", self.prefix, "-e", "stderr", "-c", conf,
                 "-g", f"daemon off; pid {self.prefix}/nginx.pid;"],
                stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        try:
            self._wait_listening(timeout_s=30)
        except BaseException:
            self.stop()
            raise

    def _wait_listening(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}: {self.errors()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nginx did not listen within {timeout_s} s: {self.errors()}") from None
                time.sleep(0.05)

    def errors(self) -> str:
        with open(self.error_log, errors="replace") as f:
            return f.read()[-3000:]

    def upstreams(self, count: int, timeout_s: float = 30.0) -> list[str]:
        """The replica that answered each request, once `count` are logged (nginx logs a
        request after its last byte went out, or after it noticed the client leave a stream)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with open(self.access_log, errors="replace") as f:
                found = re.findall(r"upstream=(\S+)", f.read())
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    def stop(self) -> None:
        """Fast shutdown (SIGTERM): open streams are cut, as a stopped proxy cuts them."""
        try:
            stop_on_sigterm(self.proc, "nginx")
        finally:
            shutil.rmtree(self.prefix, ignore_errors=True)

    def __enter__(self) -> Nginx:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
