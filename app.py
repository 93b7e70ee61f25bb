#!/usr/bin/env python
"""PanoSAMic Studio: a Gradio app for semantic segmentation of 360-degree panoramas.

    python app.py [--host 127.0.0.1] [--port 7860] [--share]
                  [--checkpoint dfki-av/PanoSAMic | LOCAL_DIR] [--subfolder stanford2d3ds-vith-rgbdn-fold1]
                  [--sam-checkpoint PATH] [--device cuda|cpu] [--dtype float32|bfloat16|float16]
                  [--cache-mb 2048] [--examples assets/examples]

Every option also reads an environment variable (PANOSAMIC_CHECKPOINT, PANOSAMIC_SUBFOLDER,
PANOSAMIC_SAM_CHECKPOINT, PANOSAMIC_DEVICE, PANOSAMIC_DTYPE, PANOSAMIC_CACHE_MB, PANOSAMIC_HOST,
PANOSAMIC_PORT, PANOSAMIC_SHARE, PANOSAMIC_EXAMPLES), for a Hugging Face Space.

This file only wires the UI: the editing logic lives in panosamic/session.py, the pictures
and files in panosamic/viz.py, the embedding cache in panosamic/cache.py. Models load lazily
on the first Run, so the page opens at once (and also offline or without weights).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import gradio as gr
import numpy as np

from panosamic import viz
from panosamic.cache import EmbeddingCache, content_key
from panosamic.config import RELEASED_SUBFOLDERS, modalities_from_subfolder
from panosamic.errors import InputError, PanoSAMicError
from panosamic.session import Session

log = logging.getLogger("panosamic.app")

ROOT = Path(__file__).resolve().parent
HUB_REPO = "dfki-av/PanoSAMic"
DEFAULT_SUBFOLDER = "stanford2d3ds-vith-rgbdn-fold1"
DISPLAY_WIDTH = 2048              # the ERP view is shown at most this wide
MODALITY_NAMES = {"image": "RGB image", "depth": "depth", "normals": "normals"}
CLICK_MODES = ["Positive point", "Negative point", "Box (2 clicks)"]
VIEW_MODES = ["Sphere", "Point cloud"]

try:  # Hugging Face ZeroGPU: request a GPU for the decorated calls; a no-op elsewhere.
    import spaces  # type: ignore

    GPU = spaces.GPU
except Exception:  # noqa: BLE001  (not installed, or not on a Space)
    def GPU(fn=None, **_kwargs):  # type: ignore[no-redef]
        return fn if fn is not None else (lambda f: f)


# ============================================================================ settings

def _env(name: str, default: Any = None) -> Any:
    value = os.environ.get(f"PANOSAMIC_{name}")
    return default if value in (None, "") else value


def _env_bool(name: str) -> bool:
    return str(_env(name, "")).lower() in ("1", "true", "yes", "on")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="PanoSAMic Studio: semantic segmentation of 360-degree panoramas.")
    p.add_argument("--host", default=_env("HOST", "127.0.0.1"), help="interface to listen on (0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=int(_env("PORT", os.environ.get("GRADIO_SERVER_PORT", 7860))))
    p.add_argument("--share", action="store_true", default=_env_bool("SHARE"), help="create a public gradio.live link")
    p.add_argument("--checkpoint", default=_env("CHECKPOINT", HUB_REPO),
                   help="Hub repo id or local folder (model.safetensors, sam.pth, optional config.json)")
    p.add_argument("--subfolder", default=_env("SUBFOLDER", DEFAULT_SUBFOLDER),
                   help="checkpoint subfolder selected at start")
    p.add_argument("--sam-checkpoint", default=_env("SAM_CHECKPOINT"),
                   help="SAM weights (file, URL or vit_b/vit_l/vit_h); default: beside the checkpoint")
    p.add_argument("--device", default=_env("DEVICE"), help="cuda, cuda:1, mps or cpu (default: best available)")
    p.add_argument("--dtype", default=_env("DTYPE"), choices=[None, "float32", "bfloat16", "float16"],
                   help="autocast precision (default float32)")
    p.add_argument("--cache-mb", type=float, default=float(_env("CACHE_MB", 2048)),
                   help="memory for cached panorama embeddings shared by all users (0 = off)")
    p.add_argument("--max-models", type=int, default=int(_env("MAX_MODELS", 1)),
                   help="checkpoints kept loaded at once")
    p.add_argument("--examples", default=_env("EXAMPLES", str(ROOT / "assets" / "examples")),
                   help="folder with <name>_rgb.jpg|png (+ _depth.png, _normals.png) examples")
    return p.parse_args(argv)


# ============================================================================ checkpoints

def _pretty_subfolder(sub: str) -> str:
    """'stanford2d3ds-vith-rgbdn-fold1' -> 'Stanford2D3DS · ViT-H · RGB-D-N · fold 1'."""
    parts = sub.split("-")
    if len(parts) == 4 and parts[0] == "stanford2d3ds" and parts[3].startswith("fold"):
        mods = {"rgb": "RGB", "rgbd": "RGB-D", "rgbdn": "RGB-D-N"}.get(parts[2], parts[2])
        return f"Stanford2D3DS · {parts[1].replace('vit', 'ViT-').upper().replace('VIT', 'ViT')} · {mods} · fold {parts[3][4:]}"
    return sub


@dataclass(frozen=True)
class ModelKey:
    checkpoint: str
    subfolder: Optional[str]
    sam: Optional[str]
    device: Optional[str]
    dtype: Optional[str]


class Checkpoints:
    """The choices of the checkpoint picker: released Hub subfolders, the local checkpoint
    (when --checkpoint is a folder) and anything typed in (a Hub subfolder)."""

    LOCAL = "local"

    def __init__(self, checkpoint: str, subfolder: Optional[str], sam: Optional[str]):
        self.checkpoint = str(checkpoint)
        self.sam = sam
        self.local_dir: Optional[Path] = Path(checkpoint).expanduser() if Path(checkpoint).expanduser().is_dir() else None
        self.hub_repo = HUB_REPO if self.local_dir is not None else self.checkpoint
        self.released = dict(RELEASED_SUBFOLDERS)
        self.known: Dict[str, Tuple[str, ...]] = {}   # value -> modalities learned from a loaded model
        self.local_values: List[str] = []
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
        if self.local_dir is not None and (value == self.LOCAL or value.startswith(self.LOCAL + "/")):
            sub = value[len(self.LOCAL) + 1:] or None
            return str(self.local_dir), sub
        if value.startswith(self.LOCAL):
            raise InputError("there is no local checkpoint: start the app with --checkpoint <folder>")
        return self.hub_repo, value

    def key(self, value: Optional[str], device: Optional[str], dtype: Optional[str]) -> ModelKey:
        ckpt, sub = self.resolve(value)
        return ModelKey(ckpt, sub, self.sam, device, dtype)

    def modalities(self, value: Optional[str]) -> Optional[Tuple[str, ...]]:
        """The inputs the checkpoint needs, or None when unknown until it is loaded."""
        value = (value or self.default).strip()
        if value in self.known:
            return self.known[value]
        if value in self.released:
            return tuple(self.released[value])
        if self.local_dir is not None and value in self.local_values:
            ckpt, sub = self.resolve(value)
            cfg = Path(ckpt) / (sub or "") / "config.json"
            if cfg.is_file():
                try:
                    mods = json.loads(cfg.read_text()).get("modalities")
                    if mods:
                        return tuple(m for m in ("image", "depth", "normals") if m in mods)
                except (OSError, ValueError):
                    pass
        return modalities_from_subfolder(value)

    def label(self, value: str) -> str:
        mods = self.modalities(value)
        need = " + ".join(MODALITY_NAMES[m] for m in mods) if mods else "inputs read on load"
        if value == self.LOCAL or value.startswith(self.LOCAL + "/"):
            assert self.local_dir is not None
            name = self.local_dir.name + (value[len(self.LOCAL):] if value != self.LOCAL else "")
            return f"Local: {name} ({need})"
        return f"{_pretty_subfolder(value)} ({need})"

    def choices(self, extra: Optional[str] = None) -> List[Tuple[str, str]]:
        values = list(self.local_values) + list(self.released)
        if self.default not in values:
            values.insert(0, self.default)
        if extra and extra not in values:
            values.append(extra)
        return [(self.label(v), v) for v in values]


class ModelRegistry:
    """Loaded models shared by all users, keyed by (checkpoint, subfolder, sam, device, dtype);
    at most `max_models` stay loaded (least recently used goes first)."""

    def __init__(self, max_models: int = 1):
        self.max_models = max(1, int(max_models))
        self._models: Dict[ModelKey, Any] = {}
        self._order: List[ModelKey] = []
        self._lock = threading.Lock()

    def loaded(self, key: ModelKey) -> bool:
        return key in self._models

    def get(self, key: ModelKey):
        with self._lock:
            if key in self._models:
                self._order.remove(key)
                self._order.append(key)
                return self._models[key]
            from panosamic import weights

            # Load first (onto the CPU; the Predictor moves it to the device), so that a
            # checkpoint that fails to load does not evict the working one.
            model = weights.load_model(key.checkpoint, subfolder=key.subfolder, sam=key.sam)
            while len(self._models) >= self.max_models:
                old = self._order.pop(0)
                del self._models[old]
                _empty_gpu_cache()
            self._models[key] = model
            self._order.append(key)
            return model


def _empty_gpu_cache() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001
        pass


# ============================================================================ errors

def user_message(exc: BaseException, settings: Optional[argparse.Namespace] = None) -> str:
    """A short explanation and a fix, never a stack trace."""
    name = type(exc).__name__
    text = str(exc) or name
    if isinstance(exc, gr.Error):
        return exc.message
    if "OutOfMemory" in name or "out of memory" in text.lower():
        return ("Not enough GPU memory for this checkpoint. Close other GPU programs, start the app with "
                "`--dtype bfloat16` (or float16), pick a smaller checkpoint, or run on the CPU with `--device cpu`.")
    if isinstance(exc, PanoSAMicError):
        if type(exc).__name__ == "WeightsError":
            return (f"Could not load the checkpoint: {text} For offline use, start the app with "
                    "`--checkpoint <folder>` holding model.safetensors and sam.pth (config.json optional).")
        return text
    if isinstance(exc, FileNotFoundError):
        return f"A file is missing: {text}"
    if isinstance(exc, (ConnectionError, TimeoutError)) or "connection" in text.lower():
        return (f"No network: {text}. Download the checkpoint elsewhere and start the app with "
                "`--checkpoint <folder>`.")
    if isinstance(exc, MemoryError):
        return "Out of memory: try a smaller panorama."
    return f"Unexpected error ({name}): {text}. Details are in the server log."


def on_gpu(fn, duration: int = 60):
    """`spaces.GPU` on a Space (ZeroGPU lends a GPU for the call), the function itself elsewhere."""
    wrapped = GPU(duration=duration)(fn)
    return functools.wraps(fn)(wrapped) if wrapped is not fn else fn


def friendly(fn):
    """Turns every exception of a handler into a gr.Error with a user-facing message."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:  # noqa: BLE001
            if not isinstance(exc, PanoSAMicError):
                log.exception("handler %s failed", fn.__name__)
            raise gr.Error(user_message(exc), duration=None, print_exception=False) from None

    return wrapper


# ============================================================================ inputs

def _path(file: Any) -> Optional[str]:
    if file is None:
        return None
    if isinstance(file, (list, tuple)):
        file = file[0] if file else None
        if file is None:
            return None
    return str(getattr(file, "path", None) or getattr(file, "name", None) or file)


def load_inputs(pano: Any, depth_file: Any, normals_file: Any, depth_scale: Optional[float]):
    """(image uint8 (H, W, 3), depth metres or None, normals uint8 or None, name); InputError when unusable."""
    from PIL import Image

    from panosamic import io as pio

    path = _path(pano)
    if not path:
        raise InputError("Upload a panorama (or click an example) first.")
    name = os.path.basename(path)
    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception:  # noqa: BLE001
        raise InputError(f"{name} is not an image that can be read: upload a JPEG or PNG panorama.") from None
    pio.check_panorama_size(h, w, f"the panorama {name}")
    if w != 2 * h:
        raise InputError(f"The panorama {name} is {w}x{h}, not 2:1: an equirectangular panorama is twice as "
                         f"wide as high (e.g. {2 * h}x{h}). Crop or resize it to 2:1.")
    image = pio.load_image(path)
    depth = normals = None
    dpath = _path(depth_file)
    if dpath:
        depth = pio.load_depth(dpath, scale=(float(depth_scale) if depth_scale else None))
        if depth.shape[:2] != image.shape[:2]:
            raise InputError(f"The depth map is {depth.shape[1]}x{depth.shape[0]} but the panorama is "
                             f"{image.shape[1]}x{image.shape[0]}: use the depth map of this panorama.")
    npath = _path(normals_file)
    if npath:
        normals = pio.load_normals(npath)
        if normals.shape[:2] != image.shape[:2]:
            raise InputError(f"The normal map is {normals.shape[1]}x{normals.shape[0]} but the panorama is "
                             f"{image.shape[1]}x{image.shape[0]}: use the normal map of this panorama.")
    return image, depth, normals, name


def find_examples(folder: str) -> List[List[Optional[str]]]:
    """[[rgb, depth or None, normals or None], ...] for each <name>_rgb.(jpg|png) in `folder`."""
    root = Path(folder)
    if not root.is_dir():
        return []
    rows = []
    for rgb in sorted(list(root.glob("*_rgb.jpg")) + list(root.glob("*_rgb.png"))):
        stem = rgb.name[: -len("_rgb" + rgb.suffix)]
        depth = root / f"{stem}_depth.png"
        normals = root / f"{stem}_normals.png"
        rows.append([str(rgb), str(depth) if depth.is_file() else None, str(normals) if normals.is_file() else None])
    return rows


def panorama_input(**kwargs) -> gr.Image:
    """gr.Image for the panorama upload that reports a file it cannot decode with a clear
    message (a plain gr.Image fails inside PIL before the handler runs). The check wraps the
    instance's preprocess: a gr.Image subclass would make Gradio write an app.pyi stub."""
    image = gr.Image(**kwargs)
    preprocess = image.preprocess

    def checked(payload):
        try:
            return preprocess(payload)
        except Exception:  # noqa: BLE001
            name = getattr(payload, "orig_name", None) or "the file"
            raise gr.Error(f"{name} is not an image that can be read: upload a JPEG or PNG panorama "
                           "(equirectangular, width = 2 x height).", duration=None,
                           print_exception=False) from None

    image.preprocess = checked  # type: ignore[method-assign]
    return image


# ============================================================================ the app

class Studio:
    """State shared by all users (settings, model registry, embedding cache, temp folder) and
    the event handlers; everything per user lives in the gr.State `Session`."""

    def __init__(self, settings: argparse.Namespace):
        self.settings = settings
        self.checkpoints = Checkpoints(settings.checkpoint, settings.subfolder, settings.sam_checkpoint)
        self.registry = ModelRegistry(settings.max_models)
        self.cache = EmbeddingCache.from_megabytes(settings.cache_mb)
        self.tmp = Path(tempfile.mkdtemp(prefix="panosamic-studio-"))
        self.examples = find_examples(settings.examples)

    # ----------------------------------------------------------------- helpers
    def predictor(self, key: ModelKey, max_depth: float):
        import panosamic

        model = self.registry.get(key)
        return panosamic.Predictor(model, device=key.device, max_depth=max_depth, dtype=key.dtype)

    def session_predictor(self, s: Session):
        key, max_depth = s.model_key, s.max_depth  # type: ignore[attr-defined]
        p = self.predictor(key, max_depth)
        p.set_state(s.state)
        return p

    def display_scale(self, s: Session) -> float:
        return min(1.0, DISPLAY_WIDTH / s.shape[1])

    def render_view(self, s: Session, opacity: float) -> np.ndarray:
        img = viz.overlay(s.image, s.labels, s.palette, opacity, mask=s.selected_mask, max_width=DISPLAY_WIDTH)
        return viz.draw_prompts(img, self.display_scale(s), s.points, s.point_labels, s.box, s.pending_corner)

    def render_3d(self, s: Session, opacity: float, mode: str):
        if mode == VIEW_MODES[1] and s.depth is not None:
            return viz.point_cloud_figure(s.depth, s.labels, s.palette, s.classes, max_depth=None)
        return viz.sphere_figure(s.image, s.labels, s.palette, s.classes, opacity=max(opacity, 0.35),
                                 mask=s.selected_mask)

    def export(self, s: Session) -> List[str]:
        folder = self.tmp / f"{id(s):x}-{time.time_ns():x}"
        files = s.export(str(folder))
        old = getattr(s, "export_dir", None)
        s.export_dir = str(folder)  # type: ignore[attr-defined]
        if old and os.path.isdir(old):
            timer = threading.Timer(600, shutil.rmtree, args=(old,), kwargs={"ignore_errors": True})
            timer.daemon = True  # older exports go after 10 min (the browser may still fetch them)
            timer.start()
        order = ["labels", "colors", "stats_json", "stats_csv", "coco_rle", "masks_png", "pointcloud_glb"]
        return [files[k] for k in order if k in files]

    def edit_status(self, s: Session) -> str:
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

    def bundle(self, s: Optional[Session], opacity: float, mode: str, files: bool = False,
               run_status: Any = None) -> tuple:
        """Values for OUTPUTS (see build_ui): state, view, legend, 3D, candidates, class,
        info, downloads, run status, edit status."""
        skip = gr.skip()
        if s is None:
            return (None, skip, skip, skip, skip, skip, skip, skip, skip if run_status is None else run_status, skip)
        if s.candidates is not None:
            cand = gr.Radio(choices=[(f"#{i + 1} · IoU {float(v):.2f}", i) for i, v in enumerate(s.scores)],
                            value=s.selected, interactive=True)
            mc = s.majority_class()
            cls = gr.Dropdown(choices=list(s.classes), value=s.classes[mc] if mc is not None else s.classes[0])
        else:
            cand = gr.Radio(choices=[("#1", 0), ("#2", 1), ("#3", 2)], value=None, interactive=False)
            cls = gr.Dropdown(choices=list(s.classes))
        stats = s.stats()
        info = {**s.summary(), "stats": stats}
        return (
            s,
            self.render_view(s, opacity),
            viz.legend_html(stats),
            self.render_3d(s, opacity, mode),
            cand,
            cls,
            info,
            self.export(s) if files else skip,
            skip if run_status is None else run_status,
            self.edit_status(s),
        )

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

    # ----------------------------------------------------------------- handlers
    def requirements_text(self, choice: Optional[str], pano: Any, depth: Any, normals: Any) -> Tuple[str, bool]:
        """What the selected checkpoint needs, and whether Run can start."""
        mods = self.checkpoints.modalities(choice)
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

    def requirements(self, choice: Optional[str], pano: Any, depth: Any, normals: Any):
        text, ok = self.requirements_text(choice, pano, depth, normals)
        return text, gr.Button(interactive=ok)

    def on_upload(self, pano: Any):
        """A new panorama replaces the session: show it, clear the results."""
        view = None
        path = _path(pano)
        if path:
            try:
                from PIL import Image

                with Image.open(path) as im:
                    im.draft("RGB", (DISPLAY_WIDTH, DISPLAY_WIDTH // 2))
                    view = np.asarray(im.convert("RGB"))
                view = viz.resize_for_display(view, DISPLAY_WIDTH)
            except Exception:  # noqa: BLE001
                view = None
        return (None, view, viz.legend_html([]), None,
                gr.Radio(choices=[("#1", 0), ("#2", 1), ("#3", 2)], value=None, interactive=False),
                gr.Dropdown(choices=[], value=None), None, None,
                "Press **Run** to segment the panorama." if path else "", "")

    def segment(self, panorama, depth, normals, checkpoint, depth_scale, max_depth, opacity, view_mode,
                session, progress=gr.Progress(track_tqdm=True)):
        """Segments a panorama: loads the checkpoint on first use, reuses cached embeddings."""
        pano, depth_file, normals_file, choice, mode = panorama, depth, normals, checkpoint, view_mode
        t_start = time.perf_counter()
        progress(0.0, desc="Reading the inputs")
        image, depth, normals, name = load_inputs(pano, depth_file, normals_file, depth_scale)
        max_depth = float(max_depth or 10.0)
        key = self.checkpoints.key(choice, self.settings.device, self.settings.dtype)
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
        self.checkpoints.known[(choice or self.checkpoints.default).strip()] = required
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
        progress(0.92, desc="Rendering")
        t1 = time.perf_counter()
        s = Session(image, predictor.labels, predictor.dataset.classes, predictor.dataset.palette, depth=depth,
                    normals=normals, key=ckey, checkpoint=f"{key.checkpoint}:{key.subfolder or ''}",
                    state=state, max_depth=max_depth, name=name, timings=timings)
        s.model_key = key  # type: ignore[attr-defined]
        out = self.bundle(s, opacity, mode, files=True)
        timings["render"] = time.perf_counter() - t1
        total = time.perf_counter() - t_start
        stages = " · ".join(f"{k} {v:.2f} s" for k, v in timings.items() if k != "last_prompt")
        src = "embeddings reused from the cache · " if cached else ""
        h, w = s.shape
        msg = f"**Segmented {w}×{h} in {total:.2f} s** — {src}{stages}"
        s.timings["total"] = total
        return out[:8] + (msg,) + out[9:]

    def _need_session(self, s: Optional[Session]) -> Session:
        if s is None:
            raise InputError("Press Run first: clicks, prompts and edits work on a segmented panorama.")
        return s

    def click(self, s, mode, opacity, view_mode, evt: gr.SelectData):
        if s is None:
            gr.Warning("Press Run first: clicks refine a segmented panorama.")
            return self.bundle(None, opacity, view_mode)
        x_disp, y_disp = evt.index[0], evt.index[1]
        scale = self.display_scale(s)
        h, w = s.shape
        x = min(max((x_disp + 0.5) / scale, 0.0), w - 1.0)
        y = min(max((y_disp + 0.5) / scale, 0.0), h - 1.0)
        if mode == CLICK_MODES[2]:
            if not s.add_box_corner(x, y):
                return self.bundle(s, opacity, view_mode)
        else:
            s.add_point(x, y, positive=(mode != CLICK_MODES[1]))
        try:
            self.predict(s)
        except Exception:
            s.undo()
            raise
        return self.bundle(s, opacity, view_mode)

    def prompt(self, prompt_json, s, opacity, view_mode):
        """Prompts SAM's decoder with explicit coordinates (JSON: points, labels, box, append)."""
        s = self._need_session(s)
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
        try:
            self.predict(s)
        except Exception:
            s.undo()
            raise
        return self.bundle(s, opacity, view_mode)

    def select_candidate(self, index, s, opacity, view_mode):
        """Selects candidate mask 0, 1 or 2 of the last prompt."""
        s = self._need_session(s)
        if index is not None and s.candidates is not None:
            s.select(int(index))
        return self.bundle(s, opacity, view_mode)

    def assign(self, class_name, candidate, s, opacity, view_mode):
        """Writes a class (name or index; default: majority under the mask) into the map under the
        selected candidate (or candidate 0-2)."""
        s = self._need_session(s)
        if s.candidates is None:
            raise InputError("Nothing to assign: click on the panorama (or send a prompt) to get a mask first.")
        if candidate is not None and candidate != "":
            s.select(int(candidate))
        if not class_name:
            mc = s.majority_class()
            if mc is None:
                raise InputError("Choose a class to assign.")
            class_name = s.classes[mc]
        s.assign(class_name)
        return self.bundle(s, opacity, view_mode, files=True)

    def undo(self, s, opacity, view_mode):
        """Reverts the last prompt change or edit."""
        s = self._need_session(s)
        what = s.undo()
        if what is None:
            gr.Info("Nothing to undo.")
            return self.bundle(s, opacity, view_mode)
        self.predict(s)
        return self.bundle(s, opacity, view_mode, files=(what == "labels"))

    def clear(self, s, opacity, view_mode):
        """Removes all prompts and candidate masks (undoable)."""
        s = self._need_session(s)
        s.clear_prompts()
        return self.bundle(s, opacity, view_mode)

    def refine_instances(self, points_per_side, s, opacity, view_mode, progress=gr.Progress()):
        """SAM's automatic instances on the cached embeddings; each takes its majority class."""
        s = self._need_session(s)
        progress(0.1, desc="SAM instances on the cached embeddings")
        p = self.session_predictor(s)
        t0 = time.perf_counter()
        instances = p.generate_instances(points_per_side=int(points_per_side or 16))
        progress(0.8, desc="Majority class per instance")
        labels = p.refine_semantics(instances, labels=s.labels)
        masks = []
        for inst in instances:
            m = np.asarray(inst["segmentation"], bool)
            vals = labels[m]
            if vals.size:
                masks.append((m, int(np.bincount(vals[vals >= 0]).argmax()) if (vals >= 0).any() else 0,
                              inst.get("predicted_iou")))
        changed = s.apply_labels(labels, masks=masks, source="instances")
        s.timings["instances"] = time.perf_counter() - t0
        gr.Info(f"{len(instances)} SAM instances, {changed} pixels changed class "
                f"({s.timings['instances']:.1f} s). Undo reverts this.")
        return self.bundle(s, opacity, view_mode, files=True)

    def restyle(self, s, opacity, view_mode):
        """Opacity / 3D mode changed: re-render the pictures only."""
        if s is None:
            return gr.skip(), gr.skip()
        if view_mode == VIEW_MODES[1] and s.depth is None:
            gr.Info("The point cloud needs a depth map: showing the sphere.")
        return self.render_view(s, opacity), self.render_3d(s, opacity, view_mode)

    def export_files(self, s):
        """Writes the downloads again; returns (files, session summary with statistics)."""
        s = self._need_session(s)
        return self.export(s), {**s.summary(), "stats": s.stats()}


CSS = """
#pano-view img { cursor: crosshair; }
.pano-legend { font-size: 0.9em; }
#run-status p, #edit-status p { margin: 0; }
footer { display: none !important; }
"""

INTRO = """
# PanoSAMic Studio
Semantic segmentation of 360° equirectangular panoramas with **PanoSAMic** (SAM's ViT encoder with
RGB / depth / normals fusion). Upload a panorama (2:1) or pick an example, press **Run**, then click on the
panorama to refine: SAM's prompt decoder runs on the cached embeddings, so clicks are fast.
"""


def build_ui(studio: Studio) -> gr.Blocks:
    ck = studio.checkpoints
    with gr.Blocks(title="PanoSAMic Studio", delete_cache=(3600, 7200)) as demo:
        session = gr.State(None, time_to_live=4 * 3600)
        gr.Markdown(INTRO)
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=320):
                pano = panorama_input(label="Panorama (equirectangular, 2:1)", type="filepath", image_mode=None,
                                     sources=["upload", "clipboard"], height=190)
                with gr.Row():
                    depth = gr.File(label="Depth (16-bit PNG mm, .npy/.exr m)", file_types=[".png", ".npy", ".exr", ".tif", ".tiff"],
                                    height=110)
                    normals = gr.File(label="Normals (RGB PNG)", file_types=["image"], height=110)
                checkpoint = gr.Dropdown(choices=ck.choices(), value=ck.default, allow_custom_value=True,
                                         label="Checkpoint", info="Released PanoSAMic weights, or type a Hub subfolder")
                need = gr.Markdown(studio.requirements_text(ck.default, None, None, None)[0], elem_id="requirements")
                with gr.Accordion("Settings", open=False):
                    depth_scale = gr.Number(value=0, minimum=0, label="Depth scale (metres per stored unit)",
                                            info="0 = auto: PNG in millimetres, .npy/.exr in metres")
                    max_depth = gr.Slider(1, 50, value=10, step=0.5, label="Max depth T (m)",
                                          info="Depth encoding range of the model (10 m for indoor rooms)")
                    pps = gr.Slider(4, 32, value=16, step=1, label="SAM instance grid (points per side)",
                                    info="For 'Refine with SAM instances'; fewer points are faster")
                run = gr.Button("Run", variant="primary", interactive=False, elem_id="run-button")
                run_status = gr.Markdown(elem_id="run-status", label="Run status")
                if studio.examples:
                    gr.Examples(studio.examples, inputs=[pano, depth, normals], label="Examples (with depth and normals)",
                                examples_per_page=6,
                                example_labels=[Path(r[0]).name.rsplit("_rgb", 1)[0] for r in studio.examples])
            with gr.Column(scale=3):
                view = gr.Image(label="Semantic map — click to refine", interactive=False, elem_id="pano-view",
                                buttons=["download", "fullscreen"], height=440, format="jpeg")
                with gr.Row(equal_height=True):
                    opacity = gr.Slider(0, 1, value=0.55, step=0.05, label="Opacity", scale=2)
                    mode = gr.Radio(CLICK_MODES, value=CLICK_MODES[0], label="Click adds", scale=3)
                with gr.Row(equal_height=False):
                    candidates = gr.Radio([("#1", 0), ("#2", 1), ("#3", 2)], value=None, label="Mask candidates",
                                          interactive=False, scale=3)
                    cls = gr.Dropdown(choices=[], label="Class", allow_custom_value=True, scale=2)
                with gr.Row():
                    assign = gr.Button("Assign class", variant="primary", elem_id="assign-button")
                    undo = gr.Button("↶ Undo", elem_id="undo-button")
                    clear = gr.Button("Clear prompts")
                    refine = gr.Button("Refine with SAM instances")
                edit_status = gr.Markdown(elem_id="edit-status", label="Edit status")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                view_mode = gr.Radio(VIEW_MODES, value=VIEW_MODES[0], label="3D view", info="Point cloud needs depth")
                plot = gr.Plot(label="3D", elem_id="pano-3d")
            with gr.Column(scale=2):
                legend = gr.HTML(viz.legend_html([]), label="Legend", elem_id="legend")
                downloads = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="downloads")
                export = gr.Button("Export again", size="sm")
        with gr.Accordion("Prompt by coordinates / API details", open=False):
            prompt_json = gr.Textbox(label="Prompt (JSON, input-image pixels)", lines=2,
                                     value='{"points": [[100, 50]], "labels": [1]}',
                                     info='{"points": [[x, y], ...], "labels": [1 or 0, ...], "box": [x1, y1, x2, y2], '
                                          '"append": false}; x1 > x2 wraps across the seam')
            apply_prompt = gr.Button("Apply prompt", size="sm")
            info = gr.JSON(label="Session (summary, statistics)")

        outputs = [session, view, legend, plot, candidates, cls, info, downloads, run_status, edit_status]
        style = [opacity, view_mode]
        model_q = dict(concurrency_id="model", concurrency_limit=1)

        for comp in (checkpoint, pano, depth, normals):
            comp.change(studio.requirements, [checkpoint, pano, depth, normals], [need, run],
                        api_visibility="private", queue=False)
        pano.change(studio.on_upload, [pano], outputs, api_visibility="private")

        run.click(friendly(on_gpu(studio.segment, 120)), [pano, depth, normals, checkpoint, depth_scale, max_depth, *style, session],
                  outputs, api_name="segment", **model_q)
        view.select(friendly(on_gpu(studio.click)), [session, mode, *style], outputs, api_visibility="private", **model_q)
        apply_prompt.click(friendly(on_gpu(studio.prompt)), [prompt_json, session, *style], outputs, api_name="prompt", **model_q)
        candidates.input(friendly(studio.select_candidate), [candidates, session, *style], outputs,
                         api_name="select_candidate")
        assign.click(friendly(studio.assign), [cls, candidates, session, *style], outputs, api_name="assign")
        undo.click(friendly(on_gpu(studio.undo)), [session, *style], outputs, api_name="undo", **model_q)
        clear.click(friendly(studio.clear), [session, *style], outputs, api_name="clear")
        refine.click(friendly(on_gpu(studio.refine_instances, 120)), [pps, session, *style], outputs, api_name="refine_instances",
                     **model_q)
        export.click(friendly(studio.export_files), [session], [downloads, info], api_name="export")
        for comp in (opacity, view_mode):
            comp.change(friendly(studio.restyle), [session, *style], [view, plot], api_visibility="private")
    return demo


def _warm_imports() -> None:
    try:
        import panosamic.predictor  # noqa: F401
        import panosamic.weights  # noqa: F401
    except Exception:  # noqa: BLE001  (reported properly on Run)
        pass


def main(argv: Optional[Sequence[str]] = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = parse_args(argv)
    studio = Studio(settings)
    demo = build_ui(studio)
    allowed = [str(Path(settings.examples).resolve())] if Path(settings.examples).is_dir() else []
    # Warm the heavy imports (torch, the model code) while the page is already being served.
    threading.Thread(target=_warm_imports, daemon=True).start()
    demo.queue(default_concurrency_limit=4).launch(
        server_name=settings.host, server_port=settings.port, share=settings.share,
        allowed_paths=allowed, css=CSS, show_error=True, theme=gr.themes.Soft(),
    )


if __name__ == "__main__":
    main()
