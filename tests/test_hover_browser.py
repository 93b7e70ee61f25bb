"""The live mask preview under the cursor (panosamic.studio.hover, static/hover.js) in headless
Chromium: SAM's decoder exported to ONNX and run in the page by onnxruntime-web.

- In the app (the demo checkpoint, a bundled RGB-D-N example): moving the mouse over the ERP map
  and over the 360° viewer, without clicking, changes the preview each time; the page's masks
  equal the server's (`Predictor.predict` behind the fallback route) for hover positions in the
  middle and next to the seam.
- Parity on the numerical reference: the page decodes `shared/reference`'s three prompts (a
  point; points with a box, single mask; a point on view 1) to the masks `Predictor.predict`
  gives on the server (IoU >= 0.99).
- Offline, with no local onnxruntime-web and no CDN: the server decodes the hover position,
  and the page says so once.

Without Chromium or the npm install (node_modules/onnxruntime-web) these are skipped with the
reason; under CI=true they fail instead.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from app_utils import ROOT, running_app
from test_app_browser import CHROMIUM_ARGS, _need, browser  # noqa: F401  (the module's browser fixture)

ORT_DIR = ROOT / "node_modules" / "onnxruntime-web" / "dist"
HOVER_JS = ROOT / "panosamic" / "studio" / "static" / "hover.js"
DEMO = ROOT / "assets" / "demo"
EXAMPLES = ROOT / "assets" / "examples"


@pytest.fixture(scope="module")
def ort_dir() -> Path:
    _need((ORT_DIR / "ort.wasm.min.js").is_file(),
          f"onnxruntime-web is not installed at {ORT_DIR.relative_to(ROOT)}: run `npm ci`")
    return ORT_DIR


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def _page_mask(page, prompt: dict) -> np.ndarray:
    out = page.evaluate("""async (prompt) => {
        const r = await window.panosamicHover.decodePrompt(prompt);
        return {mask: Array.from(r.mask), w: r.w, h: r.h, view: r.view};
    }""", prompt)
    return np.array(out["mask"], bool).reshape(out["h"], out["w"])


def _run_example(page, url: str) -> None:
    page.goto(url)
    page.get_by_role("heading", name="PanoSAMic Studio").wait_for()
    page.locator("#examples .thumbnail-item").filter(has_text="RGB-D-N").first.click()
    page.wait_for_function("() => { const b = document.querySelector('#run-button'); return b && !b.disabled; }")
    page.locator("#run-button").click()
    page.locator("#run-status").get_by_text("Segmented").wait_for(timeout=300_000)


def _previews(page) -> dict:
    return page.evaluate("""() => {
        const c = document.querySelector('#pano-view canvas.hover-overlay');
        const v = document.querySelector('#pano-viewer .pv');
        return {map: c ? +c.dataset.previews : 0, sum: c ? +c.dataset.sum : -1,
                viewer: v ? +v.dataset.previews : 0, decodes: window.panosamicHover.stats.decodes};
    }""")


def _hover_changes_the_preview(page) -> None:
    """Moves the mouse to four places on the map and three in the viewer (no button pressed);
    each move must draw a new preview in both views, the map's mask differing between places."""
    img = page.locator("#pano-view img")
    img.scroll_into_view_if_needed()
    # the picture inside its <img> (object-fit: contain)
    box = img.evaluate("""i => { const r = i.getBoundingClientRect(), k = Math.min(r.width / i.naturalWidth,
        r.height / i.naturalHeight), w = i.naturalWidth * k, h = i.naturalHeight * k;
        return {x: r.left + (r.width - w) / 2, y: r.top + (r.height - h) / 2, width: w, height: h}; }""")
    sums = []
    for u, v in ((0.2, 0.7), (0.5, 0.85), (0.8, 0.3), (0.995, 0.6)):
        before = _previews(page)
        page.mouse.move(box["x"] + u * box["width"], box["y"] + v * box["height"])
        page.wait_for_function("(n) => { const c = document.querySelector('#pano-view canvas.hover-overlay');"
                               " return c && +c.dataset.previews > n; }", arg=before["map"])
        page.wait_for_function("(n) => +document.querySelector('#pano-viewer .pv').dataset.previews > n",
                               arg=before["viewer"])
        sums.append(_previews(page)["sum"])
    assert len(set(sums)) == len(sums), f"the preview did not change between places: pixel counts {sums}"
    canvas = page.locator("#pano-viewer canvas.pv-gl")
    canvas.scroll_into_view_if_needed()
    cbox = canvas.bounding_box()
    shots = []
    for u, v in ((0.3, 0.6), (0.5, 0.75), (0.7, 0.4)):
        before = _previews(page)
        page.mouse.move(cbox["x"] + u * cbox["width"], cbox["y"] + v * cbox["height"])
        page.wait_for_function("(n) => +document.querySelector('#pano-viewer .pv').dataset.previews > n",
                               arg=before["viewer"])
        page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        shots.append(_previews(page)["sum"])
    assert len(set(shots)) == len(shots), f"the viewer's preview did not change: pixel counts {shots}"
    # nothing was clicked: no prompt reached the session
    assert "positive" not in page.locator("#edit-status").inner_text()


def test_hover_preview_in_the_page_matches_the_server(browser, ort_dir, tmp_path):
    _need((DEMO / "model.safetensors").is_file(), "the demo checkpoint assets/demo is missing")
    with running_app(["--checkpoint", str(DEMO), "--examples", str(EXAMPLES)], tmp_path / "app.log",
                     env={"PANOSAMIC_DECODER_CACHE": str(tmp_path / "decoders")}) as app:
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.set_default_timeout(60_000)
        _run_example(page, app["url"])
        page.wait_for_function("() => window.panosamicHover.state === 'page'")
        assert page.locator("#hover-note").count() == 0
        assert list(tmp_path.joinpath("decoders").glob("*.onnx")), "the exported decoder is not in its cache"
        _hover_changes_the_preview(page)

        # parity with the server's Predictor.predict (the fallback route) on the demo
        payload = page.evaluate("() => window.panosamicHover.payload")
        H, W = payload["frame"]["input_size"]
        for x, y in ((0.5 * W, 0.6 * H), (0.3 * W, 0.8 * H), (2.0, 0.55 * H), (W - 3.0, 0.4 * H),
                     (0.25 * W, 0.5 * H)):
            mine = _page_mask(page, {"points": [[x, y]], "labels": [1]})
            r = page.request.post(f"{app['url']}{payload['decode'].lstrip('/')}?x={x}&y={y}&seq=0")
            assert r.status == 200, r.text()
            h, w = (int(v) for v in r.headers["x-mask-size"].split("x"))
            server = np.unpackbits(np.frombuffer(r.body(), np.uint8))[: h * w].reshape(h, w).astype(bool)
            assert mine.shape == server.shape
            assert mine.sum() > 0
            assert _iou(mine, server) >= 0.99, (x, y, _iou(mine, server))
        page.close()


class _Session:
    """What HoverService reads of a studio Session."""

    def __init__(self, state, input_size, model_key):
        self.state, self.input_size, self.shape, self.model_key = state, tuple(input_size), tuple(input_size), model_key
        self.closed = None


def _serve(service):
    """The hover routes and a page with hover.js on a local port; yields its URL."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    from devtools.app_process import free_port
    from panosamic.studio.hover import HoverRoutes

    html = f"<!doctype html><html><head><script>{HOVER_JS.read_text()}</script></head><body></body></html>"
    app = Starlette(routes=[Route("/", lambda request: HTMLResponse(html))])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(HoverRoutes(app, service), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    return server, thread, f"http://127.0.0.1:{port}/"


def test_parity_on_the_reference_prompts(browser, ort_dir, reference_predictor, tmp_path):
    from panosamic.studio.hover import HoverService

    predictor, inputs = reference_predictor
    service = HoverService(lambda key: predictor, cache_dir=str(tmp_path / "decoders"), ort_dir=ort_dir, cdn="")
    s = _Session(predictor.state, predictor.input_size, "reference")
    payload = service.payload(s)
    server, thread, url = _serve(service)
    try:
        page = browser.new_page()
        page.route("**/cdn.jsdelivr.net/**", lambda route: route.abort())
        page.goto(url)
        page.evaluate("(p) => window.panosamicHover.setPayload(p)", payload)
        assert page.evaluate("() => window.panosamicHover.state") == "page"
        size = tuple(predictor.model.erp_size)
        prompts = json.loads(str(inputs["prompts"]))
        assert len(prompts) == 3
        for p in prompts:
            kw = dict(point_coords=np.array(p["points"], np.float32), point_labels=np.array(p["labels"]),
                      box=np.array(p["box"], np.float32) if p.get("box") else None,
                      multimask_output=p["multimask"], view=p.get("view", "auto"), output_size=size,
                      state=predictor.state)
            masks, scores, _ = predictor.predict(**kw)
            best = masks[int(np.argmax(scores))] if p["multimask"] else masks[0]
            mine = _page_mask(page, {"points": p["points"], "labels": p["labels"], "box": p.get("box"),
                                     "multimask": p["multimask"], "view": p.get("view")})
            assert best.sum() > 0
            assert _iou(mine, best) >= 0.99, (p, _iou(mine, best))
        page.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_offline_fallback_decodes_on_the_server_and_says_so_once(browser, tmp_path):
    _need((DEMO / "model.safetensors").is_file(), "the demo checkpoint assets/demo is missing")
    env = {"PANOSAMIC_ORT_DIR": str(tmp_path / "no-ort"), "PANOSAMIC_ORT_CDN": "https://cdn.jsdelivr.net/npm/x/",
           "PANOSAMIC_DECODER_CACHE": str(tmp_path / "decoders")}
    with running_app(["--checkpoint", str(DEMO), "--examples", str(EXAMPLES)], tmp_path / "app.log", env=env) as app:
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.set_default_timeout(60_000)
        blocked = []
        page.route("**/cdn.jsdelivr.net/**", lambda route: (blocked.append(route.request.url), route.abort()))
        _run_example(page, app["url"])
        page.wait_for_function("() => window.panosamicHover.state === 'server'")
        assert blocked, "the page did not try the CDN"
        note = page.locator("#hover-note")
        assert note.count() == 1 and "server decodes" in note.inner_text()
        _hover_changes_the_preview(page)
        assert page.evaluate("() => window.panosamicHover.stats.server") >= 7
        # a second Run: still one note
        page.locator("#run-button").click()
        page.wait_for_function("() => window.panosamicHover.state === 'loading' || window.panosamicHover.state === 'server'")
        page.locator("#run-status").get_by_text("Segmented").wait_for(timeout=300_000)
        page.wait_for_function("() => window.panosamicHover.state === 'server'")
        assert page.locator("#hover-note").count() == 1
        assert "Traceback" not in Path(app["log"]).read_text()
        page.close()
