"""Per-process viewer state: settings and the live hubs, one per topic."""

from __future__ import annotations

from flask import current_app

from pipeline.settings import Settings
from viewer.hub import LiveHub


class ViewerState:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.processed = LiveHub(settings, settings.processed_topic)
        self.raw = LiveHub(settings, settings.raw_topic)

    def hub(self, raw: bool) -> LiveHub:
        return self.raw if raw else self.processed


def state() -> ViewerState:
    return current_app.extensions["viewer"]
