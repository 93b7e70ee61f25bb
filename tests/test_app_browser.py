"""The app in a real browser: Playwright drives Debian's Chromium (/usr/bin/chromium).

Open the page, click an example, press Run, click on the ERP view and see the mask preview.
A screenshot goes to tmp_path; with PANOSAMIC_UPDATE_SCREENSHOT=1 it is also copied to
assets/screenshot.png (the README's picture).

Without Chromium the test is skipped with the reason; under CI=true it fails instead.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import numpy as np
import pytest

from app_utils import ROOT, make_checkpoint_dir, make_examples, running_app

CHROMIUM = os.environ.get("PANOSAMIC_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
MASK_COLOR = np.array([30, 144, 255])


def _ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _need(condition: bool, reason: str) -> None:
    if not condition:
        if _ci():
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need(False, "the playwright Python package is not installed (pip install -r requirements-dev.txt)")
    _need(Path(CHROMIUM).is_file(), f"Chromium not found at {CHROMIUM}: apt-get install -y chromium "
                                    "(or set PANOSAMIC_CHROMIUM)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def _example_dir(tmp: Path) -> Path:
    """The bundled examples when present (what users see), else small procedural ones."""
    bundled = ROOT / "assets" / "examples"
    if any(bundled.glob("*_rgb.jpg")):
        return bundled
    make_examples(tmp, names=("office", "conference", "seam"), width=512)
    return tmp


def _blue_pixels(png: bytes) -> int:
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    # the tinted mask blends the photo with MASK_COLOR: strongly blue pixels
    return int(((img[..., 2] - img[..., 0] > 90) & (img[..., 2] > 150)).sum())


def _save_small_png(src: Path, dest: Path) -> None:
    """A 256-colour optimised copy (a third of the size) for the README."""
    from PIL import Image

    with Image.open(src) as im:
        im.convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(dest, optimize=True)


def test_click_example_run_and_refine_in_the_browser(browser, reference_dir, tmp_path):
    # PANOSAMIC_TEST_CHECKPOINT: another local checkpoint folder (e.g. released weights, for a
    # README screenshot with a meaningful map); default: the tiny reference model.
    custom = os.environ.get("PANOSAMIC_TEST_CHECKPOINT")
    ckpt = Path(custom) if custom else make_checkpoint_dir(reference_dir, tmp_path / "checkpoint")
    examples = _example_dir(tmp_path / "examples")
    with running_app(["--checkpoint", str(ckpt), "--examples", str(examples)], tmp_path / "app.log") as app:
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(app["url"])
        page.get_by_role("heading", name="PanoSAMic Studio").wait_for()
        run = page.locator("#run-button")
        assert run.is_disabled(), "Run must be disabled before a panorama is given"
        page.locator("#requirements").get_by_text("Upload a panorama").wait_for()

        # click the first example: panorama, depth and normals are filled in
        first = sorted(examples.glob("*_rgb.jpg"))[0].name[: -len("_rgb.jpg")]
        page.get_by_text(first, exact=True).first.click()
        page.wait_for_function("() => !document.querySelector('#run-button').disabled")
        assert "❌" not in page.locator("#requirements").inner_text()

        t0 = time.perf_counter()
        run.click()
        page.locator("#run-status").get_by_text("Segmented").wait_for(timeout=300_000)  # big models on CPU
        run_s = time.perf_counter() - t0
        page.locator("#legend .pano-legend-row").first.wait_for()
        page.locator("#pano-3d .js-plotly-plot").first.wait_for()

        view = page.locator("#pano-view img")
        view.wait_for()
        page.wait_for_timeout(500)
        before = _blue_pixels(view.screenshot())
        box = view.bounding_box()
        t0 = time.perf_counter()
        view.click(position={"x": box["width"] * 0.30, "y": box["height"] * 0.62})
        page.locator("#edit-status").get_by_text("mask #").wait_for()
        click_s = time.perf_counter() - t0
        page.wait_for_timeout(800)  # the new image is swapped in
        after = _blue_pixels(view.screenshot())
        assert after > before + 50, f"no mask preview on the ERP view ({before} -> {after} blue pixels)"
        assert "1 positive" in page.locator("#edit-status").inner_text()

        # a box drawn with two clicks, the second corner left of the first: wraps across the seam
        page.get_by_label("Box (2 clicks)").check()
        view.click(position={"x": box["width"] * 0.92, "y": box["height"] * 0.35})
        page.locator("#edit-status").get_by_text("first box corner").wait_for()
        view.click(position={"x": box["width"] * 0.06, "y": box["height"] * 0.7})
        page.locator("#edit-status").get_by_text("box across the seam").wait_for()
        # undo twice: back to the single positive point and its mask
        page.locator("#undo-button").click()
        page.locator("#edit-status").get_by_text("first box corner").wait_for()
        page.locator("#undo-button").click()
        page.locator("#edit-status").get_by_text("1 positive").wait_for()
        page.wait_for_timeout(800)

        shot = tmp_path / "screenshot.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        if os.environ.get("PANOSAMIC_UPDATE_SCREENSHOT") == "1":
            _save_small_png(shot, ROOT / "assets" / "screenshot.png")
        print(f"\nbrowser: startup {app['startup_s']:.2f} s, run {run_s:.2f} s, click->mask {click_s:.2f} s, "
              f"screenshot {shot}")
        page.close()
