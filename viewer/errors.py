"""The viewer's error answers: every 4xx/5xx is JSON `{"error": message}`."""

from __future__ import annotations

from flask import Response, jsonify


def json_error(status: int, message: str) -> tuple[Response, int]:
    return jsonify({"error": message}), status
