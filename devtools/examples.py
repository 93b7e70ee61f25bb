"""Writing rendered panoramas in the layout of assets/examples (used by scripts/make_examples.py and tests).

The files are the ones `panosamic.io` reads (`panosamic.io.example_paths` names them), written
with its savers so that a run gives the same bytes every time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

from panosamic.io import PathLike, save_depth_png, save_image, save_labels_png, save_normals_png


def write_example(out_dir: PathLike, name: str, pano) -> Dict[str, Path]:
    """Write a :class:`devtools.scenes.RenderedPanorama` in the examples layout (deterministic bytes).

    ``<name>_rgb.jpg`` (JPEG quality 92), ``<name>_depth.png`` (16-bit mm),
    ``<name>_normals.png``, ``<name>_labels.png`` and ``<name>.json`` (sorted keys).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "image": save_image(out / f"{name}_rgb.jpg", pano.rgb, quality=92),
        "depth": save_depth_png(out / f"{name}_depth.png", pano.depth),
        "normals": save_normals_png(out / f"{name}_normals.png", pano.normals),
        "labels": save_labels_png(out / f"{name}_labels.png", pano.labels),
    }
    meta = dict(pano.meta)
    meta["name"] = name
    meta["files"] = {k: v.name for k, v in paths.items()}
    meta["depth_png"] = "uint16 millimetres, 0 = invalid"
    meta["normals_png"] = "RGB = round(127.5 * (n + 1)), world frame x fwd / y left / z up, (128,128,128) = none"
    meta_path = out / f"{name}.json"
    meta_path.write_text(json.dumps(meta, sort_keys=True, indent=2) + "\n", encoding="utf-8")
    paths["meta"] = meta_path
    return paths
