"""`--engine ray` on a local Ray runtime with 2 CPUs gives the local engine's files and numbers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from eval_utils import DEMO, build_stanford, run_main
from panosamic.io import example_paths

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # raised inside Ray Data

ray = pytest.importorskip("ray", reason="Ray is optional: pip install -r requirements-ray.txt")

from panosamic import ray_engine  # noqa: E402

NAMES = ["office", "seam", "lounge"]


@pytest.fixture(scope="module")
def local_ray():
    ray_engine.start_local(num_cpus=2)  # one small Ray for the module
    yield ray
    ray.shutdown()


def _summary(path: Path) -> list:
    rows = list(csv.DictReader(open(path, newline="", encoding="utf-8")))
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_predict_on_ray_writes_the_local_engines_files(local_ray, tmp_path):
    images = [str(example_paths(n)["image"]) for n in NAMES]
    code, _, err = run_main("predict", *images, "--checkpoint", DEMO, "--out", tmp_path / "local", "--no-progress")
    assert code == 0, err
    code, _, err = run_main("predict", *images, "--checkpoint", DEMO, "--out", tmp_path / "ray", "--no-progress",
                            "--engine", "ray", "--ray-actors", 2)
    assert code == 0, err
    assert "2 actor(s)" in err
    for name in NAMES:
        for suffix in ("_labels.png", "_colors.png"):
            local = (tmp_path / "local" / f"{name}{suffix}").read_bytes()
            assert (tmp_path / "ray" / f"{name}{suffix}").read_bytes() == local, name + suffix
        a = json.loads((tmp_path / "local" / f"{name}_stats.json").read_text())
        b = json.loads((tmp_path / "ray" / f"{name}_stats.json").read_text())
        assert b["classes"] == a["classes"] and b["width"] == a["width"]
    assert _summary(tmp_path / "ray" / "summary.csv") == _summary(tmp_path / "local" / "summary.csv")


def test_predict_on_ray_reports_a_bad_input_and_goes_on(local_ray, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    good = str(example_paths("office")["image"])
    code, _, err = run_main("predict", good, bad, "--checkpoint", DEMO, "--out", tmp_path / "o", "--no-progress",
                            "--engine", "ray")
    assert code == 1
    assert "bad.png" in err and "Traceback" not in err
    rows = _summary(tmp_path / "o" / "summary.csv")
    assert [r["status"] for r in rows] == ["ok", "error"]


def test_evaluate_on_ray_gives_the_local_metrics(local_ray, tmp_path):
    root = build_stanford(tmp_path / "s2d3ds")
    args = ("evaluate", "--dataset", "stanford2d3ds", "--root", root, "--fold", 1, "--checkpoint", DEMO,
            "--max-depth", 6.0, "--save-labels", "--no-progress")
    assert run_main(*args, "--out", tmp_path / "local")[0] == 0
    code, _, err = run_main(*args, "--out", tmp_path / "ray", "--engine", "ray")
    assert code == 0, err
    a = json.loads((tmp_path / "local" / "metrics.json").read_text())
    b = json.loads((tmp_path / "ray" / "metrics.json").read_text())
    for key in ("miou", "macc", "pixel_accuracy", "per_class_iou", "miou_weighted", "seam_consistency_pred",
                "num_samples", "max_depth"):
        assert b[key] == a[key], key
    assert b["engine"] == "ray"
    for png in sorted((tmp_path / "local" / "labels").rglob("*.png")):
        assert (tmp_path / "ray" / png.relative_to(tmp_path / "local")).read_bytes() == png.read_bytes()
