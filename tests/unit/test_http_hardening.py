"""The viewer's HTTP edge without a broker: security headers, admin refusal behind a proxy, form numbers."""

from __future__ import annotations

import io

import pytest

from pipeline.local.broker import free_port
from pipeline.settings import Settings
from viewer import create_app
from viewer.extension import viewer_of


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    settings = Settings(bootstrap_servers=f"127.0.0.1:{free_port()}", loopback_admin=True)
    app = create_app({"SETTINGS": settings, "JOBS_DB": str(tmp_path_factory.mktemp("jobs") / "jobs.db")})
    yield app.test_client()
    viewer_of(app).shutdown()


@pytest.mark.parametrize("path", ["/", "/static/app.js", "/no-such-route"])
def test_every_answer_carries_the_security_headers(client, path):
    response = client.get(path)
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"


def test_loopback_admin_answers_a_direct_request(client):
    # Past the admin check: the body is what is wrong.
    assert client.post("/api/replay", data="x").status_code == 415


@pytest.mark.parametrize("header", ["Forwarded", "X-Forwarded-For", "X-Real-IP"])
def test_loopback_admin_refuses_a_request_a_proxy_relayed(client, header):
    response = client.post("/api/replay", json={"group": "viewer-a", "stream": "s", "to": "earliest"},
                           headers={header: "203.0.113.9"})
    assert response.status_code == 403
    assert "relayed" in response.get_json()["error"]


@pytest.mark.parametrize("forwarded", ["127.0.0.1", "203.0.113.9, 127.0.0.1"])
def test_loopback_admin_behind_a_trusted_proxy_still_refuses_relayed_requests(tmp_path, forwarded):
    """The trusted proxy makes the forwarded address the client's; one that says loopback (a
    user on the proxy's host, or a client's forged entry) is still a relayed request."""
    settings = Settings(bootstrap_servers=f"127.0.0.1:{free_port()}", loopback_admin=True, trusted_proxies=1)
    app = create_app({"SETTINGS": settings, "JOBS_DB": str(tmp_path / "jobs.db")})
    try:
        response = app.test_client().post("/api/replay", json={"group": "viewer-a", "stream": "s", "to": "earliest"},
                                          headers={"X-Forwarded-For": forwarded})
        assert response.status_code == 403
        assert "relayed" in response.get_json()["error"]
    finally:
        viewer_of(app).shutdown()


@pytest.mark.parametrize("tile", ["9" * 5000, "0" * 4400 + "128", "1" * 40])
def test_an_upload_tile_of_thousands_of_digits_is_a_400(client, tile):
    """int() refuses strings of over 4300 digits with a ValueError (found by the HTTP fuzz test:
    a 500); the answer's message stays short."""
    response = client.post("/upload", data={"image": (io.BytesIO(b"\x89PNG\r\n\x1a\n"), "a.png"), "tile": tile})
    assert response.status_code == 400 and "tile must be an integer" in response.get_json()["error"]
    assert len(response.get_json()["error"]) < 200
