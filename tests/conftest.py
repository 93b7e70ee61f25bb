"""Shared fixtures.

Tests that need `shared/reference` find it through PANOSAMIC_REFERENCE (default
`../shared/reference`). A plain clone without it skips those tests with a reason;
CI (CI=true) fails instead, so the numerical contract is never silently untested.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = Path(os.environ.get("PANOSAMIC_REFERENCE", ROOT.parent / "shared" / "reference"))


def _is_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def reference_root() -> Path:
    """The folder with the numerical reference cases (e.g. tiny_rgbdn_dual/)."""
    if not REFERENCE.is_dir():
        message = f"numerical reference not found at {REFERENCE}: set PANOSAMIC_REFERENCE"
        if _is_ci():
            pytest.fail(message)
        pytest.skip(message)
    return REFERENCE


def reference_cases() -> list:
    """Names of every reference case (a folder with config.json and expected.npz)."""
    if not REFERENCE.is_dir():
        return ["tiny_rgbdn_dual"]
    return sorted(p.name for p in REFERENCE.iterdir() if (p / "expected.npz").is_file()) or ["tiny_rgbdn_dual"]


@pytest.fixture(scope="session")
def reference_dir(reference_root: Path) -> Path:
    """shared/reference/tiny_rgbdn_dual: config.json, sam.pth, model.safetensors, inputs/expected.npz."""
    path = reference_root / "tiny_rgbdn_dual"
    if not (path / "expected.npz").is_file():
        pytest.fail(f"{path} lacks expected.npz")
    return path


def load_reference_predictor(case_dir: Path):
    """(Predictor on the CPU with the case's panorama set, inputs.npz as a dict), through the public API
    as a user would: build_model(config.json), load_weights(sam.pth, model.safetensors), set_panorama."""
    import numpy as np

    import panosamic

    model = panosamic.build_model(case_dir / "config.json")
    panosamic.load_weights(model, sam=case_dir / "sam.pth", panosamic=case_dir / "model.safetensors")
    inputs = dict(np.load(case_dir / "inputs.npz"))
    predictor = panosamic.Predictor(model, device="cpu", max_depth=float(inputs["max_depth"]))
    maps = {"depth": inputs.get("depth_m"), "normals": inputs.get("normals")}
    predictor.set_panorama(inputs["image"], **{m: maps[m] for m in model.modalities if m != "image"})
    return predictor, inputs


@pytest.fixture(scope="module")
def reference_predictor(reference_dir: Path):
    """(Predictor with tiny_rgbdn_dual's panorama set, its inputs.npz); one per test module."""
    return load_reference_predictor(reference_dir)
