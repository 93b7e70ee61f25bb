"""Bounded load test of hostile input against the app on loopback; prints JSON.

    python -m devtools.hostile_load [--rounds 3] [--max-seconds 120] [--checkpoint assets/demo]

Starts `python app.py` on 127.0.0.1 (the demo checkpoint by default), runs one good Run, then
`--rounds` requests of each hostile kind (`devtools.hostile_inputs`: files sent as panorama,
depth or normals; prompt JSON; checkpoint names; misuse of the HTTP API: calls out of order,
wrong types, paths nobody uploaded, two streams at once, uploads malformed or cut short),
stopping early after `--max-seconds`. For each kind: refusal time p50/max (client round trip,
seconds), and across the run the app's RSS growth (MB) and every answer that was not a plain
refusal (accepted, a traceback, a server folder, "Unexpected error", HTTP 5xx). A final good
prompt checks that the session still works. The server log must hold no traceback (bad input
is one line each: `refusals_in_log`); the exit status is 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from devtools.app_process import running_app  # noqa: E402
from devtools.hostile_inputs import (HOSTILE_CHECKPOINTS, HOSTILE_PROMPTS, hostile_calls,  # noqa: E402
                                     write_hostile_files, write_panorama)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _http_outcome(answer) -> "str | None":
    """None for a plain answer of the HTTP API (a result, or a refusal in words); otherwise why not."""
    status, text = answer
    if status >= 500 or "Traceback" in text or "Unexpected error" in text or "/tmp/" in text:
        return f"not plain: HTTP {status}: {text[:120]}"
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="requests of each kind (1..20)")
    ap.add_argument("--max-seconds", type=float, default=120.0, help="stop sending after this long")
    ap.add_argument("--checkpoint", default=str(ROOT / "assets" / "demo"))
    args = ap.parse_args(argv)
    rounds = max(1, min(int(args.rounds), 20))
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    work = Path(tempfile.mkdtemp(prefix="hostile_load_"))
    files = write_hostile_files(work / "files")
    pano = handle_file(str(write_panorama(work / "files")))
    import cv2

    cv2.imwrite(str(work / "files" / "ok_depth.png"), np.full((128, 256), 2500, np.uint16))
    cv2.imwrite(str(work / "files" / "ok_normals.png"), np.full((128, 256, 3), 128, np.uint8))
    depth, normals = handle_file(str(work / "files" / "ok_depth.png")), handle_file(str(work / "files" / "ok_normals.png"))
    result = {"rounds": rounds, "kinds": {}, "not_plain": []}
    with running_app(["--checkpoint", args.checkpoint, "--device", "cpu", "--cache-mb", "64"],
                     work / "app.log") as app:
        pid = app["proc"].pid
        c = Client(app["url"], verbose=False, download_files=str(work / "downloads"))

        def seg(p, d, n, ckpt="local"):
            return c.predict(p, d, n, ckpt, 0, 10, api_name="/segment")

        seg(pano, depth, normals)  # the checkpoint loaded, a session made
        result["rss_after_first_run_mb"] = round(rss_mb(pid), 1)
        calls = {}
        for kind, f in files.items():
            slot = {"panorama": 0, "depth": 1, "normals": 2}[f.role]
            upload = [pano, depth, normals]
            upload[slot] = handle_file(str(f.path))
            calls[f"file:{kind}"] = (lambda u=upload: seg(*u))
        for i, value in enumerate(HOSTILE_CHECKPOINTS):
            calls[f"checkpoint:{i}"] = (lambda v=value: seg(pano, depth, normals, v))
        for name, text in HOSTILE_PROMPTS.items():
            calls[f"prompt:{name}"] = (lambda t=text: c.predict(t, api_name="/prompt"))
        import httpx

        up = httpx.post(app["url"] + "gradio_api/upload", timeout=60,
                        files=[("files", (p.name, p.read_bytes())) for p in
                               (Path(pano["path"]), Path(depth["path"]), Path(normals["path"]))]).json()
        for kind, fn in hostile_calls(app["url"], dict(zip(("pano", "depth", "normals"), up))).items():
            calls[f"api:{kind}"] = (lambda fn=fn: _http_outcome(fn()))
        t_start = time.perf_counter()
        for kind, call in calls.items():
            times = []
            for _ in range(rounds):
                if time.perf_counter() - t_start > args.max_seconds:
                    break
                t0 = time.perf_counter()
                try:
                    answer = call()
                    outcome = answer if kind.startswith("api:") else "accepted"
                except AppError as e:
                    msg = str(e)
                    bad = ("Traceback" in msg or "Unexpected error" in msg or str(work) in msg
                           or "/tmp/" in msg or not msg)
                    outcome = "not plain: " + msg[:120] if bad else None
                except Exception as e:  # noqa: BLE001
                    outcome = f"{type(e).__name__}: {str(e)[:120]}"
                times.append(time.perf_counter() - t0)
                if outcome:
                    result["not_plain"].append({"kind": kind, "outcome": outcome})
            if times:
                result["kinds"][kind] = {"n": len(times), "p50_s": round(statistics.median(times), 4),
                                         "max_s": round(max(times), 4)}
        result["seconds"] = round(time.perf_counter() - t_start, 1)
        result["rss_end_mb"] = round(rss_mb(pid), 1)
        result["rss_growth_mb"] = round(result["rss_end_mb"] - result["rss_after_first_run_mb"], 1)
        out = c.predict(json.dumps({"points": [[60, 70]], "labels": [1]}), api_name="/prompt")
        result["session_still_works"] = len(out[5]["candidates"]["predicted_iou"]) == 3
        log = (work / "app.log").read_text()
        result["checkpoint_loads_in_log"] = log.count("loading checkpoint ")
        result["tracebacks_in_log"] = log.count("Traceback")
        result["refusals_in_log"] = log.count(" refused")
    all_times = [v["max_s"] for v in result["kinds"].values()]
    groups = {}
    for kind, v in result["kinds"].items():
        groups.setdefault(kind.split(":")[0], []).append(v)
    result["summary"] = {g: {"kinds": len(v), "p50_s": round(statistics.median(x["p50_s"] for x in v), 4),
                             "max_s": round(max(x["max_s"] for x in v), 4)} for g, v in groups.items()}
    result["slowest_refusal_s"] = max(all_times) if all_times else None
    print(json.dumps(result, indent=1))
    ok = not result["not_plain"] and result["session_still_works"] and result["tracebacks_in_log"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
