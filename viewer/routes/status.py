"""Status routes: live processors, broker health, Prometheus metrics."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from pipeline.kafka import broker_reachable
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
    # Whoever waits for health (pipeline up, an orchestrator) is about to send viewers: start
    # reading the processed topic now, so the first viewer does not wait for the reader's connect.
    current_viewer().processed.ensure_started()
    if broker_reachable(current_viewer().settings.shared, timeout_s=1.0):
        return jsonify({"status": "ok"})
    return jsonify({"status": "broker unreachable"}), 503


@bp.get("/metrics")
def metrics():
    return Response(current_viewer().metrics.render(), mimetype=CONTENT_TYPE)
