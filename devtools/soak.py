"""A soak of the running app: clients looping full workflows for minutes; prints JSON.

    python -m devtools.soak [--minutes 30] [--clients 6] [--cache-mb 8] [--out soak.json]
                            [--app-env MALLOC_ARENA_MAX=2]

Starts `python app.py --checkpoint assets/demo` (offline) on a free loopback port, with the
in-memory embedding cache bounded small (`--cache-mb`, filled within the first loops) and the
app's temporary folder in a folder of the soak's own (TMPDIR), then drives it with `--clients`
gradio_client clients. Each loop of a client is a whole visit: a new client (session), a
panorama never seen before (an example with a few pixels changed by client and loop, so the
content hash differs and the encoder runs), Run, clicks, Assign, a second selection, Assign,
Undo, Export (the files fetched), and the client closed (its session released).

Phases: every client does one loop, the soak waits until the app has released those sessions
and samples the level *after the first loop*; then the clients loop until `--minutes` are up,
stop, the sessions are released, and the *end* level is sampled the same way. Every 10 s
(`--every-s`) it samples the app's RSS, the embedding cache's bytes (from the app's log line
"embedding cache: N entries, X of Y MB", written at each insertion: sizes only), the files and
bytes under the app's temporary folder (Gradio's cache in it), and the free space of its disk.

The summary gives for RSS, cache bytes, files and temporary bytes: the level after the first
loop, the end level, the maximum, the drift (end against after-first-loop, %) and whether it is
within 10 % (`--tolerance-pct`); RSS is also set against the cache, to tell a cache filling
towards its bound from a leak. The exit status is 1 when RSS or the files drift beyond the
tolerance or a workflow step failed. Bounded: loopback only, every wait has a time limit.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from devtools.app_process import running_app, wait_for_releases  # noqa: E402
from devtools.bench_app import _proc_status  # noqa: E402

EXAMPLES = ("office", "conference", "lounge", "corridor", "storage", "seam")
CACHE_LINE = re.compile(r"embedding cache: (\d+) entries, ([\d.]+) of ([\d.]+) MB, (\d+) evicted")


def _note(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def new_panorama(out: Path, client: int, loop: int) -> List[str]:
    """An example's (rgb, depth, normals) with an 8x8 block of the photo set from (client,
    loop): a panorama the app has not seen, so its Run encodes anew (the caches key on the
    files' content). PNG for the photo, so the changed pixels survive exactly."""
    import cv2

    name = EXAMPLES[(client + loop) % len(EXAMPLES)]
    src = ROOT / "assets" / "examples"
    rgb = cv2.imread(str(src / f"{name}_rgb.jpg"))
    rng = np.random.default_rng([client, loop])
    rgb[:8, :8] = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    d = out / f"c{client}"
    d.mkdir(parents=True, exist_ok=True)
    rgb_path = d / f"{name}_rgb.png"
    cv2.imwrite(str(rgb_path), rgb)
    return [str(rgb_path), str(src / f"{name}_depth.png"), str(src / f"{name}_normals.png")]


def workflow(url: str, paths: List[str], downloads: Path) -> Dict[str, List[float]]:
    """One visit: Run, three clicks, Assign, a second selection, Assign, Undo, Export, close.
    Returns the seconds of each call by step; raises on any step's failure."""
    from gradio_client import Client, handle_file

    times: Dict[str, List[float]] = {}

    def step(name, *a, **k):
        t0 = time.perf_counter()
        out = c.predict(*a, **k)
        times.setdefault(name, []).append(time.perf_counter() - t0)
        return out

    c = Client(url, verbose=False, download_files=str(downloads))
    try:
        out = step("segment", handle_file(paths[0]), handle_file(paths[1]), handle_file(paths[2]), "local", 0, 10,
                   api_name="/segment")
        h, w = out[5]["height"], out[5]["width"]
        for i, (x, y) in enumerate(((0.3, 0.6), (0.32, 0.62), (0.6, 0.5))):
            step("click", json.dumps({"points": [[w * x, h * y]], "labels": [1], "append": i == 1}),
                 api_name="/prompt")
        step("assign", "", None, api_name="/assign")
        step("click", json.dumps({"points": [[w * 0.8, h * 0.7]], "labels": [1]}), api_name="/prompt")
        step("assign", "", None, api_name="/assign")
        step("undo", api_name="/undo")
        files, _ = step("export", api_name="/export")
        if not files:
            raise RuntimeError("/export answered no files")
    finally:
        c.close()  # the heartbeat stops: the app releases the session and its files
    shutil.rmtree(downloads, ignore_errors=True)
    return times


def tree_stats(folder: Path) -> Dict[str, int]:
    """Files and bytes under `folder` (a file vanishing while counted is skipped)."""
    files = size = 0
    for dirpath, _dirs, names in os.walk(folder):
        for n in names:
            try:
                size += os.lstat(os.path.join(dirpath, n)).st_size
                files += 1
            except OSError:
                pass
    return {"files": files, "bytes": size}


class Sampler:
    """Samples the app every `every_s` seconds on a thread (and on demand, tagged)."""

    def __init__(self, pid: int, log: Path, tmp: Path, every_s: float):
        self.pid, self.log, self.tmp, self.every_s = pid, log, tmp, every_s
        self.t0 = time.monotonic()
        self.series: List[Dict] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def cache(self) -> Dict[str, float]:
        found = CACHE_LINE.findall(Path(self.log).read_text(errors="replace"))
        if not found:
            return {"cache_entries": 0, "cache_mb": 0.0}
        entries, mb, _max_mb, _evicted = found[-1]
        return {"cache_entries": int(entries), "cache_mb": float(mb), "cache_evictions": int(_evicted)}

    def sample(self, tag: Optional[str] = None) -> Dict:
        status = _proc_status(self.pid)
        tree = tree_stats(self.tmp)
        disk = shutil.disk_usage(self.tmp)
        s = {"t_s": round(time.monotonic() - self.t0, 1), "rss_mb": round(status["VmRSS"], 1),
             "rss_anon_mb": round(status.get("RssAnon", 0.0), 1), "rss_file_mb": round(status.get("RssFile", 0.0), 1),
             "threads": status.get("Threads", 0),
             **self.cache(), "tmp_files": tree["files"], "tmp_mb": round(tree["bytes"] / 2**20, 2),
             "disk_free_mb": round(disk.free / 2**20)}
        if tag:
            s["tag"] = tag
        with self._lock:
            self.series.append(s)
        return s

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.sample()
            except (OSError, KeyError):  # the app is gone: the main thread reports it
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def settle(sampler: Sampler, quiet_s: float = 6.0, timeout: float = 60.0) -> None:
    """Waits until the temporary folder's file count has not changed for `quiet_s` seconds."""
    t0 = time.monotonic()
    last, since = None, time.monotonic()
    while time.monotonic() - t0 < timeout:
        now = tree_stats(sampler.tmp)["files"]
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.5)


def level_summary(series: List[Dict], key: str, first: Dict, end: Dict, tolerance_pct: float) -> Dict:
    base, last = first[key], end[key]
    drift = None if not base else round(100.0 * (last - base) / base, 1)
    values = [s[key] for s in series]
    return {"after_first_loop": base, "end": last, "max": max(values), "min": min(values), "drift_pct": drift,
            "within_tolerance": (abs(last - base) <= tolerance_pct / 100 * base) if base else last == 0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="how long the clients loop (after the first loop)")
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--cache-mb", type=float, default=8.0,
                    help="the app's in-memory embedding cache (small, so it fills within the first loops)")
    ap.add_argument("--every-s", type=float, default=10.0, help="sampling interval")
    ap.add_argument("--tolerance-pct", type=float, default=10.0)
    ap.add_argument("--app-env", action="append", default=[], metavar="NAME=VALUE",
                    help="an environment variable for the app (e.g. MALLOC_ARENA_MAX=2); repeatable")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args(argv)
    from concurrent.futures import ThreadPoolExecutor

    work = Path(tempfile.mkdtemp(prefix="panosamic-soak-"))
    tmp = work / "tmp"  # the app's TMPDIR: its temporary folder and Gradio's cache, nothing else
    tmp.mkdir()
    env = {"TMPDIR": str(tmp), **dict(kv.split("=", 1) for kv in args.app_env)}
    app_args = ["--checkpoint", str(ROOT / "assets" / "demo"), "--device", "cpu", "--cache-mb", str(args.cache_mb)]
    result: Dict = {"clients": args.clients, "minutes": args.minutes, "cache_mb": args.cache_mb,
                    "app_env": env | {"TMPDIR": "<soak folder>"}, "cpus": os.cpu_count()}
    errors: List[str] = []
    steps: Dict[str, List[float]] = {}
    loops = [0] * args.clients
    lock = threading.Lock()

    def visit(url: str, i: int) -> None:
        paths = new_panorama(work / "panoramas", i, loops[i])
        try:
            times = workflow(url, paths, work / "downloads" / f"c{i}-{loops[i]}")
        except Exception as e:  # noqa: BLE001  (counted and reported)
            with lock:
                errors.append(f"client {i} loop {loops[i]}: {type(e).__name__}: {str(e)[:200]}")
            _note(errors[-1])
        else:
            with lock:
                for k, v in times.items():
                    steps.setdefault(k, []).extend(v)
        loops[i] += 1

    with running_app(app_args, work / "app.log", env=env, timeout=180) as app:
        pid, url = app["proc"].pid, app["url"]
        sampler = Sampler(pid, app["log"], tmp, args.every_s)
        result["start"] = sampler.sample("start")
        _note(f"app up (pid {pid}); first loop of {args.clients} clients")
        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(lambda i: visit(url, i), range(args.clients)))
        wait_for_releases(app["log"], args.clients, 120)
        settle(sampler)
        first = sampler.sample("after_first_loop")
        _note(f"after the first loop: {first}")
        deadline = time.monotonic() + 60 * args.minutes

        def client(i: int) -> None:
            while time.monotonic() < deadline:
                visit(url, i)

        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(client, range(args.clients)))
        total_loops = sum(loops)
        wait_for_releases(app["log"], total_loops, 180)
        settle(sampler)
        end = sampler.sample("end")
        _note(f"end: {end}")
        sampler.stop()
        log_text = Path(app["log"]).read_text(errors="replace")
    series = sampler.series
    result.update({
        "loops": total_loops, "workflow_errors": len(errors), "errors": errors[:20],
        "tracebacks_in_log": log_text.count("Traceback"), "sessions_released": log_text.count(" released: "),
        "step_p50_s": {k: round(float(np.median(v)), 3) for k, v in steps.items()},
        "step_p95_s": {k: round(float(np.percentile(v, 95)), 3) for k, v in steps.items()},
        "after_first_loop": first, "end": end,
        "summary": {key: level_summary(series, key, first, end, args.tolerance_pct)
                    for key in ("rss_mb", "rss_anon_mb", "rss_file_mb", "threads", "cache_mb", "tmp_files", "tmp_mb")},
    })
    # RSS against the cache: what the RSS grew by beyond what the cache's entries grew by
    rss, cache = result["summary"]["rss_mb"], result["summary"]["cache_mb"]
    result["rss_growth_minus_cache_growth_mb"] = round((rss["end"] - rss["after_first_loop"])
                                                       - (cache["end"] - cache["after_first_loop"]), 1)
    half = [s for s in series if "tag" not in s and s["t_s"] >= series[-1]["t_s"] / 2]
    if len(half) >= 3:  # the trend under load over the second half: MB per minute
        t = np.array([s["t_s"] for s in half]) / 60
        result["rss_slope_second_half_mb_per_min"] = round(float(np.polyfit(t, [s["rss_mb"] for s in half], 1)[0]), 2)
    result["series"] = series
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    shutil.rmtree(work, ignore_errors=True)
    ok = (not errors and rss["within_tolerance"] and result["summary"]["tmp_files"]["within_tolerance"])
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
