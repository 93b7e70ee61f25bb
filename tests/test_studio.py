"""panosamic.studio: the app's logic without a server (checkpoint picker, Run requirements,
error messages, input checks, model registry, and the backend on the tiny reference model)."""

from __future__ import annotations

import json
import subprocess
import time
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from app_utils import make_checkpoint_dir, make_session, png_header

from panosamic import studio
from panosamic.config import RELEASED_SUBFOLDERS
from panosamic.errors import InputError, WeightsError
from panosamic.studio import Checkpoints, ModelKey, ModelRegistry, StudioBackend
from panosamic.studio.checkpoints import DEMO_DIR, DEMO_FOLDERS

DEMOS = list(DEMO_FOLDERS)  # demo-rgb, demo-rgbd, demo: the bundled toy models, one per modality set
from panosamic.studio.render import view_image

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- import

def test_importing_studio_does_not_import_torch_or_gradio():
    code = "import sys, panosamic.studio; print('torch' in sys.modules, 'gradio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


# ----------------------------------------------------------------------------- checkpoints

def test_offline_without_the_weights_demo_is_preselected_and_run_answers_at_once(monkeypatch, tmp_path):
    from huggingface_hub import constants

    from panosamic.studio.checkpoints import HubProbe

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))   # nothing downloaded
    name = studio.DEFAULT_SUBFOLDER
    hub = Checkpoints("dfki-av/PanoSAMic", name, None)   # the command line named an RGB-D-N checkpoint
    assert hub.needs_download(name) and not hub.needs_download("demo")
    monkeypatch.setattr(HubProbe, "offline_mode", staticmethod(lambda: True))      # HF_HUB_OFFLINE
    assert hub.initial() == "demo" and hub.default == name
    assert dict((v, k) for k, v in hub.choices())[name].endswith("needs a download (offline now)")
    with pytest.raises(InputError, match="cannot be reached") as err:
        hub.check_available(name)
    assert "Demo" in str(err.value) and "--checkpoint" in str(err.value) and name in str(err.value)
    hub.check_available("demo")                                                  # the demo is always there
    text, ok = studio.requirements_text(hub, name, "p.jpg", "d.png", "n.png")
    assert ok and "cannot be reached" in text and "Ready" not in text
    # a Hub that never answers counts as unreachable after the probe's timeout
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)
    try:
        monkeypatch.setattr(HubProbe, "offline_mode", staticmethod(lambda: False))
        monkeypatch.setattr(HubProbe, "endpoint", staticmethod(lambda: f"http://127.0.0.1:{silent.getsockname()[1]}"))
        probe = HubProbe(timeout=0.5)
        assert probe.reachable() is False and probe.known_unreachable()
    finally:
        silent.close()


def test_automatic_checkpoint_follows_the_maps_given(monkeypatch, tmp_path, reference_dir):
    """Until a user picks one, the checkpoint is the one that uses exactly the maps given: the
    released fold-1 ViT-H checkpoint when the Hub answers (or it is cached), the bundled demo
    for the same maps offline; a picked checkpoint is kept."""
    from huggingface_hub import constants

    from panosamic.studio.checkpoints import HubProbe

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    hub = Checkpoints("dfki-av/PanoSAMic", None, None)
    assert hub.initial() == "auto"
    online = {("image",): "stanford2d3ds-vith-rgb-fold1", ("image", "depth"): "stanford2d3ds-vith-rgbd-fold1",
              ("image", "depth", "normals"): "stanford2d3ds-vith-rgbdn-fold1",
              ("image", "normals"): "stanford2d3ds-vith-rgb-fold1"}   # normals without depth: unused
    offline = {("image",): "demo-rgb", ("image", "depth"): "demo-rgbd", ("image", "depth", "normals"): "demo",
               ("image", "normals"): "demo-rgb"}
    for maps in online:
        assert hub.concrete("auto", maps, online=True) == online[maps]
        assert hub.concrete("", maps, online=False) == offline[maps]
        assert hub.concrete("demo", maps, online=True) == "demo"                  # a pick is kept
        assert hub.concrete("stanford2d3ds-vith-rgb-fold2", maps, online=False) == "stanford2d3ds-vith-rgb-fold2"
        assert hub.modalities(offline[maps]) == hub.modalities(online[maps])      # the demo reads the same maps
    monkeypatch.setattr(HubProbe, "offline_mode", staticmethod(lambda: True))     # HF_HUB_OFFLINE
    assert hub.concrete(None, ("image",)) == "demo-rgb"                           # known offline without waiting
    # what the page says before Run: the checkpoint it will take, and Run enabled for a photo alone
    text, ok = studio.requirements_text(hub, "auto", "photo.jpg", None, None)
    assert ok and "Automatic" in text and hub.label("demo-rgb") in text and "Ready" in text
    text, ok = studio.requirements_text(hub, "auto", None, None, None)
    assert not ok and "Upload a panorama" in text
    # a checkpoint that reads normals, given depth alone, derives them: Run is enabled and says so
    text, ok = studio.requirements_text(hub, "demo", "photo.jpg", "depth.png", None)
    assert ok and "derived from the depth" in text and "Missing" not in text
    text, ok = studio.requirements_text(hub, "demo", "photo.jpg", None, None)
    assert not ok and "Missing: depth" in text and "Automatic" in text
    # a local checkpoint folder is the command line's choice: Automatic takes its value for the maps
    ckpt = make_checkpoint_dir(reference_dir, tmp_path / "ckpt")
    local = Checkpoints(str(ckpt), None, None)
    assert local.default == "local" and local.concrete("auto", ("image",), online=True) == "local"


def test_released_subfolders_are_the_hub_choices():
    hub = Checkpoints("dfki-av/PanoSAMic", None, None)
    assert hub.local_dir is None and hub.local_values == []
    assert hub.default == "auto"
    values = [v for _, v in hub.choices()]
    assert values == ["auto"] + list(RELEASED_SUBFOLDERS) + DEMOS
    for name, mods in RELEASED_SUBFOLDERS.items():
        assert hub.modalities(name) == mods
        assert hub.resolve(name) == ("dfki-av/PanoSAMic", name)
    labels = dict((v, k) for k, v in hub.choices())
    assert labels["stanford2d3ds-vith-rgbd-fold2"].startswith("Stanford2D3DS · ViT-H · RGB-D · fold 2 (RGB image + depth)")
    assert "(RGB image)" in labels["stanford2d3ds-vith-rgb-fold3"]
    # typed-in values: announced by the name, or unknown until loaded; then learnt from the model
    assert hub.modalities("my-rgbd-finetune") == ("image", "depth")
    assert hub.modalities("whatever") is None
    assert hub.label("whatever").startswith("whatever (inputs read on load)")
    assert [v for _, v in hub.choices(extra="whatever")][-1] == "whatever"
    hub.learn(" whatever ", ("image",))
    assert hub.modalities("whatever") == ("image",)
    with pytest.raises(InputError, match="no local checkpoint"):
        hub.resolve("local")
    with pytest.raises(InputError):   # "auto" names no checkpoint until the maps are known
        hub.key(None, "cpu", None)
    rgb = hub.concrete(None, ("image",), online=True)
    assert hub.key(rgb, "cpu", None) == ModelKey("dfki-av/PanoSAMic", "stanford2d3ds-vith-rgb-fold1", None, "cpu", None)


def test_local_dir_with_config_reads_its_modalities(reference_dir, tmp_path):
    ckpt = make_checkpoint_dir(reference_dir, tmp_path / "ckpt")
    ck = Checkpoints(str(ckpt), "ignored-subfolder", "sam.pth")
    assert ck.default == "local" and ck.local_values == ["local"]
    values = [v for _, v in ck.choices()]
    assert values[:2] == ["auto", "local"] and values[2:] == list(RELEASED_SUBFOLDERS) + DEMOS
    assert ck.modalities("local") == ("image", "depth", "normals")
    assert ck.label("local") == "Local: ckpt (RGB image + depth + normals)"
    assert ck.resolve("local") == (str(ckpt), None)
    # released names still come from the Hub repo
    assert ck.resolve("stanford2d3ds-vith-rgb-fold1") == ("dfki-av/PanoSAMic", "stanford2d3ds-vith-rgb-fold1")
    assert ck.key("local", None, "bfloat16") == ModelKey(str(ckpt), None, "sam.pth", None, "bfloat16")


def test_local_dir_without_config_uses_subfolder_names(reference_dir, tmp_path):
    root = tmp_path / "ckpts"
    make_checkpoint_dir(reference_dir, root / "my-rgbd", config=False)
    make_checkpoint_dir(reference_dir, root / "runs" / "plain", config=False)
    ck = Checkpoints(str(root), "runs/plain", None)
    assert ck.local_values == ["local/my-rgbd", "local/runs/plain"]   # no model.safetensors at the top
    assert ck.default == "local/runs/plain"                          # the --subfolder given
    assert ck.modalities("local/my-rgbd") == ("image", "depth")      # from the folder name
    assert ck.modalities("local/runs/plain") is None                  # read when it loads
    assert ck.label("local/runs/plain") == "Local: ckpts/runs/plain (inputs read on load)"
    assert ck.resolve("local/my-rgbd") == (str(root), "my-rgbd")
    assert Checkpoints(str(root), None, None).default == "local/my-rgbd"


# ----------------------------------------------------------------------------- Run requirements

def test_requirements_say_what_is_missing_and_disable_run():
    hub = Checkpoints("dfki-av/PanoSAMic", None, None)
    text, ok = studio.requirements_text(hub, "stanford2d3ds-vith-rgbd-fold1", None, None, None)
    assert not ok and "Upload a panorama" in text and "**depth**" in text
    text, ok = studio.requirements_text(hub, "stanford2d3ds-vith-rgbd-fold1", "p.jpg", None, None)
    assert not ok and "Missing: depth." in text and "normals" not in text
    text, ok = studio.requirements_text(hub, "stanford2d3ds-vith-rgbdn-fold1", "p.jpg", None, None)
    assert not ok and "Missing: depth and normals" in text
    text, ok = studio.requirements_text(hub, "stanford2d3ds-vith-rgbdn-fold1", "p.jpg", "d.png", "n.png")
    assert ok and "Ready." in text and "not used" not in text
    text, ok = studio.requirements_text(hub, "stanford2d3ds-vith-rgb-fold1", "p.jpg", "d.png", "n.png")
    assert ok and "The depth and normals map is not used" in text
    text, ok = studio.requirements_text(hub, "whatever", "p.jpg", None, None)
    assert ok and "read when it loads" in text


# ----------------------------------------------------------------------------- error messages

def test_user_messages_explain_and_suggest_a_fix():
    msg = studio.user_message(WeightsError("stanford2d3ds-vith-rgb-fold1 is not in the cache."))
    assert msg.startswith("Could not load the checkpoint: stanford2d3ds-vith-rgb-fold1")
    assert "--checkpoint <folder>" in msg and "pick Demo" in msg
    assert studio.user_message(InputError("point (9, 9) lies outside")) == "point (9, 9) lies outside"
    msg = studio.user_message(ConnectionError("Max retries exceeded with url: /dfki-av"))
    assert msg.startswith("No network: Max retries") and "--checkpoint" in msg
    assert studio.user_message(OSError("[Errno 111] Connection refused")).startswith("No network")
    msg = studio.user_message(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert "Not enough GPU memory" in msg and "--dtype bfloat16" in msg and "--device cpu" in msg
    msg = studio.user_message(FileNotFoundError(2, "No such file or directory", "sam.pth"))
    assert msg.startswith("A file is missing:") and "sam.pth" in msg
    assert studio.user_message(MemoryError()) == "Out of memory: try a smaller panorama."
    msg = studio.user_message(KeyError("x"))
    assert msg.startswith("Unexpected error (KeyError)") and "server log" in msg


def test_messages_keep_addresses_and_documented_folders_and_hide_server_folders(tmp_path, monkeypatch):
    """The offline SAM download's message, exactly as sam_weights words it: the address to
    download from and the folder to put the file in stay readable; the server's folders do not."""
    import socket
    import urllib.error

    import torch.hub

    from panosamic.sam_weights import resolve_sam_checkpoint

    def offline(url, dst, **kwargs):
        raise urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PANOSAMIC_SAM_CACHE", raising=False)
    monkeypatch.delenv("PANOSAMIC_SAM_BASE_URL", raising=False)
    with pytest.raises(WeightsError) as err:
        resolve_sam_checkpoint("vit_h", progress=False)
    url = "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth"
    assert studio.user_message(err.value).startswith(
        f"Could not load the checkpoint: downloading {url} failed ([Errno -3] Temporary failure in name "
        f"resolution). If this machine has no internet access, download {url} elsewhere and put it at "
        "~/.cache/panosamic/sam/sam_vit_h_4b8939.pth , or pass the path of a local copy instead "
        "(e.g. sam='/path/to/sam_vit_h_4b8939.pth'). For offline use, ")
    hide = studio.messages.hide_paths
    home = tmp_path / "home"
    assert hide(f"not in the Hugging Face cache ({home}/.cache/huggingface/hub) and") == \
        "not in the Hugging Face cache (~/.cache/huggingface/hub) and"
    assert hide("put it at ~/.cache/panosamic/sam/x.pth or in a/b/c.pth") == \
        "put it at ~/.cache/panosamic/sam/x.pth or in a/b/c.pth"
    # the server's own folders: only the file's name
    assert hide(f"[Errno 2] No such file or directory: '{tmp_path}/gradio/ab12/office_rgb.png'") == \
        "[Errno 2] No such file or directory: 'office_rgb.png'"
    assert hide(f"{home}/.cache/other/x.pth, {home}/.cache/panosamic-old/y.pth") == "x.pth, y.pth"
    assert hide(r"C:\Users\bob\pano.png") == "pano.png"
    # a private mirror's password and a signed link's query are no one else's either
    assert hide("from https://bob:secret@mirror.lan/sam/x.pth?sig=abc failed") == \
        "from https://mirror.lan/sam/x.pth failed"


# ----------------------------------------------------------------------------- inputs

def test_load_inputs_checks_the_uploads(tmp_path):
    with pytest.raises(InputError, match="Upload a panorama"):
        studio.load_inputs(None, None, None, None)
    notes = tmp_path / "notes.png"
    notes.write_text("hello")
    with pytest.raises(InputError, match=r"could not read image notes\.png: not an image file"):
        studio.load_inputs(str(notes), None, None, None)
    square = tmp_path / "square.png"
    cv2.imwrite(str(square), np.zeros((100, 100, 3), np.uint8))
    with pytest.raises(InputError, match=r"100x100, not 2:1.*200x100"):
        studio.load_inputs(str(square), None, None, None)
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_header(10000, 5000))
    with pytest.raises(InputError, match="larger than the limit of 8192x4096"):
        studio.load_inputs(str(huge), None, None, None)

    pano = tmp_path / "room_rgb.png"
    cv2.imwrite(str(pano), np.full((64, 128, 3), 90, np.uint8))
    small_depth = tmp_path / "small_depth.png"
    cv2.imwrite(str(small_depth), np.full((32, 64), 2000, np.uint16))
    with pytest.raises(InputError, match="depth map is 64x32 but the panorama is 128x64"):
        studio.load_inputs(str(pano), str(small_depth), None, None)
    small_normals = tmp_path / "small_normals.png"
    cv2.imwrite(str(small_normals), np.full((32, 64, 3), 128, np.uint8))
    with pytest.raises(InputError, match="normal map is 64x32 but the panorama is 128x64"):
        studio.load_inputs(str(pano), None, str(small_normals), None)

    depth = tmp_path / "room_depth.png"
    cv2.imwrite(str(depth), np.full((64, 128), 2000, np.uint16))

    class Upload:  # gradio's FileData-like objects carry .path
        path = str(depth)

    image, d, n, name = studio.load_inputs([str(pano)], Upload(), None, 0.002)
    assert image.shape == (64, 128, 3) and image.dtype == np.uint8 and n is None and name == "room_rgb.png"
    assert d.shape == (64, 128) and np.allclose(d, 4.0)   # 2000 units x 2 mm


def test_preview_and_examples(tmp_path):
    pano = tmp_path / "a_rgb.png"
    cv2.imwrite(str(pano), np.full((64, 128, 3), 90, np.uint8))
    assert studio.preview_image(str(pano)).shape == (64, 128, 3)
    assert studio.preview_image(str(pano), max_width=64).shape == (32, 64, 3)
    assert studio.preview_image(None) is None
    (tmp_path / "bad_rgb.png").write_text("no image")
    assert studio.preview_image(str(tmp_path / "bad_rgb.png")) is None
    cv2.imwrite(str(tmp_path / "a_depth.png"), np.zeros((64, 128), np.uint16))
    rows = studio.find_examples(str(tmp_path))
    assert rows == [[str(pano), str(tmp_path / "a_depth.png"), None], [str(tmp_path / "bad_rgb.png"), None, None]]
    assert studio.find_examples(str(tmp_path / "missing")) == []


def test_bundled_photos_come_first_and_say_what_they_are():
    """The real photographs (photos.json, indoor first) lead the gallery as 'title · photo · RGB',
    each a plain 2:1 RGB JPEG with no companions; the rendered rooms follow with depth and normals."""
    import hashlib
    import json

    from devtools import scenes
    from PIL import Image

    from panosamic import io
    from panosamic.studio.uploads import PHOTOS_MANIFEST, example_photos

    folder = io.EXAMPLES_DIR
    photos = example_photos(str(folder))
    assert len(photos) >= 4 and list(photos)[:2] == ["hotel_room", "photo_studio"]
    assert [e["scene"] for e in photos.values()][:2] == ["indoor", "indoor"]
    rows = studio.find_examples(str(folder))
    names = [io.panorama_stem(r[0]) for r in rows]
    assert names == list(photos) + sorted(scenes.EXAMPLES)
    captions = [studio.example_caption(r) for r in rows]
    assert captions[0] == "hotel room · photo · RGB"
    for row, caption, entry in zip(rows, captions, photos.values()):
        assert row[1:] == [None, None] and caption == f"{entry['title']} · photo · RGB"
        path = Path(row[0])
        assert path.name == entry["file"] == f"{entry['name']}_rgb.jpg"
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size == (entry["width"], entry["height"])
            assert im.size[0] == 2 * im.size[1]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
        assert not [p.name for p in folder.glob(f"{entry['name']}[_.]*") if p != path]  # no depth/normals/labels/json
        assert entry["licence"] == "CC0-1.0" and entry["source"]["package"] == "blender-data"
        assert entry["original"]["page"].startswith("https://polyhaven.com/a/")
    for row, caption, name in zip(rows[len(photos):], captions[len(photos):], sorted(scenes.EXAMPLES)):
        assert caption == f"{name} · rendered · RGB-D-N"
        assert row[1].endswith(f"{name}_depth.png") and row[2].endswith(f"{name}_normals.png")
    assert json.loads((folder / PHOTOS_MANIFEST).read_text())["photos"][0]["name"] == "hotel_room"


def test_example_order_and_captions_from_the_manifest(tmp_path):
    import json

    for name in ("attic", "kitchen", "zoo"):
        cv2.imwrite(str(tmp_path / f"{name}_rgb.jpg"), np.full((8, 16, 3), 90, np.uint8))
    cv2.imwrite(str(tmp_path / "attic_depth.png"), np.zeros((8, 16), np.uint16))
    (tmp_path / "attic.json").write_text("{}")
    manifest = tmp_path / "photos.json"
    manifest.write_text(json.dumps({"photos": [{"name": "zoo", "title": "Zoo gate"}, {"name": "gone"}]}))
    rows = studio.find_examples(str(tmp_path))
    assert [Path(r[0]).name for r in rows] == ["zoo_rgb.jpg", "attic_rgb.jpg", "kitchen_rgb.jpg"]
    assert [studio.example_caption(r) for r in rows] == ["Zoo gate · photo · RGB", "attic · rendered · RGB-D",
                                                         "kitchen · RGB"]
    manifest.write_text("{not json")   # a damaged manifest: no photos, order by name, the app still starts
    rows = studio.find_examples(str(tmp_path))
    assert [Path(r[0]).name for r in rows] == ["attic_rgb.jpg", "kitchen_rgb.jpg", "zoo_rgb.jpg"]
    assert studio.example_caption(rows[2]) == "zoo · RGB"


# ----------------------------------------------------------------------------- texts

def test_edit_status_run_message_and_instance_masks():
    s = make_session()
    assert studio.edit_status(s) == "Click on the panorama to select a region."
    s.add_point(10, 5)
    s.add_point(20, 5, positive=False)
    s.add_box_corner(60, 2)
    assert studio.edit_status(s) == ("1 positive / 1 negative point(s) · "
                                     "first box corner set: click the opposite corner")
    s.add_box_corner(4, 20)
    mask = np.zeros(s.shape, bool)
    mask[:10] = True
    s.set_candidates(np.stack([mask, ~mask]), [0.8, 0.3])
    assert "box across the seam" in studio.edit_status(s)
    assert "mask #1 selected (IoU 0.80, 31.2% of the panorama, mostly wall)" in studio.edit_status(s)
    s.assign("door")
    assert studio.edit_status(s).endswith("1 edit(s)")

    s.timings.update({"load": 1.0, "encode": 0.5, "last_prompt": 0.1})
    assert studio.run_message(s, 2.0) == "**Segmented 64×32 in 2.00 s** with tiny — load 1.00 s · encode 0.50 s"
    assert studio.run_message(s, 2.0, {"render": 0.25}) == "**Segmented 64×32 in 2.00 s** with tiny — render 0.25 s"

    assert view_image(s, 0.5).shape == (32, 64, 3)


def test_the_edit_status_shows_a_class_name_as_written():
    """A class name (from a local checkpoint's config.json) is text in the Markdown status, not
    HTML or formatting; the app's own Markdown stays."""
    s = make_session()
    classes = list(s.classes)
    classes[11] = "<b>x</b> **y** [z](u)"  # wall
    s.classes = tuple(classes)
    mask = np.zeros(s.shape, bool)
    mask[:10] = True
    s.set_candidates(np.stack([mask, ~mask]), [0.8, 0.3])
    text = studio.edit_status(s)
    assert text.endswith(r"mostly &lt;b&gt;x&lt;/b&gt; \*\*y\*\* \[z\]\(u\))")
    assert "<" not in text


# ----------------------------------------------------------------------------- model registry

def test_registry_loads_lazily_once_and_evicts_beyond_max_models():
    calls = []

    def loader(key):
        if key.checkpoint == "broken":
            raise WeightsError("broken checkpoint")
        calls.append(key)
        return object()

    keys = [ModelKey(f"ckpt{i}", None, None, "cpu", None) for i in range(3)]
    reg = ModelRegistry(max_models=2, loader=loader)
    assert len(reg) == 0 and not reg.loaded(keys[0]) and calls == []
    m0 = reg.get(keys[0])
    assert reg.get(keys[0]) is m0 and calls == [keys[0]]            # loaded once
    reg.get(keys[1])
    reg.get(keys[0])                                               # keys[0] is now the most recent
    reg.get(keys[2])                                               # evicts keys[1]
    assert len(reg) == 2 and reg.loaded(keys[0]) and reg.loaded(keys[2]) and not reg.loaded(keys[1])
    with pytest.raises(WeightsError):
        reg.get(ModelKey("broken", None, None, "cpu", None))
    assert len(reg) == 2 and reg.loaded(keys[0])                   # a failed load evicts nothing
    assert ModelRegistry(max_models=0, loader=loader).max_models == 1


def test_the_bundled_demo_is_always_offered_and_segments(tmp_path):
    """The demo checkpoint (assets/demo) works offline from the picker, with its own SAM part."""
    hub = Checkpoints("dfki-av/PanoSAMic", None, "/elsewhere/sam_vit_h_4b8939.pth")
    assert hub.modalities("demo") == ("image", "depth", "normals")
    assert hub.label("demo").startswith("Demo RGB-D-N: toy model for rendered rooms")
    key = hub.key("demo", "cpu", None)
    assert key.checkpoint == str(DEMO_DIR) and key.sam is None
    # Started on the demo folder itself, it is the local checkpoint, not listed twice.
    assert "demo" not in [v for _, v in Checkpoints(str(DEMO_DIR), None, None).choices()]

    from panosamic import io

    backend = StudioBackend("dfki-av/PanoSAMic", None, None, device="cpu", cache_mb=64, examples=str(io.EXAMPLES_DIR))
    paths = io.example_paths("office")
    s, _ = backend.segment(str(paths["image"]), str(paths["depth"]), str(paths["normals"]), "demo", 0, 10)
    truth = io.load_labels(paths["labels"])
    assert (s.labels == truth).mean() > 0.8  # a real segmentation, not noise


def test_registry_loads_the_reference_checkpoint(reference_dir, tmp_path):
    ckpt = make_checkpoint_dir(reference_dir, tmp_path / "ckpt")
    reg = ModelRegistry(max_models=1, loader=studio.load_predictor)
    key = Checkpoints(str(ckpt), None, None).key("local", "cpu", None)
    assert not reg.loaded(key)
    predictor = reg.get(key)
    assert reg.loaded(key) and reg.get(key) is predictor
    assert predictor.model.config["num_classes"] == 13


# ----------------------------------------------------------------------------- the backend

def test_backend_segment_click_prompt_assign_undo_instances_export(reference_dir, tmp_path):
    from devtools import scenes
    from devtools.examples import write_example

    ckpt = make_checkpoint_dir(reference_dir, tmp_path / "ckpt")
    ex = write_example(tmp_path / "examples", "office", scenes.render_example("office", width=256))
    backend = StudioBackend(str(ckpt), None, None, device="cpu", cache_mb=64, examples=str(tmp_path / "examples"))
    assert [Path(p).name for p in backend.examples[0]] == ["office_rgb.jpg", "office_depth.png", "office_normals.png"]
    refusing = StudioBackend(str(ckpt), None, None, device="cpu", cache_mb=64, depth_estimator="none")
    with pytest.raises(InputError, match="needs the depth map too"):   # no estimator: the map is asked for
        refusing.segment(str(ex["image"]), None, str(ex["normals"]), "local", 0, 10)

    stages = []
    s, cached = backend.segment(str(ex["image"]), str(ex["depth"]), str(ex["normals"]), None, 0, None,
                                progress=lambda f, desc=None: stages.append(desc))
    assert not cached and s.shape == (128, 256) and s.max_depth == 10.0 and s.checkpoint == "local"
    assert studio.run_message(s, 1.0).startswith("**Segmented 256×128 in 1.00 s** with Local: ckpt")
    assert stages[:2] == ["Reading the inputs", "Downloading / loading the checkpoint (first use)"]
    assert {"load", "encode"} <= set(s.timings)
    assert backend.checkpoints.known["local"] == ("image", "depth", "normals")
    # depth alone: the normals are derived from it, and the Run says so
    s0, _ = backend.segment(str(ex["image"]), str(ex["depth"]), None, "local", 0, 10)
    assert any("derived from the depth" in n for n in s0.notes) and s0.has_normals
    assert "derived from the depth" in studio.run_message(s0, 1.0)
    stages = []
    s2, cached = backend.segment(str(ex["image"]), str(ex["depth"]), str(ex["normals"]), "local", 0, 10,
                                 progress=lambda f, desc=None: stages.append(desc))
    assert cached and "encode" not in s2.timings
    # nothing a user sees says so: it would tell them that someone else ran these files
    seen = " ".join([*filter(None, stages), studio.run_message(s2, 1.0), json.dumps(s2.summary())]).lower()
    assert "cache" not in seen and "reused" not in seen
    np.testing.assert_array_equal(s2.labels, s.labels)

    backend.click(s, 60, 70, "positive")
    assert s.points == [(60.5, 70.5)] and len(s.scores) == 3
    point_masks = s.candidates
    backend.click(s, 250, 30, "box", add=True)                 # the first corner: no decoder run
    assert s.pending_corner == (250.5, 30.5) and s.candidates is point_masks
    backend.click(s, 20, 100, "box")                           # with Shift's first corner: the point stays
    assert s.box == [250.5, 30.5, 20.5, 100.5] and s.candidates is not None and s.points == [(60.5, 70.5)]
    backend.prompt(s, '{"points": [[10, 10]], "labels": [0], "append": true}')
    assert s.point_labels == [1, 0] and s.box == [250.5, 30.5, 20.5, 100.5]
    before = s.summary()["prompts"]
    with pytest.raises(InputError, match="not valid JSON"):
        backend.prompt(s, "{points")
    with pytest.raises(InputError, match="outside"):
        backend.prompt(s, {"points": [[999, 5]]})
    assert s.summary()["prompts"] == before

    majority = s.majority_class(s.candidates[1])
    mask1 = s.candidates[1] & (s.labels != majority)
    changed = backend.assign(s, "", 1)                         # the majority class under candidate 1
    assert s.candidates is None and len(s.refined) == 1 and s.refined[0].class_index == majority
    assert changed == int(mask1.sum())
    assert backend.undo(s) == "labels" and s.candidates is not None   # the prompts come back, re-decoded
    window_mask = s.selected_mask.copy()
    assert backend.assign(s, "window", None) == int((window_mask & (s.initial_labels != 12)).sum())
    assert s.refined[-1].class_index == 12 and (s.labels[window_mask] == 12).all()
    with pytest.raises(InputError, match="Nothing to assign"):
        backend.assign(s, "door")

    before_instances = s.labels.copy()
    n, changed = backend.refine_instances(s, 4)
    assert changed == int((s.labels != before_instances).sum()) and "instances" in s.timings
    assert len(s.refined) == 1 + sum(1 for r in s.refined if r.source == "instances")
    assert backend.undo(s) == "labels"
    np.testing.assert_array_equal(s.labels, before_instances)

    files = backend.export(s)
    names = [Path(f).name for f in files]
    assert names == ["office_labels.png", "office_colors.png", "office_stats.json", "office_stats.csv",
                     "office_masks_rle.json", "office_masks.png", "office_pointcloud.glb"]
    first_dir = s.export_dir
    assert backend.export(s)[0] != files[0] and Path(first_dir).is_dir()   # kept a minute for its client
    backend.store.prune(now=time.monotonic() + 61)
    assert not Path(first_dir).exists()   # then one folder per session
    second_dir = s.export_dir
    backend.close()
    assert not Path(second_dir).exists() and s.closed


def test_the_page_uses_only_glyphs_its_fonts_draw():
    """Every non-ASCII character the app writes into the page (app.py, panosamic/studio) is one
    that DejaVu Sans (Chromium's fallback on Debian, and on a Space) draws: a "⏱" showed as an
    empty box. With fontconfig present, the set itself is checked against the installed fonts."""
    import shutil
    import subprocess

    drawable = set("—…↶⚠°±·×")
    files = [ROOT / "app.py", *sorted((ROOT / "panosamic" / "studio").rglob("*.py")),
             ROOT / "panosamic" / "studio" / "static" / "viewer.js"]
    used = {ch for f in files for ch in f.read_text(encoding="utf-8") if ord(ch) > 0x7F}
    assert used <= drawable, f"glyphs the page's fonts may not draw: {sorted(used - drawable)}"
    if shutil.which("fc-list"):
        for ch in sorted(drawable):
            fonts = subprocess.run(["fc-list", f":charset={ord(ch):x}", "family"], capture_output=True,
                                   text=True, timeout=30).stdout
            assert "DejaVu" in fonts, f"{ch!r} (U+{ord(ch):04X}) is in no DejaVu font here"


# ----------------------------------------------------------------------------- export folders

def test_stale_export_folders_are_told_by_their_lock_not_by_their_pid(tmp_path):
    """In a container the app is PID 1 at every start, so the PID in a folder's name cannot tell
    a dead process's folder from a live one's: the folder's owner lock does."""
    import os

    from panosamic.studio.store import OWNER_LOCK, TMP_PREFIX, SessionStore, clean_stale_folders

    # the previous start of a process with this very PID: nobody holds its lock
    dead = tmp_path / f"{TMP_PREFIX}{os.getpid()}-before"
    dead.mkdir()
    (dead / OWNER_LOCK).touch()
    (dead / "1f-view.jpg").write_bytes(b"a session's picture")
    # a live process holds its folder, whatever PID the name carries (here one that has exited)
    exited = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                                capture_output=True, text=True, check=True).stdout)
    live = tmp_path / f"{TMP_PREFIX}{exited}-running"
    live.mkdir()
    hold = ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(live / OWNER_LOCK)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    store = SessionStore(root=tmp_path / f"{TMP_PREFIX}{os.getpid()}-this")  # this process's own
    try:
        assert holder.stdout.readline().strip() == "held"
        assert clean_stale_folders(tmp_path) == 1
        assert not dead.exists() and live.is_dir() and store.root.is_dir()
        holder.stdin.close()  # the holder ends: its lock goes with it
        holder.wait(timeout=30)
        assert clean_stale_folders(tmp_path) == 1 and not live.exists() and store.root.is_dir()
    finally:
        holder.kill()
        holder.wait()
        store.close_all()
    assert not store.root.exists()



# ----------------------------------------------------------------------------- heavy jobs in turns

def test_heavy_jobs_take_turns_with_one_running_and_one_waiting_per_client():
    """panosamic.studio.fair: a client's third heavy job is refused at once; users take turns
    (the client served longest ago first, never a second job of a client while one runs); a
    closed tab's waiting job ends without running."""
    import threading
    import time

    from panosamic.studio.fair import BUSY, Busy, FairGate
    from panosamic.studio.store import SessionExpired

    gate = FairGate(slots=1)
    order, said, errors = [], [], {}
    release = {name: threading.Event() for name in ("a1", "a2", "b1", "c1", "d1")}

    def job(client, name):
        try:
            with gate.turn(client, lambda f, desc=None: said.append((name, desc))):
                order.append(name)
                release[name].wait(30)
        except Exception as exc:  # noqa: BLE001
            errors[name] = exc

    def start(client, name, waiting):
        threading.Thread(target=job, args=(client, name), daemon=True).start()
        wait_for(lambda: gate.waiting == waiting and (waiting or order))

    def wait_for(condition):
        t0 = time.monotonic()
        while not condition():
            assert time.monotonic() - t0 < 30
            time.sleep(0.005)

    start("a", "a1", 0)
    start("a", "a2", 1)
    with pytest.raises(Busy, match=BUSY):  # a third job of the same client
        with gate.turn("a"):
            pass
    start("b", "b1", 2)
    start("d", "d1", 3)
    start("c", "c1", 4)
    assert ("a2", "Waiting for your previous Run to finish") in said
    assert ("c1", "Waiting for your turn: 4 other jobs running or waiting") in said
    assert gate.cancel("d") == 1  # d's tab closed
    wait_for(lambda: "d1" in errors)
    assert isinstance(errors["d1"], SessionExpired) and gate.waiting == 3
    # b and c were never served, a was: a's second job goes last
    for name, then in (("a1", ["a1", "b1"]), ("b1", ["a1", "b1", "c1"]), ("c1", ["a1", "b1", "c1", "a2"])):
        release[name].set()
        wait_for(lambda: order == then)
    release["a2"].set()
    wait_for(lambda: gate.running == 0)
    assert gate.waiting == 0 and set(errors) == {"d1"}
    with gate.turn("a"):  # the client's share is free again
        pass


def test_the_run_status_calls_an_estimator_a_toy_only_when_it_is_one(reference_dir, tmp_path):
    """The note after a Run on a photo without depth names the estimator, and calls it "a toy
    for rendered rooms" when the estimator says it is one (`toy`), not when its name has "demo"
    in it: a Hub model named "someone/demo-depth-anything" is a real model; the bundled demo is
    a toy."""
    from devtools import scenes
    from devtools.examples import write_example
    from panosamic.estimation import DemoDepthEstimator, TrueDepthEstimator

    ckpt = make_checkpoint_dir(reference_dir, tmp_path / "ckpt")
    ex = write_example(tmp_path / "examples", "office", scenes.render_example("office", width=256))
    depth_m = cv2.imread(str(ex["depth"]), cv2.IMREAD_UNCHANGED).astype(np.float32) / 1000.0
    for est, said in ((TrueDepthEstimator.from_erp(depth_m, name="someone/demo-depth-anything"),
                       "estimated from the photo by someone/demo-depth-anything."),
                      (DemoDepthEstimator(), "estimated from the photo by demo-depth (a toy for rendered rooms).")):
        backend = StudioBackend(str(ckpt), None, None, device="cpu", cache_mb=64)
        backend._estimator = est  # the estimator a Run uses (loaded on first need otherwise)
        s, _ = backend.segment(str(ex["image"]), None, None, "local", 0, 10)
        notes = " ".join(s.notes)
        assert said in notes, notes
        assert ("toy" in notes) == est.toy
        backend.close()
