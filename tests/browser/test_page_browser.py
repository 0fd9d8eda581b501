"""The page in headless Chromium against a real running stack: it loads cleanly, the video moves,
the raw/processed toggle and the stream picker work, narrow screens get one column, a dead broker
or a lost server is said plainly, replay-from-start goes back, an upload completes, and the
transform chain editor changes the live picture and an upload's chain."""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import av
import cv2
import numpy as np
import pytest
import requests
from kafka import TopicPartition
from playwright.sync_api import Page, expect, sync_playwright

from pipeline.offsets import OffsetTool
from pipeline.settings import Settings
from producer import run as producer_run
from tests.support.broker_helpers import first_frame, first_seq
from tests.support.first_parts import FirstParts
from tests.support.images import is_grayscale
from tests.support.paths import SAMPLE_PNG, SAMPLE_VIDEO
from tests.support.server import ServerThread
from tests.support.stack import running_stack, wait_for_resume_consumers_closed
from tests.support.waiting import wait_until
from viewer import create_app
from viewer.extension import viewer_of

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
# Routes other panels poll that a viewer may not serve yet; the page must cope with their 404.
OPTIONAL_ROUTES = ("/workers",)
WAIT_MS = 20_000
# Every expect() waits for the page to react to a real server: on a loaded machine (two test
# processes, each with a broker, a stack and Chromium) that can take longer than Playwright's 5 s.
expect.set_options(timeout=WAIT_MS)
UPLOAD_LIMIT = 2_000_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.integration,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is absent (.ci/run installs Debian's chromium)"),
]


@pytest.fixture(scope="module")
def settings(module_settings):
    # As under `pipeline up`: admin routes (replay) answer loopback clients such as this browser.
    # A small upload limit, so a too-big file is cheap to make.
    return dataclasses.replace(module_settings, loopback_admin=True, max_upload_bytes=UPLOAD_LIMIT)


@pytest.fixture(scope="module")
def first_parts() -> dict[str, FirstParts]:
    """The stack's FirstParts (under "spy" once the stack runs): what each ?viewer= stream sent first."""
    return {}


@pytest.fixture(scope="module")
def stack(settings, serve, tmp_path_factory, first_parts):
    def serve_watched(app) -> str:
        app.wsgi_app = first_parts["spy"] = FirstParts(app.wsgi_app)
        return serve(app)

    jobs_db = str(tmp_path_factory.mktemp("jobs") / "jobs.sqlite3")
    with running_stack(settings, serve_watched, app_config={"JOBS_DB": jobs_db}) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Debian's Chromium driven by Playwright's bundled driver, on a fresh profile."""
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        yield context
        context.close()


class Problems:
    """Console errors and uncaught exceptions a page produced."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))

    def _console(self, message) -> None:
        if message.type != "error":
            return
        url = message.location.get("url", "")
        if message.text.startswith("Failed to load resource") and url.endswith(OPTIONAL_ROUTES):
            return
        self.errors.append(f"{message.text} ({url})")


@pytest.fixture
def page(browser) -> Iterator[Page]:
    page = browser.new_page()
    yield page
    page.close()


@pytest.fixture
def problems(page) -> Problems:
    return Problems(page)


def decode_png(png: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def wait_until_painted(page: Page, selector: str) -> None:
    page.wait_for_function(
        "(selector) => { const img = document.querySelector(selector); return img && img.naturalWidth > 0; }",
        arg=selector,
        timeout=WAIT_MS,
    )


def open_page(page: Page, url: str) -> None:
    page.goto(url)
    wait_until_painted(page, "#view-processed img")
    expect(page.locator("#stat-fps")).to_have_text(re.compile(r"fps$"), timeout=WAIT_MS)


def test_page_loads_live_without_console_errors(stack, page, problems, screenshots):
    # The page runs under its Content-Security-Policy: anything inline or foreign would be refused.
    page.add_init_script("window.cspViolations = []; document.addEventListener('securitypolicyviolation',"
                         " (e) => window.cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`));")
    open_page(page, stack)
    assert "script-src 'self'" in page.evaluate("fetch(location.href).then(r => r.headers.get('content-security-policy'))")
    expect(page.locator("#health")).to_have_text("broker connected", timeout=WAIT_MS)
    expect(page.locator("#stream-picker")).to_have_value("sample")
    expect(page.locator("#view-processed img")).to_have_attribute("src", "/stream/sample.mjpg")
    expect(page.locator("#stat-size")).to_have_text("640×360")
    expect(page.locator("#stat-seq")).to_have_text(re.compile(r"^#\d+$"))
    expect(page.locator("#processed-caption")).to_have_text("Processed · live")
    # The chart has drawn at least a segment of each series.
    # Predicates as functions, not expression strings: polling an expression needs eval, which
    # the page's Content-Security-Policy refuses.
    page.wait_for_function("() => document.querySelector('#chart-fps').points.numberOfItems >= 2", timeout=WAIT_MS)
    assert page.locator("#chart-delay").evaluate("el => el.points.numberOfItems") >= 2
    # The stack's one processor, from its heartbeats; its transform names the stream's.
    worker = page.locator("#workers-table tbody tr")
    expect(worker).to_have_count(1, timeout=WAIT_MS)
    expect(worker.locator("td").nth(4)).to_have_text(re.compile(r" ago$"))
    expect(page.locator("#stat-transform")).to_have_text("grayscale")
    expect(page.locator("#banner")).to_be_hidden()
    page.screenshot(path=screenshots / "desktop.png", full_page=True)
    assert problems.errors == []
    assert page.evaluate("window.cspViolations") == []


def test_stream_image_updates(stack, page, screenshots):
    open_page(page, stack)
    img = page.locator("#view-processed img")
    first = img.screenshot(path=screenshots / "stream-first.png")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        page.wait_for_timeout(300)
        later = img.screenshot()
        if later != first:
            break
    (screenshots / "stream-later.png").write_bytes(later)
    assert later != first, "the stream <img> showed the same picture for 20 s"
    assert is_grayscale(decode_png(later)), "the processed stream should be the grayscale transform"


def choose_view(page: Page, name: str) -> None:
    """Click the view button as a person does (the radio inside is visually hidden)."""
    page.locator(".view-modes label", has_text=name).click()


def test_raw_processed_toggle_switches_source(stack, page, problems, screenshots):
    open_page(page, stack)
    processed, raw = page.locator("#view-processed img"), page.locator("#view-raw img")

    choose_view(page, "Raw")
    expect(raw).to_have_attribute("src", "/stream/sample.mjpg?raw=1")
    expect(page.locator("#view-processed")).to_be_hidden()
    assert processed.get_attribute("src") is None, "a hidden view must not hold a stream open"
    wait_until_painted(page, "#view-raw img")
    assert not is_grayscale(decode_png(raw.screenshot(path=screenshots / "raw.png")))
    assert re.search(r"view=raw", page.url)

    choose_view(page, "Side by side")
    expect(page.locator("#view-processed")).to_be_visible()
    expect(page.locator("#view-raw")).to_be_visible()
    expect(processed).to_have_attribute("src", "/stream/sample.mjpg")
    wait_until_painted(page, "#view-processed img")
    processed_box, raw_box = processed.bounding_box(), raw.bounding_box()
    assert raw_box["x"] > processed_box["x"] + processed_box["width"] - 1, "wide screens put the views side by side"
    page.locator("#player").screenshot(path=screenshots / "side-by-side.png")

    choose_view(page, "Processed")
    expect(page.locator("#view-raw")).to_be_hidden()
    assert raw.get_attribute("src") is None
    assert problems.errors == []


def test_narrow_screen_is_one_column(stack, page, screenshots):
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{stack}/#view=both")
    wait_until_painted(page, "#view-raw img")
    wait_until_painted(page, "#view-processed img")
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px on a phone"
    processed_box = page.locator("#view-processed img").bounding_box()
    raw_box = page.locator("#view-raw img").bounding_box()
    assert raw_box["y"] >= processed_box["y"] + processed_box["height"] - 1, "phones stack the views"
    assert processed_box["width"] > 300, "the video uses the screen's width"
    chart_box = page.locator("#chart").bounding_box()
    assert chart_box["y"] > processed_box["y"], "side panels go below the player"
    page.screenshot(path=screenshots / "narrow.png", full_page=True)


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def dead_broker_viewer() -> Iterator[ServerThread]:
    """A viewer whose broker address answers nothing, on its own server."""
    with tempfile.TemporaryDirectory() as jobs:
        settings = Settings(bootstrap_servers=f"127.0.0.1:{dead_port()}")
        app = create_app({"SETTINGS": settings, "JOBS_DB": os.path.join(jobs, "jobs.sqlite3")})
        server = ServerThread(app)
        try:
            yield server
        finally:
            server.close()
            # Its readers are stuck connecting to the dead address (5 s join each): let them end
            # on their own in the background instead of waiting for each in turn.
            threading.Thread(target=viewer_of(app).shutdown, daemon=True).start()


def test_banner_says_broker_down_then_server_gone(page, screenshots):
    with dead_broker_viewer() as server:
        page.goto(server.url)
        banner = page.locator("#banner")
        expect(banner).to_be_visible(timeout=WAIT_MS)
        expect(banner).to_contain_text("Kafka broker cannot be reached")
        expect(page.locator("#health")).to_have_text("broker unreachable")
        expect(page.locator("#no-stream")).to_be_visible()
        page.screenshot(path=screenshots / "broker-down.png", full_page=True)
    expect(banner).to_contain_text("viewer server is not answering", timeout=WAIT_MS)


def test_processors_panel_renders_heartbeats(stack, page):
    """The panel draws what /workers answers (here a fixed answer in the viewer's shape:
    epoch-second heartbeats), marking silent processors and naming the chain each stream got
    (the default when a heartbeat names no streams)."""
    def answer(route) -> None:
        now = time.time()  # at answer time, so the shown age is ~1 s however slow the page is
        beat = {"transform": "grayscale"}
        workers = [
            {**beat, "id": "proc-a", "host": "host1", "partitions": [0, 2], "fps": 12.5, "last_heartbeat": now - 1,
             "chains": {"cam": "blur:ksize=5", "door": "grayscale"}},
            {**beat, "id": "proc-b", "host": "h2", "partitions": [], "fps": 0.0, "last_heartbeat": now - 30, "state": "stopping"},
        ]
        route.fulfill(json={"workers": workers, "error": None})

    page.route("**/workers", answer)
    open_page(page, stack)
    rows = page.locator("#workers-table tbody tr")
    expect(rows).to_have_count(2, timeout=WAIT_MS)
    expect(rows.nth(0).locator("td")).to_have_text(["proc-a", "host1", "0, 2", "12.5", re.compile(r"^(\d+ ms|[12]\.\d s) ago$"),
                                                    "cam: blur:ksize=5; door: grayscale"])
    expect(rows.nth(1).locator("td").nth(0)).to_have_text("proc-b (stopping)")
    expect(rows.nth(1).locator("td").nth(5)).to_have_text("grayscale (default)")
    expect(rows.nth(1).locator("td").nth(2)).to_have_text("none")
    expect(rows.nth(1)).to_have_class("stale")
    expect(page.locator("#stat-transform")).to_have_text("grayscale")

    page.unroute("**/workers")
    page.route("**/workers", lambda route: route.fulfill(json={"workers": [], "error": None}))
    expect(page.locator("#workers-note")).to_have_text(re.compile("No processor has reported"), timeout=WAIT_MS)
    expect(page.locator("#workers-table")).to_be_hidden()


def shown_seq(page: Page) -> int:
    return int(page.locator("#stat-seq").text_content().lstrip("#"))


def test_replay_from_start_moves_the_stream_back(stack, settings, page, screenshots):
    open_page(page, stack)
    page.wait_for_function("() => Number(document.querySelector('#stat-seq').textContent.slice(1)) >= 50",
                           timeout=WAIT_MS)
    live_seq = shown_seq(page)

    page.locator("#view-processed").get_by_role("button", name="Replay from start").click()
    status = page.locator("#view-processed .replay-status")
    expect(status).to_have_text(re.compile(r"→ \d+$"), timeout=WAIT_MS)
    reset_to = int(status.text_content().rsplit("→", 1)[1])
    img = page.locator("#view-processed img")
    expect(img).to_have_attribute("src", re.compile(r"^/stream/sample\.mjpg\?viewer=[A-Za-z0-9_.-]+$"))
    group = "viewer-" + img.get_attribute("src").rsplit("=", 1)[1]
    expect(page.locator("#processed-caption")).to_contain_text("replay")
    page.locator("#player").screenshot(path=screenshots / "replay-from-start.png")

    with OffsetTool(settings) as tool:
        tp = tool.stream_partition(settings.processed_topic, "sample")
    assert first_seq(settings, tp, offset=reset_to) == 0 < live_seq, "the replay starts at the stream's first frame"
    # The picture now comes from this tab's own group, which moves on from there as frames are shown.
    deadline = time.monotonic() + 20
    while first_seq(settings, tp, group=group) == 0 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert first_seq(settings, tp, group=group) > 0, f"{group} never moved past the replayed start"


def viewer_window(url: str, page: Page) -> dict:
    """The window API's answer for this page's viewer id on the sample stream."""
    viewer = page.evaluate("sessionStorage.getItem('viewer-id')")
    return requests.get(f"{url}/api/streams/sample/window?viewer={viewer}", timeout=10).json()


def next_seq(url: str, page: Page, settings: Settings) -> tuple[dict, int]:
    """This tab's position (the window API's viewer entry) and the seq of the frame it resumes
    with: the stream's next record there, not a frame some time on (the recording has gaps
    where the producer dropped frames it was late for, a second or more on a loaded machine)."""
    window = viewer_window(url, page)
    at = window["viewer"]
    tp = TopicPartition(at["topic"], window["partition"])
    return at, first_frame(settings, tp, offset=at["offset"], stream="sample").seq


def test_timeline_seeks_pauses_plays_and_changes_speed(stack, page, problems, screenshots):
    open_page(page, stack)
    page.wait_for_function("() => Number(document.querySelector('#stat-seq').textContent.slice(1)) >= 75",
                           timeout=WAIT_MS)
    timeline = page.locator("#view-processed .timeline")
    expect(timeline).not_to_have_class(re.compile("timeline-empty"), timeout=WAIT_MS)
    expect(timeline).to_have_attribute("aria-valuetext", "live")
    caption = page.locator("#processed-caption")

    # Click a quarter of the way along: this tab replays from that moment.
    box = page.locator("#view-processed .timeline-track").bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.25, box["y"] + box["height"] / 2)
    img = page.locator("#view-processed img")
    expect(img).to_have_attribute("src", re.compile(r"\?viewer="), timeout=WAIT_MS)
    expect(caption).to_have_text(re.compile(r"^Processed · replay \d\d:\d\d:\d\d\.\d · 1×$"), timeout=WAIT_MS)
    head = page.locator("#view-processed .timeline-head")
    left = float(head.evaluate("node => parseFloat(node.style.left)"))
    assert left < 80, f"the head should be well behind live, at {left}%"
    page.locator("#player").screenshot(path=screenshots / "timeline-replaying.png")

    # Pause keeps the position: it does not move while paused, and play goes on from it.
    page.locator("#view-processed .replay-play").click()
    expect(page.locator("#view-processed .replay-play")).to_have_text("Play")
    expect(caption).to_contain_text("paused at")
    expect(img).to_have_attribute("src", re.compile(r"^data:image/jpeg"))
    wait_for_resume_consumers_closed(stack)  # the stream closed server-side: its last commit is made
    paused = viewer_window(stack, page)
    time.sleep(1.5)
    still = viewer_window(stack, page)
    assert still["viewer"] == paused["viewer"], "the position moved while paused"
    page.locator("#player").screenshot(path=screenshots / "timeline-paused.png")
    page.locator("#view-processed .replay-play").click()
    expect(caption).to_contain_text("replay", timeout=WAIT_MS)
    deadline = time.monotonic() + 20
    while viewer_window(stack, page)["viewer"]["offset"] == paused["viewer"]["offset"] and time.monotonic() < deadline:
        time.sleep(0.2)
    resumed = viewer_window(stack, page)["viewer"]
    assert paused["viewer"]["offset"] < resumed["offset"] < paused["viewer"]["offset"] + 100, (paused, resumed)

    # The speed picker reopens the stream at the new pace; "Go live" brings the head to the end.
    page.locator("#view-processed .replay-speed select").select_option("4")
    expect(img).to_have_attribute("src", re.compile(r"speed=4"))
    expect(caption).to_contain_text("4×", timeout=WAIT_MS)
    page.locator("#view-processed").get_by_role("button", name="Go live").click()
    expect(page.locator("#view-processed .timeline-at")).to_have_text("at live", timeout=WAIT_MS)

    # Narrow screens: the timeline spans the picture and its controls wrap below it.
    page.set_viewport_size({"width": 390, "height": 844})
    narrow = page.locator("#view-processed .timeline-track").bounding_box()
    picture = page.locator("#view-processed img").bounding_box()
    assert narrow["width"] > 0.8 * picture["width"]
    page.locator("#player").screenshot(path=screenshots / "timeline-narrow.png")
    assert problems.errors == []


def test_pause_on_live_keeps_that_moment_and_play_goes_on_from_it(stack, page, problems):
    open_page(page, stack)
    expect(page.locator("#view-processed .timeline")).not_to_have_class(re.compile("timeline-empty"), timeout=WAIT_MS)
    page.locator("#view-processed .replay-play").click()
    expect(page.locator("#view-processed .replay-play")).to_have_text("Play", timeout=WAIT_MS)
    expect(page.locator("#view-processed img")).to_have_attribute("src", re.compile(r"^data:image/jpeg"))
    paused = viewer_window(stack, page)["viewer"]
    assert paused["offset"] is not None, "pausing live puts this tab's position at the newest frame"
    time.sleep(2.0)
    assert viewer_window(stack, page)["viewer"]["offset"] == paused["offset"], "the position moved while paused"
    page.locator("#view-processed .replay-play").click()
    expect(page.locator("#processed-caption")).to_contain_text("replay", timeout=WAIT_MS)
    # It plays on from the paused frame at the recorded pace: about 2 s behind live now.
    expect(page.locator("#view-processed .timeline-at")).to_have_text(re.compile(r"from live$"), timeout=WAIT_MS)
    assert problems.errors == []


def test_pause_before_the_reopened_stream_shows_a_frame_stops_on_its_first_one(stack, page, problems):
    """Pause clicked right after a seek, while the reopened stream has sent no frame yet (held
    back here; a loaded server can take seconds): the tab is paused at once, not sent live, and
    stops on the stream's first frame once it comes."""
    open_page(page, stack)
    expect(page.locator("#view-processed .timeline")).not_to_have_class(re.compile("timeline-empty"), timeout=WAIT_MS)
    held = []
    page.route(re.compile(r"/stream/sample\.mjpg\?viewer="), lambda route: held.append(route))
    box = page.locator("#view-processed .timeline-track").bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.25, box["y"] + box["height"] / 2)
    img = page.locator("#view-processed img")
    expect(img).to_have_attribute("src", re.compile(r"\?viewer="), timeout=WAIT_MS)
    deadline = time.monotonic() + WAIT_MS / 1000
    while not held:  # the route handler runs while Playwright is called
        assert time.monotonic() < deadline, "the replayed stream was never requested"
        page.wait_for_timeout(50)
    play = page.locator("#view-processed .replay-play")
    play.click()
    expect(play).to_have_text("Play")
    expect(page.locator("#processed-caption")).to_contain_text("paused at")
    assert img.get_attribute("src").startswith("/stream/sample.mjpg?viewer="), "the stream stays open for its first frame"
    held[0].continue_()
    expect(img).to_have_attribute("src", re.compile(r"^data:image/jpeg"), timeout=WAIT_MS)
    expect(play).to_have_text("Play")
    wait_for_resume_consumers_closed(stack)
    assert viewer_window(stack, page)["viewer"]["offset"] is not None, "the position of the frame shown"
    assert problems.errors == []


def replay_state(page: Page) -> tuple[str, dict]:
    """This tab's viewer id and what replay.js keeps for a reload."""
    viewer, state = page.evaluate("[sessionStorage.getItem('viewer-id'), JSON.parse(sessionStorage.getItem('replay-state'))]")
    return viewer, state


def test_a_reload_comes_back_where_the_tab_was(stack, settings, page, problems, first_parts):
    """Live stays live; a replaying tab resumes at its position (same id, same speed), not at the
    live end; a paused one comes back paused on the same frame; the reloaded page obeys its CSP."""
    spy = first_parts["spy"]
    page.add_init_script("window.cspViolations = []; document.addEventListener('securitypolicyviolation',"
                         " (e) => window.cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`));")
    open_page(page, stack)
    img = page.locator("#view-processed img")
    caption = page.locator("#processed-caption")
    page.reload()
    wait_until_painted(page, "#view-processed img")
    expect(img).to_have_attribute("src", "/stream/sample.mjpg")
    expect(caption).to_have_text("Processed · live")

    # Replay from the start at half speed, so the tab falls further behind live as it plays.
    page.locator("#view-processed .replay-speed select").select_option("0.5")
    page.locator("#view-processed").get_by_role("button", name="Replay from start").click()
    expect(img).to_have_attribute("src", re.compile(r"\?viewer=.*&speed=0\.5$"), timeout=WAIT_MS)
    viewer, _ = replay_state(page)
    deadline = time.monotonic() + 60
    while True:  # 6 s behind live, so that the live end is far from where the tab is
        before = viewer_window(stack, page)
        at = before["viewer"]["ts_ms"]
        if at is not None and before["newest"]["ts_ms"] - at > 6000:
            break
        assert time.monotonic() < deadline, before
        time.sleep(0.5)
    opened = len(spy.of(viewer))
    page.reload()
    wait_until_painted(page, "#view-processed img")
    expect(img).to_have_attribute("src", f"/stream/sample.mjpg?viewer={viewer}&speed=0.5")
    expect(page.locator("#view-processed .replay-speed select")).to_have_value("0.5")
    expect(caption).to_have_text(re.compile(r"^Processed · replay \d\d:\d\d:\d\d\.\d · 0\.5×$"), timeout=WAIT_MS)
    expect(page.locator("#view-processed .timeline-at")).to_have_text(re.compile(r"from live$"), timeout=WAIT_MS)
    wait_until(lambda: len(spy.of(viewer)) > opened, "the reloaded page's stream sent its first frame")
    first = spy.of(viewer)[opened]
    behind = before["newest"]["ts_ms"] - at
    assert at <= first.ts_ms < at + behind / 2, f"first frame after the reload at {first.ts_ms}, was at {at}, live {behind} ms on"
    assert replay_state(page) == (viewer, {"stream": "sample", "mode": "playing", "speed": "0.5"})

    # Paused: after a reload the same frame, paused, and the position does not move.
    page.locator("#view-processed .replay-play").click()
    expect(page.locator("#view-processed .replay-play")).to_have_text("Play")
    page.wait_for_function("() => sessionStorage.getItem('replay-still')", timeout=WAIT_MS)
    still = img.evaluate("node => { const c = document.createElement('canvas'); c.width = node.naturalWidth;"
                         " c.height = node.naturalHeight; c.getContext('2d').drawImage(node, 0, 0);"
                         " return c.toDataURL('image/png'); }")
    wait_for_resume_consumers_closed(stack)  # the stream closed server-side: its last commit is made
    paused, resumes_with = next_seq(stack, page, settings)
    opened = len(spy.of(viewer))
    page.reload()
    expect(page.locator("#view-processed .replay-play")).to_have_text("Play", timeout=WAIT_MS)
    expect(img).to_have_attribute("src", re.compile(r"^data:image/jpeg;base64,"))
    wait_until_painted(page, "#view-processed img")
    assert img.evaluate("node => { const c = document.createElement('canvas'); c.width = node.naturalWidth;"
                        " c.height = node.naturalHeight; c.getContext('2d').drawImage(node, 0, 0);"
                        " return c.toDataURL('image/png'); }") == still, "a different frame after the reload"
    expect(caption).to_have_text(re.compile(r"^Processed · paused at \d\d:\d\d:\d\d\.\d$"), timeout=WAIT_MS)
    time.sleep(1.5)
    assert viewer_window(stack, page)["viewer"] == paused, "the position moved while paused"
    assert len(spy.of(viewer)) == opened, "a paused page opened its stream"
    page.locator("#view-processed .replay-play").click()
    wait_until(lambda: len(spy.of(viewer)) > opened, "play sent a frame")
    assert spy.of(viewer)[opened].seq == resumes_with, "play went on from elsewhere"

    # Without the paused frame kept (too big for the tab's storage), a reload shows the frame at
    # the position and pauses again there.
    wait_until(lambda: viewer_window(stack, page)["viewer"]["offset"] > paused["offset"] + 2, "frames played")
    page.locator("#view-processed .replay-play").click()
    page.wait_for_function("() => sessionStorage.getItem('replay-still')", timeout=WAIT_MS)
    page.evaluate("sessionStorage.removeItem('replay-still')")
    wait_for_resume_consumers_closed(stack)
    paused, resumes_with = next_seq(stack, page, settings)
    opened = len(spy.of(viewer))
    page.reload()
    expect(img).to_have_attribute("src", re.compile(r"^data:image/jpeg"), timeout=WAIT_MS)
    expect(page.locator("#view-processed .replay-play")).to_have_text("Play")
    wait_until_painted(page, "#view-processed img")
    (shown,) = spy.of(viewer)[opened:]
    assert shown.seq == resumes_with, "the frame at the position"
    # It stops there: the position settles and stays. (It settles a few frames on: what reached
    # the tab's machine before the stream closed, more of them the more loaded the machine; a
    # second of them at most, counted in records since the recording itself has gaps.)
    deadline = time.monotonic() + 30
    while True:
        stopped = viewer_window(stack, page)["viewer"]
        time.sleep(1.0)
        if viewer_window(stack, page)["viewer"] == stopped:
            break
        assert time.monotonic() < deadline, "it did not stop at the first frame: the position kept moving"
    assert paused["offset"] < stopped["offset"] <= paused["offset"] + 25, (paused, shown, stopped)
    assert problems.errors == []
    assert page.evaluate("window.cspViolations") == []


def test_a_reloaded_replaying_tab_asks_for_its_replay_first(stack, page, problems):
    """The stream requests a reload makes: a replaying tab's first (and only) one is its replay,
    never the live stream first (whose newest frame flashed in before the replay); a paused tab
    shows its kept frame and opens no stream at all."""
    open_page(page, stack)
    img = page.locator("#view-processed img")
    page.locator("#view-processed").get_by_role("button", name="Replay from start").click()
    expect(img).to_have_attribute("src", re.compile(r"\?viewer="), timeout=WAIT_MS)
    wait_until_painted(page, "#view-processed img")
    viewer, _ = replay_state(page)
    replay = f"{stack}/stream/sample.mjpg?viewer={viewer}"
    requested = []
    page.on("request", lambda request: "/stream/" in request.url and requested.append(request.url))

    page.reload()
    expect(img).to_have_attribute("src", f"/stream/sample.mjpg?viewer={viewer}")
    wait_until_painted(page, "#view-processed img")
    assert requested[0] == replay and all("viewer=" in url for url in requested), requested

    page.locator("#view-processed .replay-play").click()
    page.wait_for_function("() => sessionStorage.getItem('replay-still')", timeout=WAIT_MS)
    requested.clear()
    page.reload()
    # The caption comes from the window API, asked after the page opened its images.
    expect(page.locator("#processed-caption")).to_have_text(re.compile(r"^Processed · paused at "), timeout=WAIT_MS)
    expect(img).to_have_attribute("src", re.compile(r"^data:image/jpeg"))
    assert requested == [], "a paused tab opened a stream on reload"
    assert problems.errors == []


def test_page_recovers_after_losing_the_network(stack, browser, page):
    open_page(page, stack)
    img = page.locator("#view-processed img")
    browser.set_offline(True)
    try:
        expect(page.locator("#banner")).to_contain_text("viewer server is not answering", timeout=WAIT_MS)
    finally:
        browser.set_offline(False)
    expect(page.locator("#banner")).to_be_hidden(timeout=WAIT_MS)
    # The stream was reopened, and it moves again.
    expect(img).to_have_attribute("src", re.compile(r"^/stream/sample\.mjpg\?retry=\d+$"))
    first = img.screenshot()
    deadline = time.monotonic() + 20
    while img.screenshot() == first and time.monotonic() < deadline:
        page.wait_for_timeout(300)
    assert img.screenshot() != first, "the stream stayed frozen after the network came back"


@pytest.fixture
def second_stream(stack, settings) -> Iterator[str]:
    """Another stream, `small`: the sample video at 5 fps and 320 px wide."""
    stop = threading.Event()
    options = {"fps": 5, "loop": True, "max_width": 320, "stop": stop}
    thread = threading.Thread(target=producer_run.run, args=(settings, SAMPLE_VIDEO, "small"), kwargs=options)
    thread.start()
    yield "small"
    stop.set()
    thread.join(15)


def test_stream_picker_switches_video_stats_and_replay_target(stack, second_stream, page):
    open_page(page, stack)
    picker = page.locator("#stream-picker")
    expect(picker.locator("option")).to_have_text(["sample", second_stream], timeout=WAIT_MS)
    picker.select_option(second_stream)
    expect(page.locator("#view-processed img")).to_have_attribute("src", f"/stream/{second_stream}.mjpg")
    wait_until_painted(page, "#view-processed img")
    expect(page.locator("#stat-size")).to_have_text("320×180", timeout=WAIT_MS)
    expect(page.locator("#view-processed .replay")).to_have_attribute("data-stream", second_stream)
    assert f"stream={second_stream}" in page.url

    page.reload()  # the choice survives a reload, through the URL
    expect(picker).to_have_value(second_stream)
    expect(page.locator("#view-processed img")).to_have_attribute("src", f"/stream/{second_stream}.mjpg")


def test_upload_shows_before_after_and_download(stack, page, screenshots):
    open_page(page, stack)
    page.locator("#upload-file").set_input_files(SAMPLE_PNG)
    page.locator("#upload-form").get_by_role("button", name="Upload").click()
    expect(page.locator("#upload-compare")).to_be_visible(timeout=60_000)
    wait_until_painted(page, "#upload-after")
    wait_until_painted(page, "#upload-before")
    expect(page.locator("#upload-status")).to_contain_text("done")
    expect(page.locator("#upload-progress")).to_have_attribute("value", re.compile(r"^[1-9]"))
    page.locator("#upload").screenshot(path=screenshots / "upload-done.png")
    assert is_grayscale(decode_png(page.locator("#upload-after").screenshot()))
    assert not is_grayscale(decode_png(page.locator("#upload-before").screenshot()))

    with page.expect_download() as download:
        page.locator("#upload-download").click()
    saved = screenshots.parent / "upload-download.png"
    download.value.save_as(saved)
    result = cv2.imread(str(saved), cv2.IMREAD_COLOR)
    assert result.shape == (1200, 1600, 3) and is_grayscale(result)


def test_upload_too_big_is_said_plainly(stack, page):
    open_page(page, stack)
    noise = np.random.default_rng(0).integers(0, 256, (1000, 1000, 3), np.uint8)
    ok, png = cv2.imencode(".png", noise)
    assert ok and len(png) > UPLOAD_LIMIT
    page.locator("#upload-file").set_input_files({"name": "noise.png", "mimeType": "image/png", "buffer": png.tobytes()})
    page.locator("#upload-form").get_by_role("button", name="Upload").click()
    expect(page.locator("#upload-status")).to_contain_text("larger than", timeout=WAIT_MS)
    expect(page.locator("#upload-status")).to_have_class(re.compile("error"))
    expect(page.locator("#upload-compare")).to_be_hidden()


def test_download_last_30_s_saves_an_mp4_that_chromium_plays(stack, page, screenshots):
    open_page(page, stack)
    # Generous: the clip is encoded while the browser waits, on a machine shared with other tests.
    with page.expect_download(timeout=180_000) as download:
        page.get_by_role("link", name="Download last 30 s").click()
    assert download.value.suggested_filename.startswith("sample-") and download.value.suggested_filename.endswith(".mp4")
    saved = screenshots.parent / "last-30s.mp4"
    download.value.save_as(saved)
    expect(page.locator(".clip-status")).to_have_text(re.compile(r"^\d+ frames$"))
    capture = cv2.VideoCapture(str(saved))
    ok, first = capture.read()
    capture.release()
    assert ok and first.shape == (360, 640, 3) and is_grayscale(first)
    # The browser itself decodes the clip (H.264 in MP4), not just saves it.
    played = page.evaluate(
        """async () => {
            const video = document.createElement("video");
            video.muted = true;
            video.src = "/clip/sample.mp4?from=-PT3S";
            document.body.append(video);
            return await new Promise((done) => {
                video.onloadeddata = () => done({ width: video.videoWidth, duration: video.duration });
                video.onerror = () => done({ error: video.error && video.error.code });
            });
        }"""
    )
    assert played.get("width") == 640 and played["duration"] > 0, played


def press(page: Page, locator, key: str, times: int = 1) -> None:
    locator.focus()
    for _ in range(times):
        page.keyboard.press(key)


@pytest.fixture
def sample_chain_restored(stack) -> Iterator[None]:
    """Puts stream `sample` back on grayscale afterwards, as the other tests expect it."""
    yield
    answer = requests.put(f"{stack}/api/streams/sample/transform", json={"spec": "grayscale"}, timeout=30)
    assert answer.status_code == 200, answer.text
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        streams = requests.get(f"{stack}/streams", timeout=10).json()["streams"]
        if any(s["stream"] == "sample" and s["transform"] == "grayscale" for s in streams):
            return
        time.sleep(0.2)
    raise AssertionError("stream sample never went back to grayscale")


def open_chain_editor(page: Page, url: str) -> None:
    """open_page, then until the editor shows the stream's chain: the page loads it after the
    stream is picked, and that load redraws the editor (a step added before it would vanish)."""
    open_page(page, url)
    expect(page.locator("#chain-status")).to_have_text(re.compile(r"chain\.$"), timeout=WAIT_MS)


def test_the_editor_changes_the_live_picture_and_the_stats_show_the_applied_chain(
        stack, page, problems, screenshots, sample_chain_restored):
    open_chain_editor(page, stack)
    panel = page.locator("#chain")
    img = page.locator("#view-processed img")
    expect(page.locator("#stat-transform")).to_have_text("grayscale")
    expect(panel.get_by_label("Step 1 transform")).to_have_value("grayscale", timeout=WAIT_MS)
    assert is_grayscale(decode_png(img.screenshot()))

    # Everything by keyboard: choose blur, raise its kernel 9 -> 15 with the arrow keys, add a
    # sepia step and move it first.
    panel.get_by_label("Step 1 transform").select_option("blur")
    ksize = panel.locator(".chain-step").nth(0).get_by_label("ksize")
    press(page, ksize, "ArrowRight", 3)
    expect(panel.locator(".chain-step").nth(0).locator("output").first).to_have_text("15")
    press(page, panel.get_by_role("button", name="Add step"), "Enter")
    expect(panel.get_by_label("Step 2 transform")).to_be_focused()
    panel.get_by_label("Step 2 transform").select_option("sepia")
    press(page, panel.get_by_role("button", name="Move up step 2"), "Enter")
    expect(panel.get_by_label("Step 1 transform")).to_be_focused()
    expect(panel.locator(".chain-spec")).to_have_text("sepia,blur:ksize=15")
    press(page, panel.get_by_role("button", name="Apply"), "Enter")

    # The stats read the chain from the frames; the picture is in colour now.
    expect(page.locator("#stat-transform")).to_have_text("sepia,blur:ksize=15", timeout=WAIT_MS)
    expect(page.locator("#chain-status")).to_contain_text("Applied", timeout=WAIT_MS)
    page.wait_for_timeout(500)  # the <img> paints the frames the stats have already seen
    coloured = decode_png(img.screenshot())
    assert not is_grayscale(coloured), "the picture should be in sepia colours now"
    page.locator("#player").screenshot(path=screenshots / "chain-sepia-blur.png")
    page.locator("#chain").screenshot(path=screenshots / "chain-editor.png")

    # Remove both steps and choose edges: a mostly black edge map.
    press(page, panel.get_by_role("button", name="Remove step 2"), "Enter")
    panel.get_by_label("Step 1 transform").select_option("edges")
    panel.get_by_role("button", name="Apply").click()
    expect(page.locator("#stat-transform")).to_have_text("edges", timeout=WAIT_MS)
    page.wait_for_timeout(500)
    edges = decode_png(img.screenshot())
    assert (edges.max(axis=2) < 60).mean() > 0.8, "an edge map is mostly black"
    assert problems.errors == []


def test_the_editor_fits_a_phone(stack, page, screenshots):
    page.set_viewport_size({"width": 390, "height": 844})
    open_chain_editor(page, stack)
    panel = page.locator("#chain")
    panel.get_by_role("button", name="Add step").click()
    panel.get_by_label("Step 2 transform").select_option("faceblur")  # the most parameters
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px on a phone"
    assert panel.bounding_box()["y"] > page.locator("#view-processed img").bounding_box()["y"]
    panel.screenshot(path=screenshots / "chain-editor-narrow.png")


def test_an_upload_uses_the_editor_chain(stack, page):
    open_page(page, stack)
    form = page.locator("#upload-form")
    form.get_by_label("Step 1 transform").select_option("invert")
    form.get_by_role("button", name="Add step").click()
    form.get_by_label("Step 2 transform").select_option("flip")
    form.locator(".chain-step").nth(1).get_by_label("axis").select_option("v")
    expect(form.locator(".chain-spec")).to_have_text("invert,flip:axis=v")
    page.locator("#upload-file").set_input_files(SAMPLE_PNG)
    form.get_by_role("button", name="Upload").click()
    expect(page.locator("#upload-compare")).to_be_visible(timeout=60_000)
    expect(page.locator("#upload-status")).to_contain_text("invert,flip:axis=v")
    result_url = page.locator("#upload-after").get_attribute("src")
    result = cv2.imdecode(np.frombuffer(requests.get(f"{stack}{result_url}", timeout=30).content, np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(result, cv2.flip(cv2.bitwise_not(cv2.imread(SAMPLE_PNG)), 0)), "the result is not invert,flip:axis=v"
    assert re.search(r"done", page.locator("#upload-status").text_content())


def test_shift_drag_marks_a_range_and_download_selection_saves_it(stack, page, screenshots):
    open_page(page, stack)
    expect(page.locator(".timeline")).not_to_have_class(re.compile("timeline-empty"), timeout=WAIT_MS)
    page.wait_for_function(  # a few seconds kept, so the marked range is worth a clip
        "() => /kept/.test(document.querySelector('.timeline-newest').textContent)"
        " && !/ 0:0[0-3] kept/.test(document.querySelector('.timeline-newest').textContent)",
        timeout=60_000,
    )
    box = page.locator(".timeline-track").bounding_box()
    y = box["y"] + box["height"] / 2
    page.keyboard.down("Shift")
    page.mouse.move(box["x"] + box["width"] * 0.3, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.7, y, steps=5)
    page.mouse.up()
    page.keyboard.up("Shift")
    link = page.get_by_role("link", name=re.compile(r"^Download selection \(\d+ s\)$"))
    expect(link).to_be_visible()
    expect(page.locator(".timeline-mark")).to_be_visible()
    assert page.locator("#view-processed img").get_attribute("src").find("viewer=") == -1, "a mark must not seek"
    page.locator("#view-processed").screenshot(path=screenshots / "timeline-marked-range.png")
    from_ms, to_ms = (parse_iso(link.get_attribute(name)) * 1000 for name in ("data-from", "data-to"))
    with page.expect_download(timeout=180_000) as download:
        link.click()
    saved = screenshots.parent / "selection.mp4"
    download.value.save_as(saved)
    with av.open(str(saved)) as container:
        video = container.streams.video[0]
        duration_s, frames = float(video.duration * video.time_base), video.frames
    # The same range again, for the facts the server reports in its headers.
    facts = requests.get(f"{stack}/clip/sample.mp4", timeout=120,
                         params={"from": link.get_attribute("data-from"), "to": link.get_attribute("data-to")}).headers
    first_ms, last_ms = int(facts["X-Clip-First-Ts"]), int(facts["X-Clip-Last-Ts"])
    assert from_ms <= first_ms <= last_ms <= to_ms
    assert abs(frames - int(facts["X-Clip-Frames"])) <= 1
    # Frames keep their recorded times: the clip lasts from the first to the last, plus one frame.
    assert abs(duration_s - ((last_ms - first_ms) / 1000 + 1 / float(facts["X-Clip-Fps"]))) <= 0.1


def parse_iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
