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
