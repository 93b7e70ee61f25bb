"""`python -m panosamic predict/info/list-checkpoints` end to end on the tiny reference weights."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from panosamic import batch as batch_lib
from panosamic import cli
from panosamic.io import find_companions, panorama_stem

ROOT = Path(__file__).resolve().parents[1]


def run_module(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "panosamic", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=timeout)


def run_main(*args) -> tuple:
    """cli.main in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


# --- inputs ------------------------------------------------------------------------------------


def write_panorama(folder: Path, name: str, h: int, seed: int, depth: bool = True, normals: bool = True,
                   depth_name: str = None, normals_name: str = None) -> dict:
    """A synthetic room-like ERP (sky-ish ceiling, floor, vertical stripes) with 16-bit mm depth and normals."""
    rng = np.random.default_rng(seed)
    w = 2 * h
    y = np.linspace(0, 1, h)[:, None, None]
    x = np.linspace(0, 1, w)[None, :, None]
    base = np.concatenate([200 * (1 - y) + 0 * x, 120 + 80 * np.sin(6 * np.pi * x) + 0 * y,
                           60 + 150 * y + 0 * x], axis=-1)
    rgb = np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
    stem = Path(name).stem
    base_stem = stem[:-4] if stem.endswith("_rgb") else stem
    cv2.imwrite(str(folder / name), rgb[..., ::-1])
    files = {"image": folder / name, "rgb": rgb}
    if depth:
        d_mm = (1500 + 3000 * np.abs(np.cos(np.pi * y[..., 0])) + 500 * np.sin(4 * np.pi * x[..., 0])
                + rng.normal(0, 20, (h, w))).astype(np.uint16)
        d_mm[0, :5] = 0  # a few invalid pixels
        path = folder / (depth_name or f"{base_stem}_depth.png")
        cv2.imwrite(str(path), d_mm)
        files["depth"], files["depth_m"] = path, d_mm.astype(np.float32) / 1000.0
    if normals:
        n = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        path = folder / (normals_name or f"{base_stem}_normals.png")
        cv2.imwrite(str(path), n[..., ::-1])
        files["normals"], files["normals_rgb"] = path, n
    return files


@pytest.fixture(scope="module")
def checkpoint_dir(reference_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ckpt")
    for name in ("config.json", "model.safetensors", "sam.pth"):
        shutil.copy(reference_dir / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def predictor(checkpoint_dir):
    import panosamic

    return panosamic.from_pretrained(str(checkpoint_dir), device="cpu")


@pytest.fixture(scope="module")
def batch(checkpoint_dir, tmp_path_factory):
    """One in-process `predict` over a folder with a 256x128 and a 512x256 (`_rgb`) panorama."""
    inp = tmp_path_factory.mktemp("in")
    out = tmp_path_factory.mktemp("out") / "results"
    pans = {"small": write_panorama(inp, "small.png", 128, seed=1),
            "big": write_panorama(inp, "big_rgb.png", 256, seed=2)}
    code, stdout, stderr = run_main("predict", inp, "--checkpoint", checkpoint_dir, "--out", out,
                                    "--no-progress", "--device", "cpu")
    return {"code": code, "stderr": stderr, "out": out, "pans": pans, "input": inp}


# --- predict: success ------------------------------------------------------------------------------


def test_batch_writes_all_outputs(batch):
    assert batch["code"] == 0, batch["stderr"]
    out = batch["out"]
    for stem in ("small", "big"):  # `big_rgb.png` -> `big_*` beside `big_depth.png`
        for suffix in ("_labels.png", "_colors.png", "_stats.json"):
            assert (out / f"{stem}{suffix}").is_file(), sorted(p.name for p in out.iterdir())
    assert (out / "summary.csv").is_file()
    assert "2 of 2" in batch["stderr"]


def test_label_png_equals_predictor_labels(batch, predictor):
    ds = predictor.dataset
    for stem, pano in batch["pans"].items():
        labels_png = cv2.imread(str(batch["out"] / f"{stem}_labels.png"), cv2.IMREAD_UNCHANGED)
        assert labels_png.dtype == np.uint8 and labels_png.ndim == 2
        predictor.set_panorama(pano["rgb"], depth=pano["depth_m"], normals=pano["normals_rgb"])
        assert labels_png.shape == pano["rgb"].shape[:2]
        np.testing.assert_array_equal(labels_png, predictor.labels)

        color = cv2.imread(str(batch["out"] / f"{stem}_colors.png"), cv2.IMREAD_COLOR)[..., ::-1]
        np.testing.assert_array_equal(color, ds.palette[labels_png])


def test_stats_json(batch, predictor):
    ds = predictor.dataset
    for stem, pano in batch["pans"].items():
        stats = json.loads((batch["out"] / f"{stem}_stats.json").read_text())
        labels = cv2.imread(str(batch["out"] / f"{stem}_labels.png"), cv2.IMREAD_UNCHANGED)
        h, w = labels.shape
        assert (stats["width"], stats["height"]) == (w, h)
        assert stats["modalities"] == ["image", "depth", "normals"]
        assert Path(stats["depth"]).name == pano["depth"].name
        rows = stats["classes"]
        assert [r["name"] for r in rows] == list(ds.classes)
        assert [tuple(r["color"]) for r in rows] == [tuple(c) for c in ds.palette.tolist()]
        assert sum(r["pixels"] for r in rows) == h * w
        assert sum(r["pixel_share"] for r in rows) == pytest.approx(1.0)
        assert sum(r["sphere_share"] for r in rows) == pytest.approx(1.0)
        # sphere share: pixels weighted by cos(latitude), computed independently here
        lat = np.pi / 2 - (np.arange(h) + 0.5) / h * np.pi
        wts = np.repeat(np.cos(lat)[:, None], w, axis=1)
        expected = np.bincount(labels.ravel(), weights=wts.ravel(), minlength=len(rows)) / wts.sum()
        np.testing.assert_allclose([r["sphere_share"] for r in rows], expected, atol=1e-9)
        counts = np.bincount(labels.ravel(), minlength=len(rows))
        assert [r["pixels"] for r in rows] == counts.tolist()


def test_summary_csv(batch, predictor):
    with open(batch["out"] / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["stem"] for r in rows) == ["big", "small"]
    for r in rows:
        assert r["status"] == "ok" and r["error"] == ""
        shares = [float(r[f"sphere_share_{c}"]) for c in predictor.dataset.classes]
        assert sum(shares) == pytest.approx(1.0, abs=1e-4)
        assert r["dominant_class"] in predictor.dataset.classes


def test_existing_results_need_overwrite(batch, checkpoint_dir):
    pano = batch["pans"]["small"]["image"]
    code, _, err = run_main("predict", pano, "--checkpoint", checkpoint_dir, "--out", batch["out"], "--no-progress")
    assert code == 2 and "--overwrite" in err
    code, _, err = run_main("predict", pano, "--checkpoint", checkpoint_dir, "--out", batch["out"],
                            "--no-progress", "--overwrite")
    assert code == 0, err


def test_depth_and_normals_flags(tmp_path, checkpoint_dir, predictor):
    inp = tmp_path / "in"
    inp.mkdir()
    a = write_panorama(inp, "a.png", 128, seed=3, depth_name="dA.png", normals_name="nA.png")
    b = write_panorama(inp, "b.png", 128, seed=4, depth_name="dB.png", normals_name="nB.png")
    # without the flags the companions are not found by name
    code, _, err = run_main("predict", a["image"], "--checkpoint", checkpoint_dir, "--out", tmp_path / "o1",
                            "--no-progress")
    assert code == 1 and "depth" in err
    code, _, err = run_main("predict", a["image"], b["image"], "--checkpoint", checkpoint_dir,
                            "--out", tmp_path / "o2", "--no-progress",
                            "--depth", a["depth"], b["depth"], "--normals", a["normals"], b["normals"])
    assert code == 0, err
    predictor.set_panorama(b["rgb"], depth=b["depth_m"], normals=b["normals_rgb"])
    labels = cv2.imread(str(tmp_path / "o2" / "b_labels.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(labels, predictor.labels)
    # one flag per panorama, or a usage error
    code, _, err = run_main("predict", a["image"], b["image"], "--checkpoint", checkpoint_dir,
                            "--out", tmp_path / "o3", "--no-progress", "--depth", a["depth"])
    assert code == 2 and "--depth" in err


def test_depth_scale(tmp_path, checkpoint_dir, predictor):
    a = write_panorama(tmp_path, "a.png", 128, seed=5)
    cm = (a["depth_m"] * 100).astype(np.uint16)  # centimetres
    cv2.imwrite(str(a["depth"]), cm)
    code, _, err = run_main("predict", a["image"], "--checkpoint", checkpoint_dir, "--out", tmp_path / "o",
                            "--no-progress", "--depth-scale", "0.01")
    assert code == 0, err
    predictor.set_panorama(a["rgb"], depth=cm.astype(np.float32) * 0.01, normals=a["normals_rgb"])
    labels = cv2.imread(str(tmp_path / "o" / "a_labels.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(labels, predictor.labels)


# --- predict: failures -----------------------------------------------------------------------------


def test_batch_with_failures_subprocess(tmp_path, checkpoint_dir):
    """Real `python -m panosamic`: bad files are reported, the others still written, exit 1, no traceback."""
    inp = tmp_path / "in"
    inp.mkdir()
    write_panorama(inp, "good.png", 128, seed=6)
    write_panorama(inp, "wide.png", 100, seed=7)
    wide = cv2.imread(str(inp / "wide.png"))
    cv2.imwrite(str(inp / "wide.png"), cv2.resize(wide, (300, 100)))  # 3:1, not equirectangular
    write_panorama(inp, "nodepth.png", 64, seed=8, depth=False)
    (inp / "broken.png").write_bytes(b"this is not a PNG")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    out = tmp_path / "out"
    proc = run_module("predict", inp, notes, "--checkpoint", checkpoint_dir, "--out", out)
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr
    assert "Traceback" not in err
    lines = {name: [l for l in err.splitlines() if name in l and "error" in l]
             for name in ("wide.png", "nodepth.png", "broken.png", "notes.txt")}
    assert lines["wide.png"] and "300x100" in lines["wide.png"][0] and "2:1" in lines["wide.png"][0]
    assert lines["nodepth.png"] and "depth" in lines["nodepth.png"][0].split("nodepth.png", 1)[1]
    assert lines["broken.png"] and any(w in lines["broken.png"][0].lower()
                                       for w in ("cannot read", "corrupt", "not an image", "unreadable"))
    assert lines["notes.txt"] and "not an image" in lines["notes.txt"][0]
    for suffix in ("_labels.png", "_colors.png", "_stats.json"):
        assert (out / f"good{suffix}").is_file()
        assert not (out / f"wide{suffix}").exists()
    with open(out / "summary.csv", newline="") as f:
        status = {r["stem"]: r["status"] for r in csv.DictReader(f)}
    assert status == {"broken": "error", "good": "ok", "nodepth": "error", "wide": "error", "notes": "error"}


def test_missing_normals_follow_from_the_depth(tmp_path, checkpoint_dir):
    """An RGB-D-N checkpoint, a panorama with its depth but no normals: the normals are derived
    from the depth (the stats say so); without depth either, the message names the files."""
    a = write_panorama(tmp_path, "a.png", 64, seed=9, normals=False)
    code, _, err = run_main("predict", a["image"], "--checkpoint", checkpoint_dir, "--out", tmp_path / "o",
                            "--no-progress")
    assert code == 0, err
    assert json.loads((tmp_path / "o" / "a_stats.json").read_text())["normals"] == "derived from the depth"
    (tmp_path / "b").mkdir()
    b = write_panorama(tmp_path / "b", "b.png", 64, seed=9, normals=False, depth=False)
    code, _, err = run_main("predict", b["image"], "--checkpoint", checkpoint_dir, "--out", tmp_path / "o2",
                            "--no-progress")
    assert code == 1
    assert "depth" in err and "b_depth" in err and "--estimate-maps" in err


def test_bad_checkpoint_is_a_message(tmp_path):
    a = write_panorama(tmp_path, "a.png", 64, seed=10)
    proc = run_module("predict", a["image"], "--checkpoint", tmp_path / "missing_ckpt", "--out", tmp_path / "o")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "missing_ckpt" in proc.stderr


def test_usage_errors(tmp_path):
    code, _, err = run_main("predict", tmp_path / "nothing_here.png", "--checkpoint", "x", "--out", tmp_path / "o")
    assert code == 2 and "nothing_here.png" in err
    a = write_panorama(tmp_path, "a.png", 64, seed=11)
    code, _, err = run_main("predict", a["image"], "--checkpoint", "x", "--out", tmp_path / "o", "--device", "gpu0")
    assert code == 2 and "gpu0" in err
    with pytest.raises(SystemExit) as e:
        with contextlib.redirect_stderr(io.StringIO()):
            cli.main(["predict", "a.png"])  # no --checkpoint/--out
    assert e.value.code == 2


# --- helpers, other commands -----------------------------------------------------------------------


def test_the_cli_and_the_app_name_the_colour_png_alike(tmp_path):
    """One file, one name: the CLI wrote <stem>_color.png and the app's downloads <stem>_colors.png.
    Both take it from panosamic.exports; `_colors`, because `X_color.png` is what panosamic.io
    reads as the RGB panorama of X."""
    from app_utils import make_session

    from panosamic.exports import COLORS_PNG_SUFFIX
    from panosamic.studio.downloads import write_downloads

    s = make_session()
    app_files = [Path(p).name for p in write_downloads(s, tmp_path / "app", s.labels).values()]
    cli_file = batch_lib.output_paths(tmp_path / "cli", "office")["color"].name
    assert COLORS_PNG_SUFFIX == "_colors.png" and cli_file == "office_colors.png" and cli_file in app_files
    assert panorama_stem(cli_file) == "office_colors"   # not taken for the panorama "office"
    assert batch_lib._is_companion(Path(cli_file))            # a re-run over --out skips it


def test_expand_inputs_skips_companions(tmp_path):
    for name in ("r1.png", "r1_depth.png", "r1_normals.png", "r2_rgb.jpg", "r2_depth.npy", "r2_labels.png",
                 "r2_color.png", "r2_colors.png", "readme.txt"):
        (tmp_path / name).write_bytes(b"x")
    paths, problems, _ = batch_lib.expand_inputs([str(tmp_path)])
    assert [p.name for p in paths] == ["r1.png", "r2_rgb.jpg"] and not problems
    paths, _, skipped = batch_lib.expand_inputs([str(tmp_path / "r*.png"), str(tmp_path / "r1.png")])
    assert [p.name for p in paths] == ["r1.png"] and skipped >= 1
    assert panorama_stem(Path("r2_rgb.jpg")) == "r2"
    _, problems, _ = batch_lib.expand_inputs([str(tmp_path / "zz*.png")])
    assert problems and "zz" in problems[0]
    assert batch_lib.labels_array(np.array([[0, 300]]), 301).dtype == np.uint16
    assert batch_lib.labels_array(np.array([[0, 12]]), 13).dtype == np.uint8


def test_help_and_no_command():
    proc = run_module("--help")
    assert proc.returncode == 0 and "predict" in proc.stdout and "list-checkpoints" in proc.stdout
    proc = run_module()
    assert proc.returncode == 2


def test_info(checkpoint_dir):
    from panosamic.config import describe, resolve_config

    code, out, err = run_main("info", "--checkpoint", checkpoint_dir)
    assert code == 0, err
    assert describe(resolve_config(checkpoint_dir / "config.json")) in out
    code, out, _ = run_main("info", "--checkpoint", checkpoint_dir / "model.safetensors", "--json")
    info = json.loads(out)
    assert info["modalities"] == ["image", "depth", "normals"] and info["num_classes"] == 13


def test_list_checkpoints(checkpoint_dir, tmp_path):
    code, out, _ = run_main("list-checkpoints")
    assert code == 0 and "stanford2d3ds-vith-rgbdn-fold1" in out
    models = tmp_path / "models"
    shutil.copytree(checkpoint_dir, models / "tiny")
    code, out, _ = run_main("list-checkpoints", models)
    assert code == 0 and "tiny" in out and "13 classes" in out


def test_bundled_examples(checkpoint_dir, tmp_path):
    """assets/examples/ panoramas that come with depth and normals run through the CLI."""
    folder = ROOT / "assets" / "examples"
    images = [p for p in batch_lib.expand_inputs([str(folder)])[0]] if folder.is_dir() and any(folder.iterdir()) else []
    usable = [p for p in images
              if all(find_companions(p).get(k) is not None for k in ("depth", "normals"))]
    if not usable:
        pytest.skip("no example panoramas with depth and normals in assets/examples/")
    code, _, err = run_main("predict", *usable, "--checkpoint", checkpoint_dir, "--out", tmp_path, "--no-progress")
    assert code == 0, err
    for p in usable:
        assert (tmp_path / f"{panorama_stem(p)}_labels.png").is_file()


def test_predict_estimates_missing_maps_from_the_photo(tmp_path, monkeypatch):
    """`predict --estimate-maps` on a real RGB-only photo with the RGB-D-N demo: the depth is
    estimated (offline: the demo estimator, said on stderr), the normals derived from it, the
    estimated depth written as a 16-bit PNG in mm, the stats say where the maps came from.
    Without the flag the same photo fails with the advice to add it."""
    import shutil
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    photo = tmp_path / "in" / "hotel_room_rgb.jpg"
    photo.parent.mkdir()
    shutil.copy(root / "assets" / "examples" / "hotel_room_rgb.jpg", photo)
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1", "PANOSAMIC_ALLOCATOR": "system"}
    base = [sys.executable, "-m", "panosamic", "predict", str(photo), "--checkpoint", str(root / "assets" / "demo"),
            "--device", "cpu"]
    out = subprocess.run(base + ["--out", str(tmp_path / "plain")], capture_output=True, text=True, cwd=root,
                         env=env, timeout=300)
    assert out.returncode == 1 and "--estimate-maps" in out.stderr + out.stdout
    out = subprocess.run(base + ["--out", str(tmp_path / "est"), "--estimate-maps"], capture_output=True, text=True,
                         cwd=root, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "demo estimator ran" in out.stderr
    stats = json.loads((tmp_path / "est" / "hotel_room_stats.json").read_text())
    assert stats["depth"] == "estimated (demo-depth)" and stats["normals"] == "derived from the depth"
    from panosamic.io import load_depth

    depth = load_depth(tmp_path / "est" / "hotel_room_depth_estimated.png")
    assert depth.shape == (512, 1024) and (depth > 0.3).mean() > 0.99 and depth.max() < 20
