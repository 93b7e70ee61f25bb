"""The work behind each event of PanoSAMic Studio, independent of any UI toolkit.

`StudioBackend` owns what all users share: the checkpoint choices, one `Predictor` per loaded
model (`ModelRegistry`), the embedding cache (`PanoramaState`s by content hash) and the
sessions' lifetime (`SessionStore`). Each event works on one user's `Session`:

* `segment` reads the inputs, encodes them once (or finds the embeddings in the cache: in
  memory, else on disk), and makes a session at the working size; the heavy work happens here only;
* `click`, `prompt`, `select`, `assign`, `undo`, `clear` are light: SAM's prompt decoder on
  the cached embeddings (on the CPU between events), masks at the working size;
* `refine_instances` runs SAM's automatic grid on the cached embeddings;
* `export` writes the downloads at the input size, when asked;
* `preencode_examples` (a background thread at start-up) fills the caches with the examples'
  embeddings while no user's heavy job runs or waits.

A GPU lent per call (a Hugging Face ZeroGPU Space, `lend_gpu=spaces.GPU`): models are loaded
on the CPU outside any GPU call, only the encoder and SAM's instance grid run inside lent calls
(`_encode_job`, `_instances_job`: their arguments and results cross a process boundary, so they
take and give arrays and CPU tensors and change nothing else), and clicks decode on the CPU,
where SAM's small prompt decoder takes tens of milliseconds and no user waits for a GPU.

Importing this module does not import torch (the page opens before any model code loads).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from .. import __version__
from ..errors import InputError
from .cache import EmbeddingCache, content_key
from .checkpoints import HUB_REPO, MODALITY_NAMES, Checkpoints, ModelKey, ModelRegistry, weights_fingerprint
from .disk_cache import DiskEmbeddingCache
from .messages import about_duration, given_maps
from .prompts import lonlat_to_pixels, parse_prompt
from ..metrics import majority_class
from ..sam_weights import remove_stale_partials
from .session import Session, working_size
from .store import SessionStore, clean_stale_folders, release_free_memory, temp_parent
from .uploads import find_examples, input_path, load_inputs

log = logging.getLogger(__name__)

#: progress(fraction in [0, 1], desc=text): a UI's progress bar; the default does nothing.
Progress = Callable[..., Any]


def _no_progress(fraction: float, desc: Optional[str] = None) -> None:
    pass


#: `spaces.GPU`'s shape: lend_gpu(fn, duration=seconds or callable(*args)) -> fn run with a GPU.
GpuLender = Callable[..., Callable]

#: Seconds asked of a lent GPU beyond the encoder's work (start-up, moving the weights there),
#: and seconds per TFLOP of encoder work: a conservative 1 TFLOP/s (an H200 slice does far more
#: in float32), so that a call is never cut short while short models still ask for little.
LENT_GPU_BASE_S = 20.0
LENT_GPU_S_PER_TFLOP = 1.0
LENT_GPU_INSTANCES_S = 60
#: Seconds asked of a lent GPU to estimate depth: 14 views of Depth Anything V2 Small (~25 M
#: parameters, 518 px) take well under a second on a GPU; loading it there takes the rest.
LENT_GPU_ESTIMATE_S = 30

#: Runs expected to take longer than this (seconds) on this device are announced before Run.
LONG_RUN_S = 60.0

#: The settings an example is pre-encoded with: the page's defaults (Max depth T 10 m, depth
#: scale 0 = auto), so that clicking an example and pressing Run finds the same cache key.
DEFAULT_MAX_DEPTH = 10.0
#: Seconds the pre-encoder waits before it looks again while a user's heavy job runs or waits.
PREENCODE_IDLE_S = 1.0


class _Yield(Exception):
    """The pre-encoder gives way: a user's heavy job is waiting, or the app stops. Raised
    from its progress callback, which the encoder calls between ViT blocks (a ViT-H block is
    about a second on a CPU), so a user waits that long at most, not a whole panorama."""


def load_predictor(key: ModelKey):
    """The Predictor for a checkpoint: the network loaded once, on the device of `key`."""
    from ..predictor import Predictor
    from ..weights import load_model

    log.info("loading checkpoint %s (subfolder %s)", key.checkpoint, key.subfolder or "-")
    return Predictor(load_model(key.checkpoint, subfolder=key.subfolder, sam=key.sam),
                     device=key.device, dtype=key.dtype)


def _file_bytes(upload: Any) -> Optional[np.ndarray]:
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
        checkpoint, subfolder, sam: the default checkpoint (Hub id or local folder); subfolder
            None with a Hub id starts on "auto" (the checkpoint for the maps given).
        device, dtype: where models run and their encoder's precision (`panosamic.precision`;
            None: "auto", with a lent GPU float32).
        max_models: checkpoints kept loaded at once.
        cache_mb: memory for cached embeddings shared by all users.
        embedding_cache_dir, embedding_cache_mb: a folder that keeps encoded panoramas across
            restarts (`DiskEmbeddingCache`), bounded to that many megabytes; None or 0: none.
        session_mb: memory for all sessions together; least recently used idle ones go first.
        session_idle_s: a session unused this long is released (its user presses Run again).
        disk_mb: disk for the app's temporary files (uploads, views, exports, Gradio's cache when
            the app points it there); least recently used idle sessions go first; 0 = no budget.
        work_width: the working width of sessions (interaction never runs wider).
        loader: ModelKey -> Predictor (tests pass their own).
        lend_gpu: `spaces.GPU` on a ZeroGPU Space (see the module docstring); None runs
            everything in this process on `device`.
        gpu_device: the device inside lent calls.
        depth_estimator: what estimates depth (and so normals) from a photo that comes without:
            "auto" (the real monocular model when it can be had, else the offline demo), "demo",
            a Hub id or folder (`panosamic.estimation.load_estimator`), or "none" (refuse instead).
    """

    def __init__(self, checkpoint: str = HUB_REPO, subfolder: Optional[str] = None,
                 sam: Optional[str] = None, device: Optional[str] = None, dtype: Optional[str] = None,
                 max_models: int = 1, cache_mb: float = 2048, examples: Optional[str] = None,
                 session_mb: float = 4096, session_idle_s: float = 3600, work_width: int = 2048,
                 loader: Optional[Callable[[ModelKey], Any]] = None, lend_gpu: Optional[GpuLender] = None,
                 gpu_device: str = "cuda", embedding_cache_dir: Optional[str] = None,
                 embedding_cache_mb: float = 4096, depth_estimator: str = "auto", disk_mb: float = 0):
        # with a lent GPU, models live on the CPU in this process (loaded outside GPU calls)
        self.device = "cpu" if lend_gpu is not None else device
        self.gpu_device = gpu_device if lend_gpu is not None else None
        # with a lent GPU the Predictor is made on the CPU and moved: "auto" would quantise it there
        self.dtype = dtype or ("float32" if lend_gpu is not None else None)
        if lend_gpu is not None:
            self._encode = lend_gpu(self._encode_job, duration=self._encode_seconds)
            self._instances = lend_gpu(self._instances_job, duration=LENT_GPU_INSTANCES_S)
            self._estimate = lend_gpu(self._estimate_job, duration=LENT_GPU_ESTIMATE_S)
        else:
            self._encode, self._instances = self._encode_job, self._instances_job
            self._estimate = self._estimate_job
        self.depth_estimator = str(depth_estimator or "none")
        self._estimator: Any = None  # loaded on first need (`estimator`)
        self._last_estimate_s: Optional[float] = None  # the last estimate's seconds (`estimate_seconds`)
        self.work_width = int(work_width)
        self.checkpoints = Checkpoints(checkpoint, subfolder, sam)
        self._loader = loader or load_predictor
        self._weights: Dict[ModelKey, str] = {}  # ModelKey -> weights_fingerprint when it loaded
        self.registry = ModelRegistry(max_models, loader=self._load_model)
        self.cache = EmbeddingCache.from_megabytes(cache_mb)
        self.disk = DiskEmbeddingCache.from_megabytes(embedding_cache_dir, embedding_cache_mb)
        parent = temp_parent()
        clean_stale_folders(parent)  # the temporary roots (Gradio's cache in them) of killed servers
        remove_stale_partials()  # SAM downloads a killed process left (up to 2.4 GB each)
        self.store = SessionStore(int(session_mb * 2**20), session_idle_s, disk_bytes=int(disk_mb * 2**20),
                                  parent=parent)
        self.examples = find_examples(examples) if examples else []
        self._warm = threading.Event()  # set by warm_up
        # A UI may let several heavy events in at once so that a bad upload is refused while
        # another Run works (app.py's HEAVY_CONCURRENCY); the memory-hungry steps still go one
        # at a time: decoding full-size uploads (two 8K decodes at once would double that peak),
        # and loading a checkpoint, the encoder and SAM's instance grid.
        self._decoding = threading.Lock()
        self._computing = threading.Lock()
        # users' heavy events in progress (reading, waiting or computing): the pre-encoder
        # works only while this is 0 and gives way as soon as it is not
        self._users = 0
        self._users_lock = threading.Lock()

    def _load_model(self, key: ModelKey) -> Any:
        """The registry's loader: the Predictor, and the fingerprint of the files it was read
        from (after loading: a Hub checkpoint is only on disk then), part of the cache keys."""
        predictor = self._loader(key)
        self._weights[key] = weights_fingerprint(key)
        return predictor

    @contextlib.contextmanager
    def _user_job(self) -> Iterator[None]:
        """Marks a user's heavy event for its whole length (see `preencode_examples`)."""
        with self._users_lock:
            self._users += 1
        try:
            yield
        finally:
            with self._users_lock:
                self._users -= 1

    def _concrete(self, choice: Optional[str], maps: Tuple[str, ...]) -> str:
        """The picker value a Run uses: the default for an empty one, and for "auto" the
        checkpoint for `maps` (the Hub answers within ~2 s, or HF_HUB_OFFLINE at once;
        offline, a demo takes over)."""
        choice = (str(choice).strip() if choice is not None else "") or self.checkpoints.default
        if choice == Checkpoints.AUTO:
            online = self.checkpoints.hub.reachable() if maps else False
            choice = self.checkpoints.concrete(choice, maps, online=online)
        return choice

    def _cache_key(self, key: ModelKey, files: Dict[str, Any], max_depth: float,
                   depth_scale: Optional[float], estimated: Optional[str] = None, precision: str = "") -> str:
        """The content key of a panorama's embeddings: the bytes of the files the checkpoint
        reads (a few MB, not the decoded arrays: up to 330 MB at 8K), the settings, the
        checkpoint, the weights it was read from, the encoder's precision as resolved (the disk
        cache may outlive a move to a CPU where "auto" means another) and this package's
        version (the disk cache outlives a code change)."""
        return content_key(*(_file_bytes(files[m]) for m in ("image", "depth", "normals")),
                           max_depth=max_depth, depth_scale=depth_scale, checkpoint=repr(key),
                           weights=self._weights.get(key, ""), version=__version__, estimated=estimated,
                           precision=precision)

    def _precision(self, config: Dict[str, Any]) -> str:
        """The precision a model of `config` runs in here ("auto" resolved), for the ETA."""
        from ..device import resolve_device
        from ..precision import resolve_precision

        return resolve_precision(self.dtype, resolve_device(self.device), config)

    def _cached_state(self, ckey: str) -> Any:
        """The cached `PanoramaState` for `ckey`: from memory, else from disk (then kept in
        memory too), else None."""
        state = self.cache.get(ckey)
        if state is None and self.disk.enabled:
            state = self.disk.get(ckey)
            if state is not None:
                self.cache.put(ckey, state)
        return state

    def close(self) -> None:
        """Shutdown: sessions and their files go."""
        self.store.close_all()

    def warm_up(self, probe: bool = True) -> None:
        """Imports the model code and, with `probe`, measures this device's speed
        (`panosamic.eta`: real-size blocks of each offered checkpoint's encoder shape, the
        default's first; vit_h 5.8 s in bfloat16 on a 2-core CPU), so that the first Run starts sooner and
        `run_time_note` never makes an event wait (it says nothing for a shape not measured).
        For a background thread at start-up; with a lent GPU only the imports."""
        from .. import predictor, weights  # noqa: F401
        from ..device import resolve_device
        from ..eta import calibrate, calibrate_tail, encoder_shape, known, tail_seconds, tail_shape

        self._warm.set()  # from now on run_time_note answers for every shape measured so far
        if self.gpu_device is not None or not probe:
            return
        device = resolve_device(self.device)
        seen = set()
        for value in [self.checkpoints.default] + self.checkpoints.listed():
            try:
                config = self.checkpoints.architecture(value)
            except InputError:
                continue
            if config is None or (encoder_shape(config), tail_shape(config)) in seen:
                continue
            seen.add((encoder_shape(config), tail_shape(config)))
            dtype = self._precision(config)
            if not known(config, device, dtype):
                calibrate(device, dtype, config=config)  # the ViT blocks and this model's fusion + decoding
            elif tail_seconds(config, device, dtype) is None:
                calibrate_tail(device, dtype, config=config)  # same ViT, other maps: fusion + decoding only

    def estimate_seconds(self) -> float:
        """Seconds expected to estimate depth from a photo here: the last estimate's time once
        one ran, else a prior (the real model took ~62 s per panorama on this project's 2-core
        CPU with 14 views at 518 px, seconds on a GPU; the demo estimator about a second)."""
        if self._last_estimate_s is not None:
            return self._last_estimate_s
        demo = self.depth_estimator == "demo" or (self.depth_estimator == "auto"
                                                  and self.checkpoints.hub.known_unreachable())
        from ..device import resolve_device

        return 1.0 if demo else (62.0 if resolve_device(self.device).type == "cpu" else 3.0)

    def run_time_note(self, choice: Optional[str], estimates_depth: bool = False) -> str:
        """Markdown for before Run when the selected checkpoint will take long on this device
        (`panosamic.eta`: its ViT passes at this device's measured rate, plus `estimate_seconds`
        when the photo's depth is to be estimated): the expected time and the lighter choices;
        "" when it will be quick or cannot be known before loading."""
        if self.gpu_device is not None or not self._warm.is_set():
            return ""  # a lent GPU encodes in seconds; before warm_up the device's speed is unknown
        try:
            config = self.checkpoints.architecture(choice)
        except InputError:
            return ""
        if config is None:
            return ""
        from ..device import resolve_device
        from ..eta import estimate_seconds, known

        device = resolve_device(self.device)
        dtype = self._precision(config)
        if not known(config, device, dtype):
            return ""  # warm_up has not probed this encoder yet: never make an event wait for a probe
        full = estimate_seconds(config, device, dtype)
        extra = self.estimate_seconds() if estimates_depth and self.depth_estimator != "none" else 0.0
        if full.seconds + extra < LONG_RUN_S:
            return ""
        lighter = []
        if len(config["modalities"]) > 1:
            rgb = estimate_seconds(config, device, dtype, modalities=("image",))
            lighter.append(f"an RGB checkpoint needs {rgb.passes} ViT passes instead of {full.passes} "
                           f"(about {about_duration(rgb.seconds)})")
        demo_value = self.checkpoints.demo_for(config["modalities"])
        demo = self.checkpoints.architecture(demo_value) if demo_value else None
        if demo is not None and known(demo, device, self._precision(demo)):
            demo_s = estimate_seconds(demo, device, self._precision(demo)).seconds
            lighter.append(f"**Demo** runs in about {about_duration(demo_s)} "
                           "(rendered rooms only)")
        where = "this CPU" if device.type == "cpu" else f"this {device.type.upper()} device"
        depth = f", about {about_duration(extra)} of it to estimate the depth" if extra >= 1.5 else ""
        text = (f"Expect about **{about_duration(full.seconds + extra)}** per panorama on {where} "
                f"({full.passes} ViT passes, {full.tflop:.0f} TFLOP{depth}); a GPU takes seconds.")
        return text + (f" Lighter: {'; '.join(lighter)}." if lighter else "")

    # ----------------------------------------------------------------- heavy events
    def segment(self, pano: Any, depth_file: Any, normals_file: Any, choice: Optional[str],
                depth_scale: Optional[float], max_depth: Optional[float],
                progress: Progress = _no_progress, previous: Optional[Session] = None,
                client: Optional[str] = None, estimate_3d: bool = True) -> Tuple[Session, bool]:
        """Reads the inputs, loads the checkpoint on first use, reuses cached embeddings;
        returns (new session, whether the embeddings came from the cache). The user's
        `previous` session is released; `client` identifies the browser tab (see SessionStore).
        Maps the checkpoint reads but the user did not give are estimated from the photo
        (`depth_estimator`); with `estimate_3d` the depth is estimated for the 3D view too when
        the checkpoint reads RGB only."""
        with self._user_job():
            return self._segment(pano, depth_file, normals_file, choice, depth_scale, max_depth, progress,
                                 previous, client, estimate_3d)

    def _segment(self, pano: Any, depth_file: Any, normals_file: Any, choice: Optional[str],
                 depth_scale: Optional[float], max_depth: Optional[float], progress: Progress,
                 previous: Optional[Session], client: Optional[str], estimate_3d: bool = True) -> Tuple[Session, bool]:
        progress(0.0, desc="Checking the inputs")
        max_depth = _positive(max_depth, "Max depth T", default=DEFAULT_MAX_DEPTH)
        depth_scale = _positive(depth_scale, "Depth scale", default=0.0, allow_zero=True) or None
        choice = self._concrete(choice, given_maps(input_path(pano), input_path(depth_file), input_path(normals_file)))
        key = self.checkpoints.key(choice, self.device, self.dtype)  # refuses what is not allowed first
        notes: List[str] = []
        t0 = time.perf_counter()
        image, depth, normals, name = load_inputs(pano, depth_file, normals_file, depth_scale, notes=notes,
                                                  decoding=self._decoding,
                                                  progress=lambda f, desc: progress(0.03 * f, desc=desc))
        timings: Dict[str, float] = {"read": time.perf_counter() - t0}
        can_estimate = self.depth_estimator != "none"
        _check_maps(self.checkpoints.modalities(choice), depth is not None or can_estimate, normals is not None)

        def estimate() -> Tuple[np.ndarray, str]:
            return self._estimated_depth(pano, image, progress, timings)

        with self._compute(progress):
            predictor, required, ckey, state, depth, cached = self._embeddings(
                choice, key, (pano, depth_file, normals_file), (image, depth, normals), max_depth, depth_scale,
                progress, timings, notes, estimate=estimate if can_estimate else None, for_3d=estimate_3d)
        estimated = () if depth is None or depth_file is not None else (
            ("depth", "normals") if "normals" in required and normals is None else ("depth",))
        t0 = time.perf_counter()
        size = working_size(*image.shape[:2], self.work_width)
        s = Session(_resize_area(image, size), predictor.labels_at(size, state=state),
                    predictor.dataset.classes, predictor.dataset.palette, input_size=image.shape[:2],
                    depth=None if depth is None else _resize_depth(depth, size),
                    has_normals="normals" in required, key=ckey, checkpoint=choice,
                    checkpoint_label=self.checkpoints.label(choice), estimated=estimated,
                    toy=choice in self.checkpoints.demos,
                    state=state, model_key=key, max_depth=max_depth, name=name, timings=timings, notes=notes)
        s.timings["working_maps"] = time.perf_counter() - t0
        del image, depth, normals  # the input-size arrays go now
        self.store.add(s, replaces=previous, client=client)
        release_free_memory()  # the input-size arrays are gone: hand their pages back (8K: ~1 GB)
        return s, cached

    def _embeddings(self, choice: str, key: ModelKey, files: Tuple[Any, Any, Any],
                    arrays: Tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]], max_depth: float,
                    depth_scale: Optional[float], progress: Progress, timings: Dict[str, float],
                    notes: List[str], estimate: Optional[Callable[[], Tuple[np.ndarray, str]]] = None,
                    for_3d: bool = False) -> Tuple[Any, Tuple[str, ...], str, Any, Optional[np.ndarray], bool]:
        """The heavy part of Run, under the compute lock: loads the checkpoint on first use and
        finds the panorama's `PanoramaState` in the caches (memory, then disk) or encodes it
        (then stores it in both). Without a depth map, `estimate()` -> (depth in metres, the
        estimator's name) supplies one when the checkpoint reads depth (or, with `for_3d`,
        for the 3D view). Returns (predictor, its modalities, cache key, state, the depth used,
        whether the state was cached); adds "load" and the encoder's stages to `timings` (none
        of them on a cache hit). Also what `preencode_examples` runs."""
        if not self.registry.loaded(key):
            # not downloaded and no Hub: say so within ~2 s (huggingface_hub would retry for long)
            self.checkpoints.check_available(choice)
            progress(0.05, desc="Downloading / loading the checkpoint (first use)")
        t0 = time.perf_counter()
        predictor = self.registry.get(key)
        timings["load"] = time.perf_counter() - t0
        required = tuple(predictor.required_modalities)
        self.checkpoints.learn(choice, required)
        image, depth, normals = arrays
        _check_maps(required, depth is not None or estimate is not None, normals is not None)
        estimated = None
        if depth is None and estimate is not None and ("depth" in required or for_3d):
            depth, estimated = estimate()
        # maps the checkpoint does not use are left out of the cache key too
        use = {"image": True, "depth": depth is not None and "depth" in required,
               "normals": normals is not None and "normals" in required}
        if estimated is not None:
            maps = "depth and normals" if "normals" in required and normals is None else "depth"
            notes.append(f"No depth map was given: the {maps} {'were' if ' and ' in maps else 'was'} estimated "
                         f"from the photo by {estimated}.")
        elif "normals" in required and normals is None:  # the Predictor derives them from the depth
            notes.append("No normal map was given: the normals were derived from the depth map.")
        ckey = self._cache_key(key, {m: f if use[m] else None for m, f in zip(("image", "depth", "normals"), files)},
                               max_depth, depth_scale, estimated=estimated if use["depth"] else None,
                               precision=predictor.precision)
        state = self._cached_state(ckey)
        cached = state is not None
        if cached:  # for the log only: a user must not learn that someone else ran these files
            log.info("embeddings %s reused from the cache", ckey[:12])
        else:
            state = self._encode(key, image, depth if use["depth"] else None, normals if use["normals"] else None,
                                 max_depth, progress)
            timings.update(state.timings)
            self.cache.put(ckey, state)
            self.disk.put(ckey, state)  # 25 MB for ViT-H RGB-D-N: ~0.1 s here (2 busy cores); off: nothing
        return predictor, required, ckey, state, depth, cached

    def estimator(self) -> Any:
        """The depth estimator, loaded on first need and kept (`panosamic.estimation`): with
        "auto" and a Hub known to be unreachable only the Hugging Face cache is tried, so the
        demo takes over at once instead of after a connection time-out."""
        if self._estimator is None:
            from ..estimation import load_estimator

            local_only = self.depth_estimator == "auto" and self.checkpoints.hub.known_unreachable()
            self._estimator = load_estimator(self.depth_estimator, device=self.device, local_files_only=local_only)
        return self._estimator

    def _estimate_job(self, image: np.ndarray) -> np.ndarray:
        """Depth (H, W) float32 metres of an (H, W, 3) photo at its own size, on the lent GPU
        when there is one (the estimator is loaded in that call's process)."""
        from ..estimation import estimate_depth

        return estimate_depth(image, self.estimator(), size=image.shape[:2])

    def _estimated_depth(self, pano: Any, image: np.ndarray, progress: Progress,
                         timings: Dict[str, float]) -> Tuple[np.ndarray, str]:
        """(depth of the photo in metres at its size, how the status names the estimator); kept
        in the memory cache under the photo's bytes and the estimator, so a second Run of the
        same photo (another checkpoint, a restart of the session) does not estimate again."""
        progress(0.04, desc="Estimating depth from the photo")
        t0 = time.perf_counter()
        est = self.estimator()
        name = getattr(est, "name", "the depth estimator")
        key = content_key(_file_bytes(pano), estimator=name, purpose="depth")
        depth = self.cache.get(key)
        if depth is None:
            depth = self._estimate(image)
            self.cache.put(key, depth)
            self._last_estimate_s = time.perf_counter() - t0
        timings["estimate"] = time.perf_counter() - t0
        if getattr(est, "fallback", False):
            name = f"{name} (a toy for rendered rooms: the real model could not be fetched)"
        elif getattr(est, "toy", False):  # the estimator says so, whatever its name
            name = f"{name} (a toy for rendered rooms)"
        return depth, name

    def preencode_examples(self, stop: Optional[threading.Event] = None,
                           idle_s: float = PREENCODE_IDLE_S) -> int:
        """Encodes the examples into the caches (memory and disk) for the checkpoint the picker
        starts with, "auto" resolved per example as a Run would, with the page's default
        settings: once done, clicking an example and pressing Run skips the encoder. For a
        background thread at start-up at the lowest CPU priority (app.py). Returns how many
        examples it encoded (those already on disk are only brought into memory).

        A user's Run always goes first: an example starts only while no user's heavy event
        (Run, SAM instances) is reading, waiting or computing, and an encoding in progress gives
        way between two ViT blocks as soon as one arrives (then starts again later); it never
        evicts a loaded model that an open session decodes with. `stop` (set at shutdown) ends
        it the same way. Skipped: examples whose checkpoint is not on disk yet (this never
        downloads), examples it cannot read (maps missing), and everything with a lent GPU (a
        ZeroGPU call outside a user's request would spend a quota nobody asked to spend).
        """
        stop = stop if stop is not None else threading.Event()
        if self.gpu_device is not None or not self.examples:
            return 0
        initial = self.checkpoints.initial()
        jobs = []
        for row in self.examples:
            try:
                choice = self._concrete(initial, given_maps(*row))
                if self.checkpoints.needs_download(choice):
                    log.info("pre-encoding: skipping %s (%s is not downloaded yet)", Path(row[0]).name, choice)
                    continue
                _check_maps(self.checkpoints.modalities(choice), row[1] is not None, row[2] is not None)
                jobs.append((choice, row))
            except InputError:
                continue
        # one checkpoint after the other (each loads once); the first example's last, so that
        # the model the gallery's first example needs stays loaded (with --max-models 1)
        first = jobs[0][0] if jobs else None
        jobs.sort(key=lambda job: job[0] == first)
        done = 0
        t0 = time.perf_counter()
        for choice, row in jobs:
            while not stop.is_set():
                try:
                    outcome = self._preencode_one(choice, row, stop)
                except Exception:  # noqa: BLE001  (a broken example: a user's Run reports it properly)
                    log.exception("pre-encoding %s failed", Path(row[0]).name)
                    outcome = False
                if outcome is not None:
                    done += int(outcome)
                    break
                stop.wait(idle_s)
        if jobs and not stop.is_set():
            log.info("pre-encoding: %d of %d example(s) encoded, the rest were cached (%.1f s)",
                     done, len(jobs), time.perf_counter() - t0)
        return done

    def _preencode_one(self, choice: str, row: List[Optional[str]], stop: threading.Event) -> Optional[bool]:
        """One example into the caches: True when encoded, False when it was cached already,
        None when it gave way (a user's heavy event, `stop`, or a model swap that would evict
        an open session's model): try again later."""
        def give_way(*_args: Any, **_kwargs: Any) -> None:  # the progress callback: between ViT blocks
            if self._users or stop.is_set():
                raise _Yield()

        if self._users or stop.is_set():
            return None
        key = self.checkpoints.key(choice, self.device, self.dtype)
        if (not self.registry.loaded(key) and len(self.registry) >= self.registry.max_models
                and self.store.model_keys()):
            return None  # loading this one would evict the model an open session clicks with
        notes: List[str] = []
        with self._decoding:  # small files, read while no user waits (checked just above)
            image, depth, normals, _name = load_inputs(*row, None, notes=notes)
        if not self._computing.acquire(blocking=False):
            return None
        try:
            give_way()
            timings: Dict[str, float] = {}
            *_, cached = self._embeddings(choice, key, tuple(row), (image, depth, normals), DEFAULT_MAX_DEPTH,
                                          None, give_way, timings, notes)
        except _Yield:
            return None
        finally:
            self._computing.release()
        if not cached:
            log.info("pre-encoded %s with %s (%.1f s)", Path(row[0]).name, choice, timings.get("encode", 0.0))
        return not cached

    @contextlib.contextmanager
    def _compute(self, progress: Progress) -> Iterator[None]:
        """Holds the heavy-computation lock (a checkpoint's load, the encoder, SAM's instance
        grid); the progress bar says so while another user's job has it."""
        if not self._computing.acquire(blocking=False):
            progress(0.02, desc="Waiting for another user's job to finish")
            self._computing.acquire()
        try:
            yield
        finally:
            self._computing.release()

    def _encode_job(self, key: ModelKey, image: np.ndarray, depth: Optional[np.ndarray],
                    normals: Optional[np.ndarray], max_depth: float, progress: Progress) -> Any:
        """The heavy part of Run: encodes the inputs with the model of `key` (already loaded),
        on the lent GPU when there is one; returns the `PanoramaState` on the CPU (between
        events the embeddings live there: a click moves one 4 MB embedding, not 25 MB)."""
        predictor = self.registry.get(key)
        if self.gpu_device is not None:
            predictor.to(self.gpu_device)  # in the lent call's process: this process keeps its CPU copy
        # per ViT block, with the time left (panosamic.eta): 0.1..0.9 of the bar
        state = predictor.encode(image, depth, normals, max_depth=max_depth,
                                 on_progress=lambda e: progress(0.1 + 0.8 * e.fraction, desc=str(e).capitalize()))
        return state.to("cpu")

    def _encode_seconds(self, key: ModelKey, *_args: Any) -> int:
        """The duration asked of a lent GPU for `_encode_job`: grows with the encoder's work."""
        from ..eta import encoder_flops, encoder_passes

        config = self.registry.get(key).model.config
        tflop = encoder_passes(config) * encoder_flops(config)["total"] / 1e12
        return int(LENT_GPU_BASE_S + LENT_GPU_S_PER_TFLOP * tflop)

    def _instances_job(self, key: ModelKey, state: Any, points_per_side: int,
                       output_size: Tuple[int, int]) -> List[Dict[str, Any]]:
        """SAM's automatic grid on `state` (the heavy part of `refine_instances`), on the lent
        GPU when there is one. With a lent GPU the masks come back bit-packed (np.packbits:
        an eighth of the bytes to send between the processes)."""
        predictor = self.registry.get(key)
        if self.gpu_device is None:
            return predictor.generate_instances(points_per_side=points_per_side, state=state, output_size=output_size)
        predictor.to(self.gpu_device)
        instances = predictor.generate_instances(points_per_side=points_per_side, state=state.to(self.gpu_device),
                                                 output_size=output_size)
        return _pack_masks(instances)

    def refine_instances(self, s: Session, points_per_side: Any = 16,
                         progress: Progress = _no_progress) -> Tuple[int, int]:
        """SAM's automatic instances on the cached embeddings; each takes its majority class
        (undoable). Returns (instances, pixels that changed class); s.timings["instances"]
        is the time in seconds."""
        pps = _int_in_range(points_per_side, "points per side", 2, 64, default=16)
        with self._user_job(), self.store.use(s):
            progress(0.1, desc="SAM instances on the cached embeddings")
            t0 = time.perf_counter()
            with self._compute(progress):
                predictor = self.registry.get(s.model_key)
                instances = self._instances(s.model_key, s.state, pps, s.shape)
            if self.gpu_device is not None:  # the lent call packed them
                instances = _unpack_masks(instances, s.shape)
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

    def export(self, s: Session, progress: Progress = _no_progress) -> List[str]:
        """Writes the downloads at the input size into a new folder of the session; returns
        the paths in `downloads.KINDS` order. `progress` hears each step (8K: ~5 s in all)."""
        from .downloads import write_downloads

        with self.store.use(s):
            t0 = time.perf_counter()
            H, W = s.input_size
            progress(0.0, desc=f"Export: the model's labels at {W}×{H}")
            predictor = self.registry.get(s.model_key)
            model_labels = predictor.labels_at(s.input_size, state=s.state)
            # room for about what an export takes (two 8-bit PNGs, the RLE JSON, the point cloud)
            with self.store.export_dir(s, nbytes=H * W + (8 << 20)) as folder:
                files = write_downloads(s, folder, model_labels, progress=progress)
            del model_labels
            release_free_memory()
            s.timings["export"] = time.perf_counter() - t0
            return [str(s.export_dir / Path(f).name) for f in files.values()]

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

    def click(self, s: Session, x_display: float, y_display: float, kind: str = "positive",
              add: bool = False) -> None:
        """A click on the ERP view at display (= working) pixels: a positive point, a negative
        point or a box corner (kind "box"; the decoder runs once the second corner completes
        it). As in SAM's demo, a positive point or a box starts a new selection, and with `add`
        (Shift held) joins the current one; a negative point takes a part away from the
        current selection (see `_add_click`)."""
        with self.store.use(s):
            h, w = s.input_size
            x = min(max((float(x_display) + 0.5) / s.scale, 0.0), w - 1.0)
            y = min(max((float(y_display) + 0.5) / s.scale, 0.0), h - 1.0)
            self._add_click(s, x, y, kind, add)

    def click_lonlat(self, s: Session, lon: Any, lat: Any, kind: str = "positive", add: bool = False) -> None:
        """A click in the 360° viewer: the direction (lon, lat) in degrees, `panosamic.geometry`'s
        conventions, becomes the input pixel of that direction; then exactly as `click`
        (a box by two corners, the second left of the first wraps across the seam)."""
        with self.store.use(s):
            x, y = lonlat_to_pixels(_finite(lon, "longitude"), _finite(lat, "latitude"), s.input_size)
            self._add_click(s, x, y, kind, add)

    def _add_click(self, s: Session, x: float, y: float, kind: str, add: bool = False) -> None:
        """What a click does in either view, (x, y) in input pixels (the session is in use).
        Positive: a new selection of this point, or with `add` one more point of the current
        one. Negative: one more point of the current selection, to take a part away (alone it
        would select the rest of the panorama, so without a selection it is refused). Box: the
        first corner starts a new selection (with `add` the points stay), the second completes
        the box. Each click is one undo step."""
        if kind == "box":
            if not s.add_box_corner(x, y, new=not add):
                return
        elif kind == "positive":
            s.add_point(x, y, positive=True, new=not add)
        elif kind == "negative":
            if not s.has_prompts:
                raise InputError("A negative point takes a part away from a selection: first click on what you "
                                 "want (Positive point or Box), then add negative points where the mask spills over.")
            s.add_point(x, y, positive=False)
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


def _pack_masks(instances: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The instances' boolean masks bit-packed (np.packbits), to cross between processes."""
    for inst in instances:
        inst["segmentation"] = np.packbits(inst["segmentation"], axis=None)
    return instances


def _unpack_masks(instances: List[Dict[str, Any]], shape: Tuple[int, int]) -> List[Dict[str, Any]]:
    """`_pack_masks` undone: (h, w) boolean masks again."""
    for inst in instances:
        inst["segmentation"] = np.unpackbits(inst["segmentation"], count=shape[0] * shape[1]).astype(bool).reshape(shape)
    return instances


def _check_maps(modalities: Optional[Tuple[str, ...]], has_depth: bool, has_normals: bool) -> None:
    """InputError when the checkpoint reads a map that was not given (normals follow from depth)."""
    if modalities is None:
        return
    missing = [MODALITY_NAMES[m] for m in modalities
               if m == "depth" and not has_depth or m == "normals" and not (has_normals or has_depth)]
    if missing:
        raise InputError(f"This checkpoint needs the {' and '.join(missing)} map too: upload it, "
                         "or pick Automatic, which takes the checkpoint for the maps you have.")


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


__all__ = ["StudioBackend", "load_predictor", "Progress", "GpuLender"]
