"""Readers for the processed dataset layouts that the PanoSAMic authors' preparation scripts write.

One class per dataset knows where the samples are, how its files are encoded, which
areas (Stanford2D3DS) or scenes (Matterport3D, Structured3D, ToF-360) form each fold, and
which pixels are void. Everything a reader returns is in this project's conventions: RGB uint8
``(H, W, 3)``, depth in metres float32 ``(H, W)`` with 0 = invalid, normals RGB uint8
``(H, W, 3)`` (127.5-centred), labels int64 ``(H, W)`` of class indices with
``IGNORE_INDEX`` (-1) for void.

Layouts (``ROOT`` is the ``--output_root`` of the authors' preparation script)::

    Stanford2D3DS   ROOT/area_{1,2,3,4,5a,5b,6}/<sample>/{rgb.webp, depth.png, depth_mask.webp,
                    normals.webp, instances.webp} and ROOT/assets/{semantic_labels.json,
                    name2label.json}
    Matterport3D    ROOT/<scene id>/<sample>/{rgb.webp, depth.png, depth_mask.webp, semantics.png
                    [, normals.webp]}
    Structured3D    ROOT/scene_NNNNN/<sample>/{rgb.webp, depth.png, depth_mask.webp,
                    normals.webp, semantics.png}
    ToF-360         ROOT/{Hospital, Office_Room_1, Office_Room_2, Parking_Lot}/<idx>/{rgb.webp,
                    depth.png, depth_mask.webp, normals.webp, semantics.png}

Encodings
    * depth.png, 16 bit: metres = value * 128 / 65535 (Stanford2D3DS), value / 4000
      (Matterport3D, 0.25 mm units), value / 1000 (Structured3D, mm), value / 512
      (ToF-360, 1/512 m units; 0 = no reading).
    * depth_mask.webp: validity; the last channel of the decoded image (the alpha
      channel when it has one) is non-zero where the depth is valid.
    * Stanford2D3DS instances.webp: RGB; a pixel with R != 0 is unknown, otherwise its
      instance is ``G * 256 + B``, an index into ``assets/semantic_labels.json`` (names
      ``<class>_<...>``); ``assets/name2label.json`` maps class names to 1..13, 0 = void.
    * Matterport3D semantics.png: 0..41 raw categories, grouped into 20 classes here.
    * Structured3D semantics.png: 1..40 = NYU-40 class + 1, 0 = void.
    * ToF-360 semantics.png: ToF-360's raw category ids (those of its .npy label files),
      grouped into Stanford2D3DS's 13 classes (``_TOF360_RAW_TO_CLASS``); 0, 33, 34 are
      void and every id not listed is clutter.
    * Matterport3D and Structured3D evaluate black RGB pixels (R = G = B = 0) as void,
      Stanford2D3DS only for image-only checkpoints, ToF-360 never (the authors' test-set
      settings).

ToF-360 (``COLE-Ricoh/ToF-360``, 179 real captures) has no training split: a Stanford2D3DS
checkpoint is evaluated on it zero-shot, fold 1 being all four scenes. Its T is therefore
ToF-360's own 99.5 % inlier depth (0.1 m bins over 0..128 m), which the authors' preparation
writes to ``cache_splits_depth_statistics.json``; ``--max-depth`` gives the checkpoint's own
training T instead. Sources, read for the facts only (dfki-av/PanoSAMic, commit 75d5dff):
``panosamic/datasets/tof360.py`` (scenes, the one fold, 1/512 m, the id table, void ids,
clutter for the rest), ``panosamic/data_preparation/tof360.py`` (the files, mask = raw depth
!= 0, the depth statistics) and ``panosamic/datasets/dataset_builder.py`` (no black masking).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from ..datasets import MATTERPORT3D, STANFORD2D3DS, STRUCTURED3D, Dataset
from ..errors import InputError

__all__ = [
    "IGNORE_INDEX", "LayoutError", "FoldError", "Sample", "SampleData", "Layout", "Stanford2D3DSLayout",
    "Matterport3DLayout", "Structured3DLayout", "ToF360Layout", "LAYOUTS", "get_layout",
]

IGNORE_INDEX = -1
#: The authors' list of sample names per area/scene; used when present (else folders are listed).
SAMPLE_NAMES_CACHE = "cache_samples_file_names.json"


class LayoutError(InputError):
    """The dataset folder is not in the processed layout expected for the dataset."""


class FoldError(InputError):
    """A fold (split) number the dataset does not have."""


@dataclass(frozen=True)
class Sample:
    """One panorama of a dataset: ``ROOT/<area>/<name>/``."""

    area: str
    name: str
    path: Path

    @property
    def key(self) -> str:
        """``<area>/<name>``: unique within a dataset, used as the row key of the per-sample CSV."""
        return f"{self.area}/{self.name}"


@dataclass
class SampleData:
    """A decoded sample. depth/normals are None when not requested (or absent from the layout)."""

    image: np.ndarray
    depth: Optional[np.ndarray]
    normals: Optional[np.ndarray]
    labels: np.ndarray


def _open(path: Path, what: str):
    from PIL import Image, UnidentifiedImageError

    try:
        im = Image.open(path)
        im.load()
        return im
    except FileNotFoundError:
        raise LayoutError(f"missing {path.name} in {path.parent}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise LayoutError(f"cannot decode {what} {path}: {err}; the file is damaged or not an image") from None


def _rgb(path: Path, what: str) -> np.ndarray:
    return np.asarray(_open(path, what).convert("RGB"), dtype=np.uint8)


class Layout:
    """Base class: a dataset's processed layout under ``root``. Subclasses set the facts below."""

    name: str = ""                       # the CLI name
    dataset: Dataset
    group: str = "area"                  # what the top-level folders are called
    areas: Tuple[str, ...] = ()
    folds: Dict[int, Tuple[Tuple[int, ...], Tuple[int, ...]]] = {}   # fold -> (train, test) area indexes
    label_file: str = ""
    normals_optional: bool = False
    depth_metres_per_unit: float = 1.0
    # The authors' preparation histograms the valid depth of each sample with these bins (metres).
    depth_hist_bins: int = 1
    depth_hist_range: Tuple[float, float] = (0.0, 1.0)
    black_is_void: bool = True
    required_assets: Tuple[str, ...] = ()

    def __init__(self, root) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise LayoutError(f"dataset folder {self.root} does not exist (or is not a folder); "
                              f"--root must be the processed {self.dataset_title} folder: {self.structure()}")
        missing = [a for a in self.required_assets if not (self.root / a).is_file()]
        if missing:
            raise LayoutError(f"{self.root} lacks {', '.join(missing)}; the processed {self.dataset_title} "
                              f"layout is {self.structure()}")

    # --- facts ----------------------------------------------------------------------------------
    @property
    def dataset_title(self) -> str:
        return type(self).__name__.replace("Layout", "")

    def files(self, modalities: Iterable[str] = ("image", "depth", "normals")) -> List[str]:
        """Per-sample files that must exist for these modalities (labels always)."""
        mods = set(modalities)
        out = ["rgb.webp"]
        if "depth" in mods:
            out += ["depth.png", "depth_mask.webp"]
        if "normals" in mods and not self.normals_optional:
            out.append("normals.webp")
        return out + [self.label_file]

    def structure(self) -> str:
        """The expected folder structure, for messages."""
        files = ", ".join(self.files() + (["[normals.webp]"] if self.normals_optional else []))
        assets = f" and {', '.join(self.required_assets)}" if self.required_assets else ""
        return f"ROOT/<{self.group}>/<sample>/{{{files}}}{assets}, <{self.group}> one of {self._areas_hint()}"

    def _areas_hint(self) -> str:
        if len(self.areas) <= 8:
            return ", ".join(self.areas)
        return f"{self.areas[0]}, {self.areas[1]}, ... ({len(self.areas)} {self.group}s)"

    def fold_names(self) -> List[int]:
        return sorted(self.folds)

    def split(self, fold: int, part: str = "test") -> List[str]:
        """The areas/scenes of ``fold``'s ``part`` ("train" or "test")."""
        if fold not in self.folds:
            raise FoldError(f"{self.dataset_title} has no fold {fold}: choose one of "
                            f"{', '.join(str(f) for f in self.fold_names())} ({self.describe_folds()})")
        if part not in ("train", "test"):
            raise ValueError(f"part must be 'train' or 'test', got {part!r}")
        train, test = self.folds[fold]
        return [self.areas[i] for i in (train if part == "train" else test)]

    def describe_folds(self) -> str:
        parts = []
        for f in self.fold_names():
            test = self.split(f, "test")
            shown = ", ".join(test) if len(test) <= 4 else f"{test[0]} .. {test[-1]} ({len(test)} {self.group}s)"
            parts.append(f"fold {f} tests {shown}")
        return "; ".join(parts)

    # --- discovery --------------------------------------------------------------------------------
    def _names_cache(self) -> Optional[Dict[str, List[str]]]:
        path = self.root / SAMPLE_NAMES_CACHE
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise LayoutError(f"cannot read {path}: {err}; delete it to list the folders instead") from None
        return data if isinstance(data, dict) else None

    def samples(self, areas: Sequence[str], modalities: Iterable[str] = ("image", "depth", "normals"),
                require_all: bool = True) -> List[Sample]:
        """The samples of ``areas`` in area order, names sorted; areas without a folder are skipped
        (as the authors' readers do). Raises :class:`LayoutError` when none is found, or when a
        sample lacks a file the given modalities need (naming the file and the expected layout)."""
        cache = self._names_cache()
        found: List[Sample] = []
        for area in areas:
            folder = self.root / area
            if not folder.is_dir():
                continue
            if cache is not None and area in cache:
                names = sorted(str(n) for n in cache[area])
            else:
                names = sorted(p.name for p in folder.iterdir() if p.is_dir())
            found.extend(Sample(area, n, folder / n) for n in names)
        if not found:
            raise LayoutError(f"no samples of {', '.join(areas[:6])}{', ...' if len(areas) > 6 else ''} "
                              f"in {self.root}; the processed {self.dataset_title} layout is {self.structure()}")
        if require_all:
            need = self.files(modalities)
            problems = [f"{s.key}/{f}" for s in found for f in need if not (s.path / f).is_file()]
            if problems:
                shown = ", ".join(problems[:3]) + (f" and {len(problems) - 3} more" if len(problems) > 3 else "")
                raise LayoutError(f"missing {shown} under {self.root}; every sample folder needs "
                                  f"{', '.join(need)} (layout: {self.structure()})")
        return found

    # --- decoding ---------------------------------------------------------------------------------
    def read_depth(self, sample: Sample) -> np.ndarray:
        """Metres, float32 ``(H, W)``, 0 where depth_mask says invalid."""
        raw = np.asarray(_open(sample.path / "depth.png", "depth"))
        if raw.ndim == 3:
            raw = raw[..., 0]
        mask_img = np.asarray(_open(sample.path / "depth_mask.webp", "depth mask"))
        valid = (mask_img[..., -1] if mask_img.ndim == 3 else mask_img) != 0
        if valid.shape != raw.shape:
            raise LayoutError(f"{sample.key}: depth_mask.webp is {valid.shape[1]}x{valid.shape[0]} but depth.png "
                              f"is {raw.shape[1]}x{raw.shape[0]}")
        metres = raw.astype(np.float64) * self.depth_metres_per_unit
        # A valid 0 m reading encodes as full brightness for the authors; the Predictor treats
        # d <= 0 as missing, so nudge such pixels above zero to keep them valid.
        metres = np.where(valid, np.maximum(metres, 1e-6), 0.0)
        return metres.astype(np.float32)

    def depth_histogram(self, sample: Sample) -> np.ndarray:
        """Counts of the sample's valid depths in the authors' bins (``depth_hist_bins`` over
        ``depth_hist_range`` metres)."""
        raw = np.asarray(_open(sample.path / "depth.png", "depth"))
        if raw.ndim == 3:
            raw = raw[..., 0]
        mask_img = np.asarray(_open(sample.path / "depth_mask.webp", "depth mask"))
        valid = (mask_img[..., -1] if mask_img.ndim == 3 else mask_img) != 0
        metres = raw.astype(np.float64)[valid] * self.depth_metres_per_unit
        hist, _ = np.histogram(metres, bins=self.depth_hist_bins, range=self.depth_hist_range)
        return hist.astype(np.int64)

    def hist_edges(self) -> np.ndarray:
        """The left/right bin edges of :meth:`depth_histogram`, rounded to 0.1 m as the authors store them."""
        return np.round(np.linspace(*self.depth_hist_range, self.depth_hist_bins + 1), 1)

    def read_labels(self, sample: Sample) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def black_void_for(self, modalities: Sequence[str]) -> bool:
        """Whether black RGB pixels are void when evaluating a checkpoint with these inputs."""
        return self.black_is_void or tuple(modalities) == ("image",)

    def load(self, sample: Sample, modalities: Iterable[str] = ("image", "depth", "normals"),
             mask_black: Optional[bool] = None) -> SampleData:
        """Decode one sample. ``mask_black`` marks black RGB pixels void (default: the dataset's
        rule; :meth:`black_void_for` gives the rule for a checkpoint's modalities)."""
        mods = set(modalities)
        image = _rgb(sample.path / "rgb.webp", "image")
        labels = self.read_labels(sample)
        depth = self.read_depth(sample) if "depth" in mods else None
        normals = None
        if "normals" in mods and (sample.path / "normals.webp").is_file():
            normals = _rgb(sample.path / "normals.webp", "normals")
        elif "normals" in mods:
            raise LayoutError(f"{sample.key} has no normals.webp, but the checkpoint needs normals: "
                              f"{self.dataset_title} provides normals only if its preparation wrote them")
        shape = image.shape[:2]
        for what, arr in (("labels", labels), ("depth", depth), ("normals", normals)):
            if arr is not None and arr.shape[:2] != shape:
                raise LayoutError(f"{sample.key}: {what} is {arr.shape[1]}x{arr.shape[0]} but rgb.webp is "
                                  f"{shape[1]}x{shape[0]}; all files of a sample must have one size")
        if self.black_is_void if mask_black is None else mask_black:
            labels = np.where(image.sum(axis=-1) == 0, IGNORE_INDEX, labels)
        return SampleData(image=image, depth=depth, normals=normals, labels=labels.astype(np.int64))


class Stanford2D3DSLayout(Layout):
    """Stanford2D3DS (13 classes), 3-fold cross-validation over its areas."""

    name = "stanford2d3ds"
    dataset = STANFORD2D3DS
    group = "area"
    areas = ("area_1", "area_2", "area_3", "area_4", "area_5a", "area_5b", "area_6")
    folds = {1: ((0, 1, 2, 3, 6), (4, 5)), 2: ((0, 2, 4, 5, 6), (1, 3)), 3: ((1, 3, 4, 5), (0, 2, 6))}
    label_file = "instances.webp"
    depth_metres_per_unit = 128.0 / 65535.0
    depth_hist_bins = 1280
    depth_hist_range = (0.0, 128.0)
    black_is_void = False
    required_assets = ("assets/semantic_labels.json", "assets/name2label.json")

    def __init__(self, root) -> None:
        super().__init__(root)
        self._lut = self._instance_lut()

    def _instance_lut(self) -> np.ndarray:
        """Instance index -> class index (or IGNORE_INDEX); the last entry is the unknown instance."""
        try:
            instances = json.loads((self.root / "assets/semantic_labels.json").read_text(encoding="utf-8"))
            name2label = json.loads((self.root / "assets/name2label.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise LayoutError(f"cannot read the label tables in {self.root / 'assets'}: {err}") from None
        if not isinstance(instances, list) or not isinstance(name2label, dict):
            raise LayoutError(f"{self.root / 'assets'}: semantic_labels.json must be a list of instance names "
                              "and name2label.json an object {class name: number}")
        number_to_class = {}
        for cls_name, number in name2label.items():
            if cls_name.lower() in [c.lower() for c in self.dataset.classes]:
                number_to_class[int(number)] = self.dataset.index(cls_name)
        lut = np.full(len(instances) + 1, IGNORE_INDEX, dtype=np.int64)
        for i, inst in enumerate(instances):
            cls_name = str(inst).split("_")[0]
            if cls_name not in name2label:
                raise LayoutError(f"instance {inst!r} of semantic_labels.json has class {cls_name!r}, "
                                  "which name2label.json does not list")
            lut[i] = number_to_class.get(int(name2label[cls_name]), IGNORE_INDEX)
        return lut

    def read_labels(self, sample: Sample) -> np.ndarray:
        rgb = _rgb(sample.path / "instances.webp", "instance map").astype(np.int64)
        index = rgb[..., 1] * 256 + rgb[..., 2]
        index[rgb[..., 0] != 0] = 0  # R != 0: outside the instance table (unknown)
        if index.max() >= len(self._lut):
            raise LayoutError(f"{sample.key}/instances.webp refers to instance {int(index.max())}, but "
                              f"assets/semantic_labels.json lists only {len(self._lut) - 1}")
        return self._lut[index]


# Matterport3D's 41 raw categories (the index is the value in semantics.png) and the class
# each is evaluated as; None = void.
_MP3D_RAW_TO_CLASS: Tuple[Tuple[str, Optional[str]], ...] = (
    ("void", None), ("wall", "wall"), ("floor", "floor"), ("chair", "chair"), ("door", "door"),
    ("table", "table"), ("picture", "picture"), ("cabinet", "furniture"), ("cushion", "objects"),
    ("window", "window"), ("sofa", "sofa"), ("bed", "bed"), ("curtain", "objects"),
    ("chest_of_drawers", "furniture"), ("plant", "objects"), ("sink", "sink"), ("stairs", "stairs"),
    ("ceiling", "ceiling"), ("toilet", "toilet"), ("stool", "chair"), ("towel", "objects"),
    ("mirror", "mirror"), ("tv_monitor", "objects"), ("shower", "shower"), ("column", "objects"),
    ("bathtub", "bathtub"), ("counter", "counter"), ("fireplace", "objects"), ("lighting", "objects"),
    ("beam", "objects"), ("railing", "objects"), ("shelving", "shelving"), ("blinds", "window"),
    ("gym_equipment", "furniture"), ("seating", "furniture"), ("board_panel", "objects"),
    ("furniture", "furniture"), ("appliances", "objects"), ("clothes", "objects"), ("objects", "objects"),
    ("misc", "objects"), ("unlabeled", None),
)

_MP3D_SCENES = (
    # 61 training scenes
    "17DRP5sb8fy", "1LXtFkjw3qL", "1pXnuDYAj8r", "29hnd4uzFmX", "5LpN3gDmAk7", "5q7pvUzZiYa", "759xd9YjKW5",
    "7y3sRwLe3Va", "82sE5b5pLXE", "8WUmhLawc2A", "aayBHfsNo7d", "ac26ZMwG7aT", "B6ByNegPMKs", "b8cTxDM8gDG",
    "cV4RVeZvu5T", "D7N2EKCX4Sj", "e9zR4mvMWw7", "EDJbREhghzL", "GdvgFV5R1Z5", "gTV8FGcVJC9", "HxpKQynjfin",
    "i5noydFURQK", "JeFG25nYj2p", "JF19kD82Mey", "jh4fc5c5qoQ", "kEZ7cmS4wCh", "mJXqzFtmKg4", "p5wJjkQkbXX",
    "Pm6F8kyY3z2", "pRbA3pwrgk9", "PuKPg4mmafe", "PX4nDJXEHrG", "qoiz87JEwZ2", "rPc6DW4iMge", "s8pcmisQ38h",
    "S9hNv5qa7GM", "sKLMLpTHeUy", "SN83YJsR3w2", "sT4fr6TAbpF", "ULsKaCPVFJR", "uNb9QFRL6hY", "Uxmj2M2itWa",
    "V2XKFyX4ASd", "VFuaQ6m2Qom", "VVfe2KiqLaN", "Vvot9Ly1tCj", "vyrNrziPKCB", "VzqfbhrpDEA", "XcA2TqTSSAj",
    "2n8kARJN3HM", "D7G3Y4RVNrH", "dhjEzFoUFzH", "E9uDoFAP3SH", "gZ6f7yhEvPG", "JmbYfDe2QKZ", "r1Q1Z4BcV1o",
    "r47D5H71a5s", "ur6pFq6Qu1A", "VLzqgDo317F", "YmJkqBEsHnH", "ZMojNkEp431",
    # 7 validation scenes (fold 1's test split)
    "2azQ1b91cZZ", "8194nk5LbLH", "EU6Fwq7SyZv", "oLBMNvg9in8", "QUCTc6BB5sX", "TbHJrupSAjP", "X7HyMhZNoso",
    # 18 test scenes (fold 2's test split)
    "2t7WUuJeko7", "5ZKStnWn8Zo", "ARNzJeq3xxb", "fzynW3qQPVF", "jtcxE69GiFV", "pa4otMbVnkk", "q9vSo1VnCiC",
    "rqfALeAoiTq", "UwV83HsGsw3", "wc2JMjhGNzB", "WYY7iVyf5p8", "YFuZgdQ5vWj", "yqstnuAEVhm", "YVUC4YcDtcY",
    "gxdoqLR6rwA", "gYvKGZ5eRqb", "RPmz2sHmrrY", "Vt2qJdWjCF2",
)


class _SemanticsPngLayout(Layout):
    label_file = "semantics.png"
    black_is_void = True
    _lut: np.ndarray

    def _raw_labels(self, sample: Sample) -> np.ndarray:
        """semantics.png as int64 ``(H, W)`` (the first channel of a colour PNG)."""
        raw = np.asarray(_open(sample.path / "semantics.png", "label map")).astype(np.int64)
        return raw[..., 0] if raw.ndim == 3 else raw

    def read_labels(self, sample: Sample) -> np.ndarray:
        raw = self._raw_labels(sample)
        if raw.size and (raw.min() < 0 or raw.max() >= len(self._lut)):
            raise LayoutError(f"{sample.key}/semantics.png holds value {int(raw.max())}; {self.dataset_title} "
                              f"labels are 0..{len(self._lut) - 1}")
        return self._lut[raw]


class Matterport3DLayout(_SemanticsPngLayout):
    """Matterport3D (20 classes): 61 training scenes; fold 1 tests the 7 validation scenes,
    fold 2 the 18 test scenes."""

    name = "matterport3d"
    dataset = MATTERPORT3D
    group = "scene"
    areas = _MP3D_SCENES
    folds = {1: (tuple(range(61)), tuple(range(61, 68))), 2: (tuple(range(61)), tuple(range(68, 86)))}
    normals_optional = True
    depth_metres_per_unit = 1.0 / 4000.0
    depth_hist_bins = 160       # 16 m (65535 / 4000, rounded) in 0.1 m bins
    depth_hist_range = (0.0, 16.0)
    _lut = np.array([IGNORE_INDEX if c is None else MATTERPORT3D.index(c) for _, c in _MP3D_RAW_TO_CLASS],
                    dtype=np.int64)


class Structured3DLayout(_SemanticsPngLayout):
    """Structured3D (NYU-40): scenes 0..2999 train; fold 1 tests 3000..3249, fold 2 3250..3499."""

    name = "structured3d"
    dataset = STRUCTURED3D
    group = "scene"
    areas = tuple(f"scene_{i:05d}" for i in range(3500))
    folds = {1: (tuple(range(3000)), tuple(range(3000, 3250))), 2: (tuple(range(3000)), tuple(range(3250, 3500)))}
    depth_metres_per_unit = 1.0 / 1000.0
    depth_hist_bins = 65535     # the authors' 1 m bins over 0..65535 m
    depth_hist_range = (0.0, 65535.0)
    _lut = np.arange(-1, 40, dtype=np.int64)  # value v -> class v - 1, 0 -> void


# ToF-360's raw category ids that map to a Stanford2D3DS class (variants of one class share it);
# _TOF360_VOID are unlabelled/invalid, every other id is clutter (lights, pipes, bins, signs, ...).
_TOF360_RAW_TO_CLASS: Dict[int, str] = {
    1: "wall", 40: "wall", 2: "ceiling", 20: "ceiling", 42: "ceiling", 3: "floor", 18: "floor",
    4: "sofa", 5: "chair", 7: "door", 8: "window", 12: "table", 14: "column", 17: "beam",
    26: "board", 31: "bookcase",
}
_TOF360_VOID = (0, 33, 34)


def _tof360_lut() -> np.ndarray:
    """Raw id -> class index for ids 0..43; the last entry (clutter) stands for every larger id."""
    lut = np.full(max(_TOF360_RAW_TO_CLASS) + 2, STANFORD2D3DS.index("clutter"), dtype=np.int64)
    for raw, cls_name in _TOF360_RAW_TO_CLASS.items():
        lut[raw] = STANFORD2D3DS.index(cls_name)
    lut[list(_TOF360_VOID)] = IGNORE_INDEX
    return lut


class ToF360Layout(_SemanticsPngLayout):
    """ToF-360 (real RGB-D-N captures) in Stanford2D3DS's 13 classes, for zero-shot evaluation:
    one fold whose test split is all four scenes (and so is its "training" split, for T)."""

    name = "tof360"
    dataset = STANFORD2D3DS
    group = "scene"
    areas = ("Hospital", "Office_Room_1", "Office_Room_2", "Parking_Lot")
    folds = {1: ((0, 1, 2, 3), (0, 1, 2, 3))}
    depth_metres_per_unit = 1.0 / 512.0
    depth_hist_bins = 1280      # 128 m (65535 / 512, rounded) in 0.1 m bins
    depth_hist_range = (0.0, 128.0)
    black_is_void = False
    _lut = _tof360_lut()

    @property
    def dataset_title(self) -> str:
        return "ToF-360"

    def black_void_for(self, modalities: Sequence[str]) -> bool:
        return False  # the authors' ToF-360 test set keeps black pixels, for image-only checkpoints too

    def read_labels(self, sample: Sample) -> np.ndarray:
        raw = self._raw_labels(sample)
        if raw.size and raw.min() < 0:
            raise LayoutError(f"{sample.key}/semantics.png holds value {int(raw.min())}; ToF-360 ids are >= 0")
        return self._lut[np.minimum(raw, len(self._lut) - 1)]


LAYOUTS = {cls.name: cls for cls in (Stanford2D3DSLayout, Matterport3DLayout, Structured3DLayout, ToF360Layout)}


def get_layout(name: str, root) -> Layout:
    """The reader for dataset ``name`` (stanford2d3ds, matterport3d, structured3d, tof360) over ``root``."""
    try:
        cls = LAYOUTS[name.lower()]
    except KeyError:
        raise InputError(f"unknown dataset {name!r}; choose one of {', '.join(LAYOUTS)}") from None
    return cls(root)
