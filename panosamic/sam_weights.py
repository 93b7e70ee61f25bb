"""Meta's SAM checkpoints: by preset name, local path or URL, downloaded once into a cache folder.

A PanoSAMic model takes its `image_encoder.*`, `prompt_encoder.*` and `mask_decoder.*` weights
from Meta's SAM checkpoint (a torch-pickled state dict). `resolve_sam_checkpoint` turns a preset
name (`vit_b`, `vit_l`, `vit_h`), a path or a URL into a local file; downloads go through
`torch.hub.download_url_to_file` into `sam_cache_dir()` and are checked against the SHA-256
prefix the file name carries, or, when the name carries none, checked to be a SAM checkpoint at
all. Every failure raises `WeightsError` with what to do.

torch writes a download to `<name>.<hex>.partial` beside its destination and removes it on any
failure it sees; a process killed mid-download (SIGKILL, out of memory, a container stopped)
leaves it behind, up to 2.4 GB for vit_h. `remove_stale_partials` deletes those at the next
download (and the app's start), but never one a live process is writing: a download holds a
shared flock on its folder, and partials go only under the exclusive one.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import socket
import threading
import urllib.error
import urllib.parse
import zipfile
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Union

try:
    import fcntl
except ImportError:  # Windows: no flock; partial files are then left alone
    fcntl = None  # type: ignore[assignment]

from .errors import WeightsError

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

SAM_CHECKPOINTS: Dict[str, str] = {
    "vit_b": "sam_vit_b_01ec64.pth",
    "vit_l": "sam_vit_l_0b3195.pth",
    "vit_h": "sam_vit_h_4b8939.pth",
}
SAM_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
SAM_BASE_URL_ENV = "PANOSAMIC_SAM_BASE_URL"
SAM_CACHE_ENV = "PANOSAMIC_SAM_CACHE"

# Meta's file names end in the first 6 hex digits of the file's SHA-256.
_SHA_IN_NAME = re.compile(r"_([0-9a-f]{6})\.pth$")
# torch.hub's download has no timeout argument: it uses the socket default, set around the call.
_TIMEOUT_LOCK = threading.Lock()
# torch.hub.download_url_to_file's temporary file: `<destination>.<uuid4 hex>.partial`.
_PARTIAL = re.compile(r"\.[0-9a-f]{32}\.partial$")


def sam_cache_dir() -> Path:
    """Folder where SAM checkpoints are downloaded: `$PANOSAMIC_SAM_CACHE`, else `~/.cache/panosamic/sam/`.

    Read on every call (not at import), so changing the variable takes effect at once.
    """
    env = os.environ.get(SAM_CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "panosamic" / "sam"


def sam_base_url() -> str:
    """Base URL of SAM downloads: `$PANOSAMIC_SAM_BASE_URL` (a mirror), else Meta's server."""
    base = os.environ.get(SAM_BASE_URL_ENV) or SAM_BASE_URL
    return base if base.endswith("/") else base + "/"


def _is_url(spec: str) -> bool:
    return urllib.parse.urlparse(spec).scheme in ("http", "https", "ftp", "file")


def _url_and_name(text: str) -> Optional[tuple]:
    """(URL, cache file name) of a preset name or URL; None for anything else."""
    if text in SAM_CHECKPOINTS:
        return sam_base_url() + SAM_CHECKPOINTS[text], SAM_CHECKPOINTS[text]
    if _is_url(text):
        return text, os.path.basename(urllib.parse.unquote(urllib.parse.urlparse(text).path))
    return None


def resolve_sam_checkpoint(spec: PathLike, progress: bool = True) -> Path:
    """Local path of a SAM checkpoint, downloading it if needed.

    `spec` is one of:
    - an existing file path: returned as is;
    - a name `vit_b` / `vit_l` / `vit_h`: the cached file in `sam_cache_dir()`, else downloaded
      from `sam_base_url()` into it;
    - an http(s) URL: cached under the URL's file name in `sam_cache_dir()`, downloaded if absent.

    See `download_file` for how downloads are checked. Raises WeightsError otherwise.
    """
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    source = _url_and_name(text)
    if source is None:
        if path.is_dir():
            raise WeightsError(f"{path} is a folder; pass the SAM checkpoint file inside it (e.g. sam_vit_h_4b8939.pth)")
        raise WeightsError(
            f"SAM checkpoint {text!r} not found: pass an existing .pth file, a URL, or one of "
            f"{', '.join(SAM_CHECKPOINTS)} to download Meta's checkpoint"
        )
    url, name = source
    if not name:
        raise WeightsError(f"cannot tell a file name from the URL {text!r}: give a URL that ends in the file name")
    dest = sam_cache_dir() / name
    if dest.is_file():
        if _SHA_IN_NAME.search(name) or _not_a_sam_checkpoint(dest) is None:
            return dest
        dest.unlink(missing_ok=True)  # cached unchecked by an earlier version (an error page): fetched again
    download_file(url, dest, progress=progress)
    return dest


def local_sam_checkpoint(spec: Any) -> Optional[Path]:
    """The local file a SAM spec names, without downloading (None if it would need a download,
    or `spec` is None or a state dict)."""
    if spec is None or isinstance(spec, Mapping):
        return None
    text = os.fspath(spec)
    if Path(text).expanduser().is_file():
        return Path(text).expanduser()
    source = _url_and_name(text)
    if source is None or not source[1]:
        return None
    cached = sam_cache_dir() / source[1]
    return cached if cached.is_file() else None


def _folder_lock(folder: Path) -> Optional[int]:
    """A descriptor of `folder` to flock (the folder itself: no lock file is left behind), or
    None without flock or when the folder cannot be opened."""
    if fcntl is None:
        return None
    try:
        return os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return None


def _remove_partials_locked(fd: int, folder: Path) -> int:
    """Deletes `folder`'s partial downloads if no download runs there (the exclusive flock is
    free); returns how many went. Leaves `fd` unlocked."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # a live download holds the folder: its partial is being written
        return 0
    removed = 0
    try:
        for path in folder.iterdir():
            if _PARTIAL.search(path.name) and path.is_file():
                size = path.stat().st_size
                path.unlink(missing_ok=True)
                removed += 1
                log.info("removed %s (%d MB), left by a download that was cut short", path.name, size >> 20)
    except OSError:
        pass
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
    return removed


def remove_stale_partials(folder: Optional[PathLike] = None) -> int:
    """Deletes the partial downloads (`<name>.<hex>.partial`) that killed processes left in
    `folder` (default `sam_cache_dir()`), unless a download runs there now; returns how many."""
    folder = Path(folder) if folder is not None else sam_cache_dir()
    fd = _folder_lock(folder)
    if fd is None:
        return 0
    try:
        return _remove_partials_locked(fd, folder)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _downloading_into(folder: Path) -> Iterator[None]:
    """Around a download into `folder`: the partials of dead downloads go first, then a shared
    flock on the folder, held until the download ends, keeps this one's partial from any other
    process's clean-up (the kernel drops it when the process dies, however it dies)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:  # the download says so, with what to do
        pass
    fd = _folder_lock(folder)
    try:
        if fd is not None:
            _remove_partials_locked(fd, folder)
            fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while another process clears the folder
        yield
    finally:
        if fd is not None:
            os.close(fd)


def _guard_partials(download: Callable[..., Path]) -> Callable[..., Path]:
    """`download(url, dest, ...)` inside `_downloading_into(dest's folder)`: every download holds its
    folder, whoever calls `download_file`."""

    @functools.wraps(download)
    def guarded(url: str, dest: PathLike, *args: Any, **kwargs: Any) -> Path:
        with _downloading_into(Path(dest).expanduser().parent):
            return download(url, dest, *args, **kwargs)

    return guarded


@_guard_partials
def download_file(url: str, dest: PathLike, progress: bool = True, timeout: float = 30.0) -> Path:
    """Downloads `url` to `dest` with `torch.hub.download_url_to_file`, checking the SHA-256
    prefix a `_<6 hex>.pth` name carries.

    torch writes to a temporary file and moves it to a staging name beside `dest` only when
    complete (and, with a prefix, when the hash matches); the file gets the name `dest` only
    once it is checked, and any failure, Ctrl-C included, removes it. `timeout` (seconds) bounds
    each network wait. When the name carries no hash, a zip checkpoint (every torch >= 1.6 file,
    every SAM release) that the server cut short is caught, and so is anything that is not a
    SAM checkpoint (an HTML error or sign-in page, another model's weights): a mirror answers
    200 with such pages, and a cached page would be trusted on every later call.
    """
    dest = Path(dest)
    manual = (
        f"If this machine has no internet access, download {url} elsewhere and put it at "
        f"{dest.resolve()} , or pass the path of a local copy instead (e.g. sam='/path/to/{dest.name}')."
    )
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WeightsError(f"cannot create the download folder {dest.parent} ({e}); set {SAM_CACHE_ENV} "
                           "to a writable folder") from None
    match = _SHA_IN_NAME.search(dest.name)
    expected_sha = match.group(1) if match else None
    if progress:  # torch's bar has no title: say what is coming
        import sys

        print(f"Downloading {dest.name} from {url}", file=sys.stderr)
    staging = dest.with_name(f".{dest.name}.{os.getpid()}-{threading.get_ident()}.unchecked")
    try:
        _download(url, staging, expected_sha, progress, timeout, manual, dest)
        if _truncated_zip(staging):
            raise WeightsError(f"downloading {url} stopped early (the connection closed; the file is incomplete); "
                               f"nothing was saved. Try again. {manual}")
        what = None if expected_sha else _not_a_sam_checkpoint(staging)
        if what is not None:
            raise WeightsError(
                f"downloading {url} gave {what}, not a SAM checkpoint (a PyTorch file holding image_encoder.* "
                f"weights); nothing was saved. Check that the URL points at the .pth file itself, or use one of "
                f"{', '.join(SAM_CHECKPOINTS)} to download Meta's checkpoint. {manual}")
        os.replace(staging, dest)
    finally:
        staging.unlink(missing_ok=True)
    return dest


def _download(url: str, path: Path, expected_sha: Optional[str], progress: bool, timeout: float, manual: str,
              dest: Path) -> None:
    """torch.hub.download_url_to_file(url, path) with its failures as WeightsError (see download_file)."""
    import torch.hub

    try:
        with _TIMEOUT_LOCK:
            previous = socket.getdefaulttimeout()
            socket.setdefaulttimeout(timeout)
            try:
                torch.hub.download_url_to_file(url, str(path), hash_prefix=expected_sha, progress=progress)
            finally:
                socket.setdefaulttimeout(previous)
    except urllib.error.HTTPError as e:
        raise WeightsError(f"downloading {url} failed: the server answered {e.code} {e.reason}. {manual}") from None
    except (urllib.error.URLError, OSError) as e:  # refused, DNS, timeout, reset, disk full
        reason = getattr(e, "reason", None) or e
        raise WeightsError(f"downloading {url} failed ({reason}). {manual}") from None
    except RuntimeError as e:
        if "hash" not in str(e):
            raise
        # Also what a download cut short looks like: http.client does not report early closes.
        raise WeightsError(
            f"downloading {url} failed: the file is incomplete or not the expected one (its SHA-256 does not "
            f"start with {expected_sha}, as its name says); nothing was saved. Try again, or download it "
            f"yourself and put it at {dest.resolve()}"
        ) from None


def _not_a_sam_checkpoint(path: Path) -> Optional[str]:
    """None for a file that is a SAM checkpoint as torch.save writes it: a zip whose data.pkl
    names image_encoder.* tensors (its bytes are searched, not unpickled: a few kB to read, even
    for ViT-H's 2.4 GB). Otherwise what the file is, in words, for the message."""
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            index = next((n for n in archive.namelist() if n == "data.pkl" or n.endswith("/data.pkl")), None)
            if index is None:
                return f"a zip archive of {size:,} bytes that is not a PyTorch checkpoint"
            with archive.open(index) as f:
                pickled = f.read(64 << 20)
    except (zipfile.BadZipFile, OSError):
        with open(path, "rb") as f:
            head = f.read(1024).lstrip().lower()
        if head.startswith(b"<"):
            return f"an HTML page of {size:,} bytes (an error or sign-in page?)"
        return f"{size:,} bytes that are not a PyTorch zip file"
    if b"image_encoder." not in pickled:
        return "a PyTorch checkpoint without SAM's image_encoder.* weights"
    return None


def _truncated_zip(path: Path) -> bool:
    """True for a file that starts like a zip archive but lacks the directory at its end."""
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04" and not zipfile.is_zipfile(path)
