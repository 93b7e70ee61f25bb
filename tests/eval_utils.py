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


# --- ToF-360 ---------------------------------------------------------------------------------------
# Written the way the authors' ToF-360 preparation writes it: semantics.png holds ToF-360's raw
# category ids, depth.png 1/512 m with 0 = no reading, depth_mask.webp = (raw depth != 0).
# The test's own statement of the facts: raw ids per Stanford2D3DS class, void ids, and the
# ids the test uses for clutter (6, 9, 50, 200 are listed nowhere, so they are clutter).
TOF_RAW_IDS = {"beam": (17,), "board": (26,), "bookcase": (31,), "ceiling": (2, 20, 42), "chair": (5,),
               "clutter": (6, 9, 50, 200), "column": (14,), "door": (7,), "floor": (3, 18), "sofa": (4,),
               "table": (12,), "wall": (1, 40), "window": (8,)}
TOF_VOID_IDS = (0, 33, 34)
TOF_SCENES = ("Hospital", "Office_Room_1", "Office_Room_2", "Parking_Lot")
TOF_PLACEMENT = {"office": "Hospital", "conference": "Office_Room_1", "seam": "Office_Room_2",
                 "corridor": "Parking_Lot"}
TOF_KEYS = [f"{scene}/{name}" for name, scene in TOF_PLACEMENT.items()]


def tof_class_of(raw: int) -> int:
    """The test's reading of one raw ToF-360 id: its class index, -1 for void, clutter otherwise."""
    if raw in TOF_VOID_IDS:
        return -1
    for cls_name, ids in TOF_RAW_IDS.items():
        if raw in ids and cls_name != "clutter":
            return CLASSES.index(cls_name)
    return CLASSES.index("clutter")


def build_tof360(root: Path) -> Path:
    """One sample per scene, made from the bundled examples; returns ``root``."""
    w, h = SIZE
    for name, scene in TOF_PLACEMENT.items():
        src = example_paths(name)
        folder = root / scene / name
        folder.mkdir(parents=True, exist_ok=True)
        rgb = cv2.resize(load_image(src["image"]), SIZE, interpolation=cv2.INTER_AREA)
        depth = cv2.resize(load_depth(src["depth"]), SIZE, interpolation=cv2.INTER_NEAREST)
        normals = cv2.resize(load_normals(src["normals"]), SIZE, interpolation=cv2.INTER_NEAREST)
        labels = cv2.resize(load_labels(src["labels"]), SIZE, interpolation=cv2.INTER_NEAREST).astype(np.int64)
        # every raw id of a class appears: the variants alternate by column
        cols = np.broadcast_to(np.arange(w), (h, w))
        raw = np.zeros((h, w), np.uint8)
        for k, cls_name in enumerate(CLASSES):
            ids = np.array(TOF_RAW_IDS[cls_name])
            raw = np.where(labels == k, ids[cols % len(ids)], raw).astype(np.uint8)
        for j, void in enumerate(TOF_VOID_IDS):                 # three stripes of void
            raw[h - 30 + 6 * j: h - 24 + 6 * j, 200:300] = void
        rgb[100:120, 300:360] = 0                              # black pixels stay labelled on ToF-360
        units = np.clip(np.rint(depth * 512), 1, 65535).astype(np.uint16)
        units[h // 2: h // 2 + 20, 40:120] = 0                 # no reading
        valid = units != 0
        valid[20:30, 400:450] = False                          # masked although depth.png has a value
        Image.fromarray(rgb).save(folder / "rgb.webp", format="webp", lossless=True)
        Image.fromarray(units).save(folder / "depth.png", format="png")
        Image.fromarray(valid).save(folder / "depth_mask.webp", format="webp", lossless=True)
        Image.fromarray(normals).save(folder / "normals.webp", format="webp", lossless=True)
        Image.fromarray(raw).save(folder / "semantics.png", format="png")
    return root


def truth_tof360(sample: Path) -> Dict[str, np.ndarray]:
    """The test's own decoding of one ToF-360 sample (as :func:`truth`)."""
    raw = np.asarray(Image.open(sample / "semantics.png")).astype(np.int64)
    table = np.array([tof_class_of(i) for i in range(int(raw.max()) + 1)])
    units = np.asarray(Image.open(sample / "depth.png")).astype(np.float64)
    valid = np.asarray(Image.open(sample / "depth_mask.webp"))[..., -1] != 0
    return {"image": np.asarray(Image.open(sample / "rgb.webp").convert("RGB")),
            "depth": np.where(valid, units / 512, 0).astype(np.float32),
            "valid": valid,
            "normals": np.asarray(Image.open(sample / "normals.webp").convert("RGB")),
            "labels": table[raw]}
