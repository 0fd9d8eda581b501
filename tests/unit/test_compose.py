"""docker-compose.yml and Dockerfile checked against the code (Docker itself cannot run here):
structure, environment names, image builds, and the services' commands vs `pipeline up`."""

from __future__ import annotations

import os
import re
import runpy
from unittest import mock

from pipeline.local.up import UpOptions, service_commands
from pipeline.settings import Settings
from tests.support.compose_file import APP_SERVICES, load_compose, service_env
from tests.support.nginx import parse, read_config
from tests.support.paths import ROOT
from viewer.routes.stills import EVENTS_MAX_S, FORM_OVERHEAD_BYTES

IMAGE = "kafka-live-video"
# Read by Settings but deliberately not offered in production: `pipeline up` sets it so a local
# user may use the admin routes from loopback without a token.
DEV_ONLY = {"VIEWER_LOOPBACK_ADMIN"}


class RecordingEnv(dict):
    """An empty environment that remembers every name looked up in it."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def get(self, name, default=None):
        self.names.add(name)
        return default


def settings_env_names() -> set[str]:
    env = RecordingEnv()
    Settings.from_env(env)
    return env.names


def read(path: str) -> str:
    with open(os.path.join(ROOT, path)) as f:
        return f.read()


def dockerfile_copies() -> list[str]:
    return [line.split()[1].rstrip("/") for line in read("Dockerfile").splitlines() if line.startswith("COPY ")]


def test_services_and_their_order():
    services = load_compose()["services"]
    assert set(APP_SERVICES) | {"kafka", "nginx", "prometheus", "grafana"} <= set(services)
    assert services["topics"]["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    assert services["topics"]["restart"] == "no", "a one-shot job must not be restarted after it succeeded"
    for name in ("producer", "processor", "viewer"):
        assert services[name]["depends_on"] == {"topics": {"condition": "service_completed_successfully"}}, name
        assert services[name]["restart"] == "unless-stopped", name
        assert "container_name" not in services[name], "a fixed container name prevents --scale"
    assert int(services["processor"]["deploy"]["replicas"]) >= 1
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["metrics"], "monitoring is optional"
        for volume in services[name]["volumes"]:
            assert os.path.exists(os.path.join(ROOT, volume.split(":")[0])), volume


def test_kafka_is_single_node_kraft_sized_for_frames():
    kafka = load_compose()["services"]["kafka"]
    env = {k: str(v) for k, v in kafka["environment"].items()}
    assert kafka["image"].startswith("apache/kafka:")
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    node = env["KAFKA_NODE_ID"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{node}@kafka:9093"
    assert "CONTROLLER://:9093" in env["KAFKA_LISTENERS"].split(",")
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    for name in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"):
        assert env[name] == "1", name
    frame_limit = service_env(load_compose(), "producer")["MAX_MESSAGE_BYTES"]
    assert env["KAFKA_MESSAGE_MAX_BYTES"] == env["KAFKA_REPLICA_FETCH_MAX_BYTES"] == frame_limit
    assert int(frame_limit) == Settings().max_message_bytes
    assert "kafka-broker-api-versions.sh" in " ".join(kafka["healthcheck"]["test"])


def test_environment_names_are_the_applications_own():
    compose = load_compose()
    expected = (settings_env_names() - DEV_ONLY) | {"LOG_LEVEL"}
    assert "KAFKA_SASL_PASSWORD" in expected and "TOPIC_PARTITIONS" in expected
    for name in APP_SERVICES:
        env = service_env(compose, name)
        assert set(env) == expected, f"{name}: unknown {set(env) - expected}, missing {expected - set(env)}"
        settings = Settings.from_env(env)
        assert settings.bootstrap_servers == "kafka:9092"
        assert settings.sasl_mechanism is None and settings.security_protocol == "PLAINTEXT"
        assert settings.admin_token is None and not settings.loopback_admin, "admin routes closed by default"
        defaults = Settings()
        assert (settings.raw_topic, settings.processed_topic) == (defaults.raw_topic, defaults.processed_topic)


def test_every_app_service_builds_this_repository():
    compose = load_compose()
    copied = dockerfile_copies()
    ignored = read(".dockerignore").split()
    for name in APP_SERVICES:
        service = compose["services"][name]
        assert service["image"].startswith(f"{IMAGE}:"), name
        assert service["build"] == {"context": ".", "dockerfile": "Dockerfile"}, name
        command = service["command"]
        assert command[:2] == ["python", "-m"], name
        module = command[2] if command[2] != "gunicorn" else command[-1].split(":")[0]
        assert module in copied, f"{name} runs {module!r}, which the Dockerfile does not copy"
    for path in copied:
        assert os.path.exists(os.path.join(ROOT, path)), f"Dockerfile copies missing {path}"
        assert path not in ignored, f".dockerignore excludes {path}, which the Dockerfile copies"
    source = compose["services"]["producer"]["command"][compose["services"]["producer"]["command"].index("--source") + 1]
    assert source.split("/")[0] in copied and os.path.isfile(os.path.join(ROOT, source))


def test_image_is_slim_non_root_and_headless():
    dockerfile = read("Dockerfile")
    assert re.search(r"^FROM python:[\d.]+-slim$", dockerfile, re.M)
    user = re.findall(r"^USER (\S+)$", dockerfile, re.M)
    assert user and user[-1] not in ("root", "0")
    requirements = read("requirements.txt")
    assert "opencv-python-headless" in requirements and "opencv-python=" not in requirements


def test_compose_runs_the_same_commands_as_pipeline_up():
    """`pipeline up` and docker compose must not drift apart: same commands, only the
    interpreter and the viewer's bind address differ."""
    services = load_compose()["services"]
    producer = services["producer"]["command"]
    opts = UpOptions(
        video=producer[producer.index("--source") + 1],
        fps=producer[producer.index("--fps") + 1],
        transform=services["processor"]["command"][-1],
        processors=1,
        host="0.0.0.0",
        port=8000,
        loop="--loop" in producer,
    )
    up = service_commands(opts, python="python")
    assert services["producer"]["command"] == up["producer"]
    assert services["processor"]["command"] == up["processor-1"]
    assert services["viewer"]["command"] == up["viewer"]


def nginx_seconds(value: str) -> float:
    """An nginx time (`90`, `4s`, `20m`, `1h`) in seconds."""
    number, unit = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", value).groups()
    return int(number) * {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600, "d": 86400}[unit]


def test_viewer_replicas_scale_behind_nginx():
    """`docker compose up --scale viewer=3`: replicas without a host port, found by nginx under
    the service name (Docker's DNS answers it with every replica), and nginx is the way in."""
    services = load_compose()["services"]
    viewer, nginx = services["viewer"], services["nginx"]
    assert "ports" not in viewer, "a fixed host port lets only one replica start"
    viewer_port = viewer["command"][viewer["command"].index("-b") + 1].rsplit(":", 1)[1]
    config = parse(read_config())
    upstream = config.http.one("upstream", "viewer")
    assert [d.args for d in upstream.find("server")] == [[f"viewer:{viewer_port}", "resolve"]]
    assert upstream.find("zone"), "`resolve` needs a shared zone"
    assert config.http.value("resolver").startswith("127.0.0.11 "), "Docker's embedded DNS"
    version = tuple(int(n) for n in re.match(r"nginx:(\d+)\.(\d+)", nginx["image"]).groups())
    assert version >= (1, 28), "`server ... resolve` outside nginx Plus needs 1.27.3 or later"
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    assert nginx["ports"] == [f"8000:{config.server.value('listen')}"]
    assert nginx["depends_on"] == ["viewer"] and "container_name" not in nginx
    locations = config.server.find("location")
    assert all(loc.value("proxy_pass") == "http://viewer" for loc in locations if not loc.args[0].startswith("@"))


def test_nginx_passes_streams_on_unbuffered_and_keeps_them_open():
    config = parse(read_config())
    server = config.server
    assert server.value("proxy_http_version") == "1.1" and server.one("proxy_set_header", "Connection").args == [
        "Connection", ""], "upstream keep-alive"
    # Reading the file sets up a metrics directory in the environment: undone, as gunicorn's exit would.
    with mock.patch.dict(os.environ):
        gunicorn = runpy.run_path(os.path.join(ROOT, "gunicorn.conf.py"))
        gunicorn["on_exit"](None)
    upstream = config.http.one("upstream", "viewer")
    assert nginx_seconds(upstream.value("keepalive_timeout")) < gunicorn["keepalive"], "nginx must close idle ones first"
    mjpeg = server.one("location", "/stream/")
    events = server.one("location", "~", "^/jobs/[^/]+/events$")
    assert re.fullmatch(events.args[1], "/jobs/0123abcd/events") and not re.fullmatch(events.args[1], "/jobs/x/result")
    for location in (mjpeg, events):
        assert location.value("proxy_buffering") == "off"
    assert nginx_seconds(mjpeg.value("proxy_read_timeout")) >= 3600
    assert nginx_seconds(events.value("proxy_read_timeout")) > EVENTS_MAX_S, "a job's events end by themselves"


def test_nginx_and_the_viewer_agree_on_bodies_and_client_addresses():
    compose = load_compose()
    settings = Settings.from_env(service_env(compose, "viewer"))
    server = parse(read_config()).server
    assert int(server.value("client_max_body_size")) == settings.max_upload_bytes + FORM_OVERHEAD_BYTES
    assert nginx_seconds(server.value("client_body_timeout")) == settings.body_idle_timeout_s
    assert server.one("proxy_set_header", "X-Forwarded-For").args[1] == "$proxy_add_x_forwarded_for"
    assert settings.trusted_proxies == 1, "behind nginx, the client is the address nginx forwards"
    assert Settings().trusted_proxies == 0, "forwarding headers are untrusted unless configured"
