"""The downloads of a session, made at the input resolution when the user asks for them.

The session works at a bounded working size; the files are at the size of the uploaded
panorama. The label map written is the model's own labels at the input size
(`Predictor.labels_at`, tile by tile) with the user's edits laid over them: where the user
edited, the working map upsampled (nearest), elsewhere the model's full-resolution
labels. So the file has the classes the user saw, with edges within one working pixel.

Memory stays bounded for 8192x4096: uint8 maps (32 MB), masks one at a time.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import numpy as np

from ..geometry import nearest_indices, resize_erp
from ..exports import (COLORS_PNG_SUFFIX, class_stats, encode_rle, mask_bbox, point_cloud_glb, save_label_colors_png,
                       stats_csv)
from ..io import panorama_stem, save_labels_png
from .session import Session

KINDS = ("labels", "class_table", "colors", "stats_json", "stats_csv", "coco_rle", "masks_png", "pointcloud_glb",
         "depth_estimated", "normals_estimated")
_TILE_ROWS = 512


def _row_tiles(height: int) -> Iterator[Tuple[int, int]]:
    for r0 in range(0, height, _TILE_ROWS):
        yield r0, min(r0 + _TILE_ROWS, height)


def final_labels(s: Session, model_labels: np.ndarray) -> np.ndarray:
    """(H, W) uint8: the model's labels at the input size with the session's edits over them.

    model_labels: `Predictor.labels_at(s.input_size, state=s.state)` (modified in place)."""
    H, W = s.input_size
    if model_labels.shape != (H, W):
        raise ValueError(f"model labels {model_labels.shape} do not match the input size {(H, W)}")
    if not s.edited.any():
        return model_labels
    if s.shape == (H, W):
        model_labels[s.edited] = s.labels[s.edited]
        return model_labels
    rows = nearest_indices(s.shape[0], H)
    cols = nearest_indices(s.shape[1], W)
    for r0, r1 in _row_tiles(H):
        edited = s.edited[rows[r0:r1, None], cols[None, :]]
        if edited.any():
            tile = model_labels[r0:r1]
            tile[edited] = s.labels[rows[r0:r1, None], cols[None, :]][edited]
    return model_labels


def write_downloads(s: Session, folder: Path, model_labels: np.ndarray,
                    glb_max_points: int = 400_000,
                    progress: Optional[Callable[..., Any]] = None) -> Dict[str, str]:
    """Writes the downloads of `s` into `folder`; returns {kind: path} in `KINDS` order.

    kinds: labels (PNG, class indices), class_table (CSV beside it: index, name, r, g, b, hex
    and origin, "model" for the checkpoint's classes and "user" for those added in the studio),
    colors (PNG), stats_json, stats_csv, coco_rle (JSON:
    per-class segments and the refined masks), masks_png (16-bit ids of the refined masks,
    0 = none; only with refined masks), pointcloud_glb (only with depth), and, for maps
    estimated from the photo, depth_estimated (16-bit PNG, millimetres, 0 = unknown) and
    normals_estimated (RGB PNG, 127.5 * (n + 1), world frame), both at the input size.
    `progress(fraction, desc=text)` hears each step.
    """
    report = progress or (lambda *_a, **_k: None)
    H, W = s.input_size
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = panorama_stem(s.name, safe=True)
    path = lambda suffix: str(folder / f"{stem}_{suffix}")  # noqa: E731
    report(0.2, desc=f"Export: your edits over the labels at {W}×{H}")
    labels = final_labels(s, model_labels)
    out: Dict[str, str] = {}
    report(0.3, desc="Export: label PNGs, statistics, masks" + (", point cloud" if s.depth is not None else ""))
    with ThreadPoolExecutor(max_workers=1) as writer:
        # the two PNGs compress (OpenCV, without the GIL) beside the statistics and the RLE
        pngs = {"labels": writer.submit(save_labels_png, path("labels.png"), labels, compression=3),
                "colors": writer.submit(save_label_colors_png, str(folder / f"{stem}{COLORS_PNG_SUFFIX}"), labels,
                                        s.palette)}
        _write_tables(s, labels, path, out, glb_max_points)
        report(0.85, desc="Export: compressing the label PNGs")
        out.update({kind: str(job.result()) for kind, job in pngs.items()})
    return {k: out[k] for k in KINDS if k in out}


def _write_tables(s: Session, labels: np.ndarray, path: Callable[[str], str], out: Dict[str, str],
                  glb_max_points: int) -> None:
    """The statistics, the RLE masks, the refined masks' ids and the point cloud of
    `write_downloads` (everything but the two label PNGs), their paths into `out`."""
    import cv2

    H, W = s.input_size
    stats = class_stats(labels, s.classes, s.palette)
    if s.depth is not None:  # distances from the working-size depth (the session keeps no other)
        for row, small in zip(stats, class_stats(s.labels, s.classes, s.palette, s.depth)):
            row["median_distance_m"] = small["median_distance_m"]
    info = s.summary()
    info.pop("prompts", None)
    info.pop("candidates", None)
    with open(path("classes.csv"), "w", encoding="utf-8") as f:
        f.write(s.class_table.as_csv())
    out["class_table"] = path("classes.csv")
    with open(path("stats.json"), "w") as f:
        json.dump({**info, "stats": stats}, f, indent=1)
    out["stats_json"] = path("stats.json")
    with open(path("stats.csv"), "w") as f:
        f.write(stats_csv(stats))
    out["stats_csv"] = path("stats.csv")

    with open(path("masks_rle.json"), "w") as f:
        json.dump(coco(s, labels), f)
    out["coco_rle"] = path("masks_rle.json")
    if s.refined:
        ids = np.zeros((H, W), np.uint16)
        for i, r in enumerate(s.refined):
            ids[resize_erp(r.mask, H, W, nearest=True)] = i + 1
        cv2.imwrite(path("masks.png"), ids)
        out["masks_png"] = path("masks.png")
    if s.depth is not None:
        out["pointcloud_glb"] = point_cloud_glb(path("pointcloud.glb"), s.depth, s.labels, s.palette,
                                                max_points=glb_max_points, max_depth=None)
    if "depth" in s.estimated and s.depth is not None:
        _write_estimated_maps(s, path, out)


def _write_estimated_maps(s: Session, path: Callable[[str], str], out: Dict[str, str]) -> None:
    """The depth (and normals) estimated from the photo, at the input size, from the session's
    working-size depth: the depth bilinear across the seam, the normals taken at the working
    size (at 8192x4096 `normals_from_depth` would need 0.8 GB per float64 array) and enlarged."""
    import cv2

    from ..geometry import encode_normals, normals_for_model
    from ..io import save_depth_png, save_normals_png

    H, W = s.input_size
    # zlib level 3 as the label PNG: level 9 took 48 s for both maps of an 8192x4096 photo here
    out["depth_estimated"] = str(save_depth_png(path("depth_estimated.png"), resize_erp(s.depth, H, W), compression=3))
    if "normals" in s.estimated:
        h, w = s.depth.shape
        rgb = encode_normals(normals_for_model(s.depth, h, w))
        if (h, w) != (H, W):
            rgb = cv2.resize(rgb, (W, H), interpolation=cv2.INTER_LINEAR)
        out["normals_estimated"] = str(save_normals_png(path("normals_estimated.png"), rgb, compression=3))


def coco(s: Session, labels: Optional[np.ndarray] = None) -> Dict:
    """COCO-style JSON at the input size: per-class semantic segments (COCO-Stuff style,
    `annotations`) and the user's refined masks (`refined_masks`), all as compressed RLE.
    labels: the final (H, W) map (`final_labels`); without it, the working map upsampled."""
    H, W = s.input_size
    if labels is None:
        labels = resize_erp(s.labels, H, W, nearest=True)
    cats = [{"id": r.index, "name": r.name, "color": list(r.color), "origin": r.origin} for r in s.class_table.rows()]
    anns = []
    present = np.flatnonzero(np.bincount(labels.ravel(), minlength=s.num_classes)[:s.num_classes])
    # column-major once: RLE runs go down the columns, and masks of a Fortran-ordered map are
    # Fortran-ordered too (a C-ordered 8K mask costs a 0.5 s transpose per class)
    labels_f = np.asfortranarray(labels)
    for c in present:
        m = labels_f == c
        anns.append({"id": len(anns) + 1, "image_id": 1, "category_id": int(c), "iscrowd": 0,
                     "area": int(np.count_nonzero(m)), "bbox": mask_bbox(m), "segmentation": encode_rle(m)})
    refined = []
    for i, r in enumerate(s.refined):
        m = np.asfortranarray(resize_erp(r.mask, H, W, nearest=True))
        refined.append({"id": i + 1, "image_id": 1, "category_id": r.class_index, "iscrowd": 0,
                        "area": int(np.count_nonzero(m)), "bbox": mask_bbox(m), "segmentation": encode_rle(m),
                        "predicted_iou": r.score, "source": r.source})
    return {"info": {"description": "PanoSAMic semantic segmentation", "projection": "equirectangular"},
            "images": [{"id": 1, "file_name": os.path.basename(s.name), "height": H, "width": W}],
            "categories": cats, "annotations": anns, "refined_masks": refined}


__all__ = ["write_downloads", "final_labels", "coco", "KINDS"]
