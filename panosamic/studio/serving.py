"""Gradio's side of the app's temporary files (files.py): its cache in the app's root, the
upload route, and which files each event names.

* `use_root(store)` points Gradio's cache (`GRADIO_TEMP_DIR`) at the store's root, before any
  component is made: uploads and Gradio's copies then go with the app's own files (deleted by
  session and at shutdown, and after a kill -9 by the next start).
* `UploadGuard` (ASGI middleware, `app_kwargs`) serves `POST /gradio_api/upload` in place of
  Gradio's route (and turns two client mistakes Gradio answers with a traceback, an unknown
  endpoint and two streams of one session at once, into one log line each): each request into its own folder, bounded per address (unused files and
  bytes) and by the disk budget, deleted whole when it fails (Gradio's route left its
  temporary file behind on a full disk or a dropped connection, and answered HTTP 500). A
  refusal is plain text: 507 for a full disk, 429 for too many unused uploads, 413 too large.
* `track_events(demo, store)` wraps `demo.process_api`: the files an event's inputs and
  outputs name become its client's (`TempFiles.seen`); a full disk, whichever step it hit
  (Gradio copies the outputs after the handler returned), is the plain `DISK_FULL`; input
  Gradio itself cannot read (a wrong type, a path not uploaded) is refused with one log line,
  not a traceback. When a client's unload event (a closed tab, a gradio_client closed) has
  run, Gradio's own state of that client goes too (`forget_client`).

Reads Gradio 6.31's internals (pinned in requirements.txt): its multipart parser and upload
progress, `Blocks.process_api` / `preprocess_data`, `upload_file_set` and `Blocks.state_holder`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

from .files import DISK_FULL, UPLOADS_WAITING, DiskFull, disk_full
from .messages import hide_paths

log = logging.getLogger(__name__)

#: Bytes of multipart framing allowed beyond the files' own (boundaries, headers).
FRAMING_BYTES = 64 << 10
UPLOAD_GONE = ("{name} is no longer on the server: files are deleted when their session closes. "
               "Upload it again (or pick the example again).")
UPLOAD_FROM_BEFORE_RESTART = ("The server restarted since {name} was uploaded, and its files went with the "
                              "restart: upload it again (or pick the example again) and press Run.")


def use_root(store) -> None:
    """Gradio's cache in the store's root (call before the page's components are made). Two
    of Gradio's modules read the variable when imported; their own folders (an empty
    `vibe_edit_history`, screen recordings) follow it too."""
    from gradio import route_utils, routes

    os.environ["GRADIO_TEMP_DIR"] = str(store.root)
    routes.DEFAULT_TEMP_DIR = route_utils.DEFAULT_TEMP_DIR = str(store.root)


def client_address(scope: Dict[str, Any]) -> str:
    """The address an upload counts against: the first X-Forwarded-For hop behind a proxy (a
    Space), else the peer. A forged header only buys more per-address allowances; the disk
    budget bounds them all."""
    for name, value in scope.get("headers") or []:
        if name == b"x-forwarded-for":
            first = value.decode("latin-1").split(",")[0].strip()
            if first:
                return first
    peer = scope.get("client")
    return str(peer[0]) if peer else "-"


def _paths(value: Any, out: List[str]) -> List[str]:
    """Every file path named in an event's data (FileData dicts, nested in lists and updates)."""
    if isinstance(value, dict):
        path = value.get("path")
        if isinstance(path, str):
            out.append(path)
        for v in value.values():
            if isinstance(v, (dict, list, tuple)):
                _paths(v, out)
    elif isinstance(value, (list, tuple)):
        for v in value:
            if isinstance(v, (dict, list, tuple)):
                _paths(v, out)
    return out


def _of_another_start(path: str, root: Path) -> bool:
    """Whether `path` lies in the temporary folder of an earlier start of the app (a page
    opened before a restart still names its uploads there; the new start deleted them)."""
    from .store import TMP_PREFIX

    p = Path(os.path.abspath(path))
    if p.is_relative_to(root) or not p.is_relative_to(root.parent):
        return False
    parts = p.relative_to(root.parent).parts
    return len(parts) > 1 and parts[0].startswith(TMP_PREFIX)


class UploadGuard:
    """ASGI middleware serving Gradio's upload route (see the module docstring)."""

    def __init__(self, app, store=None, demo=None):
        self.app = app
        self.store = store
        self.demo = demo

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.store is not None:
            if self.store.files._pinned is None:  # the first request: what the page was built with stays
                await asyncio.to_thread(self.store.files.pin_existing)
            if scope["method"] == "POST" and scope["path"].rstrip("/").endswith("/gradio_api/upload"):
                return await self.upload(scope, receive, send)
        try:
            return await self.app(scope, receive, send)
        except Exception as exc:  # noqa: BLE001  (re-raised unless it is one of the two below)
            from gradio.route_utils import FnIndexInferError

            if isinstance(exc, FnIndexInferError):  # POST /gradio_api/call/<a name no endpoint has>
                log.info("%s %s: no such endpoint", scope.get("method"), scope.get("path"))
                return await self._answer(scope, receive, send, 404, "No such endpoint.")
            if not isinstance(exc, RuntimeError):
                raise
            # Gradio's event stream (GET /gradio_api/call/<name>/<event id>) raises a 404 when a
            # client reads two events of one session hash at once and the first one's end took
            # the second's messages: the response had started, so Starlette can only re-raise
            # it, with a traceback. The client sees its stream end; one line says why.
            from starlette.exceptions import HTTPException

            if isinstance(exc.__cause__, HTTPException) and "response already started" in str(exc):
                log.info("%s %s: the client's stream was cut (%s)", scope.get("method"), scope.get("path"),
                         exc.__cause__.status_code)
                try:  # end the response that had started
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                except Exception:  # noqa: BLE001  (the connection is gone)
                    pass
                return None
            raise

    async def _answer(self, scope, receive, send, status: int, text: str) -> None:
        from starlette.responses import PlainTextResponse

        try:
            await PlainTextResponse(text, status_code=status)(scope, receive, send)
        except OSError:  # the client has gone
            pass

    async def upload(self, scope, receive, send) -> None:
        from gradio import route_utils, routes
        from starlette.formparsers import MultiPartException
        from starlette.requests import ClientDisconnect, Request
        from starlette.responses import JSONResponse

        files = self.store.files
        address = client_address(scope)
        headers = dict(scope.get("headers") or [])
        try:
            length = int(headers.get(b"content-length", b"0"))
        except ValueError:
            length = 0
        body = max(0, length - FRAMING_BYTES)
        refusal = files.upload_refusal(address, body)
        if refusal:
            log.info("upload refused (%s): %d bytes, too many unused uploads", address, length)
            return await self._answer(scope, receive, send, 429, refusal)
        try:
            await asyncio.to_thread(self.store.make_room, length)
        except DiskFull:
            log.warning("upload refused (%s): %d bytes, no room on disk", address, length)
            return await self._answer(scope, receive, send, 507, DISK_FULL)
        n_files, n_bytes = files.allowance(address)
        limit = n_bytes + FRAMING_BYTES
        seen = 0

        class OverAllowance(MultiPartException):
            pass

        async def counted():
            nonlocal seen
            message = await receive()
            if message.get("type") == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise OverAllowance("too many bytes")
            return message

        request = Request(scope, counted)
        upload_id = request.query_params.get("upload_id")
        progress = routes.file_upload_statuses if upload_id else None
        max_size = getattr(self.demo, "max_file_size", None)  # launch(max_file_size=...)
        max_size = float("inf") if max_size is None else max_size
        folder = await asyncio.to_thread(files.new_upload, address, body)
        parser = None
        try:
            content_type, _ = route_utils.parse_options_header(headers.get(b"content-type", b"").decode("latin-1"))
            if content_type != b"multipart/form-data":
                raise MultiPartException("Invalid content type.")
            if progress is not None:
                progress.track(upload_id)
            parser = route_utils.GradioMultiPartParser(
                request.headers, request.stream(), max_files=max(1, n_files), max_fields=1000,
                upload_dir=str(folder), max_file_size=max_size, upload_id=upload_id, upload_progress=progress)
            form = await parser.parse()
            paths = await asyncio.to_thread(self._place, form, folder)
        except BaseException as exc:
            from gradio.exceptions import InvalidPathError

            if parser is not None:
                for f in getattr(parser, "_files_to_close_on_error", []):
                    try:
                        f.close()
                    except OSError:
                        pass
            await asyncio.to_thread(files.upload_failed, folder)
            if progress is not None and progress.is_tracked(upload_id):
                progress.set_done(upload_id)
            if isinstance(exc, OverAllowance) or (isinstance(exc, MultiPartException)
                                                  and "Too many files" in exc.message):
                log.info("upload refused (%s): over the allowance for unused uploads", address)
                return await self._answer(scope, receive, send, 429, UPLOADS_WAITING)
            if isinstance(exc, MultiPartException):
                log.info("upload refused (%s): %s", address, exc.message)
                code = 413 if "maximum allowed size" in exc.message else 400
                return await self._answer(scope, receive, send, code, exc.message)
            if isinstance(exc, InvalidPathError):
                log.info("upload refused (%s): a file name that is not allowed", address)
                return await self._answer(scope, receive, send, 400, "Invalid file name.")
            if isinstance(exc, ClientDisconnect):
                log.info("upload from %s cut short by the client: its part was deleted", address)
                return None
            if isinstance(exc, Exception) and disk_full(exc):
                log.warning("upload refused (%s): the disk is full; its part was deleted", address)
                return await self._answer(scope, receive, send, 507, DISK_FULL)
            raise
        if not paths:
            await asyncio.to_thread(files.upload_failed, folder)
        else:
            files.upload_done(folder, paths)
        if self.demo is not None:
            self.demo.upload_file_set.update(paths)
        await JSONResponse(paths)(scope, receive, send)

    @staticmethod
    def _place(form, folder: Path) -> List[str]:
        """Gradio's layout for the received files: `<folder>/<sha>/<name>` (route_utils.upload_fn)."""
        from gradio import route_utils, utils
        from gradio.data_classes import DeveloperPath, UserProvidedPath
        from gradio_client import utils as client_utils

        paths = []
        for temp_file in form.getlist("files"):
            if not isinstance(temp_file, route_utils.GradioUploadFile):
                continue
            name = Path(temp_file.filename).name if temp_file.filename else "upload"
            name = client_utils.strip_invalid_filename_characters(name) or "upload"
            directory = folder / temp_file.sha.hexdigest()
            directory.mkdir(exist_ok=True)
            dest = utils.safe_join(DeveloperPath(str(directory)), UserProvidedPath(name))
            temp_file.file.close()
            os.replace(temp_file.file.name, dest)
            paths.append(str(dest))
        for leftover in folder.glob("tmp*"):  # form fields' files Gradio does not keep
            if leftover.is_file():
                leftover.unlink(missing_ok=True)
        return paths


def app_kwargs(store, demo, extra=()) -> Dict[str, Any]:
    """`demo.launch(app_kwargs=...)` with the upload route of `UploadGuard`, then each
    (middleware class, keyword arguments) of `extra` (e.g. the live preview's routes)."""
    from starlette.middleware import Middleware

    return {"middleware": [Middleware(UploadGuard, store=store, demo=demo)]
            + [Middleware(cls, **kwargs) for cls, kwargs in extra]}


def forget_client(demo, client: str) -> None:
    """Drops Gradio's state of `client` (its `SessionState`: every component's config with the
    last value each event sent it, about 1 MB a client here: the viewer's pictures as data URLs,
    the API's point cloud). Gradio marks a closed client's state and deletes only its gr.State
    values an hour later; the rest stays until 10 000 clients have come (a soak of 6 clients
    looping grew by ~3 MB of RSS per visit). Called once the client's unload event has run,
    which released the app's session of it; an event after that starts a fresh state."""
    holder = demo.state_holder
    with holder.lock:
        holder.session_data.pop(client, None)
        holder.time_last_used.pop(client, None)


def track_events(demo, store) -> None:
    """Wraps `demo.process_api` and `demo.preprocess_data` (see the module docstring)."""
    import gradio as gr

    files = store.files
    process_api = demo.process_api
    preprocess_data = demo.preprocess_data
    signature = inspect.signature(process_api)

    def refusal(text: str) -> gr.Error:
        import html

        return gr.Error(html.escape(text, quote=False), duration=None, print_exception=False)

    async def tracked_process_api(*args, **kwargs):
        bound = signature.bind_partial(*args, **kwargs).arguments
        client = bound.get("session_hash")
        block_fn = bound.get("block_fn")
        name = getattr(block_fn, "api_name", None) or getattr(block_fn, "name", None) or "event"
        if files._pinned is None:
            files.pin_existing()
        named = _paths(bound.get("inputs"), [])
        earlier = [p for p in named if _of_another_start(p, store.root)]
        if earlier:
            log.info("%s refused: an input file from before the server restarted", name)
            raise refusal(UPLOAD_FROM_BEFORE_RESTART.format(name=Path(earlier[0]).name))
        missing = files.seen(client, named)
        if missing:
            log.info("%s refused: an input file was deleted with its session", name)
            raise refusal(UPLOAD_GONE.format(name=Path(missing[0]).name))
        try:
            result = await process_api(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:
            if disk_full(exc):
                log.warning("%s refused: the disk is full (%s)", name, type(exc).__name__)
                raise refusal(DISK_FULL) from None
            raise
        finally:
            files.drop_leaks()  # gr.File's preprocess leaves an empty temporary file per input
        if isinstance(result, dict):
            files.seen(client, _paths(result.get("data"), []))
        if client and any(target[1] == "unload" for target in getattr(block_fn, "targets", ())):
            forget_client(demo, client)  # the app released its session in that event (Studio.tab_closed)
        return result

    async def checked_preprocess_data(block_fn, inputs, state, explicit_call=False):
        try:
            return await preprocess_data(block_fn, inputs, state, explicit_call)
        except gr.Error as exc:
            if not exc.print_exception:
                raise
            text = exc.message
        except Exception as exc:  # noqa: BLE001  (input Gradio cannot read: the client's mistake)
            if disk_full(exc):
                raise
            text = f"This input cannot be read ({type(exc).__name__}): {str(exc).strip().splitlines()[0][:300]}" \
                if str(exc).strip() else f"This input cannot be read ({type(exc).__name__})."
        text = hide_paths(text)
        log.info("%s refused: %s", getattr(block_fn, "api_name", None) or getattr(block_fn, "name", "event"), text)
        raise refusal(text) from None

    demo.process_api = tracked_process_api
    demo.preprocess_data = checked_preprocess_data


__all__ = ["UploadGuard", "app_kwargs", "track_events", "forget_client", "use_root", "client_address", "UPLOAD_GONE"]
