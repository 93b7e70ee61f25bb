"""Sessions at camera resolution: the working size, one Predictor per model, compact undo,
full-resolution downloads on request, isolation and the sessions' lifetime.

Runs the bundled demo checkpoint (assets/demo) on a bundled example enlarged to 2048x1024,
with a 512-pixel working width, so that input and working sizes differ as they do for
camera panoramas (the same code paths as 8192x4096 with the default 2048)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from panosamic import io
from panosamic.errors import InputError
from panosamic.studio import StudioBackend
from panosamic.geometry import resize_erp
from panosamic.studio.store import SessionExpired

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "assets" / "demo"
WORK = 512


@pytest.fixture(scope="module")
def big_example(tmp_path_factory):
    """The office example at 2048x1024 (RGB JPEG, depth PNG in mm, normals PNG)."""
    out = tmp_path_factory.mktemp("big")
    paths = io.example_paths("office")
    rgb = cv2.imread(str(paths["image"]))
    cv2.imwrite(str(out / "office_rgb.jpg"), cv2.resize(rgb, (2048, 1024), interpolation=cv2.INTER_CUBIC))
    depth = cv2.imread(str(paths["depth"]), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(out / "office_depth.png"), cv2.resize(depth, (2048, 1024), interpolation=cv2.INTER_NEAREST))
    normals = cv2.imread(str(paths["normals"]))
    cv2.imwrite(str(out / "office_normals.png"), cv2.resize(normals, (2048, 1024), interpolation=cv2.INTER_NEAREST))
    return [str(out / f"office_{k}.{'jpg' if k == 'rgb' else 'png'}") for k in ("rgb", "depth", "normals")]


@pytest.fixture()
def backend():
    b = StudioBackend(str(DEMO), None, None, device="cpu", cache_mb=64, work_width=WORK)
    yield b
    b.close()


def _segment(backend, ex, **kw):
    s, cached = backend.segment(ex[0], ex[1], ex[2], "local", 0, 10, **kw)
    return s


def test_sessions_work_at_the_working_size_with_prompts_in_input_pixels(backend, big_example):
    s = _segment(backend, big_example)
    assert s.input_size == (1024, 2048) and s.shape == (256, 512) and s.scale == 0.25
    assert s.labels.dtype == np.uint8 and s.image.shape == (256, 512, 3) and s.depth.shape == (256, 512)
    predictor = backend.registry.get(s.model_key)
    np.testing.assert_array_equal(s.labels, predictor.labels_at((256, 512), state=s.state))
    backend.click(s, 150, 160)  # display pixels = working pixels
    assert s.points == [(150.5 / 0.25, 160.5 / 0.25)]
    assert s.candidates.shape == (3, 256, 512)
    # the same prompt through the library at the input size gives the same masks, downsampled
    masks, scores, _ = predictor.predict(**s.prompt_kwargs(), state=s.state)
    np.testing.assert_allclose(scores, s.scores, atol=1e-6)
    small = masks[:, 2::4, 2::4]
    assert (small == s.candidates).mean() > 0.99
    # the session holds nothing at the input size
    assert s.nbytes < s.state.nbytes + 8 * 256 * 512 * 4


def test_a_click_neither_encodes_nor_builds_a_predictor(backend, big_example, monkeypatch):
    from panosamic import predictor as predictor_module

    s = _segment(backend, big_example)
    predictor = backend.registry.get(s.model_key)
    built = []
    original = predictor_module.Predictor.__init__
    monkeypatch.setattr(predictor_module.Predictor, "__init__",
                        lambda self, *a, **k: (built.append(1), original(self, *a, **k))[1])
    calls = predictor.encoder_calls
    backend.click(s, 100, 100)
    backend.click(s, 300, 100, "negative")
    backend.prompt(s, '{"box": [1900, 100, 200, 500]}')
    backend.assign(s, "wall")
    backend.undo(s)
    backend.export(s)
    assert built == [] and predictor.encoder_calls == calls
    assert s.state.embeddings.device.type == "cpu"   # the cache and the session share one CPU state
    assert backend.cache.get(s.key) is s.state


def test_downloads_are_full_resolution_and_equal_what_the_user_saw(backend, big_example):
    s = _segment(backend, big_example)
    backend.click(s, 250, 200)
    backend.assign(s, "door")
    mask = s.refined[-1].mask
    files = {Path(f).name.split("_", 1)[1]: f for f in backend.export(s)}
    labels = cv2.imread(files["labels.png"], cv2.IMREAD_UNCHANGED)
    assert labels.shape == (1024, 2048)
    seen = resize_erp(s.labels, 1024, 2048, nearest=True)
    edited = resize_erp(mask, 1024, 2048, nearest=True)
    np.testing.assert_array_equal(labels[edited], 7)                 # door, exactly where the user put it
    assert (labels == seen).mean() > 0.97                            # elsewhere, edges within a working pixel
    diff = labels != seen
    near_edge = cv2.dilate((cv2.morphologyEx(s.labels, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0)
                           .astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    assert not (diff & ~resize_erp(near_edge, 1024, 2048, nearest=True)).any()
    ids = cv2.imread(files["masks.png"], cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(ids == 1, edited)
    stats = json.loads(Path(files["stats.json"]).read_text())
    assert (stats["height"], stats["width"]) == (1024, 2048) and stats["edits"] == 1
    assert sum(r["pixels"] for r in stats["stats"]) == 1024 * 2048


def test_undo_reverts_every_kind_of_edit_exactly(backend, big_example):
    s = _segment(backend, big_example)
    snapshots = [(s.labels.copy(), s.edited.copy(), len(s.refined), s.summary()["prompts"])]
    backend.click(s, 60, 60)
    snapshots.append((s.labels.copy(), s.edited.copy(), len(s.refined), s.summary()["prompts"]))
    backend.assign(s, "ceiling")
    snapshots.append((s.labels.copy(), s.edited.copy(), len(s.refined), s.summary()["prompts"]))
    backend.prompt(s, '{"box": [1900, 300, 150, 700]}')                       # across the seam
    snapshots.append((s.labels.copy(), s.edited.copy(), len(s.refined), s.summary()["prompts"]))
    backend.assign(s, "", 0)                                                  # majority class
    snapshots.append((s.labels.copy(), s.edited.copy(), len(s.refined), s.summary()["prompts"]))
    backend.refine_instances(s, 4)
    snapshots.append((s.labels.copy(), s.edited.copy(), len(s.refined), s.summary()["prompts"]))
    backend.click(s, 10, 10)
    backend.clear(s)
    assert s.undo_depth >= 7
    backend.undo(s)  # the clear
    backend.undo(s)  # the click
    for labels, edited, n_refined, prompts in reversed(snapshots[:-1]):
        backend.undo(s)
        np.testing.assert_array_equal(s.labels, labels)
        np.testing.assert_array_equal(s.edited, edited)
        assert len(s.refined) == n_refined and s.summary()["prompts"] == prompts
    assert backend.undo(s) is None
    np.testing.assert_array_equal(s.labels, s.initial_labels)


def test_sessions_are_isolated_and_share_one_state(backend, big_example):
    a = _segment(backend, big_example)
    b = _segment(backend, big_example)
    assert a.state is b.state and a.labels is not b.labels
    backend.click(a, 100, 100)
    backend.assign(a, "beam")
    assert b.refined == [] and b.candidates is None
    np.testing.assert_array_equal(b.labels, b.initial_labels)
    assert (a.labels != a.initial_labels).any()


def test_idle_and_memory_eviction_tell_the_user_to_run_again(big_example):
    b = StudioBackend(str(DEMO), None, None, device="cpu", cache_mb=64, work_width=WORK, session_idle_s=60)
    try:
        s1 = _segment(b, big_example)
        backend_export = b.export(s1)
        folder = Path(backend_export[0]).parent
        assert b.store.sweep(now=time.monotonic() + 30) == 0
        assert b.store.sweep(now=time.monotonic() + 120) == 1
        assert s1.closed == "idle" and s1.labels is None and not folder.exists()
        with pytest.raises(SessionExpired, match="after 1 min of inactivity.*press Run again"):
            b.click(s1, 10, 10)
        # a budget for two sessions: the least recently used idle one goes
        s2 = _segment(b, big_example)
        b.store.budget_bytes = int(s2.nbytes * 2.5)
        s3 = _segment(b, big_example)
        b.click(s2, 5, 5)                       # s2 is now the most recently used
        s4 = _segment(b, big_example)
        assert s3.closed == "memory" and not s2.closed and not s4.closed
        with pytest.raises(SessionExpired, match="make room for other users.*press Run again"):
            b.assign(s3, "wall")
        # a new Run of the same user releases the previous session at once
        s5 = _segment(b, big_example, previous=s4)
        assert s4.closed == "closed" and not s5.closed
    finally:
        b.close()
    assert not b.store.root.exists()


def test_lonlat_prompts_equal_pixel_prompts(backend, big_example):
    s = _segment(backend, big_example)
    W, H = 2048, 1024
    pts = [(300.0, 400.0), (1900.0, 600.0)]
    lonlat = [[x / W * 360 - 180, 90 - y / H * 180] for x, y in pts]
    backend.prompt(s, json.dumps({"points": [list(p) for p in pts], "labels": [1, 0]}))
    by_pixels = s.candidates.copy(), s.scores.copy()
    backend.prompt(s, json.dumps({"points_lonlat": lonlat, "labels": [1, 0]}))
    np.testing.assert_array_equal(s.candidates, by_pixels[0])
    np.testing.assert_array_equal(s.scores, by_pixels[1])
    box = [1800.0, 200.0, 300.0, 700.0]
    backend.prompt(s, json.dumps({"box": box}))
    by_pixels = s.candidates.copy()
    box_ll = [box[0] / W * 360 - 180, 90 - box[1] / H * 180, box[2] / W * 360 - 180, 90 - box[3] / H * 180]
    backend.prompt(s, json.dumps({"box_lonlat": box_ll}))
    np.testing.assert_array_equal(s.candidates, by_pixels)
    with pytest.raises(InputError, match="longitude"):
        backend.prompt(s, json.dumps({"points_lonlat": [[200, 0]]}))


def test_viewer_clicks_by_direction_equal_pixel_prompts(backend, big_example):
    """A click in the 360° viewer (lon, lat in degrees) adds the same prompt as the pixel API,
    points and a box by two corners across the seam alike."""
    s = _segment(backend, big_example)
    W, H = 2048, 1024
    clicks = [(-60.0, -25.0, "positive"), (100.0, 10.0, "negative")]
    for lon, lat, kind in clicks:
        backend.click_lonlat(s, lon, lat, kind)
    pixels = [[(lon + 180) / 360 * W, (90 - lat) / 180 * H] for lon, lat, _ in clicks]
    assert s.points == [tuple(p) for p in pixels] and s.point_labels == [1, 0]
    by_clicks = s.candidates.copy(), s.scores.copy()
    backend.prompt(s, json.dumps({"points": pixels, "labels": [1, 0]}))
    np.testing.assert_array_equal(s.candidates, by_clicks[0])
    np.testing.assert_array_equal(s.scores, by_clicks[1])
    backend.clear(s)
    backend.click_lonlat(s, 165.0, 30.0, "box")        # first corner: nothing decoded yet
    assert s.pending_corner is not None and s.candidates is None
    backend.click_lonlat(s, -170.0, -20.0, "box")      # second corner left of the first: wraps
    box = [(165 + 180) / 360 * W, (90 - 30) / 180 * H, (-170 + 180) / 360 * W, (90 + 20) / 180 * H]
    assert s.box == box and box[0] > box[2]
    by_clicks = s.candidates.copy()
    backend.prompt(s, json.dumps({"box": box}))
    np.testing.assert_array_equal(s.candidates, by_clicks)
    with pytest.raises(InputError, match="longitude"):
        backend.click_lonlat(s, 181, 0, "positive")
    with pytest.raises(InputError, match="latitude"):
        backend.click_lonlat(s, 0, "north", "positive")
    with pytest.raises(InputError, match="Run first"):
        backend.click_lonlat(None, 0, 0, "positive")


def test_a_plain_click_starts_a_new_selection_shift_adds_and_negative_subtracts(backend, big_example):
    """SAM's demo's habit, in both views: a plain click selects anew, Shift-click (add) adds a
    point, a negative click takes a part away from the selection (refused without one), a box
    replaces the prompt unless Shift keeps the points; each is one undo step, and after Assign
    the next click starts afresh."""
    s = _segment(backend, big_example)
    backend.click(s, 100, 150)
    first = s.candidates.copy()
    backend.click(s, 400, 60)                                # a second object: not mixed with the first
    assert s.points == [(400.5 / 0.25, 60.5 / 0.25)] and s.point_labels == [1]
    alone = s.candidates.copy()
    backend.click(s, 100, 150, add=True)                     # Shift-click: both points
    assert len(s.points) == 2 and s.point_labels == [1, 1]
    backend.undo(s)                                          # back to the second object's selection
    np.testing.assert_array_equal(s.candidates, alone)
    backend.undo(s)                                          # and to the first one's
    np.testing.assert_array_equal(s.candidates, first)
    backend.click(s, 110, 160, "negative")                   # subtracts: joins the current selection
    assert s.point_labels == [1, 0] and s.points[0] == (100.5 / 0.25, 150.5 / 0.25)
    backend.click_lonlat(s, 20.0, -10.0, "positive", add=True)   # the viewer's Shift-click
    assert s.point_labels == [1, 0, 1]
    backend.click_lonlat(s, 20.0, -10.0, "positive")             # the viewer's plain click
    assert s.point_labels == [1]
    backend.click(s, 300, 50, "box", add=True)               # Shift: the box keeps the point
    backend.click(s, 350, 90, "box")
    assert s.point_labels == [1] and s.box is not None
    backend.click(s, 300, 50, "box")                         # plain: the box alone, from its first corner
    assert not s.points and s.box is None and s.candidates is None
    backend.click(s, 350, 90, "box")
    assert not s.points and s.box is not None and s.candidates is not None
    backend.assign(s, "wall")
    assert not s.has_prompts
    with pytest.raises(InputError, match="first click on what you want"):
        backend.click(s, 110, 160, "negative")                # nothing selected to take a part from
    assert not s.has_prompts and s.candidates is None
    backend.click(s, 100, 150, add=True)                     # after Assign: a fresh selection
    assert s.point_labels == [1]
    np.testing.assert_array_equal(s.candidates, first)


def test_labels_at_any_size_equal_the_argmax_of_the_logits(backend, big_example):
    s = _segment(backend, big_example)
    predictor = backend.registry.get(s.model_key)
    for size in [(1024, 2048), (300, 600), (512, 1024)]:
        tiled = predictor.labels_at(size, state=s.state, tile_rows=100)
        full = predictor.model.postprocess(s.state.semantic_logits, size)[0].argmax(0).numpy()
        assert tiled.dtype == np.uint8 and (tiled == full).mean() > 0.9999


def test_a_session_is_not_released_under_a_running_event(backend, big_example):
    """An event holds its session: the idle sweep skips it, and a close (the tab went, a new
    Run replaced it) waits until the event has finished with the session's arrays."""
    import threading

    s = _segment(backend, big_example)
    inside, finish, seen = threading.Event(), threading.Event(), []

    def event():
        with backend.store.use(s):
            inside.set()
            finish.wait(30)
            seen.append(s.labels.shape)

    worker = threading.Thread(target=event)
    worker.start()
    assert inside.wait(30)
    assert backend.store.sweep(now=time.monotonic() + 10**6) == 0  # in use: not idle
    closer = threading.Thread(target=backend.store.close, args=(s, "closed"))
    closer.start()
    closer.join(0.5)
    assert closer.is_alive() and s.closed is None  # still waiting for the event
    finish.set()
    worker.join(30)
    closer.join(30)
    assert seen == [(256, 512)] and s.closed == "closed"
    with pytest.raises(SessionExpired):
        backend.click(s, 10, 10)


def test_the_view_is_encoded_once_for_both_views_and_goes_with_its_session(backend, big_example):
    import base64

    from panosamic.studio import render

    s = _segment(backend, big_example)
    backend.click(s, 150, 160)
    jpeg = render.view_jpeg(render.view_image(s, 0.5))
    path = Path(backend.store.write_view(s, jpeg))
    payload = render.viewer_payload(s, jpeg)
    # the map's file and the viewer's texture are the same bytes: one encode per event
    assert path.read_bytes() == jpeg
    assert base64.b64decode(payload["texture"].split(",", 1)[1]) == jpeg
    decoded = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (256, 512, 3)
    # a new name at each event (the page never gets stale bytes under an old URL), atomic (no
    # temporary file stays); a replaced one stays a minute (its client may still fetch it)
    from panosamic.studio.store import RETIRED_S

    views = [Path(backend.store.write_view(s, render.view_jpeg(render.view_image(s, o)))) for o in (0.7, 0.9)]
    assert len({path, *views}) == 3 and all(v.is_file() for v in (path, *views))
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(v.name for v in (path, *views))
    assert backend.store.prune(now=time.monotonic() + RETIRED_S + 1) == 2
    assert not path.exists() and not views[0].exists() and views[1].is_file()
    backend.store.close(s)
    assert not views[1].exists()
