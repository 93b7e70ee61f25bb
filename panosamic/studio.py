"""The logic of PanoSAMic Studio (app.py), independent of any UI toolkit.

* `Checkpoints`: the checkpoint picker's choices (released Hub subfolders, a local folder
  and its subfolders, typed-in names), their labels and the inputs each one needs,
* `ModelRegistry`: models loaded lazily on first use and shared by all users (LRU-bounded),
* `load_inputs` / `requirements_text` / `user_message`: reading and checking the uploads,
  what Run still needs, and exceptions turned into plain text with a fix,
* `StudioBackend`: state shared by all users (models, embedding cache, exports folder) and
  the work behind each UI event on a per-user `Session` (segment, click, prompt, assign,
  undo, SAM instances, export),
* `edit_status`, `run_message`, `view_image`, `figure_3d`: texts and pictures of a session.

Importing this module does not import torch (the page opens before any model code loads):
model code is imported inside the functions that need it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from . import viz
from .cache import EmbeddingCache, content_key
from .config import RELEASED_SUBFOLDERS, modalities_from_subfolder
from .errors import InputError, PanoSAMicError
from .session import Session

HUB_REPO = "dfki-av/PanoSAMic"
DEFAULT_SUBFOLDER = "stanford2d3ds-vith-rgbdn-fold1"
DISPLAY_WIDTH = 2048              # the ERP view is shown at most this wide (pixels)
MODALITY_NAMES = {"image": "RGB image", "depth": "depth", "normals": "normals"}
CLICK_KINDS = ("positive", "negative", "box")
EXPORT_ORDER = ("labels", "colors", "stats_json", "stats_csv", "coco_rle", "masks_png", "pointcloud_glb")
EXPORT_KEEP_S = 600               # an older export folder is deleted this long after a new one

#: progress(fraction in [0, 1], desc=text): a UI's progress bar; the default does nothing.
Progress = Callable[..., Any]


def _no_progress(fraction: float, desc: Optional[str] = None) -> None:
    pass


# ============================================================================ checkpoints

def pretty_subfolder(sub: str) -> str:
    """'stanford2d3ds-vith-rgbdn-fold1' -> 'Stanford2D3DS · ViT-H · RGB-D-N · fold 1'."""
    parts = sub.split("-")
    if len(parts) == 4 and parts[0] == "stanford2d3ds" and parts[3].startswith("fold"):
        mods = {"rgb": "RGB", "rgbd": "RGB-D", "rgbdn": "RGB-D-N"}.get(parts[2], parts[2])
        return f"Stanford2D3DS · {parts[1].replace('vit', 'ViT-').upper().replace('VIT', 'ViT')} · {mods} · fold {parts[3][4:]}"
    return sub


@dataclass(frozen=True)
class ModelKey:
    """Everything that makes two loaded models differ (the registry's and the cache's key)."""

    checkpoint: str
    subfolder: Optional[str]
    sam: Optional[str]
    device: Optional[str]
    dtype: Optional[str]


# The tiny model trained on the project's rendered rooms (assets/demo/README.md): always
# offered, so the app shows a real segmentation offline; useless on real photographs.
DEMO_DIR = Path(__file__).resolve().parent.parent / "assets" / "demo"


def _config_modalities(folder: Path) -> Optional[Tuple[str, ...]]:
    """Modalities listed in folder/config.json, or None."""
    cfg = folder / "config.json"
    try:
        mods = json.loads(cfg.read_text()).get("modalities") if cfg.is_file() else None
    except (OSError, ValueError):
        mods = None
    return tuple(m for m in ("image", "depth", "normals") if m in mods) if mods else None


class Checkpoints:
    """The choices of the checkpoint picker: released Hub subfolders, the local checkpoint
    (when `checkpoint` is a folder: "local" and "local/<subfolder>"), the bundled demo model
    ("demo") and anything typed in (a Hub subfolder)."""

    LOCAL = "local"
    DEMO = "demo"

    def __init__(self, checkpoint: str, subfolder: Optional[str], sam: Optional[str]):
        self.checkpoint = str(checkpoint)
        self.sam = sam
        self.local_dir: Optional[Path] = Path(checkpoint).expanduser() if Path(checkpoint).expanduser().is_dir() else None
        self.hub_repo = HUB_REPO if self.local_dir is not None else self.checkpoint
        self.released = dict(RELEASED_SUBFOLDERS)
        self.known: Dict[str, Tuple[str, ...]] = {}   # value -> modalities learned from a loaded model
        self.local_values: List[str] = []
        same_as_local = self.local_dir is not None and self.local_dir.resolve() == DEMO_DIR
        self.demo_dir = DEMO_DIR if (DEMO_DIR / "model.safetensors").is_file() and not same_as_local else None
        if self.local_dir is not None:
            if (self.local_dir / "model.safetensors").is_file():
                self.local_values.append(self.LOCAL)
            for sub in self.local_subfolders():
                self.local_values.append(f"{self.LOCAL}/{sub}")
        if self.local_dir is not None and subfolder and f"{self.LOCAL}/{subfolder}" in self.local_values:
            self.default = f"{self.LOCAL}/{subfolder}"
        elif self.local_values:
            self.default = self.local_values[0]
        else:
            self.default = subfolder or DEFAULT_SUBFOLDER

    def local_subfolders(self) -> List[str]:
        """Subfolders (1 or 2 levels deep) of the local checkpoint holding a model.safetensors."""
        root = self.local_dir
        assert root is not None
        found = []
        for level in (1, 2):
            pattern = "/".join(["*"] * level) + "/model.safetensors"
            found.extend(p.parent.relative_to(root).as_posix() for p in root.glob(pattern))
        return sorted(found)

    def resolve(self, value: Optional[str]) -> Tuple[str, Optional[str]]:
        """(checkpoint, subfolder) to load for a picker value."""
        value = (value or self.default).strip()
        if value == self.DEMO and self.demo_dir is not None:
            return str(self.demo_dir), None
        if self.local_dir is not None and (value == self.LOCAL or value.startswith(self.LOCAL + "/")):
            sub = value[len(self.LOCAL) + 1:] or None
            return str(self.local_dir), sub
        if value.startswith(self.LOCAL):
            raise InputError("there is no local checkpoint: start the app with --checkpoint <folder>")
        return self.hub_repo, value

    def key(self, value: Optional[str], device: Optional[str], dtype: Optional[str]) -> ModelKey:
        ckpt, sub = self.resolve(value)
        sam = None if (value or "").strip() == self.DEMO else self.sam  # the demo brings its own SAM part
        return ModelKey(ckpt, sub, sam, device, dtype)

    def modalities(self, value: Optional[str]) -> Optional[Tuple[str, ...]]:
        """The inputs the checkpoint needs, or None when unknown until it is loaded."""
        value = (value or self.default).strip()
        if value in self.known:
            return self.known[value]
        if value in self.released:
            return tuple(self.released[value])
        if value == self.DEMO and self.demo_dir is not None:
            return _config_modalities(self.demo_dir)
        if self.local_dir is not None and value in self.local_values:
            ckpt, sub = self.resolve(value)
            mods = _config_modalities(Path(ckpt) / (sub or ""))
            if mods:
                return mods
        return modalities_from_subfolder(value)

    def learn(self, value: Optional[str], modalities: Tuple[str, ...]) -> None:
        """Remembers the inputs a loaded model reported for a picker value."""
        self.known[(value or self.default).strip()] = tuple(modalities)

    def label(self, value: str) -> str:
        mods = self.modalities(value)
        need = " + ".join(MODALITY_NAMES[m] for m in mods) if mods else "inputs read on load"
        if value == self.LOCAL or value.startswith(self.LOCAL + "/"):
            assert self.local_dir is not None
            name = self.local_dir.name + (value[len(self.LOCAL):] if value != self.LOCAL else "")
            return f"Local: {name} ({need})"
        if value == self.DEMO:
            return f"Demo: tiny model trained on rendered rooms, offline ({need})"
        return f"{pretty_subfolder(value)} ({need})"

    def choices(self, extra: Optional[str] = None) -> List[Tuple[str, str]]:
        """[(label, value), ...]: local values first, then the released ones, the demo (+ default, extra)."""
        values = list(self.local_values) + list(self.released) + ([self.DEMO] if self.demo_dir else [])
        if self.default not in values:
            values.insert(0, self.default)
        if extra and extra not in values:
            values.append(extra)
        return [(self.label(v), v) for v in values]


def _load_model(key: ModelKey):
    from . import weights

    return weights.load_model(key.checkpoint, subfolder=key.subfolder, sam=key.sam)


class ModelRegistry:
    """Loaded models shared by all users, keyed by `ModelKey`; at most `max_models` stay
    loaded (least recently used goes first). `loader(key) -> model` defaults to
    `weights.load_model` (onto the CPU; the Predictor moves the model to the device)."""

    def __init__(self, max_models: int = 1, loader: Optional[Callable[[ModelKey], Any]] = None):
        self.max_models = max(1, int(max_models))
        self.loader = loader or _load_model
        self._models: Dict[ModelKey, Any] = {}
        self._order: List[ModelKey] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._models)

    def loaded(self, key: ModelKey) -> bool:
        return key in self._models

    def get(self, key: ModelKey):
        with self._lock:
            if key in self._models:
                self._order.remove(key)
                self._order.append(key)
                return self._models[key]
            # Load first, so that a checkpoint that fails to load does not evict the working one.
            model = self.loader(key)
            while len(self._models) >= self.max_models:
                old = self._order.pop(0)
                del self._models[old]
                empty_gpu_cache()
            self._models[key] = model
            self._order.append(key)
            return model


def empty_gpu_cache() -> None:
    """Gives freed CUDA memory back (after evicting a model); a no-op without CUDA."""
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001
        pass


# ============================================================================ errors

def user_message(exc: BaseException) -> str:
    """A short explanation and a fix, never a stack trace."""
    name = type(exc).__name__
    text = str(exc) or name
    if "OutOfMemory" in name or "out of memory" in text.lower():
        return ("Not enough GPU memory for this checkpoint. Close other GPU programs, start the app with "
                "`--dtype bfloat16` (or float16), pick a smaller checkpoint, or run on the CPU with `--device cpu`.")
    if isinstance(exc, PanoSAMicError):
        if type(exc).__name__ == "WeightsError":
            return (f"Could not load the checkpoint: {text} For offline use, start the app with "
                    "`--checkpoint <folder>` holding model.safetensors and sam.pth (config.json optional); "
                    "to try the app without weights, pick Demo in the checkpoint list.")
        return text
    if isinstance(exc, FileNotFoundError):
        return f"A file is missing: {text}"
    if isinstance(exc, (ConnectionError, TimeoutError)) or "connection" in text.lower():
        return (f"No network: {text}. Download the checkpoint elsewhere and start the app with "
                "`--checkpoint <folder>`.")
    if isinstance(exc, MemoryError):
        return "Out of memory: try a smaller panorama."
    return f"Unexpected error ({name}): {text}. Details are in the server log."


# ============================================================================ inputs

def input_path(file: Any) -> Optional[str]:
    """The path of an upload: a str, an object with .path or .name, or a list of those (first)."""
    if file is None:
        return None
    if isinstance(file, (list, tuple)):
        file = file[0] if file else None
        if file is None:
            return None
    return str(getattr(file, "path", None) or getattr(file, "name", None) or file)


def load_inputs(pano: Any, depth_file: Any, normals_file: Any, depth_scale: Optional[float]):
    """(image uint8 (H, W, 3), depth (H, W) float32 metres or None, normals uint8 (H, W, 3) or
    None, file name); InputError when unusable (not an image, too large, not 2:1, other sizes).
    `depth_scale`: metres per stored depth unit, 0/None = the file type's default."""
    from PIL import Image

    from . import io as pio

    path = input_path(pano)
    if not path:
        raise InputError("Upload a panorama (or click an example) first.")
    name = os.path.basename(path)
    try:
        with Image.open(path) as im:  # the header only: the size is checked before decoding
            w, h = im.size
    except Exception:  # noqa: BLE001
        raise InputError(f"{name} is not an image that can be read: upload a JPEG or PNG panorama.") from None
    pio.check_panorama_size(h, w, f"the panorama {name}")
    if w != 2 * h:
        raise InputError(f"The panorama {name} is {w}x{h}, not 2:1: an equirectangular panorama is twice as "
                         f"wide as high (e.g. {2 * h}x{h}). Crop or resize it to 2:1.")
    image = pio.load_image(path)
    depth = normals = None
    dpath = input_path(depth_file)
    if dpath:
        depth = pio.load_depth(dpath, scale=(float(depth_scale) if depth_scale else None))
        if depth.shape[:2] != image.shape[:2]:
            raise InputError(f"The depth map is {depth.shape[1]}x{depth.shape[0]} but the panorama is "
                             f"{image.shape[1]}x{image.shape[0]}: use the depth map of this panorama.")
    npath = input_path(normals_file)
    if npath:
        normals = pio.load_normals(npath)
        if normals.shape[:2] != image.shape[:2]:
            raise InputError(f"The normal map is {normals.shape[1]}x{normals.shape[0]} but the panorama is "
                             f"{image.shape[1]}x{image.shape[0]}: use the normal map of this panorama.")
    return image, depth, normals, name


def preview_image(pano: Any, max_width: int = DISPLAY_WIDTH) -> Optional[np.ndarray]:
    """The uploaded panorama as uint8 RGB at most `max_width` wide, or None if unreadable."""
    path = input_path(pano)
    if not path:
        return None
    try:
        from PIL import Image

        with Image.open(path) as im:
            im.draft("RGB", (max_width, max_width // 2))  # JPEG: decode at reduced size, much faster
            view = np.asarray(im.convert("RGB"))
        return viz.resize_for_display(view, max_width)
    except Exception:  # noqa: BLE001
        return None


def find_examples(folder: str) -> List[List[Optional[str]]]:
    """[[rgb, depth or None, normals or None], ...] for each <name>_rgb.(jpg|png) in `folder`."""
    from .io import find_companions

    root = Path(folder)
    if not root.is_dir():
        return []
    rows = []
    for rgb in sorted(list(root.glob("*_rgb.jpg")) + list(root.glob("*_rgb.png"))):
        found = find_companions(rgb)
        rows.append([str(rgb)] + [str(found[k]) if found[k] else None for k in ("depth", "normals")])
    return rows


def requirements_text(checkpoints: Checkpoints, choice: Optional[str], pano: Any, depth: Any,
                      normals: Any) -> Tuple[str, bool]:
    """(Markdown: what the selected checkpoint needs and what is missing, whether Run can start).

    Only presence matters: `pano`, `depth` and `normals` are the inputs, or any non-None marker.
    """
    mods = checkpoints.modalities(choice)
    have = {"image": pano is not None, "depth": depth is not None, "normals": normals is not None}
    if mods is None:
        need = "This checkpoint's inputs are read when it loads."
        missing: List[str] = []
    else:
        need = "Needs " + ", ".join(f"**{MODALITY_NAMES[m]}**" for m in mods) + "."
        missing = [m for m in mods if not have[m]]
    if pano is None:
        return f"{need} Upload a panorama or pick an example.", False
    if missing:
        names = " and ".join(MODALITY_NAMES[m] for m in missing)
        return f"⚠ {need} Missing: {names}. Upload it, or pick an RGB checkpoint.", False
    unused = [m for m in ("depth", "normals") if have[m] and mods is not None and m not in mods]
    note = f" The {' and '.join(unused)} map is not used by this checkpoint." if unused else ""
    return f"{need} Ready.{note}", True


def require_session(s: Optional[Session]) -> Session:
    """The session, or InputError when nothing was segmented yet."""
    if s is None:
        raise InputError("Press Run first: clicks, prompts and edits work on a segmented panorama.")
    return s


# ============================================================================ texts and pictures

def display_scale(s: Session, max_width: int = DISPLAY_WIDTH) -> float:
    """Displayed pixels per input pixel of the ERP view (<= 1)."""
    return min(1.0, max_width / s.shape[1])


def view_image(s: Session, opacity: float, max_width: int = DISPLAY_WIDTH) -> np.ndarray:
    """The ERP view: labels over the photo, the selected mask and the prompts; uint8 (h, w, 3)."""
    img = viz.overlay(s.image, s.labels, s.palette, opacity, mask=s.selected_mask, max_width=max_width)
    return viz.draw_prompts(img, display_scale(s, max_width), s.points, s.point_labels, s.box, s.pending_corner)


def figure_3d(s: Session, opacity: float, point_cloud: bool = False):
    """Plotly figure: the point cloud (needs depth) or the labelled sphere."""
    if point_cloud and s.depth is not None:
        return viz.point_cloud_figure(s.depth, s.labels, s.palette, s.classes, max_depth=None)
    # a floor on opacity: the sphere is unreadable without some label colour
    return viz.sphere_figure(s.image, s.labels, s.palette, s.classes, opacity=max(opacity, 0.35),
                             mask=s.selected_mask)


def edit_status(s: Session) -> str:
    """One line: the prompts, the selected mask and the number of edits."""
    parts = []
    if s.points:
        pos = sum(s.point_labels)
        parts.append(f"{pos} positive / {len(s.points) - pos} negative point(s)")
    if s.box is not None:
        parts.append("box across the seam" if s.box[0] > s.box[2] else "box")
    if s.pending_corner is not None:
        parts.append("first box corner set: click the opposite corner")
    if s.candidates is not None:
        mc = s.majority_class()
        parts.append(f"mask #{s.selected + 1} selected (IoU {s.selected_score:.2f}, "
                     f"{int(s.selected_mask.sum())} px, mostly {s.classes[mc] if mc is not None else '-'})")
    if not parts:
        parts.append("Click on the panorama to select a region.")
    if s.refined:
        parts.append(f"{len(s.refined)} edit(s)")
    return " · ".join(parts)


def run_message(s: Session, total: float, cached: bool, timings: Optional[Dict[str, float]] = None) -> str:
    """Markdown after Run: size, total seconds, cache use and each stage (default s.timings)."""
    timings = s.timings if timings is None else timings
    stages = " · ".join(f"{k} {v:.2f} s" for k, v in timings.items() if k != "last_prompt")
    src = "embeddings reused from the cache · " if cached else ""
    h, w = s.shape
    return f"**Segmented {w}×{h} in {total:.2f} s** — {src}{stages}"


def instance_masks(instances: List[Dict[str, Any]], labels: np.ndarray) -> List[Tuple[np.ndarray, int, Any]]:
    """(mask, majority class in `labels` (0 if none valid), predicted IoU) per SAM instance
    with at least one pixel; `labels` (H, W) int, negative = unlabelled."""
    masks = []
    for inst in instances:
        m = np.asarray(inst["segmentation"], bool)
        vals = labels[m]
        if vals.size:
            masks.append((m, int(np.bincount(vals[vals >= 0]).argmax()) if (vals >= 0).any() else 0,
                          inst.get("predicted_iou")))
    return masks


# ============================================================================ the backend

class StudioBackend:
    """State shared by all users (checkpoint choices, model registry, embedding cache, exports
    folder) and the work behind the UI's events; everything per user lives in a `Session`
    (which also remembers its `model_key` and `export_dir`)."""

    def __init__(self, checkpoint: str = HUB_REPO, subfolder: Optional[str] = DEFAULT_SUBFOLDER,
                 sam: Optional[str] = None, device: Optional[str] = None, dtype: Optional[str] = None,
                 max_models: int = 1, cache_mb: float = 2048, examples: Optional[str] = None,
                 loader: Optional[Callable[[ModelKey], Any]] = None):
        self.device = device
        self.dtype = dtype
        self.checkpoints = Checkpoints(checkpoint, subfolder, sam)
        self.registry = ModelRegistry(max_models, loader=loader)
        self.cache = EmbeddingCache.from_megabytes(cache_mb)
        self.tmp = Path(tempfile.mkdtemp(prefix="panosamic-studio-"))
        self.examples = find_examples(examples) if examples else []

    # ----------------------------------------------------------------- models
    def predictor(self, key: ModelKey, max_depth: float):
        from .predictor import Predictor

        model = self.registry.get(key)
        return Predictor(model, device=key.device, max_depth=max_depth, dtype=key.dtype)

    def session_predictor(self, s: Session):
        """A predictor holding the session's cached embeddings (no encoder run)."""
        key, max_depth = s.model_key, s.max_depth  # type: ignore[attr-defined]
        p = self.predictor(key, max_depth)
        p.set_state(s.state)
        return p

    # ----------------------------------------------------------------- events
    def segment(self, pano: Any, depth_file: Any, normals_file: Any, choice: Optional[str],
                depth_scale: Optional[float], max_depth: Optional[float],
                progress: Progress = _no_progress) -> Tuple[Session, bool]:
        """Reads the inputs, loads the checkpoint on first use, reuses cached embeddings;
        returns (new session, whether the embeddings came from the cache)."""
        progress(0.0, desc="Reading the inputs")
        image, depth, normals, name = load_inputs(pano, depth_file, normals_file, depth_scale)
        max_depth = float(max_depth or 10.0)
        key = self.checkpoints.key(choice, self.device, self.dtype)
        mods = self.checkpoints.modalities(choice)
        if mods is not None:
            missing = [MODALITY_NAMES[m] for m in mods if {"image": image, "depth": depth, "normals": normals}[m] is None]
            if missing:
                raise InputError(f"This checkpoint needs the {' and '.join(missing)} map too: upload it, "
                                 "or pick a checkpoint that uses only the RGB image.")
        timings: Dict[str, float] = {}
        if not self.registry.loaded(key):
            progress(0.05, desc="Downloading / loading the checkpoint (first use)")
        t0 = time.perf_counter()
        predictor = self.predictor(key, max_depth)
        timings["load"] = time.perf_counter() - t0
        required = tuple(predictor.required_modalities)
        self.checkpoints.learn(choice, required)
        # maps the checkpoint does not use are left out of the cache key too
        inputs = {"image": image, "depth": depth if "depth" in required else None,
                  "normals": normals if "normals" in required else None}
        ckey = content_key(inputs["image"], inputs["depth"], inputs["normals"], max_depth=max_depth,
                           checkpoint=repr(key))
        state = self.cache.get(ckey)
        if state is not None:
            progress(0.8, desc="Embeddings found in the cache")
            predictor.set_state(state)
            cached = True
        else:
            fractions = {"preprocess": 0.3, "encode": 0.4, "fuse": 0.75, "decode": 0.85}
            predictor.set_panorama(inputs["image"], inputs["depth"], inputs["normals"],
                                   progress=lambda stage: progress(fractions.get(stage, 0.5), desc=stage.capitalize()))
            timings.update(predictor.timings)
            state = predictor.state
            self.cache.put(ckey, state)
            cached = False
        s = Session(image, predictor.labels, predictor.dataset.classes, predictor.dataset.palette, depth=depth,
                    normals=normals, key=ckey, checkpoint=f"{key.checkpoint}:{key.subfolder or ''}",
                    state=state, max_depth=max_depth, name=name, timings=timings)
        s.model_key = key  # type: ignore[attr-defined]
        return s, cached

    def predict(self, s: Session) -> None:
        """Runs SAM's decoder on the session's prompts (cached embeddings only)."""
        if not s.has_prompts:
            s._drop_candidates()
            return
        p = self.session_predictor(s)
        t0 = time.perf_counter()
        masks, scores, _ = p.predict(**s.prompt_kwargs(), multimask_output=True)
        s.timings["last_prompt"] = time.perf_counter() - t0
        s.set_candidates(masks, scores)

    def _predict_or_undo(self, s: Session) -> None:
        # a prompt the decoder cannot take must not stay behind in the session
        try:
            self.predict(s)
        except Exception:
            s.undo()
            raise

    def click(self, s: Session, x_display: float, y_display: float, kind: str = "positive") -> None:
        """A click on the ERP view at display pixels: a positive/negative point, or a box
        corner (kind "box"; the decoder runs once the second corner completes the box)."""
        scale = display_scale(s)
        h, w = s.shape
        x = min(max((x_display + 0.5) / scale, 0.0), w - 1.0)
        y = min(max((y_display + 0.5) / scale, 0.0), h - 1.0)
        if kind == "box":
            if not s.add_box_corner(x, y):
                return
        else:
            s.add_point(x, y, positive=(kind != "negative"))
        self._predict_or_undo(s)

    def prompt(self, s: Session, prompt_json: Any) -> None:
        """Prompts SAM's decoder with explicit coordinates: JSON text or a dict with points,
        labels, box and append (keep the current points and box)."""
        try:
            spec = json.loads(prompt_json) if isinstance(prompt_json, str) else dict(prompt_json or {})
        except ValueError as e:
            raise InputError(f"The prompt is not valid JSON ({e}). Example: "
                             '{"points": [[100, 50]], "labels": [1], "box": [x1, y1, x2, y2]}') from None
        if not isinstance(spec, dict):
            raise InputError('The prompt must be a JSON object like {"points": [[x, y]], "labels": [1]}')
        points = spec.get("points") or []
        labels = spec.get("labels")
        box = spec.get("box")
        if spec.get("append"):
            points = [list(p) for p in s.points] + list(points)
            labels = list(s.point_labels) + list(labels if labels is not None else [1] * len(spec.get("points") or []))
            box = box if box is not None else s.box
        s.set_prompts(points, labels, box)
        self._predict_or_undo(s)

    def assign(self, s: Session, class_name: Any, candidate: Any = None) -> int:
        """Writes a class (name or index; default: the majority under the mask) into the map
        under the selected candidate (or candidate 0-2); returns the changed pixel count."""
        if s.candidates is None:
            raise InputError("Nothing to assign: click on the panorama (or send a prompt) to get a mask first.")
        if candidate is not None and candidate != "":
            s.select(int(candidate))
        if not class_name:
            mc = s.majority_class()
            if mc is None:
                raise InputError("Choose a class to assign.")
            class_name = s.classes[mc]
        return s.assign(class_name)

    def undo(self, s: Session) -> Optional[str]:
        """Reverts the last prompt change or edit and re-runs the decoder on the prompts left;
        returns "prompts", "labels" or None (nothing to undo)."""
        what = s.undo()
        if what is not None:
            self.predict(s)
        return what

    def refine_instances(self, s: Session, points_per_side: Optional[int] = 16,
                         progress: Progress = _no_progress) -> Tuple[int, int]:
        """SAM's automatic instances on the cached embeddings; each takes its majority class
        (undoable). Returns (instances, pixels that changed class); s.timings["instances"]
        is the time in seconds."""
        progress(0.1, desc="SAM instances on the cached embeddings")
        p = self.session_predictor(s)
        t0 = time.perf_counter()
        instances = p.generate_instances(points_per_side=int(points_per_side or 16))
        progress(0.8, desc="Majority class per instance")
        labels = p.refine_semantics(instances, labels=s.labels)
        changed = s.apply_labels(labels, masks=instance_masks(instances, labels), source="instances")
        s.timings["instances"] = time.perf_counter() - t0
        return len(instances), changed

    def export(self, s: Session) -> List[str]:
        """Writes the downloads into a new folder; returns the paths in EXPORT_ORDER."""
        folder = self.tmp / f"{id(s):x}-{time.time_ns():x}"
        files = s.export(str(folder))
        old = getattr(s, "export_dir", None)
        s.export_dir = str(folder)  # type: ignore[attr-defined]
        if old and os.path.isdir(old):
            timer = threading.Timer(EXPORT_KEEP_S, shutil.rmtree, args=(old,), kwargs={"ignore_errors": True})
            timer.daemon = True  # older exports go after a while (the browser may still fetch them)
            timer.start()
        return [files[k] for k in EXPORT_ORDER if k in files]


__all__ = ["Checkpoints", "ModelKey", "ModelRegistry", "StudioBackend", "user_message", "load_inputs",
           "preview_image", "find_examples", "requirements_text", "require_session", "edit_status",
           "run_message", "view_image", "figure_3d", "display_scale", "instance_masks", "pretty_subfolder",
           "input_path", "empty_gpu_cache", "HUB_REPO", "DEFAULT_SUBFOLDER", "DISPLAY_WIDTH", "MODALITY_NAMES"]
