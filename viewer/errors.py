"""The viewer's error answers: every 4xx/5xx, its own or Flask's (404, 405, ...), is JSON `{"error": message}`."""

from __future__ import annotations

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException


class ApiError(Exception):
    """Raise from a route to answer ``status`` with ``{"error": message, **extra}``."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, **extra) -> None:
        super().__init__(message)
        self.status, self.message, self.headers, self.extra = status, message, headers or {}, extra


def _api_error(exc: ApiError) -> tuple[Response, int, dict[str, str]]:
    return jsonify({"error": exc.message, **exc.extra}), exc.status, exc.headers


def _http_error(exc: HTTPException) -> tuple[Response, int, list[tuple[str, str]]]:
    # Keep what the refusal says in its headers (Allow on a 405), in a JSON body.
    headers = [(name, value) for name, value in exc.get_headers() if name.lower() != "content-type"]
    return jsonify({"error": exc.description}), exc.code or 500, headers


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(ApiError, _api_error)
    # Also answers unhandled exceptions: Flask logs them and hands them over as a 500.
    app.register_error_handler(HTTPException, _http_error)
