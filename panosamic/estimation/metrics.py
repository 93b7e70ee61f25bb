"""How far estimated depth and normals are from the truth (for tests, the demo's training script, benches).

Both functions compare maps of the same ``(H, W)`` ERP and count only pixels where the truth
is valid (depth > 0 and finite; normals non-zero). Pixels count equally (not by solid angle),
as in the usual monocular-depth benchmarks.
"""

from __future__ import annotations

from typing import Dict

import numpy as np

from ..errors import InputError

__all__ = ["depth_errors", "normal_angle_errors"]


def depth_errors(pred, true) -> Dict[str, float]:
    """``absrel`` = mean ``|pred - true| / true``; ``rel_median`` = its median over the pixels;
    ``rmse`` (metres); ``delta1`` = share of pixels with ``max(pred/true, true/pred) < 1.25``.
    Predictions ``<= 0`` count as the worst case (relative error 1)."""
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    if p.shape != t.shape:
        raise InputError(f"depth maps differ in shape: {p.shape} vs {t.shape}")
    ok = np.isfinite(t) & (t > 0)
    if not ok.any():
        raise InputError("the true depth has no valid pixel")
    p, t = p[ok], t[ok]
    good = np.isfinite(p) & (p > 0)
    rel = np.where(good, np.abs(p - t) / t, 1.0)
    ratio = np.where(good, np.maximum(p / t, t / np.where(good, p, 1.0)), np.inf)
    return {"absrel": float(rel.mean()), "rel_median": float(np.median(rel)),
            "rmse": float(np.sqrt(np.mean(np.where(good, p - t, t) ** 2))), "delta1": float(np.mean(ratio < 1.25))}


def normal_angle_errors(pred, true) -> Dict[str, float]:
    """Angle (degrees) between unit normals ``(H, W, 3)``: ``angle_median_deg``, ``angle_mean_deg``,
    ``within_11_25`` / ``within_30`` (shares of pixels). A zero predicted normal counts as 90 degrees."""
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(true, dtype=np.float64)
    if p.shape != t.shape or p.shape[-1] != 3:
        raise InputError(f"normal maps must both be (H, W, 3): {p.shape} vs {t.shape}")
    tn = np.linalg.norm(t, axis=-1)
    ok = tn > 0.5
    if not ok.any():
        raise InputError("the true normals have no valid pixel")
    pn = np.linalg.norm(p, axis=-1)
    cos = np.sum(p * t, axis=-1) / np.maximum(pn * tn, 1e-12)
    ang = np.degrees(np.arccos(np.clip(np.where(pn > 0.5, cos, 0.0), -1.0, 1.0)))[ok]
    return {"angle_median_deg": float(np.median(ang)), "angle_mean_deg": float(ang.mean()),
            "within_11_25": float(np.mean(ang < 11.25)), "within_30": float(np.mean(ang < 30.0))}
