"""Viewer stage: a Flask app serving processed streams as MJPEG, stills and status."""

from __future__ import annotations

import os

from flask import Flask

from pipeline.settings import Settings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATES = os.path.join(ROOT, "templates")
STATIC = os.path.join(ROOT, "static")

# Seconds of silence on a stream before its last part is sent again (see viewer/live/mjpeg.py).
DEFAULT_KEEPALIVE_S = 2.0


def blueprints() -> list:
    """Every blueprint of the viewer, registered in this order: the one place to add routes."""
    from viewer.routes.chains import bp as chains
    from viewer.routes.clip import bp as clip
    from viewer.routes.live import bp as viewer
    from viewer.routes.replay import bp as replay
    from viewer.routes.window import bp as window

    return [viewer, replay, window, chains, clip]


def create_app(config: dict | None = None) -> Flask:
    """App factory (`gunicorn -k gevent 'viewer:create_app()'`).

    config may hold SETTINGS (else read from the environment) and KEEPALIVE_S.
    """
    from viewer import headers
    from viewer.bodies import BodyGuard
    from viewer.state import ViewerState
    from viewer.stills import upload

    app = Flask(__name__, template_folder=TEMPLATES, static_folder=STATIC)
    app.config.update(config or {})
    settings = app.config.get("SETTINGS") or Settings.from_env()
    app.extensions["viewer"] = ViewerState(settings, float(app.config.get("KEEPALIVE_S", DEFAULT_KEEPALIVE_S)))
    for bp in blueprints():
        app.register_blueprint(bp)
    upload.init_app(app, settings)
    headers.init_app(app)
    app.wsgi_app = BodyGuard(app.wsgi_app, settings.max_bodies_in_progress, settings.body_idle_timeout_s)
    return app
