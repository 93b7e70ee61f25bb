"""The two calls the app, the CLI and the Predictor need: `estimate_depth` and `estimate_maps`.

Working resolution is bounded whatever the photo's size:

* a perspective model (:class:`~.base.ViewDepthEstimator`) sees the views of
  :func:`~.views.make_views` (14 views of 90 degrees by default) at ``face_size`` pixels
  (default: the estimator's ``view_size``, 518 for Depth Anything), sampled from the ERP
  after an area shrink to about the views' resolution (:func:`~.views.sample_views`);
  per-view depth is fused (:func:`~.fusion.fuse_depth`) at ``fuse_height x 2 fuse_height``
  (default 512 x 1024);
* a panoramic model (:class:`~.base.ErpDepthEstimator`) gets the ERP and answers at its own
  size (the demo: 256 x 128);

and only the final depth map is resized (bilinear across the seam, `geometry.resize_erp`) to
the size asked for. An 8192 x 4096 photo thus costs one area shrink and one up-sampling more
than a 1024 x 512 one. Normals always come from the estimated depth through
`panosamic.geometry.normals_for_model` (world frame, facing the camera).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple, Union

import numpy as np

from .. import geometry
from ..errors import InputError
from .base import is_erp_estimator, is_view_estimator
from .fusion import fuse_depth
from .views import make_views, sample_views

__all__ = ["EstimatedMaps", "estimate_depth", "estimate_maps", "DEFAULT_FUSE_HEIGHT"]

#: Height of the ERP that per-view depth is fused at (width twice that).
DEFAULT_FUSE_HEIGHT = 512


@dataclass
class EstimatedMaps:
    """What :func:`estimate_maps` returns.

    depth: ``(h, w)`` float32, Euclidean distance along each ray, metres if ``metric`` (0 = unknown);
    normals: ``(h, w, 3)`` float32 unit vectors (world frame, facing the camera; zero = unknown);
    estimator, licence, note: the estimator's ``name``, ``licence`` and ``note``;
    metric: whether ``depth`` is in metres; seconds: time per stage;
    scales: per-view scale factors of the alignment (empty for a panoramic model).
    """

    depth: np.ndarray
    normals: np.ndarray
    estimator: str
    licence: str
    metric: bool
    note: Optional[str] = None
    seconds: Dict[str, float] = field(default_factory=dict)
    scales: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def normals_rgb(self) -> np.ndarray:
        """``(h, w, 3)`` uint8, ``127.5 * (n + 1)`` (`geometry.encode_normals`), what checkpoints read."""
        return geometry.encode_normals(self.normals)


def _as_rgb(erp_rgb) -> np.ndarray:
    a = np.asarray(erp_rgb)
    if a.ndim != 3 or a.shape[2] != 3 or a.shape[0] < 2 or a.shape[1] < 4:
        raise InputError(f"expected an (H, W, 3) RGB panorama, got shape {a.shape}")
    if a.dtype != np.uint8:
        a = np.clip(np.rint(a.astype(np.float32)), 0, 255).astype(np.uint8)
    return a


def _working_depth(erp_rgb: np.ndarray, estimator, face_size: Optional[int], layout: str, fuse_height: int,
                   align: bool, seconds: Dict[str, float]) -> Tuple[np.ndarray, np.ndarray]:
    """Depth at the estimator's or the fusion's working size, and the per-view scales."""
    t0 = time.perf_counter()
    if is_erp_estimator(estimator):
        d = np.asarray(estimator.predict_erp(erp_rgb), dtype=np.float32)
        seconds["model"] = time.perf_counter() - t0
        if d.ndim != 2:
            raise InputError(f"{estimator.name} returned depth of shape {d.shape}; expected (h, w)")
        return d, np.zeros(0)
    if not is_view_estimator(estimator):
        raise InputError(f"{estimator!r} is not a depth estimator (it needs predict_views or predict_erp)")
    size = int(face_size or getattr(estimator, "view_size", 518))
    views = make_views(layout, size)
    images = sample_views(erp_rgb, views)
    t1 = time.perf_counter()
    seconds["views"] = t1 - t0
    z = np.asarray(estimator.predict_views(images, views), dtype=np.float32)
    t2 = time.perf_counter()
    seconds["model"] = t2 - t1
    anchor = "mean" if getattr(estimator, "metric", True) else 0
    fused = fuse_depth(z, views, int(fuse_height), 2 * int(fuse_height), align=align, anchor=anchor)
    seconds["fuse"] = time.perf_counter() - t2
    return fused.depth, fused.scales


def estimate_depth(erp_rgb, estimator, size: Optional[Tuple[int, int]] = None, face_size: Optional[int] = None,
                   layout: str = "cube+corners", fuse_height: int = DEFAULT_FUSE_HEIGHT,
                   align: bool = True) -> np.ndarray:
    """Depth of an ERP photo: ``(H, W, 3)`` uint8 RGB -> ``(h, w)`` float32 metres.

    Euclidean distance along each pixel's ray (the convention of :mod:`panosamic.geometry`;
    relative units if ``estimator.metric`` is False), ``(h, w) = size`` (default: the photo's
    own size). ``estimator``: anything :func:`~panosamic.estimation.load_estimator` returns,
    or any object with ``predict_views`` / ``predict_erp`` (see :mod:`.base`). ``face_size``,
    ``layout``, ``fuse_height``, ``align``: the perspective path's working resolution, views
    and scale alignment (see :mod:`.views`, :mod:`.fusion`).
    """
    rgb = _as_rgb(erp_rgb)
    h, w = size if size is not None else rgb.shape[:2]
    d, _ = _working_depth(rgb, estimator, face_size, layout, fuse_height, align, {})
    return d if d.shape == (h, w) else geometry.resize_erp(d, int(h), int(w))


def estimate_maps(erp_rgb, estimator, height: Optional[int] = None, width: Optional[int] = None,
                  face_size: Optional[int] = None, layout: str = "cube+corners",
                  fuse_height: int = DEFAULT_FUSE_HEIGHT, align: bool = True) -> EstimatedMaps:
    """Depth and normals of an ERP photo for a checkpoint that reads ``height x width`` maps.

    ``height, width`` default to the photo's size (pass a checkpoint's ERP size, e.g.
    ``model.erp_size``, to get exactly what it reads). The depth is resized from the working
    size to ``(height, width)``; the normals are `geometry.normals_for_model` of the working
    depth (so they are computed once, at most at twice ``(height, width)``). Returns
    :class:`EstimatedMaps`.
    """
    rgb = _as_rgb(erp_rgb)
    H, W = rgb.shape[:2]
    height, width = int(height or H), int(width or (2 * height if height else W))
    seconds: Dict[str, float] = {}
    t0 = time.perf_counter()
    d, scales = _working_depth(rgb, estimator, face_size, layout, fuse_height, align, seconds)
    t1 = time.perf_counter()
    depth = d if d.shape == (height, width) else geometry.resize_erp(d, height, width)
    normals = geometry.normals_for_model(d, height, width)
    seconds["resize_and_normals"] = time.perf_counter() - t1
    seconds["total"] = time.perf_counter() - t0
    return EstimatedMaps(depth=depth.astype(np.float32, copy=False), normals=normals,
                         estimator=getattr(estimator, "name", type(estimator).__name__),
                         licence=getattr(estimator, "licence", "unknown"),
                         metric=bool(getattr(estimator, "metric", True)), note=getattr(estimator, "note", None),
                         seconds={k: round(v, 4) for k, v in seconds.items()}, scales=scales)
