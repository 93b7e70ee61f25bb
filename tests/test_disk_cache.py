"""Encoded panoramas kept on disk (panosamic.studio.disk_cache) and the examples encoded at
start-up (StudioBackend.preencode_examples): the files, their LRU bound, the backend's use of
them, and the real app segmenting the same panorama before and after a restart."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from app_utils import INFO, make_checkpoint_dir, make_examples, running_app, wait_until
from panosamic.predictor import PanoramaState
from panosamic.studio import StudioBackend
from panosamic.studio.disk_cache import STALE_TMP_S, DiskEmbeddingCache

MB = 2**20


def _state(seed: int = 0, mb: float = 1.0) -> PanoramaState:
    """A PanoramaState of about `mb` MB of float32 embeddings."""
    g = torch.Generator().manual_seed(seed)
    n = int(mb * MB / 4 / (8 * 16 * 16))
    emb = torch.randn(n, 8, 16, 16, generator=g)
    logits = torch.randn(1, 13, 16, 16, generator=g)
    return PanoramaState(emb, logits, (512, 1024), {"preprocess": 0.5, "encode": 12.0})


def _key(i: int) -> str:
    return f"{i:064x}"


def _entries(folder: Path):
    return sorted(p.name for p in folder.iterdir())


# ----------------------------------------------------------------------------- the files

def test_a_state_comes_back_equal_and_the_write_leaves_no_temporary_file(tmp_path):
    cache = DiskEmbeddingCache.from_megabytes(tmp_path / "emb", 16)
    state = _state()
    assert cache.get(_key(1)) is None                     # a miss, and the folder is not made for it
    assert not (tmp_path / "emb").exists()
    assert cache.put(_key(1), state)
    assert _entries(tmp_path / "emb") == [f"{_key(1)}.safetensors"]   # renamed into place: no .tmp left
    assert (tmp_path / "emb").stat().st_mode & 0o777 == 0o700           # derived from users' uploads
    back = cache.get(_key(1))
    assert back is not state
    assert torch.equal(back.embeddings, state.embeddings) and back.embeddings.dtype == torch.float32
    assert torch.equal(back.semantic_logits, state.semantic_logits)
    assert back.input_size == (512, 1024) and back.timings == state.timings
    # a second cache on the same folder (another process, or the app restarted) finds it
    again = DiskEmbeddingCache.from_megabytes(tmp_path / "emb", 16).get(_key(1))
    assert torch.equal(again.embeddings, state.embeddings)
    assert cache.stats()["hits"] == 1 and cache.stats()["entries"] == 1


def test_a_write_that_fails_leaves_nothing_behind(tmp_path, monkeypatch):
    import safetensors.torch

    cache = DiskEmbeddingCache.from_megabytes(tmp_path, 16)

    def torn(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", torn)
    assert cache.put(_key(1), _state()) is False          # logged, never raised to the user
    assert _entries(tmp_path) == []


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "other key"])
def test_a_torn_or_foreign_file_is_a_miss_and_is_removed(tmp_path, damage):
    cache = DiskEmbeddingCache.from_megabytes(tmp_path, 16)
    cache.put(_key(1), _state())
    path = tmp_path / f"{_key(1)}.safetensors"
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(os.urandom(len(data)))
    elif damage == "empty":
        path.write_bytes(b"")
    else:  # a complete file under another key's name
        cache.put(_key(2), _state(1))
        os.replace(tmp_path / f"{_key(2)}.safetensors", path)
    assert cache.get(_key(1)) is None
    assert not path.exists() and cache.stats()["damaged"] == 1
    assert cache.put(_key(1), _state()) and cache.get(_key(1)) is not None   # written again, fine


def test_the_least_recently_used_go_first_when_the_folder_is_full(tmp_path):
    cache = DiskEmbeddingCache.from_megabytes(tmp_path, 3.5)   # three 1 MB entries (+ headers) fit
    now = time.time()
    for i in range(3):
        assert cache.put(_key(i), _state(i))
        os.utime(tmp_path / f"{_key(i)}.safetensors", (now - 300 + i, now - 300 + i))  # 0 oldest
    assert cache.keys() == [_key(0), _key(1), _key(2)]
    assert cache.get(_key(0)) is not None                 # a hit makes 0 the most recently used
    assert cache.keys()[-1] == _key(0)
    assert cache.put(_key(3), _state(3))                  # a fourth: the least recently used (1) goes
    assert set(cache.keys()) == {_key(0), _key(2), _key(3)}
    assert cache.nbytes <= cache.max_bytes and cache.evictions == 1
    # an entry larger than the whole budget is not stored, and evicts nothing
    assert cache.put(_key(4), _state(4, mb=4)) is False
    assert set(cache.keys()) == {_key(0), _key(2), _key(3)}


def test_eviction_removes_stale_temporary_files_and_bears_vanished_ones(tmp_path):
    cache = DiskEmbeddingCache.from_megabytes(tmp_path, 16)
    stale, fresh = tmp_path / ".dead-writer.tmp", tmp_path / ".live-writer.tmp"
    stale.write_bytes(b"x" * 100)
    fresh.write_bytes(b"x" * 100)
    old = time.time() - STALE_TMP_S - 60
    os.utime(stale, (old, old))
    real_files = cache._files

    def racing_files():  # another process removes an entry between the listing and the removal
        out = real_files()
        for p, _s, _m in out:
            if p.name == f"{_key(0)}.safetensors" and p.exists():
                p.unlink()
        return out

    cache.put(_key(0), _state(0))
    cache._files = racing_files
    cache.max_bytes = 1 * MB + 50_000                       # room for one entry: the next put evicts
    assert cache.put(_key(1), _state(1))
    assert not stale.exists() and fresh.exists()          # a writer in progress keeps its file
    assert _entries(tmp_path) == [".live-writer.tmp", f"{_key(1)}.safetensors"]


def test_zero_megabytes_or_no_folder_is_off(tmp_path):
    for cache in (DiskEmbeddingCache.from_megabytes(tmp_path / "off", 0), DiskEmbeddingCache(None, 10 * MB)):
        assert not cache.enabled
        assert cache.put(_key(1), _state()) is False and cache.get(_key(1)) is None
    assert not (tmp_path / "off").exists()
    with pytest.raises(ValueError):
        DiskEmbeddingCache.from_megabytes(tmp_path, 16).path("../../etc/passwd")


def test_a_vit_sized_entry_loads_in_well_under_a_second(tmp_path):
    """ViT-H RGB-D-N dual view: 6 x 256 x 64 x 64 float32 = 25 MB (+ 13-class logits)."""
    cache = DiskEmbeddingCache.from_megabytes(tmp_path, 256)
    state = PanoramaState(torch.randn(6, 256, 64, 64), torch.randn(1, 13, 256, 256), (4096, 8192), {})
    t0 = time.perf_counter()
    cache.put(_key(7), state)
    put_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    back = cache.get(_key(7))
    get_s = time.perf_counter() - t0
    print(f"\n25 MB entry: put {put_s * 1e3:.0f} ms, get {get_s * 1e3:.0f} ms")
    assert torch.equal(back.embeddings, state.embeddings)
    assert get_s < 2.0   # a loaded 2-core machine; an idle one takes tens of milliseconds


# ----------------------------------------------------------------------------- the backend

@pytest.fixture()
def tiny(reference_dir, tmp_path):
    """A local checkpoint (tiny_rgbdn_dual: RGB-D-N) and two small examples."""
    ckpt = make_checkpoint_dir(reference_dir, tmp_path / "ckpt")
    examples = make_examples(tmp_path / "examples", names=("office", "seam"), width=256)
    return {"ckpt": str(ckpt), "examples": str(tmp_path / "examples"), "ex": examples, "root": tmp_path}


def _backend(tiny, **kw):
    return StudioBackend(tiny["ckpt"], None, None, device="cpu", cache_mb=64, examples=tiny["examples"], **kw)


def _run(backend, ex, choice=None):
    """A Run with the page's defaults (depth scale 0 = auto, Max depth T 10)."""
    return backend.segment(str(ex["image"]), str(ex["depth"]), str(ex["normals"]), choice, 0, 10)


def test_a_new_backend_on_the_same_folder_skips_the_encoder(tiny):
    folder = tiny["root"] / "emb"
    first = _backend(tiny, embedding_cache_dir=str(folder), embedding_cache_mb=64)
    s1, cached = _run(first, tiny["ex"]["office"])
    assert not cached and "encode" in s1.timings
    assert [p.suffix for p in folder.iterdir()] == [".safetensors"]
    first.click(s1, 60, 70, "positive")
    labels, embeddings, candidates = s1.labels.copy(), s1.state.embeddings.clone(), s1.candidates.copy()
    first.close()                                         # (frees the session's arrays)
    second = _backend(tiny, embedding_cache_dir=str(folder), embedding_cache_mb=64)  # "the app restarted"
    s2, cached = _run(second, tiny["ex"]["office"])
    assert cached and "encode" not in s2.timings and "load" in s2.timings
    np.testing.assert_array_equal(s2.labels, labels)
    assert torch.equal(s2.state.embeddings, embeddings)
    assert second.cache.get(s2.key) is s2.state            # a disk hit is kept in memory too
    # clicks decode on the embeddings read from disk as on the encoder's own
    second.click(s2, 60, 70, "positive")
    np.testing.assert_array_equal(s2.candidates, candidates)
    second.close()


def test_a_replaced_checkpoint_does_not_find_the_old_models_embeddings(tiny):
    folder = tiny["root"] / "emb"
    b = _backend(tiny, embedding_cache_dir=str(folder), embedding_cache_mb=64)
    _run(b, tiny["ex"]["office"])
    b.close()
    weights = Path(tiny["ckpt"]) / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # "retrained"
    b = _backend(tiny, embedding_cache_dir=str(folder), embedding_cache_mb=64)
    s, cached = _run(b, tiny["ex"]["office"])
    assert not cached and "encode" in s.timings
    b.close()


def test_preencoding_puts_the_examples_in_the_caches(tiny):
    folder = tiny["root"] / "emb"
    b = _backend(tiny, embedding_cache_dir=str(folder), embedding_cache_mb=64)
    assert b.checkpoints.initial() == "local"
    assert b.preencode_examples(threading.Event(), idle_s=0.01) == 2
    assert len(b.cache) == 2 and len(list(folder.glob("*.safetensors"))) == 2
    for name in ("office", "seam"):                       # as an example click + Run sends them
        s, cached = _run(b, tiny["ex"][name], choice=b.checkpoints.initial())
        assert cached and "encode" not in s.timings
    b.close()
    # after a restart only the files are read: nothing is encoded again
    b = _backend(tiny, embedding_cache_dir=str(folder), embedding_cache_mb=64)
    assert b.preencode_examples(threading.Event(), idle_s=0.01) == 0 and len(b.cache) == 2
    b.close()


def test_preencoding_with_automatic_resolves_the_checkpoint_per_example(tiny, monkeypatch):
    """The picker on Automatic: each example's maps pick its checkpoint (Checkpoints.concrete),
    and a Run of it with Automatic finds the embeddings."""
    b = _backend(tiny)
    monkeypatch.setattr(b.checkpoints, "default", "auto")
    assert b.checkpoints.initial() == "auto"
    assert b.preencode_examples(threading.Event(), idle_s=0.01) == 2
    s, cached = _run(b, tiny["ex"]["seam"], choice="auto")
    assert cached and s.checkpoint == "local"
    b.close()


def test_preencoding_waits_while_a_user_runs_and_gives_way_mid_encoding(tiny):
    b = _backend(tiny)
    stop = threading.Event()
    # a user's heavy event in progress: nothing is encoded (and the compute lock stays free)
    with b._user_job():
        worker = threading.Thread(target=b.preencode_examples, args=(stop, 0.01))
        worker.start()
        time.sleep(1.0)
        assert len(b.cache) == 0 and len(b.registry) == 0
        assert b._computing.acquire(blocking=False)
        b._computing.release()
        stop.set()
        worker.join(30)
        assert not worker.is_alive()
    # a user arrives while an example encodes: the encoder stops at its next ViT block, lets
    # go of the lock (the user gets it at once), and that example starts again afterwards
    encode_calls, user_got_lock = [], []
    real_encode = b._encode

    def user_arrives():
        with b._user_job():
            user_got_lock.append(b._computing.acquire(timeout=30))
            b._computing.release()
            time.sleep(0.2)

    def encode(*args):
        encode_calls.append(1)
        if len(encode_calls) == 1:
            user = threading.Thread(target=user_arrives)
            user.start()
            while not b._users:
                time.sleep(0.001)
        return real_encode(*args)

    b._encode = encode
    assert b.preencode_examples(threading.Event(), idle_s=0.05) == 2
    assert user_got_lock == [True]
    assert len(encode_calls) == 3                         # the first example twice, the second once
    assert len(b.cache) == 2
    b.close()


def test_preencoding_stops_when_asked(tiny):
    b = _backend(tiny)
    stop = threading.Event()
    stop.set()
    assert b.preencode_examples(stop) == 0 and len(b.cache) == 0 and len(b.registry) == 0
    b.close()


def test_preencoding_never_downloads(tmp_path, monkeypatch):
    """A Hub checkpoint not on disk yet is left alone (the first user's Run downloads it)."""
    loaded = []
    make_examples(tmp_path / "examples", names=("office",), width=256)
    b = StudioBackend("dfki-av/PanoSAMic", "stanford2d3ds-vith-rgbdn-fold9", None, device="cpu",
                      examples=str(tmp_path / "examples"), loader=lambda key: loaded.append(key))
    monkeypatch.setattr(b.checkpoints.hub, "reachable", lambda wait=None: True)
    assert b.checkpoints.initial() == "stanford2d3ds-vith-rgbdn-fold9"
    assert b.checkpoints.needs_download("stanford2d3ds-vith-rgbdn-fold9")
    assert b.preencode_examples(threading.Event(), idle_s=0.01) == 0
    assert loaded == []
    b.close()


def test_preencoding_leaves_an_open_sessions_model_loaded(tiny):
    """With --max-models 1, a session's model is not swapped out for an example's checkpoint
    (the user's next click would wait for a reload)."""
    b = _backend(tiny)
    s, _ = _run(b, tiny["ex"]["office"], choice="demo")   # a session on the bundled demo
    assert b.checkpoints.initial() == "local"
    stop = threading.Event()
    worker = threading.Thread(target=b.preencode_examples, args=(stop, 0.01))
    worker.start()
    time.sleep(1.0)
    assert b.registry.loaded(s.model_key) and len(b.cache) == 1
    b.store.close(s)                                      # the tab closed: now it may
    worker.join(60)
    assert not worker.is_alive() and len(b.cache) == 3
    b.close()


# ----------------------------------------------------------------------------- the app

def test_settings_for_the_disk_cache_come_from_env(monkeypatch):
    from panosamic.studio.settings import parse_args

    monkeypatch.delenv("PANOSAMIC_EMBEDDING_CACHE", raising=False)
    monkeypatch.delenv("PANOSAMIC_EMBEDDING_CACHE_MB", raising=False)
    monkeypatch.delenv("PANOSAMIC_PREENCODE", raising=False)
    s = parse_args([])
    assert (s.embedding_cache_dir, s.embedding_cache_mb, s.preencode) == ("~/.cache/panosamic/embeddings", 4096, True)
    monkeypatch.setenv("PANOSAMIC_EMBEDDING_CACHE", "/data/emb")
    monkeypatch.setenv("PANOSAMIC_EMBEDDING_CACHE_MB", "100")
    monkeypatch.setenv("PANOSAMIC_PREENCODE", "0")
    s = parse_args([])
    assert (s.embedding_cache_dir, s.embedding_cache_mb, s.preencode) == ("/data/emb", 100.0, False)
    s = parse_args(["--embedding-cache-dir", "/x", "--embedding-cache-mb", "0", "--preencode"])
    assert (s.embedding_cache_dir, s.embedding_cache_mb, s.preencode) == ("/x", 0.0, True)
    with pytest.raises(SystemExit):
        parse_args(["--embedding-cache-mb", "-1"])


gradio_client = pytest.importorskip("gradio_client")


def _segment_and_export(url: str, ex, downloads: Path):
    import cv2
    from gradio_client import Client, handle_file

    c = Client(url, verbose=False, download_files=str(downloads))
    out = c.predict(handle_file(str(ex["image"])), handle_file(str(ex["depth"])), handle_file(str(ex["normals"])),
                    api_name="/segment")
    files, _ = c.predict(api_name="/export")
    labels = next(f for f in files if f.endswith("_labels.png"))
    return out[INFO], cv2.imread(labels, cv2.IMREAD_UNCHANGED)   # the info JSON, the full-size labels


def test_the_same_panorama_after_a_restart_reports_no_encode_time(tiny):
    """The done-when of the disk cache: segmented, the app restarted, segmented again: the
    second Run's timings have no encoder stage, and its labels are the same."""
    root, folder = tiny["root"], tiny["root"] / "emb"
    args = ["--checkpoint", tiny["ckpt"], "--examples", tiny["examples"], "--embedding-cache-dir", str(folder),
            "--embedding-cache-mb", "64"]
    ex = tiny["ex"]["office"]
    with running_app(args, root / "app1.log") as app:
        info1, labels1 = _segment_and_export(app["url"], ex, root / "dl1")
    assert "encode" in info1["timings_s"]
    assert [p.suffix for p in folder.iterdir()] == [".safetensors"]   # stored whole, no temporary file
    with running_app(args, root / "app2.log") as app:
        info2, labels2 = _segment_and_export(app["url"], ex, root / "dl2")
    assert "encode" not in info2["timings_s"] and "load" in info2["timings_s"]
    np.testing.assert_array_equal(labels2, labels1)


def test_the_app_preencodes_its_examples_after_start_up(tiny):
    folder = tiny["root"] / "emb"
    args = ["--checkpoint", tiny["ckpt"], "--examples", tiny["examples"], "--embedding-cache-dir", str(folder),
            "--embedding-cache-mb", "64", "--preencode"]
    with running_app(args, tiny["root"] / "app.log") as app:
        wait_until(lambda: folder.is_dir() and len(list(folder.glob("*.safetensors"))) == 2,
                   "both examples pre-encoded", timeout=180)
        info, _ = _segment_and_export(app["url"], tiny["ex"]["seam"], tiny["root"] / "dl")
    assert "encode" not in info["timings_s"]
