#!/usr/bin/env python
"""PanoSAMic Studio: a Gradio app for semantic segmentation of 360-degree panoramas.

    python app.py [--host 127.0.0.1] [--port 7860] [--share]
                  [--checkpoint dfki-av/PanoSAMic | LOCAL_DIR] [--subfolder stanford2d3ds-vith-rgb-fold1]
                  [--sam-checkpoint PATH] [--device cuda|cpu] [--dtype auto|float32|bfloat16|float16|int8]
                  [--cache-mb 2048] [--session-mb 4096] [--session-idle-min 60] [--examples assets/examples]
                  [--embedding-cache-dir ~/.cache/panosamic/embeddings] [--embedding-cache-mb 4096]
                  [--no-preencode] [--no-eta-probe] [--shutdown-grace-s 7] [--disk-mb 8192]

Every option also reads an environment variable (PANOSAMIC_CHECKPOINT, PANOSAMIC_SUBFOLDER,
PANOSAMIC_SAM_CHECKPOINT, PANOSAMIC_DEVICE, PANOSAMIC_DTYPE, PANOSAMIC_CACHE_MB, PANOSAMIC_HOST,
PANOSAMIC_PORT, PANOSAMIC_SHARE, PANOSAMIC_EXAMPLES, PANOSAMIC_SESSION_MB,
PANOSAMIC_SESSION_IDLE_MIN, PANOSAMIC_EMBEDDING_CACHE, PANOSAMIC_EMBEDDING_CACHE_MB,
PANOSAMIC_PREENCODE, PANOSAMIC_ETA_PROBE, PANOSAMIC_SHUTDOWN_GRACE_S, PANOSAMIC_DISK_MB), for a Hugging
Face Space.

The app's temporary files (uploads, pictures, exports, and Gradio's cache, which the app keeps in
its own folder) go with each user's session and at shutdown, and stay within --disk-mb
(panosamic.studio.files, panosamic.studio.serving).

Encoded panoramas are also kept on disk (--embedding-cache-dir, least recently used first
beyond --embedding-cache-mb), so a restart or the next visitor with the same files skips the
encoder; after start-up the examples are encoded for the default checkpoint in the background
at the lowest CPU priority, giving way to every user's Run.

SIGTERM (a Space restart, `docker stop`) stops the app gracefully (panosamic.studio.shutdown):
new jobs are refused in plain words, running ones get --shutdown-grace-s seconds to finish, the
rest are answered "The server restarted while this ran" before the process exits.

This file only wires the UI: the app's logic (checkpoint choices, lazy model loading, input
checks, sessions, messages, segment / click / prompt / edit / export, pictures and files) lives
in the panosamic.studio package. Models load lazily on the first Run, so the page opens at once
(and also offline or without weights).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import concurrent.futures
import functools
import json
import logging
import os
import secrets
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

# Gradio summarises its queue's last 10 000 events with pandas after every event (4-12 ms of
# CPU per click here, for its monitoring page): every 200 events is often enough.
os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "200")

import gradio as gr  # noqa: E402
from gradio.components.plot import PlotData  # noqa: E402  (the point cloud arrives as plotly JSON)

from panosamic.errors import InputError, PanoSAMicError
from panosamic.io import read_header
from panosamic.precision import PRECISIONS
from panosamic.studio import DEFAULT_SUBFOLDER, HUB_REPO, Checkpoints, Session, StudioBackend  # noqa: F401
from panosamic.studio import messages, render, serving
from panosamic.studio.fair import FairGate
from panosamic.studio.hover import ORT_CDN, HoverRoutes, HoverService
from panosamic.studio.shutdown import DELIVER_S, SHUTDOWN_GRACE_S, Shutdown, lowest_priority
from panosamic.studio.store import SessionExpired
from panosamic.studio.candidates import FIT_TEXT, RULE_TEXT, cards_html, radio_choices
from panosamic.studio.uploads import check_upload, example_caption, input_path, preview_image

log = logging.getLogger("panosamic.app")

ROOT = Path(__file__).resolve().parent
CLICK_MODES = ["Positive point", "Negative point", "Box (2 clicks)"]
VIEWER_JS = ROOT / "panosamic" / "studio" / "static" / "viewer.js"
CONNECTION_JS = ROOT / "panosamic" / "studio" / "static" / "connection.js"
HOVER_JS = ROOT / "panosamic" / "studio" / "static" / "hover.js"  # the live mask preview, in the head


def zero_gpu_lender():
    """`spaces.GPU` on a Hugging Face ZeroGPU Space (a GPU is lent per call: see
    panosamic.studio.backend), None elsewhere (a dedicated GPU or the CPU)."""
    try:
        import spaces  # type: ignore
        from spaces.config import Config  # type: ignore
    except Exception:  # noqa: BLE001  (not installed: not a Space)
        return None
    return spaces.GPU if Config.zero_gpu else None


# ============================================================================ settings

def _env(name: str, default: Any = None) -> Any:
    value = os.environ.get(f"PANOSAMIC_{name}")
    return default if value in (None, "") else value


def _env_bool(name: str, default: bool = False) -> bool:
    value = _env(name)
    return default if value is None else str(value).lower() in ("1", "true", "yes", "on")


#: Where encoded panoramas are kept across restarts (on a Space, a persistent /data folder keeps
#: them across rebuilds too), and how much disk they may take: ViT-H RGB-D-N is 25 MB a panorama.
EMBEDDING_CACHE_DIR = "~/.cache/panosamic/embeddings"
EMBEDDING_CACHE_MB = 4096
#: Disk for the app's temporary files, Gradio's cache included (0 = no budget).
DISK_MB = 8192


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="PanoSAMic Studio: semantic segmentation of 360-degree panoramas.")
    p.add_argument("--host", default=_env("HOST", "127.0.0.1"), help="interface to listen on (0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=int(_env("PORT", os.environ.get("GRADIO_SERVER_PORT", 7860))))
    p.add_argument("--share", action="store_true", default=_env_bool("SHARE"), help="create a public gradio.live link")
    p.add_argument("--checkpoint", default=_env("CHECKPOINT", HUB_REPO),
                   help="Hub repo id or local folder (model.safetensors, sam.pth, optional config.json)")
    p.add_argument("--subfolder", default=_env("SUBFOLDER"),
                   help="checkpoint subfolder selected at start (default: Automatic, the released "
                        "checkpoint for the maps a user gives, or the bundled demo for them offline)")
    p.add_argument("--sam-checkpoint", default=_env("SAM_CHECKPOINT"),
                   help="SAM weights (file, URL or vit_b/vit_l/vit_h); default: beside the checkpoint")
    p.add_argument("--device", default=_env("DEVICE"), help="cuda, cuda:1, mps or cpu (default: best available)")
    p.add_argument("--dtype", default=_env("DTYPE"), choices=[None, *PRECISIONS],
                   help="the ViT encoder's precision (default auto: int8 for vit_b/l/h on an x86 CPU, "
                        "float32 otherwise and on a GPU; float32, bfloat16, float16 or int8)")
    p.add_argument("--cache-mb", type=float, default=float(_env("CACHE_MB", 2048)),
                   help="memory for cached panorama embeddings shared by all users (0 = off)")
    p.add_argument("--embedding-cache-dir", default=_env("EMBEDDING_CACHE", EMBEDDING_CACHE_DIR),
                   help="folder that keeps encoded panoramas across restarts, so the same files skip the encoder")
    p.add_argument("--depth-estimator", default=_env("DEPTH_ESTIMATOR", "auto"),
                   help="what estimates depth and normals from a photo without them: auto (Depth Anything V2 "
                        "Metric Indoor Small when it can be had, else the offline demo), demo, a Hub id or "
                        "folder, or none (Run then asks for the maps)")
    p.add_argument("--embedding-cache-mb", type=float, default=float(_env("EMBEDDING_CACHE_MB", EMBEDDING_CACHE_MB)),
                   help="disk for that folder; the least recently used panoramas go first (0 = off)")
    p.add_argument("--preencode", action=argparse.BooleanOptionalAction, default=_env_bool("PREENCODE", True),
                   help="after start-up, encode the examples for the default checkpoint in the background "
                        "at the lowest CPU priority (users' runs go first)")
    p.add_argument("--eta-probe", action=argparse.BooleanOptionalAction, default=_env_bool("ETA_PROBE", True),
                   help="at start-up, time real-size ViT blocks of each offered checkpoint's encoder (vit_h: "
                        "~15 s of a 2-core CPU) so that the page can say before Run how long it will take")
    p.add_argument("--max-models", type=int, default=int(_env("MAX_MODELS", 1)),
                   help="checkpoints kept loaded at once")
    p.add_argument("--session-mb", type=float, default=float(_env("SESSION_MB", 4096)),
                   help="memory for all users' sessions together; the least recently used idle ones go first")
    p.add_argument("--session-idle-min", type=float, default=float(_env("SESSION_IDLE_MIN", 60)),
                   help="a session unused this many minutes is closed (its user presses Run again)")
    p.add_argument("--disk-mb", type=float, default=float(_env("DISK_MB", DISK_MB)),
                   help="disk for the app's temporary files (uploads, pictures, exports, Gradio's cache); "
                        "the least recently used idle sessions go first (0 = no budget)")
    p.add_argument("--examples", default=_env("EXAMPLES", str(ROOT / "assets" / "examples")),
                   help="folder with <name>_rgb.jpg|png (+ _depth.png, _normals.png) examples")
    p.add_argument("--shutdown-grace-s", type=float, default=float(_env("SHUTDOWN_GRACE_S", SHUTDOWN_GRACE_S)),
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


# ============================================================================ errors

def pop_up(message: str) -> gr.Error:
    """The error pop-up for `message`. Gradio shows a pop-up's text as HTML, so it is escaped
    here, where the app's messages become page content: `--checkpoint <folder>` keeps its
    `<folder>`, and HTML typed into a prompt key or a file's name stays text."""
    return gr.Error(messages.html_text(message), duration=None, print_exception=False)


def friendly(fn, shutdown: Optional[Shutdown] = None, quick: bool = False, nice: int = 0, status: Any = None,
             gate: Optional[FairGate] = None):
    """Turns every exception of a handler into a user-facing message (a job cut short
    included): a gr.Error for API clients, or, with `status` (the page's own events), the
    whole message on that status line, the other outputs left as they were. With `shutdown`
    the handler runs as one of its jobs: refused while the server stops, answered in plain
    words when the stop cuts it short (`quick` handlers, milliseconds long, run inline: see
    `Shutdown.run`). With `gate` it takes its turn among the heavy jobs of all clients
    (panosamic.studio.fair), its client read from the gr.Request among its arguments, and the
    wait shown on its gr.Progress."""

    def refuse(exc: BaseException):
        text = messages.user_message(exc)
        if status is not None:
            return {status: messages.status_error(text)}
        raise pop_up(text) from None

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            call = fn
            if gate is not None:
                given = (*args, *kwargs.values())
                request = next((a for a in given if isinstance(a, gr.Request)), None)
                progress = next((a for a in given if isinstance(a, gr.Progress)), None)
                call = gate.wrap(fn, getattr(request, "session_hash", None), progress)
            if shutdown is None:
                return call(*args, **kwargs)
            return shutdown.run(call, *args, inline=quick, nice=nice, **kwargs)
        except gr.Error:
            raise
        except (asyncio.CancelledError, concurrent.futures.CancelledError, KeyboardInterrupt) as exc:
            # A job cut short (a cancelled task, a GPU worker stopped, the server shutting down):
            # asyncio's CancelledError is a BaseException, so `except Exception` would let it out bare.
            log.warning("handler %s was cut short (%s)", fn.__name__, type(exc).__name__)
            return refuse(exc)
        except Exception as exc:  # noqa: BLE001
            if isinstance(exc, PanoSAMicError) or messages.disk_full(exc):
                # an expected refusal (bad input, a closed session, a full disk): one line, no traceback
                log.info("%s refused (%s): %s", fn.__name__, type(exc).__name__, messages.user_message(exc))
            else:
                log.exception("handler %s failed", fn.__name__)
            return refuse(exc)

    return wrapper


def panorama_input(**kwargs) -> gr.Image:
    """gr.Image for the panorama upload that reports a file it cannot decode with a clear
    message (a plain gr.Image fails inside PIL before the handler runs). The check wraps the
    instance's preprocess: a gr.Image subclass would make Gradio write an app.pyi stub."""
    image = gr.Image(**kwargs)
    preprocess = image.preprocess

    def checked(payload):
        path = getattr(payload, "path", None)
        if path:  # the header first: Gradio's own preprocess opens the file with PIL
            try:
                read_header(path, "image")
            except PanoSAMicError as exc:
                log.info("panorama refused (%s): %s", type(exc).__name__, messages.user_message(exc))
                raise pop_up(messages.user_message(exc)) from None
        try:
            return preprocess(payload)
        except Exception as exc:  # noqa: BLE001
            name = getattr(payload, "orig_name", None) or "the file"
            log.info("panorama refused (%s): %s cannot be read", type(exc).__name__, name)
            raise pop_up(f"{name} is not an image that can be read: upload a JPEG or PNG panorama "
                         "(equirectangular, width = 2 x height).") from None

    image.preprocess = checked  # type: ignore[method-assign]
    return image


# ============================================================================ the app

CLICK_LABEL = "Click: new selection · Shift-click: add a point (in either view)"
CLICK_INFO = ("Negative point: a click takes a part away from the selection. Box: two clicks start a new "
              "selection (Shift keeps the points). After Assign the next click starts afresh.")
# gr.Image's select event says where, not whether Shift was held: the page's script
# (static/page.js, in the page's head) notes the modifier of every pointer press and the map's
# select event hands it in as its third input (SHIFT_INPUT_JS runs in the browser before the
# event is sent). The 360° viewer sends it itself (static/viewer.js: shift in its pano_click event).
# The same script gives the page its keys (KEYS_TEXT) and makes the candidate cards clickable.
STATIC = ROOT / "panosamic" / "studio" / "static"
PAGE_HEAD = f"<script>\n{(STATIC / 'page.js').read_text()}</script>"
SHIFT_INPUT_JS = "(...inputs) => { inputs[2] = window.panosamicShift === true; return inputs; }"
# A server killed mid-event (kill -9, a crash) cannot answer: the page notices the lost
# connection itself and says so on the run status (static/connection.js).
CONNECTION_HEAD = (f"<script>window.panosamicServerStopped = {json.dumps(messages.SERVER_STOPPED)};\n"
                   f"{CONNECTION_JS.read_text()}</script>")
# The point cloud's request after an action waits in the browser until the action's ERP picture
# is shown: plotly's redraw of the cloud then blocks the page for seconds without a GPU, and
# would keep the new picture from being painted (1-5 s after each edit with the cloud open).
AFTER_PICTURE_JS = """async (...inputs) => {
  const frame = () => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  await frame();
  for (let n = 0; n < 250; n++) {
    const img = document.querySelector("#pano-view img");
    if (!img || img.complete) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  await frame();
  return inputs;
}"""


def _click_kind(mode: str) -> str:
    return "box" if mode == CLICK_MODES[2] else "negative" if mode == CLICK_MODES[1] else "positive"


@dataclass
class Components:
    """The components the handlers fill (set by build_ui)."""

    session: Any = None
    view: Any = None
    viewer: Any = None
    legend: Any = None
    plot: Any = None
    candidates: Any = None
    cls: Any = None
    info: Any = None
    downloads: Any = None
    run_status: Any = None
    edit_status: Any = None
    cloud_shown: Any = None  # whether the page's point cloud accordion is open (gr.State)
    cards: Any = None        # the candidates' thumbnails (gr.HTML)
    new_name: Any = None     # the "New class" field
    accepted: Any = None     # the uploaded panorama when it can be used (gr.State; on_upload's)

    def outputs(self) -> list:
        # the viewer and the cards go last: API clients keep the indices they had before they came
        return [self.session, self.view, self.legend, self.plot, self.candidates, self.cls, self.info,
                self.downloads, self.run_status, self.edit_status, self.viewer, self.cards]


NO_CANDIDATES = [("#1", 0), ("#2", 1), ("#3", 2)]



class Studio:
    """The event handlers: each calls panosamic.studio.StudioBackend (state shared by all
    users: models, embedding cache, sessions' lifetime) and returns {component: value} for
    what changed; everything per user lives in the gr.State `Session`."""

    def __init__(self, settings: argparse.Namespace):
        self.settings = settings
        self.backend = StudioBackend(settings.checkpoint, settings.subfolder, settings.sam_checkpoint,
                                     device=settings.device, dtype=settings.dtype, max_models=settings.max_models,
                                     cache_mb=settings.cache_mb, examples=settings.examples,
                                     session_mb=settings.session_mb, session_idle_s=60 * settings.session_idle_min,
                                     embedding_cache_dir=settings.embedding_cache_dir or None,
                                     embedding_cache_mb=settings.embedding_cache_mb, lend_gpu=zero_gpu_lender(),
                                     depth_estimator=settings.depth_estimator, disk_mb=settings.disk_mb)
        self.checkpoints = self.backend.checkpoints
        self.checkpoints.hub.start()   # known by the time the page is built (at most ~2 s)
        self.examples = self.backend.examples
        self.shutdown = Shutdown()  # every handler's job; SIGTERM drains it (see main)
        self.gate = FairGate(HEAVY_CONCURRENCY)  # Run and SAM instances: in turns, a share per client
        self.stop_background = threading.Event()  # set at shutdown: the pre-encoder stops
        self.ui = Components()
        # the live preview under the cursor (panosamic.studio.hover): onnxruntime-web from the copy
        # `npm ci` puts in node_modules, else the pinned CDN file, else decoding on the server
        self.hover = HoverService(self.backend.registry.get, cache_dir=_env("DECODER_CACHE"),
                                  ort_dir=Path(_env("ORT_DIR", ROOT / "node_modules" / "onnxruntime-web" / "dist")),
                                  cdn=os.environ.get("PANOSAMIC_ORT_CDN", ORT_CDN))  # "" = no CDN
        # This process's start, which the page keeps (a hidden input of every event on a session):
        # sessions live in the server (gr.State), so after a restart an old page's session is
        # simply None; a start id other than this one says why (`live`).
        self.start_id = secrets.token_hex(8)

    def bundle(self, s: Session, opacity: float, clear_downloads: bool = False) -> Dict[Any, Any]:
        """What an event on session `s` shows: the ERP view and the 360° viewer (the same
        picture), legend, candidates, class, info and edit status always; the downloads are
        cleared when the labels changed (Export writes them again). The point cloud is not
        part of it (`cloud`: the API's answers carry it, the page asks for it apart)."""
        ui = self.ui
        names = s.class_table.choices()
        if s.candidates is not None:
            cand = gr.Radio(choices=radio_choices(s), value=s.selected, interactive=True)
            mc = s.majority_class()
            cls = gr.Dropdown(choices=names, value=s.classes[mc] if mc is not None else s.classes[0])
        else:
            cand = gr.Radio(choices=NO_CANDIDATES, value=None, interactive=False)
            cls = gr.Dropdown(choices=names)
        stats = s.stats()
        # one JPEG for both views: the map is served from the file, the viewer gets its bytes
        jpeg = render.view_jpeg(render.view_image(s, opacity))
        out = {
            ui.session: s,
            ui.view: self.backend.store.write_view(s, jpeg),
            ui.viewer: {**render.viewer_payload(s, jpeg), "hover": self.hover.payload(s)},
            ui.legend: render.legend_html(stats, own_from=s.class_table.model_count, note=messages.toy_note(s)),
            ui.candidates: cand,
            ui.cards: cards_html(s),
            ui.cls: cls,
            ui.info: {**s.summary(), "stats": stats},
            ui.edit_status: messages.edit_status(s),
        }
        if clear_downloads:
            out[ui.downloads] = None
        return out

    def cloud(self, s: Session) -> Dict[Any, Any]:
        """The point cloud when the labels changed since it was last sent, else {} (the session
        is in use)."""
        key = (s.labels_version,)
        if s.rendered_3d == key:
            return {}
        s.rendered_3d = key
        cloud = render.point_cloud_view(s)
        return {self.ui.plot: None if cloud is None else PlotData(type="plotly", plot=cloud)}

    def with_cloud(self, fn: Callable) -> Callable:
        """`fn` (a handler that returns a session's bundle) for the API: its answer carries the
        point cloud too whenever the labels changed, as API clients always had it."""

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            out = fn(*args, **kwargs)
            s = out.get(self.ui.session) if isinstance(out, dict) else None
            if s is not None:
                with self.backend.store.use(s):
                    out.update(self.cloud(s))
            return out

        return wrapper

    def page_cloud(self, s: Optional[Session], shown: bool):
        """The page's point cloud, after each action: a plotly redraw of 30 000 points takes
        seconds in a browser without a GPU, and the ERP picture of an edit waited for it. So
        the picture comes alone, and the cloud follows only while its accordion is open
        (`shown`) and when the labels changed since the page got it."""
        return self._page_cloud(s, shown) or gr.skip()

    def show_cloud(self, s: Optional[Session]):
        """The point cloud's accordion was opened: the cloud of the current labels."""
        return {self.ui.cloud_shown: True, **self._page_cloud(s, True)}

    def _page_cloud(self, s: Optional[Session], shown: bool) -> Dict[Any, Any]:
        if s is None or not shown:
            return {}
        try:
            with self.backend.store.use(s):
                return self.cloud(s)
        except InputError:  # the session is gone: the action's own answer said so
            return {}

    def restarted(self, server_start: Optional[str]) -> bool:
        """Whether the page (or API client) sending `server_start` was served by an earlier
        start of the server."""
        return bool(server_start) and server_start != self.start_id

    def live(self, s: Optional[Session], server_start: Optional[str]) -> Optional[Session]:
        """`s`; without one, the server's restart is the reason when the page is older than
        this process (else `store.use` asks for a Run first)."""
        if s is None and self.restarted(server_start):
            raise SessionExpired(messages.RESTARTED_SINCE)
        return s

    def current_start(self) -> str:
        """This process's start id, for the page after a Run (it then belongs to this start)."""
        return self.start_id

    # ----------------------------------------------------------------- handlers
    def requirements_text(self, choice: Optional[str], pano: Any, depth: Any, normals: Any) -> Tuple[str, bool]:
        """What the selected checkpoint needs, and whether Run can start."""
        return messages.requirements_text(self.checkpoints, choice, pano, depth, normals,
                                          estimates=self.backend.depth_estimator != "none")

    def requirements(self, choice: Optional[str], pano: Any, depth: Any, normals: Any):
        """What the checkpoint needs, how long a Run will take when that is long, and Run's state."""
        text, ok = self.requirements_text(choice, pano, depth, normals)
        try:
            note = self.backend.run_time_note(self.checkpoints.concrete(choice, messages.given_maps(pano, depth, normals)),
                                              estimates_depth=pano is not None and depth is None)
        except Exception:  # noqa: BLE001  (an estimate must never block the picker)
            log.exception("run time estimate failed")
            note = ""
        return (f"{text}\n\n{note}" if note else text), gr.Button(interactive=ok)

    def input_changed(self, kind: str, value: Any, present: Optional[Dict[str, bool]], choice: Optional[str]):
        """One input changed: record whether it is set, then say what the checkpoint still needs."""
        present = {**(present or {}), kind: value is not None}
        return (present, *self.checkpoint_changed(choice, present))

    def checkpoint_changed(self, choice: Optional[str], present: Optional[Dict[str, bool]]):
        have = present or {}
        return self.requirements(choice, *(True if have.get(k) else None for k in ("pano", "depth", "normals")))

    def pick_example(self, evt: gr.SelectData):
        """An example thumbnail was clicked: its panorama, depth and normals fill the inputs."""
        return tuple(self.examples[evt.index])

    def on_upload(self, pano: Any, s: Optional[Session], request: gr.Request = None):
        """A new panorama replaces the session: show it, clear the results (the old session's
        memory and files go at once). The preview is a file of the client's (files.py)."""
        if s is not None:
            self.backend.store.close(s)
        ui = self.ui
        client = getattr(request, "session_hash", None)
        # what is wrong with the picture (not 2:1) or worth knowing (an alpha channel), said
        # here; "Press Run" is the requirements line's, which knows whether Run can start
        try:
            notes = check_upload(pano)
        except InputError as exc:
            log.info("panorama refused on upload: %s", messages.user_message(exc))
            notes, pano = [messages.status_error(messages.user_message(exc))], None
        else:
            notes = [f"⚠ {messages.message_markdown(n)}" for n in notes]
        preview = preview_image(pano)
        status = "\n\n".join(notes)
        if preview is not None and client:
            try:
                preview = self.backend.store.write_preview(client, render.view_jpeg(preview))
            except Exception as exc:  # noqa: BLE001  (a full disk: said on the status line)
                if not messages.disk_full(exc):
                    raise
                log.info("on_upload refused (%s): %s", type(exc).__name__, messages.DISK_FULL)
                preview, status = None, messages.status_error(messages.DISK_FULL)
        return {ui.session: None, ui.view: preview, ui.viewer: None, ui.legend: render.legend_html([]), ui.plot: None,
                ui.candidates: gr.Radio(choices=NO_CANDIDATES, value=None, interactive=False),
                ui.cls: gr.Dropdown(choices=[], value=None), ui.info: None, ui.downloads: None,
                ui.run_status: status, ui.edit_status: "", ui.cards: cards_html(None),
                ui.accepted: input_path(pano)}

    def segment(self, panorama, depth=None, normals=None, checkpoint=None, depth_scale=0, max_depth=10,
                opacity=0.55, estimate_3d=True, session=None, request: gr.Request = None,
                progress=gr.Progress(track_tqdm=True)):
        """Segments a panorama: loads the checkpoint on first use, reuses cached embeddings.
        Depth and normals are optional (their None defaults make them optional for API
        clients too): "auto" takes the checkpoint for the maps given."""
        t_start = time.perf_counter()
        s, _ = self.backend.segment(panorama, depth, normals, checkpoint, depth_scale, max_depth, progress,
                                    previous=session, client=getattr(request, "session_hash", None),
                                    estimate_3d=bool(estimate_3d))
        progress(0.92, desc="Rendering")
        with self.backend.store.use(s):
            t1 = time.perf_counter()
            out = self.bundle(s, opacity, clear_downloads=True)
            timings = {**s.timings, "render": time.perf_counter() - t1}
            total = time.perf_counter() - t_start
            s.timings["total"] = total
            out[self.ui.run_status] = messages.run_message(s, total, timings)
            return out

    def not_segmented(self, server_start: Optional[str] = None) -> Dict[Any, Any]:
        """What a click before Run shows: every output as it is, and on the edit status what to
        do (the server's restart when that is why there is no session). Gradio takes an empty
        dict for one value, not for "nothing changed", and answers with its own error about
        missing output values."""
        return {self.ui.edit_status: messages.RESTARTED_SINCE if self.restarted(server_start)
                else messages.CLICK_BEFORE_RUN}

    def click(self, s, mode, shift, opacity, server_start, evt: gr.SelectData):
        """A click on the ERP view (display pixels): a new selection, or with Shift held (`shift`,
        which the page's SHIFT_INPUT_JS fills in) one more point of the current one."""
        if s is None:
            return self.not_segmented(server_start)
        with self.backend.store.use(s):
            self.backend.click(s, evt.index[0], evt.index[1], _click_kind(mode), add=shift is True)
            return self.bundle(s, opacity)

    def click_lonlat(self, s, mode, opacity, server_start, evt: gr.EventData):
        """A click in the 360° viewer: its direction (lon, lat in degrees) as the ERP click's
        prompt, Shift (`shift: true` in the event) as there."""
        if s is None:
            return self.not_segmented(server_start)
        data = getattr(evt, "_data", None) or {}
        with self.backend.store.use(s):
            self.backend.click_lonlat(s, data.get("lon"), data.get("lat"), _click_kind(mode),
                                      add=data.get("shift") is True)
            return self.bundle(s, opacity)

    def prompt(self, prompt_json, s, opacity, server_start=None):
        """Prompts SAM's decoder with explicit coordinates (JSON: points, labels, box, append;
        or points_lonlat / box_lonlat in degrees)."""
        with self.backend.store.use(self.live(s, server_start)):
            self.backend.prompt(s, prompt_json)
            return self.bundle(s, opacity)

    def select_candidate(self, index, s, opacity, server_start=None):
        """Selects candidate mask 0, 1 or 2 of the last prompt."""
        with self.backend.store.use(self.live(s, server_start)):
            self.backend.select(s, index)
            return self.bundle(s, opacity)

    def assign(self, class_name, candidate, s, opacity, server_start=None):
        """Writes a class (name or index; default: majority under the mask) into the map under the
        selected candidate (or candidate 0-2)."""
        with self.backend.store.use(self.live(s, server_start)):
            self.backend.assign(s, class_name, candidate)
            return self.bundle(s, opacity, clear_downloads=True)

    def undo(self, s, opacity, server_start=None):
        """Reverts the last prompt change or edit."""
        with self.backend.store.use(self.live(s, server_start)):
            what = self.backend.undo(s)
            if what is None:
                gr.Info(messages.html_text("Nothing to undo."))
            return self.bundle(s, opacity, clear_downloads=(what == "labels"))

    def clear(self, s, opacity, server_start=None):
        """Removes all prompts and candidate masks (undoable)."""
        with self.backend.store.use(self.live(s, server_start)):
            self.backend.clear(s)
            return self.bundle(s, opacity)

    def refine_instances(self, points_per_side, s, opacity, server_start=None, request: gr.Request = None,
                         progress=gr.Progress()):
        """SAM's automatic instances on the cached embeddings; each takes its majority class."""
        with self.backend.store.use(self.live(s, server_start)):
            n, changed = self.backend.refine_instances(s, points_per_side, progress)
            gr.Info(messages.html_text(f"{n} SAM instances, {changed} pixels changed class "
                                       f"({s.timings['instances']:.1f} s). Undo reverts this."))
            return self.bundle(s, opacity, clear_downloads=True)

    def restyle(self, s, opacity):
        """Opacity changed: re-render the pictures only."""
        if s is None or s.closed:
            return gr.skip()  # both pictures as they are ({} would be one value to Gradio)
        with self.backend.store.use(s):
            out = self.bundle(s, opacity)
            return {k: v for k, v in out.items() if k in (self.ui.view, self.ui.viewer)}

    def tab_closed(self, request: gr.Request):
        """The browser tab (or API client) went away: its session's memory and files go now,
        and its heavy jobs still waiting for their turn end without running."""
        self.gate.cancel(getattr(request, "session_hash", None))
        self.backend.store.close_client(getattr(request, "session_hash", None))

    def add_class(self, name, color, s, opacity, server_start=None):
        """Adds a user's class (a name and an optional colour) to the session's class table and
        picks it in the class list; the name field is emptied."""
        with self.backend.store.use(self.live(s, server_start)):
            index, new = s.add_class(name, color)
            out = self.bundle(s, opacity)
            out[self.ui.cls] = gr.Dropdown(choices=s.class_table.choices(), value=s.classes[index])
            word = "added" if new else "is already in the list"
            out[self.ui.edit_status] = (f"Class **{messages.markdown_text(s.classes[index])}** {word} (index {index}): "
                                        f"select a mask and press Assign. · {messages.edit_status(s)}")
            out[self.ui.new_name] = ""
            return out

    def export_files(self, s, server_start=None, progress=gr.Progress()):
        """Writes the downloads at the input size: the files and the session summary with statistics."""
        with self.backend.store.use(self.live(s, server_start)):
            files = self.backend.export(s, progress)
            return {self.ui.downloads: files, self.ui.info: {**s.summary(), "stats": s.stats()}}


CSS = (STATIC / "page.css").read_text()

INTRO = ("# PanoSAMic Studio\n"
         "Segment a 360° panorama, then click to select a region and give it a class (SAM on cached "
         "embeddings: clicks are fast).")

KEYS_TEXT = ("**Keys** (outside text fields): <kbd>1</kbd> <kbd>2</kbd> <kbd>3</kbd> pick a candidate · "
             "<kbd>Enter</kbd> assign · <kbd>Ctrl</kbd>+<kbd>Z</kbd> undo · <kbd>N</kbd> negative point on/off · "
             "<kbd>B</kbd> box on/off · <kbd>Esc</kbd> clear the prompts · in the 360° view: arrows turn, "
             "<kbd>+</kbd>/<kbd>-</kbd> zoom, <kbd>0</kbd> home · Shift-click adds a point")
OWN_CLASS_TEXT = ("Your own class: type a new name in *Class* and press **Assign** (its colour is chosen for you), "
                  "or give it a colour here and press **Add class**. The checkpoint's classes keep their numbers; "
                  "yours follow them in the label PNG and the export's class table.")

# The 360° viewer's markup; static/viewer.js draws into it (see that file for what it does).
VIEWER_HTML = """<div class="pv">
<canvas class="pv-gl" tabindex="0" aria-label="360° view: drag to turn, wheel or pinch to zoom, arrow keys turn, click to select, Shift-click to add a point"></canvas>
<canvas class="pv-compass" title="Where you look (white) and the seam, lon ±180° (red). Click to reset the view."></canvas>
<div class="pv-title">360° view · drag to turn · click: new selection · Shift-click: add</div>
<div class="pv-readout"></div><div class="pv-tip"></div>
<div class="pv-empty">Press Run, then look around here: drag to turn, wheel or pinch to zoom, click to prompt SAM.</div>
</div>"""


CLOUD_LABEL = ("Point cloud (3D, needs depth): open to see the classes at their distances; "
               "redrawn after each edit while open")

MAX_UPLOAD = "512mb"     # the largest legal input: float32 8192x4096x3 normals as .npy (403 MB)
LIGHT_CONCURRENCY = 8  # clicks and edits served at once (each takes milliseconds of CPU)
HEAVY_NICE = 19         # how much lower the CPU priority of heavy jobs is (Linux nice levels)
# Runs and SAM instances let in at once: the backend still decodes one upload and computes one
# encoding at a time (StudioBackend's locks), but a second user's bad file is refused from its
# header or content while another Run encodes, instead of waiting in the queue behind it.
HEAVY_CONCURRENCY = 2
# Heavy events let past Gradio's first-come-first-served queue beyond those, to wait in the
# studio's FairGate, which knows their client: one running and one waiting per client, the
# waiting ones in turns. Each holds a worker thread while it waits (Gradio has 40).
HEAVY_WAITING = 6


def _closer(store):
    def close(s: Optional[Session]) -> None:
        if s is not None:
            store.close(s)

    return close


def build_ui(studio: Studio) -> gr.Blocks:
    """The page: the semantic map first (the main canvas, with the labelling controls right
    below it: candidates with thumbnails, class, Assign / Undo, the keys), the 360° viewer and the
    inputs beside it, the secondary panels (legend, downloads, point cloud, API) below."""
    ck = studio.checkpoints
    start_value = ck.initial()   # Demo when the default needs a download and the Hub cannot be reached
    with gr.Blocks(title="PanoSAMic Studio", delete_cache=(3600, 7200), fill_width=True) as demo:
        # The store owns the session's lifetime: no time_to_live here, so that only the store
        # decides when an idle session goes (by its last use, not by when Gradio last stored
        # it); Gradio's deletion of the state (a closed tab) closes it too.
        store = studio.backend.store
        session = gr.State(None, delete_callback=_closer(store))
        # the server start that served this page (Studio.start_id): the last input of every event
        # on the session, so that one from before a restart is told so (API clients send the
        # value they read when they connected)
        server_start = gr.Textbox(studio.start_id, visible=False, label="Server start (filled in by the page)")
        gr.Markdown(INTRO, elem_id="top-bar")
        with gr.Row(equal_height=False, elem_id="workspace"):
            with gr.Column(scale=13, min_width=340, elem_id="canvas-column"):
                view = gr.Image(label="Semantic map — click to select", interactive=False, elem_id="pano-view",
                                buttons=["download", "fullscreen"], format="jpeg")
                with gr.Row(equal_height=False, elem_id="label-bar"):
                    with gr.Column(scale=3, min_width=300):
                        cards = gr.HTML(cards_html(None), elem_id="candidate-cards", label="Mask candidates")
                        candidates = gr.Radio(NO_CANDIDATES, value=None, label="Mask candidates (keys 1 2 3)",
                                              interactive=False, elem_id="candidates", container=False)
                        gr.Markdown(f"{RULE_TEXT} {FIT_TEXT}", elem_classes="hint", elem_id="candidate-rule")
                    with gr.Column(scale=2, min_width=280):
                        with gr.Row(equal_height=True):
                            cls = gr.Dropdown(choices=[], label="Class (or type your own)", allow_custom_value=True,
                                              elem_id="class", scale=3)
                            assign = gr.Button("Assign", variant="primary", elem_id="assign-button", scale=1,
                                               min_width=90)
                        with gr.Row():
                            undo = gr.Button("↶ Undo", elem_id="undo-button", size="sm", min_width=60)
                            clear = gr.Button("Clear prompts", elem_id="clear-button", size="sm", min_width=60)
                            refine = gr.Button("Refine with SAM instances", size="sm", min_width=60)
                        edit_status = gr.Markdown(elem_id="edit-status", label="Edit status")
                        mode = gr.Radio(CLICK_MODES, value=CLICK_MODES[0], label=CLICK_LABEL, info=CLICK_INFO,
                                        elem_id="click-mode")
                        # whether Shift was held on the map's click: SHIFT_INPUT_JS fills it in
                        shift = gr.Checkbox(False, visible=False, label="Shift held (filled in by the page)")
                gr.Markdown(KEYS_TEXT, elem_classes=["hint", "keys"], elem_id="keys")
            with gr.Column(scale=8, min_width=320, elem_id="side-column"):
                viewer = gr.HTML(None, html_template=VIEWER_HTML, js_on_load=VIEWER_JS.read_text(),
                                 elem_id="pano-viewer", label="360° view")
                with gr.Tabs(elem_id="input-tabs"):
                    with gr.Tab("Your panorama", id="upload", render_children=True):
                        pano = panorama_input(label="Panorama (equirectangular, 2:1)", type="filepath",
                                              image_mode=None, sources=["upload", "clipboard"], height=140,
                                              elem_id="panorama-input")
                    with gr.Tab("Depth, normals", id="maps", render_children=True):
                        with gr.Row():
                            depth = gr.File(label="Depth (16-bit PNG mm, .npy/.exr m)",
                                            file_types=[".png", ".npy", ".exr", ".tif", ".tiff"], height=110)
                            normals = gr.File(label="Normals (RGB PNG)", file_types=["image"], height=110)
                    with gr.Tab("Examples", id="examples-tab", render_children=True, visible=bool(studio.examples)):
                        examples = gr.Gallery([(row[0], example_caption(row)) for row in studio.examples],
                                              label="Photos (RGB only) and rendered rooms (RGB-D-N): click one",
                                              show_label=False, columns=3, height=260, object_fit="cover",
                                              allow_preview=False, interactive=False, elem_id="examples")
                    with gr.Tab("Settings", id="settings", render_children=True):
                        depth_scale = gr.Number(value=0, minimum=0, label="Depth scale (metres per stored unit)",
                                                info="0 = auto: PNG in millimetres, .npy/.exr in metres")
                        max_depth = gr.Slider(1, 50, value=10, step=0.5, label="Max depth T (m)",
                                              info="Depth encoding range of the model (10 m for indoor rooms)")
                        estimate_3d = gr.Checkbox(value=True, label="Estimate depth for the 3D view",
                                                  info="Without a depth map, an RGB checkpoint's run also estimates "
                                                       "depth from the photo, for the point cloud and the export")
                        pps = gr.Slider(4, 32, value=16, step=1, label="SAM instance grid (points per side)",
                                        info="For 'Refine with SAM instances'; fewer points are faster")
                        opacity = gr.Slider(0, 1, value=0.55, step=0.05, label="Opacity of the classes on the map")
                checkpoint = gr.Dropdown(choices=ck.choices(), value=start_value, allow_custom_value=True,
                                         label="Checkpoint (released PanoSAMic weights, a demo, or type a Hub subfolder)",
                                         elem_id="checkpoint")
                need = gr.Markdown(studio.requirements_text(start_value, None, None, None)[0], elem_id="requirements")
                run = gr.Button("Run", variant="primary", interactive=False, elem_id="run-button")
                run_status = gr.Markdown(elem_id="run-status", label="Run status")
        with gr.Row(equal_height=False, elem_id="results"):
            with gr.Column(scale=2, min_width=300):
                legend = gr.HTML(render.legend_html([]), label="Legend", elem_id="legend")
                with gr.Row(equal_height=True, elem_id="own-class"):
                    new_name = gr.Textbox(label="New class", placeholder="e.g. bed", max_length=40, scale=3,
                                          elem_id="new-class-name")
                    new_color = gr.ColorPicker(None, label="Colour", scale=1, min_width=80, elem_id="new-class-color")
                    add_class = gr.Button("Add class", scale=1, min_width=90, elem_id="add-class-button")
                gr.Markdown(OWN_CLASS_TEXT, elem_classes="hint")
                export = gr.Button("Export (full resolution)", size="sm", elem_id="export-button")
                downloads = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="downloads")
            with gr.Column(scale=3, min_width=300):
                # drawn on demand: plotly redraws all 30 000 points for every new figure (seconds
                # without a GPU), so the cloud comes only while this is open (Studio.page_cloud)
                with gr.Accordion(CLOUD_LABEL, open=False, elem_id="pano-3d-box") as cloud_box:
                    plot = gr.Plot(label="Point cloud: hover for class and distance", elem_id="pano-3d")
                with gr.Accordion("Prompt by coordinates / API details", open=False):
                    prompt_json = gr.Textbox(label="Prompt (JSON, input-image pixels or degrees)", lines=2,
                                             value='{"points": [[100, 50]], "labels": [1]}',
                                             info='{"points": [[x, y], ...], "labels": [1 or 0, ...], "box": [x1, y1, x2, y2], '
                                                  '"append": false}; x1 > x2 wraps across the seam. Or by direction in '
                                                  'degrees: "points_lonlat": [[lon, lat], ...], "box_lonlat": [lon1, lat1, lon2, lat2]')
                    apply_prompt = gr.Button("Apply prompt", size="sm")
                    info = gr.JSON(label="Session (summary, statistics)")

        cloud_shown = gr.State(False)
        studio.ui = Components(session, view, viewer, legend, plot, candidates, cls, info, downloads, run_status,
                               edit_status, cloud_shown, cards, new_name)
        outputs = studio.ui.outputs()
        style = [opacity]
        # Run, SAM instances and export run at a lower CPU priority than clicks and edits, so
        # that a click stays quick while other users' heavy jobs keep the cores busy.
        job = functools.partial(friendly, shutdown=studio.shutdown, nice=HEAVY_NICE)
        heavy_job = functools.partial(job, gate=studio.gate)  # Run and SAM instances: in turns per client
        quick_job = functools.partial(friendly, shutdown=studio.shutdown, quick=True)  # clicks and edits
        # Run and SAM instances are heavy; clicks and edits are light and must not wait behind them.
        # Progress and errors show on one status line each, not on every output panel.
        heavy = dict(concurrency_id="heavy", concurrency_limit=HEAVY_CONCURRENCY + HEAVY_WAITING,
                     show_progress_on=[run_status])
        light = dict(concurrency_id="light", concurrency_limit=LIGHT_CONCURRENCY, show_progress="minimal",
                     show_progress_on=[edit_status])
        files_q = dict(concurrency_id="export", concurrency_limit=1, show_progress_on=[downloads])

        # Each input reports only its own presence: when an example fills all three at once,
        # the other inputs' events still see the panorama as empty, and whichever answer came
        # last would leave Run disabled. Served one at a time per session (shared state).
        present = gr.State({})
        quiet = dict(api_visibility="private", concurrency_id="requirements", concurrency_limit=1,
                     show_progress="hidden")
        for kind, comp in (("depth", depth), ("normals", normals)):
            comp.change(functools.partial(studio.input_changed, kind), [comp, present, checkpoint],
                        [present, need, run], **quiet)
        checkpoint.change(studio.checkpoint_changed, [checkpoint, present], [need, run], **quiet)
        # The panorama's presence is reported once the upload was accepted: two listeners of its
        # change would each read (and refuse) a bad file, and the page stacked both refusals.
        # on_upload owns `accepted` (the panorama when it can be used, else None: a 4:3 picture
        # is said on the run status and leaves Run disabled)
        accepted = studio.ui.accepted = gr.State(None)
        pano.change(studio.on_upload, [pano, session], [*outputs, accepted], api_visibility="private",
                    **{**light, "show_progress": "hidden"}).success(
            functools.partial(studio.input_changed, "pano"), [accepted, present, checkpoint], [present, need, run],
            **quiet)

        examples.select(studio.pick_example, None, [pano, depth, normals], api_visibility="private",
                        show_progress="hidden")

        # Each action is two events on the same handler: the page's own (its refusals land whole
        # on the run or edit status line) and the named API endpoint on a hidden button (its
        # refusals are errors, as API clients expect). Both share one queue and one session.
        # The page's events leave the point cloud out: it follows them only while its accordion
        # is open (Studio.page_cloud); the API's answers carry it (Studio.with_cloud).
        def action(trigger, fn, wrap, inputs, outs, api_name, status, queue):
            with_plot = plot in outs
            page_outs = [o for o in outs if o is not plot] + ([status] if status not in outs else [])
            page = trigger(wrap(fn, status=status), inputs, page_outs,
                           api_name=f"page_{api_name}", api_visibility="private", **queue)
            if with_plot:
                page.then(quick_job(studio.page_cloud), [session, cloud_shown], plot, js=AFTER_PICTURE_JS,
                          api_visibility="private", trigger_mode="always_last", **{**light, "show_progress": "hidden"})
            hidden = gr.Button(visible=False, elem_id=f"api-{api_name}")
            api_fn = studio.with_cloud(fn) if with_plot else fn
            return page, hidden.click(wrap(api_fn), inputs, outs, api_name=api_name, **queue)

        start = [server_start]
        with gr.Row(visible=False):
            for run_event in action(run.click, studio.segment, heavy_job,
                                    [pano, depth, normals, checkpoint, depth_scale, max_depth, *style, estimate_3d,
                                     session],
                                    outputs, "segment", run_status, heavy):
                run_event.success(studio.current_start, None, server_start, api_visibility="private",
                                  show_progress="hidden")
            action(apply_prompt.click, studio.prompt, quick_job, [prompt_json, session, *style, *start], outputs,
                   "prompt", edit_status, light)
            action(candidates.input, studio.select_candidate, quick_job, [candidates, session, *style, *start],
                   outputs, "select_candidate", edit_status, light)
            action(assign.click, studio.assign, quick_job, [cls, candidates, session, *style, *start], outputs,
                   "assign", edit_status, light)
            action(add_class.click, studio.add_class, quick_job, [new_name, new_color, session, *style, *start],
                   [*outputs, new_name], "add_class", edit_status, light)
            action(undo.click, studio.undo, quick_job, [session, *style, *start], outputs, "undo", edit_status,
                   light)
            action(clear.click, studio.clear, quick_job, [session, *style, *start], outputs, "clear", edit_status,
                   light)
            action(refine.click, studio.refine_instances, heavy_job, [pps, session, *style, *start], outputs,
                   "refine_instances", run_status, heavy)
            action(export.click, studio.export_files, job, [session, *start], [downloads, info], "export",
                   edit_status, files_q)
        view.select(quick_job(studio.click, status=edit_status), [session, mode, shift, *style, *start], outputs,
                    js=SHIFT_INPUT_JS, api_visibility="private", **light)
        viewer.pano_click(quick_job(studio.click_lonlat, status=edit_status), [session, mode, *style, *start],
                          outputs, api_visibility="private", **light)
        cloud_box.expand(quick_job(studio.show_cloud), session, [cloud_shown, plot], api_visibility="private",
                         **{**light, "show_progress": "hidden"})
        cloud_box.collapse(lambda: False, None, cloud_shown, api_visibility="private",
                           **{**light, "show_progress": "hidden"})
        demo.unload(studio.tab_closed)
        opacity.change(quick_job(studio.restyle), [session, *style], [view, viewer], api_visibility="private", **light)
    return demo


def _warm_up(backend: StudioBackend, stop: Optional[threading.Event] = None, preencode: bool = False,
             eta_probe: bool = True) -> None:
    """Start-up's background work: the imports and, with `eta_probe`, the device's speed (at
    normal priority: it is measured), then, with `preencode`, the examples' embeddings at the
    lowest CPU priority (StudioBackend.preencode_examples: users' runs go first) until done or
    `stop` is set."""
    try:
        backend.warm_up(probe=eta_probe)
    except Exception:  # noqa: BLE001  (reported properly on Run)
        log.exception("warming up failed")
    if not preencode or stop is None or stop.is_set():
        return
    lowest_priority()  # this thread only, and the threads it starts (torch's)
    try:
        backend.preencode_examples(stop)
    except Exception:  # noqa: BLE001  (an example a user runs reports its problem properly)
        log.exception("pre-encoding the examples failed")


def _answers_settled(demo: gr.Blocks) -> Callable[[], bool]:
    """A check for `Shutdown.drain`: True when Gradio's queue has no event waiting or running,
    every message it queued was taken by its client's stream, and no HTTP request started or
    finished since the previous call (a client fetches a result's files after its message).
    Reads gradio 6.31's Queue and uvicorn's server state (pinned in requirements.txt): neither
    has a public call for this."""
    last: List[Any] = [None]

    def settled() -> bool:
        queue, server = demo._queue, getattr(demo.server, "server_state", None)
        activity = None if server is None else (server.total_requests, len(server.tasks))
        quiet, last[0] = activity == last[0], activity
        try:
            return quiet and len(queue) == 0 and queue.get_active_worker_count() == 0 and all(
                pending.empty() for pending in list(queue.pending_messages_per_session.values()))
        except RuntimeError:  # the event loop changed the dict meanwhile: ask again
            return False

    return settled


def _stop_gracefully(studio: Studio, demo: gr.Blocks, grace_s: float, signum: int, _frame: Any) -> None:
    """The SIGTERM handler (main thread): drains the studio's jobs (panosamic.studio.shutdown),
    runs the exit handlers (the export folders go) and ends the process with status 0. A second
    SIGTERM leaves the first one's bounded wait alone."""
    if studio.shutdown.closing:
        return
    studio.stop_background.set()  # the pre-encoder gives way at its next ViT block
    log.warning("%s: shutting down; new jobs are refused, %d running job(s) get up to %g s",
                signal.Signals(signum).name, studio.shutdown.running, grace_s)
    cut = studio.shutdown.drain(grace_s, settled=_answers_settled(demo))
    if cut is None:
        return
    if cut:
        log.warning("%d job(s) were cut short and told to press Run again", cut)
    # Threads may still be inside torch (a job cut short, the start-up speed measurement): the
    # interpreter's own exit would then abort in C++ destructors ("terminate called without an
    # active exception", status 134). So the exit handlers run here and the process ends at once.
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main(argv: Optional[Sequence[str]] = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = parse_args(argv)
    studio = Studio(settings)
    store = studio.backend.store
    serving.use_root(store)  # Gradio's cache in the app's own root, before the page's components exist
    demo = build_ui(studio)
    serving.track_events(demo, store)  # the files each event names become its client's
    allowed = [str(Path(settings.examples).resolve())] if Path(settings.examples).is_dir() else []
    # Import torch and the model code, and measure this device's speed (for the run time
    # shown before Run), while the page is already being served; then pre-encode the examples.
    threading.Thread(target=_warm_up, args=(studio.backend, studio.stop_background, settings.preencode,
                                            settings.eta_probe),
                     name="warm-up", daemon=True).start()
    demo.queue(default_concurrency_limit=LIGHT_CONCURRENCY)
    studio.backend.store.start_sweeper()
    atexit.register(studio.backend.close)  # export folders go at shutdown (SIGTERM included, see below)
    atexit.register(studio.stop_background.set)  # first (atexit runs last-registered first)
    signal.signal(signal.SIGTERM, functools.partial(_stop_gracefully, studio, demo, settings.shutdown_grace_s))
    demo.launch(
        server_name=settings.host, server_port=settings.port, share=settings.share,
        allowed_paths=allowed, css=CSS, head=PAGE_HEAD + CONNECTION_HEAD + f"<script>{HOVER_JS.read_text()}</script>",
        show_error=True, theme=gr.themes.Soft(), max_file_size=MAX_UPLOAD,
        # the upload route, bounded and cleaned up; the live preview's routes
        app_kwargs=serving.app_kwargs(store, demo, extra=[(HoverRoutes, {"service": studio.hover})]),
    )


if __name__ == "__main__":
    from panosamic.allocator import SERVER_ARENAS, use_fast_allocator

    # restarts the process once with tcmalloc when it is installed; else glibc, tuned, with its
    # arenas capped: the server's many threads would each keep freed memory (panosamic/allocator.py)
    use_fast_allocator(arenas=SERVER_ARENAS)
    main()
