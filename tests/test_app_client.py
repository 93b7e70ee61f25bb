"""The real app (python app.py in a subprocess) driven through its API with gradio_client.

Uses a local checkpoint folder copied from shared/reference/tiny_rgbdn_dual (image + depth +
normals, 13 classes, dual view) and two small procedural examples, fully offline.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

from app_utils import (CANDIDATES, CLASS, EDIT_STATUS, FILES, INFO, LEGEND, PLOT, RUN_STATUS, VIEW, VIEWER,
                       make_checkpoint_dir, make_examples, png_header, running_app)

from panosamic.studio.candidates import preselect

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

TIMINGS = {}


@pytest.fixture(scope="module")
def app_env(reference_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("app")
    ckpt = make_checkpoint_dir(reference_dir, root / "checkpoint")
    examples = make_examples(root / "examples", names=("office", "seam"), width=256)
    with running_app(["--checkpoint", str(ckpt), "--examples", str(root / "examples"), "--cache-mb", "64"],
                     root / "app.log") as app:
        TIMINGS["startup_s"] = app["startup_s"]
        yield {**app, "examples": examples, "root": root}
    print("\napp timings:", json.dumps({k: round(v, 3) for k, v in TIMINGS.items()}))


def client(app_env) -> Client:
    return Client(app_env["url"], verbose=False, download_files=str(app_env["root"] / "downloads"))


def files_by_suffix(files):
    return {Path(f).name.split("_", 1)[1]: f for f in files}


def segment(c: Client, ex, **kw):
    return c.predict(handle_file(str(ex["image"])), handle_file(str(ex["depth"])),
                     handle_file(str(ex["normals"])), api_name="/segment", **kw)


def read_labels(path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED).astype(np.int64)


def test_api_lists_the_named_endpoints(app_env):
    api = client(app_env).view_api(print_info=False, return_format="dict")
    names = set(api["named_endpoints"])
    assert {"/segment", "/prompt", "/assign", "/undo", "/export", "/clear", "/refine_instances",
            "/select_candidate"} <= names
    params = [p["parameter_name"] for p in api["named_endpoints"]["/segment"]["parameters"]]
    assert params[:6] == ["panorama", "depth", "normals", "checkpoint", "depth_scale", "max_depth"]


def test_segment_prompt_assign_undo_export(app_env):
    c = client(app_env)
    ex = app_env["examples"]["office"]
    t0 = time.perf_counter()
    out = segment(c, ex)
    TIMINGS["first_segment_s"] = time.perf_counter() - t0
    h, w = 128, 256
    view = cv2.imread(out[VIEW])
    assert view.shape == (h, w, 3)
    info = out[INFO]
    assert (info["height"], info["width"]) == (h, w) and info["has_depth"] and info["has_normals"]
    assert set(info["timings_s"]) >= {"load", "preprocess", "encode", "fuse", "decode"}
    shares = [r["sphere_share"] for r in info["stats"]]
    assert abs(sum(shares) - 1) < 1e-4
    assert "Segmented 256×128" in out[RUN_STATUS]
    assert "%" in out[LEGEND]
    assert out[PLOT]["type"] == "plotly" and '"scatter3d"' in out[PLOT]["plot"]   # the point cloud
    # the 360° viewer gets the ERP picture and a 512x256 class map for hovering
    viewer = out[VIEWER]
    assert viewer["texture"].startswith("data:image/jpeg;base64,") and viewer["classes"] == info["classes"]
    hover = cv2.imdecode(np.frombuffer(base64.b64decode(viewer["labels"].split(",", 1)[1]), np.uint8),
                         cv2.IMREAD_UNCHANGED)
    assert hover.shape == (256, 512) and hover.max() < 13
    assert out[FILES] is None                       # downloads are made on request, at full size
    files, _ = c.predict(api_name="/export")
    files = files_by_suffix(files)
    assert set(files) == {"labels.png", "classes.csv", "colors.png", "stats.json", "stats.csv", "masks_rle.json", "pointcloud.glb"}
    labels0 = read_labels(files["labels.png"])
    assert labels0.shape == (h, w) and labels0.max() < 13
    colors = cv2.imread(files["colors.png"])[..., ::-1]
    assert colors.shape == (h, w, 3)
    glb = Path(files["pointcloud.glb"]).read_bytes()
    assert struct.unpack_from("<II", glb) == (0x46546C67, 2)
    stats = json.loads(Path(files["stats.json"]).read_text())
    assert len(stats["stats"]) == 13
    assert Path(files["stats.csv"]).read_text().startswith("index,name,color")

    # positive point: three candidates, the best one selected
    t0 = time.perf_counter()
    out = c.predict(json.dumps({"points": [[60, 70]], "labels": [1]}), api_name="/prompt")
    TIMINGS["prompt_roundtrip_s"] = time.perf_counter() - t0
    cand = out[INFO]["candidates"]
    assert len(cand["predicted_iou"]) == 3
    # a single click: the tightest plausible mask (panosamic.studio.candidates.preselect)
    assert cand["selected"] == preselect(cand["predicted_iou"], cand["areas"])
    assert out[CANDIDATES]["value"] == cand["selected"]
    assert out[CLASS]["value"] == info["classes"][cand["majority_class"]]
    assert out[INFO]["prompts"]["points"] == [[60.0, 70.0]]
    assert isinstance(out[FILES], dict)  # downloads untouched by a prompt (gr.skip)
    assert isinstance(out[PLOT], dict)   # nor is the 3D view: a click does not change what it shows

    # add a negative point (append) and then a box
    out = c.predict(json.dumps({"points": [[200, 40]], "labels": [0], "append": True}), api_name="/prompt")
    assert out[INFO]["prompts"]["labels"] == [1, 0]
    out = c.predict(json.dumps({"box": [40, 30, 120, 100]}), api_name="/prompt")
    assert out[INFO]["prompts"]["box"] == [40.0, 30.0, 120.0, 100.0] and out[INFO]["prompts"]["points"] == []
    assert "box" in out[EDIT_STATUS]

    # a box across the left/right seam (x1 > x2): one seamless mask
    out = c.predict(json.dumps({"box": [220, 40, 30, 100]}), api_name="/prompt")
    assert "across the seam" in out[EDIT_STATUS]
    cand = out[INFO]["candidates"]
    assert max(cand["areas"]) > 0 and len(cand["areas"]) == 3

    # assign the selected mask to "window": only pixels under the mask change
    target = "window"
    out = c.predict(target, None, api_name="/assign")
    assert out[INFO]["edits"] == 1 and out[INFO]["candidates"] is None
    assert out[FILES] is None                       # the labels changed: the old downloads are gone
    files = files_by_suffix(c.predict(api_name="/export")[0])
    labels1 = read_labels(files["labels.png"])
    mask = cv2.imread(files["masks.png"], cv2.IMREAD_UNCHANGED) == 1
    assert mask.any()
    changed = labels1 != labels0
    assert changed.any()
    assert not (changed & ~mask).any(), "pixels outside the mask changed"
    assert (labels1[mask] == 12).all()          # window is class 12
    assert out[INFO]["changed_pixels"] == int(changed.sum())
    # the seam box mask is seamless: the first and last columns agree
    assert np.mean(mask[:, 0] == mask[:, -1]) > 0.9
    coco = json.loads(Path(files["masks_rle.json"]).read_text())
    from panosamic.exports import decode_rle

    np.testing.assert_array_equal(decode_rle(coco["refined_masks"][0]["segmentation"]), mask)
    assert coco["refined_masks"][0]["category_id"] == 12

    # undo the assignment: the label map is back, the box prompt returns with its candidates
    out = c.predict(api_name="/undo")
    assert out[INFO]["edits"] == 0 and out[INFO]["changed_pixels"] == 0
    assert out[INFO]["prompts"]["box"] == [220.0, 40.0, 30.0, 100.0]
    assert out[INFO]["candidates"] is not None
    np.testing.assert_array_equal(read_labels(files_by_suffix(c.predict(api_name="/export")[0])["labels.png"]), labels0)

    # assign a specific candidate by index, then export
    out = c.predict("door", 0, api_name="/assign")
    files, info = c.predict(api_name="/export")
    labels2 = read_labels(files_by_suffix(files)["labels.png"])
    mask = cv2.imread(files_by_suffix(files)["masks.png"], cv2.IMREAD_UNCHANGED) == 1
    assert not ((labels2 != labels0) & ~mask).any() and (labels2[mask] == 7).all()
    assert info["edits"] == 1


def test_assign_with_a_new_class_name_adds_it_and_the_export_lists_it(app_env):
    c = client(app_env)
    ex = app_env["examples"]["office"]
    segment(c, ex)
    out = c.predict(json.dumps({"points": [[60, 70]], "labels": [1]}), api_name="/prompt")
    mask_area = out[INFO]["candidates"]["areas"][out[INFO]["candidates"]["selected"]]
    out = c.predict("Hotel bed", None, api_name="/assign")
    info = out[INFO]
    assert info["classes"][13] == "Hotel bed" and info["class_table"][13]["origin"] == "user"
    assert [r["origin"] for r in info["class_table"][:13]] == ["model"] * 13
    bed = next(r for r in info["stats"] if r["name"] == "Hotel bed")
    assert bed["index"] == 13 and bed["pixels"] == mask_area
    assert "Hotel bed" in out[LEGEND] and "(yours)" in out[LEGEND]
    # a second one with its own colour through /add_class, then the export
    out = c.predict("lamp", "#00ff00", api_name="/add_class")
    assert out[INFO]["class_table"][14] == {"index": 14, "name": "lamp", "color": [0, 255, 0], "hex": "#00ff00",
                                            "origin": "user"}
    files, _ = c.predict(api_name="/export")
    by = files_by_suffix(files)
    table = Path(by["classes.csv"]).read_text().splitlines()
    assert table[0] == "index,name,r,g,b,hex,origin" and len(table) == 16
    assert table[14].startswith("13,Hotel bed,") and table[14].endswith(",user")
    assert table[15] == "14,lamp,0,255,0,#00ff00,user"
    assert table[1].endswith(",model")
    labels = read_labels(by["labels.png"])
    assert (labels == 13).sum() > 0 and labels.max() == 13


def test_uploads_that_cannot_be_a_panorama_each_get_their_own_message(app_env, tmp_path):
    c = client(app_env)
    rgb = cv2.imread(str(app_env["examples"]["office"]["image"]))
    four_three = tmp_path / "room43.jpg"
    cv2.imwrite(str(four_three), np.ascontiguousarray(rgb[:, :171]))
    with pytest.raises(AppError, match="not 2:1"):
        c.predict(handle_file(str(four_three)), api_name="/segment")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a picture")
    with pytest.raises(AppError, match="broken.jpg") as refused:
        c.predict(handle_file(str(broken)), api_name="/segment")
    assert "not 2:1" not in str(refused.value)
    rgba = tmp_path / "room_rgba.png"
    cv2.imwrite(str(rgba), np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]))
    ex = app_env["examples"]["office"]
    out = c.predict(handle_file(str(rgba)), handle_file(str(ex["depth"])), handle_file(str(ex["normals"])),
                    api_name="/segment")
    assert "room_rgba.png has an alpha channel" in out[RUN_STATUS] and "Segmented" in out[RUN_STATUS]


def test_second_user_reuses_cached_embeddings_untold(app_env):
    """The second Run of the same files skips the encoder, and says nothing about the cache
    (it would tell that user that someone else ran these files)."""
    ex = app_env["examples"]["office"]
    c1, c2 = client(app_env), client(app_env)
    segment(c1, ex)
    t0 = time.perf_counter()
    out = segment(c2, ex)
    TIMINGS["cached_segment_s"] = time.perf_counter() - t0
    assert "encode" not in out[INFO]["timings_s"]
    seen = (out[RUN_STATUS] + json.dumps(out[INFO])).lower()
    assert out[RUN_STATUS].startswith("**Segmented") and "cache" not in seen and "reused" not in seen
    # the two sessions are independent
    c1.predict(json.dumps({"points": [[10, 10]]}), api_name="/prompt")
    c1.predict("beam", None, api_name="/assign")
    files, info = c2.predict(api_name="/export")
    assert info["edits"] == 0


def test_refine_with_sam_instances_is_undoable(app_env):
    c = client(app_env)
    segment(c, app_env["examples"]["seam"])
    export = lambda: read_labels(files_by_suffix(c.predict(api_name="/export")[0])["labels.png"])  # noqa: E731
    before = export()
    t0 = time.perf_counter()
    out = c.predict(4, api_name="/refine_instances")
    TIMINGS["instances_4pps_s"] = time.perf_counter() - t0
    after = export()
    assert after.shape == before.shape
    assert int((after != before).sum()) == out[INFO]["changed_pixels"]
    c.predict(api_name="/undo")
    np.testing.assert_array_equal(export(), before)


def _error(call) -> str:
    with pytest.raises(AppError) as err:
        call()
    text = str(err.value)
    assert "Traceback" not in text and 'File "' not in text
    return text


def test_bad_inputs_give_messages_not_stack_traces(app_env, tmp_path):
    c = client(app_env)
    ex = app_env["examples"]["office"]
    # a prompt before Run
    assert "Run first" in _error(lambda: c.predict('{"points": [[1, 1]]}', api_name="/prompt"))
    assert "Run first" in _error(lambda: c.predict("wall", None, api_name="/assign"))
    # not an image
    txt = tmp_path / "notes.png"
    txt.write_text("hello")
    assert "not an image" in _error(lambda: c.predict(handle_file(str(txt)), None, None, api_name="/segment"))
    # not 2:1
    sq = tmp_path / "square.png"
    cv2.imwrite(str(sq), np.zeros((100, 100, 3), np.uint8))
    assert "not 2:1" in _error(lambda: c.predict(handle_file(str(sq)), None, None, api_name="/segment"))
    # huge (only the header is read: a PNG that claims 10000x5000 pixels)
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_header(10000, 5000))
    assert "8192x4096" in _error(lambda: c.predict(handle_file(str(huge)), None, None, api_name="/segment"))
    # depth of another size
    small = tmp_path / "small_depth.png"
    cv2.imwrite(str(small), np.full((64, 128), 2000, np.uint16))
    msg = _error(lambda: c.predict(handle_file(str(ex["image"])), handle_file(str(small)),
                                   handle_file(str(ex["normals"])), api_name="/segment"))
    assert "128x64" in msg and "256x128" in msg
    # a missing modality is estimated from the photo (tests/test_estimation.py): no error here
    # a released checkpoint that is not downloaded, offline: says what failed and how to fix it
    msg = _error(lambda: c.predict(handle_file(str(ex["image"])), None, None, "stanford2d3ds-vith-rgb-fold1",
                                   api_name="/segment"))
    assert "--checkpoint" in msg and "stanford2d3ds-vith-rgb-fold1" in msg
    assert "`--checkpoint &lt;folder&gt;`" in msg and "<" not in msg  # a pop-up's text is HTML: escaped
    # bad prompt JSON and a point outside the panorama, after a successful Run
    segment(c, ex)
    assert "not valid JSON" in _error(lambda: c.predict("{points", api_name="/prompt"))
    assert "outside" in _error(lambda: c.predict('{"points": [[999, 5]]}', api_name="/prompt"))
    msg = _error(lambda: c.predict('{"<b>x</b>": 1}', api_name="/prompt"))
    assert "Unknown prompt field(s) &lt;b&gt;x&lt;/b&gt;" in msg and "<b>" not in msg
    # a new name becomes the user's own class; a name no class can have, or an index beyond them, is refused
    assert "at most 40 characters" in _error(lambda: (c.predict('{"points": [[5, 5]]}', api_name="/prompt"),
                                                      c.predict("spaceship " * 5, None, api_name="/assign")))
    assert "out of range" in _error(lambda: (c.predict('{"points": [[5, 5]]}', api_name="/prompt"),
                                             c.predict("99", None, api_name="/assign")))


def test_app_imports_without_torch():
    """The page opens before any model code loads: importing app.py must not import torch."""
    code = "import sys, app; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_checkpoint_names_announce_their_modalities():
    from panosamic.config import RELEASED_SUBFOLDERS, modalities_from_subfolder

    assert len(RELEASED_SUBFOLDERS) == 9
    for name, mods in RELEASED_SUBFOLDERS.items():
        assert modalities_from_subfolder(name) == mods
    assert modalities_from_subfolder("matterport3d_vith_rgbd") == ("image", "depth")
    assert modalities_from_subfolder("my-checkpoint") is None


def test_startup_is_fast(app_env):
    # The page must open before any model is loaded (the models load on the first Run).
    assert TIMINGS["startup_s"] < 60


def test_the_app_builds_its_picker_from_the_command_line(reference_dir, tmp_path):
    """The app's settings wire --checkpoint into the studio's Checkpoints (tested in test_studio)
    and the page answers Run's requirements through them."""
    from panosamic.studio.page import Studio
    from panosamic.studio.settings import parse_args

    ckpt = make_checkpoint_dir(reference_dir, tmp_path / "ckpt")
    studio = Studio(parse_args(["--checkpoint", str(ckpt), "--examples", str(tmp_path / "none")]))
    assert studio.checkpoints.default == "local" and studio.checkpoints.local_dir == ckpt.resolve()
    assert studio.examples == []
    text, ok = studio.requirements_text("local", "p.jpg", None, "n.png")
    assert ok and "depth will be estimated from the photo" in text
    refusing = Studio(parse_args(["--checkpoint", str(ckpt), "--examples", str(tmp_path / "none"),
                                  "--depth-estimator", "none"]))
    text, ok = refusing.requirements_text("local", "p.jpg", None, "n.png")
    assert not ok and "Missing: depth" in text
    text, ok = studio.requirements_text("local", "p.jpg", "d.png", None)
    assert ok and "derived from the depth" in text
    text, ok = studio.requirements_text("local", "p.jpg", "d.png", "n.png")
    assert ok and "Ready" in text


def test_settings_come_from_env(monkeypatch):
    from panosamic.studio.settings import parse_args

    monkeypatch.setenv("PANOSAMIC_CHECKPOINT", "/some/dir")
    monkeypatch.setenv("PANOSAMIC_CACHE_MB", "123")
    monkeypatch.setenv("PANOSAMIC_DEVICE", "cpu")
    monkeypatch.setenv("PANOSAMIC_SHUTDOWN_GRACE_S", "55")
    s = parse_args([])
    assert (s.checkpoint, s.cache_mb, s.device, s.port, s.host) == ("/some/dir", 123.0, "cpu", 7860, "127.0.0.1")
    assert s.shutdown_grace_s == 55.0
    with pytest.raises(SystemExit):
        parse_args(["--shutdown-grace-s", "nan"])
    assert parse_args(["--cache-mb", "5"]).cache_mb == 5.0


def test_segment_with_only_a_photo_works_offline_with_no_flags(tmp_path):
    """`python app.py` as the README and the Space start it (no --checkpoint, no --subfolder),
    offline: /segment with only a real RGB photo segments with the RGB demo, and the status and
    the info name the checkpoint that ran; depth alone takes the RGB-D demo."""
    photo = ROOT / "assets" / "examples" / "hotel_room_rgb.jpg"
    rendered = make_examples(tmp_path / "examples", names=("office",), width=256)["office"]
    with running_app(["--examples", str(tmp_path / "examples")], tmp_path / "app.log") as app:
        c = Client(app["url"], verbose=False, download_files=str(tmp_path / "downloads"))
        out = c.predict(handle_file(str(photo)), api_name="/segment")
        assert out[INFO]["checkpoint"] == "demo-rgb" and (out[INFO]["width"], out[INFO]["height"]) == (1024, 512)
        assert "Segmented 1024×512" in out[RUN_STATUS] and "Demo RGB" in out[RUN_STATUS]
        assert len(out[INFO]["stats"]) >= 2                       # a real map, more than one class
        picked = c.predict('{"points": [[512, 400]], "labels": [1]}', api_name="/prompt")
        assert picked[INFO]["candidates"] is not None
        out = c.predict(handle_file(str(rendered["image"])), handle_file(str(rendered["depth"])), api_name="/segment")
        assert out[INFO]["checkpoint"] == "demo-rgbd" and out[INFO]["has_depth"]
        # a picked checkpoint is kept: the RGB-D-N demo, given depth alone, derives the normals
        out = c.predict(handle_file(str(rendered["image"])), handle_file(str(rendered["depth"])), None, "demo",
                        api_name="/segment")
        assert out[INFO]["checkpoint"] == "demo" and "derived from the depth" in out[RUN_STATUS]


def _studio_and_page(reference_dir, tmp_path):
    """The page's handlers (Studio) on a local copy of the reference checkpoint, and its page
    (app.build_ui, not launched)."""
    import app
    from panosamic.studio.page import Studio
    from panosamic.studio.settings import parse_args

    ckpt = make_checkpoint_dir(reference_dir, tmp_path / "ckpt")
    studio = Studio(parse_args(["--checkpoint", str(ckpt), "--examples", str(tmp_path / "none")]))
    return studio, app.build_ui(studio)


def test_a_click_before_run_says_so_on_the_edit_status(reference_dir, tmp_path):
    """A click on the map or in the 360° view before Run: every output stays as it is and the
    edit status says what to do (the handler's {} was not a dict to Gradio, whose 'did not
    return enough output values' error showed instead); the opacity slider before Run leaves
    both pictures alone. These events are private, so the handlers go through Gradio's own
    postprocessing of their event here."""
    import asyncio

    import gradio as gr

    from panosamic.studio.page import CLICK_MODES
    from panosamic.studio.refusals import friendly

    def unchanged(value) -> bool:  # an update without a value (gr.HTML's also names its props)
        return isinstance(value, dict) and value.get("__type__") == "update" and "value" not in value

    studio, demo = _studio_and_page(reference_dir, tmp_path)
    ui = studio.ui
    mode = CLICK_MODES[0]
    calls = {(ui.view, "select"): (studio.click, (mode, True), gr.SelectData(ui.view, {"index": [5, 5], "value": None})),
             (ui.viewer, "pano_click"): (studio.click_lonlat, (mode,),
                                         gr.EventData(ui.viewer, {"lon": 10.0, "lat": 5.0, "shift": True}))}
    for (target, event), (handler, args, evt) in calls.items():
        name = handler.__name__
        fn = next(f for f in demo.fns.values() if (target._id, event) in f.targets)
        result = friendly(handler)(None, *args, 0.55, None, evt)
        out = asyncio.run(demo.postprocess_data(fn, result, None))
        assert len(out) == len(ui.outputs()) == len(fn.outputs)
        for comp, value in zip(fn.outputs, out):
            if comp is ui.edit_status:
                assert value == "Press Run first: clicks refine a segmented panorama.", name
            else:  # unchanged (the State comes back as None, its value kept)
                assert value is None or unchanged(value), (name, comp, value)
    restyle = next(f for f in demo.fns.values() if f.outputs == [ui.view, ui.viewer])
    out = asyncio.run(demo.postprocess_data(restyle, friendly(studio.restyle)(None, 0.3), None))
    assert len(out) == 2 and all(unchanged(value) for value in out)


def test_an_unreadable_panorama_is_refused_once(reference_dir, tmp_path):
    """An upload the panorama input refuses gives one message: every listener of its change
    event read the file, and each refusal stacked into the same pop-up, the text twice. Runs
    the page's listeners as the browser does (those of the change, then those chained after
    them: `.success` ones only when the first succeeded)."""
    import asyncio

    import gradio as gr

    studio, demo = _studio_and_page(reference_dir, tmp_path)
    pano = next(b for b in demo.blocks.values() if getattr(b, "label", None) == "Panorama (equirectangular, 2:1)")
    bad = tmp_path / "notes.png"
    bad.write_text("hello")
    payload = {"path": str(bad), "orig_name": "notes.png", "meta": {"_type": "gradio.FileData"}}
    by_id = {id(f): i for i, f in demo.fns.items()}

    def refused(fn) -> bool:
        inputs = [payload if block is pano else None for block in fn.inputs]
        try:
            asyncio.run(demo.preprocess_data(fn, inputs, None, explicit_call=True))
        except gr.Error as err:
            messages.append(err.message)
            return True
        return False

    messages = []
    pending = [f for f in demo.fns.values() if (pano._id, "change") in f.targets]
    assert pending
    while pending:
        fn = pending.pop(0)
        failed = refused(fn)
        pending += [f for f in demo.fns.values() if f.trigger_after == by_id[id(fn)]
                    and not (failed and f.trigger_only_on_success)
                    and not (not failed and getattr(f, "trigger_only_on_failure", False))]
    assert len(messages) == 1, messages
    assert "notes.png" in messages[0]


@pytest.mark.parametrize("config, named", [({"modalities": 5}, '"modalities"'), ([1, 2], "JSON object"),
                                           ({"encoder_depth": "four"}, '"encoder_depth"')])
def test_a_wrongly_typed_config_json_is_a_message_on_run(reference_dir, tmp_path, config, named):
    """A local checkpoint whose config.json has a value of the wrong type (or is no JSON object):
    the app starts (it stopped with a traceback while building the picker), and Run says which
    key is wrong instead of "Unexpected error (TypeError)"."""
    import gradio as gr

    import app
    from panosamic.studio.page import Studio
    from panosamic.studio.refusals import friendly
    from panosamic.studio.settings import parse_args

    ckpt = make_checkpoint_dir(reference_dir, tmp_path / "ckpt")
    good = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps({**good, **config} if isinstance(config, dict) else config))
    studio = Studio(parse_args(["--checkpoint", str(ckpt), "--examples", str(tmp_path / "none")]))
    app.build_ui(studio)
    ex = make_examples(tmp_path / "examples", names=("office",), width=256)["office"]
    with pytest.raises(gr.Error) as err:
        friendly(studio.backend.segment)(str(ex["image"]), str(ex["depth"]), str(ex["normals"]), "local", 0, 10)
    message = err.value.message
    assert named in message and "config.json" in message and "Unexpected" not in message, message


def test_a_closed_client_leaves_no_state_in_gradio(tmp_path, monkeypatch):
    """Gradio keeps a SessionState per client (every component's config with the last value
    sent to it: ~1 MB here, the viewer's pictures as data URLs, the API's point cloud), marks it
    when the client goes and deletes only its gr.State an hour later, the rest not before 10 000
    clients: a soak of clients that each visit once grew by ~3 MB of RSS per visit. Once a
    client's unload event has run (its session released), its state is gone; a client still
    there keeps its own and goes on working. The app runs in this process to see Gradio's state."""
    import app
    from devtools.app_process import free_port
    from panosamic.studio import serving
    from panosamic.studio.page import LIGHT_CONCURRENCY, Studio
    from panosamic.studio.settings import parse_args

    # GRADIO_TEMP_DIR too: use_root points it at this store's root, and the apps later tests start
    # as subprocesses must not inherit that (they would put their own roots inside it)
    for name, value in {"GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
                        "GRADIO_TEMP_DIR": os.environ.get("GRADIO_TEMP_DIR", "")}.items():
        monkeypatch.setenv(name, value)
    studio = Studio(parse_args(["--checkpoint", str(ROOT / "assets" / "demo"), "--device", "cpu",
                                "--embedding-cache-mb", "0", "--no-preencode", "--no-eta-probe",
                                "--examples", str(tmp_path / "none")]))
    serving.use_root(studio.backend.store)
    demo = app.build_ui(studio)
    serving.track_events(demo, studio.backend.store)
    demo.queue(default_concurrency_limit=LIGHT_CONCURRENCY)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                app_kwargs=serving.app_kwargs(studio.backend.store, demo))
    try:
        url = f"http://127.0.0.1:{port}/"
        ex = [str(ROOT / "assets" / "examples" / f"office_{k}") for k in ("rgb.jpg", "depth.png", "normals.png")]
        leaving, staying = (Client(url, verbose=False, download_files=str(tmp_path / f"dl{i}")) for i in range(2))
        for c in (leaving, staying):
            c.predict(*(handle_file(p) for p in ex), "local", 0, 10, api_name="/segment")
            c.predict('{"points": [[300, 260]]}', api_name="/prompt")
        held = demo.state_holder.session_data
        assert {leaving.session_hash, staying.session_hash} <= set(held)
        leaving.close()
        t0 = time.monotonic()
        while leaving.session_hash in held:  # the unload event runs once the heartbeat stops
            assert time.monotonic() - t0 < 60, "the closed client's state is still in Gradio's state holder"
            time.sleep(0.1)
        assert studio.backend.store.released.get("closed") == 1  # the app released its session first
        assert staying.session_hash in held
        out = staying.predict('{"points": [[500, 240]]}', api_name="/prompt")
        assert out[INFO]["candidates"] is not None
        staying.close()
    finally:
        demo.close()
        studio.backend.close()
