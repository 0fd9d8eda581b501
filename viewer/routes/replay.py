"""POST /api/replay: reset a viewer's or the processors' offsets for one stream (admin route).

Auth: with VIEWER_ADMIN_TOKEN set, `Authorization: Bearer <token>` is required (none: 401,
wrong: 403). Unset, the route refuses with 403, except for loopback clients when the viewer
runs under `pipeline up` (VIEWER_LOOPBACK_ADMIN=1) and the request carries no forwarding header
(a reverse proxy on the same host would make anyone's request loopback). A JSON body is required, which also keeps
cross-site form posts out.
"""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, jsonify, request
from kafka.errors import KafkaError

from pipeline.generations import slots
from pipeline.offsets import GroupActiveError, OffsetsError, OffsetTool, parse_target
from viewer.errors import json_error
from viewer.live.resets import announce, resetting
from viewer.live.resume import VIEWER_ID, VIEWER_ID_RULE
from viewer.state import state

bp = Blueprint("replay", __name__)

LOOPBACK = ("127.0.0.1", "::1")
FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP", "X-Forwarded-Host", "X-Forwarded-Proto")
VIEWER_GROUP_PREFIX = "viewer-"


def refusal() -> tuple[Response, int] | None:
    """Why this request may not use an admin route, as a response; None when it may."""
    token = state().settings.admin_token
    if token:
        header = request.headers.get("Authorization")
        if not header:
            response, status = json_error(401, "admin route: send Authorization: Bearer <VIEWER_ADMIN_TOKEN>")
            response.headers["WWW-Authenticate"] = 'Bearer realm="viewer admin"'
            return response, status
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            return json_error(403, "wrong admin token")
        return None
    if state().settings.loopback_admin and request.remote_addr in LOOPBACK:
        # A proxy on this host relays anyone's request from loopback; it says so in one of these.
        relayed = [name for name in FORWARDING_HEADERS if name in request.headers]
        if relayed:
            return json_error(403, f"admin route: a relayed request ({relayed[0]} header) needs VIEWER_ADMIN_TOKEN")
        return None
    return json_error(403, "admin routes are off: set VIEWER_ADMIN_TOKEN")


def _topic_for(group: str, raw: bool) -> str:
    """Viewer groups read the processed topic (raw with ?raw=1); any other group, such as the
    processors, reads the raw topic."""
    settings = state().settings
    if group.startswith(VIEWER_GROUP_PREFIX) and not raw:
        return settings.processed_topic
    return settings.raw_topic


def admin_json(example: str) -> tuple[dict, None] | tuple[None, tuple[Response, int]]:
    """(the request's JSON object, None) for an admin caller; else (None, the refusal). Requiring
    JSON also keeps cross-site form posts out. `example` shows the expected object."""
    refused = refusal()
    if refused is not None:
        return None, refused
    body = request.get_json(silent=True) if request.is_json else None
    if not isinstance(body, dict):
        return None, json_error(415 if not request.is_json else 400, f"send a JSON object: {example}")
    return body, None


@bp.post("/api/replay")
def replay():
    body, refused = admin_json('{"group": G, "stream": S, "to": T}')
    if refused is not None:
        return refused
    group, stream, raw = body.get("group"), body.get("stream"), body.get("raw", False)
    if not isinstance(group, str) or not group or len(group) > 255:
        return json_error(400, "'group' must be a consumer group id, e.g. viewer-<id> or processors")
    if group.startswith(VIEWER_GROUP_PREFIX) and not VIEWER_ID.match(group[len(VIEWER_GROUP_PREFIX):]):
        return json_error(400, VIEWER_ID_RULE)
    if not isinstance(stream, str) or not stream:
        return json_error(400, "'stream' must be a stream name")
    if not isinstance(raw, bool):
        return json_error(400, "'raw' must be true or false")
    try:
        target = parse_target(body.get("to"))
        if target.kind == "offset" and target.value < 0:
            raise OffsetsError("an offset must be 0 or more")
        with OffsetTool(state().settings) as tool:
            # The stream's partition in every generation (pipeline/generations.py): the same target
            # planned on each puts a reader that reads them oldest first at the right frame.
            base = _topic_for(group, raw)
            tps = [tool.stream_partition(topic, stream) for topic in slots(base, tool.consumer.topics())]
            # Readers of this group commit nothing while the reset is planned and applied.
            with resetting(group) as readers:
                tool.ensure_inactive(group)
                moves = tool.plan_reset(group, tps, target)
                tool.apply(group, moves)
                signalled = announce(readers, {m.tp: m.new for m in moves if m.new is not None})
    except GroupActiveError as exc:
        return json_error(409, str(exc))
    except OffsetsError as exc:
        return json_error(400, str(exc))
    except KafkaError as exc:
        return json_error(503, f"broker: {exc}")
    return jsonify(
        {
            "group": group,
            "stream": stream,
            "topic": base,
            "partitions": [{"topic": m.tp.topic, "partition": m.tp.partition, "old": m.old, "new": m.new} for m in moves],
            "readers": signalled,
        }
    )
