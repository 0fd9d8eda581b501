// Replay controls and timeline (templates/_replay.html). This tab watches a stream through a
// consumer group of its own (?viewer=<id>, group viewer-<id>): POST /api/replay moves it,
// GET /api/streams/<s>/window says what the log retains and where the tab is. The first use
// switches the image from the live stream to ?viewer=; a reset reaches the open stream, which
// goes on from the new position without a reload. Pause closes the stream (the server keeps
// the position of the last frame the tab received) and shows the frame it stopped on; play
// opens it again from there. A reload keeps all this: the mode, the speed and the paused frame
// are kept per tab (sessionStorage, like the viewer id), so a replaying tab resumes from its
// group's committed offsets and a paused one shows the same frame, paused; a live tab stays live.
(() => {
  "use strict";

  const WINDOW_EVERY_MS = 1000;
  const STEP_MS = 10000;
  // A shift+drag shorter than this is a click: it clears the mark.
  const MIN_MARK_MS = 500;
  // What a reload restores: {stream, mode, speed}, and the paused frame (a data: URL).
  const STATE_KEY = "replay-state";
  const STILL_KEY = "replay-still";

  // Per tab (sessionStorage, which a reload keeps): each tab has a position of its own.
  function viewerId() {
    let id = sessionStorage.getItem("viewer-id");
    if (!id) {
      // The id is the only key to this tab's resume point: 192 random bits, base64url (32
      // characters). getRandomValues works on plain http too, where randomUUID does not.
      const bytes = crypto.getRandomValues(new Uint8Array(24));
      id = btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
      sessionStorage.setItem("viewer-id", id);
    }
    return id;
  }

  const postReplay = (body) => window.adminRequest("POST", "/api/replay", body);

  function describe(result) {
    const moved = result.partitions.filter((p) => p.new !== null);
    if (!moved.length) return "nothing to move yet";
    return moved.map((p) => `offset ${p.old ?? "-"} → ${p.new}`).join(", ");
  }

  function clock(ms) {
    const d = new Date(ms);
    const pad = (n) => String(n).padStart(2, "0");
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${Math.floor(d.getMilliseconds() / 100)}`;
  }

  function span(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    return s >= 3600
      ? `${Math.floor(s / 3600)}:${String(Math.floor(s / 60) % 60).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`
      : `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  }

  for (const box of document.querySelectorAll(".replay")) {
    const figure = box.closest("figure");
    const img = figure.querySelector("img");
    const caption = figure.querySelector("figcaption");
    const status = box.querySelector(".replay-status");
    const bar = box.querySelector(".timeline");
    const track = box.querySelector(".timeline-track");
    const played = box.querySelector(".timeline-played");
    const head = box.querySelector(".timeline-head");
    const hover = box.querySelector(".timeline-hover");
    const band = box.querySelector(".timeline-mark");
    const playButton = box.querySelector(".replay-play");
    const speedPicker = box.querySelector(".replay-speed select");
    // mode: "live" (the shared live stream), "playing" (this tab's group), "paused".
    // mark: a range marked with shift+drag ({from, to} ms; `marking` while the drag lasts).
    const view = { mode: "live", window: null, dragging: false, snapshot: null, mark: null, marking: null };

    const stream = () => box.dataset.stream;
    const speed = () => speedPicker.value;

    function streamUrl() {
      const params = new URLSearchParams({ viewer: viewerId() });
      if (speed() !== "1") params.set("speed", speed());
      return `/stream/${encodeURIComponent(stream())}.mjpg?${params}`;
    }

    function setMode(mode) {
      view.mode = mode;
      figure.dataset.replay = mode === "live" ? "" : mode;
      playButton.textContent = mode === "paused" ? "Play" : "Pause";
      playButton.dataset.action = mode === "paused" ? "play" : "pause";
      if (mode !== "paused") sessionStorage.removeItem(STILL_KEY);
      saveState();
      render();
    }

    function saveState() {
      sessionStorage.setItem(STATE_KEY, JSON.stringify({ stream: stream(), mode: view.mode, speed: speed() }));
    }

    // The paused frame, for a reload; a frame too big for the tab's storage is not kept (a
    // reload then shows the next frame instead).
    function keepStill(dataUrl) {
      try {
        sessionStorage.setItem(STILL_KEY, dataUrl);
      } catch (error) {
        sessionStorage.removeItem(STILL_KEY);
      }
    }

    function play() {
      releaseSnapshot();
      img.src = streamUrl();
      setMode("playing");
    }

    // Paused at once (the button reads Play the moment it is clicked), on the frame on screen.
    // A stream just opened (a seek, a play) may have shown none yet: it stays open until its
    // first frame and stops on that one. (Closing it without a frame took the picture away,
    // and the tab then counted as sent elsewhere and went live.)
    function pause() {
      if (img.naturalWidth === 0 && img.getAttribute("src")) {
        setMode("paused");
        img.addEventListener("load", () => view.mode === "paused" && view.snapshot === null && stopOnFrame(), { once: true });
        return;
      }
      stopOnFrame();
    }

    // The frame on screen, kept as a still: changing src closes the MJPEG request. Encoded at
    // once (toDataURL, not toBlob).
    function stopOnFrame() {
      let still = null;
      if (img.naturalWidth > 0) {
        const canvas = document.createElement("canvas");
        canvas.width = img.naturalWidth;
        canvas.height = img.naturalHeight;
        canvas.getContext("2d").drawImage(img, 0, 0);
        still = canvas.toDataURL("image/jpeg", 0.92);
      }
      releaseSnapshot();
      view.snapshot = still;
      if (still) img.src = still;
      else img.removeAttribute("src");
      sessionStorage.removeItem(STILL_KEY);
      setMode("paused");
      if (still) keepStill(still);
    }

    // After a reload: the tab's mode and speed as they were, if it still shows the same stream.
    function restore() {
      let saved = null;
      try {
        saved = JSON.parse(sessionStorage.getItem(STATE_KEY));
      } catch (error) {
        saved = null;
      }
      if (saved && [...speedPicker.options].some((option) => option.value === saved.speed)) {
        speedPicker.value = saved.speed;
      }
      if (!saved || !stream() || saved.stream !== stream() || figure.hidden) {
        setMode("live");
      } else if (saved.mode === "playing") {
        play();
      } else if (saved.mode === "paused") {
        const still = sessionStorage.getItem(STILL_KEY);
        if (still) {
          // The frame it was paused on; the position stays where the server committed it.
          view.snapshot = still;
          img.src = still;
          setMode("paused");
        } else {
          // No frame kept: show the one at the position, then pause there.
          play();
          img.addEventListener("load", () => view.mode === "playing" && pause(), { once: true });
        }
      } else {
        setMode("live");
      }
    }

    function releaseSnapshot() {
      view.snapshot = null;
    }

    // Move this tab's position; `open`: then show the stream from there (an open stream
    // follows the reset by itself). Resolves true once moved.
    async function seek(to, label, open = true) {
      status.textContent = "…";
      try {
        const result = await postReplay({ group: `viewer-${viewerId()}`, stream: stream(), to });
        status.textContent = label || describe(result);
        if (open && view.mode !== "playing") play();
        refresh();
        return true;
      } catch (error) {
        status.textContent = error.message;
        return false;
      }
    }

    // ---- the timeline ----
    function position() {
      const w = view.window;
      if (!w) return null;
      if (view.mode === "live") return w.newest.ts_ms;
      return w.viewer && w.viewer.ts_ms !== null ? w.viewer.ts_ms : null;
    }

    function fraction(ms) {
      const w = view.window;
      const range = w.newest.ts_ms - w.oldest.ts_ms;
      return range > 0 ? Math.min(1, Math.max(0, (ms - w.oldest.ts_ms) / range)) : 1;
    }

    function render() {
      const w = view.window;
      const at = position();
      const ready = w && w.oldest.ts_ms !== null && w.newest.ts_ms !== null;
      bar.classList.toggle("timeline-empty", !ready);
      if (!ready) {
        captionText(view.mode === "live" ? "Processed · live" : "Processed · replay");
        return;
      }
      renderMark();
      box.querySelector(".timeline-oldest").textContent = clock(w.oldest.ts_ms);
      box.querySelector(".timeline-newest").textContent = `${clock(w.newest.ts_ms)} · ${span(w.newest.ts_ms - w.oldest.ts_ms)} kept`;
      const f = at === null ? 1 : fraction(at);
      played.style.width = `${(f * 100).toFixed(2)}%`;
      head.style.left = `${(f * 100).toFixed(2)}%`;
      bar.setAttribute("aria-valuenow", String(Math.round(f * 100)));
      const behind = at === null ? 0 : w.newest.ts_ms - at;
      const where = view.mode === "live" ? "live" : at === null ? "start of this tab's replay" : clock(at);
      bar.setAttribute("aria-valuetext", where);
      box.querySelector(".timeline-at").textContent = view.mode === "live" ? "live" : behind > 1500 ? `−${span(behind)} from live` : "at live";
      const rate = speed() === "max" ? "max speed" : `${speed()}×`;
      if (view.mode === "live") captionText("Processed · live");
      else captionText(`Processed · ${view.mode === "paused" ? "paused at" : "replay"} ${where}${view.mode === "playing" ? ` · ${rate}` : ""}`);
    }

    function renderMark() {
      const mark = view.marking || view.mark;
      band.hidden = !mark || !view.window;
      if (band.hidden) return;
      const from = fraction(Math.min(mark.from, mark.to));
      const to = fraction(Math.max(mark.from, mark.to));
      band.style.left = `${(from * 100).toFixed(2)}%`;
      band.style.width = `${((to - from) * 100).toFixed(2)}%`;
    }

    // The marked range, for panels that act on it (the clip export): a `pipeline:selection`
    // event on document with {stream, from, to} (ms; null: none).
    function setMark(mark) {
      view.mark = mark;
      renderMark();
      const detail = { stream: stream(), from: mark ? mark.from : null, to: mark ? mark.to : null };
      document.dispatchEvent(new CustomEvent("pipeline:selection", { detail }));
    }

    function captionText(text) {
      if (caption.textContent !== text) caption.textContent = text;
    }

    async function refresh() {
      if (!stream()) return;
      const params = view.mode === "live" ? "" : `?viewer=${encodeURIComponent(viewerId())}`;
      try {
        const response = await fetch(`/api/streams/${encodeURIComponent(stream())}/window${params}`, { cache: "no-store" });
        view.window = response.ok ? await response.json() : null;
      } catch (error) {
        view.window = null;
      }
      render();
    }

    function every(ms, task) {
      const tick = async () => {
        if (!document.hidden && !view.dragging) await task();
        setTimeout(tick, ms);
      };
      tick();
    }

    function timeAt(clientX) {
      const rect = track.getBoundingClientRect();
      const f = Math.min(1, Math.max(0, (clientX - rect.left) / rect.width));
      const w = view.window;
      return { f, ms: w.oldest.ts_ms + f * (w.newest.ts_ms - w.oldest.ts_ms) };
    }

    function showHover(clientX) {
      const { f, ms } = timeAt(clientX);
      hover.hidden = false;
      hover.style.left = `${(f * 100).toFixed(2)}%`;
      hover.textContent = clock(ms);
    }

    bar.addEventListener("pointerdown", (event) => {
      if (!view.window || event.button !== 0) return;
      if (event.shiftKey) {
        const { ms } = timeAt(event.clientX);
        view.marking = { from: ms, to: ms };
      }
      view.dragging = true;
      bar.setPointerCapture(event.pointerId);
      showHover(event.clientX);
    });
    bar.addEventListener("pointermove", (event) => {
      if (!view.window) return;
      showHover(event.clientX);
      if (view.marking) {
        view.marking.to = timeAt(event.clientX).ms;
        renderMark();
      }
    });
    bar.addEventListener("pointerleave", () => {
      if (!view.dragging) hover.hidden = true;
    });
    bar.addEventListener("pointerup", (event) => {
      if (!view.dragging) return;
      view.dragging = false;
      hover.hidden = true;
      const { f, ms } = timeAt(event.clientX);
      if (view.marking) {
        // Shift+drag marks a range instead of seeking; a shift+click clears the mark.
        const from = Math.min(view.marking.from, ms);
        const to = Math.max(view.marking.from, ms);
        view.marking = null;
        setMark(to - from >= MIN_MARK_MS ? { from, to } : null);
        return;
      }
      // The right end is "live"; anywhere else, the first frame at or after that moment.
      if (f >= 0.999) seek("latest", "live");
      else seek(new Date(ms).toISOString(), `from ${clock(ms)}`);
    });
    bar.addEventListener("keydown", (event) => {
      const at = position();
      if (!view.window || at === null || !["ArrowLeft", "ArrowRight"].includes(event.key)) return;
      event.preventDefault();
      const ms = at + (event.key === "ArrowLeft" ? -STEP_MS : STEP_MS);
      if (ms >= view.window.newest.ts_ms) seek("latest", "live");
      else seek(new Date(Math.max(ms, view.window.oldest.ts_ms)).toISOString(), `from ${clock(ms)}`);
    });

    // ---- buttons ----
    box.addEventListener("click", (event) => {
      const button = event.target.closest("button");
      if (!button) return;
      if (button === playButton) {
        if (button.dataset.action === "play") play();
        else if (view.mode === "playing") pause();
        // From live: keep this moment (the newest frame), without opening the stream first.
        else seek("latest", "paused at live", false).then((moved) => moved && pause());
        return;
      }
      let to = button.dataset.to;
      if (!to) return;
      if (to === "back") {
        // A resumed stream goes back from where it is; a live one from now.
        to = view.mode === "live" ? new Date(Date.now() - STEP_MS).toISOString() : "-PT10S";
      }
      seek(to);
    });
    speedPicker.addEventListener("change", () => {
      if (view.mode === "playing") play(); // reopen at the same frame, at the new pace
      else render();
      saveState();
    });

    // The page's stream picker (or hiding the view) points the image at a live view or at
    // nothing: this tab is live again.
    new MutationObserver(() => {
      const src = img.getAttribute("src") || "";
      if (view.mode !== "live" && !src.includes("viewer=") && src !== view.snapshot) {
        releaseSnapshot();
        setMode("live");
      }
    }).observe(img, { attributes: true, attributeFilter: ["src"] });
    window.pipelinePage.onStreamChange(() => {
      view.window = null;
      setMark(null);
      refresh();
    });

    restore();
    every(WINDOW_EVERY_MS, refresh);
  }
})();
