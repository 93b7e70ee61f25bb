"""panosamic.exports (solid-angle statistics, COCO RLE, GLB) and panosamic.studio.render (legend, overlays, plotly figures)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from panosamic import exports
from panosamic.io import save_labels_png
from panosamic.studio import render
from panosamic.datasets import STANFORD2D3DS as DS


def test_class_stats_sphere_share_is_cos_latitude_weighted():
    h, w = 64, 128
    labels = np.zeros((h, w), np.int64)
    labels[:8] = 3          # a polar cap: 1/8 of the rows ...
    labels[28:36] = 11      # ... and an equatorial band of the same pixel count
    stats = exports.class_stats(labels, DS.classes, DS.palette)
    by = {s["index"]: s for s in stats}
    assert by[3]["pixels"] == by[11]["pixels"] == 8 * w
    assert by[3]["pixel_share"] == pytest.approx(1 / 8, abs=1e-6)
    # exact spherical zones: cap from 90 to 67.5 deg latitude, band +-11.25 deg
    cap = (1 - np.sin(np.radians(67.5))) / 2
    band = np.sin(np.radians(11.25))
    assert by[3]["sphere_share"] == pytest.approx(cap, rel=1e-3)
    assert by[11]["sphere_share"] == pytest.approx(band, rel=1e-3)
    assert by[11]["sphere_share"] > 4 * by[3]["sphere_share"]
    assert sum(s["sphere_share"] for s in stats) == pytest.approx(1.0, abs=1e-5)
    assert sum(s["steradians"] for s in stats) == pytest.approx(4 * np.pi, rel=1e-5)
    assert by[3]["hex"] == "#%02x%02x%02x" % tuple(DS.palette[3])
    assert by[3]["color"] == [int(v) for v in DS.palette[3]]


def test_class_stats_ignores_invalid_labels_and_reports_median_distance():
    labels = np.full((8, 16), 255, np.int64)
    labels[:, :8] = 0
    depth = np.full((8, 16), 2.0)
    depth[0, 0] = 0  # invalid
    depth[:, :4] = 4.0
    stats = exports.class_stats(labels, DS.classes, DS.palette, depth=depth)
    assert stats[0]["sphere_share"] == pytest.approx(1.0)
    assert stats[0]["median_distance_m"] == pytest.approx(3.0)
    assert stats[1]["median_distance_m"] is None
    csv = exports.stats_csv(stats)
    lines = csv.strip().split("\n")
    assert lines[0].startswith("index,name,color,pixels,pixel_share,sphere_share")
    assert len(lines) == 1 + len(DS.classes)


def test_legend_lists_present_classes_largest_first():
    labels = np.zeros((32, 64), np.int64)
    labels[:, :10] = 7
    html = render.legend_html(exports.class_stats(labels, DS.classes, DS.palette))
    assert html.index("beam") < html.index("door")  # beam (0) covers more of the sphere
    assert "ceiling" not in html                      # absent classes are left out
    assert "%" in html and DS.classes[7] in html


def test_rle_round_trip_and_pycocotools_string_format():
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (5, 7), (37, 80), (64, 128)]:
        for density in (0.0, 0.1, 0.5, 1.0):
            m = rng.random(shape) < density
            rle = exports.encode_rle(m)
            assert rle["size"] == list(shape)
            assert isinstance(rle["counts"], str)
            np.testing.assert_array_equal(exports.decode_rle(rle), m)
    # COCO layout: column-major, first run counts zeros.
    from pycocotools import mask as mask_utils

    m = np.zeros((4, 3), bool)
    m[1:3, 1] = True
    expected = mask_utils.frPyObjects({"size": [4, 3], "counts": [5, 2, 5]}, 4, 3)["counts"].decode()
    assert exports.encode_rle(m)["counts"] == expected
    # Large counts and negative deltas (multi-group characters)
    big = np.zeros((1000, 151), bool).T.ravel()
    big[100000:100003] = True
    big[100004:150004] = True
    big = big.reshape(151, 1000).T
    np.testing.assert_array_equal(exports.decode_rle(exports.encode_rle(big)), big)
    # uncompressed input is accepted too
    np.testing.assert_array_equal(exports.decode_rle({"size": [4, 3], "counts": [5, 2, 5]}), m)


def test_glb_is_valid_binary_gltf(tmp_path):
    depth = np.full((16, 32), 2.0, np.float32)
    depth[:2] = 0  # invalid rows are left out
    labels = np.random.default_rng(1).integers(0, 13, (16, 32))
    path = exports.point_cloud_glb(str(tmp_path / "p.glb"), depth, labels, DS.palette)
    raw = open(path, "rb").read()
    magic, version, length = struct.unpack_from("<III", raw)
    assert magic == 0x46546C67 and version == 2 and length == len(raw)
    jlen, jtype = struct.unpack_from("<II", raw, 12)
    assert jtype == 0x4E4F534A and jlen % 4 == 0
    doc = json.loads(raw[20:20 + jlen])
    assert doc["asset"]["version"] == "2.0"
    prim = doc["meshes"][0]["primitives"][0]
    assert prim["mode"] == 0  # POINTS
    n = 14 * 32
    pos = doc["accessors"][prim["attributes"]["POSITION"]]
    assert pos["count"] == n and pos["componentType"] == 5126 and pos["type"] == "VEC3"
    doc2, binary = exports.read_glb(path)
    assert doc2 == doc and len(binary) == doc["buffers"][0]["byteLength"]
    for view in doc["bufferViews"]:
        assert view["byteOffset"] % 4 == 0 and view["byteOffset"] + view["byteLength"] <= len(binary)
    xyz = np.frombuffer(binary, np.float32, count=3 * n, offset=doc["bufferViews"][0]["byteOffset"]).reshape(n, 3)
    np.testing.assert_allclose(np.linalg.norm(xyz, axis=1), 2.0, rtol=1e-5)  # true distances
    assert pos["min"] == pytest.approx(xyz.min(0).tolist()) and pos["max"] == pytest.approx(xyz.max(0).tolist())
    cls = np.frombuffer(binary, np.float32, count=n, offset=doc["bufferViews"][2]["byteOffset"])
    np.testing.assert_array_equal(cls, labels[2:].ravel())
    rgba = np.frombuffer(binary, np.uint8, count=4 * n, offset=doc["bufferViews"][1]["byteOffset"]).reshape(n, 4)
    np.testing.assert_array_equal(rgba[:, :3], DS.palette[labels[2:].ravel()])


def test_overlay_blends_and_highlights_mask():
    img = np.full((32, 64, 3), 100, np.uint8)
    labels = np.zeros((32, 64), np.int64)
    assert (render.overlay(img, labels, DS.palette, opacity=0.0) == 100).all()
    full = render.overlay(img, labels, DS.palette, opacity=1.0)
    assert (full == DS.palette[0]).all()
    mask = np.zeros((32, 64), bool)
    mask[10:20, 20:40] = True
    out = render.overlay(img, labels, DS.palette, opacity=0.0, mask=mask, max_width=32)
    assert out.shape == (16, 32, 3)
    assert not (out[8, 15] == 100).all() and (out[1, 1] == 100).all()


def test_draw_prompts_marks_points_and_wrapping_box():
    disp = np.zeros((50, 100, 3), np.uint8)
    out = render.draw_prompts(disp, 0.5, points=[(40, 40)], point_labels=[1], box=[180, 20, 20, 80])
    assert (out[20, 20] != 0).any()         # the point at (20, 20) display pixels
    assert (out[10:40, 95:100] != 0).any()  # wrapping box: part at the right border
    assert (out[10:40, 0:12] != 0).any()    # ... and at the left border
    assert not (out[25, 50] != 0).any()      # nothing in the middle


def test_point_cloud_figure_at_true_distances():
    import base64
    import json

    from panosamic.exports import _sample_points

    depth = np.full((32, 64), 3.0)
    depth[:, :10] = np.nan
    labels = np.full((32, 64), 8)
    labels[:16] = 2
    points, idx = _sample_points(depth, 500)
    fig = json.loads(render.plotly_json(render.point_cloud_figure(points, labels.ravel()[idx], DS.palette, DS.classes)))
    traces = {t["name"]: t for t in fig["data"]}
    assert set(traces) == {DS.classes[2], DS.classes[8], "camera"}   # one trace per class present

    def values(v):  # typed arrays as plotly.js reads them
        return np.frombuffer(base64.b64decode(v["bdata"]), np.dtype(v["dtype"]))

    n = 0
    for c in (2, 8):
        t = traces[DS.classes[c]]
        x, y, z = (values(t[a]) for a in "xyz")
        n += len(x)
        r = np.sqrt(x.astype(np.float64) ** 2 + y ** 2 + z ** 2)
        np.testing.assert_allclose(r, 3.0, rtol=1e-5)
        np.testing.assert_allclose(values(t["customdata"]), 3.0, rtol=1e-5)
        assert t["marker"]["color"] == "#%02x%02x%02x" % tuple(DS.palette[c])
        assert (z > 0).all() if c == 2 else (z < 0).all()   # the upper half is class 2
    assert 100 < n <= 600


def test_label_png_round_trip(tmp_path):
    import cv2

    labels = np.random.default_rng(3).integers(0, 13, (8, 16))
    labels[0, 0] = -1
    path = str(save_labels_png(tmp_path / "l.png", labels))
    back = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint8 and back[0, 0] == 255
    np.testing.assert_array_equal(back.astype(np.int64)[labels >= 0], labels[labels >= 0])


@pytest.mark.parametrize("dtype", [np.uint8, np.int64])
def test_label_colors_follow_the_palette_and_blacken_unknown_classes(dtype):
    from panosamic.exports import label_colors

    labels = np.random.default_rng(4).integers(0, len(DS.palette), (20, 40)).astype(dtype)
    labels[0, :3] = 255 if dtype == np.uint8 else [-1, 13, 99]
    rgb = label_colors(labels, DS.palette)
    known = labels < len(DS.palette) if dtype == np.uint8 else (labels >= 0) & (labels < len(DS.palette))
    np.testing.assert_array_equal(rgb[known], np.asarray(DS.palette, np.uint8)[labels[known]])
    assert not rgb[~known].any()
    np.testing.assert_array_equal(label_colors(labels, DS.palette, bgr=True), rgb[..., ::-1])
