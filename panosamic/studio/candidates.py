"""SAM's three candidate masks as a user sees them: which one is preselected, how good the model
thinks each is (in words), and a small picture of each.

SAM's decoder answers a prompt with three masks (roughly: a part, the object, a larger whole)
and, for each, its own estimate of the mask's IoU with what was meant ("predicted IoU", 0-1).
The page calls that estimate the **fit**.

Preselection (`preselect`): for a prompt of one positive point, **the tightest plausible mask**:
the smallest (by area) of the masks whose fit is within `PLAUSIBLE_MARGIN` of the best fit. A
single click is ambiguous and the larger masks often score a little higher than the object that
was clicked (on real photos the best-scoring mask took 10-30 % of the panorama where the clicked
object took 1-3 %); a labelling tool starts from the clicked object and lets the user widen it
(keys 1/2/3). Any other prompt (several points, negative points, a box) is less ambiguous: its
best-fitting mask is preselected.
"""

from __future__ import annotations

import html
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

#: Masks whose fit (predicted IoU) is at most this much below the best one count as plausible.
PLAUSIBLE_MARGIN = 0.10
#: (h, w) pixels of a candidate's thumbnail.
THUMB_SIZE = (96, 192)

RULE_TEXT = (f"Preselected: for a single click, the smallest mask whose fit is within {PLAUSIBLE_MARGIN:.2f} "
             "of the best one (the clicked object, not the room around it); for more points or a box, the "
             "best fit.")
FIT_TEXT = ("Fit: the model's own estimate, from 0 to 1, of how well a mask matches what you meant "
            "(SAM's predicted IoU).")


def preselect(scores: Sequence[float], areas: Sequence[float], single_click: bool = True,
              margin: float = PLAUSIBLE_MARGIN) -> int:
    """The index of the candidate to preselect (see the module docstring).

    scores: each mask's fit (predicted IoU); areas: each mask's size in any unit (pixels,
    share); single_click: the prompt is one positive point (else the best fit wins)."""
    scores = np.asarray(scores, np.float64).reshape(-1)
    if not len(scores):
        return 0
    best = int(np.argmax(scores))
    if not single_click:
        return best
    areas = np.asarray(areas, np.float64).reshape(-1)
    plausible = [i for i in range(len(scores)) if scores[i] >= scores[best] - margin and areas[i] > 0]
    if not plausible:
        return best
    return min(plausible, key=lambda i: (areas[i], -scores[i]))


def fit_words(score: float) -> str:
    """The fit (predicted IoU) in words: 'good' (>= 0.85), 'fair' (>= 0.6), 'rough' (>= 0.3),
    else 'poor'."""
    s = float(score)
    return "good" if s >= 0.85 else "fair" if s >= 0.6 else "rough" if s >= 0.3 else "poor"


def caption(index: int, score: float, share: float) -> str:
    """'#1 · 2.4 % of the panorama · fit 0.91 (good)': one candidate in words; `share` in [0, 1]."""
    return f"#{index + 1} · {100 * share:.1f} % of the panorama · fit {float(score):.2f} ({fit_words(score)})"


def shares(s: Any) -> List[float]:
    """Each candidate's share of the panorama's pixels (working size) of a `Session`."""
    if s.candidates is None:
        return []
    return [float(np.count_nonzero(m)) / m.size for m in s.candidates]


def _seam_roll(mask: np.ndarray) -> int:
    """Columns to roll a mask by so that it does not straddle the left/right seam: the middle of
    its widest gap of empty columns goes to the border (0 when the mask does not reach both)."""
    cols = mask.any(0)
    if not (cols[0] and cols[-1]) or cols.all():
        return 0
    empty = np.flatnonzero(~cols)
    runs = np.split(empty, np.flatnonzero(np.diff(empty) != 1) + 1)
    widest = max(runs, key=len)
    return -int(widest[len(widest) // 2])


def thumbnail(image: np.ndarray, mask: np.ndarray, size: Tuple[int, int] = THUMB_SIZE) -> np.ndarray:
    """A (size) uint8 RGB picture of `mask` (h, w) bool over the photo `image` (h, w, 3): the
    mask tinted and outlined, cropped around it with a margin at 2:1, across the seam too."""
    import cv2

    from .render import highlight_mask

    shift = _seam_roll(mask)
    if shift:
        image, mask = np.roll(image, shift, axis=1), np.roll(mask, shift, axis=1)
    h, w = mask.shape
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if not rows.size:
        r0, r1, c0, c1 = 0, h, 0, w
    else:
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    # a 2:1 window around the mask, half as large again, at least an eighth of the panorama wide
    cw = max((c1 - c0) * 1.5, 2 * (r1 - r0) * 1.5, w / 8)
    cw = min(cw, w)
    ch = min(cw / 2, h)
    cx, cy = (c0 + c1) / 2, (r0 + r1) / 2
    x0 = int(round(min(max(cx - cw / 2, 0), w - cw)))
    y0 = int(round(min(max(cy - ch / 2, 0), h - ch)))
    crop = slice(y0, y0 + int(round(ch))), slice(x0, x0 + int(round(cw)))
    picture = highlight_mask(np.ascontiguousarray(image[crop]), np.ascontiguousarray(mask[crop]))
    return cv2.resize(picture, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def cards_html(s: Any) -> str:
    """The candidates of a `Session` as three cards (thumbnail and caption), the selected one
    marked; a hint before there are any. The page's script (static/page.js) turns a click on a
    card into the candidate's radio button."""
    if s is None or s.candidates is None:
        return ('<div class="cand-cards cand-empty">Click on the map (or in the 360° view) to get three '
                'candidate masks here.</div>')
    from .render import _data_url, view_jpeg

    cards = []
    for i, (score, share) in enumerate(zip(s.scores, shares(s))):
        thumb = _data_url("jpeg", view_jpeg(thumbnail(s.image, s.candidates[i]), quality=80))
        selected = i == s.selected
        text = html.escape(caption(i, score, share))
        cards.append(f'<button type="button" class="cand-card{" selected" if selected else ""}" data-index="{i}" '
                     f'aria-pressed="{str(selected).lower()}" title="Key {i + 1}">'
                     f'<img alt="candidate {i + 1}" src="{thumb}"><span>{text}</span></button>')
    return f'<div class="cand-cards" data-count="{len(cards)}">{"".join(cards)}</div>'


def radio_choices(s: Any) -> Optional[List[Tuple[str, int]]]:
    """The candidates radio's (label, value) pairs of a `Session`, or None without candidates."""
    if s is None or s.candidates is None:
        return None
    return [(f"#{i + 1} · {100 * a:.1f} % · fit {float(v):.2f}", i) for i, (v, a) in enumerate(zip(s.scores, shares(s)))]


__all__ = ["preselect", "fit_words", "caption", "shares", "thumbnail", "cards_html", "radio_choices",
           "PLAUSIBLE_MARGIN", "RULE_TEXT", "FIT_TEXT", "THUMB_SIZE"]
