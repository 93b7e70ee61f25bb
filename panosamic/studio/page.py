"""The page's handlers: `Studio` answers each event of the page (and of its API) by calling
`StudioBackend` and returns {component: value} for what changed; app.py lays the page out and
wires the events to these methods. Everything per user lives in the session (a gr.State
holding a `Session`); what all users share (models, embeddings, sessions' lifetime) in the
backend. This module and refusals.py are the studio's Gradio side: only app.py imports them.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import gradio as gr
from gradio.components.plot import PlotData  # the point cloud arrives as plotly JSON

from ..errors import InputError
from . import messages, render
from .backend import StudioBackend
from .candidates import cards_html, radio_choices
from .fair import FairGate
from .hover import ORT_CDN, HoverService
from .session import Session
from .settings import env, zero_gpu_lender
from .shutdown import Shutdown
from .store import SessionExpired
from .uploads import check_upload, input_path, preview_image

log = logging.getLogger("panosamic.app")

#: The repository: the page's default onnxruntime-web copy is what `npm ci` puts in node_modules.
ROOT = Path(__file__).resolve().parents[2]
ORT_DIR = ROOT / "node_modules" / "onnxruntime-web" / "dist"
CLICK_MODES = ["Positive point", "Negative point", "Box (2 clicks)"]
NO_CANDIDATES = [("#1", 0), ("#2", 1), ("#3", 2)]

# The page's queues (app.py wires the events to them).
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
        self.hover = HoverService(self.backend.registry.get, cache_dir=env("DECODER_CACHE"),
                                  ort_dir=Path(env("ORT_DIR", ORT_DIR)),
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
        changed, cloud = render.point_cloud_update(s)
        if not changed:
            return {}
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
            s.record_time("total", total)
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


__all__ = ["Studio", "Components", "CLICK_MODES", "NO_CANDIDATES", "LIGHT_CONCURRENCY", "HEAVY_CONCURRENCY",
           "HEAVY_WAITING", "HEAVY_NICE"]
