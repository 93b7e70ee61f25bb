"""Hostile and broken input through the library, the CLI and the app's API.

Every file of `devtools.hostile_inputs` (decompression bombs, headers that lie, pickles,
truncated files, depth without a valid pixel), hostile prompt JSON and checkpoint names must be
refused with a plain message that names the user's file (never a server folder), and the
same session must keep working afterwards. Timings and memory are measured by
`python -m devtools.hostile_load`, not here.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app_utils import INFO, RUN_STATUS, gated_app, running_app, wait_until
from devtools.hostile_inputs import (HOSTILE_CHECKPOINTS, HOSTILE_PROMPTS, write_hostile_files,
                                     write_panorama)
from panosamic import geometry, io, metrics
from panosamic.errors import InputError
from panosamic.studio.prompts import MAX_POINTS, parse_prompt

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "assets" / "demo"
LOADERS = {"panorama": io.load_image, "depth": io.load_depth, "normals": io.load_normals}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    return {"folder": folder, "files": write_hostile_files(folder), "pano": write_panorama(folder)}


def assert_plain(message: str, folder: Path) -> None:
    """One plain line: no traceback, no exception class name, no server folder."""
    assert "Traceback" not in message and "Error(" not in message
    assert str(folder) not in message and "/tmp/" not in message


# ----------------------------------------------------------------------------- library
def test_every_hostile_file_is_refused_by_the_library(hostile):
    for kind, f in hostile["files"].items():
        with pytest.raises(InputError) as err:
            LOADERS[f.role](f.path)
        message = str(err.value)
        assert f.expect in message, (kind, message)
        assert f.path.name in message, (kind, message)  # the user's own file, by name
        assert_plain(message, hostile["folder"])


def test_headers_are_read_without_decoding(hostile):
    files = hostile["files"]
    h = io.read_header(files["depth_all_zero"].path, "depth map")
    assert (h.format, h.width, h.height, h.channels, h.bits) == ("PNG", 256, 128, 1, 16)
    h = io.read_header(files["depth_all_nan"].path, "depth map")
    assert (h.format, h.width, h.height, h.channels, h.dtype) == ("NPY", 256, 128, 1, "float32")
    # the bomb's size is known from 24 bytes; check_size=False reads it without refusing
    h = io.read_header(files["depth_png_bomb"].path, "depth map", check_size=False)
    assert (h.width, h.height, h.bits) == (30000, 15000, 16)
    h = io.read_header(files["depth_exr_claiming"].path, "depth map", check_size=False)
    assert (h.format, h.width, h.height, h.channels, h.bits) == ("EXR", 30000, 15000, 1, 32)


def test_depth_with_some_invalid_pixels_is_accepted_with_counts(tmp_path):
    d = np.full((8, 16), 2.0, np.float32)
    d[0, :3] = np.nan
    d[1, :2] = -1
    d[2, 0] = np.inf
    d[3, :4] = 0
    np.save(tmp_path / "part_depth.npy", d)
    report: dict = {}
    got = io.load_depth(tmp_path / "part_depth.npy", report=report)
    assert report == {"pixels": 128, "nan": 3, "inf": 1, "negative": 2, "missing": 4, "valid": 118}
    assert np.count_nonzero(got) == 118 and np.all(got[:4, :4][~np.isfinite(d[:4, :4]) | (d[:4, :4] <= 0)] == 0)
    note = io.depth_note(report)
    assert note.startswith("Depth: 7.8 % of the pixels") and "3 NaN" in note and "2 negative" in note
    assert io.depth_note(io.depth_validity(np.ones((4, 8)))) is None
    for scale in (0, -1, float("nan"), float("inf"), "abc"):
        with pytest.raises(InputError, match="depth scale"):
            io.load_depth(d, scale=scale)


def test_arrays_and_odd_arguments_are_input_errors():
    for call in (lambda: io.load_depth(np.array([["a", "b"]])), lambda: io.load_image(np.array([[{}]])),
                 lambda: io.load_normals(np.array(["x"])), lambda: io.load_labels(np.array([["1"]])),
                 lambda: io.load_depth(5), lambda: io.load_image(None),
                 lambda: metrics.confusion_matrix(np.array([["a"]]), np.array([["b"]]), 3),
                 lambda: metrics.confusion_matrix(np.zeros((2, 2), int), np.zeros((2, 2), int), "13"),
                 lambda: geometry.depth_to_points(np.zeros((2, 2, 2))),
                 lambda: geometry.class_shares(np.zeros(3, int), 2),
                 lambda: geometry.resize_erp(np.zeros(5), 2, 4)):
        with pytest.raises(InputError):
            call()


@pytest.fixture(scope="module")
def demo_predictor():
    import panosamic

    predictor = panosamic.from_pretrained(str(DEMO), device="cpu")
    rng = np.random.default_rng(0)
    predictor.set_panorama(rng.integers(0, 256, (64, 128, 3), dtype=np.uint8), np.full((64, 128), 2.0),
                           np.full((64, 128, 3), 128, np.uint8))
    return predictor


def test_predictor_refuses_hostile_prompts(demo_predictor):
    p = demo_predictor
    cases = [dict(point_coords=np.ones((100_000, 2)), point_labels=np.ones(100_000)),
             dict(point_coords=np.ones((MAX_POINTS + 1, 2)), point_labels=np.ones(MAX_POINTS + 1)),
             dict(point_coords=[[1, 1]], point_labels=["yes"]),
             dict(point_coords=[[1, 1]], point_labels=[{"a": 1}]),
             dict(point_coords=[["a", "b"]], point_labels=[1]),
             dict(point_coords=[[1, 1], [2]], point_labels=[1, 1]),
             dict(point_coords=[[1, 1, 1]], point_labels=[1]),
             dict(box="0 0 10 10"), dict(box=[[0, 0], [1]]),
             dict(point_coords=[[1, 1]], point_labels=[1], view=np.array([0, 1])),
             dict(point_coords=[[1, 1]], point_labels=[1], output_size=(0, 10)),
             dict(point_coords=[[1, 1]], point_labels=[1], output_size="big"),
             dict(mask_input="logits")]
    for kwargs in cases:
        with pytest.raises(InputError):
            p.predict(**kwargs)
    with pytest.raises(InputError, match="at most 64 points"):
        p.predict(point_coords=np.ones((100_000, 2)), point_labels=np.ones(100_000))
    masks, scores, _ = p.predict(point_coords=[[30, 20]], point_labels=[1])  # still works
    assert masks.shape == (3, 64, 128) and scores.shape == (3,)
    for bad in ("x", float("nan"), -1):
        with pytest.raises(InputError, match="max_depth"):
            p.encode(np.zeros((64, 128, 3), np.uint8), np.ones((64, 128)), np.zeros((64, 128, 3), np.uint8),
                     max_depth=bad)
    with pytest.raises(InputError, match="size"):
        p.labels_at(("a", 1))


# ----------------------------------------------------------------------------- prompt JSON
def _session():
    return SimpleNamespace(input_size=(512, 1024), points=[(5.0, 5.0)], point_labels=[1], box=None)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(
        st.sampled_from(["points", "labels", "box", "append", "points_lonlat", "box_lonlat", "x"]) | st.text(max_size=4),
        inner, max_size=6),
    max_leaves=40)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_parse_prompt_raises_only_input_errors(value):
    for spec in (value, json.dumps(value)):
        try:
            points, labels, box = parse_prompt(spec, _session())
        except InputError as e:
            assert str(e) and "Traceback" not in str(e)
            continue
        assert len(points) == len(labels) <= MAX_POINTS
        assert all(np.isfinite(v) for p in points for v in p) and set(labels) <= {0, 1}
        assert box is None or (len(box) == 4 and all(np.isfinite(box)))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_parse_prompt_arbitrary_text(text):
    try:
        parse_prompt(text, _session())
    except InputError:
        pass


def test_hostile_prompt_strings_are_refused():
    for name, text in HOSTILE_PROMPTS.items():
        with pytest.raises(InputError) as err:
            parse_prompt(text, _session())
        assert len(str(err.value)) < 300, name


# ----------------------------------------------------------------------------- CLI
def test_cli_refuses_hostile_maps_with_plain_lines(hostile, tmp_path):
    files = hostile["files"]
    inp = tmp_path / "in"
    inp.mkdir()
    pano = hostile["pano"].read_bytes()
    pairs = {"bomb": "depth_png_bomb", "pickle": "depth_npy_pickle", "nan": "depth_all_nan",
             "claim": "depth_exr_claiming"}
    for stem, kind in pairs.items():
        (inp / f"{stem}_rgb.png").write_bytes(pano)
        src = files[kind].path
        (inp / f"{stem}_depth{src.suffix}").write_bytes(src.read_bytes())
        (inp / f"{stem}_normals.png").write_bytes(files["depth_all_zero"].path.read_bytes())  # never reached
    (inp / "huge_rgb.png").write_bytes(files["panorama_png_bomb"].path.read_bytes())
    proc = subprocess.run([sys.executable, "-m", "panosamic", "predict", str(inp), "--checkpoint", str(DEMO),
                           "--out", str(tmp_path / "out"), "--device", "cpu", "--no-progress"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr
    assert "Traceback" not in err and "internal error" not in err
    for stem, kind in pairs.items():
        line = next(l for l in err.splitlines() if f"{stem}_rgb.png" in l)
        assert files[kind].expect in line and f"{stem}_depth" in line, line
    assert "larger than the limit" in next(l for l in err.splitlines() if "huge_rgb.png" in l)


# ----------------------------------------------------------------------------- the app's API
@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile_app")
    with running_app(["--checkpoint", str(DEMO), "--device", "cpu", "--cache-mb", "64"], root / "app.log") as app:
        yield {**app, "root": root}


def test_app_refuses_hostile_input_and_keeps_the_session(app, hostile):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    c = Client(app["url"], verbose=False, download_files=str(app["root"] / "downloads"))
    files, pano = hostile["files"], hostile["pano"]
    good = (handle_file(str(pano)), None, None, "local")

    def segment(p, d, n, ckpt="local"):
        return c.predict(p, d, n, ckpt, 0, 10, api_name="/segment")

    def refused(call, expect: str) -> str:
        with pytest.raises(AppError) as err:
            call()
        message = str(err.value)
        assert expect in message, message
        assert_plain(message, hostile["folder"])
        assert "Unexpected error" not in message
        return message

    # a session that works first
    n_ok = handle_file(str(_normals_png(hostile["folder"])))
    d_ok = handle_file(str(_depth_png(hostile["folder"])))
    out = segment(good[0], d_ok, n_ok)
    assert "Segmented 256×128" in out[RUN_STATUS]
    for kind, f in files.items():
        slot = {"panorama": 0, "depth": 1, "normals": 2}[f.role]
        args = [good[0], d_ok, n_ok]
        args[slot] = handle_file(str(f.path))
        message = refused(lambda args=args: segment(*args), f.expect)
        assert f.path.name in message, (kind, message)
    for value in HOSTILE_CHECKPOINTS:
        refused(lambda value=value: segment(good[0], d_ok, n_ok, value), "checkpoint")
    for name, text in HOSTILE_PROMPTS.items():
        refused(lambda text=text: c.predict(text, api_name="/prompt"), "")
    # the same session still answers a prompt and a full Run
    out = c.predict(json.dumps({"points": [[60, 70]], "labels": [1]}), api_name="/prompt")
    assert len(out[INFO]["candidates"]["predicted_iou"]) == 3
    partial = hostile["folder"] / "part_depth.npy"
    d = np.full((128, 256), 2.0, np.float32)
    d[:32] = np.nan
    np.save(partial, d)
    out = segment(good[0], handle_file(str(partial)), n_ok)
    assert "⚠ Depth: 25.0 % of the pixels" in out[RUN_STATUS] and "8,192 NaN" in out[RUN_STATUS]
    log = Path(app["log"]).read_text()
    loads = re.findall(r"loading checkpoint (\S+)", log)
    assert loads == [str(DEMO.resolve())], loads  # one load, of the configured checkpoint only
    assert "Traceback" not in log


def test_bad_files_are_refused_while_another_run_encodes(hostile, tmp_path):
    """A bad upload does not wait behind another user's Run: while one Run holds the encoder
    (gated until the test opens it), bad depth maps, one refused from its header and one from
    its pixels, are answered; a good second Run waits and says so; both Runs then finish."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    files = hostile["files"]
    pano, d_ok, n_ok = (handle_file(str(p)) for p in (hostile["pano"], _depth_png(hostile["folder"]),
                                                       _normals_png(hostile["folder"])))
    with gated_app(["--checkpoint", str(DEMO), "--device", "cpu", "--cache-mb", "0"], tmp_path) as app:
        busy, other = (Client(app["url"], verbose=False, download_files=str(tmp_path / "dl")) for _ in range(2))
        first = busy.submit(pano, d_ok, n_ok, "local", 0, 10, api_name="/segment")
        wait_until(lambda: (app["gate"] / "waiting").exists(), "the first Run reaching the encoder")
        for kind in ("depth_png_bomb", "depth_all_nan"):
            f = files[kind]
            refusal = other.submit(pano, handle_file(str(f.path)), n_ok, "local", 0, 10, api_name="/segment")
            with pytest.raises(AppError) as err:
                refusal.result(timeout=120)  # the gate is closed: this answer cannot come from after the first Run
            assert f.expect in str(err.value) and f.path.name in str(err.value)
            assert not first.done()
        second = other.submit(pano, d_ok, n_ok, "local", 0, 10, api_name="/segment")

        def second_waits() -> bool:
            progress = second.status().progress_data or []
            return any("Waiting for another user's job" in (p.desc or "") for p in progress)

        wait_until(second_waits, "the second Run saying it waits")
        assert not first.done()
        (app["gate"] / "go").touch()
        for run in (first, second):
            assert "Segmented 256×128" in run.result(timeout=120)[RUN_STATUS]


def test_one_client_cannot_take_the_run_queue(hostile, tmp_path):
    """Each client has one Run running and one waiting; a third is refused at once. Users take
    turns: while the first client's Run holds the encoder (gated) and its next one waits, a
    second client's Run goes ahead of that next one."""
    import cv2
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    first_inputs = [handle_file(str(p)) for p in (hostile["pano"], _depth_png(hostile["folder"]),
                                                   _normals_png(hostile["folder"]))]
    wide = tmp_path / "wide"  # the other client's panorama is wider: the encoder's log tells them apart
    wide.mkdir()
    cv2.imwrite(str(wide / "wide_rgb.png"), np.random.default_rng(2).integers(0, 256, (256, 512, 3), np.uint8))
    cv2.imwrite(str(wide / "wide_depth.png"), np.full((256, 512), 2500, np.uint16))
    cv2.imwrite(str(wide / "wide_normals.png"), np.full((256, 512, 3), 128, np.uint8))
    other_inputs = [handle_file(str(wide / f"wide_{k}.png")) for k in ("rgb", "depth", "normals")]
    with gated_app(["--checkpoint", str(DEMO), "--device", "cpu", "--cache-mb", "0"], tmp_path) as app:
        gate = app["gate"]
        flooder, other = (Client(app["url"], verbose=False, download_files=str(tmp_path / "dl")) for _ in range(2))
        first = flooder.submit(*first_inputs, "local", 0, 10, api_name="/segment")
        wait_until(lambda: (gate / "waiting").exists(), "the first Run reaching the encoder")
        queued = flooder.submit(*first_inputs, "local", 0, 10, api_name="/segment")

        def says(job, text: str) -> bool:
            return any(text in (p.desc or "") for p in job.status().progress_data or [])

        wait_until(lambda: says(queued, "Waiting for your previous Run to finish"), "the second Run waiting")
        for api_name, args in (("/segment", (*first_inputs, "local", 0, 10)), ("/refine_instances", (8,))):
            with pytest.raises(AppError) as err:  # at once: the gate is closed
                flooder.predict(*args, api_name=api_name)
            assert str(err.value) == "Your previous Run is still going: wait for it to finish."
        ahead = other.submit(*other_inputs, "local", 0, 10, api_name="/segment")
        wait_until(lambda: says(ahead, "Waiting for another user's job"), "the other client's Run at the encoder")
        assert not first.done() and not queued.done()
        (gate / "go").touch()
        assert "Segmented 256×128" in first.result(timeout=120)[RUN_STATUS]
        assert "Segmented 512×256" in ahead.result(timeout=120)[RUN_STATUS]
        assert "Segmented 256×128" in queued.result(timeout=120)[RUN_STATUS]
        assert (gate / "encoded").read_text().split() == ["256", "512", "256"]
        flooder.predict(*first_inputs, "local", 0, 10, api_name="/segment")  # its share is free again


def _depth_png(folder: Path) -> Path:
    import cv2

    path = folder / "room_depth.png"
    cv2.imwrite(str(path), np.full((128, 256), 2500, np.uint16))
    return path


def _normals_png(folder: Path) -> Path:
    import cv2

    path = folder / "room_normals.png"
    cv2.imwrite(str(path), np.full((128, 256, 3), 128, np.uint8))
    return path


def test_a_job_cut_short_says_so():
    import asyncio
    import concurrent.futures

    import gradio as gr

    from panosamic.studio.refusals import friendly

    for exc in (asyncio.CancelledError(), concurrent.futures.CancelledError(), KeyboardInterrupt()):
        def handler(exc=exc):
            raise exc

        with pytest.raises(gr.Error) as err:
            friendly(handler)()
        assert "stopped before it finished" in err.value.message and "Cancelled" not in err.value.message


def test_pop_ups_show_text_that_looks_like_html_as_text(tmp_path):
    """Gradio shows a pop-up's message as HTML: `--checkpoint <folder>` lost its `<folder>` (an
    unknown tag) and HTML typed into a prompt key came back as an element. Every message is
    escaped where it becomes page content, the app's pop-ups (refusals.friendly, the panorama
    input's check) included."""
    import gradio as gr
    from gradio.data_classes import FileData

    from panosamic.errors import WeightsError
    from panosamic.studio.refusals import friendly, panorama_input

    cases = [(InputError("Unknown prompt field(s) <b>x</b>: use points."),
              "Unknown prompt field(s) &lt;b&gt;x&lt;/b&gt;: use points."),
             (WeightsError("not in the cache."), "start the app with `--checkpoint &lt;folder&gt;` holding"),
             (RuntimeError("<img src=x onerror=alert(1)>"), "Unexpected error (RuntimeError)")]
    for exc, expect in cases:
        def handler(exc=exc):
            raise exc

        with pytest.raises(gr.Error) as err:
            friendly(handler)()
        assert expect in err.value.message and "<" not in err.value.message, err.value.message
    bad = tmp_path / "notes.png"
    bad.write_text("hello")
    with pytest.raises(gr.Error) as err:
        panorama_input(type="filepath").preprocess(FileData(path=str(bad), orig_name="<b>x</b>.png"))
    assert "<" not in err.value.message


def test_a_hostile_load_logs_no_traceback():
    """devtools.hostile_load (every hostile file, prompt and checkpoint name, and misuse of the
    HTTP API: calls out of order, wrong types, paths nobody uploaded, two streams at once,
    uploads malformed or cut short): every answer a plain refusal, bad input one log line each,
    and no traceback in the server log (tracebacks are for bugs)."""
    proc = subprocess.run([sys.executable, "-m", "devtools.hostile_load", "--rounds", "1", "--max-seconds", "120"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    result = json.loads(proc.stdout)
    assert result["not_plain"] == [] and result["session_still_works"], result["not_plain"]
    assert result["tracebacks_in_log"] == 0
    assert result["refusals_in_log"] >= len(result["kinds"]) - 10  # a line each (a few answer without one)
    assert proc.returncode == 0, proc.stderr[-2000:]
