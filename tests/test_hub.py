"""PanoSAMic checkpoints from local folders and from the Hugging Face cache, offline.

The Hub path goes through the real `huggingface_hub.hf_hub_download` against a cache built
in tmp_path with the layout huggingface_hub writes (`refs/main`, `blobs/<sha256>`,
`snapshots/<commit>/<subfolder>/<file>` symlinks) and HF_HUB_OFFLINE=1. huggingface_hub
reads HF_HUB_CACHE / HF_HUB_OFFLINE into `huggingface_hub.constants` at import time, so the
in-process tests patch those constants as well as the environment; one test runs a fresh
interpreter with only the environment variables, as a user would.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import constants as hf_constants

from panosamic import weights as W
from panosamic import hub as H
from panosamic import sam_weights as S
from panosamic import config as C
from panosamic.config import resolve_config
from panosamic.errors import WeightsError

ROOT = Path(__file__).resolve().parents[1]
REPO = "dfki-av/PanoSAMic"
SUB = "stanford2d3ds-vith-rgbdn-fold1"  # the name of a released folder, holding the tiny reference here
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def add_to_cache(hub_cache: Path, files: dict, repo: str = REPO, commit: str = COMMIT) -> Path:
    """Writes `{repo path: source file}` into an HF cache layout; returns the snapshot folder."""
    repo_dir = hub_cache / ("models--" + repo.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / commit
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    for rel, src in files.items():
        data = Path(src).read_bytes()
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snapshot


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty, offline HF cache at tmp_path/hf/hub (HF_HOME=tmp_path/hf)."""
    home = tmp_path / "hf"
    cache = home / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HOME", str(home))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    # SAM files must never be fetched from the network here.
    monkeypatch.setenv("PANOSAMIC_SAM_CACHE", str(tmp_path / "sam-cache"))
    monkeypatch.setenv("PANOSAMIC_SAM_BASE_URL", "http://127.0.0.1:9/")
    return cache


@pytest.fixture
def cached_ref(hub_cache, reference_dir) -> Path:
    """The reference model.safetensors (no config.json) cached as dfki-av/PanoSAMic/<SUB>."""
    return add_to_cache(hub_cache, {f"{SUB}/model.safetensors": reference_dir / "model.safetensors"})


# --- resolving -----------------------------------------------------------------------------------


def test_hub_checkpoint_from_offline_cache(cached_ref, reference_dir):
    path = H.resolve_panosamic_checkpoint(REPO, subfolder=SUB)
    assert path == cached_ref / SUB / "model.safetensors"
    assert path.read_bytes() == (reference_dir / "model.safetensors").read_bytes()
    # A pinned commit and the default repo id work too.
    assert H.resolve_panosamic_checkpoint(subfolder=SUB, revision=COMMIT) == path


def test_missing_subfolder_offline_lists_known(cached_ref):
    with pytest.raises(WeightsError) as e:
        H.resolve_panosamic_checkpoint(REPO, subfolder="matterport3d-vith-rgbd")
    msg = str(e.value)
    assert f"{REPO}/matterport3d-vith-rgbd/model.safetensors" in msg
    assert "HF_HUB_OFFLINE is set" in msg and "local path" in msg
    assert SUB in msg and "stanford2d3ds-vith-rgb-fold2" in msg  # cached and released folders


def test_official_repo_needs_a_subfolder(hub_cache):
    with pytest.raises(WeightsError, match="pass subfolder=.*stanford2d3ds-vith-rgbdn-fold3"):
        H.resolve_panosamic_checkpoint()


def test_repo_not_cached_offline(hub_cache):
    with pytest.raises(WeightsError) as e:
        H.resolve_panosamic_checkpoint("someone/other-repo", subfolder="x")
    msg = str(e.value)
    assert "someone/other-repo/x/model.safetensors" in msg and str(hub_cache) in msg
    assert "unset HF_HUB_OFFLINE" in msg and "No subfolder" in msg


def test_list_subfolders_offline(cached_ref, hub_cache, reference_dir):
    add_to_cache(hub_cache, {"custom/model.safetensors": reference_dir / "model.safetensors"})
    assert H.list_subfolders() == sorted({*C.RELEASED_SUBFOLDERS, "custom"})
    assert H.list_subfolders("someone/other") == []
    assert len(C.RELEASED_SUBFOLDERS) == 9
    assert C.RELEASED_SUBFOLDERS["stanford2d3ds-vith-rgbd-fold3"] == ("image", "depth")


def test_env_vars_only_in_a_fresh_process(tmp_path, reference_dir):
    """HF_HOME + HF_HUB_OFFLINE set before Python starts, as users do: no constants patched."""
    home = tmp_path / "hf"
    snapshot = add_to_cache(home / "hub", {f"{SUB}/model.safetensors": reference_dir / "model.safetensors"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HOME=str(home), HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    code = ("from panosamic.hub import resolve_panosamic_checkpoint as r\n"
            f"print(r(subfolder={SUB!r}))\n"
            "try:\n    r(subfolder='nope')\nexcept Exception as e:\n    print(type(e).__name__, e)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == str(snapshot / SUB / "model.safetensors")
    assert lines[1].startswith("WeightsError") and "HF_HUB_OFFLINE is set" in lines[1]


def test_local_folder_and_file(tmp_path, reference_dir):
    folder = tmp_path / "ckpts" / "a" / "b"
    folder.mkdir(parents=True)
    shutil.copy(reference_dir / "model.safetensors", folder)
    root = tmp_path / "ckpts"
    assert H.resolve_panosamic_checkpoint(root, subfolder="a/b") == folder / "model.safetensors"
    assert H.resolve_panosamic_checkpoint(folder) == folder / "model.safetensors"
    assert H.resolve_panosamic_checkpoint(folder / "model.safetensors") == folder / "model.safetensors"
    with pytest.raises(WeightsError, match="subfolders with a model.safetensors: a/b"):
        H.resolve_panosamic_checkpoint(root)
    with pytest.raises(WeightsError, match="was given with the file"):
        H.resolve_panosamic_checkpoint(folder / "model.safetensors", subfolder="x")
    with pytest.raises(WeightsError, match="no such file or folder"):
        H.resolve_panosamic_checkpoint(tmp_path / "missing.safetensors")


def test_companions(tmp_path, reference_dir):
    shutil.copy(reference_dir / "model.safetensors", tmp_path)
    assert H.find_companions(tmp_path / "model.safetensors") == {"config": None, "sam": None}
    (tmp_path / "sam_vit_b_01ec64.pth").write_bytes(b"x")
    shutil.copy(reference_dir / "config.json", tmp_path)
    found = H.find_companions(tmp_path / "model.safetensors")
    assert found == {"config": tmp_path / "config.json", "sam": tmp_path / "sam_vit_b_01ec64.pth"}
    (tmp_path / "sam.pth").write_bytes(b"x")  # sam.pth is preferred
    assert H.find_companions(tmp_path / "model.safetensors")["sam"] == tmp_path / "sam.pth"


# --- end to end ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_io(reference_root):
    case = reference_root / "tiny_rgbdn_dual"
    return np.load(case / "inputs.npz"), np.load(case / "expected.npz")


def _run(model, inputs):
    mods = np.stack([inputs[m] for m in model.config["modalities"]])  # (M, H, W, 3)
    with torch.no_grad():
        return model(torch.from_numpy(mods).permute(0, 3, 1, 2).float())


def _assert_matches_reference(model, reference_io):
    inputs, expected = reference_io
    out = _run(model, inputs)
    np.testing.assert_allclose(out["embeddings"].numpy(), expected["embeddings"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(out["logits"][0].numpy(), expected["logits"], atol=1e-4, rtol=0)


def test_load_model_from_hub_cache_infers_config(cached_ref, reference_dir, reference_io):
    """No config.json on the 'Hub': the architecture comes from the tensors (+ the given SAM file)."""
    model = W.load_model(subfolder=SUB, sam=reference_dir / "sam.pth")
    ref = resolve_config(reference_dir / "config.json")
    assert all(model.config[k] == ref[k] for k in ref if k != "mask_decoder")
    assert not model.training
    _assert_matches_reference(model, reference_io)


def test_load_model_from_hub_cache_with_config_and_sam_name(hub_cache, reference_dir, reference_io,
                                                            monkeypatch, tmp_path):
    """config.json from the cache; SAM by preset name, already in the SAM cache (no download)."""
    add_to_cache(hub_cache, {f"{SUB}/model.safetensors": reference_dir / "model.safetensors",
                             f"{SUB}/config.json": reference_dir / "config.json"})
    monkeypatch.setitem(S.SAM_CHECKPOINTS, "vit_b", "tiny_sam.pth")
    (tmp_path / "sam-cache").mkdir()
    shutil.copy(reference_dir / "sam.pth", tmp_path / "sam-cache" / "tiny_sam.pth")
    model = W.load_model(REPO, subfolder=SUB, sam="vit_b")
    assert model.config == resolve_config(reference_dir / "config.json")  # num_heads 4 from the json
    _assert_matches_reference(model, reference_io)


def test_load_model_from_local_folder_with_companions(tmp_path, reference_dir, reference_io):
    for name in ("model.safetensors", "sam.pth", "config.json"):
        shutil.copy(reference_dir / name, tmp_path)
    model = W.load_model(tmp_path, dtype=torch.float64)
    assert model.config == resolve_config(reference_dir / "config.json")
    assert model.semantic_decoder.decoder_head[0].weight.dtype == torch.float64
    model.float()
    _assert_matches_reference(model, reference_io)


def test_load_model_without_sam_for_unreleased_sizes(cached_ref, reference_dir):
    # No SAM and no config.json: the tiny width (96) is no released SAM size to infer from.
    with pytest.raises(WeightsError, match="cannot read the architecture.*give the SAM checkpoint"):
        W.load_model(subfolder=SUB)
    # With a config but no SAM: nothing to download for a custom size.
    with pytest.raises(WeightsError, match="not a released SAM size.*pass sam="):
        W.load_model(subfolder=SUB, config=reference_dir / "config.json")


def test_load_model_offline_sam_download_fails_clearly(cached_ref, reference_dir):
    """A released size whose SAM file is neither given nor cached: the download error names the path."""
    cfg = resolve_config(reference_dir / "config.json")
    cfg["vit_model"] = "vit_b"
    with pytest.raises(WeightsError, match="sam_vit_b_01ec64.pth"):
        W.load_model(subfolder=SUB, config=cfg)


# --- online errors, against a fake Hub on 127.0.0.1 -------------------------------------------------


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """A minimal Hub API on 127.0.0.1: 404s with the X-Error-Code the real Hub sends, and tree listings.

    `repos` maps repo id -> file paths; nothing is downloadable (only error paths are exercised)."""
    import http.server
    import json
    import threading

    repos = {REPO: [f"{SUB}/model.safetensors", f"{SUB}/config.json", "README.md",
                    "matterport3d-vith-rgbd/model.safetensors"]}

    class Handler(http.server.BaseHTTPRequestHandler):
        def _reply(self, status, body=b"", headers=None):
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def do_HEAD(self):  # noqa: N802
            parts = self.path.split("?")[0].strip("/").split("/")
            if parts[0] == "api":  # /api/models/<owner>/<name>/tree/<rev>
                repo, kind = "/".join(parts[2:4]), "tree"
            else:  # /<owner>/<name>/resolve/<rev>/<path>
                repo, kind = "/".join(parts[:2]), "resolve"
            if repo not in repos:
                return self._reply(404, b"{}", {"X-Error-Code": "RepoNotFound"})
            if kind == "tree":
                files = [{"type": "file", "path": f, "size": 1, "oid": "0" * 40} for f in repos[repo]]
                return self._reply(200, json.dumps(files).encode(), {"Content-Type": "application/json"})
            return self._reply(404, b"{}", {"X-Error-Code": "EntryNotFound"})

        do_GET = do_HEAD

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{httpd.server_address[1]}"
    cache = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setenv("HF_TOKEN", "")  # never send a real token to the fake server
    yield repos
    httpd.shutdown()
    httpd.server_close()


def test_online_listing_and_missing_file(fake_hub):
    assert H.list_subfolders() == ["matterport3d-vith-rgbd", SUB]
    with pytest.raises(WeightsError) as e:
        H.resolve_panosamic_checkpoint(REPO, subfolder="typo-fold1")
    msg = str(e.value)
    assert f"{REPO}/typo-fold1/model.safetensors does not exist on the Hub" in msg
    assert f"Known subfolders of {REPO}: matterport3d-vith-rgbd, {SUB}." in msg


def test_online_repo_not_found(fake_hub):
    with pytest.raises(WeightsError, match="Hub repo 'someone/nothing' not found .*private"):
        H.resolve_panosamic_checkpoint("someone/nothing", subfolder="x")
    with pytest.raises(WeightsError, match="'someone/nothing' not found"):
        H.list_subfolders("someone/nothing")


def test_from_pretrained_end_to_end(cached_ref, reference_dir, reference_io):
    """Hub cache -> Predictor: embeddings and ERP logits equal the authors' numbers."""
    import panosamic
    from panosamic.predictor import Predictor

    inputs, expected = reference_io
    predictor = panosamic.from_pretrained(REPO, subfolder=SUB, sam=reference_dir / "sam.pth", device="cpu",
                                          max_depth=float(inputs["max_depth"]))
    assert isinstance(predictor, Predictor)
    assert predictor.required_modalities == C.RELEASED_SUBFOLDERS[SUB]
    predictor.set_panorama(inputs["image"], depth=inputs["depth_m"], normals=inputs["normals"])
    np.testing.assert_allclose(predictor.embeddings, expected["embeddings"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(predictor.logits, expected["logits"], atol=1e-4, rtol=0)
    assert (predictor.labels == expected["labels"]).mean() > 0.999


def test_predictor_from_pretrained_classmethod(tmp_path, reference_dir):
    from panosamic.predictor import Predictor

    class MyPredictor(Predictor):
        pass

    for name in ("model.safetensors", "sam.pth", "config.json"):
        shutil.copy(reference_dir / name, tmp_path)
    predictor = MyPredictor.from_pretrained(tmp_path, device="cpu", max_depth=5.0, encoder_chunk_size=2)
    assert type(predictor) is MyPredictor
    assert predictor.max_depth == 5.0 and predictor.encoder_chunk_size == 2
    assert predictor.required_modalities == tuple(resolve_config(reference_dir / "config.json")["modalities"])


def test_load_model_dtype_names(tmp_path, reference_dir):
    for name in ("model.safetensors", "sam.pth", "config.json"):
        shutil.copy(reference_dir / name, tmp_path)
    model = W.load_model(tmp_path, dtype="bfloat16")
    assert model.semantic_decoder.decoder_head[0].weight.dtype == torch.bfloat16
    with pytest.raises(WeightsError, match="unknown dtype"):
        W.load_model(tmp_path, dtype="int3")
