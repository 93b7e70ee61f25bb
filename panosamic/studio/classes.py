"""One session's class table: the checkpoint's classes, then the classes its user added.

A checkpoint knows a fixed list of classes (Stanford2D3DS: 13, from "ceiling" to "clutter");
a user labelling a hotel room wants "bed", "lamp" or "TV" too. `ClassTable` keeps both in
one list of rows (index, name, colour, origin):

* the checkpoint's classes keep their indices 0..K-1 for good (the label PNG means the same as
  the model's output, and a tool trained on the dataset reads it as it is);
* a user's class is appended at the next free index (K, K+1, ...), up to `MAX_CLASSES` in all
  (the studio keeps class indices as uint8, 255 stays "unlabelled");
* names are compared case-insensitively and with surrounding blanks removed, so "Bed " and
  "bed" are one class; a name is at most `MAX_NAME` characters of printable text.

The table is the one owner of the names and colours: `Session.classes` and `Session.palette`
read it, and the legend, the 360° viewer, the statistics and the export follow from there.
"""

from __future__ import annotations

import colorsys
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError

#: At most this many classes in a table (uint8 class indices; 255 means "unlabelled").
MAX_CLASSES = 255
#: Longest class name a user may give (characters).
MAX_NAME = 40
MODEL, USER = "model", "user"

_HEX_RE = re.compile(r"^#?([0-9a-fA-F]{6})$")
_RGBA_RE = re.compile(r"^rgba?\(\s*([\d.]+)\s*,\s*([\d.]+)\s*,\s*([\d.]+)\s*(?:,\s*[\d.]+\s*)?\)$")


@dataclass(frozen=True)
class ClassRow:
    """One class: its index in the label map, name, colour (r, g, b in 0..255) and origin
    ("model": the checkpoint's, "user": added in the studio)."""

    index: int
    name: str
    color: Tuple[int, int, int]
    origin: str

    @property
    def hex(self) -> str:
        return "#%02x%02x%02x" % self.color

    def as_dict(self) -> Dict[str, Any]:
        return {"index": self.index, "name": self.name, "color": list(self.color), "hex": self.hex,
                "origin": self.origin}


def parse_color(value: Any) -> Optional[Tuple[int, int, int]]:
    """A colour as the page's colour picker or an API client gives it ("#1e90ff", "1e90ff",
    "rgb(30, 144, 255)", "rgba(30, 144, 255, 1)" or [30, 144, 255]) -> (r, g, b); None for
    no colour (None or ""). InputError for anything else."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, (list, tuple)) and len(value) == 3:
        try:
            rgb = tuple(int(round(float(v))) for v in value)
        except (TypeError, ValueError):
            rgb = ()
        if len(rgb) == 3 and all(0 <= v <= 255 for v in rgb):
            return rgb  # type: ignore[return-value]
    elif isinstance(value, str):
        text = value.strip()
        m = _HEX_RE.match(text)
        if m:
            h = m.group(1)
            return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)
        m = _RGBA_RE.match(text)
        if m and all(float(v) <= 255 for v in m.groups()):
            return tuple(int(round(float(v))) for v in m.groups())  # type: ignore[return-value]
    raise InputError(f"The colour must be written like #1e90ff (or rgb(30, 144, 255)), not {str(value)[:30]!r}.")


def clean_name(value: Any) -> str:
    """A class name as given by a user, blanks at both ends removed; InputError when empty,
    too long, a bare number (that would read as an index) or not printable text."""
    if not isinstance(value, str):
        raise InputError("A class name must be text.")
    name = " ".join(value.split())
    if not name:
        raise InputError("Type a class name first (e.g. bed).")
    if len(name) > MAX_NAME:
        raise InputError(f"A class name has at most {MAX_NAME} characters; {name[:20]!r}… has {len(name)}.")
    if name.lstrip("-").isdigit():
        raise InputError(f"{name!r} would read as a class index: give the class a name with letters.")
    if not name.isprintable():
        raise InputError("A class name must be printable text (no control characters).")
    return name


def distinct_color(taken: Sequence[Tuple[int, int, int]], n: int) -> Tuple[int, int, int]:
    """A colour for the n-th user class, far from the colours `taken`: golden-angle hues at two
    lightnesses, the candidate farthest (in RGB) from every colour in use."""
    best, best_d = (255, 0, 255), -1.0
    arr = np.asarray(taken, float).reshape(-1, 3)
    for k in range(24):
        hue = ((n + k) * 0.618033988749895) % 1.0
        for light in (0.5, 0.38):
            rgb = tuple(int(round(255 * c)) for c in colorsys.hls_to_rgb(hue, light, 0.85))
            d = float(np.min(np.linalg.norm(arr - rgb, axis=1))) if len(arr) else 1e9
            if d > best_d:
                best, best_d = rgb, d
    return best  # type: ignore[return-value]


class ClassTable:
    """The checkpoint's classes (indices fixed) followed by a user's (see the module docstring).

    Args:
        names: the checkpoint's class names, index order.
        palette: (K, 3) uint8 RGB colours of those classes.
    """

    def __init__(self, names: Sequence[str], palette: Any):
        palette = np.asarray(palette, np.uint8).reshape(-1, 3)
        if len(palette) < len(names):
            raise InputError(f"{len(names)} classes but {len(palette)} colours")
        if len(names) > MAX_CLASSES:
            raise InputError(f"the studio keeps class indices as uint8: at most {MAX_CLASSES} classes")
        self._rows: List[ClassRow] = [ClassRow(i, str(n), tuple(int(v) for v in palette[i]), MODEL)  # type: ignore[arg-type]
                                      for i, n in enumerate(names)]
        self._refresh()

    def _refresh(self) -> None:
        self.names: Tuple[str, ...] = tuple(r.name for r in self._rows)
        self.palette: np.ndarray = np.asarray([r.color for r in self._rows], np.uint8).reshape(-1, 3)
        self._by_name = {r.name.lower(): r.index for r in self._rows}

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def model_count(self) -> int:
        """How many of the classes are the checkpoint's (indices 0..model_count-1)."""
        return sum(r.origin == MODEL for r in self._rows)

    def rows(self) -> List[ClassRow]:
        return list(self._rows)

    def find(self, name: str) -> Optional[int]:
        """The index of a class by name (case and surrounding blanks ignored), or None."""
        return self._by_name.get(" ".join(str(name).split()).lower())

    def add(self, name: Any, color: Any = None) -> Tuple[int, bool]:
        """(index, whether it is new): a user's class `name` with `color` (see `parse_color`;
        default: a colour far from those in use). A name already in the table (a checkpoint's
        or a user's) is that class; a colour given for a user's class then replaces its colour
        (a checkpoint's colours stay)."""
        name = clean_name(name)
        rgb = parse_color(color)
        known = self.find(name)
        if known is not None:
            row = self._rows[known]
            if rgb is not None and row.origin == USER and rgb != row.color:
                self._rows[known] = ClassRow(row.index, row.name, rgb, USER)
                self._refresh()
            return known, False
        if len(self._rows) >= MAX_CLASSES:
            raise InputError(f"This panorama has {MAX_CLASSES} classes already, the most a label PNG can hold.")
        if rgb is None:
            rgb = distinct_color([r.color for r in self._rows], len(self._rows) - self.model_count)
        self._rows.append(ClassRow(len(self._rows), name, rgb, USER))
        self._refresh()
        return len(self._rows) - 1, True

    def choices(self) -> List[Tuple[str, str]]:
        """(label, name) pairs for a class picker: the checkpoint's classes, then the user's,
        marked "(yours)"."""
        return [(f"{r.name} (yours)" if r.origin == USER else r.name, r.name) for r in self._rows]

    def as_json(self) -> Dict[str, Any]:
        """The table as the export writes it (`<stem>_classes.json`)."""
        return {"classes": [r.as_dict() for r in self._rows],
                "note": "index = the value in the label PNG; origin 'model' = the checkpoint's class (its index "
                        "never changes), 'user' = added in PanoSAMic Studio; 255 = unlabelled"}

    def as_csv(self) -> str:
        """The table as CSV: index,name,r,g,b,hex,origin (names quoted when needed)."""
        import csv
        import io

        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["index", "name", "r", "g", "b", "hex", "origin"])
        for r in self._rows:
            w.writerow([r.index, r.name, *r.color, r.hex, r.origin])
        return out.getvalue()


__all__ = ["ClassTable", "ClassRow", "parse_color", "clean_name", "distinct_color", "MAX_CLASSES", "MAX_NAME",
           "MODEL", "USER"]
