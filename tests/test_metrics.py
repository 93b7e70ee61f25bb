"""Evaluation metrics: known values, ignore handling, cos-latitude weighting, seam consistency."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from panosamic import geometry, io, metrics
from panosamic.errors import InputError

EXAMPLES = Path(__file__).resolve().parents[1] / "assets" / "examples"


def test_truth_against_itself_is_perfect():
    gt = io.load_labels(io.example_paths("office", EXAMPLES)["labels"])
    for weighted in (False, True):
        r = metrics.evaluate(gt, gt, 13, weighted=weighted)
        for key in ("miou", "pixel_accuracy", "mean_accuracy"):
            assert r[key] == pytest.approx(1.0, abs=1e-12)
        present = set(np.unique(gt).tolist())
        for k, v in enumerate(r["per_class_iou"]):
            assert (v == pytest.approx(1.0, abs=1e-12)) if k in present else math.isnan(v)
    assert metrics.mean_iou(gt, gt, 13) == 1.0


def test_hand_made_case():
    gt = np.array([[0, 0, 1, 1],
                   [2, 2, 2, -1],
                   [255, 1, 1, 1]])
    pred = np.array([[0, 1, 1, 1],
                     [2, 2, 0, 7],   # the 7 sits on an ignored pixel: fine
                     [3, 1, 1, 1]])
    cm = metrics.confusion_matrix(pred, gt, 4)
    expected = np.zeros((4, 4))
    expected[0, 0], expected[0, 1] = 1, 1
    expected[1, 1] = 5
    expected[2, 2], expected[2, 0] = 2, 1
    np.testing.assert_array_equal(cm, expected)
    iou = metrics.per_class_iou(pred, gt, 4)
    # class 0: tp 1, gt 2, pred 2 -> 1/3; class 1: tp 5, gt 5, pred 6 -> 5/6; class 2: 2/3; class 3 absent -> NaN
    np.testing.assert_allclose(iou[:3], [1 / 3, 5 / 6, 2 / 3])
    assert math.isnan(iou[3])
    assert metrics.mean_iou(pred, gt, 4) == pytest.approx((1 / 3 + 5 / 6 + 2 / 3) / 3)
    assert metrics.pixel_accuracy(pred, gt, 4) == pytest.approx(8 / 10)
    assert metrics.mean_accuracy(pred, gt, 4) == pytest.approx((1 / 2 + 1 + 2 / 3) / 3)
    # a class predicted but absent from the truth counts in mIoU (IoU 0)
    pred2 = pred.copy()
    pred2[0, 0] = 3
    assert metrics.per_class_iou(pred2, gt, 4)[3] == 0.0


def test_weighting_changes_pole_heavy_errors():
    h, w = 64, 128
    gt = np.zeros((h, w), np.int64)
    pred = gt.copy()
    pred[: h // 4] = 1  # wrong near the north pole only
    plain = metrics.pixel_accuracy(pred, gt, 2)
    sphere = metrics.pixel_accuracy(pred, gt, 2, weighted=True)
    assert plain == pytest.approx(0.75)
    areas = geometry.pixel_areas(h, w)
    assert sphere == pytest.approx(1 - areas[: h // 4].sum() / (4 * np.pi))
    assert sphere > 0.85  # the polar quarter of the image is only ~15 % of the sphere
    assert metrics.mean_iou(pred, gt, 2, weighted=True) > metrics.mean_iou(pred, gt, 2)
    # explicit weights give the same as weighted=True
    cm = metrics.confusion_matrix(pred, gt, 2, weights=areas)
    np.testing.assert_allclose(cm, metrics.confusion_matrix(pred, gt, 2, weighted=True))
    assert cm.sum() == pytest.approx(4 * np.pi)


def test_seam_consistency():
    rng = np.random.default_rng(0)
    h, w = 4000, 64
    phase = rng.integers(0, w, (h, 1))
    x = np.arange(w)[None, :]
    bands = ((x + phase) // 8) % 2  # stripes at a random offset per row: the seam is an ordinary column
    assert metrics.seam_consistency(bands) == pytest.approx(1.0, abs=0.15)
    broken = bands.copy()
    broken[:, -1] = 1 - broken[:, 0]  # always different across the seam
    assert metrics.seam_consistency(broken) > 5
    smooth = np.zeros((10, 20), int)
    smooth[:, 5:9] = 1
    assert metrics.seam_consistency(smooth) == 0.0
    assert metrics.seam_consistency(np.zeros((4, 8), int)) == 1.0
    seam_only = np.zeros((4, 8), int)
    seam_only[:, -1] = 1
    seam_only[:, :-1] = 0
    assert metrics.seam_consistency(seam_only) == pytest.approx((1.0) / (1 / 7))


def test_degraded_example_gives_a_real_number():
    gt = io.load_labels(io.example_paths("office", EXAMPLES)["labels"])
    h, w = gt.shape
    coarse = geometry.resize_erp(geometry.resize_erp(gt, h // 8, w // 8, nearest=True), h, w, nearest=True)
    r = metrics.evaluate(coarse, gt, 13)
    assert 0.75 < r["miou"] < 0.97
    assert 0.93 < r["pixel_accuracy"] < 0.995
    assert r["seam_consistency_gt"] < 1.0


def test_input_errors():
    with pytest.raises(InputError, match="shape"):
        metrics.confusion_matrix(np.zeros((2, 3)), np.zeros((3, 2)), 2)
    with pytest.raises(InputError, match="outside 0..1"):
        metrics.confusion_matrix(np.full((2, 2), 5), np.zeros((2, 2)), 2)


def test_majority_class_votes_only_valid_classes():
    labels = np.array([[0, 1, 1, -1], [2, 2, 2, 7]])
    assert metrics.majority_class(labels) == 2
    mask = np.array([[True, True, True, True], [False, False, False, True]])
    assert metrics.majority_class(labels, mask) == 1  # -1 does not vote
    assert metrics.majority_class(labels, mask, num_classes=3) == 1  # 7 is void for 3 classes
    assert metrics.majority_class(labels, labels == 7, num_classes=3) is None
    assert metrics.majority_class(labels, np.zeros_like(mask)) is None
    assert metrics.majority_class(np.array([3, 1, 1, 3])) == 1  # a tie goes to the smaller index

