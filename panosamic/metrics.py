"""Evaluation of semantic panorama segmentation: confusion matrix, IoU, accuracy, seam consistency.

Definitions
    * Confusion matrix ``C`` (K x K, float64): ``C[g, p]`` is the number (or the
      total weight) of pixels whose ground truth is ``g`` and prediction ``p``.
      Ground-truth pixels equal to ``ignore_index`` (default -1), to 255 or
      outside ``0..K-1`` are left out (void). A prediction outside ``0..K-1``
      on a counted pixel is an error (:class:`~panosamic.errors.InputError`).
    * IoU of class k: ``C[k,k] / (sum_p C[k,p] + sum_g C[g,k] - C[k,k])``; NaN
      when the class appears neither in the ground truth nor in the prediction.
    * mIoU: mean of the IoUs over the classes present in the ground truth *or*
      the prediction (non-NaN IoUs). Over a data set, accumulate one confusion
      matrix over all images and call :func:`iou_from_confusion` once, which
      is how the papers report mIoU.
    * pixel accuracy: ``trace(C) / sum(C)``; mean (class) accuracy: mean over
      the classes present in the ground truth of ``C[k,k] / sum_p C[k,p]``.
    * Over a split (the papers' numbers): per class, intersection ``I = C[k,k]``,
      target ``T = sum_p C[k,p]`` and prediction ``P = sum_g C[g,k]`` are summed
      over all images (:func:`class_counts`), then :func:`scores_from_counts`:
      IoU ``I / (T + P - I)``, accuracy ``I / T`` (NaN where the denominator
      is 0), mIoU and mean accuracy as NaN-aware means, pixel accuracy
      ``sum(I) / sum(T)``. Seam consistency over a split sums the label
      changes of :func:`seam_counts` before dividing.
    * Weighting: with ``weighted=True`` each pixel counts with its solid angle
      (:func:`panosamic.geometry.pixel_areas`, proportional to cos(latitude)),
      so the numbers are shares of the *sphere*, not of the ERP image that
      over-represents the poles. Unweighted is what the PanoSAMic paper reports.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np

from . import geometry
from .errors import InputError

__all__ = [
    "confusion_matrix", "iou_from_confusion", "per_class_iou", "mean_iou", "pixel_accuracy",
    "mean_accuracy", "seam_consistency", "seam_counts", "seam_ratio", "class_counts", "scores_from_counts",
    "evaluate", "majority_class",
]


def _weights_for(shape, weighted: bool, weights: Optional[np.ndarray]) -> Optional[np.ndarray]:
    if weights is not None:
        return np.broadcast_to(np.asarray(weights, dtype=np.float64), shape)
    if weighted:
        if len(shape) != 2:
            raise InputError(f"weighted metrics need (H, W) ERP label maps, got shape {shape}")
        return geometry.pixel_areas(*shape)
    return None


def confusion_matrix(pred, gt, num_classes: int, ignore_index: int = -1, weights=None,
                     weighted: bool = False) -> np.ndarray:
    """``(K, K)`` float64 confusion matrix, rows = ground truth, columns = prediction.

    ``pred`` and ``gt`` are integer arrays of the same shape. ``weights`` (same
    shape or broadcastable) gives each pixel a weight; ``weighted=True`` uses the
    ERP solid angles instead. Ground truth equal to ``ignore_index``, 255 or out of
    range is ignored.
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise InputError(f"prediction shape {pred.shape} differs from ground truth shape {gt.shape}; "
                         f"resize the prediction to the ground truth (nearest) first")
    g = gt.astype(np.int64)
    p = pred.astype(np.int64)
    valid = (g != ignore_index) & (g != 255) & (g >= 0) & (g < num_classes)
    bad = valid & ((p < 0) | (p >= num_classes))
    if bad.any():
        raise InputError(f"prediction holds values outside 0..{num_classes - 1} "
                         f"(e.g. {int(p[bad][0])}) on labelled pixels; predictions must be class indices")
    w = _weights_for(gt.shape, weighted, weights)
    idx = g[valid] * num_classes + p[valid]
    counts = np.bincount(idx, weights=None if w is None else w[valid], minlength=num_classes * num_classes)
    return counts[: num_classes * num_classes].reshape(num_classes, num_classes).astype(np.float64)


def iou_from_confusion(cm) -> np.ndarray:
    """Per-class IoU ``(K,)`` from a confusion matrix; NaN for classes absent from both gt and prediction."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    union = cm.sum(axis=0) + cm.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)


def per_class_iou(pred, gt, num_classes: int, weighted: bool = False, ignore_index: int = -1) -> np.ndarray:
    """IoU of every class, ``(K,)``; NaN where a class is in neither gt nor prediction."""
    return iou_from_confusion(confusion_matrix(pred, gt, num_classes, ignore_index, weighted=weighted))


def mean_iou(pred, gt, num_classes: int, weighted: bool = False, ignore_index: int = -1) -> float:
    """Mean IoU over the classes present in the ground truth or the prediction (NaN if none)."""
    iou = per_class_iou(pred, gt, num_classes, weighted, ignore_index)
    return float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else float("nan")


def pixel_accuracy(pred, gt, num_classes: int, weighted: bool = False, ignore_index: int = -1) -> float:
    """Share of labelled pixels (or of labelled solid angle) predicted correctly."""
    cm = confusion_matrix(pred, gt, num_classes, ignore_index, weighted=weighted)
    total = cm.sum()
    return float(np.trace(cm) / total) if total > 0 else float("nan")


def mean_accuracy(pred, gt, num_classes: int, weighted: bool = False, ignore_index: int = -1) -> float:
    """Mean over the classes present in the ground truth of their recall ``C[k,k] / sum_p C[k,p]``."""
    cm = confusion_matrix(pred, gt, num_classes, ignore_index, weighted=weighted)
    rows = cm.sum(axis=1)
    present = rows > 0
    return float(np.mean(np.diag(cm)[present] / rows[present])) if present.any() else float("nan")


def seam_counts(labels) -> Tuple[int, int, int, int]:
    """Label changes across the seam and between other neighbouring columns of an ``(H, W)`` map.

    Returns ``(seam_changes, seam_pairs, interior_changes, interior_pairs)``:
    ``seam_changes`` counts rows where ``labels[:, W-1] != labels[:, 0]`` (H
    pairs), ``interior_changes`` the pairs ``labels[:, x] != labels[:, x+1]``
    for x = 0..W-2 (H*(W-1) pairs). Sums of these over images give the
    seam consistency of a whole split (:func:`seam_ratio`).
    """
    lab = np.asarray(labels)
    if lab.ndim != 2 or lab.shape[1] < 3:
        raise InputError(f"seam_consistency needs an (H, W) label map with W >= 3, got shape {lab.shape}")
    h, w = lab.shape
    return (int(np.count_nonzero(lab[:, -1] != lab[:, 0])), h,
            int(np.count_nonzero(lab[:, 1:] != lab[:, :-1])), h * (w - 1))


def seam_ratio(seam_changes: float, seam_pairs: float, interior_changes: float, interior_pairs: float) -> float:
    """``(seam_changes / seam_pairs) / (interior_changes / interior_pairs)``, see :func:`seam_consistency`."""
    seam = seam_changes / seam_pairs if seam_pairs else 0.0
    interior = interior_changes / interior_pairs if interior_pairs else 0.0
    if interior == 0.0:
        return 1.0 if seam == 0.0 else float("inf")
    return seam / interior


def seam_consistency(labels) -> float:
    """How consistent an ERP label map is across its left/right seam, relative to elsewhere.

    ``seam = mean over rows of [labels[:, W-1] != labels[:, 0]]`` (the seam
    columns are neighbours on the sphere) and ``interior = mean over rows and
    x = 0..W-2 of [labels[:, x] != labels[:, x+1]]``. Returns
    ``seam / interior``: about 1 when the seam is no more of a boundary than any
    other column pair, much larger than 1 when a model breaks at the seam.
    If ``interior == 0`` (vertical bands only ever change at the seam, or a
    constant map): 1.0 when ``seam == 0`` too, else ``inf``.
    """
    return seam_ratio(*seam_counts(labels))


def class_counts(cm) -> Dict[str, np.ndarray]:
    """Per-class ``intersection`` (diagonal), ``target`` (ground-truth total) and ``prediction``
    (predicted total), each ``(K,)`` float64, from a confusion matrix. These add up over images."""
    cm = np.asarray(cm, dtype=np.float64)
    return {"intersection": np.diag(cm).copy(), "target": cm.sum(axis=1), "prediction": cm.sum(axis=0)}


def scores_from_counts(intersection, target, prediction) -> Dict[str, Any]:
    """Split-level scores from per-class counts summed over images (see the module docstring).

    Returns ``per_class_iou`` and ``per_class_accuracy`` ``(K,)`` (NaN where undefined),
    ``miou`` and ``macc`` (NaN-aware means; NaN if all are NaN) and ``pixel_accuracy``.
    """
    i = np.asarray(intersection, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    p = np.asarray(prediction, dtype=np.float64)
    union = t + p - i
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, i / np.where(union > 0, union, 1), np.nan)
        acc = np.where(t > 0, i / np.where(t > 0, t, 1), np.nan)

    def nanmean(a: np.ndarray) -> float:
        return float(np.nanmean(a)) if np.any(~np.isnan(a)) else float("nan")

    total = float(t.sum())
    return {"per_class_iou": iou, "per_class_accuracy": acc, "miou": nanmean(iou), "macc": nanmean(acc),
            "pixel_accuracy": float(i.sum() / total) if total > 0 else float("nan")}


def evaluate(pred, gt, num_classes: int, weighted: bool = False, ignore_index: int = -1,
             class_names=None) -> Dict:
    """All metrics at once, as a JSON-friendly dict.

    Keys: ``miou``, ``pixel_accuracy``, ``mean_accuracy``, ``per_class_iou``
    (list, NaN for absent classes; also ``iou_by_class`` when ``class_names``
    is given), ``seam_consistency_pred``, ``seam_consistency_gt``,
    ``confusion`` (K x K list), ``weighted``, ``num_classes``.
    """
    cm = confusion_matrix(pred, gt, num_classes, ignore_index, weighted=weighted)
    iou = iou_from_confusion(cm)
    total = cm.sum()
    rows = cm.sum(axis=1)
    present = rows > 0
    out = {
        "num_classes": int(num_classes),
        "weighted": bool(weighted),
        "miou": float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else float("nan"),
        "pixel_accuracy": float(np.trace(cm) / total) if total > 0 else float("nan"),
        "mean_accuracy": float(np.mean(np.diag(cm)[present] / rows[present])) if present.any() else float("nan"),
        "per_class_iou": [float(v) for v in iou],
        "confusion": cm.tolist(),
    }
    if class_names is not None:
        out["iou_by_class"] = {str(n): float(v) for n, v in zip(class_names, iou)}
    p = np.asarray(pred)
    if p.ndim == 2 and p.shape[1] >= 3:
        out["seam_consistency_pred"] = seam_consistency(p)
        out["seam_consistency_gt"] = seam_consistency(gt)
    return out


def majority_class(labels, mask=None, num_classes: Optional[int] = None) -> Optional[int]:
    """The most frequent class of ``labels`` under ``mask`` (a majority vote).

    ``labels``: integer class indices, any shape; ``mask``: bool of the same shape (None = all
    pixels). Only values in ``0..num_classes-1`` vote (``num_classes`` None: every value >= 0),
    so negative "unlabelled" values and void labels are left out. A tie goes to the smaller
    index. Returns None when no pixel votes.
    """
    labels = np.asarray(labels)
    under = labels[np.asarray(mask, dtype=bool)] if mask is not None else labels.ravel()
    valid = under >= 0
    if num_classes is not None:
        valid &= under < num_classes
    under = under[valid]
    if not under.size:
        return None
    return int(np.bincount(under.astype(np.int64, copy=False), minlength=num_classes or 0).argmax())

