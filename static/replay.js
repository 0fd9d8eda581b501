// Replay controls (templates/_replay.html): reset this tab's viewer group through POST /api/replay.
// The first use switches the stream to ?viewer=<id> (a consumer group of its own, viewer-<id>);
// after that a reset reaches the open stream, which goes on from the new position without a reload.
(() => {
  "use strict";

  function viewerId() {
    let id = localStorage.getItem("viewer-id");
    if (!id) {
      // The id is the only key to this tab's resume point: 192 random bits, base64url (32
      // characters). getRandomValues works on plain http too, where randomUUID does not.
      const bytes = crypto.getRandomValues(new Uint8Array(24));
      id = btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
      localStorage.setItem("viewer-id", id);
    }
    return id;
  }

  const postReplay = (body) => window.adminRequest("POST", "/api/replay", body);

  function describe(result) {
    const moved = result.partitions.filter((p) => p.new !== null);
    if (!moved.length) return "nothing to move yet";
    return moved.map((p) => `offset ${p.old ?? "-"} → ${p.new}`).join(", ");
  }

  for (const box of document.querySelectorAll(".replay")) {
    const img = box.closest("figure").querySelector("img");
    const status = box.querySelector(".replay-status");
    box.addEventListener("click", async (event) => {
      const button = event.target.closest("button[data-to]");
      if (!button) return;
      // Read at click time: the page's stream picker keeps data-stream current.
      const stream = box.dataset.stream;
      const resumed = new URL(img.src, location.href).searchParams.has("viewer");
      let to = button.dataset.to;
      if (to === "back") {
        // A resumed stream goes back from where it is; a live one from now.
        to = resumed ? "-PT10S" : new Date(Date.now() - 10000).toISOString();
      }
      status.textContent = "…";
      try {
        const result = await postReplay({ group: `viewer-${viewerId()}`, stream, to });
        if (!resumed) img.src = `/stream/${encodeURIComponent(stream)}.mjpg?viewer=${encodeURIComponent(viewerId())}`;
        status.textContent = describe(result);
      } catch (error) {
        status.textContent = error.message;
      }
    });
  }
})();
