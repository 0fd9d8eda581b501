"""Status routes: live processors, broker health, Prometheus metrics."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from viewer.extension import current_viewer
from viewer.metrics import CONTENT_TYPE

bp = Blueprint("status", __name__)


@bp.get("/workers")
def workers():
    heartbeats = current_viewer().heartbeats
    heartbeats.ensure_started()
    return jsonify({"workers": heartbeats.live(), "error": heartbeats.error})


@bp.get("/healthz")
def healthz():
    st = current_viewer()
    # Whoever waits for health (pipeline up, an orchestrator) is about to send viewers: start
    # reading the processed topic now, so the first viewer does not wait for the reader's connect.
    st.processed.ensure_started()
    cluster_id = st.health.cluster_id()
    if cluster_id is None:
        return jsonify({"status": "broker unreachable"}), 503
    return jsonify({"status": "ok", **st.broker.seen(cluster_id)})


@bp.get("/metrics")
def metrics():
    return Response(current_viewer().metrics.render(), mimetype=CONTENT_TYPE)
