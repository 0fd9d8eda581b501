// Still-image upload panel: drag-and-drop, POST /upload, live progress from /jobs/<id>/events
// (falling back to polling /jobs/<id>), then the before/after view and a download link.
(() => {
  const $ = (id) => document.getElementById(id);
  const form = $("upload-form"), drop = $("upload-drop"), input = $("upload-file");
  const bar = $("upload-progress"), status = $("upload-status");
  let beforeUrl = null;

  const say = (text, isError = false) => {
    status.textContent = text;
    status.classList.toggle("error", isError);
  };

  // The stream list reloads the page while it waits for a producer: not while we work here.
  const busy = () => { document.body.dataset.busy = "1"; };

  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); busy(); });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    if (e.dataTransfer.files.length) {
      input.files = e.dataTransfer.files;
      form.requestSubmit();
    }
  });
  input.addEventListener("change", busy);

  // The chain: the same editor as the live panel's, writing the form's `transform` field.
  const transform = $("upload-transform");
  if (window.ChainEditor) {
    window.ChainEditor.mount($("upload-chain-editor"), {
      spec: transform.value,
      onChange: (spec) => { transform.value = spec; },
    }).catch((error) => say(`The transform list could not be read (${error.message}).`, true));
  }

  const show = (job) => {
    bar.max = Math.max(job.tiles_total, 1);
    bar.value = job.tiles_done;
    const took = job.elapsed_s.toFixed(1);
    if (job.state === "failed") {
      say(`Failed: ${job.error}`, true);
    } else {
      say(`${job.state}: ${job.tiles_done}/${job.tiles_total} tiles, ${took} s (${job.transform})`);
    }
    if (job.state === "done") {
      $("upload-after").src = job.result_url;
      $("upload-download").href = `${job.result_url}?download=1`;
      $("upload-compare").hidden = false;
    }
    return job.state === "done" || job.state === "failed";
  };

  const poll = async (statusUrl) => {
    const job = await (await fetch(statusUrl)).json();
    if (!show(job)) setTimeout(() => poll(statusUrl), 500);
  };

  const follow = (accepted) => {
    if (!window.EventSource) return poll(accepted.status_url);
    const events = new EventSource(accepted.events_url);
    events.addEventListener("status", (e) => {
      if (show({ ...JSON.parse(e.data), result_url: accepted.result_url })) events.close();
    });
    events.onerror = () => { events.close(); poll(accepted.status_url); };
  };

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    busy();
    const file = input.files[0];
    if (!file) return say("Choose a PNG or JPEG first.", true);
    if (beforeUrl) URL.revokeObjectURL(beforeUrl);
    beforeUrl = URL.createObjectURL(file);
    $("upload-before").src = beforeUrl;
    $("upload-after").removeAttribute("src");
    $("upload-compare").hidden = true;
    bar.hidden = false;
    bar.removeAttribute("value");  // indeterminate while the file travels
    say(`Uploading ${file.name}…`);
    try {
      const response = await fetch(form.action, { method: "POST", body: new FormData(form) });
      const body = await response.json();
      if (response.status !== 202) {
        bar.hidden = true;
        return say(`${response.status}: ${body.error}`, true);
      }
      bar.value = 0;
      say(`queued: 0/${body.tiles_total} tiles`);
      follow(body);
    } catch (err) {
      bar.hidden = true;
      say(`Upload failed: ${err}`, true);
    }
  });
})();
