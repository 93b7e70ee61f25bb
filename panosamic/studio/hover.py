"""The live mask preview under the cursor: what the page needs to decode SAM prompts itself,
and the server's decoding of the latest hover position when it cannot.

After a Run the page gets, through the 360° viewer's payload (`HoverService.payload`), a
token and the ERP-to-model frame (`panosamic.onnx_decoder.decode_frame`). With them it fetches
(routes of `HoverRoutes`, under `PREFIX`):

- `decoder/<digest>.onnx`: SAM's prompt decoder of the session's checkpoint
  (`panosamic.onnx_decoder.cached_decoder`: exported once per checkpoint, content-addressed,
  so browsers may keep it for good);
- `<token>/embeddings`: the image embedding of view 0 and view 1 (the ones
  `Predictor.predict` decodes on) as float16, (V, P, g, g) little-endian, once per Run;
- `ort/<version>/<file>`: onnxruntime-web from the local copy `npm ci` puts in
  node_modules/onnxruntime-web/dist (on a Space without it, the page takes `ORT_CDN` with
  `ORT_INTEGRITY`, the subresource-integrity hash of the same file);
- `<token>/decode?x=&y=&seq=` (POST): the fallback when onnxruntime-web cannot load: the mask
  of a positive point at input pixel (x, y), as a click there would select it, decoded by
  `Predictor.predict` on the server. One decode at a time per session and only the latest
  position (`seq`: a request overtaken by a newer one is answered 204 without decoding); the
  page keeps at most one request in flight. The answer is the mask at the model's ERP size,
  one bit a pixel (numpy's packbits, row-major), with its size and the thread CPU seconds it
  took in headers.

Nothing here changes a session: a click still commits through the app's events, so edits,
undo and exports stay the server's.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import secrets
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

log = logging.getLogger("panosamic.studio.hover")

PREFIX = "/panosamic/hover"
#: onnxruntime-web as pinned in package.json (a test checks the two agree).
ORT_VERSION = "1.31.1"
#: The one script the page loads (the wasm build: no WebGL or WebGPU needed) and the files it
#: fetches itself; nothing else of the dist folder is served.
ORT_SCRIPT = "ort.wasm.min.js"
ORT_FILES = {ORT_SCRIPT: "text/javascript", "ort-wasm-simd-threaded.mjs": "text/javascript",
             "ort-wasm-simd-threaded.wasm": "application/wasm"}
ORT_CDN = f"https://cdn.jsdelivr.net/npm/onnxruntime-web@{ORT_VERSION}/dist/"
#: sha384 of ORT_SCRIPT as npm installs it (jsDelivr serves the npm tarball's bytes).
ORT_INTEGRITY = "sha384-tNxIwEqSlcdvKtUte98AsccPbDKM958LBXB/+3BLS42TTihXHKTWgdqPqXI/lot8"
IMMUTABLE = "public, max-age=31536000, immutable"

NO_RUN = "Press Run first: the live preview needs the panorama's embeddings."
GONE = "This session was closed: upload the panorama again (or pick the example again) and press Run again."
OLD_RUN = "The panorama was run again since: this preview belongs to the previous run."
BAD_POSITION = "The preview needs a position on the panorama: x and y in input pixels."


def integrity(path: Path) -> str:
    """The subresource-integrity value (sha384, base64) of a file."""
    return "sha384-" + base64.b64encode(hashlib.sha384(Path(path).read_bytes()).digest()).decode()


class _Latest:
    """One session's fallback decoding: the newest sequence number asked for, and a lock so that
    one decode runs at a time."""

    def __init__(self) -> None:
        self.seq = -1
        self.guard = threading.Lock()
        self.running = threading.Lock()


class HoverService:
    """Who may fetch what for the live preview: a token per (session, Run), the decoder file of
    each loaded checkpoint, and the fallback decoding.

    Args:
        predictor_for: model key -> the loaded `Predictor` (the backend's registry `get`).
        cache_dir: where exported decoders are kept (`onnx_decoder.cached_decoder`).
        ort_dir: the local copy of onnxruntime-web's dist folder, or None; when it lacks
            `ORT_SCRIPT` the page is sent to the CDN.
        cdn: the CDN folder of onnxruntime-web ('' = none: the page falls back to the server).
    """

    def __init__(self, predictor_for: Callable[[Any], Any], cache_dir: Optional[str] = None,
                 ort_dir: Optional[Path] = None, cdn: str = ORT_CDN) -> None:
        self.predictor_for = predictor_for
        self.cache_dir = cache_dir
        self.ort_dir = Path(ort_dir) if ort_dir and (Path(ort_dir) / ORT_SCRIPT).is_file() else None
        self.cdn = cdn
        self._lock = threading.Lock()
        self._sessions: "weakref.WeakValueDictionary[str, Any]" = weakref.WeakValueDictionary()
        self._tokens: "weakref.WeakKeyDictionary[Any, Tuple[int, str]]" = weakref.WeakKeyDictionary()
        self._states: Dict[str, Any] = {}  # token -> weakref of the state it was made for
        self._latest: Dict[str, _Latest] = {}
        self._digests: Dict[Any, str] = {}  # model key -> decoder digest
        self._keys: Dict[str, Any] = {}     # decoder digest -> a model key that has it

    # ------------------------------------------------------------------ the page's payload
    def payload(self, s) -> Optional[Dict[str, Any]]:
        """What the page needs for session `s` (None before Run): token, frame, the URLs and
        where onnxruntime-web comes from. Small (well under 1 KB): the embeddings and the
        decoder are fetched by the page, once per Run and once per checkpoint."""
        state = getattr(s, "state", None)
        if state is None or s.closed:
            return None
        from ..onnx_decoder import decode_frame, decoder_digest

        predictor = self.predictor_for(s.model_key)
        model = predictor.model
        with self._lock:
            known = self._tokens.get(s)
            if known is not None and known[0] == id(state) and self._states[known[1]]() is state:
                token = known[1]
            else:
                token = secrets.token_urlsafe(18)
                self._tokens[s] = (id(state), token)
                self._sessions[token] = s
                self._states[token] = weakref.ref(state)
                self._latest[token] = _Latest()
                self._forget_dead()
            digest = self._digests.get(s.model_key)
        if digest is None:
            digest = decoder_digest(model)
            with self._lock:
                self._digests[s.model_key] = digest
                self._keys[digest] = s.model_key
        frame = decode_frame(model, s.input_size)
        frame["working_size"] = list(s.shape)
        V = frame["num_views"]
        P, g, _ = frame["embedding_shape"]
        ort = {"version": ORT_VERSION, "script": ORT_SCRIPT,
               "local": f"{PREFIX}/ort/{ORT_VERSION}/" if self.ort_dir else None,
               "cdn": self.cdn or None, "integrity": ORT_INTEGRITY}
        return {"token": token, "frame": frame, "decoder": f"{PREFIX}/decoder/{digest}.onnx",
                "embeddings": f"{PREFIX}/{token}/embeddings", "decode": f"{PREFIX}/{token}/decode",
                "embedding_bytes": V * P * g * g * 2, "ort": ort}

    def _forget_dead(self) -> None:
        for token in [t for t, ref in self._states.items() if ref() is None or t not in self._sessions]:
            self._states.pop(token, None)
            self._latest.pop(token, None)

    def _session(self, token: str):
        """(session, state) of a token, or an InputError saying why there is none."""
        from ..errors import InputError

        with self._lock:
            s = self._sessions.get(token)
            ref = self._states.get(token)
        if s is None or ref is None:
            raise InputError(NO_RUN)
        if s.closed or s.state is None:
            raise InputError(GONE)
        state = ref()
        if state is None or state is not s.state:
            raise InputError(OLD_RUN)
        return s, state

    # ------------------------------------------------------------------ what the routes serve
    def embeddings(self, token: str) -> bytes:
        """View 0 and view 1's image embeddings of the token's Run, float16 (V, P, g, g)."""
        from ..onnx_decoder import view_embeddings

        s, state = self._session(token)
        model = self.predictor_for(s.model_key).model
        return view_embeddings(state.embeddings, model.num_views, len(model.modalities)).tobytes()

    def decoder_file(self, digest: str) -> Optional[Path]:
        """The exported decoder of that digest (exported now if needed), or None if no loaded
        checkpoint has it."""
        from ..onnx_decoder import cached_decoder

        with self._lock:
            key = self._keys.get(digest)
        if key is None:
            return None
        path = cached_decoder(self.predictor_for(key).model, self.cache_dir)
        return path if path.stem == digest else None

    def ort_file(self, version: str, name: str) -> Optional[Path]:
        if self.ort_dir is None or version != ORT_VERSION or name not in ORT_FILES:
            return None
        path = self.ort_dir / name
        return path if path.is_file() else None

    def decode(self, token: str, x: Any, y: Any, seq: Any) -> Optional[Tuple[bytes, Dict[str, str]]]:
        """The fallback: the mask a click at input pixel (x, y) would select, or None when a
        newer position of this session arrived meanwhile (see the module docstring)."""
        from ..errors import InputError

        try:
            x, y, seq = float(x), float(y), int(seq)
        except (TypeError, ValueError):
            raise InputError(BAD_POSITION) from None
        if not (np.isfinite(x) and np.isfinite(y)):
            raise InputError(BAD_POSITION)
        s, state = self._session(token)
        with self._lock:
            latest = self._latest.setdefault(token, _Latest())
        with latest.guard:
            latest.seq = max(latest.seq, seq)
        with latest.running:
            with latest.guard:
                if seq < latest.seq:
                    return None
            predictor = self.predictor_for(s.model_key)
            size = tuple(predictor.model.erp_size)
            cpu0, t0 = time.thread_time(), time.perf_counter()
            masks, scores, _ = predictor.predict(point_coords=np.array([[x, y]], np.float32),
                                                 point_labels=np.array([1]), multimask_output=True,
                                                 output_size=size, state=state)
            best = masks[int(np.argmax(scores))]
            bits = np.packbits(best.astype(bool), axis=None).tobytes()
            cpu, wall = time.thread_time() - cpu0, time.perf_counter() - t0
        headers = {"X-Mask-Size": f"{size[0]}x{size[1]}", "X-Decode-Cpu-Ms": f"{1000 * cpu:.2f}",
                   "X-Decode-Ms": f"{1000 * wall:.2f}", "Cache-Control": "no-store"}
        return bits, headers


class HoverRoutes:
    """ASGI middleware serving `HoverService`'s routes under `PREFIX` (everything else passes
    through to Gradio). Refusals are one plain line (JSON {"error": ...}), never a path."""

    def __init__(self, app, service: Optional[HoverService] = None):
        self.app = app
        self.service = service

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self.service is None or not scope["path"].startswith(PREFIX + "/"):
            return await self.app(scope, receive, send)
        from starlette.requests import Request
        from starlette.responses import FileResponse, JSONResponse, Response

        from ..errors import InputError

        request = Request(scope, receive)
        parts = scope["path"][len(PREFIX) + 1:].split("/")
        svc = self.service
        try:
            if request.method == "GET" and len(parts) == 3 and parts[0] == "ort":
                path = svc.ort_file(parts[1], parts[2])
                response = (FileResponse(path, media_type=ORT_FILES[parts[2]], headers={"Cache-Control": IMMUTABLE})
                            if path else _refuse(404, "onnxruntime-web is not installed here: run `npm ci`."))
            elif request.method == "GET" and len(parts) == 2 and parts[0] == "decoder" and parts[1].endswith(".onnx"):
                path = await asyncio.to_thread(svc.decoder_file, parts[1][:-5])
                response = (FileResponse(path, media_type="application/octet-stream",
                                         headers={"Cache-Control": IMMUTABLE}) if path
                            else _refuse(404, "No loaded checkpoint has this decoder: press Run again."))
            elif request.method == "GET" and len(parts) == 2 and parts[1] == "embeddings":
                data = await asyncio.to_thread(svc.embeddings, parts[0])
                response = Response(data, media_type="application/octet-stream",
                                    headers={"Cache-Control": "private, no-store"})
            elif request.method == "POST" and len(parts) == 2 and parts[1] == "decode":
                q = request.query_params
                answer = await asyncio.to_thread(svc.decode, parts[0], q.get("x"), q.get("y"), q.get("seq", 0))
                response = (Response(status_code=204) if answer is None
                            else Response(answer[0], media_type="application/octet-stream", headers=answer[1]))
            else:
                response = _refuse(404, "No such preview route.")
        except InputError as exc:
            response = _refuse(410 if str(exc) in (GONE, OLD_RUN) else 400, str(exc))
        except Exception:  # noqa: BLE001  (logged here; the page gets one line, no trace, no path)
            log.exception("live preview request %s %s failed", request.method, parts[-1:])
            response = JSONResponse({"error": "The live preview failed on the server: click to select instead."},
                                    status_code=500)
        await response(scope, receive, send)


def _refuse(status: int, text: str):
    from starlette.responses import JSONResponse

    return JSONResponse({"error": text}, status_code=status)


def payload_json(payload: Optional[Dict[str, Any]]) -> str:
    """The payload as the page's JSON (for logs and tests)."""
    return json.dumps(payload, separators=(",", ":"))
