"""The one guard of the admin routes (replay, live chains).

With VIEWER_ADMIN_TOKEN set, `Authorization: Bearer <token>` is required (none: 401, wrong:
403). Unset, admin routes refuse with 403, except for loopback clients when the viewer runs
under `pipeline up` (VIEWER_LOOPBACK_ADMIN=1) and the request carries no forwarding header (a
reverse proxy on the same host would make anyone's request loopback; with VIEWER_TRUSTED_PROXIES
the address is the one the proxy forwarded, and the header is there all the same). A JSON body
is required, which also keeps cross-site form posts out.
"""

from __future__ import annotations

import hmac

from flask import request

from viewer.errors import ApiError
from viewer.extension import current_viewer

LOOPBACK = ("127.0.0.1", "::1")
FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP", "X-Forwarded-Host", "X-Forwarded-Proto")


def require_admin() -> None:
    """ApiError (401/403) unless this request may use an admin route."""
    settings = current_viewer().settings.shared
    token = settings.admin_token
    if token:
        header = request.headers.get("Authorization")
        if not header:
            raise ApiError(401, "admin route: send Authorization: Bearer <VIEWER_ADMIN_TOKEN>",
                           headers={"WWW-Authenticate": 'Bearer realm="viewer admin"'})
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise ApiError(403, "wrong admin token")
        return
    if settings.loopback_admin and request.remote_addr in LOOPBACK:
        # A proxy on this host relays anyone's request from loopback; it says so in one of these.
        relayed = [name for name in FORWARDING_HEADERS if name in request.headers]
        if relayed:
            raise ApiError(403, f"admin route: a relayed request ({relayed[0]} header) needs VIEWER_ADMIN_TOKEN")
        return
    raise ApiError(403, "admin routes are off: set VIEWER_ADMIN_TOKEN")


def admin_json(example: str) -> dict:
    """The request's JSON object, for an admin caller; ApiError otherwise. Requiring JSON also
    keeps cross-site form posts out. `example` shows the expected object."""
    require_admin()
    body = request.get_json(silent=True) if request.is_json else None
    if not isinstance(body, dict):
        raise ApiError(415 if not request.is_json else 400, f"send a JSON object: {example}")
    return body
