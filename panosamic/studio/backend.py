"""The work behind each event of PanoSAMic Studio, independent of any UI toolkit.

`StudioBackend` owns what all users share: the checkpoint choices, one `Predictor` per loaded
model (`ModelRegistry`), the embedding cache (`PanoramaState`s by content hash) and the
sessions' lifetime (`SessionStore`). Each event works on one user's `Session`:

* `segment` reads the inputs, encodes them once (or finds the embeddings in the cache),
  and makes a session at the working size; the heavy work happens here only;
* `click`, `prompt`, `select`, `assign`, `undo`, `clear` are light: SAM's prompt decoder on
  the cached embeddings (on the CPU between events), masks at the working size;
* `refine_instances` runs SAM's automatic grid on the cached embeddings;
* `export` writes the downloads at the input size, when asked.

Importing this module does not import torch (the page opens before any model code loads).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ..errors import InputError
from .cache import EmbeddingCache, content_key
from .checkpoints import DEFAULT_SUBFOLDER, HUB_REPO, MODALITY_NAMES, Checkpoints, ModelKey, ModelRegistry
from .prompts import lonlat_to_pixels, parse_prompt
from ..metrics import majority_class
from .session import Session, working_size
from .store import SessionStore, clean_stale_folders, release_free_memory
from .uploads import find_examples, load_inputs

log = logging.getLogger(__name__)

#: progress(fraction in [0, 1], desc=text): a UI's progress bar; the default does nothing.
Progress = Callable[..., Any]


def _no_progress(fraction: float, desc: Optional[str] = None) -> None:
    pass


def load_predictor(key: ModelKey):
    """The Predictor for a checkpoint: the network loaded once, on the device of `key`."""
    from ..predictor import Predictor
    from ..weights import load_model

    log.info("loading checkpoint %s (subfolder %s)", key.checkpoint, key.subfolder or "-")
    return Predictor(load_model(key.checkpoint, subfolder=key.subfolder, sam=key.sam),
                     device=key.device, dtype=key.dtype)


def _file_bytes(upload: Any) -> Optional[np.ndarray]:
    from .uploads import input_path

    path = input_path(upload)
    return None if path is None else np.fromfile(path, dtype=np.uint8)


def _resize_area(image: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    import cv2

    if image.shape[:2] == tuple(size):
        return image
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def _resize_depth(depth: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Nearest neighbour: averaging would blend invalid (0) pixels into their neighbours."""
    from ..geometry import resize_erp

    return depth if depth.shape == tuple(size) else resize_erp(depth, size[0], size[1], nearest=True)


class StudioBackend:
    """State shared by all users and the work behind the UI's events (see the module docstring).

    Args:
        checkpoint, subfolder, sam: the default checkpoint (Hub id or local folder).
        device, dtype: where and how models run.
        max_models: checkpoints kept loaded at once.
        cache_mb: memory for cached embeddings shared by all users.
        session_mb: memory for all sessions together; least recently used idle ones go first.
        session_idle_s: a session unused this long is released (its user presses Run again).
        work_width: the working width of sessions (interaction never runs wider).
        loader: ModelKey -> Predictor (tests pass their own).
    """

    def __init__(self, checkpoint: str = HUB_REPO, subfolder: Optional[str] = DEFAULT_SUBFOLDER,
                 sam: Optional[str] = None, device: Optional[str] = None, dtype: Optional[str] = None,
                 max_models: int = 1, cache_mb: float = 2048, examples: Optional[str] = None,
                 session_mb: float = 4096, session_idle_s: float = 3600, work_width: int = 2048,
                 loader: Optional[Callable[[ModelKey], Any]] = None):
        self.device = device
        self.dtype = dtype
        self.work_width = int(work_width)
        self.checkpoints = Checkpoints(checkpoint, subfolder, sam)
        self.registry = ModelRegistry(max_models, loader=loader or load_predictor)
        self.cache = EmbeddingCache.from_megabytes(cache_mb)
        clean_stale_folders()
        self.store = SessionStore(int(session_mb * 2**20), session_idle_s)
        self.examples = find_examples(examples) if examples else []

    def close(self) -> None:
        """Shutdown: sessions and their files go."""
        self.store.close_all()

    # ----------------------------------------------------------------- heavy events
    def segment(self, pano: Any, depth_file: Any, normals_file: Any, choice: Optional[str],
                depth_scale: Optional[float], max_depth: Optional[float],
                progress: Progress = _no_progress, previous: Optional[Session] = None,
                client: Optional[str] = None) -> Tuple[Session, bool]:
        """Reads the inputs, loads the checkpoint on first use, reuses cached embeddings;
        returns (new session, whether the embeddings came from the cache). The user's
        `previous` session is released; `client` identifies the browser tab (see SessionStore)."""
        progress(0.0, desc="Reading the inputs")
        max_depth = _positive(max_depth, "Max depth T", default=10.0)
        depth_scale = _positive(depth_scale, "Depth scale", default=0.0, allow_zero=True) or None
        key = self.checkpoints.key(choice, self.device, self.dtype)  # refuses what is not allowed first
        notes: List[str] = []
        image, depth, normals, name = load_inputs(pano, depth_file, normals_file, depth_scale, notes=notes)
        mods = self.checkpoints.modalities(choice)
        if mods is not None:
            given = {"image": image, "depth": depth, "normals": normals}
            missing = [MODALITY_NAMES[m] for m in mods if given[m] is None]
            if missing:
                raise _missing(missing)
        timings: Dict[str, float] = {}
        if not self.registry.loaded(key):
            # not downloaded and no Hub: say so within ~2 s (huggingface_hub would retry for long)
            self.checkpoints.check_available(choice)
            progress(0.05, desc="Downloading / loading the checkpoint (first use)")
        t0 = time.perf_counter()
        predictor = self.registry.get(key)
        timings["load"] = time.perf_counter() - t0
        required = tuple(predictor.required_modalities)
        self.checkpoints.learn(choice, required)
        # maps the checkpoint does not use are left out of the cache key too
        inputs = {"image": image, "depth": depth if "depth" in required else None,
                  "normals": normals if "normals" in required else None}
        if "depth" in required and depth is None or "normals" in required and normals is None:
            raise _missing([MODALITY_NAMES[m] for m in required if inputs[m] is None])
        # the key hashes the uploaded files (a few MB), not the decoded arrays (up to 330 MB at 8K)
        files = {"image": pano, "depth": depth_file if inputs["depth"] is not None else None,
                 "normals": normals_file if inputs["normals"] is not None else None}
        ckey = content_key(*(_file_bytes(files[m]) for m in ("image", "depth", "normals")), max_depth=max_depth,
                           depth_scale=depth_scale, checkpoint=repr(key))
        state = self.cache.get(ckey)
        cached = state is not None
        if cached:
            progress(0.8, desc="Embeddings found in the cache")
        else:
            # per ViT block, with the time left (panosamic.eta): 0.1..0.9 of the bar
            state = predictor.encode(inputs["image"], inputs["depth"], inputs["normals"], max_depth=max_depth,
                                     on_progress=lambda e: progress(0.1 + 0.8 * e.fraction,
                                                                    desc=str(e).capitalize()))
            state = state.to("cpu")  # between events the embeddings live on the CPU
            timings.update(state.timings)
            self.cache.put(ckey, state)
        t0 = time.perf_counter()
        size = working_size(*image.shape[:2], self.work_width)
        s = Session(_resize_area(image, size), predictor.labels_at(size, state=state),
                    predictor.dataset.classes, predictor.dataset.palette, input_size=image.shape[:2],
                    depth=None if depth is None else _resize_depth(depth, size), has_normals=normals is not None,
                    key=ckey, checkpoint=f"{key.checkpoint.rsplit('/', 1)[-1]}:{key.subfolder or ''}",
                    state=state, model_key=key, max_depth=max_depth, name=name, timings=timings, notes=notes)
        s.timings["working_maps"] = time.perf_counter() - t0
        del image, depth, normals, inputs  # the input-size arrays go now
        self.store.add(s, replaces=previous, client=client)
        release_free_memory()  # the input-size arrays are gone: hand their pages back (8K: ~1 GB)
        return s, cached

    def refine_instances(self, s: Session, points_per_side: Any = 16,
                         progress: Progress = _no_progress) -> Tuple[int, int]:
        """SAM's automatic instances on the cached embeddings; each takes its majority class
        (undoable). Returns (instances, pixels that changed class); s.timings["instances"]
        is the time in seconds."""
        pps = _int_in_range(points_per_side, "points per side", 2, 64, default=16)
        with self.store.use(s):
            progress(0.1, desc="SAM instances on the cached embeddings")
            predictor = self.registry.get(s.model_key)
            t0 = time.perf_counter()
            instances = predictor.generate_instances(points_per_side=pps, state=s.state, output_size=s.shape)
            progress(0.8, desc="Majority class per instance")
            labels = predictor.refine_semantics(instances, labels=s.labels)
            masks = []
            for inst in instances:
                mc = majority_class(labels, inst["segmentation"], s.num_classes)
                if mc is not None:
                    masks.append((inst["segmentation"], mc, inst.get("predicted_iou")))
            changed = s.apply_labels(labels, masks=masks, source="instances")
            s.timings["instances"] = time.perf_counter() - t0
            return len(instances), changed

    def export(self, s: Session) -> List[str]:
        """Writes the downloads at the input size into a new folder of the session; returns
        the paths in `downloads.KINDS` order."""
        from .downloads import write_downloads

        with self.store.use(s):
            t0 = time.perf_counter()
            predictor = self.registry.get(s.model_key)
            model_labels = predictor.labels_at(s.input_size, state=s.state)
            files = write_downloads(s, self.store.export_dir(s), model_labels)
            del model_labels
            release_free_memory()
            s.timings["export"] = time.perf_counter() - t0
            return list(files.values())

    # ----------------------------------------------------------------- light events
    def predict(self, s: Session) -> None:
        """Runs SAM's decoder on the session's prompts (cached embeddings only), masks at the
        working size."""
        if not s.has_prompts:
            s._drop_candidates()
            return
        predictor = self.registry.get(s.model_key)
        t0 = time.perf_counter()
        masks, scores, _ = predictor.predict(**s.prompt_kwargs(), multimask_output=True,
                                             output_size=s.shape, state=s.state)
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
        """A click on the ERP view at display (= working) pixels: a positive/negative point,
        or a box corner (kind "box"; the decoder runs once the second corner completes it)."""
        with self.store.use(s):
            h, w = s.input_size
            x = min(max((float(x_display) + 0.5) / s.scale, 0.0), w - 1.0)
            y = min(max((float(y_display) + 0.5) / s.scale, 0.0), h - 1.0)
            self._add_click(s, x, y, kind)

    def click_lonlat(self, s: Session, lon: Any, lat: Any, kind: str = "positive") -> None:
        """A click in the 360° viewer: the direction (lon, lat) in degrees, `panosamic.geometry`'s
        conventions, becomes the input pixel of that direction; then exactly as `click`
        (a box by two corners, the second left of the first wraps across the seam)."""
        with self.store.use(s):
            x, y = lonlat_to_pixels(_finite(lon, "longitude"), _finite(lat, "latitude"), s.input_size)
            self._add_click(s, x, y, kind)

    def _add_click(self, s: Session, x: float, y: float, kind: str) -> None:
        """What a click does in either view, (x, y) in input pixels (the session is in use)."""
        if kind == "box":
            if not s.add_box_corner(x, y):
                return
        elif kind in ("positive", "negative"):
            s.add_point(x, y, positive=(kind == "positive"))
        else:
            raise InputError(f"A click adds a positive point, a negative point or a box corner, not {kind!r}.")
        self._predict_or_undo(s)

    def prompt(self, s: Session, prompt_json: Any) -> None:
        """Prompts SAM's decoder with explicit coordinates: JSON text or a dict with points,
        labels, box and append (keep the current points and box); see `prompts.parse_prompt`."""
        with self.store.use(s):
            points, labels, box = parse_prompt(prompt_json, s)
            s.set_prompts(points, labels, box)
            self._predict_or_undo(s)

    def select(self, s: Session, index: Any) -> None:
        """Selects candidate mask 0, 1 or 2 of the last prompt."""
        with self.store.use(s):
            if index is not None and s.candidates is not None:
                s.select(_int_in_range(index, "candidate", 0, len(s.candidates) - 1))

    def assign(self, s: Session, class_name: Any, candidate: Any = None) -> int:
        """Writes a class (name or index; default: the majority under the mask) into the map
        under the selected candidate (or candidate 0-2); returns the changed pixel count."""
        with self.store.use(s):
            if s.candidates is None:
                raise InputError("Nothing to assign: click on the panorama (or send a prompt) to get a mask first.")
            if candidate is not None and candidate != "":
                s.select(_int_in_range(candidate, "candidate", 0, len(s.candidates) - 1))
            if class_name is None or class_name == "":
                mc = s.majority_class()
                if mc is None:
                    raise InputError("Choose a class to assign.")
                class_name = mc
            elif not isinstance(class_name, (str, int)) or isinstance(class_name, bool):
                raise InputError("The class must be a class name or index.")
            return s.assign(class_name)

    def undo(self, s: Session) -> Optional[str]:
        """Reverts the last prompt change or edit and re-runs the decoder on the prompts left;
        returns "prompts", "labels" or None (nothing to undo)."""
        with self.store.use(s):
            what = s.undo()
            if what is not None:
                self.predict(s)
            return what

    def clear(self, s: Session) -> bool:
        """Removes all prompts and candidate masks (undoable)."""
        with self.store.use(s):
            return s.clear_prompts()

    def touch(self, s: Optional[Session]) -> Session:
        """The session, alive (else SessionExpired / InputError with what to do)."""
        with self.store.use(s) as alive:
            return alive


def _missing(names: List[str]) -> InputError:
    return InputError(f"This checkpoint needs the {' and '.join(names)} map too: upload it, "
                        "or pick a checkpoint that uses only the RGB image.")


def _positive(value: Any, what: str, default: float, allow_zero: bool = False) -> float:
    """A finite number in (0, 1000] (or 0 with allow_zero, e.g. "auto"), else InputError."""
    if value is None or value == "":
        return default
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a number.") from None
    if not (np.isfinite(v) and (0 < v or allow_zero and v == 0) and v <= 1000):
        raise InputError(f"{what} must be a positive number up to 1000, got {str(value)[:20]}.")
    return v


def _finite(value: Any, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"The {what} must be a number (degrees).") from None
    if not np.isfinite(v):
        raise InputError(f"The {what} must be a finite number (degrees).")
    return v


def _int_in_range(value: Any, what: str, lo: int, hi: int, default: Optional[int] = None) -> int:
    if (value is None or value == "") and default is not None:
        return default
    if isinstance(value, bool):
        raise InputError(f"The {what} must be a whole number from {lo} to {hi}.")
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise InputError(f"The {what} must be a whole number from {lo} to {hi}.") from None
    if not (np.isfinite(f) and f == int(f) and lo <= f <= hi):
        raise InputError(f"The {what} must be a whole number from {lo} to {hi}, got {value!r}.")
    return int(f)


__all__ = ["StudioBackend", "load_predictor", "Progress"]
