"""The app's temporary files: a user's go with them, the disk budget holds, a full disk is a
plain message, and anonymous uploads are bounded.

The books (`panosamic.studio.files.TempFiles`) and the store's disk budget are tested in
process; the app on a small tmpfs the test mounts (as TMPDIR and GRADIO_TEMP_DIR), skipped
with the reason where it cannot be mounted (not root); CI runs as root and must not skip it.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, List

import cv2
import numpy as np
import pytest

from app_utils import event_outputs, make_session, running_app, wait_until
from devtools.hostile_inputs import write_panorama
from panosamic.studio.files import DISK_FULL, UPLOADS_WAITING, DiskFull, TempFiles, disk_full, write_atomic
from panosamic.studio.store import EXPIRED, SessionExpired, SessionStore

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "assets" / "demo"
FAST_HEARTBEAT = {"GRADIO_HEARTBEAT_INTERVAL": "1"}  # a closed client is noticed within ~2 s


# ----------------------------------------------------------------------------- helpers
@pytest.fixture
def tmpfs(tmp_path):
    """A 30 MB tmpfs, unmounted afterwards; skipped with the reason where it cannot be mounted."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=30m,mode=0700", "tmpfs", str(mount)],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here ({exc}): run as root (CI does)")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode}): run as root (CI does)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)


def fill(folder: Path) -> Path:
    """A file in `folder` that takes all its file system's free space."""
    ballast = folder / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 1 << 12):  # MBs, then the last pages
            chunk = b"\0" * size
            while True:
                try:
                    os.write(fd, chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    return ballast


def files_under(folder: Path) -> List[str]:
    """The files under `folder`, relative. os.walk, not rglob: the app deletes a closed client's
    folder while this looks, and rglob raises for a folder that went between listing and entering."""
    return sorted(str((Path(top) / name).relative_to(folder)) for top, _dirs, names in os.walk(folder)
                  for name in names)


class Api:
    """The HTTP API with one session hash (a gradio_client's when given): uploads, and calls
    whose error text is returned whole."""

    def __init__(self, url: str, session_hash: str = "disk-test"):
        import httpx

        self.url = url.rstrip("/")
        self.session_hash = session_hash
        self.http = httpx.Client(timeout=120)
        self.params = {name: [p.get("parameter_default") for p in e["parameters"]]
                       for name, e in self.http.get(self.url + "/gradio_api/info").json()["named_endpoints"].items()}

    def upload(self, *paths: Path):
        files = [("files", (p.name, p.read_bytes())) for p in paths]
        return self.http.post(self.url + "/gradio_api/upload", files=files)

    def file_data(self, *paths: Path) -> List[Dict[str, Any]]:
        r = self.upload(*paths)
        assert r.status_code == 200, r.text
        return [{"path": p, "orig_name": Path(p).name, "meta": {"_type": "gradio.FileData"}} for p in r.json()]

    def call(self, name: str, *data):
        """(result list, None) or (None, error text)."""
        defaults = self.params["/" + name]
        data = list(data) + defaults[len(data):]
        r = self.http.post(f"{self.url}/gradio_api/call/{name}", json={"data": data, "session_hash": self.session_hash})
        r.raise_for_status()
        event = None
        with self.http.stream("GET", f"{self.url}/gradio_api/call/{name}/{r.json()['event_id']}") as stream:
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:") and event in ("complete", "error"):
                    payload = json.loads(line[5:])
                    if event == "complete":
                        return payload, None
                    return None, payload.get("error") if isinstance(payload, dict) else str(payload)
        raise AssertionError(f"{name}: the stream ended without a result")


def _maps(folder: Path) -> List[Path]:
    pano = write_panorama(folder)
    cv2.imwrite(str(folder / "room_depth.png"), np.full((128, 256), 2500, np.uint16))
    cv2.imwrite(str(folder / "room_normals.png"), np.full((128, 256, 3), 128, np.uint8))
    return [pano, folder / "room_depth.png", folder / "room_normals.png"]


def _roots(parent: Path) -> List[Path]:
    return list(parent.glob("panosamic-studio-*"))


def _plain(message: str) -> None:
    assert "/" not in message and "Errno" not in message and "errno" not in message, message


# ----------------------------------------------------------------------------- in process
def test_a_full_disk_is_told_through_wrappers_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    enospc = OSError(errno.ENOSPC, "No space left on device", "/srv/tmp/x.jpg")
    wrapped = RuntimeError("copying the output failed")
    wrapped.__cause__ = enospc
    assert disk_full(enospc) and disk_full(wrapped) and not disk_full(OSError(errno.EACCES, "denied"))
    from panosamic.studio.messages import user_message

    assert user_message(enospc) == user_message(wrapped) == DISK_FULL

    real_open = open

    def full_open(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        if "w" in mode and str(path).endswith(".tmp"):
            f.write(b"part of it")
            f.close()
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return f

    monkeypatch.setattr("builtins.open", full_open)
    with pytest.raises(DiskFull) as err:
        write_atomic(tmp_path / "view.jpg", b"jpeg bytes")
    assert str(err.value) == DISK_FULL and list(tmp_path.iterdir()) == []


def test_an_export_that_fails_leaves_no_partial_folder(tmp_path):
    store = SessionStore(root=tmp_path / "root")
    s = make_session()
    store.add(s, client="tab")
    with pytest.raises(DiskFull):
        with store.export_dir(s) as folder:
            (folder / "labels.png").write_bytes(b"half a PNG")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert s.export_dir is None and not [p for p in (tmp_path / "root").rglob("*") if p.is_file()
                                         and p.name != ".owner.lock"]
    with store.export_dir(s) as folder:
        (folder / "labels.png").write_bytes(b"a PNG")
    assert (s.export_dir / "labels.png").read_bytes() == b"a PNG" and not s.export_dir.name.endswith(".partial")
    store.close_all()
    assert not (tmp_path / "root").exists()


def test_uploads_and_copies_go_with_the_clients_that_used_them(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    made_with_the_page = root / "aa" / "office_rgb.jpg"
    made_with_the_page.parent.mkdir()
    made_with_the_page.write_bytes(b"thumbnail")
    files = TempFiles(root, unused_s=60)
    files.pin_existing()
    uploads = []
    for name in ("a", "b", "c"):
        folder = files.new_upload("10.0.0.1", 10)
        (folder / "sha").mkdir()
        (folder / "sha" / f"{name}.png").write_bytes(b"x" * 10)
        files.upload_done(folder, [str(folder / "sha" / f"{name}.png")])
        uploads.append(str(folder / "sha" / f"{name}.png"))
    shared = root / "bb" / "office_depth.png"  # Gradio's copy of an example's map, shown to both
    shared.parent.mkdir()
    shared.write_bytes(b"depth")
    files.seen("tab-1", [uploads[0], str(shared), str(made_with_the_page)])
    files.seen("tab-2", [uploads[1], str(shared)])
    assert files.seen("tab-1", [str(root / "gone" / "x.png")]) == [str(root / "gone" / "x.png")]
    (files.client_folder("tab-1") / "view.jpg").write_bytes(b"view")
    assert files.release("tab-1") >= 2
    assert not Path(uploads[0]).exists() and not Path(uploads[0]).parent.parent.exists()
    assert Path(uploads[1]).exists() and shared.exists() and made_with_the_page.exists()
    assert not (root / "clients").exists() or not any((root / "clients").iterdir())
    files.release("tab-2")
    assert not Path(uploads[1]).exists() and not shared.exists() and made_with_the_page.exists()
    # the third upload was never used: it goes once older than unused_s, not before
    assert files.sweep(now=time.monotonic()) == 0 and Path(uploads[2]).exists()
    assert files.sweep(now=time.monotonic() + 61) == 1 and not Path(uploads[2]).exists()


def test_an_address_has_a_bounded_number_of_unused_uploads(tmp_path):
    files = TempFiles(tmp_path, upload_files=3, upload_bytes=100)
    assert files.upload_refusal("a", 150) == UPLOADS_WAITING  # larger than the allowance
    first = files.new_upload("a", 40)
    (first / "sha").mkdir()
    for name in ("x.png", "y.png"):
        (first / "sha" / name).write_bytes(b"x" * 10)
    files.upload_done(first, [str(first / "sha" / n) for n in ("x.png", "y.png")])  # one request, two files
    assert files.allowance("a") == (1, 80) and files.upload_refusal("a", 1) is None
    files.new_upload("a", 40)
    assert files.upload_refusal("a", 1) == UPLOADS_WAITING   # three unused files already
    assert files.upload_refusal("b", 50) is None             # another address
    files.seen("tab", [str(first / "sha" / "x.png")])        # used: no longer counted
    assert files.upload_refusal("a", 1) is None and files.allowance("b") == (3, 100)


def test_an_idle_clients_files_go_with_its_session(tmp_path):
    """After --session-idle-min unused, the session goes and so do its client's uploads,
    previews, views and exports; an active client's files stay."""
    store = SessionStore(root=tmp_path / "root", idle_s=10)
    store.files.pin_existing()
    upload = store.files.new_upload("10.0.0.1", 1)
    (upload / "sha").mkdir()
    (upload / "sha" / "room_rgb.png").write_bytes(b"png")
    store.files.upload_done(upload, [str(upload / "sha" / "room_rgb.png")])
    idle, busy = make_session(), make_session()
    store.add(idle, client="idle-tab")
    store.add(busy, client="busy-tab")
    store.files.seen("idle-tab", [str(upload / "sha" / "room_rgb.png")])
    preview = Path(store.write_preview("idle-tab", b"jpeg"))
    with store.use(idle):
        view = Path(store.write_view(idle, b"jpeg"))
    with store.use(busy):
        other = Path(store.write_view(busy, b"jpeg"))
    import threading

    held, done = threading.Event(), threading.Event()

    def event_on_busy():  # an event running on it: not idle
        with busy.lock:
            held.set()
            done.wait(30)

    worker = threading.Thread(target=event_on_busy)
    worker.start()
    held.wait(30)
    try:
        assert store.sweep(now=time.monotonic() + 11) == 1
    finally:
        done.set()
        worker.join(30)
    assert idle.closed == "idle" and busy.closed is None
    assert not upload.exists() and not preview.exists() and not view.exists() and other.is_file()
    store.close_all()


def test_the_disk_budget_releases_the_least_recently_used_idle_session_first(tmp_path):
    """Replaced files go first, then the least recently used idle session (told why), and
    when nothing idle is left a plain refusal."""
    store = SessionStore(root=tmp_path / "root", disk_bytes=3 << 20)
    old, new = make_session(), make_session()
    store.add(old, client="old-tab")
    store.add(new, client="new-tab")
    mb = 1 << 20
    with store.use(old):
        store.write_view(old, os.urandom(mb))
    with store.use(new):
        first = Path(store.write_view(new, os.urandom(mb)))
        store.write_view(new, os.urandom(mb))  # 3 MB: the budget
        assert first.exists()                  # replaced, kept a minute for its client
        store.write_view(new, os.urandom(mb))  # 4 MB with the one replaced first
        assert old.closed is None and not first.exists()
        store.write_view(new, os.urandom(2 * mb))  # 4 MB without it: the old session's goes
    assert old.closed == "disk" and new.closed is None and store.released["disk"] == 1
    with pytest.raises(SessionExpired) as err:
        with store.use(old):
            pass
    assert str(err.value) == EXPIRED["disk"] and "make room for other users" in str(err.value)
    with store.use(new):  # nothing idle is left to release: a plain refusal, the session kept
        with pytest.raises(DiskFull):
            store.write_view(new, os.urandom(4 * mb))
    assert new.closed is None
    store.close_all()


# ----------------------------------------------------------------------------- the app on a tmpfs
def test_a_full_disk_is_a_plain_message_and_the_app_recovers(tmpfs, tmp_path):
    """Run, prompt, export and upload on a full disk: the plain message (no path, no errno),
    no partial file, the server still answering; once space is free everything works again."""
    env = {"TMPDIR": str(tmpfs), "GRADIO_TEMP_DIR": str(tmpfs)}
    args = ["--checkpoint", str(DEMO), "--device", "cpu", "--cache-mb", "0", "--disk-mb", "0",
            "--examples", str(tmp_path / "none")]
    maps = _maps(tmp_path)
    with running_app(args, tmp_path / "app.log", env=env) as app:
        api = Api(app["url"])
        inputs = api.file_data(*maps)
        out, error = api.call("segment", *inputs, "local", 0, 10)
        assert error is None and "Segmented 256×128" in event_outputs(out)["run_status"]
        root, = _roots(tmpfs)
        before = set(files_under(root))

        ballast = fill(tmpfs)
        # a Run of another client (a Run of this one would free this one's previous views first)
        out, error = Api(app["url"], "another").call("segment", *inputs, "local", 0, 10)
        assert error == DISK_FULL, error
        for name, data in (("prompt", ('{"points": [[10, 10]]}',)), ("export", ())):
            out, error = api.call(name, *data)
            assert error == DISK_FULL, (name, error)
        r = api.upload(maps[0])
        assert (r.status_code, r.text) == (507, DISK_FULL)
        _plain(r.text)
        # no partial file: nothing was added (no view, no .tmp, no .partial folder, no upload)
        assert set(files_under(root)) <= before, sorted(set(files_under(root)) - before)
        assert not [p for p in root.rglob("*") if p.name.endswith((".tmp", ".partial")) or p.name.startswith("tmp")]
        assert api.http.get(app["url"]).status_code == 200  # still answering

        ballast.unlink()
        assert api.upload(maps[0]).status_code == 200
        out, error = api.call("segment", *api.file_data(*maps), "local", 0, 10)
        assert error is None and "Segmented 256×128" in event_outputs(out)["run_status"]
        out, error = api.call("prompt", '{"points": [[10, 10]]}')
        assert error is None and event_outputs(out)["info"]["candidates"] is not None
        out, error = api.call("export")
        files, _info = out  # /export: the downloads and the info JSON
        assert error is None and len(files) >= 5
    log = (tmp_path / "app.log").read_text()
    assert "Traceback" not in log and log.count("the disk is full") + log.count(DISK_FULL) >= 4, log[-3000:]


def test_a_clients_files_go_when_it_closes_and_none_stay_after_shutdown(tmpfs, tmp_path):
    """Two clients with uploads, views and exports: when one closes, its files go (uploads,
    the app's files and Gradio's), the other's stay; after shutdown the tmpfs is empty."""
    from gradio_client import Client, handle_file

    env = {"TMPDIR": str(tmpfs), "GRADIO_TEMP_DIR": str(tmpfs), **FAST_HEARTBEAT}
    args = ["--checkpoint", str(DEMO), "--device", "cpu", "--examples", str(tmp_path / "none")]
    maps = [handle_file(str(p)) for p in _maps(tmp_path)]
    with running_app(args, tmp_path / "app.log", env=env) as app:
        root, = _roots(tmpfs)
        at_start = set(files_under(root))
        clients = [Client(app["url"], verbose=False, download_files=str(tmp_path / f"dl{i}")) for i in range(2)]
        for c in clients:
            c.predict(*maps, "local", 0, 10, api_name="/segment")
            c.predict('{"points": [[10, 10]]}', api_name="/prompt")
            c.predict(api_name="/export")
        made = set(files_under(root)) - at_start
        uploads = [f for f in made if f.startswith("uploads/")]
        tabs = {f.split("/")[1] for f in made if f.startswith("clients/")}
        assert len(uploads) == 6 and len(tabs) == 2, sorted(made)
        clients[0].close()
        # its view folder and its uploads go one after the other: wait for both
        wait_until(lambda: len({f.split("/")[1] for f in files_under(root) if f.startswith("clients/")}) == 1
                   and len([f for f in files_under(root) if f.startswith("uploads/")]) == 3,
                   "the first client's files (its folder and its 3 uploads) going", timeout=60)
        clients[1].predict('{"points": [[20, 20]]}', api_name="/prompt")  # the other still works
        clients[1].close()
        wait_until(lambda: set(files_under(root)) <= at_start, "the second client's files going", timeout=60)
        assert at_start == {".owner.lock"}  # no examples here: nothing made with the page
    assert list(tmpfs.iterdir()) == [], files_under(tmpfs)  # after shutdown: nothing at all


def test_a_restart_after_kill_removes_what_the_killed_server_left(tmpfs, tmp_path):
    """kill -9 leaves the process's folder (uploads, pictures, Gradio's cache); the next start
    deletes it, and nothing else in the temp folder. A client of the killed server that names
    its old uploads is told they went with the restart."""
    from panosamic.studio.serving import UPLOAD_FROM_BEFORE_RESTART

    env = {"TMPDIR": str(tmpfs), "GRADIO_TEMP_DIR": str(tmpfs)}
    args = ["--checkpoint", str(DEMO), "--device", "cpu", "--examples", str(tmp_path / "none")]
    other = tmpfs / "not-ours"
    other.mkdir()
    (other / "keep.txt").write_text("another program's file")
    with running_app(args, tmp_path / "first.log", env=env) as app:
        api = Api(app["url"])
        old_inputs = api.file_data(*_maps(tmp_path))
        out, error = api.call("segment", *old_inputs, "local", 0, 10)
        assert error is None, error
        killed, = _roots(tmpfs)
        assert files_under(killed)
        app["proc"].kill()
        app["proc"].wait(timeout=30)
    assert killed.exists()  # kill -9: nothing could clean up
    with running_app(args, tmp_path / "second.log", env=env) as app:
        assert not killed.exists() and len(_roots(tmpfs)) == 1
        assert (other / "keep.txt").is_file()
        out, error = Api(app["url"]).call("segment", *old_inputs, "local", 0, 10)
        assert error == UPLOAD_FROM_BEFORE_RESTART.format(name="room_rgb.png"), error


def test_the_disk_budget_evicts_an_idle_session_and_tells_its_user(tmp_path):
    """--disk-mb: a second user's upload that does not fit releases the first user's idle
    session and files; the first user is told, as with --session-mb."""
    rng = np.random.default_rng(0)
    noise = tmp_path / "noise_rgb.png"  # ~6 MB that do not compress
    cv2.imwrite(str(noise), rng.integers(0, 256, (1024, 2048, 3), dtype=np.uint8))
    env = {"TMPDIR": str(tmp_path), "GRADIO_TEMP_DIR": str(tmp_path)}
    args = ["--device", "cpu", "--disk-mb", "12", "--examples", str(tmp_path / "none")]
    with running_app(args, tmp_path / "app.log", env=env) as app:
        first, second = Api(app["url"], "first"), Api(app["url"], "second")
        out, error = first.call("segment", *first.file_data(noise))
        assert error is None, error
        out, error = second.call("segment", *second.file_data(noise))
        assert error is None, error
        out, error = first.call("prompt", '{"points": [[10, 10]]}')
        assert error == EXPIRED["disk"], error
        out, error = second.call("prompt", '{"points": [[10, 10]]}')
        assert error is None, error
    assert "session" in (tmp_path / "app.log").read_text() and "disk budget" in (tmp_path / "app.log").read_text()


def test_anonymous_uploads_are_bounded_and_unused_ones_deleted(tmp_path):
    """An address's uploads that no event used: at most PANOSAMIC_UPLOAD_FILES files and
    PANOSAMIC_UPLOAD_MB megabytes (a plain 429, also for a body without a length), deleted
    after PANOSAMIC_UPLOAD_UNUSED_S seconds; a malformed or cut-short upload leaves nothing."""
    import httpx

    env = {"TMPDIR": str(tmp_path), "GRADIO_TEMP_DIR": str(tmp_path), "PANOSAMIC_UPLOAD_FILES": "3",
           "PANOSAMIC_UPLOAD_MB": "1", "PANOSAMIC_UPLOAD_UNUSED_S": "3"}
    small = tmp_path / "small.png"
    small.write_bytes(os.urandom(100_000))
    big = tmp_path / "big.npy"
    big.write_bytes(os.urandom(2 << 20))
    args = ["--checkpoint", str(DEMO), "--device", "cpu", "--examples", str(tmp_path / "none")]
    with running_app(args, tmp_path / "app.log", env=env) as app:
        api = Api(app["url"])
        root, = _roots(tmp_path)
        uploads = root / "uploads"
        for _ in range(3):
            assert api.upload(small).status_code == 200
        r = api.upload(small)
        assert (r.status_code, r.text) == (429, UPLOADS_WAITING)
        wait_until(lambda: not any(uploads.iterdir()), "unused uploads deleted", timeout=60)
        r = api.upload(big)
        assert (r.status_code, r.text) == (429, UPLOADS_WAITING)

        def chunks():  # no Content-Length: counted as it streams
            boundary = b"--xyz"
            yield boundary + b'\r\nContent-Disposition: form-data; name="files"; filename="big.npy"\r\n\r\n'
            for _ in range(3):
                yield os.urandom(1 << 20)
            yield b"\r\n" + boundary + b"--\r\n"

        r = httpx.post(app["url"] + "gradio_api/upload", content=chunks(),
                       headers={"Content-Type": "multipart/form-data; boundary=xyz"}, timeout=60)
        assert r.status_code == 429, r.text
        r = httpx.post(app["url"] + "gradio_api/upload", content=b"not a form",
                       headers={"Content-Type": "text/plain"})
        assert r.status_code == 400
        assert not any(uploads.iterdir()) and not [p for p in root.rglob("tmp*")]
        # an upload an event used stays while its client does
        inputs = api.file_data(*_maps(tmp_path))
        out, error = api.call("segment", *inputs, "local", 0, 10)
        assert error is None, error
        time.sleep(5)
        assert all(Path(f["path"]).is_file() for f in inputs)
    log = (tmp_path / "app.log").read_text()
    assert "Traceback" not in log and "too many unused uploads" in log
