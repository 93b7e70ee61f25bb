"""Perspective views of an ERP panorama: layouts, intrinsics, poses, and sampling with cv2.

Frames (see :mod:`panosamic.geometry` for the world frame: x forward at the image centre,
y left, z up, metres)
    A view is a pinhole camera at the panorama's centre. Its *camera frame* is OpenCV's:
    ``x`` right, ``y`` down, ``z`` forward along the optical axis. ``R`` (3 x 3) maps camera
    to world coordinates, ``world = R @ cam``; its columns are the view's right, down and
    forward directions in the world frame. Views are *upright*: "right" is horizontal
    (perpendicular to z), so walls stay vertical in every view, as monocular models expect.
    A view looking at longitude ``lon`` and latitude ``lat`` (radians) has
    ``forward = lonlat_to_ray(lon, lat)``, ``right = (-sin lon, -cos lon, 0)``,
    ``down = forward x right``.

Intrinsics
    Views are square, ``size x size`` pixels, with the same horizontal and vertical field of
    view ``fov_deg``. Pixel ``(i, j)`` (column, row) has its centre at ``(i + 0.5, j + 0.5)``;
    ``K = [[f, 0, c], [0, f, c], [0, 0, 1]]`` with ``c = size / 2`` and
    ``f = c / tan(fov / 2)`` pixels, so a camera-frame point ``(X, Y, Z)`` lands at
    ``u = f X / Z + c``, ``v = f Y / Z + c`` (continuous coordinates).

Layouts (:func:`make_views`)
    ``"cube+corners"`` (the default, 14 views of 90 degrees): the 6 faces of a cube map (front at
    the image centre, right, back across the left/right seam, left, up, down) plus 8 views
    towards the cube's corners (longitude +-45 / +-135 degrees, latitude +-35.26 degrees).
    Plain cube faces only touch along their edges, so no per-view blending or scale alignment
    is possible there and the model's errors near a face border meet head-on at a visible
    crease. The corner views sit exactly on the cube's edges and corners, where the faces are
    at their most stretched: every direction is within 35.3 degrees of some view's axis (the
    cube's edge midpoints are the farthest), every face overlaps four corner views, and every
    corner view three faces, which is what the feathered blend and the median-ratio scale
    alignment of :mod:`.fusion` need. The seam (longitude 180) runs through the middle of the
    back face and the poles sit at the centres of the up and down faces, so neither is a view
    border. 90 degrees keeps each view close to the fields of view monocular models were
    trained on (wider views stretch their borders).
    ``"cube"`` (6 faces) is kept for comparison and for models too slow for 14 views.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Tuple

import cv2
import numpy as np

from .. import geometry
from ..errors import InputError

__all__ = ["ViewSet", "LAYOUTS", "make_views", "view_rotation", "sample_views", "working_erp_width"]

#: Layout name -> (view names, longitudes and latitudes in degrees).
_CORNER_LAT = math.degrees(math.atan(1.0 / math.sqrt(2.0)))  # 35.26 degrees: the cube's corners
_CUBE = (("front", 0.0, 0.0), ("right", 90.0, 0.0), ("back", 180.0, 0.0), ("left", -90.0, 0.0),
         ("up", 0.0, 90.0), ("down", 0.0, -90.0))
_CORNERS = tuple((f"{'up' if lat > 0 else 'down'}-{lon:+.0f}", lon, lat)
                 for lat in (_CORNER_LAT, -_CORNER_LAT) for lon in (45.0, 135.0, -135.0, -45.0))
LAYOUTS = {"cube+corners": _CUBE + _CORNERS, "cube": _CUBE}


def view_rotation(lon: float, lat: float) -> np.ndarray:
    """Camera-to-world rotation ``(3, 3)`` float64 of an upright view looking at (lon, lat) radians.

    Columns: right, down, forward (world frame). At the poles "right" follows ``lon``.
    """
    fwd = geometry.lonlat_to_ray(lon, lat)
    right = np.array([-math.sin(lon), -math.cos(lon), 0.0])
    down = np.cross(fwd, right)
    return np.stack([right, down / np.linalg.norm(down), fwd], axis=1)


@dataclass(frozen=True)
class ViewSet:
    """``N`` square pinhole views sharing one size and field of view (see the module docstring).

    rotations: ``(N, 3, 3)`` float64 camera-to-world; fov_deg: horizontal = vertical field of
    view in degrees; size: pixels per side; names: one per view.
    """

    rotations: np.ndarray
    fov_deg: float
    size: int
    names: Tuple[str, ...] = field(default=())

    def __post_init__(self):
        if not 0.0 < self.fov_deg < 180.0:
            raise InputError(f"a perspective view needs a field of view in (0, 180) degrees, got {self.fov_deg}")
        if self.size < 2:
            raise InputError(f"view size must be at least 2 pixels, got {self.size}")

    def __len__(self) -> int:
        return len(self.rotations)

    @property
    def focal(self) -> float:
        """Focal length in pixels: ``(size / 2) / tan(fov / 2)``."""
        return 0.5 * self.size / math.tan(math.radians(self.fov_deg) / 2.0)

    @property
    def intrinsics(self) -> np.ndarray:
        """``K`` ``(3, 3)`` float64 (pixel centres at ``i + 0.5``, principal point at ``size / 2``)."""
        f, c = self.focal, self.size / 2.0
        return np.array([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]])

    @property
    def axes(self) -> np.ndarray:
        """Unit optical axes (forward directions) ``(N, 3)`` in the world frame."""
        return self.rotations[:, :, 2]

    def camera_rays(self) -> np.ndarray:
        """Camera-frame rays of every pixel centre, ``(size, size, 3)`` float64, scaled so that z = 1."""
        c = (np.arange(self.size, dtype=np.float64) + 0.5 - self.size / 2.0) / self.focal
        x, y = np.meshgrid(c, c)  # x varies along columns, y along rows
        return np.stack([x, y, np.ones_like(x)], axis=-1)

    def world_rays(self, index: int) -> np.ndarray:
        """Unit world-frame rays of view ``index``'s pixel centres, ``(size, size, 3)`` float64."""
        r = self.camera_rays() @ self.rotations[index].T
        return r / np.linalg.norm(r, axis=-1, keepdims=True)

    def cos_to_axis(self) -> np.ndarray:
        """``cos`` of the angle between each pixel's ray and the optical axis, ``(size, size)``.

        A model's z-depth ``z`` (along the axis) and the ray distance ``d`` of
        :mod:`panosamic.geometry` are related by ``z = d * cos``."""
        r = self.camera_rays()
        return 1.0 / np.linalg.norm(r, axis=-1)

    def with_size(self, size: int) -> "ViewSet":
        return ViewSet(self.rotations, self.fov_deg, int(size), self.names)


def make_views(layout: str = "cube+corners", size: int = 518, fov_deg: float = 90.0) -> ViewSet:
    """The views of ``layout`` (:data:`LAYOUTS`) at ``size`` pixels and ``fov_deg`` degrees."""
    try:
        spec = LAYOUTS[layout]
    except KeyError:
        raise InputError(f"unknown view layout {layout!r}; choose one of {', '.join(LAYOUTS)}") from None
    rots = np.stack([view_rotation(math.radians(lon), math.radians(lat)) for _, lon, lat in spec])
    return ViewSet(rots, float(fov_deg), int(size), tuple(n for n, _, _ in spec))


def working_erp_width(views: ViewSet) -> int:
    """The ERP width whose pixels are as wide as a view's central pixel (``2 pi f``), even."""
    return int(2 * math.ceil(math.pi * views.focal))


def _sphere_padded(erp: np.ndarray, p: int) -> np.ndarray:
    """ERP padded by ``p`` pixels as the sphere continues it: columns wrap around the seam, rows
    beyond a pole are the rows next to it seen half a turn away (see `demo.sphere_pad`)."""
    w = erp.shape[1]
    top = np.roll(erp[:p][::-1], w // 2, axis=1)
    bottom = np.roll(erp[-p:][::-1], w // 2, axis=1)
    a = np.concatenate([top, erp, bottom], axis=0)
    return np.concatenate([a[:, -p:], a, a[:, :p]], axis=1)


def sample_views(erp: np.ndarray, views: ViewSet, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """Render ``views`` from an ERP image: ``(H, W)`` or ``(H, W, C)`` -> ``(N, size, size[, C])``.

    Same dtype as ``erp``. Every view pixel takes the ERP at its ray's (lon, lat) with cv2's
    ``remap`` (``interpolation``: bilinear by default), on an ERP padded as the sphere
    continues it, so views across the left/right seam or over a pole interpolate between true
    neighbours. The ERP is first area-shrunk to :func:`working_erp_width` if it is larger (an
    8192 x 4096 photo is not sampled at full size: bounded work and no aliasing).
    """
    a = np.asarray(erp)
    if a.ndim not in (2, 3):
        raise InputError(f"expected an (H, W) or (H, W, C) ERP image, got shape {a.shape}")
    H, W = a.shape[:2]
    target = working_erp_width(views)
    if W > target:
        a = geometry.resize_erp(a, target // 2, target)
        H, W = a.shape[:2]
    p = 2
    padded = _sphere_padded(a, p)
    if padded.dtype == np.float64:
        padded = padded.astype(np.float32)
    out = []
    for i in range(len(views)):
        lon, lat = geometry.ray_to_lonlat(views.world_rays(i))
        x, y = geometry.lonlat_to_erp(lon, lat, W, H)
        map_x = (x - 0.5 + p).astype(np.float32)
        map_y = (y - 0.5 + p).astype(np.float32)
        out.append(cv2.remap(padded, map_x, map_y, interpolation=interpolation, borderMode=cv2.BORDER_REPLICATE))
    return np.stack(out).astype(a.dtype, copy=False)
