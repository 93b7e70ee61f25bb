"""Procedural indoor scenes rendered to equirectangular panoramas with exact ground truth.

A :class:`Scene` is a room (an axis-aligned box seen from inside: floor,
ceiling and four walls) plus a list of solid axis-aligned :class:`Box` es
(wall blocks that make L-shapes and alcoves, doors, windows, boards, beams,
columns and furniture), a camera position and a few point lights. All
coordinates are metres in the world frame of :mod:`panosamic.geometry`
(x forward at the image centre, y left, z up); the room spans
``[0, sx] x [0, sy] x [0, sz]`` and the camera looks along +x without rotation.

:func:`render` casts one ray per pixel centre against every box (slab test,
vectorised over all pixels; a loop over the few dozen boxes only) and shades
the nearest hit with a procedural texture, Lambert lighting from the lights
(with hard shadows from the main light), a hemispherical ambient term and a
little distance falloff. Because every pixel is an exact ray on the sphere,
the panorama is seamless by construction and depth, normals and labels agree
with the geometry exactly.

Labels are Stanford2D3DS indices (:data:`panosamic.datasets.STANFORD2D3DS`).

Example::

    from devtools.scenes import make_scene, render
    pano = render(make_scene("office", seed=1), width=1024)
    pano.rgb, pano.depth, pano.normals, pano.labels
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from panosamic import geometry
from panosamic.datasets import STANFORD2D3DS

__all__ = [
    "Box", "Light", "Scene", "RenderedPanorama", "SCENE_KINDS", "EXAMPLES",
    "make_scene", "render", "render_example", "trace_depth",
]

# Stanford2D3DS class indices
BEAM, BOARD, BOOKCASE, CEILING, CHAIR, CLUTTER, COLUMN, DOOR, FLOOR, SOFA, TABLE, WALL, WINDOW = range(13)

# Materials (procedural textures)
PAINT, CEIL_TILES, FLOOR_TILES, CARPET, PARQUET, WOOD, FABRIC, METAL, BOOKS, WHITEBOARD, BLACKBOARD, \
    GLASS_WINDOW, DOOR_PANEL, SCREEN, CARDBOARD, PLANT, CONCRETE, PAPER, PLASTIC = range(19)

Color = Tuple[float, float, float]


@dataclass
class Box:
    """A solid axis-aligned box: corners ``lo``/``hi`` (metres), Stanford label, material, base colour (0..1)."""

    lo: Tuple[float, float, float]
    hi: Tuple[float, float, float]
    label: int
    material: int
    color: Color
    tex_seed: int = 0


@dataclass
class Light:
    """A point light: position (metres) and intensity (1 = a typical ceiling lamp)."""

    pos: Tuple[float, float, float]
    intensity: float = 1.0


@dataclass
class Scene:
    """A room seen from ``camera``; see the module docstring for the frame."""

    kind: str
    seed: int
    size: Tuple[float, float, float]  # room sx, sy, sz (metres)
    camera: Tuple[float, float, float]
    boxes: List[Box] = field(default_factory=list)
    lights: List[Light] = field(default_factory=list)
    wall_color: Color = (0.85, 0.84, 0.80)
    floor_material: int = FLOOR_TILES
    floor_color: Color = (0.62, 0.60, 0.56)
    ceiling_color: Color = (0.93, 0.93, 0.91)
    description: str = ""


@dataclass
class RenderedPanorama:
    """Render output, all ``(H, W)`` with ``W = 2H``.

    rgb: uint8 (H, W, 3); depth: float32 (H, W) metres (Euclidean, along the ray);
    normals: uint8 (H, W, 3) encoded with :func:`panosamic.geometry.encode_normals`;
    labels: uint8 (H, W) Stanford2D3DS class indices; meta: JSON-friendly dict.
    """

    rgb: np.ndarray
    depth: np.ndarray
    normals: np.ndarray
    labels: np.ndarray
    meta: Dict


# =========================================================================== procedural noise
_M1 = np.uint64(0xFF51AFD7ED558CCD)
_M2 = np.uint64(0xC4CEB9FE1A85EC53)
_GOLD = np.uint64(0x9E3779B97F4A7C15)
_S33 = np.uint64(33)


def _hash01(*ints: np.ndarray, seed=0) -> np.ndarray:
    """Deterministic hash of integer lattice coordinates (arrays or ints) -> floats in [0, 1)."""
    h = np.asarray(seed).astype(np.int64).astype(np.uint64) * _GOLD
    for a in ints:
        a = np.asarray(a).astype(np.int64).astype(np.uint64)
        h = h ^ (a * _GOLD + (h << np.uint64(6)) + (h >> np.uint64(2)))
        h = h ^ (h >> _S33)
        h = h * _M1
    h = h ^ (h >> _S33)
    h = h * _M2
    h = h ^ (h >> _S33)
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def _value_noise(u: np.ndarray, v: np.ndarray, seed) -> np.ndarray:
    """Smooth 2D value noise in [0, 1] (lattice spacing 1)."""
    iu, iv = np.floor(u), np.floor(v)
    fu, fv = u - iu, v - iv
    fu = fu * fu * (3 - 2 * fu)
    fv = fv * fv * (3 - 2 * fv)
    iu, iv = iu.astype(np.int64), iv.astype(np.int64)
    a = _hash01(iu, iv, seed=seed)
    b = _hash01(iu + 1, iv, seed=seed)
    c = _hash01(iu, iv + 1, seed=seed)
    d = _hash01(iu + 1, iv + 1, seed=seed)
    return (a * (1 - fu) + b * fu) * (1 - fv) + (c * (1 - fu) + d * fu) * fv


def _fbm(u: np.ndarray, v: np.ndarray, seed, octaves: int = 3) -> np.ndarray:
    """Fractal value noise, roughly in [0, 1]."""
    total, amp, norm = 0.0, 1.0, 0.0
    for o in range(octaves):
        total = total + amp * _value_noise(u * (2 ** o), v * (2 ** o), seed + 101 * np.asarray(o))
        norm += amp
        amp *= 0.5
    return total / norm


# =========================================================================== scene building helpers
def _facing_box(cx: float, cy: float, facing: int, lo: Sequence[float], hi: Sequence[float]):
    """Local box (x right, y forward, z up; origin at (cx, cy, 0)) -> world lo/hi for ``facing`` in 0..3.

    facing 0: forward = +x, 1: +y, 2: -x, 3: -y (rotations by 90 degrees keep boxes axis-aligned).
    """
    fwd = [(1, 0), (0, 1), (-1, 0), (0, -1)][facing % 4]
    right = (fwd[1], -fwd[0])  # right of forward with z up in a right-handed frame
    pts = []
    for lx in (lo[0], hi[0]):
        for ly in (lo[1], hi[1]):
            pts.append((cx + lx * right[0] + ly * fwd[0], cy + lx * right[1] + ly * fwd[1]))
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return (min(xs), min(ys), lo[2]), (max(xs), max(ys), hi[2])


class _Builder:
    """Collects boxes for one scene; helpers place furniture in a readable way."""

    def __init__(self, size, rng: np.random.Generator):
        self.size = size
        self.rng = rng
        self.boxes: List[Box] = []
        self.keepout: List[Tuple[float, float, float, float]] = []  # footprints already used

    def add(self, lo, hi, label, material, color, seed=None) -> Box:
        if seed is None:
            seed = int(self.rng.integers(0, 2 ** 31 - 1))
        box = Box(tuple(float(v) for v in lo), tuple(float(v) for v in hi), label, material,
                  tuple(float(c) for c in color), seed)
        self.boxes.append(box)
        return box

    def local(self, cx, cy, facing, lo, hi, label, material, color, seed=None) -> Box:
        wlo, whi = _facing_box(cx, cy, facing, lo, hi)
        return self.add(wlo, whi, label, material, color, seed)

    def jitter(self, color, amount=0.06) -> Color:
        c = np.clip(np.asarray(color) + self.rng.uniform(-amount, amount, 3), 0, 1)
        return tuple(float(v) for v in c)

    # ----------------------------------------------------------------- walls and wall-mounted items
    def wall_item(self, wall: str, u0, u1, z0, z1, depth, label, material, color, seed=None) -> Box:
        """A thin box against one of the room's outer walls: 'x0', 'x1', 'y0', 'y1' (u runs along the wall)."""
        sx, sy, _ = self.size
        if wall == "x0":
            return self.add((0, u0, z0), (depth, u1, z1), label, material, color, seed)
        if wall == "x1":
            return self.add((sx - depth, u0, z0), (sx, u1, z1), label, material, color, seed)
        if wall == "y0":
            return self.add((u0, 0, z0), (u1, depth, z1), label, material, color, seed)
        if wall == "y1":
            return self.add((u0, sy - depth, z0), (u1, sy, z1), label, material, color, seed)
        raise ValueError(wall)

    def wall_block(self, lo_xy, hi_xy, color):
        """A floor-to-ceiling solid block of wall (makes L-shapes, alcoves, pillars in the wall)."""
        self.add((lo_xy[0], lo_xy[1], -0.05), (hi_xy[0], hi_xy[1], self.size[2] + 0.05), WALL, PAINT, color)
        self.keepout.append((lo_xy[0], lo_xy[1], hi_xy[0], hi_xy[1]))

    def door(self, wall, u, width=0.9, height=2.05, color=(0.55, 0.38, 0.22)):
        self.wall_item(wall, u, u + width, 0.0, height, 0.045, DOOR, DOOR_PANEL, self.jitter(color, 0.04))

    def window(self, wall, u, width, z0=0.9, z1=2.2):
        self.wall_item(wall, u, u + width, z0, z1, 0.03, WINDOW, GLASS_WINDOW, (0.9, 0.9, 0.9))

    def board(self, wall, u, width=1.8, z0=0.9, z1=2.0, black=False):
        if black:
            self.wall_item(wall, u, u + width, z0, z1, 0.03, BOARD, BLACKBOARD, (0.12, 0.22, 0.16))
        else:
            self.wall_item(wall, u, u + width, z0, z1, 0.03, BOARD, WHITEBOARD, (0.95, 0.95, 0.94))

    def bookcase(self, wall, u, width=0.9, height=2.0, depth=0.34):
        wood = self.jitter((0.50, 0.35, 0.20), 0.08)
        self.wall_item(wall, u, u + width, 0.0, height, depth, BOOKCASE, BOOKS, wood)
        self._keepout_wall(wall, u, u + width, depth)

    def _keepout_wall(self, wall, u0, u1, depth):
        sx, sy, _ = self.size
        if wall == "x0":
            self.keepout.append((0, u0, depth, u1))
        elif wall == "x1":
            self.keepout.append((sx - depth, u0, sx, u1))
        elif wall == "y0":
            self.keepout.append((u0, 0, u1, depth))
        else:
            self.keepout.append((u0, sy - depth, u1, sy))

    def column(self, x, y, w=0.45, d=0.45, color=(0.78, 0.77, 0.74)):
        self.add((x - w / 2, y - d / 2, -0.05), (x + w / 2, y + d / 2, self.size[2] + 0.05), COLUMN, CONCRETE,
                 self.jitter(color, 0.03))
        self.keepout.append((x - w / 2, y - d / 2, x + w / 2, y + d / 2))

    def beam(self, axis: int, pos: float, width=0.3, drop=0.35, span=None, color=(0.80, 0.79, 0.76)):
        sx, sy, sz = self.size
        lo_u, hi_u = span if span is not None else (-0.1, (sx if axis == 0 else sy) + 0.1)
        if axis == 0:  # runs along x
            self.add((lo_u, pos - width / 2, sz - drop), (hi_u, pos + width / 2, sz + 0.05), BEAM, CONCRETE, color)
        else:
            self.add((pos - width / 2, lo_u, sz - drop), (pos + width / 2, hi_u, sz + 0.05), BEAM, CONCRETE, color)

    # ----------------------------------------------------------------- furniture
    def table(self, x0, y0, x1, y1, height=0.74, color=None, legs_color=(0.25, 0.25, 0.27)):
        color = color or self.jitter((0.62, 0.45, 0.28), 0.08)
        top = 0.035
        t = self.add((x0, y0, height - top), (x1, y1, height), TABLE, WOOD, color)
        leg = 0.05
        for lx, ly in ((x0 + 0.04, y0 + 0.04), (x1 - 0.04 - leg, y0 + 0.04),
                       (x0 + 0.04, y1 - 0.04 - leg), (x1 - 0.04 - leg, y1 - 0.04 - leg)):
            self.add((lx, ly, 0.0), (lx + leg, ly + leg, height - top), TABLE, METAL, legs_color)
        self.keepout.append((x0, y0, x1, y1))
        return t

    def chair(self, x, y, facing, color=None, office=None):
        """A chair centred at (x, y) whose sitter looks along ``facing``."""
        color = color or self.jitter((0.18, 0.22, 0.45), 0.1)
        office = self.rng.random() < 0.5 if office is None else office
        metal = (0.2, 0.2, 0.22)
        if office:
            self.local(x, y, facing, (-0.24, -0.22, 0.42), (0.24, 0.24, 0.50), CHAIR, FABRIC, color)
            self.local(x, y, facing, (-0.23, -0.30, 0.55), (0.23, -0.22, 1.02), CHAIR, FABRIC, color)
            self.local(x, y, facing, (-0.03, -0.28, 0.48), (0.03, -0.24, 0.58), CHAIR, METAL, metal)
            self.local(x, y, facing, (-0.03, -0.03, 0.08), (0.03, 0.03, 0.42), CHAIR, METAL, metal)
            self.local(x, y, facing, (-0.28, -0.03, 0.03), (0.28, 0.03, 0.08), CHAIR, METAL, metal)
            self.local(x, y, facing, (-0.03, -0.28, 0.03), (0.03, 0.28, 0.08), CHAIR, METAL, metal)
        else:
            wood = self.jitter((0.45, 0.30, 0.18), 0.06)
            self.local(x, y, facing, (-0.22, -0.22, 0.42), (0.22, 0.22, 0.47), CHAIR, FABRIC, color)
            self.local(x, y, facing, (-0.22, -0.25, 0.47), (0.22, -0.21, 0.92), CHAIR, WOOD, wood)
            for lx, ly in ((-0.21, -0.24), (0.17, -0.24), (-0.21, 0.17), (0.17, 0.17)):
                self.local(x, y, facing, (lx, ly, 0.0), (lx + 0.04, ly + 0.04, 0.42), CHAIR, WOOD, wood)
        self.keepout.append((x - 0.3, y - 0.3, x + 0.3, y + 0.3))

    def sofa(self, x, y, facing, length=2.0, color=None):
        """A sofa centred at (x, y); its sitters look along ``facing``."""
        color = color or self.jitter((0.35, 0.20, 0.38), 0.1)
        half = length / 2
        self.local(x, y, facing, (-half, -0.45, 0.0), (half, 0.45, 0.25), SOFA, FABRIC, tuple(c * 0.8 for c in color))
        self.local(x, y, facing, (-half + 0.15, -0.30, 0.25), (half - 0.15, 0.45, 0.45), SOFA, FABRIC, color)
        self.local(x, y, facing, (-half, -0.45, 0.25), (half, -0.25, 0.85), SOFA, FABRIC, color)
        self.local(x, y, facing, (-half, -0.45, 0.25), (-half + 0.18, 0.45, 0.62), SOFA, FABRIC, color)
        self.local(x, y, facing, (half - 0.18, -0.45, 0.25), (half, 0.45, 0.62), SOFA, FABRIC, color)
        lo, hi = _facing_box(x, y, facing, (-half, -0.45, 0), (half, 0.45, 1))
        self.keepout.append((lo[0], lo[1], hi[0], hi[1]))

    def monitor(self, x, y, facing, z):
        self.local(x, y, facing, (-0.28, -0.03, z + 0.12), (0.28, 0.0, z + 0.47), CLUTTER, SCREEN, (0.08, 0.08, 0.09))
        self.local(x, y, facing, (-0.03, -0.05, z), (0.03, -0.02, z + 0.14), CLUTTER, METAL, (0.15, 0.15, 0.16))
        self.local(x, y, facing, (-0.12, -0.12, z), (0.12, 0.0, z + 0.015), CLUTTER, METAL, (0.15, 0.15, 0.16))

    def clutter_on(self, x0, y0, x1, y1, z, n):
        """``n`` small objects (papers, boxes, mugs, books) on a surface at height z."""
        rng = self.rng
        for _ in range(n):
            kind = rng.integers(0, 4)
            w, d = rng.uniform(0.08, 0.35), rng.uniform(0.08, 0.3)
            if x1 - x0 <= w + 0.04 or y1 - y0 <= d + 0.04:
                continue
            px, py = rng.uniform(x0 + 0.02, x1 - w - 0.02), rng.uniform(y0 + 0.02, y1 - d - 0.02)
            if kind == 0:  # paper sheets
                self.add((px, py, z), (px + 0.21, py + 0.29, z + 0.006), CLUTTER, PAPER, (0.95, 0.95, 0.93))
            elif kind == 1:  # small box
                self.add((px, py, z), (px + w, py + d, z + rng.uniform(0.05, 0.2)), CLUTTER, CARDBOARD,
                         self.jitter((0.62, 0.47, 0.30)))
            elif kind == 2:  # mug / bottle
                self.add((px, py, z), (px + 0.08, py + 0.08, z + rng.uniform(0.1, 0.25)), CLUTTER, PLASTIC,
                         tuple(rng.uniform(0.2, 0.9, 3)))
            else:  # book stack
                self.add((px, py, z), (px + 0.2, py + 0.26, z + rng.uniform(0.04, 0.12)), CLUTTER, PLASTIC,
                         tuple(rng.uniform(0.15, 0.8, 3)))

    def plant(self, x, y, size=0.45, height=1.1):
        self.add((x - 0.16, y - 0.16, 0), (x + 0.16, y + 0.16, 0.35), CLUTTER, PLASTIC, (0.55, 0.32, 0.22))
        self.add((x - size / 2, y - size / 2, 0.35), (x + size / 2, y + size / 2, height), CLUTTER, PLANT,
                 self.jitter((0.22, 0.45, 0.18), 0.05))
        self.keepout.append((x - size / 2, y - size / 2, x + size / 2, y + size / 2))

    def crate_stack(self, x, y, w, d, levels):
        z = 0.0
        for _ in range(levels):
            h = self.rng.uniform(0.25, 0.5)
            s = self.rng.uniform(0.85, 1.0)
            self.add((x, y, z), (x + w * s, y + d * s, z + h), CLUTTER, CARDBOARD, self.jitter((0.62, 0.47, 0.30)))
            z += h
        self.keepout.append((x, y, x + w, y + d))


# =========================================================================== scene kinds
def _camera(b: _Builder, x, y, z=None) -> Tuple[float, float, float]:
    z = b.rng.uniform(1.45, 1.6) if z is None else z
    return float(x), float(y), float(z)


def _ceiling_lights(size, nx, ny, intensity=0.9) -> List[Light]:
    sx, sy, sz = size
    return [Light(((i + 0.5) * sx / nx, (j + 0.5) * sy / ny, sz - 0.05), intensity)
            for i in range(nx) for j in range(ny)]


def _office(seed: int) -> Scene:
    rng = np.random.default_rng(seed)
    size = (rng.uniform(6.0, 7.5), rng.uniform(4.8, 5.8), rng.uniform(2.8, 3.1))
    sx, sy, sz = size
    b = _Builder(size, rng)
    cam = _camera(b, sx * rng.uniform(0.45, 0.55), sy * rng.uniform(0.45, 0.55))
    # windows along x1 (straight ahead), door on y0, board on y1
    nwin = 2
    for i in range(nwin):
        u = sy * (i + 0.5) / nwin - 0.7
        b.window("x1", u, 1.4, 0.85, 2.25)
    b.door("y0", sx * 0.12, 0.95)
    b.board("y1", sx * 0.35, 2.0)
    b.bookcase("x0", sy * 0.05, 0.9)  # ends well before the camera's y: no edge right on the seam
    b.bookcase("x0", sy * 0.05 + 0.92, 0.9)
    # two desks with monitors, chairs
    for i, yc in enumerate((sy * 0.2, sy * 0.8)):
        x0 = sx - 1.95
        b.table(x0, yc - 0.8, x0 + 0.8, yc + 0.8)
        b.monitor(x0 + 0.55, yc, 2, 0.74)
        b.clutter_on(x0 + 0.05, yc - 0.75, x0 + 0.35, yc + 0.75, 0.74, 3)
        b.chair(x0 - 0.35, yc + rng.uniform(-0.3, 0.3), 0, office=True)
    b.table(sx * 0.2, sy * 0.62, sx * 0.2 + 1.4, sy * 0.62 + 0.7)
    b.chair(sx * 0.2 + 0.7, sy * 0.62 - 0.35, 1, office=False)
    b.clutter_on(sx * 0.2, sy * 0.62, sx * 0.2 + 1.4, sy * 0.62 + 0.7, 0.74, 4)
    b.plant(sx - 0.35, sy * 0.5)
    b.crate_stack(0.6, sy - 0.65, 0.5, 0.4, 2)
    return Scene("office", seed, size, cam, b.boxes, _ceiling_lights(size, 2, 2), wall_color=b.jitter((0.86, 0.84, 0.78), 0.03),
                 floor_material=CARPET, floor_color=b.jitter((0.40, 0.42, 0.46), 0.04),
                 description="Office with two desks and monitors, a side table, bookcases, a whiteboard, windows and a door.")


def _conference(seed: int) -> Scene:
    rng = np.random.default_rng(seed)
    size = (rng.uniform(8.0, 9.5), rng.uniform(5.5, 6.5), rng.uniform(3.0, 3.3))
    sx, sy, sz = size
    b = _Builder(size, rng)
    cam = _camera(b, sx * 0.5 + rng.uniform(-0.3, 0.3), sy * 0.5 + 1.15)
    # long table in the middle, chairs on both sides
    tx0, tx1, ty0, ty1 = sx * 0.22, sx * 0.78, sy * 0.5 - 0.65, sy * 0.5 + 0.65
    b.table(tx0, ty0, tx1, ty1, color=b.jitter((0.40, 0.27, 0.16), 0.04))
    n = 5
    for i in range(n):
        x = tx0 + (i + 0.5) * (tx1 - tx0) / n
        b.chair(x, ty0 - 0.35, 1, office=True)
        if abs(x - cam[0]) > 0.5:
            b.chair(x, ty1 + 0.35, 3, office=True)
    b.chair(tx1 + 0.4, sy * 0.5, 2, office=True)
    b.clutter_on(tx0 + 0.2, ty0 + 0.1, tx1 - 0.2, ty1 - 0.1, 0.74, 6)
    b.board("x0", sy * 0.5 - 1.3, 2.6, 0.85, 2.05, black=rng.random() < 0.5)
    for i in range(3):
        b.window("y0", sx * (0.2 + 0.3 * i) - 0.6, 1.2, 0.8, 2.3)
    b.door("y1", sx - 1.6, 1.0)
    b.bookcase("y1", 0.9, 0.9)
    b.bookcase("y1", 1.82, 0.9)
    b.table(sx * 0.42, sy - 0.5, sx * 0.42 + 1.6, sy - 0.05, height=0.9)  # sideboard
    b.clutter_on(sx * 0.42, sy - 0.5, sx * 0.42 + 1.6, sy - 0.05, 0.9, 4)
    b.beam(1, sx / 3)
    b.beam(1, 2 * sx / 3)
    b.column(sx - 0.25, 0.25, 0.5, 0.5)
    b.column(sx - 0.25, sy - 0.25, 0.5, 0.5)
    b.crate_stack(sx - 0.8, sy * 0.5 - 0.3, 0.45, 0.45, 1)
    b.plant(0.45, sy - 0.45)
    return Scene("conference", seed, size, cam, b.boxes, _ceiling_lights(size, 3, 2), wall_color=b.jitter((0.80, 0.82, 0.84), 0.03),
                 floor_material=CARPET, floor_color=b.jitter((0.33, 0.28, 0.25), 0.04),
                 description="Conference room: long table with chairs, a board, a row of windows, ceiling beams and corner columns.")


def _corridor(seed: int) -> Scene:
    rng = np.random.default_rng(seed)
    size = (rng.uniform(14.0, 17.0), rng.uniform(2.3, 2.8), rng.uniform(2.7, 3.0))
    sx, sy, sz = size
    b = _Builder(size, rng)
    cam = _camera(b, sx * rng.uniform(0.4, 0.5), sy * 0.5)
    x = 1.0
    side = 0
    while x < sx - 1.5:
        wall = "y0" if side % 2 == 0 else "y1"
        b.door(wall, x, 0.95, color=(0.60, 0.42, 0.24) if side % 3 else (0.35, 0.45, 0.55))
        x += rng.uniform(2.2, 3.2)
        side += 1
    for i, xc in enumerate(np.arange(3.0, sx - 1.0, 4.0)):
        b.column(xc, 0.15, 0.4, 0.3)
        b.column(xc, sy - 0.15, 0.4, 0.3)
        b.beam(1, xc, width=0.4, drop=0.3)
    b.window("x1", sy * 0.5 - 0.7, 1.4, 0.7, 2.3)
    b.board("y1", cam[0] + 0.8, 1.2, 1.0, 1.9)  # notice board
    b.door("x0", sy * 0.5 - 0.55, 1.1, 2.2)
    b.crate_stack(sx - 1.2, 0.2, 0.5, 0.45, 2)
    b.add((cam[0] - 1.5, sy - 0.45, 0), (cam[0] - 1.1, sy - 0.05, 0.55), CLUTTER, PLASTIC, (0.2, 0.35, 0.6))  # bin
    b.chair(cam[0] + 3.0, 0.4, 1, office=False)
    return Scene("corridor", seed, size, cam, b.boxes, _ceiling_lights(size, 5, 1, 0.8), wall_color=b.jitter((0.88, 0.86, 0.80), 0.03),
                 floor_material=FLOOR_TILES, floor_color=b.jitter((0.66, 0.64, 0.60), 0.03),
                 description="Long corridor with doors on both sides, pilaster columns with beams, a notice board and a window at the end.")


def _lounge(seed: int) -> Scene:
    rng = np.random.default_rng(seed)
    size = (rng.uniform(8.0, 9.0), rng.uniform(7.0, 8.0), rng.uniform(2.8, 3.0))
    sx, sy, sz = size
    b = _Builder(size, rng)
    wall_color = b.jitter((0.90, 0.86, 0.76), 0.03)
    # L shape: a block of wall fills the far-left corner (x > ex, y > ey)
    ex, ey = sx * 0.62, sy * 0.55
    b.wall_block((ex, ey), (sx + 0.1, sy + 0.1), wall_color)
    cam = _camera(b, sx * 0.4, sy * 0.4)
    # sofas around a coffee table in the main part
    b.sofa(sx * 0.42, 0.55, 1, 2.2)
    b.sofa(0.55, sy * 0.45, 0, 1.8)
    b.table(sx * 0.3, sy * 0.18, sx * 0.3 + 1.1, sy * 0.18 + 0.6, height=0.42)
    b.clutter_on(sx * 0.3, sy * 0.18, sx * 0.3 + 1.1, sy * 0.18 + 0.6, 0.42, 3)
    # the wing of the L (towards +x, y < ey): armchairs and a window
    b.chair(ex + 0.8, 0.6, 1, office=False)
    b.chair(ex + 1.6, 0.6, 1, office=False)
    b.table(ex + 0.6, 1.2, ex + 1.8, 1.9)
    b.window("x1", 0.5, 1.6, 0.6, 2.3)
    b.window("y0", sx * 0.12, 1.6, 0.6, 2.3)
    b.bookcase("y1", 0.5, 1.0)
    b.bookcase("y1", 1.52, 1.0)
    b.door("y1", ex - 1.2, 0.9)
    b.board("x0", sy * 0.7, 1.2, 1.1, 1.9, black=True)
    b.column(ex, ey - 0.2, 0.4, 0.4)
    b.plant(sx - 0.4, ey - 0.45, 0.5, 1.3)
    b.plant(0.4, 0.4)
    return Scene("lounge", seed, size, cam, b.boxes, _ceiling_lights(size, 2, 2, 0.8), wall_color=wall_color,
                 floor_material=PARQUET, floor_color=b.jitter((0.58, 0.42, 0.27), 0.04),
                 description="L-shaped lounge: two sofas around a coffee table, armchairs, bookcases, windows and a column at the inner corner.")


def _storage(seed: int) -> Scene:
    rng = np.random.default_rng(seed)
    size = (rng.uniform(5.5, 6.5), rng.uniform(4.5, 5.2), rng.uniform(2.6, 2.9))
    sx, sy, sz = size
    b = _Builder(size, rng)
    cam = _camera(b, sx * 0.5, sy * 0.5)
    # shelves along three walls
    u = 0.1
    while u + 0.9 < sy - 0.1:
        b.bookcase("x1", u, 0.9, 2.1, 0.45)
        u += 0.92
    u = 0.1
    while u + 0.9 < sx - 1.4:
        b.bookcase("y0", u, 0.9, 2.1, 0.45)
        u += 0.92
    u = 0.5
    while u + 0.9 < sx - 0.6:
        b.bookcase("y1", u, 0.9, 1.9, 0.4)
        u += 0.92
    b.door("x0", sy * 0.5 - 0.5, 1.0)
    b.door("y0", sx - 1.2, 0.9, color=(0.45, 0.50, 0.55))
    b.window("x0", sy * 0.1, 0.8, 1.5, 2.2)
    b.table(0.6, sy - 1.65, 1.8, sy - 1.0)
    b.clutter_on(0.6, sy - 1.65, 1.8, sy - 1.0, 0.74, 5)
    b.column(sx * 0.3, sy * 0.3, 0.35, 0.35)
    for x, y in ((sx * 0.62, sy * 0.25), (sx * 0.7, sy * 0.68), (0.5, 0.5)):
        b.crate_stack(x, y, 0.55, 0.45, int(rng.integers(1, 4)))
    b.beam(0, sy * 0.5, 0.25, 0.25)
    return Scene("storage", seed, size, cam, b.boxes, _ceiling_lights(size, 2, 1, 0.9), wall_color=b.jitter((0.82, 0.82, 0.80), 0.02),
                 floor_material=FLOOR_TILES, floor_color=b.jitter((0.55, 0.55, 0.53), 0.03),
                 description="Storage room: shelves full of books and binders along three walls, stacked boxes, a work table and a column.")


def _seam(seed: int) -> Scene:
    rng = np.random.default_rng(seed)
    size = (rng.uniform(6.5, 7.5), rng.uniform(5.5, 6.5), rng.uniform(2.8, 3.0))
    sx, sy, sz = size
    b = _Builder(size, rng)
    wall_color = b.jitter((0.84, 0.86, 0.82), 0.03)
    cy = sy * 0.5
    cam = _camera(b, sx * 0.62, cy)
    # everything interesting straight behind the camera (-x, longitude +-180 degrees)
    b.table(cam[0] - 2.6, cy - 0.9, cam[0] - 1.6, cy + 0.9)
    b.clutter_on(cam[0] - 2.6, cy - 0.9, cam[0] - 1.6, cy + 0.9, 0.74, 3)
    b.chair(cam[0] - 1.25, cy - 0.45, 2, office=True)
    b.chair(cam[0] - 1.25, cy + 0.45, 2, office=True)
    b.sofa(0.55, cy, 0, 2.4)
    b.column(0.2, cy + 1.6, 0.4, 0.4)
    b.board("x0", cy - 0.8, 1.6, 1.05, 1.95)
    b.beam(1, cam[0] - 1.0, 0.35, 0.35)  # crosses the seam overhead
    # alcove in the front wall: two blocks leave a recess straight ahead
    b.wall_block((sx - 0.8, -0.1), (sx + 0.1, cy - 1.0), wall_color)
    b.wall_block((sx - 0.8, cy + 1.0), (sx + 0.1, sy + 0.1), wall_color)
    b.window("x1", cy - 0.7, 1.4, 0.9, 2.2)
    b.door("y0", 1.0, 0.95)
    b.bookcase("y1", 1.0, 0.9)
    b.plant(sx - 1.1, 0.45)
    return Scene("seam", seed, size, cam, b.boxes, _ceiling_lights(size, 2, 2), wall_color=wall_color,
                 floor_material=PARQUET, floor_color=b.jitter((0.60, 0.45, 0.30), 0.04),
                 description="Seam test: a table, chairs, a sofa, a board and a beam straight behind the camera, "
                             "i.e. split between the left and right image borders; an alcove with a window ahead.")


_KINDS = {"office": _office, "conference": _conference, "corridor": _corridor, "lounge": _lounge,
          "storage": _storage, "seam": _seam}
SCENE_KINDS: Tuple[str, ...] = tuple(_KINDS)

#: The bundled examples (assets/examples): name -> (kind, seed).
EXAMPLES: Dict[str, Tuple[str, int]] = {
    "office": ("office", 11), "conference": ("conference", 22), "corridor": ("corridor", 33),
    "lounge": ("lounge", 44), "storage": ("storage", 55), "seam": ("seam", 66),
}


def make_scene(kind: str, seed: int = 0) -> Scene:
    """A procedural scene of ``kind`` (one of :data:`SCENE_KINDS`), fully determined by ``seed``."""
    try:
        builder = _KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown scene kind {kind!r}; choose one of {', '.join(SCENE_KINDS)}") from None
    return builder(int(seed))


# =========================================================================== ray casting
def _box_arrays(boxes: Sequence[Box]) -> Tuple[np.ndarray, np.ndarray]:
    lo = np.array([b.lo for b in boxes], dtype=np.float64).reshape(-1, 3)
    hi = np.array([b.hi for b in boxes], dtype=np.float64).reshape(-1, 3)
    return lo, hi


def _cast(origin: np.ndarray, dirs: np.ndarray, lo: np.ndarray, hi: np.ndarray, t_max: np.ndarray,
          any_hit: bool = False):
    """Nearest box hit of every ray (slab test).

    origin: (3,) or (N, 3); dirs: (N, 3) unit; lo/hi: (M, 3). Returns (t, index) with index -1 where
    no box is nearer than ``t_max``; with ``any_hit`` returns a bool mask "some box before t_max".
    """
    n = dirs.shape[0]
    safe = np.where(np.abs(dirs) < 1e-12, 1e-12, dirs)
    inv = (1.0 / safe).astype(np.float32)
    o = np.broadcast_to(np.asarray(origin, dtype=np.float32), (n, 3)) if np.ndim(origin) == 2 else \
        np.asarray(origin, dtype=np.float32)
    best_t = t_max.astype(np.float32).copy()
    best_i = np.full(n, -1, dtype=np.int32)
    blocked = np.zeros(n, dtype=bool)
    ox, oy, oz = (o[:, 0], o[:, 1], o[:, 2]) if o.ndim == 2 else (o[0], o[1], o[2])
    ix, iy, iz = inv[:, 0], inv[:, 1], inv[:, 2]
    for k in range(lo.shape[0]):
        t1 = (np.float32(lo[k, 0]) - ox) * ix
        t2 = (np.float32(hi[k, 0]) - ox) * ix
        tnear = np.minimum(t1, t2)
        tfar = np.maximum(t1, t2)
        t1 = (np.float32(lo[k, 1]) - oy) * iy
        t2 = (np.float32(hi[k, 1]) - oy) * iy
        np.maximum(tnear, np.minimum(t1, t2), out=tnear)
        np.minimum(tfar, np.maximum(t1, t2), out=tfar)
        t1 = (np.float32(lo[k, 2]) - oz) * iz
        t2 = (np.float32(hi[k, 2]) - oz) * iz
        np.maximum(tnear, np.minimum(t1, t2), out=tnear)
        np.minimum(tfar, np.maximum(t1, t2), out=tfar)
        hit = (tnear <= tfar) & (tnear > 1e-4) & (tnear < best_t)
        if any_hit:
            blocked |= hit
        else:
            best_t = np.where(hit, tnear, best_t)
            best_i[hit] = k
    return blocked if any_hit else (best_t, best_i)


def _trace(scene: Scene, dirs: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Distance (metres, float64) to the first surface along each unit ray ``dirs`` (N, 3) from the
    camera, and the index of the box hit there (-1: the room shell)."""
    cam = np.asarray(scene.camera, dtype=np.float64)
    safe = np.where(np.abs(dirs) < 1e-12, 1e-12, dirs)
    room_lo, room_hi = np.zeros(3), np.asarray(scene.size, dtype=np.float64)
    t_shell = np.min(np.where(safe > 0, (room_hi - cam) / safe, (room_lo - cam) / safe), axis=1)
    if not len(scene.boxes):
        return t_shell, np.full(dirs.shape[0], -1)
    lo, hi = _box_arrays(scene.boxes)
    t_box, bi = _cast(cam, dirs, lo, hi, t_shell)
    return np.where(bi >= 0, t_box, t_shell).astype(np.float64), bi


def trace_depth(scene: Scene, rays) -> np.ndarray:
    """Exact depth of ``scene`` along any rays: ``rays`` ``(..., 3)`` in the world frame (normalised
    here) -> ``(...)`` float32 Euclidean distance from the camera in metres, the same ray cast as
    :func:`render` (so ``trace_depth(scene, geometry.erp_rays(h, w))`` is ``render(scene, w).depth``)."""
    r = np.asarray(rays, dtype=np.float64)
    shape = r.shape[:-1]
    r = r.reshape(-1, 3)
    r = r / np.linalg.norm(r, axis=1, keepdims=True)
    t, _ = _trace(scene, r)
    return t.astype(np.float32).reshape(shape)


def _face_of(p: np.ndarray, lo: np.ndarray, hi: np.ndarray, inside: bool):
    """Axis (0..2) and outward sign (+1/-1) of the box face nearest to each point ``p`` (N,3)."""
    d = np.concatenate([np.abs(p - lo), np.abs(p - hi)], axis=1)  # (N, 6): lo faces, hi faces
    f = np.argmin(d, axis=1)
    axis = f % 3
    sign = np.where(f < 3, -1.0, 1.0)
    if inside:  # the room shell is seen from inside: normals point inwards
        sign = -sign
    return axis, sign


# =========================================================================== textures
def _face_uv(p: np.ndarray, axis: np.ndarray):
    """Face coordinates (metres): u horizontal along the face, v vertical (or y on horizontal faces)."""
    u = np.where(axis == 0, p[:, 1], p[:, 0])
    v = np.where(axis == 2, p[:, 1], p[:, 2])
    return u, v


def _scale(out: np.ndarray, idx: np.ndarray, f) -> None:
    """Scales the albedo of pixels `idx` by `f` (a number or one factor per pixel)."""
    out[idx] *= np.asarray(f)[:, None] if np.ndim(f) else f


def _shade_paint(out, emissive, idx, u, v, horizontal, p, seed, **_) -> None:
    """Painted walls: faint mottling, a darker skirting board."""
    f = 0.97 + 0.05 * _fbm(u[idx] * 1.5, v[idx] * 1.5, seed[idx], 2)
    base = (~horizontal[idx]) & (p[idx, 2] < 0.09)  # skirting board
    out[idx] *= f[:, None]
    out[idx[base]] = out[idx[base]] * 0.55


def _shade_concrete(out, emissive, idx, u, v, seed, **_) -> None:
    """Concrete: coarse mottling."""
    _scale(out, idx, 0.9 + 0.12 * _fbm(u[idx] * 4, v[idx] * 4, seed[idx], 3))


def _shade_ceil_tiles(out, emissive, idx, u, v, seed, **_) -> None:
    """Ceiling tiles on a 0.6 m grid with specks."""
    a, c = u[idx] / 0.6, v[idx] / 0.6
    grid = (np.abs(a - np.rint(a)) < 0.014) | (np.abs(c - np.rint(c)) < 0.014)
    tile = 0.96 + 0.04 * _hash01(np.floor(a), np.floor(c), seed=seed[idx])
    speck = 0.97 + 0.05 * _value_noise(u[idx] * 40, v[idx] * 40, seed[idx])
    out[idx] *= (np.where(grid, 0.86, tile) * speck)[:, None]


def _shade_floor_tiles(out, emissive, idx, u, v, seed, **_) -> None:
    """Floor tiles on a 0.5 m grid with grout."""
    a, c = u[idx] / 0.5, v[idx] / 0.5
    grout = (np.abs(a - np.rint(a)) < 0.025) | (np.abs(c - np.rint(c)) < 0.025)
    tile = 0.88 + 0.18 * _hash01(np.floor(a), np.floor(c), seed=seed[idx])
    speck = 0.93 + 0.1 * _value_noise(u[idx] * 25, v[idx] * 25, seed[idx])
    out[idx] *= (np.where(grout, 0.6, tile * speck))[:, None]


def _shade_carpet(out, emissive, idx, u, v, seed, **_) -> None:
    """Carpet: fine noise over a slow variation."""
    f = 0.85 + 0.12 * _value_noise(u[idx] * 60, v[idx] * 60, seed[idx]) + 0.08 * _fbm(u[idx], v[idx], seed[idx] + 7, 2)
    _scale(out, idx, f)


def _shade_parquet(out, emissive, idx, u, v, seed, **_) -> None:
    """Parquet: 0.18 m planks, staggered boards, grain, gaps."""
    plank = np.floor(u[idx] / 0.18)
    off = _hash01(plank, seed=seed[idx]) * 1.2
    board = np.floor((v[idx] + off) / 1.2)
    tone = 0.8 + 0.3 * _hash01(plank, board, seed=seed[idx])
    grain = 0.94 + 0.06 * np.sin(u[idx] * 160 + 3 * _fbm(u[idx] * 3, v[idx] * 1.5, seed[idx] + plank.astype(np.int64), 2))
    gap = (np.abs(u[idx] / 0.18 - np.rint(u[idx] / 0.18)) < 0.03)
    out[idx] *= np.where(gap, 0.5, tone * grain)[:, None]


def _shade_wood(out, emissive, idx, u, v, uw, vh, horizontal, p, seed, **_) -> None:
    """Wood: grain along the long side."""
    along = np.where(uw[idx] >= vh[idx], u[idx], v[idx])  # grain runs along the long side
    across = np.where(uw[idx] >= vh[idx], v[idx], u[idx]) + p[idx, 2] * horizontal[idx]
    grain = 0.88 + 0.12 * np.sin(across * 70 + 8 * _fbm(along * 1.5, across * 6, seed[idx], 3))
    _scale(out, idx, grain)


def _shade_fabric(out, emissive, idx, u, v, seed, **_) -> None:
    """Fabric: fine weave noise."""
    _scale(out, idx, 0.86 + 0.1 * _value_noise(u[idx] * 80, v[idx] * 80, seed[idx]) + 0.06 * _fbm(u[idx] * 3, v[idx] * 3, seed[idx], 2))


def _shade_metal(out, emissive, idx, u, v, seed, **_) -> None:
    """Metal: brushed streaks."""
    _scale(out, idx, 0.9 + 0.12 * _value_noise(u[idx] * 3, v[idx] * 30, seed[idx]))


def _shade_plastic(out, emissive, idx, u, v, seed, **_) -> None:
    """Plastic: faint noise."""
    _scale(out, idx, 0.95 + 0.05 * _value_noise(u[idx] * 10, v[idx] * 10, seed[idx]))


def _shade_cardboard(out, emissive, idx, u, v, ur, uw, seed, **_) -> None:
    """Cardboard: fibre noise, a strip of tape."""
    tape = np.abs(ur[idx] - uw[idx] / 2) < 0.025  # a strip of tape across the middle
    f = 0.9 + 0.1 * _fbm(u[idx] * 10, v[idx] * 10, seed[idx], 2)
    out[idx] *= f[:, None]
    out[idx[tape]] = out[idx[tape]] * 0.8 + 0.12


def _shade_paper(out, emissive, idx, ur, vr, uw, vh, horizontal, **_) -> None:
    """Paper: ruled lines on top faces."""
    lines = horizontal[idx] & (np.abs(vr[idx] * 30 - np.rint(vr[idx] * 30)) < 0.12) & (vr[idx] > 0.03) \
        & (vr[idx] < vh[idx] - 0.03) & (ur[idx] > 0.02) & (ur[idx] < uw[idx] - 0.04)
    out[idx[lines]] *= 0.6


def _shade_plant(out, emissive, idx, u, v, p, seed, **_) -> None:
    """Plant: leafy noise, a little greener."""
    leaf = _value_noise(u[idx] * 25 + p[idx, 2] * 5, v[idx] * 25, seed[idx])
    out[idx] *= (0.55 + 0.8 * leaf)[:, None]
    out[idx, 1] += 0.05 * leaf


def _shade_screen(out, emissive, idx, ur, vr, uw, vh, axis, **_) -> None:
    """Screen: a lit, emissive front panel."""
    front = (axis[idx] != 2) & (np.minimum(uw[idx], vh[idx]) > 0.1)
    lit = front & (ur[idx] > 0.02) & (ur[idx] < uw[idx] - 0.02) & (vr[idx] > 0.02) & (vr[idx] < vh[idx] - 0.02)
    glow = 0.25 + 0.25 * (vr[idx] / np.maximum(vh[idx], 1e-6))
    out[idx[lit]] = np.stack([0.12 + glow[lit] * 0.3, 0.22 + glow[lit] * 0.4, 0.35 + glow[lit] * 0.6], 1)
    emissive[idx[lit]] = True


def _shade_whiteboard(out, emissive, idx, ur, vr, uw, vh, axis, seed, **_) -> None:
    """Whiteboard: a frame and lines of blue ink."""
    frame = (ur[idx] < 0.03) | (ur[idx] > uw[idx] - 0.03) | (vr[idx] < 0.03) | (vr[idx] > vh[idx] - 0.03)
    row = np.floor(vr[idx] / 0.09)
    word = np.floor(ur[idx] / 0.12)
    ink = (_hash01(row, word, seed=seed[idx]) < 0.55) & (np.abs(vr[idx] / 0.09 - row - 0.5) < 0.12) \
        & (vr[idx] > 0.4) & (ur[idx] > 0.15) & (ur[idx] < uw[idx] * 0.7) & (axis[idx] != 2)
    out[idx[frame]] = (0.7, 0.7, 0.72)
    out[idx[ink & ~frame]] = (0.15, 0.25, 0.6)


def _shade_blackboard(out, emissive, idx, u, v, ur, vr, uw, vh, seed, **_) -> None:
    """Blackboard: smears, chalk lines, a wooden frame."""
    frame = (ur[idx] < 0.04) | (ur[idx] > uw[idx] - 0.04) | (vr[idx] < 0.04) | (vr[idx] > vh[idx] - 0.04)
    smear = 0.9 + 0.2 * _fbm(u[idx] * 3, v[idx] * 3, seed[idx], 2)
    out[idx] *= smear[:, None]
    row = np.floor(vr[idx] / 0.1)
    chalk = (_hash01(row, np.floor(ur[idx] / 0.1), seed=seed[idx]) < 0.5) \
        & (np.abs(vr[idx] / 0.1 - row - 0.5) < 0.1) & (vr[idx] > 0.3) & (ur[idx] > 0.2) & (ur[idx] < uw[idx] * 0.6)
    out[idx[chalk & ~frame]] = (0.8, 0.82, 0.8)
    out[idx[frame]] = (0.45, 0.32, 0.2)


def _shade_door_panel(out, emissive, idx, ur, vr, uw, vh, axis, seed, **_) -> None:
    """Door: frame, inset panel, grain and a handle."""
    front = axis[idx] != 2
    edge = np.minimum(np.minimum(ur[idx], uw[idx] - ur[idx]), np.minimum(vr[idx], vh[idx] - vr[idx]))
    frame = edge < 0.06
    inset = (np.abs(edge - 0.18) < 0.012) & front
    grain = 0.92 + 0.08 * np.sin(ur[idx] * 60 + 5 * _fbm(ur[idx] * 4, vr[idx] * 0.7, seed[idx], 2))
    f = np.where(frame, 0.75, grain) * np.where(inset, 0.7, 1.0)
    out[idx] *= f[:, None]
    handle = front & (np.abs(vr[idx] - 1.0) < 0.025) & (np.abs(ur[idx] - (uw[idx] - 0.12)) < 0.06)
    out[idx[handle]] = (0.75, 0.72, 0.6)


def _shade_books(out, emissive, idx, ur, vr, uw, vh, axis, seed, lo, hi, color, **_) -> None:
    """Bookcase: see `_books`."""
    _books(out, idx, ur, vr, uw, vh, axis, lo, hi, seed, color)


def _shade_glass_window(out, emissive, idx, ur, vr, uw, vh, axis, seed, dirs, **_) -> None:
    """Window: frame and mullions, sky and ground seen through the glass (emissive)."""
    frame_w = 0.06
    mid_u = np.abs(ur[idx] - uw[idx] / 2) < 0.025
    mid_v = np.abs(vr[idx] - vh[idx] * 0.62) < 0.02
    frame = (ur[idx] < frame_w) | (ur[idx] > uw[idx] - frame_w) | (vr[idx] < frame_w) \
        | (vr[idx] > vh[idx] - frame_w) | mid_u | mid_v | (axis[idx] == 2)
    d = dirs[idx]
    elev = d[:, 2]
    sky_t = np.clip(elev * 3 + 0.3, 0, 1)
    sky = np.stack([0.78 - 0.38 * sky_t, 0.86 - 0.26 * sky_t, 0.96 - 0.06 * sky_t], 1)
    cloud = _fbm(d[:, 0] * 6 + d[:, 1] * 6, d[:, 2] * 14, seed[idx], 3)
    sky = sky + (np.clip(cloud - 0.55, 0, 1) * 1.5)[:, None] * (1 - sky)
    ground = np.array([0.35, 0.45, 0.28]) * (0.85 + 0.3 * _fbm(d[:, 0] * 20, d[:, 1] * 20, seed[idx], 2))[:, None]
    glass = np.where((elev > -0.08)[:, None], sky, ground)
    out[idx] = np.where(frame[:, None], np.array([0.88, 0.88, 0.86]), glass)
    emissive[idx[~frame]] = True


#: material id -> its shader: `shader(out, emissive, idx, **face)` changes the albedo `out`
#: (N, 3) and the `emissive` mask (N,) of the pixels `idx` of that material only; `face` holds
#: the per-pixel face coordinates `_albedo` computes (u, v, ur, vr, uw, vh, horizontal, axis,
#: p, seed, dirs, lo, hi, color), of which each shader names those it reads.
_SHADERS = {
    PAINT: _shade_paint,
    CONCRETE: _shade_concrete,
    CEIL_TILES: _shade_ceil_tiles,
    FLOOR_TILES: _shade_floor_tiles,
    CARPET: _shade_carpet,
    PARQUET: _shade_parquet,
    WOOD: _shade_wood,
    FABRIC: _shade_fabric,
    METAL: _shade_metal,
    PLASTIC: _shade_plastic,
    CARDBOARD: _shade_cardboard,
    PAPER: _shade_paper,
    PLANT: _shade_plant,
    SCREEN: _shade_screen,
    WHITEBOARD: _shade_whiteboard,
    BLACKBOARD: _shade_blackboard,
    DOOR_PANEL: _shade_door_panel,
    BOOKS: _shade_books,
    GLASS_WINDOW: _shade_glass_window,
}


def _albedo(mat: np.ndarray, color: np.ndarray, seed: np.ndarray, p: np.ndarray, axis: np.ndarray,
            lo: np.ndarray, hi: np.ndarray, dirs: np.ndarray):
    """Per-pixel albedo (N,3) in 0..1 and an emissive mask for the hit material of every pixel:
    the material's colour, changed by its shader (`_SHADERS`)."""
    out = color.copy()
    emissive = np.zeros(p.shape[0], dtype=bool)
    u, v = _face_uv(p, axis)
    ulo, vlo = _face_uv(lo, axis)
    uhi, vhi = _face_uv(hi, axis)
    face = dict(u=u, v=v, ur=u - ulo, vr=v - vlo,  # position on the face from its lower corner
                uw=uhi - ulo, vh=vhi - vlo,  # face size
                horizontal=axis == 2, axis=axis, p=p, seed=seed, dirs=dirs, lo=lo, hi=hi, color=color)
    for material, shader in _SHADERS.items():
        idx = np.nonzero(mat == material)[0]
        if idx.size:
            shader(out, emissive, idx, **face)
    return np.clip(out, 0, 1), emissive


def _books(out, idx, ur, vr, uw, vh, axis, lo, hi, seed, color):
    """Bookcase: wooden frame and shelves, rows of books with random widths, heights and colours."""
    along = np.where(axis[idx] == 0, hi[idx, 1] - lo[idx, 1], hi[idx, 0] - lo[idx, 0])
    thick = np.where(axis[idx] == 0, hi[idx, 0] - lo[idx, 0], hi[idx, 1] - lo[idx, 1])
    front = (axis[idx] != 2) & (along > thick)  # the large vertical faces show the books
    uu, vv = ur[idx], vr[idx]
    shelf_h = 0.36
    frame = (uu < 0.03) | (uu > uw[idx] - 0.03) | (vv > vh[idx] - 0.04) | (vv < 0.08)
    level = np.floor((vv - 0.08) / shelf_h)
    in_level = vv - 0.08 - level * shelf_h
    board = in_level < 0.025
    # books: slots of ~3.5 cm, merged into books of varying width by a hash
    slot = np.floor(uu / 0.035)
    key = _hash01(slot, level, seed=seed[idx])
    book = np.floor(uu / 0.035 - 0.6 * key)  # irregular book boundaries
    h = _hash01(book, level, seed=seed[idx] + 1)
    book_h = 0.2 + 0.12 * h
    gap_book = _hash01(book, level, seed=seed[idx] + 2) < 0.08
    has_book = (in_level - 0.025 < book_h) & ~gap_book
    palette = np.array([[0.55, 0.12, 0.1], [0.12, 0.25, 0.5], [0.15, 0.4, 0.2], [0.8, 0.7, 0.45],
                        [0.85, 0.85, 0.8], [0.25, 0.2, 0.18], [0.6, 0.35, 0.1], [0.3, 0.3, 0.55]])
    pick = (_hash01(book, level, seed=seed[idx] + 3) * len(palette)).astype(int)
    book_col = palette[pick] * (0.85 + 0.3 * h)[:, None]
    spine_band = np.abs(in_level - 0.025 - book_h * 0.8) < 0.01
    book_col = np.where(spine_band[:, None], book_col * 0.6 + 0.3, book_col)
    back = np.asarray(color)[idx] * 0.35
    res = np.where(has_book[:, None], book_col, back)
    res = np.where((frame | board)[:, None], out[idx], res)
    out[idx] = np.where(front[:, None], res, out[idx])


# =========================================================================== render
def render(scene: Scene, width: int = 1024, height: Optional[int] = None) -> RenderedPanorama:
    """Render ``scene`` to an ERP panorama of ``width x height`` (default ``height = width // 2``).

    Returns a :class:`RenderedPanorama` (RGB, metric Euclidean depth, encoded
    world-frame normals, Stanford2D3DS labels and a ``meta`` dict). The camera
    looks along +x (the image centre); see :mod:`panosamic.geometry`.
    """
    height = width // 2 if height is None else int(height)
    if width < 4 or height < 2:
        raise ValueError(f"image too small: {width}x{height}")
    sx, sy, sz = scene.size
    cam = np.asarray(scene.camera, dtype=np.float64)
    dirs = geometry.erp_rays(height, width).reshape(-1, 3)
    n = dirs.shape[0]

    # 1. room shell seen from inside, 2. nearest box
    t, bi = _trace(scene, dirs)
    hit_box = bi >= 0
    room_lo, room_hi = np.zeros(3), np.array([sx, sy, sz])
    lo, hi = _box_arrays(scene.boxes)
    p = cam + dirs * t[:, None]

    # 3. per-pixel surface attributes
    labels = np.empty(n, dtype=np.uint8)
    mat = np.empty(n, dtype=np.int64)
    color = np.empty((n, 3), dtype=np.float64)
    seed = np.empty(n, dtype=np.int64)
    plo = np.empty((n, 3))
    phi = np.empty((n, 3))
    axis = np.empty(n, dtype=np.int64)
    sign = np.empty(n)

    sh = ~hit_box
    a_sh, s_sh = _face_of(p[sh], room_lo, room_hi, inside=True)
    axis[sh], sign[sh] = a_sh, s_sh
    is_floor = sh.copy()
    is_floor[sh] = (a_sh == 2) & (s_sh > 0)
    is_ceil = sh.copy()
    is_ceil[sh] = (a_sh == 2) & (s_sh < 0)
    is_wall = sh & ~is_floor & ~is_ceil
    labels[is_floor], labels[is_ceil], labels[is_wall] = FLOOR, CEILING, WALL
    mat[is_floor], mat[is_ceil], mat[is_wall] = scene.floor_material, CEIL_TILES, PAINT
    color[is_floor], color[is_ceil], color[is_wall] = scene.floor_color, scene.ceiling_color, scene.wall_color
    seed[sh] = scene.seed * 7 + 3
    plo[sh], phi[sh] = room_lo, room_hi

    if hit_box.any():
        k = bi[hit_box]
        box_label = np.array([b.label for b in scene.boxes], dtype=np.uint8)
        box_mat = np.array([b.material for b in scene.boxes], dtype=np.int64)
        box_col = np.array([b.color for b in scene.boxes], dtype=np.float64)
        box_seed = np.array([b.tex_seed for b in scene.boxes], dtype=np.int64)
        labels[hit_box], mat[hit_box], color[hit_box], seed[hit_box] = box_label[k], box_mat[k], box_col[k], box_seed[k]
        plo[hit_box], phi[hit_box] = lo[k], hi[k]
        axis[hit_box], sign[hit_box] = _face_of(p[hit_box], lo[k], hi[k], inside=False)

    normal = np.zeros((n, 3))
    normal[np.arange(n), axis] = sign

    # ceiling light panels: the ceiling tile right above each light glows
    albedo, emissive = _albedo(mat, color, seed, p, axis, plo, phi, dirs)
    for light in scene.lights:
        lx, ly, _ = light.pos
        panel = is_ceil & (np.abs(p[:, 0] - lx) < 0.3) & (np.abs(p[:, 1] - ly) < 0.3)
        albedo[panel] = (1.0, 0.99, 0.95)
        emissive |= panel

    # 4. shading: hemispherical ambient + Lambert from each light with falloff; shadows from every light
    shade = 0.44 + 0.04 * normal[:, 2]
    pts = p + normal * 2e-3
    for li, light in enumerate(scene.lights):
        lp = np.asarray(light.pos, dtype=np.float64) - np.array([0, 0, 0.06])
        to_l = lp - pts
        dist = np.linalg.norm(to_l, axis=1)
        ldir = to_l / dist[:, None]
        lam = np.clip(np.sum(normal * ldir, axis=1), 0, None)
        contrib = light.intensity * lam / (1.0 + 0.045 * dist ** 2)
        need = (contrib > 1e-3) & ~emissive
        if len(scene.boxes) and need.any():
            occl = _cast(pts[need], ldir[need], lo, hi, dist[need] - 0.05, any_hit=True)
            c = contrib[need]
            c[occl] *= 0.3
            contrib[need] = c
        shade += 0.5 * contrib / max(1.0, 0.5 * len(scene.lights) ** 0.5)
    shade *= 1.0 / (1.0 + 0.012 * t)  # a little aerial falloff keeps far walls from looking flat
    lit = albedo * shade[:, None]
    lit = 1.0 - np.exp(-1.75 * lit)  # soft shoulder: bright walls near lamps do not clip
    rgb = np.clip(np.where(emissive[:, None], albedo, lit), 0, 1)
    rgb8 = np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8).reshape(height, width, 3)

    depth = t.astype(np.float32).reshape(height, width)
    normals = geometry.encode_normals(normal.reshape(height, width, 3))
    labels = labels.reshape(height, width)
    meta = scene_meta(scene, width, height)
    meta["class_shares"] = {name: round(float(s), 6) for name, s in
                            zip(STANFORD2D3DS.classes, geometry.class_shares(labels, 13, weighted=True))}
    return RenderedPanorama(rgb8, depth, normals, labels, meta)


def scene_meta(scene: Scene, width: int, height: int) -> Dict:
    """JSON-friendly description of a scene (rounded so it is stable across machines)."""
    r = lambda v: round(float(v), 4)  # noqa: E731
    return {
        "kind": scene.kind,
        "seed": int(scene.seed),
        "description": scene.description,
        "image_size": {"width": int(width), "height": int(height)},
        "camera": {"position_m": [r(c) for c in scene.camera], "height_m": r(scene.camera[2]),
                   "yaw_deg": 0.0, "looks_along": "+x (image centre)"},
        "room_size_m": [r(s) for s in scene.size],
        "num_boxes": len(scene.boxes),
        "frame": "x forward (image centre), y left, z up; metres",
        "depth": "Euclidean distance along the ray",
        "labels": "stanford2d3ds",
    }


def render_example(name: str, width: int = 1024) -> RenderedPanorama:
    """Render one of the bundled examples (:data:`EXAMPLES`) at ``width``."""
    try:
        kind, seed = EXAMPLES[name]
    except KeyError:
        raise ValueError(f"unknown example {name!r}; choose one of {', '.join(EXAMPLES)}") from None
    pano = render(make_scene(kind, seed), width)
    pano.meta["name"] = name
    return pano
