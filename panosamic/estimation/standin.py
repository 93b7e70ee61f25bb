"""A stand-in perspective estimator that returns the TRUE z-depth of each view (for tests).

:class:`TrueDepthEstimator` wraps any function ``distance(rays (..., 3) unit world) -> (...)``
metres; for a rendered room that is ``devtools.scenes.trace_depth(scene, rays)``, the
renderer's own ray cast, so every view gets exact depth for its own pixel rays (independent
of the ERP depth map the fusion is compared with). ``predict_views`` converts the distance
along each pixel's ray to z-depth along the view's axis (``z = d cos``), which is what a
perspective model predicts, so the stand-in exercises the whole view -> fusion path.

:meth:`TrueDepthEstimator.from_erp` instead looks the distance up in an ERP depth map
(nearest pixel), for panoramas that come with a depth map but no scene.

``scale_jitter`` multiplies each view by its own random factor (log-uniform within
``1 / (1 + j) .. 1 + j``), to imitate a relative model whose per-view scales disagree.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from .. import geometry
from .views import ViewSet

__all__ = ["TrueDepthEstimator"]


class TrueDepthEstimator:
    """Per-view truth from ``distance(rays) -> metres``; see the module docstring."""

    licence = "n/a (test stand-in)"
    note: Optional[str] = None
    toy = False  # the truth itself

    def __init__(self, distance: Callable[[np.ndarray], np.ndarray], scale_jitter: float = 0.0, seed: int = 0,
                 view_size: int = 128, name: str = "true-depth stand-in"):
        self.distance = distance
        self.scale_jitter = float(scale_jitter)
        self.rng = np.random.default_rng(seed)
        self.view_size = int(view_size)
        self.name = name
        self.metric = scale_jitter == 0.0
        self.last_scales: Optional[np.ndarray] = None

    @classmethod
    def from_erp(cls, depth: np.ndarray, **kwargs) -> "TrueDepthEstimator":
        """The stand-in for an ERP depth map ``(H, W)`` metres (nearest-pixel look-up)."""
        d = np.asarray(depth, dtype=np.float32)
        H, W = d.shape

        def distance(rays: np.ndarray) -> np.ndarray:
            lon, lat = geometry.ray_to_lonlat(rays)
            x, y = geometry.lonlat_to_erp(lon, lat, W, H)
            return d[np.clip(y.astype(np.int64), 0, H - 1), np.clip(x.astype(np.int64), 0, W - 1)]

        return cls(distance, **kwargs)

    def predict_views(self, images: np.ndarray, views: ViewSet) -> np.ndarray:
        """``(N, s, s, 3)`` (only the shape is read) -> ``(N, s, s)`` float32 true z-depth."""
        n = len(views)
        assert images.shape[:3] == (n, views.size, views.size), images.shape
        cos = views.cos_to_axis()
        out = np.stack([np.asarray(self.distance(views.world_rays(i)), dtype=np.float64) * cos for i in range(n)])
        if self.scale_jitter:
            j = np.log1p(self.scale_jitter)
            self.last_scales = np.exp(self.rng.uniform(-j, j, n))
            out *= self.last_scales[:, None, None]
        return out.astype(np.float32)
