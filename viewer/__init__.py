"""Viewer stage: a Flask app serving processed streams as MJPEG, stills and status."""

from __future__ import annotations

import os

from flask import Blueprint, Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from viewer import headers
from viewer.bodies import BodyGuard
from viewer.errors import register_error_handlers
from viewer.extension import Viewer, viewer_of
from viewer.live.direct import DirectStreams
from viewer.routes import chains as chains_routes
from viewer.routes import clip as clip_routes
from viewer.routes import live as live_routes
from viewer.routes import replay as replay_routes
from viewer.routes import status as status_routes
from viewer.routes import stills as stills_routes
from viewer.routes import window as window_routes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATES = os.path.join(ROOT, "templates")
STATIC = os.path.join(ROOT, "static")


def blueprints() -> list[Blueprint]:
    """Every blueprint of the viewer, registered in this order: the one place to add routes."""
    return [live_routes.bp, status_routes.bp, replay_routes.bp, window_routes.bp, chains_routes.bp, clip_routes.bp,
            stills_routes.bp]


def create_app(config: dict | None = None) -> Flask:
    """App factory (`gunicorn -k gevent 'viewer:create_app()'`).

    config may hold SETTINGS (else read from the environment) and the viewer's own settings
    (see `viewer.settings.ViewerSettings`).
    """
    app = Flask(__name__, template_folder=TEMPLATES, static_folder=STATIC)
    app.config.update(config or {})
    Viewer(app)
    for bp in blueprints():
        app.register_blueprint(bp)
    register_error_handlers(app)
    headers.init_app(app)
    shared = viewer_of(app).settings.shared
    app.wsgi_app = BodyGuard(app.wsgi_app, shared.max_bodies_in_progress, shared.body_idle_timeout_s)
    if shared.trusted_proxies:
        # The client is the address the trusted proxies appended, not the proxy's own: per-client
        # limits then hold per client. Entries before theirs are the client's say, never read.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=shared.trusted_proxies, x_proto=shared.trusted_proxies)
    # Outermost: it answers gunicorn directly for the live streams it writes itself.
    app.wsgi_app = DirectStreams(app.wsgi_app)
    return app
