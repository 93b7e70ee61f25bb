"""`python -m panosamic evaluate` on small Stanford2D3DS and ToF-360 datasets in the authors' processed layouts.

The datasets are written from the bundled examples (tests/eval_utils.py); the expected numbers
come from the test's own decoding of those files and its own numpy accumulation.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import panosamic
from eval_utils import (CLASSES, DEMO, TEST_KEYS, TOF_KEYS, TOF_SCENES, build_stanford, build_tof360, run_main,
                        tof_class_of, truth, truth_tof360)
from panosamic.evaluation import evaluate as evaluate_module
from panosamic.evaluation.layouts import get_layout
from panosamic.evaluation.max_depth import split_max_depth


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return build_stanford(tmp_path_factory.mktemp("s2d3ds"))


def training_t(root: Path) -> float:
    """99.5 % inlier depth of fold 1's training areas, by the definition: 0.1 m bins over
    0..128 m, left edge of the first bin where the cumulative count reaches 99.5 %."""
    depths = [truth(s)["depth"][truth(s)["valid"]] for a in ("area_1", "area_2", "area_3", "area_4", "area_6")
              if (root / a).is_dir() for s in sorted((root / a).iterdir())]
    hist, edges = np.histogram(np.concatenate(depths), bins=1280, range=(0, 128))
    cum = np.cumsum(hist)
    return round(float(edges[np.nonzero(cum >= 0.995 * cum[-1])[0][0]]), 1)


def expected_metrics(root: Path, out: Path, keys=TEST_KEYS, decode=truth) -> dict:
    """Intersection / ground truth / prediction summed over the test split, then IoU, NaN-means."""
    k = 13
    sums = {key: np.zeros(k) for key in ("i", "t", "p", "wi", "wt", "wp")}
    for key in keys:
        gt = decode(root / key)["labels"]
        pred = np.asarray(Image.open(out / "labels" / f"{key}.png")).astype(np.int64)
        valid = gt >= 0
        h = gt.shape[0]
        weight = np.repeat(np.cos((0.5 - (np.arange(h) + 0.5) / h) * np.pi)[:, None], gt.shape[1], axis=1)
        for c in range(k):
            hit, g, p = (pred == c) & (gt == c) & valid, (gt == c) & valid, (pred == c) & valid
            for prefix, wt in (("", 1.0), ("w", weight)):
                sums[prefix + "i"][c] += np.sum(hit * wt)
                sums[prefix + "t"][c] += np.sum(g * wt)
                sums[prefix + "p"][c] += np.sum(p * wt)
    out_m = {}
    for prefix, suffix in (("", ""), ("w", "_weighted")):
        i, t, p = sums[prefix + "i"], sums[prefix + "t"], sums[prefix + "p"]
        with np.errstate(invalid="ignore", divide="ignore"):
            iou, acc = i / (t + p - i), i / t
        out_m["miou" + suffix] = np.nanmean(iou)
        out_m["macc" + suffix] = np.nanmean(acc)
        out_m["pixel_accuracy" + suffix] = i.sum() / t.sum()
        out_m["iou" + suffix] = iou
    return out_m


def check_against_independent(root: Path, out: Path, t: float, keys=TEST_KEYS, decode=truth) -> dict:
    m = json.loads((out / "metrics.json").read_text())
    assert m["max_depth"] == t
    assert m["num_samples"] == len(keys) and m["num_failed"] == 0
    # The saved predictions are what the model gives on the test's own decoding with this T.
    predictor = panosamic.from_pretrained(str(DEMO), device="cpu", max_depth=t)
    for key in keys:
        s = decode(root / key)
        predictor.set_panorama(s["image"], depth=s["depth"], normals=s["normals"])
        saved = np.asarray(Image.open(out / "labels" / f"{key}.png"))
        np.testing.assert_array_equal(saved, predictor.labels)
    exp = expected_metrics(root, out, keys, decode)
    for name in ("miou", "macc", "pixel_accuracy", "miou_weighted", "macc_weighted", "pixel_accuracy_weighted"):
        assert m[name] == pytest.approx(exp[name], rel=1e-9), name
    iou = [np.nan if v is None else v for v in m["per_class_iou"].values()]
    np.testing.assert_allclose(iou, exp["iou"], rtol=1e-9)
    assert list(m["per_class_iou"]) == list(panosamic.datasets.STANFORD2D3DS.classes)
    return m


def test_evaluate_matches_an_independent_computation_with_t_from_the_training_split(dataset, tmp_path):
    out = tmp_path / "eval"
    code, stdout, err = run_main("evaluate", "--dataset", "stanford2d3ds", "--root", dataset, "--fold", 1,
                                 "--checkpoint", DEMO, "--out", out, "--save-labels", "--no-progress")
    assert code == 0, err
    t = training_t(dataset)
    m = check_against_independent(dataset, out, t)
    assert "training" in m["max_depth_source"] and (dataset / "panosamic_max_depth.json").is_file()
    assert f"mIoU {100 * m['miou']:5.1f}" in stdout
    # void pixels (unknown instances, the <UNK> instance) are counted nowhere
    rows = list(csv.DictReader(open(out / "per_sample.csv", newline="")))
    assert [r["sample"] for r in rows] == TEST_KEYS
    for r in rows:
        labelled = int((truth(dataset / r["sample"])["labels"] >= 0).sum())
        assert sum(int(r[f"t_{c}"]) for c in panosamic.datasets.STANFORD2D3DS.classes) == labelled
        assert labelled < int(r["width"]) * int(r["height"])


def test_evaluate_with_t_given(dataset, tmp_path):
    out = tmp_path / "eval"
    code, _, err = run_main("evaluate", "--dataset", "stanford2d3ds", "--root", dataset, "--fold", 1,
                            "--checkpoint", DEMO, "--out", out, "--save-labels", "--no-progress",
                            "--max-depth", 4.0)
    assert code == 0, err
    m = check_against_independent(dataset, out, 4.0)
    assert m["max_depth_source"].startswith("given")


def test_evaluate_resumes_and_gives_the_same_metrics(dataset, tmp_path):
    out = tmp_path / "eval"
    args = ("evaluate", "--dataset", "stanford2d3ds", "--root", dataset, "--fold", 1, "--checkpoint", DEMO,
            "--out", out, "--no-progress", "--max-depth", 6.0)
    assert run_main(*args)[0] == 0
    first = json.loads((out / "metrics.json").read_text())
    # drop the last sample's row, as if the run had been interrupted before it
    lines = (out / "per_sample.csv").read_text().splitlines(keepends=True)
    (out / "per_sample.csv").write_text("".join(lines[:-1]) + lines[-1][:40])
    code, _, err = run_main(*args)
    assert code == 0, err
    assert "resuming: 2 of 3" in err
    second = json.loads((out / "metrics.json").read_text())
    for key in ("miou", "macc", "pixel_accuracy", "per_class_iou", "miou_weighted", "seam_consistency_pred",
                "num_samples"):
        assert second[key] == first[key], key
    # another T in the same folder is refused rather than mixed in
    code, _, err = run_main(*args[:-1], 7.0)
    assert code == 1 and "max_depth" in err and "--overwrite" in err


def test_wrong_layout_names_the_missing_file_and_the_structure(dataset, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(dataset, root)
    (root / "area_5a" / "office" / "depth_mask.webp").unlink()
    code, _, err = run_main("evaluate", "--dataset", "stanford2d3ds", "--root", root, "--fold", 1,
                            "--checkpoint", DEMO, "--out", tmp_path / "o", "--max-depth", 5)
    assert code == 1
    assert "area_5a/office/depth_mask.webp" in err
    assert "ROOT/<area>/<sample>/{rgb.webp, depth.png, depth_mask.webp, normals.webp, instances.webp}" in err
    assert "Traceback" not in err

    shutil.rmtree(root / "assets")
    code, _, err = run_main("evaluate", "--dataset", "stanford2d3ds", "--root", root, "--fold", 1,
                            "--checkpoint", DEMO, "--out", tmp_path / "o")
    assert code == 1 and "assets/semantic_labels.json" in err

    code, _, err = run_main("evaluate", "--dataset", "matterport3d", "--root", dataset, "--fold", 1,
                            "--checkpoint", DEMO, "--out", tmp_path / "o")
    assert code == 1 and "semantics.png" in err  # a Stanford folder is not a Matterport3D layout


def test_t_needs_the_training_split(dataset, tmp_path):
    root = tmp_path / "test_only"
    shutil.copytree(dataset, root, ignore=shutil.ignore_patterns("area_1", "area_6", "panosamic_max_depth.json"))
    code, _, err = run_main("evaluate", "--dataset", "stanford2d3ds", "--root", root, "--fold", 1,
                            "--checkpoint", DEMO, "--out", tmp_path / "o")
    assert code == 1 and "--max-depth" in err and "training split" in err


def test_a_fold_that_does_not_exist(dataset, tmp_path):
    code, _, err = run_main("evaluate", "--dataset", "stanford2d3ds", "--root", dataset, "--fold", 4,
                            "--checkpoint", DEMO, "--out", tmp_path / "o")
    assert code == 2
    assert "no fold 4" in err and "1, 2, 3" in err and "area_5a" in err


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_ray_not_installed(monkeypatch, dataset, tmp_path, command):
    for name in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    if command == "predict":
        args = ("predict", panosamic.io.example_paths("office")["image"], "--checkpoint", DEMO)
    else:
        args = ("evaluate", "--dataset", "stanford2d3ds", "--root", dataset, "--fold", 1, "--checkpoint", DEMO)
    code, _, err = run_main(*args, "--out", tmp_path / "o", "--engine", "ray")
    assert code == 2
    assert "pip install 'ray[data]'" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


# --- ToF-360: zero-shot, one fold of all four scenes ------------------------------------------------

@pytest.fixture(scope="module")
def tof360(tmp_path_factory) -> Path:
    return build_tof360(tmp_path_factory.mktemp("tof360"))


def tof360_t(root: Path) -> float:
    """99.5 % inlier depth of all four scenes (ToF-360 has no training split), 0.1 m bins over 0..128 m."""
    depths = [truth_tof360(root / k)["depth"][truth_tof360(root / k)["valid"]] for k in TOF_KEYS]
    hist, edges = np.histogram(np.concatenate(depths), bins=1280, range=(0, 128))
    cum = np.cumsum(hist)
    return round(float(edges[np.nonzero(cum >= 0.995 * cum[-1])[0][0]]), 1)


def test_tof360_evaluate_matches_an_independent_computation(tof360, tmp_path, monkeypatch):
    # a Stanford2D3DS number for this checkpoint must not be shown as ToF-360's
    monkeypatch.setitem(evaluate_module.PUBLISHED, "", {"miou": 0.5})
    out = tmp_path / "eval"
    code, stdout, err = run_main("evaluate", "--dataset", "tof360", "--root", tof360, "--fold", 1,
                                 "--checkpoint", DEMO, "--out", out, "--save-labels", "--no-progress")
    assert code == 0, err
    t = tof360_t(tof360)
    m = check_against_independent(tof360, out, t, TOF_KEYS, truth_tof360)
    assert m["dataset"] == "tof360" and m["areas"] == list(TOF_SCENES)
    assert m["published"] is None and "none recorded" in stdout
    rows = list(csv.DictReader(open(out / "per_sample.csv", newline="")))
    assert [r["sample"] for r in rows] == TOF_KEYS
    for r in rows:
        gt = truth_tof360(tof360 / r["sample"])["labels"]
        # void ids (0, 33, 34) are counted nowhere; black RGB pixels are counted
        assert sum(int(r[f"t_{c}"]) for c in CLASSES) == int((gt >= 0).sum()) < int(r["width"]) * int(r["height"])
        assert int(r["t_clutter"]) == int((gt == CLASSES.index("clutter")).sum()) > 0
    # (the samples hold a black block of labelled pixels)
    s = truth_tof360(tof360 / TOF_KEYS[-1])
    assert (s["image"][100:120, 300:360] == 0).all() and (s["labels"][100:120, 300:360] >= 0).all()


def test_tof360_decodes_raw_ids_depth_and_mask(tmp_path):
    ids = np.array(list(range(46)) + [199, 255, 256, 1000, 65535], dtype=np.uint16)
    w = ids.size
    folder = tmp_path / "Parking_Lot" / "0001"
    folder.mkdir(parents=True)
    units = np.zeros((2, w), np.uint16)
    units[0, :5] = [0, 1, 512, 1280, 65535]       # no reading, 1/512 m, 1 m, 2.5 m, 127.998 m
    units[1, :] = 700
    mask = units != 0
    mask[1, 3] = False                             # masked although depth.png has a value
    rgb = np.full((2, w, 3), 90, np.uint8)
    rgb[:, :4] = 0                                 # black pixels
    Image.fromarray(rgb).save(folder / "rgb.webp", format="webp", lossless=True)
    Image.fromarray(units).save(folder / "depth.png", format="png")
    Image.fromarray(mask).save(folder / "depth_mask.webp", format="webp", lossless=True)
    Image.fromarray(rgb).save(folder / "normals.webp", format="webp", lossless=True)
    Image.fromarray(np.stack([ids, ids])).save(folder / "semantics.png", format="png")  # 16-bit ids
    layout = get_layout("tof360", tmp_path)
    [sample] = layout.samples(layout.split(1, "test"))
    assert sample.key == "Parking_Lot/0001"
    data = layout.load(sample, ("image", "depth", "normals"))
    expected = [tof_class_of(int(i)) for i in ids]
    np.testing.assert_array_equal(data.labels[0], expected)
    by_name = {int(i): (CLASSES[c] if c >= 0 else None) for i, c in zip(ids, data.labels[0])}
    assert [by_name[i] for i in (0, 33, 34)] == [None, None, None]
    assert [by_name[i] for i in (1, 40, 2, 20, 42, 3, 18, 31, 4)] == [
        "wall", "wall", "ceiling", "ceiling", "ceiling", "floor", "floor", "bookcase", "sofa"]
    assert {by_name[i] for i in (6, 9, 10, 13, 43, 199, 256, 65535)} == {"clutter"}
    np.testing.assert_allclose(data.depth[0, :5], [0, 1 / 512, 1.0, 2.5, 65535 / 512], rtol=1e-6)
    assert data.depth[1, 3] == 0 and data.depth[1, 4] == pytest.approx(700 / 512)
    # black pixels are never void on ToF-360, image-only checkpoints included
    assert not layout.black_void_for(("image",))
    assert (layout.load(sample, ("image",), mask_black=layout.black_void_for(("image",))).labels[:, :4]
            == data.labels[:, :4]).all()


def test_tof360_t_from_the_authors_split_cache(tof360, tmp_path):
    root = tmp_path / "tof"
    shutil.copytree(tof360, root)
    # the authors' ToF-360 preparation writes one list (no folds): T per ratio 0.9 .. 1
    (root / "cache_splits_depth_statistics.json").write_text(json.dumps([3.1, 3.6, 4.4, 4.7, 5.2, 9.0]))
    t, source = split_max_depth(get_layout("tof360", root), 1)
    assert t == 4.7 and "cache_splits_depth_statistics.json" in source
    (root / "cache_splits_depth_statistics.json").unlink()
    assert split_max_depth(get_layout("tof360", root), 1)[0] == tof360_t(tof360)


def test_tof360_wrong_layout_and_folds(tof360, dataset, tmp_path):
    code, _, err = run_main("evaluate", "--dataset", "tof360", "--root", tof360, "--fold", 2,
                            "--checkpoint", DEMO, "--out", tmp_path / "o")
    assert code == 2 and "no fold 2" in err and "choose one of 1 " in err and "Parking_Lot" in err

    root = tmp_path / "broken"
    shutil.copytree(tof360, root)
    (root / "Office_Room_2" / "seam" / "normals.webp").unlink()
    code, _, err = run_main("evaluate", "--dataset", "tof360", "--root", root, "--fold", 1,
                            "--checkpoint", DEMO, "--out", tmp_path / "o", "--max-depth", 5)
    assert code == 1 and "Office_Room_2/seam/normals.webp" in err
    assert ("ROOT/<scene>/<sample>/{rgb.webp, depth.png, depth_mask.webp, normals.webp, semantics.png}, "
            "<scene> one of Hospital, Office_Room_1, Office_Room_2, Parking_Lot") in err
    assert "Traceback" not in err

    code, _, err = run_main("evaluate", "--dataset", "tof360", "--root", dataset, "--fold", 1,
                            "--checkpoint", DEMO, "--out", tmp_path / "o")
    assert code == 1 and "no samples of Hospital" in err and "ToF-360" in err  # a Stanford folder


def test_evaluate_with_maps_estimated_from_the_rgb_images(dataset, tmp_path, monkeypatch):
    """`evaluate --estimate-maps demo`: the dataset's depth and normals are not read (the
    samples' own maps are replaced by garbage here, and the scores do not move), the depth is
    estimated from each RGB image; the demo checkpoint still segments the rendered rooms."""
    import json

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    base = ["evaluate", "--dataset", "stanford2d3ds", "--root", dataset, "--fold", 1, "--checkpoint", DEMO,
            "--no-progress", "--max-depth", 4.0, "--estimate-maps", "demo"]
    code, _, err = run_main(*base, "--out", tmp_path / "a")
    assert code == 0, err
    assert "estimated from the RGB images by demo-depth" in err
    first = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert first["num_samples"] > 0 and first["num_failed"] == 0 and first["miou"] > 0.3
    # the dataset's own maps play no part: break them and score again
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(dataset, broken)
    for f in list(broken.rglob("depth.png")) + list(broken.rglob("normals.webp")):
        f.write_bytes(b"not an image")
    code, _, err = run_main(*base[:4], broken, *base[5:], "--out", tmp_path / "b")
    assert code == 0, err
    second = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert second["miou"] == pytest.approx(first["miou"]) and second["num_failed"] == 0
    code, _, err = run_main(*base, "--out", tmp_path / "c", "--engine", "ray")
    assert code != 0 and "local engine" in err
