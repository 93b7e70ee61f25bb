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
from .checkpoints import HUB_REPO, Checkpoints, ModelKey, ModelRegistry, weights_fingerprint
from .disk_cache import DiskEmbeddingCache
from .editing import EditEvents
from .preencode import DEFAULT_MAX_DEPTH, ExamplePreencoding
from .messages import about_duration, given_maps
from ..metrics import majority_class
from ..sam_weights import remove_stale_partials
from .session import Session, working_size
from .store import SessionStore, clean_stale_folders, release_free_memory, temp_parent
from .uploads import find_examples, input_path, load_inputs
from .validation import check_maps, positive_number, whole_number

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


class StudioBackend(ExamplePreencoding, EditEvents):
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
        # another Run works (page.py's HEAVY_CONCURRENCY); the memory-hungry steps still go one
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
        max_depth = positive_number(max_depth, "Max depth T", default=DEFAULT_MAX_DEPTH)
        depth_scale = positive_number(depth_scale, "Depth scale", default=0.0, allow_zero=True) or None
        choice = self._concrete(choice, given_maps(input_path(pano), input_path(depth_file), input_path(normals_file)))
        key = self.checkpoints.key(choice, self.device, self.dtype)  # refuses what is not allowed first
        notes: List[str] = []
        t0 = time.perf_counter()
        image, depth, normals, name = load_inputs(pano, depth_file, normals_file, depth_scale, notes=notes,
                                                  decoding=self._decoding,
                                                  progress=lambda f, desc: progress(0.03 * f, desc=desc))
        timings: Dict[str, float] = {"read": time.perf_counter() - t0}
        can_estimate = self.depth_estimator != "none"
        check_maps(self.checkpoints.modalities(choice), depth is not None or can_estimate, normals is not None)

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
        s.record_time("working_maps", time.perf_counter() - t0)
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
        check_maps(required, depth is not None or estimate is not None, normals is not None)
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
        pps = whole_number(points_per_side, "points per side", 2, 64, default=16)
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
            s.record_time("instances", time.perf_counter() - t0)
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
            s.record_time("export", time.perf_counter() - t0)
            return [str(s.export_dir / Path(f).name) for f in files.values()]


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


__all__ = ["StudioBackend", "load_predictor", "Progress", "GpuLender"]
