"""`python -m panosamic.bench` on the tiny reference config (random weights)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, module: str = "panosamic.bench") -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=300)


def test_bench_tiny_config_json(reference_dir):
    proc = _run("--config", reference_dir / "config.json", "--repeats", "1", "--clicks", "3", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    for key in ("device", "torch", "threads", "modalities", "views", "image_size", "params_m", "set_panorama_s",
                "predict_ms", "memory", "cache_bytes"):
        assert key in result, key
    assert result["device"] == "cpu" and result["threads"] >= 1
    assert result["modalities"] == ["image", "depth", "normals"] and result["views"] == 2
    assert result["image_size"] == {"width": 256, "height": 128, "model_input": 256}
    assert 0 < result["params_m"]["total"] < 10
    sp = result["set_panorama_s"]
    assert sp["median"] > 0 and sp["min"] > 0 and len(sp["runs"]) == 1
    assert set(sp["stages_median"]) == {"preprocess", "encode", "fuse", "decode"}
    assert all(v > 0 for v in sp["stages_median"].values())  # every stage does work
    pm = result["predict_ms"]
    assert pm["clicks"] == 3 and 0 < pm["median"] <= pm["p90"] <= pm["max"]
    mem = result["memory"]
    # The peak after the run covers the peak before the build plus what the build added.
    assert mem["peak_rss_mb"] >= mem["rss_peak_before_build_mb"] + mem["build_rss_delta_mb"] - 0.2 > 0
    assert result["cache_bytes"] > 0


def test_bench_subcommand_single_view_rgb(reference_dir):
    proc = _run("bench", "--config", reference_dir / "config.json", "--modalities", "image", "--single-view",
                "--repeats", "1", "--warmup", "0", "--clicks", "2", "--quiet", module="panosamic")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["modalities"] == ["image"] and result["views"] == 1
    assert result["set_panorama_s"]["encoder_calls"] == 1
    assert proc.stderr == ""


def test_bench_usage_error():
    proc = _run("--modalities", "rgb,bogus", "--repeats", "1")
    assert proc.returncode == 2 and "bogus" in proc.stderr and "Traceback" not in proc.stderr


def test_bench_check_eta_prints_estimate_measured_and_ratio(reference_dir):
    """`--check-eta`: the estimate made before the run (a probe of this encoder's shape), the
    run itself (no warm-up by default) and their ratio. The ratio is not asserted here (wall
    clock on a shared machine); tests/test_speed.py checks the arithmetic with injected rates."""
    proc = _run("--config", reference_dir / "config.json", "--check-eta", "--repeats", "1", "--quiet",
                "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    check = result["eta"]
    assert result["mode"] == "check-eta" and result["set_panorama_s"]["warmup"] == 0
    assert check["source"] == "calibrated" and check["passes"] == 6 and check["estimate_s"] > 0
    assert check["measured_first_s"] == result["set_panorama_s"]["runs"][0] > 0
    assert check["ratio_first"] == pytest.approx(check["estimate_s"] / check["measured_first_s"], rel=1e-2)
    assert isinstance(check["holds"], bool)
    assert check["next_source"] == "measured"  # the run corrected the block times of its shape
