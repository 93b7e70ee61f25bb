"""The checkpoint picker's choices and the models loaded for them.

* `Checkpoints`: "auto" (the checkpoint for the maps a user gives: `for_maps`), released Hub
  subfolders, the local checkpoint (when the app was started with `--checkpoint <folder>`:
  "local" and "local/<subfolder>"), the bundled demo models ("demo-rgb", "demo-rgbd", "demo")
  and subfolder names typed in. What a client sends is checked here, without touching the
  file system first: a listed choice, a Hub subfolder name of the configured repo, or a
  folder inside the local checkpoint. Anything else (absolute paths, "..") is refused.
* `ModelRegistry`: one `Predictor` per loaded checkpoint, loaded lazily on first use and
  shared by all users (LRU-bounded); clicks never build another.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..config import RELEASED_SUBFOLDERS, modalities_from_subfolder
from ..errors import InputError

HUB_REPO = "dfki-av/PanoSAMic"
DEFAULT_SUBFOLDER = "stanford2d3ds-vith-rgbdn-fold1"
MODALITY_NAMES = {"image": "RGB image", "depth": "depth", "normals": "normals"}
MAPS_NAMES = {("image",): "RGB", ("image", "depth"): "RGB-D", ("image", "depth", "normals"): "RGB-D-N"}

# The tiny models trained on the project's rendered rooms (assets/demo/README.md), one per
# modality set: always offered, so the app segments offline whatever maps a user has; useless
# on real photographs.
ASSETS_DIR = Path(__file__).resolve().parents[2] / "assets"
DEMO_DIR = ASSETS_DIR / "demo"
DEMO_FOLDERS = {"demo-rgb": ASSETS_DIR / "demo-rgb", "demo-rgbd": ASSETS_DIR / "demo-rgbd", "demo": DEMO_DIR}

# A Hub subfolder (or a folder inside the local checkpoint): one or two plain names.
_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}"
SUBFOLDER_RE = re.compile(rf"^{_NAME}(/{_NAME})?$")


class HubProbe:
    """Whether the Hugging Face Hub can be reached, known within about `timeout` seconds.

    huggingface_hub retries an unreachable Hub for tens of seconds before it gives up; the
    app asks here first. `HF_HUB_OFFLINE` answers at once; otherwise one TCP connection to
    the Hub's endpoint (`HF_ENDPOINT`) is tried in a background thread, and a caller waits
    for it at most `timeout` + 0.5 s (a DNS lookup that hangs counts as unreachable). The
    answer is kept for `max_age` seconds, so that a network that comes back is noticed.
    """

    def __init__(self, timeout: float = 1.5, max_age: float = 60.0):
        self.timeout = float(timeout)
        self.max_age = float(max_age)
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self._ok: Optional[bool] = None
        self._checked = -float("inf")

    @staticmethod
    def offline_mode() -> bool:
        """HF_HUB_OFFLINE (huggingface_hub's own reading of it, else the variable)."""
        try:
            from huggingface_hub import constants

            is_offline = getattr(constants, "is_offline_mode", None)
            return bool(is_offline()) if callable(is_offline) else bool(constants.HF_HUB_OFFLINE)
        except Exception:  # noqa: BLE001
            return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")

    @staticmethod
    def endpoint() -> str:
        try:
            from huggingface_hub import constants

            return str(constants.ENDPOINT)
        except Exception:  # noqa: BLE001
            return os.environ.get("HF_ENDPOINT", "https://huggingface.co")

    def _probe(self) -> None:
        import urllib.error
        import urllib.request

        try:  # any HTTP answer counts: the Hub is there (what it says about a file comes later)
            request = urllib.request.Request(self.endpoint().rstrip("/") + "/api/models?limit=1", method="HEAD")
            with urllib.request.urlopen(request, timeout=self.timeout):
                ok = True
        except urllib.error.HTTPError:
            ok = True
        except Exception:  # noqa: BLE001  (DNS, refused, timeout, TLS, proxy: all "cannot be reached")
            ok = False
        with self._lock:
            self._ok, self._checked = ok, time.monotonic()

    def start(self) -> None:
        """Starts a check unless a recent answer is known or one is running."""
        if self.offline_mode():
            return
        with self._lock:
            fresh = time.monotonic() - self._checked < self.max_age
            if fresh or (self._thread is not None and self._thread.is_alive()):
                return
            self._thread = threading.Thread(target=self._probe, name="hub-probe", daemon=True)
            self._thread.start()

    def reachable(self, wait: Optional[float] = None) -> bool:
        """True when the Hub answered; waits at most `wait` (default timeout + 0.5) seconds."""
        if self.offline_mode():
            return False
        self.start()
        thread = self._thread
        if thread is not None:
            thread.join(self.timeout + 0.5 if wait is None else max(0.0, wait))
        with self._lock:
            return bool(self._ok) and time.monotonic() - self._checked < self.max_age + self.timeout + 1

    def known_unreachable(self) -> bool:
        """True only when HF_HUB_OFFLINE is set or the last finished check failed (never waits)."""
        if self.offline_mode():
            return True
        with self._lock:
            return self._ok is False


def pretty_subfolder(sub: str) -> str:
    """'stanford2d3ds-vith-rgbdn-fold1' -> 'Stanford2D3DS · ViT-H · RGB-D-N · fold 1'."""
    parts = sub.split("-")
    if len(parts) == 4 and parts[0] == "stanford2d3ds" and parts[3].startswith("fold"):
        mods = {"rgb": "RGB", "rgbd": "RGB-D", "rgbdn": "RGB-D-N"}.get(parts[2], parts[2])
        return f"Stanford2D3DS · {parts[1].replace('vit', 'ViT-').upper().replace('VIT', 'ViT')} · {mods} · fold {parts[3][4:]}"
    return sub


def check_subfolder_name(name: str) -> str:
    """`name` if it is one or two plain folder names (letters, digits, '.', '_', '-'; no '..'),
    else InputError: what a client may name as a checkpoint."""
    if not SUBFOLDER_RE.match(name) or ".." in name:
        raise InputError("Unknown checkpoint: pick one from the list, or type the name of a subfolder of "
                         f"{HUB_REPO} (letters, digits, '-', '_' and '.').")
    return name


@dataclass(frozen=True)
class ModelKey:
    """Everything that makes two loaded models differ (the registry's and the cache's key)."""

    checkpoint: str
    subfolder: Optional[str]
    sam: Optional[str]
    device: Optional[str]
    dtype: Optional[str]


def _config_modalities(folder: Path) -> Optional[Tuple[str, ...]]:
    """Modalities listed in folder/config.json, or None: also for a config.json that
    config.resolve_config refuses (the picker is built at start-up; Run reports the file's
    error, naming the key, when the model loads)."""
    from ..config import resolve_config

    cfg = folder / "config.json"
    try:
        if cfg.is_file():
            resolve_config(cfg)  # a JSON object, every key of the right type (ConfigError is a ValueError)
        mods = json.loads(cfg.read_text()).get("modalities") if cfg.is_file() else None
    except (OSError, ValueError):
        mods = None
    return tuple(m for m in ("image", "depth", "normals") if m in mods) if mods else None


def _maps_used(maps: Any) -> Tuple[str, ...]:
    """The modality set a checkpoint needs to use exactly the given maps ("image" always; normals
    only with depth: no released checkpoint reads RGB + normals, they are then left unused)."""
    given = set(maps or ())
    if "depth" not in given:
        return ("image",)
    return ("image", "depth", "normals") if "normals" in given else ("image", "depth")


class Checkpoints:
    """The choices of the checkpoint picker (see the module docstring).

    `subfolder` None (and no local `checkpoint` folder) starts the picker on "auto": each Run
    takes the checkpoint for the maps given (`for_maps`); a value the user picks is kept.
    """

    LOCAL = "local"
    DEMO = "demo"
    AUTO = "auto"

    def __init__(self, checkpoint: str, subfolder: Optional[str], sam: Optional[str]):
        self.checkpoint = str(checkpoint)
        self.sam = sam
        local = Path(checkpoint).expanduser()
        self.local_dir: Optional[Path] = local.resolve() if local.is_dir() else None
        self.hub_repo = HUB_REPO if self.local_dir is not None else self.checkpoint
        self.released = dict(RELEASED_SUBFOLDERS)
        self.hub = HubProbe()
        self.known: Dict[str, Tuple[str, ...]] = {}   # value -> modalities learned from a loaded model
        self.local_values: List[str] = []
        #: picker value -> folder of each bundled demo model present (not the local checkpoint itself)
        self.demos: Dict[str, Path] = {v: d for v, d in DEMO_FOLDERS.items()
                                       if (d / "model.safetensors").is_file() and d != self.local_dir}
        self.demo_dir = self.demos.get(self.DEMO)
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
            self.default = subfolder or self.AUTO

    def is_hub(self, value: Optional[str]) -> bool:
        """Whether the picker value loads from the Hugging Face Hub (not local, not the demo)."""
        v = str(value if value is not None else self.default).strip() or self.default
        if v in self.demos or v == self.AUTO or v == self.LOCAL or v.startswith(self.LOCAL + "/"):
            return False
        try:
            self.resolve(v)
        except InputError:
            return False
        return bool(re.fullmatch(r"[\w.-]+/[\w.-]+", self.hub_repo)) and not Path(self.hub_repo).exists()

    def cached(self, value: Optional[str]) -> bool:
        """Whether a Hub checkpoint's weights are in the local Hugging Face cache (a file look-up)."""
        ckpt, sub = self.resolve(value)
        try:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(ckpt, f"{sub}/model.safetensors" if sub else "model.safetensors")
        except Exception:  # noqa: BLE001  (a repo id huggingface_hub refuses, a broken cache)
            return False
        return isinstance(found, str)

    def needs_download(self, value: Optional[str]) -> bool:
        return self.is_hub(value) and not self.cached(value)

    def check_available(self, value: Optional[str], wait: Optional[float] = None) -> None:
        """InputError at once (within about 2 s) when a Hub checkpoint is not downloaded and
        the Hub cannot be reached: instead of huggingface_hub's long retries."""
        if not self.needs_download(value) or self.hub.reachable(wait):
            return
        value = (value or self.default).strip()
        demo = (" Pick Automatic or a Demo (tiny models that work offline), or" if self.demos else "")
        raise InputError(f"{value} is not downloaded yet and the Hugging Face Hub cannot be reached (offline?).{demo} "
                         "start the app with `--checkpoint <folder>` holding model.safetensors and sam.pth.")

    def initial(self, wait: Optional[float] = None) -> str:
        """The value the picker starts with: the default, or the Demo for the same maps when the
        default is a Hub checkpoint that must be downloaded and the Hub cannot be reached."""
        if self.default != self.AUTO and self.needs_download(self.default) and not self.hub.reachable(wait):
            demo = self.demo_for(self.modalities(self.default) or ("image",))
            if demo is not None:
                return demo
        return self.default

    def demo_for(self, modalities: Any) -> Optional[str]:
        """The bundled demo that reads `modalities`, else the one reading the most of them, or None."""
        mods = _maps_used(modalities)
        for value, folder in self.demos.items():
            if _config_modalities(folder) == mods:
                return value
        fits = [v for v, d in self.demos.items() if set(_config_modalities(d) or ("image",)) <= set(mods)]
        return fits[-1] if fits else None

    def for_maps(self, maps: Any, online: Optional[bool] = None) -> str:
        """The checkpoint that uses exactly the maps given (`maps`: e.g. ("image", "depth");
        normals without depth are left unused). A local checkpoint (`--checkpoint <folder>`): its
        value with those inputs, else its first. Otherwise the released fold-1 ViT-H checkpoint
        for them (RGB: stanford2d3ds-vith-rgb-fold1, as the authors' own demo), or, when that must
        be downloaded and the Hub cannot be reached, the bundled demo for them.

        `online`: whether the Hub can be reached; None = not known to be unreachable (never waits).
        """
        mods = _maps_used(maps)
        if self.local_values:
            return next((v for v in self.local_values if self.modalities(v) == mods), self.local_values[0])
        hub = next(name for name, m in self.released.items() if m == mods)  # fold 1 comes first
        if online is None:
            online = not self.hub.known_unreachable()
        if self.cached(hub) or online:
            return hub
        return self.demo_for(mods) or hub

    def concrete(self, value: Optional[str], maps: Any, online: Optional[bool] = None) -> str:
        """The picker value itself, or what "auto" (also an empty value) means for `maps`."""
        v = str(value if value is not None else self.default).strip() or self.default
        return self.for_maps(maps, online) if v == self.AUTO else v

    def local_subfolders(self) -> List[str]:
        """Subfolders (1 or 2 levels deep) of the local checkpoint holding a model.safetensors."""
        root = self.local_dir
        assert root is not None
        found = []
        for level in (1, 2):
            pattern = "/".join(["*"] * level) + "/model.safetensors"
            found.extend(p.parent.relative_to(root).as_posix() for p in root.glob(pattern))
        return sorted(f for f in found if SUBFOLDER_RE.match(f))

    def listed(self) -> List[str]:
        """The values the picker offers."""
        return [self.AUTO] + list(self.local_values) + list(self.released) + list(self.demos)

    def resolve(self, value: Optional[str]) -> Tuple[str, Optional[str]]:
        """(checkpoint, subfolder) to load for a picker value; InputError for anything outside
        the allowed set (decided from the text alone, before any file is looked at)."""
        value = str(value if value is not None else self.default).strip() or self.default
        if value == self.AUTO:
            raise InputError("Internal: 'auto' names no checkpoint until the inputs are known (Checkpoints.concrete).")
        if value in self.demos:
            return str(self.demos[value]), None
        if value == self.LOCAL or value.startswith(self.LOCAL + "/"):
            if self.local_dir is None:
                raise InputError("There is no local checkpoint: start the app with --checkpoint <folder>.")
            if value == self.LOCAL:
                return str(self.local_dir), None
            sub = check_subfolder_name(value[len(self.LOCAL) + 1:])
            folder = (self.local_dir / sub).resolve()
            if not folder.is_relative_to(self.local_dir):  # a link pointing outside
                raise InputError("Unknown checkpoint: pick one from the list.")
            return str(self.local_dir), sub
        if value == self.default or value in self.released:  # the command line's choice is trusted
            return self.hub_repo, value
        return self.hub_repo, check_subfolder_name(value)

    def key(self, value: Optional[str], device: Optional[str], dtype: Optional[str]) -> ModelKey:
        ckpt, sub = self.resolve(value)
        sam = None if (value or "").strip() in self.demos else self.sam  # a demo brings its own SAM part
        return ModelKey(ckpt, sub, sam, device, dtype)

    def modalities(self, value: Optional[str]) -> Optional[Tuple[str, ...]]:
        """The inputs the checkpoint needs, or None when unknown until it is loaded."""
        value = (value or self.default).strip()
        if value in self.known:
            return self.known[value]
        if value in self.released:
            return tuple(self.released[value])
        if value == self.AUTO:
            return None
        if value in self.demos:
            return _config_modalities(self.demos[value])
        if self.local_dir is not None and value in self.local_values:
            ckpt, sub = self.resolve(value)
            mods = _config_modalities(Path(ckpt) / (sub or ""))
            if mods:
                return mods
        return modalities_from_subfolder(value)

    def architecture(self, value: Optional[str]) -> Optional[Dict[str, Any]]:
        """The model's configuration (sizes, modalities) without loading it: the config.json of
        the demo or a local folder, or the preset a Hub subfolder's name announces ('-vith-rgbdn-');
        None when unknown."""
        from ..config import config_from_subfolder, resolve_config

        if (value or self.default).strip() == self.AUTO:
            return None
        ckpt, sub = self.resolve(value)
        folder = Path(ckpt) / (sub or "")
        if self.is_hub(value):
            return config_from_subfolder(sub or "")
        try:
            return resolve_config(str(folder)) if (folder / "config.json").is_file() else None
        except Exception:  # noqa: BLE001  (a broken config.json is reported when the model loads)
            return None

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
        if value == self.AUTO:
            return "Automatic: the checkpoint for the maps you give (RGB, RGB-D or RGB-D-N)"
        if value in self.demos:
            maps = MAPS_NAMES.get(tuple(mods or ()), need)
            return f"Demo {maps}: toy model for rendered rooms, offline ({need})"
        label = f"{pretty_subfolder(value)} ({need})"
        if self.needs_download(value):
            label += " · needs a download" + (" (offline now)" if self.hub.known_unreachable() else "")
        return label

    def choices(self, extra: Optional[str] = None) -> List[Tuple[str, str]]:
        """[(label, value), ...]: local values first, then the released ones, the demo (+ default, extra)."""
        values = self.listed()
        if self.default not in values:
            values.insert(0, self.default)
        if extra and extra not in values:
            values.append(extra)
        return [(self.label(v), v) for v in values]


class ModelRegistry:
    """Loaded models shared by all users, keyed by `ModelKey`; at most `max_models` stay
    loaded (least recently used goes first). `loader(key)` makes what is kept: in the app a
    `Predictor` over the loaded network (`StudioBackend.load_predictor`)."""

    def __init__(self, max_models: int = 1, loader: Optional[Callable[[ModelKey], Any]] = None):
        self.max_models = max(1, int(max_models))
        if loader is None:
            raise ValueError("ModelRegistry needs a loader(key)")
        self.loader = loader
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
                evicted = self._models.pop(self._order.pop(0))
                on_cuda = getattr(getattr(evicted, "device", None), "type", None) == "cuda"
                del evicted
                if on_cuda:  # off CUDA (e.g. the CPU copies kept with a lent GPU) there is nothing to free
                    empty_gpu_cache()
            self._models[key] = model
            self._order.append(key)
            return model


def weights_fingerprint(key: ModelKey) -> str:
    """What identifies the weights a loaded model of `key` was read from, for the cache keys of
    its embeddings: (real path, size, mtime) of its model.safetensors and SAM file. The disk
    cache outlives the process, so a checkpoint replaced at the same path (a retrained local
    folder, a new Hub revision of a subfolder: huggingface_hub then links another blob, named by
    its SHA-256) must not find the old model's embeddings. A file look-up (microseconds), after
    the model loaded; "" for what cannot be found (a test's loader, a SAM state dict)."""
    from ..hub import find_companions
    from ..sam_weights import local_sam_checkpoint

    files: List[Path] = []
    try:
        ckpt: Optional[Path] = None
        local = Path(key.checkpoint).expanduser()
        if local.is_file():
            ckpt = local
        elif local.is_dir():
            ckpt = local / (key.subfolder or "") / "model.safetensors"
        else:
            from huggingface_hub import try_to_load_from_cache

            name = f"{key.subfolder}/model.safetensors" if key.subfolder else "model.safetensors"
            found = try_to_load_from_cache(key.checkpoint, name)
            ckpt = Path(found) if isinstance(found, str) else None
        if ckpt is not None and ckpt.is_file():
            files.append(ckpt)
            sam = local_sam_checkpoint(key.sam) if key.sam else find_companions(ckpt)["sam"]
            if sam is not None and Path(sam).is_file():
                files.append(Path(sam))
    except Exception:  # noqa: BLE001  (a repo id huggingface_hub refuses, a file gone meanwhile)
        return ""
    parts = []
    for f in files:
        try:
            st = f.stat()
        except OSError:
            continue
        parts.append(f"{os.path.realpath(f)}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


def empty_gpu_cache() -> None:
    """Gives freed CUDA memory back (after evicting a model from CUDA)."""
    import torch

    torch.cuda.empty_cache()


__all__ = ["Checkpoints", "HubProbe", "ModelKey", "ModelRegistry", "pretty_subfolder", "check_subfolder_name",
           "empty_gpu_cache", "weights_fingerprint", "HUB_REPO", "DEFAULT_SUBFOLDER", "MODALITY_NAMES",
           "MAPS_NAMES", "DEMO_DIR", "DEMO_FOLDERS"]
