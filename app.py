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

This file lays the page out and wires its events; the app's logic lives in the panosamic.studio
package: the settings in settings.py, the page's handlers in page.py and their refusals in
refusals.py, and under them checkpoint choices, lazy model loading, input checks, sessions,
messages, segment / click / prompt / edit / export, pictures and files. Models load lazily on
the first Run, so the page opens at once (and also offline or without weights).
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, List, Optional, Sequence

# Gradio summarises its queue's last 10 000 events with pandas after every event (4-12 ms of
# CPU per click here, for its monitoring page): every 200 events is often enough.
os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "200")

import gradio as gr  # noqa: E402

from panosamic.studio import messages, render, serving  # noqa: E402
from panosamic.studio.backend import StudioBackend  # noqa: E402
from panosamic.studio.candidates import FIT_TEXT, RULE_TEXT, cards_html  # noqa: E402
from panosamic.studio.hover import HoverRoutes  # noqa: E402
from panosamic.studio.page import (CLICK_MODES, HEAVY_CONCURRENCY, HEAVY_NICE, HEAVY_WAITING,  # noqa: E402
                                   LIGHT_CONCURRENCY, NO_CANDIDATES, Components, Studio)
from panosamic.studio.refusals import friendly, panorama_input  # noqa: E402
from panosamic.studio.session import Session  # noqa: E402
from panosamic.studio.settings import parse_args  # noqa: E402
from panosamic.studio.shutdown import lowest_priority  # noqa: E402
from panosamic.studio.uploads import example_caption  # noqa: E402

log = logging.getLogger("panosamic.app")

ROOT = Path(__file__).resolve().parent
STATIC = ROOT / "panosamic" / "studio" / "static"
VIEWER_JS = STATIC / "viewer.js"
CONNECTION_JS = STATIC / "connection.js"
HOVER_JS = STATIC / "hover.js"  # the live mask preview, in the head


# ============================================================================ the page's texts and scripts

CLICK_LABEL = "Click: new selection · Shift-click: add a point (in either view)"
CLICK_INFO = ("Negative point: a click takes a part away from the selection. Box: two clicks start a new "
              "selection (Shift keeps the points). After Assign the next click starts afresh.")
# gr.Image's select event says where, not whether Shift was held: the page's script
# (static/page.js, in the page's head) notes the modifier of every pointer press and the map's
# select event hands it in as its third input (SHIFT_INPUT_JS runs in the browser before the
# event is sent). The 360° viewer sends it itself (static/viewer.js: shift in its pano_click event).
# The same script gives the page its keys (KEYS_TEXT) and makes the candidate cards clickable.
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
PROMPT_INFO = ('{"points": [[x, y], ...], "labels": [1 or 0, ...], "box": [x1, y1, x2, y2], "append": false}; '
               'x1 > x2 wraps across the seam. Or by direction in degrees: "points_lonlat": [[lon, lat], ...], '
               '"box_lonlat": [lon1, lat1, lon2, lat2]')

MAX_UPLOAD = "512mb"     # the largest legal input: float32 8192x4096x3 normals as .npy (403 MB)


# ============================================================================ the page

def _closer(store):
    def close(s: Optional[Session]) -> None:
        if s is not None:
            store.close(s)

    return close



def build_ui(studio: Studio) -> gr.Blocks:
    """The page: the semantic map first (the main canvas, with the labelling controls right
    below it: candidates with thumbnails, class, Assign / Undo, the keys), the 360° viewer and the
    inputs beside it, the secondary panels (legend, downloads, point cloud, API) below. The
    components are made in this order (Gradio numbers them so), then the events are wired."""
    with gr.Blocks(title="PanoSAMic Studio", delete_cache=(3600, 7200), fill_width=True) as demo:
        page = _session_inputs(studio)
        gr.Markdown(INTRO, elem_id="top-bar")
        with gr.Row(equal_height=False, elem_id="workspace"):
            with gr.Column(scale=13, min_width=340, elem_id="canvas-column"):
                _canvas(page)
            with gr.Column(scale=8, min_width=320, elem_id="side-column"):
                _side_column(page, studio)
        with gr.Row(equal_height=False, elem_id="results"):
            _results(page)
        page.cloud_shown = gr.State(False)
        studio.ui = Components(page.session, page.view, page.viewer, page.legend, page.plot, page.candidates,
                               page.cls, page.info, page.downloads, page.run_status, page.edit_status,
                               page.cloud_shown, page.cards, page.new_name)
        queues = _queues(studio)
        _wire_inputs(page, studio, queues)
        _wire_actions(page, studio, queues)
        _wire_views(page, studio, queues, demo)
    return demo


# ---------------------------------------------------------------------------- the page's parts

def _session_inputs(studio: Studio) -> SimpleNamespace:
    """The hidden inputs of every event on a session; returns the namespace the page's parts
    fill with their components."""
    # The store owns the session's lifetime: no time_to_live here, so that only the store
    # decides when an idle session goes (by its last use, not by when Gradio last stored
    # it); Gradio's deletion of the state (a closed tab) closes it too.
    session = gr.State(None, delete_callback=_closer(studio.backend.store))
    # the server start that served this page (Studio.start_id): the last input of every event
    # on the session, so that one from before a restart is told so (API clients send the
    # value they read when they connected)
    server_start = gr.Textbox(studio.start_id, visible=False, label="Server start (filled in by the page)")
    return SimpleNamespace(session=session, server_start=server_start)


def _canvas(page: SimpleNamespace) -> None:
    """The semantic map and, right below it, the labelling controls and the keys."""
    page.view = gr.Image(label="Semantic map — click to select", interactive=False, elem_id="pano-view",
                         buttons=["download", "fullscreen"], format="jpeg")
    with gr.Row(equal_height=False, elem_id="label-bar"):
        with gr.Column(scale=3, min_width=300):
            page.cards = gr.HTML(cards_html(None), elem_id="candidate-cards", label="Mask candidates")
            page.candidates = gr.Radio(NO_CANDIDATES, value=None, label="Mask candidates (keys 1 2 3)",
                                       interactive=False, elem_id="candidates", container=False)
            gr.Markdown(f"{RULE_TEXT} {FIT_TEXT}", elem_classes="hint", elem_id="candidate-rule")
        with gr.Column(scale=2, min_width=280):
            with gr.Row(equal_height=True):
                page.cls = gr.Dropdown(choices=[], label="Class (or type your own)", allow_custom_value=True,
                                       elem_id="class", scale=3)
                page.assign = gr.Button("Assign", variant="primary", elem_id="assign-button", scale=1, min_width=90)
            with gr.Row():
                page.undo = gr.Button("↶ Undo", elem_id="undo-button", size="sm", min_width=60)
                page.clear = gr.Button("Clear prompts", elem_id="clear-button", size="sm", min_width=60)
                page.refine = gr.Button("Refine with SAM instances", size="sm", min_width=60)
            page.edit_status = gr.Markdown(elem_id="edit-status", label="Edit status")
            page.mode = gr.Radio(CLICK_MODES, value=CLICK_MODES[0], label=CLICK_LABEL, info=CLICK_INFO,
                                 elem_id="click-mode")
            # whether Shift was held on the map's click: SHIFT_INPUT_JS fills it in
            page.shift = gr.Checkbox(False, visible=False, label="Shift held (filled in by the page)")
    gr.Markdown(KEYS_TEXT, elem_classes=["hint", "keys"], elem_id="keys")


def _side_column(page: SimpleNamespace, studio: Studio) -> None:
    """The 360° viewer, the inputs in tabs, then checkpoint, Run and the run status."""
    page.viewer = gr.HTML(None, html_template=VIEWER_HTML, js_on_load=VIEWER_JS.read_text(),
                          elem_id="pano-viewer", label="360° view")
    with gr.Tabs(elem_id="input-tabs"):
        _input_tabs(page, studio)
    start_value = studio.checkpoints.initial()  # Demo when the default needs a download and the Hub is away
    page.checkpoint = gr.Dropdown(choices=studio.checkpoints.choices(), value=start_value, allow_custom_value=True,
                                  label="Checkpoint (released PanoSAMic weights, a demo, or type a Hub subfolder)",
                                  elem_id="checkpoint")
    page.need = gr.Markdown(studio.requirements_text(start_value, None, None, None)[0], elem_id="requirements")
    page.run = gr.Button("Run", variant="primary", interactive=False, elem_id="run-button")
    page.run_status = gr.Markdown(elem_id="run-status", label="Run status")


def _input_tabs(page: SimpleNamespace, studio: Studio) -> None:
    """Your panorama, Depth and normals, Examples, Settings."""
    with gr.Tab("Your panorama", id="upload", render_children=True):
        page.pano = panorama_input(label="Panorama (equirectangular, 2:1)", type="filepath", image_mode=None,
                                   sources=["upload", "clipboard"], height=140, elem_id="panorama-input")
    with gr.Tab("Depth, normals", id="maps", render_children=True):
        with gr.Row():
            page.depth = gr.File(label="Depth (16-bit PNG mm, .npy/.exr m)",
                                 file_types=[".png", ".npy", ".exr", ".tif", ".tiff"], height=110)
            page.normals = gr.File(label="Normals (RGB PNG)", file_types=["image"], height=110)
    with gr.Tab("Examples", id="examples-tab", render_children=True, visible=bool(studio.examples)):
        page.examples = gr.Gallery([(row[0], example_caption(row)) for row in studio.examples],
                                   label="Photos (RGB only) and rendered rooms (RGB-D-N): click one",
                                   show_label=False, columns=3, height=260, object_fit="cover",
                                   allow_preview=False, interactive=False, elem_id="examples")
    with gr.Tab("Settings", id="settings", render_children=True):
        page.depth_scale = gr.Number(value=0, minimum=0, label="Depth scale (metres per stored unit)",
                                     info="0 = auto: PNG in millimetres, .npy/.exr in metres")
        page.max_depth = gr.Slider(1, 50, value=10, step=0.5, label="Max depth T (m)",
                                   info="Depth encoding range of the model (10 m for indoor rooms)")
        page.estimate_3d = gr.Checkbox(value=True, label="Estimate depth for the 3D view",
                                       info="Without a depth map, an RGB checkpoint's run also estimates "
                                            "depth from the photo, for the point cloud and the export")
        page.pps = gr.Slider(4, 32, value=16, step=1, label="SAM instance grid (points per side)",
                             info="For 'Refine with SAM instances'; fewer points are faster")
        page.opacity = gr.Slider(0, 1, value=0.55, step=0.05, label="Opacity of the classes on the map")


def _results(page: SimpleNamespace) -> None:
    """Below the workspace: legend, your own classes, Export and downloads; point cloud and API."""
    with gr.Column(scale=2, min_width=300):
        page.legend = gr.HTML(render.legend_html([]), label="Legend", elem_id="legend")
        with gr.Row(equal_height=True, elem_id="own-class"):
            page.new_name = gr.Textbox(label="New class", placeholder="e.g. bed", max_length=40, scale=3,
                                       elem_id="new-class-name")
            page.new_color = gr.ColorPicker(None, label="Colour", scale=1, min_width=80, elem_id="new-class-color")
            page.add_class = gr.Button("Add class", scale=1, min_width=90, elem_id="add-class-button")
        gr.Markdown(OWN_CLASS_TEXT, elem_classes="hint")
        page.export = gr.Button("Export (full resolution)", size="sm", elem_id="export-button")
        page.downloads = gr.File(label="Downloads", file_count="multiple", interactive=False, elem_id="downloads")
    with gr.Column(scale=3, min_width=300):
        # drawn on demand: plotly redraws all 30 000 points for every new figure (seconds
        # without a GPU), so the cloud comes only while this is open (Studio.page_cloud)
        with gr.Accordion(CLOUD_LABEL, open=False, elem_id="pano-3d-box") as page.cloud_box:
            page.plot = gr.Plot(label="Point cloud: hover for class and distance", elem_id="pano-3d")
        with gr.Accordion("Prompt by coordinates / API details", open=False):
            page.prompt_json = gr.Textbox(label="Prompt (JSON, input-image pixels or degrees)", lines=2,
                                          value='{"points": [[100, 50]], "labels": [1]}', info=PROMPT_INFO)
            page.apply_prompt = gr.Button("Apply prompt", size="sm")
            page.info = gr.JSON(label="Session (summary, statistics)")


# ---------------------------------------------------------------------------- the events

def _queues(studio: Studio) -> SimpleNamespace:
    """How events run: each handler wrapped by `friendly` (refusals in words, a job of the
    shutdown) and the queue it waits in."""
    # Run, SAM instances and export run at a lower CPU priority than clicks and edits, so
    # that a click stays quick while other users' heavy jobs keep the cores busy.
    job = functools.partial(friendly, shutdown=studio.shutdown, nice=HEAVY_NICE)
    # Run and SAM instances are heavy; clicks and edits are light and must not wait behind them.
    # Progress and errors show on one status line each, not on every output panel.
    return SimpleNamespace(
        job=job,
        heavy_job=functools.partial(job, gate=studio.gate),  # Run and SAM instances: in turns per client
        quick_job=functools.partial(friendly, shutdown=studio.shutdown, quick=True),  # clicks and edits
        heavy=dict(concurrency_id="heavy", concurrency_limit=HEAVY_CONCURRENCY + HEAVY_WAITING,
                   show_progress_on=[studio.ui.run_status]),
        light=dict(concurrency_id="light", concurrency_limit=LIGHT_CONCURRENCY, show_progress="minimal",
                   show_progress_on=[studio.ui.edit_status]),
        files=dict(concurrency_id="export", concurrency_limit=1, show_progress_on=[studio.ui.downloads]))


def _wire_inputs(page: SimpleNamespace, studio: Studio, q: SimpleNamespace) -> None:
    """The inputs' events: what the checkpoint still needs (and Run's state), the upload, the examples."""
    # Each input reports only its own presence: when an example fills all three at once,
    # the other inputs' events still see the panorama as empty, and whichever answer came
    # last would leave Run disabled. Served one at a time per session (shared state).
    present = gr.State({})
    quiet = dict(api_visibility="private", concurrency_id="requirements", concurrency_limit=1,
                 show_progress="hidden")
    for kind, comp in (("depth", page.depth), ("normals", page.normals)):
        comp.change(functools.partial(studio.input_changed, kind), [comp, present, page.checkpoint],
                    [present, page.need, page.run], **quiet)
    page.checkpoint.change(studio.checkpoint_changed, [page.checkpoint, present], [page.need, page.run], **quiet)
    # The panorama's presence is reported once the upload was accepted: two listeners of its
    # change would each read (and refuse) a bad file, and the page stacked both refusals.
    # on_upload owns `accepted` (the panorama when it can be used, else None: a 4:3 picture
    # is said on the run status and leaves Run disabled)
    accepted = studio.ui.accepted = gr.State(None)
    page.pano.change(studio.on_upload, [page.pano, page.session], [*studio.ui.outputs(), accepted],
                     api_visibility="private", **{**q.light, "show_progress": "hidden"}).success(
        functools.partial(studio.input_changed, "pano"), [accepted, present, page.checkpoint],
        [present, page.need, page.run], **quiet)
    page.examples.select(studio.pick_example, None, [page.pano, page.depth, page.normals], api_visibility="private",
                         show_progress="hidden")


def _wire_actions(page: SimpleNamespace, studio: Studio, q: SimpleNamespace) -> None:
    """Run and every edit, each twice: the page's own event and the named API endpoint on a
    hidden button (its refusals are errors, as API clients expect). Both share one queue and
    one session. The page's events leave the point cloud out: it follows them only while its
    accordion is open (Studio.page_cloud); the API's answers carry it (Studio.with_cloud)."""
    outputs, style, start, session = studio.ui.outputs(), [page.opacity], [page.server_start], page.session

    def action(trigger, fn, wrap, inputs, outs, api_name, status, queue):
        with_plot = page.plot in outs
        page_outs = [o for o in outs if o is not page.plot] + ([status] if status not in outs else [])
        own = trigger(wrap(fn, status=status), inputs, page_outs,
                      api_name=f"page_{api_name}", api_visibility="private", **queue)
        if with_plot:
            own.then(q.quick_job(studio.page_cloud), [session, page.cloud_shown], page.plot, js=AFTER_PICTURE_JS,
                     api_visibility="private", trigger_mode="always_last", **{**q.light, "show_progress": "hidden"})
        hidden = gr.Button(visible=False, elem_id=f"api-{api_name}")
        api_fn = studio.with_cloud(fn) if with_plot else fn
        return own, hidden.click(wrap(api_fn), inputs, outs, api_name=api_name, **queue)

    edit = dict(status=page.edit_status, queue=q.light)
    with gr.Row(visible=False):
        for run_event in action(page.run.click, studio.segment, q.heavy_job,
                                [page.pano, page.depth, page.normals, page.checkpoint, page.depth_scale,
                                 page.max_depth, *style, page.estimate_3d, session],
                                outputs, "segment", page.run_status, q.heavy):
            run_event.success(studio.current_start, None, page.server_start, api_visibility="private",
                              show_progress="hidden")
        action(page.apply_prompt.click, studio.prompt, q.quick_job, [page.prompt_json, session, *style, *start],
               outputs, "prompt", **edit)
        action(page.candidates.input, studio.select_candidate, q.quick_job,
               [page.candidates, session, *style, *start], outputs, "select_candidate", **edit)
        action(page.assign.click, studio.assign, q.quick_job, [page.cls, page.candidates, session, *style, *start],
               outputs, "assign", **edit)
        action(page.add_class.click, studio.add_class, q.quick_job,
               [page.new_name, page.new_color, session, *style, *start], [*outputs, page.new_name], "add_class", **edit)
        action(page.undo.click, studio.undo, q.quick_job, [session, *style, *start], outputs, "undo", **edit)
        action(page.clear.click, studio.clear, q.quick_job, [session, *style, *start], outputs, "clear", **edit)
        action(page.refine.click, studio.refine_instances, q.heavy_job, [page.pps, session, *style, *start], outputs,
               "refine_instances", page.run_status, q.heavy)
        action(page.export.click, studio.export_files, q.job, [session, *start], [page.downloads, page.info],
               "export", page.edit_status, q.files)


def _wire_views(page: SimpleNamespace, studio: Studio, q: SimpleNamespace, demo: gr.Blocks) -> None:
    """Clicks on the map and in the 360° viewer, the point cloud's accordion, the opacity, a closed tab."""
    session, style, start = page.session, [page.opacity], [page.server_start]
    quiet = {**q.light, "show_progress": "hidden"}
    page.view.select(q.quick_job(studio.click, status=page.edit_status),
                     [session, page.mode, page.shift, *style, *start], studio.ui.outputs(), js=SHIFT_INPUT_JS,
                     api_visibility="private", **q.light)
    page.viewer.pano_click(q.quick_job(studio.click_lonlat, status=page.edit_status),
                           [session, page.mode, *style, *start], studio.ui.outputs(), api_visibility="private",
                           **q.light)
    page.cloud_box.expand(q.quick_job(studio.show_cloud), session, [page.cloud_shown, page.plot],
                          api_visibility="private", **quiet)
    page.cloud_box.collapse(lambda: False, None, page.cloud_shown, api_visibility="private", **quiet)
    demo.unload(studio.tab_closed)
    page.opacity.change(q.quick_job(studio.restyle), [session, *style], [page.view, page.viewer],
                        api_visibility="private", **q.light)


# ============================================================================ the process

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
