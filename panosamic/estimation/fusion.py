"""Fusing per-view z-depth into one ERP depth map in metres (Euclidean distance along each ray).

For every ERP pixel centre (ray ``r``, unit, world frame) and every view (rotation ``R``):
``cam = R^T r``; the ray is seen by the view if ``cam_z > 0`` and its image coordinates
``u = f cam_x / cam_z + c``, ``v = f cam_y / cam_z + c`` fall inside the view. The view's
z-depth there (bilinear, cv2 ``remap``) becomes a ray distance ``d = z / cam_z`` (``cam_z`` is
the cosine of the angle to the optical axis: ``z = d cos``).

Weights (seamless by construction)
    ``w = cos^k(angle to the axis) * smoothstep(b)`` with ``b = (1 - max(|X|, |Y|)) / feather``
    clipped to ``0..1``, where ``X, Y = cam_x / cam_z, cam_y / cam_z`` over ``tan(fov / 2)`` are
    the view's normalised image coordinates (``+-1`` on its border). The weight is continuous
    and reaches 0 on the view's border, so the fused map is continuous across every view
    border; the ERP seam and the poles are interior points of the views (see
    :mod:`.views`), and the fused value at each pixel depends only on its ray, so columns
    ``W-1`` and ``0`` meet like any two neighbours. ``cos^k`` favours the view centres, where
    perspective models are most reliable.

Scale alignment (:func:`align_scales`)
    Per-view models disagree in scale (a relative model has an arbitrary one; a metric one is
    off by a few percent from view to view). For every overlapping pair ``(i, j)`` the median
    of ``log d_i - log d_j`` over their common pixels is measured; the per-view log scales
    ``s`` minimise ``sum_ij n_ij (s_i - s_j + m_ij)^2`` (``n_ij`` the overlap's pixel count),
    with the gauge fixed by ``anchor``: ``"mean"`` keeps the average scale (for metric models),
    an integer keeps that view's scale (view 0, the front face, for relative models).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import cv2
import numpy as np

from .. import geometry
from ..errors import InputError
from .views import ViewSet

__all__ = ["FusedDepth", "project_views", "align_scales", "fuse_depth"]


@dataclass
class FusedDepth:
    """depth: ``(H, W)`` float32 metres (0 where no view saw the pixel); weight: ``(H, W)``
    float32 sum of the blend weights; scales: ``(N,)`` the factor each view was multiplied by."""

    depth: np.ndarray
    weight: np.ndarray
    scales: np.ndarray


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def project_views(views: ViewSet, height: int, width: int, feather: float = 0.25, power: float = 2.0):
    """Yield, for every view, ``(map_x, map_y, cos, weight)`` over the ``(height, width)`` ERP.

    ``map_x, map_y``: float32 ``remap`` coordinates into the view's image (pixel centre at
    ``i``, i.e. ``u - 0.5``); ``cos``: float32 cosine of the angle to the axis (0 behind the
    view); ``weight``: float32 blend weight (0 outside the view).
    """
    if not 0.0 < feather <= 1.0:
        raise InputError(f"feather must be in (0, 1], got {feather}")
    rays = geometry.erp_rays(height, width).astype(np.float32)
    t = float(np.tan(np.radians(views.fov_deg) / 2.0))
    f, c = views.focal, views.size / 2.0
    for R in views.rotations.astype(np.float32):
        cam = rays @ R  # (H, W, 3): cam = R^T r for every ray
        cz = cam[..., 2]
        front = cz > 1e-6
        safe = np.where(front, cz, 1.0)
        X = cam[..., 0] / safe
        Y = cam[..., 1] / safe
        edge = np.maximum(np.abs(X), np.abs(Y)) / t
        w = np.where(front, _smoothstep((1.0 - edge) / feather) * np.maximum(cz, 0.0) ** power, 0.0)
        map_x = np.where(front, f * X + c - 0.5, -10.0).astype(np.float32)
        map_y = np.where(front, f * Y + c - 0.5, -10.0).astype(np.float32)
        yield map_x, map_y, np.where(front, cz, 0.0).astype(np.float32), w.astype(np.float32)


def align_scales(log_d: np.ndarray, weights: np.ndarray, anchor: Union[str, int] = "mean",
                 min_weight: float = 0.05, min_overlap: int = 50) -> np.ndarray:
    """Per-view scale factors ``(N,)`` that make overlapping views agree (see the module docstring).

    log_d: ``(N, P)`` log ray distance of each view at ``P`` ERP pixels (any value where the
    weight is 0); weights: ``(N, P)`` blend weights (0 = not seen or invalid). Pairs count
    where both weights exceed ``min_weight`` times the largest weight, on at least
    ``min_overlap`` pixels. Views without any overlap keep the scale 1.
    """
    n = log_d.shape[0]
    seen = weights > min_weight * float(weights.max(initial=0.0))
    rows, rhs, wts = [], [], []
    for i in range(n):
        for j in range(i + 1, n):
            both = seen[i] & seen[j]
            k = int(both.sum())
            if k < min_overlap:
                continue
            m = float(np.median(log_d[i, both] - log_d[j, both]))
            row = np.zeros(n)
            row[i], row[j] = 1.0, -1.0
            rows.append(row)
            rhs.append(-m)
            wts.append(np.sqrt(k))
    if not rows:
        return np.ones(n)
    A, b, sw = np.array(rows), np.array(rhs), np.array(wts)
    gauge = np.zeros(n)
    if anchor == "mean":
        gauge[:] = 1.0 / n
    else:
        if not (isinstance(anchor, (int, np.integer)) and 0 <= anchor < n):
            raise InputError(f"anchor must be 'mean' or a view index in 0..{n - 1}, got {anchor!r}")
        gauge[int(anchor)] = 1.0
    big = 1e3 * sw.max()
    A = np.vstack([A * sw[:, None], big * gauge[None]])
    b = np.concatenate([b * sw, [0.0]])
    s, *_ = np.linalg.lstsq(A, b, rcond=None)
    # views on no pair (isolated) stay free in the least squares: pin them to 1
    connected = np.zeros(n, dtype=bool)
    for row in rows:
        connected |= row != 0
    s[~connected] = 0.0
    return np.exp(s)


def fuse_depth(z_views: np.ndarray, views: ViewSet, height: int, width: int, align: bool = True,
               anchor: Union[str, int] = "mean", feather: float = 0.25, power: float = 2.0,
               valid: Optional[np.ndarray] = None) -> FusedDepth:
    """Blend per-view z-depth into one ``(height, width)`` ERP map of ray distances.

    z_views: ``(N, size, size)`` z-depth along each view's optical axis (metres for a metric
    model, any unit for a relative one); ``<= 0`` or non-finite = unknown. views: the
    :class:`~.views.ViewSet` they were rendered with. align: scale-align the views on their
    overlaps first (:func:`align_scales` with ``anchor``). valid: optional ``(N, size, size)``
    bool mask of usable predictions. Returns a :class:`FusedDepth` (float32 metres / units).
    """
    z = np.asarray(z_views, dtype=np.float32)
    if z.shape != (len(views), views.size, views.size):
        raise InputError(f"expected {len(views)} depth maps of {views.size}x{views.size}, got shape {z.shape}")
    ok = np.isfinite(z) & (z > 0)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)
    z = np.where(ok, z, 0.0).astype(np.float32)
    okf = ok.astype(np.float32)
    n = len(views)
    dist = np.zeros((n, height, width), dtype=np.float32)
    wts = np.zeros((n, height, width), dtype=np.float32)
    for i, (mx, my, cz, w) in enumerate(project_views(views, height, width, feather, power)):
        zi = cv2.remap(z[i], mx, my, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        # a bilinear sample that touched an unknown pixel is unknown (no blending with the 0s)
        oki = cv2.remap(okf[i], mx, my, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        good = (oki > 0.999) & (w > 0) & (zi > 0)
        dist[i] = np.where(good, zi / np.maximum(cz, 1e-6), 0.0)
        wts[i] = np.where(good, w, 0.0)
    scales = np.ones(n)
    if align and n > 1:
        step = max(1, height // 128)  # the medians need no more than ~128 x 256 samples
        sub_d = dist[:, ::step, ::step].reshape(n, -1)
        sub_w = wts[:, ::step, ::step].reshape(n, -1)
        log_d = np.log(np.where(sub_w > 0, sub_d, 1.0))
        scales = align_scales(log_d, sub_w, anchor=anchor)
    total = wts.sum(axis=0)
    acc = np.einsum("n,nhw->hw", scales.astype(np.float32), dist * wts)
    depth = np.where(total > 0, acc / np.maximum(total, 1e-12), 0.0).astype(np.float32)
    return FusedDepth(depth, total.astype(np.float32), scales)
