"""The app's settings: its command-line flags, each also read from a PANOSAMIC_* environment
variable (a Hugging Face Space is configured by its variables), and whether the platform lends a
GPU per call (ZeroGPU). `parse_args` is the one place they are read and checked.

    --checkpoint PANOSAMIC_CHECKPOINT   --subfolder PANOSAMIC_SUBFOLDER   --sam-checkpoint PANOSAMIC_SAM_CHECKPOINT
    --device PANOSAMIC_DEVICE   --dtype PANOSAMIC_DTYPE   --cache-mb PANOSAMIC_CACHE_MB   --host PANOSAMIC_HOST
    --port PANOSAMIC_PORT (or GRADIO_SERVER_PORT)   --share PANOSAMIC_SHARE   --examples PANOSAMIC_EXAMPLES
    --session-mb PANOSAMIC_SESSION_MB   --session-idle-min PANOSAMIC_SESSION_IDLE_MIN
    --embedding-cache-dir PANOSAMIC_EMBEDDING_CACHE   --embedding-cache-mb PANOSAMIC_EMBEDDING_CACHE_MB
    --preencode PANOSAMIC_PREENCODE   --eta-probe PANOSAMIC_ETA_PROBE   --shutdown-grace-s PANOSAMIC_SHUTDOWN_GRACE_S
    --disk-mb PANOSAMIC_DISK_MB   --depth-estimator PANOSAMIC_DEPTH_ESTIMATOR   --max-models PANOSAMIC_MAX_MODELS
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Optional, Sequence

from ..io.files import EXAMPLES_DIR
from ..precision import PRECISIONS
from .checkpoints import HUB_REPO
from .shutdown import DELIVER_S, SHUTDOWN_GRACE_S


def env(name: str, default: Any = None) -> Any:
    """The value of PANOSAMIC_<name>, or `default` when it is unset or empty."""
    value = os.environ.get(f"PANOSAMIC_{name}")
    return default if value in (None, "") else value


def env_bool(name: str, default: bool = False) -> bool:
    """PANOSAMIC_<name> as a switch: 1, true, yes, on (any case) are True; unset is `default`."""
    value = env(name)
    return default if value is None else str(value).lower() in ("1", "true", "yes", "on")


#: Where encoded panoramas are kept across restarts (on a Space, a persistent /data folder keeps
#: them across rebuilds too), and how much disk they may take: ViT-H RGB-D-N is 25 MB a panorama.
EMBEDDING_CACHE_DIR = "~/.cache/panosamic/embeddings"
EMBEDDING_CACHE_MB = 4096
#: Disk for the app's temporary files, Gradio's cache included (0 = no budget).
DISK_MB = 8192


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The app's settings from `argv` (default: the command line) over the environment; a bad
    value ends the process with argparse's message (exit status 2)."""
    p = argparse.ArgumentParser(description="PanoSAMic Studio: semantic segmentation of 360-degree panoramas.")
    p.add_argument("--host", default=env("HOST", "127.0.0.1"), help="interface to listen on (0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=int(env("PORT", os.environ.get("GRADIO_SERVER_PORT", 7860))))
    p.add_argument("--share", action="store_true", default=env_bool("SHARE"), help="create a public gradio.live link")
    p.add_argument("--checkpoint", default=env("CHECKPOINT", HUB_REPO),
                   help="Hub repo id or local folder (model.safetensors, sam.pth, optional config.json)")
    p.add_argument("--subfolder", default=env("SUBFOLDER"),
                   help="checkpoint subfolder selected at start (default: Automatic, the released "
                        "checkpoint for the maps a user gives, or the bundled demo for them offline)")
    p.add_argument("--sam-checkpoint", default=env("SAM_CHECKPOINT"),
                   help="SAM weights (file, URL or vit_b/vit_l/vit_h); default: beside the checkpoint")
    p.add_argument("--device", default=env("DEVICE"), help="cuda, cuda:1, mps or cpu (default: best available)")
    p.add_argument("--dtype", default=env("DTYPE"), choices=[None, *PRECISIONS],
                   help="the ViT encoder's precision (default auto: int8 for vit_b/l/h on an x86 CPU, "
                        "float32 otherwise and on a GPU; float32, bfloat16, float16 or int8)")
    p.add_argument("--cache-mb", type=float, default=float(env("CACHE_MB", 2048)),
                   help="memory for cached panorama embeddings shared by all users (0 = off)")
    p.add_argument("--embedding-cache-dir", default=env("EMBEDDING_CACHE", EMBEDDING_CACHE_DIR),
                   help="folder that keeps encoded panoramas across restarts, so the same files skip the encoder")
    p.add_argument("--depth-estimator", default=env("DEPTH_ESTIMATOR", "auto"),
                   help="what estimates depth and normals from a photo without them: auto (Depth Anything V2 "
                        "Metric Indoor Small when it can be had, else the offline demo), demo, a Hub id or "
                        "folder, or none (Run then asks for the maps)")
    p.add_argument("--embedding-cache-mb", type=float, default=float(env("EMBEDDING_CACHE_MB", EMBEDDING_CACHE_MB)),
                   help="disk for that folder; the least recently used panoramas go first (0 = off)")
    p.add_argument("--preencode", action=argparse.BooleanOptionalAction, default=env_bool("PREENCODE", True),
                   help="after start-up, encode the examples for the default checkpoint in the background "
                        "at the lowest CPU priority (users' runs go first)")
    p.add_argument("--eta-probe", action=argparse.BooleanOptionalAction, default=env_bool("ETA_PROBE", True),
                   help="at start-up, time real-size ViT blocks of each offered checkpoint's encoder (vit_h: "
                        "~15 s of a 2-core CPU) so that the page can say before Run how long it will take")
    p.add_argument("--max-models", type=int, default=int(env("MAX_MODELS", 1)),
                   help="checkpoints kept loaded at once")
    p.add_argument("--session-mb", type=float, default=float(env("SESSION_MB", 4096)),
                   help="memory for all users' sessions together; the least recently used idle ones go first")
    p.add_argument("--session-idle-min", type=float, default=float(env("SESSION_IDLE_MIN", 60)),
                   help="a session unused this many minutes is closed (its user presses Run again)")
    p.add_argument("--disk-mb", type=float, default=float(env("DISK_MB", DISK_MB)),
                   help="disk for the app's temporary files (uploads, pictures, exports, Gradio's cache); "
                        "the least recently used idle sessions go first (0 = no budget)")
    p.add_argument("--examples", default=env("EXAMPLES", str(EXAMPLES_DIR)),
                   help="folder with <name>_rgb.jpg|png (+ _depth.png, _normals.png) examples")
    p.add_argument("--shutdown-grace-s", type=float, default=float(env("SHUTDOWN_GRACE_S", SHUTDOWN_GRACE_S)),
                   help=f"on SIGTERM, seconds running jobs get to finish (then they are cut short and told so, "
                        f"within {DELIVER_S:g} s more); keep the sum below the platform's stop timeout "
                        f"(docker stop: 10 s)")
    args = p.parse_args(argv)
    if not 0 <= args.shutdown_grace_s < float("inf"):
        p.error(f"--shutdown-grace-s must be a number of seconds >= 0, got {args.shutdown_grace_s}")
    if not 0 <= args.disk_mb < float("inf"):
        p.error(f"--disk-mb must be a number of megabytes >= 0, got {args.disk_mb}")
    if not 0 <= args.embedding_cache_mb < float("inf"):
        p.error(f"--embedding-cache-mb must be a number of megabytes >= 0, got {args.embedding_cache_mb}")
    return args



def zero_gpu_lender():
    """`spaces.GPU` on a Hugging Face ZeroGPU Space (a GPU is lent per call: see
    panosamic.studio.backend), None elsewhere (a dedicated GPU or the CPU)."""
    try:
        import spaces  # type: ignore
        from spaces.config import Config  # type: ignore
    except Exception:  # noqa: BLE001  (not installed: not a Space)
        return None
    return spaces.GPU if Config.zero_gpu else None



__all__ = ["parse_args", "env", "env_bool", "zero_gpu_lender", "EMBEDDING_CACHE_DIR", "EMBEDDING_CACHE_MB",
           "DISK_MB"]
