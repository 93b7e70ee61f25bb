"""A small Stanford2D3DS dataset in the authors' processed layout, made from the bundled examples.

Written the way the authors' preparation writes it (lossless WebP through PIL, 16-bit depth PNG
of ``metres * 65535 / 128`` with 65535 = invalid, a boolean depth mask saved as WebP,
instances as RGB = (0, idx >> 8, idx & 255) indexing ``assets/semantic_labels.json``), with
void pixels of both kinds (R != 0 and the ``<UNK>`` instance 0) and a block of invalid depth.

The test's own decoding (``truth``) is independent of ``panosamic.evaluation``.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Dict

import cv2
import numpy as np
from PIL import Image

from panosamic import cli
from panosamic.datasets import STANFORD2D3DS
from panosamic.io import example_paths, load_depth, load_image, load_labels, load_normals

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "assets" / "demo"
CLASSES = STANFORD2D3DS.classes
# fold 1 tests area_5a + area_5b and trains on area_1, 2, 3, 4, 6
PLACEMENT = {"office": "area_5a", "conference": "area_5a", "seam": "area_5b",
             "corridor": "area_1", "lounge": "area_1", "storage": "area_6"}
TEST_KEYS = ["area_5a/conference", "area_5a/office", "area_5b/seam"]
SIZE = (512, 256)  # W, H: half the examples' size keeps the tests light


def instance_index(cls: int, right_half: bool) -> int:
    """Two instances per class: left and right half of the panorama."""
    return 1 + 2 * cls + int(right_half)


def build_stanford(root: Path) -> Path:
    """Write the dataset under ``root``; returns ``root``."""
    w, h = SIZE
    (root / "assets").mkdir(parents=True, exist_ok=True)
    names = ["<UNK>_0_<UNK>_0_0"] + [f"{c}_{j}_area_x_{k}" for k, c in enumerate(CLASSES) for j in range(2)]
    (root / "assets" / "semantic_labels.json").write_text(json.dumps(names))
    (root / "assets" / "name2label.json").write_text(json.dumps({"<UNK>": 0, **{c: i + 1 for i, c in enumerate(CLASSES)}}))
    for name, area in PLACEMENT.items():
        src = example_paths(name)
        folder = root / area / name
        folder.mkdir(parents=True, exist_ok=True)
        rgb = cv2.resize(load_image(src["image"]), SIZE, interpolation=cv2.INTER_AREA)
        depth = cv2.resize(load_depth(src["depth"]), SIZE, interpolation=cv2.INTER_NEAREST)
        normals = cv2.resize(load_normals(src["normals"]), SIZE, interpolation=cv2.INTER_NEAREST)
        labels = cv2.resize(load_labels(src["labels"]), SIZE, interpolation=cv2.INTER_NEAREST).astype(np.int64)
        valid = depth > 0
        valid[h // 2: h // 2 + 20, 40:120] = False            # a hole in the depth
        units = np.where(valid, np.clip(np.rint(depth * 65535 / 128), 1, 65534), 65535).astype(np.uint16)
        idx = np.array([[instance_index(int(labels[y, x]), x >= w // 2) for x in range(w)] for y in range(h)])
        red = np.zeros((h, w), np.int64)
        red[:6] = 1                                           # R != 0: unknown (void)
        idx[h - 30: h - 10, 200:300] = 0                      # the <UNK> instance (void)
        inst = np.stack([red, idx >> 8, idx & 255], axis=-1).astype(np.uint8)
        Image.fromarray(rgb).save(folder / "rgb.webp", format="webp", lossless=True)
        Image.fromarray(units).save(folder / "depth.png", format="png")
        Image.fromarray(valid).save(folder / "depth_mask.webp", format="webp", lossless=True)
        Image.fromarray(normals).save(folder / "normals.webp", format="webp", lossless=True)
        Image.fromarray(inst).save(folder / "instances.webp", format="webp", lossless=True)
    return root


def truth(sample: Path) -> Dict[str, np.ndarray]:
    """The test's own decoding of one sample: image, depth (m, 0 = invalid), normals, labels (-1 void)."""
    inst = np.asarray(Image.open(sample / "instances.webp").convert("RGB")).astype(np.int64)
    idx = inst[..., 1] * 256 + inst[..., 2]
    labels = np.where((inst[..., 0] != 0) | (idx == 0), -1, (idx - 1) // 2)
    units = np.asarray(Image.open(sample / "depth.png")).astype(np.float64)
    valid = np.asarray(Image.open(sample / "depth_mask.webp"))[..., -1] != 0
    return {"image": np.asarray(Image.open(sample / "rgb.webp").convert("RGB")),
            "depth": np.where(valid, units * 128 / 65535, 0).astype(np.float32),
            "valid": valid,
            "normals": np.asarray(Image.open(sample / "normals.webp").convert("RGB")),
            "labels": labels}


def run_main(*args) -> tuple:
    """cli.main in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()
