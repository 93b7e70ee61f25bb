// PanoSAMic Studio: the page's answer to a server that went away in the middle of an event.
//
// A server killed outright (kill -9, a crash, the OOM killer) cannot answer its running jobs:
// Gradio's page then drops the Run's progress, leaves the run status as it was before the Run
// ("Press Run to segment the panorama.") and says only "Connection errored out" in its console.
// This script watches the page's own requests to the server: when the event stream breaks off
// (its body fails mid-read) or a request cannot reach the server at all, the run status says
// window.panosamicServerStopped (messages.SERVER_STOPPED, set by app.py: "The server stopped;
// press Run again."). A later answer from the server (it is back) ends that state, and the
// next event's own status replaces the line as usual.
//
// It wraps window.fetch, which Gradio's JavaScript client calls for every request it makes
// (uploads, events and their stream); the responses pass through unchanged.
(() => {
  if (window.panosamicConnectionWatch) return;
  window.panosamicConnectionWatch = true;
  const message = window.panosamicServerStopped || "The server stopped; press Run again.";
  const plainFetch = window.fetch.bind(window);
  let stopped = false;

  const ours = (input) => {
    const url = new URL(typeof input === "string" ? input : input.url || String(input), location.href);
    return url.origin === location.origin && url.pathname.includes("/gradio_api/");
  };

  const show = () => {
    // the run status is a gr.Markdown: its rendered text lives in .md (Gradio 6); the page's
    // own errors are written there the same way ("⚠ " + the message, messages.status_error)
    const box = document.querySelector("#run-status [data-testid='markdown'] .md")
      || document.querySelector("#run-status [data-testid='markdown']");
    if (!box) return;
    const line = document.createElement("p");
    line.textContent = "⚠ " + message;
    line.dataset.panosamic = "server-stopped";
    box.replaceChildren(line);
  };

  const lost = () => {
    stopped = true;
    show();
    // Gradio hides the Run's progress right after the stream fails, which may render the
    // status again: write the line once more after that frame
    requestAnimationFrame(() => requestAnimationFrame(() => { if (stopped) show(); }));
  };

  // a request the page itself aborted (Gradio closes a stream it no longer needs) is no loss
  const aborted = (init, err) => (init && init.signal && init.signal.aborted) || (err && err.name === "AbortError");

  const watched = (response, init) => {
    if (!response.body) return response;
    const reader = response.body.getReader();
    const body = new ReadableStream({
      async pull(controller) {
        try {
          const { done, value } = await reader.read();
          if (done) controller.close();
          else controller.enqueue(value);
        } catch (err) {
          if (!aborted(init, err)) lost();  // the stream broke off: the server went away mid-event
          controller.error(err);
        }
      },
      cancel(reason) { return reader.cancel(reason); },
    });
    return new Response(body, { status: response.status, statusText: response.statusText,
                                headers: response.headers });
  };

  window.fetch = async (input, init) => {
    if (!ours(input)) return plainFetch(input, init);
    let response;
    try {
      response = await plainFetch(input, init);
    } catch (err) {
      if (!aborted(init, err)) lost();  // the server cannot be reached
      throw err;
    }
    stopped = false;  // the server answered: it is there
    const url = new URL(typeof input === "string" ? input : input.url || String(input), location.href);
    return url.pathname.includes("/queue/data") ? watched(response, init) : response;
  };
})();
