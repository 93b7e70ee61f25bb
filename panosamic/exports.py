"""Files and statistics made from a semantic ERP label map (numpy only; no model, no UI).

* per-class statistics weighted by the solid angle of each pixel (`class_stats`, `stats_csv`),
* colours of a label map (`label_colors`, `save_label_colors_png`; label PNGs of class
  indices are `panosamic.io.save_labels_png`),
* COCO RLE masks (`encode_rle`, `decode_rle`, `mask_bbox`) through pycocotools,
* a binary glTF point cloud (`point_cloud_glb`, `write_glb`, `read_glb`).

Shared by the CLI and the app. Geometry follows `panosamic.geometry` (pixel centres,
lon = x/W*2pi - pi, world frame x forward / y left / z up, metres; depth is the Euclidean
distance along the ray).
"""

from __future__ import annotations

import csv
import io
import json
import math
import struct
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import geometry

#: rows per tile when counting classes: bounds the temporaries for 8K maps (~8 MB per tile)
_STATS_TILE_ROWS = 256


def class_stats(labels: np.ndarray, classes: Sequence[str], palette: np.ndarray,
                depth: Optional[np.ndarray] = None,
                known_medians: Optional[Dict[int, Optional[float]]] = None) -> List[Dict]:
    """One dict per class: index, name, color [r, g, b], hex (#rrggbb), pixels, pixel_share,
    sphere_share, steradians and, with depth, median_distance_m (valid depth only, else None).
    The app's downloads and the CLI's <stem>_stats.json share this format.

    sphere_share weights each pixel by its solid angle (cos latitude); shares sum to 1
    over the classes present (labels outside 0..K-1 count as unlabelled).
    `known_medians` {class: median} are taken as they are (a caller that knows which classes
    an edit touched passes the others' medians: the medians are most of the cost).
    """
    labels = np.asarray(labels)
    h, w = labels.shape
    k = len(classes)
    # solid angle of one pixel per row (constant along a row): a 1-wide map, not an (H, W) one
    row_sr = geometry.pixel_areas(h, 1)[:, 0] / w
    pixels = np.zeros(k + 1, np.int64)
    sr = np.zeros(k + 1, np.float64)
    for r0 in range(0, h, _STATS_TILE_ROWS):
        tile = labels[r0:r0 + _STATS_TILE_ROWS]
        n = len(tile)
        flat = np.where((tile >= 0) & (tile < k), tile, k).astype(np.int64)
        flat += (np.arange(n) * (k + 1))[:, None]
        per_row = np.bincount(flat.ravel(), minlength=n * (k + 1)).reshape(n, k + 1)
        pixels += per_row.sum(0)
        sr += row_sr[r0:r0 + n] @ per_row
    pixels, sr = pixels[:k], sr[:k]
    total_px = max(int(pixels.sum()), 1)
    total_sr = float(sr.sum()) or 1.0
    medians: List[Optional[float]] = [None] * k
    if depth is not None:
        known = known_medians or {}
        present = [int(c) for c in np.flatnonzero(pixels)]
        for c in present:
            medians[c] = known.get(c)
        todo = [c for c in present if c not in known]
        if todo:
            d = np.asarray(depth)
            good = np.isfinite(d) & (d > 0)
            for c in todo:
                values = d[good & (labels == c)]
                if values.size:  # the median in float64, as before, of the class's (float32) depths
                    medians[c] = round(float(np.median(values.astype(np.float64))), 4)
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

def label_colors(labels: np.ndarray, palette: np.ndarray, bgr: bool = False) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8 colours of `palette` ((K, 3) RGB), in RGB or,
    with `bgr`, in OpenCV's order; indices outside 0..K-1 are black. uint8 maps go through
    OpenCV's table look-up (8192x4096: ~0.1 s, numpy's fancy indexing ~1 s)."""
    import cv2

    labels = np.asarray(labels)
    pal = np.asarray(palette, np.uint8)[:, ::-1] if bgr else np.asarray(palette, np.uint8)
    k = len(pal)
    if labels.dtype == np.uint8:
        table = np.zeros((256, 1, 3), np.uint8)
        table[:min(k, 256), 0] = pal[:256]
        return cv2.LUT(cv2.merge([labels, labels, labels]), table)
    out = np.zeros(labels.shape + (3,), np.uint8)
    valid = (labels >= 0) & (labels < k)
    out[valid] = pal[labels[valid]]
    return out


#: The name of the colour PNG after the panorama's stem, for the CLI's outputs and the app's
#: downloads alike: `X_colors.png`, not `X_color.png`, which panosamic.io reads as the RGB
#: panorama of X (its `_color` input suffix).
COLORS_PNG_SUFFIX = "_colors.png"


def save_label_colors_png(path: str, labels: np.ndarray, palette: np.ndarray, compression: int = 3) -> str:
    """The label map in its palette's colours (`label_colors`) as an RGB PNG."""
    import cv2

    if not cv2.imwrite(str(path), label_colors(labels, palette, bgr=True), [cv2.IMWRITE_PNG_COMPRESSION, int(compression)]):
        raise OSError(f"could not write {path}")
    return str(path)


# --------------------------------------------------------------------------- COCO RLE

def encode_rle(mask: np.ndarray) -> Dict:
    """COCO RLE of a binary (H, W) mask, {"size": [H, W], "counts": str}, by pycocotools
    (column-major runs starting with zeros, compressed to a string)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask).astype(np.uint8, order="K")))
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
    """COCO bbox [x, y, width, height] of a mask (0s for an empty mask); no index arrays, so
    an 8K mask costs two row/column reductions."""
    mask = np.asarray(mask, bool)
    rows = np.flatnonzero(mask.any(1))
    if not rows.size:
        return [0, 0, 0, 0]
    cols = np.flatnonzero(mask[rows[0]:rows[-1] + 1].any(0))
    return [int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)]


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
        "asset": {"version": "2.0", "generator": "panosamic.exports"},
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


__all__ = ["class_stats", "stats_csv", "label_colors", "save_label_colors_png", "COLORS_PNG_SUFFIX", "encode_rle", "decode_rle", "mask_bbox",
           "write_glb", "read_glb", "point_cloud_glb"]
