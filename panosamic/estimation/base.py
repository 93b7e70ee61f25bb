"""What a depth estimator is: the two protocols `estimate_depth` accepts.

Every estimator has
    ``name`` (str, e.g. a Hugging Face id or "demo-depth"), ``licence`` (str, the weights'
    licence as its publisher states it), ``metric`` (bool: True if it predicts metres, False
    for relative depth of an arbitrary scale) and ``note`` (None, or a sentence the app should
    show, e.g. "the demo estimator ran: the real model could not be fetched (...)"); the
    estimators of :func:`~panosamic.estimation.load_estimator` also have ``fallback`` (True on
    the demo that ``"auto"`` fell back to). Optional ``toy`` (bool, default False): True for a
    model trained on rendered rooms only (the bundled demo), which the app then names so.

and one of
    ``predict_views(images, views) -> z_depth`` (:class:`ViewDepthEstimator`): a perspective
    model. ``images`` ``(N, s, s, 3)`` uint8 RGB are the views of ``views`` (a
    :class:`~.views.ViewSet`: ``views.fov_deg``, ``views.intrinsics``, ``views.rotations``);
    it returns ``(N, s, s)`` float32 depth along each view's optical axis (z-depth) in metres
    (or relative units), ``<= 0`` where unknown. Optional attribute ``view_size`` (pixels):
    the view size it wants (default 518, Depth Anything's).

    ``predict_erp(erp_rgb) -> depth`` (:class:`ErpDepthEstimator`): a panoramic model. It takes
    ``(H, W, 3)`` uint8 RGB and returns ``(h, w)`` float32 Euclidean distance along each ERP
    pixel's ray in metres at a 2:1 size of its own choice (``estimate_depth`` resizes).
"""

from __future__ import annotations

from typing import Optional, Protocol, runtime_checkable

import numpy as np

from .views import ViewSet

__all__ = ["ViewDepthEstimator", "ErpDepthEstimator", "is_view_estimator", "is_erp_estimator"]


@runtime_checkable
class ViewDepthEstimator(Protocol):
    """A perspective (per-view) depth model; see the module docstring."""

    name: str
    licence: str
    metric: bool
    note: Optional[str]

    def predict_views(self, images: np.ndarray, views: ViewSet) -> np.ndarray:
        """``(N, s, s, 3)`` uint8 -> ``(N, s, s)`` float32 z-depth (metres if ``metric``)."""
        ...


@runtime_checkable
class ErpDepthEstimator(Protocol):
    """A panoramic depth model that reads the ERP directly; see the module docstring."""

    name: str
    licence: str
    metric: bool
    note: Optional[str]

    def predict_erp(self, erp_rgb: np.ndarray) -> np.ndarray:
        """``(H, W, 3)`` uint8 -> ``(h, w)`` float32 ray distance in metres (2:1, any size)."""
        ...


def is_view_estimator(obj) -> bool:
    return callable(getattr(obj, "predict_views", None))


def is_erp_estimator(obj) -> bool:
    return callable(getattr(obj, "predict_erp", None))
