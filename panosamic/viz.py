"""Pictures and files made from a semantic ERP panorama.

Everything here works on plain numpy arrays (no model, no UI):

* overlays of a label map / mask / prompts on the photo (`overlay`, `draw_prompts`),
* per-class statistics weighted by the solid angle of each pixel (`class_stats`)
  and an HTML legend (`legend_html`),
* plotly figures: the panorama on a sphere (`sphere_figure`) and a coloured point
  cloud at true distances (`point_cloud_figure`),
* files: label / colour PNGs, COCO RLE (`encode_rle`, `decode_rle`), a binary glTF
  point cloud (`write_glb`, `read_glb`).

Geometry follows `panosamic.geometry` (pixel centres, lon = x/W*2pi - pi, world frame
x forward / y left / z up, metres; depth is the Euclidean distance along the ray).
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import struct
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import geometry

MASK_COLOR = (30, 144, 255)   # preview of the selected candidate mask (dodger blue)
POS_COLOR = (40, 220, 60)
NEG_COLOR = (235, 40, 40)
BOX_COLOR = (255, 210, 0)


# --------------------------------------------------------------------------- geometry
# Conventions and maths live in panosamic.geometry (pixel centres, lon/lat, x fwd / y left / z up).

def erp_directions(h: int, w: int) -> np.ndarray:
    """(H, W, 3) unit view rays of the pixel centres (`geometry.erp_rays`)."""
    return geometry.erp_rays(h, w)


# --------------------------------------------------------------------------- statistics

def class_stats(labels: np.ndarray, classes: Sequence[str], palette: np.ndarray,
                depth: Optional[np.ndarray] = None) -> List[Dict]:
    """One dict per class: index, name, color [r, g, b], hex (#rrggbb), pixels, pixel_share,
    sphere_share, steradians and, with depth, median_distance_m (valid depth only, else None).
    The app's downloads and the CLI's <stem>_stats.json share this format.

    sphere_share weights each pixel by its solid angle (cos latitude); shares sum to 1
    over the classes present (labels outside 0..K-1 count as unlabelled).
    """
    labels = np.asarray(labels)
    h, w = labels.shape
    k = len(classes)
    sa = geometry.pixel_areas(h, w)
    valid = (labels >= 0) & (labels < k)
    flat = np.where(valid, labels, k).ravel()
    pixels = np.bincount(flat, minlength=k + 1)[:k]
    sr = np.bincount(flat, weights=sa.ravel(), minlength=k + 1)[:k]
    total_px = max(int(valid.sum()), 1)
    total_sr = float(sr.sum()) or 1.0
    medians: List[Optional[float]] = [None] * k
    if depth is not None:
        d = np.asarray(depth, dtype=np.float64)
        good = valid & np.isfinite(d) & (d > 0)
        for c in np.flatnonzero(pixels):
            sel = good & (labels == c)
            if sel.any():
                medians[c] = round(float(np.median(d[sel])), 4)
    out = []
    for c in range(k):
        r, g, b = (int(x) for x in palette[c])
        row = {
            "index": c,
            "name": classes[c],
            "color": [r, g, b],
            "hex": f"#{r:02x}{g:02x}{b:02x}",
            "pixels": int(pixels[c]),
            "pixel_share": float(pixels[c]) / total_px,
            "sphere_share": float(sr[c]) / total_sr,
            "steradians": float(sr[c]),
        }
        if depth is not None:
            row["median_distance_m"] = medians[c]
        out.append(row)
    return out


def stats_csv(stats: Sequence[Dict]) -> str:
    """The rows of `class_stats` as CSV text (header line first); the colour as its hex code."""
    if not stats:
        return ""
    out = io.StringIO()
    fields = [k for k in stats[0] if k != "hex"]
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: (row["hex"] if k == "color" else row[k]) for k in fields} for row in stats)
    return out.getvalue()


def legend_html(stats: Sequence[Dict], highlight: Optional[int] = None, show_absent: bool = False) -> str:
    """A compact legend: colour swatch, class name and share of the sphere, largest first."""
    rows = [s for s in stats if show_absent or s["pixels"] > 0]
    rows.sort(key=lambda s: -s["sphere_share"])
    items = []
    for s in rows:
        pct = 100.0 * s["sphere_share"]
        bold = " font-weight:600;" if highlight is not None and s["index"] == highlight else ""
        items.append(
            '<div class="pano-legend-row" style="display:flex;align-items:center;gap:8px;'
            f'padding:2px 0;{bold}" title="{s["pixels"]} px, {s["steradians"]:.3f} sr">'
            f'<span style="display:inline-block;width:14px;height:14px;border-radius:3px;'
            f'background:{s["hex"]};border:1px solid rgba(0,0,0,.25);flex:none"></span>'
            f'<span style="flex:1">{html.escape(s["name"])}</span>'
            f'<span style="display:inline-block;width:80px;height:6px;background:rgba(128,128,128,.2);'
            f'border-radius:3px;overflow:hidden;flex:none"><span style="display:block;height:100%;'
            f'width:{min(pct, 100):.1f}%;background:{s["hex"]}"></span></span>'
            f'<span style="width:52px;text-align:right;font-variant-numeric:tabular-nums">{pct:.1f}%</span>'
            "</div>"
        )
    if not items:
        return '<div class="pano-legend"><em>No classes yet: run the segmentation.</em></div>'
    return ('<div class="pano-legend"><div style="font-size:.85em;opacity:.7;margin-bottom:4px">'
            "Share of the sphere (solid-angle weighted)</div>" + "".join(items) + "</div>")


# --------------------------------------------------------------------------- 2D overlays

def resize_for_display(image: np.ndarray, max_width: int) -> np.ndarray:
    """Downscale (area) so that the width is at most `max_width`; never upscales."""
    import cv2

    h, w = image.shape[:2]
    if w <= max_width:
        return image
    nw = int(max_width)
    nh = max(1, int(round(h * nw / w)))
    return cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)


def _resize_nearest(arr: np.ndarray, h: int, w: int) -> np.ndarray:
    """Nearest-neighbour resize of a 2D integer/bool map (no interpolation of classes)."""
    ah, aw = arr.shape[:2]
    if (ah, aw) == (h, w):
        return arr
    rows = np.minimum(((np.arange(h) + 0.5) * ah / h).astype(np.int64), ah - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * aw / w).astype(np.int64), aw - 1)
    return arr[rows[:, None], cols[None, :]]


def overlay(image: np.ndarray, labels: Optional[np.ndarray], palette: np.ndarray, opacity: float = 0.5,
            mask: Optional[np.ndarray] = None, max_width: Optional[int] = None,
            mask_color: Tuple[int, int, int] = MASK_COLOR) -> np.ndarray:
    """Photo with the semantic colours blended in at `opacity` (0 = photo, 1 = colours only),
    an optional highlighted mask (tinted, with a white outline), downscaled to `max_width`.
    Returns uint8 RGB at display size.
    """
    import cv2

    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    img = img[..., :3].astype(np.uint8)
    if max_width:
        img = resize_for_display(img, max_width)
    h, w = img.shape[:2]
    out = img
    if labels is not None and opacity > 0:
        lab = _resize_nearest(np.asarray(labels), h, w)
        k = len(palette)
        lut = np.zeros((k + 1, 3), np.uint8)
        lut[:k] = palette
        idx = np.where((lab >= 0) & (lab < k), lab, k)
        colors = lut[idx]
        a = float(np.clip(opacity, 0.0, 1.0))
        out = cv2.addWeighted(img, 1.0 - a, colors, a, 0.0)
        invalid = idx == k
        if invalid.any():  # unlabelled pixels keep the photo
            out[invalid] = img[invalid]
    if mask is not None:
        m8 = _resize_nearest(np.asarray(mask).astype(np.uint8), h, w)
        tint = np.empty_like(out)
        tint[:] = np.asarray(mask_color, np.uint8)
        tinted = cv2.addWeighted(out, 0.45, tint, 0.55, 0.0)
        out = np.where(m8[..., None].astype(bool), tinted, out)
        edge = cv2.morphologyEx(m8, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)).astype(bool)
        out[edge] = (255, 255, 255)
    return np.ascontiguousarray(out)


def draw_prompts(display: np.ndarray, scale: float, points: Sequence[Sequence[float]] = (),
                 point_labels: Sequence[int] = (), box: Optional[Sequence[float]] = None,
                 pending_corner: Optional[Sequence[float]] = None) -> np.ndarray:
    """Draws prompts (input-image coordinates, times `scale` = display/input) on a copy of `display`.

    Positive points green, negative red, the box yellow; a box whose x1 > x2 wraps across
    the left/right seam and is drawn as two open rectangles at the borders.
    """
    import cv2

    out = np.ascontiguousarray(display.copy())
    h, w = out.shape[:2]
    r = max(5, int(round(w / 150)))
    t = max(1, r // 3)
    if box is not None:
        x1, y1, x2, y2 = (float(v) * scale for v in box)
        y1, y2 = min(y1, y2), max(y1, y2)
        p = lambda x, y: (int(round(x)), int(round(y)))  # noqa: E731
        if x1 <= x2:
            cv2.rectangle(out, p(x1, y1), p(x2, y2), BOX_COLOR, t + 1, cv2.LINE_AA)
        else:  # wraps: [x1, W) and [0, x2]
            for a, b in ((p(x1, y1), p(w + 10, y2)), (p(-10, y1), p(x2, y2))):
                cv2.rectangle(out, a, b, BOX_COLOR, t + 1, cv2.LINE_AA)
    if pending_corner is not None:
        cx, cy = (int(round(float(v) * scale)) for v in pending_corner)
        cv2.drawMarker(out, (cx, cy), BOX_COLOR, cv2.MARKER_CROSS, 3 * r, t + 1, cv2.LINE_AA)
    for (x, y), lab in zip(points, point_labels):
        c = (int(round(float(x) * scale)), int(round(float(y) * scale)))
        color = POS_COLOR if int(lab) == 1 else NEG_COLOR
        cv2.circle(out, c, r + t, (255, 255, 255), -1, cv2.LINE_AA)
        cv2.circle(out, c, r, color, -1, cv2.LINE_AA)
        # + / - glyph
        cv2.line(out, (c[0] - r // 2, c[1]), (c[0] + r // 2, c[1]), (255, 255, 255), max(1, t), cv2.LINE_AA)
        if int(lab) == 1:
            cv2.line(out, (c[0], c[1] - r // 2), (c[0], c[1] + r // 2), (255, 255, 255), max(1, t), cv2.LINE_AA)
    return out


def mask_thumbnail(image: np.ndarray, mask: np.ndarray, width: int = 320) -> np.ndarray:
    """Small preview of one candidate mask (photo darkened outside the mask)."""
    small = resize_for_display(np.asarray(image)[..., :3].astype(np.uint8), width)
    m = _resize_nearest(np.asarray(mask).astype(np.uint8), *small.shape[:2]).astype(bool)
    out = small.astype(np.float32) * 0.35
    out[m] = small[m] * 0.5 + np.asarray(MASK_COLOR, np.float32) * 0.5
    return out.astype(np.uint8)


# --------------------------------------------------------------------------- 3D figures

def _rgb_strings(colors: np.ndarray) -> List[str]:
    """'#rrggbb' strings (the most compact colour form plotly accepts per face/point)."""
    return ["#%02x%02x%02x" % tuple(c) for c in np.asarray(colors, np.uint8).tolist()]


def sphere_mesh(n_lon: int = 128, n_lat: int = 64):
    """Vertices (V, 3), faces (F, 3) int, vertex (lat, lon) and face-centre (lat, lon) grids
    of a UV sphere with n_lat bands and n_lon sectors (no duplicated seam column)."""
    vlat = np.pi / 2 - np.arange(n_lat + 1) / n_lat * np.pi
    vlon = np.arange(n_lon) / n_lon * 2 * np.pi - np.pi
    verts = geometry.lonlat_to_ray(vlon[None, :], vlat[:, None]).reshape(-1, 3)
    i = np.arange(n_lat)[:, None]
    j = np.arange(n_lon)[None, :]
    a = i * n_lon + j
    b = i * n_lon + (j + 1) % n_lon
    c = a + n_lon
    d = b + n_lon
    faces = np.stack([np.stack([a, c, b], -1), np.stack([b, c, d], -1)], axis=2).reshape(-1, 3)
    return verts.astype(np.float32), faces.astype(np.int32), (vlat, vlon)


def sphere_figure(image: Optional[np.ndarray], labels: Optional[np.ndarray], palette: np.ndarray,
                  classes: Sequence[str], opacity: float = 0.6, mask: Optional[np.ndarray] = None,
                  n_lon: int = 128, n_lat: int = 64, height: int = 440):
    """Plotly figure: the panorama on a unit sphere, faces coloured by the photo blended with
    the semantic colours (and the mask preview); hovering shows the class under the cursor.

    The mesh is (n_lat + 1) x n_lon vertices, 2 x n_lat x n_lon faces (128 x 64 by default)
    whatever the panorama's resolution.
    """
    import cv2
    import plotly.graph_objects as go

    verts, faces, (vlat, vlon) = sphere_mesh(n_lon, n_lat)
    # Face colours: one per ERP cell, the two triangles of a cell share it.
    if image is not None:
        cells = cv2.resize(np.asarray(image)[..., :3].astype(np.uint8), (n_lon, n_lat),
                           interpolation=cv2.INTER_AREA).astype(np.float32)
    else:
        cells = np.full((n_lat, n_lon, 3), 128, np.float32)
    if labels is not None:
        lab = _resize_nearest(np.asarray(labels), n_lat, n_lon)
        valid = (lab >= 0) & (lab < len(palette))
        col = np.zeros_like(cells)
        col[valid] = palette[lab[valid]]
        a = float(opacity) if image is not None else 1.0
        cells[valid] = cells[valid] * (1 - a) + col[valid] * a
    if mask is not None:
        m = cv2.resize(np.asarray(mask).astype(np.float32), (n_lon, n_lat), interpolation=cv2.INTER_AREA) > 0.3
        cells[m] = cells[m] * 0.4 + np.asarray(MASK_COLOR, np.float32) * 0.6
    face_colors = np.repeat(cells.reshape(-1, 3), 2, axis=0)
    # Hover text per vertex: the class at the vertex direction.
    hover = None
    if labels is not None:
        h, w = np.asarray(labels).shape
        rows = np.clip(((np.pi / 2 - vlat) / np.pi * h).astype(int), 0, h - 1)
        cols = np.clip(((vlon + np.pi) / (2 * np.pi) * w).astype(int), 0, w - 1)
        vl = np.asarray(labels)[rows[:, None], cols[None, :]].ravel()
        names = np.asarray(list(classes) + ["unlabelled"], dtype=object)
        vl = np.where((vl >= 0) & (vl < len(classes)), vl, len(classes))
        hover = names[vl].tolist()
    mesh = dict(
        type="mesh3d",
        x=verts[:, 0], y=verts[:, 1], z=verts[:, 2],
        i=faces[:, 0], j=faces[:, 1], k=faces[:, 2],
        facecolor=_rgb_strings(np.clip(face_colors + 0.5, 0, 255)),
        flatshading=True,
        lighting=dict(ambient=1.0, diffuse=0.0, specular=0.0, roughness=1.0, fresnel=0.0),
        hovertext=hover, hoverinfo="text" if hover is not None else "skip",
        name="panorama",
    )
    # The trace is built from known-good values: skipping plotly's per-element validation
    # of ~16k colour strings makes this several times faster.
    fig = go.Figure(data=[mesh], _validate=False)
    _style_scene(fig, height, eye=(0.95, 0.95, 0.5))
    return fig


def point_cloud_figure(depth: np.ndarray, labels: Optional[np.ndarray], palette: np.ndarray,
                       classes: Sequence[str], max_depth: Optional[float] = None,
                       image: Optional[np.ndarray] = None, max_points: int = 30000,
                       marker_size: float = 1.6, height: int = 440):
    """Plotly figure: valid depth pixels as 3D points at their true distance (metres),
    coloured by class (or by the photo without labels), at most ~max_points points."""
    import plotly.graph_objects as go

    pts, idx = _sample_points(depth, max_points, max_depth)
    if labels is not None:
        lab = np.asarray(labels).ravel()[idx]
        valid = (lab >= 0) & (lab < len(palette))
        colors = np.zeros((len(idx), 3), np.uint8)
        colors[valid] = palette[lab[valid]]
        names = np.asarray(list(classes) + ["unlabelled"], dtype=object)[np.where(valid, lab, len(classes))]
    else:
        colors = (np.asarray(image)[..., :3].reshape(-1, 3)[idx] if image is not None
                  else np.full((len(idx), 3), 200, np.uint8))
        names = np.asarray(["point"] * len(idx), dtype=object)
    dist = np.linalg.norm(pts, axis=1)
    scatter = dict(
        type="scatter3d", x=pts[:, 0], y=pts[:, 1], z=pts[:, 2], mode="markers",
        marker=dict(size=marker_size, color=_rgb_strings(colors), line=dict(width=0)),
        text=names.tolist(), customdata=dist.astype(np.float32),
        hovertemplate="%{text}<br>%{customdata:.2f} m<extra></extra>", name="points",
    )
    camera = dict(type="scatter3d", x=[0], y=[0], z=[0], mode="markers", hovertext=["camera"], hoverinfo="text",
                  marker=dict(size=5, color="black", symbol="diamond"), name="camera")
    fig = go.Figure(data=[scatter, camera], _validate=False)
    _style_scene(fig, height, eye=(0.75, 0.75, 0.6))
    return fig


def _style_scene(fig, height: int, eye=(1.5, 1.5, 0.8)) -> None:
    axis = dict(visible=False, showbackground=False)
    fig.update_layout(
        height=height, margin=dict(l=0, r=0, t=0, b=0), showlegend=False,
        paper_bgcolor="rgba(0,0,0,0)",
        scene=dict(xaxis=axis, yaxis=axis, zaxis=axis, aspectmode="data",
                   camera=dict(eye=dict(x=eye[0], y=eye[1], z=eye[2]), up=dict(x=0, y=0, z=1)),
                   dragmode="turntable"),
        uirevision="keep-camera",   # rotating survives updates of the figure
    )


def _sample_points(depth: np.ndarray, max_points: int, max_depth: Optional[float] = None):
    """Points (N, 3) float32 of valid depth pixels (strided to <= ~max_points) and their flat indices."""
    d = np.asarray(depth, dtype=np.float64)
    h, w = d.shape
    valid = np.isfinite(d) & (d > 0)
    if max_depth:
        valid &= d <= max_depth
    n = int(valid.sum())
    step = max(1, int(math.ceil(math.sqrt(n / max_points)))) if max_points and n > max_points else 1
    sub = np.zeros_like(valid)
    sub[::step, ::step] = True
    idx = np.flatnonzero(valid & sub)
    rows, cols = np.divmod(idx, w)
    dirs = geometry.lonlat_to_ray(*geometry.erp_to_lonlat(cols + 0.5, rows + 0.5, w, h))
    pts = (dirs * d.ravel()[idx, None]).astype(np.float32)
    return pts, idx


# --------------------------------------------------------------------------- PNG files

def save_label_png(path: str, labels: np.ndarray) -> str:
    """Class indices as a single-channel PNG (8-bit for < 256 classes, else 16-bit);
    labels < 0 (unlabelled) are written as 255 / 65535."""
    import cv2

    lab = np.asarray(labels)
    if lab.max(initial=0) < 255:
        arr = np.where(lab < 0, 255, lab).astype(np.uint8)
    else:
        arr = np.where(lab < 0, 65535, lab).astype(np.uint16)
    if not cv2.imwrite(str(path), arr):
        raise OSError(f"could not write {path}")
    return str(path)


def save_rgb_png(path: str, rgb: np.ndarray) -> str:
    import cv2

    if not cv2.imwrite(str(path), np.ascontiguousarray(np.asarray(rgb, np.uint8)[..., ::-1])):
        raise OSError(f"could not write {path}")
    return str(path)


# --------------------------------------------------------------------------- COCO RLE

def encode_rle(mask: np.ndarray) -> Dict:
    """COCO RLE of a binary (H, W) mask, {"size": [H, W], "counts": str}, by pycocotools
    (column-major runs starting with zeros, compressed to a string)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: Dict) -> np.ndarray:
    """(H, W) bool mask of a COCO RLE, compressed ({"counts": str}) or not ({"counts": [ints]})."""
    from pycocotools import mask as mask_utils

    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, list):
        if sum(counts) != h * w:
            raise ValueError(f"RLE counts cover {sum(counts)} pixels, the mask has {h * w}")
        compressed = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    else:
        compressed = {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return mask_utils.decode(compressed).astype(bool)


def mask_bbox(mask: np.ndarray) -> List[int]:
    """COCO bbox [x, y, width, height] of a mask (0s for an empty mask)."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return [0, 0, 0, 0]
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


# --------------------------------------------------------------------------- glTF point cloud

_GLB_MAGIC = 0x46546C67  # b"glTF"
_CHUNK_JSON = 0x4E4F534A
_CHUNK_BIN = 0x004E4942


def write_glb(path: str, points: np.ndarray, colors: np.ndarray, classes: Optional[np.ndarray] = None) -> str:
    """Binary glTF 2.0 with one POINTS primitive: POSITION (float32, metres, y up as glTF wants:
    our (x, y, z) z-up becomes (x, z, -y)), COLOR_0 (RGBA uint8, normalized) and, if given,
    a custom `_CLASS` float attribute with the class index of each point."""
    pts = np.asarray(points, np.float32).reshape(-1, 3)
    n = len(pts)
    pos = np.ascontiguousarray(np.stack([pts[:, 0], pts[:, 2], -pts[:, 1]], axis=1).astype(np.float32))
    rgba = np.empty((n, 4), np.uint8)
    rgba[:, :3] = np.asarray(colors, np.uint8).reshape(-1, 3)
    rgba[:, 3] = 255
    blobs = [pos.tobytes(), rgba.tobytes()]
    accessors = [
        {"bufferView": 0, "componentType": 5126, "count": n, "type": "VEC3",
         "min": (pos.min(0) if n else np.zeros(3)).tolist(), "max": (pos.max(0) if n else np.zeros(3)).tolist()},
        {"bufferView": 1, "componentType": 5121, "normalized": True, "count": n, "type": "VEC4"},
    ]
    attributes = {"POSITION": 0, "COLOR_0": 1}
    if classes is not None:
        blobs.append(np.asarray(classes, np.float32).reshape(-1).tobytes())
        accessors.append({"bufferView": 2, "componentType": 5126, "count": n, "type": "SCALAR"})
        attributes["_CLASS"] = 2
    views, offset = [], 0
    for blob in blobs:
        views.append({"buffer": 0, "byteOffset": offset, "byteLength": len(blob), "target": 34962})
        offset += len(blob)
        offset += (-offset) % 4
    binary = b"".join(blob + b"\0" * ((-len(blob)) % 4) for blob in blobs)
    doc = {
        "asset": {"version": "2.0", "generator": "panosamic.viz"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0, "name": "panorama_points"}],
        "meshes": [{"primitives": [{"attributes": attributes, "mode": 0}]}],
        "accessors": accessors,
        "bufferViews": views,
        "buffers": [{"byteLength": len(binary)}],
    }
    js = json.dumps(doc, separators=(",", ":")).encode()
    js += b" " * ((-len(js)) % 4)
    total = 12 + 8 + len(js) + 8 + len(binary)
    with open(path, "wb") as f:
        f.write(struct.pack("<III", _GLB_MAGIC, 2, total))
        f.write(struct.pack("<II", len(js), _CHUNK_JSON))
        f.write(js)
        f.write(struct.pack("<II", len(binary), _CHUNK_BIN))
        f.write(binary)
    return str(path)


def read_glb(path: str) -> Tuple[Dict, bytes]:
    """(JSON document, binary chunk) of a .glb file; raises ValueError if the container is malformed."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 20:
        raise ValueError("too short for a GLB")
    magic, version, total = struct.unpack_from("<III", data, 0)
    if magic != _GLB_MAGIC or version != 2 or total != len(data):
        raise ValueError("bad GLB header")
    jlen, jtype = struct.unpack_from("<II", data, 12)
    if jtype != _CHUNK_JSON or jlen % 4:
        raise ValueError("first chunk is not JSON")
    doc = json.loads(data[20:20 + jlen].decode())
    binary = b""
    off = 20 + jlen
    if off < len(data):
        blen, btype = struct.unpack_from("<II", data, off)
        if btype != _CHUNK_BIN:
            raise ValueError("second chunk is not BIN")
        binary = data[off + 8: off + 8 + blen]
    return doc, binary


def point_cloud_glb(path: str, depth: np.ndarray, labels: Optional[np.ndarray], palette: np.ndarray,
                    image: Optional[np.ndarray] = None, max_points: int = 400_000,
                    max_depth: Optional[float] = None) -> str:
    """GLB point cloud of the valid depth pixels (<= ~max_points), coloured by class
    (or by the photo when labels is None)."""
    pts, idx = _sample_points(depth, max_points, max_depth)
    cls = None
    if labels is not None:
        lab = np.asarray(labels).ravel()[idx]
        valid = (lab >= 0) & (lab < len(palette))
        colors = np.zeros((len(idx), 3), np.uint8)
        colors[valid] = palette[lab[valid]]
        cls = lab
    elif image is not None:
        colors = np.asarray(image)[..., :3].reshape(-1, 3)[idx]
    else:
        colors = np.full((len(idx), 3), 200, np.uint8)
    return write_glb(path, pts, colors, cls)


__all__ = [
    "erp_directions", "class_stats", "stats_csv", "legend_html",
    "resize_for_display", "overlay", "draw_prompts", "mask_thumbnail", "sphere_mesh", "sphere_figure",
    "point_cloud_figure", "save_label_png", "save_rgb_png", "encode_rle", "decode_rle", "mask_bbox",
    "write_glb", "read_glb", "point_cloud_glb",
]
