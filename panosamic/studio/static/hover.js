// PanoSAMic Studio's live mask preview: the mask a click would select follows the cursor,
// over the ERP map (#pano-view) and in the 360° viewer, before any click.
//
// app.py puts this file in the page's head. After a Run the viewer (viewer.js) re-sends the
// server's payload (panosamic.studio.hover.HoverService.payload) as the document event
// "panosamic-hover-payload". With it this script fetches the view embeddings (float16, once
// per Run) and SAM's prompt decoder as ONNX (once per checkpoint), and decodes each hover
// position in the page with onnxruntime-web (the wasm build: the local copy the install put
// in node_modules, else the pinned CDN file with its integrity hash). When neither loads, the
// server decodes the latest position instead (one request in flight, newer positions replace
// the waiting one), and the page says so once.
//
// The frame is Predictor.predict's (panosamic/predictor.py): input pixels scale by erp/input
// size; on a dual-view checkpoint the view whose seam is further from the prompts decodes
// (view 1: x' = (x + floor(w / 2)) mod w, its mask rolled back by floor(w / 2)). The graph
// chooses the candidate as the studio does (the best of SAM's three by predicted IoU).
// A hover position is the input pixel a click there would prompt (StudioBackend.click and
// click_lonlat: the map's working pixel (i + 0.5) / scale; the viewer's direction).
//
// The mask goes to the map's overlay canvas and, as the document event
// "panosamic-hover-mask" ({mask: Uint8Array h*w of 0/1, w, h} or null), to the viewer.
// State for tests: window.panosamicHover (decodePrompt, state, stats); the overlay canvas'
// data-previews counts drawn previews and data-sum is the mask's pixel count.
(() => {
  if (window.panosamicHover) return;
  const DEG = Math.PI / 180;
  const NOTE_SERVER = "Live preview: the in-page decoder (onnxruntime-web) could not load here, so the " +
    "server decodes the position under the cursor instead; it may lag behind the mouse.";
  const hv = {
    state: "off",          // off | loading | page | server | failed
    payload: null, embeddings: null, session: null, ort: null, decoderUrl: null,
    stats: { decodes: 0, server: 0, lastMs: 0, previews: 0 }, noted: false, seq: 0,
  };
  window.panosamicHover = hv;
  const base = () => new URL(".", window.location.href);
  const url = (path) => new URL(path.replace(/^\//, ""), base()).href;

  // ------------------------------------------------------------------ loading
  function loadScript(src, integrity) {
    return new Promise((resolve, reject) => {
      const s = document.createElement("script");
      s.src = src;
      if (integrity) { s.integrity = integrity; s.crossOrigin = "anonymous"; }
      s.onload = () => resolve();
      s.onerror = () => { s.remove(); reject(new Error(`could not load ${src}`)); };
      document.head.appendChild(s);
    });
  }

  async function loadOrt(info) {
    if (window.ort && window.ort.InferenceSession) return window.ort;
    const sources = [];
    if (info.local) sources.push({ dir: url(info.local), integrity: null });
    if (info.cdn) sources.push({ dir: info.cdn, integrity: info.integrity });
    for (const src of sources) {
      try {
        await loadScript(src.dir + info.script, src.integrity);
        window.ort.env.wasm.wasmPaths = src.dir;
        window.ort.env.wasm.numThreads = 1;   // threads need a cross-origin isolated page
        return window.ort;
      } catch (e) { /* the next source */ }
    }
    return null;
  }

  function f16ToF32(bits) {
    const out = new Float32Array(bits.length);
    for (let i = 0; i < bits.length; i++) {
      const h = bits[i], s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, m = h & 0x3ff;
      out[i] = e === 0 ? s * m * 2 ** -24 : e === 31 ? (m ? NaN : s * Infinity) : s * (1 + m / 1024) * 2 ** (e - 15);
    }
    return out;
  }

  async function fetchOk(u, init) {
    const r = await fetch(u, init);
    if (!r.ok) {
      let text = `HTTP ${r.status}`;
      try { text = (await r.json()).error || text; } catch (e) { /* not JSON */ }
      throw new Error(text);
    }
    return r;
  }

  /** Takes a payload (or null): fetches what the new Run needs; resolves when ready. */
  async function setPayload(p) {
    if (!p) { hv.payload = null; hv.embeddings = null; clearPreview(); hv.state = "off"; return; }
    if (hv.payload && hv.payload.token === p.token) return hv.ready;
    hv.payload = p; hv.embeddings = null;
    hv.state = "loading";
    clearPreview();
    hv.ready = (async () => {
      const f = p.frame, [P, g] = f.embedding_shape, n = P * g * g;
      const raw = new Uint16Array(await (await fetchOk(url(p.embeddings))).arrayBuffer());
      if (hv.payload !== p) return;
      const views = [];
      for (let v = 0; v < f.num_views; v++) views.push(f16ToF32(raw.subarray(v * n, (v + 1) * n)));
      hv.embeddings = views;
      if (!hv.ort && hv.ort !== false) hv.ort = (await loadOrt(p.ort)) || false;
      if (hv.ort && hv.decoderUrl !== p.decoder) {
        try {
          const bytes = new Uint8Array(await (await fetchOk(url(p.decoder))).arrayBuffer());
          hv.session = await hv.ort.InferenceSession.create(bytes, { executionProviders: ["wasm"] });
          hv.decoderUrl = p.decoder;
        } catch (e) { hv.session = null; hv.ort = false; }
      }
      if (hv.payload !== p) return;
      hv.state = hv.ort && hv.session ? "page" : "server";
      if (hv.state === "server") note(NOTE_SERVER);
    })().catch((e) => { if (hv.payload === p) { hv.state = "failed"; note(`Live preview: ${e.message}`); } });
    return hv.ready;
  }
  hv.setPayload = setPayload;

  function note(text) {
    if (hv.noted) return;   // once a page
    hv.noted = true;
    const el = document.createElement("div");
    el.id = "hover-note";
    el.textContent = text;
    el.style.cssText = "font-size:0.85em;opacity:0.8;margin:4px 0";
    const anchor = document.querySelector("#pano-view");
    if (anchor && anchor.parentElement) anchor.parentElement.insertAdjacentElement("afterend", el);
    else document.body.appendChild(el);
  }

  // ------------------------------------------------------------------ the frame and decoding
  function xToView(x, w, v) { return v === 1 ? (x + Math.floor(w / 2)) % w : x; }

  /** Predictor._choose_view on model-ERP coordinates (xs of the points, box or null). */
  function chooseView(view, pts, box, w, views) {
    if (views !== 2) return 0;
    if (view === 0 || view === 1) return view;
    if (box && box[0] > box[2]) return 1;
    const xs = pts.map((p) => p[0]).concat(box ? [box[0], box[2]] : []);
    if (!xs.length) return 0;
    const margin = (arr) => Math.min(...arr.map((x) => Math.min(x, w - x)));
    const m0 = margin(xs), m1 = margin(xs.map((x) => xToView(x, w, 1)));
    if (box && xToView(box[0], w, 1) > xToView(box[2], w, 1)) return 0;
    return m1 > m0 ? 1 : 0;
  }

  /** A prompt in input pixels ({points: [[x, y]], labels, box, multimask, view}) -> the mask
   *  in the model's ERP frame {mask: Uint8Array h*w, w, h, view, index}, decoded in the page. */
  async function decodePrompt(prompt) {
    const p = hv.payload, f = p.frame, [H, W] = f.input_size, [h, w] = f.erp_size;
    const sx = w / W, sy = h / H;
    const pts = (prompt.points || []).map(([x, y]) => [x * sx, y * sy]);
    const labels = (prompt.labels || []).slice();
    let box = prompt.box ? [prompt.box[0] * sx, prompt.box[1] * sy, prompt.box[2] * sx, prompt.box[3] * sy] : null;
    const v = chooseView(prompt.view, pts, box, w, f.num_views);
    const coords = pts.map(([x, y]) => [xToView(x, w, v), y]);
    if (box) {
      if (v === 1) {
        let x2 = xToView(box[2], w, 1);
        if (x2 === 0 && box[2] > 0) x2 = w;
        box = [xToView(box[0], w, 1), box[1], x2, box[3]];
      }
      coords.push([box[0], box[1]], [box[2], box[3]]); labels.push(2, 3);
    } else {
      coords.push([0, 0]); labels.push(-1);   // SAM's padding point when there is no box
    }
    const [P, g] = f.embedding_shape, T = hv.ort.Tensor;
    const feeds = {
      image_embeddings: new T("float32", hv.embeddings[v], [1, P, g, g]),
      point_coords: new T("float32", Float32Array.from(coords.flat()), [1, coords.length, 2]),
      point_labels: new T("float32", Float32Array.from(labels), [1, labels.length]),
      multimask: new T("int64", BigInt64Array.from([prompt.multimask === false ? 0n : 1n]), [1]),
    };
    const out = await hv.session.run(feeds);
    const logits = out.mask.data, mask = new Uint8Array(h * w), shift = v === 1 ? Math.floor(w / 2) : 0;
    for (let y = 0; y < h; y++) {
      const row = y * w;
      for (let x = 0; x < w; x++) mask[row + x] = logits[row + (x + shift) % w] > 0 ? 1 : 0;
    }
    return { mask, w, h, view: v, index: Number(out.index.data[0]) };
  }
  hv.decodePrompt = decodePrompt;

  async function decodeOnServer(x, y) {
    const p = hv.payload, seq = ++hv.seq;
    const r = await fetchOk(url(`${p.decode}?x=${x}&y=${y}&seq=${seq}`), { method: "POST" });
    if (r.status === 204) return null;
    const [h, w] = r.headers.get("X-Mask-Size").split("x").map(Number);
    const bits = new Uint8Array(await r.arrayBuffer()), mask = new Uint8Array(h * w);
    for (let i = 0; i < mask.length; i++) mask[i] = (bits[i >> 3] >> (7 - (i & 7))) & 1;
    hv.stats.server += 1;
    hv.stats.serverCpuMs = Number(r.headers.get("X-Decode-Cpu-Ms"));
    return { mask, w, h };
  }

  // Coalescing: one decode at a time; a position that arrives meanwhile waits, replacing
  // any older waiting one.
  let busy = false, pending = null, shown = null;
  function hoverAt(x, y, t0) {
    if (!hv.payload || !hv.embeddings || (hv.state !== "page" && hv.state !== "server")) return;
    pending = { x, y, t0: t0 || performance.now() };
    if (!busy) pump();
  }
  hv.hoverAt = hoverAt;
  async function pump() {
    busy = true;
    while (pending) {
      const job = pending; pending = null;
      const token = hv.payload && hv.payload.token;
      try {
        const res = hv.state === "page"
          ? await decodePrompt({ points: [[job.x, job.y]], labels: [1] })
          : await decodeOnServer(job.x, job.y);
        if (res && hv.payload && hv.payload.token === token && !left) {
          hv.stats.decodes += 1;
          showPreview(res);
          hv.stats.lastMs = performance.now() - job.t0;
        }
      } catch (e) {
        if (hv.state === "page") { hv.state = "server"; note(NOTE_SERVER); pending = pending || job; }
      }
    }
    busy = false;
  }

  // ------------------------------------------------------------------ drawing
  let left = false;
  function overlayFor(img) {
    let c = img.parentElement.querySelector("canvas.hover-overlay");
    if (!c) {
      c = document.createElement("canvas");
      c.className = "hover-overlay";
      c.dataset.previews = "0";
      c.style.cssText = "position:absolute;pointer-events:none;z-index:5;image-rendering:auto";
      if (getComputedStyle(img.parentElement).position === "static") img.parentElement.style.position = "relative";
      img.parentElement.appendChild(c);
    }
    return c;
  }

  /** The rectangle the picture occupies inside its <img> (object-fit: contain), CSS pixels. */
  function content(img) {
    const r = img.getBoundingClientRect(), nw = img.naturalWidth || 2, nh = img.naturalHeight || 1;
    const k = Math.min(r.width / nw, r.height / nh), w = nw * k, h = nh * k;
    return { left: r.left + (r.width - w) / 2, top: r.top + (r.height - h) / 2, width: w, height: h };
  }

  function showPreview(res) {
    shown = res;
    const img = document.querySelector("#pano-view img");
    if (img) {
      const c = overlayFor(img), box = content(img), pr = img.parentElement.getBoundingClientRect();
      if (c.width !== res.w || c.height !== res.h) { c.width = res.w; c.height = res.h; }
      Object.assign(c.style, { left: `${box.left - pr.left}px`, top: `${box.top - pr.top}px`,
                               width: `${box.width}px`, height: `${box.height}px`, display: "block" });
      const ctx = c.getContext("2d"), im = ctx.createImageData(res.w, res.h);
      let sum = 0;
      for (let i = 0; i < res.mask.length; i++) {
        if (res.mask[i]) { sum++; im.data[4 * i] = 255; im.data[4 * i + 1] = 215; im.data[4 * i + 2] = 0; im.data[4 * i + 3] = 120; }
      }
      ctx.putImageData(im, 0, 0);
      hv.stats.previews += 1;
      c.dataset.previews = String(hv.stats.previews);
      c.dataset.sum = String(sum);
    }
    document.dispatchEvent(new CustomEvent("panosamic-hover-mask", { detail: res }));
  }

  function clearPreview() {
    shown = null;
    const c = document.querySelector("#pano-view canvas.hover-overlay");
    if (c) c.style.display = "none";
    document.dispatchEvent(new CustomEvent("panosamic-hover-mask", { detail: null }));
  }

  // ------------------------------------------------------------------ the cursor
  document.addEventListener("panosamic-hover-payload", (e) => { setPayload(e.detail); });

  document.addEventListener("pointermove", (e) => {
    const img = e.target && e.target.closest && e.target.closest("#pano-view img");
    if (!img || !hv.payload) return;
    const f = hv.payload.frame, [H, W] = f.input_size, [Hw, Ww] = f.working_size, scale = Ww / W;
    const b = content(img), u = (e.clientX - b.left) / b.width, v = (e.clientY - b.top) / b.height;
    if (u < 0 || u >= 1 || v < 0 || v >= 1) return;
    left = false;
    // the working pixel a click there reports, then StudioBackend.click's input pixel
    const i = Math.min(Ww - 1, Math.floor(u * Ww)), j = Math.min(Hw - 1, Math.floor(v * Hw));
    hoverAt(Math.min(Math.max((i + 0.5) / scale, 0), W - 1), Math.min(Math.max((j + 0.5) / scale, 0), H - 1));
  }, true);

  document.addEventListener("pointerout", (e) => {
    const img = e.target && e.target.closest && e.target.closest("#pano-view img");
    if (img && !img.contains(e.relatedTarget)) { left = true; pending = null; clearPreview(); }
  }, true);

  // a press commits through the server (or turns the viewer): the preview steps aside so the
  // committed mask shows unobstructed, until the pointer moves again
  document.addEventListener("pointerdown", () => { left = true; pending = null; clearPreview(); }, true);

  // the viewer's hover: a direction in degrees (viewer.js), null when the pointer left it
  document.addEventListener("panosamic-viewer-hover", (e) => {
    if (!hv.payload) return;
    if (!e.detail) { left = true; pending = null; clearPreview(); return; }
    left = false;
    const [H, W] = hv.payload.frame.input_size;
    // panosamic.geometry.degrees_to_pixels (StudioBackend.click_lonlat)
    hoverAt((e.detail.lon + 180) / 360 * W, (90 - e.detail.lat) / 180 * H);
  });
})();
