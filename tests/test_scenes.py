"""The procedural renderer and the bundled examples: seamless, consistent geometry, deterministic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from devtools import scenes
from devtools.examples import write_example
from panosamic import geometry as g
from panosamic import io
from panosamic.datasets import STANFORD2D3DS

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "assets" / "examples"
W_SMALL = 256


@pytest.fixture(scope="module")
def small_renders():
    return {kind: scenes.render(scenes.make_scene(kind, seed=5), W_SMALL) for kind in scenes.SCENE_KINDS}


def test_outputs_shapes_dtypes_and_camera(small_renders):
    for kind, p in small_renders.items():
        assert p.rgb.shape == (128, 256, 3) and p.rgb.dtype == np.uint8
        assert p.depth.shape == (128, 256) and p.depth.dtype == np.float32
        assert p.normals.shape == (128, 256, 3) and p.normals.dtype == np.uint8
        assert p.labels.shape == (128, 256) and p.labels.dtype == np.uint8
        assert np.all(p.depth > 0.05) and np.all(np.isfinite(p.depth)), kind
        assert p.labels.max() < 13
        scene = scenes.make_scene(kind, seed=5)
        cam = np.array(scene.camera)
        assert 1.4 <= cam[2] <= 1.7, kind
        for b in scene.boxes:  # the camera is never inside a solid
            assert not np.all((cam > np.array(b.lo)) & (cam < np.array(b.hi))), (kind, b)
        # the classes a room must have
        assert {STANFORD2D3DS.index(c) for c in ("floor", "ceiling", "wall")} <= set(np.unique(p.labels))


def _column_diff(a: np.ndarray) -> tuple:
    """Mean absolute difference of each adjacent column pair inside the image, and across the seam."""
    a = a.astype(np.float64)
    if a.ndim == 3:
        a = a.mean(axis=2)
    interior = np.abs(np.diff(a, axis=1)).mean(axis=0)  # (W-1,)
    seam = np.abs(a[:, 0] - a[:, -1]).mean()
    return interior, seam


@pytest.mark.parametrize("kind", scenes.SCENE_KINDS)
def test_seamless(small_renders, kind):
    p = small_renders[kind]
    for name, arr in (("rgb", p.rgb), ("depth", p.depth), ("labels", p.labels)):
        interior, seam = _column_diff(arr)
        # the seam pair must look like an ordinary pair of neighbouring columns
        assert seam <= np.percentile(interior, 95) + 1e-9, (kind, name, seam, np.percentile(interior, 95))
    lab_seam = np.mean(p.labels[:, 0] != p.labels[:, -1])
    assert lab_seam <= max(3 * np.mean(p.labels[:, 1:] != p.labels[:, :-1]), 2 / p.labels.shape[0])
    if kind == "seam":  # the check is not vacuous: shift the right half by 3 rows and the seam stands out
        broken = p.depth.copy()
        broken[:, W_SMALL // 2:] = np.roll(broken[:, W_SMALL // 2:], 3, axis=0)
        interior, seam = _column_diff(broken)
        assert seam > np.percentile(interior, 95)


def test_seam_scene_has_objects_across_the_seam(small_renders):
    lab = small_renders["seam"].labels
    furniture = [STANFORD2D3DS.index(c) for c in ("table", "sofa", "beam", "floor", "wall")]
    left, right = lab[:, :3], lab[:, -3:]
    for k in furniture:
        assert (left == k).any() and (right == k).any(), STANFORD2D3DS.classes[k]


def test_depth_and_normals_agree():
    p = scenes.render(scenes.make_scene("office", seed=3), 512)
    est = g.normals_from_depth(p.depth)
    ref = g.decode_normals(p.normals)
    d = p.depth.astype(np.float64)
    # away from depth edges: every 3x3 neighbour within 3 % of the centre depth (wrapping columns)
    smooth = np.ones_like(d, dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            nb = np.roll(np.roll(d, dy, axis=0), dx, axis=1)
            smooth &= np.abs(nb - d) < 0.03 * d
    smooth[[0, -1]] = False
    angle = np.degrees(np.arccos(np.clip(np.sum(est * ref, axis=-1), -1, 1)))
    assert smooth.mean() > 0.8
    assert np.mean(angle[smooth] < 10) > 0.97, np.mean(angle[smooth] < 10)
    assert np.median(angle[smooth]) < 2


def _project(points, cam, w, h):
    lon, lat = g.ray_to_lonlat(np.asarray(points, float) - np.asarray(cam, float))
    x, y = g.lonlat_to_erp(lon, lat, w, h)
    return np.floor(x).astype(int), np.floor(y).astype(int)


def test_straight_room_edges_map_to_expected_erp_curves():
    """Points on the room's floor/wall edges and a vertical corner, projected with geometry, hit the
    renderer's label and depth transitions at the predicted pixels."""
    w, h = 1024, 512
    size, cam = (5.0, 4.0, 3.0), (2.0, 1.5, 1.5)
    column = scenes.Box((3.5, 2.8, 0.0), (3.9, 3.2, 3.0), 6, scenes.CONCRETE, (0.8, 0.8, 0.8))
    scene = scenes.Scene("test", 0, size, cam, boxes=[column])
    p = scenes.render(scene, w)
    floor, wall, ceiling, col = (STANFORD2D3DS.index(c) for c in ("floor", "wall", "ceiling", "column"))
    # floor/wall edge of the wall straight ahead (x = 5), away from the column
    ys = np.linspace(0.2, 2.5, 15)
    pts = np.stack([np.full_like(ys, 5.0), ys, np.zeros_like(ys)], 1)
    px, py = _project(pts, cam, w, h)
    assert np.all(p.labels[py - 2, px] == wall) and np.all(p.labels[py + 2, px] == floor)
    np.testing.assert_allclose(p.depth[py, px], np.linalg.norm(pts - cam, axis=1), rtol=0.02)
    # ceiling/wall edge of the wall behind the camera (x = 0): a curve that crosses the seam
    ys = np.linspace(0.1, 3.9, 21)
    pts = np.stack([np.zeros_like(ys), ys, np.full_like(ys, 3.0)], 1)
    px, py = _project(pts, cam, w, h)
    assert px.min() < 50 and px.max() > w - 50  # really on both sides of the seam
    assert np.all(p.labels[py - 2, px] == ceiling) and np.all(p.labels[py + 2, px] == wall)
    # vertical corner x=5, y=0 (front right): wall y=0 to its right (normal +y), wall x=5 to its left (normal -x)
    zs = np.linspace(0.3, 2.7, 9)
    pts = np.stack([np.full_like(zs, 5.0), np.zeros_like(zs), zs], 1)
    px, py = _project(pts, cam, w, h)
    assert np.all(px == px[0])  # a vertical 3D line is a vertical ERP line
    n = g.decode_normals(p.normals)
    np.testing.assert_allclose(n[py, px - 2], np.tile([-1.0, 0, 0], (9, 1)), atol=0.01)  # 8-bit encoding
    np.testing.assert_allclose(n[py, px + 2], np.tile([0, 1.0, 0], (9, 1)), atol=0.01)  # 8-bit encoding
    # the column's front-left vertical edge (x=3.5, y=3.2): column just to its right, wall to its left
    pts = np.stack([np.full_like(zs, 3.5), np.full_like(zs, 3.2), zs], 1)
    px, py = _project(pts, cam, w, h)
    dist = np.linalg.norm(pts - cam, axis=1)
    assert np.all(p.labels[py, px + 2] == col) and np.all(p.labels[py, px - 2] != col)
    np.testing.assert_allclose(p.depth[py, px + 2], dist, rtol=0.03)
    assert np.all(p.depth[py, px - 2] > dist + 0.5)  # the room behind is farther: a depth step


def test_deterministic_and_seed_dependent():
    a = scenes.render(scenes.make_scene("lounge", 7), 128)
    b = scenes.render(scenes.make_scene("lounge", 7), 128)
    c = scenes.render(scenes.make_scene("lounge", 8), 128)
    for name in ("rgb", "depth", "normals", "labels"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.depth, c.depth)
    assert a.meta == b.meta
    with pytest.raises(ValueError, match="unknown scene kind"):
        scenes.make_scene("kitchen", 1)


def test_examples_cover_every_class_and_match_their_metadata():
    names = io.list_examples(EXAMPLES)
    assert set(names) == set(scenes.EXAMPLES)
    seen = set()
    for name in names:
        paths = io.example_paths(name, EXAMPLES)
        labels = io.load_labels(paths["labels"])
        assert labels.shape == (512, 1024)
        seen |= set(np.unique(labels).tolist())
        meta = json.loads(paths["meta"].read_text())
        assert meta["image_size"] == {"width": 1024, "height": 512}
        shares = g.class_shares(labels, 13)
        for cls, v in zip(STANFORD2D3DS.classes, shares):
            assert meta["class_shares"][cls] == pytest.approx(v, abs=2e-6)
        assert io.load_image(paths["image"]).shape == (512, 1024, 3)
    assert seen == set(range(13))


def test_example_regenerates_byte_identically(tmp_path):
    name = "corridor"
    written = write_example(tmp_path, name, scenes.render_example(name, 1024))
    for key, path in written.items():
        bundled = EXAMPLES / path.name
        assert path.read_bytes() == bundled.read_bytes(), f"{path.name} differs from the bundled file"
