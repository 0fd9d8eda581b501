// Clip export (templates/_clip.html): each link with data-from (and optional data-to: an ISO time,
// -PT30S or now) asks GET /clip/<stream>.mp4 for that range of the stream shown now. The clip is built while the browser waits, so the status says so; an error
// answer (JSON) is shown in words instead of being saved as a file.
(() => {
  "use strict";

  function clipUrl(stream, from, to) {
    const params = new URLSearchParams({ from, to: to || "now", download: "1" });
    return `/clip/${encodeURIComponent(stream)}.mp4?${params}`;
  }

  async function download(url, status) {
    status.textContent = "building the clip…";
    const response = await fetch(url);
    if (!response.ok) {
      const answer = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
      throw new Error(answer.error || `HTTP ${response.status}`);
    }
    const name = /filename=([^;]+)/.exec(response.headers.get("Content-Disposition") || "");
    const link = document.createElement("a");
    link.href = URL.createObjectURL(await response.blob());
    link.download = name ? name[1] : "clip.mp4";
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 60000);
    status.textContent = `${response.headers.get("X-Clip-Frames")} frames`;
  }

  // The timeline's marked range (static/replay.js: shift+drag) becomes "Download selection".
  document.addEventListener("pipeline:selection", (event) => {
    const { stream, from, to } = event.detail;
    for (const box of document.querySelectorAll(".clip")) {
      const link = box.querySelector(".clip-selection");
      if (!link || box.dataset.stream !== stream) continue;
      link.hidden = from === null;
      if (from === null) continue;
      link.dataset.from = new Date(from).toISOString();
      link.dataset.to = new Date(to).toISOString();
      link.textContent = `Download selection (${Math.round((to - from) / 1000)} s)`;
    }
  });

  for (const box of document.querySelectorAll(".clip")) {
    const status = box.querySelector(".clip-status");
    box.addEventListener("click", async (event) => {
      const link = event.target.closest("a[data-from]");
      if (!link || !box.dataset.stream) return;
      event.preventDefault();
      // Read at click time: the page's stream picker keeps data-stream current.
      const url = clipUrl(box.dataset.stream, link.dataset.from, link.dataset.to);
      try {
        await download(url, status);
      } catch (error) {
        status.textContent = error.message;
      }
    });
  }
})();
