"""Class lists and colour palettes of the datasets PanoSAMic was trained on.

A checkpoint does not store its class names; they follow from the class count
(13 Stanford2D3DS, 20 Matterport3D, 40 Structured3D/NYU-40).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np

RGB = Tuple[int, int, int]


@dataclass(frozen=True)
class Dataset:
    """Class names and RGB colours, in the model's output index order."""

    name: str
    classes: Tuple[str, ...]
    colors: Tuple[RGB, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def palette(self) -> np.ndarray:
        """(K, 3) uint8 RGB colours."""
        return np.asarray(self.colors, dtype=np.uint8)

    def index(self, name: str) -> int:
        """Class index of `name` (case-insensitive)."""
        lowered = [c.lower() for c in self.classes]
        try:
            return lowered.index(name.lower())
        except ValueError:
            raise KeyError(
                f"unknown class {name!r} for {self.name}; known classes: {', '.join(self.classes)}"
            ) from None

    def colorize(self, labels: np.ndarray) -> np.ndarray:
        """(H, W) class indices -> (H, W, 3) uint8 RGB; indices outside 0..K-1 are black."""
        from .exports import label_colors

        return label_colors(labels, self.palette)


def _distinct_colors(n: int, seed: int) -> Tuple[RGB, ...]:
    """Deterministic, well separated colours (golden-ratio hues) for lists without an official palette."""
    import colorsys

    colors = []
    for i in range(n):
        h = (i * 0.618033988749895 + seed * 0.1) % 1.0
        s = 0.55 + 0.35 * ((i * 7) % 3) / 2
        v = 0.95 - 0.3 * ((i * 5) % 2)
        r, g, b = colorsys.hsv_to_rgb(h, s, v)
        colors.append((int(round(r * 255)), int(round(g * 255)), int(round(b * 255))))
    return tuple(colors)


STANFORD2D3DS = Dataset(
    name="stanford2d3ds",
    classes=(
        "beam", "board", "bookcase", "ceiling", "chair", "clutter", "column",
        "door", "floor", "sofa", "table", "wall", "window",
    ),
    colors=(
        (254, 158, 137), (85, 116, 127), (255, 31, 33), (241, 255, 82), (0, 18, 141),
        (234, 234, 234), (89, 173, 163), (113, 143, 65), (102, 168, 226), (100, 22, 116),
        (84, 84, 84), (190, 123, 75), (0, 244, 1),
    ),
)

_MP3D_CLASSES = (
    "wall", "floor", "chair", "door", "table", "picture", "furniture", "objects",
    "window", "sofa", "bed", "sink", "stairs", "ceiling", "toilet", "mirror",
    "shower", "bathtub", "counter", "shelving",
)
MATTERPORT3D = Dataset("matterport3d", _MP3D_CLASSES, _distinct_colors(len(_MP3D_CLASSES), 1))

_NYU40_CLASSES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window",
    "bookshelf", "picture", "counter", "blinds", "desk", "shelves", "curtain",
    "dresser", "pillow", "mirror", "floor mat", "clothes", "ceiling", "books",
    "refrigerator", "television", "paper", "towel", "shower curtain", "box",
    "whiteboard", "person", "night stand", "toilet", "sink", "lamp", "bathtub",
    "bag", "otherstructure", "otherfurniture", "otherprop",
)
STRUCTURED3D = Dataset("structured3d", _NYU40_CLASSES, _distinct_colors(len(_NYU40_CLASSES), 2))

DATASETS: Dict[str, Dataset] = {d.name: d for d in (STANFORD2D3DS, MATTERPORT3D, STRUCTURED3D)}


def dataset_for_num_classes(num_classes: int) -> Dataset:
    """The dataset whose class count is `num_classes`, or generic names `class_0..` otherwise."""
    for ds in DATASETS.values():
        if ds.num_classes == num_classes:
            return ds
    names = tuple(f"class_{i}" for i in range(num_classes))
    return Dataset(f"generic{num_classes}", names, _distinct_colors(num_classes, 3))


def get_dataset(name: str) -> Dataset:
    """Dataset by name (`stanford2d3ds`, `matterport3d`, `structured3d`)."""
    try:
        return DATASETS[name.lower()]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}") from None


__all__: List[str] = [
    "Dataset", "STANFORD2D3DS", "MATTERPORT3D", "STRUCTURED3D", "DATASETS",
    "dataset_for_num_classes", "get_dataset",
]
