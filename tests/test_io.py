"""File reading/writing: round trips, companions, and clear InputError messages."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from panosamic import geometry, io
from panosamic.datasets import STANFORD2D3DS
from panosamic.errors import InputError

EXAMPLES = Path(__file__).resolve().parents[1] / "assets" / "examples"


def test_depth_png_millimetre_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.3, 12.0, (32, 64)).astype(np.float32)
    depth[0, :4] = 0
    depth[1, 0] = np.nan
    depth[1, 1] = -2
    path = io.save_depth_png(tmp_path / "d_depth.png", depth)
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.shape == (32, 64)
    assert raw[5, 5] == round(float(depth[5, 5]) * 1000)
    back = io.load_depth(path)
    assert back.dtype == np.float32 and back.shape == (32, 64)
    ok = np.isfinite(depth) & (depth > 0)
    assert np.abs(back[ok] - depth[ok]).max() <= 0.0005 + 1e-6
    assert np.all(back[~ok] == 0)


def test_depth_other_sources(tmp_path):
    d = np.full((4, 8), 2.5)
    d[0, 0] = np.inf
    np.save(tmp_path / "a.npy", d)
    got = io.load_depth(tmp_path / "a.npy")
    assert got[1, 1] == pytest.approx(2.5) and got[0, 0] == 0
    mm = np.array([[0, 1500, 65535]], dtype=np.uint16)
    np.testing.assert_allclose(io.load_depth(mm), [[0, 1.5, 0]])  # 65535 = missing, as in Stanford2D3DS
    np.testing.assert_allclose(io.load_depth(mm, scale=1 / 512), [[0, 1500 / 512, 0]])
    cv2.imwrite(str(tmp_path / "eight.png"), np.full((4, 8), 9, np.uint8))
    with pytest.raises(InputError, match="16-bit"):
        io.load_depth(tmp_path / "eight.png")
    if cv2.haveImageWriter("a.exr"):  # OpenEXR compiled into this OpenCV build
        ok, buf = cv2.imencode(".exr", d.astype(np.float32))
        (tmp_path / "a.exr").write_bytes(buf.tobytes())
        np.testing.assert_allclose(io.load_depth(tmp_path / "a.exr"), got)
    else:
        (tmp_path / "a.exr").write_bytes(b"not really exr")
        with pytest.raises(InputError, match="OpenEXR"):
            io.load_depth(tmp_path / "a.exr")


def test_load_image_conversions(tmp_path):
    rgba = np.zeros((10, 20, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 7
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    img = io.load_image(tmp_path / "a.png")
    assert img.shape == (10, 20, 3) and img.dtype == np.uint8 and img[0, 0, 0] == 200
    Image.fromarray(np.full((10, 20), 77, np.uint8), "L").save(tmp_path / "g.png")
    g = io.load_image(tmp_path / "g.png")
    assert g.shape == (10, 20, 3) and np.all(g == 77)
    assert io.load_image(np.zeros((4, 8), np.float32)).shape == (4, 8, 3)
    ex = io.load_image(EXAMPLES / "office_rgb.jpg")
    assert ex.shape == (512, 1024, 3)


@pytest.mark.parametrize("kind", ["baseline", "progressive", "444", "grey", "trailer", "cmyk"])
def test_jpeg_pixels_equal_pils_and_truncated_jpegs_are_refused(tmp_path, kind):
    """JPEGs decode through OpenCV when they end cleanly: the pixels equal PIL's, whatever the
    encoding; a truncated one is refused (OpenCV alone would fill it with grey)."""
    photo = Image.open(EXAMPLES / "office_rgb.jpg")
    path = tmp_path / "p.jpg"
    if kind == "grey":
        photo.convert("L").save(path, quality=90)
    elif kind == "cmyk":
        photo.convert("CMYK").save(path, quality=90)
    else:
        photo.save(path, quality=88, progressive=kind == "progressive", subsampling=0 if kind == "444" else 2)
    if kind == "trailer":  # data after the image (a phone's motion photo appends its video)
        path.write_bytes(path.read_bytes() + b"\x00\x00ftypmp42" * 50)
    with Image.open(path) as im:
        expected = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(io.load_image(path), expected)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(InputError, match="truncated"):
        io.load_image(path)


def test_clear_errors_for_bad_files(tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is not an image")
    with pytest.raises(InputError, match=r"could not read image .*notes\.jpg.*JPEG or PNG"):
        io.load_image(bad)
    with pytest.raises(InputError, match="not found"):
        io.load_image(tmp_path / "missing.png")
    with pytest.raises(InputError, match="folder"):
        io.load_image(tmp_path)
    with pytest.raises(InputError, match="could not read depth"):
        io.load_depth(tmp_path / "notes.jpg")
    (tmp_path / "x.npy").write_text("nope")
    with pytest.raises(InputError, match=r"\.npy"):
        io.load_depth(tmp_path / "x.npy")
    with pytest.raises(InputError, match="3-channel"):
        cv2.imwrite(str(tmp_path / "n.png"), np.zeros((4, 8), np.uint8))
        io.load_normals(tmp_path / "n.png")


def test_size_limit(tmp_path):
    io.check_panorama_size(4096, 8192)
    with pytest.raises(InputError, match="8192x4096"):
        io.check_panorama_size(4097, 8194)
    with pytest.raises(InputError, match="8192x4096"):
        io.check_panorama_size(4096, 8193)
    Image.fromarray(np.zeros((2, 8200, 3), np.uint8)).save(tmp_path / "wide.png")
    with pytest.raises(InputError, match="8200x2 pixels, larger than the limit of 8192x4096"):
        io.load_image(tmp_path / "wide.png")


def test_labels_and_normals_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    lab = rng.integers(0, 13, (16, 32))
    lab[0, 0] = -1
    io.save_labels_png(tmp_path / "l.png", lab)
    back = io.load_labels(tmp_path / "l.png")
    assert back.dtype == np.uint8 and back[0, 0] == 255
    np.testing.assert_array_equal(back.astype(int)[1:], lab[1:])
    big = np.full((4, 4), 300)
    io.save_labels_png(tmp_path / "big.png", big)
    assert io.load_labels(tmp_path / "big.png").max() == 300
    # colourised labels need a palette
    Image.fromarray(STANFORD2D3DS.colorize(back)).save(tmp_path / "c.png")
    with pytest.raises(InputError, match="palette"):
        io.load_labels(tmp_path / "c.png")
    np.testing.assert_array_equal(io.load_labels(tmp_path / "c.png", palette=STANFORD2D3DS.palette), back)
    n = rng.normal(size=(16, 32, 3))
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    io.save_normals_png(tmp_path / "n.png", n)
    rgb = io.load_normals(tmp_path / "n.png")
    np.testing.assert_array_equal(rgb, geometry.encode_normals(n))
    np.testing.assert_array_equal(io.load_normals(n), rgb)


def test_list_examples_are_the_labelled_rendered_rooms(tmp_path):
    """Evaluation and training iterate list_examples(): the six rendered rooms with ground truth,
    not the photographs (RGB only) beside them."""
    from devtools import scenes

    names = io.list_examples()
    assert names == sorted(scenes.EXAMPLES)
    photos = sorted(p.name for p in EXAMPLES.glob("*_rgb.jpg") if p.name[: -len("_rgb.jpg")] not in names)
    assert len(photos) >= 4 and "hotel_room_rgb.jpg" in photos
    for name in names:
        paths = io.example_paths(name)
        assert all(p.is_file() for p in paths.values()), name
    Image.fromarray(np.zeros((4, 8, 3), np.uint8)).save(tmp_path / "photo_rgb.jpg")
    Image.fromarray(np.zeros((4, 8, 3), np.uint8)).save(tmp_path / "room_rgb.jpg")
    Image.fromarray(np.zeros((4, 8), np.uint8)).save(tmp_path / "room_labels.png")
    assert io.list_examples(tmp_path) == ["room"]


def test_find_companions(tmp_path):
    for name in io.list_examples(EXAMPLES):
        c = io.find_companions(EXAMPLES / f"{name}_rgb.jpg")
        assert c["depth"] == EXAMPLES / f"{name}_depth.png"
        assert c["normals"] == EXAMPLES / f"{name}_normals.png"
        assert io.load_depth(c["depth"]).max() > 1.0
        assert io.load_normals(c["normals"]).shape == (512, 1024, 3)
    Image.fromarray(np.zeros((4, 8, 3), np.uint8)).save(tmp_path / "room.jpg")
    np.save(tmp_path / "room_depth.npy", np.ones((4, 8)))
    c = io.find_companions(tmp_path / "room.jpg")
    assert c == {"image": tmp_path / "room.jpg", "depth": tmp_path / "room_depth.npy", "normals": None}
    assert io.find_companions(tmp_path / "alone.png") == {"image": tmp_path / "alone.png", "depth": None, "normals": None}
    with pytest.raises(InputError, match="known examples"):
        io.example_paths("nope", EXAMPLES)


@pytest.mark.parametrize("name, stem, safe", [
    ("room_rgb.jpg", "room", "room"),
    ("dir/Room_IMAGE.png", "Room", "Room"),
    ("hall_color.png", "hall", "hall"),
    ("plain.png", "plain", "plain"),
    ("_rgb.png", "_rgb", "_rgb"),  # never an empty stem
    ("my room (2)_rgb.jpg", "my room (2)", "my_room__2_"),
    ("", "", "panorama"),
])
def test_panorama_stem(name, stem, safe):
    assert io.panorama_stem(name) == stem
    assert io.panorama_stem(Path(name) if name else name, safe=True) == safe
