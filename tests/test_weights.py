"""SAM checkpoint download/caching, file reading, strict loading and config inference.

Everything runs offline: SAM downloads come from an http.server thread on 127.0.0.1,
and the weights are the tiny reference model's (`shared/reference/tiny_rgbdn_dual`).
"""

from __future__ import annotations

import hashlib
import http.server
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Dict

import pytest
import torch
from safetensors.torch import save_file

from panosamic import weights as W
from panosamic import sam_weights as S
from panosamic.build import build_model
from panosamic.config import infer_config, resolve_config
from panosamic.errors import WeightsError
from panosamic.sam_weights import remove_stale_partials


# --- a local HTTP server ------------------------------------------------------------------


class _Server:
    """Serves `files` (url path -> bytes); `mode[path]` = "truncate" sends half and closes,
    "stall" sends half and waits until teardown."""

    def __init__(self) -> None:
        self.files: Dict[str, bytes] = {}
        self.mode: Dict[str, str] = {}
        self.requests: list = []
        self.release = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                server.requests.append(self.path)
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                mode = server.mode.get(self.path)
                if mode in ("truncate", "stall"):
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    if mode == "stall":
                        server.release.wait(60)
                    self.close_connection = True
                    return
                self.wfile.write(data)

            def log_message(self, *args):  # keep pytest output clean
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.close()


@pytest.fixture
def sam_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "sam-cache"
    monkeypatch.setenv("PANOSAMIC_SAM_CACHE", str(cache))
    return cache


@pytest.fixture(scope="module")
def sam_bytes(reference_dir) -> bytes:
    return (reference_dir / "sam.pth").read_bytes()


def _sha6(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:6]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- SAM: names, URLs, paths, cache -----------------------------------------------------------


def test_sam_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.delenv("PANOSAMIC_SAM_CACHE", raising=False)
    assert S.sam_cache_dir() == Path.home() / ".cache" / "panosamic" / "sam"
    monkeypatch.setenv("PANOSAMIC_SAM_CACHE", str(tmp_path / "x"))
    assert S.sam_cache_dir() == tmp_path / "x"


def test_download_by_name_with_progress_then_cached(server, sam_cache, sam_bytes, monkeypatch, capsys):
    name = f"sam_vit_b_{_sha6(sam_bytes)}.pth"  # the sha prefix in the name is checked
    server.files[f"/mirror/{name}"] = sam_bytes
    monkeypatch.setitem(S.SAM_CHECKPOINTS, "vit_b", name)
    monkeypatch.setenv("PANOSAMIC_SAM_BASE_URL", server.url + "/mirror")  # no trailing slash on purpose

    path = S.resolve_sam_checkpoint("vit_b")
    assert path == sam_cache / name
    assert path.read_bytes() == sam_bytes
    assert sorted(p.name for p in sam_cache.iterdir()) == [name]  # no temporary file left
    err = capsys.readouterr().err
    assert f"Downloading {name}" in err and "100%" in err  # tqdm bar

    # Second time: from the cache, no request.
    assert S.resolve_sam_checkpoint("vit_b", progress=False) == path
    assert server.requests == [f"/mirror/{name}"]
    assert len(W.read_sam_state_dict(path)) > 100  # a readable SAM state dict


def test_download_by_url_and_no_progress(server, sam_cache, sam_bytes, capsys):
    name = f"custom_{_sha6(sam_bytes)}.pth"
    server.files[f"/a/b/{name}"] = sam_bytes
    path = S.resolve_sam_checkpoint(f"{server.url}/a/b/{name}", progress=False)
    assert path == sam_cache / name and path.read_bytes() == sam_bytes
    assert "Downloading" not in capsys.readouterr().err
    # A URL whose name carries no sha prefix is downloaded without a check.
    server.files["/plain.pth"] = sam_bytes
    assert S.resolve_sam_checkpoint(f"{server.url}/plain.pth", progress=False).read_bytes() == sam_bytes


def test_path_spec_is_returned_as_is(server, sam_cache, reference_dir):
    path = reference_dir / "sam.pth"
    assert S.resolve_sam_checkpoint(path) == path
    assert S.resolve_sam_checkpoint(str(path)) == path
    assert server.requests == [] and not sam_cache.exists()


def test_sha_mismatch_deletes_and_raises(server, sam_cache, sam_bytes, monkeypatch):
    wrong = "000000" if _sha6(sam_bytes) != "000000" else "111111"
    name = f"sam_vit_l_{wrong}.pth"
    server.files[f"/{name}"] = sam_bytes
    monkeypatch.setitem(S.SAM_CHECKPOINTS, "vit_l", name)
    monkeypatch.setenv("PANOSAMIC_SAM_BASE_URL", server.url + "/")
    with pytest.raises(WeightsError, match="SHA-256") as e:
        S.resolve_sam_checkpoint("vit_l", progress=False)
    assert wrong in str(e.value) and str(sam_cache / name) in str(e.value)
    assert list(sam_cache.iterdir()) == []


def test_server_closing_early_leaves_nothing(server, sam_cache, sam_bytes):
    name = f"sam_{_sha6(sam_bytes)}.pth"
    server.files[f"/{name}"] = sam_bytes
    server.mode[f"/{name}"] = "truncate"
    with pytest.raises(WeightsError, match=r"stopped after \d+ of \d+ bytes|failed"):
        S.resolve_sam_checkpoint(f"{server.url}/{name}", progress=False)
    assert list(sam_cache.iterdir()) == []


def test_cut_short_download_without_a_hash_in_the_name_leaves_nothing(server, sam_cache, sam_bytes):
    # No SHA-256 prefix to check: the missing zip directory at the end gives it away.
    server.files["/plain.pth"] = sam_bytes
    server.mode["/plain.pth"] = "truncate"
    with pytest.raises(WeightsError, match="stopped early"):
        S.resolve_sam_checkpoint(f"{server.url}/plain.pth", progress=False)
    assert list(sam_cache.iterdir()) == []


def test_a_download_that_is_not_a_sam_checkpoint_is_not_cached(server, sam_cache, sam_bytes, tmp_path):
    """Without a hash in the name, what the server sends must still be a SAM checkpoint (a
    torch zip naming image_encoder.* tensors): a sign-in page (29 bytes of HTML) or another
    model's weights are refused with what came, nothing is cached, and the next call asks
    again instead of trusting a cached page."""
    page = b"<html><body>Sign in</body></html>"[:29]
    other = tmp_path / "other.pth"
    torch.save({"backbone.weight": torch.zeros(2)}, other)
    for body, what in ((page, "an HTML page"), (other.read_bytes(), "without SAM's image_encoder")):
        server.files["/sam_vit_b.pth"] = body
        for _ in range(2):
            with pytest.raises(WeightsError, match="not a SAM checkpoint") as e:
                S.resolve_sam_checkpoint(f"{server.url}/sam_vit_b.pth", progress=False)
            assert what in str(e.value) and "nothing was saved" in str(e.value), str(e.value)
            assert list(sam_cache.iterdir()) == []
    assert server.requests == ["/sam_vit_b.pth"] * 4
    # A page an earlier version cached unchecked is fetched again, not trusted.
    (sam_cache / "sam_vit_b.pth").write_bytes(page)
    server.files["/sam_vit_b.pth"] = sam_bytes
    path = S.resolve_sam_checkpoint(f"{server.url}/sam_vit_b.pth", progress=False)
    assert path.read_bytes() == sam_bytes and sorted(p.name for p in sam_cache.iterdir()) == ["sam_vit_b.pth"]


def test_stalled_download_times_out_and_leaves_nothing(server, tmp_path, sam_bytes):
    server.files["/slow.pth"] = sam_bytes
    server.mode["/slow.pth"] = "stall"
    dest = tmp_path / "dl" / "slow.pth"
    with pytest.raises(WeightsError, match="timed out") as e:
        S.download_file(f"{server.url}/slow.pth", dest, progress=False, timeout=0.5)
    assert str(dest.resolve()) in str(e.value)
    assert list(dest.parent.iterdir()) == []


def test_a_killed_download_leaves_a_partial_file_that_the_next_download_removes(server, sam_cache, sam_bytes,
                                                                                 monkeypatch):
    """torch removes its temporary file on every failure it sees, but not when the process is
    killed (SIGKILL, out of memory, a stopped container): the next download deletes it, and
    never the one a live download is writing."""
    name = "sam_vit_h_4b8939.pth"
    server.files[f"/{name}"] = sam_bytes
    server.mode[f"/{name}"] = "stall"  # half the file, then the connection hangs
    code = ("import sys; from panosamic.sam_weights import download_file; "
            "download_file(sys.argv[1], sys.argv[2], progress=False, timeout=120)")
    writer = subprocess.Popen([sys.executable, "-c", code, f"{server.url}/{name}", str(sam_cache / name)],
                              cwd=Path(__file__).resolve().parents[1], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        t0 = time.monotonic()
        while not list(sam_cache.glob("*.partial")):
            assert writer.poll() is None and time.monotonic() - t0 < 120, "the download did not start"
            time.sleep(0.05)
        partial, = sam_cache.glob("*.partial")
        # another download while that one runs (offline here): the live one's file stays
        monkeypatch.setenv("PANOSAMIC_SAM_BASE_URL", f"http://127.0.0.1:{_closed_port()}/")
        with pytest.raises(WeightsError):
            S.resolve_sam_checkpoint("vit_h", progress=False)
        assert partial.is_file() and writer.poll() is None
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    assert list(sam_cache.iterdir()) == [partial]  # what a killed download leaves
    with pytest.raises(WeightsError):  # the next download, offline too
        S.resolve_sam_checkpoint("vit_h", progress=False)
    assert list(sam_cache.iterdir()) == []


def test_partial_files_go_at_start_unless_a_download_writes_them(sam_cache):
    """`remove_stale_partials` (the app calls it at start): torch's temporary files of no live
    download go; other files, and any file while a download holds the folder, stay."""
    sam_cache.mkdir()
    left = sam_cache / f"sam_vit_b_01ec64.pth.{uuid.uuid4().hex}.partial"
    left.write_bytes(b"PK\x03\x04" + bytes(1000))
    kept = [sam_cache / "sam_vit_b_01ec64.pth", sam_cache / "notes.partial"]
    for path in kept:
        path.write_bytes(b"x")
    hold = ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); fcntl.flock(fd, fcntl.LOCK_SH); "
            "print('held', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(sam_cache)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert remove_stale_partials() == 0 and left.is_file()
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert remove_stale_partials() == 1
    assert sorted(sam_cache.iterdir()) == sorted(kept)


def test_http_404(server, sam_cache):
    with pytest.raises(WeightsError, match="404"):
        S.resolve_sam_checkpoint(f"{server.url}/missing_abcdef.pth", progress=False)
    assert list(sam_cache.iterdir()) == []


def test_unreachable_server_names_url_and_manual_path(sam_cache, monkeypatch):
    base = f"http://127.0.0.1:{_closed_port()}/segment_anything/"
    monkeypatch.setenv("PANOSAMIC_SAM_BASE_URL", base)
    with pytest.raises(WeightsError) as e:
        S.resolve_sam_checkpoint("vit_h", progress=False)
    msg = str(e.value)
    assert base + "sam_vit_h_4b8939.pth" in msg  # which URL failed
    assert str((sam_cache / "sam_vit_h_4b8939.pth").resolve()) in msg  # where to put it by hand
    assert "pass the path" in msg
    assert list(sam_cache.iterdir()) == []


def test_unknown_sam_spec(sam_cache, tmp_path):
    with pytest.raises(WeightsError, match="vit_b, vit_l, vit_h"):
        S.resolve_sam_checkpoint("vit_x")
    with pytest.raises(WeightsError, match="folder"):
        S.resolve_sam_checkpoint(tmp_path)


# --- reading files ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ref_sam(reference_dir) -> Dict[str, torch.Tensor]:
    return W.read_sam_state_dict(reference_dir / "sam.pth")


@pytest.fixture(scope="module")
def ref_pano(reference_dir) -> Dict[str, torch.Tensor]:
    return W.read_panosamic_state_dict(reference_dir / "model.safetensors")


def test_readers_and_shape_readers(reference_dir, ref_sam, ref_pano):
    assert all(k.startswith(W.SAM_PREFIXES) for k in ref_sam) and len(ref_sam) > 100
    assert all(k.startswith(W.PANOSAMIC_PREFIXES) for k in ref_pano)
    assert W.read_sam_shapes(reference_dir / "sam.pth") == {k: tuple(v.shape) for k, v in ref_sam.items()}
    assert W.read_safetensors_shapes(reference_dir / "model.safetensors") == {
        k: tuple(v.shape) for k, v in ref_pano.items()}


def test_nested_state_dict_is_unwrapped(tmp_path, ref_sam):
    path = tmp_path / "nested.pth"
    torch.save({"model": ref_sam, "epoch": 3}, path)
    assert set(W.read_sam_state_dict(path)) == set(ref_sam)
    torch.save({"state_dict": ref_sam}, path)
    assert set(W.read_sam_shapes(path)) == set(ref_sam)


@pytest.mark.parametrize("name", ["sam.pth", "model.safetensors"])
def test_truncated_files(tmp_path, reference_dir, name):
    data = (reference_dir / name).read_bytes()
    bad = tmp_path / name
    bad.write_bytes(data[: len(data) // 2])
    readers = ([W.read_sam_state_dict, W.read_sam_shapes] if name.endswith(".pth")
               else [W.read_panosamic_state_dict, W.read_safetensors_shapes])
    for read in readers:
        with pytest.raises(WeightsError) as e:
            read(bad)
        assert str(bad) in str(e.value) and "delete it and download it again" in str(e.value)


def test_missing_file_and_non_state_dict(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        W.read_sam_state_dict(tmp_path / "nope.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(WeightsError, match="state dict"):
        W.read_sam_state_dict(tmp_path / "list.pth")


# --- loading into a model ----------------------------------------------------------------------


@pytest.fixture
def model(reference_dir):
    return build_model(reference_dir / "config.json")


def _snapshot(model) -> Dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _unchanged(model, before) -> bool:
    return all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_load_both_parts_from_paths(model, reference_dir, ref_sam, ref_pano):
    out = W.load_weights(model, sam=reference_dir / "sam.pth", panosamic=reference_dir)
    assert out is model
    sd = model.state_dict()
    for k, v in {**ref_sam, **ref_pano}.items():
        assert torch.equal(sd[k], v), k


def test_load_one_part_keeps_the_other(model, ref_sam, ref_pano):
    before = _snapshot(model)
    W.load_weights(model, panosamic=ref_pano)
    sd = model.state_dict()
    assert all(torch.equal(sd[k], before[k]) for k in ref_sam)
    assert all(torch.equal(sd[k], ref_pano[k]) for k in ref_pano)
    W.load_weights(model, sam=ref_sam)
    assert all(torch.equal(model.state_dict()[k], ref_sam[k]) for k in ref_sam)
    with pytest.raises(WeightsError, match="needs sam"):
        W.load_weights(model)


def test_missing_key(model, ref_sam, ref_pano):
    pano = dict(ref_pano)
    gone = "semantic_decoder.decoder_head.3.bias"
    del pano[gone]
    before = _snapshot(model)
    with pytest.raises(WeightsError) as e:
        W.load_weights(model, sam=ref_sam, panosamic=pano)
    assert "missing from the file: 1" in str(e.value) and gone in str(e.value)
    assert _unchanged(model, before)  # checked before copying: the SAM part was not loaded either


def test_unexpected_key(model, ref_sam):
    sam = dict(ref_sam, **{"image_encoder.extra.weight": torch.zeros(3)})
    with pytest.raises(WeightsError) as e:
        W.load_weights(model, sam=sam)
    assert "not in the model: 1 (image_encoder.extra.weight)" in str(e.value)


def test_many_missing_keys_are_counted_and_cut(model, ref_sam):
    sam = {k: v for k, v in ref_sam.items() if not k.startswith("image_encoder.blocks.")}
    n = len(ref_sam) - len(sam)
    with pytest.raises(WeightsError) as e:
        W.load_weights(model, sam=sam)
    assert f"missing from the file: {n} (" in str(e.value) and ", ...)" in str(e.value)


def test_wrong_shape(model, ref_pano):
    pano = dict(ref_pano)
    key = "feature_fuser.fusion_blocks.0.spatial_attention.att_layer.conv.weight"
    pano[key] = torch.zeros(1, 2, 3, 3)
    with pytest.raises(WeightsError) as e:
        W.load_weights(model, panosamic=pano)
    assert f"{key} [1, 2, 3, 3] in the file vs [1, 2, 5, 5] in the model" in str(e.value)


def test_wrong_shape_fails_even_when_not_strict(model, ref_pano):
    pano = dict(ref_pano)
    pano["semantic_decoder.decoder_head.0.bias"] = torch.zeros(7)
    with pytest.raises(WeightsError, match="different shapes"):
        W.load_weights(model, panosamic=pano, strict=False)


def test_not_strict_warns_and_loads_the_rest(model, ref_pano):
    pano = dict(ref_pano)
    gone = "semantic_decoder.decoder_head.3.bias"
    del pano[gone]
    pano["semantic_decoder.extra"] = torch.zeros(1)
    before = model.state_dict()[gone].clone()
    with pytest.warns(UserWarning, match=gone):
        W.load_weights(model, panosamic=pano, strict=False)
    sd = model.state_dict()
    assert torch.equal(sd[gone], before)
    assert torch.equal(sd["semantic_decoder.decoder_head.3.weight"], ref_pano["semantic_decoder.decoder_head.3.weight"])


def test_swapped_files(model, reference_dir):
    with pytest.raises(WeightsError, match="swapped; pass it as panosamic="):
        W.load_weights(model, sam=reference_dir / "model.safetensors")
    with pytest.raises(WeightsError, match="swapped; pass it as sam="):
        W.load_weights(model, panosamic=reference_dir / "sam.pth")


def test_mixed_file_is_refused(model, ref_sam, ref_pano):
    with pytest.raises(WeightsError, match="also holds 1 keys of the other part"):
        W.load_weights(model, sam={**ref_sam, "feature_fuser.x": torch.zeros(1)})


def test_modality_mismatch_says_how_to_build(reference_dir, ref_pano):
    model = build_model(reference_dir / "config.json", modalities=["image"])
    with pytest.raises(WeightsError) as e:
        W.load_weights(model, panosamic=ref_pano)
    msg = str(e.value)
    assert "fuses 3 modalities (image+depth+normals) but the model was built for 1 (image)" in msg
    assert "modalities=['image', 'depth', 'normals']" in msg and "omit the config" in msg
    assert "feature_fuser.fusion_blocks.0.neck.0.weight" in msg


def test_class_and_view_mismatch(reference_dir, ref_pano):
    model = build_model(reference_dir / "config.json", num_classes=20, dual_view=False)
    with pytest.raises(WeightsError) as e:
        W.load_weights(model, panosamic=ref_pano)
    msg = str(e.value)
    assert "num_classes=13" in msg and "dual_view=True" in msg
    assert "semantic_decoder.decoder_attention.0.conv.weight" in msg  # unexpected keys are named


def test_sam_size_mismatch(reference_dir, ref_sam):
    cfg = resolve_config(reference_dir / "config.json")
    cfg.update(encoder_embed_dim=64, encoder_depth=2, encoder_global_attn_indexes=[0, 1])
    model = build_model(cfg)
    with pytest.raises(WeightsError) as e:
        W.load_weights(model, sam=ref_sam)
    msg = str(e.value)
    assert "width 96 with 4 blocks but the model was built for a ViT of width 64 with 2 blocks" in msg
    assert "not in the model: 28 (image_encoder.blocks.2.attn.proj.bias" in msg
    assert "image_encoder.blocks.0.attn.qkv.weight [288, 96] in the file vs [192, 64] in the model" in msg


def test_bf16_file_is_cast_to_model_dtype(model, tmp_path, ref_pano):
    path = tmp_path / "model.safetensors"
    save_file({k: v.to(torch.bfloat16) for k, v in ref_pano.items()}, str(path))
    W.load_weights(model, panosamic=tmp_path)  # the folder holding model.safetensors
    sd = model.state_dict()
    for k, v in ref_pano.items():
        assert sd[k].dtype == torch.float32
        assert torch.equal(sd[k], v.to(torch.bfloat16).float()), k


def test_load_into_bf16_model(model, ref_pano):
    model.to(torch.bfloat16)
    W.load_weights(model, panosamic=ref_pano)
    key = "semantic_decoder.decoder_head.0.weight"
    assert model.state_dict()[key].dtype == torch.bfloat16
    assert torch.equal(model.state_dict()[key], ref_pano[key].to(torch.bfloat16))


# --- architecture from the tensors ---------------------------------------------------------------


def test_infer_config_matches_reference(reference_dir):
    inferred = infer_config(W.read_safetensors_shapes(reference_dir / "model.safetensors"),
                            W.read_sam_shapes(reference_dir / "sam.pth"))
    expected = resolve_config(reference_dir / "config.json")
    for key, value in expected.items():
        if key == "mask_decoder":  # the head count is not visible in tensor shapes
            value = {k: v for k, v in value.items() if k != "num_heads"}
            inferred[key] = {k: v for k, v in inferred[key].items() if k != "num_heads"}
        assert inferred[key] == value, key
