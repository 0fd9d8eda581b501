"""POST /api/replay: reset a viewer's or the processors' offsets for one stream (an admin route,
guarded by ``viewer.admin``). A viewer group's reset reaches its open streams in this process at
once and in every other worker and replica through the control topic (viewer/live/broadcast.py)."""

from __future__ import annotations

from flask import Blueprint, jsonify
from kafka.errors import KafkaError

from pipeline.generations import slots
from pipeline.offsets import GroupActiveError, OffsetsError, parse_target
from pipeline.viewer_groups import GROUP_PREFIX, VIEWER_ID_RULE, is_viewer_group
from viewer.admin import admin_json
from viewer.errors import ApiError
from viewer.extension import current_viewer
from viewer.live.resets import announce

bp = Blueprint("replay", __name__)


def _topic_for(group: str, raw: bool) -> str:
    """Viewer groups read the processed topic (raw with ?raw=1); any other group, such as the
    processors, reads the raw topic."""
    settings = current_viewer().settings.shared
    if group.startswith(GROUP_PREFIX) and not raw:
        return settings.processed_topic
    return settings.raw_topic


@bp.post("/api/replay")
def replay():
    body = admin_json('{"group": G, "stream": S, "to": T}')
    group, stream, raw = body.get("group"), body.get("stream"), body.get("raw", False)
    if not isinstance(group, str) or not group or len(group) > 255:
        raise ApiError(400, "'group' must be a consumer group id, e.g. viewer-<id> or processors")
    if group.startswith(GROUP_PREFIX) and not is_viewer_group(group):
        raise ApiError(400, VIEWER_ID_RULE)
    if not isinstance(stream, str) or not stream:
        raise ApiError(400, "'stream' must be a stream name")
    if not isinstance(raw, bool):
        raise ApiError(400, "'raw' must be true or false")
    try:
        target = parse_target(body.get("to"))
        if target.kind == "offset" and target.value < 0:
            raise OffsetsError("an offset must be 0 or more")
        viewer = current_viewer()
        # The process's shared client: one per request cost its two connections' set-up, 17 ms
        # of a seek's ~90 (viewer/shared_offsets.py).
        with viewer.offsets_tool.lease() as tool:
            # The stream's partition in every generation (pipeline/generations.py): the same target
            # planned on each puts a reader that reads them oldest first at the right frame.
            base = _topic_for(group, raw)
            tps = [tool.stream_partition(topic, stream) for topic in slots(base, tool.consumer.topics())]
            # This process's readers of the group commit nothing while the reset is planned and applied.
            with viewer.resets.resetting(group) as readers:
                tool.ensure_inactive(group)
                moves = tool.plan_reset(group, tps, target)
                positions = {m.tp: m.new for m in moves if m.new is not None}
                record = None
                if group.startswith(GROUP_PREFIX) and positions:
                    # Written before the commit: the record, not the committed offset, moves the
                    # open streams elsewhere, and any of them that commits its old position
                    # after the commit below follows the record afterwards.
                    record = viewer.broadcast.reset(group, stream, positions)
                tool.apply(group, moves)
                signalled = announce(readers, positions, record)
    except GroupActiveError as exc:
        raise ApiError(409, str(exc)) from None
    except OffsetsError as exc:
        raise ApiError(400, str(exc)) from None
    except KafkaError as exc:
        raise ApiError(503, f"broker: {exc}") from None
    return jsonify(
        {
            "group": group,
            "stream": stream,
            "topic": base,
            "partitions": [{"topic": m.tp.topic, "partition": m.tp.partition, "old": m.old, "new": m.new} for m in moves],
            "readers": signalled,
            "control_offset": record,
        }
    )
