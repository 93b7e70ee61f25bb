"""Pictures of a session for the UI: the ERP view (labels over the photo, the candidate mask,
the prompts), the legend, the 360° viewer's payload and the point cloud.

All work at the session's working size, whatever the input size. What is kept of a session's
pictures between its events is a `RenderCache` (the session holds one): this module is its only
writer, and each entry carries the key it was made for (the session's `labels_version`, which
every change of the labels or of a colour bumps), so nobody else has to clear it.
"""

from __future__ import annotations

import html
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from ..exports import _sample_points, label_colors
from ..geometry import resize_erp

MASK_COLOR = (30, 144, 255)   # preview of the selected candidate mask (dodger blue)
POS_COLOR = (40, 220, 60)
NEG_COLOR = (235, 40, 40)
BOX_COLOR = (255, 210, 0)


def legend_html(stats: Sequence[Dict], highlight: Optional[int] = None, show_absent: bool = False,
                own_from: Optional[int] = None, note: str = "") -> str:
    """A compact legend: colour swatch, class name and share of the sphere, largest first.
    Classes from index `own_from` on are the user's own (marked "yours"); `note` (plain text,
    e.g. that a toy model made the map) goes above the rows."""
    rows = [s for s in stats if show_absent or s["pixels"] > 0]
    rows.sort(key=lambda s: -s["sphere_share"])
    items = []
    for s in rows:
        pct = 100.0 * s["sphere_share"]
        bold = " font-weight:600;" if highlight is not None and s["index"] == highlight else ""
        own = ' <em style="opacity:.7">(yours)</em>' if own_from is not None and s["index"] >= own_from else ""
        items.append(
            '<div class="pano-legend-row" style="display:flex;align-items:center;gap:8px;'
            f'padding:2px 0;{bold}" title="{s["pixels"]} px, {s["steradians"]:.3f} sr">'
            f'<span style="display:inline-block;width:14px;height:14px;border-radius:3px;'
            f'background:{s["hex"]};border:1px solid rgba(0,0,0,.25);flex:none"></span>'
            f'<span style="flex:1">{html.escape(s["name"])}{own}</span>'
            f'<span style="display:inline-block;width:80px;height:6px;background:rgba(128,128,128,.2);'
            f'border-radius:3px;overflow:hidden;flex:none"><span style="display:block;height:100%;'
            f'width:{min(pct, 100):.1f}%;background:{s["hex"]}"></span></span>'
            f'<span style="width:52px;text-align:right;font-variant-numeric:tabular-nums">{pct:.1f}%</span>'
            "</div>"
        )
    if not items:
        return '<div class="pano-legend"><em>No classes yet: run the segmentation.</em></div>'
    banner = f'<div class="toy-note">{html.escape(note)}</div>' if note else ""
    return (f'<div class="pano-legend">{banner}<div style="font-size:.85em;opacity:.7;margin-bottom:4px">'
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
        lab = resize_erp(np.asarray(labels), h, w, nearest=True)
        k = len(palette)
        colors = label_colors(lab, palette)
        invalid = (lab < 0) | (lab >= k)  # black in `colors`: they keep the photo below
        a = float(np.clip(opacity, 0.0, 1.0))
        out = cv2.addWeighted(img, 1.0 - a, colors, a, 0.0)
        if invalid.any():  # unlabelled pixels keep the photo
            cv2.copyTo(img, invalid.view(np.uint8), out)
    if mask is not None:
        out = highlight_mask(out, resize_erp(np.asarray(mask, bool), h, w, nearest=True), mask_color)
    return np.ascontiguousarray(out)


def highlight_mask(picture: np.ndarray, mask: np.ndarray,
                   mask_color: Tuple[int, int, int] = MASK_COLOR) -> np.ndarray:
    """`picture` (h, w, 3) uint8 with a boolean (h, w) mask tinted and outlined in white.

    Only the rows the mask covers (one more above and below) are touched, so a click's preview
    costs little even at 2048x1024."""
    import cv2

    out = picture.copy()
    rows = np.flatnonzero(mask.any(1))
    if not rows.size:
        return out
    # whole rows: a contiguous band that OpenCV edits in place (masked copies in SIMD)
    r0, r1 = max(rows[0] - 1, 0), min(rows[-1] + 2, mask.shape[0])
    band = out[r0:r1]
    m8 = mask[r0:r1].view(np.uint8)
    tint = np.empty_like(band)
    tint[:] = np.asarray(mask_color, np.uint8)
    cv2.addWeighted(band, 0.45, tint, 0.55, 0.0, dst=tint)
    cv2.copyTo(tint, m8, band)
    edge = cv2.morphologyEx(m8, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
    tint[:] = 255
    cv2.copyTo(tint, edge, band)
    return out


def draw_prompts(display: np.ndarray, scale: float, points: Sequence[Sequence[float]] = (),
                 point_labels: Sequence[int] = (), box: Optional[Sequence[float]] = None,
                 pending_corner: Optional[Sequence[float]] = None, copy: bool = True) -> np.ndarray:
    """Draws prompts (input-image coordinates, times `scale` = display/input) on a copy of `display`
    (on `display` itself with copy=False, when the caller made it).

    Positive points green, negative red, the box yellow; a box whose x1 > x2 wraps across
    the left/right seam and is drawn as two open rectangles at the borders.
    """
    import cv2

    out = np.ascontiguousarray(display.copy() if copy else display)
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
        c0 = (int(round(float(x) * scale)), int(round(float(y) * scale)))
        color = POS_COLOR if int(lab) == 1 else NEG_COLOR
        # a marker on the seam is drawn on both borders (the 360° viewer shows it whole)
        for shift in (0, -w, w):
            c = (c0[0] + shift, c0[1])
            if c[0] + r + t < 0 or c[0] - r - t >= w:
                continue
            cv2.circle(out, c, r + t, (255, 255, 255), -1, cv2.LINE_AA)
            cv2.circle(out, c, r, color, -1, cv2.LINE_AA)
            # + / - glyph
            cv2.line(out, (c[0] - r // 2, c[1]), (c[0] + r // 2, c[1]), (255, 255, 255), max(1, t), cv2.LINE_AA)
            if int(lab) == 1:
                cv2.line(out, (c[0], c[1] - r // 2), (c[0], c[1] + r // 2), (255, 255, 255), max(1, t), cv2.LINE_AA)
    return out


# --------------------------------------------------------------------------- 3D figures

def point_cloud_figure(points: np.ndarray, point_classes: np.ndarray, palette: np.ndarray,
                       classes: Sequence[str], marker_size: float = 1.6, height: int = 440) -> Dict:
    """A plotly figure, as the dict plotly.js reads (`plotly_json` writes it): `points` (N, 3)
    metres around the camera at the origin, one trace per class present (`point_classes` (N,)
    indices into `classes`; others are "unlabelled"), hovering shows the class and distance.

    Per-class traces carry one colour and one name each: no per-point strings, so building and
    sending 30 000 points takes milliseconds (plotly's Figure objects validate and copy every
    point: ~150 ms)."""
    points = np.asarray(points, np.float32).reshape(-1, 3)
    code = np.asarray(point_classes).ravel()
    k = len(palette)
    code = np.where((code >= 0) & (code < k), code, k)
    order = np.argsort(code, kind="stable")
    bounds = np.searchsorted(code[order], np.arange(k + 2))
    dist = np.linalg.norm(points, axis=1).astype(np.float32)
    names = list(classes) + ["unlabelled"]
    colors = ["#%02x%02x%02x" % tuple(int(v) for v in palette[c]) for c in range(k)] + ["#000000"]
    traces = []
    for c in range(k + 1):
        sel = order[bounds[c]:bounds[c + 1]]
        if not sel.size:
            continue
        p = points[sel]
        traces.append(dict(
            type="scatter3d", mode="markers", name=names[c],
            x=np.ascontiguousarray(p[:, 0]), y=np.ascontiguousarray(p[:, 1]), z=np.ascontiguousarray(p[:, 2]),
            marker=dict(size=marker_size, color=colors[c], line=dict(width=0)),
            customdata=dist[sel], hovertemplate="%{fullData.name}<br>%{customdata:.2f} m<extra></extra>"))
    traces.append(dict(type="scatter3d", x=[0], y=[0], z=[0], mode="markers", hovertext=["camera"],
                       hoverinfo="text", marker=dict(size=5, color="black", symbol="diamond"), name="camera"))
    return {"data": traces, "layout": _scene_layout(height, eye=(0.75, 0.75, 0.6))}


def _scene_layout(height: int, eye=(1.5, 1.5, 0.8)) -> Dict:
    axis = dict(visible=False, showbackground=False)
    return dict(
        height=height, margin=dict(l=0, r=0, t=0, b=0), showlegend=False,
        paper_bgcolor="rgba(0,0,0,0)",
        scene=dict(xaxis=axis, yaxis=axis, zaxis=axis, aspectmode="data",
                   camera=dict(eye=dict(x=eye[0], y=eye[1], z=eye[2]), up=dict(x=0, y=0, z=1)),
                   dragmode="turntable"),
        uirevision="keep-camera",   # rotating survives updates of the figure
    )


def plotly_json(figure: Dict) -> str:
    """A figure dict as plotly.js's JSON: numpy arrays as typed arrays (base64 `bdata`, what
    plotly.py 6+ writes too), a third of the size of number lists and quick to write."""
    import base64
    import json

    def encode(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            a = np.ascontiguousarray(value, value.dtype.newbyteorder("<"))
            return {"dtype": a.dtype.str[1:], "bdata": base64.b64encode(a.tobytes()).decode("ascii")}
        if isinstance(value, np.generic):
            return value.item()
        raise TypeError(f"{type(value).__name__} is not JSON serialisable")

    return json.dumps(figure, default=encode, separators=(",", ":"))


def view_image(s, opacity: float) -> np.ndarray:
    """The ERP view of a `Session` at its working size: labels over the photo, the selected
    mask and the prompts (drawn from input pixels); uint8 (h, w, 3).

    The labels over the photo are blended once per (labels, opacity) and kept in the session's
    `render_cache`: a click only adds its mask and prompts."""
    img = s.render_cache.view_base(s, opacity)
    img = highlight_mask(img, s.selected_mask) if s.selected_mask is not None else img.copy()
    return draw_prompts(img, s.scale, s.points, s.point_labels, s.box, s.pending_corner, copy=False)


VIEWER_LABELS_SIZE = (256, 512)   # (h, w) of the hover label map the 360° viewer gets
UNLABELLED = 255


def _data_url(kind: str, data: bytes) -> str:
    import base64

    return f"data:image/{kind};base64," + base64.b64encode(data).decode("ascii")


def view_jpeg(view: np.ndarray, quality: int = 85) -> bytes:
    """The ERP picture (uint8 RGB (h, w, 3)) as JPEG bytes: encoded once per event for both the
    map and the 360° viewer's texture."""
    import cv2

    from ..io import swap_red_blue

    ok, jpeg = cv2.imencode(".jpg", swap_red_blue(view), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("encoding the view failed")
    return jpeg.tobytes()


def viewer_payload(s, view_jpeg_bytes: bytes) -> dict:
    """What the 360° viewer (static/viewer.js) shows for a `Session`: the ERP picture (`view_jpeg`
    of what `view_image` made) as its texture, the class under each direction as a 512x256 grey
    PNG (class index, 255 = unlabelled) for hovering, and the class names. A few hundred KB at
    the 2048-pixel working width."""
    import cv2

    lab = resize_erp(np.asarray(s.labels), *VIEWER_LABELS_SIZE, nearest=True).astype(np.uint8)
    lab = np.where(lab < s.num_classes, lab, UNLABELLED).astype(np.uint8)
    ok, png = cv2.imencode(".png", lab)
    if not ok:
        raise RuntimeError("encoding the viewer's label map failed")
    return {"texture": _data_url("jpeg", view_jpeg_bytes), "labels": _data_url("png", png.tobytes()),
            "classes": list(s.classes)}


#: points in the 3D view: enough to see the room, few enough to send on every edit (~0.7 MB)
CLOUD_POINTS = 30000


def point_cloud_view(s) -> Optional[str]:
    """The point cloud of a `Session` (classes at true distances) as plotly JSON, or None
    without depth. The points are sampled once per session (depth does not change); an edit
    only regroups them by class."""
    if s.depth is None:
        return None
    points, flat_index = s.render_cache.cloud_points(s.depth)
    return plotly_json(point_cloud_figure(points, s.labels.ravel()[flat_index], s.palette, s.classes))


def point_cloud_update(s) -> Tuple[bool, Optional[str]]:
    """What the 3D view needs after an event on a `Session`: (False, None) when it already shows
    the current labels, else (True, `point_cloud_view(s)`), which then counts as shown."""
    if not s.render_cache.show_3d(s.labels_version):
        return False, None
    return True, point_cloud_view(s)


class RenderCache:
    """The pictures of one session kept between its events. Only this module's code writes it;
    `Session.nbytes` counts it (`nbytes`) and `Session.release` empties it (`clear`)."""

    def __init__(self) -> None:
        #: ((labels_version, opacity), (h, w, 3) uint8 photo blended with the labels)
        self._view_base: Optional[Tuple[tuple, np.ndarray]] = None
        #: the 3D view's sampled depth: (points (N, 3) metres, (N,) flat indices into the labels)
        self._cloud: Optional[Tuple[np.ndarray, np.ndarray]] = None
        #: the labels_version whose point cloud the 3D view shows now
        self._shown_3d: Optional[int] = None

    def view_base(self, s, opacity: float) -> np.ndarray:
        """The session's labels over its photo at `opacity` (`overlay`), made again only when the
        labels or the opacity changed. Do not draw on it: callers get it shared."""
        key = (s.labels_version, round(float(opacity), 3))
        if self._view_base is None or self._view_base[0] != key:
            self._view_base = (key, overlay(s.image, s.labels, s.palette, opacity))
        return self._view_base[1]

    def cloud_points(self, depth: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """`CLOUD_POINTS` points sampled from `depth` (h, w) metres, once per session."""
        if self._cloud is None:
            self._cloud = _sample_points(depth, CLOUD_POINTS)
        return self._cloud

    def show_3d(self, labels_version: int) -> bool:
        """Whether the 3D view needs the cloud of `labels_version` (it shows another one); it
        counts as shown from now on."""
        if self._shown_3d == labels_version:
            return False
        self._shown_3d = labels_version
        return True

    @property
    def nbytes(self) -> int:
        arrays = [self._view_base[1] if self._view_base else None, *(self._cloud or ())]
        return sum(a.nbytes for a in arrays if a is not None)

    def clear(self) -> None:
        """Forgets every picture (the session is released)."""
        self._view_base = self._cloud = self._shown_3d = None


__all__ = ["legend_html", "resize_for_display", "overlay", "draw_prompts", "highlight_mask", "point_cloud_figure",
           "plotly_json", "view_image", "view_jpeg", "point_cloud_view", "point_cloud_update", "viewer_payload",
           "RenderCache", "CLOUD_POINTS"]
