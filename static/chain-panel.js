// The live stream's chain (templates/_chain.html): loads the stream's chain into the editor,
// and Apply sends it with PUT /api/streams/<stream>/transform. Whether it took effect is read
// from the frames themselves (/streams names the chain the newest frame was made with).
"use strict";

(() => {
  const form = document.getElementById("chain-form");
  if (!form || !window.ChainEditor || !window.pipelinePage) return;
  const status = document.getElementById("chain-status");
  const STREAMS_EVERY_MS = 250;
  const GIVE_UP_MS = 10000;
  let editor = null;
  let waiting = null;  // {stream, spec, since}: applied, not yet seen in the frames

  const say = (text, isError = false) => {
    status.textContent = text;
    status.classList.toggle("error", isError);
  };

  async function load(stream) {
    document.getElementById("chain-stream").textContent = stream || "–";
    waiting = null;
    if (!stream) return;
    const response = await fetch(`/api/streams/${encodeURIComponent(stream)}/transform`, { cache: "no-store" });
    const body = await response.json().catch(() => ({}));
    if (stream !== window.pipelinePage.stream) return;  // the picker moved on meanwhile
    if (!response.ok) {
      say(body.error || `HTTP ${response.status}`, true);
      return;
    }
    editor.setSpec(body.spec ?? body.applied ?? "grayscale");
    say(body.spec ? `Version ${body.version} of this stream's chain.` : "This stream runs the processors' default chain.");
  }

  // After Apply: watch the frames until one was made with the new chain.
  async function watch() {
    if (!waiting) return;
    const response = await fetch("/streams", { cache: "no-store" }).catch(() => null);
    const body = response && response.ok ? await response.json() : null;
    const info = body && body.streams.find((s) => s.stream === waiting.stream);
    if (info && info.transform === waiting.spec) {
      say(`Applied: frames now come out as ${waiting.spec} (${Date.now() - waiting.since} ms).`);
      waiting = null;
      return;
    }
    if (Date.now() - waiting.since > GIVE_UP_MS) {
      say("Sent, but no frame made with it has arrived yet: are the processors running?", true);
      waiting = null;
      return;
    }
    setTimeout(watch, STREAMS_EVERY_MS);
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const stream = window.pipelinePage.stream;
    if (!editor || !stream) return;
    say("Applying…");
    try {
      const result = await window.adminRequest("PUT", `/api/streams/${encodeURIComponent(stream)}/transform`,
        { spec: editor.spec });
      say(`Version ${result.version} sent; waiting for the first frame made with it…`);
      waiting = { stream, spec: result.spec, since: Date.now() };
      watch();
    } catch (error) {
      say(error.message, true);
    }
  });

  window.ChainEditor.mount(document.getElementById("chain-live-editor"), { spec: "grayscale" })
    .then((mounted) => {
      editor = mounted;
      window.pipelinePage.onStreamChange(load);
      return load(window.pipelinePage.stream);
    })
    .catch((error) => say(`The transform list could not be read (${error.message}).`, true));
})();
