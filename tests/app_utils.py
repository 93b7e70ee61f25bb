"""Helpers for the app tests: a local checkpoint folder, small example panoramas, a running app.

`running_app(...)` starts `python app.py` in a subprocess on 127.0.0.1 with a free port and
yields its URL once the page answers; the process is stopped (by its pid) afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import zlib
from pathlib import Path
from typing import Dict, Iterator, List, Optional

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `import app` from the tests
    sys.path.insert(0, str(ROOT))
CHECKPOINT_FILES = ("config.json", "sam.pth", "model.safetensors")


def make_checkpoint_dir(reference_dir: Path, dest: Path, config: bool = True) -> Path:
    """A local checkpoint folder (config.json, sam.pth, model.safetensors) copied from the reference;
    without config.json when `config` is False (the architecture is then read from the tensors)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in CHECKPOINT_FILES:
        if config or name != "config.json":
            shutil.copy2(reference_dir / name, dest / name)
    return dest


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims width x height pixels (only the header is valid): a huge upload, cheaply."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def make_session(depth: bool = True):
    """A small Session: a random 64x32 image, wall above floor, constant depth 2.5 m."""
    import numpy as np

    from panosamic.datasets import STANFORD2D3DS as DS
    from panosamic.session import Session

    rng = np.random.default_rng(0)
    h, w = 32, 64
    image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    labels = np.full((h, w), 11, np.int64)  # wall
    labels[24:] = 8                           # floor
    d = np.full((h, w), 2.5, np.float32) if depth else None
    return Session(image, labels, DS.classes, DS.palette, depth=d, name="office_rgb.png", checkpoint="tiny")


def make_examples(dest: Path, names=("office", "seam"), width: int = 256) -> Dict[str, Dict[str, Path]]:
    """Small procedural example panoramas in the assets/examples layout (rgb, depth, normals, labels)."""
    from devtools import scenes
    from devtools.examples import write_example

    out = {}
    for name in names:
        out[name] = write_example(dest, name, scenes.render_example(name, width=width))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, proc: subprocess.Popen, timeout: float, log: Path) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return time.perf_counter() - t0
        except OSError:
            time.sleep(0.25)
    raise TimeoutError(f"the app did not answer at {url} within {timeout} s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def running_app(args: List[str], log_path: Path, env: Optional[Dict[str, str]] = None,
                timeout: float = 90.0) -> Iterator[Dict]:
    """Starts app.py with `args` (+ --host/--port); yields {"url", "startup_s", "proc"}."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    full_env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
                "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(port),
                                 *args], cwd=str(ROOT), env=full_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        startup = wait_until_up(url, proc, timeout, log_path)
        yield {"url": url, "startup_s": startup, "proc": proc, "log": log_path}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
