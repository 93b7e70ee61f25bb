"""Depth and normals estimated from the panorama itself (issue 18).

    from panosamic.estimation import estimate_maps
    maps = estimate_maps(rgb, estimator, 512, 1024)   # rgb: (H, W, 3) uint8 ERP
    maps.depth        # (512, 1024) float32 metres, Euclidean distance along each ray
    maps.normals_rgb  # (512, 1024, 3) uint8, 127.5 * (n + 1), world frame

One concept per module:

* :mod:`.views` - perspective views of the ERP (layouts, intrinsics, poses; cv2 sampling);
* :mod:`.fusion` - per-view z-depth -> one seamless ERP depth map (feathered blend, scale alignment);
* :mod:`.base` - the estimator protocols (``predict_views`` / ``predict_erp``);
* :mod:`.estimate` - :func:`estimate_depth`, :func:`estimate_maps` (bounded working resolution);
* :mod:`.standin` - true per-view depth, for tests;
* :mod:`.metrics` - depth and normal errors.

Names are imported lazily (``transformers`` is only imported when the real model is loaded).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "estimate_depth": "estimate", "estimate_maps": "estimate", "EstimatedMaps": "estimate",
    "DEFAULT_FUSE_HEIGHT": "estimate",
    "ViewSet": "views", "make_views": "views", "sample_views": "views", "LAYOUTS": "views",
    "fuse_depth": "fusion", "align_scales": "fusion", "FusedDepth": "fusion",
    "ViewDepthEstimator": "base", "ErpDepthEstimator": "base",
    "TrueDepthEstimator": "standin",
    "depth_errors": "metrics", "normal_angle_errors": "metrics",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'panosamic.estimation' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
