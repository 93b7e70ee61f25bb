"""`python app.py` in a subprocess on 127.0.0.1 (for the app's tests and benchmark)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Dict, Iterator, List, Optional

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(url: str, proc: subprocess.Popen, timeout: float, log: Path) -> float:
    """Seconds until `url` answers 200; RuntimeError if the process exits, TimeoutError after `timeout`."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return time.perf_counter() - t0
        except OSError:
            time.sleep(0.25)
    raise TimeoutError(f"the app did not answer at {url} within {timeout} s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def running_app(args: List[str], log_path: Path, env: Optional[Dict[str, str]] = None,
                timeout: float = 90.0, script: Path = ROOT / "app.py") -> Iterator[Dict]:
    """Starts app.py (or `script`, a wrapper of its main) with `args` (+ --host/--port); yields
    {"url", "startup_s", "proc", "log"}. Stopped with SIGTERM (then SIGKILL) afterwards, unless
    it has already exited. Without the disk embedding cache, the examples' pre-encoding and the
    start-up speed probe (unless `args` or `env` ask for them): a first Run then encodes,
    whatever ran before, and no probe competes with the test for the cores."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    full_env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
                "PYTHONUNBUFFERED": "1", "PANOSAMIC_EMBEDDING_CACHE_MB": "0", "PANOSAMIC_PREENCODE": "0",
                "PANOSAMIC_ETA_PROBE": "0",
                **(env or {})}
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, str(script), "--host", "127.0.0.1", "--port", str(port),
                                 *args], cwd=str(ROOT), env=full_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        startup = wait_until_up(url, proc, timeout, log_path)
        yield {"url": url, "startup_s": startup, "proc": proc, "log": log_path}
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def wait_for_releases(log: Path, count: int, timeout: float, poll_s: float = 0.5) -> int:
    """Waits (bounded) until the app's log says `count` sessions were released (closed tabs,
    idle timeout); returns how many it said, and notes on stderr when fewer came in time."""
    t0 = time.monotonic()
    seen = 0
    while time.monotonic() - t0 < timeout:
        seen = Path(log).read_text(errors="replace").count(" released: ")
        if seen >= count:
            return seen
        time.sleep(poll_s)
    print(f"only {seen} of {count} sessions were released within {timeout:.0f} s", file=sys.stderr, flush=True)
    return seen
