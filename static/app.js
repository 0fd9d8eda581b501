// The page's behaviour: stream picker, raw/processed views, stats, fps/delay chart, processors
// panel and the plain-words error banner. Other panels (upload, replay) use window.pipelinePage.
"use strict";

(() => {
  const STREAMS_EVERY_MS = 1000;
  const WORKERS_EVERY_MS = 2000;
  const HEALTH_EVERY_MS = 4000;
  const RETRY_STREAM_MS = 2000;
  const CHART_POINTS = 60;
  const STALE_HEARTBEAT_S = 10;
  const FIRST_HEARTBEATS_MS = 8000;
  const pageOpened = Date.now();

  const $ = (selector) => document.querySelector(selector);
  const player = $("#player");
  const picker = $("#stream-picker");
  const views = $("#views");
  const figures = { processed: $("#view-processed"), raw: $("#view-raw") };

  // ---- error banner: one line per problem, keyed so each clears on its own ----
  const problems = new Map();

  function renderBanner() {
    const list = $("#banner-list");
    list.replaceChildren(...[...problems.values()].map((text) => {
      const item = document.createElement("li");
      item.textContent = text;
      return item;
    }));
    $("#banner").hidden = problems.size === 0;
  }

  function showError(key, text) {
    if (problems.get(key) === text) return;
    problems.set(key, text);
    renderBanner();
  }

  function clearError(key) {
    if (problems.delete(key)) renderBanner();
  }

  // fetch JSON; a network failure means the viewer itself is gone, which the banner says once.
  async function getJSON(url) {
    let response;
    try {
      response = await fetch(url, { cache: "no-store" });
    } catch (err) {
      showError("server", "The viewer server is not answering. The page keeps retrying by itself.");
      return { status: 0, body: null };
    }
    if (problems.has("server")) {
      clearError("server");
      reconnectAll();
    }
    let body = null;
    try {
      body = await response.json();
    } catch (err) {
      body = null;
    }
    return { status: response.status, body };
  }

  function every(ms, task) {
    // Chained timeouts, so a slow answer never piles up requests; paused while the tab is hidden.
    const tick = async () => {
      if (!document.hidden) {
        try {
          await task();
        } catch (err) {
          console.warn("poll failed", err);
        }
      }
      setTimeout(tick, ms);
    };
    tick();
  }

  // ---- which stream, which view: kept in the URL hash so a reload or a shared link keeps them ----
  const hash = new URLSearchParams(location.hash.slice(1));
  const selection = {
    stream: hash.get("stream") || player.dataset.stream || "",
    view: ["processed", "raw", "both"].includes(hash.get("view")) ? hash.get("view") : "processed",
  };
  let known = [...picker.options].map((o) => o.value);

  function saveSelection() {
    const params = new URLSearchParams({ stream: selection.stream, view: selection.view });
    history.replaceState(null, "", "#" + params.toString());
  }

  function streamUrl(stream, raw) {
    return `/stream/${encodeURIComponent(stream)}.mjpg` + (raw ? "?raw=1" : "");
  }

  // Point each <img> at its MJPEG URL, or at nothing when hidden: an idle MJPEG response still
  // holds one of the browser's few connections per host. Until every script of the page has run
  // (openViews) only data-want says which: a reloaded replay panel points the processed image at
  // this tab's replay first, so the tab never asks for the live stream before it.
  let opened = false;

  function applyView() {
    const ready = selection.stream !== "" && known.includes(selection.stream);
    $("#no-stream").hidden = ready;
    picker.closest("label").hidden = known.length === 0;
    views.hidden = !ready;
    views.dataset.view = selection.view;
    for (const [name, figure] of Object.entries(figures)) {
      const shown = ready && (selection.view === name || selection.view === "both");
      figure.hidden = !shown;
      const img = figure.querySelector("img");
      const want = shown ? streamUrl(selection.stream, name === "raw") : "";
      if (img.dataset.want === want) continue;
      img.dataset.want = want;
      img.dataset.retries = "0";
      if (!opened) continue;
      if (want) img.src = want;
      else img.removeAttribute("src");
    }
    for (const input of document.querySelectorAll('input[name="view"]')) {
      input.checked = input.value === selection.view;
    }
    // Panels inside the player (replay) read the current stream from their data-stream.
    for (const node of [player, ...player.querySelectorAll("[data-stream]")]) {
      node.dataset.stream = selection.stream;
    }
  }

  // Open each shown image that no panel has pointed elsewhere.
  function openViews() {
    opened = true;
    for (const figure of Object.values(figures)) {
      const img = figure.querySelector("img");
      if (img.dataset.want && !img.hasAttribute("src")) img.src = img.dataset.want;
    }
  }

  // Same stream, same parameters (a replay panel may have added ?viewer=), but a new URL, so the
  // browser opens a new request; the server ignores the extra parameter.
  function reconnect(img) {
    const retries = Number(img.dataset.retries || 0) + 1;
    img.dataset.retries = String(retries);
    const url = new URL(img.getAttribute("src") || img.dataset.want, location.href);
    url.searchParams.set("retry", String(retries));
    img.src = url.pathname + url.search;
  }

  // A viewer that went away and came back leaves a frozen picture (a cut multipart response
  // fires no error): reopen the visible streams once it answers again.
  function reconnectAll() {
    for (const figure of Object.values(figures)) {
      const img = figure.querySelector("img");
      if (img.dataset.want) reconnect(img);
    }
  }

  for (const [name, figure] of Object.entries(figures)) {
    const img = figure.querySelector("img");
    img.addEventListener("error", () => {
      const want = img.dataset.want;
      if (!want) return;
      showError(`stream-${name}`, `The ${name} video of "${selection.stream}" stopped. Reconnecting…`);
      setTimeout(() => {
        if (img.dataset.want === want) reconnect(img);
      }, RETRY_STREAM_MS);
    });
    img.addEventListener("load", () => clearError(`stream-${name}`));
  }

  // The replay panel switches the processed view to this tab's own consumer group (?viewer=):
  // say so under the picture, since the stats above describe the live end of the stream.
  // While it replays (data-replay set), the replay panel writes the caption: the time watched.
  const processedImg = figures.processed.querySelector("img");
  function captionProcessed() {
    if (figures.processed.dataset.replay) return;
    const replaying = new URL(processedImg.src || location.href, location.href).searchParams.has("viewer");
    setText("#processed-caption", replaying ? "Processed · replay, at this tab's own position" : "Processed · live");
  }
  new MutationObserver(captionProcessed).observe(processedImg, { attributes: true, attributeFilter: ["src"] });

  const streamListeners = [];

  function selectStream(stream) {
    if (stream === selection.stream) return;
    selection.stream = stream;
    samples.length = 0;
    saveSelection();
    applyView();
    for (const listener of streamListeners) listener(stream);
    document.dispatchEvent(new CustomEvent("pipeline:stream", { detail: { stream } }));
  }

  picker.addEventListener("change", () => selectStream(picker.value));
  for (const input of document.querySelectorAll('input[name="view"]')) {
    input.addEventListener("change", () => {
      if (!input.checked) return;
      selection.view = input.value;
      saveSelection();
      applyView();
    });
  }

  // ---- stats and chart from /streams ----
  const samples = [];

  function formatMs(ms) {
    if (ms === null || ms === undefined || Number.isNaN(ms)) return "–";
    if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
    if (ms < 120000) return `${(ms / 1000).toFixed(1)} s`;
    return `${Math.round(ms / 60000)} min`;
  }

  function formatLag(lag) {
    if (lag === null || lag === undefined) return "–";
    if (typeof lag === "number") return `${lag} frames`;
    if (typeof lag === "object") {
      const parts = Object.entries(lag).map(([group, value]) => `${group}: ${value}`);
      return parts.length ? parts.join(", ") : "–";
    }
    return String(lag);
  }

  function setText(selector, text) {
    const node = $(selector);
    if (node.textContent !== text) node.textContent = text;
  }

  // The newest frame names its chain (/streams); until one comes, the processors' heartbeats
  // say which chain each stream they processed got, and failing that their default.
  let workerTransforms = [];
  let workerChains = {};

  function showStats(info) {
    const delay = info ? info.age_ms ?? info.lag_ms : null;
    const fallback = workerChains[selection.stream] || workerTransforms.join(" / ");
    setText("#stat-transform", (info && info.transform) || fallback || "–");
    setText("#stat-fps", info && typeof info.fps === "number" ? `${info.fps.toFixed(1)} fps` : "–");
    setText("#stat-delay", formatMs(delay));
    setText("#stat-lag", formatLag(info ? info.lag : null));
    setText("#stat-size", info && info.width ? `${info.width}×${info.height}` : "–");
    const seq = info ? info.last_seq ?? info.seq : null;
    setText("#stat-seq", seq === null || seq === undefined ? "–" : `#${seq}`);
  }

  function drawSeries(id, values, scaleId, unit) {
    const max = Math.max(1, ...values.filter((v) => typeof v === "number"));
    const step = 300 / (CHART_POINTS - 1);
    const offset = CHART_POINTS - values.length;
    const points = values
      .map((v, i) => (typeof v === "number" ? `${((offset + i) * step).toFixed(1)},${(116 - (Math.min(v, max) / max) * 110).toFixed(1)}` : null))
      .filter(Boolean);
    $(id).setAttribute("points", points.join(" "));
    setText(scaleId, values.length ? `(top ${unit(max)})` : "");
  }

  function drawChart() {
    drawSeries("#chart-fps", samples.map((h) => h.fps), "#chart-fps-max", (v) => v.toFixed(0));
    drawSeries("#chart-delay", samples.map((h) => h.delay), "#chart-delay-max", formatMs);
  }

  function updatePicker(names) {
    if (names.join("\n") === known.join("\n")) return;
    known = names;
    picker.replaceChildren(...names.map((name) => new Option(name, name)));
    if (!names.includes(selection.stream) && names.length) {
      selectStream(names[0]);
    }
    picker.value = selection.stream;
    applyView();
  }

  async function pollStreams() {
    const { status, body } = await getJSON("/streams");
    if (status === 0) return;
    if (status !== 200 || !body || !Array.isArray(body.streams)) {
      showError("streams", `The list of streams could not be read (HTTP ${status}).`);
      return;
    }
    clearError("streams");
    updatePicker(body.streams.map((s) => s.stream));
    const info = body.streams.find((s) => s.stream === selection.stream) || null;
    showStats(info);
    if (info) {
      samples.push({ fps: info.fps, delay: info.age_ms ?? info.lag_ms });
      if (samples.length > CHART_POINTS) samples.shift();
      drawChart();
    }
  }

  // ---- processors panel from /workers (absent on older viewers: say so, do not fail) ----
  function heartbeatAgeS(worker, nowMs) {
    if (typeof worker.age_s === "number") return worker.age_s;
    const beat = worker.last_heartbeat ?? worker.last_heartbeat_ms ?? worker.ts;
    if (typeof beat === "number") return (nowMs - (beat > 1e11 ? beat : beat * 1000)) / 1000;
    if (typeof beat === "string" && !Number.isNaN(Date.parse(beat))) return (nowMs - Date.parse(beat)) / 1000;
    return null;
  }

  // Per stream processed since the last heartbeat, the chain it got; an idle processor (or an
  // older one, whose heartbeats name no streams) shows its default chain.
  function workerChainsText(worker) {
    const chains = worker.chains && typeof worker.chains === "object" ? Object.entries(worker.chains) : [];
    if (chains.length) return chains.map(([stream, spec]) => `${stream}: ${spec}`).join("; ");
    return worker.transform ? `${worker.transform} (default)` : "–";
  }

  function workerRow(worker, nowMs) {
    const age = heartbeatAgeS(worker, nowMs);
    const partitions = Array.isArray(worker.partitions) ? worker.partitions.join(", ") : worker.partitions ?? "–";
    const fps = worker.fps ?? worker.frames_per_s ?? worker.frames_per_second;
    const cells = [
      (worker.id ?? "–") + (worker.state && worker.state !== "running" ? ` (${worker.state})` : ""),
      worker.host ?? "–",
      partitions === "" ? "none" : String(partitions),
      typeof fps === "number" ? fps.toFixed(1) : "–",
      age === null ? "–" : `${formatMs(age * 1000)} ago`,
      workerChainsText(worker),
    ];
    const row = document.createElement("tr");
    if (age !== null && age > STALE_HEARTBEAT_S) row.className = "stale";
    for (const text of cells) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.append(cell);
    }
    return row;
  }

  function showWorkersNote(text) {
    $("#workers-table").hidden = true;
    $("#workers-note").hidden = false;
    setText("#workers-note", text);
  }

  async function pollWorkers() {
    const { status, body } = await getJSON("/workers");
    if (status === 0) return;
    if (status === 404) {
      showWorkersNote("This viewer does not report processors.");
      return;
    }
    const workers = Array.isArray(body) ? body : body && (body.workers ?? body.processors);
    if (status !== 200 || !Array.isArray(workers)) {
      showWorkersNote(`Processor status could not be read (HTTP ${status}).`);
      return;
    }
    workerTransforms = [...new Set(workers.map((w) => w.transform).filter(Boolean))];
    workerChains = Object.assign({}, ...workers.map((w) => (w.chains && typeof w.chains === "object" ? w.chains : {})));
    if (workers.length === 0 && Date.now() - pageOpened < FIRST_HEARTBEATS_MS) {
      // The viewer starts its heartbeat reader on first use: its first answers are empty.
      showWorkersNote("Looking for processors…");
      return;
    }
    if (workers.length === 0) {
      showWorkersNote(body.error
        ? `Processor status is unavailable right now (${body.error}).`
        : "No processor has reported in recently: none may be running.");
      return;
    }
    const nowMs = Date.now();
    const table = $("#workers-table");
    table.querySelector("tbody").replaceChildren(...workers.map((w) => workerRow(w, nowMs)));
    table.hidden = false;
    $("#workers-note").hidden = true;
  }

  // ---- broker health ----
  async function pollHealth() {
    const { status, body } = await getJSON("/healthz");
    const badge = $("#health");
    if (status === 200) {
      badge.dataset.state = "ok";
      badge.textContent = "broker connected";
      clearError("broker");
      if (body && body.broker_restarted_at) {
        const at = new Date(body.broker_restarted_at).toLocaleTimeString();
        showError("history", `The broker restarted at ${at}: the frames from before then are gone (the embedded broker keeps them in memory only).`);
      }
    } else if (status === 503) {
      badge.dataset.state = "down";
      badge.textContent = "broker unreachable";
      showError("broker", "The Kafka broker cannot be reached, so no new frames arrive. The page keeps retrying by itself.");
    } else if (status !== 0) {
      badge.dataset.state = "unknown";
      badge.textContent = "broker status unknown";
    }
  }

  window.pipelinePage = {
    get stream() {
      return selection.stream;
    },
    onStreamChange(listener) {
      streamListeners.push(listener);
    },
    showError,
    clearError,
  };

  if (!known.includes(selection.stream)) selection.stream = known[0] || "";
  picker.value = selection.stream;
  applyView();
  // Fired once every deferred script (replay.js among them) has run.
  document.addEventListener("DOMContentLoaded", openViews);
  every(STREAMS_EVERY_MS, pollStreams);
  every(WORKERS_EVERY_MS, pollWorkers);
  every(HEALTH_EVERY_MS, pollHealth);
})();
