"""Finding, downloading, reading and loading PanoSAMic weights.

A PanoSAMic model is made from two files (see `shared/docs/panosamic-model.md`, "Weights"):

1. Meta's SAM checkpoint (a torch-pickled state dict) for `image_encoder.*`,
   `prompt_encoder.*` and `mask_decoder.*`. Resolved by `resolve_sam_checkpoint` from a
   preset name (`vit_b`, `vit_l`, `vit_h`), a local path or a URL; downloads go to
   `sam_cache_dir()` and are checked against the SHA-256 prefix in the file name.
2. A PanoSAMic `model.safetensors` for `feature_fuser.*` and `semantic_decoder.*`.
   Resolved by `resolve_panosamic_checkpoint` from a local file, a local folder or a
   Hugging Face Hub repo id + subfolder (through `huggingface_hub`, so its cache,
   `HF_HOME`, `HF_HUB_OFFLINE` and tokens work as usual).

`load_weights` copies both into a model built by `panosamic.build.build_model`, checking
that every key and shape matches exactly; `from_pretrained` / `load_model` do the whole
chain (resolve -> config -> build -> load).

Every failure raises `WeightsError` with a message that says what went wrong and what to do.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from .config import MODALITIES, RELEASED_SUBFOLDERS, ConfigLike, describe, infer_config, resolve_config  # noqa: F401 (re-exported)
from .errors import ConfigError, WeightsError

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
StateDict = Mapping[str, torch.Tensor]
Shapes = Dict[str, Tuple[int, ...]]

# --- constants --------------------------------------------------------------------------

SAM_CHECKPOINTS: Dict[str, str] = {
    "vit_b": "sam_vit_b_01ec64.pth",
    "vit_l": "sam_vit_l_0b3195.pth",
    "vit_h": "sam_vit_h_4b8939.pth",
}
SAM_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything/"
SAM_BASE_URL_ENV = "PANOSAMIC_SAM_BASE_URL"
SAM_CACHE_ENV = "PANOSAMIC_SAM_CACHE"

HUB_REPO_ID = "dfki-av/PanoSAMic"
PANOSAMIC_FILENAME = "model.safetensors"
CONFIG_FILENAME = "config.json"

SAM_PREFIXES: Tuple[str, ...] = ("image_encoder.", "prompt_encoder.", "mask_decoder.")
PANOSAMIC_PREFIXES: Tuple[str, ...] = ("feature_fuser.", "semantic_decoder.")

# Meta's file names end in the first 6 hex digits of the file's SHA-256.
_SHA_IN_NAME = re.compile(r"_([0-9a-f]{6})\.pth$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_CHUNK = 1 << 20  # download/hash block size in bytes


# --- SAM checkpoints ----------------------------------------------------------------------


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


def resolve_sam_checkpoint(spec: PathLike, progress: bool = True) -> Path:
    """Local path of a SAM checkpoint, downloading it if needed.

    `spec` is one of:
    - an existing file path: returned as is;
    - a name `vit_b` / `vit_l` / `vit_h`: the cached file in `sam_cache_dir()`, else downloaded
      from `sam_base_url()` into it;
    - an http(s) URL: cached under the URL's file name in `sam_cache_dir()`, downloaded if absent.

    Downloads show a tqdm progress bar (`progress=False` hides it), are written to a temporary
    file and renamed only when complete and, where the file name ends in `_<6 hex>.pth`,
    when its SHA-256 starts with those digits. Raises WeightsError otherwise.
    """
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if text in SAM_CHECKPOINTS:
        name = SAM_CHECKPOINTS[text]
        url = sam_base_url() + name
    elif _is_url(text):
        url = text
        name = os.path.basename(urllib.parse.unquote(urllib.parse.urlparse(text).path))
        if not name:
            raise WeightsError(f"cannot tell a file name from the URL {text!r}: give a URL that ends in the file name")
    else:
        if path.is_dir():
            raise WeightsError(f"{path} is a folder; pass the SAM checkpoint file inside it (e.g. sam_vit_h_4b8939.pth)")
        raise WeightsError(
            f"SAM checkpoint {text!r} not found: pass an existing .pth file, a URL, or one of "
            f"{', '.join(SAM_CHECKPOINTS)} to download Meta's checkpoint"
        )
    dest = sam_cache_dir() / name
    if dest.is_file():
        return dest
    download_file(url, dest, progress=progress)
    return dest


def download_file(url: str, dest: PathLike, progress: bool = True, timeout: float = 30.0) -> Path:
    """Downloads `url` to `dest` atomically, checking the SHA-256 prefix a `_<6 hex>.pth` name carries.

    The data go to a temporary file in `dest`'s folder (same file system, so the final
    `os.replace` is atomic): `dest` either does not exist or is complete. Any failure,
    including Ctrl-C, removes the temporary file. `timeout` (seconds) bounds each network wait.
    """
    from tqdm.auto import tqdm

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

    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        sha = hashlib.sha256()
        received = 0
        try:
            request = urllib.request.Request(url, headers={"User-Agent": "panosamic"})
            with urllib.request.urlopen(request, timeout=timeout) as response, os.fdopen(fd, "wb") as out:
                fd = -1  # now owned by `out`
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                          desc=f"Downloading {dest.name}", disable=not progress) as bar:
                    while True:
                        block = response.read(_CHUNK)
                        if not block:
                            break
                        out.write(block)
                        sha.update(block)
                        received += len(block)
                        bar.update(len(block))
        except urllib.error.HTTPError as e:
            raise WeightsError(f"downloading {url} failed: the server answered {e.code} {e.reason}. {manual}") from None
        except (urllib.error.URLError, OSError) as e:  # refused, DNS, timeout, reset, disk full
            reason = getattr(e, "reason", None) or e
            raise WeightsError(f"downloading {url} failed ({reason}). {manual}") from None
        # http.client returns short data without an error when the server closes early.
        if total is not None and received != total:
            raise WeightsError(
                f"downloading {url} stopped after {received} of {total} bytes (connection closed); "
                f"nothing was saved. Try again. {manual}"
            )
        digest = sha.hexdigest()
        if expected_sha is not None and not digest.startswith(expected_sha):
            raise WeightsError(
                f"the file downloaded from {url} is damaged or not the expected one: its SHA-256 is "
                f"{digest[:12]}..., the name says {expected_sha}...; nothing was saved. Try again, or "
                f"download it yourself and put it at {dest.resolve()}"
            )
        os.replace(tmp, dest)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    logger.info("downloaded %s to %s", url, dest)
    return dest


# --- PanoSAMic checkpoints ------------------------------------------------------------------


def _looks_like_path(text: str) -> bool:
    return (text.startswith((".", "/", "~", "\\")) or text.endswith((".safetensors", ".json"))
            or os.path.isabs(text) or not _REPO_ID.match(text))


def local_subfolders(root: Path, depth: int = 3) -> List[str]:
    """Subfolders of `root` (1 to `depth` levels down) holding a model.safetensors, as posix paths."""
    found = []
    for level in range(1, depth + 1):  # glob per level: a bounded walk, even for a large folder
        pattern = "/".join(["*"] * level) + "/" + PANOSAMIC_FILENAME
        found.extend(p.parent.relative_to(root).as_posix() for p in root.glob(pattern))
    return sorted(found)


def resolve_panosamic_checkpoint(spec: PathLike = HUB_REPO_ID, subfolder: Optional[str] = None,
                                 revision: Optional[str] = None, token: Union[str, bool, None] = None) -> Path:
    """Local path of a PanoSAMic `model.safetensors`.

    `spec` is a local `.safetensors` file, a local folder holding `[subfolder/]model.safetensors`,
    or a Hub repo id (default `dfki-av/PanoSAMic`) whose `subfolder/model.safetensors` is fetched
    with `huggingface_hub.hf_hub_download` (`revision` and `token` are passed through; the HF
    cache, `HF_HOME`/`HF_HUB_CACHE`, `HF_HUB_OFFLINE` and stored tokens apply as usual).
    """
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if path.is_file():
        if subfolder:
            raise WeightsError(f"subfolder={subfolder!r} was given with the file {path}: pass the folder that "
                               "contains the subfolder instead, or drop subfolder")
        return path
    if path.is_dir():
        target = path / subfolder / PANOSAMIC_FILENAME if subfolder else path / PANOSAMIC_FILENAME
        if target.is_file():
            return target
        known = local_subfolders(path)
        hint = (f"subfolders with a {PANOSAMIC_FILENAME}: {', '.join(known)}" if known
                else f"no subfolder of {path} holds one either")
        raise WeightsError(f"{target} does not exist; {hint}")
    if _looks_like_path(text):
        raise WeightsError(f"PanoSAMic checkpoint {text!r} not found: no such file or folder "
                           f"(a Hub repo id looks like {HUB_REPO_ID!r})")
    if text == HUB_REPO_ID and not subfolder:
        # The official repo keeps every model in its own folder: say so without a network round trip.
        raise WeightsError(f"{HUB_REPO_ID} holds several models: pass subfolder=..., e.g. one of "
                           f"{', '.join(RELEASED_SUBFOLDERS)} (list_subfolders() shows what the Hub has)")
    return _hub_download(text, PANOSAMIC_FILENAME, subfolder, revision, token, required=True)


def _hub_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _hub_offline() -> bool:
    from huggingface_hub import constants

    is_offline = getattr(constants, "is_offline_mode", None)
    return bool(is_offline()) if callable(is_offline) else bool(constants.HF_HUB_OFFLINE)


def _hub_download(repo_id: str, filename: str, subfolder: Optional[str], revision: Optional[str],
                  token: Union[str, bool, None], required: bool) -> Optional[Path]:
    """`hf_hub_download` with errors turned into WeightsError (or None when not `required`)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError,
                                        LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    where = f"{repo_id}/{subfolder + '/' if subfolder else ''}{filename}"
    at_rev = f" at revision {revision!r}" if revision else ""
    try:
        return Path(hf_hub_download(repo_id, filename, subfolder=subfolder or None, revision=revision, token=token))
    except LocalEntryNotFoundError:
        # Not in the cache, and the Hub was not asked (offline) or could not be reached.
        if not required:
            return None
        if _hub_offline():
            why = "HF_HUB_OFFLINE is set, so huggingface_hub does not download"
            fix = "unset HF_HUB_OFFLINE and run once with network access to fill the cache"
        else:
            why = "the Hugging Face Hub could not be reached (no network?)"
            fix = "run once with network access to fill the cache"
        raise WeightsError(
            f"{where}{at_rev} is not in the Hugging Face cache ({_hub_cache_dir()}) and {why}. To fix: {fix}, "
            f"or download the file elsewhere and pass its local path (or its folder) instead of {repo_id!r}. "
            f"{_known_subfolders_hint(_offline_subfolders(repo_id, revision), repo_id)}"
        ) from None
    except GatedRepoError:
        raise WeightsError(f"{repo_id} is gated: accept its terms on huggingface.co and log in "
                           "(`hf auth login`, or pass token=...)") from None
    except RepositoryNotFoundError:
        raise WeightsError(f"Hub repo {repo_id!r} not found (or private: log in with `hf auth login` or pass "
                           f"token=...). The released weights are in {HUB_REPO_ID!r}.") from None
    except RevisionNotFoundError:
        raise WeightsError(f"revision {revision!r} not found in {repo_id}") from None
    except EntryNotFoundError:
        if not required:
            return None
        raise WeightsError(f"{where}{at_rev} does not exist on the Hub. "
                           f"{_known_subfolders_hint(list_subfolders(repo_id, revision, token), repo_id)}") from None
    except (HfHubHTTPError, OSError) as e:
        if not required:
            return None
        raise WeightsError(f"fetching {where}{at_rev} from the Hugging Face Hub failed ({e}). Pass a local "
                           "path instead, or try again later.") from None


def _known_subfolders_hint(known: Sequence[str], repo_id: str) -> str:
    if not known:
        return "No subfolder with a model.safetensors is known for this repo."
    return f"Known subfolders of {repo_id}: {', '.join(known)}."


def cached_subfolders(repo_id: str, revision: Optional[str] = None) -> List[str]:
    """Subfolders with a model.safetensors in the local HF cache of `repo_id` (any snapshot if no revision)."""
    repo_dir = Path(_hub_cache_dir()) / ("models--" + repo_id.replace("/", "--"))
    snapshots = repo_dir / "snapshots"
    if not snapshots.is_dir():
        return []
    commits = [p for p in snapshots.iterdir() if p.is_dir()]
    if revision:
        ref = repo_dir / "refs" / revision
        commit = ref.read_text().strip() if ref.is_file() else revision
        commits = [p for p in commits if p.name == commit]
    found = set()
    for snap in commits:
        found.update(s for s in local_subfolders(snap) if s)
    return sorted(found)


def _offline_subfolders(repo_id: str, revision: Optional[str] = None) -> List[str]:
    """What is known without the network: cached subfolders, plus the released ones for the official repo."""
    known = set(cached_subfolders(repo_id, revision))
    if repo_id == HUB_REPO_ID:
        known.update(RELEASED_SUBFOLDERS)
    return sorted(known)


def list_subfolders(repo_id: str = HUB_REPO_ID, revision: Optional[str] = None,
                    token: Union[str, bool, None] = None) -> List[str]:
    """Subfolders of a Hub repo that hold a model.safetensors, sorted.

    Asks the Hub; offline or when it cannot be reached, falls back to what the local HF cache
    holds plus, for the official repo, `RELEASED_SUBFOLDERS`.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        if _hub_offline():
            raise ConnectionError("HF_HUB_OFFLINE is set")
        files = HfApi().list_repo_files(repo_id, revision=revision, token=token)
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise WeightsError(f"Hub repo {repo_id!r}{' revision ' + repr(revision) if revision else ''} not found "
                           "(or private: log in or pass token=...)") from None
    except Exception as e:  # noqa: BLE001  (offline, DNS, proxy, timeouts: many exception types)
        logger.info("listing %s on the Hub failed (%s); using the cache and the released list", repo_id, e)
        return _offline_subfolders(repo_id, revision)
    suffix = "/" + PANOSAMIC_FILENAME
    return sorted({f[: -len(suffix)] for f in files if f.endswith(suffix)})


def find_companions(checkpoint: PathLike) -> Dict[str, Optional[Path]]:
    """Optional files next to a model.safetensors: `config` (config.json) and `sam` (sam.pth or sam_vit_*.pth)."""
    folder = Path(checkpoint).parent
    config = folder / CONFIG_FILENAME
    sam = folder / "sam.pth"
    if not sam.is_file():
        candidates = sorted(folder.glob("sam_vit_*.pth"))
        sam = candidates[0] if candidates else None
    return {"config": config if config.is_file() else None, "sam": sam}


# --- reading files --------------------------------------------------------------------------


def _corrupt(path: Path, what: str, error: BaseException) -> WeightsError:
    detail = str(error).strip().split(". ")[0][:200]  # the first sentence: library errors run long
    return WeightsError(
        f"{path} is not a readable {what} ({type(error).__name__}: {detail}); the file is probably "
        "corrupt or incomplete (an interrupted download or copy): delete it and download it again"
    )


def _unwrap(obj: Any, path: Path) -> Dict[str, torch.Tensor]:
    # Training scripts often save {"model": sd} or {"state_dict": sd}; Meta's SAM files are the bare dict.
    for key in ("model", "state_dict"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} does not hold a state dict (a dict of tensors), but a {type(obj).__name__}")
    return dict(obj)


def _require_file(path: PathLike) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"checkpoint file {path} does not exist")
    return path


def read_sam_state_dict(path: PathLike) -> Dict[str, torch.Tensor]:
    """Tensors of a torch-pickled SAM checkpoint, on the CPU, in their stored dtype.

    Loaded with `weights_only=True` (no arbitrary code runs). A dict nested under `"model"` or
    `"state_dict"` is unwrapped.
    """
    path = _require_file(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001  (zip, pickle, EOF errors: all mean the same to the user)
        if "weights_only" in str(e) or "Weights only load failed" in str(e):
            raise WeightsError(
                f"{path} holds Python objects besides tensors, which are not loaded for safety: re-save it "
                "as a plain state dict (torch.save(model.state_dict(), path))"
            ) from None
        raise _corrupt(path, "PyTorch checkpoint", e) from None
    return _unwrap(obj, path)


def read_panosamic_state_dict(path: PathLike) -> Dict[str, torch.Tensor]:
    """Tensors of a `.safetensors` file, on the CPU, in their stored dtype."""
    from safetensors.torch import load_file

    path = _require_file(path)
    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # noqa: BLE001  (SafetensorError, truncated data)
        raise _corrupt(path, "safetensors file", e) from None


def read_safetensors_shapes(path: PathLike) -> Shapes:
    """`{key: shape}` of a `.safetensors` file, from its header only (no tensor data is read)."""
    from safetensors import safe_open

    path = _require_file(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: tuple(int(s) for s in f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as e:  # noqa: BLE001
        raise _corrupt(path, "safetensors file", e) from None


read_panosamic_shapes = read_safetensors_shapes


def read_sam_shapes(path: PathLike) -> Shapes:
    """`{key: shape}` of a torch checkpoint, without reading the tensors into memory.

    Zip-format files (every SAM release) are memory-mapped, so only the pickled index is read;
    the legacy format cannot be mapped and is loaded fully.
    """
    path = _require_file(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001  (legacy format, or corrupt: the full read says which)
        return {k: tuple(v.shape) for k, v in read_sam_state_dict(path).items()}
    return {k: tuple(v.shape) for k, v in _unwrap(obj, path).items()}


def read_shapes(path: PathLike) -> Shapes:
    """`{key: shape}` of a `.safetensors` or torch checkpoint, chosen by extension."""
    return read_safetensors_shapes(path) if str(path).endswith(".safetensors") else read_sam_shapes(path)


# --- loading into a model ----------------------------------------------------------------


def _list_keys(keys: Sequence[str], limit: int = 10) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return f"{len(keys)} ({shown}{', ...' if len(keys) > limit else ''})"


def _panosamic_summary(shapes: Mapping[str, Sequence[int]]) -> Dict[str, Any]:
    """What a feature_fuser/semantic_decoder layout encodes: modality count, classes, dual view, width."""
    out: Dict[str, Any] = {}
    neck = shapes.get("feature_fuser.fusion_blocks.0.neck.0.weight")
    if neck is not None and len(neck) >= 2 and neck[0]:
        out["width"], out["modalities"] = int(neck[0]), int(neck[1]) // int(neck[0])
    head = shapes.get("semantic_decoder.decoder_head.3.weight")
    if head is not None:
        out["classes"] = int(head[0])
    out["dual"] = any(k.startswith("semantic_decoder.decoder_attention.") for k in shapes)
    out["blocks"] = len({k.split(".")[2] for k in shapes if k.startswith("feature_fuser.fusion_blocks.")})
    return out


def _sam_summary(shapes: Mapping[str, Sequence[int]]) -> Dict[str, Any]:
    """What a SAM layout encodes: width, block count, input grid, prompt dimension."""
    out: Dict[str, Any] = {}
    patch = shapes.get("image_encoder.patch_embed.proj.weight")
    if patch is not None:
        out["width"] = int(patch[0])
    out["blocks"] = len({k.split(".")[2] for k in shapes if k.startswith("image_encoder.blocks.")})
    pos = shapes.get("image_encoder.pos_embed")
    if pos is not None and len(pos) >= 2:
        out["grid"] = int(pos[1])
    neck = shapes.get("image_encoder.neck.0.weight")
    if neck is not None:
        out["prompt_dim"] = int(neck[0])
    return out


def _sam_name(summary: Mapping[str, Any]) -> str:
    names = {(768, 12): "vit_b", (1024, 24): "vit_l", (1280, 32): "vit_h"}
    name = names.get((summary.get("width"), summary.get("blocks")))
    return name or f"a ViT of width {summary.get('width')} with {summary.get('blocks')} blocks"


def _mods(n: int) -> str:
    return "+".join(MODALITIES[:n]) if 1 <= n <= 3 else f"{n} modalities"


def _diagnose(part: str, given: Mapping[str, Sequence[int]], expected: Mapping[str, Sequence[int]]) -> str:
    """A guess, in words, of why a checkpoint's layout differs from the model's."""
    hints = []
    if part == "panosamic":
        f, m = _panosamic_summary(given), _panosamic_summary(expected)
        if f.get("width") and m.get("width") and f["width"] != m["width"]:
            hints.append(f"this checkpoint was trained on a SAM encoder of width {f['width']} but the model's "
                         f"encoder has width {m['width']}: build the model with the matching size")
        elif f.get("modalities") and m.get("modalities") and f["modalities"] != m["modalities"]:
            hints.append(f"this checkpoint fuses {f['modalities']} modalities ({_mods(f['modalities'])}) but the "
                         f"model was built for {m['modalities']} ({_mods(m['modalities'])}): build it with "
                         f"modalities={list(MODALITIES[:f['modalities']])}")
        if f.get("classes") and m.get("classes") and f["classes"] != m["classes"]:
            hints.append(f"this checkpoint predicts {f['classes']} classes but the model was built for "
                         f"{m['classes']}: build it with num_classes={f['classes']}")
        if f["dual"] != m["dual"] and f.get("blocks"):
            hints.append(f"this checkpoint is {'dual' if f['dual'] else 'single'}-view but the model was built "
                         f"{'dual' if m['dual'] else 'single'}-view: build it with dual_view={f['dual']}")
        if f.get("blocks") and m.get("blocks") and f["blocks"] != m["blocks"]:
            hints.append(f"this checkpoint has {f['blocks']} fusion blocks, the model {m['blocks']} (one per "
                         "global-attention block of the encoder): use the SAM size it was trained with")
    else:
        f, m = _sam_summary(given), _sam_summary(expected)
        if (f.get("width"), f.get("blocks")) != (m.get("width"), m.get("blocks")) and f.get("width"):
            hints.append(f"this SAM checkpoint is {_sam_name(f)} but the model was built for {_sam_name(m)}: "
                         "pass the SAM checkpoint of the model's size, or build the model for this one")
        elif f.get("grid") and m.get("grid") and f["grid"] != m["grid"]:
            hints.append(f"this SAM checkpoint has a {f['grid']}x{f['grid']} token grid, the model "
                         f"{m['grid']}x{m['grid']}: build it with the checkpoint's image_size")
        if f.get("prompt_dim") and m.get("prompt_dim") and f["prompt_dim"] != m["prompt_dim"]:
            hints.append(f"prompt_embed_dim is {f['prompt_dim']} in the checkpoint, {m['prompt_dim']} in the model")
    if hints:
        return "Probably: " + "; ".join(hints) + ". Or omit the config so it is read from the tensors."
    return ("The file does not match the model's architecture or is from another model; omit the config so it "
            "is read from the tensors, or check the file.")


def _check_part(part: str, state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
                source: str, strict: bool) -> Dict[str, torch.Tensor]:
    """The entries of `state` to copy into the model's `part`, after checking keys and shapes."""
    own, other = (SAM_PREFIXES, PANOSAMIC_PREFIXES) if part == "sam" else (PANOSAMIC_PREFIXES, SAM_PREFIXES)
    label = "SAM" if part == "sam" else "PanoSAMic"
    foreign = [k for k in state if k.startswith(other)]
    if foreign:
        if not any(k.startswith(own) for k in state):
            wrong = "PanoSAMic (feature_fuser/semantic_decoder)" if part == "sam" else "SAM (image_encoder/...)"
            arg = "panosamic=" if part == "sam" else "sam="
            raise WeightsError(
                f"{source} was given as the {label} checkpoint but holds {wrong} weights: the files are swapped; "
                f"pass it as {arg}"
            )
        raise WeightsError(
            f"{source} was given as the {label} checkpoint but also holds {len(foreign)} keys of the other part "
            f"({_list_keys(foreign)}): a {label} checkpoint holds only {', '.join(p + '*' for p in own)}"
        )
    expected = {k: tuple(v.shape) for k, v in target.items() if k.startswith(own)}
    given = {k: tuple(v.shape) for k, v in state.items()}
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    mismatched = [k for k in expected if k in given and given[k] != expected[k]]
    if mismatched or (strict and (missing or unexpected)):
        lines = [f"{source} does not fit the model's {label} part ({', '.join(p + '*' for p in own)}):"]
        if missing:
            lines.append(f"  missing from the file: {_list_keys(missing)}")
        if unexpected:
            lines.append(f"  not in the model: {_list_keys(unexpected)}")
        if mismatched:
            shown = "; ".join(f"{k} {list(given[k])} in the file vs {list(expected[k])} in the model"
                              for k in sorted(mismatched)[:10])
            lines.append(f"  different shapes: {len(mismatched)} ({shown}{'; ...' if len(mismatched) > 10 else ''})")
        lines.append("  " + _diagnose(part, given, expected))
        lines.append("  Nothing was loaded into this part.")
        raise WeightsError("\n".join(lines))
    if missing or unexpected:  # strict=False: load what matches, but say what did not
        warnings.warn(f"loading {source} with strict=False: {len(missing)} model keys not in the file "
                      f"({_list_keys(missing)}) keep their values; {len(unexpected)} file keys ignored "
                      f"({_list_keys(unexpected)})", stacklevel=3)
    # Cast to each target's dtype (the released files may be bf16; the model is usually fp32).
    return {k: state[k].to(dtype=target[k].dtype) for k in expected if k in given}


def _as_state_dict(value: Any, part: str) -> Tuple[Mapping[str, torch.Tensor], str]:
    """The tensors `value` names (a state dict is used as is) and a description of where they come from."""
    if isinstance(value, Mapping):
        return value, f"the given {'SAM' if part == 'sam' else 'PanoSAMic'} state dict"
    if part == "sam":
        path = resolve_sam_checkpoint(value)
        state = read_panosamic_state_dict(path) if str(path).endswith(".safetensors") else read_sam_state_dict(path)
    else:
        path = resolve_panosamic_checkpoint(value)
        state = read_panosamic_state_dict(path) if str(path).endswith(".safetensors") else read_sam_state_dict(path)
    return state, str(path)


def load_weights(model: torch.nn.Module, sam: Union[PathLike, StateDict, None] = None,
                 panosamic: Union[PathLike, StateDict, None] = None, strict: bool = True) -> torch.nn.Module:
    """Copies SAM and/or PanoSAMic weights into `model` (in place) and returns it.

    `sam`: a path, URL or preset name (see `resolve_sam_checkpoint`) or a state dict with the
    `image_encoder.*`, `prompt_encoder.*`, `mask_decoder.*` keys. `panosamic`: a path, folder or
    Hub repo id (see `resolve_panosamic_checkpoint`) or a state dict with `feature_fuser.*`,
    `semantic_decoder.*`. Either may be None: that part keeps its current values.

    Both parts are checked before anything is copied: with `strict=True` (default) every key
    of the part must be present with the model's shape and no other key may be there; with
    `strict=False` missing and extra keys are allowed (and warned about), wrong shapes are not.
    Tensors are cast to the dtype of the model's tensor they replace and copied to its device.
    """
    if sam is None and panosamic is None:
        raise WeightsError("load_weights needs sam=..., panosamic=... or both")
    target = model.state_dict()
    updates: Dict[str, torch.Tensor] = {}
    # Check everything first so an error leaves the model untouched.
    for part, value in (("sam", sam), ("panosamic", panosamic)):
        if value is None:
            continue
        state, source = _as_state_dict(value, part)
        updates.update(_check_part(part, state, target, source, strict))
    with torch.no_grad():
        for key, value in updates.items():
            target[key].copy_(value)  # state_dict() tensors share storage with the parameters/buffers
    return model


# --- one call: resolve, configure, build, load -------------------------------------------------


def _sam_local(spec: Any) -> Optional[Path]:
    """The local file a SAM spec names, without downloading (None if it would need a download)."""
    if spec is None or isinstance(spec, Mapping):
        return None
    text = os.fspath(spec)
    if Path(text).expanduser().is_file():
        return Path(text).expanduser()
    if text in SAM_CHECKPOINTS:
        cached = sam_cache_dir() / SAM_CHECKPOINTS[text]
    elif _is_url(text):
        cached = sam_cache_dir() / os.path.basename(urllib.parse.unquote(urllib.parse.urlparse(text).path))
    else:
        return None
    return cached if cached.is_file() else None


def _companion_config(checkpoint: Path, spec: PathLike, subfolder, revision, token) -> Optional[Path]:
    """config.json beside the checkpoint: on disk, else (for a Hub checkpoint) fetched from the Hub."""
    local = checkpoint.parent / CONFIG_FILENAME
    if local.is_file():
        return local
    text = os.fspath(spec)
    if not Path(text).expanduser().exists() and not _looks_like_path(text):
        return _hub_download(text, CONFIG_FILENAME, subfolder, revision, token, required=False)
    return None


def load_model(checkpoint: PathLike = HUB_REPO_ID, subfolder: Optional[str] = None,
               sam: Union[PathLike, StateDict, None] = None, config: Optional[ConfigLike] = None,
               device: Union[str, torch.device, None] = None, dtype: Union[str, torch.dtype, None] = None,
               revision: Optional[str] = None, token: Union[str, bool, None] = None) -> torch.nn.Module:
    """A PanoSAMic model with its weights loaded, in eval mode.

    - `checkpoint` + `subfolder`: the PanoSAMic weights (file, folder or Hub repo id; see
      `resolve_panosamic_checkpoint`). The released ones are in `RELEASED_SUBFOLDERS`.
    - `config`: the architecture (dict, config.json path or preset name). Default: a
      config.json beside the checkpoint, else read from the tensor shapes (with the SAM
      file's shapes when it is already on disk).
    - `sam`: the SAM weights (path, URL, preset name or state dict). Default: `sam.pth` or
      `sam_vit_*.pth` beside the checkpoint, else the config's SAM size, downloaded once.
    - `device`, `dtype`: where the model goes and the dtype its weights are cast to (a torch
      dtype or "float32"/"bfloat16"/"float16"; default: CPU, float32). `from_pretrained`
      instead keeps float32 weights and lets the Predictor autocast.
    """
    from .build import build_model
    from .predictor import DTYPES

    if isinstance(dtype, str):  # the app and CLI pass names
        if dtype.lower() not in DTYPES:
            raise WeightsError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
        dtype = DTYPES[dtype.lower()]
    ckpt = resolve_panosamic_checkpoint(checkpoint, subfolder=subfolder, revision=revision, token=token)
    companions = find_companions(ckpt)
    sam_spec: Any = sam if sam is not None else companions["sam"]
    sam_path = _sam_local(sam_spec)

    if config is not None:
        cfg = resolve_config(config)
    else:
        config_path = _companion_config(ckpt, checkpoint, subfolder, revision, token)
        if config_path is not None:
            cfg = resolve_config(config_path)
        else:
            sam_shapes = None
            if isinstance(sam_spec, Mapping):
                sam_shapes = {k: tuple(v.shape) for k, v in sam_spec.items()}
            elif sam_path is not None:
                sam_shapes = read_shapes(sam_path)
            try:
                cfg = infer_config(read_panosamic_shapes(ckpt), sam_shapes)
            except ConfigError as e:
                raise WeightsError(f"cannot read the architecture from {ckpt}: {e}") from None
    logger.info("PanoSAMic %s from %s", describe(cfg), ckpt)

    if sam_spec is None:
        sam_spec = cfg.get("vit_model")
        if sam_spec not in SAM_CHECKPOINTS:
            raise WeightsError(
                f"the model ({describe(cfg)}) is not a released SAM size, so its SAM weights cannot be "
                "downloaded: pass sam=<path to the SAM checkpoint>"
            )
    if sam_path is None and not isinstance(sam_spec, Mapping):
        sam_path = resolve_sam_checkpoint(sam_spec)  # download (if needed) before the slow build
    model = build_model(cfg)
    load_weights(model, sam=sam_path if sam_path is not None else sam_spec, panosamic=ckpt)
    model.eval()
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    return model


def from_pretrained(checkpoint: PathLike = HUB_REPO_ID, subfolder: Optional[str] = None,
                    sam: Union[PathLike, StateDict, None] = None, config: Optional[ConfigLike] = None,
                    device: Union[str, torch.device, None] = None, dtype: Union[str, torch.dtype, None] = None,
                    max_depth: float = 10.0, revision: Optional[str] = None,
                    token: Union[str, bool, None] = None):
    """A ready `Predictor` for released or local PanoSAMic weights (see `load_model` for the arguments).

    `device` (None = best available) and `dtype` (autocast precision, e.g. "bfloat16") are the
    Predictor's; the weights are loaded in float32.

    `max_depth` is the depth T in metres used to encode depth maps (`255 * (1 - d/T)`); it is not
    stored in the checkpoints, 10 m is the documented default.

    Example::

        predictor = from_pretrained(subfolder="stanford2d3ds-vith-rgbd-fold1", device="cuda")
    """
    from .predictor import Predictor

    model = load_model(checkpoint, subfolder=subfolder, sam=sam, config=config, revision=revision, token=token)
    return Predictor(model, device=device, max_depth=max_depth, dtype=dtype)
