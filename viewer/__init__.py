"""Viewer stage: a Flask app serving processed streams as MJPEG, stills and status."""

from __future__ import annotations

import os

from flask import Flask

from pipeline.settings import Settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATES = os.path.join(ROOT, "templates")
STATIC = os.path.join(ROOT, "static")


def create_app(config: dict | None = None) -> Flask:
    """App factory (`gunicorn -k gevent 'viewer:create_app()'`). config may hold SETTINGS."""
    from viewer.replay import bp as replay_bp
    from viewer.routes import bp
    from viewer.state import ViewerState

    app = Flask(__name__, template_folder=TEMPLATES, static_folder=STATIC)
    app.config.update(config or {})
    settings = app.config.get("SETTINGS") or Settings.from_env()
    app.extensions["viewer"] = ViewerState(settings)
    app.register_blueprint(bp)
    app.register_blueprint(replay_bp)
    return app
