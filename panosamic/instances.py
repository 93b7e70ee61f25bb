"""SAM instances on the cached panoramic embeddings, and instance-based semantic refinement.

As in the authors' demo, SAM's automatic "segment everything" grid runs on the
embedding of every modality and both views; candidates are filtered by predicted
IoU and stability, duplicates removed, and the two views fused across the seam.
Each instance then takes the majority semantic class under it.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ._sam import amg
from .geometry import unroll_half, x_to_view
from .metrics import majority_class

# A mask that touches the left/right edge of the view it was decoded on is probably cut
# by that view's seam; the other view sees the same object whole.
_SEAM_MARGIN = 1


def _grid(points_per_side: int, height: int, width: int) -> np.ndarray:
    """(N, 2) x, y cell centres of a (points_per_side x 2*points_per_side) grid on an ERP."""
    ys = (np.arange(points_per_side) + 0.5) / points_per_side * height
    xs = (np.arange(2 * points_per_side) + 0.5) / (2 * points_per_side) * width
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)


def generate_instances(predictor, points_per_side: int = 16, points_per_batch: int = 32,
                       pred_iou_thresh: float = 0.88, stability_score_thresh: float = 0.95,
                       stability_score_offset: float = 1.0, nms_thresh: float = 0.7,
                       containment_thresh: float = 0.8, min_area: int = 0,
                       modalities: Optional[Sequence[str]] = None,
                       views: Optional[Sequence[int]] = None,
                       output_size: Optional[Tuple[int, int]] = None,
                       state: Any = None) -> List[Dict[str, Any]]:
    """Automatic instance masks for the panorama set on `predictor` (no re-encoding).

    Args:
        points_per_side: grid rows; the ERP grid has twice as many columns.
        points_per_batch: prompts decoded at once (memory vs speed).
        pred_iou_thresh, stability_score_thresh, stability_score_offset: SAM's filters
            (stability: IoU of the mask thresholded at +offset and -offset logits).
        nms_thresh: a mask overlapping a better one by more mask IoU is dropped.
        containment_thresh: a seam-cut mask lying this much inside a better mask is dropped
            (how the views are fused across the seam).
        min_area: drop masks smaller than this many input pixels.
        modalities: embeddings to prompt (default: every modality of the checkpoint).
        views: views to prompt (default: all).
        output_size: (h, w) of the returned masks, bboxes and areas (default: the input size).
        state: a `PanoramaState` to use instead of the predictor's current panorama.

    Returns:
        Instances, best first, each a dict with "segmentation" (H, W) bool at the input
        size, "area" (pixels), "bbox" [x, y, w, h] (input pixels; a mask across the seam
        spans the width), "predicted_iou", "stability_score", "point_coords" [[x, y]] of the
        prompt (input pixels), "view" and "modality".
    """
    state = predictor._require_state() if state is None else state
    model = predictor.model
    mods = list(modalities) if modalities is not None else list(predictor.required_modalities)
    view_ids = list(views) if views is not None else list(range(model.num_views))
    Hm, Wm = model.erp_size
    H, W = state.input_size
    out_h, out_w = output_size or (H, W)
    n_mods = len(predictor.required_modalities)
    points = _grid(points_per_side, Hm, Wm)
    # Mask overlaps are compared at a reduced resolution: fast and accurate enough for NMS.
    cmp_h = min(Hm, 128)
    cmp_size = (cmp_h, 2 * cmp_h)

    low_all, iou_all, stab_all, meta = [], [], [], []
    with torch.inference_mode(), predictor._autocast():
        for v in view_ids:
            for m in mods:
                embedding = state.embeddings[v * n_mods + predictor.required_modalities.index(m)][None]
                embedding = embedding.to(predictor.device)
                for start in range(0, len(points), points_per_batch):
                    pts = points[start:start + points_per_batch]
                    pv = pts.copy()
                    if v == 1:
                        pv[:, 0] = x_to_view(pv[:, 0], Wm, 1)
                    coords = torch.as_tensor(pv, device=predictor.device)[:, None, :]
                    labels = torch.ones(len(pv), 1, dtype=torch.int64, device=predictor.device)
                    low, iou = model.decode_prompts(embedding, (coords, labels), None, None, True)
                    low, iou = low.float().flatten(0, 1), iou.float().flatten()
                    keep = iou > pred_iou_thresh
                    if not keep.any():
                        continue
                    low, iou = low[keep], iou[keep]
                    # SAM's stability filter, on the ERP rows of the low-res logits (not upsampled:
                    # thousands of candidates at full size would dominate the run time).
                    erp_low = low[:, : low.shape[-2] // 2]
                    stab = amg.calculate_stability_score(erp_low, 0.0, stability_score_offset)
                    ok = stab >= stability_score_thresh
                    if not ok.any():
                        continue
                    binary = erp_low[ok] > 0
                    touches = binary[..., :_SEAM_MARGIN].flatten(1).any(1) | binary[..., -_SEAM_MARGIN:].flatten(1).any(1)
                    src = pts[np.repeat(np.arange(len(pts)), 3)[keep.cpu().numpy()]][ok.cpu().numpy()]
                    for j in range(int(ok.sum())):
                        meta.append({"view": v, "modality": m, "point": src[j], "touches_seam": bool(touches[j])})
                    low_all.append(low[ok])
                    iou_all.append(iou[ok])
                    stab_all.append(stab[ok])
    if not low_all:
        return []
    low = torch.cat(low_all)
    iou = torch.cat(iou_all).cpu().numpy()
    stab = torch.cat(stab_all).cpu().numpy()
    # Into the panorama's frame: view-1 low-res logits are rolled back by half their width.
    views_arr = np.array([d["view"] for d in meta])
    if (views_arr == 1).any():
        idx = torch.as_tensor(np.nonzero(views_arr == 1)[0], device=low.device)
        low[idx] = unroll_half(low[idx])

    small = model.postprocess(low[:, None], cmp_size)[:, 0] > 0  # (N, h, w) panorama frame
    order = _rank(iou, [d["touches_seam"] for d in meta])
    kept = _fuse(small.flatten(1).float(), order, [d["touches_seam"] for d in meta], nms_thresh, containment_thresh)

    instances: List[Dict[str, Any]] = []
    with torch.inference_mode():
        for i in kept:
            seg = (model.postprocess(low[i][None, None], (out_h, out_w))[0, 0] > 0).cpu().numpy()
            area = int(seg.sum())
            if area == 0 or area < min_area:
                continue
            x, y = meta[i]["point"]
            instances.append({
                "segmentation": seg,
                "area": area,
                "bbox": mask_bbox(seg),
                "predicted_iou": float(iou[i]),
                "stability_score": float(stab[i]),
                "point_coords": [[float(x) * W / Wm, float(y) * H / Hm]],
                "view": meta[i]["view"],
                "modality": meta[i]["modality"],
            })
    return instances


def mask_bbox(mask) -> List[int]:
    """COCO box [x, y, width, height] in pixels of an (H, W) bool mask (numpy or torch), through
    `segment_anything.utils.amg.batched_mask_to_box`; [0, 0, 0, 0] for an empty mask."""
    m = torch.as_tensor(np.asarray(mask, dtype=bool) if not isinstance(mask, torch.Tensor) else mask.bool())
    if not m.any():
        return [0, 0, 0, 0]
    x1, y1, x2, y2 = (int(v) for v in amg.batched_mask_to_box(m[None])[0])
    return [x1, y1, x2 - x1 + 1, y2 - y1 + 1]  # amg's x2, y2 are the last pixels, inclusive


def _rank(scores: np.ndarray, touches_seam: Sequence[bool]) -> np.ndarray:
    """Candidates whole in their own view first, then by predicted IoU."""
    return np.lexsort((-scores, np.asarray(touches_seam, dtype=bool)))


def _fuse(masks: torch.Tensor, order: np.ndarray, touches_seam: Sequence[bool],
          nms_thresh: float, containment_thresh: float) -> List[int]:
    """Greedy mask NMS: drop a candidate overlapping a kept one by IoU > nms_thresh, or, if it
    touches its view's seam, lying inside a kept one by more than containment_thresh."""
    areas = masks.sum(1)
    inter = masks @ masks.t()
    iou = inter / (areas[:, None] + areas[None, :] - inter).clamp(min=1)
    inside = inter / areas[:, None].clamp(min=1)  # inside[j, i]: share of j covered by i
    kept: List[int] = []
    for j in order.tolist():
        if areas[j] == 0:
            continue
        if any(iou[j, i] > nms_thresh or (touches_seam[j] and inside[j, i] > containment_thresh) for i in kept):
            continue
        kept.append(j)
    return kept


def refine_semantics(labels: np.ndarray, instances: Sequence[Dict[str, Any]]) -> np.ndarray:
    """Semantic labels made consistent with instances: each instance takes the majority class
    of `labels` inside it; smaller instances are painted over larger ones.

    Args:
        labels: (H, W) class indices (e.g. `predictor.labels`).
        instances: dicts with a "segmentation" (H, W) bool mask.
    Returns:
        (H, W) refined labels, same dtype; pixels outside every instance keep their class.
        Negative (unlabelled) pixels do not vote (`panosamic.metrics.majority_class`).
    """
    labels = np.asarray(labels)
    refined = labels.copy()
    for inst in sorted(instances, key=lambda d: int(np.count_nonzero(d["segmentation"])), reverse=True):
        seg = np.asarray(inst["segmentation"], dtype=bool)
        if seg.shape != labels.shape:
            raise ValueError(f"instance mask {seg.shape} does not match labels {labels.shape}")
        majority = majority_class(labels, seg)
        if majority is not None:  # None: an empty mask, or no labelled pixel under it
            refined[seg] = majority
    return refined


__all__ = ["generate_instances", "refine_semantics", "mask_bbox"]
