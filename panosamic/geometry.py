"""Spherical geometry of equirectangular (ERP) panoramas.

Conventions used everywhere in PanoSAMic Studio
-----------------------------------------------
Image (pixel) coordinates
    An ERP image has ``H`` rows and ``W`` columns (normally ``W == 2 * H``).
    Coordinates refer to *pixel centres*: the pixel in column ``i`` and row ``j``
    has its centre at ``x = i + 0.5``, ``y = j + 0.5``; continuous ``x`` lies in
    ``[0, W)`` and ``y`` in ``[0, H)``.

    * ``x`` runs left -> right and maps linearly to longitude ``lon`` in
      ``[-pi, pi)``: ``lon = (x / W) * 2 pi - pi``. The image centre looks
      along ``lon = 0``; the left/right border (the *seam*) is ``lon = +-pi``,
      straight behind the camera.
    * ``y`` runs top -> bottom and maps to latitude ``lat`` in
      ``[+pi/2, -pi/2]``: ``lat = pi/2 - (y / H) * pi``. Row 0 touches the
      zenith (straight up), the last row the nadir.

    Angles are radians throughout.

World / camera frame (right-handed, metres, z up)
    ``+x`` is the viewing direction of the image centre (``lon = 0, lat = 0``),
    ``+y`` points to the viewer's *left* (``lon = -pi/2``, column ``W/4``),
    ``+z`` points up (``lat = +pi/2``). ``x`` forward, ``y`` left, ``z`` up is a
    right-handed frame (``x cross y = z``). Longitude grows to the right, i.e.
    clockwise when seen from above, so the unit ray of ``(lon, lat)`` is::

        ray = (cos(lat) cos(lon), -cos(lat) sin(lon), sin(lat))

    The camera sits at the origin of this frame; :func:`depth_to_points`
    returns points relative to the camera, in metres.

Depth
    Depth is the *Euclidean distance* from the camera centre along the pixel's
    ray (as in Stanford2D3DS panoramas), in metres; ``0`` (or non-finite) means
    "no measurement".

Surface normals (encoding chosen to follow Stanford2D3DS)
    The Stanford2D3DS documentation states that its normal images are
    "127.5-centered per-channel" and that, for panoramas, "the normals are
    relative to the global coordinate system", whose z axis is up; pixels
    without geometry are grey ``#808080``. We therefore use:

    * normals are unit vectors in the *world frame above* (not rotated with
      each pixel's ray), pointing out of the surface towards the camera;
    * ``RGB = round(127.5 * (n + 1))`` clipped to ``0..255``: R = x, G = y,
      B = z. The floor is ``(128, 128, 255)``, the ceiling ``(128, 128, 0)``;
    * invalid / unknown normals are ``(128, 128, 128)`` and decode to the zero
      vector.

    What we cannot match exactly is the yaw of Stanford's global frame: it is
    fixed per building area, not per panorama, so for a panorama the horizontal
    axes are an arbitrary rotation about z. Our choice (x = direction of the
    image centre) is one such rotation; the vertical (z, blue channel) agrees.

Seam helpers
    Dual-view models see the panorama twice: view 0 as given and view 1 rolled
    by ``+W//2`` columns (a 180 degree yaw) so that the seam lands in the middle.
    :func:`roll_half` / :func:`unroll_half` move images, :func:`x_to_view` /
    :func:`x_from_view` move x coordinates between the two views.

Everything here is numpy; only :func:`roll_half` / :func:`unroll_half` and
:func:`x_to_view` / :func:`x_from_view` also accept torch tensors.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from .errors import InputError

__all__ = [
    "erp_to_lonlat", "lonlat_to_erp", "degrees_to_pixels", "lonlat_to_ray", "ray_to_lonlat", "erp_rays",
    "depth_to_points", "normals_from_depth", "encode_normals", "decode_normals",
    "INVALID_NORMAL_RGB", "pixel_areas", "class_shares", "roll_half", "unroll_half",
    "x_to_view", "x_from_view", "resize_erp",
]

#: RGB of a pixel without a normal (Stanford2D3DS "missing mesh" colour).
INVALID_NORMAL_RGB = (128, 128, 128)


# --------------------------------------------------------------------------- angles <-> pixels
def erp_to_lonlat(x, y, width: int, height: int) -> Tuple[np.ndarray, np.ndarray]:
    """Continuous ERP coordinates -> (lon, lat) in radians.

    ``x`` in ``[0, W)`` and ``y`` in ``[0, H)`` (any broadcastable shapes; pixel
    ``(i, j)`` has its centre at ``(i + 0.5, j + 0.5)``). Returns arrays of the
    broadcast shape: ``lon`` in ``[-pi, pi)``, ``lat`` in ``[pi/2, -pi/2]``.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    lon = x / width * (2.0 * np.pi) - np.pi
    lat = np.pi / 2.0 - y / height * np.pi
    return np.broadcast_arrays(lon, lat)


def lonlat_to_erp(lon, lat, width: int, height: int) -> Tuple[np.ndarray, np.ndarray]:
    """(lon, lat) in radians -> continuous ERP ``(x, y)``.

    ``x`` is wrapped into ``[0, W)`` (any longitude is accepted); ``y`` is in
    ``[0, H]`` for latitudes in ``[-pi/2, pi/2]``. Pixel indices are
    ``floor(x), floor(y)`` (clip ``y`` to ``H - 1`` for the nadir itself).
    """
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    x = np.mod((lon + np.pi) / (2.0 * np.pi) * width, width)
    # np.mod can return exactly `width` for tiny negative inputs; fold it back.
    x = np.where(x >= width, x - width, x)
    y = (np.pi / 2.0 - lat) / np.pi * height
    return np.broadcast_arrays(x, y)


def degrees_to_pixels(lon_deg, lat_deg, width: int, height: int) -> Tuple[np.ndarray, np.ndarray]:
    """Directions in **degrees** (what prompts by direction use) -> continuous ERP ``(x, y)``.

    ``lon`` in ``[-180, 180]``, ``lat`` in ``[-90, 90]``; anything else raises
    `panosamic.errors.InputError`. Unlike :func:`lonlat_to_erp` nothing is wrapped:
    ``lon = 180`` maps to ``x = W`` and ``lon = -180`` to ``x = 0`` (both on the seam), so a
    box from lon 170 to 180 stays a plain box and a direction gives exactly the pixel
    prompt ``x = (lon + 180) / 360 * W``, ``y = (90 - lat) / 180 * H``.
    """
    from .errors import InputError

    lon = np.asarray(lon_deg, dtype=np.float64)
    lat = np.asarray(lat_deg, dtype=np.float64)
    bad = ~(np.isfinite(lon) & np.isfinite(lat) & (np.abs(lon) <= 180.0) & (np.abs(lat) <= 90.0))
    if bad.any():
        lo, la = np.broadcast_arrays(lon, lat)
        i = np.flatnonzero(np.broadcast_to(bad, lo.shape))[0]
        raise InputError(f"direction ({lo.flat[i]:g}, {la.flat[i]:g}) is not a longitude in -180..180 and a "
                         "latitude in -90..90 (degrees)")
    x = (lon + 180.0) / 360.0 * width
    y = (90.0 - lat) / 180.0 * height
    return np.broadcast_arrays(x, y)


def lonlat_to_ray(lon, lat) -> np.ndarray:
    """(lon, lat) radians, shapes ``S`` -> unit rays ``S + (3,)`` in the world frame (x fwd, y left, z up)."""
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    lon, lat = np.broadcast_arrays(lon, lat)
    c = np.cos(lat)
    return np.stack([c * np.cos(lon), -c * np.sin(lon), np.sin(lat)], axis=-1)


def ray_to_lonlat(rays) -> Tuple[np.ndarray, np.ndarray]:
    """Rays ``(..., 3)`` (any non-zero length) -> (lon, lat) radians, each of shape ``(...)``.

    ``lon`` is in ``[-pi, pi]`` (``atan2``), ``lat`` in ``[-pi/2, pi/2]``.
    """
    rays = np.asarray(rays, dtype=np.float64)
    x, y, z = rays[..., 0], rays[..., 1], rays[..., 2]
    lon = np.arctan2(-y, x)
    lat = np.arctan2(z, np.hypot(x, y))
    return lon, lat


def erp_rays(height: int, width: int) -> np.ndarray:
    """Unit ray of every pixel centre: ``(H, W, 3)`` float64 in the world frame."""
    x = np.arange(width, dtype=np.float64) + 0.5
    y = np.arange(height, dtype=np.float64) + 0.5
    lon, lat = erp_to_lonlat(x[None, :], y[:, None], width, height)
    return lonlat_to_ray(lon, lat)


# --------------------------------------------------------------------------- depth and normals
def depth_to_points(depth, valid: Optional[np.ndarray] = None) -> np.ndarray:
    """Euclidean ERP depth ``(H, W)`` metres -> camera-centred points ``(H, W, 3)`` metres (float64).

    ``valid`` is an optional ``(H, W)`` bool mask; pixels that are invalid (mask
    False, depth <= 0 or non-finite) get the point ``(0, 0, 0)``.
    """
    depth = np.asarray(depth, dtype=np.float64)
    if depth.ndim != 2:
        raise InputError(f"depth must be (H, W), got shape {depth.shape}")
    ok = np.isfinite(depth) & (depth > 0)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)
    d = np.where(ok, depth, 0.0)
    return erp_rays(*depth.shape) * d[..., None]


def normals_from_depth(depth, valid: Optional[np.ndarray] = None) -> np.ndarray:
    """Estimate unit surface normals ``(H, W, 3)`` (world frame, facing the camera) from ERP depth (metres).

    The depth is lifted to 3D points; the tangent along each image axis is a
    one-sided difference taken on the side whose neighbour is closer in depth
    (relative), which keeps normals sharp at depth discontinuities. Columns
    wrap around (column ``W-1`` neighbours column 0), rows are clamped at the
    poles. Normals are flipped to face the camera. Pixels with invalid depth,
    or whose neighbours are all invalid, get the zero vector.
    """
    depth = np.asarray(depth, dtype=np.float64)
    ok = np.isfinite(depth) & (depth > 0)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)
    d = np.where(ok, depth, 0.0)
    pts = depth_to_points(d)
    big = 1e30

    def tangent(axis: int) -> Tuple[np.ndarray, np.ndarray]:
        if axis == 1:  # x: wrap around the seam
            nxt_p, prv_p = np.roll(pts, -1, axis=1), np.roll(pts, 1, axis=1)
            nxt_d, prv_d = np.roll(d, -1, axis=1), np.roll(d, 1, axis=1)
            nxt_ok, prv_ok = np.roll(ok, -1, axis=1), np.roll(ok, 1, axis=1)
        else:  # y: clamp at the poles (edge neighbour = the pixel itself -> not usable)
            nxt_p = np.concatenate([pts[1:], pts[-1:]], axis=0)
            prv_p = np.concatenate([pts[:1], pts[:-1]], axis=0)
            nxt_d = np.concatenate([d[1:], d[-1:]], axis=0)
            prv_d = np.concatenate([d[:1], d[:-1]], axis=0)
            nxt_ok = np.concatenate([ok[1:], np.zeros_like(ok[-1:])], axis=0)
            prv_ok = np.concatenate([np.zeros_like(ok[:1]), ok[:-1]], axis=0)
        fwd = nxt_p - pts
        bwd = pts - prv_p
        jump_f = np.where(nxt_ok, np.abs(nxt_d - d), big)
        jump_b = np.where(prv_ok, np.abs(d - prv_d), big)
        use_f = jump_f <= jump_b
        t = np.where(use_f[..., None], fwd, bwd)
        usable = ok & (np.minimum(jump_f, jump_b) < big)
        return t, usable

    tx, okx = tangent(1)
    ty, oky = tangent(0)
    n = np.cross(tx, ty)
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    good = okx & oky & (norm[..., 0] > 1e-12)
    n = np.where(good[..., None], n / np.maximum(norm, 1e-12), 0.0)
    flip = np.sum(n * pts, axis=-1) > 0  # must point back towards the camera
    n[flip] *= -1.0
    return n


def normals_for_model(depth, height: int, width: int) -> np.ndarray:
    """Unit normals ``(height, width, 3)`` float32 estimated from ERP depth (metres, any 2:1 size),
    for a checkpoint that reads normals when only depth was given; zero vectors where unknown.

    Same frame and orientation as `normals_from_depth` (world frame: x forward at the image
    centre, y left, z up; facing the camera), which is what the RGB-D-N checkpoints read once
    encoded as ``127.5 * (n + 1)``. The depth is first shrunk by nearest neighbour to at most
    twice ``(height, width)`` (averaging would blend invalid 0 pixels into their neighbours, and
    at 8192x4096 each float64 array of `normals_from_depth` would take 0.8 GB), the normals are
    taken there and area-averaged to ``(height, width)``, then renormalised.
    """
    d = np.asarray(depth, dtype=np.float32)
    H, W = d.shape[:2]
    h2, w2 = min(H, 2 * height), min(W, 2 * width)
    d = resize_erp(d, h2, w2, nearest=True) if (h2, w2) != (H, W) else d
    n = normals_from_depth(d).astype(np.float32)
    if (h2, w2) != (height, width):
        n = resize_erp(n, height, width)
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    return np.where(norm > 0.5, n / np.maximum(norm, 1e-6), 0.0).astype(np.float32)


def encode_normals(normals, valid: Optional[np.ndarray] = None) -> np.ndarray:
    """Unit normals ``(H, W, 3)`` float -> uint8 RGB ``(H, W, 3)``: ``round(127.5 * (n + 1))``.

    Zero vectors (and pixels where ``valid`` is False) become ``(128, 128, 128)``.
    """
    n = np.asarray(normals, dtype=np.float64)
    if n.shape[-1] != 3:
        raise InputError(f"normals must have 3 components in the last axis, got shape {n.shape}")
    rgb = np.clip(np.rint(127.5 * (n + 1.0)), 0, 255).astype(np.uint8)
    bad = np.linalg.norm(n, axis=-1) < 1e-6
    if valid is not None:
        bad |= ~np.asarray(valid, dtype=bool)
    rgb[bad] = INVALID_NORMAL_RGB
    return rgb


def decode_normals(rgb) -> np.ndarray:
    """uint8 RGB normal image ``(H, W, 3)`` -> unit vectors ``(H, W, 3)`` float64.

    Inverse of :func:`encode_normals`; ``(128, 128, 128)`` (and anything of
    length < 0.05 after decoding) gives the zero vector.
    """
    rgb = np.asarray(rgb)
    if rgb.shape[-1] != 3:
        raise InputError(f"normal image must have 3 channels, got shape {rgb.shape}")
    n = rgb.astype(np.float64) / 127.5 - 1.0
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    return np.where(norm > 0.05, n / np.maximum(norm, 1e-12), 0.0)


# --------------------------------------------------------------------------- areas
def pixel_areas(height: int, width: int) -> np.ndarray:
    """Solid angle (steradians) of every pixel, ``(H, W)`` float64, summing to ``4 pi``.

    Row ``j`` spans latitudes ``lat_j +- h`` (``h = pi / 2H``) and ``2 pi / W`` of
    longitude, so its exact solid angle is ``(2 pi / W) * 2 sin(h) cos(lat_j)``:
    proportional to ``cos(latitude)`` of the pixel centre.
    """
    y = np.arange(height, dtype=np.float64) + 0.5
    lat = np.pi / 2.0 - y / height * np.pi
    half = np.pi / (2.0 * height)
    row = (2.0 * np.pi / width) * 2.0 * np.sin(half) * np.cos(lat)
    return np.repeat(row[:, None], width, axis=1)


def class_shares(labels, num_classes: int, weighted: bool = True) -> np.ndarray:
    """Fraction of the panorama covered by each class: ``(K,)`` float64 summing to 1.

    ``labels`` is ``(H, W)`` of class indices; values outside ``0..K-1`` (e.g.
    255 or -1 for "void") are left out. With ``weighted=True`` every pixel counts
    with its solid angle (:func:`pixel_areas`, i.e. cos(latitude)), which gives
    the share of the *sphere*; otherwise plain pixel counts. All zeros if no
    pixel is valid.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise InputError(f"labels must be (H, W), got shape {labels.shape}")
    lab = labels.astype(np.int64)
    valid = (lab >= 0) & (lab < num_classes)
    w = pixel_areas(*labels.shape) if weighted else np.ones(labels.shape)
    out = np.bincount(lab[valid], weights=w[valid], minlength=num_classes)[:num_classes]
    total = out.sum()
    return out / total if total > 0 else out


# --------------------------------------------------------------------------- seam / dual view
def _is_torch(a: Any) -> bool:
    return type(a).__module__.startswith("torch")


def roll_half(array, axis: int = -1):
    """Roll an image by ``+W//2`` along ``axis`` (the width): view 0 -> view 1.

    Column ``x`` of the input is column ``(x + W//2) mod W`` of the output.
    Works on numpy arrays and torch tensors (returns the same kind).
    """
    if _is_torch(array):
        import torch

        return torch.roll(array, shifts=array.shape[axis] // 2, dims=axis)
    array = np.asarray(array)
    return np.roll(array, array.shape[axis] // 2, axis=axis)


def unroll_half(array, axis: int = -1):
    """Inverse of :func:`roll_half`: roll by ``-(W//2)`` along ``axis`` (view 1 -> view 0).

    ``unroll_half(roll_half(a)) == a`` for any width, odd included.
    """
    if _is_torch(array):
        import torch

        return torch.roll(array, shifts=-(array.shape[axis] // 2), dims=axis)
    array = np.asarray(array)
    return np.roll(array, -(array.shape[axis] // 2), axis=axis)


def x_to_view(x, width: int, view: int):
    """x coordinate in view 0 (the original panorama) -> x in ``view``.

    View 0: unchanged. View 1: ``(x + W//2) mod W`` (equal to ``(x + W/2) mod W``
    for the even widths of ERP images). Works on python numbers, numpy arrays
    and torch tensors, integer pixel indices or continuous coordinates.
    """
    if view == 0:
        return x
    if view != 1:
        raise InputError(f"view must be 0 or 1, got {view}")
    return (x + width // 2) % width


def x_from_view(x, width: int, view: int):
    """x coordinate in ``view`` -> x in view 0; inverse of :func:`x_to_view`."""
    if view == 0:
        return x
    if view != 1:
        raise InputError(f"view must be 0 or 1, got {view}")
    return (x - width // 2) % width


# --------------------------------------------------------------------------- resizing
def nearest_indices(src: int, dst: int) -> np.ndarray:
    """Source index of each of `dst` destination pixel centres when resizing `src` pixels by
    nearest neighbour (pixel-centre aligned; the rule of `resize_erp(..., nearest=True)`)."""
    idx = np.floor((np.arange(dst, dtype=np.float64) + 0.5) * src / dst).astype(np.int64)
    return np.clip(idx, 0, src - 1)


def resize_erp(array, height: int, width: int, nearest: bool = False) -> np.ndarray:
    """Resize an ERP image ``(H, W)`` or ``(H, W, C)`` to ``(height, width)``.

    * ``nearest=True`` (labels, masks, any dtype): each output pixel centre takes
      the source pixel that contains it (same as cv2's ``INTER_NEAREST_EXACT``).
      No value ever mixes across the seam.
    * Shrinking in both directions: cv2 ``INTER_AREA``. Every output pixel
      averages exactly the source pixels inside its footprint; footprints never
      straddle the seam, so no wrap is needed.
    * Otherwise (enlarging in at least one direction): bilinear interpolation
      (cv2 ``remap``, ``INTER_LINEAR``) at pixel-centre aligned positions with
      one column of *circular* padding on each side, so the first and last
      output columns interpolate between source columns ``W-1`` and ``0`` as
      neighbours on the sphere should; rows are clamped at the poles.

    Float images keep their dtype (float64 is computed in float32 by cv2 for
    the bilinear path); integer images are rounded back to their dtype.
    """
    import cv2

    a = np.asarray(array)
    if a.ndim not in (2, 3):
        raise InputError(f"expected an (H, W) or (H, W, C) image, got shape {a.shape}")
    h, w = a.shape[:2]
    if (h, w) == (height, width):
        return a.copy()
    if nearest:
        return a[nearest_indices(h, height)][:, nearest_indices(w, width)]

    work = a
    if a.dtype == bool:
        work = a.astype(np.float32)
    elif a.dtype not in (np.uint8, np.uint16, np.int16, np.float32, np.float64):
        work = a.astype(np.float32)

    def _apply(img: np.ndarray) -> np.ndarray:
        if height <= h and width <= w:
            return cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
        padded = np.concatenate([img[:, -1:], img, img[:, :1]], axis=1)
        if padded.dtype == np.float64:
            padded = padded.astype(np.float32)
        mx = (np.arange(width, dtype=np.float32) + 0.5) * (w / width) - 0.5 + 1.0
        my = np.clip((np.arange(height, dtype=np.float32) + 0.5) * (h / height) - 0.5, 0, h - 1)
        map_x = np.broadcast_to(mx[None, :], (height, width)).astype(np.float32)
        map_y = np.broadcast_to(my[:, None], (height, width)).astype(np.float32)
        out = cv2.remap(padded, map_x, map_y, interpolation=cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE)
        return out

    if work.ndim == 3 and work.shape[2] > 4:  # cv2 handles at most 4 channels per call here
        out = np.concatenate([_apply(np.ascontiguousarray(work[..., i:i + 4])).reshape(height, width, -1)
                              for i in range(0, work.shape[2], 4)], axis=2)
    else:
        out = _apply(np.ascontiguousarray(work))
        if work.ndim == 3 and out.ndim == 2:
            out = out[..., None]
    if a.dtype == bool:
        return out >= 0.5
    if np.issubdtype(a.dtype, np.integer) and out.dtype != a.dtype:
        info = np.iinfo(a.dtype)
        return np.clip(np.rint(out), info.min, info.max).astype(a.dtype)
    if a.dtype == np.float64:
        return out.astype(np.float64)
    return out.astype(a.dtype, copy=False)
