"""Benchmark of the running app as users drive it: camera-size panoramas and many users.

    python -m devtools.bench_app [--sizes 1024,4096,8192] [--clients 20] [--out bench_app.json]
    python -m devtools.bench_app --photo [--sizes 1024,8192] --clients 0   # a real RGB-only photo

Starts `python app.py --checkpoint assets/demo` (the bundled demo model, offline) on a free
loopback port and drives it through `gradio_client`, as a Space's users and API clients do,
and (for clicks, assign and undo, the `_http` figures) through Gradio's HTTP API in the same
session, as curl and the page's JavaScript do, without gradio_client's 50 ms polling:

* per size (the office example enlarged to W x W/2), each from a settled process (the previous
  size's sessions released by the idle timeout): Run (`--runs` Runs of panoramas that
  differ in one corner, so each encodes anew; medians of the total, the model stages, the
  overhead = total - model stages, and of reading the uploads), clicks (prompt round trips, p50/p90), assign, undo,
  export (full resolution), peak RSS of the app during the Run, and the memory kept per idle
  session (RSS growth over several sessions of that panorama, per session);
* `--clients` concurrent users on the 1024x512 examples, each Run then clicks, assigns and
  undoes while the others run: per-endpoint p50/p95 and errors;
* after the users leave (sessions closed by the idle timeout): RSS against its start, and the
  files left in the app's temporary folder (Gradio's cache in it); after SIGTERM, whether the
  folder is gone;
* the disk that folder takes: at start, its peak while the concurrent users work (sampled every
  0.5 s), and after they leave;
* the floor under every round trip on this machine: a Gradio app with one echo endpoint, in
  this process, driven the same two ways (`gradio_echo_p50_s`, `gradio_echo_p50_s_http`).

Prints one JSON object (progress notes on stderr). Bounded: loopback only, a fixed number of
requests, every wait has a time limit.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List

import numpy as np

from .app_process import ROOT, running_app, wait_for_releases

MODEL_STAGES = ("load", "preprocess", "encode", "fuse", "decode")


def _note(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _proc_status(pid: int) -> Dict[str, float]:
    """VmRSS, VmHWM (peak), RssAnon (heap and other private memory) and RssFile (mapped files:
    the libraries' pages touched so far) of a process, MiB; Threads, a count."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:", "RssAnon:", "RssFile:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
            elif line.startswith("Threads:"):
                out["Threads"] = int(line.split()[1])
    return out


def _reset_peak(pid: int) -> None:
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    except OSError:
        pass


def _pct(values: List[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 4) if values else float("nan")


def make_panoramas(out: Path, widths: List[int], variants: int = 1, photo: bool = False) -> Dict[int, List[List[str]]]:
    """The office example enlarged to each width (JPEG 90 as cameras write, depth/normals PNG):
    `variants` panoramas per width that differ in one corner of the photo, so that each Run
    encodes anew (the embedding cache keys on the files' content). `photo`: the real hotel-room
    photo instead, RGB only (what most users bring), as [rgb] lists."""
    import cv2

    src = ROOT / "assets" / "examples"
    if photo:
        rgb = cv2.imread(str(src / "hotel_room_rgb.jpg"))
        found: Dict[int, List[List[str]]] = {}
        for w in widths:
            big = cv2.resize(rgb, (w, w // 2), interpolation=cv2.INTER_CUBIC)
            found[w] = []
            for k in range(variants):
                d = out / f"w{w}" / f"v{k}"
                d.mkdir(parents=True, exist_ok=True)
                big[:8, :8] = 40 * k
                cv2.imwrite(str(d / "hotel_room_rgb.jpg"), big, [cv2.IMWRITE_JPEG_QUALITY, 90])
                found[w].append([str(d / "hotel_room_rgb.jpg")])
        return found
    rgb = cv2.imread(str(src / "office_rgb.jpg"))
    depth = cv2.imread(str(src / "office_depth.png"), cv2.IMREAD_UNCHANGED)
    normals = cv2.imread(str(src / "office_normals.png"))
    paths: Dict[int, List[List[str]]] = {}
    for w in widths:
        h = w // 2
        big = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_CUBIC)
        paths[w] = []
        for k in range(variants):
            d = out / f"w{w}" / f"v{k}"
            d.mkdir(parents=True, exist_ok=True)
            p = [str(d / "office_rgb.jpg"), str(d / "office_depth.png"), str(d / "office_normals.png")]
            big[:8, :8] = 40 * k
            cv2.imwrite(p[0], big, [cv2.IMWRITE_JPEG_QUALITY, 90])
            cv2.imwrite(p[1], cv2.resize(depth, (w, h), interpolation=cv2.INTER_NEAREST))
            cv2.imwrite(p[2], cv2.resize(normals, (w, h), interpolation=cv2.INTER_NEAREST))
            paths[w].append(p)
    return paths


def _segment(c, p):
    from gradio_client import handle_file

    if len(p) == 1:  # a photo alone: the app's Automatic choice (the RGB demo offline)
        return c.predict(handle_file(p[0]), api_name="/segment")
    return c.predict(handle_file(p[0]), handle_file(p[1]), handle_file(p[2]), "local", 0, 10,
                     api_name="/segment")


class HttpApi:
    """Gradio's documented HTTP API, as curl and the page's own JavaScript client use it: POST
    /gradio_api/call/<name>, then read that event's stream. It waits on the stream itself, where
    gradio_client checks for new messages every 50 ms (two or three checks per call), so its
    round trips show the app's own latency. `session_hash` shares a gradio_client's session."""

    def __init__(self, url: str, session_hash: str):
        import httpx

        self.base = url.rstrip("/") + "/gradio_api/call/"
        self.session_hash = session_hash
        self.http = httpx.Client(timeout=120)
        # the endpoints' parameters, to fill in defaults as gradio_client does
        self.endpoints = self.http.get(url.rstrip("/") + "/gradio_api/info").json()["named_endpoints"]

    def predict(self, *data, api_name: str):
        name = api_name.lstrip("/")
        params = self.endpoints["/" + name]["parameters"]
        data = list(data) + [q.get("parameter_default") for q in params[len(data):]]
        r = self.http.post(self.base + name, json={"data": data, "session_hash": self.session_hash})
        r.raise_for_status()
        event = None
        with self.http.stream("GET", f"{self.base}{name}/{r.json()['event_id']}") as stream:
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:") and event in ("complete", "error"):
                    if event == "error":
                        raise RuntimeError(f"{api_name}: {line[5:].strip()[:200]}")
                    return json.loads(line[5:])
        raise RuntimeError(f"{api_name}: the event stream ended without a result")


def _timed(fn, *a, **k):
    t0 = time.perf_counter()
    out = fn(*a, **k)
    return time.perf_counter() - t0, out


def bench_size(url: str, pid: int, variants: List[List[str]], width: int, clicks: int, sessions: int) -> Dict:
    from gradio_client import Client

    rng = random.Random(width)
    h = width // 2
    c = Client(url, verbose=False)
    # one Run per variant, each encoding anew: medians of the times, the highest peak
    seg_s, model_s, read_s, peak = [], [], [], 0.0
    for paths in variants:
        _reset_peak(pid)
        dt, out = _timed(_segment, c, paths)
        timings = out[5]["timings_s"]
        seg_s.append(dt)
        model_s.append(sum(v for k, v in timings.items() if k in MODEL_STAGES))
        read_s.append(timings.get("read", float("nan")))
        peak = max(peak, _proc_status(pid)["VmHWM"])
    paths = variants[0]
    overhead_s = [a - b for a, b in zip(seg_s, model_s)]
    # the same session through both clients: gradio_client (Python users) and the HTTP API
    timings: Dict[str, Dict[str, List[float]]] = {}
    for via, api in (("client", c), ("http", HttpApi(url, c.session_hash))):
        click_s = []
        for _ in range(clicks):
            pt = [rng.uniform(0, width - 1), rng.uniform(h * 0.2, h * 0.8)]
            dt, _ = _timed(api.predict, json.dumps({"points": [pt], "labels": [1]}), api_name="/prompt")
            click_s.append(dt)
        assign_s, undo_s = [], []
        for i in range(3):
            api.predict(json.dumps({"points": [[width * (0.2 + 0.2 * i), h * 0.6]]}), api_name="/prompt")
            assign_s.append(_timed(api.predict, "", None, api_name="/assign")[0])
        for _ in range(3):
            undo_s.append(_timed(api.predict, api_name="/undo")[0])
        timings[via] = {"click": click_s, "assign": assign_s, "undo": undo_s}
    c.predict(json.dumps({"points": [[width * 0.3, h * 0.6]]}), api_name="/prompt")
    c.predict("", None, api_name="/assign")
    export_s, (files, _) = _timed(c.predict, api_name="/export")
    # memory kept per idle session: more users with this panorama (embeddings from the cache)
    rss0 = _proc_status(pid)["VmRSS"]
    extra = []
    for _ in range(sessions):
        e = Client(url, verbose=False)
        _segment(e, paths)
        e.predict(json.dumps({"points": [[width * 0.4, h * 0.5]]}), api_name="/prompt")
        e.predict("", None, api_name="/assign")
        extra.append(e)
    rss1 = _proc_status(pid)["VmRSS"]
    return {
        "width": width, "height": h,
        "runs": len(seg_s), "segment_s": _pct(seg_s, 50), "model_stages_s": _pct(model_s, 50),
        "segment_overhead_s": _pct(overhead_s, 50), "segment_overhead_max_s": round(max(overhead_s), 3),
        "read_uploads_s": _pct(read_s, 50),
        **{f"{what}_{q}_s" + ("" if via == "client" else "_http"): _pct(timings[via][what], int(q[1:]))
           for via in timings for what, q in (("click", "p50"), ("click", "p90"), ("assign", "p50"), ("undo", "p50"))},
        "export_s": round(export_s, 3),
        "export_files": len(files),
        "peak_rss_during_segment_mb": round(peak, 1),
        "kept_per_idle_session_mb": round((rss1 - rss0) / max(1, sessions), 1),
    }


def bench_concurrent(url: str, examples: List[List[str]], n_clients: int, clicks: int) -> Dict:
    from gradio_client import Client

    times: Dict[str, List[float]] = {"segment": [], "prompt": [], "assign": [], "undo": []}
    errors: Dict[str, int] = {k: 0 for k in times}
    lock = threading.Lock()

    def record(name, fn, *a, **k):
        t0 = time.perf_counter()
        try:
            out = fn(*a, **k)
        except Exception as e:  # noqa: BLE001  (counted, not fatal)
            with lock:
                errors[name] += 1
            _note(f"  {name} error: {str(e)[:120]}")
            return None
        with lock:
            times[name].append(time.perf_counter() - t0)
        return out

    def user(i: int) -> None:
        rng = random.Random(i)
        c = Client(url, verbose=False)
        ex = examples[i % len(examples)]
        if record("segment", _segment, c, ex) is None:
            return
        for _ in range(clicks):
            pt = [rng.uniform(0, 1023), rng.uniform(100, 400)]
            record("prompt", c.predict, json.dumps({"points": [pt]}), api_name="/prompt")
        record("assign", c.predict, "", None, api_name="/assign")
        record("undo", c.predict, api_name="/undo")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(n_clients) as pool:
        list(pool.map(user, range(n_clients)))
    return {"clients": n_clients, "wall_s": round(time.perf_counter() - t0, 2),
            "endpoints": {k: {"n": len(v), "p50_s": _pct(v, 50), "p95_s": _pct(v, 95), "errors": errors[k]}
                          for k, v in times.items()}}


def _export_root(pid: int) -> List[Path]:
    return list(Path(tempfile.gettempdir()).glob(f"panosamic-studio-{pid}-*"))


class DiskSampler:
    """The disk the app's temporary folder takes (Gradio's cache in it), sampled every
    `every_s` seconds on a thread: the peak since `reset`, in MB."""

    def __init__(self, folders: List[Path], every_s: float = 0.5):
        from panosamic.studio.files import tree_bytes

        self.folders, self.every_s, self._bytes = folders, every_s, tree_bytes
        self.peak = 0
        self._stop = threading.Event()
        threading.Thread(target=self._loop, daemon=True).start()

    def now_mb(self) -> float:
        return round(sum(self._bytes(f) for f in self.folders if f.exists()) / 2**20, 1)

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak = max(self.peak, self.now_mb())

    def reset(self) -> None:
        self.peak = self.now_mb()

    def stop(self) -> None:
        self._stop.set()


def _files_under(folders: List[Path]) -> int:
    return sum(1 for d in folders for p in d.rglob("*") if p.is_file())


def gradio_echo_round_trip(requests: int = 15) -> Dict:
    """p50/p90 seconds of a round trip to a Gradio endpoint that returns its input (the
    queue, the event stream and gradio_client, nothing of ours) on a free loopback port."""
    import gradio as gr
    from gradio_client import Client

    from .app_process import free_port

    port = free_port()
    with gr.Blocks() as echo_app:
        box = gr.Textbox()
        gr.Button().click(lambda x: x, box, box, api_name="echo")
    echo_app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        times = [_timed(client.predict, "x", api_name="/echo")[0] for _ in range(requests)]
        http = HttpApi(f"http://127.0.0.1:{port}/", client.session_hash)
        http_times = [_timed(http.predict, "x", api_name="/echo")[0] for _ in range(requests)]
    finally:
        echo_app.close()
    return {"gradio_echo_p50_s": _pct(times, 50), "gradio_echo_p90_s": _pct(times, 90),
            "gradio_echo_p50_s_http": _pct(http_times, 50), "gradio_echo_p90_s_http": _pct(http_times, 90)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1024,4096,8192", help="panorama widths (height = width / 2)")
    ap.add_argument("--clients", type=int, default=20, help="concurrent users for the load part (0 = skip)")
    ap.add_argument("--clicks", type=int, default=15, help="clicks per size (and per concurrent user: a third)")
    ap.add_argument("--sessions", type=int, default=3, help="extra sessions per size for the memory kept")
    ap.add_argument("--runs", type=int, default=3, help="Runs per size, each a new panorama (medians)")
    ap.add_argument("--idle-s", type=float, default=20.0, help="the app's session idle timeout for this run")
    ap.add_argument("--photo", action="store_true",
                    help="a real RGB-only photo (assets/examples/hotel_room_rgb.jpg enlarged), the app started "
                         "with no --checkpoint, as a newcomer does: Automatic takes the RGB demo offline")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args(argv)
    widths = [int(w) for w in args.sizes.split(",") if w]
    work = Path(tempfile.mkdtemp(prefix="panosamic-bench-app-"))
    panoramas = make_panoramas(work, widths, args.runs, photo=args.photo)
    examples = [[str(ROOT / "assets" / "examples" / f"{n}_{k}") for k in ("rgb.jpg", "depth.png", "normals.png")]
                for n in ("office", "conference", "lounge", "corridor", "storage", "seam")]
    from panosamic.bench_tools import cpu_name as _cpu_name

    result: Dict = {"machine": {"cpu": _cpu_name(), "cpus": os.cpu_count(), "python": sys.version.split()[0]},
                    "checkpoint": "auto (offline: assets/demo-rgb)" if args.photo else "assets/demo",
                    "input": "photo, RGB only" if args.photo else "rendered, RGB-D-N",
                    "sizes": [], "concurrent": None, "after_users_leave": None}
    idle_min = args.idle_s / 60
    ckpt = [] if args.photo else ["--checkpoint", str(ROOT / "assets" / "demo")]
    with running_app([*ckpt, "--session-idle-min", str(idle_min)], work / "app.log", timeout=120) as app:
        pid = app["proc"].pid
        disk = DiskSampler(_export_root(pid))
        result["disk_at_start_mb"] = disk.now_mb()
        result["startup_s"] = round(app["startup_s"], 2)
        result["rss_at_start_mb"] = round(_proc_status(pid)["VmRSS"], 1)
        expected = 0
        for w in widths:
            _note(f"size {w}x{w // 2} ...")
            rss_settled = _proc_status(pid)["VmRSS"]
            result["sizes"].append(bench_size(app["url"], pid, panoramas[w], w, args.clicks, args.sessions))
            result["sizes"][-1]["rss_before_mb"] = round(rss_settled, 1)
            _note(json.dumps(result["sizes"][-1]))
            # each size (and then the load part) starts from a settled process: this size's
            # sessions (each Run replaces the one before, plus the extra ones) released
            expected += args.runs + args.sessions
            wait_for_releases(app["log"], expected, args.idle_s * 4 + 30)
            time.sleep(1.0)  # memory is trimmed right after the sweep
        rss_before = _proc_status(pid)["VmRSS"]
        if args.clients:
            _note(f"{args.clients} concurrent users ...")
            _reset_peak(pid)
            disk.reset()
            result["concurrent"] = bench_concurrent(app["url"], examples, args.clients, max(1, args.clicks // 3))
            result["concurrent"]["disk_peak_mb"] = disk.peak
            result["concurrent"]["rss_before_mb"] = round(rss_before, 1)
            result["concurrent"]["rss_peak_mb"] = round(_proc_status(pid)["VmHWM"], 1)
        wait_for_releases(app["log"], expected + args.clients, args.idle_s * 4 + 30)
        time.sleep(1.0)  # memory is trimmed right after the sweep
        left = _files_under(_export_root(pid))
        rss_after = _proc_status(pid)["VmRSS"]
        result["after_users_leave"] = {"rss_before_users_mb": round(rss_before, 1), "rss_after_mb": round(rss_after, 1),
                                       "rss_delta_mb": round(rss_after - rss_before, 1), "export_files_left": left,
                                       "disk_mb": disk.now_mb()}
        roots = _export_root(pid)
    disk.stop()
    result["after_shutdown"] = {"export_folders_left": sum(1 for r in roots if r.exists())}
    result["floor"] = gradio_echo_round_trip()
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
