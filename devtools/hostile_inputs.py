"""Hostile and broken inputs, built cheaply, for the hardening tests and `devtools.hostile_load`.

`write_hostile_files(folder)` writes one file of each kind and returns
{kind: HostileFile(path, role, expect)}: `role` is the input it is sent as (panorama, depth,
normals) and `expect` a fragment of the plain message that must refuse it.
`HOSTILE_PROMPTS` and `HOSTILE_CHECKPOINTS` are what a client may send instead of a prompt or
a checkpoint name; `hostile_calls(url, good)` the ways a script may misuse the HTTP API.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict

import numpy as np

HUGE_W, HUGE_H = 30000, 15000  # 450 M pixels: 900 MB as 16-bit grey


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int, bit_depth: int = 16, colour_type: int = 0) -> bytes:
    """A genuine PNG of width x height zero pixels (grey by default, 16-bit), compressed about
    1000:1: 30000x15000 at 16 bits is 900 MB of pixels in an 877 KB file. Built in well under a
    second by repeating one fully flushed deflate block."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
    row = b"\0" * (1 + width * channels * bit_depth // 8)  # filter byte 0, then the samples
    rows = max(1, min(height, (1 << 20) // len(row)))  # about 1 MB per block
    comp = zlib.compressobj(9)
    block = comp.compress(row * rows) + comp.flush(zlib.Z_FULL_FLUSH)
    again = comp.compress(row * rows) + comp.flush(zlib.Z_FULL_FLUSH)  # the same block, no zlib header
    full, rest = divmod(height, rows)
    stream = block + again * (full - 1)
    if rest:
        stream += comp.compress(row * rest) + comp.flush(zlib.Z_FULL_FLUSH)
    total = height * len(row)
    adler = ((total % 65521) << 16) | 1  # the Adler-32 of `total` zero bytes
    stream += b"\x03\x00" + adler.to_bytes(4, "big")  # an empty final block, then the checksum
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", stream) + _png_chunk(b"IEND", b"")


def png_claiming(width: int, height: int, bit_depth: int = 16, junk_bytes: int = 875_000) -> bytes:
    """A 16-bit grey PNG header claiming width x height, followed by `junk_bytes` of random IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    junk = np.random.default_rng(0).integers(0, 256, junk_bytes, dtype=np.uint8).tobytes()
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", junk) + _png_chunk(b"IEND", b"")


def bmp_claiming(width: int, height: int) -> bytes:
    """A 24-bit BMP header claiming width x height (no pixel data)."""
    dib = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + dib


def exr_claiming(width: int, height: int) -> bytes:
    """A single-part scanline OpenEXR header (one float channel "Y") claiming width x height."""
    def attr(name: bytes, kind: bytes, value: bytes) -> bytes:
        return name + b"\0" + kind + b"\0" + struct.pack("<i", len(value)) + value

    chlist = b"Y\0" + struct.pack("<iB3xii", 2, 0, 1, 1) + b"\0"
    box = struct.pack("<4i", 0, 0, width - 1, height - 1)
    header = (attr(b"channels", b"chlist", chlist) + attr(b"compression", b"compression", b"\0")
              + attr(b"dataWindow", b"box2i", box) + attr(b"displayWindow", b"box2i", box)
              + attr(b"lineOrder", b"lineOrder", b"\0") + attr(b"pixelAspectRatio", b"float", struct.pack("<f", 1))
              + attr(b"screenWindowCenter", b"v2f", struct.pack("<2f", 0, 0))
              + attr(b"screenWindowWidth", b"float", struct.pack("<f", 1)) + b"\0")
    return b"\x76\x2f\x31\x01" + struct.pack("<I", 2) + header


def npy_claiming(shape, dtype: Any = "<f4", data_bytes: int = 64) -> bytes:
    """A .npy header claiming `shape` of `dtype`, followed by only `data_bytes` bytes."""
    import io

    from numpy.lib import format as npformat

    buf = io.BytesIO()
    npformat.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue() + b"\0" * data_bytes


@dataclass(frozen=True)
class HostileFile:
    path: Path
    role: str     # "panorama", "depth" or "normals"
    expect: str   # a fragment of the message that refuses it


def write_panorama(folder: Path, width: int = 256) -> Path:
    """A plain valid panorama (random RGB, width x width/2 PNG) to pair with hostile maps."""
    import cv2

    path = Path(folder) / "room_rgb.png"
    rgb = np.random.default_rng(1).integers(0, 256, (width // 2, width, 3), dtype=np.uint8)
    cv2.imwrite(str(path), rgb)
    return path


def write_hostile_files(folder: Path, width: int = 256) -> Dict[str, HostileFile]:
    """One file of each hostile kind in `folder` (maps sized for a width x width/2 panorama)."""
    import cv2

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    h, w = width // 2, width
    files: Dict[str, HostileFile] = {}

    def put(kind: str, name: str, data: bytes, role: str, expect: str) -> None:
        path = folder / name
        path.write_bytes(data)
        files[kind] = HostileFile(path, role, expect)

    limit = "larger than the limit of 8192x4096"
    put("depth_png_bomb", "bomb_depth.png", png_bomb(HUGE_W, HUGE_H), "depth", limit)
    put("depth_png_claiming", "claim_depth.png", png_claiming(HUGE_W, HUGE_H), "depth", limit)
    put("normals_png_bomb", "bomb_normals.png", png_bomb(HUGE_W, HUGE_H, 8, 2), "normals", limit)
    put("panorama_png_bomb", "bomb_rgb.png", png_bomb(HUGE_W, HUGE_H // 2, 1, 0), "panorama", limit)
    put("panorama_bmp_pil_bomb", "huge_rgb.bmp", bmp_claiming(HUGE_W, HUGE_H), "panorama", limit)
    put("normals_bmp_over_limit", "wide_normals.bmp", bmp_claiming(9000, 4500), "normals", limit)
    put("depth_exr_claiming", "claim_depth.exr", exr_claiming(HUGE_W, HUGE_H), "depth", limit)
    put("depth_npy_claiming", "claim_depth.npy", npy_claiming((HUGE_H, HUGE_W)), "depth", limit)
    put("depth_npy_truncated", "short_depth.npy", npy_claiming((h, w), data_bytes=h * w * 2), "depth", "truncated")
    put("depth_npy_structured", "struct_depth.npy", npy_claiming((h, w), dtype=[("a", "<f4")]), "depth",
        "plain numbers")
    pickled = folder / "pickle_depth.npy"
    np.save(pickled, np.array([{"x": 1}] * 4, dtype=object), allow_pickle=True)
    files["depth_npy_pickle"] = HostileFile(pickled, "depth", "plain numbers")
    for kind, value in (("nan", np.nan), ("inf", np.inf), ("negative", -2.0)):
        path = folder / f"all_{kind}_depth.npy"
        np.save(path, np.full((h, w), value, np.float32))
        files[f"depth_all_{kind}"] = HostileFile(path, "depth", "no valid pixel")
    zero = folder / "zero_depth.png"
    cv2.imwrite(str(zero), np.zeros((h, w), np.uint16))
    files["depth_all_zero"] = HostileFile(zero, "depth", "no valid pixel")
    eight = folder / "eight_depth.png"
    cv2.imwrite(str(eight), np.full((h, w), 9, np.uint8))
    files["depth_8bit"] = HostileFile(eight, "depth", "8-bit")
    ok, buf = cv2.imencode(".png", np.random.default_rng(2).integers(0, 256, (h, w, 3), dtype=np.uint8))
    put("panorama_truncated", "cut_rgb.png", buf.tobytes()[: len(buf) // 2], "panorama", "cannot be decoded")
    put("panorama_text", "notes_rgb.png", b"this is not a picture\n" * 10, "panorama", "not an image file")
    return files


#: Prompt JSON a client may send instead of a prompt, each refused with a plain message.
HOSTILE_PROMPTS: Dict[str, str] = {
    "points_100k": json.dumps({"points": [[1, 1]] * 100_000}),
    "points_10k_compact": json.dumps({"points": [[1, 1]] * 10_000})[:19_000],
    "points_65": json.dumps({"points": [[1, 1]] * 65, "labels": [1] * 65}),
    "points_number": json.dumps({"points": 5}),
    "labels_text": json.dumps({"points": [[1, 1]], "labels": ["yes"]}),
    "labels_nested": json.dumps({"points": [[1, 1]], "labels": [[1]]}),
    "nested_deep": "[" * 15_000 + "]" * 4_000,
    "nested_dict_deep": '{"points": ' + "[" * 9_000 + "]" * 9_000 + "}",
    "nan_point": '{"points": [[NaN, 1]]}',
    "huge_number": '{"points": [[1e400, 1]]}',
    "two_boxes": json.dumps({"box": [[1, 2, 3, 4], [5, 6, 7, 8]]}),
    "box_text": json.dumps({"box": "0 0 10 10"}),
    "not_object": json.dumps([1, 2, 3]),
    "unknown_key": json.dumps({"pointz": [[1, 1]]}),
    "append_text": json.dumps({"points": [[1, 1]], "append": "yes"}),
    "lonlat_out_of_range": json.dumps({"points_lonlat": [[400, 0]]}),
    "broken_json": '{"points": [[1, 1]',
}

#: Checkpoint values outside the allowed set: none may reach the file system or load anything.
HOSTILE_CHECKPOINTS = ["/etc", "/tmp", "local/../../etc", "../assets/demo", "demo/../..", "local/..",
                       "C:\\Windows", "~/.cache/huggingface", "..", "a" * 300, "x/y/z", "local//etc",
                       "file:///etc/passwd", "https://example.com/model", " /etc ", "demo\0", "local/.git"]


def hostile_calls(url: str, good: Dict[str, str]) -> Dict[str, Any]:
    """{kind: call} of hostile ways to use the app's HTTP API (what a script, not the page, can
    send): calls out of order, values of the wrong type, a path nobody uploaded, two streams of
    one session at once, uploads that are malformed or cut short. Each call returns
    (HTTP status, text): 200 with the result, or the refusal. `good`: {"pano", "depth",
    "normals"} paths on the server (uploaded) for calls that need real files."""
    import socket
    import threading
    import time

    import httpx

    base = url.rstrip("/")
    host, port = base.split("//", 1)[1].split("/")[0].rsplit(":", 1)
    http = httpx.Client(timeout=120)

    endpoints = http.get(f"{base}/gradio_api/info").json()["named_endpoints"]

    def fd(path: str) -> Dict[str, Any]:
        return {"path": path, "meta": {"_type": "gradio.FileData"}}

    def call(name: str, data: Any, session: str = "hostile-fresh", fill: bool = True) -> Any:
        params = endpoints.get("/" + name, {}).get("parameters", [])
        if fill and len(data) < len(params):  # the rest: their defaults, as gradio_client does
            data = data + [q.get("parameter_default") for q in params[len(data):]]
        r = http.post(f"{base}/gradio_api/call/{name}", json={"data": data, "session_hash": session})
        if r.status_code != 200:
            return r.status_code, r.text
        event, text = None, ""
        deadline = time.monotonic() + 30  # Gradio's stream may hang on misuse (heartbeats only)
        try:
            with http.stream("GET", f"{base}/gradio_api/call/{name}/{r.json()['event_id']}") as stream:
                for line in stream.iter_lines():
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:") and event in ("complete", "error"):
                        text = line[5:].strip()
                        break
                    if time.monotonic() > deadline:
                        return 0, "stream still open after 30 s"
        except httpx.HTTPError as exc:  # the server cut the stream (two of one session at once)
            return 0, f"stream cut: {type(exc).__name__}"
        return (200 if event == "complete" else 400), text

    def raw(request: bytes) -> Any:
        s = socket.create_connection((host, int(port)), timeout=10)
        try:
            s.sendall(request)
            s.shutdown(socket.SHUT_WR)  # cut short: the announced body never comes
            return 0, s.recv(4096).decode("latin-1", "replace")[:200]
        except OSError as exc:
            return 0, str(exc)
        finally:
            s.close()

    def twice(name: str) -> Any:
        out: list = []
        session = f"hostile-twice-{time.monotonic_ns()}"
        threads = [threading.Thread(target=lambda: out.append(call(name, [], session))) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return max(out)

    # the endpoints' leading values as the HTTP API takes them (gr.State left out; the rest:
    # their defaults, as gradio_client fills them in)
    seg = [fd(good["pano"]), fd(good["depth"]), fd(good["normals"]), "local", 0, 10]
    part = b'--zz\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n\r\n' + b"x" * 50_000
    return {
        "order:export_first": lambda: call("export", []),
        "order:undo_first": lambda: call("undo", []),
        "order:assign_first": lambda: call("assign", ["wall", 0]),
        "order:prompt_first": lambda: call("prompt", ['{"points": [[1, 1]]}']),
        "type:too_few_values": lambda: call("segment", [1], fill=False),
        "type:text_for_a_file": lambda: call("segment", ["hello", *seg[1:]]),
        "type:file_without_path": lambda: call("segment", [{"meta": {"_type": "gradio.FileData"}}, *seg[1:]]),
        "type:path_not_uploaded": lambda: call("segment", [fd("/etc/passwd"), *seg[1:]]),
        "type:text_for_a_number": lambda: call("segment", [*seg[:4], "abc", *seg[5:]]),
        "type:dict_for_a_prompt": lambda: call("prompt", [{"points": [[1, 1]]}]),
        "http:bad_json": lambda: (lambda r: (r.status_code, r.text))(
            http.post(f"{base}/gradio_api/call/prompt", content=b"{not json",
                      headers={"content-type": "application/json"})),
        "http:unknown_endpoint": lambda: call("no_such_endpoint", []),
        "http:two_exports_one_stream_each": lambda: twice("export"),
        "upload:not_multipart": lambda: (lambda r: (r.status_code, r.text))(
            http.post(f"{base}/gradio_api/upload", content=b"x", headers={"content-type": "text/plain"})),
        "upload:bad_multipart": lambda: (lambda r: (r.status_code, r.text))(
            http.post(f"{base}/gradio_api/upload", content=b"garbage",
                      headers={"content-type": "multipart/form-data; boundary=zz"})),
        "upload:cut_short": lambda: raw(b"POST /gradio_api/upload HTTP/1.1\r\nHost: x\r\n"
                                        b"Content-Type: multipart/form-data; boundary=zz\r\n"
                                        b"Content-Length: 1000000\r\n\r\n" + part),
        "upload:evil_name": lambda: (lambda r: (r.status_code, "stored as " + "/".join(
            Path(p).name for p in r.json()) if r.status_code == 200 else r.text))(
            http.post(f"{base}/gradio_api/upload", files=[("files", ("../../etc/x.png", b"x"))])),
        "http:join_cut_short": lambda: raw(b"POST /gradio_api/queue/join HTTP/1.1\r\nHost: x\r\n"
                                           b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"data\": ["),
    }
