"""Helpers for the app tests: a local checkpoint folder, small example panoramas, a running app.

`running_app(...)` (devtools.app_process) starts `python app.py` in a subprocess on 127.0.0.1
with a free port and yields its URL once the page answers; the process is stopped afterwards.
`gated_app(...)` does the same with an encoder that waits until the test opens its gate
(tests/gated_app.py), for tests that need a Run to stay busy.
"""

from __future__ import annotations

import contextlib
import shutil
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Callable, Dict, Iterator, List

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `import app` from the tests
    sys.path.insert(0, str(ROOT))

from devtools.app_process import running_app  # noqa: E402,F401  (the tests' way to start the app)
from devtools.hostile_inputs import png_bomb  # noqa: E402,F401
CHECKPOINT_FILES = ("config.json", "sam.pth", "model.safetensors")

#: The values every editing endpoint (/segment, /prompt, /assign, /undo, ...) returns to an API
#: client, in order: the app's outputs without the session State.
EVENT_OUTPUTS = ("view", "legend", "plot", "candidates", "class", "info", "files", "run_status", "edit_status",
                 "viewer")
VIEW, LEGEND, PLOT, CANDIDATES, CLASS, INFO, FILES, RUN_STATUS, EDIT_STATUS, VIEWER = range(len(EVENT_OUTPUTS))


def event_outputs(values) -> Dict[str, object]:
    """An editing endpoint's values by name: gradio_client's (without the State) or the raw
    HTTP API's (the State's placeholder first)."""
    values = list(values)
    if len(values) == len(EVENT_OUTPUTS) + 1:
        values = values[1:]
    assert len(values) == len(EVENT_OUTPUTS), f"{len(values)} values, expected {len(EVENT_OUTPUTS)}"
    return dict(zip(EVENT_OUTPUTS, values))


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
    from panosamic.studio.session import Session

    rng = np.random.default_rng(0)
    h, w = 32, 64
    image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    labels = np.full((h, w), 11, np.uint8)  # wall
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


@contextlib.contextmanager
def gated_app(args: List[str], root: Path) -> Iterator[Dict]:
    """`running_app` of tests/gated_app.py: every encoder call creates gate/"waiting" and waits
    for gate/"go"; yields running_app's dict plus "gate" (a folder) and "export_roots" (the
    app's export folders, made at its start)."""
    gate = root / "gate"
    gate.mkdir()
    with running_app(args, root / "app.log", env={"PANOSAMIC_TEST_GATE": str(gate)},
                     script=ROOT / "tests" / "gated_app.py") as app:
        roots = list(Path(tempfile.gettempdir()).glob(f"panosamic-studio-{app['proc'].pid}-*"))
        yield {**app, "gate": gate, "export_roots": roots}


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    """Polls `condition` until it holds; TimeoutError naming `what` after `timeout` seconds."""
    t0 = time.monotonic()
    while not condition():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(0.02)
