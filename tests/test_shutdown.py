"""A graceful stop: SIGTERM (a Space restart, `docker stop`) refuses new jobs in plain words,
lets running ones finish within the grace period, answers the ones it cuts short, and leaves
no export folder behind; after the restart, a client from before it is told so.

`Shutdown` is tested in-process with events the test controls; the app through
tests/gated_app.py, whose encoder waits until the test opens its gate.
"""

from __future__ import annotations

import contextvars
import os
import signal
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from app_utils import gated_app, running_app, wait_until
from devtools.hostile_inputs import write_panorama
from panosamic.studio.shutdown import JobCutShort, ServerRestarting, Shutdown

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "assets" / "demo"
RESTARTING = "The server is restarting: try again in a minute."
RESTARTED = "The server restarted while this ran: press Run again."
RESTARTED_SINCE = "The server restarted since this page was opened: press Run again."


# ----------------------------------------------------------------------------- Shutdown
def _drain_in_background(shutdown: Shutdown, grace_s: float, settled=lambda: True):
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("cut", shutdown.drain(grace_s, settled, 5.0)))
    thread.start()
    return thread, result


def test_jobs_run_with_their_context_and_their_result_or_error():
    shutdown = Shutdown()
    var = contextvars.ContextVar("var", default="unset")
    var.set("caller's")
    assert shutdown.run(lambda a, b=0: (var.get(), a + b), 1, b=2) == ("caller's", 3)

    def fails():
        raise KeyError("x")

    with pytest.raises(KeyError):
        shutdown.run(fails)
    assert shutdown.running == 0 and not shutdown.closing


def test_quick_jobs_run_inline_and_count_as_running():
    shutdown = Shutdown()
    seen = {}

    def job():
        seen["thread"] = threading.current_thread()
        seen["running"] = shutdown.running
        return 7

    assert shutdown.run(job, inline=True) == 7
    assert seen == {"thread": threading.current_thread(), "running": 1} and shutdown.running == 0
    shutdown.drain(0.0)
    with pytest.raises(ServerRestarting):
        shutdown.run(job, inline=True)


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="thread priorities are set on Linux only")
def test_a_heavy_job_runs_at_a_lower_priority_in_its_own_thread():
    def priority():
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    mine = priority()
    assert Shutdown().run(priority, nice=5) == min(mine + 5, 19)
    assert priority() == mine  # the caller (a UI's worker thread, reused for clicks) keeps its own


def test_drain_lets_a_running_job_finish_and_refuses_new_ones():
    shutdown = Shutdown()
    started, release = threading.Event(), threading.Event()

    def job():
        started.set()
        release.wait()
        return "done"

    answer = {}
    caller = threading.Thread(target=lambda: answer.setdefault("value", shutdown.run(job)))
    caller.start()
    started.wait()
    drainer, result = _drain_in_background(shutdown, grace_s=600)
    wait_until(lambda: shutdown.closing, "the drain starting")
    with pytest.raises(ServerRestarting, match="try again in a minute"):
        shutdown.run(lambda: "never")
    release.set()
    caller.join()
    drainer.join()
    assert answer == {"value": "done"} and result == {"cut": 0}
    assert shutdown.drain(1) is None  # a second drain leaves the first alone


def test_drain_cuts_short_what_outlives_the_grace():
    shutdown = Shutdown()
    started, never = threading.Event(), threading.Event()

    def stuck():
        started.set()
        never.wait()

    answer = {}

    def call():
        try:
            shutdown.run(stuck)
        except JobCutShort as exc:
            answer["error"] = str(exc)

    caller = threading.Thread(target=call)
    caller.start()
    started.wait()
    drainer, result = _drain_in_background(shutdown, grace_s=0.2)
    caller.join()
    drainer.join()
    assert answer == {"error": RESTARTED} and result == {"cut": 1} and shutdown.running == 0
    never.set()


def test_drain_waits_for_the_answers_to_settle():
    shutdown = Shutdown()
    delivered = threading.Event()
    drainer, result = _drain_in_background(shutdown, grace_s=600, settled=delivered.is_set)
    wait_until(lambda: shutdown.closing, "the drain starting")
    assert drainer.is_alive()
    delivered.set()
    drainer.join()
    assert result == {"cut": 0}


def test_friendly_answers_a_stopping_server_in_plain_words():
    import gradio as gr

    from panosamic.studio.refusals import friendly

    shutdown = Shutdown()
    shutdown.drain(0)
    with pytest.raises(gr.Error) as err:
        friendly(lambda: "never", shutdown)()
    assert err.value.message == RESTARTING


# ----------------------------------------------------------------------------- the app
@pytest.fixture
def inputs(tmp_path):
    from gradio_client import handle_file

    pano = write_panorama(tmp_path)
    cv2.imwrite(str(tmp_path / "room_depth.png"), np.full((128, 256), 2500, np.uint16))
    cv2.imwrite(str(tmp_path / "room_normals.png"), np.full((128, 256, 3), 128, np.uint8))
    return [handle_file(str(p)) for p in (pano, tmp_path / "room_depth.png", tmp_path / "room_normals.png")]


def _client(app, root: Path):
    from gradio_client import Client

    return Client(app["url"], verbose=False, download_files=str(root / "downloads"))


def _log(app) -> str:
    return Path(app["log"]).read_text(errors="replace")


def test_sigterm_lets_a_running_run_finish_and_refuses_new_jobs(inputs, tmp_path):
    from gradio_client.exceptions import AppError

    args = ["--checkpoint", str(DEMO), "--device", "cpu", "--cache-mb", "0", "--shutdown-grace-s", "300"]
    with gated_app(args, tmp_path) as app:
        gate, proc = app["gate"], app["proc"]
        assert app["export_roots"]
        # a session with downloads on the server, made with the gate open
        earlier = _client(app, tmp_path)
        (gate / "go").touch()
        earlier.predict(*inputs, "local", 0, 10, api_name="/segment")
        files, _ = earlier.predict(api_name="/export")
        assert files and any(p.is_file() for root in app["export_roots"] for p in root.rglob("*"))
        (gate / "go").unlink()
        (gate / "waiting").unlink()

        busy, late = _client(app, tmp_path), _client(app, tmp_path)
        run = busy.submit(*inputs, "local", 0, 10, api_name="/segment")
        wait_until(lambda: (gate / "waiting").exists(), "the Run reaching the encoder")
        proc.send_signal(signal.SIGTERM)
        wait_until(lambda: "SIGTERM: shutting down" in _log(app), "the app logging the SIGTERM")
        for call in (lambda: late.predict(*inputs, "local", 0, 10, api_name="/segment"),
                     lambda: earlier.predict('{"points": [[10, 10]]}', api_name="/prompt")):
            with pytest.raises(AppError) as err:
                call()
            assert str(err.value) == RESTARTING
        assert not run.done()
        (gate / "go").touch()
        assert "Segmented 256×128" in run.result(timeout=120)[7]  # finished within the grace period
        assert proc.wait(timeout=120) == 0
    assert not any(root.exists() for root in app["export_roots"])
    log = _log(app)
    assert "cut short" not in log and "Traceback" not in log


def test_sigterm_cuts_a_run_short_in_plain_words(inputs, tmp_path):
    from gradio_client.exceptions import AppError

    args = ["--checkpoint", str(DEMO), "--device", "cpu", "--shutdown-grace-s", "0.5"]
    with gated_app(args, tmp_path) as app:
        run = _client(app, tmp_path).submit(*inputs, "local", 0, 10, api_name="/segment")
        wait_until(lambda: (app["gate"] / "waiting").exists(), "the Run reaching the encoder")
        app["proc"].send_signal(signal.SIGTERM)  # the gate stays closed: the Run cannot finish
        with pytest.raises(AppError) as err:
            run.result(timeout=120)
        assert str(err.value) == RESTARTED
        assert app["proc"].wait(timeout=120) == 0
    assert not any(root.exists() for root in app["export_roots"])
    assert "1 job(s) were cut short" in _log(app)


def test_a_client_from_before_a_restart_is_told_the_server_restarted(inputs, tmp_path, monkeypatch):
    """Sessions live in the server: after a restart an old client's session is simply gone, and
    "Press Run first" would puzzle someone who did. The server's start id, which the client
    got with the page, says why; a Run in the new start makes the client current again."""
    from gradio_client.exceptions import AppError

    from devtools import app_process

    port = app_process.free_port()
    monkeypatch.setattr(app_process, "free_port", lambda: port)  # both starts on one address
    args = ["--checkpoint", str(DEMO), "--device", "cpu"]
    prompt = '{"points": [[10, 10]]}'
    with running_app(args, tmp_path / "before.log") as app:
        old = _client(app, tmp_path)
        old.predict(*inputs, "local", 0, 10, api_name="/segment")
    with running_app(args, tmp_path / "after.log") as app:
        for call in (lambda: old.predict(prompt, api_name="/prompt"), lambda: old.predict(api_name="/export"),
                     lambda: old.predict(api_name="/undo")):
            with pytest.raises(AppError) as err:
                call()
            assert str(err.value) == RESTARTED_SINCE
        with pytest.raises(AppError) as err:  # a client of this start that has not run yet
            _client(app, tmp_path).predict(prompt, api_name="/prompt")
        assert str(err.value).startswith("Press Run first")
        old.predict(*inputs, "local", 0, 10, api_name="/segment")
        assert old.predict(prompt, api_name="/prompt")[5]["prompts"]["points"] == [[10.0, 10.0]]


# ----------------------------------------------------------------------------- kill -9
SERVER_STOPPED = "The server stopped; press Run again."


def test_a_client_of_a_killed_server_is_told_it_stopped(inputs, tmp_path):
    """kill -9 in the middle of a Run: nothing on the server can answer, and gradio_client raises
    a bare CancelledError (then ConnectError for the next call). The documented helpers
    (panosamic.studio.client) say "The server stopped; press Run again." for both."""
    from panosamic.studio.client import ServerStopped, predict, result

    with gated_app(["--checkpoint", str(DEMO), "--device", "cpu"], tmp_path) as app:
        c = _client(app, tmp_path)
        run = c.submit(*inputs, "local", 0, 10, api_name="/segment")
        wait_until(lambda: (app["gate"] / "waiting").exists(), "the Run reaching the encoder")
        app["proc"].kill()
        with pytest.raises(ServerStopped) as err:
            result(run, timeout=120)
        assert str(err.value) == SERVER_STOPPED
        with pytest.raises(ServerStopped) as err:  # the server is gone: the next call is refused
            predict(c, '{"points": [[10, 10]]}', api_name="/prompt")
        assert str(err.value) == SERVER_STOPPED
        assert isinstance(err.value, ConnectionError)


def test_the_client_helpers_leave_other_errors_as_they_are():
    """A job the user cancelled stays cancelled, a time-out (a busy server is still there) and
    the app's refusals pass unchanged; a refused connection is the server stopped."""
    import concurrent.futures

    import httpx

    from panosamic.studio.client import ServerStopped, result, server_stopped_in_words

    job = concurrent.futures.Future()
    job.cancel()
    with pytest.raises(concurrent.futures.CancelledError):
        result(job, timeout=1)
    for kept in (httpx.ReadTimeout("slow"), ValueError("Press Run first")):
        with pytest.raises(type(kept)):
            with server_stopped_in_words():
                raise kept
    for gone in (httpx.ConnectError("refused"), httpx.RemoteProtocolError("peer closed"),
                 concurrent.futures.CancelledError()):
        with pytest.raises(ServerStopped):
            with server_stopped_in_words():
                raise gone
