"""The labelling logic behind the page: a session's class table (the checkpoint's classes, then
the user's), the candidates' preselection on real panoramas, the upload checks and the progress
of reading an 8192x4096 upload and of its export."""

from __future__ import annotations

import csv
import io as _io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from app_utils import ROOT, make_session

from panosamic.datasets import STANFORD2D3DS as DS
from panosamic.errors import InputError
from panosamic.studio import StudioBackend
from panosamic.studio.candidates import PLAUSIBLE_MARGIN, caption, cards_html, fit_words, preselect, thumbnail
from panosamic.studio.classes import MAX_CLASSES, ClassTable, parse_color
from panosamic.studio.downloads import write_downloads
from panosamic.studio.uploads import check_upload

EXAMPLES = ROOT / "assets" / "examples"


# ---------------------------------------------------------------------------- the class table

def test_user_classes_follow_the_checkpoints_whose_indices_never_change():
    s = make_session()
    model = list(s.classes)
    index, new = s.add_class("Bed", "#ff8800")
    assert (index, new) == (len(model), True)
    assert list(s.classes[:len(model)]) == model and s.classes[index] == "Bed"
    assert tuple(s.palette[index]) == (255, 136, 0)
    assert s.add_class(" bed ") == (index, False)          # one class, whatever the case and blanks
    assert s.add_class("wall") == (model.index("wall"), False)
    # assign with a new name makes it a user's class with a colour of its own
    mask = np.zeros(s.shape, bool)
    mask[2:10, 5:20] = True
    s.add_point(10, 5)
    s.set_candidates(np.stack([mask, mask, mask]), [0.9, 0.8, 0.7])
    s.assign("TV")
    tv = s.class_table.find("tv")
    assert tv == len(model) + 1 and (s.labels[mask] == tv).all()
    colours = {tuple(c) for c in s.palette}
    assert len(colours) == len(s.palette), "a new class got a colour already in use"
    rows = s.class_table.rows()
    assert [r.origin for r in rows] == ["model"] * len(model) + ["user", "user"]
    # the statistics and the legend count the new class
    stats = {r["name"]: r for r in s.stats()}
    assert stats["TV"]["pixels"] == mask.sum() and stats["Bed"]["pixels"] == 0


def test_an_assign_refused_adds_no_class():
    s = make_session()
    n = len(s.classes)
    with pytest.raises(InputError, match="click on the panorama"):
        s.assign("lamp")
    assert len(s.classes) == n


@pytest.mark.parametrize("name, match", [("", "Type a class name"), ("  ", "Type a class name"),
                                         ("x" * 41, "at most 40"), ("12", "index"), ("a\x00b", "printable")])
def test_bad_class_names_are_refused_with_a_message(name, match):
    with pytest.raises(InputError, match=match):
        make_session().add_class(name)


def test_colours_as_the_picker_and_api_clients_write_them():
    assert parse_color("#1e90ff") == parse_color("1E90FF") == parse_color("rgb(30, 144, 255)") == (30, 144, 255)
    assert parse_color("rgba(30, 144, 255, 0.5)") == (30, 144, 255) and parse_color([30, 144, 255]) == (30, 144, 255)
    assert parse_color(None) is None and parse_color("") is None
    for bad in ("red", "#12345", "rgb(300, 0, 0)", [1, 2]):
        with pytest.raises(InputError, match="#1e90ff"):
            parse_color(bad)


def test_the_table_is_full_at_255_classes():
    table = ClassTable([f"c{i}" for i in range(250)], np.zeros((250, 3), np.uint8))
    for i in range(MAX_CLASSES - 250):
        table.add(f"user {i}")
    with pytest.raises(InputError, match="255 classes"):
        table.add("one more")


def test_export_writes_the_class_table_beside_the_label_png(tmp_path):
    s = make_session(depth=False)
    mask = np.zeros(s.shape, bool)
    mask[4:12, 30:50] = True
    s.add_point(40, 8)
    s.set_candidates(np.stack([mask] * 3), [0.9, 0.9, 0.9])
    s.add_class("lamp", "#00ff00")
    s.assign("lamp")
    files = write_downloads(s, tmp_path, s.initial_labels.copy())
    assert Path(files["class_table"]).name == "office_classes.csv"
    assert list(files)[:2] == ["labels", "class_table"]
    rows = list(csv.DictReader(open(files["class_table"], encoding="utf-8")))
    assert rows[13] == {"index": "13", "name": "lamp", "r": "0", "g": "255", "b": "0", "hex": "#00ff00",
                        "origin": "user"}
    assert [r["name"] for r in rows[:13]] == list(DS.classes) and len(rows) == 14
    assert {r["origin"] for r in rows[:13]} == {"model"}
    labels = cv2.imread(files["labels"], cv2.IMREAD_UNCHANGED)
    assert (labels[mask] == 13).all()
    colors = cv2.imread(files["colors"])[..., ::-1]
    assert (colors[mask] == (0, 255, 0)).all()
    coco = json.loads(Path(files["coco_rle"]).read_text())
    assert coco["categories"][13] == {"id": 13, "name": "lamp", "color": [0, 255, 0], "origin": "user"}
    stats = json.loads(Path(files["stats_json"]).read_text())
    assert stats["class_table"][13]["origin"] == "user" and stats["stats"][13]["name"] == "lamp"


# ---------------------------------------------------------------------------- candidates

def test_preselect_takes_the_tightest_plausible_mask_for_a_single_click():
    # the larger masks score a little higher: the smallest within the margin wins
    assert preselect([0.90, 0.93, 0.95], [100, 1000, 5000]) == 0
    # a small mask the model doubts is not plausible
    assert preselect([0.30, 0.93, 0.95], [100, 1000, 5000]) == 1
    assert preselect([0.95 - PLAUSIBLE_MARGIN - 1e-3, 0.5, 0.95], [10, 20, 30]) == 2
    # several points or a box: the best fit
    assert preselect([0.90, 0.93, 0.95], [100, 1000, 5000], single_click=False) == 2
    # an empty mask is never preselected
    assert preselect([0.95, 0.9, 0.2], [0, 50, 10]) == 1
    assert fit_words(0.9) == "good" and fit_words(0.7) == "fair" and fit_words(0.4) == "rough"
    assert fit_words(0.1) == "poor"
    assert caption(0, 0.91, 0.024) == "#1 · 2.4 % of the panorama · fit 0.91 (good)"


@pytest.fixture(scope="module")
def demo_backends():
    made = {}

    def get(name):
        if name not in made:
            made[name] = StudioBackend(str(ROOT / "assets" / name), None, None, device="cpu", cache_mb=64,
                                       depth_estimator="none")
        return made[name]

    yield get
    for b in made.values():
        b.close()


# (checkpoint, example, clicks in input pixels): a real photo (RGB demo) and a rendered room (RGB-D-N demo)
CASES = [("demo-rgb", "hotel_room", [(192, 400), (704, 250), (576, 400), (512, 300)]),
         ("demo", "conference", [(832, 150), (576, 400), (512, 300), (150, 400)])]


@pytest.mark.parametrize("checkpoint, name, clicks", CASES, ids=["photo", "rendered"])
def test_a_single_click_preselects_the_tightest_plausible_mask(demo_backends, checkpoint, name, clicks):
    backend = demo_backends(checkpoint)
    files = [EXAMPLES / f"{name}_{k}.{'jpg' if k == 'rgb' else 'png'}" for k in ("rgb", "depth", "normals")]
    files = [str(f) if f.is_file() else None for f in files]
    s, _ = backend.segment(*files, None, 0, 10, estimate_3d=False)
    assert s.shape == (512, 1024)
    tighter = 0
    for x, y in clicks:
        backend.click(s, x, y)
        areas = s.candidates.reshape(3, -1).sum(1)
        best = int(np.argmax(s.scores))
        plausible = [i for i in range(3) if s.scores[i] >= s.scores[best] - PLAUSIBLE_MARGIN]
        assert s.selected == min(plausible, key=lambda i: areas[i]), (x, y, s.scores, areas)
        assert areas[s.selected] <= areas[best]
        tighter += areas[s.selected] < areas[best]
        # the cards: three thumbnails, the preselected one marked
        html = cards_html(s)
        assert html.count('<button type="button" class="cand-card') == 3 and html.count("data:image/jpeg;base64,") == 3
        assert f'cand-card selected" data-index="{s.selected}"' in html
    # the rule matters here: at least one click where the best-scoring mask was a larger one
    assert tighter >= 1
    # several points: the best fit
    backend.click(s, clicks[0][0] + 20, clicks[0][1], add=True)
    assert s.selected == int(np.argmax(s.scores))


def test_a_thumbnail_of_a_mask_across_the_seam_shows_it_whole():
    image = np.full((64, 128, 3), 90, np.uint8)
    mask = np.zeros((64, 128), bool)
    mask[20:40, :10] = mask[20:40, -10:] = True
    thumb = thumbnail(image, mask, size=(48, 96))
    blue = (thumb[..., 2].astype(int) - thumb[..., 0] > 60)
    cols = np.flatnonzero(blue.any(0))
    assert thumb.shape == (48, 96, 3) and cols.size
    # one blob in the middle, not two halves at the borders
    assert cols.min() > 5 and cols.max() < 90 and np.all(np.diff(cols) == 1)


# ---------------------------------------------------------------------------- uploads

def _save(img: np.ndarray, path: Path) -> str:
    Image.fromarray(img).save(path)
    return str(path)


def test_each_bad_upload_gets_its_own_message(tmp_path):
    photo = np.asarray(Image.open(EXAMPLES / "hotel_room_rgb.jpg").convert("RGB"))
    four_three = _save(np.ascontiguousarray(photo[:, :683]), tmp_path / "room.jpg")
    with pytest.raises(InputError, match=r"room.jpg is 683x512, not 2:1.*Crop or resize it"):
        check_upload(four_three)
    rgba = np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])
    notes = check_upload(_save(rgba, tmp_path / "room.png"))
    assert len(notes) == 1 and "room.png has an alpha channel" in notes[0] and "without alpha" in notes[0]
    assert check_upload(str(EXAMPLES / "hotel_room_rgb.jpg")) == []
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"this is no picture at all")
    with pytest.raises(InputError, match="broken.jpg"):
        check_upload(str(broken))
    assert check_upload(None) == []


def test_an_8k_upload_and_its_export_report_each_step(demo_backends, tmp_path):
    photo = Image.open(EXAMPLES / "hotel_room_rgb.jpg").convert("RGB").resize((8192, 4096))
    path = tmp_path / "big_room.jpg"
    photo.save(path, quality=90)
    backend = demo_backends("demo-rgb")
    seen = []

    def progress(fraction, desc=None):
        seen.append((float(fraction), desc))

    s, _ = backend.segment(str(path), None, None, None, 0, 10, progress, estimate_3d=False)
    texts = [d for _f, d in seen]
    first_read = next(i for i, d in enumerate(texts) if d and d.startswith("Reading"))
    assert "8192×4096" in texts[first_read] and "MB" in texts[first_read], texts[first_read]
    assert any(d and d.startswith("Read the panorama (8192×4096)") for d in texts[first_read:])
    fractions = [f for f, _d in seen]
    assert fractions == sorted(fractions), "progress went backwards"
    # the model's steps come after the reading (loading the checkpoint, the encoder's blocks)
    assert len(texts) > first_read + 2
    seen.clear()
    backend.export(s, progress)
    steps = [d for _f, d in seen]
    assert steps[0] == "Export: the model's labels at 8192×4096" and len(steps) >= 4
    assert [f for f, _d in seen] == sorted(f for f, _d in seen)
