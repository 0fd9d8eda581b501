"""Property-based fuzzing of the viewer's HTTP edge against the real `gunicorn -k gevent` viewer
on the real broker, with a live stream running: uploads (bytes, headers, fields, the spec
grammar, tile), stream names, viewer ids, job ids, query parameters on every route, and the
admin routes' JSON. Every answer must be under 500 and come within 10 s; afterwards the
viewer must still be serving. `HYPOTHESIS_PROFILE=long` (make faults) tries many more inputs.
"""

from __future__ import annotations

import json
import string
import urllib.parse
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
import requests
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from pipeline.transforms import REGISTRY
from tests.support.frame_feed import SMALL, FrameFeed, images
from tests.support.gunicorn_server import Gunicorn
from tests.support.images import with_jpeg_size, with_png_size
from tests.support.mjpeg_client import iter_parts
from tests.support.waiting import wait_for_snapshot

pytestmark = [pytest.mark.integration, pytest.mark.faults]

TOKEN = "fuzz-token"
TIMEOUT_S = 10  # a request not answered by then is a hang
STREAMING = ("multipart/x-mixed-replace", "text/event-stream")


def examples(short: int) -> hypothesis_settings:
    """`short` examples in the normal run, up to 10x that in a longer profile (make faults).
    Each request has its own 10 s timeout, so no per-example deadline; module fixtures are
    meant to be shared by examples."""
    scale = hypothesis_settings().max_examples / hypothesis_settings.get_profile("default").max_examples
    return hypothesis_settings(max_examples=max(1, round(short * min(scale, 10))), deadline=None,
                               suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


class Tally:
    def __init__(self) -> None:
        self.statuses: Counter = Counter()
        self.server_errors: list[str] = []

    @property
    def inputs(self) -> int:
        return sum(self.statuses.values())


TALLY = Tally()


@pytest.fixture(scope="module")
def server(module_settings, tmp_path_factory):
    s = module_settings
    env = {"JOBS_DB": str(tmp_path_factory.mktemp("jobs") / "jobs.sqlite3"), "VIEWER_ADMIN_TOKEN": TOKEN,
           "BODY_IDLE_TIMEOUT_S": "3",
           # Every well-formed upload reaches the decode and the publish, not the job limits
           # (no processor runs: admitted jobs stay queued).
           "MAX_ACTIVE_JOBS": "1000000", "MAX_JOBS_PER_CLIENT": "1000000"}
    with FrameFeed(s, s.processed_topic, {"cam": (SMALL, images(SMALL, False))}):
        g = Gunicorn(s, env)
        try:
            wait_for_snapshot(g.url, "cam")
            yield g
        finally:
            g.stop()


def call(method: str, url: str, **kwargs) -> int:
    """One request; records and returns its status (a streaming body is sampled, then closed)."""
    with requests.request(method, url, timeout=TIMEOUT_S, stream=True, allow_redirects=False, **kwargs) as response:
        if response.headers.get("Content-Type", "").startswith(STREAMING):
            response.raw.read(1024)
        else:
            response.content  # noqa: B018 - the whole answer must arrive in time too
        status = response.status_code
    TALLY.statuses[status] += 1
    if status >= 500:
        TALLY.server_errors.append(f"{status} {method} {urllib.parse.unquote(url)}")
    assert status < 500, f"{status} for {method} {url}: {response.text[:300] if not response.raw.closed else ''}"
    return status


def segment(text: str) -> str:
    return urllib.parse.quote(text, safe="")


# ------------------------------------------------------------------------------ strategies

def _encoded(fmt: str, height: int = 48, width: int = 64) -> bytes:
    image = np.random.default_rng(3).integers(0, 256, (height, width, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".png" if fmt == "png" else ".jpg", image)
    assert ok
    return buf.tobytes()


PNG, JPEG = _encoded("png"), _encoded("jpeg")

names = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["cam", "upload", "a/b", "..", "../etc/passwd", "%00", " ", "\u202e", "\u00b2", "x" * 300,
                     "cam.mjpg", "<script>"]),
)
viewer_ids = st.one_of(st.text(alphabet=string.ascii_letters + string.digits + "_.-", min_size=1, max_size=70),
                       st.text(max_size=20))
numbers = st.one_of(st.integers(-10**9, 10**9).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
                    st.sampled_from(["nan", "inf", "-0", "1e309", "\u00b2", "\u0661\u0662\u0668", "0x10", " 9 ", "9" * 5000]))
values = st.one_of(numbers, st.text(max_size=16), st.sampled_from(["%2C", "%", "%ZZ", "true", "none", "00ff00", "#fff"]))


@st.composite
def steps(draw) -> str:
    name = draw(st.one_of(st.sampled_from(sorted(REGISTRY)), st.text(max_size=12)))
    known = [param.name for param in REGISTRY[name].params] if name in REGISTRY else []
    keys = st.one_of(st.sampled_from(known), st.text(max_size=8)) if known else st.text(max_size=8)
    params = draw(st.lists(st.tuples(keys, values), max_size=4))
    return name + "".join(f":{key}={value}" for key, value in params)


specs = st.one_of(
    st.lists(steps(), max_size=20).flatmap(lambda parts: st.sampled_from([",", "|"]).map(lambda sep: sep.join(parts))),
    st.text(max_size=200),
    st.integers(17, 80).map(lambda n: ",".join(["blur:ksize=99"] * n)),
)
tiles = st.one_of(st.integers(-10, 10_000).map(str), st.text(max_size=6), numbers)


@st.composite
def image_bytes(draw) -> bytes:
    base = draw(st.sampled_from([PNG, JPEG]))
    kind = draw(st.sampled_from(["whole", "random", "truncated", "flipped", "claims", "empty"]))
    if kind == "random":
        return draw(st.binary(max_size=4096))
    if kind == "truncated":
        return base[:draw(st.integers(0, len(base)))]
    if kind == "flipped":
        data = bytearray(base)
        for at in draw(st.lists(st.integers(0, len(base) - 1), min_size=1, max_size=8)):
            data[at] ^= draw(st.integers(1, 255))
        return bytes(data)
    if kind == "claims":  # a header that lies about the size (up to a decompression bomb)
        most = 70_000 if base is PNG else 65_535  # a JPEG's frame header holds 16 bits per side
        width, height = draw(st.integers(0, most)), draw(st.integers(0, most))
        return with_png_size(PNG, width, height) if base is PNG else with_jpeg_size(JPEG, width, height)
    return b"" if kind == "empty" else base


# ------------------------------------------------------------------------------ properties

@examples(60)
@given(image=image_bytes(), spec=st.one_of(st.none(), specs), tile=st.one_of(st.none(), tiles),
       extra=st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=3),
       filename=st.text(max_size=30), mimetype=st.sampled_from(["image/png", "image/jpeg", "text/plain", "", "x/\u00e9"]),
       as_text=st.booleans())
def test_upload_answers_every_form_with_a_4xx_or_a_job(server, image, spec, tile, extra, filename, mimetype, as_text):
    form = dict(extra)
    if spec is not None:
        form["transform"] = spec
    if tile is not None:
        form["tile"] = tile
    files = None
    if as_text:
        form["image"] = image.decode("latin-1")
    else:
        files = {"image": (filename, image, mimetype) if mimetype else (filename, image)}
    call("POST", f"{server.url}/upload", data=form, files=files)


@examples(20)
@given(body=st.binary(max_size=2048),
       content_type=st.one_of(st.sampled_from(["multipart/form-data", "multipart/form-data; boundary=",
                                               "multipart/form-data; boundary=x", "application/json",
                                               "application/x-www-form-urlencoded", "image/png"]),
                                    st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=40)))
def test_upload_answers_any_body_and_content_type(server, body, content_type):
    call("POST", f"{server.url}/upload", data=body, headers={"Content-Type": content_type.strip()})


@examples(4)
@given(stream_names=st.lists(names, min_size=1, max_size=6))
def test_stream_names_on_every_stream_route(server, stream_names):
    """An unknown name waits up to 3 s for a first frame: names and routes go in parallel."""
    def one(request: tuple[str, str]) -> None:
        method, path = request
        call(method, f"{server.url}{path}", **({"json": {"spec": "grayscale"}, "headers": {"Authorization": f"Bearer {TOKEN}"}}
                                                if method == "PUT" else {}))

    requests_ = []
    for name in stream_names:
        requests_ += [("GET", f"/stream/{segment(name)}.mjpg"), ("GET", f"/snapshot/{segment(name)}.jpg"),
                      ("GET", f"/api/streams/{segment(name)}/window"), ("GET", f"/api/streams/{segment(name)}/transform"),
                      ("PUT", f"/api/streams/{segment(name)}/transform")]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, requests_))


@examples(40)
@given(job=st.one_of(st.text(max_size=60), st.sampled_from(["0" * 32, "..", "%2e%2e", "nope"])),
       suffix=st.sampled_from(["", "/result", "/events", "/result?download=1"]))
def test_job_ids(server, job, suffix):
    call("GET", f"{server.url}/jobs/{segment(job)}{suffix}")


ROUTES = ["/", "/streams", "/workers", "/healthz", "/metrics", "/transforms", "/stream/cam.mjpg",
          "/snapshot/cam.jpg", "/api/streams/cam/window", "/api/streams/cam/transform", "/jobs/x", "/static/app.js"]
query_keys = st.one_of(st.sampled_from(["viewer", "raw", "speed", "retry", "from", "to", "download", "tile"]),
                       st.text(max_size=10))


@examples(60)
@given(route=st.sampled_from(ROUTES), query=st.dictionaries(query_keys, st.one_of(values, viewer_ids), max_size=4))
def test_query_parameters_on_every_route(server, route, query):
    call("GET", f"{server.url}{route}", params=query)


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                           max_leaves=8)


@examples(15)
@given(body=st.one_of(
           st.fixed_dictionaries({}, optional={"group": st.one_of(st.sampled_from(["processors", "viewer-a", "viewer-"]),
                                                                   viewer_ids.map("viewer-".__add__), json_values),
                                               "stream": st.one_of(names, json_values),
                                               "to": st.one_of(st.sampled_from(["earliest", "latest", "PT30S", "-PT10S"]),
                                                               numbers, json_values),
                                               "raw": json_values}),
           json_values),
       token=st.sampled_from([TOKEN, "wrong", None]), raw_body=st.booleans())
@example(body={"group": "processors", "stream": "cam", "to": float("inf"), "raw": float("nan")}, token=TOKEN,
         raw_body=False)
def test_admin_routes_take_any_json(server, body, token, raw_body):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    # As a JSON body, with what Python's JSON writes for inf and nan (Infinity, NaN: not JSON, but
    # a JSON parser may take them); requests' json= refuses those before sending.
    as_json = headers | {"Content-Type": "application/json"}
    payload = {"data": json.dumps(body)[:4096]} if raw_body else {"data": json.dumps(body), "headers": as_json}
    call("POST", f"{server.url}/api/replay", **({"headers": headers} | payload))
    spec = body.get("to") if isinstance(body, dict) else body
    call("PUT", f"{server.url}/api/streams/cam/transform", headers=as_json, data=json.dumps({"spec": spec}))


def test_the_viewer_still_serves_after_the_fuzzing(server):
    assert requests.get(f"{server.url}/healthz", timeout=TIMEOUT_S).status_code == 200
    with requests.get(f"{server.url}/stream/cam.mjpg", stream=True, timeout=TIMEOUT_S) as response:
        assert next(iter_parts(response.raw)).body.startswith(b"\xff\xd8")
    reply = requests.post(f"{server.url}/upload", files={"image": ("ok.png", PNG)}, timeout=TIMEOUT_S)
    assert reply.status_code == 202, reply.text
    print(f"\nfuzz: {TALLY.inputs} requests, statuses {dict(sorted(TALLY.statuses.items()))},"
          f" 5xx: {len(TALLY.server_errors)} {TALLY.server_errors[:5]}")
    assert TALLY.server_errors == []
