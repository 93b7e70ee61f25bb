"""End-to-end quality of the demo checkpoint (assets/demo) on the held-out bundled examples.

The demo model was trained by scripts/train_demo.py on procedural rooms whose seeds are
disjoint from the examples'; see assets/demo/README.md for the measured numbers. The
thresholds sit a little below those numbers so a regression anywhere in the pipeline
(loading, preprocessing, encoder, fusion, decoder, prompts, resizing) shows up here.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import panosamic
from devtools import scenes
from panosamic import io, metrics

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "assets" / "demo"
NUM_CLASSES = 13
FLOOR = 8

# measured (assets/demo/metrics.json, README): mIoU 0.679, pixel accuracy 0.916 (per example
# 0.873..0.946), floor-click best-of-3 IoU 0.917 (office) and 0.955 (lounge); asserted with slack
MIN_MIOU = 0.60
MIN_PIXEL_ACCURACY = 0.85
MIN_FLOOR_CLICK_IOU = 0.80


@pytest.fixture(scope="module")
def predictor():
    return panosamic.from_pretrained(str(DEMO), device="cpu")


@pytest.fixture(scope="module")
def segmented(predictor):
    """name -> (cached state, predicted labels, ground truth) for the six bundled examples."""
    out = {}
    for name in io.list_examples():
        paths = io.example_paths(name)
        predictor.set_panorama(io.load_image(paths["image"]), io.load_depth(paths["depth"]),
                               io.load_normals(paths["normals"]))
        out[name] = (predictor.state, predictor.labels.copy(), io.load_labels(paths["labels"]).astype(np.int64))
    return out


def test_demo_checkpoint_is_small_and_held_out():
    files = {p.name: p.stat().st_size for p in DEMO.iterdir()}
    for name in ("config.json", "model.safetensors", "sam.pth", "README.md"):
        assert name in files, f"assets/demo/{name} is missing"
    assert sum(files.values()) < 8_000_000
    report = json.loads((DEMO / "metrics.json").read_text())
    lo, hi = (int(s) for s in report["train_seeds"].split()[0].split(".."))
    assert not {seed for _, seed in scenes.EXAMPLES.values()} & set(range(lo, hi + 1))


def test_semantic_quality_on_held_out_examples(segmented):
    assert sorted(segmented) == sorted(scenes.EXAMPLES)
    cm = sum(metrics.confusion_matrix(pred, gt, NUM_CLASSES) for _, pred, gt in segmented.values())
    miou = float(np.nanmean(metrics.iou_from_confusion(cm)))
    acc = float(np.trace(cm) / cm.sum())
    assert miou > MIN_MIOU, f"demo mIoU {miou:.3f} on the six examples"
    assert acc > MIN_PIXEL_ACCURACY, f"demo pixel accuracy {acc:.3f}"
    for name, (_, pred, gt) in segmented.items():
        assert metrics.pixel_accuracy(pred, gt, NUM_CLASSES) > MIN_PIXEL_ACCURACY - 0.1, name


def _deepest_pixel(mask: np.ndarray):
    dist = cv2.distanceTransform(np.pad(mask.astype(np.uint8), 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y)


@pytest.mark.parametrize("name", ["office", "lounge"])
def test_click_on_the_floor_gives_the_floor(predictor, segmented, name):
    state, _, gt = segmented[name]
    predictor.set_state(state)
    floor = gt == FLOOR  # one band around the nadir: a single component
    x, y = _deepest_pixel(floor)
    masks, scores, _ = predictor.predict(point_coords=[[x, y]], point_labels=[1])
    ious = [float((m & floor).sum() / max(1, (m | floor).sum())) for m in masks]
    assert max(ious) > MIN_FLOOR_CLICK_IOU, f"{name}: floor click IoUs {np.round(ious, 3)}"
    # the IoU head ranks that mask first (what the app shows for a single click)
    assert ious[int(np.argmax(scores))] > MIN_FLOOR_CLICK_IOU - 0.1, f"{name}: scores {np.round(scores, 2)}"


# The demos for fewer maps (scripts/train_demo.py --modalities ...; metrics.json beside them):
# measured mIoU 0.662 (RGB) and 0.686 (RGB-D), pixel accuracy 0.908 and 0.916.
@pytest.mark.parametrize("folder, mods", [("demo-rgb", ("image",)), ("demo-rgbd", ("image", "depth"))])
def test_the_rgb_and_rgbd_demos_segment_the_held_out_examples(folder, mods):
    path = ROOT / "assets" / folder
    files = {p.name: p.stat().st_size for p in path.iterdir()}
    assert {"config.json", "model.safetensors", "sam.pth", "metrics.json", "README.md"} <= set(files)
    assert sum(files.values()) < 8_000_000
    report = json.loads((path / "metrics.json").read_text())
    assert report["recipe"]["modalities"] == ",".join(mods)
    predictor = panosamic.from_pretrained(str(path), device="cpu")
    assert tuple(predictor.required_modalities) == mods
    cm = 0
    for name in io.list_examples():
        paths = io.example_paths(name)
        depth = io.load_depth(paths["depth"]) if "depth" in mods else None
        predictor.set_panorama(io.load_image(paths["image"]), depth)   # only the maps it reads
        cm = cm + metrics.confusion_matrix(predictor.labels, io.load_labels(paths["labels"]).astype(np.int64),
                                           NUM_CLASSES)
    miou = float(np.nanmean(metrics.iou_from_confusion(cm)))
    assert miou > MIN_MIOU, f"{folder} mIoU {miou:.3f} on the six examples"
    assert abs(miou - report["held_out"]["overall"]["miou"]) < 1e-3    # the shipped metrics are these files'
    assert float(np.trace(cm) / cm.sum()) > MIN_PIXEL_ACCURACY


def test_normals_derived_from_depth_segment_like_the_true_normals(predictor, segmented):
    """The RGB-D-N demo given depth alone (normals derived, panosamic.geometry.normals_for_model)
    labels the examples almost as with the renderer's true normals. Measured: 99.5-99.7 % of the
    pixels agree; mIoU 68.0 against 67.9 with the true normals."""
    cm_true = cm_derived = 0
    for name, (_, pred_true, gt) in segmented.items():
        paths = io.example_paths(name)
        predictor.set_panorama(io.load_image(paths["image"]), io.load_depth(paths["depth"]))
        derived = predictor.labels
        assert (derived == pred_true).mean() > 0.95, name
        cm_true = cm_true + metrics.confusion_matrix(pred_true, gt, NUM_CLASSES)
        cm_derived = cm_derived + metrics.confusion_matrix(derived, gt, NUM_CLASSES)
    miou = [float(np.nanmean(metrics.iou_from_confusion(cm))) for cm in (cm_true, cm_derived)]
    assert miou[1] > miou[0] - 0.03, miou


def test_a_panorama_alone_on_the_rgbdn_demo_estimates_depth_and_normals(monkeypatch):
    """Issue 18's check on the rendered rooms the demos have not seen: a panorama-only Run on the
    RGB-D-N demo estimates the maps (the offline demo estimator here, HF_HUB_OFFLINE), says so on
    the status, exports the estimated depth (16-bit PNG, mm) with median AbsRel <= 0.15, and keeps
    >= 0.9x the mIoU it gets from the true maps. Measured: AbsRel 0.03-0.06 per example, mIoU
    66.2 against 67.9 (0.97x)."""
    from panosamic.estimation import depth_errors
    from panosamic.geometry import resize_erp
    from panosamic.studio import StudioBackend, messages

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    backend = StudioBackend("dfki-av/PanoSAMic", None, None, device="cpu", cache_mb=256)
    cm_est = cm_true = 0
    absrel = []
    for name in io.list_examples():
        paths = io.example_paths(name)
        gt = io.load_labels(paths["labels"]).astype(np.int64)
        s, _ = backend.segment(str(paths["image"]), None, None, "demo", 0, 10)
        status = messages.run_message(s, 1.0)
        assert "estimated from the photo" in status and "demo-depth" in status, status
        assert s.estimated == ("depth", "normals") and s.depth is not None   # the 3D view has its depth
        files = backend.export(s)
        depth_png = next(f for f in files if "depth" in Path(f).name)
        estimated = io.load_depth(depth_png)
        assert estimated.shape == gt.shape
        absrel.append(depth_errors(estimated, io.load_depth(paths["depth"]))["absrel"])
        assert any("normals" in Path(f).name for f in files)
        with_truth, _ = backend.segment(str(paths["image"]), str(paths["depth"]), str(paths["normals"]), "demo", 0, 10)
        cm_est = cm_est + metrics.confusion_matrix(resize_erp(s.labels, *gt.shape, nearest=True), gt, NUM_CLASSES)
        cm_true = cm_true + metrics.confusion_matrix(resize_erp(with_truth.labels, *gt.shape, nearest=True), gt,
                                                     NUM_CLASSES)
    assert float(np.median(absrel)) <= 0.15, absrel
    miou_est, miou_true = (float(np.nanmean(metrics.iou_from_confusion(cm))) for cm in (cm_est, cm_true))
    assert miou_est >= 0.9 * miou_true, (miou_est, miou_true)
