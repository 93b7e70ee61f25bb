"""Depth and normals estimated from the panorama itself (issue 18).

    from panosamic.estimation import load_estimator, estimate_maps
    est = load_estimator("auto")        # Depth Anything V2 Metric Indoor Small, or the offline demo
    maps = estimate_maps(rgb, est, 512, 1024)   # rgb: (H, W, 3) uint8 ERP
    maps.depth        # (512, 1024) float32 metres, Euclidean distance along each ray
    maps.normals_rgb  # (512, 1024, 3) uint8, 127.5 * (n + 1), world frame
    est.note          # None, or "the demo estimator ran: the real model could not be fetched (...)"

One concept per module:

* :mod:`.views` - perspective views of the ERP (layouts, intrinsics, poses; cv2 sampling);
* :mod:`.fusion` - per-view z-depth -> one seamless ERP depth map (feathered blend, scale alignment);
* :mod:`.base` - the estimator protocols (``predict_views`` / ``predict_erp``);
* :mod:`.estimate` - :func:`estimate_depth`, :func:`estimate_maps` (bounded working resolution);
* :mod:`.hf` - the real model through ``transformers``;
* :mod:`.demo` - the offline toy U-Net trained on the procedural rooms (``assets/demo-depth``);
* :mod:`.standin` - true per-view depth, for tests;
* :mod:`.metrics` - depth and normal errors;
* :mod:`.load` - :func:`load_estimator`, the front door.

Names are imported lazily (``transformers`` is only imported when the real model is loaded).
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "load_estimator": "load", "ESTIMATOR_CHOICES": "load", "FALLBACK_NOTE": "load",
    "estimate_depth": "estimate", "estimate_maps": "estimate", "EstimatedMaps": "estimate",
    "DEFAULT_FUSE_HEIGHT": "estimate",
    "ViewSet": "views", "make_views": "views", "sample_views": "views", "LAYOUTS": "views",
    "fuse_depth": "fusion", "align_scales": "fusion", "FusedDepth": "fusion",
    "ViewDepthEstimator": "base", "ErpDepthEstimator": "base",
    "TransformersDepthEstimator": "hf", "DEFAULT_MODEL": "hf", "DEFAULT_REVISION": "hf",
    "DemoDepthEstimator": "demo", "DEMO_DIR": "demo",
    "TrueDepthEstimator": "standin",
    "depth_errors": "metrics", "normal_angle_errors": "metrics",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
