"""Benchmark of the live mask preview (panosamic.studio.hover, static/hover.js): prints JSON.

For each panorama size, the app (the RGB demo checkpoint by default) in headless Chromium with
software WebGL (SwiftShader) gets a real photo at that size and a Run; then the mouse moves
`--moves` times over the ERP map without clicking, and each move's hover-to-mask time is the
page's own (from the pointer event to the preview drawn on the map's overlay, the viewer's
texture updated in the same task): p50 and p95. Also the bytes each Run ships (the view
embeddings, float16) and once per checkpoint (the decoder's ONNX file), and the server's CPU
per hover on the fallback path (thread CPU of `HoverService.decode`, `--moves` requests).

    python -m devtools.bench_hover [--sizes 1024x512 8192x4096] [--moves 50] [--checkpoint assets/demo-rgb]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--use-gl=angle", "--use-angle=swiftshader",
                 "--enable-unsafe-swiftshader", "--disable-quic", "--no-first-run"]


def _photo(size, dest: Path) -> Path:
    from PIL import Image

    w, h = size
    Image.open(ROOT / "assets" / "examples" / "hotel_room_rgb.jpg").convert("RGB").resize((w, h)).save(dest, quality=90)
    return dest


def _pct(values, q) -> float:
    return round(float(np.percentile(np.asarray(values, float), q)), 2)


def bench_size(page, url: str, photo: Path, moves: int) -> dict:
    page.goto(url)
    page.get_by_role("heading", name="PanoSAMic Studio").wait_for()
    page.locator("#panorama-input input[type=file]").set_input_files(str(photo))
    page.wait_for_function("() => { const b = document.querySelector('#run-button'); return b && !b.disabled; }")
    page.locator("#run-button").click()
    page.locator("#run-status").get_by_text("Segmented").wait_for(timeout=600_000)
    page.wait_for_function("() => ['page', 'server'].includes(window.panosamicHover.state)", timeout=120_000)
    state = page.evaluate("() => window.panosamicHover.state")
    payload = page.evaluate("() => window.panosamicHover.payload")
    decoder_bytes = len(page.request.get(url + payload["decoder"].lstrip("/")).body())
    img = page.locator("#pano-view img")
    img.scroll_into_view_if_needed()
    box = img.evaluate("""i => { const r = i.getBoundingClientRect(), k = Math.min(r.width / i.naturalWidth,
        r.height / i.naturalHeight), w = i.naturalWidth * k, h = i.naturalHeight * k;
        return {x: r.left + (r.width - w) / 2, y: r.top + (r.height - h) / 2, width: w, height: h}; }""")
    rng = np.random.default_rng(0)
    times = []
    for _ in range(moves):
        n = page.evaluate("() => window.panosamicHover.stats.previews")
        u, v = rng.uniform(0.02, 0.98), rng.uniform(0.1, 0.9)
        page.mouse.move(box["x"] + u * box["width"], box["y"] + v * box["height"])
        page.wait_for_function("(n) => window.panosamicHover.stats.previews > n", arg=n)
        times.append(page.evaluate("() => window.panosamicHover.stats.lastMs"))
    H, W = payload["frame"]["input_size"]
    cpu = []
    for i in range(moves):
        r = page.request.post(f"{url}{payload['decode'].lstrip('/')}?x={rng.uniform(0, W)}&y={rng.uniform(0, H)}"
                              f"&seq={i}")
        cpu.append(float(r.headers["x-decode-cpu-ms"]))
    return {"size": f"{W}x{H}", "decoding": state, "moves": moves,
            "hover_to_mask_ms": {"p50": _pct(times, 50), "p95": _pct(times, 95)},
            "bytes_per_run": payload["embedding_bytes"], "decoder_bytes_once_per_checkpoint": decoder_bytes,
            "erp_size": payload["frame"]["erp_size"], "embedding_shape": payload["frame"]["embedding_shape"],
            "fallback_server_cpu_ms_per_hover": {"p50": _pct(cpu, 50), "p95": _pct(cpu, 95)}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs="+", default=["1024x512", "8192x4096"])
    p.add_argument("--moves", type=int, default=50)
    p.add_argument("--checkpoint", default=str(ROOT / "assets" / "demo-rgb"))
    p.add_argument("--chromium", default="/usr/bin/chromium")
    args = p.parse_args(argv)
    from playwright.sync_api import sync_playwright

    from devtools.app_process import running_app

    results = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        tmp = Path(tmp)
        browser = pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS, headless=True)
        env = {"PANOSAMIC_DECODER_CACHE": str(tmp / "decoders")}
        with running_app(["--checkpoint", args.checkpoint], tmp / "app.log", env=env) as app:
            for spec in args.sizes:
                w, h = (int(v) for v in spec.lower().split("x"))
                page = browser.new_page(viewport={"width": 1440, "height": 1000})
                page.set_default_timeout(120_000)
                results.append(bench_size(page, app["url"], _photo((w, h), tmp / f"photo_{w}.jpg"), args.moves))
                page.close()
        browser.close()
    print(json.dumps({"checkpoint": Path(args.checkpoint).name, "browser": "headless Chromium, SwiftShader WebGL, "
                      "onnxruntime-web wasm (1 thread)", "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
